//! The observatory's measurement library.
//!
//! - [`local`]: run a plan as child processes on loopback (the local mode of the observatory).
//! - [`run`]: one measured run: live display, mid-run flamegraphs, the report folder.
//! - [`summary`]: the run summary (JSON and text) and its conservation check.
//! - [`stack`]: Prometheus and Grafana around a local run, when installed.
//! - [`ab`]: interleaved A/B runs of two plans, with a bootstrap interval on the ratio.
//! - [`http`]: scraping admin ports.

pub mod ab;
pub mod http;
pub mod local;
pub mod run;
pub mod stack;
pub mod summary;
