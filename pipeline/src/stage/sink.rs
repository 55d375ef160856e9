//! The sink: appends window results to the segment log (or discards them in `blackhole` mode)
//! on a dedicated thread, applies the fsync policy, and measures end-to-end latency: from the
//! newest event of a window leaving the source to its result being persisted.

use super::contract::BatchKind;
use crate::codec::Frame;
use crate::context::StageCtx;
use crate::event::{DropReason, WindowResult};
use crate::net::{Ingress, Input, now_ns};
use crate::seglog::{SegmentLog, os_message};
use anyhow::Context;
use pipeline_plan::{FsyncPolicy, SinkKnobs, SinkMode};
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
    let mut ingress = Ingress::start(ctx.clone(), listener);
    ctx.mark_ready();
    let (tx, rx) = mpsc::channel::<Frame>(knobs.common.queue_capacity as usize);
    let writer_ctx = ctx.clone();
    let writer = tokio::task::spawn_blocking(move || persist(&writer_ctx, &knobs, log, rx));
    while let Some(input) = ingress.recv().await {
        if let Input::Batch { frame, .. } = input
            && tx.send(frame).await.is_err()
        {
            break;
        }
    }
    drop(tx);
    writer.await.context("log writer thread")?
}

fn persist(
    ctx: &StageCtx,
    k: &SinkKnobs,
    mut log: Option<SegmentLog>,
    mut rx: mpsc::Receiver<Frame>,
) -> anyhow::Result<()> {
    let m = &ctx.metrics;
    let interval = Duration::from_millis(k.fsync_interval_ms);
    let mut last_sync = Instant::now();
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
    while let Some(frame) = rx.blocking_recv() {
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
            match WindowResult::peek(rec) {
                Ok((_, count, last_emit_ns)) => {
                    if let Some(log) = log.as_mut() {
                        written += log.append(rec)?;
                    }
                    events += count;
                    windows += 1;
                    emits.push(last_emit_ns);
                }
                // Its event count cannot be read: it counts as one.
                Err(_) => m.drop_events(DropReason::Undecodable, 1, rec.len() as u64),
            }
        }
        if let Some(log) = log.as_mut() {
            match k.fsync {
                FsyncPolicy::Batch => sync(log)?,
                FsyncPolicy::Interval if last_sync.elapsed() >= interval => {
                    sync(log)?;
                    last_sync = Instant::now();
                }
                // Hand the bytes to the OS now; durability is the OS's business.
                _ => log.flush()?,
            }
            m.events_persisted.inc_by(events);
            m.events_sent.inc_by(events);
            m.windows_persisted.inc_by(windows);
            m.log_written_bytes.inc_by(written);
        } else {
            m.drop_events(DropReason::Blackhole, events, frame.wire_bytes as u64);
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
