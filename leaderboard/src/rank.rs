//! One lab's board: entries ranked by the lab's own ratio, in tie bands computed from their
//! intervals.

use observatory_stats::{Better, RatioInterval};
use serde::{Deserialize, Serialize};

/// Where a result was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// On the student's machine (labelled with its fingerprint).
    SelfReported,
    /// Re-run by the instructor (`observatory leaderboard verify`): what final rankings use.
    Verified,
}

/// One submission's result on a lab's board.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Entry {
    pub student: String,
    pub tier: Tier,
    /// The lab's B/A (the student's change over the baseline) and its 95% interval.
    pub ratio: RatioInterval,
}

/// An entry with its place on the board.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Placed {
    pub entry: Entry,
    /// The place in B/A order: 1 + the number of entries with a strictly better ratio (only
    /// an exact tie shares a place).
    pub place: usize,
    /// The tie band, from 1: a run of neighbours in B/A order whose intervals overlap the
    /// run's first entry's ("indistinguishable from #`band_leader`"). Band 1 holds the
    /// leader and the entries indistinguishable from it.
    pub band: usize,
    /// The place of the band's first entry.
    pub band_leader: usize,
}

/// Why an entry cannot be placed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RankError {
    #[error(
        "{student}: the ratio {ratio} with interval [{low} .. {high}] is not a ratio with an interval holding it (finite, above 0, low <= ratio <= high)"
    )]
    BadInterval {
        student: String,
        ratio: f64,
        low: f64,
        high: f64,
    },
}

/// Is `r` a ratio with an interval that holds it?
pub fn well_formed(r: &RatioInterval) -> bool {
    [r.ratio, r.low, r.high]
        .iter()
        .all(|v| v.is_finite() && *v > 0.0)
        && r.low <= r.ratio
        && r.ratio <= r.high
}

/// Do two intervals share a point?
pub fn overlaps(a: &RatioInterval, b: &RatioInterval) -> bool {
    a.low <= b.high && b.low <= a.high
}

/// Does a verification agree with the self-reported result? It disagrees only beyond both
/// intervals: each ratio outside the other's interval (then the entry is flagged for the
/// instructor; two honest runs on different machines differ within their noise).
pub fn agrees(self_reported: &RatioInterval, verified: &RatioInterval) -> bool {
    let outside = |v: f64, r: &RatioInterval| v < r.low || v > r.high;
    !(outside(verified.ratio, self_reported) && outside(self_reported.ratio, verified))
}

/// A lab's board.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Board {
    pub better: Better,
    /// Best first, by ratio; bands and places never go up as the ratio gets worse.
    pub placed: Vec<Placed>,
}

impl Board {
    /// The board of `entries` of one tier (`tier`: `Verified` for the final board), each
    /// student's best entry of that tier only. An entry whose ratio is not a ratio with an
    /// interval is an error naming the student, not a guess.
    pub fn build(entries: &[Entry], better: Better, tier: Tier) -> Result<Board, RankError> {
        for e in entries {
            if !well_formed(&e.ratio) {
                return Err(RankError::BadInterval {
                    student: e.student.clone(),
                    ratio: e.ratio.ratio,
                    low: e.ratio.low,
                    high: e.ratio.high,
                });
            }
        }
        // Best first; an exact tie puts the wider interval first (the likelier to reach the band
        // above), then goes by name, so a board reproduces.
        let key = |e: &Entry| match better {
            Better::Lower => e.ratio.ratio,
            Better::Higher => -e.ratio.ratio,
        };
        let width = |e: &Entry| e.ratio.high - e.ratio.low;
        let mut best: Vec<&Entry> = Vec::new();
        let mut mine: Vec<&Entry> = entries.iter().filter(|e| e.tier == tier).collect();
        mine.sort_by(|a, b| {
            key(a)
                .total_cmp(&key(b))
                .then(width(b).total_cmp(&width(a)))
                .then(a.student.cmp(&b.student))
        });
        for e in mine {
            if !best.iter().any(|b| b.student == e.student) {
                best.push(e);
            }
        }
        // Places follow B/A: 1 + the number of entries with a strictly better ratio (an
        // exact tie shares a place). Bands run down the same order: the best entry not yet in
        // a band leads one, and the entries right after it join while their intervals overlap
        // the leader's. A band is a run of neighbours, so an entry below the run never joins
        // it however wide its interval: a wide interval cannot lift a worse ratio above a
        // better, narrower one.
        let mut placed: Vec<Placed> = Vec::with_capacity(best.len());
        let (mut band, mut leader) = (0, 0);
        for (i, e) in best.iter().enumerate() {
            let place = match placed.last() {
                Some(prev) if prev.entry.ratio.ratio == e.ratio.ratio => prev.place,
                _ => i + 1,
            };
            // An exact tie shares a place, not necessarily a band: a band holds only intervals
            // that overlap its leader's.
            if band == 0 || !overlaps(&best[leader].ratio, &e.ratio) {
                band += 1;
                leader = i;
            }
            let band_leader = placed.get(leader).map_or(place, |p| p.place);
            placed.push(Placed {
                entry: (*e).clone(),
                place,
                band,
                band_leader,
            });
        }
        Ok(Board { better, placed })
    }

