//! Prometheus metrics of one stage process.
//!
//! Every handle is registered and resolved once at start-up (including one series per drop
//! reason, so dashboards see zeros rather than gaps) and is updated once per batch, never per
//! event. Every series carries the constant labels `pipeline`, `stage` and any plan labels
//! (e.g. `run="baseline"`). The counters double as the stage's accounting: conservation
//! (`emitted = persisted + dead-lettered + discarded + lost`) is computed from them.

use crate::alloc;
use crate::codec::FrameError;
use crate::event::DropReason;
use pipeline_plan::{Role, StageConfig};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    exponential_buckets,
};
use std::collections::HashMap;

/// Handles of one stage. Role-specific metrics are registered only on their role, but the
/// handles always exist so code never branches on whether they do.
pub struct Metrics {
    pub registry: Registry,
    /// Histograms and allocation counting on (the `telemetry` knob).
    pub telemetry: bool,
    pub role: Role,

    pub events_received: IntCounter,
    pub events_sent: IntCounter,
    pub received_bytes: IntCounter,
    pub sent_bytes: IntCounter,
    pub batches_received: IntCounter,
    pub batches_sent: IntCounter,
    dropped: Vec<IntCounter>,
    dropped_bytes: Vec<IntCounter>,
    frames_rejected: Vec<IntCounter>,
    pub upstream_connections: IntGauge,
    pub input_queue_depth: IntGauge,
    pub output_queue_depth: IntGauge,
    pub batch_duration: Histogram,
    pub batch_age: Histogram,
    /// When the stage finished its stream (Unix seconds; 0 while running).
    pub finished_at: prometheus::Gauge,

    /// Source.
    pub events_emitted: IntCounter,
    pub events_resent: IntCounter,
    /// Aggregate.
    pub windows_open: IntGauge,
    pub windows_closed: IntCounter,
    /// Sink.
    pub events_persisted: IntCounter,
    pub windows_persisted: IntCounter,
    pub log_written_bytes: IntCounter,
    pub fsyncs: IntCounter,
    pub fsync_duration: Histogram,
    pub end_to_end_latency: Histogram,
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("static metric definition is valid")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("static metric definition is valid")
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("static metric definition is valid")
}

/// Latency-style buckets: 10 µs .. ~42 s, doubling.
fn seconds_buckets() -> Vec<f64> {
    exponential_buckets(1e-5, 2.0, 23).expect("valid buckets")
}

