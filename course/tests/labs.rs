//! Every lab in `course/labs` loads and validates; the runner's building blocks behave.

use observatory_bench::stats::{Better, RatioInterval};
use observatory_course::check::{Variant, clears};
use observatory_course::progress::Workspace;
use observatory_course::spec::{Mode, find, load_labs};
use std::path::Path;

fn labs_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/labs"))
}

#[test]
fn the_course_has_at_least_fourteen_valid_labs_covering_its_topics() {
    let labs = load_labs(labs_dir()).expect("every lab.toml is valid");
    assert!(labs.len() >= 14, "{} labs", labs.len());
    let numbers: Vec<u32> = labs.iter().map(|l| l.number()).collect();
    assert_eq!(numbers, (1..=labs.len() as u32).collect::<Vec<_>>());
    for topic in [
        "spawning and joining tasks",
        "OS threads vs async",
        "channels and backpressure",
        "mutex contention",
        "error handling",
        "zero-copy",
        "iterator chains",
        "allocators",
        "flamegraph",
        "deadlock",
        "memory leak",
        "criterion benchmark",
        "fsync",
        "scaling and partitioning",
    ] {
        assert!(
            labs.iter().any(|l| l.spec.topic.contains(topic)),
            "no lab teaches {topic}"
        );
    }
    for l in &labs {
        let readme = l.readme();
        assert!(
            readme.starts_with(&format!("# Lab {:02}", l.number())),
            "{}",
            l.slug
        );
        assert!(readme.contains("**Your task.**"), "{}", l.slug);
        assert!(readme.contains("**What to look at.**"), "{}", l.slug);
        if let Some(file) = &l.file() {
            let path = labs_dir().join("../..").join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{file}"));
            assert!(text.contains("STUDENT") || text.contains("TODO"), "{file}");
        }
        if l.spec.slot.is_some() {
            assert!(l.dir.join("reference.rs").is_file(), "{}", l.slug);
        }
    }
}

#[test]
fn sides_are_built_from_the_spec() {
    let labs = load_labs(labs_dir()).unwrap();
    let zero_copy = find(&labs, 6).unwrap();
    assert_eq!(zero_copy.spec.measure.mode, Mode::Instructions);
    assert_eq!(zero_copy.baseline_side(), vec!["parse.mode=owned"]);
    assert_eq!(
        Variant::Reference.assignments(zero_copy),
        vec!["parse.mode=borrowed"]
    );
    let answer = vec!["parse.mode=borrowed".to_string()];
    assert_eq!(
        Variant::Student(answer.clone()).assignments(zero_copy),
        answer
    );
    let hotspot = find(&labs, 9).unwrap();
    assert_eq!(
        hotspot.baseline_side(),
        vec!["all.lab_slot=hotspot", "all.lab_impl=baseline"]
    );
    assert_eq!(
        Variant::Student(vec![]).assignments(hotspot),
        vec!["all.lab_slot=hotspot", "all.lab_impl=student"]
    );
    assert_eq!(
        Variant::Reference.assignments(hotspot),
        vec!["all.lab_slot=hotspot", "all.lab_impl=reference"]
    );
    assert!(find(&labs, 99).is_err());
}

#[test]
fn a_malformed_lab_is_an_error_naming_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("01-broken");
    std::fs::create_dir_all(&lab).unwrap();
    let good = std::fs::read_to_string(labs_dir().join("06-zero-copy/lab.toml")).unwrap();
    let good = good.replace("number = 6", "number = 1");
    for (broken, needle) in [
        (
            good.replace("parse.mode=borrowed", "parse.mode=fast"),
            "reference",
        ),
        (
            good.replace("min_effect = 0.1", "min_effect = 1.5"),
            "min_effect",
        ),
        (good.replace("number = 1", "number = 2"), "lab number 02"),
        (good.replace("metric =", "metrik ="), "unknown field"),
    ] {
        std::fs::write(lab.join("lab.toml"), &broken).unwrap();
        let e = load_labs(dir.path()).unwrap_err().to_string();
        assert!(e.contains("01-broken/lab.toml"), "{e}");
        assert!(e.contains(needle), "{needle}: {e}");
    }
    std::fs::write(lab.join("lab.toml"), good).unwrap();
    assert_eq!(load_labs(dir.path()).unwrap().len(), 1);
}

