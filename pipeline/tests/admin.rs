//! The admin port of real processes: profiles, health, traces, and the log verifier.

mod common;

use common::{chain, http_get, source_into_parse, spawn, wait_until};
use pipeline::seglog::segments;
use pprof::protos::Message;
use std::io::Read;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn gunzip(data: &[u8]) -> Vec<u8> {
    assert_eq!(&data[..2], &[0x1f, 0x8b], "gzip magic");
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

#[test]
fn cpu_and_heap_profiles_are_real_and_name_pipeline_functions() {
    let dir = tempfile::tempdir().unwrap();
    // A steady load for the profiles to see: an unbounded stream into parse, which discards.
    let (mut source, mut parse) =
        source_into_parse(dir.path(), &[], &["--set", "rate=300000"], &[]);

    let (status, body) = http_get(parse.admin(), "/debug/pprof/profile?seconds=2");
    assert_eq!(status, 200);
    let profile = pprof::protos::Profile::decode(gunzip(&body).as_slice()).expect("pprof protobuf");
    assert!(profile.sample.len() > 5, "{} samples", profile.sample.len());
    let names: Vec<&String> = profile.string_table.iter().collect();
    assert!(
        names.iter().any(|s| s.contains("parse_into")),
        "parse_into is on the profile"
    );
    assert!(profile.period > 0 && profile.period_type.is_some());

    let (status, svg) = http_get(parse.admin(), "/debug/pprof/flamegraph?seconds=2");
    assert_eq!(status, 200);
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "an SVG");
    assert!(
        svg.contains("parse_batch") || svg.contains("parse_into"),
        "names the parser"
    );
    assert!(svg.contains("parse stage: CPU"), "titled");

    let (status, folded) = http_get(parse.admin(), "/debug/pprof/folded?seconds=2");
    assert_eq!(status, 200);
    let folded = String::from_utf8(folded).unwrap();
    let lines: Vec<&str> = folded.lines().collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let (stack, count) = l.rsplit_once(' ').expect("`stack count`");
        assert!(
            count.parse::<u64>().unwrap() > 0 && !stack.is_empty(),
            "{l}"
        );
    }
    assert!(
        folded.contains("parse_batch") || folded.contains("parse_into"),
        "names the parser"
    );

    // Parameters are checked.
    assert_eq!(
        http_get(parse.admin(), "/debug/pprof/profile?seconds=0").0,
        400
    );
    assert_eq!(
        http_get(parse.admin(), "/debug/pprof/profile?frequency=5000").0,
        400
    );
    assert_eq!(
        http_get(parse.admin(), "/debug/pprof/profile?seconds=abc").0,
        400
    );

    let (status, heap) = http_get(parse.admin(), "/debug/pprof/heap");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&heap));
    let heap = pprof::protos::Profile::decode(gunzip(&heap).as_slice()).expect("heap pprof");
    assert!(heap.string_table.iter().any(|s| s == "inuse_space"));
    assert!(!heap.sample.is_empty(), "sampled allocations");
    let (status, heap_svg) = http_get(parse.admin(), "/debug/pprof/heap/flamegraph");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&heap_svg).contains("<svg"));

    let stats = parse.stats();
    assert!(stats.profiled);
    assert!(
        stats.peak_rss_unprofiled_bytes > 0
            && stats.peak_rss_unprofiled_bytes < stats.peak_rss_bytes
    );

    source.signal(libc::SIGTERM);
    source.finish(Duration::from_secs(30));
    parse.finish(Duration::from_secs(30));
}

