// REFERENCE SOLUTION, lab 08 (for instructors and `observatory lab dev-check`; students: try
// first). Compiled into the pipeline from pipeline/src/slots/arena.rs.
//
// The baseline asks the allocator for three strings per event (the lowercased method, the
// rewritten route, the name), and a sorted Vec<String> then moves them around and frees them
// one by one. Every one of those names dies with the frame: they share one lifetime, so they
// can share one region. A bump arena (`bumpalo::Bump`) is that region: one block asked for
// up front, each name written into the next free bytes (`&'bump str`), and the whole block
// freed at once when `bump` goes out of scope. The borrow checker holds the line: a `&'bump
// str` cannot leave this function, so the names that go into `Names` are copied out, once
// per distinct name instead of once per event.

use super::Names;
use crate::codec::Frame;
use crate::event::{EventRef, split_key};
use bumpalo::Bump;
use bumpalo::collections::{String as BumpString, Vec as BumpVec};

pub fn names(frame: &Frame) -> Names {
    // A name is never longer than its compact event, and a &str is 16 bytes: one block holds
    // the whole frame's names.
    let records = frame.header.record_count as usize;
    let bump = Bump::with_capacity(frame.payload.len() + 16 * records + 64);
    let mut names = BumpVec::with_capacity_in(records, &bump);
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
        let method = ev.method.as_str();
        let mut name =
            BumpString::with_capacity_in(service.len() + method.len() + route.len() + 2, &bump);
        name.push_str(service);
        name.push('.');
        for c in method.chars() {
            name.push(c.to_ascii_lowercase());
        }
        name.push('.');
        for (i, segment) in route.trim_start_matches('/').split('/').enumerate() {
            if i > 0 {
                name.push('.');
            }
            name.push_str(segment);
        }
        names.push(name.into_bump_str());
    }
    names.sort_unstable();
    let mut counts: Vec<(String, u32)> = Vec::new();
    for &name in names.iter() {
        match counts.last_mut() {
            Some((last, n)) if last == name => *n += 1,
            _ => counts.push((name.to_owned(), 1)),
        }
    }
    Names {
        counts,
        undecodable,
    }
}
