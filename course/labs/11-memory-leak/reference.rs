// REFERENCE SOLUTION, lab 11 (for instructors and `observatory lab dev-check`; students: try
// first). Compiled into the pipeline from pipeline/src/slots/leak.rs.
//
// The heap flamegraph (`/debug/pprof/heap/flamegraph` of the parse stage) puts nearly all live
// bytes under `leak::baseline` -> `<[u8]>::to_vec` and the set's growth: every record is kept
// forever. Duplicate deliveries arrive close together, so remember a bounded window of recent
// records, and by fingerprint rather than by copy.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{LazyLock, Mutex, PoisonError};

const RECENT: usize = 65_536;

struct Recent {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

static HASHER: LazyLock<RandomState> = LazyLock::new(RandomState::new);
static RECENT_SEEN: Mutex<Option<Recent>> = Mutex::new(None);

pub fn remember(rec: &[u8]) -> bool {
    let fingerprint = HASHER.hash_one(rec);
    let mut guard = RECENT_SEEN.lock().unwrap_or_else(PoisonError::into_inner);
    let r = guard.get_or_insert_with(|| Recent {
        set: HashSet::with_capacity(RECENT),
        order: VecDeque::with_capacity(RECENT),
    });
    if r.set.contains(&fingerprint) {
        return true;
    }
    if r.order.len() == RECENT
        && let Some(old) = r.order.pop_front()
    {
        r.set.remove(&old);
    }
    r.set.insert(fingerprint);
    r.order.push_back(fingerprint);
    false
}
