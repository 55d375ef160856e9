//! Lab 05 (`course/labs/05-errors-as-values`): a pre-check of each raw record before it is
//! parsed. A record that fails must cost only itself, with a reason; edit [`student`].

use crate::event::DropReason;
use pipeline_plan::LabImpl;

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/05-errors-as-values/reference.rs"]
mod reference;

/// Why a record failed its pre-check.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrecheckError {
    #[error("not UTF-8 (valid up to byte {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    #[error("empty record")]
    Empty,
}

impl PrecheckError {
    /// The dead-letter reason the stage counts.
    pub fn reason(&self) -> DropReason {
        match self {
            PrecheckError::NotUtf8 { .. } => DropReason::BadUtf8,
            PrecheckError::Empty => DropReason::BadJson,
        }
    }
}

/// Called for every record of a batch by the parse stage, inside a guard: a panic here sets the
/// whole batch aside (reason `panicked`), an `Err` only the record (do not edit).
pub fn precheck(imp: LabImpl, rec: &[u8]) -> Result<(), PrecheckError> {
    match imp {
        LabImpl::Baseline => baseline(rec),
        LabImpl::Student => student(rec),
        LabImpl::Mutant(n) => mutants!(n, |m| m(rec)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::precheck(rec),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(rec),
    }
}

// ===== BASELINE (do not edit) =====
#[inline(never)]
fn baseline(rec: &[u8]) -> Result<(), PrecheckError> {
    super::baseline_mark();
    let text = std::str::from_utf8(rec).expect("records are UTF-8");
    assert!(!text.is_empty(), "records are never empty");
    Ok(())
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/errors.rs");

// ===== STUDENT (lab 05: turn the panics into errors as values) =====
#[inline(never)]
fn student(rec: &[u8]) -> Result<(), PrecheckError> {
    let text = std::str::from_utf8(rec).expect("records are UTF-8");
    assert!(!text.is_empty(), "records are never empty");
    Ok(())
}

#[cfg(all(test, feature = "lab-reference"))]
mod tests {
    use super::*;

    #[test]
    fn the_reference_returns_typed_errors_where_the_baseline_panics() {
        assert_eq!(precheck(LabImpl::Reference, b"{\"a\":1}"), Ok(()));
        assert_eq!(
            precheck(LabImpl::Reference, b"ab\xffcd"),
            Err(PrecheckError::NotUtf8 { valid_up_to: 2 })
        );
        assert_eq!(precheck(LabImpl::Reference, b""), Err(PrecheckError::Empty));
        assert_eq!(
            PrecheckError::NotUtf8 { valid_up_to: 2 }.reason(),
            DropReason::BadUtf8
        );
        assert!(std::panic::catch_unwind(|| baseline(b"ab\xffcd")).is_err());
    }
}
