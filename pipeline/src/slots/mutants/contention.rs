// @generated from `mutants` in course/labs/04-hot-key-contention/lab.toml and the STUDENT function's
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
fn mutant_1() -> Box<dyn KeyTotals> {
    struct Nothing;
    impl KeyTotals for Nothing {
        fn add(&self, _: &Frame) {}
        fn snapshot(&self) -> Vec<(Vec<u8>, Totals)> {
            Vec::new()
        }
    }
    Box::new(Nothing)
}

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_2() -> Box<dyn KeyTotals> {
    #[derive(Default)]
    struct Overwrites(Mutex<FxHashMap<Vec<u8>, Totals>>);
    impl KeyTotals for Overwrites {
        fn add(&self, frame: &Frame) {
            let mut local: FxHashMap<&[u8], Totals> = FxHashMap::default();
            for rec in frame.records() {
                if let Ok(ev) = EventRef::decode(rec) {
                    local.entry(ev.key).or_default().add(&ev);
                }
            }
            let mut map = lock(&self.0);
            for (key, t) in local {
                map.insert(key.to_vec(), t);
            }
        }
        fn snapshot(&self) -> Vec<(Vec<u8>, Totals)> {
            entries(&lock(&self.0))
        }
    }
    Box::new(Overwrites::default())
}
