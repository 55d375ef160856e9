//! JSON -> typed event -> compact record, in two modes that must agree exactly:
//! `owned` copies every string into a `String`; `borrowed` uses `#[serde(borrow)]` `Cow<str>`
//! fields that point into the input buffer (zero allocations unless a string has escapes).
//!
//! Both modes share validation and encoding; they differ only in deserialization. A record that
//! fails is never a panic: it is classified into one [`DropReason`].

use crate::event::{DropReason, MAX_NAME_BYTES, Method, encode_event};
use pipeline_plan::ParseMode;
use serde::Deserialize;
use serde_json::error::Category;
use std::borrow::Cow;

/// A request log with owned strings.
#[derive(Debug, Deserialize)]
pub struct OwnedEvent {
    pub ts: u64,
    #[serde(default)]
    pub trace_id: String,
    pub service: String,
    pub route: String,
    pub method: String,
    pub status: u16,
    pub latency_us: u64,
    pub bytes: u64,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub user_agent: String,
}

/// The same request log, borrowing its strings from the input.
#[derive(Debug, Deserialize)]
pub struct BorrowedEvent<'a> {
    pub ts: u64,
    #[serde(borrow, default)]
    pub trace_id: Cow<'a, str>,
    #[serde(borrow)]
    pub service: Cow<'a, str>,
    #[serde(borrow)]
    pub route: Cow<'a, str>,
    #[serde(borrow)]
    pub method: Cow<'a, str>,
    pub status: u16,
    pub latency_us: u64,
    pub bytes: u64,
    #[serde(borrow, default)]
    pub region: Cow<'a, str>,
    #[serde(borrow, default)]
    pub user_agent: Cow<'a, str>,
}

/// Longest accepted latency: one hour.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Largest accepted response size: 1 TiB.
pub const MAX_BYTES: u64 = 1 << 40;

/// Map a serde_json error to a drop reason.
pub fn classify(err: &serde_json::Error) -> DropReason {
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => DropReason::BadJson,
        Category::Data => {
            let msg = err.to_string();
            if msg.starts_with("missing field") {
                DropReason::MissingField
            } else if msg.starts_with("invalid value") || msg.starts_with("invalid length") {
                DropReason::OutOfRange
            } else if msg.starts_with("duplicate field") {
                DropReason::BadJson
            } else {
                DropReason::WrongType
            }
        }
    }
}

/// Check an event's fields and append its compact encoding (every parser's last step).
#[allow(clippy::too_many_arguments)]
pub fn validate_and_encode(
    service: &str,
    route: &str,
    method: &str,
    status: u16,
    latency_us: u64,
    bytes: u64,
    ts: u64,
    out: &mut Vec<u8>,
) -> Result<u64, DropReason> {
    let ok = (100..=599).contains(&status)
        && latency_us <= MAX_LATENCY_US
        && bytes <= MAX_BYTES
        && !service.is_empty()
        && service.len() <= MAX_NAME_BYTES
        && !route.is_empty()
        && route.len() <= MAX_NAME_BYTES;
    let method = Method::parse(method)
        .filter(|_| ok)
        .ok_or(DropReason::OutOfRange)?;
    encode_event(
        out,
        service,
        route,
        method,
        status,
        latency_us as u32,
        bytes,
        ts,
    );
    Ok(ts)
}

