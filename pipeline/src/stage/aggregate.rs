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
//!
//! Backpressure: every queue between the data port and the egress is bounded, including the
//! finished-work channel, and the coordinator does not take the next finished frame while it is
//! still handing closed windows to a full egress. So a blocked downstream stops the workers,
//! then the reads from the data port, then (through TCP) the upstream. The open windows are
//! capped by `max_open_windows`; an event that would open one more is dropped as
//! `window_limit`, counted (many keys at once, or event times far apart, not a slow downstream:
//! that only blocks).
//!
//! At least once, the window state is *rebuilt from unacknowledged input*, not checkpointed:
//! the aggregate acknowledges upstream only the event time below which every window is in the
//! sink's log (acked by the sink), so everything a restarted aggregate lacks is still
//! unacknowledged at the source, which regenerates it from the seed (it keeps positions, not
//! bytes). A checkpoint would have to hold every open window's histograms (13.5 KB each) and be
//! fsynced as often as acks are wanted; the replay costs nothing until a failure. Input is
//! tracked by origin (the source batch): a batch seen before is dropped as `duplicate`, and the
//! watermark is that of the contiguous prefix of source batches applied (every batch below
//! the origin lag is already durable), so no path, resend or reconnection can close a window
//! before all of its events are in. Closed windows are kept until the sink acknowledges them.

use super::contract::BatchKind;
use crate::codec::OutFrame;
use crate::context::StageCtx;
use crate::event::{DropReason, WindowResult};
use crate::net::{Egress, Ingress, Input};
use crate::state::{Applied, SharedState};
use crate::window::{ClosedWindow, Horizon, percentiles};
use pipeline_plan::AggregateKnobs;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

fn count_drops(ctx: &StageCtx, applied: &Applied) {
    let m = &ctx.metrics;
    m.drop_events(DropReason::Late, applied.late, applied.late_bytes);
    m.drop_events(
        DropReason::WindowLimit,
        applied.window_limit,
        applied.window_limit_bytes,
    );
    m.drop_events(
        DropReason::Undecodable,
        applied.undecodable,
        applied.undecodable_bytes,
    );
    m.drop_events(
        DropReason::FutureTimestamp,
        applied.future,
        applied.future_bytes,
    );
}

struct Job {
    index: u64,
    input: Input,
}

/// A job finished: input `index`, from connection `conn`.
struct Done {
    index: u64,
    conn: u64,
    what: Progress,
    /// At least once: the source batch applied (stream, sequence, origin lag).
    origin: Option<(u32, u64, u16)>,
}

/// At least once: which batches of one source stream have been seen, by sequence.
#[derive(Default)]
struct Origin {
    /// Every batch below this has been seen (or is durable already).
    next: u64,
    /// The largest event time of the batches below `next` that were seen.
    watermark: Option<u64>,
    /// Batches seen at or above `next` (a gap below them), with their largest event time.
    ahead: BTreeMap<u64, u64>,
}

/// At least once: the batches seen, per source stream. The run loop keeps one to drop
/// duplicates; the coordinator keeps one, fed in arrival order as batches are applied, whose
/// watermark decides what may close.
#[derive(Default)]
struct Origins(HashMap<u32, Origin>);

impl Origins {
    /// Record batch `seq` (largest event time `watermark`); `false` if it was seen before.
    /// A batch `lag` behind this one is the oldest the source has not had acknowledged: every
    /// batch below that is durable, so none of them is waited for.
    fn admit(&mut self, stream: u32, seq: u64, lag: u16, watermark: u64) -> bool {
        let o = self.0.entry(stream).or_default();
        if seq < o.next || o.ahead.contains_key(&seq) {
            return false;
        }
        o.ahead.insert(seq, watermark);
        let floor = seq.saturating_sub(u64::from(lag));
        if floor > o.next {
            o.next = floor;
        }
        let behind: Vec<u64> = o.ahead.range(..o.next).map(|(s, _)| *s).collect();
        for s in behind {
            if let Some(w) = o.ahead.remove(&s) {
                o.watermark = Some(o.watermark.unwrap_or(0).max(w));
            }
        }
        while let Some(w) = o.ahead.remove(&o.next) {
            o.watermark = Some(o.watermark.unwrap_or(0).max(w));
            o.next += 1;
        }
        true
    }

