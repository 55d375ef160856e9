//! Lab 01 (`course/labs/01-tasks-and-workers`): the parse stage asks a remote service about
//! every batch, one request per group of [`GROUP`] records (simulated: each request waits
//! between 0.3 and 2 ms of wall time and uses no CPU; the answer depends only on the key, the
//! latency on the key too, so answers do not come back in the order they were asked).
//! Edit [`student`].

use pipeline_plan::LabImpl;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/01-tasks-and-workers/reference.rs"]
mod reference;

/// Records per request.
pub const GROUP: u32 = 32;

/// Requests made so far (the lab's correctness check counts them: one request per key).
static REQUESTS: AtomicU64 = AtomicU64::new(0);

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What the service answers for `key` (the correctness check's expected value).
pub fn answer(key: u64) -> u64 {
    mix(key ^ 0x5eed_0fa1)
}

/// How long the service takes to answer `key`.
pub fn latency(key: u64) -> Duration {
    Duration::from_micros(300 + mix(key) % 1700)
}

/// The service call: it waits without using the CPU, then answers (do not edit).
pub async fn request(key: u64) -> u64 {
    tokio::time::sleep(latency(key)).await;
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    answer(key)
}

/// How many requests [`request`] has answered in this process.
pub fn requests() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

/// The keys of a batch: one per group of [`GROUP`] records.
pub fn keys(batch_seq: u64, records: u32) -> Vec<u64> {
    (0..u64::from(records.div_ceil(GROUP)))
        .map(|g| (batch_seq << 16) ^ g)
        .collect()
}

/// Called once per batch by the parse stage (do not edit): the answers, in the order of `keys`.
pub async fn enrich(imp: LabImpl, keys: Vec<u64>) -> Vec<u64> {
    match imp {
        LabImpl::Baseline => baseline(keys).await,
        LabImpl::Student => student(keys).await,
        LabImpl::Mutant(n) => mutants!(n, |m| m(keys).await),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::enrich(keys).await,
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(keys).await,
    }
}

// ===== BASELINE (do not edit) =====
async fn baseline(keys: Vec<u64>) -> Vec<u64> {
    super::baseline_mark();
    let mut answers = Vec::with_capacity(keys.len());
    for key in keys {
        answers.push(request(key).await);
    }
    answers
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/fanout.rs");

// ===== STUDENT (lab 01: have every request of the batch in flight at once) =====
async fn student(keys: Vec<u64>) -> Vec<u64> {
    let mut answers = Vec::with_capacity(keys.len());
    for key in keys {
        answers.push(request(key).await);
    }
    answers
}