/// Parse one record and append its compact encoding to `out`. Returns the event time.
/// On error nothing is appended.
pub fn parse_into(mode: ParseMode, record: &[u8], out: &mut Vec<u8>) -> Result<u64, DropReason> {
    // Checking UTF-8 up front gives bad bytes their own reason and lets serde_json skip its
    // own per-string validation (`from_str`).
    let text = std::str::from_utf8(record).map_err(|_| DropReason::BadUtf8)?;
    match mode {
        ParseMode::Owned => {
            let e: OwnedEvent = serde_json::from_str(text).map_err(|e| classify(&e))?;
            validate_and_encode(
                &e.service,
                &e.route,
                &e.method,
                e.status,
                e.latency_us,
                e.bytes,
                e.ts,
                out,
            )
        }
        ParseMode::Borrowed => {
            let e: BorrowedEvent<'_> = serde_json::from_str(text).map_err(|e| classify(&e))?;
            validate_and_encode(
                &e.service,
                &e.route,
                &e.method,
                e.status,
                e.latency_us,
                e.bytes,
                e.ts,
                out,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventRef;

    type Parsed = Result<(u64, Vec<u8>), DropReason>;
    use crate::generate::{Generated, Generator};
    use pipeline_plan::SourceKnobs;

    fn both(record: &[u8]) -> (Parsed, Parsed) {
        let run = |mode| {
            let mut out = Vec::new();
            parse_into(mode, record, &mut out).map(|ts| (ts, out))
        };
        (run(ParseMode::Owned), run(ParseMode::Borrowed))
    }

    #[test]
    fn owned_and_borrowed_agree_on_generated_streams() {
        let mut g = Generator::new(&SourceKnobs {
            malformed_rate: 0.2,
            seed: 11,
            ..SourceKnobs::default()
        });
        let mut seen_valid = 0;
        for _ in 0..5000 {
            let mut rec = Vec::new();
            let kind = g.next_into(&mut rec);
            let (owned, borrowed) = both(&rec);
            assert_eq!(owned, borrowed, "record {}", String::from_utf8_lossy(&rec));
            match kind {
                Generated::Valid => {
                    let (_, bytes) = owned.expect("valid record parses");
                    let ev = EventRef::decode(&bytes).unwrap();
                    assert!(ev.latency_us > 0);
                    seen_valid += 1;
                }
                Generated::Malformed(reason) => assert_eq!(owned, Err(reason)),
            }
        }
        assert!(seen_valid > 3500);
    }

    #[test]
    fn malformed_inputs_get_the_same_reason_in_both_modes() {
        let good = br#"{"ts":1,"service":"a","route":"/r","method":"GET","status":200,"latency_us":5,"bytes":10}"#;
        assert!(both(good).0.is_ok());
        let cases: &[(&[u8], DropReason)] = &[
            (b"", DropReason::BadJson),
            (b"{", DropReason::BadJson),
            (b"not json", DropReason::BadJson),
            (b"[1,2]", DropReason::WrongType),
            (b"\xff\xfe", DropReason::BadUtf8),
            (br#"{"ts":1,"service":"a\u12"}"#, DropReason::BadJson),
            (br#"{"ts":1,"service":"a","route":"/r","method":"GET","latency_us":5,"bytes":10}"#, DropReason::MissingField),
            (br#"{"ts":"1","service":"a","route":"/r","method":"GET","status":200,"latency_us":5,"bytes":10}"#, DropReason::WrongType),
            (br#"{"ts":1,"service":"a","route":"/r","method":"GET","status":70000,"latency_us":5,"bytes":10}"#, DropReason::OutOfRange),
            (br#"{"ts":1,"service":"a","route":"/r","method":"GET","status":200,"latency_us":-5,"bytes":10}"#, DropReason::OutOfRange),
            (br#"{"ts":1,"service":"a","route":"/r","method":"GET","status":99,"latency_us":5,"bytes":10}"#, DropReason::OutOfRange),
            (br#"{"ts":1,"service":"a","route":"/r","method":"BREW","status":200,"latency_us":5,"bytes":10}"#, DropReason::OutOfRange),
            (br#"{"ts":1,"service":"","route":"/r","method":"GET","status":200,"latency_us":5,"bytes":10}"#, DropReason::OutOfRange),
            (br#"{"ts":1,"service":"a","route":"/r","method":"GET","status":200,"latency_us":99999999999,"bytes":10}"#, DropReason::OutOfRange),
            (br#"{"ts":1,"ts":2,"service":"a","route":"/r","method":"GET","status":200,"latency_us":5,"bytes":10}"#, DropReason::BadJson),
        ];
        for (input, want) in cases {
            let (owned, borrowed) = both(input);
            assert_eq!(
                owned,
                Err(*want),
                "owned: {}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(
                borrowed,
                Err(*want),
                "borrowed: {}",
                String::from_utf8_lossy(input)
            );
        }
        let long = format!(
            r#"{{"ts":1,"service":"{}","route":"/r","method":"GET","status":200,"latency_us":5,"bytes":10}}"#,
            "s".repeat(300)
        );
        assert_eq!(both(long.as_bytes()).0, Err(DropReason::OutOfRange));
    }

    #[test]
    fn escaped_strings_parse_identically() {
        let rec = br#"{"ts":9,"service":"caf\u00e9","route":"/a\/b","method":"GET","status":200,"latency_us":5,"bytes":10,"extra":[1,{"x":null}]}"#;
        let (owned, borrowed) = both(rec);
        assert_eq!(owned, borrowed);
        let (ts, bytes) = owned.unwrap();
        assert_eq!(ts, 9);
        let ev = EventRef::decode(&bytes).unwrap();
        assert_eq!(crate::event::split_key(ev.key), Ok(("café", "/a/b")));
    }

    #[test]
    fn random_garbage_never_panics() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(99);
        let good = br#"{"ts":1,"service":"a","route":"/r","method":"GET","status":200,"latency_us":5,"bytes":10}"#;
        for _ in 0..20_000 {
            let mut rec = good.to_vec();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..rec.len());
                rec[at] = rng.random();
            }
            let (owned, borrowed) = both(&rec);
            assert_eq!(owned, borrowed, "{:?}", String::from_utf8_lossy(&rec));
        }
    }
}
