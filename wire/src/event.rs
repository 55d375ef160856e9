//! Events as they travel: the compact binary records between stages, the window results the
//! sink persists, and the reasons an event can be dropped.
//!
//! Compact event (parse -> aggregate), little-endian:
//! `key | method u8 | status u16 | latency_us u32 | bytes u64 | ts_us u64`, where
//! `key = service_len u8 | service | route_len u8 | route` (the aggregation key, used as-is as a
//! hash-map key without copying).
//!
//! Window result (aggregate -> sink, and each segment-log record):
//! `window_start_us u64 | window_end_us u64 | key | count u64 | errors u64 | bytes u64 |
//!  min p50 p90 p99 max (latency, µs, u64 each) | last_emit_ns u64`.

use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Wall-clock time in ns since the Unix epoch (a batch's departure, an event's timestamp).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Why an event was dropped. Every drop is counted under exactly one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Not valid JSON (syntax error, truncated record, bad escape).
    BadJson,
    /// Not valid UTF-8.
    BadUtf8,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type.
    WrongType,
    /// A field is outside its allowed range (status, latency, method, name length).
    OutOfRange,
    /// The event's window had already been closed when it arrived.
    Late,
    /// A binary record from upstream could not be decoded.
    Undecodable,
    /// A replayed record larger than a frame may be.
    TooLarge,
    /// Discarded on purpose by a `blackhole` sink.
    Blackhole,
    /// Discarded on purpose: the last stage of a truncated plan has nowhere to send it.
    NoDownstream,
    /// The upstream's end-of-stream said it sent more than arrived.
    LostInTransit,
    /// Sent into a downstream connection that broke before it was written.
    DownstreamLost,
    /// The aggregate's window cap (`max_open_windows`) was reached: the event would have
    /// opened another window.
    WindowLimit,
    /// Still queued when the drain deadline passed (or the stage was told to give up): cut
    /// off, counted, never delivered.
    Abandoned,
    /// Set aside because code handling its batch panicked (the whole batch goes: the course's
    /// error-handling lab shows why per-record errors as values beat this).
    Panicked,
    /// At least once: already delivered (a resend after a failure), so not applied again.
    Duplicate,
    /// Its event time is further ahead of the newest accepted one than `max_future_skew_ms`
    /// allows (a clock gone wrong, or a poisoned record): dropped, and it moves no watermark.
    FutureTimestamp,
}

/// How a drop counts in the conservation equation
/// `emitted = persisted + dead_lettered + discarded + lost`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropClass {
    DeadLetter,
    Discard,
    Loss,
    /// A second copy of an event already counted (at least once): outside the equation.
    Duplicate,
}

impl DropReason {
    pub const ALL: [DropReason; 17] = [
        DropReason::BadJson,
        DropReason::BadUtf8,
        DropReason::MissingField,
        DropReason::WrongType,
        DropReason::OutOfRange,
        DropReason::Late,
        DropReason::Undecodable,
        DropReason::TooLarge,
        DropReason::Blackhole,
        DropReason::NoDownstream,
        DropReason::LostInTransit,
        DropReason::DownstreamLost,
        DropReason::WindowLimit,
        DropReason::Abandoned,
        DropReason::Panicked,
        DropReason::Duplicate,
        DropReason::FutureTimestamp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BadJson => "bad_json",
            DropReason::BadUtf8 => "bad_utf8",
            DropReason::MissingField => "missing_field",
            DropReason::WrongType => "wrong_type",
            DropReason::OutOfRange => "out_of_range",
            DropReason::Late => "late",
            DropReason::Undecodable => "undecodable",
            DropReason::TooLarge => "too_large",
            DropReason::Blackhole => "blackhole",
            DropReason::NoDownstream => "no_downstream",
            DropReason::LostInTransit => "lost_in_transit",
            DropReason::DownstreamLost => "downstream_lost",
            DropReason::WindowLimit => "window_limit",
            DropReason::Abandoned => "abandoned",
            DropReason::Panicked => "panicked",
            DropReason::Duplicate => "duplicate",
            DropReason::FutureTimestamp => "future_timestamp",
        }
    }

    pub fn class(self) -> DropClass {
        match self {
            DropReason::Blackhole | DropReason::NoDownstream => DropClass::Discard,
            DropReason::LostInTransit
            | DropReason::DownstreamLost
            | DropReason::WindowLimit
            | DropReason::Abandoned => DropClass::Loss,
            DropReason::Duplicate => DropClass::Duplicate,
            _ => DropClass::DeadLetter,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// HTTP methods the source generates and the parser accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
    Options,
}

impl Method {
    pub const ALL: [Method; 7] = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Head,
        Method::Options,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == s)
    }

    fn from_u8(v: u8) -> Option<Method> {
        Method::ALL.get(v as usize).copied()
    }
}

