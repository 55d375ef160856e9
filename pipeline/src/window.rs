//! Tumbling event-time windows per (service, route): count, 5xx errors, bytes and an HDR
//! histogram of latency (2 significant digits: percentiles within 1%).
//!
//! A [`WindowMap`] is the state one owner (a mutex, a shard, or the owner task) holds. Windows
//! close when the watermark passes their end; an event whose window has already closed is
//! late and is dropped by the caller with a reason, so a window is persisted exactly once.

use crate::event::{EventRef, Latency};
use crate::json::MAX_LATENCY_US;
use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;

/// Significant digits of latency histograms.
pub const SIGFIG: u8 = 2;

/// A fresh latency histogram (1 µs .. 1 h, 2 significant digits).
pub fn latency_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGFIG)
        .expect("1..=3.6e9 with 2 significant digits is a valid histogram")
}

/// Percentiles of a histogram.
pub fn percentiles(h: &Histogram<u32>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        min: h.min(),
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        max: h.max(),
    }
}

/// The running aggregate of one window of one key.
#[derive(Clone, Debug)]
pub struct WindowAgg {
    pub count: u64,
    pub errors: u64,
    pub bytes: u64,
    pub latency: Histogram<u32>,
    pub last_emit_ns: u64,
}

impl Default for WindowAgg {
    fn default() -> Self {
        WindowAgg {
            count: 0,
            errors: 0,
            bytes: 0,
            latency: latency_histogram(),
            last_emit_ns: 0,
        }
    }
}

impl WindowAgg {
    #[inline]
    pub fn record(&mut self, ev: &EventRef<'_>, emit_ns: u64) {
        self.count += 1;
        self.errors += u64::from(ev.is_error());
        self.bytes = self.bytes.saturating_add(ev.bytes);
        self.latency.saturating_record(u64::from(ev.latency_us));
        self.last_emit_ns = self.last_emit_ns.max(emit_ns);
    }
}

/// A window that has closed, ready to be encoded.
#[derive(Debug)]
pub struct ClosedWindow {
    pub start_us: u64,
    pub end_us: u64,
    pub key: Box<[u8]>,
    pub agg: WindowAgg,
}

/// How far ahead in event time a stage lets an event be (`max_future_skew_ms`): no further
/// than the skew past the newest event it has accepted (before the first, past the wall
/// clock). An event beyond that is dropped as `future_timestamp`, and a watermark beyond it
/// is not believed, so one far-future event cannot make every later one late. Shared by the
/// stage's workers (and, in the aggregate, every state strategy).
#[derive(Debug)]
pub struct Horizon {
    newest: std::sync::atomic::AtomicU64,
    skew_us: u64,
}

impl Horizon {
    pub fn new(max_future_skew_ms: u64) -> Self {
        Horizon {
            newest: std::sync::atomic::AtomicU64::new(0),
            skew_us: max_future_skew_ms.saturating_mul(1000),
        }
    }

    /// No bound (benches, kernels: trusted input).
    pub fn unbounded() -> Self {
        Horizon {
            newest: std::sync::atomic::AtomicU64::new(0),
            skew_us: u64::MAX,
        }
    }

    /// The newest event time accepted so far (0 before the first).
    pub fn newest(&self) -> u64 {
        self.newest.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The latest event time accepted now.
    pub fn limit(&self) -> u64 {
        let newest = self.newest();
        let base = if newest == 0 {
            crate::net::now_ns() / 1000
        } else {
            newest
        };
        base.saturating_add(self.skew_us)
    }

    /// A per-batch check of event times: each event is held to the newest accepted before it
    /// (in the stage, or earlier in the batch), so a batch cannot carry itself into the
    /// future either. [`Horizon::advance`] with its `newest` afterwards.
    pub fn checker(&self) -> Checker {
        let newest = self.newest();
        Checker {
            newest,
            skew_us: self.skew_us,
            start: if newest == 0 {
                crate::net::now_ns() / 1000
            } else {
                newest
            },
        }
    }

    /// Record accepted events up to event time `ts_us`.
    pub fn advance(&self, ts_us: u64) {
        self.newest
            .fetch_max(ts_us, std::sync::atomic::Ordering::Relaxed);
    }

    /// A watermark an upstream claims, as far as it is believed: one past `limit` (taken
    /// before the frame's events advanced the horizon) is replaced by the newest event time
    /// accepted. `u64::MAX` is believed only when `end_marker` (at least once: the source's
    /// last batch, which closes every window).
    pub fn watermark(&self, claimed: u64, limit: u64, end_marker: bool) -> u64 {
        if claimed <= limit || (claimed == u64::MAX && end_marker) {
            claimed
        } else {
            self.newest()
        }
    }
}

/// See [`Horizon::checker`].
#[derive(Clone, Copy, Debug)]
pub struct Checker {
    /// The newest event time accepted so far (0: none yet).
    pub newest: u64,
    skew_us: u64,
    /// What the first event is held to: the wall clock, when nothing was accepted before.
    start: u64,
}

impl Checker {
    /// Whether an event at `ts_us` is within the horizon; if so it counts as accepted.
    #[inline]
    pub fn accept(&mut self, ts_us: u64) -> bool {
        let base = if self.newest == 0 {
            self.start
        } else {
            self.newest
        };
        if ts_us > base.saturating_add(self.skew_us) {
            return false;
        }
        self.newest = self.newest.max(ts_us);
        true
    }
}

/// Why an event was not added to a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its window had already closed.
    Late,
    /// It would have opened a window beyond the cap (`max_open_windows`).
    Full,
    /// Its event time is beyond the stage's [`Horizon`].
    Future,
}

