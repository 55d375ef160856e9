//! Lab 16 (`course/labs/16-recall-aggregate`, a recall lab: no hints): a per-frame tally the
//! aggregate stage computes over the compact events of every frame. The baseline is written
//! with mistakes earlier labs taught you to find. Edit [`student`].

use crate::codec::Frame;
use crate::event::{EventRef, split_key};
use pipeline_plan::LabImpl;
use std::collections::HashMap;

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/16-recall-aggregate/reference.rs"]
mod reference;

/// What the tally reports for one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Events with a status below 400.
    pub ok: u64,
    /// Events with a status from 400 to 499.
    pub client_errors: u64,
    /// Events with a status of 500 or more.
    pub server_errors: u64,
    /// Distinct (service, route) pairs among the frame's events.
    pub distinct_keys: u64,
    /// Events of the (service, route) with the most events (0 without events).
    pub busiest_key_events: u64,
    /// Records that do not decode as an event.
    pub undecodable: u64,
}

/// Called for every frame by the aggregate stage (do not edit).
pub fn tally(imp: LabImpl, frame: &Frame) -> Tally {
    match imp {
        LabImpl::Baseline => baseline(frame),
        LabImpl::Student => student(frame),
        LabImpl::Mutant(n) => mutants!(n, |m| m(frame)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::tally(frame),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(frame),
    }
}

// ===== BASELINE (do not edit) =====
#[inline(never)]
fn baseline(frame: &Frame) -> Tally {
    super::baseline_mark();
    let mut t = Tally::default();
    let mut decoded: Vec<((String, String), u16)> = Vec::new();
    for rec in frame.records() {
        match EventRef::decode(rec) {
            Ok(ev) => {
                let (service, route) = split_key(ev.key).unwrap_or_default();
                decoded.push(((service.to_string(), route.to_string()), ev.status));
            }
            Err(_) => t.undecodable += 1,
        }
    }
    let mut per_key: HashMap<(String, String), u64> = HashMap::new();
    for (key, status) in &decoded {
        match status {
            0..400 => t.ok += 1,
            400..500 => t.client_errors += 1,
            _ => t.server_errors += 1,
        }
        *per_key.entry(key.clone()).or_insert(0) += 1;
    }
    t.distinct_keys = per_key.len() as u64;
    t.busiest_key_events = per_key.values().copied().max().unwrap_or(0);
    t
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/recall.rs");

// ===== STUDENT (lab 16: the same tally, without the mistakes) =====
#[inline(never)]
fn student(frame: &Frame) -> Tally {
    let mut t = Tally::default();
    let mut decoded: Vec<((String, String), u16)> = Vec::new();
    for rec in frame.records() {
        match EventRef::decode(rec) {
            Ok(ev) => {
                let (service, route) = split_key(ev.key).unwrap_or_default();
                decoded.push(((service.to_string(), route.to_string()), ev.status));
            }
            Err(_) => t.undecodable += 1,
        }
    }
    let mut per_key: HashMap<(String, String), u64> = HashMap::new();
    for (key, status) in &decoded {
        match status {
            0..400 => t.ok += 1,
            400..500 => t.client_errors += 1,
            _ => t.server_errors += 1,
        }
        *per_key.entry(key.clone()).or_insert(0) += 1;
    }
    t.distinct_keys = per_key.len() as u64;
    t.busiest_key_events = per_key.values().copied().max().unwrap_or(0);
    t
}
