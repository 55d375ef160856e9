//! The `Pipeline`: the streaming pipeline a cluster runs.
//!
//! - [`crd`]: the custom resource (typed knobs shared with the pipeline), and both CRDs as the
//!   API server is given them.
//! - [`render`]: the pure function from a Pipeline to the objects it wants (no I/O).
//! - [`controller`]: the reconciler: server-side apply, pruning, status, events.
//! - [`pods`]: why a stage is not ready, from its pods.

pub mod controller;
pub mod crd;
pub mod pods;
pub mod render;
