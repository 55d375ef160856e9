//! Course lab code slots: small hooks in the pipeline that run only when a lab selects them
//! (knobs `lab_slot` and `lab_impl`), so a lab's baseline, the student's code and the reference
//! solution run A/B from one binary. Each slot file holds the dispatch and the BASELINE (do
//! not edit) and the STUDENT function (the lab's task); the reference solution lives beside
//! its lab, in `course/labs/NN-slug/reference.rs`. With `lab_slot = none` (production) no hook
//! does anything: the hooks are resolved once at start-up ([`Hooks`]).

/// `call_mutant!(n, [mutant_1, mutant_2], |m| m(args))`: calls mutant `n` (from 1) of a slot's
/// list, binding `m` to it: each slot's generated `mutants!` (`slots/mutants/<slot>.rs`, from
/// its lab's `mutants`) forwards here. Only with the `lab-mutants` feature; `n` is checked
/// against the slot's `MUTANTS` before a mutant runs.
#[cfg(feature = "lab-mutants")]
macro_rules! call_mutant {
    ($n:expr, [$($f:ident),*], |$m:ident| $e:expr) => {{
        let n: u8 = $n;
        call_mutant!(@at 1u8, n, [$($f),*], |$m| $e)
    }};
    (@at $k:expr, $n:ident, [], |$m:ident| $e:expr) => {
        unreachable!("no mutant {} in this slot (checked before it runs)", $n)
    };
    (@at $k:expr, $n:ident, [$f:ident $(, $rest:ident)*], |$m:ident| $e:expr) => {
        if $n == $k {
            let $m = $f;
            $e
        } else {
            call_mutant!(@at $k + 1, $n, [$($rest),*], |$m| $e)
        }
    };
}

#[cfg(not(feature = "lab-mutants"))]
macro_rules! call_mutant {
    ($n:expr, [$($f:ident),*], |$m:ident| $e:expr) => {
        unreachable!(
            "mutant {} needs the `lab-mutants` feature (checked before it runs)",
            $n
        )
    };
}

pub mod arena;
pub mod batcher;
pub mod blocking;
pub mod compaction;
pub mod conformance;
pub mod contention;
pub mod context;
pub mod deadlock;
pub mod errors;
pub mod fanout;
pub mod fsync;
pub mod hotspot;
pub mod iterators;
pub mod leak;
pub mod partition;
pub mod percentile;
pub mod recall;
pub mod reconcile;
pub mod replay;
pub mod threads;
pub mod zerocopy;

use pipeline_plan::{LabImpl, LabSlot};

/// What a baseline touches first, so that it never has the same machine code as the STUDENT
/// function, which starts as a copy of it: the compiler may merge identical functions, and a
/// profile would then credit one side's work to the other's name. One or two instructions.
static BASELINE_MARK: u8 = 0;

/// Called first in every BASELINE (see [`BASELINE_MARK`]).
#[inline(always)]
pub(crate) fn baseline_mark() {
    std::hint::black_box(&BASELINE_MARK);
}

/// Whether this binary carries the reference solutions (the `lab-reference` cargo feature, on
/// by default; the production image is built without it).
pub const HAS_REFERENCE: bool = cfg!(feature = "lab-reference");

/// Whether this binary carries the labs' mutants (the `lab-mutants` cargo feature, off by
/// default: the labs' authoring check builds with it). A mutant runs only in `pipeline
/// conformance` (`LabImpl::Mutant`, which no knob selects).
pub const HAS_MUTANTS: bool = cfg!(feature = "lab-mutants");

/// The lab hooks of one process, resolved once at start-up from the `lab_slot` and `lab_impl`
/// knobs: [`Hooks::NONE`] (production) answers `None` for every slot, so no lab code runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    active: Option<(LabSlot, LabImpl)>,
}

impl Hooks {
    /// No lab slot selected.
    pub const NONE: Hooks = Hooks { active: None };

    /// The hooks for these knobs; an error when they ask for a reference solution this binary
    /// does not carry.
    pub fn resolve(slot: LabSlot, imp: LabImpl) -> Result<Hooks, String> {
        if slot == LabSlot::None {
            return Ok(Hooks::NONE);
        }
        if let LabImpl::Mutant(_) = imp {
            return Err(format!(
                "lab_impl={imp}: a lab's mutant runs only in `pipeline conformance` (the labs' authoring check), not in a pipeline"
            ));
        }
        if imp == LabImpl::Reference && !HAS_REFERENCE {
            return Err(format!(
                "lab_impl=reference: this pipeline binary was built without the reference solutions (cargo feature `lab-reference`), so lab slot `{}` cannot run them",
                slot.as_str()
            ));
        }
        Ok(Hooks {
            active: Some((slot, imp)),
        })
    }

    /// The implementation to run if `slot` is the selected one.
    #[inline]
    pub fn get(self, slot: LabSlot) -> Option<LabImpl> {
        match self.active {
            Some((s, imp)) if s == slot => Some(imp),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_selected_slot_is_active() {
        let hooks = Hooks::resolve(LabSlot::Hotspot, LabImpl::Student).unwrap();
        assert_eq!(hooks.get(LabSlot::Hotspot), Some(LabImpl::Student));
        assert_eq!(hooks.get(LabSlot::Leak), None);
        let none = Hooks::resolve(LabSlot::None, LabImpl::Reference).unwrap();
        assert_eq!(none, Hooks::NONE);
        assert_eq!(none.get(LabSlot::Hotspot), None);
    }

    #[test]
    fn a_mutant_never_runs_in_a_pipeline() {
        let e = Hooks::resolve(LabSlot::Hotspot, LabImpl::Mutant(1)).unwrap_err();
        assert!(e.contains("mutant-1") && e.contains("conformance"), "{e}");
    }

    #[test]
    fn a_reference_is_refused_by_a_binary_without_them() {
        let r = Hooks::resolve(LabSlot::Hotspot, LabImpl::Reference);
        if HAS_REFERENCE {
            assert_eq!(r.unwrap().get(LabSlot::Hotspot), Some(LabImpl::Reference));
        } else {
            assert!(r.unwrap_err().contains("lab-reference"));
        }
    }
}
