//! What the API answers and the pages show, computed from the database's rows in one place:
//! a lab's board (tie bands from intervals, by tier), a cohort's overview, a student's
//! history, grades, who is stuck, the export.

use crate::db::{AttemptRow, LabRow, StudentRow, SubmissionRow, VerificationRow};
use crate::wire::{
    BoardRow, BoardView, ExportRow, GradeRow, HistoryRow, LabSummary, StuckRow, VerifiedView,
};
use crate::{LabInfo, show_ms};
use observatory_leaderboard::{Board, Entry, GradingRule, RankError, Standing, Tier};
use observatory_stats::{Better, RatioInterval, Threshold};
use std::collections::{BTreeMap, BTreeSet};

/// The grading rule when the instructor set none.
pub fn default_grading() -> GradingRule {
    GradingRule::Threshold { bonus_within: 1.05 }
}

fn interval(ratio: Option<f64>, low: Option<f64>, high: Option<f64>) -> Option<RatioInterval> {
    Some(RatioInterval {
        ratio: ratio?,
        low: low?,
        high: high?,
    })
}

/// The self-reported ratio of a submission.
pub fn reported(s: &SubmissionRow) -> Option<RatioInterval> {
    interval(s.ratio, s.low, s.high)
}

/// The verified ratio of a submission (a passing re-run only).
pub fn verified(s: &SubmissionRow) -> Option<RatioInterval> {
    let v = s.verification.as_ref().filter(|v| v.passed)?;
    interval(v.ratio, v.low, v.high)
}

/// Flagged: the re-run passed, beyond both intervals from the self-reported result (a re-run
/// that did not pass is "verified failed", not flagged).
pub fn flagged(s: &SubmissionRow) -> bool {
    standing(s) == Standing::Flagged
}

/// One submission's standing.
pub fn standing(s: &SubmissionRow) -> Standing {
    Standing::of_submission(s.verification.as_ref().map(|v| (v.passed, v.agrees)))
}

/// The standing of each student with a submission in `subs` (one lab's), in one pass; a
/// student not in the map has not submitted.
pub fn standings(subs: &[SubmissionRow]) -> BTreeMap<&str, Standing> {
    let mut by: BTreeMap<&str, Standing> = BTreeMap::new();
    for s in subs {
        let best = by
            .entry(s.student.as_str())
            .or_insert(Standing::NotSubmitted);
        *best = Standing::of_student([*best, standing(s)]);
    }
    by
}

pub fn verified_view(v: &VerificationRow) -> VerifiedView {
    VerifiedView {
        passed: v.passed,
        ratio: interval(v.ratio, v.low, v.high),
        agrees: v.agrees,
        machine: v.machine.clone(),
        verified_at: show_ms(v.verified_ms),
    }
}

/// A lab's board of one tier: each student's best entry of that tier, in tie bands.
pub fn board(
    cohort: &str,
    info: &LabInfo,
    subs: &[SubmissionRow],
    tier: Tier,
) -> Result<BoardView, RankError> {
    let rule = &info.rule;
    let row = |s: &SubmissionRow,
               (place, band, leader): (usize, usize, usize),
               r: Option<RatioInterval>| BoardRow {
        place: place as u32,
        band: band as u32,
        band_leader: leader as u32,
        student: s.student.clone(),
        submission: s.id.clone(),
        ratio: r.map(|r| r.ratio),
        low: r.map(|r| r.low),
        high: r.map(|r| r.high),
        cpu_model: match (&s.verification, tier) {
            (Some(v), Tier::Verified) => v.machine.clone(),
            _ => s.cpu_model.clone(),
        },
        cores: s.cores as u32,
        flagged: flagged(s),
        submitted_at: show_ms(s.received_ms),
    };
    let of_tier = |s: &SubmissionRow| match tier {
        Tier::SelfReported => Some(reported(s)),
        Tier::Verified => s
            .verification
            .as_ref()
            .filter(|v| v.passed)
            .map(|_| verified(s)),
    };
    let rows = if rule.completes {
        // Nothing to rank: each student's first passing entry, in order of arrival.
        let mut seen = BTreeSet::new();
        subs.iter()
            .filter(|s| of_tier(s).is_some() && seen.insert(s.student.clone()))
            .map(|s| row(s, (1, 1, 1), None))
            .collect()
    } else {
        let mut by_entry: Vec<(Entry, &SubmissionRow)> = Vec::new();
        for s in subs {
            if let Some(Some(r)) = of_tier(s) {
                by_entry.push((
                    Entry {
                        student: s.student.clone(),
                        tier,
                        ratio: r,
                    },
                    s,
                ));
            }
        }
        let entries: Vec<Entry> = by_entry.iter().map(|(e, _)| e.clone()).collect();
        let b = Board::build(&entries, rule.better, tier)?;
        b.placed
            .iter()
            .filter_map(|p| {
                let (_, s) = by_entry.iter().find(|(e, _)| *e == p.entry)?;
                Some(row(
                    s,
                    (p.place, p.band, p.band_leader),
                    Some(p.entry.ratio),
                ))
            })
            .collect()
    };
    Ok(BoardView {
        cohort: cohort.to_string(),
        lab: rule.lab,
        title: info.title.clone(),
        tier,
        better: rule.better,
        min_effect: rule.min_effect,
        bound: Threshold::new(rule.better, rule.min_effect).bound(),
        completes: rule.completes,
        rows,
    })
}

