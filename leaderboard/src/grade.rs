//! Per-lab grading on the verified board.

use crate::rank::Board;
use observatory_stats::Better;
use serde::{Deserialize, Serialize};

/// How a lab is graded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum GradingRule {
    /// A passed check is a pass; a verified ratio within `bonus_within` (e.g. 1.05) of the
    /// best verified ratio is a bonus as well.
    Threshold { bonus_within: f64 },
    /// Points by tie band: `points[0]` for band 1, and so on; bands past the list get the
    /// last value (a pass below every listed band), and a failed check gets none.
    Rank { points: Vec<f64> },
}

/// A student's grade on one lab.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Grade {
    pub student: String,
    pub passed: bool,
    pub bonus: bool,
    pub points: f64,
}

impl GradingRule {
    /// The grade of `student` given the verified board and whether their verified check
    /// passed the lab (the lab runner's pass rule; a student not on the board gets nothing).
    pub fn grade(&self, board: &Board, student: &str, passed: bool) -> Grade {
        let on_board = board.placed.iter().find(|p| p.entry.student == student);
        let mut g = Grade {
            student: student.to_string(),
            passed: passed && on_board.is_some(),
            bonus: false,
            points: 0.0,
        };
        let (Some(p), true) = (on_board, g.passed) else {
            return g;
        };
        match self {
            GradingRule::Threshold { bonus_within } => {
                let best = board.best().unwrap_or(p.entry.ratio.ratio);
                let mine = p.entry.ratio.ratio;
                g.bonus = match board.better {
                    Better::Lower => mine <= best * bonus_within,
                    Better::Higher => mine * bonus_within >= best,
                };
                g.points = if g.bonus { 2.0 } else { 1.0 };
            }
            GradingRule::Rank { points } => {
                g.points = points
                    .get(p.band - 1)
                    .or(points.last())
                    .copied()
                    .unwrap_or(0.0);
                g.bonus = p.band == 1;
            }
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rank::{Entry, Tier};
    use observatory_stats::RatioInterval;

    fn board(better: Better, rows: &[(&str, f64, f64, f64)]) -> Board {
        let entries: Vec<Entry> = rows
            .iter()
            .map(|(s, ratio, low, high)| Entry {
                student: s.to_string(),
                tier: Tier::Verified,
                ratio: RatioInterval {
                    ratio: *ratio,
                    low: *low,
                    high: *high,
                },
            })
            .collect();
        Board::build(&entries, better, Tier::Verified).unwrap()
    }

    #[test]
    fn threshold_bonus_is_within_the_factor_of_the_best_in_either_direction() {
        let rule = GradingRule::Threshold { bonus_within: 1.05 };
        let lower = board(
            Better::Lower,
            &[
                ("ann", 0.40, 0.40, 0.40),
                ("bob", 0.42, 0.42, 0.42),
                ("cyd", 0.43, 0.43, 0.43),
            ],
        );
        let g = |b: &Board, s: &str, passed: bool| {
            let g = rule.grade(b, s, passed);
            (g.passed, g.bonus, g.points)
        };
        assert_eq!(g(&lower, "ann", true), (true, true, 2.0));
        assert_eq!(g(&lower, "bob", true), (true, true, 2.0));
        assert_eq!(g(&lower, "cyd", true), (true, false, 1.0));
        assert_eq!(g(&lower, "cyd", false), (false, false, 0.0));
        assert_eq!(g(&lower, "zed", true), (false, false, 0.0));
        let higher = board(
            Better::Higher,
            &[("ann", 5.0, 5.0, 5.0), ("bob", 4.7, 4.7, 4.7)],
        );
        assert_eq!(g(&higher, "bob", true), (true, false, 1.0));
        let higher = board(
            Better::Higher,
            &[("ann", 5.0, 5.0, 5.0), ("bob", 4.8, 4.8, 4.8)],
        );
        assert_eq!(g(&higher, "bob", true), (true, true, 2.0));
    }

    #[test]
    fn rank_points_go_by_band() {
        let rule = GradingRule::Rank {
            points: vec![3.0, 2.0, 1.0],
        };
        let b = board(
            Better::Lower,
            &[
                ("ann", 0.40, 0.39, 0.41),
                ("bob", 0.41, 0.40, 0.42),
                ("cyd", 0.50, 0.50, 0.50),
                ("dee", 0.60, 0.60, 0.60),
                ("eve", 0.70, 0.70, 0.70),
            ],
        );
        let points: Vec<f64> = ["ann", "bob", "cyd", "dee", "eve"]
            .iter()
            .map(|s| rule.grade(&b, s, true).points)
            .collect();
        assert_eq!(points, [3.0, 3.0, 2.0, 1.0, 1.0]);
    }
}
