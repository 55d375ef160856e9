//! Course lab code slots: small hooks in the pipeline that run only when a lab selects them
//! (knobs `lab_slot` and `lab_impl`), so a lab's baseline, the student's code and the reference
//! solution run A/B from one binary. Each slot file holds the dispatch and the BASELINE (do
//! not edit) and the STUDENT function (the lab's task); the reference solution lives beside
//! its lab, in `course/labs/NN-slug/reference.rs`. With `lab_slot = none` (production) no hook
//! does anything beyond one relaxed atomic load.

pub mod blocking;
pub mod deadlock;
pub mod errors;
pub mod hotspot;
pub mod iterators;
pub mod leak;
pub mod percentile;

use pipeline_plan::{LabImpl, LabSlot};
use std::sync::atomic::{AtomicU8, Ordering};

static SLOT: AtomicU8 = AtomicU8::new(0);
static IMPL: AtomicU8 = AtomicU8::new(0);

/// Select the process's active slot and implementation (at stage start-up).
pub fn select(slot: LabSlot, imp: LabImpl) {
    let s = LabSlot::ALL.iter().position(|x| *x == slot).unwrap_or(0);
    SLOT.store(s as u8, Ordering::Relaxed);
    IMPL.store(imp as u8, Ordering::Relaxed);
}

/// The implementation to run if `slot` is the active one.
#[inline]
pub fn active(slot: LabSlot) -> Option<LabImpl> {
    let s = SLOT.load(Ordering::Relaxed);
    if s == 0 || LabSlot::ALL[s as usize] != slot {
        return None;
    }
    Some(match IMPL.load(Ordering::Relaxed) {
        1 => LabImpl::Student,
        2 => LabImpl::Reference,
        _ => LabImpl::Baseline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_selected_slot_is_active() {
        select(LabSlot::Hotspot, LabImpl::Reference);
        assert_eq!(active(LabSlot::Hotspot), Some(LabImpl::Reference));
        assert_eq!(active(LabSlot::Leak), None);
        select(LabSlot::None, LabImpl::Baseline);
        assert_eq!(active(LabSlot::Hotspot), None);
    }
}
