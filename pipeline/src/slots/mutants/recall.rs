// @generated from `mutants` in course/labs/16-recall-aggregate/lab.toml and the STUDENT function's
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
fn mutant_1(frame: &Frame) -> Tally {
    let _ = frame;
    Tally::default()
}

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_2(frame: &Frame) -> Tally {
    let mut t = Tally::default();
    let mut per_key: HashMap<&[u8], u64> = HashMap::new();
    for rec in frame.records() {
        let Ok(ev) = EventRef::decode(rec) else {
            t.undecodable += 1;
            continue;
        };
        match ev.status / 100 {
            2 | 3 => t.ok += 1,
            4 => t.client_errors += 1,
            _ => t.server_errors += 1,
        }
        *per_key.entry(ev.key).or_insert(0) += 1;
    }
    t.distinct_keys = per_key.len() as u64;
    t.busiest_key_events = per_key.values().copied().max().unwrap_or(0);
    t
}
