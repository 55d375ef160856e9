//! Shared by the command-line test binaries.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `observatory` binary under test.
pub fn observatory() -> Command {
    Command::new(env!("CARGO_BIN_EXE_observatory"))
}

/// A JSON file, parsed (panics naming the file).
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// True (after saying so) when valgrind is missing and `OBSERVATORY_SKIP_VALGRIND` allows the
/// instruction-count tests to be skipped; without that variable a missing valgrind fails them.
pub fn skip_without_valgrind() -> bool {
    observatory_testkit::skip_without(
        "valgrind",
        "OBSERVATORY_SKIP_VALGRIND",
        "apt-get install valgrind",
    )
}

/// A running `observatory leaderboard serve` on loopback; killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    pub admin: String,
    /// Where the server's log (its stderr) goes: `DATA/server.log`.
    pub log: std::path::PathBuf,
}

impl Server {
    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve(data: &Path, database_url: Option<&str>, burst: u32) -> Server {
    serve_course(data, database_url, None, burst)
}

/// [`serve`] with the labs of the course at `course` (a repository root holding `course/labs`).
pub fn serve_course(
    data: &Path,
    database_url: Option<&str>,
    course: Option<&Path>,
    burst: u32,
) -> Server {
    let mut cmd = observatory();
    // The server's own default log level (what an instructor's terminal shows).
    cmd.env_remove("RUST_LOG");
    cmd.args([
        "leaderboard",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(data)
    .args(["--rate-per-minute", "600", "--burst", &burst.to_string()])
    .stdout(Stdio::piped());
    std::fs::create_dir_all(data).unwrap();
    let log = data.join("server.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    cmd.stderr(Stdio::from(file));
    if let Some(u) = database_url {
        cmd.args(["--database-url", u]);
    }
    if let Some(c) = course {
        cmd.arg("--course").arg(c);
    }
    let mut child = cmd.spawn().expect("starting observatory leaderboard serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let base = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| {
                panic!(
                    "the server did not print where it listens within 60 s ({e}); its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        if let Some(addr) = line.strip_prefix("leaderboard: listening on ") {
            break addr.trim().to_string();
        }
    };
    let admin = std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    Server {
        child,
        base,
        admin,
        log,
    }
}
