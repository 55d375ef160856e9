//! The shared context of a running stage and its JSON snapshot (`/stats`, and the file written
//! at exit with `--stats-out`): exact counters, exact end-to-end percentiles (HDR, not
//! Prometheus buckets), CPU, memory and allocations. The local runner reads these.

use crate::alloc;
use crate::event::{DropClass, Latency};
use crate::metrics::Metrics;
use crate::slots::Hooks;
use crate::window::{latency_histogram, percentiles};
use hdrhistogram::Histogram;
use pipeline_plan::StageConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Percentiles of end-to-end latency, microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

/// A snapshot of one stage. Field meanings are documented in the README ("The run summary").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageStats {
    pub pipeline: String,
    pub stage: String,
    pub pid: u32,
    /// The stage has processed its whole input and forwarded its end of stream.
    pub finished: bool,
    pub uptime_seconds: f64,
    /// Wall clock (ns since the Unix epoch) when the stage started.
    pub started_unix_ns: u64,
    /// Wall clock when the stage finished its stream (0 while running).
    pub finished_unix_ns: u64,
    pub events_emitted: u64,
    pub events_received: u64,
    pub events_sent: u64,
    pub events_persisted: u64,
    /// Non-zero drop counts by reason.
    pub dropped: BTreeMap<String, u64>,
    pub dead_lettered: u64,
    pub discarded: u64,
    pub lost: u64,
    /// At least once: events received again after a failure and not applied twice.
    #[serde(default)]
    pub duplicates: u64,
    /// At least once: events the source generated again for a resend.
    #[serde(default)]
    pub events_resent: u64,
    /// Non-zero rejected-frame counts by reason.
    pub frames_rejected: BTreeMap<String, u64>,
    pub batches_received: u64,
    pub batches_sent: u64,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    pub windows_closed: u64,
    pub windows_persisted: u64,
    pub end_to_end_latency_us: Option<LatencySummary>,
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    /// Peak RSS of the process's whole life (includes the CPU profiler's memory, if one ran).
    pub peak_rss_bytes: u64,
    /// Peak RSS sampled (10 Hz) before the first CPU profile: the pipeline's own footprint.
    /// pprof-rs keeps a collector of ~80 MB from its first profile on.
    pub peak_rss_unprofiled_bytes: u64,
    /// Whether a CPU profile has been taken in this process.
    pub profiled: bool,
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub allocator: String,
    pub telemetry: bool,
}

/// What every part of a running stage shares.
pub struct StageCtx {
    pub cfg: StageConfig,
    pub metrics: Metrics,
    pub started: Instant,
    pub started_unix_ns: u64,
    /// Wall clock when the stream finished (0 while running).
    pub finished_unix_ns: AtomicU64,
    /// End-to-end latency (sink only), µs, exact to 2 significant digits.
    pub e2e: Mutex<Histogram<u32>>,
    /// Set once the data port is bound and the downstream connected.
    pub ready: AtomicBool,
    /// Set once the stage has forwarded its end of stream.
    pub finished: AtomicBool,
    /// Cancelled to ask the stage to finish its stream (SIGTERM, or a downstream request).
    pub drain: CancellationToken,
    /// Cancelled to stop waiting (the drain deadline passed, or a second SIGTERM): whatever is
    /// still queued is counted as `abandoned` and the stage finishes at once.
    pub abandon: CancellationToken,
    /// Cancelled when the process is about to exit: admin server and profiles stop.
    pub shutdown: CancellationToken,
    /// Set when the first CPU profile starts.
    pub profiled: AtomicBool,
    /// The course lab hooks, resolved once from the knobs ([`Hooks::NONE`] in production).
    pub labs: Hooks,
    /// At least once: the event time below which everything this stage sent is durably
    /// handled downstream (acknowledged); only ever grows. Sent upstream as acks.
    pub durable: tokio::sync::watch::Sender<u64>,
    /// At least once: bumped when what was sent downstream may be lost (a downstream
    /// connection broke, or a downstream asked): upstreams are asked to resend.
    pub rewind: tokio::sync::watch::Sender<u64>,
    rss_unprofiled_peak: AtomicU64,
    /// The shared token's digest, if one is configured: set once at start-up, before any
    /// connection (see [`crate::admission`]).
    pub token: std::sync::OnceLock<crate::admission::TokenDigest>,
}

/// At least once: the stream id of pipeline `pipeline`'s source (see
/// [`StageCtx::origin_stream`]); every data frame downstream of it carries it.
pub fn source_stream(pipeline: &str) -> u32 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pipeline.hash(&mut h);
    pipeline_plan::Role::Source.as_str().hash(&mut h);
    h.finish() as u32
}

