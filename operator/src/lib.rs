//! The observatory's Kubernetes operator.
//!
//! - [`crd`]: the `Pipeline` custom resource (typed knobs shared with the pipeline).
//! - [`render`]: the pure function from a Pipeline to the objects it wants (no I/O).
//! - [`controller`]: the reconciler: server-side apply, pruning, status, events.
//! - [`metrics`]: the operator's own Prometheus metrics.

pub mod controller;
pub mod crd;
#[cfg(test)]
pub mod fixtures;
pub mod metrics;
pub mod render;
