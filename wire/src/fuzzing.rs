//! What the fuzz targets (`fuzz/`, cargo fuzz) check, one function per target, and the seeds
//! their corpora start from.
//!
//! Each function takes arbitrary bytes and must never panic, hang or allocate without bound;
//! beyond that it asserts a property the pipeline relies on (a panic is how a fuzzer reports
//! a broken property). The same functions replay the committed corpora in a plain
//! `cargo test` (`tests/fuzz_corpus.rs`), so every input a fuzzer ever kept stays checked on
//! the stable toolchain, without libFuzzer.
//!
//! | target | what it feeds | property beyond "no panic" |
//! |---|---|---|
//! | `frames` | a byte stream, to [`FrameCodec`] in chunks | the frames do not depend on how the stream was cut into reads; a data frame's records fill its payload exactly |
//! | `hello` | connection openings, to [`Expect::check`] and [`Roster::seat`] | only the plan's pipeline, role, replicas and token are admitted; a replica at most once at a time |
//! | `json` | one record, to both parse modes | `owned` and `borrowed` agree exactly; what parse accepts, the aggregate's decoder accepts |
//! | `compact_event` | one record, to [`EventRef::decode`] | a decoded event re-encodes to the same bytes |
//! | `window_result` | one record, to [`WindowResult::decode`] | a decoded result passes [`WindowResult::check`] and re-encodes to the same bytes |
//! | `segment` | a segment file's bytes, to [`seglog::scan_bytes`] | records + torn tail account for every byte; the valid prefix reads back without error |

use crate::admission::{Expect, Roster, token_digest};
use crate::codec::{FrameCodec, HEADER_LEN, HELLO_MAX, Hello, Kind, OutFrame, PREFIX_LEN};
use crate::event::{EventRef, Latency, WindowResult};
use crate::seglog;
use bytes::{Buf, BytesMut};
use pipeline_plan::{ParseMode, Role};
use std::sync::Arc;
use tokio_util::codec::Decoder;

/// The fuzz targets, by name (the file names under `fuzz/fuzz_targets/` and `fuzz/corpus/`).
pub const TARGETS: [&str; 6] = [
    "frames",
    "hello",
    "json",
    "compact_event",
    "window_result",
    "segment",
];

/// Run one target by name on one input (the corpus replay). `false`: no such target.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "frames" => frames(data),
        "hello" => hello(data),
        "json" => json(data),
        "compact_event" => compact_event(data),
        "window_result" => window_result(data),
        "segment" => segment(data),
        _ => return false,
    }
    true
}

/// Largest frame the `frames` target accepts (small, so the fuzzer reaches the body checks).
const FUZZ_MAX_FRAME: usize = 1 << 16;

/// Decode a whole stream with reads cut at `cuts` (sizes, cycled); the frames (as their
/// debug text, to compare errors too) and the first error.
fn decode_stream(data: &[u8], cuts: &[u8]) -> Vec<String> {
    let mut codec = FrameCodec::new(FUZZ_MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut cut = cuts.iter().cycle();
    while at < data.len() {
        let n = usize::from(*cut.next().unwrap_or(&255)).max(1);
        let end = (at + n).min(data.len());
        buf.extend_from_slice(&data[at..end]);
        at = end;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    check_frame(&frame);
                    out.push(format!("{frame:?}"));
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(format!("error: {e}"));
                    return out;
                }
            }
        }
    }
    match codec.decode_eof(&mut buf) {
        Ok(Some(frame)) => out.push(format!("{frame:?}")),
        Ok(None) => {}
        Err(e) => out.push(format!("error: {e}")),
    }
    out
}

fn check_frame(frame: &crate::codec::Frame) {
    assert_eq!(
        frame.wire_bytes,
        PREFIX_LEN + HEADER_LEN + frame.payload.len()
    );
    if frame.header.kind == Kind::Data {
        let recs: Vec<&[u8]> = frame.records().collect();
        assert_eq!(recs.len(), frame.header.record_count as usize);
        let filled: usize = recs.iter().map(|r| 4 + r.len()).sum();
        assert_eq!(filled, frame.payload.len(), "records fill the payload");
    }
    if frame.header.kind == Kind::Hello {
        assert!(frame.hello().is_some(), "a hello frame carries a hello");
    }
}

