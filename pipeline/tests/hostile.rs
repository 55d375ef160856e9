//! Hostile peers and poisoned data, against real stage processes on loopback: impostors that
//! speak the protocol almost right, forged ends of stream, forged records at the sink,
//! far-future events, silent upstreams, held connections and abandoned profiles. Each test
//! checks that the run still completes, that what the real upstream sent is all accounted for,
//! and that what the attacker did is counted under its reason.

mod common;

use common::{
    Peer, chain, compact_event, http_get, metric, rss_bytes, spawn, token_args, wait_until,
};
use pipeline::event::{Latency, WindowResult};
use pipeline::generate::BASE_TS_US;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const TOKEN: &str = "4f1c0ffee";

fn rejected(stage: &common::Stage, reason: &str) -> f64 {
    metric(
        &stage.metrics(),
        "pipeline_frames_rejected_total",
        Some(("reason", reason)),
    )
}

fn args<'a>(token: &'a [String], more: &'a [&'a str]) -> Vec<&'a str> {
    token
        .iter()
        .map(String::as_str)
        .chain(more.iter().copied())
        .collect()
}

#[test]
fn impostors_are_refused_and_the_real_stream_is_all_accounted_for() {
    let dir = tempfile::tempdir().unwrap();
    let t = token_args(dir.path(), TOKEN);
    let log = format!("dir={}", dir.path().join("log").display());
    let mut stages = chain(
        dir.path(),
        [
            &args(&t, &["--set", "events=200000", "--set", "rate=40000"]),
            &args(&t, &[]),
            &args(&t, &["--set", "window_ms=100"]),
            &args(&t, &["--set", log.as_str()]),
        ],
    );
    wait_until(Duration::from_secs(20), "events to reach the sink", || {
        stages[3].stats().events_received > 0
    });
    let pipeline = "pipeline";
    for (i, upstream) in [(1, "source"), (2, "parse"), (3, "aggregate")] {
        let addr = stages[i].data_addr();
        // No hello: a forged end of stream with absurd totals.
        let mut p = Peer::connect(&addr);
        p.end(Some((1_000_000_000_000, 1_000_000_000_000)));
        p.expect_closed(Duration::from_secs(10));
        // The wrong token, and none.
        let mut p = Peer::connect(&addr);
        p.hello(pipeline, upstream, 0, Some("guess"));
        p.end(Some((0, 1_000_000_000_000)));
        p.expect_closed(Duration::from_secs(10));
        let mut p = Peer::connect(&addr);
        p.hello(pipeline, upstream, 0, None);
        p.expect_closed(Duration::from_secs(10));
        // An insider with the token: another pipeline, the wrong role, a replica already
        // connected, one the plan does not have.
        let mut p = Peer::connect(&addr);
        p.hello("other", upstream, 0, Some(TOKEN));
        p.expect_closed(Duration::from_secs(10));
        let mut p = Peer::connect(&addr);
        p.hello(pipeline, "sink", 0, Some(TOKEN));
        p.expect_closed(Duration::from_secs(10));
        let mut p = Peer::connect(&addr);
        p.hello(pipeline, upstream, 0, Some(TOKEN));
        p.end(None);
        p.expect_closed(Duration::from_secs(10));
        let mut p = Peer::connect(&addr);
        p.hello(pipeline, upstream, 5, Some(TOKEN));
        p.expect_closed(Duration::from_secs(10));
    }
    let stats: Vec<_> = stages
        .iter_mut()
        .map(|s| s.finish(Duration::from_secs(60)))
        .collect();
    let emitted = stats[0].events_emitted;
    assert_eq!(emitted, 200_000);
    let dead: u64 = stats.iter().map(|s| s.dead_lettered).sum();
    let lost: u64 = stats.iter().map(|s| s.lost + s.discarded).sum();
    assert_eq!(lost, 0, "{stats:#?}");
    assert_eq!(stats[3].events_persisted + dead, emitted);
    for s in &stats[1..] {
        let r = &s.frames_rejected;
        for (reason, n) in [
            ("not_admitted", 1),
            ("bad_token", 2),
            ("wrong_pipeline", 1),
            ("wrong_role", 1),
            ("bad_replica", 2),
        ] {
            assert_eq!(r.get(reason).copied(), Some(n), "{}: {r:?}", s.stage);
        }
    }
    // The flood of refusals is logged at most once a second.
    let lines = stages[1]
        .log_text()
        .lines()
        .filter(|l| l.contains("refused a connection"))
        .count();
    assert!((1..=8).contains(&lines), "{lines} refusal lines");
}