    /// The event time up to which every stream's batches are all in (`None` before any).
    fn low_watermark(&self) -> Option<u64> {
        self.0.values().map(|o| o.watermark).min().flatten()
    }
}

/// At least once: the closes whose results the sink has not acknowledged yet, in order. Once
/// every frame of a close through `w` is acknowledged, the event time below the window
/// boundary under `w` is durable (and acknowledged upstream).
struct Durable {
    last: Option<tokio::task::JoinHandle<bool>>,
    window_us: u64,
}

impl Durable {
    fn after(
        &mut self,
        ctx: &Arc<StageCtx>,
        acked: Vec<tokio::sync::oneshot::Receiver<()>>,
        through: u64,
    ) {
        let prev = self.last.take();
        let ctx = ctx.clone();
        self.last = Some(tokio::spawn(async move {
            if let Some(p) = prev
                && !p.await.unwrap_or(false)
            {
                return false;
            }
            for r in acked {
                if r.await.is_err() {
                    // Given up on (the stage is abandoning): nothing after it is durable.
                    return false;
                }
            }
            ctx.mark_durable(through);
            true
        }));
    }

    /// Wait until everything closed so far is acknowledged (or given up on).
    async fn settled(&mut self) {
        if let Some(last) = self.last.take() {
            let _ = last.await;
        }
    }
}

/// What an input says about its stream's event-time progress.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Progress {
    /// The stream started: it holds windows back until its first frame says where it is.
    Joined,
    /// A frame whose largest event time was this was applied.
    Reached(u64),
    /// The stream ended (cleanly or not): it holds nothing back any more.
    Left,
}