    /// The best ratio on the board (the leader's), if any.
    pub fn best(&self) -> Option<f64> {
        self.placed.first().map(|p| p.entry.ratio.ratio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(ratio: f64, low: f64, high: f64) -> RatioInterval {
        RatioInterval { ratio, low, high }
    }

    fn entry(student: &str, tier: Tier, ratio: RatioInterval) -> Entry {
        Entry {
            student: student.into(),
            tier,
            ratio,
        }
    }

    /// (student, band, place, band leader's place) from best to worst.
    fn bands(board: &Board) -> Vec<(String, usize, usize, usize)> {
        board
            .placed
            .iter()
            .map(|p| (p.entry.student.clone(), p.band, p.place, p.band_leader))
            .collect()
    }

    #[test]
    fn overlapping_intervals_share_the_leaders_band_and_place() {
        let v = Tier::Verified;
        let entries = [
            entry("ann", v, r(0.50, 0.48, 0.52)),
            entry("bob", v, r(0.53, 0.51, 0.60)),
            entry("cyd", v, r(0.70, 0.68, 0.72)),
            entry("dee", v, r(0.71, 0.69, 0.73)),
            entry("eve", v, r(0.90, 0.89, 0.91)),
        ];
        let board = Board::build(&entries, Better::Lower, v).unwrap();
        assert_eq!(
            bands(&board),
            [
                ("ann".into(), 1, 1, 1),
                ("bob".into(), 1, 2, 1),
                ("cyd".into(), 2, 3, 3),
                ("dee".into(), 2, 4, 3),
                ("eve".into(), 3, 5, 5)
            ]
        );
        assert_eq!(board.best(), Some(0.50));
    }

    #[test]
    fn a_wide_interval_never_lifts_a_worse_ratio_above_a_better_narrower_one() {
        // cyd's interval holds the leader's ratio, but bob's ratio is better: bob comes
        // first, and cyd joins bob's band (whose interval cyd's overlaps), not ann's.
        let v = Tier::Verified;
        let entries = [
            entry("ann", v, r(0.50, 0.49, 0.51)),
            entry("bob", v, r(0.60, 0.59, 0.61)),
            entry("cyd", v, r(0.70, 0.40, 1.00)),
        ];
        let board = Board::build(&entries, Better::Lower, v).unwrap();
        assert_eq!(
            bands(&board),
            [
                ("ann".into(), 1, 1, 1),
                ("bob".into(), 2, 2, 2),
                ("cyd".into(), 2, 3, 2)
            ]
        );
    }

    #[test]
    fn the_inversions_found_on_lab_1_and_lab_7_are_gone() {
        // Lab 1 (higher is better): 6.350 with a narrow interval was placed 12th below 6.308
        // with a wide one (6th), because the wide one reached the leader's band.
        let v = Tier::Verified;
        let lab1 = [
            entry("lead", v, r(6.60, 6.50, 6.70)),
            entry("narrow", v, r(6.350, 6.34, 6.36)),
            entry("wide", v, r(6.308, 6.00, 6.55)),
        ];
        let board = Board::build(&lab1, Better::Higher, v).unwrap();
        let order: Vec<_> = board
            .placed
            .iter()
            .map(|p| p.entry.student.as_str())
            .collect();
        assert_eq!(order, ["lead", "narrow", "wide"]);
        assert_eq!(board.placed[1].place, 2);
        assert_eq!(board.placed[2].place, 3);
        // Lab 7 (lower is better): 0.5055, narrower and better, was placed below 0.5059.
        let lab7 = [
            entry("lead", v, r(0.500, 0.499, 0.501)),
            entry("better", v, r(0.5055, 0.505, 0.506)),
            entry("wider", v, r(0.5059, 0.49, 0.52)),
        ];
        let board = Board::build(&lab7, Better::Lower, v).unwrap();
        assert_eq!(
            bands(&board),
            [
                ("lead".into(), 1, 1, 1),
                ("better".into(), 2, 2, 2),
                ("wider".into(), 2, 3, 2)
            ]
        );
    }

    #[test]
    fn an_exact_tie_shares_a_place_but_only_an_overlapping_interval_joins_the_band() {
        // Found by a review: x3 ties x2 exactly but does not reach #1's interval; it was shown
        // "≈ #1" and got band 1's points.
        let v = Tier::Verified;
        let entries = [
            entry("x1", v, r(10.0, 9.925, 10.075)),
            entry("x3", v, r(9.0, 8.95, 9.05)),
            entry("x2", v, r(9.0, 7.5, 10.5)),
        ];
        let board = Board::build(&entries, Better::Higher, v).unwrap();
        assert_eq!(
            bands(&board),
            [
                ("x1".into(), 1, 1, 1),
                ("x2".into(), 1, 2, 1),
                ("x3".into(), 2, 2, 2)
            ]
        );
    }

    #[test]
    fn places_and_bands_never_improve_as_the_ratio_gets_worse() {
        // 2,000 random boards (a fixed xorshift, so a failure reproduces): for every pair,
        // a strictly better ratio has a smaller place and no later band; an exact tie shares
        // both; an exact tie shares a place; every member of a band
        // overlaps its leader.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        for round in 0..2000 {
            let better = if round % 2 == 0 {
                Better::Lower
            } else {
                Better::Higher
            };
            let n = 1 + (next() * 30.0) as usize;
            let entries: Vec<Entry> = (0..n)
                .map(|i| {
                    // Coarse ratios so exact ties happen; widths from 0 to 0.3.
                    let ratio = 0.5 + (next() * 20.0).floor() / 40.0;
                    let (lo, hi) = (next() * 0.3, next() * 0.3);
                    entry(
                        &format!("s{i:02}"),
                        Tier::Verified,
                        r(ratio, ratio - lo * ratio.min(1.0) / 2.0, ratio + hi),
                    )
                })
                .collect();
            let board = Board::build(&entries, better, Tier::Verified).unwrap();
            let p = &board.placed;
            assert_eq!(p.len(), n);
            for i in 0..n {
                let leader = p.iter().find(|q| q.band == p[i].band).unwrap();
                assert_eq!(leader.place, p[i].band_leader);
                // A member overlaps its leader.
                assert!(overlaps(&leader.entry.ratio, &p[i].entry.ratio), "{p:?}");
                for j in i + 1..n {
                    let (a, b) = (p[i].entry.ratio.ratio, p[j].entry.ratio.ratio);
                    let strictly = match better {
                        Better::Lower => a < b,
                        Better::Higher => a > b,
                    };
                    if strictly {
                        assert!(p[i].place < p[j].place && p[i].band <= p[j].band, "{p:?}");
                    } else {
                        assert_eq!(a, b, "not best first: {p:?}");
                        assert!(p[i].place == p[j].place && p[i].band <= p[j].band, "{p:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn exact_ratios_tie_only_when_equal_and_higher_can_be_better() {
        let s = Tier::SelfReported;
        let entries = [
            entry("ann", s, r(2.0, 2.0, 2.0)),
            entry("bob", s, r(3.0, 3.0, 3.0)),
            entry("cyd", s, r(3.0, 3.0, 3.0)),
        ];
        let board = Board::build(&entries, Better::Higher, s).unwrap();
        assert_eq!(
            bands(&board),
            [
                ("bob".into(), 1, 1, 1),
                ("cyd".into(), 1, 1, 1),
                ("ann".into(), 2, 3, 3)
            ]
        );
    }

    #[test]
    fn a_board_holds_one_tier_and_each_students_best_entry_once() {
        let entries = [
            entry("ann", Tier::SelfReported, r(0.10, 0.09, 0.11)),
            entry("ann", Tier::Verified, r(0.50, 0.49, 0.51)),
            entry("ann", Tier::Verified, r(0.40, 0.39, 0.41)),
            entry("bob", Tier::SelfReported, r(0.45, 0.44, 0.46)),
        ];
        let verified = Board::build(&entries, Better::Lower, Tier::Verified).unwrap();
        assert_eq!(bands(&verified), [("ann".into(), 1, 1, 1)]);
        assert_eq!(verified.best(), Some(0.40));
        let own = Board::build(&entries, Better::Lower, Tier::SelfReported).unwrap();
        assert_eq!(
            bands(&own),
            [("ann".into(), 1, 1, 1), ("bob".into(), 2, 2, 2)]
        );
    }

    #[test]
    fn a_lying_or_broken_interval_is_an_error_naming_the_student() {
        for bad in [
            r(f64::NAN, 0.1, 0.2),
            r(0.5, 0.6, 0.7),
            r(0.0, 0.0, 0.0),
            r(-1.0, -2.0, 0.0),
            r(0.5, 0.4, f64::INFINITY),
        ] {
            let entries = [
                entry("ann", Tier::Verified, r(0.5, 0.4, 0.6)),
                entry("mal", Tier::Verified, bad),
            ];
            match Board::build(&entries, Better::Lower, Tier::Verified) {
                Err(RankError::BadInterval { student, .. }) => assert_eq!(student, "mal"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(
            Board::build(&[], Better::Lower, Tier::Verified)
                .unwrap()
                .placed
                .is_empty()
        );
    }

    #[test]
    fn a_verification_is_flagged_only_beyond_both_intervals() {
        let own = r(0.50, 0.45, 0.55);
        // Within the self-reported interval: agrees.
        assert!(agrees(&own, &r(0.54, 0.53, 0.56)));
        // Outside it, but the verified interval holds the self-reported ratio: agrees.
        assert!(agrees(&own, &r(0.60, 0.48, 0.70)));
        // Each outside the other's: flagged, either way.
        assert!(!agrees(&own, &r(0.80, 0.78, 0.82)));
        assert!(!agrees(&own, &r(0.20, 0.19, 0.21)));
    }
}
