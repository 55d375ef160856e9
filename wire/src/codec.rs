//! Frames on the wire between stages.
//!
//! Each frame is a 4-byte big-endian length ([`FrameCodec`] enforces the maximum frame size),
//! then a 40-byte little-endian header:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | protocol version (2) |
//! | 1 | kind: 0 data, 1 end of stream, 2 drain request, 4 ack, 5 rewind (these three sent upstream), 6 hello |
//! | 2..4 | origin lag (at least once: how many batches before this one the source's oldest unacknowledged batch is; else 0) |
//! | 4..8 | stream id (chosen by the sender at start-up) |
//! | 8..16 | batch sequence number (per stream, from 0) |
//! | 16..20 | record count |
//! | 20..28 | wall-clock ns the batch left the source (oldest data in it) |
//! | 28..36 | event-time watermark: largest event time in the batch (µs) |
//! | 36..40 | event count (equals the record count, except window results, which hold many) |
//!
//! then `record count` records, each a u32 LE length and that many bytes. An end-of-stream
//! frame carries no records; its payload is the sender's totals for the stream (records sent
//! u64, events sent u64), so the receiver can tell whether anything went missing.
//!
//! With delivery `at_least_once`, a data frame's stream id and sequence are its *origin*: the
//! source batch its events came from, so a receiver can drop a batch it has already applied,
//! whichever path it came by, and knows (from the origin lag) below which sequence every batch
//! is already durable. Acks flow upstream (payload: how many of this connection's frames are
//! durably handled, u64, and the event time below which every event is durable downstream,
//! u64); a rewind asks the source to resend what is unacknowledged.
//!
//! Every connection opens with a hello (its stream id in the header; payload: role u8,
//! replica u32, the SHA-256 of the shared token (zeros without one), then the pipeline name,
//! a length u8 and that many bytes). Until a receiver has admitted the connection
//! ([`crate::admission`]), it takes frames of at most [`HELLO_MAX`] bytes, so an unadmitted
//! peer can make it hold no more than that.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;
use tokio_util::codec::Decoder;

pub const VERSION: u8 = 2;
/// Largest frame a connection may send before it is admitted (a hello is at most 334 bytes).
pub const HELLO_MAX: usize = 512;
pub const PREFIX_LEN: usize = 4;
pub const HEADER_LEN: usize = 40;
const SEQ_AT: usize = PREFIX_LEN + 8;

/// What a frame is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Data = 0,
    End = 1,
    Drain = 2,
    Ack = 4,
    Rewind = 5,
    Hello = 6,
}

/// The fixed header of every frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// At least once: see the module docs (0 otherwise).
    pub origin_lag: u16,
    pub stream_id: u32,
    pub batch_seq: u64,
    pub record_count: u32,
    pub emitted_at_ns: u64,
    pub watermark_us: u64,
    pub event_count: u32,
}

/// Why a frame was rejected. The connection it came on is closed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("records do not fill the frame as its header says")]
    Records,
    #[error("frame exceeds the maximum frame size")]
    Oversized,
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("i/o error: {0}")]
    Io(String),
    #[error("a frame before the connection's hello")]
    NotAdmitted,
    #[error("no hello within the hello timeout")]
    HelloTimeout,
    #[error("malformed hello")]
    BadHello,
    #[error("hello names another pipeline")]
    WrongPipeline,
    #[error("hello names a role that does not feed this stage")]
    WrongRole,
    #[error("hello names a replica the plan does not have, or one already connected")]
    BadReplica,
    #[error("hello carries the wrong token, or none")]
    BadToken,
    #[error("a frame of another stream than the one the hello named")]
    WrongStream,
    #[error("end of stream whose totals differ from what the stream delivered")]
    BadEndTotals,
    #[error("a started frame did not complete within the frame timeout")]
    FrameTimeout,
    #[error("the connection limit was reached")]
    ConnectionLimit,
}

