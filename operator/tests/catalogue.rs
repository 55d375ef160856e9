//! The local and the cluster definitions of every metric the cluster measures agree on the same
//! run's figures.
//!
//! One run's figures, as its four stage processes would report them at the end (`/stats`,
//! which the local runner reads) and as they would export them along the way (`/metrics`,
//! which Prometheus scrapes): counters rising steadily from 0 over 60 s to their final values.
//! The local side is the A/B engine's path (`RunSummary::from_stats`, then `RunFigures`); the
//! cluster side is the PromQL the operator asks (`operator::experiment::results::queries`), evaluated by a
//! real Prometheus engine (`promtool test rules`) over those series at the end of the run, with a
//! 60 s window. The stages allocate very differently (the source 5 per event, parse 6, the
//! others a few hundred in all), so a definition that counts one stage, or divides by another
//! stage's events, cannot agree by accident.
//!
//! Needs `promtool` (Debian `prometheus`); fails without it unless OBSERVATORY_SKIP_PROMETHEUS=1.

use observatory_bench::ab::RunFigures;
use observatory_runner::summary::RunSummary;
use observatory_stats::Metric;
use pipeline::context::{LatencySummary, StageStats};
use std::fmt::Write;

const SECONDS: u64 = 60;
const EMITTED: u64 = 60_000;

/// What each stage counted by the end of the run: (stage, cpu seconds, allocations, peak RSS).
const STAGES: [(&str, f64, u64, u64); 4] = [
    ("source", 1.5, 300_000, 12_000_000),
    ("parse", 2.4, 360_000, 11_000_000),
    ("aggregate", 1.2, 1_200, 18_000_000),
    ("sink", 0.3, 1_800, 10_000_000),
];

/// The sink's latency: of 1,000 windows, 300 within 10.24 ms and all within 20.48 ms (buckets
/// of the pipeline's doubling histogram), and the exact percentiles its HDR histogram reports,
/// which lie in the bucket (10.24 ms, 20.48 ms].
const LATENCY_P50_US: u64 = 15_000;
const LATENCY_P99_US: u64 = 20_000;
const LATENCY_BUCKETS: [(&str, f64); 4] = [
    ("0.00512", 0.0),
    ("0.01024", 300.0),
    ("0.02048", 1000.0),
    ("+Inf", 1000.0),
];
const P_BUCKET: (f64, f64) = (0.01024, 0.02048);

fn final_stats() -> Vec<(String, StageStats)> {
    STAGES
        .iter()
        .map(|&(stage, cpu, allocations, rss)| {
            let mut s = StageStats {
                pipeline: "exp-b0".into(),
                stage: stage.into(),
                finished: true,
                started_unix_ns: 0,
                finished_unix_ns: SECONDS * 1_000_000_000,
                events_received: EMITTED,
                events_sent: EMITTED,
                cpu_seconds: cpu,
                peak_rss_unprofiled_bytes: rss,
                peak_rss_bytes: rss,
                allocations,
                telemetry: true,
                ..Default::default()
            };
            match stage {
                "source" => {
                    s.events_emitted = EMITTED;
                    s.events_received = 0;
                }
                "sink" => {
                    s.events_persisted = EMITTED;
                    s.end_to_end_latency_us = Some(LatencySummary {
                        count: 1000,
                        p50: LATENCY_P50_US,
                        p99: LATENCY_P99_US,
                        ..Default::default()
                    });
                }
                _ => {}
            }
            (stage.to_string(), s)
        })
        .collect()
}

