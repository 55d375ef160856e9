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

/// A hand-driven peer on a stage's data port: speaks the protocol (or not) as a test tells it.
pub struct Peer {
    pub sock: std::net::TcpStream,
    pub stream: u32,
    seq: u64,
    records: u64,
    events: u64,
}

impl Peer {
    pub fn connect(addr: &str) -> Peer {
        let sock = std::net::TcpStream::connect(addr).expect("connect to the data port");
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Peer {
            sock,
            stream: 77,
            seq: 0,
            records: 0,
            events: 0,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        std::io::Write::write_all(&mut self.sock, bytes)
    }

    /// Say hello as replica `replica` of `role` of pipeline `pipeline`, with `token` if any.
    pub fn hello(&mut self, pipeline: &str, role: &str, replica: u32, token: Option<&str>) {
        let role: pipeline_plan::Role = role.parse().unwrap();
        let hello = pipeline::codec::Hello {
            stream_id: self.stream,
            role: pipeline_plan::Role::CHAIN
                .iter()
                .position(|r| *r == role)
                .unwrap() as u8,
            replica,
            token: token.map_or([0; 32], pipeline::admission::token_digest),
            pipeline: pipeline.to_string(),
        };
        let _ = self.send_raw(&hello.to_frame());
    }

    /// Send one data frame of `records` (event count = records, unless `events` is given).
    pub fn data(&mut self, records: &[Vec<u8>], watermark: u64, events: Option<u32>) {
        let mut f = pipeline::codec::OutFrame::data(records.iter().map(|r| r.len() + 4).sum());
        for r in records {
            f.push(r);
        }
        f.set_watermark(watermark);
        if let Some(e) = events {
            f.set_events(e);
        }
        self.records += u64::from(f.records());
        self.events += u64::from(f.events());
        let bytes = f.finish(self.stream, self.seq);
        self.seq += 1;
        let _ = self.send_raw(&bytes);
    }

    /// End the stream with the true totals of what was sent, or with `lie`.
    pub fn end(&mut self, lie: Option<(u64, u64)>) {
        let (r, e) = lie.unwrap_or((self.records, self.events));
        let bytes = pipeline::codec::OutFrame::end(r, e).finish(self.stream, self.seq);
        let _ = self.send_raw(&bytes);
    }

    /// Wait until the stage closes the connection (EOF or reset); panics after `timeout`.
    pub fn expect_closed(&mut self, timeout: Duration) -> Duration {
        let t0 = Instant::now();
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut self.sock, &mut buf) {
                Ok(0) => return t0.elapsed(),
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("the stage did not close the connection within {timeout:?}")
                }
                Err(_) => return t0.elapsed(),
            }
        }
    }
}

/// A compact event as parse writes it.
pub fn compact_event(service: &str, route: &str, ts_us: u64) -> Vec<u8> {
    let mut out = Vec::new();
    pipeline::event::encode_event(
        &mut out,
        service,
        route,
        pipeline::event::Method::Get,
        200,
        1000,
        100,
        ts_us,
    );
    out
}

/// The resident set of a process, from /proc.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Write a token file in `dir` and return the `--token-file` arguments.
pub fn token_args(dir: &Path, token: &str) -> Vec<String> {
    let path = dir.join("pipeline.token");
    std::fs::write(&path, token).unwrap();
    vec!["--token-file".into(), path.display().to_string()]
}