impl FrameError {
    /// The `reason` label of `pipeline_frames_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Short(_) => "short_frame",
            FrameError::Version(_) => "bad_version",
            FrameError::Kind(_) => "bad_kind",
            FrameError::Records => "bad_records",
            FrameError::Oversized => "oversized_frame",
            FrameError::Truncated => "truncated_frame",
            FrameError::Io(_) => "io_error",
            FrameError::NotAdmitted => "not_admitted",
            FrameError::HelloTimeout => "hello_timeout",
            FrameError::BadHello => "bad_hello",
            FrameError::WrongPipeline => "wrong_pipeline",
            FrameError::WrongRole => "wrong_role",
            FrameError::BadReplica => "bad_replica",
            FrameError::BadToken => "bad_token",
            FrameError::WrongStream => "wrong_stream",
            FrameError::BadEndTotals => "bad_end_totals",
            FrameError::FrameTimeout => "frame_timeout",
            FrameError::ConnectionLimit => "connection_limit",
        }
    }

    pub const REASONS: [&'static str; 18] = [
        "short_frame",
        "bad_version",
        "bad_kind",
        "bad_records",
        "oversized_frame",
        "truncated_frame",
        "io_error",
        "not_admitted",
        "hello_timeout",
        "bad_hello",
        "wrong_pipeline",
        "wrong_role",
        "bad_replica",
        "bad_token",
        "wrong_stream",
        "bad_end_totals",
        "frame_timeout",
        "connection_limit",
    ];
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e.to_string())
    }
}

// `#[inline]` on what the stages call per record from the `pipeline` crate: without it, these
// small functions are not inlined across the crate boundary (measured: +4% instructions per
// event in the aggregate kernel before they were marked).
#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The first frame of every connection: who is sending (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub stream_id: u32,
    /// The sender's role, as its index in [`pipeline_plan::Role::CHAIN`].
    pub role: u8,
    pub replica: u32,
    /// SHA-256 of the shared token; all zeros without one.
    pub token: [u8; 32],
    pub pipeline: String,
}

impl Hello {
    fn parse(stream_id: u32, b: &[u8]) -> Result<Hello, FrameError> {
        const FIXED: usize = 1 + 4 + 32 + 1;
        if b.len() < FIXED || b.len() != FIXED + usize::from(b[FIXED - 1]) {
            return Err(FrameError::BadHello);
        }
        let pipeline = std::str::from_utf8(&b[FIXED..]).map_err(|_| FrameError::BadHello)?;
        let mut token = [0u8; 32];
        token.copy_from_slice(&b[5..37]);
        Ok(Hello {
            stream_id,
            role: b[0],
            replica: u32_at(b, 1),
            token,
            pipeline: pipeline.to_string(),
        })
    }

    /// The hello as a frame on the wire. A pipeline name longer than 255 bytes is cut (the
    /// receiver then refuses it as another pipeline's).
    pub fn to_frame(&self) -> Bytes {
        let name = self.pipeline.as_bytes();
        let name = &name[..name.len().min(255)];
        let mut f = OutFrame::new(Kind::Hello, 38 + name.len());
        f.buf.push(self.role);
        f.buf.extend_from_slice(&self.replica.to_le_bytes());
        f.buf.extend_from_slice(&self.token);
        f.buf.push(name.len() as u8);
        f.buf.extend_from_slice(name);
        f.events = Some(0);
        f.finish(self.stream_id, 0)
    }
}

/// A received, validated frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    /// The records area (data frames) or the totals (end frames).
    pub payload: Bytes,
    /// Size of the frame on the wire, prefix included.
    pub wire_bytes: usize,
}

