//! Lab 13 (`course/labs/13-wal-fsync`): the sink's group-commit policy. After writing each
//! batch to its log the sink asks [`should_sync`] whether to fsync now, which makes every
//! write so far durable at once (one fsync commits the whole group), or to leave the bytes in
//! the page cache a little longer. Edit [`student`].

use pipeline_plan::LabImpl;
use std::time::Duration;

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/13-wal-fsync/reference.rs"]
mod reference;

/// The durability bound of the lab: no write may stay unsynced for [`MAX_AGE`] or longer ...
pub const MAX_AGE: Duration = Duration::from_millis(100);
/// ... nor may more than [`MAX_BATCHES`] batches be written and not synced.
pub const MAX_BATCHES: u32 = 64;

/// What the sink knows when it decides, just after writing a batch (do not edit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsynced {
    /// Batches written since the last fsync, this one included (at least 1).
    pub batches: u32,
    /// How long ago the oldest of them was written.
    pub oldest: Duration,
    /// Batches waiting in the sink's queue behind this one.
    pub queued: usize,
}

impl Unsynced {
    /// Whether the durability bound says this must be synced now (the specification).
    pub fn must_sync(&self) -> bool {
        self.oldest >= MAX_AGE || self.batches >= MAX_BATCHES
    }
}

/// Called by the sink after each batch it writes (do not edit): fsync now?
pub fn should_sync(imp: LabImpl, u: &Unsynced) -> bool {
    match imp {
        LabImpl::Baseline => baseline(u),
        LabImpl::Student => student(u),
        LabImpl::Mutant(n) => mutants!(n, |m| m(u)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::should_sync(u),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(u),
    }
}

// ===== BASELINE (do not edit) =====
#[inline(never)]
fn baseline(u: &Unsynced) -> bool {
    super::baseline_mark();
    // Every batch durable before the next: one fsync per batch.
    u.batches >= 1
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/fsync.rs");

// ===== STUDENT (lab 13: commit batches in groups, within the durability bound) =====
#[inline(never)]
fn student(u: &Unsynced) -> bool {
    // Every batch durable before the next: one fsync per batch.
    u.batches >= 1
}
