// REFERENCE SOLUTION, lab 06 (for instructors and `observatory lab dev-check`; students: try
// first). Compiled into the pipeline from pipeline/src/slots/zerocopy.rs.
//
// `Event<'a>` borrows from the record: `'a` is the region of memory the strings live in, the
// batch buffer, and the compiler holds every event to it (an event kept past its batch does
// not compile). `Cow<'a, str>` with `#[serde(borrow)]` is a slice of the buffer when the
// string has no escapes and an owned copy when it has one: an unescaped `"a\"b"` is not in
// the buffer to borrow, so a plain `&'a str` would turn such a record into a drop.

use crate::event::DropReason;
use crate::json::classify;
use serde::Deserialize;
use std::borrow::Cow;

// The encoder reads some fields only; the others are parsed to check the record's shape.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
pub struct Event<'a> {
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

pub fn parse(text: &str) -> Result<Event<'_>, DropReason> {
    serde_json::from_str(text).map_err(|e| classify(&e))
}
