//! Every build of the workspace compiles each dependency once: what `make build` and a lab's
//! student build (`cargo build --workspace --bin pipeline`) and `make e2e`'s live test compile is a subset of what
//! `cargo test` compiles, the same crates with the same features and profile. When a new
//! dev-dependency turns on a feature the product build lacks, this test names the crate and the
//! features to add to `workspace-hack/Cargo.toml`.
//!
//! Reads cargo's unit graph (`--unit-graph`, unstable: `RUSTC_BOOTSTRAP=1`, as the fuzz build
//! does); nothing is compiled.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// What cargo compiles, (package, target, mode), to each way it is compiled there: the profile's
/// settings and the features. A crate built both for build scripts (opt-level 0) and for the
/// binaries has two ways in every build; a way only one build has is a second compilation.
type Units = BTreeMap<String, BTreeSet<String>>;

fn units(graph: &serde_json::Value) -> Units {
    let mut out = Units::new();
    for u in graph["units"].as_array().expect("units") {
        let key = format!(
            "{} {} {} {}",
            u["pkg_id"].as_str().unwrap_or("?"),
            u["target"]["kind"],
            u["target"]["name"].as_str().unwrap_or("?"),
            u["mode"].as_str().unwrap_or("?"),
        );
        // Every setting but the profile's name: cargo shares a compilation between profiles
        // whose settings agree (and compiles again when one differs, features or not).
        let mut profile = u["profile"].clone();
        if let Some(p) = profile.as_object_mut() {
            p.remove("name");
        }
        let features: Vec<&str> = u["features"]
            .as_array()
            .map(|f| f.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        out.entry(key).or_default().insert(format!(
            "features [{}] profile {profile}",
            features.join(",")
        ));
    }
    out
}

/// The compilations `sub` and `all` both make, but in other ways: (unit, the way in `sub`, the
/// ways in `all`). A unit only one of them builds (a binary without tests) is compiled once.
fn twice(sub: &Units, all: &Units) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (key, ways) in sub {
        let Some(theirs) = all.get(key) else { continue };
        for w in ways.difference(theirs) {
            let theirs = theirs.iter().cloned().collect::<Vec<_>>().join(" | ");
            out.push((key.clone(), w.clone(), theirs));
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
    // (the build, the package it compiles again on purpose)
    for (build, own) in [
        (&["build", "--workspace", "--bins"][..], None),
        (&["build", "--workspace", "--bin", "pipeline"][..], None),
        // `make e2e` (deploy/cluster.sh)
        (
            &["test", "--workspace", "--test", "live", "--no-run"][..],
            None,
        ),
        // The labs' authoring check: the pipeline again with its mutants, nothing else.
        (
            &[
                "build",
                "--workspace",
                "--bin",
                "pipeline",
                "--features",
                "pipeline/lab-mutants",
            ][..],
            Some("/pipeline#"),
        ),
    ] {
        let mut twice = twice(&units(&unit_graph(build)), &test);
        if let Some(own) = own {
            let before = twice.len();
            twice.retain(|(unit, _, _)| !unit.contains(own));
            assert!(
                twice.len() < before,
                "`cargo {}` was expected to compile the pipeline again (with its mutants)",
                build.join(" ")
            );
        }
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
            "`cargo {}` compiles {} unit(s) that `cargo test` compiles with other features or profile settings (so CI and a fresh clone compile them twice); turn the missing features on in workspace-hack/Cargo.toml, or make the settings agree:\n{}",
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
    let unit_at = |pkg: &str, name: &str, features: &[&str], opt: &str, profile: &str| {
        serde_json::json!({
            "pkg_id": pkg,
            "target": {"kind": ["lib"], "name": name},
            "mode": "build",
            "profile": {"name": profile, "opt_level": opt, "debuginfo": "line-tables-only"},
            "features": features,
        })
    };
    let unit =
        |pkg: &str, name: &str, features: &[&str]| unit_at(pkg, name, features, "3", "release");
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
    assert!(found[0].1.starts_with("features [rt] "), "{found:?}");
    assert!(
        found[0].2.starts_with("features [rt,test-util] "),
        "{found:?}"
    );

    // The same features under another setting is a second compilation too; another profile's
    // name with the same settings is not, and neither is a crate built for build scripts
    // (opt-level 0) beside its build for the binaries when the tests build both.
    let slower = units(&serde_json::json!({"units": [
        unit_at(tokio, "tokio", &["rt", "test-util"], "2", "release"),
    ]}));
    let found = twice(&slower, &test);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].1.contains("\"opt_level\":\"2\""), "{found:?}");
    let renamed = units(&serde_json::json!({"units": [
        unit_at(tokio, "tokio", &["rt", "test-util"], "3", "bench"),
    ]}));
    assert!(twice(&renamed, &test).is_empty());
    let both = serde_json::json!({"units": [
        unit(tokio, "tokio", &["rt", "test-util"]),
        unit_at(tokio, "tokio", &["rt"], "0", "release"),
    ]});
    assert!(twice(&units(&both), &units(&both)).is_empty());
}