fn window(i: u64, count: u64) -> WindowResult {
    WindowResult {
        window_start_us: BASE_TS_US + i * 1_000_000,
        window_end_us: BASE_TS_US + (i + 1) * 1_000_000,
        service: "svc".into(),
        route: format!("/r{i}"),
        count,
        errors: 1,
        bytes: 100 * count,
        latency_us: Latency {
            min: 10,
            p50: 20,
            p90: 30,
            p99: 40,
            max: 50,
        },
        last_emit_ns: 1,
    }
}

fn encoded(w: &WindowResult) -> Vec<u8> {
    let mut out = Vec::new();
    w.encode(&mut out);
    out
}

#[test]
fn an_admitted_peer_cannot_end_a_stream_on_its_word_nor_put_bad_records_in_the_log() {
    use rand::{RngExt, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("log");
    let log = format!("dir={}", logdir.display());
    let mut sink = spawn(
        dir.path(),
        "sink",
        &["--set", log.as_str(), "--linger-seconds", "30"],
        &[],
    );
    let addr = sink.data_addr();
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(14);
    let mut a = Peer::connect(&addr);
    a.hello("pipeline", "aggregate", 0, None);
    // 10,000 random records of a window result's length, 100 per frame.
    for _ in 0..100 {
        let recs: Vec<Vec<u8>> = (0..100)
            .map(|_| {
                let len = rng.random_range(90..140);
                (0..len).map(|_| rng.random()).collect()
            })
            .collect();
        a.data(&recs, 0, Some(1_000_000));
    }
    // Well-formed but inconsistent window results.
    let mut bad = vec![window(1, 10); 6];
    bad[0].errors = 11;
    bad[1].window_start_us += 7;
    bad[2].latency_us.p50 = 60;
    bad[3].count = 0;
    bad[4].window_end_us = bad[4].window_start_us;
    bad[5].bytes = u64::MAX;
    a.data(
        &bad.iter().map(encoded).collect::<Vec<_>>(),
        0,
        Some(u32::MAX),
    );
    let good: Vec<WindowResult> = (0..20).map(|i| window(i, 10 + i)).collect();
    a.data(&good.iter().map(encoded).collect::<Vec<_>>(), 0, None);
    // A forged end of stream: totals it did not send.
    a.end(Some((1_000_000_000_000, 1_000_000_000_000)));
    a.expect_closed(Duration::from_secs(10));
    wait_until(
        Duration::from_secs(10),
        "the forged end to be refused",
        || rejected(&sink, "bad_end_totals") == 1.0,
    );
    assert!(
        !sink.stats().finished,
        "a refused end of stream ends nothing"
    );
    // The real aggregate (replica 0 again: the impostor's seat is free) finishes the stream.
    let mut b = Peer::connect(&addr);
    b.hello("pipeline", "aggregate", 0, None);
    let more: Vec<WindowResult> = (20..30).map(|i| window(i, 5)).collect();
    b.data(&more.iter().map(encoded).collect::<Vec<_>>(), 0, None);
    b.end(None);
    b.expect_closed(Duration::from_secs(10));
    wait_until(Duration::from_secs(10), "the sink to finish", || {
        sink.stats().finished
    });
    sink.signal(libc::SIGTERM);
    let s = sink.finish(Duration::from_secs(30));
    let want: u64 = good.iter().chain(&more).map(|w| w.count).sum();
    assert_eq!(s.events_persisted, want);
    assert_eq!(
        s.dropped.get("undecodable"),
        Some(&10_006),
        "{:?}",
        s.dropped
    );
    assert_eq!(s.lost, 0);
    let totals = pipeline::seglog::read_windows(&logdir).unwrap();
    assert_eq!((totals.undecodable, totals.events), (0, want));
    let verify = std::process::Command::new(common::bin())
        .args(["verify-log", logdir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
}

/// `pipeline generate` output with one event moved `skew_us` into the future in the middle.
fn replay_with_a_future_event(dir: &std::path::Path, events: u64, skew_us: u64) -> String {
    let path = dir.join("replay.jsonl");
    let out = std::process::Command::new(common::bin())
        .args(["generate", "--events", &events.to_string()])
        .args([
            "--set",
            "event_time_step_us=100",
            "--set",
            "malformed_rate=0",
        ])
        .args(["-o", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mid = lines.len() / 2;
    let mut v: serde_json::Value = serde_json::from_str(&lines[mid]).unwrap();
    let ts = v["ts"].as_u64().unwrap();
    v["ts"] = (ts + skew_us).into();
    lines.insert(mid, v.to_string());
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path.display().to_string()
}

#[test]
fn a_far_future_event_is_dropped_and_moves_no_watermark() {
    let dir = tempfile::tempdir().unwrap();
    // Eleven days ahead: under the old rule every later event was late.
    let replay = format!(
        "replay={}",
        replay_with_a_future_event(dir.path(), 30_000, 1_000_000_000_000)
    );
    let log = format!("dir={}", dir.path().join("log").display());
    let mut stages = chain(
        dir.path(),
        [
            &["--set", replay.as_str()],
            &[],
            &["--set", "window_ms=100"],
            &["--set", log.as_str()],
        ],
    );
    let stats: Vec<_> = stages
        .iter_mut()
        .map(|s| s.finish(Duration::from_secs(60)))
        .collect();
    assert_eq!(stats[0].events_emitted, 30_001);
    assert_eq!(stats[1].dropped.get("future_timestamp"), Some(&1));
    assert!(
        stats.iter().all(|s| !s.dropped.contains_key("late")),
        "{stats:#?}"
    );
    assert_eq!(stats[3].events_persisted, 30_000);

    // The same at the aggregate, from a peer that skips parse: a far-future event and a
    // far-future watermark on one stream while the other carries the real events. One worker,
    // so frames are applied in the order they arrived: the real stream's first (the horizon
    // stands on the newest accepted event; before the first, on the wall clock, a year past
    // this stream's fixed event times).
    let mut sink = spawn(dir.path(), "sink", &["--set", "mode=blackhole"], &[]);
    let agg_args = ["--downstream", &sink.data_addr(), "--upstreams", "2"];
    let mut agg = spawn(
        dir.path(),
        "aggregate",
        &[
            &agg_args[..],
            &["--set", "window_ms=100", "--set", "workers=1"],
        ]
        .concat(),
        &[],
    );
    let addr = agg.data_addr();
    let mut real = Peer::connect(&addr);
    real.hello("pipeline", "parse", 0, None);
    let mut liar = Peer::connect(&addr);
    liar.stream = 78;
    liar.hello("pipeline", "parse", 1, None);
    let far = BASE_TS_US + 1_000_000_000_000;
    let batch = |real: &mut Peer, ts: &mut u64| {
        let recs: Vec<Vec<u8>> = (0..500)
            .map(|i| compact_event("svc", &format!("/r{}", i % 7), *ts + i * 100))
            .collect();
        *ts += 500 * 100;
        real.data(&recs, *ts - 100, None);
    };
    let mut ts = BASE_TS_US;
    for _ in 0..10 {
        batch(&mut real, &mut ts);
    }
    wait_until(Duration::from_secs(10), "the real frames received", || {
        agg.stats().events_received >= 5_000
    });
    // One frame: a far-future event, a real-time one, a far-future watermark.
    liar.data(
        &[
            compact_event("svc", "/evil", far),
            compact_event("svc", "/r1", ts),
        ],
        far,
        None,
    );
    // The two streams are two connections: the real one must not overtake the liar's frame
    // (its event is at the real stream's newest time; behind it, it would be rightly late).
    wait_until(Duration::from_secs(10), "the liar's frame applied", || {
        agg.stats().dropped.get("future_timestamp") == Some(&1)
    });
    for _ in 0..10 {
        batch(&mut real, &mut ts);
    }
    real.end(None);
    liar.end(None);
    let a = agg.finish(Duration::from_secs(30));
    let s = sink.finish(Duration::from_secs(30));
    assert_eq!(
        a.dropped.get("future_timestamp"),
        Some(&1),
        "{:?}",
        a.dropped
    );
    assert!(!a.dropped.contains_key("late"), "{:?}", a.dropped);
    assert_eq!(s.events_received, 10_001, "every real event, in its window");
}

#[test]
fn a_silent_upstream_stops_holding_windows_back_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let log = format!("dir={}", dir.path().join("log").display());
    let mut sink = spawn(dir.path(), "sink", &["--set", log.as_str()], &[]);
    let mut agg = spawn(
        dir.path(),
        "aggregate",
        &[
            "--downstream",
            &sink.data_addr(),
            "--upstreams",
            "2",
            "--set",
            "window_ms=100",
            "--set",
            "idle_timeout_ms=1000",
        ],
        &[],
    );
    let addr = agg.data_addr();
    // One empty frame, then nothing: it used to freeze window closing for the whole run.
    let mut silent = Peer::connect(&addr);
    silent.stream = 78;
    silent.hello("pipeline", "parse", 1, None);
    silent.data(&[], 0, None);
    let mut real = Peer::connect(&addr);
    real.hello("pipeline", "parse", 0, None);
    let mut sent = 0u64;
    let t0 = Instant::now();
    let mut ts = BASE_TS_US;
    while sink.stats().windows_persisted == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no window closed while one upstream was silent"
        );
        let recs: Vec<Vec<u8>> = (0..200).map(|_| compact_event("svc", "/r", ts)).collect();
        ts += 20_000;
        sent += 200;
        real.data(&recs, ts - 20_000, None);
        std::thread::sleep(Duration::from_millis(50));
    }
    real.end(None);
    // It rejoins, ends its (empty) stream, and the run completes with every event in.
    silent.end(None);
    let a = agg.finish(Duration::from_secs(30));
    let s = sink.finish(Duration::from_secs(30));
    assert!(!a.dropped.contains_key("late"), "{:?}", a.dropped);
    assert_eq!(s.events_persisted, sent);
}

#[test]
fn held_and_flooding_connections_cost_bounded_memory_and_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let t = token_args(dir.path(), TOKEN);
    let mut parse = spawn(
        dir.path(),
        "parse",
        &args(&t, &["--linger-seconds", "60"]),
        &[],
    );
    let addr = parse.data_addr();
    let pid = parse.child.id();
    std::thread::sleep(Duration::from_millis(300));
    let baseline = rss_bytes(pid);
    // 40 connections that announce a frame just under the 8 MiB limit and send 6 MiB of it,
    // without a hello: refused at the prefix, nothing buffered.
    let chunk = vec![7u8; 1 << 20];
    for _ in 0..40 {
        let mut sock = TcpStream::connect(&addr).unwrap();
        sock.set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = sock.write_all(&((8u32 << 20) - 64).to_be_bytes());
        for _ in 0..6 {
            if sock.write_all(&chunk).is_err() {
                break;
            }
        }
    }
    // An insider (it has the token) that starts an 8 MiB frame, sends 1 MiB and stalls.
    let mut insider = Peer::connect(&addr);
    insider.hello("pipeline", "source", 0, Some(TOKEN));
    let _ = insider.send_raw(&((8u32 << 20) - 64).to_be_bytes());
    let _ = insider.send_raw(&chunk);
    // 150 silent connections: more than the port's 128.
    let silent: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let held = rss_bytes(pid);
    assert!(
        held < baseline + (24 << 20),
        "RSS grew from {baseline} to {held} bytes"
    );
    // Silent connections are closed after the hello timeout (or at once, over the limit).
    let t0 = Instant::now();
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut b = [0u8; 16];
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
        let _ = b;
    }
    assert!(t0.elapsed() < Duration::from_secs(12), "{:?}", t0.elapsed());
    // The stalled frame is cut off by the frame timeout.
    insider.expect_closed(Duration::from_secs(20));
    let m = parse.metrics();
    let n = |r: &str| metric(&m, "pipeline_frames_rejected_total", Some(("reason", r)));
    assert_eq!(n("frame_timeout"), 1.0, "{m}");
    assert_eq!(n("not_admitted"), 40.0);
    assert!(n("connection_limit") >= 1.0 && n("hello_timeout") >= 1.0);
    assert_eq!(n("connection_limit") + n("hello_timeout"), 150.0);
    // A real upstream still gets through, completely.
    let src = [
        &t[..],
        &[
            "--downstream".into(),
            addr.clone(),
            "--set".into(),
            "events=20000".into(),
        ],
    ]
    .concat();
    let mut source = spawn(
        dir.path(),
        "source",
        &src.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    let s = source.finish(Duration::from_secs(30));
    wait_until(Duration::from_secs(30), "parse to finish", || {
        parse.stats().finished
    });
    parse.signal(libc::SIGTERM);
    let p = parse.finish(Duration::from_secs(30));
    assert_eq!((s.events_sent, p.events_received), (20_000, 20_000));
    assert_eq!(p.lost, 0);
}

/// Send `request` on a new admin connection.
fn admin_conn(addr: &str, request: &str) -> TcpStream {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.write_all(request.as_bytes()).unwrap();
    sock
}

fn closed_within(mut sock: TcpStream, limit: Duration) -> bool {
    sock.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

#[test]
fn the_admin_port_frees_an_abandoned_profile_and_cuts_off_slow_and_idle_clients() {
    let dir = tempfile::tempdir().unwrap();
    // A sink waiting for its upstream: the process stays up.
    let mut sink = spawn(dir.path(), "sink", &["--set", "mode=blackhole"], &[]);
    let admin = sink.admin().to_string();
    // A heap profile's lasting cost (its symbolizer) is left out of the unprofiled peak that
    // run summaries report (first, before a CPU profile marks the stage profiled anyway).
    let before = rss_bytes(sink.child.id());
    assert_eq!(http_get(&admin, "/debug/pprof/heap").0, 200);
    std::thread::sleep(Duration::from_millis(400)); // the RSS sampler runs every 100 ms
    let st = sink.stats();
    assert!(
        st.peak_rss_unprofiled_bytes <= before + (16 << 20),
        "unprofiled peak {} after a heap profile, RSS before it {before}, now {}",
        st.peak_rss_unprofiled_bytes,
        st.rss_bytes
    );
    // A five-minute profile whose client leaves after 2 s.
    let long = admin_conn(
        &admin,
        "GET /debug/pprof/profile?seconds=300 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    std::thread::sleep(Duration::from_secs(2));
    drop(long);
    let t0 = Instant::now();
    loop {
        let (status, _) = http_get(&admin, "/debug/pprof/profile?seconds=1");
        if status == 200 {
            break;
        }
        assert_eq!(status, 409);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the profiler slot is still taken"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // 100 clients that never finish their headers: more than the port's 64 connections (the
    // rest are closed at once), each cut off by the header timeout.
    let slow: Vec<TcpStream> = (0..100)
        .map(|_| admin_conn(&admin, "GET /metrics HTTP/1.1\r\nHost: x\r\n"))
        .collect();
    let t0 = Instant::now();
    for s in slow {
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "a slow client is still connected"
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(9), "{:?}", t0.elapsed());
    // A kept-alive connection that goes idle after its first request is closed too.
    let mut idle = admin_conn(&admin, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut first = [0u8; 64];
    assert!(
        idle.read(&mut first).unwrap() > 0,
        "the first request is served"
    );
    let t0 = Instant::now();
    assert!(
        closed_within(idle, Duration::from_secs(10)),
        "an idle client is still connected"
    );
    assert!(t0.elapsed() < Duration::from_secs(9), "{:?}", t0.elapsed());
    // The port still serves, and a stage with idle admin clients stops at once.
    assert_eq!(http_get(&admin, "/healthz").0, 200);
    let idle: Vec<TcpStream> = (0..10)
        .map(|_| admin_conn(&admin, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    sink.signal(libc::SIGTERM);
    sink.wait(Duration::from_secs(10));
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "stopping took {:?}",
        t0.elapsed()
    );
    drop(idle);
}