/// A binary record that does not decode.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("undecodable record: {0}")]
pub struct DecodeError(pub &'static str);

/// Longest service or route name, in bytes (they are length-prefixed with one byte).
pub const MAX_NAME_BYTES: usize = 255;

/// Append the aggregation key of (service, route). Names longer than [`MAX_NAME_BYTES`] must
/// have been rejected before (the parser does).
pub fn put_key(out: &mut Vec<u8>, service: &str, route: &str) {
    debug_assert!(service.len() <= MAX_NAME_BYTES && route.len() <= MAX_NAME_BYTES);
    out.push(service.len() as u8);
    out.extend_from_slice(service.as_bytes());
    out.push(route.len() as u8);
    out.extend_from_slice(route.as_bytes());
}

/// The aggregate partition (of `n`) a key belongs to: the same on every parse replica.
pub fn partition_of(key: &[u8], n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    if n <= 1 {
        return 0;
    }
    let mut h = rustc_hash::FxHasher::default();
    key.hash(&mut h);
    (h.finish() % n as u64) as usize
}

/// The key at the start of a compact event.
pub fn key_of(rec: &[u8]) -> Result<&[u8], DecodeError> {
    Ok(&rec[..key_len(rec)?])
}

/// Length of the key at the start of `rec`.
fn key_len(rec: &[u8]) -> Result<usize, DecodeError> {
    let s = *rec.first().ok_or(DecodeError("empty record"))? as usize;
    let r = *rec.get(1 + s).ok_or(DecodeError("key cut short"))? as usize;
    let len = 2 + s + r;
    if rec.len() < len {
        return Err(DecodeError("key cut short"));
    }
    Ok(len)
}

/// Split a key into (service, route).
pub fn split_key(key: &[u8]) -> Result<(&str, &str), DecodeError> {
    let len = key_len(key)?;
    let s = key[0] as usize;
    let service =
        std::str::from_utf8(&key[1..1 + s]).map_err(|_| DecodeError("service not UTF-8"))?;
    let route =
        std::str::from_utf8(&key[2 + s..len]).map_err(|_| DecodeError("route not UTF-8"))?;
    Ok((service, route))
}

/// A key as parse writes it: both names non-empty UTF-8 (the one-byte lengths allow no more
/// than [`MAX_NAME_BYTES`]).
fn check_key(key: &[u8]) -> Result<(), DecodeError> {
    let (service, route) = split_key(key)?;
    if service.is_empty() || route.is_empty() {
        return Err(DecodeError("key name empty"));
    }
    Ok(())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// A compact event, borrowing its key from the frame it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRef<'a> {
    pub key: &'a [u8],
    pub method: Method,
    pub status: u16,
    pub latency_us: u32,
    pub bytes: u64,
    pub ts_us: u64,
}

const EVENT_TAIL: usize = 1 + 2 + 4 + 8 + 8;

/// Append a compact event built from its fields (names must fit [`MAX_NAME_BYTES`]).
#[allow(clippy::too_many_arguments)]
pub fn encode_event(
    out: &mut Vec<u8>,
    service: &str,
    route: &str,
    method: Method,
    status: u16,
    latency_us: u32,
    bytes: u64,
    ts_us: u64,
) {
    put_key(out, service, route);
    put_event_tail(out, method, status, latency_us, bytes, ts_us);
}

fn put_event_tail(
    out: &mut Vec<u8>,
    method: Method,
    status: u16,
    latency_us: u32,
    bytes: u64,
    ts_us: u64,
) {
    out.push(method as u8);
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&latency_us.to_le_bytes());
    out.extend_from_slice(&bytes.to_le_bytes());
    out.extend_from_slice(&ts_us.to_le_bytes());
}

impl<'a> EventRef<'a> {
    /// Append the compact encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.key);
        put_event_tail(
            out,
            self.method,
            self.status,
            self.latency_us,
            self.bytes,
            self.ts_us,
        );
    }

    /// Decode and check a compact event: every field within the range parse accepts (a record
    /// from a peer is never trusted to have come through parse).
    pub fn decode(rec: &'a [u8]) -> Result<Self, DecodeError> {
        let k = key_len(rec)?;
        if rec.len() != k + EVENT_TAIL {
            return Err(DecodeError("event record has the wrong length"));
        }
        check_key(&rec[..k])?;
        let t = &rec[k..];
        let ev = EventRef {
            key: &rec[..k],
            method: Method::from_u8(t[0]).ok_or(DecodeError("unknown method"))?,
            status: u16::from_le_bytes([t[1], t[2]]),
            latency_us: u32::from_le_bytes([t[3], t[4], t[5], t[6]]),
            bytes: u64_at(t, 7),
            ts_us: u64_at(t, 15),
        };
        if !(100..=599).contains(&ev.status)
            || u64::from(ev.latency_us) > crate::json::MAX_LATENCY_US
            || ev.bytes > crate::json::MAX_BYTES
        {
            return Err(DecodeError("event field out of range"));
        }
        Ok(ev)
    }

    /// A 5xx status counts as an error.
    pub fn is_error(&self) -> bool {
        self.status >= 500
    }
}

