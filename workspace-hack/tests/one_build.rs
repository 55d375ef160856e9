//! Every build of the workspace compiles each dependency once: what `make build` and a lab's
//! student build (`cargo build --workspace --bin pipeline`) compile is a subset of what
//! `cargo test` compiles, the same crates with the same features and profile. When a new
//! dev-dependency turns on a feature the product build lacks, this test names the crate and the
//! features to add to `workspace-hack/Cargo.toml`.
//!
//! Reads cargo's unit graph (`--unit-graph`, unstable: `RUSTC_BOOTSTRAP=1`, as the fuzz build
//! does); nothing is compiled.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// A compilation: package, target, mode and profile, with its features.
type Units = BTreeMap<String, BTreeSet<String>>;

/// The units of one cargo invocation, keyed by what cargo compiles once (package, target, mode,
/// opt-level: host build scripts and proc macros have their own), the features as the value.
fn units(graph: &serde_json::Value) -> Units {
    let mut out = Units::new();
    for u in graph["units"].as_array().expect("units") {
        let key = format!(
            "{} {} {} {} opt-level={}",
            u["pkg_id"].as_str().unwrap_or("?"),
            u["target"]["kind"],
            u["target"]["name"].as_str().unwrap_or("?"),
            u["mode"].as_str().unwrap_or("?"),
            u["profile"]["opt_level"].as_str().unwrap_or("?"),
        );
        let features: Vec<&str> = u["features"]
            .as_array()
            .map(|f| f.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        out.entry(key).or_default().insert(features.join(","));
    }
    out
}

/// The units `sub` and `all` both compile, but with other features: (unit, features in `sub`,
/// features in `all`). A unit only one of them builds (a binary without tests) is compiled once.
fn twice(sub: &Units, all: &Units) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (key, features) in sub {
        let Some(theirs) = all.get(key) else { continue };
        for f in features.difference(theirs) {
            let theirs = theirs.iter().cloned().collect::<Vec<_>>().join(" | ");
            out.push((key.clone(), f.clone(), theirs));
        }
    }
    out
}

fn unit_graph(args: &[&str]) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(args)
        .args(["--release", "--unit-graph", "-Z", "unstable-options"])
        .env("RUSTC_BOOTSTRAP", "1")
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} --unit-graph: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo's unit graph is JSON")
}

#[test]
fn product_builds_reuse_the_test_build() {
    let test = units(&unit_graph(&["test", "--workspace", "--no-run"]));
    for build in [
        &["build", "--workspace", "--bins"][..],
        &["build", "--workspace", "--bin", "pipeline"][..],
    ] {
        let twice = twice(&units(&unit_graph(build)), &test);
        let report: Vec<String> = twice
            .iter()
            .map(|(unit, mine, theirs)| {
                format!(
                    "  {unit}\n    `cargo {}`: [{mine}]\n    `cargo test`: [{theirs}]",
                    build.join(" ")
                )
            })
            .collect();
        assert!(
            twice.is_empty(),
            "`cargo {}` compiles {} unit(s) that `cargo test` compiles with other features (so CI and a fresh clone compile them twice); turn the missing features on in workspace-hack/Cargo.toml:\n{}",
            build.join(" "),
            twice.len(),
            report.join("\n")
        );
    }
}

/// The comparison itself: a unit both build with other features is named; one only the product
/// build has is not a second compilation.
#[test]
fn a_feature_only_the_tests_turn_on_is_named() {
    let unit = |pkg: &str, name: &str, features: &[&str]| {
        serde_json::json!({
            "pkg_id": pkg,
            "target": {"kind": ["lib"], "name": name},
            "mode": "build",
            "profile": {"opt_level": "3"},
            "features": features,
        })
    };
    let tokio = "registry+https://github.com/rust-lang/crates.io-index#tokio@1.54.1";
    let cli = "path+file:///w/cli#0.1.0";
    let test = units(&serde_json::json!({"units": [unit(tokio, "tokio", &["rt", "test-util"])]}));
    let same = units(&serde_json::json!({"units": [
        unit(tokio, "tokio", &["rt", "test-util"]),
        unit(cli, "observatory", &[]),
    ]}));
    assert!(twice(&same, &test).is_empty());
    let other = units(&serde_json::json!({"units": [unit(tokio, "tokio", &["rt"])]}));
    let found = twice(&other, &test);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].0.contains("tokio@1.54.1"), "{found:?}");
    assert_eq!(
        (found[0].1.as_str(), found[0].2.as_str()),
        ("rt", "rt,test-util")
    );
}
