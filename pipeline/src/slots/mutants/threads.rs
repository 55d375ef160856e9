// @generated from `mutants` in course/labs/17-threads-and-channels/lab.toml and the STUDENT function's
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
fn mutant_1(frame: &Frame) -> Digest {
    let _ = frame;
    Digest::default()
}

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_2(frame: &Frame) -> Digest {
    let records: Vec<&[u8]> = frame.records().collect();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for part in records.chunks(records.len().div_ceil(2).max(1)) {
            let tx = tx.clone();
            s.spawn(move || {
                let _ = tx.send(part.iter().fold(Digest::default(), |d, r| d.plus(checksum(r))));
            });
        }
    });
    drop(tx);
    rx.recv().unwrap_or_default()
}

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_3(frame: &Frame) -> Digest {
    let records: Vec<&[u8]> = frame.records().collect();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for part in records.chunks(records.len().div_ceil(2).max(1)) {
            let tx = tx.clone();
            s.spawn(move || {
                let _ = tx.send(part.iter().fold(Digest::default(), |d, r| d.plus(checksum(r))));
            });
        }
    });
    rx.iter().fold(Digest::default(), Digest::merge)
}
