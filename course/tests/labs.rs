//! Every lab in `course/labs` loads and validates; the runner's building blocks behave.

use observatory_bench::stats::{Better, RatioInterval};
use observatory_course::check::{Variant, clears};
use observatory_course::progress::Workspace;
use observatory_course::spec::{
    Mode, find, load_labs, mutant_files, mutants_source, protected_digest, stale_mutant_files,
    write_mutant_files,
};
use std::path::Path;

fn labs_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/labs"))
}

/// The one lab of a fixture course.
fn only_lab_in(dir: &Path) -> observatory_course::spec::Lab {
    let mut labs = load_labs(dir).expect("the fixture loads");
    assert_eq!(labs.len(), 1);
    labs.remove(0)
}

/// A wall-clock knob lab, kept as a fixture (the course's lab 14 before it became a code lab).
fn wall_knob_fixture() -> observatory_course::spec::Lab {
    only_lab_in(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/knob-wall"
    )))
}

/// A knob lab with an `all.` knob and an exact measurement, kept as a fixture (the course's
/// lab 08 before it became a code lab).
fn knob_fixture() -> observatory_course::spec::Lab {
    only_lab_in(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/knob-course/course/labs"
    )))
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
        "WAL replay",
        "segment compaction",
        "reconciling two replicas",
        "OS threads with channels",
        "custom error types",
        "combinators",
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
    let allocators = knob_fixture();
    let allocators = &allocators;
    assert_eq!(allocators.spec.measure.mode, Mode::Instructions);
    assert_eq!(allocators.baseline_side(), vec!["all.allocator=system"]);
    assert_eq!(
        Variant::Reference.assignments(allocators),
        vec!["all.allocator=jemalloc"]
    );
    let answer = vec!["all.allocator=system".to_string()];
    assert_eq!(
        Variant::Student(answer.clone()).assignments(allocators),
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
    let good = std::fs::read_to_string(
        labs_dir().join("../tests/fixtures/knob-course/course/labs/08-allocator-knob/lab.toml"),
    )
    .unwrap();
    let good = good.replace("number = 8", "number = 1");
    for (broken, needle) in [
        (
            good.replace("all.allocator=jemalloc", "all.allocator=fast"),
            "reference",
        ),
        (
            good.replace("min_effect = 0.03", "min_effect = 1.5"),
            "min_effect",
        ),
        (good.replace("number = 1", "number = 2"), "lab number 02"),
        (good.replace("metric =", "metrik ="), "unknown field"),
        // A recall lab has no hints and revisits earlier labs only.
        (
            good.replace("hints = [", "revisits = [1]\nhints = ["),
            "only earlier labs",
        ),
        (
            good.replace("hints = [", "revisits = [0]\nhints = ["),
            "only earlier labs",
        ),
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
    let lab = &wall_knob_fixture();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::new(dir.path());
    assert!(ws.load().unwrap().labs.is_empty());
    let path = ws.prepare_answer(lab).unwrap().unwrap();
    assert_eq!(ws.answer(lab).unwrap(), lab.spec.baseline.set);
    std::fs::write(&path, "set = [\"aggregate.workers=8\"]\n").unwrap();
    assert_eq!(ws.answer(lab).unwrap(), vec!["aggregate.workers=8"]);
    // Starting again keeps the student's answer.
    ws.prepare_answer(lab).unwrap();
    assert_eq!(ws.answer(lab).unwrap(), vec!["aggregate.workers=8"]);
    ws.update(14, |p| {
        p.passed = true;
        p.hints_shown = 2;
    })
    .unwrap();
    assert!(ws.load().unwrap().labs[&14].passed);
    ws.reset_answer(lab).unwrap();
    assert_eq!(ws.answer(lab).unwrap(), lab.spec.baseline.set);
    assert!(!ws.load().unwrap().labs[&14].passed);
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
    let good = std::fs::read_to_string(
        labs_dir().join("../tests/fixtures/knob-course/course/labs/08-allocator-knob/lab.toml"),
    )
    .unwrap();
    let good = good.replace("number = 8", "number = 1");
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

#[test]
fn every_code_labs_protected_part_matches_its_digest_and_its_mutant_splices_in() {
    let labs = load_labs(labs_dir()).unwrap();
    let mut code_labs = 0;
    for lab in labs.iter().filter(|l| l.is_code_lab()) {
        code_labs += 1;
        let file = lab
            .conformance_file()
            .unwrap_or_else(|| panic!("{}: a code lab is checked against a slot", lab.slug));
        let text = std::fs::read_to_string(labs_dir().join("../..").join(&file)).unwrap();
        let digest = protected_digest(&text).unwrap_or_else(|| panic!("{file}: no marker"));
        assert_eq!(
            Some(&digest),
            lab.spec.protected_sha256.as_ref(),
            "{}: the protected part of {file} changed; if that was meant, its new digest is {digest}",
            lab.slug
        );
        assert!(!lab.spec.mutants.is_empty(), "{}: no mutants", lab.slug);
        // An edit above the marker shows.
        let edited = text.replacen("fn baseline", "fn baseline_", 1);
        assert_ne!(
            protected_digest(&edited),
            lab.spec.protected_sha256,
            "{}",
            lab.slug
        );
    }
    assert!(code_labs >= 7, "{code_labs} code labs");
}

#[test]
fn a_mutant_is_the_student_signature_with_the_mutant_body() {
    let text = "fn keep() { 1 }\n// ===== STUDENT (x) =====\n#[inline(never)]\nasync fn student(a: u8) -> u8 {\n    if a > 0 { a } else { 0 }\n}\n\nfn after() {}\n";
    let out = mutants_source(text, "99-x", &["let _ = a;\n    7".into(), "a + 1".into()]).unwrap();
    assert!(out.contains("pub const MUTANTS: u8 = 2;"), "{out}");
    assert!(
        out.contains("#[cfg(feature = \"lab-mutants\")]\n#[allow(unused, clippy::all)]\nasync fn mutant_1(a: u8) -> u8 {\n    let _ = a;\n    7\n}\n"),
        "{out}"
    );
    assert!(
        out.contains("async fn mutant_2(a: u8) -> u8 {\n    a + 1\n}"),
        "{out}"
    );
    assert!(
        out.contains("call_mutant!($n, [mutant_1, mutant_2], |$m| $e)"),
        "{out}"
    );
    assert!(!out.contains("mutant_3"), "{out}");
    // The student's attributes and body are not copied.
    assert!(
        !out.contains("inline(never)") && !out.contains("if a > 0"),
        "{out}"
    );
    assert!(
        mutants_source("fn student() {}", "x", &[]).is_err(),
        "no marker"
    );
    assert!(mutants_source("// ===== STUDENT\nfn helper() {}", "x", &[]).is_err());
    assert!(mutants_source("// ===== STUDENT\nfn student()", "x", &[]).is_err());
}

/// The generated mutant files (`pipeline/src/slots/mutants/`) match the labs' `mutants`;
/// `UPDATE_MUTANTS=1` rewrites them. A student's edit of the STUDENT signature does not make
/// one stale; an edited mutant does.
#[test]
fn the_generated_mutant_files_are_current() {
    let labs = load_labs(labs_dir()).unwrap();
    let root = labs_dir().join("../..");
    if std::env::var_os("UPDATE_MUTANTS").is_some() {
        let written = write_mutant_files(&root, &labs).unwrap();
        eprintln!("written: {written:?}");
    }
    let stale = stale_mutant_files(&root, &labs).unwrap();
    assert!(
        stale.is_empty(),
        "{stale:?} do not match their labs' `mutants`: run `UPDATE_MUTANTS=1 cargo test --release -p observatory-course --test labs` to write them"
    );
    let files = mutant_files(&root, &labs).unwrap();
    let code_labs = labs
        .iter()
        .filter(|l| l.conformance_slot().is_some())
        .count();
    assert_eq!(files.len(), code_labs);
    // Every slot file includes its own at the end of its protected part, and nothing else is
    // in the folder.
    let mut listed: Vec<String> =
        std::fs::read_dir(root.join(observatory_course::spec::MUTANTS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    listed.sort();
    assert_eq!(listed.len(), code_labs, "{listed:?}");
    for name in &listed {
        let slot = root.join("pipeline/src/slots").join(name);
        let text = std::fs::read_to_string(&slot).unwrap();
        let protected = observatory_course::spec::protected_part(&text).unwrap();
        assert!(
            protected
                .trim_end()
                .ends_with(&format!("include!(\"mutants/{name}\");")),
            "{}: the include is the protected part's last line",
            slot.display()
        );
    }

    // In a copy of the tree: a renamed parameter of the STUDENT function is not staleness, a
    // changed mutant is.
    let lab = find(&labs, 9).unwrap();
    let copy = tempfile::tempdir().unwrap();
    for rel in [
        "pipeline/src/slots/hotspot.rs",
        "pipeline/src/slots/mutants/hotspot.rs",
    ] {
        let to = copy.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(rel), &to).unwrap();
    }
    let one = std::slice::from_ref(lab);
    assert!(stale_mutant_files(copy.path(), one).unwrap().is_empty());
    let slot = copy.path().join("pipeline/src/slots/hotspot.rs");
    let text = std::fs::read_to_string(&slot).unwrap();
    let renamed = text.replace("fn student(key: &[u8])", "fn student(_key: &[u8])");
    assert_ne!(renamed, text);
    std::fs::write(&slot, renamed).unwrap();
    assert!(stale_mutant_files(copy.path(), one).unwrap().is_empty());
    let mut edited = lab.clone();
    edited.spec.mutants[0] = "1".into();
    assert_eq!(
        stale_mutant_files(copy.path(), std::slice::from_ref(&edited)).unwrap(),
        vec!["pipeline/src/slots/mutants/hotspot.rs".to_string()]
    );
    // A body whose braces do not balance (it would close its function early) is refused.
    assert!(mutants_source(&text, "09-hotspot", &["0 }".into()]).is_err());
}

#[test]
fn a_knob_lab_refuses_an_answer_outside_its_knobs_and_names_them() {
    let labs = load_labs(labs_dir()).unwrap();
    let lab14 = wall_knob_fixture();
    assert!(lab14.check_answer(&["aggregate.workers=8".into()]).is_ok());
    let e = lab14
        .check_answer(&[
            "aggregate.workers=8".into(),
            "aggregate.inject_delay_us=0".into(),
        ])
        .unwrap_err();
    assert!(
        e.contains("may set only aggregate.workers, aggregate.replicas"),
        "{e}"
    );
    assert!(e.contains("(it sets aggregate.inject_delay_us)"), "{e}");
    // `all.` in may_set allows the knob on any stage, and on all of them.
    let lab08 = knob_fixture();
    for ok in ["all.allocator=system", "parse.allocator=jemalloc"] {
        assert!(lab08.check_answer(&[ok.into()]).is_ok(), "{ok}");
    }
    assert!(lab08.check_answer(&["source.events=10".into()]).is_err());
    // A stage-scoped knob is not allowed on another stage.
    assert!(lab14.check_answer(&["parse.workers=8".into()]).is_err());
    // The course's knob labs (none now: every lab has the student write Rust) and the fixtures.
    for lab in labs
        .iter()
        .chain([&lab14, &lab08])
        .filter(|l| !l.is_code_lab())
    {
        assert!(!lab.spec.may_set.is_empty(), "{}", lab.slug);
        assert!(
            lab.check_answer(&lab.spec.reference.set).is_ok(),
            "{}",
            lab.slug
        );
        for fixed in &lab.spec.workload.set {
            let e = lab.check_answer(std::slice::from_ref(fixed));
            assert!(
                e.is_err(),
                "{}: the workload knob {fixed} may be set",
                lab.slug
            );
        }
    }
}

/// A mutant the conformance check does not catch is reported as such (correct, not passed),
/// and one it catches as wrong; neither is measured. The pipeline here is a stand-in script
/// answering `conformance` with the report it is given.
#[tokio::test]
async fn a_mutant_is_refused_only_when_its_conformance_fails() {
    use std::os::unix::fs::PermissionsExt;
    let labs = load_labs(labs_dir()).unwrap();
    let lab = find(&labs, 9).unwrap();
    for (mismatch, correct) in [
        ("null", true),
        (r#"{"case":0,"input":"k","expected":"2","got":"0"}"#, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("pipeline");
        // args: conformance SLOT --impl IMP --seed SEED --out PATH
        std::fs::write(
            &bin,
            format!(
                "#!/bin/sh\n[ \"$1\" = conformance ] || exit 3\nprintf '{{\"slot\":\"%s\",\"implementation\":\"%s\",\"seed\":%s,\"cases\":1,\"mismatch\":{mismatch}}}\\n' \"$2\" \"$4\" \"$6\" > \"$8\"\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let opts = observatory_course::check::CheckOptions {
            pipeline_bin: bin,
            report_dir: dir.path().join("report"),
            root: labs_dir().join("../.."),
            profile_seconds: 0,
            workload_seed: None,
        };
        let o = observatory_course::check::check(lab, &Variant::Mutant(1), &opts, |_, _, _| {})
            .await
            .unwrap();
        assert_eq!(o.correct, Some(correct), "{}", o.verdict);
        assert!(!o.passed, "{}", o.verdict);
        assert!(o.ratio.is_none(), "a mutant is not measured: {}", o.verdict);
        assert_eq!(o.conformance.len(), if correct { 2 } else { 1 });
        assert!(
            o.conformance.iter().all(|c| c.implementation == "mutant-1"),
            "{:?}",
            o.conformance
        );
        if correct {
            assert!(o.verdict.contains("does not catch"), "{}", o.verdict);
        }
    }
    // No such mutant: an error, not a verdict.
    let opts = observatory_course::check::CheckOptions {
        pipeline_bin: "/nonexistent".into(),
        report_dir: std::env::temp_dir().join("obs-no-mutant"),
        root: labs_dir().join("../.."),
        profile_seconds: 0,
        workload_seed: None,
    };
    let n = u8::try_from(lab.spec.mutants.len() + 1).unwrap();
    let e = observatory_course::check::check(lab, &Variant::Mutant(n), &opts, |_, _, _| {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no mutant"), "{e}");
}
