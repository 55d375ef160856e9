//! Lab 12 (`course/labs/12-criterion`): the 99th percentile of a batch of latencies. The lab
//! is to write a criterion benchmark for it (`course/benches/lab12_student.rs`) and prove a
//! faster [`student`] with it.

use pipeline_plan::LabImpl;

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/12-criterion/reference.rs"]
mod reference;

/// The 99th percentile (nearest rank) of `values`, 0 when empty; may reorder `values` (do not
/// edit).
pub fn p99(imp: LabImpl, values: &mut [u32]) -> u32 {
    match imp {
        LabImpl::Baseline => baseline(values),
        LabImpl::Student => student(values),
        LabImpl::Mutant(n) => mutants!(n, |m| m(values)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::p99(values),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(values),
    }
}

/// The nearest-rank index of the 99th percentile.
pub fn rank(len: usize) -> usize {
    (len * 99).div_ceil(100).saturating_sub(1)
}

// ===== BASELINE (do not edit) =====
#[inline(never)]
fn baseline(values: &mut [u32]) -> u32 {
    super::baseline_mark();
    if values.is_empty() {
        return 0;
    }
    values.sort();
    values[rank(values.len())]
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/percentile.rs");

// ===== STUDENT (lab 12: a faster p99, proven with your benchmark) =====
#[inline(never)]
fn student(values: &mut [u32]) -> u32 {
    if values.is_empty() {
        return 0;
    }
    values.sort();
    values[rank(values.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_implementation_agrees_with_a_sort() {
        for n in [0usize, 1, 2, 99, 100, 101, 1000, 4097] {
            let values: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % 10007).collect();
            let mut sorted = values.clone();
            sorted.sort();
            let want = sorted.get(rank(n)).copied().unwrap_or(0);
            for imp in [LabImpl::Baseline, LabImpl::Student, LabImpl::Reference] {
                assert_eq!(p99(imp, &mut values.clone()), want, "{imp:?} n={n}");
            }
        }
    }
}