pub async fn run(ctx: Arc<StageCtx>, listener: TcpListener) -> anyhow::Result<()> {
    let knobs: AggregateKnobs = ctx.knobs()?;
    let mut ingress = Ingress::start(ctx.clone(), listener);
    let egress = Egress::start(ctx.clone());
    egress.wait_connected(&ctx, Duration::from_secs(60)).await;
    ctx.mark_ready();

    let owner_ctx = ctx.clone();
    let state = Arc::new(
        SharedState::with_horizon(
            knobs.state,
            knobs.shards,
            knobs.window_ms,
            knobs.max_open_windows as usize,
            knobs.common.queue_capacity as usize,
            move |applied| count_drops(&owner_ctx, &applied),
            Arc::new(Horizon::new(knobs.common.max_future_skew_ms)),
        )
        .with_hooks(ctx.labs),
    );
    let (done_tx, done_rx) = mpsc::channel(knobs.common.queue_capacity as usize);
    let mut workers = Vec::new();
    for _ in 0..knobs.workers {
        let (tx, rx) = mpsc::channel::<Job>(knobs.common.queue_capacity as usize);
        tokio::spawn(worker(ctx.clone(), state.clone(), rx, done_tx.clone()));
        workers.push(tx);
    }
    drop(done_tx);
    let coordinator = tokio::spawn(coordinate(ctx.clone(), state, done_rx, egress, knobs));

    let mut index = 0u64;
    let mut seen = Origins::default();
    let alo = ctx.at_least_once();
    while let Some(input) = ingress.recv().await {
        if alo && let Input::Batch { frame, .. } = &input {
            let h = &frame.header;
            if !seen.admit(h.stream_id, h.batch_seq, h.origin_lag, h.watermark_us) {
                ctx.metrics.drop_events(
                    DropReason::Duplicate,
                    u64::from(h.event_count),
                    frame.wire_bytes as u64,
                );
                continue;
            }
        }
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
    done: mpsc::Sender<Done>,
) {
    while let Some(Job { index, input }) = rx.recv().await {
        let d = match input {
            Input::Batch { conn, frame } => {
                // A watermark past the horizon is not believed (nor u64::MAX, except as the
                // at-least-once source's last batch).
                let limit = state.horizon().limit();
                let claimed = frame.header.watermark_us;
                let h = &frame.header;
                let origin = Some((h.stream_id, h.batch_seq, h.origin_lag));
                let records = frame.header.record_count;
                let applied = ctx
                    .batch(BatchKind::Aggregate, records, state.apply(frame))
                    .await;
                count_drops(&ctx, &applied);
                let watermark = state
                    .horizon()
                    .watermark(claimed, limit, ctx.at_least_once());
                Done {
                    index,
                    conn,
                    what: Progress::Reached(watermark),
                    origin,
                }
            }
            Input::Start { conn } => Done {
                index,
                conn,
                what: Progress::Joined,
                origin: None,
            },
            Input::End { conn } | Input::Gone { conn } => Done {
                index,
                conn,
                what: Progress::Left,
                origin: None,
            },
        };
        if done.send(d).await.is_err() {
            return;
        }
    }
}

/// The event-time progress of the upstream streams, in arrival order of their inputs.
#[derive(Default)]
struct Streams {
    /// Every stream still running: its watermark (`None`: joined, no frame yet) and when it
    /// was last heard from.
    running: HashMap<u64, (Option<u64>, Instant)>,
    /// Every stream seen, running or ended.
    known: HashSet<u64>,
    /// The largest watermark of any stream.
    max_watermark: u64,
}

impl Streams {
    fn record(&mut self, d: &Done, now: Instant) {
        self.known.insert(d.conn);
        match d.what {
            Progress::Joined => {
                self.running.entry(d.conn).or_insert((None, now));
            }
            Progress::Reached(w) => {
                let e = self.running.entry(d.conn).or_insert((None, now));
                e.0 = Some(e.0.unwrap_or(0).max(w));
                e.1 = now;
                self.max_watermark = self.max_watermark.max(w);
            }
            // Everything of an ended stream has been applied: it holds nothing back.
            Progress::Left => {
                self.running.remove(&d.conn);
            }
        }
    }

    /// The event time below which every stream has delivered everything: the lowest watermark
    /// of the running streams; nothing while a stream has joined but not yet said where it is
    /// (a restarted upstream's first frame may be older than the others' latest). In run mode
    /// (`expected` streams), nothing until all have appeared, and the largest watermark once
    /// all have ended; in service mode, nothing while no stream runs. In both, a stream silent
    /// for `idle` (`idle_timeout_ms`: a joined stream whose upstream never comes, one that
    /// went quiet without ending, a peer that said hello and nothing more) is not waited for
    /// until it speaks again (the idle-source rule).
    fn low_watermark(&self, expected: Option<u32>, now: Instant, idle: Duration) -> Option<u64> {
        if let Some(e) = expected
            && self.known.len() < e as usize
        {
            return None;
        }
        let mut low: Option<u64> = None;
        let mut any = false;
        for (w, seen) in self.running.values() {
            if now.saturating_duration_since(*seen) >= idle {
                continue;
            }
            any = true;
            let w = (*w)?;
            low = Some(low.map_or(w, |l| l.min(w)));
        }
        match low {
            Some(w) => Some(w),
            None if !any && expected.is_some() => Some(self.max_watermark),
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
    mut done_rx: mpsc::Receiver<Done>,
    egress: Egress,
    k: AggregateKnobs,
) {
    let window_us = k.window_ms * 1000;
    let idle = Duration::from_millis(k.idle_timeout_ms);
    let service = ctx.cfg.service;
    let expected = (!service).then_some(ctx.cfg.upstreams);
    let mut next = 0u64;
    let mut pending = BTreeMap::new();
    let mut streams = Streams::default();
    let mut closed_at = 0u64;
    let mut last_input = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let alo = ctx.at_least_once();
    let mut applied = Origins::default();
    let mut durable = alo.then_some(Durable {
        last: None,
        window_us,
    });
    loop {
        tokio::select! {
            d = done_rx.recv() => {
                let Some(d) = d else { break };
                last_input = Instant::now();
                pending.insert(d.index, d);
                while let Some(d) = pending.remove(&next) {
                    next += 1;
                    streams.record(&d, last_input);
                    if let (Some((stream, seq, lag)), Progress::Reached(w)) = (d.origin, d.what) {
                        applied.admit(stream, seq, lag, w);
                    }
                }
                let low = if alo {
                    applied.low_watermark()
                } else {
                    streams.low_watermark(expected, Instant::now(), idle)
                };
                if let Some(w) = low
                    && w / window_us > closed_at / window_us
                {
                    close(&ctx, &state, &egress, w, k.batch_size, durable.as_mut()).await;
                    closed_at = w;
                }
            }
            // At least once, windows close only on what is known to be in.
            _ = tick.tick(), if !alo => {
                // A stream that went silent stops holding windows back.
                if let Some(w) = streams.low_watermark(expected, Instant::now(), idle)
                    && w / window_us > closed_at / window_us
                {
                    close(&ctx, &state, &egress, w, k.batch_size, None).await;
                    closed_at = w;
                }
                // Close every window that has seen an event, once input has paused.
                let through = (streams.max_watermark / window_us + 1) * window_us;
                if service
                    && streams.max_watermark > 0
                    && through > closed_at
                    && last_input.elapsed() >= idle_flush_after(k.window_ms)
                {
                    close(&ctx, &state, &egress, through, k.batch_size, None).await;
                    closed_at = through;
                }
            }
        }
    }
    close(
        &ctx,
        &state,
        &egress,
        u64::MAX,
        k.batch_size,
        durable.as_mut(),
    )
    .await;
    if let Some(d) = durable.as_mut() {
        // Every result in the sink's log before the end of stream goes out.
        d.settled().await;
    }
    egress.finish().await;
}

async fn close(
    ctx: &Arc<StageCtx>,
    state: &SharedState,
    egress: &Egress,
    watermark: u64,
    batch: u32,
    durable: Option<&mut Durable>,
) {
    let (mut closed, open) = state.close(watermark).await;
    if let Some(imp) = ctx.labs.get(pipeline_plan::LabSlot::Deadlock) {
        crate::slots::deadlock::on_close(imp, closed.len());
    }
    let m = &ctx.metrics;
    m.windows_open.set(open as i64);
    m.windows_closed.inc_by(closed.len() as u64);
    closed.sort_unstable_by(|a, b| (a.start_us, &a.key).cmp(&(b.start_us, &b.key)));
    let mut acked = Vec::new();
    for mut frame in encode(&closed, batch as usize) {
        if durable.is_some() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            frame.on_acked = Some(tx);
            acked.push(rx);
        }
        egress.send(frame).await;
    }
    if let Some(d) = durable {
        let through = if watermark == u64::MAX {
            u64::MAX
        } else {
            watermark - watermark % d.window_us
        };
        d.after(ctx, acked, through);
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

    const IDLE: Duration = Duration::from_secs(30);

    fn done(conn: u64, watermark: u64, end: bool) -> Done {
        Done {
            index: 0,
            conn,
            origin: None,
            what: if end {
                Progress::Left
            } else {
                Progress::Reached(watermark)
            },
        }
    }

    fn joined(conn: u64) -> Done {
        Done {
            index: 0,
            conn,
            origin: None,
            what: Progress::Joined,
        }
    }

    #[test]
    fn run_mode_waits_for_every_expected_stream_then_follows_the_slowest() {
        let mut s = Streams::default();
        let t = Instant::now();
        s.record(&done(1, 500, false), t);
        assert_eq!(
            s.low_watermark(Some(2), t, IDLE),
            None,
            "stream 2 has not appeared"
        );
        s.record(&done(2, 300, false), t);
        assert_eq!(s.low_watermark(Some(2), t, IDLE), Some(300));
        s.record(&done(2, 900, false), t);
        assert_eq!(s.low_watermark(Some(2), t, IDLE), Some(500));
        s.record(&done(1, 0, true), t);
        assert_eq!(
            s.low_watermark(Some(2), t, IDLE),
            Some(900),
            "an ended stream holds nothing back"
        );
        s.record(&done(2, 0, true), t);
        assert_eq!(
            s.low_watermark(Some(2), t, IDLE),
            Some(900),
            "all ended: everything seen is complete"
        );
    }

    #[test]
    fn service_mode_follows_running_streams_only() {
        let mut s = Streams::default();
        let t = Instant::now();
        assert_eq!(s.low_watermark(None, t, IDLE), None);
        s.record(&done(1, 500, false), t);
        assert_eq!(s.low_watermark(None, t, IDLE), Some(500));
        s.record(&done(1, 0, true), t);
        assert_eq!(
            s.low_watermark(None, t, IDLE),
            None,
            "no running stream: wait (or flush when idle)"
        );
        s.record(&done(7, 800, false), t);
        assert_eq!(s.low_watermark(None, t, IDLE), Some(800));
        assert_eq!(s.max_watermark, 800);
    }

    #[test]
    fn a_joining_stream_holds_windows_until_its_first_frame_or_its_silence() {
        // A restarted parse pod connects before its upstream reaches it; the first frame it
        // forwards may be older than what the other pod has delivered meanwhile. Closing on
        // the other pod alone would make those events late.
        let mut s = Streams::default();
        let t = Instant::now();
        s.record(&done(1, 1_000, false), t);
        s.record(&joined(2), t);
        s.record(&done(1, 5_000, false), t);
        assert_eq!(
            s.low_watermark(None, t, IDLE),
            None,
            "stream 2 has not said where it is"
        );
        s.record(&done(2, 4_200, false), t);
        assert_eq!(s.low_watermark(None, t, IDLE), Some(4_200));
        // A stream that joined and never sends is not waited for past IDLE ...
        s.record(&joined(3), t);
        assert_eq!(
            s.low_watermark(None, t + Duration::from_secs(1), IDLE),
            None
        );
        let later = t + IDLE + Duration::from_secs(1);
        s.record(&done(1, 9_000, false), later);
        s.record(&done(2, 8_000, false), later);
        assert_eq!(s.low_watermark(None, later, IDLE), Some(8_000));
        // ... nor one that went silent (a killed upstream whose connection is half-open).
        let much_later = later + IDLE + Duration::from_secs(1);
        s.record(&done(1, 20_000, false), much_later);
        assert_eq!(s.low_watermark(None, much_later, IDLE), Some(20_000));
        // In run mode, every expected stream is waited for until it is idle (a peer that
        // said hello and nothing more cannot freeze the windows) ...
        let mut r = Streams::default();
        r.record(&joined(1), t);
        r.record(&done(2, 7_000, false), t);
        assert_eq!(
            r.low_watermark(Some(2), t + Duration::from_secs(1), IDLE),
            None
        );
        let idle_at = t + IDLE + Duration::from_secs(1);
        r.record(&done(2, 9_000, false), idle_at);
        assert_eq!(r.low_watermark(Some(2), idle_at, IDLE), Some(9_000));
        // ... and it holds them back again once it speaks.
        r.record(&done(1, 8_000, false), idle_at);
        assert_eq!(r.low_watermark(Some(2), idle_at, IDLE), Some(8_000));
    }

    #[test]
    fn at_least_once_a_batch_is_applied_once_and_windows_wait_for_every_earlier_batch() {
        let mut o = Origins::default();
        assert_eq!(o.low_watermark(), None, "nothing seen");
        // Batches 0 and 1 in order, then 3 before 2 (another path, or a resend).
        assert!(o.admit(9, 0, 0, 100));
        assert!(o.admit(9, 1, 1, 200));
        assert_eq!(o.low_watermark(), Some(200));
        assert!(o.admit(9, 3, 3, 400));
        assert_eq!(
            o.low_watermark(),
            Some(200),
            "batch 2 is missing: nothing past batch 1 may close"
        );
        assert!(!o.admit(9, 3, 3, 400), "seen: a duplicate");
        assert!(!o.admit(9, 1, 1, 200), "below the prefix: a duplicate");
        assert!(o.admit(9, 2, 2, 300));
        assert_eq!(o.low_watermark(), Some(400), "the gap filled");
        // A rewind resends from batch 2: duplicates, the watermark does not move back.
        assert!(!o.admit(9, 2, 0, 300));
        assert_eq!(o.low_watermark(), Some(400));
    }

    #[test]
    fn at_least_once_a_restarted_aggregate_does_not_wait_for_batches_already_durable() {
        // It first sees batch 50, whose origin lag says the source's oldest unacknowledged
        // batch is 40: everything below 40 is in the log, so 40..49 are what it waits for.
        let mut o = Origins::default();
        assert!(o.admit(1, 50, 10, 5_000));
        assert_eq!(o.low_watermark(), None, "40..49 are still to come");
        for seq in 40..50 {
            assert!(o.admit(1, seq, 0, 4_000 + seq));
        }
        assert_eq!(o.low_watermark(), Some(5_000));
        assert!(!o.admit(1, 39, 0, 3_900), "durable already: dropped");
        // A second source stream holds windows back until it has said where it is.
        assert!(o.admit(2, 0, 0, 10));
        assert_eq!(o.low_watermark(), Some(10));
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
