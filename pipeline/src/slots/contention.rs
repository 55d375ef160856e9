//! Lab 04 (`course/labs/04-hot-key-contention`): per-key totals shared by every thread that
//! applies frames (the aggregate stage's workers; the kernel's threads). The keys are
//! Zipf-skewed, so a few of them get most of the events. Edit [`student`] (and the type it
//! returns).

use crate::codec::Frame;
use crate::event::EventRef;
use pipeline_plan::LabImpl;
use rustc_hash::FxHashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/04-hot-key-contention/reference.rs"]
mod reference;

/// One key's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Totals {
    pub events: u64,
    pub latency_us: u64,
    pub bytes: u64,
}

impl Totals {
    /// These totals with one more event.
    pub fn add(&mut self, ev: &EventRef<'_>) {
        self.events += 1;
        self.latency_us += u64::from(ev.latency_us);
        self.bytes += ev.bytes;
    }

    /// These totals with another part's added (the order parts are merged in does not matter).
    pub fn merge(&mut self, other: Totals) {
        self.events += other.events;
        self.latency_us += other.latency_us;
        self.bytes += other.bytes;
    }
}

/// Per-key totals that several threads add frames to at once.
///
/// The specification (`pipeline conformance --slot contention`): once `add` has returned, every
/// decodable event of its frame is in the totals of its key (undecodable records are skipped),
/// whichever threads call `add` and however many at once; `snapshot` is every key's totals.
pub trait KeyTotals: Send + Sync {
    /// Add every decodable event of `frame` to its key's totals.
    fn add(&self, frame: &Frame);
    /// Every key's totals so far, in any order.
    fn snapshot(&self) -> Vec<(Vec<u8>, Totals)>;
}

/// A map's entries, for [`KeyTotals::snapshot`].
pub fn entries(map: &FxHashMap<Vec<u8>, Totals>) -> Vec<(Vec<u8>, Totals)> {
    map.iter().map(|(k, t)| (k.clone(), *t)).collect()
}

/// A lock that a panicking holder does not poison for everyone else.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The totals implementation `imp`, empty (do not edit).
pub fn key_totals(imp: LabImpl) -> Box<dyn KeyTotals> {
    match imp {
        LabImpl::Baseline => baseline(),
        LabImpl::Student => student(),
        LabImpl::Mutant(n) => mutants!(n, |m| m()),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::key_totals(),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(),
    }
}

// ===== BASELINE (do not edit) =====
fn baseline() -> Box<dyn KeyTotals> {
    Box::new(OneLock::default())
}

/// One map behind one lock, taken for every event.
#[derive(Default)]
struct OneLock {
    map: Mutex<FxHashMap<Vec<u8>, Totals>>,
}

impl KeyTotals for OneLock {
    #[inline(never)]
    fn add(&self, frame: &Frame) {
        super::baseline_mark();
        for rec in frame.records() {
            if let Ok(ev) = EventRef::decode(rec) {
                let mut map = lock(&self.map);
                match map.get_mut(ev.key) {
                    Some(t) => t.add(&ev),
                    None => map.entry(ev.key.to_vec()).or_default().add(&ev),
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<(Vec<u8>, Totals)> {
        entries(&lock(&self.map))
    }
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/contention.rs");

// ===== STUDENT (lab 04: totals that two threads can add to without queueing for one lock) =====
#[inline(never)]
fn student() -> Box<dyn KeyTotals> {
    Box::new(StudentTotals::default())
}

/// Your totals: a copy of the baseline's to start from.
#[derive(Default)]
struct StudentTotals {
    map: Mutex<FxHashMap<Vec<u8>, Totals>>,
}

impl KeyTotals for StudentTotals {
    #[inline(never)]
    fn add(&self, frame: &Frame) {
        for rec in frame.records() {
            if let Ok(ev) = EventRef::decode(rec) {
                let mut map = lock(&self.map);
                match map.get_mut(ev.key) {
                    Some(t) => t.add(&ev),
                    None => map.entry(ev.key.to_vec()).or_default().add(&ev),
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<(Vec<u8>, Totals)> {
        entries(&lock(&self.map))
    }
}