/// Latency percentiles of a window, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Latency {
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

/// One closed window of one (service, route): what the sink persists.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct WindowResult {
    pub window_start_us: u64,
    pub window_end_us: u64,
    pub service: String,
    pub route: String,
    pub count: u64,
    pub errors: u64,
    pub bytes: u64,
    pub latency_us: Latency,
    /// Wall-clock time (ns since the Unix epoch) the newest contributing batch left the source.
    #[serde(skip)]
    pub last_emit_ns: u64,
}

const RESULT_TAIL: usize = 8 * 9;

impl WindowResult {
    /// Append the encoding of a window given its raw key.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_parts(
        out: &mut Vec<u8>,
        window_start_us: u64,
        window_end_us: u64,
        key: &[u8],
        count: u64,
        errors: u64,
        bytes: u64,
        latency: Latency,
        last_emit_ns: u64,
    ) {
        out.extend_from_slice(&window_start_us.to_le_bytes());
        out.extend_from_slice(&window_end_us.to_le_bytes());
        out.extend_from_slice(key);
        for v in [
            count,
            errors,
            bytes,
            latency.min,
            latency.p50,
            latency.p90,
            latency.p99,
            latency.max,
            last_emit_ns,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut key = Vec::with_capacity(2 + self.service.len() + self.route.len());
        put_key(&mut key, &self.service, &self.route);
        Self::encode_parts(
            out,
            self.window_start_us,
            self.window_end_us,
            &key,
            self.count,
            self.errors,
            self.bytes,
            self.latency_us,
            self.last_emit_ns,
        );
    }

    /// Decode and check a window result (see [`WindowResult::check`]).
    pub fn decode(rec: &[u8]) -> Result<Self, DecodeError> {
        WindowRef::decode(rec).map(|w| w.to_owned())
    }

    /// What every window result the aggregate writes satisfies: a window of 1 ms to 1 h
    /// aligned to its length, at least one event, no more errors than events, bytes a sum of
    /// at most `count` sizes parse accepts, percentiles in order.
    pub fn check(&self) -> Result<(), DecodeError> {
        self.as_ref().check()
    }

    /// The same window, borrowing its strings from this one.
    fn as_ref(&self) -> WindowRef<'_> {
        WindowRef {
            window_start_us: self.window_start_us,
            window_end_us: self.window_end_us,
            key: &[],
            service: &self.service,
            route: &self.route,
            count: self.count,
            errors: self.errors,
            bytes: self.bytes,
            latency_us: self.latency_us,
            last_emit_ns: self.last_emit_ns,
        }
    }

    /// Check the shape and read just (key length, event count, last emit time): all the sink
    /// needs, without allocating.
    fn peek(rec: &[u8]) -> Result<(usize, u64, u64), DecodeError> {
        if rec.len() < 16 {
            return Err(DecodeError("window record cut short"));
        }
        let k = key_len(&rec[16..])?;
        if rec.len() != 16 + k + RESULT_TAIL {
            return Err(DecodeError("window record has the wrong length"));
        }
        let t = 16 + k;
        Ok((k, u64_at(rec, t), u64_at(rec, t + 64)))
    }
}

/// A window result borrowed from the record it was decoded from: its key and names point into
/// the record's bytes, so decoding allocates nothing, and the window cannot outlive them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowRef<'a> {
    pub window_start_us: u64,
    pub window_end_us: u64,
    /// The raw key ([`put_key`]'s encoding of service and route); empty from
    /// [`WindowResult::check`], which has no record.
    pub key: &'a [u8],
    pub service: &'a str,
    pub route: &'a str,
    pub count: u64,
    pub errors: u64,
    pub bytes: u64,
    pub latency_us: Latency,
    pub last_emit_ns: u64,
}

impl<'a> WindowRef<'a> {
    /// Decode and check a window result, with the checks of [`WindowResult::decode`].
    pub fn decode(rec: &'a [u8]) -> Result<Self, DecodeError> {
        let (k, count, last_emit_ns) = WindowResult::peek(rec)?;
        let key = &rec[16..16 + k];
        check_key(key)?;
        let (service, route) = split_key(key)?;
        let t = &rec[16 + k..];
        let w = WindowRef {
            window_start_us: u64_at(rec, 0),
            window_end_us: u64_at(rec, 8),
            key,
            service,
            route,
            count,
            errors: u64_at(t, 8),
            bytes: u64_at(t, 16),
            latency_us: Latency {
                min: u64_at(t, 24),
                p50: u64_at(t, 32),
                p90: u64_at(t, 40),
                p99: u64_at(t, 48),
                max: u64_at(t, 56),
            },
            last_emit_ns,
        };
        w.check()?;
        Ok(w)
    }

