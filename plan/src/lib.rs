//! Typed, validated knobs of every pipeline stage, and the plan that wires the stages together.
//!
//! This crate is deliberately small (serde only): the pipeline processes, the local runner and the
//! Kubernetes operator all depend on it, so a knob is defined once and both modes run the same
//! plan. Errors always name the knob (`parse.mode`, `sink.fsync_interval_ms`).

mod config;
mod knobs;
pub mod lab;
mod plan;

pub use config::{StageConfig, StageKnobs, new_token};
pub use knobs::{
    AggregateKnobs, Allocator, CommonKnobs, Delivery, EventTime, FsyncPolicy, Knobs, LabImpl,
    LabSlot, ParseKnobs, ParseMode, Role, SinkKnobs, SinkMode, SourceKnobs, StateStrategy,
};
pub use plan::{MAX_REPLICAS, Plan, PlanStage};

/// Environment variables `PIPELINE_KNOB_<NAME>=value` override a stage's knobs.
pub const KNOB_ENV_PREFIX: &str = "PIPELINE_KNOB_";

/// What can be wrong with knobs, a stage config or a plan.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("unknown knob `{knob}` (this stage has: {known})")]
    UnknownKnob { knob: String, known: String },
    #[error("knob `{knob}`: {message}")]
    Knob { knob: String, message: String },
    #[error("unknown stage `{0}` (stages are: source, parse, aggregate, sink, or `all`)")]
    UnknownStage(String),
    #[error("`{0}` is not of the form `stage.knob=value`")]
    BadAssignment(String),
    #[error("stage `{0}` is not in this plan")]
    AbsentStage(String),
    #[error("stage config {path}: {message}")]
    Config { path: String, message: String },
    #[error("plan: {0}")]
    Shape(String),
}