impl Metrics {
    pub fn new(cfg: &StageConfig) -> Self {
        let role = cfg.role();
        let mut labels: HashMap<String, String> = cfg.labels.clone().into_iter().collect();
        labels.insert("pipeline".into(), cfg.pipeline.clone());
        labels.insert("stage".into(), role.to_string());
        let registry =
            Registry::new_custom(None, Some(labels)).expect("constant labels are valid names");

        let dropped_vec = IntCounterVec::new(
            Opts::new(
                "pipeline_events_dropped_total",
                "Events dropped by this stage, by reason (dead letters, discards and losses).",
            ),
            &["reason"],
        )
        .expect("valid");
        let dropped = DropReason::ALL
            .iter()
            .map(|r| dropped_vec.with_label_values(&[r.as_str()]))
            .collect();
        let dropped_bytes_vec = IntCounterVec::new(
            Opts::new(
                "pipeline_dropped_bytes_total",
                "Bytes of the records or frames this stage dropped, by reason (0 where they never arrived: lost_in_transit).",
            ),
            &["reason"],
        )
        .expect("valid");
        let dropped_bytes = DropReason::ALL
            .iter()
            .map(|r| dropped_bytes_vec.with_label_values(&[r.as_str()]))
            .collect();
        let rejected_vec = IntCounterVec::new(
            Opts::new(
                "pipeline_frames_rejected_total",
                "Frames refused on the data port (the connection is closed), by reason.",
            ),
            &["reason"],
        )
        .expect("valid");
        let frames_rejected = FrameError::REASONS
            .iter()
            .map(|r| rejected_vec.with_label_values(&[r]))
            .collect();
        let queue_vec = IntGaugeVec::new(
            Opts::new(
                "pipeline_queue_depth",
                "Batches waiting in a bounded internal queue.",
            ),
            &["queue"],
        )
        .expect("valid");
        let capacity_vec = IntGaugeVec::new(
            Opts::new(
                "pipeline_queue_capacity",
                "Capacity, in batches, of a bounded internal queue.",
            ),
            &["queue"],
        )
        .expect("valid");
        let capacity = i64::from(cfg.knobs.common().queue_capacity);
        for q in ["input", "output"] {
            capacity_vec.with_label_values(&[q]).set(capacity);
        }

        let m = Metrics {
            telemetry: cfg.knobs.common().telemetry,
            role,
            events_received: counter(
                "pipeline_events_received_total",
                "Events received from upstream (at the sink: events inside received window results).",
            ),
            events_sent: counter(
                "pipeline_events_sent_total",
                "Events passed on downstream (at the aggregate: events inside emitted windows; at the sink: events persisted).",
            ),
            received_bytes: counter(
                "pipeline_received_bytes_total",
                "Frame bytes received on the data port.",
            ),
            sent_bytes: counter(
                "pipeline_sent_bytes_total",
                "Frame bytes written downstream.",
            ),
            batches_received: counter("pipeline_batches_received_total", "Data frames received."),
            batches_sent: counter(
                "pipeline_batches_sent_total",
                "Data frames written downstream.",
            ),
            dropped,
            dropped_bytes,
            frames_rejected,
            upstream_connections: gauge(
                "pipeline_upstream_connections",
                "Open connections on the data port.",
            ),
            input_queue_depth: queue_vec.with_label_values(&["input"]),
            output_queue_depth: queue_vec.with_label_values(&["output"]),
            batch_duration: histogram(
                "pipeline_batch_duration_seconds",
                "Time to process one received batch.",
                exponential_buckets(1e-6, 2.0, 24).expect("valid buckets"),
            ),
            batch_age: histogram(
                "pipeline_batch_age_seconds",
                "Age of a batch when it arrives here: now minus when its oldest data left the source.",
                seconds_buckets(),
            ),
            finished_at: prometheus::Gauge::new(
                "pipeline_stage_finished_timestamp_seconds",
                "When the stage finished its stream, Unix seconds (0 while it runs): with process_start_time_seconds, it marks a run.",
            )
            .expect("valid"),
            events_emitted: counter(
                "pipeline_events_emitted_total",
                "Events generated or replayed by the source.",
            ),
            events_resent: counter(
                "pipeline_events_resent_total",
                "At least once: events the source generated again to resend what was not acknowledged.",
            ),
            windows_open: gauge(
                "pipeline_windows_open",
                "Windows currently open in the aggregate.",
            ),
            windows_closed: counter(
                "pipeline_windows_closed_total",
                "Windows closed and emitted by the aggregate.",
            ),
            events_persisted: counter(
                "pipeline_events_persisted_total",
                "Events inside window results appended to the segment log.",
            ),
            windows_persisted: counter(
                "pipeline_windows_persisted_total",
                "Window results appended to the segment log.",
            ),
            log_written_bytes: counter(
                "pipeline_log_written_bytes_total",
                "Bytes appended to the segment log.",
            ),
            fsyncs: counter("pipeline_fsyncs_total", "fsync calls on the segment log."),
            fsync_duration: histogram(
                "pipeline_fsync_duration_seconds",
                "Duration of one fsync.",
                seconds_buckets(),
            ),
            end_to_end_latency: histogram(
                "pipeline_end_to_end_latency_seconds",
                "From the newest event of a window leaving the source to its result being persisted.",
                seconds_buckets(),
            ),
            registry,
        };

        let r = &m.registry;
        let common: Vec<Box<dyn Collector>> = vec![
            Box::new(m.events_received.clone()),
            Box::new(m.events_sent.clone()),
            Box::new(m.received_bytes.clone()),
            Box::new(m.sent_bytes.clone()),
            Box::new(m.batches_received.clone()),
            Box::new(m.batches_sent.clone()),
            Box::new(dropped_vec),
            Box::new(dropped_bytes_vec),
            Box::new(rejected_vec),
            Box::new(m.upstream_connections.clone()),
            Box::new(queue_vec),
            Box::new(capacity_vec),
            Box::new(m.batch_duration.clone()),
            Box::new(m.batch_age.clone()),
            Box::new(m.finished_at.clone()),
            Box::new(AllocCollector::new()),
            Box::new(knob_info(cfg)),
        ];
        let specific: Vec<Box<dyn Collector>> = match role {
            Role::Source => vec![
                Box::new(m.events_emitted.clone()),
                Box::new(m.events_resent.clone()),
            ],
            Role::Parse => vec![],
            Role::Aggregate => vec![
                Box::new(m.windows_open.clone()),
                Box::new(m.windows_closed.clone()),
            ],
            Role::Sink => vec![
                Box::new(m.events_persisted.clone()),
                Box::new(m.windows_persisted.clone()),
                Box::new(m.log_written_bytes.clone()),
                Box::new(m.fsyncs.clone()),
                Box::new(m.fsync_duration.clone()),
                Box::new(m.end_to_end_latency.clone()),
            ],
        };
        for c in common.into_iter().chain(specific) {
            r.register(c).expect("each metric is registered once");
        }
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            observatory_telemetry::process::ProcessMetrics::for_self(),
        ))
        .expect("process collector registers once");
        m
    }

    /// Count `events` dropped for `reason`, `bytes` long in all.
    #[inline]
    pub fn drop_events(&self, reason: DropReason, events: u64, bytes: u64) {
        if events > 0 {
            self.dropped[reason.index()].inc_by(events);
        }
        if bytes > 0 {
            self.dropped_bytes[reason.index()].inc_by(bytes);
        }
    }

    /// Count a rejected frame.
    pub fn frame_rejected(&self, err: &FrameError) {
        if let Some(i) = FrameError::REASONS.iter().position(|r| *r == err.reason()) {
            self.frames_rejected[i].inc();
        }
    }

    /// Count of rejected frames for a reason label.
    pub fn frames_rejected(&self) -> Vec<(&'static str, u64)> {
        FrameError::REASONS
            .iter()
            .zip(&self.frames_rejected)
            .map(|(r, c)| (*r, c.get()))
            .collect()
    }

    /// Drop counts by reason.
    pub fn drops(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| (*r, self.dropped[r.index()].get()))
            .collect()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// `pipeline_knob_info{knob, value} 1` for every knob of the stage, plus the allocator in use:
