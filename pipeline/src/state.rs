//! The aggregate's shared window state, under each strategy of the `state` knob:
//! - `mutex`: one `Mutex<WindowMap>`, locked per event;
//! - `sharded`: `shards` mutexes, the key's hash picks one, locked per event;
//! - `owner`: one thread owns the map; callers hand it whole frames over a bounded channel.
//!
//! The same code serves the aggregate stage (from async tasks), the criterion benches and the
//! deterministic kernel (from plain threads): `apply`/`close` for async callers,
//! `apply_blocking`/`close_blocking` for threads.

use crate::codec::Frame;
use crate::event::EventRef;
use crate::slots::Hooks;
use crate::slots::contention::KeyTotals;
use crate::window::{Checker, ClosedWindow, Horizon, Refused, WindowMap};
use pipeline_plan::StateStrategy;
use rustc_hash::FxHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};
use tokio::sync::{mpsc, oneshot};

/// Late, refused (window cap) and undecodable events of one frame (or, for the owner,
/// reported through its callback).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub late: u64,
    pub late_bytes: u64,
    /// Events that would have opened a window beyond `max_open_windows`.
    pub window_limit: u64,
    pub window_limit_bytes: u64,
    pub undecodable: u64,
    pub undecodable_bytes: u64,
    /// Events beyond the event-time horizon (`future_timestamp`).
    pub future: u64,
    pub future_bytes: u64,
    /// The newest event time applied (0: none).
    pub newest: u64,
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
    (emit_ns, horizon): (u64, &mut Checker),
    applied: &mut Applied,
) {
    let result = if horizon.accept(ev.ts_us) {
        map.apply(ev, emit_ns)
    } else {
        Err(Refused::Future)
    };
    match result {
        Ok(()) => applied.newest = applied.newest.max(ev.ts_us),
        Err(Refused::Future) => {
            applied.future += 1;
            applied.future_bytes += rec.len() as u64;
        }
        Err(Refused::Late) => {
            applied.late += 1;
            applied.late_bytes += rec.len() as u64;
        }
        Err(Refused::Full) => {
            applied.window_limit += 1;
            applied.window_limit_bytes += rec.len() as u64;
        }
    }
}

/// Apply every event of a frame to one map, within the horizon.
pub fn apply_frame(map: &mut WindowMap, frame: &Frame, horizon: &Horizon) -> Applied {
    let (emit, mut check) = (frame.header.emitted_at_ns, horizon.checker());
    let mut applied = Applied::default();
    for rec in frame.records() {
        match EventRef::decode(rec) {
            Ok(ev) => apply_to(map, rec, &ev, (emit, &mut check), &mut applied),
            Err(_) => applied.undecodable(rec),
        }
    }
    horizon.advance(applied.newest);
    applied
}

enum OwnerMsg {
    Batch(Frame),
    Close(u64, oneshot::Sender<(Vec<ClosedWindow>, usize)>),
}

/// The window state, by strategy, and the event-time horizon every strategy applies (and,
/// with lab 04's slot selected, the per-key totals every caller adds its frames to).
pub struct SharedState(Inner, Hooks, Arc<Horizon>, Option<Box<dyn KeyTotals>>);

enum Inner {
    Mutex(Mutex<WindowMap>),
    Sharded(Vec<Mutex<WindowMap>>),
    Owner(mpsc::Sender<OwnerMsg>),
}

/// The owner thread's whole life, under a stable unmangled name: instruction counting
/// (`pipeline kernel` under callgrind) toggles collection on it as well as on the measured
/// region, because callgrind's toggle is per thread and the owner's work happens here.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn observatory_owner_loop(body: &mut dyn FnMut()) {
    body()
}

