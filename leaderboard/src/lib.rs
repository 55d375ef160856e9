//! Cohort leaderboards for instructors (issue 16): how lab results measured on students'
//! different machines are ranked fairly. Students' laptops differ by 2-3x in speed, so raw
//! times are never ranked: every entry is the lab's own B/A ratio from one interleaved run
//! (the student's change against the baseline on the same machine), with its 95% interval.
//!
//! - [`rank`]: the board of one lab: entries whose intervals overlap a band leader's share its
//!   tie band ("indistinguishable from #1"), instead of getting false ranks; self-reported and
//!   verified tiers; a verification that disagrees with the self-reported ratio beyond both
//!   intervals is flagged.
//! - [`bundle`]: what `lab submit` uploads, and its validation: the ratio recomputed from the
//!   raw figures with the runner's statistics, the pass recomputed with the lab's own rule.
//! - [`standing`]: the one meaning of "passed": not submitted, not verified yet, verified
//!   failed, flagged, verified passed; grades count a passing re-run only.
//! - [`copies`]: replayed, copied and scaled figures across students (refused at upload) and
//!   code alike after normalising (listed for the instructor).
//! - [`grade`]: the per-lab grading rules (threshold points or rank) on the verified board.
//! - [`text`]: ids as safe slugs, text without control or bidirectional formatting characters.
//! - [`synthetic`]: bundles made as the lab runner makes them, for demo cohorts, the load
//!   benchmark and tests.
//!
//! The server, its database and the web page build on these; nothing here does I/O.

pub mod bundle;
pub mod copies;
pub mod grade;
pub mod rank;
pub mod standing;
pub mod synthetic;
pub mod text;

pub use bundle::{Bundle, Fingerprint, LabRule, Refusal, sha256_hex};
pub use grade::{Grade, GradingRule};
pub use rank::{Board, Entry, Placed, RankError, Tier, agrees, well_formed};
pub use standing::Standing;
