//! Lab 19 (`course/labs/19-compaction`): compacting the sink's log into a layer. The log's
//! older segments (layers, oldest first) hold window results in the order they were written,
//! and a window may be there more than once: a window emitted again when late events arrived,
//! whose newer copy replaces the older. Compaction merges the layers into one segment that
//! holds each window once, its newest copy, sorted by key and window start, so that the log
//! shrinks and a reader can search it. Edit [`student`].

use crate::event::{Latency, WindowRef, WindowResult};
use crate::seglog::{ScanError, scan_bytes, segment_bytes};
use pipeline_plan::LabImpl;
use std::collections::BTreeMap;

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/19-compaction/reference.rs"]
mod reference;

/// Merge `layers` (whole segments, oldest first) into one (do not edit).
///
/// The specification (`pipeline conformance --slot compaction`): the segment returned holds,
/// for every window (key, window start) of the layers, the record of its newest copy (the
/// last one written: in the newest layer that has it, last in that layer), once, in the order
/// of (key bytes, window start), each record's bytes as they were; records whose checksum holds
/// but that are not window results are left out. A layer that is not a whole segment (bad
/// magic, a record cut short or failing its checksum anywhere, the last one included: a layer
/// being compacted was closed) is the [`ScanError`] that reading it gives, for the first such
/// layer.
pub fn compact(imp: LabImpl, layers: &[&[u8]]) -> Result<Vec<u8>, ScanError> {
    match imp {
        LabImpl::Baseline => baseline(layers),
        LabImpl::Student => student(layers),
        LabImpl::Mutant(n) => mutants!(n, |m| m(layers)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::compact(layers),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(layers),
    }
}

/// Events per window of [`layers_of`].
pub const EVENTS_PER_WINDOW: usize = 256;

/// The layers a log of window results made from compact events would hold (do not edit; the
/// lab's kernel and its correctness check compact these): each run of [`EVENTS_PER_WINDOW`]
/// events makes a 1 ms window per key among them, written in window order; after every
/// `update`-th window, an earlier one is written again with one more event (emitted again
/// after a late event; 0: never). The records are cut into `layers` segments of about equal
/// size, in the order written.
pub fn layers_of(events: &[Vec<u8>], layers: usize, update: usize) -> Vec<Vec<u8>> {
    let mut windows: BTreeMap<(u64, Vec<u8>), (u64, u64)> = BTreeMap::new();
    for (i, rec) in events.iter().enumerate() {
        let Ok(ev) = crate::event::EventRef::decode(rec) else {
            continue;
        };
        let start = (i / EVENTS_PER_WINDOW) as u64 * 1000;
        let w = windows.entry((start, ev.key.to_vec())).or_default();
        w.0 += 1;
        w.1 += ev.bytes;
    }
    let encode = |(start, key): &(u64, Vec<u8>), (count, bytes): (u64, u64)| {
        let mut rec = Vec::new();
        WindowResult::encode_parts(
            &mut rec,
            *start,
            start + 1000,
            key,
            count,
            0,
            bytes,
            Latency::default(),
            0,
        );
        rec
    };
    let all: Vec<_> = windows.iter().collect();
    let mut written: Vec<Vec<u8>> = Vec::new();
    for (n, (id, sums)) in all.iter().enumerate() {
        written.push(encode(id, **sums));
        if update > 0 && n % update == update - 1 {
            let (old_id, (count, bytes)) = all[n.saturating_sub(5)];
            written.push(encode(old_id, (count + 1, *bytes)));
        }
    }
    let per_layer = written.len().div_ceil(layers.max(1)).max(1);
    written
        .chunks(per_layer)
        .map(|part| segment_bytes(part.iter().map(Vec::as_slice)))
        .collect()
}

// ===== BASELINE (do not edit) =====
#[inline(never)]
fn baseline(layers: &[&[u8]]) -> Result<Vec<u8>, ScanError> {
    super::baseline_mark();
    // (key, window start, record), one per window, the newest copy.
    let mut out: Vec<(Vec<u8>, u64, Vec<u8>)> = Vec::new();
    for layer in layers {
        let mut records: Vec<Vec<u8>> = Vec::new();
        scan_bytes(layer, false, |rec| records.push(rec.to_vec()))?;
        for rec in records {
            let Ok(w) = WindowRef::decode(&rec) else {
                continue;
            };
            let (key, start) = (w.key.to_vec(), w.window_start_us);
            match out.iter().position(|(k, s, _)| *k == key && *s == start) {
                Some(i) => out[i].2 = rec.clone(),
                None => out.push((key, start, rec.clone())),
            }
        }
    }
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    Ok(segment_bytes(out.iter().map(|(_, _, rec)| rec.as_slice())))
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/compaction.rs");

// ===== STUDENT (lab 19: compaction without searching what is merged so far) =====
#[inline(never)]
fn student(layers: &[&[u8]]) -> Result<Vec<u8>, ScanError> {
    // (key, window start, record), one per window, the newest copy.
    let mut out: Vec<(Vec<u8>, u64, Vec<u8>)> = Vec::new();
    for layer in layers {
        let mut records: Vec<Vec<u8>> = Vec::new();
        scan_bytes(layer, false, |rec| records.push(rec.to_vec()))?;
        for rec in records {
            let Ok(w) = WindowRef::decode(&rec) else {
                continue;
            };
            let (key, start) = (w.key.to_vec(), w.window_start_us);
            match out.iter().position(|(k, s, _)| *k == key && *s == start) {
                Some(i) => out[i].2 = rec.clone(),
                None => out.push((key, start, rec.clone())),
            }
        }
    }
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    Ok(segment_bytes(out.iter().map(|(_, _, rec)| rec.as_slice())))
}