/// The series the stages export, scraped every second for the run's 60 s: `promtool`'s
/// `input_series`.
fn input_series(stats: &[(String, StageStats)]) -> String {
    let mut out = String::new();
    let mut series = |name: &str, stage: &str, extra: &str, last: f64| {
        let step = last / SECONDS as f64;
        writeln!(
            out,
            "      - series: '{name}{{pipeline=\"exp-b0\",stage=\"{stage}\"{extra}}}'\n        values: '0+{step}x{SECONDS}'"
        )
        .unwrap();
    };
    for (stage, s) in stats {
        series(
            "pipeline_events_emitted_total",
            stage,
            "",
            s.events_emitted as f64,
        );
        series(
            "pipeline_events_received_total",
            stage,
            "",
            s.events_received as f64,
        );
        series(
            "pipeline_events_persisted_total",
            stage,
            "",
            s.events_persisted as f64,
        );
        series("process_cpu_seconds_total", stage, "", s.cpu_seconds);
        series(
            "pipeline_allocations_total",
            stage,
            "",
            s.allocations as f64,
        );
        series(
            "process_resident_memory_bytes",
            stage,
            "",
            s.peak_rss_unprofiled_bytes as f64,
        );
        if stage == "sink" {
            for (le, below) in LATENCY_BUCKETS {
                series(
                    "pipeline_end_to_end_latency_seconds_bucket",
                    stage,
                    &format!(",le=\"{le}\""),
                    below,
                );
            }
        }
    }
    out
}

#[test]
fn the_local_and_the_cluster_definitions_of_every_windowed_metric_agree() {
    if observatory_testkit::skip_without(
        "promtool",
        "OBSERVATORY_SKIP_PROMETHEUS",
        "apt-get install prometheus",
    ) {
        return;
    }
    let stats = final_stats();
    let summary = RunSummary::from_stats("exp-b0", &stats, "");
    let local = RunFigures::from(&summary);

    let mut tests = String::new();
    let mut checked = Vec::new();
    for m in Metric::of_a_window() {
        let query = operator::experiment::results::queries(m, "exp-b0", SECONDS as u32)
            .expect("a run metric has queries")
            .value;
        let want = local.metric(m);
        assert!(want > 0.0, "{m}: the local figure is {want}");
        // A percentile through Prometheus is interpolated within its histogram bucket: it
        // agrees when it falls in the bucket that holds the local (exact) percentile. Every
        // other metric agrees to 1e-9.
        let expr = match m {
            Metric::LatencyP50Seconds | Metric::LatencyP99Seconds => {
                let (low, high) = P_BUCKET;
                assert!(want > low && want <= high, "{m}: {want}");
                format!("(({query}) > bool {low}) * (({query}) <= bool {high})")
            }
            _ => format!("abs(({query}) / {want:e} - 1) < bool 1e-9"),
        };
        writeln!(
            tests,
            "      - expr: '{}'\n        eval_time: {SECONDS}s\n        exp_samples:\n          - labels: '{{}}'\n            value: 1",
            expr.replace('\'', "''")
        )
        .unwrap();
        checked.push(format!("{m} = {want}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agreement.yml");
    std::fs::write(
        &file,
        format!(
            "tests:\n  - interval: 1s\n    input_series:\n{}    promql_expr_test:\n{tests}",
            input_series(&stats)
        ),
    )
    .unwrap();
    let out = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the cluster's PromQL disagrees with the local figures ({}):\n{}{}",
        checked.join(", "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The figures themselves, as the README states the definitions.
    assert_eq!(local.allocations_per_event, 663_000.0 / 60_000.0);
    assert_eq!(local.throughput_eps, 1_000.0);
    assert_eq!(local.max_stage_rss_bytes, 18e6);
    eprintln!("agree: {}", checked.join(", "));
}

#[test]
fn the_cluster_counts_as_lost_exactly_the_pipelines_loss_reasons() {
    use pipeline::event::{DropClass, DropReason};
    let losses: Vec<&str> = DropReason::ALL
        .iter()
        .filter(|r| r.class() == DropClass::Loss)
        .map(|r| r.as_str())
        .collect();
    assert_eq!(
        operator::experiment::results::LOSS_REASONS,
        losses.join("|")
    );
}