#[test]
fn progress_and_answers_round_trip() {
    let labs = load_labs(labs_dir()).unwrap();
    let lab = find(&labs, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::new(dir.path());
    assert!(ws.load().unwrap().labs.is_empty());
    let path = ws.prepare_answer(lab).unwrap().unwrap();
    assert_eq!(ws.answer(lab).unwrap(), lab.spec.baseline.set);
    std::fs::write(&path, "set = [\"parse.workers=8\"]\n").unwrap();
    assert_eq!(ws.answer(lab).unwrap(), vec!["parse.workers=8"]);
    // Starting again keeps the student's answer.
    ws.prepare_answer(lab).unwrap();
    assert_eq!(ws.answer(lab).unwrap(), vec!["parse.workers=8"]);
    ws.update(1, |p| {
        p.passed = true;
        p.hints_shown = 2;
    })
    .unwrap();
    assert!(ws.load().unwrap().labs[&1].passed);
    ws.reset_answer(lab).unwrap();
    assert_eq!(ws.answer(lab).unwrap(), lab.spec.baseline.set);
    assert!(!ws.load().unwrap().labs[&1].passed);
    std::fs::write(dir.path().join("progress.json"), "{not json").unwrap();
    assert!(ws.load().unwrap_err().to_string().contains("damaged"));
}

#[test]
fn the_pass_rule_needs_the_whole_interval_beyond_the_minimum() {
    let r = |ratio, low, high| RatioInterval { ratio, low, high };
    assert!(clears(&r(2.5, 2.1, 2.9), Better::Higher, 1.0));
    assert!(!clears(&r(2.5, 1.9, 2.9), Better::Higher, 1.0));
    assert!(clears(&r(0.5, 0.45, 0.6), Better::Lower, 0.3));
    assert!(!clears(&r(0.5, 0.45, 0.75), Better::Lower, 0.3));
    assert!(!clears(
        &r(f64::NAN, f64::NAN, f64::NAN),
        Better::Higher,
        0.0
    ));
}

#[test]
fn a_labs_metric_and_slot_file_are_not_stated_twice() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("01-broken");
    std::fs::create_dir_all(&lab).unwrap();
    let good = std::fs::read_to_string(labs_dir().join("06-zero-copy/lab.toml")).unwrap();
    let good = good.replace("number = 6", "number = 1");
    let hotspot = std::fs::read_to_string(labs_dir().join("09-hotspot/lab.toml"))
        .unwrap()
        .replace("number = 9", "number = 1");
    for (broken, needle) in [
        // Which way is better is the catalogue's, not the lab's.
        (
            good.replace("[measure]", "[measure]\nbetter = \"higher\""),
            "unknown field",
        ),
        (
            good.replace("instructions_per_event", "instructions_per_evnt"),
            "not a metric of the catalogue",
        ),
        (
            good.replace("\"instructions_per_event\"", "\"throughput_eps\""),
            "not what the Instructions mode measures",
        ),
        // A slot's file follows from its name.
        (
            hotspot.replace(
                "slot = \"hotspot\"",
                "slot = \"hotspot\"\nfile = \"pipeline/src/slots/hotspot.rs\"",
            ),
            "leave it out",
        ),
    ] {
        std::fs::write(lab.join("lab.toml"), &broken).unwrap();
        let e = load_labs(dir.path()).unwrap_err().to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
    std::fs::write(lab.join("lab.toml"), &hotspot).unwrap();
    let labs = load_labs(dir.path()).unwrap();
    assert_eq!(
        labs[0].file().as_deref(),
        Some("pipeline/src/slots/hotspot.rs")
    );
    assert_eq!(labs[0].spec.measure.better(), Better::Lower);
}
