//! Criterion benchmarks of the pipeline's hot paths, on the pipeline's own code:
//! frame encode/decode, parsing (owned, borrowed, and sonic-rs as the yardstick), aggregation
//! under each state strategy with Zipf keys from one and two threads, histogram records, and
//! segment-log appends under each fsync policy. Throughput is in bytes or events, so results
//! read as MB/s and events/s.
//!
//! `cargo bench --bench hot_paths` (or `make bench`, or `observatory bench run`);
//! `cargo bench --bench hot_paths -- --profile-time 5 parse` also writes a CPU flamegraph of
//! each benchmark to `target/criterion/<bench>/profile/flamegraph.svg`.

use bytes::BytesMut;
use criterion::profiler::Profiler;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pipeline::codec::{Frame, FrameCodec, OutFrame};
use pipeline::generate::Generator;
use pipeline::seglog::SegmentLog;
use pipeline::slots::Hooks;
use pipeline::stage::parse::parse_batch;
use pipeline::state::SharedState;
use pipeline::window::latency_histogram;
use pipeline_plan::{ParseMode, SourceKnobs, StateStrategy};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::codec::Decoder;

const BATCH: usize = 1024;

/// CPU flamegraphs of benchmarks (criterion's `--profile-time`), with pprof at 99 Hz.
#[derive(Default)]
struct Flamegraphs {
    guard: Option<pprof::ProfilerGuard<'static>>,
}

impl Profiler for Flamegraphs {
    fn start_profiling(&mut self, _id: &str, _dir: &Path) {
        self.guard = pprof::ProfilerGuardBuilder::default()
            .frequency(99)
            .build()
            .ok();
    }

    fn stop_profiling(&mut self, id: &str, dir: &Path) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let Ok(report) = guard.report().build() else {
            return;
        };
        let _ = std::fs::create_dir_all(dir);
        let mut options = pprof::flamegraph::Options::default();
        options.title = format!("{id}: CPU");
        if let Ok(file) = std::fs::File::create(dir.join("flamegraph.svg")) {
            let _ = report.flamegraph_with_options(file, &mut options);
        }
    }
}

/// JSON records of the workload (no malformed ones), and their total size.
fn records(n: usize) -> (Vec<Vec<u8>>, usize) {
    let mut g = Generator::new(&SourceKnobs::default());
    let recs: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let mut r = Vec::new();
            g.next_into(&mut r);
            r
        })
        .collect();
    let bytes = recs.iter().map(Vec::len).sum();
    (recs, bytes)
}

fn raw_frame(recs: &[Vec<u8>]) -> Frame {
    let mut f = OutFrame::data(recs.iter().map(|r| r.len() + 4).sum());
    for r in recs {
        f.push(r);
    }
    f.into_frame(1, 0)
}

/// Compact event frames (parsed), `frames` of them.
fn event_frames(frames: usize) -> Vec<Frame> {
    let (recs, _) = records(frames * BATCH);
    recs.chunks(BATCH)
        .enumerate()
        .map(|(i, c)| {
            parse_batch(
                &raw_frame(c),
                ParseMode::Borrowed,
                1,
                Hooks::NONE,
                &pipeline::window::Horizon::unbounded(),
            )
            .frames
            .remove(0)
            .into_frame(1, i as u64)
        })
        .collect()
}

fn codec(c: &mut Criterion) {
    let events = event_frames(1);
    let compact: Vec<Vec<u8>> = events[0].records().map(<[u8]>::to_vec).collect();
    let mut g = c.benchmark_group("codec");
    let wire = {
        let mut f = OutFrame::data(compact.iter().map(|r| r.len() + 4).sum());
        for r in &compact {
            f.push(r);
        }
        f.finish(1, 0)
    };
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("encode_1024_events", |b| {
        b.iter(|| {
            let mut f = OutFrame::data(wire.len());
            for r in &compact {
                f.push(black_box(r));
            }
            black_box(f.finish(1, 0))
        })
    });
    g.bench_function("decode_1024_events", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            black_box(FrameCodec::new(1 << 24).decode(&mut buf).unwrap().unwrap())
        })
    });
    g.finish();
}

/// The reference parser's view of an event (borrowed strings).
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct RefEvent<'a> {
    ts: u64,
    trace_id: &'a str,
    service: &'a str,
    route: &'a str,
    method: &'a str,
    status: u16,
    latency_us: u64,
    bytes: u64,
    region: &'a str,
    user_agent: &'a str,
}

