//! Lab 06 (`course/labs/06-zero-copy`): the parse stage turns every JSON record into a typed
//! event and encodes it at once into the compact format. The baseline's event owns its
//! strings: an allocation and a copy for each. Write the [`Event`] type the STUDENT part
//! parses into so that its strings borrow from the record's buffer, the region of memory
//! every event of the batch lives in, and keep records with escaped strings working.

use crate::event::DropReason;
use crate::json::{OwnedEvent, classify, validate_and_encode};
use pipeline_plan::LabImpl;
use serde::Deserialize;

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/06-zero-copy/reference.rs"]
mod reference;

/// Encode a parsed event of any of the three types: their string fields deref to `str`.
macro_rules! encode {
    ($event:expr, $out:expr) => {{
        let e = $event;
        validate_and_encode(
            &*e.service,
            &*e.route,
            &*e.method,
            e.status,
            e.latency_us,
            e.bytes,
            e.ts,
            $out,
        )
    }};
}

/// Called by the parse stage for every record (do not edit): parse `record` with the chosen
/// implementation and append its compact encoding to `out`. Returns the event time.
pub fn parse_into(imp: LabImpl, record: &[u8], out: &mut Vec<u8>) -> Result<u64, DropReason> {
    // The record's bytes are the batch buffer's: an event that borrows from `text` borrows
    // from the batch, and must be done with before the batch is.
    let text = std::str::from_utf8(record).map_err(|_| DropReason::BadUtf8)?;
    match imp {
        LabImpl::Baseline => encode!(baseline(text)?, out),
        LabImpl::Student => encode!(student(text)?, out),
        LabImpl::Mutant(n) => mutants!(n, |m| encode!(m(text)?, out)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => encode!(reference::parse(text)?, out),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => encode!(baseline(text)?, out),
    }
}

// ===== BASELINE (do not edit): the pipeline's own owned event, `crate::json::OwnedEvent` =====
#[inline(never)]
fn baseline(text: &str) -> Result<OwnedEvent, DropReason> {
    super::baseline_mark();
    serde_json::from_str(text).map_err(|e| classify(&e))
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/zerocopy.rs");

// ===== STUDENT (lab 06: an event that borrows its strings from the record) =====
#[inline(never)]
fn student(text: &str) -> Result<Event, DropReason> {
    serde_json::from_str(text).map_err(|e| classify(&e))
}

/// The request log the student's parser produces. Every field must stay (the parser checks
/// the record's shape: a missing or mistyped field is a drop, whatever the encoder reads).
#[derive(Debug, Deserialize)]
pub struct Event {
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

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_plan::ParseMode;

    #[test]
    fn every_implementation_encodes_what_the_owned_parser_does() {
        let records: [&[u8]; 5] = [
            br#"{"ts":5,"service":"api","route":"/a","method":"GET","status":200,"latency_us":10,"bytes":3}"#,
            br#"{"ts":6,"service":"a\"pi","route":"/\u00e9","method":"GET","status":200,"latency_us":10,"bytes":3,"region":"eu\\1"}"#,
            br#"{"ts":7,"service":"api"}"#,
            b"not json",
            b"\xff",
        ];
        for rec in records {
            let run = |imp: Option<LabImpl>| {
                let mut out = Vec::new();
                let r = match imp {
                    Some(imp) => parse_into(imp, rec, &mut out),
                    None => crate::json::parse_into(ParseMode::Owned, rec, &mut out),
                };
                r.map(|ts| (ts, out))
            };
            let want = run(None);
            assert_eq!(run(Some(LabImpl::Baseline)), want);
            assert_eq!(run(Some(LabImpl::Student)), want);
            #[cfg(feature = "lab-reference")]
            assert_eq!(run(Some(LabImpl::Reference)), want);
        }
    }
}
