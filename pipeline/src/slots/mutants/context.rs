// @generated from `mutants` in course/labs/18-error-context/lab.toml and the STUDENT function's
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
fn mutant_1(rec: &[u8]) -> Result<Reading, impl RecordError> {
    let _ = rec;
    Ok::<_, Failure>(Reading { status: 200, latency_us: 1, bytes: 1 })
}

#[cfg(feature = "lab-mutants")]
#[allow(unused, clippy::all)]
fn mutant_2(rec: &[u8]) -> Result<Reading, impl RecordError> {
    let text = std::str::from_utf8(rec)
        .map_err(|e| Failure::new(DropReason::BadUtf8, format!("not UTF-8: {e}")))?;
    let num = |name: &str| -> Result<u64, Failure> {
        let raw = field(text, name)
            .ok_or_else(|| Failure::new(DropReason::MissingField, "missing field".into()))?;
        raw.parse()
            .map_err(|_| Failure::new(DropReason::WrongType, "not a number".into()))
    };
    let status = u16::try_from(num("status")?)
        .map_err(|_| Failure::new(DropReason::WrongType, "not a number".into()))?;
    if !(100..=599).contains(&status) {
        return Err(Failure::new(DropReason::OutOfRange, "bad status".into()));
    }
    Ok(Reading { status, latency_us: num("latency_us")?, bytes: num("bytes")? })
}