/// dashboards and lab comparisons select runs by knob.
fn knob_info(cfg: &StageConfig) -> IntGaugeVec {
    let v = IntGaugeVec::new(
        Opts::new("pipeline_knob_info", "The stage's knob values (always 1)."),
        &["knob", "value"],
    )
    .expect("valid");
    for (k, text) in cfg.knobs.to_text() {
        v.with_label_values(&[&k, &text]).set(1);
    }
    v.with_label_values(&["allocator_active", alloc::active().as_str()])
        .set(1);
    v
}

/// Reads the counting allocator's totals at scrape time.
struct AllocCollector {
    descs: Vec<Desc>,
    allocations: IntCounter,
    bytes: IntCounter,
}

impl AllocCollector {
    fn new() -> Self {
        let allocations = counter(
            "pipeline_allocations_total",
            "Heap allocations by the process (reallocations included); 0 while telemetry is off.",
        );
        let bytes = counter(
            "pipeline_allocated_bytes_total",
            "Bytes requested from the heap by the process; 0 while telemetry is off.",
        );
        let descs = allocations
            .desc()
            .into_iter()
            .chain(bytes.desc())
            .cloned()
            .collect();
        AllocCollector {
            descs,
            allocations,
            bytes,
        }
    }
}

impl Collector for AllocCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (n, b) = alloc::totals();
        self.allocations
            .inc_by(n.saturating_sub(self.allocations.get()));
        self.bytes.inc_by(b.saturating_sub(self.bytes.get()));
        let mut out = self.allocations.collect();
        out.extend(self.bytes.collect());
        out
    }
}
