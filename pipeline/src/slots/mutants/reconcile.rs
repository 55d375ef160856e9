// @generated from `mutants` in course/labs/20-replica-reconciliation/lab.toml and the STUDENT function's
// signature; do not edit (course/tests/labs.rs and the authoring check fail when this
// file is stale). The lab's wrong but fast STUDENT bodies, compiled in with the
// pipeline's `lab-mutants` feature: `mutants!(n, |m| m(args))` calls mutant n (from 1).
// Included at the end of the slot's protected part: nothing here comes before the
// baseline or the dispatch.

/// How many mutants the lab of this slot has.
pub const MUTANTS: u8 = 3;

macro_rules! mutants {
    ($n:expr, |$m:ident| $e:expr) => {
        call_mutant!($n, [mutant_1, mutant_2, mutant_3], |$m| $e)
    };
}
// The slot's dispatch, above the `include!`, finds it through this `use`.
pub(crate) use mutants;

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_1(a: &[u8], b: &[u8]) -> Result<Repair, ReconcileError> {
    let _ = (a, b);
    Ok(Repair::default())
}

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_2(a: &[u8], b: &[u8]) -> Result<Repair, ReconcileError> {
    let mut ws: Vec<Vec<(&[u8], u64, &[u8])>> = Vec::new();
    for (replica, segment) in [(Replica::A, a), (Replica::B, b)] {
        let mut v = Vec::new();
        scan_bytes(segment, false, |rec| {
            if let Ok(w) = WindowRef::decode(rec) {
                v.push((w.key, w.window_start_us, rec));
            }
        })
        .map_err(|damage| ReconcileError::Scan { replica, damage })?;
        ws.push(v);
    }
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    loop {
        match (ws[0].get(i), ws[1].get(j)) {
            (Some(x), Some(y)) if (x.0, x.1) == (y.0, y.1) => {
                if x.2 != y.2 {
                    to_b.push(x.2);
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if (x.0, x.1) < (y.0, y.1) => {
                to_b.push(x.2);
                i += 1;
            }
            (Some(x), None) => {
                to_b.push(x.2);
                i += 1;
            }
            (_, Some(y)) => {
                to_a.push(y.2);
                j += 1;
            }
            (None, None) => break,
        }
    }
    Ok(Repair { to_a: segment_bytes(to_a), to_b: segment_bytes(to_b) })
}

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_3(a: &[u8], b: &[u8]) -> Result<Repair, ReconcileError> {
    let mut ws: Vec<Vec<(&[u8], u64, &[u8])>> = Vec::new();
    for (replica, segment) in [(Replica::A, a), (Replica::B, b)] {
        let mut v = Vec::new();
        scan_bytes(segment, false, |rec| {
            if let Ok(w) = WindowRef::decode(rec) {
                v.push((w.key, w.window_start_us, rec));
            }
        })
        .map_err(|damage| ReconcileError::Scan { replica, damage })?;
        ws.push(v);
    }
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    loop {
        match (ws[0].get(i), ws[1].get(j)) {
            (Some(x), Some(y)) if (x.0, x.1) == (y.0, y.1) => {
                if x.2 != y.2 {
                    let (wx, wy) = (WindowRef::decode(x.2), WindowRef::decode(y.2));
                    if let (Ok(wx), Ok(wy)) = (wx, wy) {
                        if wins(&wx, x.2, &wy, y.2) {
                            to_b.push(x.2);
                        } else {
                            to_a.push(y.2);
                        }
                    }
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if (x.0, x.1) < (y.0, y.1) => {
                to_b.push(x.2);
                i += 1;
            }
            (Some(x), None) => {
                to_b.push(x.2);
                i += 1;
            }
            (_, Some(y)) => {
                to_a.push(y.2);
                j += 1;
            }
            (None, None) => break,
        }
    }
    Ok(Repair { to_a: segment_bytes(to_a), to_b: segment_bytes(to_b) })
}
