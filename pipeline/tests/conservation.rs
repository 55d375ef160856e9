//! Four real processes on loopback, a million events with malformed ones mixed in: every event
//! is accounted for exactly, and what the sink persisted equals the aggregates computed
//! in-process from the same seed.

mod common;

use common::{chain, source_into_parse, spawn};
use pipeline::reference::{Figures, WindowKey, compute, read_persisted};
use pipeline_plan::SourceKnobs;
use std::collections::BTreeMap;
use std::time::Duration;

/// The windows of a sink's log, each once (a duplicate or a record that is not a window
/// result fails the test).
fn persisted(dir: &std::path::Path, window_ms: u64) -> BTreeMap<WindowKey, Figures> {
    let p = read_persisted(dir).expect("the log verifies");
    assert_eq!(p.duplicated, 0, "a window was persisted twice");
    assert_eq!(p.undecodable, 0);
    for (start, _, _) in p.windows.keys() {
        assert_eq!(start % (window_ms * 1000), 0, "windows are aligned");
    }
    p.windows
}

fn run_and_check(extra_parse: &[&str], extra_agg: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let events = 1_000_000u64;
    let knobs = SourceKnobs {
        events,
        seed: 2024,
        malformed_rate: 0.01,
        ..SourceKnobs::default()
    };
    let window_ms = 250;
    let log_dir = dir.path().join("log");
    let window = format!("window_ms={window_ms}");
    let log = format!("dir={}", log_dir.display());
    let mut stages = chain(
        dir.path(),
        [
            &[
                "--set",
                "events=1000000",
                "--set",
                "seed=2024",
                "--set",
                "malformed_rate=0.01",
            ],
            extra_parse,
            &[&["--set", window.as_str()][..], extra_agg].concat(),
            &["--set", log.as_str()],
        ],
    );
    let stats: Vec<_> = stages
        .iter_mut()
        .map(|s| s.finish(Duration::from_secs(120)))
        .collect();
    let (source, parse, agg, sink) = (&stats[0], &stats[1], &stats[2], &stats[3]);

    // Conservation, exactly, from the counters alone.
    assert_eq!(source.events_emitted, events);
    assert_eq!(source.events_sent, events);
    assert_eq!(parse.events_received, events);
    let dead: u64 = stats.iter().map(|s| s.dead_lettered).sum();
    let lost: u64 = stats.iter().map(|s| s.lost + s.discarded).sum();
    assert_eq!(lost, 0, "no loss: {stats:#?}");
    assert_eq!(
        sink.events_persisted + dead,
        events,
        "emitted = persisted + dead-lettered"
    );
    assert_eq!(parse.events_sent, agg.events_received);
    assert_eq!(agg.events_sent, sink.events_received);
    // Every malformed kind showed up, under its own reason.
    for reason in ["bad_json", "bad_utf8", "missing_field", "out_of_range"] {
        assert!(
            parse.dropped.get(reason).copied().unwrap_or(0) > 1000,
            "{reason}: {:?}",
            parse.dropped
        );
    }

    // What was persisted is what the same seed gives in-process.
    let expected = compute(&knobs, window_ms);
    assert_eq!(expected.invalid, parse.dead_lettered);
    let want = expected.windows;
    let got = persisted(&log_dir, window_ms);
    assert_eq!(got.len(), want.len(), "number of windows");
    assert_eq!(sink.windows_persisted, want.len() as u64);
    for (k, w) in &want {
        assert_eq!(got.get(k), Some(w), "window {k:?}");
    }
    assert_eq!(
        got.values().map(|w| w.count).sum::<u64>(),
        sink.events_persisted
    );
}

#[test]
fn a_million_events_are_conserved_and_aggregated_exactly() {
    run_and_check(&[], &[]);
}

#[test]
fn borrowed_parsing_and_parallel_sharded_aggregation_give_the_same_result() {
    run_and_check(
        &["--set", "mode=borrowed", "--set", "workers=2"],
        &["--set", "state=sharded", "--set", "workers=3"],
    );
}

#[test]
fn the_owner_strategy_gives_the_same_result() {
    run_and_check(&[], &["--set", "state=owner", "--set", "workers=2"]);
}

