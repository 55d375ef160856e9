//! A real Prometheus (the Debian package) scrapes the four stages of a real run.
//!
//! Needs `prometheus` and `promtool` on PATH (`apt-get install prometheus`). Without them the
//! test fails, unless OBSERVATORY_SKIP_PROMETHEUS=1 says to skip it (it then says so).

mod common;

use common::{chain, http_get, wait_until};
use observatory_testkit::{free_port, have, urlencode};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Run an instant query; the value of each result series.
fn query(prom: &str, promql: &str) -> Vec<f64> {
    let encoded = urlencode(promql);
    let (status, body) = http_get(prom, &format!("/api/v1/query?query={encoded}"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "success", "{v}");
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"][1].as_str().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn prometheus_scrapes_every_stage_and_sees_the_run_total() {
    if !(have("prometheus") && have("promtool")) {
        if std::env::var_os("OBSERVATORY_SKIP_PROMETHEUS").is_some() {
            eprintln!(
                "SKIPPED: prometheus/promtool not installed and OBSERVATORY_SKIP_PROMETHEUS is set"
            );
            return;
        }
        panic!(
            "this test needs Prometheus: apt-get install prometheus (or set OBSERVATORY_SKIP_PROMETHEUS=1 to skip it)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let log = format!("dir={}", dir.path().join("log").display());
    let linger = ["--linger-seconds", "120"];
    let mut stages = chain(
        dir.path(),
        [
            &[
                &["--set", "events=300000", "--set", "malformed_rate=0.01"][..],
                &linger,
            ]
            .concat(),
            &linger,
            &linger,
            &[&["--set", log.as_str()][..], &linger].concat(),
        ],
    );
    let targets: Vec<String> = stages
        .iter()
        .map(|s| format!("\"{}\"", s.admin()))
        .collect();

    // Every /metrics passes promtool's checks.
    for s in &stages {
        let text = s.metrics();
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics on {}:\n{}{}",
            s.role,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: pipeline\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let prom_addr = format!("127.0.0.1:{port}");
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={prom_addr}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let cleanup = scopeguard(&mut prom);

    wait_until(Duration::from_secs(30), "prometheus to be ready", || {
        std::net::TcpStream::connect(&prom_addr).is_ok()
            && http_get(&prom_addr, "/-/ready").0 == 200
    });
    // The run ends by itself; the stages linger so a last scrape sees the final counters.
    wait_until(Duration::from_secs(60), "the run to finish", || {
        stages.iter().all(|s| s.stats().finished)
    });
    let total = stages[3].stats().events_persisted as f64;
    assert!(total > 290_000.0);
    // Every target is scraped at least once after the run ended: the values are final.
    let eventually = |promql: &str, want: Vec<f64>| {
        let mut last = Vec::new();
        let ok = (0..300).any(|_| {
            last = query(&prom_addr, promql);
            last == want || {
                std::thread::sleep(Duration::from_millis(100));
                false
            }
        });
        assert!(ok, "{promql}: got {last:?}, want {want:?}");
    };
    eventually("count(up == 1)", vec![4.0]);
    eventually("pipeline_events_persisted_total", vec![total]);
    eventually("sum(pipeline_events_emitted_total)", vec![300_000.0]);
    // Conservation from the metrics alone.
    eventually(
        "sum(pipeline_events_emitted_total) - sum(pipeline_events_persisted_total) - sum(pipeline_events_dropped_total)",
        vec![0.0],
    );
    eventually(
        "count(count by (stage) (pipeline_events_received_total))",
        vec![4.0],
    );
    let bad_json_bytes = query(
        &prom_addr,
        "sum(pipeline_dropped_bytes_total{reason=\"bad_json\"})",
    );
    assert!(
        bad_json_bytes[0] > 0.0,
        "dropped records are counted in bytes: {bad_json_bytes:?}"
    );
    drop(cleanup);
    for s in &stages {
        s.signal(libc::SIGTERM);
    }
    for s in &mut stages {
        s.finish(Duration::from_secs(30));
    }
}

/// Kills Prometheus when the test ends, pass or fail.
struct Guard<'a>(&'a mut std::process::Child);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scopeguard(child: &mut std::process::Child) -> Guard<'_> {
    Guard(child)
}
