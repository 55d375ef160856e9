//! `observatory` against real stage processes on loopback.

mod common;

use common::observatory;
use observatory_testkit::wait_until as wait_for;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by its parent) is not running.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.split(") ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

fn stage_pids(run_dir: &Path) -> Vec<u32> {
    ["source", "parse", "aggregate", "sink"]
        .iter()
        .filter_map(|r| std::fs::read(run_dir.join(format!("{r}.ready.json"))).ok())
        .map(|b| {
            serde_json::from_slice::<serde_json::Value>(&b).unwrap()["pid"]
                .as_u64()
                .unwrap() as u32
        })
        .collect()
}

#[test]
fn run_prints_the_summary_and_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let out = observatory()
        // Two seconds at a steady rate: long enough for the flamegraphs to see the work.
        .args(["run", "--local", "--events", "1000000", "--rate", "500000"])
        .args(["--json", "--profile-seconds", "2"])
        .args([
            "--set",
            "source.malformed_rate=0.02",
            "--set",
            "parse.mode=borrowed",
        ])
        .args(["--report-dir", report.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON document on stdout");
    assert_eq!(s["events_emitted"], 1_000_000);
    assert_eq!(s["conserved"], true);
    assert_eq!(s["lost"], 0);
    let persisted = s["events_persisted"].as_u64().unwrap();
    let dead = s["dead_lettered"].as_u64().unwrap();
    assert_eq!(persisted + dead, 1_000_000);
    assert!(dead > 10_000, "about 2% malformed: {dead}");
    for field in [
        "throughput_eps",
        "latency_p50_seconds",
        "latency_p99_seconds",
        "duration_seconds",
    ] {
        assert!(s[field].as_f64().unwrap() > 0.0, "{field}: {}", s[field]);
    }
    assert!(s["latency_p99_seconds"].as_f64() >= s["latency_p50_seconds"].as_f64());
    let stages = s["stages"].as_array().unwrap();
    let names: Vec<&str> = stages
        .iter()
        .map(|st| st["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["source", "parse", "aggregate", "sink"]);
    for st in stages {
        assert!(st["rss_bytes"].as_u64().unwrap() > 1 << 20);
        assert!(st["cpu_seconds"].as_f64().unwrap() > 0.0);
        assert!(st["allocations_per_event"].as_f64().is_some());
    }
    // Borrowed parsing does not allocate per event.
    assert!(
        stages[1]["allocations_per_event"].as_f64().unwrap() < 1.0,
        "{}",
        stages[1]
    );

    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("summary.json")).unwrap()).unwrap();
    assert_eq!(saved, s);
    let text = std::fs::read_to_string(report.join("summary.txt")).unwrap();
    assert!(
        text.contains("(conserved)") && text.contains("end-to-end latency"),
        "{text}"
    );
    assert!(
        std::fs::read_to_string(report.join("plan.toml"))
            .unwrap()
            .contains("mode = \"borrowed\"")
    );
    for stage in ["source", "parse", "aggregate", "sink"] {
        let svg = std::fs::read_to_string(report.join(format!("flamegraph-{stage}.svg"))).unwrap();
        assert!(svg.contains("<svg"), "{stage}: an SVG");
        assert!(
            svg.contains(&format!("{stage} stage: CPU")),
            "{stage}: titled"
        );
    }
    let parse_svg = std::fs::read_to_string(report.join("flamegraph-parse.svg")).unwrap();
    assert!(
        parse_svg.contains("parse_into") || parse_svg.contains("parse_batch"),
        "names the parser"
    );
}

#[test]
fn unbounded_run_and_bad_knobs_are_refused_clearly() {
    let out = observatory().args(["run", "--local"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a bounded workload"));
    let out = observatory()
        .args([
            "run",
            "--local",
            "--events",
            "10",
            "--set",
            "parse.mode=fast",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("knob `parse.mode`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = observatory()
        .args(["run", "--local", "--events", "10", "--set", "parse"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("stage.knob=value"));
}

#[test]
fn ctrl_c_on_up_drains_everything_and_leaves_no_process() {
    // The default report folder, relative to the working directory: reports/<time>-up.
    let dir = tempfile::tempdir().unwrap();
    let up = observatory()
        .args([
            "up",
            "--local",
            "--rate",
            "100000",
            "--profile-seconds",
            "0",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut report = PathBuf::new();
    wait_for(
        Duration::from_secs(30),
        "the report folder",
        || match std::fs::read_dir(dir.path().join("reports"))
            .ok()
            .and_then(|mut d| d.next())
        {
            Some(Ok(e)) => {
                report = e.path();
                true
            }
            _ => false,
        },
    );
    assert!(
        report
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("-up")
    );
    let run_dir = report.join("run");
    wait_for(Duration::from_secs(30), "four stages", || {
        stage_pids(&run_dir).len() == 4
    });
    let pids = stage_pids(&run_dir);
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(up.id() as i32, libc::SIGINT) };
    let out = up.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(conserved)"), "{stdout}");
    assert!(stdout.contains("report:"));
    for pid in pids {
        assert!(!alive(pid), "stage {pid} outlived the runner");
    }
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("summary.json")).unwrap()).unwrap();
    assert!(s["events_emitted"].as_u64().unwrap() > 50_000);
    assert_eq!(s["lost"], 0);
}

#[test]
fn killing_the_runner_kills_the_stages() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let mut up = observatory()
        .args(["up", "--local", "--profile-seconds", "0"])
        .args(["--report-dir", report.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run_dir = report.join("run");
    wait_for(Duration::from_secs(30), "four stages", || {
        stage_pids(&run_dir).len() == 4
    });
    let pids = stage_pids(&run_dir);
    up.kill().unwrap();
    up.wait().unwrap();
    wait_for(
        Duration::from_secs(10),
        "the stages to die with the runner",
        || pids.iter().all(|p| !alive(*p)),
    );
}

#[test]
fn replicas_run_as_separate_processes_and_conserve() {
    let dir = tempfile::tempdir().unwrap();
    let out = observatory()
        .args([
            "run",
            "--local",
            "--events",
            "300000",
            "--json",
            "--profile-seconds",
            "0",
        ])
        .args(["--set", "parse.replicas=2", "--set", "aggregate.replicas=3"])
        .args(["--report-dir", dir.path().join("r").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = s["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "source",
            "parse-0",
            "parse-1",
            "aggregate-0",
            "aggregate-1",
            "aggregate-2",
            "sink"
        ]
    );
    assert_eq!(s["conserved"], true);
    assert_eq!(s["events_persisted"], 300_000);
    let out = observatory()
        .args([
            "run",
            "--local",
            "--events",
            "10",
            "--set",
            "source.replicas=2",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("one source"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn up_starts_prometheus_when_installed_and_says_so_in_one_line_when_not() {
    let dir = tempfile::tempdir().unwrap();
    // Without Prometheus (an empty PATH): one line, and the run goes on.
    let empty = dir.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = observatory()
        .args(["up", "--local", "--duration", "2", "--profile-seconds", "0"])
        .args(["--report-dir", dir.path().join("a").to_str().unwrap()])
        .env("PATH", &empty)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("Prometheus") || l.contains("Grafana"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("not installed"), "{stderr}");

    // With Prometheus: it scrapes the stages, and its config is valid.
    let has_prometheus = std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok();
    if !has_prometheus {
        assert!(
            std::env::var_os("OBSERVATORY_SKIP_PROMETHEUS").is_some(),
            "install prometheus (apt-get install prometheus)"
        );
        eprintln!("SKIPPED: the Prometheus half (prometheus is not installed)");
        return;
    }
    let report = dir.path().join("b");
    let out = observatory()
        .args(["up", "--local", "--duration", "3", "--profile-seconds", "0"])
        .args(["--report-dir", report.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Prometheus: http://127.0.0.1:"), "{stderr}");
    let config = report.join("run/prometheus/prometheus.yml");
    let check = std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .matches("127.0.0.1:")
            .count()
            >= 4,
        "every stage is a target"
    );
    assert!(
        report.join("run/prometheus/data/wal").is_dir(),
        "Prometheus stored what it scraped"
    );
}
