//! CI lints while it compiles (`make test LINT=build`): `.ci/rustc-lint`, cargo's
//! `RUSTC_WORKSPACE_WRAPPER`, compiles each of the workspace's crates with rustc and then lints
//! it with clippy (`-D warnings`), in place of a `cargo clippy --all-targets` that checked every
//! dependency a second time. The lint must still reach every kind of target clippy's does, and a
//! failed lint must not be forgotten.
//!
//! A scratch crate with a library, a binary, a unit test, an integration test, a bench, an
//! example and a build script is built the way `make test LINT=build` builds (`cargo build
//! --release --bins --lib`, then `cargo test --release --no-run --all-targets`), once clean and
//! once with a clippy finding planted in each of those targets in turn: each planted finding
//! must fail the build, naming the lint and the file; so must one in a library only its unit
//! tests build. A failed lint is owed until it passes; a clippy.toml is refused. Without
//! `OBSERVATORY_LINT=1` and nothing owed, the wrapper is rustc alone (the binary runs).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A finding only clippy reports (`clippy::len_zero`), as an expression.
const FINDING: &str = "Vec::<u8>::new().len() == 0";

/// The scratch crate's files, clean: `(path, text)`; `@` is where a finding may go (behind
/// `black_box`, so that the clean `true` itself draws no lint).
const FILES: [(&str, &str); 7] = [
    (
        "src/lib.rs",
        "mod unit;\n\npub fn probe() -> bool {\n    std::hint::black_box(@)\n}\n",
    ),
    (
        "src/main.rs",
        "fn main() {\n    println!(\"{:?}\", (std::hint::black_box(@), probe::probe()));\n}\n",
    ),
    (
        "src/unit.rs",
        "#[cfg(test)]\nmod t {\n    #[test]\n    fn t() {\n        assert!(std::hint::black_box(@));\n    }\n}\n",
    ),
    (
        "tests/it.rs",
        "#[test]\nfn it() {\n    assert!(std::hint::black_box(@) & probe::probe());\n}\n",
    ),
    (
        "benches/b.rs",
        "fn main() {\n    println!(\"{}\", std::hint::black_box(@));\n}\n",
    ),
    (
        "examples/e.rs",
        "fn main() {\n    println!(\"{}\", std::hint::black_box(@));\n}\n",
    ),
    (
        "build.rs",
        "fn main() {\n    let _ = std::hint::black_box(@);\n}\n",
    ),
];

const MANIFEST: &str = "[package]\nname = \"probe\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[[bench]]\nname = \"b\"\nharness = false\n";

/// Write the crate with the finding in `planted` (a path of [`FILES`]) and `true` elsewhere.
fn write_crate(dir: &Path, planted: Option<&str>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("Cargo.toml"), MANIFEST).unwrap();
    for (path, text) in FILES {
        let body = if Some(path) == planted {
            FINDING
        } else {
            "true"
        };
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text.replace('@', body)).unwrap();
    }
}

fn wrapper() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/rustc-lint")
}

/// A file of the repository, read.
fn repo_file(path: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// What the Makefile sets `NAME` to (`[export] NAME := ...`), word by word.
fn makefile_value(name: &str) -> Vec<String> {
    let text = repo_file("Makefile");
    let line = text
        .lines()
        .find_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            l.strip_prefix(name)?.trim_start().strip_prefix(":=")
        })
        .unwrap_or_else(|| panic!("the Makefile sets no {name}"));
    line.split_whitespace().map(str::to_string).collect()
}

/// The tests above build the way CI does only if CI builds that way: `.ci/run` runs `make build`
/// and `make test` with `LINT=build`; under it the Makefile sets the wrapper, and its build and
/// test build set OBSERVATORY_LINT and add the targets these tests add. (Dropping any of these
/// would leave CI green with no clippy at all.)
#[test]
fn ci_builds_and_tests_with_the_lint_on() {
    let run = repo_file(".ci/run");
    for step in ["make build ", "make test "] {
        assert!(
            run.lines()
                .any(|l| l.trim_start().starts_with(step) && l.contains("LINT=build")),
            ".ci/run must run `{step}... LINT=build`"
        );
    }
    assert_eq!(
        makefile_value("RUSTC_WORKSPACE_WRAPPER"),
        ["$(CURDIR)/.ci/rustc-lint"]
    );
    assert_eq!(makefile_value("LINTING"), ["OBSERVATORY_LINT=1"]);
    let makefile = repo_file("Makefile");
    for (phase, targets) in [
        ("build", "$(BUILD_TARGETS)"),
        ("test-build", "$(TEST_TARGETS)"),
    ] {
        let recipe = format!("$(TIMED) {phase} ");
        let line = makefile
            .lines()
            .find(|l| l.trim_start().starts_with(&recipe))
            .unwrap_or_else(|| panic!("the Makefile has no `{recipe}...` recipe line"));
        assert!(
            line.contains("env $(LINTING) $(CARGO)") && line.contains(targets),
            "the {phase} must lint and add {targets}: {line}"
        );
    }
}

/// The two compilations of `make test LINT=build` (the build and the test build, with the
/// targets the Makefile adds): (success, everything cargo printed).
fn build(dir: &Path, target: &Path, lint: bool) -> (bool, String) {
    let mut out = String::new();
    let mut build = vec!["build".to_string(), "--release".into(), "--bins".into()];
    build.extend(makefile_value("BUILD_TARGETS"));
    let mut test = vec!["test".to_string(), "--release".into(), "--no-run".into()];
    test.extend(makefile_value("TEST_TARGETS"));
    for args in [build, test] {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(dir)
            .args(args)
            .arg("--offline")
            .env("CARGO_TARGET_DIR", target)
            .env("RUSTC_WORKSPACE_WRAPPER", wrapper())
            .env_remove("RUSTC_WRAPPER")
            .env_remove("RUSTFLAGS");
        if lint {
            cmd.env("OBSERVATORY_LINT", "1");
        } else {
            cmd.env_remove("OBSERVATORY_LINT");
        }
        let o = cmd.output().expect("running cargo");
        out.push_str(&String::from_utf8_lossy(&o.stderr));
        if !o.status.success() {
            return (false, out);
        }
    }
    (true, out)
}

