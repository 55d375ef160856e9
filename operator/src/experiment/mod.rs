//! The `Experiment`: a lab's A/B measurement on the cluster.
//!
//! - [`crd`]: the custom resource (spec and status).
//! - [`machine`]: its logic, with no I/O: validation, the Pipeline of each run, and the state
//!   machine ([`machine::decide`]) the controller follows.
//! - [`controller`]: the reconciler that does the machine's steps against the API.
//! - [`results`]: a run's numbers from Prometheus (the metric catalogue's PromQL) and its
//!   window marked on Grafana.
//! - [`leaderboard`]: the verdict posted to a cohort leaderboard as a submission's
//!   verification (`spec.leaderboard`).

pub mod controller;
pub mod crd;
pub mod leaderboard;
pub mod machine;
pub mod results;

pub use crd::*;
pub use machine::*;