/// `frames`: the first byte picks how reads are cut; the rest is the stream.
pub fn frames(data: &[u8]) {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let whole = decode_stream(stream, &[255]);
    let cuts = [first, first.rotate_left(3), 1, first / 2];
    let cut = decode_stream(stream, &cuts);
    // One big read decodes like many small ones (255-byte reads stand for "everything").
    let all_at_once = {
        let mut codec = FrameCodec::new(FUZZ_MAX_FRAME);
        let mut buf = BytesMut::from(stream);
        let mut out = Vec::new();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => out.push(format!("{f:?}")),
                Ok(None) => {
                    match codec.decode_eof(&mut buf) {
                        Ok(Some(f)) => out.push(format!("{f:?}")),
                        Ok(None) => {}
                        Err(e) => out.push(format!("error: {e}")),
                    }
                    break;
                }
                Err(e) => {
                    out.push(format!("error: {e}"));
                    break;
                }
            }
        }
        out
    };
    assert_eq!(whole, cut, "frames depend on how the stream was read");
    assert_eq!(
        whole, all_at_once,
        "frames depend on how the stream was read"
    );
}

/// The plan the `hello` target admits against: pipeline `demo`, fed by 2 parse replicas,
/// token `fuzz-token`.
fn hello_plan() -> Expect {
    Expect {
        pipeline: "demo".into(),
        upstream: Some(Role::Parse),
        upstreams: 2,
        one_per_replica: true,
        token: Some(token_digest("fuzz-token")),
    }
}

/// `hello`: each frame of the stream opens a connection (decoded with the unadmitted limit);
/// a byte of 0xFF after a frame closes the oldest open connection.
pub fn hello(data: &[u8]) {
    let expect = hello_plan();
    let roster = Arc::new(Roster::default());
    let mut seats: Vec<(u32, crate::admission::Seat)> = Vec::new();
    let mut codec = FrameCodec::new(HELLO_MAX);
    let mut buf = BytesMut::from(data);
    loop {
        while buf.first() == Some(&0xFF) {
            buf.advance(1);
            if !seats.is_empty() {
                seats.remove(0);
            }
        }
        let frame = match codec.decode(&mut buf) {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => return,
        };
        let Some(h) = frame.hello() else {
            assert_ne!(frame.header.kind, Kind::Hello);
            continue;
        };
        if expect.check(&h).is_err() {
            continue;
        }
        assert_eq!(Some(h.token), expect.token, "admitted without the token");
        assert_eq!(h.pipeline, expect.pipeline, "admitted another pipeline");
        assert_eq!(h.role, 1, "admitted a role that does not feed this stage");
        assert!(
            h.replica < expect.upstreams,
            "admitted a replica the plan lacks"
        );
        // The hello survives a round trip through its own encoding.
        let again = crate::codec::Frame::parse(h.to_frame().slice(PREFIX_LEN..))
            .ok()
            .and_then(|f| f.hello());
        assert_eq!(again.as_ref(), Some(&h), "hello round trip");
        if let Ok(seat) = roster.seat(&expect, &h) {
            assert!(
                seats.iter().all(|(r, _)| *r != h.replica),
                "replica {} seated twice",
                h.replica
            );
            seats.push((h.replica, seat));
        } else {
            assert!(seats.iter().any(|(r, _)| *r == h.replica));
        }
    }
}

/// `json`: both parse modes on one record.
pub fn json(data: &[u8]) {
    let mut owned = Vec::new();
    let mut borrowed = Vec::new();
    let a = crate::json::parse_into(ParseMode::Owned, data, &mut owned);
    let b = crate::json::parse_into(ParseMode::Borrowed, data, &mut borrowed);
    assert_eq!(a, b, "owned and borrowed parse disagree");
    assert_eq!(owned, borrowed, "owned and borrowed encode differently");
    match a {
        Ok(ts) => {
            let ev = EventRef::decode(&owned);
            assert!(
                ev.is_ok(),
                "parse accepted what the aggregate refuses: {ev:?}"
            );
            assert_eq!(ev.map(|e| e.ts_us).ok(), Some(ts));
        }
        Err(_) => assert!(owned.is_empty(), "a refused record left bytes behind"),
    }
}

/// `compact_event`: one record as the aggregate receives it. What the aggregate accepts is
/// exactly what parse could have produced: the event written back as JSON parses to the same
/// bytes (the converse of the `json` target's property).
pub fn compact_event(data: &[u8]) {
    if let Ok(ev) = EventRef::decode(data) {
        let mut again = Vec::new();
        ev.encode(&mut again);
        assert_eq!(again, data, "a decoded event re-encodes differently");
        let (service, route) =
            crate::event::split_key(ev.key).expect("a decoded event has a valid key");
        let json = serde_json::json!({
            "ts": ev.ts_us,
            "service": service,
            "route": route,
            "method": ev.method.as_str(),
            "status": ev.status,
            "latency_us": ev.latency_us,
            "bytes": ev.bytes,
        });
        let mut parsed = Vec::new();
        let r = crate::json::parse_into(ParseMode::Owned, json.to_string().as_bytes(), &mut parsed);
        assert_eq!(
            r,
            Ok(ev.ts_us),
            "the aggregate accepted what parse refuses: {json}"
        );
        assert_eq!(parsed, data, "parse encodes the same event differently");
    }
}

