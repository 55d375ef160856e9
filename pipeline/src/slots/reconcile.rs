//! Lab 20 (`course/labs/20-replica-reconciliation`): reconciling two replicas of the sink's
//! compacted log. Each replica holds window results, each window once, in key and window
//! order (what lab 19's compaction writes); after one was down or missed late events they
//! differ. Reconciling computes what each must take from the other so that both end up the
//! same: the windows it lacks, and the windows where the other's copy wins. Edit [`student`].

use crate::event::{WindowRef, WindowResult};
use crate::seglog::{ScanError, scan_bytes, segment_bytes};
use pipeline_plan::LabImpl;
use std::collections::{BTreeSet, HashMap};

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/20-replica-reconciliation/reference.rs"]
mod reference;

/// Which replica a [`ReconcileError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replica {
    A,
    B,
}

impl std::fmt::Display for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Replica::A => "A",
            Replica::B => "B",
        })
    }
}

/// Why two replicas cannot be reconciled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    /// The replica is not a whole segment (what reading it with `scan_bytes(_, false, _)`
    /// says).
    #[error("replica {replica} is not a whole segment: {damage:?}")]
    Scan { replica: Replica, damage: ScanError },
    /// Record `index` (counting every record of the replica from 0) is a window that is not
    /// after the window before it in (key bytes, window start) order: the replica is not
    /// compacted (out of order, or a window twice).
    #[error("replica {replica}: record {index} is not after the window before it")]
    OutOfOrder { replica: Replica, index: u64 },
}

/// What each replica must take from the other: two segments of window records, each in
/// (key bytes, window start) order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repair {
    /// The records A must take (from B).
    pub to_a: Vec<u8>,
    /// The records B must take (from A).
    pub to_b: Vec<u8>,
}

