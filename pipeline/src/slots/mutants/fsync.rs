// @generated from `mutants` in course/labs/13-wal-fsync/lab.toml and the STUDENT function's
// signature; do not edit (course/tests/labs.rs and the authoring check fail when this
// file is stale). The lab's wrong but fast STUDENT bodies, compiled in with the
// pipeline's `lab-mutants` feature: `mutants!(n, |m| m(args))` calls mutant n (from 1).
// Included at the end of the slot's protected part: nothing here comes before the
// baseline or the dispatch.

/// How many mutants the lab of this slot has.
pub const MUTANTS: u8 = 2;

macro_rules! mutants {
    ($n:expr, |$m:ident| $e:expr) => {
        call_mutant!($n, [mutant_1, mutant_2], |$m| $e)
    };
}
// The slot's dispatch, above the `include!`, finds it through this `use`.
pub(crate) use mutants;

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_1(u: &Unsynced) -> bool {
    let _ = u;
    false
}

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_2(u: &Unsynced) -> bool {
    u.oldest >= MAX_AGE
}
