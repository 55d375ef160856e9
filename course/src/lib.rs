//! The course: labs as data and the runner's logic behind `observatory lab ...`.
//!
//! - [`spec`]: a lab is a folder `course/labs/NN-slug/` with `README.md` (what the student
//!   reads) and `lab.toml` (workload, baseline, change under test, measurement, expected effect,
//!   hints, or for a recall lab the labs it revisits); code labs name their slot in
//!   `pipeline/src/slots/`, keep the reference solution beside the lab and list wrong but fast
//!   `mutants` the authoring check proves are refused.
//! - [`check`]: runs a lab's baseline against the student's change (or the reference) with the
//!   A/B engine of `observatory-bench`, and decides pass or fail from the interval.
//! - [`predict`]: the student's prediction of the effect, compared with the measurement.
//! - [`progress`]: the student's progress and answers, in `.observatory/` at the repository
//!   root.
//! - [`submission`]: a leaderboard submission made from the student's last check (refused
//!   when that check failed, was not of the student's change, or is stale).

pub mod check;
pub mod predict;
pub mod progress;
pub mod spec;
pub mod submission;

pub use spec::{Lab, load_labs};
