//! Lab 15 (`course/labs/15-wal-replay`): rebuilding state from the sink's log after a crash.
//! A restarted reader replays a segment (the write-ahead log: `len | crc32 | payload` records
//! after a magic, [`crate::seglog`]) into the events per (service, route). Two things about a
//! real log make that harder than a loop: a crash may have torn the last record (tolerated,
//! and reported), and at least once a resent batch may have put the same window in the log
//! twice (it counts once: the replicas' copies are reconciled). Edit [`student`].

use crate::event::{EventRef, Latency, WindowResult};
use crate::seglog::{ScanError, scan_bytes, segment_bytes};
use pipeline_plan::LabImpl;
use rustc_hash::FxHashSet;
use std::collections::BTreeMap;

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/15-wal-replay/reference.rs"]
mod reference;

/// What replaying a segment rebuilds (the specification's answer).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Events per (service, route), each window (start, service, route) counted once.
    pub events: BTreeMap<(String, String), u64>,
    /// Distinct windows.
    pub windows: u64,
    /// Records holding a window already counted (resent).
    pub duplicates: u64,
    /// Records whose checksum holds but that are not a window result.
    pub undecodable: u64,
    /// Bytes of a torn last record, left out.
    pub torn_bytes: u64,
}

/// Called to replay one segment, the last of its log (do not edit). Damage before the last
/// record is an error ([`ScanError`]), as [`scan_bytes`] says.
pub fn replay(imp: LabImpl, segment: &[u8]) -> Result<Rebuilt, ScanError> {
    match imp {
        LabImpl::Baseline => baseline(segment),
        LabImpl::Student => student(segment),
        LabImpl::Mutant(n) => mutants!(n, |m| m(segment)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::replay(segment),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(segment),
    }
}

/// One window's sums while [`segment_of`] builds it: events, errors, bytes, slowest latency.
type WindowSums = (u64, u64, u64, u64);

/// Events per window of [`segment_of`].
pub const EVENTS_PER_WINDOW: usize = 256;

/// A segment of window results made from compact events, as the sink would have written it
/// (do not edit; the lab's kernel and its correctness check replay these): each run of
/// [`EVENTS_PER_WINDOW`] events makes a 1 ms window per (service, route) among them, and after
/// every `resend`-th window an earlier one is written again (a batch resent at least once; 0:
/// none).
pub fn segment_of(events: &[Vec<u8>], resend: usize) -> Vec<u8> {
    let mut windows: BTreeMap<(u64, Vec<u8>), WindowSums> = BTreeMap::new();
    for (i, rec) in events.iter().enumerate() {
        let Ok(ev) = EventRef::decode(rec) else {
            continue;
        };
        let start = (i / EVENTS_PER_WINDOW) as u64 * 1000;
        let w = windows.entry((start, ev.key.to_vec())).or_default();
        w.0 += 1;
        w.1 += u64::from(ev.is_error());
        w.2 += ev.bytes;
        w.3 = w.3.max(u64::from(ev.latency_us));
    }
    let mut written: Vec<Vec<u8>> = Vec::new();
    let mut log: Vec<usize> = Vec::new();
    for (n, ((start, key), (count, errors, bytes, slowest))) in windows.iter().enumerate() {
        let mut rec = Vec::new();
        let l = *slowest;
        let latency = Latency {
            min: l,
            p50: l,
            p90: l,
            p99: l,
            max: l,
        };
        WindowResult::encode_parts(
            &mut rec,
            *start,
            start + 1000,
            key,
            *count,
            *errors,
            *bytes,
            latency,
            0,
        );
        written.push(rec);
        log.push(n);
        if resend > 0 && n % resend == resend - 1 {
            log.push(n.saturating_sub(7));
        }
    }
    segment_bytes(log.iter().map(|&i| written[i].as_slice()))
}

// ===== BASELINE (do not edit) =====
#[inline(never)]
fn baseline(segment: &[u8]) -> Result<Rebuilt, ScanError> {
    super::baseline_mark();
    let mut rebuilt = Rebuilt::default();
    let mut seen: FxHashSet<(u64, String, String)> = FxHashSet::default();
    let scan = scan_bytes(segment, true, |rec| {
        let Ok(w) = WindowResult::decode(rec) else {
            rebuilt.undecodable += 1;
            return;
        };
        if !seen.insert((w.window_start_us, w.service.clone(), w.route.clone())) {
            rebuilt.duplicates += 1;
            return;
        }
        rebuilt.windows += 1;
        *rebuilt.events.entry((w.service, w.route)).or_insert(0) += w.count;
    })?;
    rebuilt.torn_bytes = scan.torn_bytes;
    Ok(rebuilt)
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/replay.rs");

// ===== STUDENT (lab 15: replay without a copy per record) =====
#[inline(never)]
fn student(segment: &[u8]) -> Result<Rebuilt, ScanError> {
    let mut rebuilt = Rebuilt::default();
    let mut seen: FxHashSet<(u64, String, String)> = FxHashSet::default();
    let scan = scan_bytes(segment, true, |rec| {
        let Ok(w) = WindowResult::decode(rec) else {
            rebuilt.undecodable += 1;
            return;
        };
        if !seen.insert((w.window_start_us, w.service.clone(), w.route.clone())) {
            rebuilt.duplicates += 1;
            return;
        }
        rebuilt.windows += 1;
        *rebuilt.events.entry((w.service, w.route)).or_insert(0) += w.count;
    })?;
    rebuilt.torn_bytes = scan.torn_bytes;
    Ok(rebuilt)
}
