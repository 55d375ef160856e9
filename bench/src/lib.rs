//! The observatory's measurement library.
//!
//! - [`local`]: run a plan as child processes on loopback (the local mode of the observatory).
//! - [`run`]: one measured run: live display, mid-run flamegraphs, the report folder.
//! - [`summary`]: the run summary (JSON and text) and its conservation check.
//! - [`stack`]: Prometheus and Grafana around a local run, when installed.
//! - [`ab`]: the A/B engine: interleaved runs of two plans (or A/A: the noise floor).
//! - [`stats`]: ratios of medians with bootstrap intervals, verdicts, noise flags (the
//!   `observatory-stats` crate, which the operator's Experiment shares).
//! - [`samples`]: the sample-file format, and comparing two files (regressions).
//! - [`report`], [`plot`], [`flame`]: the report folder: JSON, table, plots, flamegraphs.
//! - [`callgrind`]: the deterministic mode: instruction counts of one stage's kernel.
//! - [`http`]: scraping admin ports.

pub mod ab;
pub mod callgrind;
pub mod criterion_summary;
pub mod flame;
pub mod http;
pub mod local;
pub mod plot;
pub mod report;
pub mod run;
pub mod samples;
pub mod stack;
pub mod summary;

pub use observatory_stats as stats;