/// The median of each student's best self-reported ratio.
fn median_best(better: Better, subs: &[SubmissionRow]) -> Option<f64> {
    let mut best: BTreeMap<&str, f64> = BTreeMap::new();
    for s in subs {
        let Some(r) = s.ratio else { continue };
        let b = best.entry(&s.student).or_insert(r);
        let better_one = match better {
            Better::Lower => r < *b,
            Better::Higher => r > *b,
        };
        if better_one {
            *b = r;
        }
    }
    let mut v: Vec<f64> = best.into_values().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One opened lab on the overview.
pub fn lab_summary(
    info: &LabInfo,
    lab: &LabRow,
    subs: &[SubmissionRow],
    roster: usize,
    now_ms: i64,
) -> LabSummary {
    // Every student with an upload, on the roster or not (a student removed from the roster
    // keeps their submissions).
    let by = standings(subs);
    let count = |keep: &dyn Fn(Standing) -> bool| by.values().filter(|s| keep(**s)).count() as u32;
    let passed = count(&|s| s.counts());
    LabSummary {
        lab: info.rule.lab,
        title: info.title.clone(),
        opens_at: show_ms(lab.opens_ms),
        closes_at: show_ms(lab.closes_ms),
        open: lab.opens_ms <= now_ms && now_ms < lab.closes_ms,
        submitted: by.len() as u32,
        passed,
        not_verified_yet: count(&|s| s == Standing::NotVerifiedYet),
        flagged: count(&|s| s == Standing::Flagged),
        verified_failed: count(&|s| s == Standing::VerifiedFailed),
        pass_rate: if roster == 0 {
            0.0
        } else {
            f64::from(passed) / roster as f64
        },
        median_ratio: median_best(info.rule.better, subs),
    }
}

pub fn history(subs: &[SubmissionRow]) -> Vec<HistoryRow> {
    subs.iter()
        .map(|s| HistoryRow {
            id: s.id.clone(),
            lab: s.lab as u32,
            ratio: reported(s),
            cpu_model: s.cpu_model.clone(),
            submitted_at: show_ms(s.received_ms),
            standing: standing(s),
            verification: s.verification.as_ref().map(verified_view),
        })
        .collect()
}

/// Every student's grade on every opened lab, from the verified board.
pub fn grades(
    cohort: &str,
    labs: &[(LabInfo, LabRow)],
    students: &[StudentRow],
    subs: &[SubmissionRow],
) -> Result<Vec<GradeRow>, RankError> {
    let mut out = Vec::new();
    for (info, lab) in labs {
        let mine: Vec<SubmissionRow> = subs.iter().filter(|s| s.lab == lab.lab).cloned().collect();
        let rule: GradingRule =
            serde_json::from_str(&lab.grading).unwrap_or_else(|_| default_grading());
        let verified_board = board(cohort, info, &mine, Tier::Verified)?;
        let entries: Vec<Entry> = verified_board
            .rows
            .iter()
            .filter_map(|r| {
                Some(Entry {
                    student: r.student.clone(),
                    tier: Tier::Verified,
                    ratio: interval(r.ratio, r.low, r.high)?,
                })
            })
            .collect();
        let b = Board::build(&entries, info.rule.better, Tier::Verified)?;
        let by = standings(&mine);
        for st in students {
            let (id, standing) = (
                st.id.as_str(),
                by.get(st.id.as_str())
                    .copied()
                    .unwrap_or(Standing::NotSubmitted),
            );
            // One meaning of passed: the standing says, and the verified board agrees (it
            // holds exactly the students whose re-run passed).
            let passed = standing.counts();
            debug_assert_eq!(passed, verified_board.rows.iter().any(|r| r.student == id));
            let g = if info.rule.completes {
                observatory_leaderboard::Grade {
                    student: id.to_string(),
                    passed,
                    bonus: false,
                    points: if passed { 1.0 } else { 0.0 },
                }
            } else {
                rule.grade(&b, id, passed)
            };
            out.push(GradeRow {
                student: g.student,
                lab: info.rule.lab,
                standing,
                passed: g.passed,
                bonus: g.bonus,
                points: g.points,
            });
        }
    }
    Ok(out)
}

/// Students with no accepted upload on a lab after `tries` refused ones.
pub fn stuck(attempts: &[AttemptRow], tries: u32) -> Vec<StuckRow> {
    let mut by: BTreeMap<(&str, i64), (u32, bool, &str)> = BTreeMap::new();
    for a in attempts {
        let e = by.entry((&a.student, a.lab)).or_insert((0, false, ""));
        if a.accepted {
            e.1 = true;
        } else {
            e.0 += 1;
            e.2 = &a.reason;
        }
    }
    by.into_iter()
        .filter(|(_, (n, ok, _))| !ok && *n >= tries)
        .map(|((student, lab), (n, _, reason))| StuckRow {
            student: student.to_string(),
            lab: lab as u32,
            tries: n,
            last_reason: reason.to_string(),
        })
        .collect()
}

pub fn export_rows(subs: &[SubmissionRow]) -> Vec<ExportRow> {
    subs.iter()
        .map(|s| ExportRow {
            id: s.id.clone(),
            student: s.student.clone(),
            lab: s.lab as u32,
            ratio: s.ratio,
            low: s.low,
            high: s.high,
            cpu_model: s.cpu_model.clone(),
            cores: s.cores as u32,
            submitted_at: show_ms(s.received_ms),
            standing: standing(s),
            verified: s.verification.is_some(),
            verified_passed: s.verification.as_ref().map(|v| v.passed),
            verified_ratio: s.verification.as_ref().and_then(|v| v.ratio),
            flagged: flagged(s),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(student: &str, lab: i64, accepted: bool, reason: &str) -> AttemptRow {
        AttemptRow {
            student: student.into(),
            lab,
            at_ms: 0,
            accepted,
            reason: reason.into(),
        }
    }

    #[test]
    fn stuck_is_no_pass_after_n_tries() {
        let a = vec![
            attempt("ada", 1, false, "tampered"),
            attempt("ada", 1, false, "not passed"),
            attempt("ada", 1, false, "not passed again"),
            attempt("bob", 1, false, "x"),
            attempt("bob", 1, false, "x"),
            attempt("bob", 1, false, "x"),
            attempt("bob", 1, true, ""),
            attempt("cy", 1, false, "x"),
        ];
        let s = stuck(&a, 3);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!((s[0].student.as_str(), s[0].tries), ("ada", 3));
        assert_eq!(s[0].last_reason, "not passed again");
        assert_eq!(stuck(&a, 1).len(), 2, "cy is stuck after 1 try; bob passed");
    }

    #[test]
    fn the_median_is_of_each_students_best() {
        let sub = |student: &str, ratio: f64| SubmissionRow {
            id: format!("{student}{ratio}"),
            cohort: "c".into(),
            student: student.into(),
            lab: 1,
            idempotency_key: String::new(),
            ratio: Some(ratio),
            low: Some(ratio),
            high: Some(ratio),
            change_sha256: String::new(),
            cpu_model: String::new(),
            cores: 2,
            received_ms: 0,
            verification: None,
        };
        let subs = vec![sub("a", 0.9), sub("a", 0.5), sub("b", 0.7), sub("c", 0.8)];
        assert_eq!(median_best(Better::Lower, &subs), Some(0.7));
        assert_eq!(median_best(Better::Higher, &subs), Some(0.8));
        assert_eq!(median_best(Better::Lower, &[]), None);
    }
}
