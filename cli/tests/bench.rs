//! `observatory bench`: a real A/B run and its report, `compare`'s exit codes, instruction
//! counts, and the A/A mode.

mod common;

use common::{json, observatory};
use std::path::Path;

#[test]
fn an_ab_run_of_owned_against_borrowed_parsing_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("ab");
    let out = observatory()
        .args([
            "bench", "ab", "--events", "400000", "--rate", "400000", "--pairs", "3", "--warmup",
            "0",
        ])
        .args([
            "--profile-seconds",
            "2",
            "--a-label",
            "owned",
            "--a",
            "parse.mode=owned",
        ])
        .args(["--b-label", "borrowed", "--b", "parse.mode=borrowed"])
        .args(["--report-dir", report.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("B/A [95% bootstrap CI]"), "{stdout}");

    let r = json(&report.join("ab.json"));
    assert_eq!(r["ab_version"], 2);
    assert_eq!(r["mode"], "ab");
    assert_eq!(r["conserved"], true);
    assert_eq!(r["a"]["runs"].as_array().unwrap().len(), 3);
    let comparisons = r["comparisons"].as_array().unwrap();
    assert_eq!(comparisons.len(), 7);
    for c in comparisons {
        let (ratio, low, high) = (
            c["ratio"]["ratio"].as_f64().unwrap(),
            c["ratio"]["low"].as_f64().unwrap(),
            c["ratio"]["high"].as_f64().unwrap(),
        );
        assert!(low <= ratio && ratio <= high, "{c}");
    }
    let metric = |name: &str| {
        comparisons
            .iter()
            .find(|c| c["metric"] == name)
            .unwrap()
            .clone()
    };
    // Borrowed parsing does not allocate per event: a large, certain effect.
    let alloc = metric("allocations_per_event");
    assert_eq!(alloc["verdict"], "better", "{alloc}");
    assert!(alloc["ratio"]["high"].as_f64().unwrap() < 0.5, "{alloc}");
    let stage_cpu = |side: &str| -> Vec<serde_json::Value> {
        r[side]["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| run["stage_cpu_seconds_per_million"].clone())
            .collect()
    };
    assert_eq!(
        r["changed_stage"],
        "parse",
        "CPU s per million events by stage, A: {:?}, B: {:?}",
        stage_cpu("a"),
        stage_cpu("b")
    );

    // The plots, the differential flamegraph, the samples.
    for f in ["throughput.svg", "latency.svg", "cpu.svg"] {
        let svg = std::fs::read_to_string(report.join(f)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("owned") && svg.contains("borrowed"),
            "{f}"
        );
    }
    let diff = std::fs::read_to_string(report.join("diff-flamegraph-parse.svg")).unwrap();
    assert!(diff.contains("<svg") && diff.contains("parse stage: CPU, A (owned) to B (borrowed)"));
    assert!(
        diff.contains("parse_into") || diff.contains("parse_batch"),
        "the diff names the parser"
    );
    for side in ["a", "b"] {
        let s = json(&report.join(format!("{side}.samples.json")));
        assert_eq!(s["format"], "observatory-samples");
        assert_eq!(
            s["metrics"]["throughput_eps"]["samples"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }
    let text = std::fs::read_to_string(report.join("summary.txt")).unwrap();
    assert!(text.contains("allocations_per_event") && text.contains("better"));

    // The same samples against themselves: no regression.
    let a = report.join("a.samples.json");
    let out = observatory()
        .args(["bench", "compare"])
        .arg(&a)
        .arg(&a)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn write_samples(path: &Path, throughput: &[f64]) {
    let v = serde_json::json!({
        "format": "observatory-samples", "version": 1, "label": path.file_stem().unwrap().to_str().unwrap(),
        "metrics": {"throughput_eps": {"unit": "events/s", "better": "higher", "samples": throughput}}
    });
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn compare_fails_on_a_planted_regression_and_passes_identical_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.json");
    let same = dir.path().join("same.json");
    let slow = dir.path().join("slow.json");
    write_samples(&old, &[1.50e6, 1.52e6, 1.49e6, 1.51e6, 1.50e6, 1.53e6]);
    write_samples(&same, &[1.50e6, 1.52e6, 1.49e6, 1.51e6, 1.50e6, 1.53e6]);
    write_samples(&slow, &[1.20e6, 1.21e6, 1.19e6, 1.22e6, 1.20e6, 1.18e6]);
    let run = |a: &Path, b: &Path| {
        observatory()
            .args(["bench", "compare"])
            .arg(a)
            .arg(b)
            .output()
            .unwrap()
    };
    let ok = run(&old, &same);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let bad = run(&old, &slow);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("REGRESSION"));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("significant regression"));
    // A faster one is not a regression.
    assert_eq!(run(&slow, &old).status.code(), Some(0));
    // Garbage is an error, not a pass.
    std::fs::write(&same, "not json").unwrap();
    assert_ne!(run(&old, &same).status.code(), Some(0));
}

/// `bench ab --mode instructions` of one stage over 5,000 events (system allocator, so counts
/// repeat exactly); its `instructions.json`.
fn instructions_ab(stage: &str, pairs: u32, a: &str, b: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("instr");
    let out = observatory()
        .args(["bench", "ab", "--mode", "instructions", "--stage", stage])
        .args(["--events", "5000", "--pairs", &pairs.to_string()])
        .args(["--set", "all.allocator=system"])
        .args(["--a", a, "--b", b])
        .args(["--report-dir", report.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    json(&report.join("instructions.json"))
}

#[test]
fn instruction_counts_compare_a_cpu_bound_change_deterministically() {
    if common::skip_without_valgrind() {
        return;
    }
    let r = instructions_ab("parse", 2, "parse.mode=owned", "parse.mode=borrowed");
    let (a, b) = (&r["a"], &r["b"]);
    // With the system allocator the counts repeat exactly.
    assert_eq!(a["instructions"][0], a["instructions"][1], "{a}");
    assert_eq!(a["spread"], 0.0);
    assert!(
        b["instructions_per_event"].as_f64().unwrap()
            < a["instructions_per_event"].as_f64().unwrap()
    );
    assert_eq!(r["verdict"], "better");
    assert!(
        a["instructions_per_event"].as_f64().unwrap() > 1000.0,
        "a real count: {a}"
    );
}

#[test]
fn instruction_counts_include_the_owner_thread() {
    if common::skip_without_valgrind() {
        return;
    }
    let r = instructions_ab(
        "aggregate",
        1,
        "aggregate.state=mutex",
        "aggregate.state=owner",
    );
    let a = r["a"]["instructions_per_event"].as_f64().unwrap();
    let b = r["b"]["instructions_per_event"].as_f64().unwrap();
    // The owner does the same window work on its own thread; counting only the caller's
    // thread would show a few instructions per event (a channel send) instead.
    assert!(b > 0.5 * a && b < 2.0 * a, "mutex {a} vs owner {b}");
}

#[test]
fn aa_mode_runs_the_same_configuration_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("aa");
    let out = observatory()
        .args([
            "bench", "aa", "--events", "150000", "--pairs", "3", "--warmup", "0",
        ])
        .args(["--report-dir", report.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&report.join("ab.json"));
    assert_eq!(r["mode"], "aa");
    assert_eq!(r["a"]["assignments"], r["b"]["assignments"]);
    assert_eq!(r["comparisons"].as_array().unwrap().len(), 7);
    assert!(String::from_utf8_lossy(&out.stdout).contains("noise floor"));
}
