// REFERENCE SOLUTION, lab 10 (for instructors and `observatory lab dev-check`; students: try
// first). Compiled into the pipeline from pipeline/src/slots/deadlock.rs.
//
// `gdb -p <aggregate pid> -batch -ex 'thread apply all bt'` shows a tokio worker parked in
// `futex_wait` under `std::sync::Mutex::lock`, called from `deadlock::add_windows`, called from
// `deadlock::baseline`, which already holds the same lock: std's Mutex is not re-entrant, so
// the thread waits for itself forever. Update everything under the one guard.

use super::book;

pub fn on_close(windows: usize) {
    let mut b = book();
    b.closes += 1;
    b.windows += windows as u64;
}