#[test]
fn parse_replicas_and_aggregate_partitions_give_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let events = 600_000u64;
    let log = format!("dir={}", d.join("log").display());
    let mut sink = spawn(d, "sink", &["--set", &log, "--upstreams", "3"], &[]);
    // Three aggregate partitions, each fed by both parse replicas.
    let mut aggs: Vec<_> = (0..3)
        .map(|i| {
            let replica = i.to_string();
            let args = [
                "--downstream",
                &sink.data_addr(),
                "--upstreams",
                "2",
                "--replica",
                &replica,
                "--set",
                "window_ms=250",
            ];
            spawn_named(d, "aggregate", &args)
        })
        .collect();
    let agg_addrs: Vec<String> = aggs.iter().map(|a| a.data_addr()).collect();
    let mut parses: Vec<_> = (0..2)
        .map(|i| {
            let replica = i.to_string();
            let mut args: Vec<&str> = agg_addrs
                .iter()
                .flat_map(|a| ["--downstream", a.as_str()])
                .collect();
            args.extend(["--set", "mode=borrowed", "--replica", &replica]);
            spawn_named(d, "parse", &args)
        })
        .collect();
    let parse_addrs: Vec<String> = parses.iter().map(|p| p.data_addr()).collect();
    let mut args: Vec<&str> = parse_addrs
        .iter()
        .flat_map(|a| ["--downstream", a.as_str()])
        .collect();
    args.extend([
        "--set",
        "events=600000",
        "--set",
        "seed=77",
        "--set",
        "malformed_rate=0.01",
    ]);
    let mut source = spawn(d, "source", &args, &[]);

    let src = source.finish(Duration::from_secs(120));
    let parse_stats: Vec<_> = parses
        .iter_mut()
        .map(|p| p.finish(Duration::from_secs(60)))
        .collect();
    let agg_stats: Vec<_> = aggs
        .iter_mut()
        .map(|a| a.finish(Duration::from_secs(60)))
        .collect();
    let sink_stats = sink.finish(Duration::from_secs(60));
    assert_eq!(src.events_emitted, events);
    for p in &parse_stats {
        assert!(
            p.events_received > events / 3,
            "round-robin reaches both parse replicas"
        );
    }
    for a in &agg_stats {
        assert!(
            a.events_received > events / 6,
            "every partition gets its keys"
        );
        assert_eq!(a.dead_lettered, 0, "no late events: {:?}", a.dropped);
    }
    let dead: u64 = parse_stats.iter().map(|p| p.dead_lettered).sum();
    assert_eq!(sink_stats.events_persisted + dead, events);
    let knobs = SourceKnobs {
        events,
        seed: 77,
        malformed_rate: 0.01,
        ..SourceKnobs::default()
    };
    let want = compute(&knobs, 250).windows;
    assert_eq!(
        persisted(&d.join("log"), 250),
        want,
        "each window computed whole, in one partition"
    );
}

/// Spawn a stage whose files carry a unique suffix (several replicas share a directory).
fn spawn_named(dir: &std::path::Path, role: &str, args: &[&str]) -> common::Stage {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let i = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let sub = dir.join(format!("{role}-{i}"));
    std::fs::create_dir_all(&sub).unwrap();
    spawn(&sub, role, args, &[])
}

#[test]
fn a_replayed_file_goes_through_like_the_generated_stream() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let status = std::process::Command::new(common::bin())
        .args([
            "generate",
            "--events",
            "20000",
            "--set",
            "seed=5",
            "--set",
            "malformed_rate=0.05",
        ])
        .args(["--output", file.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    // A blank line and a line that is pure garbage, added by hand.
    let mut text = std::fs::read(&file).unwrap();
    text.extend_from_slice(b"\n\n\xff\xfe garbage\n");
    std::fs::write(&file, text).unwrap();

    let replay = format!("replay={}", file.display());
    let log = format!("dir={}", dir.path().join("log").display());
    let mut stages = chain(
        dir.path(),
        [
            &["--set", replay.as_str()],
            &[],
            &[],
            &["--set", log.as_str()],
        ],
    );
    let stats: Vec<_> = stages
        .iter_mut()
        .map(|s| s.finish(Duration::from_secs(60)))
        .collect();
    assert_eq!(
        stats[0].events_emitted, 20_001,
        "blank lines are skipped, garbage is an event"
    );
    let dead: u64 = stats.iter().map(|s| s.dead_lettered).sum();
    assert_eq!(stats[3].events_persisted + dead, 20_001);
    assert!(stats[1].dropped["bad_utf8"] >= 1);

    let want = compute(
        &SourceKnobs {
            events: 20_000,
            seed: 5,
            malformed_rate: 0.05,
            ..SourceKnobs::default()
        },
        1000,
    )
    .windows;
    assert_eq!(persisted(&dir.path().join("log"), 1000), want);
}

#[test]
fn a_stage_without_downstream_discards_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut source, mut parse) =
        source_into_parse(dir.path(), &[], &["--set", "events=5000"], &[]);
    let s = source.finish(Duration::from_secs(30));
    let p = parse.finish(Duration::from_secs(30));
    assert_eq!(s.events_sent, 5000);
    assert_eq!(p.discarded, 5000);
    assert_eq!(p.dropped["no_downstream"], 5000);
}
