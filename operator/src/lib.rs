//! The observatory's Kubernetes operator, one folder per resource and the parts both share.
//!
//! - [`pipeline`]: the `Pipeline` resource: CRD, rendering, reconciler, pod diagnosis.
//! - [`experiment`]: the `Experiment` resource (a lab's A/B on the cluster): CRD, pure state
//!   machine, reconciler, results from Prometheus and Grafana annotations.
//! - [`run`]: the operator process: leader election, both controllers, the admin port.
//! - [`api`]: what both reconcilers do with the API alike (status apply, Events, backoff count).
//! - [`health`]: whether the controllers' watches work; [`admin`]: the admin port serving it.
//! - [`metrics`]: the operator's own Prometheus metrics.

pub mod admin;
pub mod api;
pub mod experiment;
#[cfg(test)]
pub mod fixtures;
pub mod health;
pub mod metrics;
pub mod pipeline;
pub mod run;
