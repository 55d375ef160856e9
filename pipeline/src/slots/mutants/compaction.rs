// @generated from `mutants` in course/labs/19-compaction/lab.toml and the STUDENT function's
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
fn mutant_1(layers: &[&[u8]]) -> Result<Vec<u8>, ScanError> {
    let _ = layers;
    Ok(segment_bytes(std::iter::empty()))
}

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_2(layers: &[&[u8]]) -> Result<Vec<u8>, ScanError> {
    let mut first: std::collections::HashMap<(&[u8], u64), &[u8]> = Default::default();
    for layer in layers {
        scan_bytes(layer, false, |rec| {
            if let Ok(w) = WindowRef::decode(rec) {
                first.entry((w.key, w.window_start_us)).or_insert(rec);
            }
        })?;
    }
    let mut merged: Vec<_> = first.into_iter().collect();
    merged.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(segment_bytes(merged.into_iter().map(|(_, rec)| rec)))
}

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_3(layers: &[&[u8]]) -> Result<Vec<u8>, ScanError> {
    let mut newest: std::collections::HashMap<(&[u8], u64), &[u8]> = Default::default();
    for layer in layers {
        scan_bytes(layer, true, |rec| {
            if let Ok(w) = WindowRef::decode(rec) {
                newest.insert((w.key, w.window_start_us), rec);
            }
        })?;
    }
    let mut merged: Vec<_> = newest.into_iter().collect();
    merged.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(segment_bytes(merged.into_iter().map(|(_, rec)| rec)))
}
