//! `leaderboard verify`'s re-run of a submission, with the submission's code out of reach of
//! everything of the instructor's: the token, the hidden seed's source, files, the network.
//!
//! The verifying process (which holds the token) never runs the code. It writes the request
//! (lab, answer, seed) and the submitted slot file to a scratch folder, then starts
//! `observatory lab verify-run` under bubblewrap ([`namespace`]): processes of its own (the
//! verifier out of sight), no capabilities, no network but a loopback of its own, the machine's
//! homes, temporary folders and sockets hidden, an environment of [`ENV_PASSED`] only (no
//! token), no terminal, and the submitted slot file mounted over the checkout's for that process
//! alone (the checkout is never written). There, [`verify_run`] confines itself with
//! Landlock ([`observatory_runner::sandbox`]) and builds and checks as `lab check` does, each
//! compilation and each process running the code narrower still:
//!
//! - compiling ([`Kind::Build`]): reads the checkout's tracked files and the toolchain only
//!   (no `include_str!` of a token file, a database or a home folder), writes `target/verify`
//!   only, a target folder of its own (the instructor's binaries are never the submission's);
//! - running ([`Kind::Run`]): reads the system and the built binaries, writes only the check's
//!   report folder; cannot trace or open the memory of anything outside, nor signal it.
//!
//! The outcome comes back as a file only the confined check's own process can write.
//!
//! [`Kind::Build`]: observatory_runner::sandbox::Kind::Build
//! [`Kind::Run`]: observatory_runner::sandbox::Kind::Run

use anyhow::{Context, bail};
use observatory_course::check::{Outcome, Variant};
use observatory_course::spec::{Lab, find, load_labs};
use observatory_runner::sandbox::{self, Policy};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The variables the confined check gets from the verifier's environment (when set); every
/// other one (the token above all) stays out.
pub const ENV_PASSED: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "TERM",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
];

/// What the confined check is asked to do.
#[derive(Serialize, Deserialize, Debug)]
struct Request {
    lab: u32,
    /// A knob lab's answer (a code lab's change is the mounted slot file).
    answer: Vec<String>,
    seed: u64,
    root: PathBuf,
    scratch: PathBuf,
    /// What compiling may read: the checkout's tracked entries and the toolchain's folders.
    build_read: Vec<PathBuf>,
    cargo_home: PathBuf,
    rustup_home: PathBuf,
}

/// Where a verification's check builds: a target folder of its own.
pub fn target_dir(root: &Path) -> PathBuf {
    root.join("target").join("verify")
}

fn home_dir() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set (the toolchain's folders are found from it)")
}

/// The checkout's tracked top-level entries (`git ls-files`): what compiling may read. An
/// untracked `.observatory/` (the leaderboard's database and admin token), `reports/` or a
/// `.env` stays out.
fn tracked_entries(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z"])
        .output()
        .context("running git ls-files (a verification builds from a git checkout)")?;
    if !out.status.success() {
        bail!(
            "{} is not a git checkout: a verification builds only its tracked files",
            root.display()
        );
    }
    let mut top: Vec<PathBuf> = out
        .stdout
        .split(|b| *b == 0)
        .filter_map(|p| std::str::from_utf8(p).ok())
        .filter_map(|p| p.split('/').next())
        .filter(|p| !p.is_empty())
        .map(|p| root.join(p))
        .collect();
    top.sort();
    top.dedup();
    Ok(top)
}

