//! Lab 11 (`course/labs/11-memory-leak`): the parse stage remembers the records it has seen, to
//! count duplicate deliveries. Memory grows with every event: find what holds it in the heap
//! profile, then fix [`student`] (a bounded memory of the most recent records is enough).

use pipeline_plan::LabImpl;
use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/11-memory-leak/reference.rs"]
mod reference;

/// Called for every record by the parse stage; true if the record was seen before (do not
/// edit).
pub fn remember(imp: LabImpl, rec: &[u8]) -> bool {
    match imp {
        LabImpl::Baseline => baseline(rec),
        LabImpl::Student => student(rec),
        LabImpl::Mutant(n) => mutants!(n, |m| m(rec)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::remember(rec),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(rec),
    }
}

// ===== BASELINE (do not edit) =====
static SEEN: Mutex<Option<HashSet<Vec<u8>>>> = Mutex::new(None);

#[inline(never)]
fn baseline(rec: &[u8]) -> bool {
    super::baseline_mark();
    let mut seen = SEEN.lock().unwrap_or_else(PoisonError::into_inner);
    !seen.get_or_insert_with(HashSet::new).insert(rec.to_vec())
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/leak.rs");

// ===== STUDENT (lab 11: remember only what is recent) =====
static STUDENT_SEEN: Mutex<Option<HashSet<Vec<u8>>>> = Mutex::new(None);

#[inline(never)]
fn student(rec: &[u8]) -> bool {
    let mut seen = STUDENT_SEEN.lock().unwrap_or_else(PoisonError::into_inner);
    !seen.get_or_insert_with(HashSet::new).insert(rec.to_vec())
}

#[cfg(all(test, feature = "lab-reference"))]
mod tests {
    use super::*;

    #[test]
    fn the_reference_counts_recent_duplicates() {
        assert!(!reference::remember(b"leak-test-record-1"));
        assert!(reference::remember(b"leak-test-record-1"));
        assert!(!reference::remember(b"leak-test-record-2"));
        // After 65,536 newer records the first is forgotten: memory is bounded.
        for i in 0..65_536u32 {
            reference::remember(format!("leak-test-filler-{i}").as_bytes());
        }
        assert!(!reference::remember(b"leak-test-record-1"));
    }
}
