//! Bad input, shutdown in the middle of a run, bad knobs, and backpressure, against real
//! processes.

mod common;

use common::{chain, metric, source_into_parse, spawn, wait_until};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

fn send_and_expect_close(addr: &str, bytes: &[u8]) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = sock.write_all(bytes);
    let _ = sock.shutdown(std::net::Shutdown::Write);
    // The stage closes the connection: the read ends (EOF or reset), it does not hang.
    let mut buf = [0u8; 64];
    loop {
        match std::io::Read::read(&mut sock, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => continue,
        }
    }
}

#[test]
fn bad_input_is_counted_and_the_stage_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut parse = spawn(dir.path(), "parse", &["--linger-seconds", "60"], &[]);
    let addr = parse.data_addr();

    // Random bytes.
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    send_and_expect_close(&addr, &junk);
    // A 4 GiB length prefix.
    send_and_expect_close(&addr, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
    // Half a frame, then close.
    let mut half = vec![0, 0, 0, 200, 1, 0];
    half.extend_from_slice(&[7; 50]);
    send_and_expect_close(&addr, &half);
    // A frame with a valid header whose one record claims 100 bytes that are not there.
    let mut body = vec![pipeline::codec::VERSION, 0, 0, 0]; // data, no flags
    body.extend_from_slice(&0u32.to_le_bytes()); // stream id
    body.extend_from_slice(&0u64.to_le_bytes()); // batch sequence
    body.extend_from_slice(&1u32.to_le_bytes()); // record count
    body.extend_from_slice(&0u64.to_le_bytes()); // emitted at
    body.extend_from_slice(&0u64.to_le_bytes()); // watermark
    body.extend_from_slice(&1u32.to_le_bytes()); // event count
    assert_eq!(body.len(), pipeline::codec::HEADER_LEN);
    body.extend_from_slice(&100u32.to_le_bytes());
    let mut bad_records = (body.len() as u32).to_be_bytes().to_vec();
    bad_records.extend_from_slice(&body);
    send_and_expect_close(&addr, &bad_records);

    wait_until(Duration::from_secs(10), "rejections to be counted", || {
        let m = parse.metrics();
        metric(&m, "pipeline_frames_rejected_total", None) >= 4.0
    });
    let m = parse.metrics();
    // Before its hello a connection is not admitted: random bytes and the 4 GiB prefix are
    // refused as such (a frame larger than a hello is not even buffered).
    assert_eq!(
        metric(
            &m,
            "pipeline_frames_rejected_total",
            Some(("reason", "not_admitted"))
        ),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "pipeline_frames_rejected_total",
            Some(("reason", "truncated_frame"))
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "pipeline_frames_rejected_total",
            Some(("reason", "bad_records"))
        ),
        1.0
    );
    assert_eq!(
        metric(&m, "pipeline_upstream_connections", None),
        0.0,
        "every bad connection closed"
    );

    // A real upstream still gets through, completely.
    let mut source = spawn(
        dir.path(),
        "source",
        &["--downstream", &addr, "--set", "events=20000"],
        &[],
    );
    let s = source.finish(Duration::from_secs(30));
    wait_until(Duration::from_secs(30), "parse to finish", || {
        parse.stats().finished
    });
    // Discarded frames are counted in bytes too: each compact event is over 40 bytes.
    let m = parse.metrics();
    let discarded_bytes = metric(
        &m,
        "pipeline_dropped_bytes_total",
        Some(("reason", "no_downstream")),
    );
    assert!(discarded_bytes > 20_000.0 * 40.0, "{discarded_bytes}");
    parse.signal(libc::SIGTERM);
    let p = parse.finish(Duration::from_secs(30));
    assert_eq!(s.events_sent, 20_000);
    assert_eq!(p.events_received, 20_000);
    assert_eq!(p.dropped["no_downstream"], 20_000);
    assert!(
        !parse.log_text().contains("panicked"),
        "{}",
        parse.log_text()
    );
}

