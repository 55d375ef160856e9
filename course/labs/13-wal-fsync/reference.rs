// REFERENCE SOLUTION, lab 13 (for instructors and `observatory lab dev-check`; students: try
// first). Compiled into the pipeline from pipeline/src/slots/fsync.rs.
//
// An fsync waits for the device, and the sink writes nothing while it waits, so one fsync per
// batch puts a device wait in front of every later batch. Group commit: let writes gather and
// make them durable together, with one fsync, as late as the bound allows: when the oldest
// unsynced write is MAX_AGE old, or MAX_BATCHES batches are unsynced. (Syncing also when the
// queue is empty, `u.queued == 0`, makes writes durable sooner when the sink is idle; measure
// what it costs in latency.)

use super::{MAX_AGE, MAX_BATCHES, Unsynced};

pub fn should_sync(u: &Unsynced) -> bool {
    u.oldest >= MAX_AGE || u.batches >= MAX_BATCHES
}
