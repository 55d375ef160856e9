//! The aggregate stage: tumbling windows per (service, route).
//!
//! Frames are numbered as they arrive and dealt round-robin to `workers` tasks, which apply
//! their events to the shared window state under the `state` strategy (see [`crate::state`]:
//! one mutex, sharded mutexes, or a single owner thread fed by a channel).
//!
//! A coordinator learns of finished frames, puts them back in arrival order, and tracks each
//! upstream stream's event-time watermark. When the lowest watermark crosses a window boundary
//! it closes every window that ended before it and sends the results downstream. Events for an
//! already-closed window are dropped as `late`, so each window is emitted exactly once.

use crate::codec::OutFrame;
use crate::event::{DropReason, WindowResult};
use crate::net::{Egress, Ingress, Input};
use crate::state::{Applied, SharedState};
use crate::stats::StageCtx;
use crate::window::{ClosedWindow, percentiles};
use pipeline_plan::{AggregateKnobs, StageKnobs};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::Instrument;

fn count_drops(ctx: &StageCtx, applied: &Applied) {
    let m = &ctx.metrics;
    m.drop_events(DropReason::Late, applied.late, applied.late_bytes);
    m.drop_events(
        DropReason::Undecodable,
        applied.undecodable,
        applied.undecodable_bytes,
    );
}

struct Job {
    index: u64,
    input: Input,
}

/// A job finished: frame `index` of connection `conn`, whose largest event time was
/// `watermark`, or that connection's end of stream.
struct Done {
    index: u64,
    conn: u64,
    watermark: u64,
    end: bool,
}

pub async fn run(ctx: Arc<StageCtx>, listener: TcpListener) -> anyhow::Result<()> {
    let StageKnobs::Aggregate(knobs) = ctx.cfg.knobs.clone() else {
        anyhow::bail!("aggregate stage started with {:?} knobs", ctx.cfg.role());
    };
    let mut ingress = Ingress::start(ctx.clone(), listener);
    let egress = Egress::start(ctx.clone());
    egress.wait_connected(&ctx, Duration::from_secs(60)).await;
    ctx.ready.store(true, std::sync::atomic::Ordering::Relaxed);

    let owner_ctx = ctx.clone();
    let state = Arc::new(SharedState::new(
        knobs.state,
        knobs.shards,
        knobs.window_ms,
        knobs.common.queue_capacity as usize,
        move |applied| count_drops(&owner_ctx, &applied),
    ));
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let mut workers = Vec::new();
    for _ in 0..knobs.workers {
        let (tx, rx) = mpsc::channel::<Job>(knobs.common.queue_capacity as usize);
        tokio::spawn(worker(ctx.clone(), state.clone(), rx, done_tx.clone()));
        workers.push(tx);
    }
    drop(done_tx);
    let coordinator = tokio::spawn(coordinate(ctx.clone(), state, done_rx, egress, knobs));

    let mut index = 0u64;
    while let Some(input) = ingress.recv().await {
        let w = &workers[(index % workers.len() as u64) as usize];
        if w.send(Job { index, input }).await.is_err() {
            anyhow::bail!("an aggregate worker stopped");
        }
        index += 1;
    }
    drop(workers);
    coordinator.await?;
    Ok(())
}

async fn worker(
    ctx: Arc<StageCtx>,
    state: Arc<SharedState>,
    mut rx: mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<Done>,
) {
    let m = &ctx.metrics;
    while let Some(Job { index, input }) = rx.recv().await {
        let d = match input {
            Input::Batch { conn, frame } => {
                if let Some(d) = ctx.injected_delay() {
                    tokio::time::sleep(d).await;
                }
                let t0 = Instant::now();
                let watermark = frame.header.watermark_us;
                let span = if m.telemetry {
                    tracing::debug_span!(target: "pipeline::batch", "aggregate", records = frame.header.record_count)
                } else {
                    tracing::Span::none()
                };
                let applied = state.apply(frame).instrument(span).await;
                count_drops(&ctx, &applied);
                if m.telemetry {
                    m.batch_duration.observe(t0.elapsed().as_secs_f64());
                }
                Done {
                    index,
                    conn,
                    watermark,
                    end: false,
                }
            }
            Input::End { conn } => Done {
                index,
                conn,
                watermark: 0,
                end: true,
            },
        };
        if done.send(d).is_err() {
            return;
        }
    }
}