fn parse(c: &mut Criterion) {
    let (recs, bytes) = records(BATCH);
    let frame = raw_frame(&recs);
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, mode) in [
        ("owned", ParseMode::Owned),
        ("borrowed", ParseMode::Borrowed),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                black_box(parse_batch(
                    black_box(&frame),
                    mode,
                    1,
                    Hooks::NONE,
                    &pipeline::window::Horizon::unbounded(),
                ))
            })
        });
    }
    g.bench_function("sonic_rs_reference", |b| {
        b.iter(|| {
            for r in &recs {
                black_box(sonic_rs::from_slice::<RefEvent<'_>>(black_box(r)).unwrap());
            }
        })
    });
    g.finish();
    let mut g = c.benchmark_group("parse_bytes");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("borrowed", |b| {
        b.iter(|| {
            black_box(parse_batch(
                &frame,
                ParseMode::Borrowed,
                1,
                Hooks::NONE,
                &pipeline::window::Horizon::unbounded(),
            ))
        })
    });
    g.finish();
}

fn aggregate(c: &mut Criterion) {
    // Zipf keys (skew 1.1 over 256 keys), all in one window so the state stays the same size.
    let frames = event_frames(8);
    let per_thread = frames.len();
    let mut g = c.benchmark_group("aggregate");
    for threads in [1usize, 2] {
        g.throughput(Throughput::Elements((threads * per_thread * BATCH) as u64));
        for (name, strategy) in [
            ("mutex", StateStrategy::Mutex),
            ("sharded", StateStrategy::Sharded),
            ("owner", StateStrategy::Owner),
        ] {
            let state = SharedState::new(strategy, 16, 3_600_000, 1 << 20, 64, |_| {});
            g.bench_with_input(
                BenchmarkId::new(name, format!("{threads}_threads")),
                &threads,
                |b, &threads| {
                    b.iter(|| {
                        std::thread::scope(|s| {
                            for _ in 0..threads {
                                s.spawn(|| {
                                    for f in &frames {
                                        state.apply_blocking(f.clone());
                                    }
                                });
                            }
                        });
                        // A barrier: the owner answers after applying everything queued before it.
                        black_box(state.close_blocking(0));
                    })
                },
            );
        }
    }
    g.finish();
}

fn histogram(c: &mut Criterion) {
    let values: Vec<u64> = (0..BATCH as u64)
        .map(|i| 100 + (i * 7919) % 2_000_000)
        .collect();
    let mut g = c.benchmark_group("histogram");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut h = latency_histogram();
    g.bench_function("hdr_record", |b| {
        b.iter(|| {
            for v in &values {
                h.saturating_record(black_box(*v));
            }
        })
    });
    let p =
        prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("x_seconds", "x")).unwrap();
    g.bench_function("prometheus_observe", |b| {
        b.iter(|| {
            for v in &values {
                p.observe(black_box(*v as f64 / 1e6));
            }
        })
    });
    g.finish();
}

fn seglog(c: &mut Criterion) {
    let events = event_frames(1);
    let closed = {
        let state = SharedState::new(StateStrategy::Mutex, 1, 1000, 1 << 20, 1, |_| {});
        state.apply_blocking(events[0].clone());
        state.close_blocking(u64::MAX).0
    };
    let records: Vec<Vec<u8>> = closed
        .iter()
        .map(|w| {
            let mut out = Vec::new();
            pipeline::event::WindowResult::encode_parts(
                &mut out,
                w.start_us,
                w.end_us,
                &w.key,
                w.agg.count,
                w.agg.errors,
                w.agg.bytes,
                pipeline::window::percentiles(&w.agg.latency),
                w.agg.last_emit_ns,
            );
            out
        })
        .collect();
    let mut g = c.benchmark_group("seglog_append");
    g.throughput(Throughput::Elements(records.len() as u64));
    for policy in ["never", "interval", "batch"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 64 << 20).unwrap();
        let mut last_sync = Instant::now();
        g.bench_function(policy, |b| {
            b.iter(|| {
                for r in &records {
                    log.append(black_box(r)).unwrap();
                }
                // What the sink does after a batch, per policy.
                match policy {
                    "batch" => {
                        log.sync().unwrap();
                    }
                    "interval" if last_sync.elapsed() >= Duration::from_secs(1) => {
                        log.sync().unwrap();
                        last_sync = Instant::now();
                    }
                    _ => log.flush().unwrap(),
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = hot_paths;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .with_profiler(Flamegraphs::default());
    targets = codec, parse, aggregate, histogram, seglog
}
criterion_main!(hot_paths);