/// Bytes one open window holds: its latency histogram's counts (`u32` per bucket of a
/// 1 µs .. 1 h, 2-significant-digit histogram: 3,328 buckets) plus the map entry. The memory
/// bound of the aggregate stage is written in these units (README, "Memory bounds").
pub fn window_bytes() -> usize {
    latency_histogram().distinct_values() * std::mem::size_of::<u32>()
        + std::mem::size_of::<(u64, WindowAgg)>()
        + 64
}

/// Open windows of many keys.
#[derive(Debug)]
pub struct WindowMap {
    windows: FxHashMap<Box<[u8]>, Vec<(u64, WindowAgg)>>,
    window_us: u64,
    /// Windows ending at or before this event time have been closed.
    closed_until: u64,
    open: usize,
    /// At most this many windows open at once.
    cap: usize,
}

impl WindowMap {
    /// Windows of `window_ms`, at most `cap` of them open at once.
    pub fn new(window_ms: u64, cap: usize) -> Self {
        WindowMap {
            windows: FxHashMap::default(),
            window_us: window_ms.max(1) * 1000,
            closed_until: 0,
            open: 0,
            cap: cap.max(1),
        }
    }

    /// Windows currently open.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Add one event.
    #[inline]
    pub fn apply(&mut self, ev: &EventRef<'_>, emit_ns: u64) -> Result<(), Refused> {
        let start = ev.ts_us - ev.ts_us % self.window_us;
        if start.saturating_add(self.window_us) <= self.closed_until {
            return Err(Refused::Late);
        }
        let full = self.open >= self.cap;
        let wins = match self.windows.get_mut(ev.key) {
            Some(w) => w,
            None if full => return Err(Refused::Full),
            None => self.windows.entry(ev.key.into()).or_default(),
        };
        let agg = match wins.iter().position(|(s, _)| *s == start) {
            Some(i) => &mut wins[i].1,
            None if full => return Err(Refused::Full),
            None => {
                wins.push((start, WindowAgg::default()));
                self.open += 1;
                &mut wins.last_mut().expect("just pushed").1
            }
        };
        agg.record(ev, emit_ns);
        Ok(())
    }

