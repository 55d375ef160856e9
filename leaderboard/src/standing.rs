//! Where a student stands on a lab: the one meaning of "passed" that every page, the CLI and
//! every export share. A self-reported pass is only a claim until the instructor's re-run
//! (`observatory leaderboard verify`) confirms it, so grades count verified passes alone and
//! say how many results are still waiting.

use serde::{Deserialize, Serialize};

/// A student's standing on one lab, worst to best (a student with several submissions stands
/// where their best one does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// No accepted upload.
    NotSubmitted,
    /// Re-run by the instructor, and the re-run did not pass.
    VerifiedFailed,
    /// A passed check uploaded, not re-run yet: a claim, not counted.
    NotVerifiedYet,
    /// The re-run passed, but its ratio is far from the self-reported one (beyond both
    /// intervals): counted on the verified figure, and held up for the instructor to look at.
    Flagged,
    /// The re-run passed and agrees with the self-reported result.
    VerifiedPassed,
}

impl Standing {
    /// Every standing, in the order pages and exports list them.
    pub const ALL: [Standing; 5] = [
        Standing::VerifiedPassed,
        Standing::Flagged,
        Standing::NotVerifiedYet,
        Standing::VerifiedFailed,
        Standing::NotSubmitted,
    ];

    /// One submission's standing, from its verification (`passed`, `agrees`) if it has one.
    pub fn of_submission(verification: Option<(bool, bool)>) -> Standing {
        match verification {
            None => Standing::NotVerifiedYet,
            Some((false, _)) => Standing::VerifiedFailed,
            Some((true, false)) => Standing::Flagged,
            Some((true, true)) => Standing::VerifiedPassed,
        }
    }

    /// A student's standing from their submissions' standings: the best one.
    pub fn of_student(submissions: impl IntoIterator<Item = Standing>) -> Standing {
        submissions
            .into_iter()
            .max()
            .unwrap_or(Standing::NotSubmitted)
    }

    /// Does a grade count it as passed? Only a re-run that passed: a self-reported pass is a
    /// claim, and a flag marks the self-report, not the verified figure the grade uses.
    pub fn counts(self) -> bool {
        matches!(self, Standing::VerifiedPassed | Standing::Flagged)
    }

    /// The words every page and the CLI use (the exports spell them with `_`:
    /// `verified_passed`).
    pub fn words(self) -> &'static str {
        match self {
            Standing::NotSubmitted => "not submitted",
            Standing::VerifiedFailed => "verified failed",
            Standing::NotVerifiedYet => "not verified yet",
            Standing::Flagged => "flagged",
            Standing::VerifiedPassed => "verified passed",
        }
    }

    /// What the words mean, for a legend.
    pub fn meaning(self) -> &'static str {
        match self {
            Standing::NotSubmitted => "no passed check uploaded",
            Standing::VerifiedFailed => "the instructor's re-run did not pass: not counted",
            Standing::NotVerifiedYet => {
                "a passed check uploaded (self-reported), not re-run yet: not counted yet"
            }
            Standing::Flagged => {
                "the re-run passed, far from the self-reported figure: counted on the re-run's figure, for the instructor to look at"
            }
            Standing::VerifiedPassed => "the instructor's re-run passed: counted",
        }
    }
}

impl std::fmt::Display for Standing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.words())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_student_stands_where_their_best_submission_does() {
        use Standing::*;
        assert_eq!(Standing::of_student([]), NotSubmitted);
        let failed = Standing::of_submission(Some((false, false)));
        let waiting = Standing::of_submission(None);
        let flagged = Standing::of_submission(Some((true, false)));
        let passed = Standing::of_submission(Some((true, true)));
        assert_eq!(
            [failed, waiting, flagged, passed],
            [VerifiedFailed, NotVerifiedYet, Flagged, VerifiedPassed]
        );
        // A failed re-run, then a new upload not re-run yet: waiting, not failed.
        assert_eq!(Standing::of_student([failed, waiting]), NotVerifiedYet);
        assert_eq!(
            Standing::of_student([passed, flagged, failed]),
            VerifiedPassed
        );
        assert_eq!(Standing::of_student([waiting, flagged]), Flagged);
    }

    #[test]
    fn only_a_passing_re_run_counts_and_every_standing_has_its_own_words() {
        let counted: Vec<Standing> = Standing::ALL.into_iter().filter(|s| s.counts()).collect();
        assert_eq!(counted, [Standing::VerifiedPassed, Standing::Flagged]);
        let words: std::collections::BTreeSet<&str> =
            Standing::ALL.iter().map(|s| s.words()).collect();
        assert_eq!(words.len(), Standing::ALL.len());
        // The exports' names are the same words.
        for s in Standing::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json.trim_matches('"').replace('_', " "), s.words());
        }
        assert_eq!(
            serde_json::to_string(&Standing::NotVerifiedYet).unwrap(),
            "\"not_verified_yet\""
        );
    }
}
