// @generated from `mutants` in course/labs/14-scaling-the-aggregate/lab.toml and the STUDENT function's
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
fn mutant_1(key: &[u8], lanes: usize) -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let _ = key;
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % lanes
}

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_2(key: &[u8], lanes: usize) -> usize {
    use std::hash::BuildHasher;
    static STATE: std::sync::LazyLock<std::collections::hash_map::RandomState> =
        std::sync::LazyLock::new(std::collections::hash_map::RandomState::new);
    (STATE.hash_one(key) % lanes as u64) as usize
}

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_3(key: &[u8], lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    key.hash(&mut h);
    (h.finish() % (lanes as u64 + 1)) as usize
}