    /// Close every window that ends at or before `watermark_us` (`u64::MAX` closes all),
    /// appending them to `out`.
    pub fn close_until(&mut self, watermark_us: u64, out: &mut Vec<ClosedWindow>) {
        if watermark_us <= self.closed_until {
            return;
        }
        self.closed_until = watermark_us;
        let len = self.window_us;
        for (key, wins) in self.windows.iter_mut() {
            let mut i = 0;
            while i < wins.len() {
                if wins[i].0.saturating_add(len) <= watermark_us {
                    let (start_us, agg) = wins.swap_remove(i);
                    out.push(ClosedWindow {
                        start_us,
                        end_us: start_us + len,
                        key: key.clone(),
                        agg,
                    });
                    self.open -= 1;
                } else {
                    i += 1;
                }
            }
        }
        // Idle keys give their memory back.
        self.windows.retain(|_, w| !w.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Method, put_key};
    use std::collections::BTreeMap;

    struct Ev {
        key: Vec<u8>,
        status: u16,
        latency: u32,
        bytes: u64,
        ts: u64,
    }

    fn events(n: usize) -> Vec<Ev> {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(4);
        (0..n)
            .map(|i| {
                let mut key = Vec::new();
                put_key(
                    &mut key,
                    ["a", "b", "c"][rng.random_range(0..3)],
                    ["/x", "/y"][rng.random_range(0..2)],
                );
                Ev {
                    key,
                    status: if rng.random_bool(0.1) { 503 } else { 200 },
                    latency: rng.random_range(1..2_000_000),
                    bytes: rng.random_range(0..10_000),
                    ts: 1_000_000 + i as u64 * 37,
                }
            })
            .collect()
    }

    fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
        // The same definition HdrHistogram uses: the value at rank ceil(q * n).
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    #[test]
    fn windows_and_percentiles_match_a_naive_reference() {
        let evs = events(50_000);
        let window_ms = 100;
        let mut map = WindowMap::new(window_ms, usize::MAX);
        let mut closed = Vec::new();
        for (i, e) in evs.iter().enumerate() {
            let ev = EventRef {
                key: &e.key,
                method: Method::Get,
                status: e.status,
                latency_us: e.latency,
                bytes: e.bytes,
                ts_us: e.ts,
            };
            map.apply(&ev, i as u64).unwrap();
            // Close as the stream advances, like the aggregate stage does.
            if i % 1000 == 999 {
                map.close_until(e.ts, &mut closed);
            }
        }
        map.close_until(u64::MAX, &mut closed);
        assert_eq!(map.open(), 0);

        type Naive = BTreeMap<(u64, Vec<u8>), (u64, u64, u64, Vec<u64>)>;
        let mut naive: Naive = BTreeMap::new();
        for e in &evs {
            let start = e.ts - e.ts % (window_ms * 1000);
            let w = naive.entry((start, e.key.clone())).or_default();
            w.0 += 1;
            w.1 += u64::from(e.status >= 500);
            w.2 += e.bytes;
            w.3.push(u64::from(e.latency));
        }
        assert_eq!(closed.len(), naive.len(), "each window closed exactly once");
        for c in &closed {
            let (count, errors, bytes, lat) = naive
                .get_mut(&(c.start_us, c.key.to_vec()))
                .expect("window exists");
            assert_eq!(
                (c.agg.count, c.agg.errors, c.agg.bytes),
                (*count, *errors, *bytes)
            );
            lat.sort_unstable();
            let p = percentiles(&c.agg.latency);
            for (q, got) in [(0.5, p.p50), (0.9, p.p90), (0.99, p.p99), (1.0, p.max)] {
                let want = exact_quantile(lat, q) as f64;
                let err = (got as f64 - want).abs() / want;
                assert!(err <= 0.01, "q{q}: hdr {got} vs exact {want}");
            }
            assert!((p.min as f64 - lat[0] as f64).abs() / (lat[0] as f64) <= 0.01);
        }
    }

    #[test]
    fn late_events_are_refused_after_their_window_closed() {
        let mut key = Vec::new();
        put_key(&mut key, "s", "/r");
        let ev = |ts| EventRef {
            key: &key,
            method: Method::Get,
            status: 200,
            latency_us: 10,
            bytes: 1,
            ts_us: ts,
        };
        let mut map = WindowMap::new(1, usize::MAX); // 1 ms windows
        map.apply(&ev(500), 0).unwrap();
        map.apply(&ev(1500), 0).unwrap();
        let mut out = Vec::new();
        map.close_until(1500, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].start_us, out[0].end_us), (0, 1000));
        assert_eq!(map.apply(&ev(999), 0), Err(Refused::Late));
        assert_eq!(map.apply(&ev(1999), 0), Ok(()));
        map.close_until(u64::MAX, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].agg.count, 2);
    }

    #[test]
    fn the_cap_refuses_new_windows_but_not_events_of_open_ones() {
        let keys: Vec<Vec<u8>> = (0..3)
            .map(|i| {
                let mut k = Vec::new();
                put_key(&mut k, &format!("s{i}"), "/r");
                k
            })
            .collect();
        let ev = |k: usize, ts| EventRef {
            key: &keys[k],
            method: Method::Get,
            status: 200,
            latency_us: 10,
            bytes: 1,
            ts_us: ts,
        };
        let mut map = WindowMap::new(1, 2);
        assert_eq!(map.apply(&ev(0, 100), 0), Ok(()));
        assert_eq!(map.apply(&ev(1, 100), 0), Ok(()));
        assert_eq!(map.apply(&ev(2, 100), 0), Err(Refused::Full), "a new key");
        assert_eq!(
            map.apply(&ev(0, 1100), 0),
            Err(Refused::Full),
            "a new window"
        );
        assert_eq!(map.apply(&ev(0, 200), 0), Ok(()), "an open window");
        assert_eq!(map.open(), 2);
        let mut out = Vec::new();
        map.close_until(1000, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(map.apply(&ev(2, 1100), 0), Ok(()), "room again");
        assert!(window_bytes() > 13_000, "{}", window_bytes());
    }

    #[test]
    fn the_horizon_holds_each_event_to_the_newest_before_it() {
        let h = Horizon::new(1000); // 1 s of event time
        let now_us = crate::net::now_ns() / 1000;
        // Before anything is accepted, the wall clock is the reference.
        let mut c = h.checker();
        assert!(
            !c.accept(now_us + 3_600_000_000),
            "an hour ahead of the clock"
        );
        assert!(c.accept(1_000_000), "the past is not the future");
        assert!(c.accept(1_900_000));
        // Within one batch the bound moves with what was accepted, so a batch cannot walk
        // into the future either.
        assert!(!c.accept(2_900_001));
        assert!(c.accept(2_900_000));
        h.advance(c.newest);
        assert_eq!(h.newest(), 2_900_000);
        assert!(!h.checker().accept(3_900_001));
        // A claimed watermark past the bound is replaced by the newest accepted event time;
        // u64::MAX is believed only as the at-least-once end marker.
        let limit = h.limit();
        assert_eq!(h.watermark(3_000_000, limit, false), 3_000_000);
        assert_eq!(h.watermark(9_000_000_000, limit, false), 2_900_000);
        assert_eq!(h.watermark(u64::MAX, limit, false), 2_900_000);
        assert_eq!(h.watermark(u64::MAX, limit, true), u64::MAX);
    }
}
