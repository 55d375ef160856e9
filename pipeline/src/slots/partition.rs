//! Lab 14 (`course/labs/14-scaling-the-aggregate`): which aggregate partition (replica) an
//! event's key goes to. Every parse replica routes each event it parses with this function, so
//! each key's windows live in exactly one aggregate replica. Edit [`student`].

use pipeline_plan::LabImpl;

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/14-scaling-the-aggregate/reference.rs"]
mod reference;

/// The partition of `key` among `lanes` (at least 1) aggregate partitions (do not edit).
///
/// The specification (`pipeline conformance --slot partition`): a number below `lanes`; the
/// same for the same key and `lanes` on every call and in every process (two parse replicas
/// must send a key to the same aggregate replica, or its windows are split in two); and never a
/// panic.
pub fn lane(imp: LabImpl, key: &[u8], lanes: usize) -> usize {
    // Called through an opaque pointer: a body that returns a constant would otherwise be
    // folded into its callers and vanish from profiles.
    let opaque = |f: fn(&[u8], usize) -> usize| std::hint::black_box(f)(key, lanes);
    match imp {
        LabImpl::Baseline => opaque(baseline),
        LabImpl::Student => opaque(student),
        LabImpl::Mutant(n) => mutants!(n, |m| opaque(m)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::lane(key, lanes),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(key, lanes),
    }
}

// ===== BASELINE (do not edit) =====
#[inline(never)]
fn baseline(key: &[u8], lanes: usize) -> usize {
    super::baseline_mark();
    // Correct (every key in one partition, the same everywhere), and the other replicas idle.
    let _ = (key, lanes);
    0
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/partition.rs");

// ===== STUDENT (lab 14: spread the keys over the partitions, each key in one) =====
#[inline(never)]
fn student(key: &[u8], lanes: usize) -> usize {
    let _ = (key, lanes);
    0
}