/// Is bubblewrap there and allowed to make a network namespace, and does the kernel offer
/// Landlock? The error says what is missing and why a verification needs it.
pub fn check_isolation() -> anyhow::Result<()> {
    const WHY: &str = "`leaderboard verify` runs a student's code, which must not reach your token, your files or the network";
    if sandbox::abi_version() < 1 {
        bail!(
            "{WHY}: it is confined with Landlock, and this kernel does not offer it (Linux 5.13 or later, `landlock` among the boot's LSMs); verify on another machine, or with --k8s"
        );
    }
    let probe = std::process::Command::new("bwrap")
        .args(["--dev-bind", "/", "/", "--unshare-net", "--unshare-user"])
        .args(["--die-with-parent", "true"])
        .output();
    match probe {
        Err(e) => bail!(
            "{WHY}: it runs in a bubblewrap namespace without network, and `bwrap` cannot be run ({e}): install bubblewrap (Debian and Ubuntu: apt install bubblewrap)"
        ),
        Ok(o) if !o.status.success() => bail!(
            "{WHY}: it runs in a bubblewrap namespace without network, and bwrap cannot make one here: {} (user namespaces disabled? see sysctl kernel.unprivileged_userns_clone or user.max_user_namespaces)",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Ok(_) => Ok(()),
    }
}

/// Check `lab` with the submitted `slot_text` (a code lab's whole slot file) or `answer` (a knob
/// lab's), on `seed`, confined; `label` names the scratch folder.
pub async fn check_confined(
    root: &Path,
    lab: &Lab,
    slot_text: Option<String>,
    answer: Vec<String>,
    seed: u64,
    label: &str,
) -> anyhow::Result<Outcome> {
    check_isolation()?;
    // Mounts and Landlock rules want plain absolute paths (no `..`, no symlinks).
    let root = root
        .canonicalize()
        .with_context(|| format!("finding {}", root.display()))?;
    let root = root.as_path();
    let safe: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(64)
        .collect();
    let scratch = root
        .join("target")
        .join("verify-runs")
        .join(format!("{safe}-{}", crate::args::timestamp()));
    let _ = std::fs::remove_dir_all(&scratch);
    for d in ["home", "tmp-build", "tmp-run"] {
        std::fs::create_dir_all(scratch.join(d))
            .with_context(|| format!("creating {}", scratch.join(d).display()))?;
    }
    std::fs::create_dir_all(target_dir(root))?;
    let home = home_dir()?;
    let real = |p: PathBuf| p.canonicalize().unwrap_or(p);
    let cargo_home =
        real(std::env::var_os("CARGO_HOME").map_or_else(|| home.join(".cargo"), PathBuf::from));
    let rustup_home =
        real(std::env::var_os("RUSTUP_HOME").map_or_else(|| home.join(".rustup"), PathBuf::from));
    let mut build_read = tracked_entries(root)?;
    build_read.push(rustup_home.clone());
    // cargo's programs, the crates' sources and its configuration; not its credentials.
    for p in ["bin", "registry", "git", "config.toml", "config"] {
        build_read.push(cargo_home.join(p));
    }
    let request = Request {
        lab: lab.number(),
        answer,
        seed,
        root: root.to_path_buf(),
        scratch: scratch.clone(),
        build_read,
        cargo_home: cargo_home.clone(),
        rustup_home: rustup_home.clone(),
    };
    let request_path = scratch.join("request.json");
    std::fs::write(&request_path, serde_json::to_vec_pretty(&request)?)?;
    let outcome_path = scratch.join("outcome.json");

    let exe = std::env::current_exe().context("finding the observatory binary")?;
    let slot = match (&slot_text, lab.conformance_file()) {
        (Some(text), Some(file)) => {
            let mine = scratch.join("slot.rs");
            std::fs::write(&mine, text)?;
            Some((mine, root.join(file)))
        }
        _ => None,
    };
    let target = target_dir(root);
    let vars = [
        ("CARGO_HOME", cargo_home.clone()),
        ("RUSTUP_HOME", rustup_home.clone()),
        ("HOME", scratch.join("home")),
        ("OBSERVATORY_HOME", scratch.join("home")),
        ("OBSERVATORY_ROOT", root.to_path_buf()),
        ("TMPDIR", scratch.join("tmp-build")),
        ("CARGO_TARGET_DIR", target.clone()),
        ("PIPELINE_BIN", target.join("release").join("pipeline")),
        ("CARGO_NET_OFFLINE", PathBuf::from("true")),
    ];
    let keep = [
        (root, true),
        (cargo_home.as_path(), false),
        (rustup_home.as_path(), false),
        (exe.as_path(), false),
    ];
    let mut cmd = namespace(
        slot.as_ref().map(|(a, b)| (a.as_path(), b.as_path())),
        &keep,
        &vars,
    );
    cmd.arg(&exe)
        .args(["lab", "verify-run"])
        .arg(&request_path)
        .arg(&outcome_path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("starting the confined check (bwrap)")?;
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let relays = async {
        if let (Some(o), Some(e)) = (out, err) {
            tokio::join!(relay(o), relay(e));
        }
    };
    let (status, ()) = tokio::join!(child.wait(), relays);
    let status = status.context("waiting for the confined check")?;
    let outcome = std::fs::read_to_string(&outcome_path);
    // The folder goes: what the code left there (a symlink to a secret of yours, say) is not for
    // you to open later. Its messages were shown above.
    let _ = std::fs::remove_dir_all(&scratch);
    if !status.success() {
        bail!("the confined check failed ({status}; its messages are above)");
    }
    let text = outcome.context("reading the confined check's outcome")?;
    serde_json::from_str(&text).context("reading the confined check's outcome")
}

/// Folders of the machine hidden from the namespace (an empty tmpfs over each): homes, the
/// temporary folders, and `/run`, where the machine's Unix sockets are (a database's, a
/// container engine's: Landlock does not refuse connecting to one). What the check needs under
/// them is mounted back ([`namespace`]'s `keep`).
const HIDDEN: &[&str] = &["/home", "/root", "/tmp", "/var/tmp", "/run"];

/// bubblewrap around the command that follows (append the program and its arguments): the
/// machine's file system without [`HIDDEN`] but for `keep` (`(path, writable)`, mounted back),
/// with `slot`'s file (`(submitted, checkout's)`) mounted over the checkout's; a `/dev` of its own
/// (null, zero, random, a private shm); processes of its own (a PID namespace and its `/proc`:
/// the verifier and every other process out of sight, since Landlock leaves another process's
/// `/proc/PID/environ` readable); a user namespace and no capabilities even when the verifier is
/// root (no `TIOCSTI` into a terminal, no bpf, no kernel log); no network but a loopback of its
/// own; no shared memory or host name of the machine's; a session of its own and no terminal on
/// stdin; dies with its parent; an environment of [`ENV_PASSED`] and `vars` only.
fn namespace(
    slot: Option<(&Path, &Path)>,
    keep: &[(&Path, bool)],
    vars: &[(&str, PathBuf)],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("bwrap");
    cmd.args(["--dev-bind", "/", "/"]);
    for dir in HIDDEN.iter().filter(|d| Path::new(d).is_dir()) {
        cmd.args(["--tmpfs", dir]);
    }
    for (path, writable) in keep.iter().filter(|(p, _)| p.exists()) {
        cmd.arg(if *writable { "--bind" } else { "--ro-bind" })
            .arg(path)
            .arg(path);
    }
    if let Some((submitted, checkout)) = slot {
        cmd.arg("--ro-bind").arg(submitted).arg(checkout);
    }
    cmd.args(["--dev", "/dev"])
        // The command is the namespace's PID 1: no copy of bubblewrap (with the environment it
        // was started with) stays inside.
        .args(["--unshare-pid", "--as-pid-1", "--proc", "/proc"])
        .args(["--unshare-user", "--cap-drop", "ALL"])
        .args(["--unshare-net", "--unshare-ipc", "--unshare-uts"])
        .args(["--die-with-parent", "--new-session"])
        .stdin(std::process::Stdio::null());
    // bubblewrap itself gets the allow-list only, and clears even that for the command.
    cmd.env_clear().arg("--clearenv");
    for var in ENV_PASSED {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, &v).arg("--setenv").arg(var).arg(v);
        }
    }
    for (k, v) in vars {
        cmd.arg("--setenv").arg(k).arg(v);
    }
    cmd.arg("--");
    cmd
}