/// `window_result`: one record as the sink receives it.
pub fn window_result(data: &[u8]) {
    if let Ok(w) = WindowResult::decode(data) {
        assert!(w.check().is_ok());
        let mut again = Vec::new();
        w.encode(&mut again);
        assert_eq!(again, data, "a decoded window re-encodes differently");
    }
}

/// `segment`: the first byte says whether it is the log's last segment; the rest is the file.
pub fn segment(data: &[u8]) {
    let Some((&flag, file)) = data.split_first() else {
        return;
    };
    let last = flag & 1 == 1;
    let mut payload_bytes = 0u64;
    let mut records = Vec::new();
    let Ok(scan) = seglog::scan_bytes(file, last, |r| {
        payload_bytes += r.len() as u64;
        records.push(r.to_vec());
    }) else {
        return;
    };
    assert_eq!(scan.records, records.len() as u64);
    assert_eq!(
        scan.valid_bytes + scan.torn_bytes,
        file.len() as u64,
        "every byte is a record, the magic or the torn tail"
    );
    assert!(
        last || scan.torn_bytes == 0,
        "a torn tail outside the last segment"
    );
    if file.len() >= seglog::MAGIC.len() {
        assert_eq!(
            scan.valid_bytes,
            (seglog::MAGIC.len() as u64) + 8 * scan.records + payload_bytes
        );
        // The valid prefix is a whole segment: it reads back the same, even as a middle one.
        let prefix = &file[..scan.valid_bytes as usize];
        let mut again = Vec::new();
        let rescan = seglog::scan_bytes(prefix, false, |r| again.push(r.to_vec()));
        assert_eq!(rescan.map(|s| s.records).ok(), Some(scan.records));
        assert_eq!(again, records);
        assert_eq!(
            seglog::segment_bytes(records.iter().map(|r| &r[..])),
            prefix
        );
    }
}

