//! The Landlock confinement of untrusted code ([`observatory_runner::sandbox`]), tried by a
//! hostile child: each attempt first without the confinement (so each attempt is real), then
//! under it. One test in its own binary: [`sandbox::install`] confines the calling process for
//! good.

use observatory_runner::sandbox::{self, Kind, Policy};
use std::path::Path;
use std::process::Command;

/// A child that tries to read a secret, list a home folder, write outside its folder, open its
/// parent's memory and signal its parent; one line per attempt. (Another process's
/// `/proc/PID/environ` stays readable under Landlock, tested on this kernel: the verification's
/// PID namespace keeps the verifier out of sight, `cli/src/verify_sandbox.rs`.)
const ATTEMPTS: &str = r#"
try() { if eval "$2" >/dev/null 2>&1; then echo "$1=ok"; else echo "$1=refused"; fi; }
try read-secret 'cat "$SECRET"'
try list-home 'ls "$HOME_DIR"'
try write-outside 'echo planted > "$OUTSIDE/planted"'
try write-own 'echo mine > "$OWN/mine"'
try parent-memory '(exec 3< /proc/$PARENT/mem)'
try signal-parent 'kill -0 $PARENT'
"#;

/// A submission's compile-time attempt: the secret file's text in the binary.
const INCLUDE: &str =
    "const S: &str = include_str!(env!(\"SECRET_PATH\"));\nfn main() { print!(\"{S}\"); }\n";

fn run(dir: &Path, confined: bool) -> String {
    let mut cmd = Command::new("sh");
    if confined {
        sandbox::confine(&mut cmd, Kind::Run);
    }
    let out = cmd
        .args(["-c", ATTEMPTS])
        .env("SECRET", dir.join("home/.observatory/token"))
        .env("HOME_DIR", dir.join("home"))
        .env("OUTSIDE", dir.join("outside"))
        .env("OWN", dir.join("own"))
        .env("PARENT", std::process::id().to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn compile(dir: &Path, confined: bool) -> (bool, String) {
    let mut cmd = Command::new("rustc");
    if confined {
        sandbox::confine(&mut cmd, Kind::Build);
    }
    let out = cmd
        .arg(dir.join("src/main.rs"))
        .arg("-o")
        .arg(dir.join("out/hostile"))
        .env("SECRET_PATH", dir.join("home/.observatory/token"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_confined_child_reaches_nothing_outside_its_policy() {
    if sandbox::abi_version() < 1 {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI's kernel must offer Landlock"
        );
        eprintln!("skipped: no Landlock on this kernel");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["home/.observatory", "outside", "own", "src", "out"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("home/.observatory/token"), "instructor-secret").unwrap();
    std::fs::write(d.join("src/main.rs"), INCLUDE).unwrap();
    let free = run(d, false);
    for attempt in [
        "read-secret",
        "list-home",
        "write-outside",
        "write-own",
        "parent-memory",
        "signal-parent",
    ] {
        assert!(free.contains(&format!("{attempt}=ok")), "{free}");
    }
    let (built, err) = compile(d, false);
    assert!(built, "{err}");
    std::fs::remove_file(d.join("outside/planted")).unwrap();

    let home = |p: &str| std::env::var_os(p).map(std::path::PathBuf::from);
    let user = home("HOME").unwrap();
    let toolchain = vec![
        home("CARGO_HOME").unwrap_or_else(|| user.join(".cargo")),
        home("RUSTUP_HOME").unwrap_or_else(|| user.join(".rustup")),
    ];
    let mut build_read = toolchain.clone();
    build_read.push(d.join("src"));
    let build = Policy {
        read: build_read,
        write: vec![d.join("out")],
        tmp: Some(d.join("out")),
    };
    let run_policy = Policy {
        read: vec![],
        write: vec![d.join("own")],
        tmp: Some(d.join("own")),
    };
    // The test itself: its own folder (the libtest harness writes nothing else).
    let own = Policy {
        read: vec![d.to_path_buf()],
        write: vec![],
        tmp: None,
    };
    sandbox::install(&build, &run_policy, &own).unwrap();
    assert!(sandbox::installed());

    let jailed = run(d, true);
    for (attempt, want) in [
        ("read-secret", "refused"),
        ("list-home", "refused"),
        ("write-outside", "refused"),
        ("write-own", "ok"),
        ("parent-memory", "refused"),
    ] {
        assert!(jailed.contains(&format!("{attempt}={want}")), "{jailed}");
    }
    if sandbox::abi_version() >= 6 {
        assert!(jailed.contains("signal-parent=refused"), "{jailed}");
    }
    assert!(!d.join("outside/planted").exists());

    let (built, err) = compile(d, true);
    assert!(!built, "the secret was compiled in");
    assert!(err.contains("couldn't read"), "{err}");
}
