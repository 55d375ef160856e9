//! Lab 10 (`course/labs/10-deadlock`): bookkeeping the aggregate stage does each time it closes
//! windows. With this slot on, a bounded run never finishes: find out where it is stuck (gdb or
//! the runtime), then fix [`student`].

use pipeline_plan::LabImpl;
use std::sync::{Mutex, MutexGuard, PoisonError};

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/10-deadlock/reference.rs"]
mod reference;

/// Totals of the window closes.
#[derive(Debug, Default)]
pub struct Book {
    pub closes: u64,
    pub windows: u64,
}

pub static BOOK: Mutex<Book> = Mutex::new(Book {
    closes: 0,
    windows: 0,
});

pub fn book() -> MutexGuard<'static, Book> {
    BOOK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Called by the aggregate stage after every close (do not edit).
pub fn on_close(imp: LabImpl, windows: usize) {
    match imp {
        LabImpl::Baseline => baseline(windows),
        LabImpl::Student => student(windows),
        LabImpl::Mutant(n) => mutants!(n, |m| m(windows)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::on_close(windows),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(windows),
    }
}

// ===== BASELINE (do not edit) =====
#[inline(never)]
fn baseline(windows: usize) {
    super::baseline_mark();
    let mut b = book();
    b.closes += 1;
    if windows > 0 {
        add_windows(windows as u64);
    }
}

fn add_windows(n: u64) {
    book().windows += n;
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/deadlock.rs");

// ===== STUDENT (lab 10: fix the hang) =====
#[inline(never)]
fn student(windows: usize) {
    let mut b = book();
    b.closes += 1;
    if windows > 0 {
        add_windows(windows as u64);
    }
}

#[cfg(all(test, feature = "lab-reference"))]
mod tests {
    use super::*;

    #[test]
    fn the_reference_books_every_close_without_hanging() {
        // One guard at a time: two `book()` calls in one expression would hold the first guard
        // while taking the second — the very deadlock of this lab.
        let totals = || {
            let b = book();
            (b.closes, b.windows)
        };
        let before = totals();
        reference::on_close(3);
        reference::on_close(0);
        let after = totals();
        assert_eq!(after.0 - before.0, 2);
        assert_eq!(after.1 - before.1, 3);
    }
}
