// REFERENCE SOLUTION, lab 20 (for instructors and `observatory lab dev-check`; students: try
// first). Compiled into the pipeline from pipeline/src/slots/reconcile.rs.
//
// The baseline forgets what it is given: both replicas are already sorted by (key, window
// start), yet it copies every record twice, hashes every window into a map keyed by an owned
// copy of its key, and then builds and sorts a third structure (a BTreeSet of the union's
// owned keys) to get the order back. Sorted inputs reconcile in one merge pass, as an LSM
// tree merges its runs or a merge join joins two tables: look at the heads of both, the
// smaller window is missing from the other side, equal windows are compared, and advance.
// Nothing needs to be owned until the repair segments are written: scan_bytes hands out
// slices of the replica it reads, with the replica's lifetime, and both replicas outlive the
// call. Checking the order is one comparison with the window before, which the merge's
// correctness depends on anyway.

use super::{ReconcileError, Repair, Replica, wins};
use crate::event::WindowRef;
use crate::seglog::{scan_bytes, segment_bytes};
use std::cmp::Ordering;

/// A replica's windows, in order, borrowed from it.
fn windows<'a>(
    replica: Replica,
    segment: &'a [u8],
) -> Result<Vec<(WindowRef<'a>, &'a [u8])>, ReconcileError> {
    let mut out: Vec<(WindowRef<'a>, &'a [u8])> = Vec::new();
    let mut index = 0u64;
    let mut disorder = None;
    scan_bytes(segment, false, |rec| {
        if let Ok(w) = WindowRef::decode(rec) {
            let after = out.last().is_none_or(|(before, _)| {
                (before.key, before.window_start_us) < (w.key, w.window_start_us)
            });
            if !after && disorder.is_none() {
                disorder = Some(index);
            }
            out.push((w, rec));
        }
        index += 1;
    })
    .map_err(|damage| ReconcileError::Scan { replica, damage })?;
    match disorder {
        Some(index) => Err(ReconcileError::OutOfOrder { replica, index }),
        None => Ok(out),
    }
}

pub fn reconcile(a: &[u8], b: &[u8]) -> Result<Repair, ReconcileError> {
    let a = windows(Replica::A, a)?;
    let b = windows(Replica::B, b)?;
    let (mut to_a, mut to_b): (Vec<&[u8]>, Vec<&[u8]>) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    loop {
        match (a.get(i), b.get(j)) {
            (Some((x, xr)), Some((y, yr))) => {
                match (x.key, x.window_start_us).cmp(&(y.key, y.window_start_us)) {
                    Ordering::Less => {
                        to_b.push(xr);
                        i += 1;
                    }
                    Ordering::Greater => {
                        to_a.push(yr);
                        j += 1;
                    }
                    Ordering::Equal => {
                        if xr != yr {
                            if wins(x, xr, y, yr) {
                                to_b.push(xr);
                            } else {
                                to_a.push(yr);
                            }
                        }
                        i += 1;
                        j += 1;
                    }
                }
            }
            (Some((_, xr)), None) => {
                to_b.push(xr);
                i += 1;
            }
            (None, Some((_, yr))) => {
                to_a.push(yr);
                j += 1;
            }
            (None, None) => break,
        }
    }
    Ok(Repair {
        to_a: segment_bytes(to_a),
        to_b: segment_bytes(to_b),
    })
}
