//! The observatory's measurements, built on the local runner (`observatory-runner`).
//!
//! - [`ab`]: the A/B engine: interleaved runs of two plans (or A/A: the noise floor).
//! - [`callgrind`]: the deterministic mode: instruction counts of one stage's kernel.
//! - [`criterion_summary`]: criterion's results as a sample file.
//! - [`samples`]: the sample-file format, and comparing two files (regressions).
//! - [`report`], [`plot`]: the A/B report folder: JSON, table, plots, differential flamegraph.
//! - [`stats`]: ratios of medians with bootstrap intervals, the metric catalogue and the verdict
//!   rule (the `observatory-stats` crate, which the lab runner and the operator share).

pub mod ab;
pub mod callgrind;
pub mod criterion_summary;
pub mod plot;
pub mod report;
pub mod samples;

pub use observatory_stats as stats;
