//! Lab 03 (`course/labs/03-blocking-executor`): a per-batch lookup through a synchronous client
//! (simulated: it takes [`LOOKUP`] of wall time and no CPU), made from the parse stage's async
//! tasks. Edit [`student`].

use pipeline_plan::LabImpl;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/03-blocking-executor/reference.rs"]
mod reference;

/// How long one lookup takes.
pub const LOOKUP: Duration = Duration::from_millis(4);

/// Lookups made so far (the lab's correctness check counts them: every lookup must be made).
static LOOKUPS: AtomicU64 = AtomicU64::new(0);

/// The synchronous client call: it blocks the calling thread (do not edit).
pub fn blocking_lookup() -> u64 {
    std::thread::sleep(LOOKUP);
    LOOKUPS.fetch_add(1, Ordering::Relaxed);
    1
}

/// How many lookups [`blocking_lookup`] has made in this process.
pub fn lookups() -> u64 {
    LOOKUPS.load(Ordering::Relaxed)
}

/// Called once per batch by the parse stage (do not edit).
pub async fn lookup(imp: LabImpl) -> u64 {
    match imp {
        LabImpl::Baseline => baseline().await,
        LabImpl::Student => student().await,
        LabImpl::Mutant(n) => mutants!(n, |m| m().await),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::lookup().await,
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline().await,
    }
}

// ===== BASELINE (do not edit) =====
async fn baseline() -> u64 {
    super::baseline_mark();
    blocking_lookup()
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/blocking.rs");

// ===== STUDENT (lab 03: make the lookup stop blocking the runtime) =====
async fn student() -> u64 {
    blocking_lookup()
}
