//! Lab 08 (`course/labs/08-allocators`): the aggregate turns every event of a frame into a
//! StatsD-style metric name (`service.method.route`, the route's `/` as `.`) and counts the
//! frame's events per name, as a metrics flush would send them. The names are new strings,
//! made for the frame and thrown away with it. Edit [`student`].

use crate::codec::Frame;
use crate::event::{EventRef, split_key};
use pipeline_plan::LabImpl;

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/08-allocators/reference.rs"]
mod reference;

/// A frame's events counted per metric name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    /// Every name the frame's events have, sorted, with its count of events.
    pub counts: Vec<(String, u32)>,
    /// Records that do not decode as an event.
    pub undecodable: u32,
}

/// Called for every frame by the aggregate stage (do not edit).
pub fn names(imp: LabImpl, frame: &Frame) -> Names {
    match imp {
        LabImpl::Baseline => baseline(frame),
        LabImpl::Student => student(frame),
        LabImpl::Mutant(n) => mutants!(n, |m| m(frame)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::names(frame),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(frame),
    }
}

// ===== BASELINE (do not edit) =====
#[inline(never)]
fn baseline(frame: &Frame) -> Names {
    super::baseline_mark();
    let mut names: Vec<String> = Vec::new();
    let mut undecodable = 0;
    for rec in frame.records() {
        let Ok(ev) = EventRef::decode(rec) else {
            undecodable += 1;
            continue;
        };
        let Ok((service, route)) = split_key(ev.key) else {
            undecodable += 1;
            continue;
        };
        let method = ev.method.as_str().to_ascii_lowercase();
        let path = route.trim_start_matches('/').replace('/', ".");
        names.push(format!("{service}.{method}.{path}"));
    }
    names.sort();
    let mut counts: Vec<(String, u32)> = Vec::new();
    for name in names {
        match counts.last_mut() {
            Some((last, n)) if *last == name => *n += 1,
            _ => counts.push((name, 1)),
        }
    }
    Names {
        counts,
        undecodable,
    }
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/arena.rs");

// ===== STUDENT (lab 08: the frame's names in one region, freed at once) =====
#[inline(never)]
fn student(frame: &Frame) -> Names {
    let mut names: Vec<String> = Vec::new();
    let mut undecodable = 0;
    for rec in frame.records() {
        let Ok(ev) = EventRef::decode(rec) else {
            undecodable += 1;
            continue;
        };
        let Ok((service, route)) = split_key(ev.key) else {
            undecodable += 1;
            continue;
        };
        let method = ev.method.as_str().to_ascii_lowercase();
        let path = route.trim_start_matches('/').replace('/', ".");
        names.push(format!("{service}.{method}.{path}"));
    }
    names.sort();
    let mut counts: Vec<(String, u32)> = Vec::new();
    for name in names {
        match counts.last_mut() {
            Some((last, n)) if *last == name => *n += 1,
            _ => counts.push((name, 1)),
        }
    }
    Names {
        counts,
        undecodable,
    }
}
