//! The counting allocator loses no update, whether a thread owns its counter slot (plain adds)
//! or shares the overflow slot with others (atomic adds): 100 threads, more than there are
//! owned slots, each make a known number of allocations at the same time.

use pipeline::alloc::{Dispatch, totals};
use std::sync::{Arc, Barrier};

#[global_allocator]
static ALLOCATOR: Dispatch = Dispatch;

const THREADS: usize = 100;
const PER_THREAD: u64 = 20_000;
const SIZE: usize = 48;

#[test]
fn concurrent_allocations_are_all_counted() {
    let barrier = Arc::new(Barrier::new(THREADS));
    let (count0, bytes0) = totals();
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..PER_THREAD {
                    std::hint::black_box(Box::new([0u8; SIZE]));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("allocating thread");
    }
    let (count1, bytes1) = totals();
    let want = THREADS as u64 * PER_THREAD;
    let (count, bytes) = (count1 - count0, bytes1 - bytes0);
    // Spawning and joining allocate a little too (stacks are mmapped, not counted); a lost
    // update would show as fewer than `want`.
    assert!(
        count >= want && count < want + 50 * THREADS as u64,
        "{count} allocations counted, {want} made"
    );
    assert!(
        bytes >= want * SIZE as u64 && bytes < want * SIZE as u64 + (1 << 20),
        "{bytes} bytes counted, {} allocated",
        want * SIZE as u64
    );
}