impl Frame {
    /// Validate a frame body (without the length prefix).
    pub fn parse(mut body: Bytes) -> Result<Frame, FrameError> {
        let wire_bytes = body.len() + PREFIX_LEN;
        if body.len() < HEADER_LEN {
            return Err(FrameError::Short(body.len()));
        }
        let h = &body[..HEADER_LEN];
        if h[0] != VERSION {
            return Err(FrameError::Version(h[0]));
        }
        let kind = match h[1] {
            0 => Kind::Data,
            1 => Kind::End,
            2 => Kind::Drain,
            4 => Kind::Ack,
            5 => Kind::Rewind,
            6 => Kind::Hello,
            k => return Err(FrameError::Kind(k)),
        };
        let header = Header {
            kind,
            origin_lag: u16::from_le_bytes([h[2], h[3]]),
            stream_id: u32_at(h, 4),
            batch_seq: u64_at(h, 8),
            record_count: u32_at(h, 16),
            emitted_at_ns: u64_at(h, 20),
            watermark_us: u64_at(h, 28),
            event_count: u32_at(h, 36),
        };
        body.advance(HEADER_LEN);
        match kind {
            Kind::Data => {
                // Walk the record lengths once: they must add up to the payload exactly.
                let mut at = 0usize;
                for _ in 0..header.record_count {
                    let len = body
                        .get(at..at + 4)
                        .map(|b| u32_at(b, 0) as usize)
                        .ok_or(FrameError::Records)?;
                    at = at.checked_add(4 + len).ok_or(FrameError::Records)?;
                }
                if at != body.len() {
                    return Err(FrameError::Records);
                }
            }
            Kind::End => {
                if body.len() != 16 || header.record_count != 0 || header.event_count != 0 {
                    return Err(FrameError::Records);
                }
            }
            Kind::Hello => {
                if header.record_count != 0 || header.event_count != 0 {
                    return Err(FrameError::Records);
                }
                Hello::parse(header.stream_id, &body)?;
            }
            Kind::Drain | Kind::Rewind | Kind::Ack => {
                let want = if kind == Kind::Ack { 16 } else { 0 };
                if body.len() != want || header.record_count != 0 || header.event_count != 0 {
                    return Err(FrameError::Records);
                }
            }
        }
        Ok(Frame {
            header,
            payload: body,
            wire_bytes,
        })
    }

    /// The records of a data frame.
    #[inline]
    pub fn records(&self) -> Records<'_> {
        Records {
            rest: &self.payload,
        }
    }

    /// (records sent, events sent) of an end-of-stream frame.
    /// The hello of a hello frame.
    pub fn hello(&self) -> Option<Hello> {
        (self.header.kind == Kind::Hello)
            .then(|| Hello::parse(self.header.stream_id, &self.payload).ok())
            .flatten()
    }

    pub fn end_totals(&self) -> (u64, u64) {
        if self.header.kind == Kind::End && self.payload.len() == 16 {
            (u64_at(&self.payload, 0), u64_at(&self.payload, 8))
        } else {
            (0, 0)
        }
    }

    /// At least once: the origin lag (see the module docs).
    pub fn origin_lag(&self) -> u16 {
        self.header.origin_lag
    }

    /// (frames of the connection durably handled, event time durable below) of an ack frame.
    pub fn ack(&self) -> Option<(u64, u64)> {
        (self.header.kind == Kind::Ack && self.payload.len() == 16)
            .then(|| (u64_at(&self.payload, 0), u64_at(&self.payload, 8)))
    }
}

/// Iterator over the records of a validated data frame.
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];
    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let len = u32_at(self.rest.get(..4)?, 0) as usize;
        let rec = self.rest.get(4..4 + len)?;
        self.rest = &self.rest[4 + len..];
        Some(rec)
    }
}

/// A frame being built, length prefix and header included, ready to be written as is.
#[derive(Debug)]
pub struct OutFrame {
    buf: Vec<u8>,
    records: u32,
    /// Events carried, when not one per record.
    events: Option<u32>,
    /// At least once: the source batch this frame's events come from (stream id, sequence),
    /// written in place of the connection's own.
    origin: Option<(u32, u64)>,
    /// At least once: told when the downstream has acknowledged the frame (not on the wire).
    pub on_acked: Option<tokio::sync::oneshot::Sender<()>>,
}

