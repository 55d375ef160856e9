//! The sink: appends window results to the segment log (or discards them in `blackhole` mode)
//! on a dedicated thread, applies the fsync policy, and measures end-to-end latency: from the
//! newest event of a window leaving the source to its result being persisted.
//!
//! At least once, a frame is acknowledged to the aggregate once it is durable under the fsync
//! policy (`batch`: synced after the frame; `interval`: at the next sync, which also happens
//! whenever the queue runs empty; `never`: handed to the OS), and a window result already in
//! the log (a resend after a failure, or a window a restarted aggregate rebuilt) is dropped as
//! `duplicate`: the log holds each window once. The windows seen are read back from the log at
//! start-up and kept for [`DEDUP_WINDOWS`] window lengths behind the newest.

use super::contract::BatchKind;
use crate::codec::Frame;
use crate::context::StageCtx;
use crate::event::{DropReason, WindowResult};
use crate::net::Acker;
use crate::net::{Ingress, Input, now_ns};
use crate::seglog::{SegmentLog, os_message};
use crate::slots;
use anyhow::Context;
use pipeline_plan::{FsyncPolicy, LabSlot, SinkKnobs, SinkMode};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::info;

pub async fn run(ctx: Arc<StageCtx>, listener: TcpListener) -> anyhow::Result<()> {
    let knobs: SinkKnobs = ctx.knobs()?;
    // Open (and repair) the log before declaring readiness, so a bad directory fails fast.
    let log = match knobs.mode {
        SinkMode::Log => {
            // Errors name the knob: that is what the person running it can change.
            let dir = Path::new(&knobs.dir);
            if let Err(e) = std::fs::create_dir_all(dir) {
                anyhow::bail!(
                    "sink.dir: cannot create {}: {}",
                    dir.display(),
                    os_message(&e)
                );
            }
            let (log, recovery) = SegmentLog::open(dir, knobs.segment_bytes)
                .map_err(|e| anyhow::anyhow!("sink.dir: cannot open the segment log: {e}"))?;
            info!(
                dir = %dir.display(),
                existing_records = recovery.existing_records,
                truncated_torn_bytes = recovery.truncated_bytes,
                "segment log open"
            );
            Some(log)
        }
        SinkMode::Blackhole => None,
    };
    let seen = match (&log, ctx.at_least_once()) {
        (Some(_), true) => Some(Seen::from_log(Path::new(&knobs.dir))?),
        _ => None,
    };
    let mut ingress = Ingress::start(ctx.clone(), listener);
    ctx.mark_ready();
    let (tx, rx) = mpsc::channel::<(u64, Frame)>(knobs.common.queue_capacity as usize);
    let writer_ctx = ctx.clone();
    let acker = ingress.acker();
    let writer =
        tokio::task::spawn_blocking(move || persist(&writer_ctx, &knobs, log, rx, seen, acker));
    while let Some(input) = ingress.recv().await {
        if let Input::Batch { conn, frame } = input
            && tx.send((conn, frame)).await.is_err()
        {
            break;
        }
    }
    drop(tx);
    writer.await.context("log writer thread")?
}

/// How many window lengths behind the newest window the sink remembers which windows it has
/// (at least once). A resend never reaches that far back: what the source resends starts at
/// most one batch before the last window boundary the sink acknowledged.
pub const DEDUP_WINDOWS: u64 = 64;

/// At least once: the windows in the log, by (start, service, route).
struct Seen(BTreeSet<(u64, String, String)>);

impl Seen {
    fn from_log(dir: &Path) -> anyhow::Result<Self> {
        let mut seen = Seen(BTreeSet::new());
        crate::seglog::read_log(dir, |rec| {
            if let Ok(w) = WindowResult::decode(rec) {
                seen.insert(&w);
            }
        })
        .map_err(|e| anyhow::anyhow!("sink.dir: cannot read the segment log back: {e}"))?;
        info!(windows = seen.0.len(), "windows already in the log");
        Ok(seen)
    }

    /// Record a window; `false` if it is in the log already.
    fn insert(&mut self, w: &WindowResult) -> bool {
        let fresh = self
            .0
            .insert((w.window_start_us, w.service.clone(), w.route.clone()));
        let width = w.window_end_us.saturating_sub(w.window_start_us);
        let newest = self.0.last().map_or(0, |n| n.0);
        let horizon = newest.saturating_sub(width.saturating_mul(DEDUP_WINDOWS));
        if self.0.first().is_some_and(|f| f.0 < horizon) {
            self.0 = self.0.split_off(&(horizon, String::new(), String::new()));
        }
        fresh
    }
}