/// Reconcile replicas `a` and `b` (whole segments; do not edit).
///
/// The specification (`pipeline conformance --slot reconcile`): for every window (key,
/// window start) of either replica, in (key bytes, window start) order: a window only A has
/// goes to `to_b`, one only B has to `to_a`; a window both have with the same record bytes
/// goes nowhere; one both have with different records goes, from the replica whose copy
/// [`wins`], to the other. Each record's bytes are as they were. Records whose checksum holds
/// but that are not window results are left out (and are not windows for the order rule,
/// though they count for a record's index). Errors, A checked whole before B: a replica that
/// is not a whole segment is [`ReconcileError::Scan`]; then a window not after the window
/// before it in that replica is [`ReconcileError::OutOfOrder`].
pub fn reconcile(imp: LabImpl, a: &[u8], b: &[u8]) -> Result<Repair, ReconcileError> {
    match imp {
        LabImpl::Baseline => baseline(a, b),
        LabImpl::Student => student(a, b),
        LabImpl::Mutant(n) => mutants!(n, |m| m(a, b)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::reconcile(a, b),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(a, b),
    }
}

/// Whether copy `x` of a window wins over copy `y` (do not edit): the one holding more
/// events (a window emitted again after a late event only grows), and between two with as
/// many, the one whose record bytes compare larger, so that both replicas pick the same copy
/// whichever of them reconciles.
pub fn wins(x: &WindowRef<'_>, x_record: &[u8], y: &WindowRef<'_>, y_record: &[u8]) -> bool {
    (x.count, x_record) > (y.count, y_record)
}

/// Two replicas of the compacted log of `events` (do not edit; the lab's kernel and its
/// correctness check reconcile these): the windows of lab 19's [`super::compaction::layers_of`],
/// in (key, window start) order. With `missed` > 0, window n with `n % missed == 0` is only
/// in A, and with `n % missed == 1` only in B (each replica was down a while); with `late` >
/// 0, window n with `n % late == late - 1` differs, taking turns: B's copy has one event more,
/// A's copy has one event more, B's copy has as many events and one byte more.
pub fn replicas_of(events: &[Vec<u8>], missed: usize, late: usize) -> (Vec<u8>, Vec<u8>) {
    let layer = super::compaction::layers_of(events, 1, 0);
    let mut records: Vec<&[u8]> = Vec::new();
    for segment in &layer {
        let _ = scan_bytes(segment, false, |rec| records.push(rec));
    }
    let mut windows: Vec<WindowRef<'_>> = records
        .iter()
        .filter_map(|rec| WindowRef::decode(rec).ok())
        .collect();
    windows.sort_by(|x, y| (x.key, x.window_start_us).cmp(&(y.key, y.window_start_us)));
    let encode = |w: &WindowRef<'_>, count: u64, bytes: u64| {
        let mut rec = Vec::new();
        WindowResult::encode_parts(
            &mut rec,
            w.window_start_us,
            w.window_end_us,
            w.key,
            count,
            w.errors,
            bytes,
            w.latency_us,
            w.last_emit_ns,
        );
        rec
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (n, w) in windows.iter().enumerate() {
        let same = encode(w, w.count, w.bytes);
        if missed > 0 && n % missed == 0 {
            a.push(same);
        } else if missed > 1 && n % missed == 1 {
            b.push(same);
        } else if late > 0 && n % late == late - 1 {
            match (n / late) % 3 {
                0 => {
                    a.push(same);
                    b.push(encode(w, w.count + 1, w.bytes));
                }
                1 => {
                    a.push(encode(w, w.count + 1, w.bytes));
                    b.push(same);
                }
                _ => {
                    a.push(same);
                    b.push(encode(w, w.count, w.bytes + 1));
                }
            }
        } else {
            a.push(same.clone());
            b.push(same);
        }
    }
    (
        segment_bytes(a.iter().map(Vec::as_slice)),
        segment_bytes(b.iter().map(Vec::as_slice)),
    )
}

/// A replica's windows by (key, window start), each an owned copy (the baseline's way).
type OwnedWindows = HashMap<(Vec<u8>, u64), Vec<u8>>;

// ===== BASELINE (do not edit) =====
#[inline(never)]
fn baseline(a: &[u8], b: &[u8]) -> Result<Repair, ReconcileError> {
    super::baseline_mark();
    // Every window of a replica by (key, window start), after checking the replica's order.
    let read = |replica: Replica, segment: &[u8]| -> Result<OwnedWindows, ReconcileError> {
        let mut records: Vec<Vec<u8>> = Vec::new();
        scan_bytes(segment, false, |rec| records.push(rec.to_vec()))
            .map_err(|damage| ReconcileError::Scan { replica, damage })?;
        let mut windows = HashMap::new();
        let mut before: Option<(Vec<u8>, u64)> = None;
        for (index, rec) in records.into_iter().enumerate() {
            let Ok(w) = WindowRef::decode(&rec) else {
                continue;
            };
            let id = (w.key.to_vec(), w.window_start_us);
            if before.as_ref().is_some_and(|before| *before >= id) {
                let index = index as u64;
                return Err(ReconcileError::OutOfOrder { replica, index });
            }
            before = Some(id.clone());
            windows.insert(id, rec.clone());
        }
        Ok(windows)
    };
    let a = read(Replica::A, a)?;
    let b = read(Replica::B, b)?;
    let ids: BTreeSet<(Vec<u8>, u64)> = a.keys().chain(b.keys()).cloned().collect();
    let (mut to_a, mut to_b): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
    for id in &ids {
        match (a.get(id), b.get(id)) {
            (Some(x), None) => to_b.push(x.clone()),
            (None, Some(y)) => to_a.push(y.clone()),
            (Some(x), Some(y)) if x != y => {
                let (wx, wy) = (WindowRef::decode(x), WindowRef::decode(y));
                if let (Ok(wx), Ok(wy)) = (wx, wy) {
                    if wins(&wx, x, &wy, y) {
                        to_b.push(x.clone());
                    } else {
                        to_a.push(y.clone());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Repair {
        to_a: segment_bytes(to_a.iter().map(Vec::as_slice)),
        to_b: segment_bytes(to_b.iter().map(Vec::as_slice)),
    })
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/reconcile.rs");

// ===== STUDENT (lab 20: reconciling two sorted replicas in one pass) =====
#[inline(never)]
fn student(a: &[u8], b: &[u8]) -> Result<Repair, ReconcileError> {
    // Every window of a replica by (key, window start), after checking the replica's order.
    let read = |replica: Replica, segment: &[u8]| -> Result<OwnedWindows, ReconcileError> {
        let mut records: Vec<Vec<u8>> = Vec::new();
        scan_bytes(segment, false, |rec| records.push(rec.to_vec()))
            .map_err(|damage| ReconcileError::Scan { replica, damage })?;
        let mut windows = HashMap::new();
        let mut before: Option<(Vec<u8>, u64)> = None;
        for (index, rec) in records.into_iter().enumerate() {
            let Ok(w) = WindowRef::decode(&rec) else {
                continue;
            };
            let id = (w.key.to_vec(), w.window_start_us);
            if before.as_ref().is_some_and(|before| *before >= id) {
                let index = index as u64;
                return Err(ReconcileError::OutOfOrder { replica, index });
            }
            before = Some(id.clone());
            windows.insert(id, rec.clone());
        }
        Ok(windows)
    };
    let a = read(Replica::A, a)?;
    let b = read(Replica::B, b)?;
    let ids: BTreeSet<(Vec<u8>, u64)> = a.keys().chain(b.keys()).cloned().collect();
    let (mut to_a, mut to_b): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
    for id in &ids {
        match (a.get(id), b.get(id)) {
            (Some(x), None) => to_b.push(x.clone()),
            (None, Some(y)) => to_a.push(y.clone()),
            (Some(x), Some(y)) if x != y => {
                let (wx, wy) = (WindowRef::decode(x), WindowRef::decode(y));
                if let (Ok(wx), Ok(wy)) = (wx, wy) {
                    if wins(&wx, x, &wy, y) {
                        to_b.push(x.clone());
                    } else {
                        to_a.push(y.clone());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Repair {
        to_a: segment_bytes(to_a.iter().map(Vec::as_slice)),
        to_b: segment_bytes(to_b.iter().map(Vec::as_slice)),
    })
}