fn drain_mid_run(victim: usize) {
    let dir = tempfile::tempdir().unwrap();
    let log = format!("dir={}", dir.path().join("log").display());
    // An unbounded stream at a steady rate: only the signal ends it.
    let mut stages = chain(
        dir.path(),
        [
            &["--set", "rate=200000", "--set", "malformed_rate=0.01"],
            &[],
            &["--set", "window_ms=100"],
            &["--set", log.as_str()],
        ],
    );
    wait_until(Duration::from_secs(20), "events to reach the sink", || {
        stages[3].stats().events_received > 50_000
    });
    stages[victim].signal(libc::SIGTERM);
    let stats: Vec<_> = stages
        .iter_mut()
        .map(|s| s.finish(Duration::from_secs(60)))
        .collect();
    let emitted = stats[0].events_emitted;
    let dead: u64 = stats.iter().map(|s| s.dead_lettered).sum();
    let lost: u64 = stats.iter().map(|s| s.lost + s.discarded).sum();
    assert!(emitted > 50_000);
    assert_eq!(lost, 0, "victim {}: {stats:#?}", stages[victim].role);
    assert_eq!(
        stats[3].events_persisted + dead,
        emitted,
        "victim {}",
        stages[victim].role
    );
    assert!(stats.iter().all(|s| s.finished));
}

#[test]
fn sigterm_on_the_source_drains_without_loss() {
    drain_mid_run(0);
}

#[test]
fn sigterm_on_parse_drains_without_loss() {
    drain_mid_run(1);
}

#[test]
fn sigterm_on_aggregate_drains_without_loss() {
    drain_mid_run(2);
}

#[test]
fn sigterm_on_the_sink_drains_without_loss() {
    drain_mid_run(3);
}

#[test]
fn a_slow_stage_slows_the_source_instead_of_growing_memory() {
    let dir = tempfile::tempdir().unwrap();
    // Parse sleeps 20 ms per batch of 1024 events: about 50k events/s at most.
    let (mut source, mut parse) = source_into_parse(
        dir.path(),
        &["--set", "inject_delay_us=20000"],
        &["--set", "events=2000000"],
        &[],
    );
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(300));
        let (s, p) = (source.stats(), parse.stats());
        // Unbounded buffering would let the source race ahead by the whole run. Bounded
        // queues (8 batches each side) and the TCP buffers cap the gap.
        let gap = s.events_emitted - p.events_received;
        assert!(gap < 150_000, "source ran {gap} events ahead of parse");
        assert!(
            s.rss_bytes < 40 << 20,
            "source RSS {} MiB",
            s.rss_bytes >> 20
        );
    }
    assert!(
        source.stats().events_emitted < 1_000_000,
        "the source was held back"
    );
    source.signal(libc::SIGTERM);
    let s = source.finish(Duration::from_secs(60));
    let p = parse.finish(Duration::from_secs(60));
    assert_eq!(s.events_sent, p.events_received);
}

fn run_fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(common::bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} should fail with exit code 2"
    );
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn bad_knobs_are_clear_errors_naming_the_knob() {
    let err = run_fails(&["parse", "--set", "mode=fast"], &[]);
    assert!(
        err.contains("knob `parse.mode`: unknown variant `fast`, expected `owned` or `borrowed`"),
        "{err}"
    );
    let err = run_fails(&["aggregate"], &[("PIPELINE_KNOB_WORKERS", "0")]);
    assert!(
        err.contains("knob `aggregate.workers`: must be between 1 and 64, got 0"),
        "{err}"
    );
    let err = run_fails(&["sink", "--set", "fsync=sometimes"], &[]);
    assert!(err.contains("knob `sink.fsync`"), "{err}");
    let err = run_fails(&["source", "--set", "nope=1"], &[]);
    assert!(err.contains("unknown knob `source.nope`"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agg.toml");
    std::fs::write(&cfg, "pipeline = \"p\"\nrole = \"aggregate\"\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[knobs]\nwindow_ms = -1\n").unwrap();
    let err = run_fails(&["aggregate", "--config", cfg.to_str().unwrap()], &[]);
    assert!(err.contains("knob `aggregate.window_ms`"), "{err}");
    std::fs::write(&cfg, "pipeline = \"p\"\nrole = \"aggregate\"\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n").unwrap();
    let err = run_fails(&["parse", "--config", cfg.to_str().unwrap()], &[]);
    assert!(err.contains("configures a `aggregate` stage"), "{err}");
}

#[test]
fn the_allocator_knob_switches_the_process_allocator() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = spawn(
        dir.path(),
        "sink",
        &["--set", "allocator=system", "--set", "mode=blackhole"],
        &[],
    );
    assert_eq!(sink.stats().allocator, "system");
    let m = sink.metrics();
    assert_eq!(
        metric(&m, "pipeline_knob_info", Some(("value", "system"))),
        2.0,
        "knob and active allocator"
    );
    let (status, body) = common::http_get(sink.admin(), "/debug/pprof/heap");
    assert_eq!(status, 501, "{}", String::from_utf8_lossy(&body));
    sink.signal(libc::SIGTERM);
    sink.finish(Duration::from_secs(10));

    let mut sink = spawn(dir.path(), "sink", &["--set", "mode=blackhole"], &[]);
    assert_eq!(sink.stats().allocator, "jemalloc");
    sink.signal(libc::SIGTERM);
    sink.finish(Duration::from_secs(10));
}

/// A stage stopped as soon as its ready file says it is up drains and writes its stats: its
/// signal handlers are installed before readiness is announced. Before, they were installed
/// by a task spawned after the ready file, and a SIGTERM in between killed the stage outright
/// (no drain, no stats): seen in a CI run under load, in `the_allocator_knob_...` above.
#[test]
fn a_stage_stopped_right_after_it_is_ready_drains_and_writes_its_stats() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..20 {
        let mut sink = spawn(dir.path(), "sink", &["--set", "mode=blackhole"], &[]);
        sink.signal(libc::SIGTERM);
        sink.finish(Duration::from_secs(10));
    }
}

