//! Lab 18 (`course/labs/18-error-context`): a validation of each raw record before it is
//! parsed, with errors a person can act on: the reason the stage counts, and a message that
//! says what was wrong and where (the stage writes the first of each batch to its log). Most
//! records are fine; the cost of an error should be paid by the records that have one. Edit
//! [`student`].

use crate::event::DropReason;
use pipeline_plan::LabImpl;
use std::fmt;

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/18-error-context/reference.rs"]
mod reference;

/// What the validation reads from a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    pub status: u16,
    pub latency_us: u64,
    pub bytes: u64,
}

/// What the stage needs of a validation error: the reason it counts, and (`Display`) the
/// message for its log.
pub trait RecordError: fmt::Display {
    fn reason(&self) -> DropReason;
}

/// The baseline's error: a reason, and the message, formatted when the error is made.
#[derive(Debug)]
pub struct Failure {
    pub reason: DropReason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: DropReason, message: String) -> Failure {
        Failure { reason, message }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl RecordError for Failure {
    fn reason(&self) -> DropReason {
        self.reason
    }
}

/// The raw text of field `name`'s value in a JSON record (do not edit): what follows
/// `"name":`, up to the next `,` or `}`, trimmed; `None` if the record has no such field.
pub fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    if name.is_empty() {
        return None;
    }
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find(name) {
        let start = from + at;
        let end = start + name.len();
        if start > 0 && bytes[start - 1] == b'"' && bytes.get(end..end + 2) == Some(b"\":") {
            let rest = &text[end + 2..];
            let len = rest.find([',', '}']).unwrap_or(rest.len());
            return Some(rest[..len].trim());
        }
        from = end;
    }
    None
}

/// A validation's outcome as the stage sees it: the reading, or the reason to count and, when
/// asked for, the message.
pub type Outcome = Result<Reading, (DropReason, Option<String>)>;

fn outcome<E: RecordError>(r: Result<Reading, E>, describe: bool) -> Outcome {
    r.map_err(|e| (e.reason(), describe.then(|| e.to_string())))
}

/// Called for every record by the parse stage (do not edit); `describe`: the stage wants the
/// message too (for the first failure of each batch).
pub fn validate(imp: LabImpl, rec: &[u8], describe: bool) -> Outcome {
    match imp {
        LabImpl::Baseline => outcome(baseline(rec), describe),
        LabImpl::Student => outcome(student(rec), describe),
        LabImpl::Mutant(n) => mutants!(n, |m| outcome(m(rec), describe)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => outcome(reference::validate(rec), describe),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => outcome(baseline(rec), describe),
    }
}

// ===== BASELINE (do not edit) =====
#[inline(never)]
fn baseline(rec: &[u8]) -> Result<Reading, impl RecordError> {
    super::baseline_mark();
    let text = std::str::from_utf8(rec)
        .map_err(|e| Failure::new(DropReason::BadUtf8, format!("not UTF-8: {e}")))?;
    let raw = field(text, "status").ok_or(Failure::new(
        DropReason::MissingField,
        format!("no field `status` in {text}"),
    ))?;
    let status: u16 = raw.parse().map_err(|e| {
        Failure::new(
            DropReason::WrongType,
            format!("field `status`: {raw} is not a number ({e})"),
        )
    })?;
    if !(100..=599).contains(&status) {
        return Err(Failure::new(
            DropReason::OutOfRange,
            format!("field `status`: {status} is not an HTTP status (100 to 599)"),
        ));
    }
    let raw = field(text, "latency_us").ok_or(Failure::new(
        DropReason::MissingField,
        format!("no field `latency_us` in {text}"),
    ))?;
    let latency_us: u64 = raw.parse().map_err(|e| {
        Failure::new(
            DropReason::WrongType,
            format!("field `latency_us`: {raw} is not a number ({e})"),
        )
    })?;
    let raw = field(text, "bytes").ok_or(Failure::new(
        DropReason::MissingField,
        format!("no field `bytes` in {text}"),
    ))?;
    let bytes: u64 = raw.parse().map_err(|e| {
        Failure::new(
            DropReason::WrongType,
            format!("field `bytes`: {raw} is not a number ({e})"),
        )
    })?;
    Ok(Reading {
        status,
        latency_us,
        bytes,
    })
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/context.rs");

// ===== STUDENT (lab 18: an error type that costs nothing until it is shown) =====
#[inline(never)]
fn student(rec: &[u8]) -> Result<Reading, impl RecordError> {
    let text = std::str::from_utf8(rec)
        .map_err(|e| Failure::new(DropReason::BadUtf8, format!("not UTF-8: {e}")))?;
    let raw = field(text, "status").ok_or(Failure::new(
        DropReason::MissingField,
        format!("no field `status` in {text}"),
    ))?;
    let status: u16 = raw.parse().map_err(|e| {
        Failure::new(
            DropReason::WrongType,
            format!("field `status`: {raw} is not a number ({e})"),
        )
    })?;
    if !(100..=599).contains(&status) {
        return Err(Failure::new(
            DropReason::OutOfRange,
            format!("field `status`: {status} is not an HTTP status (100 to 599)"),
        ));
    }
    let raw = field(text, "latency_us").ok_or(Failure::new(
        DropReason::MissingField,
        format!("no field `latency_us` in {text}"),
    ))?;
    let latency_us: u64 = raw.parse().map_err(|e| {
        Failure::new(
            DropReason::WrongType,
            format!("field `latency_us`: {raw} is not a number ({e})"),
        )
    })?;
    let raw = field(text, "bytes").ok_or(Failure::new(
        DropReason::MissingField,
        format!("no field `bytes` in {text}"),
    ))?;
    let bytes: u64 = raw.parse().map_err(|e| {
        Failure::new(
            DropReason::WrongType,
            format!("field `bytes`: {raw} is not a number ({e})"),
        )
    })?;
    Ok(Reading {
        status,
        latency_us,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_finds_a_value_only_after_its_quoted_name() {
        let rec = r#"{"user_agent":"status","status": 204 ,"bytes":7}"#;
        assert_eq!(field(rec, "status"), Some("204"));
        assert_eq!(field(rec, "bytes"), Some("7"));
        assert_eq!(field(rec, "latency_us"), None);
        assert_eq!(field(rec, ""), None);
        assert_eq!(field(r#"{"status":"#, "status"), Some(""));
    }

    #[test]
    fn the_baseline_says_what_is_wrong_and_where() {
        let ok = br#"{"status":200,"latency_us":5,"bytes":9}"#;
        assert_eq!(
            validate(LabImpl::Baseline, ok, true),
            Ok(Reading {
                status: 200,
                latency_us: 5,
                bytes: 9
            })
        );
        let missing = br#"{"latency_us":5,"bytes":9}"#;
        assert_eq!(
            validate(LabImpl::Baseline, missing, true),
            Err((
                DropReason::MissingField,
                Some(r#"no field `status` in {"latency_us":5,"bytes":9}"#.into())
            ))
        );
        assert_eq!(
            validate(LabImpl::Baseline, br#"{"status":70000}"#, false),
            Err((DropReason::WrongType, None))
        );
        assert_eq!(
            validate(LabImpl::Baseline, br#"{"status":99}"#, true),
            Err((
                DropReason::OutOfRange,
                Some("field `status`: 99 is not an HTTP status (100 to 599)".into())
            ))
        );
    }
}