fn lock(m: &Mutex<WindowMap>) -> std::sync::MutexGuard<'_, WindowMap> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SharedState {
    /// At most `max_open` windows are open at once (with `sharded`, each shard holds its share,
    /// rounded up). `owner_drops` receives what the owner thread dropped from each frame (the
    /// owner counts its own drops; the other strategies return them from `apply`).
    pub fn new(
        strategy: StateStrategy,
        shards: u32,
        window_ms: u64,
        max_open: usize,
        queue: usize,
        owner_drops: impl Fn(Applied) + Send + 'static,
    ) -> Self {
        Self::with_horizon(
            strategy,
            shards,
            window_ms,
            max_open,
            queue,
            owner_drops,
            Arc::new(Horizon::unbounded()),
        )
    }

    /// [`SharedState::new`], refusing events beyond `horizon`.
    pub fn with_horizon(
        strategy: StateStrategy,
        shards: u32,
        window_ms: u64,
        max_open: usize,
        queue: usize,
        owner_drops: impl Fn(Applied) + Send + 'static,
        horizon: Arc<Horizon>,
    ) -> Self {
        match strategy {
            StateStrategy::Mutex => SharedState(
                Inner::Mutex(Mutex::new(WindowMap::new(window_ms, max_open))),
                Hooks::NONE,
                horizon,
                None,
            ),
            StateStrategy::Sharded => {
                let shards = shards.max(1) as usize;
                let each = max_open.div_ceil(shards);
                SharedState(
                    Inner::Sharded(
                        (0..shards)
                            .map(|_| Mutex::new(WindowMap::new(window_ms, each)))
                            .collect(),
                    ),
                    Hooks::NONE,
                    horizon,
                    None,
                )
            }
            StateStrategy::Owner => {
                let (tx, mut rx) = mpsc::channel::<OwnerMsg>(queue.max(1));
                let mut map = WindowMap::new(window_ms, max_open);
                let owner_horizon = horizon.clone();
                std::thread::Builder::new()
                    .name("aggregate-owner".into())
                    .spawn(move || {
                        observatory_owner_loop(&mut || {
                            while let Some(msg) = rx.blocking_recv() {
                                match msg {
                                    OwnerMsg::Batch(frame) => {
                                        owner_drops(apply_frame(&mut map, &frame, &owner_horizon))
                                    }
                                    OwnerMsg::Close(watermark, reply) => {
                                        let mut out = Vec::new();
                                        map.close_until(watermark, &mut out);
                                        let _ = reply.send((out, map.open()));
                                    }
                                }
                            }
                        })
                    })
                    .expect("spawning the owner thread");
                SharedState(Inner::Owner(tx), Hooks::NONE, horizon, None)
            }
        }
    }

    /// The event-time horizon the state applies.
    pub fn horizon(&self) -> &Horizon {
        &self.2
    }

    /// The same state, running the lab hooks `labs` (the iterators slot summarizes each
    /// frame, the recall slot tallies it).
    pub fn with_hooks(mut self, labs: Hooks) -> Self {
        self.1 = labs;
        self.3 = labs
            .get(pipeline_plan::LabSlot::Contention)
            .map(crate::slots::contention::key_totals);
        self
    }

    /// Apply under a lock; `None` for the owner (the caller must hand the frame over).
    fn apply_locked(&self, frame: &Frame) -> Option<Applied> {
        // The iterators lab's per-frame summary (every strategy passes here once per frame).
        if let Some(imp) = self.1.get(pipeline_plan::LabSlot::Iterators) {
            // A real consumer would export the summary; the lab measures computing it.
            std::hint::black_box(crate::slots::iterators::summarize(imp, frame));
        }
        // The recall lab's per-frame tally, likewise.
        if let Some(imp) = self.1.get(pipeline_plan::LabSlot::Recall) {
            std::hint::black_box(crate::slots::recall::tally(imp, frame));
        }
        // The allocators lab's per-frame metric names, likewise.
        if let Some(imp) = self.1.get(pipeline_plan::LabSlot::Arena) {
            std::hint::black_box(crate::slots::arena::names(imp, frame));
        }
        // Lab 04's per-key totals: every caller adds to the same ones, from its own thread.
        if let Some(totals) = &self.3 {
            totals.add(frame);
        }
        match &self.0 {
            Inner::Mutex(m) => {
                let (emit, mut check) = (frame.header.emitted_at_ns, self.2.checker());
                let mut applied = Applied::default();
                for rec in frame.records() {
                    match EventRef::decode(rec) {
                        // The lock is taken per event: the cost this strategy teaches.
                        Ok(ev) => {
                            apply_to(&mut lock(m), rec, &ev, (emit, &mut check), &mut applied)
                        }
                        Err(_) => applied.undecodable(rec),
                    }
                }
                self.2.advance(applied.newest);
                Some(applied)
            }
            Inner::Sharded(shards) => {
                let (emit, mut check) = (frame.header.emitted_at_ns, self.2.checker());
                let mut applied = Applied::default();
                for rec in frame.records() {
                    match EventRef::decode(rec) {
                        Ok(ev) => {
                            let mut h = FxHasher::default();
                            ev.key.hash(&mut h);
                            let shard = &shards[(h.finish() % shards.len() as u64) as usize];
                            apply_to(&mut lock(shard), rec, &ev, (emit, &mut check), &mut applied);
                        }
                        Err(_) => applied.undecodable(rec),
                    }
                }
                self.2.advance(applied.newest);
                Some(applied)
            }
            Inner::Owner(_) => None,
        }
    }

    /// Apply one frame's events (from an async task).
    pub async fn apply(&self, frame: Frame) -> Applied {
        match (self.apply_locked(&frame), &self.0) {
            (Some(applied), _) => applied,
            (None, Inner::Owner(tx)) => {
                let _ = tx.send(OwnerMsg::Batch(frame)).await;
                Applied::default()
            }
            (None, _) => unreachable!("only the owner hands frames over"),
        }
    }

    /// Apply one frame's events (from a plain thread).
    pub fn apply_blocking(&self, frame: Frame) -> Applied {
        match (self.apply_locked(&frame), &self.0) {
            (Some(applied), _) => applied,
            (None, Inner::Owner(tx)) => {
                let _ = tx.blocking_send(OwnerMsg::Batch(frame));
                Applied::default()
            }
            (None, _) => unreachable!("only the owner hands frames over"),
        }
    }

    /// Close under the locks; `None` for the owner.
    fn close_locked(&self, watermark: u64) -> Option<(Vec<ClosedWindow>, usize)> {
        let mut out = Vec::new();
        match &self.0 {
            Inner::Mutex(m) => {
                let mut map = lock(m);
                map.close_until(watermark, &mut out);
                Some((out, map.open()))
            }
            Inner::Sharded(shards) => {
                let mut open = 0;
                for shard in shards {
                    let mut map = lock(shard);
                    map.close_until(watermark, &mut out);
                    open += map.open();
                }
                Some((out, open))
            }
            Inner::Owner(_) => None,
        }
    }

    /// Close the windows that end at or before `watermark`; returns them and how many stay
    /// open (from an async task).
    pub async fn close(&self, watermark: u64) -> (Vec<ClosedWindow>, usize) {
        if let Some(done) = self.close_locked(watermark) {
            return done;
        }
        let Inner::Owner(tx) = &self.0 else {
            unreachable!("only the owner closes by message")
        };
        let (reply, answer) = oneshot::channel();
        if tx.send(OwnerMsg::Close(watermark, reply)).await.is_err() {
            return (Vec::new(), 0);
        }
        answer.await.unwrap_or_default()
    }

    /// The same, from a plain thread.
    pub fn close_blocking(&self, watermark: u64) -> (Vec<ClosedWindow>, usize) {
        if let Some(done) = self.close_locked(watermark) {
            return done;
        }
        let Inner::Owner(tx) = &self.0 else {
            unreachable!("only the owner closes by message")
        };
        let (reply, answer) = oneshot::channel();
        if tx.blocking_send(OwnerMsg::Close(watermark, reply)).is_err() {
            return (Vec::new(), 0);
        }
        answer.blocking_recv().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{FrameCodec, OutFrame};
    use crate::event::{Method, encode_event};
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    fn frame(events: &[(&str, u64)]) -> Frame {
        let mut f = OutFrame::data(1024);
        for (service, ts) in events {
            f.push_with(|out| encode_event(out, service, "/r", Method::Get, 200, 10, 100, *ts));
        }
        f.push(b"junk");
        let mut buf = BytesMut::from(&f.finish(1, 0)[..]);
        FrameCodec::new(1 << 20).decode(&mut buf).unwrap().unwrap()
    }

    #[test]
    fn every_strategy_gives_the_same_windows() {
        let frames = [
            frame(&[("a", 1_000), ("b", 1_500), ("a", 2_500)]),
            frame(&[("c", 2_600), ("a", 3_900), ("b", 4_100)]),
        ];
        let mut results = Vec::new();
        for strategy in [
            StateStrategy::Mutex,
            StateStrategy::Sharded,
            StateStrategy::Owner,
        ] {
            let dropped = std::sync::Arc::new(Mutex::new(Applied::default()));
            let sink = dropped.clone();
            let state = SharedState::new(strategy, 4, 1, 1 << 20, 4, move |a| {
                let mut d = sink.lock().unwrap();
                d.undecodable += a.undecodable;
            });
            let mut undecodable = 0;
            for f in &frames {
                undecodable += state.apply_blocking(f.clone()).undecodable;
            }
            let (mut closed, open) = state.close_blocking(3_000);
            assert_eq!(
                open, 2,
                "{strategy:?}: windows [3000, 4000) and [4000, 5000) stay open"
            );
            let (rest, open) = state.close_blocking(u64::MAX);
            assert_eq!(open, 0);
            closed.extend(rest);
            let mut summary: Vec<(u64, Vec<u8>, u64)> = closed
                .iter()
                .map(|c| (c.start_us, c.key.to_vec(), c.agg.count))
                .collect();
            summary.sort();
            undecodable += dropped.lock().unwrap().undecodable;
            assert_eq!(undecodable, 2, "{strategy:?}: one junk record per frame");
            results.push(summary);
        }
        assert_eq!(results[0].len(), 6);
        assert_eq!(results[0], results[1]);
        assert_eq!(results[0], results[2]);
    }
}
