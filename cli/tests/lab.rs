//! The lab runner as a student uses it: list, start, hint, check (fail, then pass), report.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn lab(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_observatory"))
        .arg("lab")
        .args(args)
        .env("OBSERVATORY_HOME", home)
        .env(
            "OBSERVATORY_ROOT",
            concat!(env!("CARGO_MANIFEST_DIR"), "/.."),
        )
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_student_does_the_zero_copy_lab() {
    if common::skip_without_valgrind() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let h = home.path();

    let o = lab(h, &["list"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("14 labs, 0 passed"), "{t}");
    assert!(t.contains("Serde and zero-copy"), "{t}");

    let o = lab(h, &["start", "6"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("# Lab 06"));
    let answer = h.join("answers/06.toml");
    assert!(
        std::fs::read_to_string(&answer)
            .unwrap()
            .contains("parse.mode=owned")
    );

    let o = lab(h, &["hint", "6"]);
    assert!(text(&o).contains("Hint 1 of 3"), "{}", text(&o));
    let o = lab(h, &["hint", "6"]);
    assert!(text(&o).contains("Hint 2 of 3"), "{}", text(&o));

    // Unchanged: the baseline against itself does not pass.
    let o = lab(h, &["check", "6"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("not yet"), "{}", text(&o));

    // A wrong knob value is a clear error, not a measurement.
    std::fs::write(&answer, "set = [\"parse.mode=fast\"]\n").unwrap();
    let o = lab(h, &["check", "6"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("parse.mode"), "{}", text(&o));

    std::fs::write(&answer, "set = [\"parse.mode=borrowed\"]\n").unwrap();
    let o = lab(h, &["check", "6"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("lab 06 PASSED"), "{t}");
    assert!(t.contains("instructions_per_event: B/A = 0.7"), "{t}");

    let o = lab(h, &["report", "6"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("\"passed\": true"), "{}", text(&o));

    let o = lab(h, &["list"]);
    assert!(text(&o).contains("1 passed"), "{}", text(&o));
    assert!(text(&o).contains("06  [passed ]"), "{}", text(&o));
    let progress = std::fs::read_to_string(h.join("progress.json")).unwrap();
    assert!(progress.contains("\"hints_shown\": 2"), "{progress}");
}

#[test]
fn unknown_labs_and_commands_are_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let o = lab(home.path(), &["start", "99"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no lab number 99"), "{}", text(&o));
    let o = lab(home.path(), &["check", "1"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("observatory lab start 1"), "{}", text(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_observatory"))
        .args(["lab", "--help"])
        .output()
        .unwrap();
    assert!(text(&o).contains("dev-check"));
}