#[test]
fn health_readiness_and_index() {
    let dir = tempfile::tempdir().unwrap();
    // A parse stage whose downstream does not exist yet is alive but not ready.
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = free.local_addr().unwrap().to_string();
    drop(free);
    let mut parse = spawn(dir.path(), "parse", &["--downstream", &nowhere], &[]);
    assert_eq!(http_get(parse.admin(), "/healthz"), (200, b"ok\n".to_vec()));
    assert_eq!(http_get(parse.admin(), "/readyz").0, 503);
    // Once the downstream appears, it becomes ready (an aggregate: parse's downstream admits
    // only parse).
    let sink = spawn(dir.path(), "sink", &["--set", "mode=blackhole"], &[]);
    let agg = spawn(
        dir.path(),
        "aggregate",
        &["--listen", &nowhere, "--downstream", &sink.data_addr()],
        &[],
    );
    wait_until(Duration::from_secs(10), "readiness", || {
        http_get(parse.admin(), "/readyz").0 == 200
    });
    let (status, index) = http_get(parse.admin(), "/");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&index).contains("/debug/pprof/flamegraph"));
    assert_eq!(http_get(parse.admin(), "/nope").0, 404);
    parse.signal(libc::SIGTERM);
    parse.finish(Duration::from_secs(30));
    drop(agg);
    drop(sink);
}

/// (path, body) of every request a fake collector received.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A minimal OTLP/HTTP collector: records (path, body) of every POST and answers 200.
fn fake_collector() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let sink = sink.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    if conn.read_exact(&mut body).is_err() {
                        return;
                    }
                    sink.lock().unwrap().push((path, body));
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    (format!("http://{addr}"), got)
}

#[test]
fn spans_are_exported_over_otlp_when_the_endpoint_is_set() {
    let (endpoint, got) = fake_collector();
    let dir = tempfile::tempdir().unwrap();
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    let (mut source, mut parse) =
        source_into_parse(dir.path(), &[], &["--set", "events=50000"], &env);
    source.finish(Duration::from_secs(30));
    parse.finish(Duration::from_secs(30));
    let got = got.lock().unwrap();
    assert!(!got.is_empty(), "the collector received nothing");
    assert!(got.iter().all(|(path, _)| path == "/v1/traces"));
    let all: Vec<u8> = got.iter().flat_map(|(_, b)| b.clone()).collect();
    let has = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"pipeline-parse"), "service.name");
    assert!(has(b"parse"), "per-batch span");

    // Without the variable, nothing is exported (and nothing breaks).
    let (_, quiet) = fake_collector();
    let (mut source, mut parse) =
        source_into_parse(dir.path(), &[], &["--set", "events=1000"], &[]);
    source.finish(Duration::from_secs(30));
    parse.finish(Duration::from_secs(30));
    assert!(quiet.lock().unwrap().is_empty());
}

fn verify(dir: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(common::bin())
        .args(["verify-log", dir.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn verify_log_reads_back_every_record_and_tolerates_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let set_dir = format!("dir={}", log.display());
    let mut stages = chain(
        dir.path(),
        [
            &["--set", "events=100000"],
            &[],
            &["--set", "window_ms=50"],
            &["--set", set_dir.as_str(), "--set", "segment_bytes=65536"],
        ],
    );
    let stats: Vec<_> = stages
        .iter_mut()
        .map(|s| s.finish(Duration::from_secs(60)))
        .collect();
    let (code, out) = verify(&log);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("events     {}", stats[3].events_persisted)),
        "{out}"
    );
    assert!(
        out.contains(&format!("records    {} ", stats[3].windows_persisted)),
        "{out}"
    );
    assert!(out.contains("torn tail  none"));
    let segs = segments(&log).unwrap();
    assert!(segs.len() > 1, "segments rolled");

    // A crash mid-write: the tail of the last segment is torn.
    let last = &segs.last().unwrap().1;
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let (code, out) = verify(&log);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("torn tail  ") && out.contains("tolerated"),
        "{out}"
    );

    // Damage inside an earlier segment is corruption.
    let first = &segs[0].1;
    let mut bytes = std::fs::read(first).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(first, bytes).unwrap();
    let (code, out) = verify(&log);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("CORRUPT"), "{out}");

    assert_eq!(verify(&dir.path().join("missing")).0, 2);
}
