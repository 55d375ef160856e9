//! Real `pipeline` processes on loopback, for the integration tests.
#![allow(dead_code)]

use pipeline::context::StageStats;
use pipeline::stage::ReadyInfo;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use observatory_testkit::{http_get, metric, wait_until};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pipeline")
}

/// A running stage process. Killed on drop if still running.
pub struct Stage {
    pub role: String,
    pub child: Child,
    pub ready: ReadyInfo,
    pub log: PathBuf,
    pub stats_file: PathBuf,
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Stage {
    pub fn data_addr(&self) -> String {
        self.ready.data_addr.clone().expect("stage has a data port")
    }

    pub fn admin(&self) -> &str {
        &self.ready.admin_addr
    }

    /// Wait for exit; panics (with the log) after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not exit within {timeout:?}; log:\n{}",
                    self.role,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait for a clean exit and return the final stats.
    pub fn finish(&mut self, timeout: Duration) -> StageStats {
        let status = self.wait(timeout);
        assert!(
            status.success(),
            "{} exited with {status}; log:\n{}",
            self.role,
            self.log_text()
        );
        let text = std::fs::read(&self.stats_file).expect("stats file");
        serde_json::from_slice(&text).expect("stats JSON")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on a child we own and have not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Live stats over the admin port.
    pub fn stats(&self) -> StageStats {
        let (status, body) = http_get(self.admin(), "/stats");
        assert_eq!(status, 200);
        serde_json::from_slice(&body).expect("stats JSON")
    }

    pub fn metrics(&self) -> String {
        let (status, body) = http_get(self.admin(), "/metrics");
        assert_eq!(status, 200);
        String::from_utf8(body).expect("metrics are UTF-8")
    }
}

/// Start `pipeline <role> args…` with its ready and stats files in `dir`, and wait until its
/// ports are bound.
pub fn spawn(dir: &Path, role: &str, args: &[&str], env: &[(&str, &str)]) -> Stage {
    let ready_file = dir.join(format!("{role}.ready.json"));
    let stats_file = dir.join(format!("{role}.stats.json"));
    let log = dir.join(format!("{role}.log"));
    let _ = std::fs::remove_file(&ready_file);
    let _ = std::fs::remove_file(&stats_file);
    let mut cmd = Command::new(bin());
    cmd.arg(role)
        .args(["--ready-file", ready_file.to_str().unwrap()])
        .args(["--stats-out", stats_file.to_str().unwrap()])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn pipeline");
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        if let Ok(text) = std::fs::read(&ready_file) {
            break serde_json::from_slice::<ReadyInfo>(&text).expect("ready JSON");
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "{role} exited early ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{role} not ready in time");
        std::thread::sleep(Duration::from_millis(5));
    };
    Stage {
        role: role.to_string(),
        child,
        ready,
        log,
        stats_file,
    }
}

/// The four stages, sink first, each connected to the next. `extra` holds per-stage arguments
/// in data-flow order (source, parse, aggregate, sink).
pub fn chain(dir: &Path, extra: [&[&str]; 4]) -> Vec<Stage> {
    let with_downstream = |addr: String, more: &[&str]| -> Vec<String> {
        ["--downstream".to_string(), addr]
            .into_iter()
            .chain(more.iter().map(|s| s.to_string()))
            .collect()
    };
    let sink = spawn(dir, "sink", extra[3], &[]);
    let a = with_downstream(sink.data_addr(), extra[2]);
    let agg = spawn(
        dir,
        "aggregate",
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    let p = with_downstream(agg.data_addr(), extra[1]);
    let parse = spawn(
        dir,
        "parse",
        &p.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    let s = with_downstream(parse.data_addr(), extra[0]);
    let source = spawn(
        dir,
        "source",
        &s.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    vec![source, parse, agg, sink]
}

/// A parse stage (no downstream: it discards and counts) fed by a source; `source_args` are
/// the source's own arguments (e.g. `--set events=1000`).
pub fn source_into_parse(
    dir: &Path,
    parse_args: &[&str],
    source_args: &[&str],
    parse_env: &[(&str, &str)],
) -> (Stage, Stage) {
    let parse = spawn(dir, "parse", parse_args, parse_env);
    let addr = parse.data_addr();
    let args = [&["--downstream", addr.as_str()][..], source_args].concat();
    let source = spawn(dir, "source", &args, &[]);
    (source, parse)
}