/// The event-time progress of the upstream streams, in arrival order of their frames.
#[derive(Default)]
struct Streams {
    /// Watermark of every stream still running.
    running: HashMap<u64, u64>,
    /// Every stream seen, running or ended.
    known: HashSet<u64>,
    /// The largest watermark of any stream.
    max_watermark: u64,
}

impl Streams {
    fn record(&mut self, d: &Done) {
        self.known.insert(d.conn);
        if d.end {
            // Everything of an ended stream has been applied: it holds nothing back.
            self.running.remove(&d.conn);
        } else {
            let w = self.running.entry(d.conn).or_insert(0);
            *w = (*w).max(d.watermark);
            self.max_watermark = self.max_watermark.max(d.watermark);
        }
    }

    /// The event time below which every stream has delivered everything: the lowest watermark
    /// of the running streams. In run mode (`expected` streams), nothing until all have
    /// appeared, and the largest watermark once all have ended; in service mode, nothing while
    /// no stream runs.
    fn low_watermark(&self, expected: Option<u32>) -> Option<u64> {
        if let Some(e) = expected
            && self.known.len() < e as usize
        {
            return None;
        }
        match self.running.values().min() {
            Some(w) => Some(*w),
            None if expected.is_some() => Some(self.max_watermark),
            None => None,
        }
    }
}

/// In service mode, windows are closed after this much wall time without input, so a pause
/// in the stream does not hold results back forever.
fn idle_flush_after(window_ms: u64) -> Duration {
    Duration::from_millis(window_ms.max(5000))
}

async fn coordinate(
    ctx: Arc<StageCtx>,
    state: Arc<SharedState>,
    mut done_rx: mpsc::UnboundedReceiver<Done>,
    egress: Egress,
    k: AggregateKnobs,
) {
    let window_us = k.window_ms * 1000;
    let service = ctx.cfg.service;
    let expected = (!service).then_some(ctx.cfg.upstreams);
    let mut next = 0u64;
    let mut pending = BTreeMap::new();
    let mut streams = Streams::default();
    let mut closed_at = 0u64;
    let mut last_input = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            d = done_rx.recv() => {
                let Some(d) = d else { break };
                last_input = Instant::now();
                pending.insert(d.index, d);
                while let Some(d) = pending.remove(&next) {
                    next += 1;
                    streams.record(&d);
                }
                if let Some(w) = streams.low_watermark(expected)
                    && w / window_us > closed_at / window_us
                {
                    close(&ctx, &state, &egress, w, k.batch_size).await;
                    closed_at = w;
                }
            }
            _ = tick.tick(), if service => {
                // Close every window that has seen an event, once input has paused.
                let through = (streams.max_watermark / window_us + 1) * window_us;
                if streams.max_watermark > 0
                    && through > closed_at
                    && last_input.elapsed() >= idle_flush_after(k.window_ms)
                {
                    close(&ctx, &state, &egress, through, k.batch_size).await;
                    closed_at = through;
                }
            }
        }
    }
    close(&ctx, &state, &egress, u64::MAX, k.batch_size).await;
    egress.finish().await;
}

async fn close(ctx: &StageCtx, state: &SharedState, egress: &Egress, watermark: u64, batch: u32) {
    let (mut closed, open) = state.close(watermark).await;
    if let Some(imp) = crate::labs::active(pipeline_plan::LabSlot::Deadlock) {
        crate::labs::deadlock::on_close(imp, closed.len());
    }
    let m = &ctx.metrics;
    m.windows_open.set(open as i64);
    m.windows_closed.inc_by(closed.len() as u64);
    closed.sort_unstable_by(|a, b| (a.start_us, &a.key).cmp(&(b.start_us, &b.key)));
    for frame in encode(&closed, batch as usize) {
        egress.send(frame).await;
    }
}

