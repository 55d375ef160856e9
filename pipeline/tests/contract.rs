//! The stage contract (`pipeline/src/stage/contract.rs`), checked on every role as a real
//! process: the common series, readiness only once the stage can work, the batch guard (every
//! batch timed, the injected delay applied and kept outside the timing), and drops counted with
//! a reason.

mod common;

use common::{Stage, http_get, metric, spawn, wait_until};
use pipeline::stage::contract::REQUIRED_SERIES;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const ROLES: [&str; 4] = ["source", "parse", "aggregate", "sink"];
const DELAY_US: u64 = 50_000;

/// Arguments borrowed from the strings that own them.
fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// One stream of one data frame holding a record that is not an event (nor a window result),
/// and its end of stream: what the stage must drop as `undecodable`.
fn send_one_undecodable_record(addr: &str, upstream: &str) {
    // An admitted second upstream (replica 1 of the stage before) whose one record is junk.
    let mut peer = common::Peer::connect(addr);
    peer.stream = 7;
    peer.hello("pipeline", upstream, 1, None);
    peer.data(&[b"not a record of this pipeline".to_vec()], 0, None);
    peer.end(None);
    peer.sock.flush().unwrap();
}

/// The four stages with a delay on `delayed` only; parse and aggregate on one worker, so the
/// delayed stage's batches are serial. A malformed fraction gives parse bad JSON to drop; the
/// aggregate and the sink each take a second upstream stream carrying one undecodable record.
fn run(dir: &Path, delayed: &str) -> Vec<Stage> {
    let delay = format!("inject_delay_us={DELAY_US}");
    let knobs = |role: &str, own: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["--linger-seconds".into(), "30".into()];
        for k in own {
            v.extend(["--set".to_string(), k.to_string()]);
        }
        if role == delayed {
            v.extend(["--set".to_string(), delay.clone()]);
        }
        v
    };
    let mut sink_args = knobs("sink", &["mode=blackhole"]);
    sink_args.extend(["--upstreams".into(), "2".into()]);
    let sink = spawn(dir, "sink", &strs(&sink_args), &[]);
    send_one_undecodable_record(&sink.data_addr(), "aggregate");
    let mut agg_args = knobs("aggregate", &["workers=1", "window_ms=1"]);
    agg_args.extend([
        "--upstreams".into(),
        "2".into(),
        "--downstream".into(),
        sink.data_addr(),
    ]);
    let agg = spawn(dir, "aggregate", &strs(&agg_args), &[]);
    send_one_undecodable_record(&agg.data_addr(), "parse");
    let mut parse_args = knobs("parse", &["workers=1"]);
    parse_args.extend(["--downstream".into(), agg.data_addr()]);
    let parse = spawn(dir, "parse", &strs(&parse_args), &[]);
    let mut source_args = knobs(
        "source",
        &["events=600", "batch_size=100", "malformed_rate=0.1"],
    );
    source_args.extend(["--downstream".into(), parse.data_addr()]);
    let source = spawn(dir, "source", &strs(&source_args), &[]);
    vec![source, parse, agg, sink]
}

#[test]
fn every_role_obeys_the_stage_contract() {
    let dir = tempfile::tempdir().unwrap();

    // Ready only once it can work: a stage whose downstream does not exist is alive, not ready.
    let nowhere = format!("127.0.0.1:{}", observatory_testkit::free_port());
    for role in ["source", "parse", "aggregate"] {
        let d = dir.path().join(format!("unready-{role}"));
        std::fs::create_dir_all(&d).unwrap();
        let stage = spawn(&d, role, &["--downstream", &nowhere], &[]);
        // Long enough that a stage turning ready on a timer, not on its downstream, is caught.
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(http_get(stage.admin(), "/healthz").0, 200, "{role}");
        assert_eq!(
            http_get(stage.admin(), "/readyz").0,
            503,
            "{role} says it is ready before its downstream exists"
        );
    }

    for delayed in ROLES {
        let d = dir.path().join(format!("delay-{delayed}"));
        std::fs::create_dir_all(&d).unwrap();
        let mut stages = run(&d, delayed);
        wait_until(Duration::from_secs(60), "the run to finish", || {
            d.join("sink.stats.json").exists()
        });
        let mut failures = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                failures.push(what);
            }
        };
        for s in &stages {
            let role = s.role.as_str();
            let text = s.metrics();
            let names = observatory_testkit::exposed_names(&text);
            for series in REQUIRED_SERIES {
                check(
                    names.contains(*series),
                    format!("{role} does not export {series}"),
                );
            }
            check(
                http_get(s.admin(), "/readyz").0 == 200,
                format!("{role} never said it was ready"),
            );
            let count = metric(&text, "pipeline_batch_duration_seconds_count", None);
            let sum = metric(&text, "pipeline_batch_duration_seconds_sum", None);
            check(count > 0.0, format!("{role} timed no batch"));
            // Every batch it handled was timed: the data frames it received (or, the source,
            // sent), the forged streams' frames included.
            let batches = if role == "source" {
                metric(&text, "pipeline_batches_sent_total", None)
            } else {
                metric(&text, "pipeline_batches_received_total", None)
            };
            check(
                count == batches,
                format!("{role} timed {count} batches of {batches}"),
            );
            if role == delayed {
                check(
                    sum / count < DELAY_US as f64 / 1e6 / 2.0,
                    format!(
                        "{role}: the injected delay is inside the batch timing (mean {:.4} s)",
                        sum / count
                    ),
                );
            }
        }
        for s in &stages {
            s.signal(libc::SIGTERM);
        }
        let stats: Vec<_> = stages
            .iter_mut()
            .map(|s| s.finish(Duration::from_secs(30)))
            .collect();
        // The delayed stage's batches are serial: the run lasted at least as long as their delays.
        let i = ROLES.iter().position(|r| *r == delayed).unwrap();
        let batches = if delayed == "source" {
            stats[i].batches_sent
        } else {
            stats[i].batches_received
        };
        let lasted = stats
            .iter()
            .map(|s| s.finished_unix_ns)
            .max()
            .unwrap()
            .saturating_sub(stats[0].started_unix_ns);
        let delays = batches * DELAY_US * 1000;
        check(
            batches >= 2 && lasted >= delays * 9 / 10,
            format!(
                "{delayed}: {batches} batches with {DELAY_US} µs delays each, but the run lasted {} ms",
                lasted / 1_000_000
            ),
        );
        // Drops with a reason: parse's bad JSON, the undecodable records at the aggregate and
        // the sink, each in the stage's drop counts (no counter of its own).
        let dropped = |i: usize, reason: &str| stats[i].dropped.get(reason).copied().unwrap_or(0);
        check(
            dropped(1, "bad_json") + dropped(1, "wrong_type") + dropped(1, "missing_field") > 0,
            format!("parse counted no malformed record: {:?}", stats[1].dropped),
        );
        check(
            dropped(2, "undecodable") == 1,
            format!("aggregate: {:?}", stats[2].dropped),
        );
        check(
            dropped(3, "undecodable") == 1,
            format!("sink: {:?}", stats[3].dropped),
        );
        assert!(
            failures.is_empty(),
            "the stage contract is broken:\n{}",
            failures.join("\n")
        );
    }
}