/// Seeds for each target: real inputs of the kind it receives (a valid one of each shape, so
/// the fuzzer starts past the first checks), as (target, name, bytes).
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    // Real JSON records from the workload generator, malformed ones included.
    let knobs = pipeline_plan::SourceKnobs {
        malformed_rate: 0.2,
        ..Default::default()
    };
    let mut generator = crate::generate::Generator::new(&knobs);
    let mut records = Vec::new();
    for _ in 0..24 {
        let mut rec = Vec::new();
        generator.next_into(&mut rec);
        records.push(rec);
    }
    records.push(br#"{"ts":1,"service":"a\"b","route":"/x\u00e9","method":"GET","status":200,"latency_us":5,"bytes":9}"#.to_vec());
    records.push(br#"{"ts":18446744073709551615,"service":"s","route":"/","method":"PATCH","status":599,"latency_us":3600000000,"bytes":1099511627776,"region":"eu","user_agent":"x","trace_id":"t"}"#.to_vec());
    for (i, r) in records.iter().enumerate() {
        out.push(("json", format!("generated-{i:02}"), r.clone()));
    }
    // Their compact encodings.
    let mut events = Vec::new();
    for r in &records {
        let mut ev = Vec::new();
        if crate::json::parse_into(ParseMode::Borrowed, r, &mut ev).is_ok() {
            events.push(ev);
        }
    }
    for (i, e) in events.iter().enumerate().take(8) {
        out.push(("compact_event", format!("event-{i:02}"), e.clone()));
    }
    // Window results.
    let mut windows = Vec::new();
    for (i, (start, count)) in [(0u64, 1u64), (60_000_000, 1000), (3_600_000_000, 7)]
        .into_iter()
        .enumerate()
    {
        let w = WindowResult {
            window_start_us: start,
            window_end_us: start + if i == 2 { 3_600_000_000 } else { 1_000_000 },
            service: crate::generate::service_name(i),
            route: crate::generate::route_name(&crate::generate::service_name(i), i),
            count,
            errors: count / 3,
            bytes: count * 512,
            latency_us: Latency {
                min: 10,
                p50: 200,
                p90: 900,
                p99: 5000,
                max: 90_000,
            },
            last_emit_ns: 1_700_000_000_000_000_000,
        };
        let mut rec = Vec::new();
        w.encode(&mut rec);
        windows.push(rec);
    }
    for (i, w) in windows.iter().enumerate() {
        out.push(("window_result", format!("window-{i:02}"), w.clone()));
    }
    // Frames: a stream of a hello, data (events, then windows), an ack, a drain, an end.
    let mut stream = Vec::new();
    let parse_hello = Hello {
        stream_id: 7,
        role: 1,
        replica: 0,
        token: token_digest("fuzz-token"),
        pipeline: "demo".into(),
    };
    stream.extend_from_slice(&parse_hello.to_frame());
    for (seq, recs) in [&events, &windows].into_iter().enumerate() {
        let mut f = OutFrame::data(4096);
        for r in recs {
            f.push(r);
        }
        f.set_emitted_at(1_700_000_000_000_000_000);
        f.set_watermark(1_000_000);
        stream.extend_from_slice(&f.finish(7, seq as u64));
    }
    stream.extend_from_slice(&OutFrame::ack(2, 1_000_000).finish(7, 0));
    stream.extend_from_slice(&OutFrame::drain().finish(7, 0));
    stream.extend_from_slice(&OutFrame::end(2, events.len() as u64).finish(7, 3));
    let mut frames_seed = vec![17u8];
    frames_seed.extend_from_slice(&stream);
    out.push(("frames", "session".into(), frames_seed));
    // Connection openings: the right hello, the other replica, the same replica again after a
    // close, a wrong token, another pipeline.
    let mut opens = Vec::new();
    for h in [
        parse_hello.clone(),
        Hello {
            replica: 1,
            ..parse_hello.clone()
        },
        Hello {
            replica: 1,
            ..parse_hello.clone()
        },
    ] {
        opens.extend_from_slice(&h.to_frame());
    }
    opens.push(0xFF);
    opens.extend_from_slice(&parse_hello.to_frame());
    opens.extend_from_slice(
        &Hello {
            token: token_digest("guess"),
            ..parse_hello.clone()
        }
        .to_frame(),
    );
    opens.extend_from_slice(
        &Hello {
            pipeline: "other".into(),
            ..parse_hello
        }
        .to_frame(),
    );
    out.push(("hello", "openings".into(), opens));
    // Segments: a whole last segment, and one with a torn tail.
    let seg = seglog::segment_bytes(windows.iter().map(|w| &w[..]));
    let mut whole = vec![1u8];
    whole.extend_from_slice(&seg);
    out.push(("segment", "whole".into(), whole));
    let mut torn = vec![1u8];
    torn.extend_from_slice(&seg[..seg.len() - 5]);
    out.push(("segment", "torn-tail".into(), torn));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_holds_its_property() {
        let seeds = seeds();
        for target in TARGETS {
            assert!(
                seeds.iter().any(|(t, _, _)| *t == target),
                "{target} has no seed"
            );
        }
        for (target, _, data) in &seeds {
            assert!(run(target, data));
        }
        assert!(!run("nope", b""));
    }

    /// The checks can fail: a frame that breaks one (built by hand, as the real decoder
    /// cannot produce it) panics.
    #[test]
    fn a_broken_property_panics() {
        let r = std::panic::catch_unwind(|| {
            let mut f = OutFrame::data(16);
            f.push(b"abc");
            let frame = f.into_frame(1, 0);
            let mut bad = frame.clone();
            bad.wire_bytes += 1;
            check_frame(&bad);
        });
        assert!(r.is_err(), "a frame with a wrong size passes");
    }

    #[test]
    fn the_seeds_reach_past_the_first_checks() {
        let seeds = seeds();
        let ok = |t: &str| {
            seeds
                .iter()
                .filter(|(s, _, _)| *s == t)
                .map(|(_, _, d)| d.clone())
                .collect::<Vec<_>>()
        };
        assert!(
            ok("compact_event")
                .iter()
                .all(|d| EventRef::decode(d).is_ok())
        );
        assert!(
            ok("window_result")
                .iter()
                .all(|d| WindowResult::decode(d).is_ok())
        );
        let admitted = hello_plan();
        let opens = &ok("hello")[0];
        let mut codec = FrameCodec::new(HELLO_MAX);
        let mut buf = BytesMut::from(&opens[..]);
        let frame = codec
            .decode(&mut buf)
            .ok()
            .flatten()
            .and_then(|f| f.hello());
        assert_eq!(frame.map(|h| admitted.check(&h)), Some(Ok(())));
    }
}