/// Window results as frames of at most `batch` results (and at most `u32::MAX` events).
fn encode(closed: &[ClosedWindow], batch: usize) -> Vec<OutFrame> {
    let mut frames = Vec::new();
    let mut frame = OutFrame::data(batch.min(closed.len()) * 160);
    let (mut events, mut newest, mut end) = (0u64, 0u64, 0u64);
    for w in closed {
        let a = &w.agg;
        if frame.records() as usize >= batch || events + a.count > u64::from(u32::MAX) {
            frame.set_events(events as u32);
            frame.set_emitted_at(newest);
            frame.set_watermark(end);
            frames.push(std::mem::replace(&mut frame, OutFrame::data(batch * 160)));
            (events, newest, end) = (0, 0, 0);
        }
        frame.push_with(|out| {
            WindowResult::encode_parts(
                out,
                w.start_us,
                w.end_us,
                &w.key,
                a.count,
                a.errors,
                a.bytes,
                percentiles(&a.latency),
                a.last_emit_ns,
            )
        });
        events += a.count.min(u64::from(u32::MAX));
        newest = newest.max(a.last_emit_ns);
        end = end.max(w.end_us);
    }
    if !frame.is_empty() {
        frame.set_events(events as u32);
        frame.set_emitted_at(newest);
        frame.set_watermark(end);
        frames.push(frame);
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(conn: u64, watermark: u64, end: bool) -> Done {
        Done {
            index: 0,
            conn,
            watermark,
            end,
        }
    }

    #[test]
    fn run_mode_waits_for_every_expected_stream_then_follows_the_slowest() {
        let mut s = Streams::default();
        s.record(&done(1, 500, false));
        assert_eq!(s.low_watermark(Some(2)), None, "stream 2 has not appeared");
        s.record(&done(2, 300, false));
        assert_eq!(s.low_watermark(Some(2)), Some(300));
        s.record(&done(2, 900, false));
        assert_eq!(s.low_watermark(Some(2)), Some(500));
        s.record(&done(1, 0, true));
        assert_eq!(
            s.low_watermark(Some(2)),
            Some(900),
            "an ended stream holds nothing back"
        );
        s.record(&done(2, 0, true));
        assert_eq!(
            s.low_watermark(Some(2)),
            Some(900),
            "all ended: everything seen is complete"
        );
    }

    #[test]
    fn service_mode_follows_running_streams_only() {
        let mut s = Streams::default();
        assert_eq!(s.low_watermark(None), None);
        s.record(&done(1, 500, false));
        assert_eq!(s.low_watermark(None), Some(500));
        s.record(&done(1, 0, true));
        assert_eq!(
            s.low_watermark(None),
            None,
            "no running stream: wait (or flush when idle)"
        );
        s.record(&done(7, 800, false));
        assert_eq!(s.low_watermark(None), Some(800));
        assert_eq!(s.max_watermark, 800);
    }

    #[test]
    fn window_results_are_split_into_frames_of_at_most_batch_size() {
        let mut key = Vec::new();
        crate::event::put_key(&mut key, "s", "/r");
        let closed: Vec<ClosedWindow> = (0..5)
            .map(|i| {
                let agg = crate::window::WindowAgg {
                    count: 10 + i,
                    last_emit_ns: 100 + i,
                    ..Default::default()
                };
                ClosedWindow {
                    start_us: i * 1000,
                    end_us: (i + 1) * 1000,
                    key: key.clone().into_boxed_slice(),
                    agg,
                }
            })
            .collect();
        let frames = encode(&closed, 2);
        assert_eq!(
            frames.iter().map(OutFrame::records).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        assert_eq!(
            frames.iter().map(OutFrame::events).collect::<Vec<_>>(),
            [21, 25, 14]
        );
    }
}
