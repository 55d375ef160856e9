//! The lab runner as a student uses it: list, start, hint, check (fail, then pass), report.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn lab(home: &Path, args: &[&str]) -> Output {
    lab_in(concat!(env!("CARGO_MANIFEST_DIR"), "/.."), home, args)
}

/// `observatory lab` on the course under `root` (the repository's, or a fixture's).
fn lab_in(root: &str, home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_observatory"))
        .arg("lab")
        .args(args)
        .env("OBSERVATORY_HOME", home)
        .env("OBSERVATORY_ROOT", root)
        .output()
        .unwrap()
}

/// A course of one knob lab with an exact measurement: the course's lab 08 before it became a
/// code lab (`course/tests/fixtures`), so the knob lab's whole path is tested.
const KNOB_COURSE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../course/tests/fixtures/knob-course"
);

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_student_does_a_knob_lab() {
    if common::skip_without_valgrind() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let lab = |h: &Path, args: &[&str]| lab_in(KNOB_COURSE, h, args);

    let o = lab(h, &["list"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("1 labs, 0 passed"), "{t}");
    assert!(t.contains("Allocators and memory"), "{t}");

    let o = lab(h, &["start", "8"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("# Lab 08"));
    let answer = h.join("answers/08.toml");
    assert!(
        std::fs::read_to_string(&answer)
            .unwrap()
            .contains("all.allocator=system")
    );

    let o = lab(h, &["hint", "8"]);
    assert!(text(&o).contains("Hint 1 of 3"), "{}", text(&o));
    let o = lab(h, &["hint", "8"]);
    assert!(text(&o).contains("Hint 2 of 3"), "{}", text(&o));

    // Unchanged: the baseline against itself does not pass.
    let o = lab(h, &["check", "8"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("not yet"), "{}", text(&o));

    // A wrong knob value is a clear error, not a measurement.
    std::fs::write(&answer, "set = [\"all.allocator=fast\"]\n").unwrap();
    let o = lab(h, &["check", "8"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("allocator"), "{}", text(&o));

    // The workload is fixed: an answer that changes it is refused, naming what may be set,
    // and nothing is measured or counted.
    std::fs::write(
        &answer,
        "set = [\"all.allocator=jemalloc\", \"source.events=10\"]\n",
    )
    .unwrap();
    let o = lab(h, &["check", "8"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("may set only all.allocator (it sets source.events)"),
        "{t}"
    );

    std::fs::write(&answer, "set = [\"all.allocator=jemalloc\"]\n").unwrap();
    let o = lab(h, &["check", "8", "--predict", "-20%"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("lab 08 PASSED"), "{t}");
    assert!(t.contains("instructions_per_event: B/A = 0.9"), "{t}");
    assert!(t.contains("% better"), "{t}");
    // The prediction is put next to the measurement (B/A 0.80 is below the ~0.95 measured).
    assert!(t.contains("you predicted B/A 0.80; measured 0.9"), "{t}");
    assert!(t.contains("lower than measured"), "{t}");
    // Instruction labs report by function: the table, the differential flamegraph, and the
    // functions that changed most in the verdict (glibc's malloc and free went, jemalloc's came).
    assert!(
        t.contains("most changed (own instructions per event)"),
        "{t}"
    );
    let progress = std::fs::read_to_string(h.join("progress.json")).unwrap();
    let p: serde_json::Value = serde_json::from_str(&progress).unwrap();
    let dir = std::path::PathBuf::from(p["labs"]["8"]["last_report"].as_str().unwrap());
    let functions = std::fs::read_to_string(dir.join("functions.md")).unwrap();
    assert!(
        functions.contains("| function | A | B | B − A |"),
        "{functions}"
    );
    assert!(functions.contains("callgrind_annotate"), "{functions}");
    let svg = std::fs::read_to_string(dir.join("instructions-diff.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("measured region"));
    // The passed check makes a leaderboard submission the server accepts, its ratio
    // recomputed from the check's own figures; an edited change makes the check stale.
    let outcome: observatory_course::check::Outcome =
        serde_json::from_str(&std::fs::read_to_string(dir.join("lab-check.json")).unwrap())
            .unwrap();
    let labs = observatory_course::load_labs(&Path::new(KNOB_COURSE).join("course/labs")).unwrap();
    let answer_now = vec!["all.allocator=jemalloc".to_string()];
    let cx = |answer: &[String]| observatory_course::submission::SubmitContext {
        change_sha256_now: labs[0]
            .change_sha256(Path::new(KNOB_COURSE), answer)
            .unwrap(),
        commit: "1af6745".into(),
        fingerprint: observatory_course::submission::this_machine(),
        prediction: Some(0.8),
        checked_at: "2026-12-04T14:00:00Z".into(),
        idempotency_key: "a-test-key-0123456789".into(),
    };
    let bundle =
        observatory_course::submission::bundle_of(&labs[0], &outcome, cx(&answer_now)).unwrap();
    let rule = observatory_course::submission::rule_of(&labs[0]);
    let recomputed = bundle.validate(&rule).unwrap().unwrap();
    // Equal up to the last digit JSON keeps of a float.
    let reported = outcome.ratio.unwrap();
    for (x, y) in [
        (recomputed.ratio, reported.ratio),
        (recomputed.low, reported.low),
        (recomputed.high, reported.high),
    ] {
        assert!(
            (x - y).abs() <= 1e-12 * y.abs(),
            "{recomputed:?} vs {reported:?}"
        );
    }
    assert!(bundle.fingerprint.cores >= 1 && bundle.fingerprint.rustc.contains("rustc"));
    let edited = vec!["all.allocator=system".to_string()];
    assert_eq!(
        observatory_course::submission::bundle_of(&labs[0], &outcome, cx(&edited)),
        Err(observatory_course::submission::NotSubmittable::Stale(8))
    );
    upload_through_the_leaderboard(h);
    let predictions = p["labs"]["8"]["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 2, "{progress}");
    assert!(
        predictions[0]["ratio"].is_null(),
        "the first check had no prediction"
    );
    assert!((predictions[1]["ratio"].as_f64().unwrap() - 0.8).abs() < 1e-9);
    assert!(predictions[1]["measured"]["ratio"].as_f64().unwrap() < 0.97);
    assert_eq!(p["labs"]["8"]["check_seconds"].as_array().unwrap().len(), 2);
    // A prediction that is not one is refused before anything runs.
    let o = lab(h, &["check", "8", "--predict", "faster"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("is not a prediction"), "{}", text(&o));

    let o = lab(h, &["report", "8"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("\"passed\": true"), "{}", text(&o));

    let o = lab(h, &["list"]);
    assert!(text(&o).contains("1 passed"), "{}", text(&o));
    assert!(text(&o).contains("08  [passed ]"), "{}", text(&o));
    let progress = std::fs::read_to_string(h.join("progress.json")).unwrap();
    assert!(progress.contains("\"hints_shown\": 2"), "{progress}");
}

#[test]
fn unknown_labs_and_commands_are_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let o = lab(home.path(), &["list"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("20 labs, 0 passed"), "{}", text(&o));
    let o = lab(home.path(), &["start", "99"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no lab number 99"), "{}", text(&o));
    // A knob lab's check needs the answer file `lab start` writes (every lab of the course is
    // a code lab now: the fixture's knob lab).
    let o = lab_in(KNOB_COURSE, home.path(), &["check", "8"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("observatory lab start 8"), "{}", text(&o));
    // A recall lab has no hints, and says which labs it revisits.
    let o = lab(home.path(), &["hint", "16"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("recall lab") && text(&o).contains("06, 07, 09"),
        "{}",
        text(&o)
    );
    let o = Command::new(env!("CARGO_BIN_EXE_observatory"))
        .args(["lab", "--help"])
        .output()
        .unwrap();
    assert!(text(&o).contains("dev-check"));
}

/// `observatory ... | head` ends quietly: stdout's reader is gone before anything is written.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["lab", "list"][..],
        &["knobs"],
        &["lab", "--help"],
        &["--help"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_observatory"))
            .args(args)
            .env("OBSERVATORY_HOME", home.path())
            .env(
                "OBSERVATORY_ROOT",
                concat!(env!("CARGO_MANIFEST_DIR"), "/.."),
            )
            .stdout(writer)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{args:?}: {:?} {err}", o.status);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
}

/// The instructor's and the student's commands against a real server serving the fixture
/// course: a cohort, a roster, lab 8 opened; then `lab submit 8` uploads the passed check of
/// `home`, a retry is stored once, and the board shows it with this machine's name.
fn upload_through_the_leaderboard(home: &Path) {
    let data = tempfile::tempdir().unwrap();
    let server = common::serve_course(data.path(), None, Some(Path::new(KNOB_COURSE)), 30);
    let run = |token: &str, args: &[&str]| {
        let o = common::observatory()
            .args(args)
            .env("OBSERVATORY_LEADERBOARD", &server.base)
            .env("OBSERVATORY_COHORT", "knob-course")
            .env("OBSERVATORY_TOKEN", token)
            .env("OBSERVATORY_HOME", home)
            .env("OBSERVATORY_ROOT", KNOB_COURSE)
            .current_dir(home)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let created = run(
        &server.admin,
        &[
            "leaderboard",
            "cohort-create",
            "knob-course",
            "--name",
            "Knob course",
        ],
    );
    let instructor = created.lines().last().unwrap().trim().to_string();
    std::fs::write(home.join("roster.csv"), "student,name,email\nada,Ada,\n").unwrap();
    let tokens = run(&instructor, &["leaderboard", "roster", "roster.csv"]);
    let ada = tokens
        .lines()
        .find_map(|l| l.strip_prefix("ada,"))
        .unwrap()
        .to_string();
    run(
        &instructor,
        &[
            "leaderboard",
            "open",
            "8",
            "--closes",
            "2099-01-01T00:00:00Z",
        ],
    );
    let first = run(&ada, &["lab", "submit", "8"]);
    assert!(first.contains("lab 8: submitted as s_"), "{first}");
    assert!(first.contains("B/A 0.9"), "{first}");
    assert!(first.contains("no A/A run on this machine yet"), "{first}");
    let again = run(&ada, &["lab", "submit", "8"]);
    assert!(again.contains("already submitted"), "{again}");
    let board = run(
        &instructor,
        &["leaderboard", "board", "8", "--self-reported"],
    );
    assert!(board.contains("1 entries"), "{board}");
    let cpu = observatory_course::submission::this_machine().cpu_model;
    assert!(board.contains("ada") && board.contains(&cpu), "{board}");
}
