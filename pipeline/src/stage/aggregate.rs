//! The aggregate stage: tumbling windows per (service, route).
//!
//! Frames are numbered as they arrive and dealt round-robin to `workers` tasks, which apply
//! their events to the shared window state under the `state` strategy:
//! - `mutex`: one `Mutex<WindowMap>`, locked per event;
//! - `sharded`: `shards` mutexes, the key's hash picks one, locked per event;
//! - `owner`: one task owns the map; workers hand it whole frames over a channel.
//!
//! A coordinator learns of finished frames, puts them back in arrival order, and tracks each
//! upstream stream's event-time watermark. When the lowest watermark crosses a window boundary
//! it closes every window that ended before it and sends the results downstream. Events for an
//! already-closed window are dropped as `late`, so each window is emitted exactly once.

use crate::codec::{Frame, OutFrame};
use crate::event::{DropReason, EventRef, WindowResult};
use crate::net::{Egress, Ingress, Input};
use crate::stats::StageCtx;
use crate::window::{ClosedWindow, WindowMap, percentiles};
use pipeline_plan::{AggregateKnobs, StageKnobs, StateStrategy};
use rustc_hash::FxHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

enum OwnerMsg {
    Batch(Frame),
    Close(u64, oneshot::Sender<(Vec<ClosedWindow>, usize)>),
}

/// The shared window state, by strategy.
enum State {
    Mutex(Mutex<WindowMap>),
    Sharded(Vec<Mutex<WindowMap>>),
    Owner(mpsc::Sender<OwnerMsg>),
}

/// Late and undecodable events of one frame.
#[derive(Default)]
struct Applied {
    late: u64,
    late_bytes: u64,
    undecodable: u64,
    undecodable_bytes: u64,
}

impl Applied {
    fn undecodable(&mut self, rec: &[u8]) {
        self.undecodable += 1;
        self.undecodable_bytes += rec.len() as u64;
    }
}

fn apply_to(
    map: &mut WindowMap,
    rec: &[u8],
    ev: &EventRef<'_>,
    emit_ns: u64,
    applied: &mut Applied,
) {
    if map.apply(ev, emit_ns).is_err() {
        applied.late += 1;
        applied.late_bytes += rec.len() as u64;
    }
}

impl State {
    fn new(ctx: &Arc<StageCtx>, k: &AggregateKnobs) -> Self {
        match k.state {
            StateStrategy::Mutex => State::Mutex(Mutex::new(WindowMap::new(k.window_ms))),
            StateStrategy::Sharded => State::Sharded(
                (0..k.shards)
                    .map(|_| Mutex::new(WindowMap::new(k.window_ms)))
                    .collect(),
            ),
            StateStrategy::Owner => {
                let (tx, rx) = mpsc::channel(k.common.queue_capacity as usize);
                tokio::spawn(owner_loop(ctx.clone(), WindowMap::new(k.window_ms), rx));
                State::Owner(tx)
            }
        }
    }

    /// Apply one frame's events.
    async fn apply(&self, frame: Frame) -> Applied {
        let emit = frame.header.emitted_at_ns;
        let mut applied = Applied::default();
        match self {
            State::Mutex(m) => {
                for rec in frame.records() {
                    match EventRef::decode(rec) {
                        Ok(ev) => {
                            let mut map = m.lock().unwrap_or_else(PoisonError::into_inner);
                            apply_to(&mut map, rec, &ev, emit, &mut applied);
                        }
                        Err(_) => applied.undecodable(rec),
                    }
                }
            }
            State::Sharded(shards) => {
                for rec in frame.records() {
                    match EventRef::decode(rec) {
                        Ok(ev) => {
                            let mut h = FxHasher::default();
                            ev.key.hash(&mut h);
                            let shard = &shards[(h.finish() % shards.len() as u64) as usize];
                            let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
                            apply_to(&mut map, rec, &ev, emit, &mut applied);
                        }
                        Err(_) => applied.undecodable(rec),
                    }
                }
            }
            // The owner counts its own drops.
            State::Owner(tx) => {
                let _ = tx.send(OwnerMsg::Batch(frame)).await;
            }
        }
        applied
    }

    /// Close windows ending at or before `watermark`; returns them and how many stay open.
    async fn close(&self, watermark: u64) -> (Vec<ClosedWindow>, usize) {
        let mut out = Vec::new();
        match self {
            State::Mutex(m) => {
                let mut map = m.lock().unwrap_or_else(PoisonError::into_inner);
                map.close_until(watermark, &mut out);
                (out, map.open())
            }
            State::Sharded(shards) => {
                let mut open = 0;
                for shard in shards {
                    let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
                    map.close_until(watermark, &mut out);
                    open += map.open();
                }
                (out, open)
            }
            State::Owner(tx) => {
                let (reply, answer) = oneshot::channel();
                if tx.send(OwnerMsg::Close(watermark, reply)).await.is_err() {
                    return (out, 0);
                }
                answer.await.unwrap_or_default()
            }
        }
    }
}

async fn owner_loop(ctx: Arc<StageCtx>, mut map: WindowMap, mut rx: mpsc::Receiver<OwnerMsg>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            OwnerMsg::Batch(frame) => {
                let emit = frame.header.emitted_at_ns;
                let mut applied = Applied::default();
                for rec in frame.records() {
                    match EventRef::decode(rec) {
                        Ok(ev) => apply_to(&mut map, rec, &ev, emit, &mut applied),
                        Err(_) => applied.undecodable(rec),
                    }
                }
                count_drops(&ctx, &applied);
            }
            OwnerMsg::Close(watermark, reply) => {
                let mut out = Vec::new();
                map.close_until(watermark, &mut out);
                let _ = reply.send((out, map.open()));
            }
        }
    }
}

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

    let state = Arc::new(State::new(&ctx, &knobs));
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
    state: Arc<State>,
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
    state: Arc<State>,
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

async fn close(ctx: &StageCtx, state: &State, egress: &Egress, watermark: u64, batch: u32) {
    let (mut closed, open) = state.close(watermark).await;
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
