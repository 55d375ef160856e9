//! The Experiment's PromQL against a real Prometheus scraping a real local pipeline.
//!
//! A pipeline named like a run (`exp-b0`) streams 10,000 events/s for 40 s on loopback while
//! the Debian `prometheus` scrapes every stage each second (the local stack of
//! `observatory up`). Once the source has been scraped for 10 s, the operator's own client (`results::Prometheus`) measures an
//! 8 s window, the way an Experiment measures a run on the cluster, for every metric: the
//! throughput must be the source's rate, the events the rate times the window, the losses 0,
//! and the other figures plausible. A pipeline that never ran has no data, which is an error.
//!
//! Needs `prometheus` on PATH; fails without it unless OBSERVATORY_SKIP_PROMETHEUS=1 says to
//! skip (and it then says so).

use observatory_runner::local::{LocalOptions, LocalRun, find_pipeline_bin};
use operator::experiment::results::{Prometheus, ResultsError};
use operator::experiment::{Metric, RunStatus};
use pipeline_plan::Plan;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiment_queries_measure_a_real_run_through_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = Plan::new("exp-b0");
    for a in [
        "source.rate=10000",
        "source.duration_seconds=40",
        "aggregate.window_ms=200",
    ] {
        plan.assign(a).unwrap();
    }
    let opts = LocalOptions {
        pipeline_bin: find_pipeline_bin().unwrap(),
        workdir: dir.path().join("run"),
        linger: Duration::from_secs(30),
    };
    let mut run = LocalRun::start(&plan, &opts).await.unwrap();
    let targets: Vec<String> = run
        .stages
        .iter()
        .map(|s| s.ready.admin_addr.clone())
        .collect();
    let stack = observatory_runner::stack::start(dir.path(), &targets).await;
    let Some(prom) = &stack.prometheus else {
        if std::env::var_os("OBSERVATORY_SKIP_PROMETHEUS").is_some() {
            eprintln!("SKIPPED: {}", stack.notes.join("; "));
            return;
        }
        panic!(
            "this test needs Prometheus ({}); apt-get install prometheus, or set OBSERVATORY_SKIP_PROMETHEUS=1 to skip it",
            stack.notes.join("; ")
        );
    };
    let p = Prometheus {
        url: prom.url.clone(),
    };

    // Like an Experiment's window, which opens after warm-up: wait until Prometheus has
    // scraped the source for 10 s, then measure the 8 s that ended 1 s ago.
    let started = tokio::time::Instant::now();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let scraped = "count_over_time(pipeline_events_emitted_total{pipeline=\"exp-b0\"}[10s])";
    while p.scalar(scraped, now()).await.unwrap_or(0.0) < 10.0 {
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "Prometheus did not scrape the source for 10 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let end = now() - 1;
    let b0 = RunStatus {
        side: "baseline".into(),
        pipeline: "exp-b0".into(),
        ..Default::default()
    };
    let mut figures = Vec::new();
    for metric in Metric::of_a_window() {
        let m = p.measure(metric, &b0, 8, end).await.unwrap_or_else(|e| {
            panic!("{}: {e}", metric.as_str());
        });
        assert!(
            (m.events - 80_000.0).abs() < 8_000.0,
            "{}: {} events in 8 s at 10,000/s",
            metric.as_str(),
            m.events
        );
        assert_eq!(m.lost, 0.0, "nothing is lost on loopback");
        figures.push((metric, m.value));
    }
    assert!(
        started.elapsed() < Duration::from_secs(35),
        "measured while the run was still streaming"
    );
    let get = |m: Metric| figures.iter().find(|(x, _)| *x == m).unwrap().1;
    let eps = get(Metric::ThroughputEps);
    assert!(
        (eps - 10_000.0).abs() < 1_000.0,
        "throughput {eps}/s, the source's rate is 10,000/s"
    );
    let (p50, p99) = (
        get(Metric::LatencyP50Seconds),
        get(Metric::LatencyP99Seconds),
    );
    assert!(
        p50 > 0.0 && p99 >= p50 && p99 < 5.0,
        "latency p50 {p50} s, p99 {p99} s"
    );
    // CPU is exported to the microsecond (observatory-telemetry's process collector), so even
    // 8 s of a lightly loaded pipeline has a CPU cost above zero.
    let cpu = get(Metric::CpuSecondsPerMillion);
    assert!(
        cpu.is_finite() && cpu > 0.0 && cpu < 1_000.0,
        "CPU {cpu} s per million events"
    );
    let rss = get(Metric::MaxStageRssBytes);
    assert!(rss > 1e6 && rss < 1e9, "RSS {rss} bytes");
    let allocs = get(Metric::AllocationsPerEvent);
    assert!(
        allocs > 0.0 && allocs < 100.0,
        "allocations per event {allocs}"
    );
    eprintln!("window of exp-b0 through Prometheus: {figures:?}");

    // A run that never ran: no data, said as such.
    let ghost = RunStatus {
        pipeline: "exp-v9".into(),
        ..b0.clone()
    };
    match p.measure(Metric::ThroughputEps, &ghost, 8, end).await {
        Err(ResultsError::NoData { query }) => assert!(query.contains("exp-v9"), "{query}"),
        other => panic!("a run without data must be an error, got {other:?}"),
    }
    run.signal(libc::SIGTERM);
}
