//! The process's global allocator: the system allocator or jemalloc, chosen once at start-up, and
//! wrapped in a cheap counter of allocations and allocated bytes.
//!
//! Rust fixes the global allocator at compile time, so the `allocator` knob is honoured by a
//! dispatcher: on the very first allocation it reads `PIPELINE_KNOB_ALLOCATOR` with `getenv`
//! (which does not allocate) and sticks to that choice for the life of the process. A process
//! whose config asks for the other allocator re-executes itself with the variable set (see
//! `main.rs`), so memory is never freed by an allocator that did not allocate it.
//!
//! Counting is a plain add, not an atomic read-modify-write: each of the first `SHARDS - 1`
//! threads owns a cache-line-padded slot that only it writes (a relaxed load and store: no
//! `lock` prefix, no cache-line traffic); readers sum the slots. Threads past that share the
//! last slot with atomic adds. `set_counting(false)` turns it off (the `telemetry` knob).

use pipeline_plan::Allocator;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed};
use tikv_jemallocator::Jemalloc;

const UNSET: u8 = 0;
const SYSTEM: u8 = 1;
const JEMALLOC: u8 = 2;
const SHARDS: usize = 64;
/// The slot shared, with atomic adds, by every thread past the first `SHARDS - 1`.
const SHARED: usize = SHARDS - 1;

static CHOICE: AtomicU8 = AtomicU8::new(UNSET);
static COUNTING: AtomicBool = AtomicBool::new(true);
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

#[repr(align(128))]
struct Shard {
    allocations: AtomicU64,
    bytes: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const SHARD: Shard = Shard {
    allocations: AtomicU64::new(0),
    bytes: AtomicU64::new(0),
};
static COUNTS: [Shard; SHARDS] = [SHARD; SHARDS];

thread_local! {
    // Const-initialised and without a destructor: safe to touch from inside the allocator.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The global allocator installed by the `pipeline` binary (which also exports jemalloc's
/// `malloc_conf` to turn heap profiling on).
pub struct Dispatch;

#[inline]
fn choice() -> u8 {
    match CHOICE.load(Relaxed) {
        UNSET => {
            // SAFETY: getenv with a NUL-terminated name; it does not allocate. The returned
            // pointer is read immediately, before anything could change the environment.
            let value = unsafe { libc::getenv(c"PIPELINE_KNOB_ALLOCATOR".as_ptr()) };
            let system = !value.is_null()
                // SAFETY: getenv returned a valid NUL-terminated string.
                && unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes() == b"system";
            let chosen = if system { SYSTEM } else { JEMALLOC };
            // Every thread computes the same answer, so a lost race is harmless.
            let _ = CHOICE.compare_exchange(UNSET, chosen, Relaxed, Relaxed);
            CHOICE.load(Relaxed)
        }
        c => c,
    }
}

#[inline]
fn count(size: usize) {
    if !COUNTING.load(Relaxed) {
        return;
    }
    let slot = SLOT
        .try_with(|s| {
            let mut v = s.get();
            if v == usize::MAX {
                v = NEXT_SLOT.fetch_add(1, Relaxed).min(SHARED);
                s.set(v);
            }
            v
        })
        .unwrap_or(SHARED);
    let shard = &COUNTS[slot];
    if slot == SHARED {
        shard.allocations.fetch_add(1, Relaxed);
        shard.bytes.fetch_add(size as u64, Relaxed);
    } else {
        // This thread is the slot's only writer, so a load and a store lose no update.
        shard
            .allocations
            .store(shard.allocations.load(Relaxed) + 1, Relaxed);
        shard
            .bytes
            .store(shard.bytes.load(Relaxed) + size as u64, Relaxed);
    }
}

// SAFETY: every method forwards to one allocator, the same one for the whole life of the
// process (`choice()` never changes once set), so each pointer is freed by its allocator.
unsafe impl GlobalAlloc for Dispatch {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe {
            if choice() == SYSTEM {
                System.alloc(layout)
            } else {
                Jemalloc.alloc(layout)
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe {
            if choice() == SYSTEM {
                System.alloc_zeroed(layout)
            } else {
                Jemalloc.alloc_zeroed(layout)
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from the same allocator (see the impl's safety note).
        unsafe {
            if choice() == SYSTEM {
                System.dealloc(ptr, layout)
            } else {
                Jemalloc.dealloc(ptr, layout)
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: `ptr` came from the same allocator; arguments are the caller's.
        unsafe {
            if choice() == SYSTEM {
                System.realloc(ptr, layout, new_size)
            } else {
                Jemalloc.realloc(ptr, layout, new_size)
            }
        }
    }
}

/// The allocator this process is using.
pub fn active() -> Allocator {
    if choice() == SYSTEM {
        Allocator::System
    } else {
        Allocator::Jemalloc
    }
}

/// Turn allocation counting on or off.
pub fn set_counting(on: bool) {
    COUNTING.store(on, Relaxed);
}

/// Allocations and allocated bytes since start (reallocations count as one allocation of the
/// new size). Only meaningful when this module's [`Dispatch`] is the global allocator.
pub fn totals() -> (u64, u64) {
    COUNTS.iter().fold((0, 0), |(a, b), s| {
        (a + s.allocations.load(Relaxed), b + s.bytes.load(Relaxed))
    })
}