/// `text` with every control character but newline and tab shown as `\xNN` (or `\u{N}`): what
/// the confined check prints reaches the verifier's terminal without escape sequences (a forged
/// "verified" line, a window title, a cursor that rewrites what was printed).
fn inert(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() => match u8::try_from(u32::from(c)) {
                Ok(b) => out.push_str(&format!("\\x{b:02x}")),
                Err(_) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            },
            c => out.push(c),
        }
    }
    out
}

/// Copy `from` to this process's stderr through [`inert`], in chunks (a line without end cannot
/// grow memory).
async fn relay(mut from: impl tokio::io::AsyncRead + Unpin) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => eprint!("{}", inert(&String::from_utf8_lossy(&buf[..n]))),
        }
    }
}

/// `observatory lab verify-run REQUEST OUTCOME` (started by [`check_confined`] only): confine
/// this process, then build and check as the request says, writing the outcome.
pub async fn verify_run(request: &Path, outcome: &Path) -> anyhow::Result<()> {
    let r: Request = serde_json::from_slice(
        &std::fs::read(request).with_context(|| format!("reading {}", request.display()))?,
    )
    .context("reading the verification request")?;
    let target = target_dir(&r.root);
    let build = Policy {
        read: r.build_read.clone(),
        write: vec![target.clone(), r.scratch.join("tmp-build")],
        tmp: Some(r.scratch.join("tmp-build")),
    };
    let run = Policy {
        read: vec![target],
        write: vec![r.scratch.join("home"), r.scratch.join("tmp-run")],
        tmp: Some(r.scratch.join("tmp-run")),
    };
    let own = Policy {
        read: vec![r.root.clone(), r.cargo_home.clone(), r.rustup_home.clone()],
        // (and what `build` and `run` write: the ceiling is the union)
        write: vec![r.scratch.clone()],
        tmp: None,
    };
    sandbox::install(&build, &run, &own).context("confining the check")?;
    eprintln!("confined: {}", sandbox::describe());
    let labs = load_labs(&r.root.join("course/labs"))?;
    let lab = find(&labs, r.lab)?;
    let ws = crate::lab::workspace(&r.root);
    let o = crate::lab::run_check_seeded(
        lab,
        &Variant::Student(r.answer),
        &ws,
        &r.root,
        0,
        true,
        Some(r.seed),
    )
    .await?;
    std::fs::write(outcome, serde_json::to_vec(&o)?)
        .with_context(|| format!("writing {}", outcome.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    /// What a hostile submission tries from inside the namespace, one line per attempt.
    const ATTEMPTS: &str = r#"
echo "token=[$OBSERVATORY_TOKEN]"
n=0
for f in /proc/[0-9]*/environ; do
  case "$f" in "/proc/$$/"*) continue ;; esac
  if grep -q OBSERVATORY_TOKEN= "$f" 2>/dev/null; then n=$((n+1)); fi
done
echo "environ-with-token=$n"
if (exec 3<>/dev/tcp/127.0.0.1/PORT) 2>/dev/null; then echo net=open; else echo net=closed; fi
if python3 -c "import socket; socket.socket(socket.AF_UNIX).connect('SOCKET')" 2>/dev/null; then echo unix=open; else echo unix=closed; fi
echo "caps=$(grep CapEff /proc/self/status | tr -d '[:space:]')"
echo "slot=$(cat 'SLOT')"
if (echo planted > 'SLOT') 2>/dev/null; then echo slot-write=ok; else echo slot-write=refused; fi
"#;

    fn bwrap_works() -> bool {
        let ok = check_isolation().is_ok();
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have bubblewrap and Landlock: {:?}",
                check_isolation().err()
            );
            eprintln!("skipped: {:?}", check_isolation().err());
        }
        ok
    }

    fn attempt(
        mut cmd: tokio::process::Command,
        port: u16,
        slot: &Path,
        socket: &Path,
    ) -> tokio::process::Command {
        // In the text, not the environment: the namespace clears that.
        let script = ATTEMPTS
            .replace("PORT", &port.to_string())
            .replace("SLOT", &slot.display().to_string())
            .replace("SOCKET", &socket.display().to_string());
        cmd.args(["bash", "-c", &script])
            .env("OBSERVATORY_TOKEN", "instructor-secret");
        cmd
    }

    /// The token in the verifier's environment and in another process's (`/proc/PID/environ`),
    /// a server on the machine's loopback, a Unix socket in a hidden folder, the capabilities of
    /// a root verifier, and the checkout's slot file: each reachable without the namespace (so
    /// each attempt is real), none inside it, where the slot file reads as the submitted one and
    /// cannot be written.
    #[tokio::test]
    async fn the_namespace_keeps_the_token_the_network_and_the_checkout_out() {
        if !bwrap_works() {
            return;
        }
        // Under /tmp, which the namespace hides but for the checkout it mounts back.
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let kept = dir.path().join("checkout");
        std::fs::create_dir(&kept).unwrap();
        let checkout = kept.join("slot.rs");
        let submitted = dir.path().join("submitted.rs");
        std::fs::write(&checkout, "instructor's").unwrap();
        std::fs::write(&submitted, "student's").unwrap();
        let socket = dir.path().join("database.sock");
        let _database = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        // SAFETY: geteuid only reads this process's credentials.
        let root = unsafe { libc::geteuid() } == 0;
        // Another process holding the token, as the verifier does.
        let mut holder = std::process::Command::new("sleep")
            .arg("120")
            .env("OBSERVATORY_TOKEN", "instructor-secret")
            .spawn()
            .unwrap();
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let port = server.local_addr().unwrap().port();

        let free = tokio::process::Command::new("env");
        let out = attempt(free, port, &checkout, &socket)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("token=[instructor-secret]"), "{text}");
        assert!(!text.contains("environ-with-token=0"), "{text}");
        assert!(text.contains("net=open"), "{text}");
        assert!(text.contains("unix=open"), "{text}");
        if root {
            assert!(!text.contains("caps=CapEff:0000000000000000"), "{text}");
        }
        assert!(text.contains("slot=instructor's"), "{text}");
        assert!(text.contains("slot-write=ok"), "{text}");
        std::fs::write(&checkout, "instructor's").unwrap();
        while server.accept().is_ok() {}

        let ns = namespace(
            Some((&submitted, &checkout)),
            &[(&kept, true)],
            &[("HOME", dir.path().join("home"))],
        );
        let out = attempt(ns, port, &checkout, &socket)
            .output()
            .await
            .unwrap();
        let _ = holder.kill();
        let _ = holder.wait();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("token=[]"), "{text}");
        assert!(text.contains("environ-with-token=0"), "{text}");
        assert!(text.contains("net=closed"), "{text}");
        assert!(text.contains("unix=closed"), "{text}");
        assert!(text.contains("caps=CapEff:0000000000000000"), "{text}");
        assert!(text.contains("slot=student's"), "{text}");
        assert!(text.contains("slot-write=refused"), "{text}");
        assert_eq!(std::fs::read_to_string(&checkout).unwrap(), "instructor's");
        assert_eq!(
            server.accept().map(|_| ()).map_err(|e| e.kind()),
            Err(ErrorKind::WouldBlock),
            "the server was reached from the namespace"
        );
    }

    #[test]
    fn what_the_check_prints_reaches_the_terminal_without_escape_sequences() {
        let forged = "step 3\n\x1b[1A\x1b[2K\x1b[32mverified 0.001: agrees\x1b[0m\x1b]0;t\x07\r\tok\u{9b}31m\n";
        let shown = inert(forged);
        assert!(
            !shown
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{shown:?}"
        );
        assert_eq!(
            shown,
            "step 3\n\\x1b[1A\\x1b[2K\\x1b[32mverified 0.001: agrees\\x1b[0m\\x1b]0;t\\x07\\x0d\tok\\x9b31m\n"
        );
    }

    #[test]
    fn compiling_reads_only_tracked_entries() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let Ok(entries) = tracked_entries(&root) else {
            return; // not a git checkout (a source tarball)
        };
        let names: Vec<String> = entries
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect();
        for want in ["Cargo.toml", "Cargo.lock", "pipeline", "course"] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        for never in ["target", ".observatory", "reports"] {
            assert!(
                !names.iter().any(|n| n == never),
                "{never} readable: {names:?}"
            );
        }
    }
}