impl OutFrame {
    fn new(kind: Kind, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(PREFIX_LEN + HEADER_LEN + capacity);
        buf.extend_from_slice(&[0; PREFIX_LEN]);
        buf.push(VERSION);
        buf.push(kind as u8);
        buf.extend_from_slice(&[0; HEADER_LEN - 2]);
        OutFrame {
            buf,
            records: 0,
            events: None,
            origin: None,
            on_acked: None,
        }
    }

    /// A data frame with room for `capacity` bytes of records.
    pub fn data(capacity: usize) -> Self {
        Self::new(Kind::Data, capacity)
    }

    /// An end-of-stream frame with the sender's totals.
    pub fn end(records_sent: u64, events_sent: u64) -> Self {
        let mut f = Self::new(Kind::End, 16);
        f.buf.extend_from_slice(&records_sent.to_le_bytes());
        f.buf.extend_from_slice(&events_sent.to_le_bytes());
        f.events = Some(0);
        f
    }

    /// An acknowledgement, sent upstream: the first `frames` frames of this connection are
    /// durably handled, and so is every event with an event time below `through_us`.
    pub fn ack(frames: u64, through_us: u64) -> Self {
        let mut f = Self::new(Kind::Ack, 16);
        f.buf.extend_from_slice(&frames.to_le_bytes());
        f.buf.extend_from_slice(&through_us.to_le_bytes());
        f.events = Some(0);
        f
    }

    /// A request, sent upstream, to resend everything not yet acknowledged.
    pub fn rewind() -> Self {
        let mut f = Self::new(Kind::Rewind, 0);
        f.events = Some(0);
        f
    }

    /// Carry the origin (source stream id, batch sequence) instead of the connection's own,
    /// and the origin lag.
    pub fn set_origin(&mut self, stream_id: u32, seq: u64, lag: u16) {
        self.origin = Some((stream_id, seq));
        self.buf[PREFIX_LEN + 2..PREFIX_LEN + 4].copy_from_slice(&lag.to_le_bytes());
    }

    /// The origin, if set.
    pub fn origin(&self) -> Option<(u32, u64)> {
        self.origin
    }

    /// A request, sent upstream, to finish the stream.
    pub fn drain() -> Self {
        let mut f = Self::new(Kind::Drain, 0);
        f.events = Some(0);
        f
    }

    /// Append one record written by `write`. If `write` returns an error, nothing is appended.
    pub fn record<E>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        match write(&mut self.buf) {
            Ok(()) => {
                let len = (self.buf.len() - at - 4) as u32;
                self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
                self.records += 1;
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(at);
                Err(e)
            }
        }
    }

    /// Append one record written by an infallible `write`.
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let _ = self.record::<std::convert::Infallible>(|out| {
            write(out);
            Ok(())
        });
    }

    /// Append one record's bytes.
    #[inline]
    pub fn push(&mut self, record: &[u8]) {
        self.push_with(|out| out.extend_from_slice(record));
    }

    pub fn records(&self) -> u32 {
        self.records
    }

    /// Events carried: the record count unless set with [`OutFrame::set_events`].
    pub fn events(&self) -> u32 {
        self.events.unwrap_or(self.records)
    }

    /// Declare how many events the records hold (window results hold many).
    pub fn set_events(&mut self, events: u32) {
        self.events = Some(events);
    }

    /// Bytes of the frame on the wire.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn set_emitted_at(&mut self, ns: u64) {
        self.buf[PREFIX_LEN + 20..PREFIX_LEN + 28].copy_from_slice(&ns.to_le_bytes());
    }

    pub fn set_watermark(&mut self, us: u64) {
        self.buf[PREFIX_LEN + 28..PREFIX_LEN + 36].copy_from_slice(&us.to_le_bytes());
    }

    /// Stamp the stream id and sequence number (done by the sender, in send order), fill in
    /// the length prefix and counts, and hand out the bytes.
    pub fn finish(mut self, stream_id: u32, seq: u64) -> Bytes {
        let (stream_id, seq) = self.origin.unwrap_or((stream_id, seq));
        let body = (self.buf.len() - PREFIX_LEN) as u32;
        self.buf[..PREFIX_LEN].copy_from_slice(&body.to_be_bytes());
        self.buf[PREFIX_LEN + 4..PREFIX_LEN + 8].copy_from_slice(&stream_id.to_le_bytes());
        self.buf[SEQ_AT..SEQ_AT + 8].copy_from_slice(&seq.to_le_bytes());
        self.buf[PREFIX_LEN + 16..PREFIX_LEN + 20].copy_from_slice(&self.records.to_le_bytes());
        let events = self.events();
        self.buf[PREFIX_LEN + 36..PREFIX_LEN + 40].copy_from_slice(&events.to_le_bytes());
        Bytes::from(self.buf)
    }
}