fn persist(
    ctx: &StageCtx,
    k: &SinkKnobs,
    mut log: Option<SegmentLog>,
    mut rx: mpsc::Receiver<(u64, Frame)>,
    mut seen: Option<Seen>,
    acker: Acker,
) -> anyhow::Result<()> {
    let alo = ctx.at_least_once();
    // Frames written and not yet acknowledged: (connection, frames of it handled).
    let mut unacked: Vec<(u64, u64)> = Vec::new();
    let ack = |unacked: &mut Vec<(u64, u64)>| {
        for (conn, frames) in unacked.drain(..) {
            acker.ack(conn, frames);
        }
    };
    let m = &ctx.metrics;
    let interval = Duration::from_millis(k.fsync_interval_ms);
    let mut last_sync = Instant::now();
    // Lab 13's group-commit policy (`lab_slot = fsync`) in place of `fsync`'s: the batches
    // written since the last sync, and when the first of them was.
    let group_commit = ctx.labs.get(LabSlot::Fsync);
    let mut unsynced: Option<(u32, Instant)> = None;
    let mut emits = Vec::new();
    let sync = |log: &mut SegmentLog| -> anyhow::Result<()> {
        let t0 = Instant::now();
        if log.sync()? {
            m.fsyncs.inc();
            if m.telemetry {
                m.fsync_duration.observe(t0.elapsed().as_secs_f64());
            }
        }
        Ok(())
    };
    while let Some((conn, frame)) = rx.blocking_recv() {
        m.input_queue_depth.set(rx.len() as i64);
        if ctx.abandon.is_cancelled() {
            // Given up: what is still queued is counted, not written.
            m.drop_events(
                DropReason::Abandoned,
                u64::from(frame.header.event_count),
                frame.wire_bytes as u64,
            );
            continue;
        }
        let _batch = ctx.blocking_batch(BatchKind::Persist, frame.header.record_count);
        let (mut events, mut windows, mut written) = (0u64, 0u64, 0u64);
        emits.clear();
        for rec in frame.records() {
            // Only a well-formed, consistent window result goes into the log.
            let w = match WindowResult::decode(rec) {
                Ok(w) => w,
                Err(e) => {
                    // Its event count is not to be trusted: it counts as one.
                    m.drop_events(DropReason::Undecodable, 1, rec.len() as u64);
                    static LOG: crate::admission::LogThrottle =
                        crate::admission::LogThrottle::new(Duration::from_secs(1));
                    if let Some(suppressed) = LOG.allow() {
                        tracing::warn!(conn, error = %e, suppressed, "dropped a record that is not a valid window result");
                    }
                    continue;
                }
            };
            if let Some(seen) = seen.as_mut()
                && !seen.insert(&w)
            {
                m.drop_events(DropReason::Duplicate, w.count, rec.len() as u64);
                continue;
            }
            if let Some(log) = log.as_mut() {
                written += log.append(rec)?;
            }
            events = events.saturating_add(w.count);
            windows += 1;
            emits.push(w.last_emit_ns);
        }
        if alo {
            unacked.push((conn, frame.header.batch_seq.saturating_add(1)));
        }
        if let Some(log) = log.as_mut() {
            match k.fsync {
                _ if let Some(imp) = group_commit => {
                    let (batches, first) = unsynced.get_or_insert_with(|| (0, Instant::now()));
                    *batches += 1;
                    let u = slots::fsync::Unsynced {
                        batches: *batches,
                        oldest: first.elapsed(),
                        queued: rx.len(),
                    };
                    // At least once, an ack never waits for the next frame (as with interval).
                    if slots::fsync::should_sync(imp, &u) || (alo && rx.is_empty()) {
                        sync(log)?;
                        unsynced = None;
                        ack(&mut unacked);
                    } else {
                        log.flush()?;
                    }
                }
                FsyncPolicy::Batch => {
                    sync(log)?;
                    ack(&mut unacked);
                }
                FsyncPolicy::Interval
                    if last_sync.elapsed() >= interval || (alo && rx.is_empty()) =>
                {
                    // At least once, a sync also when nothing more is queued (group commit):
                    // an ack never waits for the next frame.
                    sync(log)?;
                    last_sync = Instant::now();
                    ack(&mut unacked);
                }
                // Hand the bytes to the OS now; durability is the OS's business.
                FsyncPolicy::Interval => log.flush()?,
                FsyncPolicy::Never => {
                    log.flush()?;
                    ack(&mut unacked);
                }
            }
            m.events_persisted.inc_by(events);
            m.events_sent.inc_by(events);
            m.windows_persisted.inc_by(windows);
            m.log_written_bytes.inc_by(written);
        } else {
            m.drop_events(DropReason::Blackhole, events, frame.wire_bytes as u64);
            ack(&mut unacked);
        }
        let now = now_ns();
        if let Ok(mut hdr) = ctx.e2e.lock() {
            for &emit in &emits {
                let latency_ns = now.saturating_sub(emit);
                hdr.saturating_record((latency_ns / 1000).max(1));
                if m.telemetry {
                    m.end_to_end_latency.observe(latency_ns as f64 / 1e9);
                }
            }
        }
    }
    if let Some(log) = log.as_mut() {
        match k.fsync {
            FsyncPolicy::Never => log.flush()?,
            _ => sync(log)?,
        }
    }
    Ok(())
}
