// @generated from `mutants` in course/labs/02-backpressure-and-batching/lab.toml and the STUDENT function's
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
fn mutant_1(mut out: Frames) -> Feed {
    let _ = out;
    Feed::new(|_| true)
}

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_2(mut out: Frames) -> Feed {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(1024);
    std::thread::spawn(move || {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        for record in rx {
            batch.push(record);
            if batch.len() == MAX_BATCH && !out.send(std::mem::take(&mut batch)) {
                return;
            }
        }
        if !batch.is_empty() {
            out.send(batch);
        }
    });
    Feed::new(move |record| tx.send(record).is_ok())
}

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_3(mut out: Frames) -> Feed {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
            if !out.send(batch) {
                return;
            }
        }
    });
    Feed::new(move |record| tx.send(record).is_ok())
}