/// A finished frame with another connection's stream id and sequence (a resend).
pub fn restamp(frame: &Bytes, stream_id: u32, seq: u64) -> Bytes {
    let mut buf = BytesMut::from(&frame[..]);
    if buf.len() >= PREFIX_LEN + HEADER_LEN {
        buf[PREFIX_LEN + 4..PREFIX_LEN + 8].copy_from_slice(&stream_id.to_le_bytes());
        buf[SEQ_AT..SEQ_AT + 8].copy_from_slice(&seq.to_le_bytes());
    }
    buf.freeze()
}

impl OutFrame {
    /// The frame as a receiver would see it (for in-process pipelines: benches, kernels).
    pub fn into_frame(self, stream_id: u32, seq: u64) -> Frame {
        let bytes = self.finish(stream_id, seq);
        Frame::parse(bytes.slice(PREFIX_LEN..)).expect("a frame we built is valid")
    }
}

/// A tokio-util decoder of frames, with a size limit. Unlike tokio-util's
/// `LengthDelimitedCodec`, it never reserves room for a frame whose length prefix it has read:
/// a frame costs memory only as its bytes arrive (a peer that announces 8 MiB and sends 100
/// bytes holds 100 bytes, plus the read buffer).
pub struct FrameCodec {
    max: usize,
    /// The body length of the frame whose prefix has been consumed.
    want: Option<usize>,
}

