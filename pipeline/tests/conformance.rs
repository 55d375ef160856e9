//! `pipeline conformance`, the correctness gate of every code lab, run as the real binary the
//! lab runner calls: the reference solutions meet each slot's specification, the shipped
//! baselines' known faults are found (a panic on bad input, a hang), and the process ends.

mod common;

use pipeline::slots::conformance::SLOTS;
use pipeline_plan::lab::Conformance;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn conformance(slot: &str, imp: &str, seed: u64) -> (Output, Duration) {
    let t = Instant::now();
    let out = Command::new(common::bin())
        .args([
            "conformance",
            slot,
            "--impl",
            imp,
            "--seed",
            &seed.to_string(),
        ])
        .output()
        .expect("run pipeline conformance");
    (out, t.elapsed())
}

fn report(slot: &str, imp: &str, seed: u64) -> Conformance {
    let (out, _) = conformance(slot, imp, seed);
    assert!(
        out.status.success(),
        "{slot} {imp}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON report")
}

#[test]
fn every_reference_conforms_on_two_seeds() {
    for slot in SLOTS {
        for seed in [42, 7_777_777] {
            let r = report(slot, "reference", seed);
            assert!(
                r.conforms(),
                "{slot} reference, seed {seed}: {:?}",
                r.mismatch
            );
            assert!(r.cases > 0, "{slot}: no cases checked");
            assert_eq!((r.slot.as_str(), r.seed), (slot, seed));
        }
    }
}

#[test]
fn the_baselines_conform_except_where_the_lab_is_about_a_fault() {
    for slot in SLOTS
        .iter()
        .filter(|s| !["errors", "deadlock", "batcher"].contains(s))
    {
        let r = report(slot, "baseline", 42);
        assert!(r.conforms(), "{slot} baseline: {:?}", r.mismatch);
    }
    // Lab 02's baseline pipe is unbounded (the fault the lab is about): refused on the
    // backpressure case, after it delivered every record of the others in order.
    let batcher = report("batcher", "baseline", 42);
    let m = batcher
        .mismatch
        .expect("the batcher baseline never pushes back");
    assert!(m.got.contains("nothing pushes back"), "{m:?}");
    // Lab 05's baseline panics on a record that is not UTF-8: found and shown, not a crash.
    let errors = report("errors", "baseline", 42);
    let m = errors
        .mismatch
        .expect("the errors baseline panics on bad input");
    assert!(m.got.starts_with("panicked"), "{m:?}");
}

#[test]
fn the_report_can_go_to_a_file_of_its_own() {
    // `observatory lab check` reads it from there, so what student code prints cannot garble it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let out = Command::new(common::bin())
        .args([
            "conformance",
            "percentile",
            "--impl",
            "baseline",
            "--seed",
            "3",
            "--out",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let r: Conformance = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(r.conforms() && r.seed == 3, "{r:?}");
}

#[test]
fn a_hanging_implementation_is_reported_and_the_process_exits() {
    // Lab 10's baseline deadlocks: the check gives each call 5 s, reports the hang and exits
    // although the deadlocked threads never return.
    let (out, took) = conformance("deadlock", "baseline", 42);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Conformance = serde_json::from_slice(&out.stdout).unwrap();
    let m = r.mismatch.expect("the deadlock baseline hangs");
    assert!(m.got.contains("did not return"), "{m:?}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn a_wrong_slot_or_implementation_is_a_clear_error() {
    let (out, _) = conformance("nope", "student", 1);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no slot `nope`") && err.contains("hotspot"),
        "{err}"
    );
    let (out, _) = conformance("hotspot", "fastest", 1);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fastest"));
}

/// The address of every symbol whose demangled name is `name` (aliases included).
fn addresses(symbols: &str, name: &str) -> Vec<String> {
    symbols
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (addr, kind, sym) = (parts.next()?, parts.next()?, parts.next()?);
            // A legacy-mangled name may keep its hash: `::h` and 16 hex digits.
            let sym = match sym.rsplit_once("::h") {
                Some((s, h)) if h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit()) => s,
                _ => sym,
            };
            (["t", "T"].contains(&kind) && sym == name).then(|| addr.to_string())
        })
        .collect()
}

#[test]
fn baseline_and_student_functions_stay_distinct_in_profiles() {
    // The STUDENT function starts as a copy of the BASELINE; merged, a flamegraph would name
    // one for the other's work. Each must be its own function at its own address.
    let Ok(out) = Command::new("nm").args(["-C", common::bin()]).output() else {
        panic!("nm (binutils) is needed to read the binary's symbols");
    };
    let symbols = String::from_utf8_lossy(&out.stdout);
    // The synchronous slots. An async slot function (blocking, fanout) is a state machine
    // polled inside its caller's; it has no symbol of its own to keep apart.
    for slot in [
        "hotspot",
        "iterators",
        "percentile",
        "errors",
        "leak",
        "deadlock",
        "fsync",
        "replay",
        "recall",
        "threads",
        "batcher",
        "context",
        "arena",
        "partition",
        "compaction",
        "reconcile",
    ] {
        let base = addresses(&symbols, &format!("pipeline::slots::{slot}::baseline"));
        let student = addresses(&symbols, &format!("pipeline::slots::{slot}::student"));
        assert_eq!(base.len(), 1, "{slot}: baseline symbols {base:?}");
        assert_eq!(student.len(), 1, "{slot}: student symbols {student:?}");
        assert_ne!(
            base, student,
            "{slot}: baseline and student share an address"
        );
    }
    // Lab 04's work is in the `add` of the type each side returns.
    let add = |ty: &str| {
        addresses(
            &symbols,
            &format!(
                "<pipeline::slots::contention::{ty} as pipeline::slots::contention::KeyTotals>::add"
            ),
        )
    };
    let (base, student) = (add("OneLock"), add("StudentTotals"));
    assert_eq!(base.len(), 1, "contention: baseline symbols {base:?}");
    assert_eq!(student.len(), 1, "contention: student symbols {student:?}");
    assert_ne!(base, student, "contention: the two adds share an address");
}