/// A sink in service mode writing its log under `d`, and the arguments of an aggregate (service
/// mode, 100 ms windows) that feeds it.
fn service_sink(d: &std::path::Path) -> (common::Stage, Vec<String>) {
    let log = format!("dir={}", d.join("log").display());
    let sink = spawn(d, "sink", &["--service", "--set", log.as_str()], &[]);
    let agg_args = [
        "--service",
        "--downstream",
        &sink.data_addr(),
        "--set",
        "window_ms=100",
    ]
    .map(String::from)
    .to_vec();
    (sink, agg_args)
}

#[test]
fn service_mode_survives_replacing_a_stage_without_losing_events() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let svc = ["--service"];
    let (mut sink, agg_args) = service_sink(d);
    let agg_args: Vec<&str> = agg_args.iter().map(String::as_str).collect();
    let old_dir = d.join("old");
    std::fs::create_dir_all(&old_dir).unwrap();
    let mut old_agg = spawn(&old_dir, "aggregate", &agg_args, &[]);
    let agg_addr = old_agg.data_addr();
    let mut parse = spawn(
        d,
        "parse",
        &[&svc[..], &["--downstream", agg_addr.as_str()]].concat(),
        &[],
    );
    let parse_addr = parse.data_addr();
    let mut source = spawn(
        d,
        "source",
        &[
            &svc[..],
            &["--downstream", parse_addr.as_str(), "--set", "rate=100000"],
            &[
                "--set",
                "event_time=wall_clock",
                "--set",
                "malformed_rate=0.01",
            ],
        ]
        .concat(),
        &[],
    );
    wait_until(Duration::from_secs(30), "windows to reach the sink", || {
        sink.stats().events_persisted > 0
    });

    // A rolling update of the aggregate: the old instance drains and exits 0 ...
    old_agg.signal(libc::SIGTERM);
    let old = old_agg.finish(Duration::from_secs(60));
    assert!(old.events_received > 0);
    assert_eq!(
        old.events_received,
        old.events_sent + old.dead_lettered,
        "flushed everything it had"
    );
    // ... while the rest keeps running, and a new instance takes over the same address.
    assert!(
        parse.child.try_wait().unwrap().is_none(),
        "parse keeps running"
    );
    assert!(
        source.child.try_wait().unwrap().is_none(),
        "the source keeps running"
    );
    let new_dir = d.join("new");
    std::fs::create_dir_all(&new_dir).unwrap();
    let new_args = [&agg_args[..], &["--listen", agg_addr.as_str()]].concat();
    let mut new_agg = spawn(&new_dir, "aggregate", &new_args, &[]);
    wait_until(
        Duration::from_secs(30),
        "the new aggregate to get data",
        || new_agg.stats().events_received > 50_000,
    );

    // Stop everything, source first; each drains.
    let mut stats = Vec::new();
    for s in [&mut source, &mut parse, &mut new_agg, &mut sink] {
        s.signal(libc::SIGTERM);
        stats.push(s.finish(Duration::from_secs(60)));
    }
    stats.push(old);
    let emitted = stats[0].events_emitted;
    let dead: u64 = stats.iter().map(|s| s.dead_lettered).sum();
    let lost: u64 = stats.iter().map(|s| s.lost + s.discarded).sum();
    let persisted = stats[3].events_persisted;
    assert_eq!(lost, 0, "{stats:#?}");
    assert_eq!(
        persisted + dead,
        emitted,
        "nothing lost across the replacement"
    );
    assert!(
        stats[3].events_received > old_agg_events(&stats),
        "the sink got data from both instances"
    );
}