impl FrameCodec {
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameCodec {
            max: max_frame_bytes,
            want: None,
        }
    }

    /// Raise or lower the size limit (a connection once admitted takes full-sized frames).
    pub fn set_max(&mut self, max_frame_bytes: usize) {
        self.max = max_frame_bytes;
    }

    /// Whether part of a frame has been read (a prefix consumed, its body not yet complete).
    pub fn mid_frame(&self) -> bool {
        self.want.is_some()
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let want = match self.want {
            Some(n) => n,
            None => {
                if src.len() < PREFIX_LEN {
                    return Ok(None);
                }
                let n = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
                if n > self.max {
                    return Err(FrameError::Oversized);
                }
                src.advance(PREFIX_LEN);
                self.want = Some(n);
                n
            }
        };
        if src.len() < want {
            return Ok(None);
        }
        self.want = None;
        Frame::parse(src.split_to(want).freeze()).map(Some)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() && self.want.is_none() => Ok(None),
            None => Err(FrameError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bytes {
        let mut f = OutFrame::data(64);
        f.push(b"hello");
        f.push(b"");
        f.record::<()>(|out| {
            out.extend_from_slice(b"world!");
            Ok(())
        })
        .unwrap();
        assert_eq!(
            f.record(|out| {
                out.extend_from_slice(b"discarded");
                Err("nope")
            }),
            Err("nope")
        );
        f.set_emitted_at(123);
        f.set_watermark(456);
        f.finish(7, 9)
    }

    fn decode_all(wire: &[u8], max: usize) -> (Vec<Frame>, Option<FrameError>) {
        let mut codec = FrameCodec::new(max);
        let mut buf = BytesMut::from(wire);
        let mut frames = Vec::new();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
        match codec.decode_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => {}
            Err(e) => return (frames, Some(e)),
        }
        (frames, None)
    }

    #[test]
    fn acks_rewinds_and_origins_round_trip() {
        let (frames, err) = decode_all(&OutFrame::ack(12, 34_000).finish(0, 0), 1 << 20);
        assert_eq!(err, None);
        assert_eq!(frames[0].header.kind, Kind::Ack);
        assert_eq!(frames[0].ack(), Some((12, 34_000)));
        let (frames, _) = decode_all(&OutFrame::rewind().finish(0, 0), 1 << 20);
        assert_eq!(
            (frames[0].header.kind, frames[0].ack()),
            (Kind::Rewind, None)
        );
        // An ack with a short payload is refused.
        let mut bad = OutFrame::ack(1, 2).finish(0, 0).to_vec();
        bad.truncate(bad.len() - 1);
        let body = (bad.len() - PREFIX_LEN) as u32;
        bad[..PREFIX_LEN].copy_from_slice(&body.to_be_bytes());
        assert_eq!(decode_all(&bad, 1 << 20).1, Some(FrameError::Records));
        // A data frame with an origin carries it instead of the connection's stream and
        // sequence, and its lag; a resend restamps a frame without an origin.
        let mut f = OutFrame::data(8);
        f.push(b"x");
        f.set_origin(77, 1234, 5);
        let (frames, _) = decode_all(&f.finish(1, 2), 1 << 20);
        let h = frames[0].header;
        assert_eq!((h.stream_id, h.batch_seq, h.origin_lag), (77, 1234, 5));
        let mut plain = OutFrame::data(8);
        plain.push(b"y");
        let again = restamp(&plain.finish(1, 2), 3, 4);
        let (frames, _) = decode_all(&again, 1 << 20);
        assert_eq!(
            (frames[0].header.stream_id, frames[0].header.batch_seq),
            (3, 4)
        );
        assert_eq!(frames[0].records().collect::<Vec<_>>(), vec![&b"y"[..]]);
    }

    #[test]
    fn round_trip() {
        let wire = sample();
        let (frames, err) = decode_all(&wire, 1 << 20);
        assert_eq!(err, None);
        let f = &frames[0];
        assert_eq!(
            f.header,
            Header {
                kind: Kind::Data,
                origin_lag: 0,
                stream_id: 7,
                batch_seq: 9,
                record_count: 3,
                emitted_at_ns: 123,
                watermark_us: 456,
                event_count: 3,
            }
        );
        assert_eq!(
            f.records().collect::<Vec<_>>(),
            vec![&b"hello"[..], b"", b"world!"]
        );
        assert_eq!(f.wire_bytes, wire.len());
        let end = OutFrame::end(1000, 10).finish(7, 11);
        let (frames, _) = decode_all(&end, 1 << 20);
        assert_eq!(frames[0].header.kind, Kind::End);
        assert_eq!(frames[0].end_totals(), (1000, 10));
    }

    #[test]
    fn every_truncation_is_detected_at_eof() {
        let wire = sample();
        for cut in 1..wire.len() {
            let (frames, err) = decode_all(&wire[..cut], 1 << 20);
            assert!(frames.is_empty(), "cut {cut}");
            assert_eq!(err, Some(FrameError::Truncated), "cut {cut}");
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_buffering() {
        let wire = sample();
        let (_, err) = decode_all(&wire, 16);
        assert_eq!(err, Some(FrameError::Oversized));
        // A 4 GiB length prefix followed by a few bytes.
        let (_, err) = decode_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3], 8 << 20);
        assert_eq!(err, Some(FrameError::Oversized));
    }

    #[test]
    fn corrupt_headers_and_record_areas_are_rejected() {
        let wire = sample().to_vec();
        let mut bad = wire.clone();
        bad[PREFIX_LEN] = 9;
        assert_eq!(decode_all(&bad, 1 << 20).1, Some(FrameError::Version(9)));
        let mut bad = wire.clone();
        bad[PREFIX_LEN + 1] = 7;
        assert_eq!(decode_all(&bad, 1 << 20).1, Some(FrameError::Kind(7)));
        let mut bad = wire.clone();
        bad[PREFIX_LEN + 16] = 4; // claims 4 records, has 3
        assert_eq!(decode_all(&bad, 1 << 20).1, Some(FrameError::Records));
        let mut bad = wire.clone();
        bad[PREFIX_LEN + HEADER_LEN] = 200; // first record length overruns
        assert_eq!(decode_all(&bad, 1 << 20).1, Some(FrameError::Records));
        let (_, err) = decode_all(&[0, 0, 0, 3, 1, 0, 0], 1 << 20);
        assert_eq!(err, Some(FrameError::Short(3)));
    }

    #[test]
    fn garbage_never_panics_and_never_yields_a_bogus_frame() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(1);
        let mut accepted = 0;
        for _ in 0..2000 {
            let len = rng.random_range(0..512);
            let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if rng.random_bool(0.5) && junk.len() > 8 {
                // Plausible length prefix, random body.
                let body = (junk.len() - 4) as u32;
                junk[..4].copy_from_slice(&body.to_be_bytes());
            }
            let (frames, _) = decode_all(&junk, 1 << 16);
            for f in frames {
                // Anything accepted must be internally consistent.
                assert_eq!(f.records().count() as u32, f.header.record_count);
                accepted += 1;
            }
        }
        assert!(accepted < 50, "random bytes accepted as frames: {accepted}");
    }

    #[test]
    fn hellos_round_trip_and_malformed_ones_are_refused() {
        let hello = Hello {
            stream_id: 42,
            role: 1,
            replica: 3,
            token: [7; 32],
            pipeline: "demo".into(),
        };
        let (frames, err) = decode_all(&hello.to_frame(), HELLO_MAX);
        assert_eq!(err, None);
        assert_eq!(frames[0].header.kind, Kind::Hello);
        assert_eq!(frames[0].hello(), Some(hello.clone()));
        // A name longer than the wire allows is cut, not wrapped around.
        let long = Hello {
            pipeline: "x".repeat(300),
            ..hello.clone()
        };
        let (frames, _) = decode_all(&long.to_frame(), HELLO_MAX);
        assert_eq!(frames[0].hello().unwrap().pipeline.len(), 255);
        // Every cut of the payload, and a name length that overruns it, are refused.
        let wire = hello.to_frame();
        for cut in 1..(wire.len() - PREFIX_LEN - HEADER_LEN) {
            let body = wire.slice(PREFIX_LEN..wire.len() - cut);
            assert_eq!(Frame::parse(body), Err(FrameError::BadHello), "cut {cut}");
        }
        let mut bad = wire.to_vec();
        bad[PREFIX_LEN + HEADER_LEN + 37] = 200;
        assert_eq!(
            Frame::parse(Bytes::from(bad).slice(PREFIX_LEN..)),
            Err(FrameError::BadHello)
        );
    }

    #[test]
    fn an_announced_frame_costs_memory_only_as_its_bytes_arrive() {
        let mut codec = FrameCodec::new(8 << 20);
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&((8u32 << 20) - 1).to_be_bytes());
        buf.extend_from_slice(&[1; 40]);
        assert_eq!(codec.decode(&mut buf), Ok(None));
        assert!(codec.mid_frame());
        assert!(
            buf.capacity() < 4096,
            "reserved {} bytes for a frame that has not arrived",
            buf.capacity()
        );
        assert_eq!(codec.decode_eof(&mut buf), Err(FrameError::Truncated));
    }
}