/// Whether these tests can run: clippy-driver is needed by CI's build (`make test LINT=build`
/// runs the tests with `.ci/rustc-lint` as the wrapper, so there they must); a plain `make test`
/// on a toolchain without clippy skips them, saying so.
fn clippy_here() -> bool {
    let found = Command::new("clippy-driver")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let under_lint = std::env::var_os("RUSTC_WORKSPACE_WRAPPER")
        .is_some_and(|w| w.to_string_lossy().ends_with("rustc-lint"));
    assert!(
        found || !under_lint,
        "clippy-driver is not installed (rustup component add clippy): `make test LINT=build` lints with it"
    );
    if !found {
        eprintln!("SKIPPED: clippy-driver is not installed (rustup component add clippy)");
    }
    found
}

/// A scratch folder with the probe crate's path and a target folder for it, when clippy is
/// here ([`clippy_here`]).
fn scratch() -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
    if !clippy_here() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    let krate = dir.path().join("probe");
    Some((dir, krate, target))
}

fn run_probe(target: &Path) -> String {
    let ran = Command::new(target.join("release/probe"))
        .output()
        .expect("running the built binary");
    String::from_utf8_lossy(&ran.stdout).trim().to_string()
}

#[test]
fn a_clippy_finding_in_any_kind_of_target_fails_the_build_that_lints() {
    let Some((dir, krate, target)) = scratch() else {
        return;
    };

    write_crate(&krate, None);
    let (ok, out) = build(&krate, &target, true);
    assert!(ok, "the clean crate must build and lint clean:\n{out}");
    assert_eq!(run_probe(&target), "(true, true)");

    for (path, _) in FILES {
        write_crate(&krate, Some(path));
        let (ok, out) = build(&krate, &target, true);
        assert!(!ok, "a finding in {path} passed the linting build:\n{out}");
        assert!(
            out.contains("len_zero") && out.contains(path),
            "the failure must name the lint and {path}:\n{out}"
        );
    }

    // A library that only its unit tests build (no binary, no integration test): its code
    // outside `cfg(test)` is linted too (the build's `--lib`).
    let lib = dir.path().join("lib_only");
    std::fs::create_dir_all(lib.join("src")).unwrap();
    std::fs::write(
        lib.join("Cargo.toml"),
        "[package]\nname = \"lib_only\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
    )
    .unwrap();
    std::fs::write(
        lib.join("src/lib.rs"),
        format!(
            "#[cfg(not(test))]\npub fn outside_tests() -> bool {{\n    std::hint::black_box({FINDING})\n}}\n\n#[cfg(test)]\nmod t {{\n    #[test]\n    fn t() {{}}\n}}\n"
        ),
    )
    .unwrap();
    let (ok, out) = build(&lib, &target, true);
    assert!(
        !ok && out.contains("len_zero"),
        "a finding outside cfg(test) of a library only its unit tests build passed:\n{out}"
    );
}

/// A crate that failed its lint owes it: a compilation without OBSERVATORY_LINT (cargo's
/// fingerprint has the wrapper, not the variable) lints it again rather than making it fresh
/// unlinted; once it passes, the wrapper without OBSERVATORY_LINT is rustc alone again.
#[test]
fn a_failed_lint_is_owed_until_it_passes() {
    let Some((_dir, krate, target)) = scratch() else {
        return;
    };

    write_crate(&krate, Some("src/main.rs"));
    let (ok, out) = build(&krate, &target, true);
    assert!(!ok && out.contains("len_zero"), "{out}");
    let (ok, out) = build(&krate, &target, false);
    assert!(
        !ok && out.contains("len_zero"),
        "a compilation without OBSERVATORY_LINT must not clear a failed lint:\n{out}"
    );
    let (ok, out) = build(&krate, &target, true);
    assert!(!ok && out.contains("len_zero"), "{out}");

    write_crate(&krate, None);
    let (ok, out) = build(&krate, &target, false);
    assert!(ok, "the fixed crate must pass the lint it owed:\n{out}");
    assert_eq!(run_probe(&target), "(true, true)");

    // Nothing owed: without OBSERVATORY_LINT the wrapper only compiles.
    write_crate(&krate, Some("src/lib.rs"));
    let (ok, out) = build(&krate, &target, false);
    assert!(
        ok && !out.contains("len_zero"),
        "without OBSERVATORY_LINT the wrapper must only compile:\n{out}"
    );
    assert_eq!(run_probe(&target), "(true, true)");
}

/// clippy's settings must be in Cargo.toml (rustc's arguments, so cargo's fingerprint): a
/// clippy.toml, which the wrapper does not track, is refused rather than half-honoured.
#[test]
fn a_clippy_toml_is_refused() {
    let Some((_dir, krate, target)) = scratch() else {
        return;
    };
    write_crate(&krate, None);
    std::fs::write(
        krate.join("clippy.toml"),
        "too-many-arguments-threshold = 4\n",
    )
    .unwrap();
    let (ok, out) = build(&krate, &target, true);
    assert!(
        !ok && out.contains("clippy.toml") && out.contains("[lints]"),
        "{out}"
    );
}
