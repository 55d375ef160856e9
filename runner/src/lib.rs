//! The local runner: a plan run as one child process per stage on loopback (the local mode of
//! the observatory, `observatory up --local` and `run --local`), and everything a single run
//! produces.
//!
//! - [`local`]: start, watch, drain and stop the stage processes.
//! - [`run`]: one run: live display, mid-run flamegraphs, the report folder.
//! - [`summary`]: the run summary (JSON and text) and its conservation check.
//! - [`stack`]: Prometheus and Grafana around a local run, when installed.
//! - [`flame`]: folded stacks to flamegraph SVGs.
//! - [`http`]: scraping admin ports.
//! - [`chaos`]: faults done to real stage processes; [`robustness`]: attacks on a real run.
//! - [`sandbox`]: untrusted code (a submission an instructor verifies) confined with Landlock.
//!
//! Measuring (A/B, instruction counts, reports) is the `observatory-bench` crate's business.

pub mod chaos;
pub mod flame;
pub mod http;
pub mod local;
pub mod robustness;
pub mod run;
pub mod sandbox;
pub mod stack;
pub mod summary;
