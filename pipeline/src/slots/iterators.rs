//! Lab 07 (`course/labs/07-iterators`): a per-frame summary the aggregate stage computes over
//! the compact events of every frame. Edit [`student`].

use crate::codec::Frame;
use crate::event::EventRef;
use pipeline_plan::LabImpl;

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/07-iterators/reference.rs"]
mod reference;

/// What the summary reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameSummary {
    pub events: u64,
    pub server_errors: u64,
    pub bytes: u64,
    pub slowest_us: u32,
}

/// Called for every frame by the aggregate stage (do not edit).
pub fn summarize(imp: LabImpl, frame: &Frame) -> FrameSummary {
    match imp {
        LabImpl::Baseline => baseline(frame),
        LabImpl::Student => student(frame),
        LabImpl::Mutant(n) => mutants!(n, |m| m(frame)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::summarize(frame),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(frame),
    }
}

// ===== BASELINE (do not edit) =====
// (clippy's `needless_range_loop` would flag the index loop: the lab keeps it on purpose.)
#[allow(clippy::needless_range_loop)]
#[inline(never)]
fn baseline(frame: &Frame) -> FrameSummary {
    super::baseline_mark();
    // Decode everything into a list first, then walk the list by index.
    let mut events: Vec<(Vec<u8>, u16, u32, u64)> = Vec::new();
    for rec in frame.records() {
        if let Ok(ev) = EventRef::decode(rec) {
            events.push((ev.key.to_vec(), ev.status, ev.latency_us, ev.bytes));
        }
    }
    let mut s = FrameSummary::default();
    for i in 0..events.len() {
        s.events += 1;
        if events[i].1 >= 500 {
            s.server_errors += 1;
        }
        s.bytes += events[i].3;
        if events[i].2 > s.slowest_us {
            s.slowest_us = events[i].2;
        }
    }
    s
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/iterators.rs");

// ===== STUDENT (lab 07: one pass, no intermediate collection) =====
#[allow(clippy::needless_range_loop)]
#[inline(never)]
fn student(frame: &Frame) -> FrameSummary {
    let mut events: Vec<(Vec<u8>, u16, u32, u64)> = Vec::new();
    for rec in frame.records() {
        if let Ok(ev) = EventRef::decode(rec) {
            events.push((ev.key.to_vec(), ev.status, ev.latency_us, ev.bytes));
        }
    }
    let mut s = FrameSummary::default();
    for i in 0..events.len() {
        s.events += 1;
        if events[i].1 >= 500 {
            s.server_errors += 1;
        }
        s.bytes += events[i].3;
        if events[i].2 > s.slowest_us {
            s.slowest_us = events[i].2;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::OutFrame;
    use crate::event::{Method, encode_event};

    #[test]
    fn every_implementation_summarizes_alike() {
        let mut f = OutFrame::data(4096);
        let mut buf = Vec::new();
        for i in 0..100u64 {
            buf.clear();
            let status = if i % 7 == 0 { 503 } else { 200 };
            encode_event(
                &mut buf,
                "svc",
                "/r",
                Method::Get,
                status,
                (i * 37 % 1000) as u32,
                i,
                i,
            );
            f.push(&buf);
        }
        f.push(b"\x01undecodable");
        let frame = f.into_frame(1, 0);
        let want = baseline(&frame);
        assert_eq!(want.events, 100);
        assert_eq!(want.server_errors, 15);
        assert_eq!(want.bytes, (0..100).sum::<u64>());
        assert_eq!(want.slowest_us, 999);
        assert_eq!(summarize(LabImpl::Student, &frame), want);
        assert_eq!(summarize(LabImpl::Reference, &frame), want);
    }
}
