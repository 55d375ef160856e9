//! The stage contract: what every stage (source, parse, aggregate, sink) MUST do, and the
//! helpers that make doing it the easy way. `tests/contract.rs` runs every role as a real
//! process and checks each point.
//!
//! A stage MUST:
//!
//! 1. **Take its knobs typed**, through [`StageCtx::knobs`]: a stage started with another
//!    role's knobs is an error that names both roles, never a panic.
//! 2. **Say it is ready only when it can do work**, through [`StageCtx::mark_ready`]: after its
//!    downstream is connected (source, parse, aggregate) or its log is open (sink); `/readyz`
//!    answers 503 until then and 200 after.
//! 3. **Do each batch inside one batch guard** ([`StageCtx::batch`] on the runtime,
//!    [`StageCtx::blocking_batch`] on a blocking thread), which always does the same things in
//!    the same order: the injected delay (`inject_delay_us`, `inject_delay_ns_per_event`)
//!    first, outside the timing; then
//!    the batch's span (`pipeline::batch`, when `telemetry` is on); then the work, timed; then
//!    `pipeline_batch_duration_seconds` observed.
//! 4. **Count every event it does not pass on, with a reason**, through
//!    `Metrics::drop_events` and a [`DropReason`](crate::event::DropReason) (one series per
//!    reason in `pipeline_events_dropped_total`); no stage keeps a drop counter of its own.
//! 5. **Serve the admin port** (`/metrics`, `/stats`, `/healthz`, `/readyz`, `/debug/pprof/*`)
//!    with the common series, [`REQUIRED_SERIES`].
//! 6. **Finish its stream and report**: drain on the first SIGTERM, write its final stats, and
//!    exit 0 (the driver in [`super::run`] does this for every role).

use crate::context::StageCtx;
use pipeline_plan::{AggregateKnobs, ParseKnobs, Role, SinkKnobs, SourceKnobs, StageKnobs};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tracing::Instrument;

/// The series every stage exports (contract point 5; histograms by their `_count`).
pub const REQUIRED_SERIES: &[&str] = &[
    "pipeline_events_received_total",
    "pipeline_events_sent_total",
    "pipeline_batches_received_total",
    "pipeline_batches_sent_total",
    "pipeline_events_dropped_total",
    "pipeline_batch_duration_seconds_count",
    "pipeline_allocations_total",
    "pipeline_stage_finished_timestamp_seconds",
    "pipeline_knob_info",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
];

/// The knobs of one role.
pub trait RoleKnobs: Clone {
    const ROLE: Role;
    fn of(knobs: &StageKnobs) -> Option<&Self>;
}

macro_rules! role_knobs {
    ($knobs:ty, $role:ident) => {
        impl RoleKnobs for $knobs {
            const ROLE: Role = Role::$role;
            fn of(knobs: &StageKnobs) -> Option<&Self> {
                match knobs {
                    StageKnobs::$role(k) => Some(k),
                    _ => None,
                }
            }
        }
    };
}
role_knobs!(SourceKnobs, Source);
role_knobs!(ParseKnobs, Parse);
role_knobs!(AggregateKnobs, Aggregate);
role_knobs!(SinkKnobs, Sink);

/// What a stage calls its batch: the span's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchKind {
    Generate,
    Parse,
    Aggregate,
    Persist,
}

impl BatchKind {
    fn span(self, records: u32) -> tracing::Span {
        match self {
            BatchKind::Generate => {
                tracing::debug_span!(target: "pipeline::batch", "generate", records)
            }
            BatchKind::Parse => tracing::debug_span!(target: "pipeline::batch", "parse", records),
            BatchKind::Aggregate => {
                tracing::debug_span!(target: "pipeline::batch", "aggregate", records)
            }
            BatchKind::Persist => {
                tracing::debug_span!(target: "pipeline::batch", "persist", records)
            }
        }
    }
}

/// One batch on a blocking thread: the span is entered and the clock runs from
/// [`StageCtx::blocking_batch`] until the guard is dropped, which observes the batch duration
/// (unless [`BlockingBatch::discard`] said there was no batch after all).
pub struct BlockingBatch<'a> {
    ctx: &'a StageCtx,
    t0: Instant,
    observe: bool,
    _span: Option<tracing::span::EnteredSpan>,
}

impl BlockingBatch<'_> {
    /// Nothing was done (the input had ended): no duration is observed.
    pub fn discard(mut self) {
        self.observe = false;
    }
}

impl Drop for BlockingBatch<'_> {
    fn drop(&mut self) {
        if self.observe && self.ctx.metrics.telemetry {
            self.ctx
                .metrics
                .batch_duration
                .observe(self.t0.elapsed().as_secs_f64());
        }
    }
}

impl StageCtx {
    /// This stage's knobs, typed (contract point 1).
    pub fn knobs<K: RoleKnobs>(&self) -> anyhow::Result<K> {
        K::of(&self.cfg.knobs).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "the {} stage was started with the knobs of a {} stage",
                K::ROLE,
                self.cfg.role()
            )
        })
    }

    /// The stage can do work: `/readyz` answers 200 from now on (contract point 2).
    pub fn mark_ready(&self) {
        if !self.ready.swap(true, Ordering::Relaxed) {
            tracing::debug!(stage = %self.cfg.role(), "ready");
        }
    }

    /// Do one batch on the runtime (contract point 3): the injected delay, then `work` inside
    /// the batch's span, timed, then its duration observed.
    pub async fn batch<F: Future>(&self, kind: BatchKind, records: u32, work: F) -> F::Output {
        if let Some(d) = self.injected_delay(records) {
            tokio::time::sleep(d).await;
        }
        let t0 = Instant::now();
        let out = if self.metrics.telemetry {
            work.instrument(kind.span(records)).await
        } else {
            work.await
        };
        if self.metrics.telemetry {
            self.metrics
                .batch_duration
                .observe(t0.elapsed().as_secs_f64());
        }
        out
    }

    /// Start one batch on a blocking thread (contract point 3): sleeps the injected delay, then
    /// enters the batch's span and starts the clock; dropping the guard observes the duration.
    pub fn blocking_batch(&self, kind: BatchKind, records: u32) -> BlockingBatch<'_> {
        if let Some(d) = self.injected_delay(records) {
            std::thread::sleep(d);
        }
        BlockingBatch {
            ctx: self,
            t0: Instant::now(),
            observe: true,
            _span: self.metrics.telemetry.then(|| kind.span(records).entered()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::Hooks;
    use pipeline_plan::StageConfig;

    #[test]
    fn knobs_of_another_role_are_an_error_naming_both() {
        let cfg = StageConfig::new("t", StageKnobs::Sink(SinkKnobs::default()));
        let ctx = StageCtx::new(cfg, Hooks::NONE);
        assert!(ctx.knobs::<SinkKnobs>().is_ok());
        let err = ctx.knobs::<ParseKnobs>().unwrap_err().to_string();
        assert_eq!(
            err,
            "the parse stage was started with the knobs of a sink stage"
        );
    }

    #[test]
    fn readiness_is_marked_once() {
        let ctx = StageCtx::new(
            StageConfig::new("t", StageKnobs::Source(SourceKnobs::default())),
            Hooks::NONE,
        );
        assert!(!ctx.is_ready());
        ctx.mark_ready();
        ctx.mark_ready();
        assert!(ctx.is_ready());
    }
}
