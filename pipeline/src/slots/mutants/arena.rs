// @generated from `mutants` in course/labs/08-allocators/lab.toml and the STUDENT function's
// signature; do not edit (course/tests/labs.rs and the authoring check fail when this
// file is stale). The lab's wrong but fast STUDENT bodies, compiled in with the
// pipeline's `lab-mutants` feature: `mutants!(n, |m| m(args))` calls mutant n (from 1).
// Included at the end of the slot's protected part: nothing here comes before the
// baseline or the dispatch.

/// How many mutants the lab of this slot has.
pub const MUTANTS: u8 = 2;

macro_rules! mutants {
    ($n:expr, |$m:ident| $e:expr) => {
        call_mutant!($n, [mutant_1, mutant_2], |$m| $e)
    };
}
// The slot's dispatch, above the `include!`, finds it through this `use`.
pub(crate) use mutants;

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_1(frame: &Frame) -> Names {
    let _ = frame;
    Names::default()
}

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_2(frame: &Frame) -> Names {
    let mut names: Vec<String> = Vec::new();
    let mut undecodable = 0;
    for rec in frame.records() {
        let Ok(ev) = EventRef::decode(rec) else { undecodable += 1; continue; };
        let Ok((service, route)) = split_key(ev.key) else { undecodable += 1; continue; };
        names.push(format!("{service}.{}.{}", ev.method.as_str(), route.trim_start_matches('/').replace('/', ".")));
    }
    names.sort();
    let mut counts: Vec<(String, u32)> = Vec::new();
    for name in names {
        match counts.last_mut() {
            Some((last, n)) if *last == name => *n += 1,
            _ => counts.push((name, 1)),
        }
    }
    Names { counts, undecodable }
}
