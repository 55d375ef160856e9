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
    /// The tie band, from 1: band 1 holds the leader and every entry whose interval overlaps
    /// the leader's ("indistinguishable from #1").
    pub band: usize,
    /// The place the band shares: 1 + the number of entries in earlier bands (two entries in
    /// band 1 make the next band's place 3).
    pub place: usize,
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
    /// Best first: by band, then by ratio within a band.
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
        // Best first, ties by name, so a board reproduces.
        let key = |e: &Entry| match better {
            Better::Lower => e.ratio.ratio,
            Better::Higher => -e.ratio.ratio,
        };
        let mut best: Vec<&Entry> = Vec::new();
        let mut mine: Vec<&Entry> = entries.iter().filter(|e| e.tier == tier).collect();
        mine.sort_by(|a, b| key(a).total_cmp(&key(b)).then(a.student.cmp(&b.student)));
        for e in mine {
            if !best.iter().any(|b| b.student == e.student) {
                best.push(e);
            }
        }
        // Greedy bands: the best entry not yet placed leads a band; every unplaced entry
        // whose interval overlaps the leader's joins it.
        let mut band_of: Vec<Option<usize>> = vec![None; best.len()];
        let mut band = 0;
        while let Some(leader) = band_of.iter().position(Option::is_none) {
            band += 1;
            for i in leader..best.len() {
                if band_of[i].is_none() && overlaps(&best[leader].ratio, &best[i].ratio) {
                    band_of[i] = Some(band);
                }
            }
        }
        let mut placed: Vec<Placed> = best
            .iter()
            .zip(&band_of)
            .map(|(e, b)| Placed {
                entry: (*e).clone(),
                band: b.unwrap_or(band),
                place: 0,
            })
            .collect();
        // Stable: within a band the order stays best first.
        placed.sort_by_key(|p| p.band);
        let mut before = 0;
        let mut i = 0;
        while i < placed.len() {
            let b = placed[i].band;
            let n = placed[i..].iter().take_while(|p| p.band == b).count();
            for p in &mut placed[i..i + n] {
                p.place = before + 1;
            }
            before += n;
            i += n;
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

    fn bands(board: &Board) -> Vec<(String, usize, usize)> {
        board
            .placed
            .iter()
            .map(|p| (p.entry.student.clone(), p.band, p.place))
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
                ("ann".into(), 1, 1),
                ("bob".into(), 1, 1),
                ("cyd".into(), 2, 3),
                ("dee".into(), 2, 3),
                ("eve".into(), 3, 5)
            ]
        );
        assert_eq!(board.best(), Some(0.50));
    }

    #[test]
    fn a_wide_interval_far_down_is_still_indistinguishable_from_the_leader() {
        // cyd's point is worse than bob's, but cyd's interval holds the leader's: cyd is in
        // band 1, bob (whose narrow interval does not reach the leader) is not.
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
                ("ann".into(), 1, 1),
                ("cyd".into(), 1, 1),
                ("bob".into(), 2, 3)
            ]
        );
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
                ("bob".into(), 1, 1),
                ("cyd".into(), 1, 1),
                ("ann".into(), 2, 3)
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
        assert_eq!(bands(&verified), [("ann".into(), 1, 1)]);
        assert_eq!(verified.best(), Some(0.40));
        let own = Board::build(&entries, Better::Lower, Tier::SelfReported).unwrap();
        assert_eq!(bands(&own), [("ann".into(), 1, 1), ("bob".into(), 2, 2)]);
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
