//! The observatory's Kubernetes operator.
//!
//! - [`crd`]: the `Pipeline` custom resource (typed knobs shared with the pipeline).
//! - [`render`]: the pure function from a Pipeline to the objects it wants (no I/O).
//! - [`controller`]: the reconciler: server-side apply, pruning, status, events.
//! - [`experiment`]: the `Experiment` resource (a lab's A/B on the cluster) and its pure state
//!   machine; [`experiment_controller`] does its steps; [`results`] reads Prometheus and
//!   annotates Grafana.
//! - [`pods`]: why a stage is not ready, from its pods.
//! - [`health`]: whether the controllers' watches work; [`admin`]: the admin port serving it.
//! - [`api`]: what both reconcilers do with the API alike (status apply, Events, backoff count).
//! - [`metrics`]: the operator's own Prometheus metrics.

pub mod admin;
pub mod api;
pub mod controller;
pub mod crd;
pub mod experiment;
pub mod experiment_controller;
#[cfg(test)]
pub mod fixtures;
pub mod health;
pub mod metrics;
pub mod pods;
pub mod render;
pub mod results;
