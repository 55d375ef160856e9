//! Lab 17 (`course/labs/17-threads-and-channels`): a checksum of every record of a parse batch,
//! pure CPU work (no waiting), computed on the thread that parses the batch. Edit [`student`].

use crate::codec::Frame;
use pipeline_plan::LabImpl;

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/17-threads-and-channels/reference.rs"]
mod reference;

/// Passes of [`checksum`] over a record: a few microseconds of CPU per record.
const ROUNDS: usize = 32;

/// One record's checksum (do not edit): CPU work, a few microseconds.
pub fn checksum(rec: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for _ in 0..ROUNDS {
        for &b in rec {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// A batch's checksums, combined: the same whatever order the records are summed in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    pub records: u64,
    pub sum: u64,
}

impl Digest {
    /// This digest with one more record's checksum.
    pub fn plus(self, checksum: u64) -> Digest {
        Digest {
            records: self.records + 1,
            sum: self.sum.wrapping_add(checksum),
        }
    }

    /// Two digests of disjoint parts of a batch, combined.
    pub fn merge(self, other: Digest) -> Digest {
        Digest {
            records: self.records + other.records,
            sum: self.sum.wrapping_add(other.sum),
        }
    }
}

/// Called for every batch by the parse stage (do not edit).
pub fn digest(imp: LabImpl, frame: &Frame) -> Digest {
    match imp {
        LabImpl::Baseline => baseline(frame),
        LabImpl::Student => student(frame),
        LabImpl::Mutant(n) => mutants!(n, |m| m(frame)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::digest(frame),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(frame),
    }
}

// ===== BASELINE (do not edit) =====
#[inline(never)]
fn baseline(frame: &Frame) -> Digest {
    super::baseline_mark();
    frame
        .records()
        .fold(Digest::default(), |d, rec| d.plus(checksum(rec)))
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/threads.rs");

// ===== STUDENT (lab 17: spread the checksums over OS threads) =====
#[inline(never)]
fn student(frame: &Frame) -> Digest {
    frame
        .records()
        .fold(Digest::default(), |d, rec| d.plus(checksum(rec)))
}
