//! What `pipeline conformance` reports about a lab slot's implementation, and what
//! `observatory lab check` reads before it measures anything: correctness before speed.

use serde::{Deserialize, Serialize};

/// The first input on which an implementation disagreed with the slot's specification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// Which case (0-based, in the order the cases are generated from the seed).
    pub case: u64,
    /// The input, shown the way a person can read it (long inputs are cut).
    pub input: String,
    pub expected: String,
    pub got: String,
}

/// One implementation of one slot checked against the slot's specification on the cases a
/// seed generates (plus the slot's fixed cases).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conformance {
    pub slot: String,
    pub implementation: String,
    pub seed: u64,
    /// Cases checked (all of them when it conforms; up to the first mismatch otherwise).
    pub cases: u64,
    pub mismatch: Option<Mismatch>,
}

impl Conformance {
    /// A check that found no answer at all to compare (a hang, a crashed process): one
    /// mismatch for the whole run of cases.
    pub fn failed(
        slot: String,
        implementation: String,
        seed: u64,
        expected: String,
        got: String,
    ) -> Conformance {
        Conformance {
            slot,
            implementation,
            seed,
            cases: 0,
            mismatch: Some(Mismatch {
                case: 0,
                input: "the generated cases".into(),
                expected,
                got,
            }),
        }
    }

    pub fn conforms(&self) -> bool {
        self.mismatch.is_none()
    }
}