fn old_agg_events(stats: &[pipeline::context::StageStats]) -> u64 {
    stats.last().map_or(0, |s| s.events_sent)
}

#[test]
fn a_rolling_update_of_a_parse_replica_loses_and_drops_nothing() {
    // What Kubernetes does to `demo-parse` on a knob change: one parse pod at a time drains
    // and exits, and a new one comes up at the same address a little later. The source must
    // keep the stream going through the other pod (not stall on the missing one), and the
    // aggregate must not close windows past what the new pod will forward (no `late` drops).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let svc = ["--service"];
    let (mut sink, agg_args) = service_sink(d);
    let agg_args: Vec<&str> = agg_args.iter().map(String::as_str).collect();
    let mut agg = spawn(d, "aggregate", &agg_args, &[]);
    let agg_addr = agg.data_addr();
    let parse_args = [&svc[..], &["--downstream", agg_addr.as_str()]].concat();
    let mut parses = Vec::new();
    for i in 0..2 {
        let pd = d.join(format!("parse-{i}"));
        std::fs::create_dir_all(&pd).unwrap();
        parses.push(spawn(&pd, "parse", &parse_args, &[]));
    }
    let addrs: Vec<String> = parses.iter().map(|p| p.data_addr()).collect();
    let mut source = spawn(
        d,
        "source",
        &[
            &svc[..],
            &[
                "--downstream",
                addrs[0].as_str(),
                "--downstream",
                addrs[1].as_str(),
            ],
            &["--set", "rate=100000", "--set", "event_time=wall_clock"],
        ]
        .concat(),
        &[],
    );
    wait_until(Duration::from_secs(30), "windows to reach the sink", || {
        sink.stats().events_persisted > 100_000
    });

    // parse-1 drains and exits ...
    let mut old = parses.pop().unwrap();
    old.signal(libc::SIGTERM);
    let old_stats = old.finish(Duration::from_secs(60));
    assert!(old_stats.events_received > 0);
    // ... and is away for 3 s (a new pod being scheduled and started): the source goes on
    // through parse-0 at its rate.
    let before = source.stats().events_emitted;
    std::thread::sleep(Duration::from_secs(3));
    let during = source.stats().events_emitted - before;
    assert!(
        during > 200_000,
        "the source emitted {during} events in the 3 s one parse replica was away (100,000/s wanted)"
    );
    let new_dir = d.join("parse-1-new");
    std::fs::create_dir_all(&new_dir).unwrap();
    let new_args = [&parse_args[..], &["--listen", addrs[1].as_str()]].concat();
    let mut new = spawn(&new_dir, "parse", &new_args, &[]);
    wait_until(
        Duration::from_secs(30),
        "the new parse replica to get data",
        || new.stats().events_received > 100_000,
    );

    // Stop everything, source first; each drains.
    let mut stats = Vec::new();
    let mut parse0 = parses.pop().unwrap();
    for s in [&mut source, &mut parse0, &mut new, &mut agg, &mut sink] {
        s.signal(libc::SIGTERM);
        stats.push(s.finish(Duration::from_secs(60)));
    }
    stats.push(old_stats);
    let emitted = stats[0].events_emitted;
    let dropped: u64 = stats
        .iter()
        .map(|s| s.dead_lettered + s.lost + s.discarded)
        .sum();
    let persisted = stats[4].events_persisted;
    assert_eq!(dropped, 0, "no late drop, no loss: {stats:#?}");
    assert_eq!(persisted, emitted, "every event is in a persisted window");
}