impl StageCtx {
    /// The context of a stage with these knobs and its lab hooks (resolved from the knobs once,
    /// by the caller: [`Hooks::resolve`]).
    pub fn new(cfg: StageConfig, labs: Hooks) -> Arc<Self> {
        let metrics = Metrics::new(&cfg);
        Arc::new(StageCtx {
            cfg,
            metrics,
            started: Instant::now(),
            started_unix_ns: crate::net::now_ns(),
            finished_unix_ns: AtomicU64::new(0),
            e2e: Mutex::new(latency_histogram()),
            ready: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            drain: CancellationToken::new(),
            abandon: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            profiled: AtomicBool::new(false),
            labs,
            durable: tokio::sync::watch::Sender::new(0),
            rewind: tokio::sync::watch::Sender::new(0),
            rss_unprofiled_peak: AtomicU64::new(0),
            token: std::sync::OnceLock::new(),
        })
    }

    /// Whether the plan's delivery is `at_least_once`.
    pub fn at_least_once(&self) -> bool {
        self.cfg.knobs.common().delivery == pipeline_plan::Delivery::AtLeastOnce
    }

    /// At least once: the source's stream id, the origin every batch carries. A function of
    /// the pipeline's name only (at least once takes one source replica), so a restarted
    /// source, or its replacement pod, sends the same batches under the same id and every
    /// receiver knows them for what it has seen.
    pub fn origin_stream(&self) -> u32 {
        source_stream(&self.cfg.pipeline)
    }

    /// Record that everything below event time `through_us` is durable downstream.
    pub fn mark_durable(&self, through_us: u64) {
        self.durable.send_if_modified(|d| {
            let grew = through_us > *d;
            *d = (*d).max(through_us);
            grew
        });
    }

    /// Ask upstream to resend what is unacknowledged.
    pub fn ask_rewind(&self) {
        self.rewind.send_modify(|n| *n += 1);
    }

    /// The injected delay of a batch of `records` events (the `inject_delay_us` and
    /// `inject_delay_ns_per_event` knobs), if any.
    pub fn injected_delay(&self, records: u32) -> Option<std::time::Duration> {
        self.cfg.knobs.common().injected_delay(records)
    }

    /// Record the current RSS as part of the pipeline's own footprint, unless a profile has
    /// already run. Called periodically, and just before a profile starts.
    pub fn sample_rss(&self) {
        if !self.profiled.load(Ordering::Relaxed) {
            self.rss_unprofiled_peak
                .fetch_max(current_rss(), Ordering::Relaxed);
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> StageStats {
        let m = &self.metrics;
        let mut dropped = BTreeMap::new();
        let (mut dead, mut discard, mut lost, mut duplicates) = (0, 0, 0, 0);
        for (reason, n) in m.drops() {
            if n == 0 {
                continue;
            }
            dropped.insert(reason.as_str().to_string(), n);
            match reason.class() {
                DropClass::DeadLetter => dead += n,
                DropClass::Discard => discard += n,
                DropClass::Loss => lost += n,
                DropClass::Duplicate => duplicates += n,
            }
        }
        let frames_rejected = m
            .frames_rejected()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.to_string(), n))
            .collect();
        let e2e = self.e2e.lock().map(|h| (h.len(), percentiles(&h))).ok();
        let end_to_end_latency_us = e2e.filter(|(n, _)| *n > 0).map(
            |(
                count,
                Latency {
                    min,
                    p50,
                    p90,
                    p99,
                    max,
                },
            )| LatencySummary {
                count,
                min,
                p50,
                p90,
                p99,
                max,
            },
        );
        let usage = observatory_telemetry::process::usage();
        let (allocations, allocated_bytes) = alloc::totals();
        StageStats {
            pipeline: self.cfg.pipeline.clone(),
            stage: self.cfg.role().to_string(),
            pid: std::process::id(),
            finished: self.finished.load(Ordering::Relaxed),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            started_unix_ns: self.started_unix_ns,
            finished_unix_ns: self.finished_unix_ns.load(Ordering::Relaxed),
            events_emitted: m.events_emitted.get(),
            events_received: m.events_received.get(),
            events_sent: m.events_sent.get(),
            events_persisted: m.events_persisted.get(),
            dropped,
            dead_lettered: dead,
            discarded: discard,
            lost,
            duplicates,
            events_resent: m.events_resent.get(),
            frames_rejected,
            batches_received: m.batches_received.get(),
            batches_sent: m.batches_sent.get(),
            received_bytes: m.received_bytes.get(),
            sent_bytes: m.sent_bytes.get(),
            windows_closed: m.windows_closed.get(),
            windows_persisted: m.windows_persisted.get(),
            end_to_end_latency_us,
            cpu_seconds: usage.map_or(0.0, |u| u.cpu_seconds),
            rss_bytes: current_rss(),
            peak_rss_bytes: usage.map_or(0, |u| u.peak_rss_bytes),
            peak_rss_unprofiled_bytes: {
                self.sample_rss();
                self.rss_unprofiled_peak.load(Ordering::Relaxed)
            },
            profiled: self.profiled.load(Ordering::Relaxed),
            allocations,
            allocated_bytes,
            allocator: alloc::active().as_str().to_string(),
            telemetry: m.telemetry,
        }
    }
}

/// Current resident set size in bytes.
pub fn current_rss() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    pages * page
}
