//! The observatory's streaming pipeline: `source -> parse -> aggregate -> sink`, one role per
//! process, connected over TCP with length-delimited, batched frames and bounded queues.
//!
//! - Formats, from the `pipeline-wire` crate and re-exported here under the same names:
//!   [`event`] (compact records, drop reasons), [`generate`] (the seeded workload), [`json`]
//!   (owned and borrowed JSON parsing), [`seglog`] (the sink's checksummed log), [`codec`]
//!   (frames), [`admission`] (which peers a data port admits: hello, token, limits), [`fuzzing`]
//!   (what each cargo fuzz target in `fuzz/` checks, and its seeds).
//! - State, pure and unit-tested: [`window`] (tumbling windows, HDR percentiles), [`state`] (the
//!   aggregate's shared state strategies), [`reference`] (what a run's log must hold, computed
//!   from the seed).
//! - I/O: [`net`] (ingress, egress, drain, backpressure).
//! - Stages: [`stage`] (one module per role, and the process driver).
//! - Course labs: [`slots`] (code slots a lab selects by knob; resolved once at start-up, nothing
//!   runs without one; reference solutions only with the `lab-reference` feature).
//! - Observability: [`metrics`] (Prometheus), [`context`] (the stage's shared context and its JSON snapshot, `StageStats`), [`admin`] (the admin
//!   port: metrics, health, pprof), [`alloc`] (the counting, switchable global allocator); logs
//!   and OTLP traces come from the `observatory-telemetry` crate.

pub use pipeline_wire::{admission, codec, event, fuzzing, generate, json, seglog};

pub mod admin;
pub mod alloc;
pub mod bounds;
pub mod context;
pub mod metrics;
pub mod net;
pub mod reference;
pub mod slots;
pub mod stage;
pub mod state;
pub mod window;
