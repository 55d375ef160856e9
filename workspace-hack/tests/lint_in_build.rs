//! CI lints while it compiles (`make test LINT=build`): `.ci/rustc-lint`, cargo's
//! `RUSTC_WORKSPACE_WRAPPER`, compiles each of the workspace's crates with rustc and then lints
//! it with clippy (`-D warnings`), in place of a `cargo clippy --all-targets` that checked every
//! dependency a second time. The lint must still reach every kind of target clippy's does.
//!
//! A scratch crate with a library, a binary, a unit test, an integration test, a bench, an
//! example and a build script is built the way `make test LINT=build` builds (`cargo build
//! --release --bins`, then `cargo test --release --no-run --all-targets`), once clean and once
//! with a clippy finding planted in each of those targets in turn: each planted finding must
//! fail the build, naming the lint and the file. Without `OBSERVATORY_LINT=1` the wrapper is
//! rustc alone, and what it builds is rustc's (the binary runs).

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

/// The two compilations of `make test LINT=build`: (success, everything cargo printed).
fn build(dir: &Path, target: &Path, lint: bool) -> (bool, String) {
    let mut out = String::new();
    for args in [
        &["build", "--release", "--bins"][..],
        &["test", "--release", "--no-run", "--all-targets"][..],
    ] {
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

#[test]
fn a_clippy_finding_in_any_kind_of_target_fails_the_build_that_lints() {
    let found = Command::new("clippy-driver").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "clippy-driver is not installed (rustup component add clippy): CI's build lints with it"
    );
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    let krate = dir.path().join("probe");

    write_crate(&krate, None);
    let (ok, out) = build(&krate, &target, true);
    assert!(ok, "the clean crate must build and lint clean:\n{out}");
    let bin = target.join("release/probe");
    let ran = Command::new(&bin)
        .output()
        .expect("running the built binary");
    assert_eq!(String::from_utf8_lossy(&ran.stdout).trim(), "(true, true)");

    for (path, _) in FILES {
        write_crate(&krate, Some(path));
        let (ok, out) = build(&krate, &target, true);
        assert!(!ok, "a finding in {path} passed the linting build:\n{out}");
        assert!(
            out.contains("len_zero") && out.contains(path),
            "the failure must name the lint and {path}:\n{out}"
        );
    }

    // Without OBSERVATORY_LINT=1 the wrapper is rustc alone: the finding builds, and runs.
    write_crate(&krate, Some("src/main.rs"));
    let (ok, out) = build(&krate, &target, false);
    assert!(
        ok,
        "without OBSERVATORY_LINT the wrapper must only compile:\n{out}"
    );
    assert!(!out.contains("len_zero"), "{out}");
    let ran = Command::new(&bin)
        .output()
        .expect("running the built binary");
    assert_eq!(String::from_utf8_lossy(&ran.stdout).trim(), "(true, true)");
}