    /// An owned copy.
    pub fn to_owned(&self) -> WindowResult {
        WindowResult {
            window_start_us: self.window_start_us,
            window_end_us: self.window_end_us,
            service: self.service.to_string(),
            route: self.route.to_string(),
            count: self.count,
            errors: self.errors,
            bytes: self.bytes,
            latency_us: self.latency_us,
            last_emit_ns: self.last_emit_ns,
        }
    }

    /// See [`WindowResult::check`].
    fn check(&self) -> Result<(), DecodeError> {
        let width = self.window_end_us.checked_sub(self.window_start_us);
        let width = width.filter(|w| (1000..=3_600_000_000).contains(w));
        let Some(width) = width else {
            return Err(DecodeError("window length out of range"));
        };
        if !self.window_start_us.is_multiple_of(width) {
            return Err(DecodeError("window not aligned to its length"));
        }
        if self.count == 0 || self.errors > self.count {
            return Err(DecodeError("window counts inconsistent"));
        }
        if self
            .count
            .checked_mul(crate::json::MAX_BYTES)
            .is_none_or(|m| self.bytes > m)
        {
            return Err(DecodeError("window bytes out of range"));
        }
        let l = &self.latency_us;
        if !(l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max) {
            return Err(DecodeError("window percentiles out of order"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_round_trip() {
        let mut key = Vec::new();
        put_key(&mut key, "checkout", "/api/v1/cart");
        let ev = EventRef {
            key: &key,
            method: Method::Post,
            status: 503,
            latency_us: 123_456,
            bytes: 1 << 33,
            ts_us: 1_764_000_000_000_001,
        };
        let mut buf = Vec::new();
        ev.encode(&mut buf);
        assert_eq!(EventRef::decode(&buf), Ok(ev));
        assert!(ev.is_error());
        assert_eq!(split_key(ev.key), Ok(("checkout", "/api/v1/cart")));
        for cut in 0..buf.len() {
            assert!(EventRef::decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn decoders_refuse_fields_parse_would_never_write() {
        let mut key = Vec::new();
        put_key(&mut key, "svc", "/r");
        let ok = EventRef {
            key: &key,
            method: Method::Get,
            status: 200,
            latency_us: 5,
            bytes: 10,
            ts_us: 1,
        };
        let enc = |e: &EventRef<'_>| {
            let mut out = Vec::new();
            e.encode(&mut out);
            out
        };
        assert!(EventRef::decode(&enc(&ok)).is_ok());
        let mut empty = Vec::new();
        put_key(&mut empty, "", "/r");
        for bad in [
            EventRef { status: 99, ..ok },
            EventRef { status: 600, ..ok },
            EventRef {
                latency_us: u32::MAX,
                ..ok
            },
            EventRef {
                bytes: (1 << 40) + 1,
                ..ok
            },
            EventRef { key: &empty, ..ok },
        ] {
            assert!(EventRef::decode(&enc(&bad)).is_err(), "{bad:?}");
        }
        let mut not_utf8 = enc(&ok);
        not_utf8[1] = 0xff;
        assert!(EventRef::decode(&not_utf8).is_err());
    }

    #[test]
    fn window_round_trip_and_peek() {
        let w = WindowResult {
            window_start_us: 1_000_000,
            window_end_us: 2_000_000,
            service: "search".into(),
            route: "/q".into(),
            count: 10,
            errors: 2,
            bytes: 999,
            latency_us: Latency {
                min: 1,
                p50: 5,
                p90: 9,
                p99: 10,
                max: 11,
            },
            last_emit_ns: 77,
        };
        let mut buf = Vec::new();
        w.encode(&mut buf);
        assert_eq!(WindowResult::decode(&buf).unwrap(), w);
        let borrowed = WindowRef::decode(&buf).unwrap();
        assert_eq!(borrowed.to_owned(), w);
        assert_eq!(
            split_key(borrowed.key),
            Ok((w.service.as_str(), w.route.as_str()))
        );
        assert_eq!(WindowResult::peek(&buf).unwrap().1, 10);
        assert_eq!(WindowResult::peek(&buf).unwrap().2, 77);
        buf.push(0);
        assert!(WindowResult::decode(&buf).is_err());
    }

    #[test]
    fn every_reason_has_a_distinct_label() {
        let mut labels: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::ALL.len());
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
