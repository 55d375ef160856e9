//! A/B runs: two plans run interleaved (A B A B …) on the same machine, so drift and noise hit
//! both alike; warm-up pairs are discarded. The result holds every run's figures, each side's
//! median, and the ratio B/A of the medians with a 95% percentile-bootstrap interval.

use crate::run::{RunConfig, run_local};
use crate::summary::RunSummary;
use pipeline_plan::Plan;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tokio::sync::mpsc;

/// Version of the A/B result's JSON shape.
pub const AB_VERSION: u32 = 1;

/// One run's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunFigures {
    pub throughput_eps: f64,
    pub latency_p50_seconds: f64,
    pub latency_p99_seconds: f64,
    /// CPU seconds of all stages per million events emitted.
    pub cpu_seconds_per_million: f64,
    /// Largest per-stage RSS (before profiling), bytes.
    pub max_stage_rss_bytes: u64,
    pub allocations_per_event: f64,
    pub conserved: bool,
}

impl From<&RunSummary> for RunFigures {
    fn from(s: &RunSummary) -> Self {
        let cpu: f64 = s.stages.iter().map(|st| st.cpu_seconds).sum();
        RunFigures {
            throughput_eps: s.throughput_eps,
            latency_p50_seconds: s.latency_p50_seconds,
            latency_p99_seconds: s.latency_p99_seconds,
            cpu_seconds_per_million: if s.events_emitted > 0 {
                cpu / s.events_emitted as f64 * 1e6
            } else {
                0.0
            },
            max_stage_rss_bytes: s.stages.iter().map(|st| st.rss_bytes).max().unwrap_or(0),
            allocations_per_event: s.stages.iter().map(|st| st.allocations_per_event).sum(),
            conserved: s.conserved,
        }
    }
}

/// One side of the comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub label: String,
    /// The knob assignments that define this side.
    pub assignments: Vec<String>,
    pub runs: Vec<RunFigures>,
    pub median_throughput_eps: f64,
}

/// An interval on a ratio B/A.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RatioInterval {
    pub ratio: f64,
    pub low: f64,
    pub high: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbResult {
    pub ab_version: u32,
    pub pairs: usize,
    pub warmup_pairs: usize,
    pub a: Side,
    pub b: Side,
    /// Median throughput of B over A, with a 95% bootstrap interval.
    pub throughput_ratio: RatioInterval,
}

/// The median of a sample (0 for none).
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Ratio of medians B/A with a 95% percentile-bootstrap interval (resampling each side
/// independently, `resamples` times, with a fixed-seed generator so reports reproduce).
pub fn median_ratio(a: &[f64], b: &[f64], resamples: usize) -> RatioInterval {
    let ratio = median(b) / median(a);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = |n: usize| {
        // splitmix64: small, fast, good enough to pick indices.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    };
    let mut ratios = Vec::with_capacity(resamples);
    let (mut ra, mut rb) = (vec![0.0; a.len()], vec![0.0; b.len()]);
    for _ in 0..resamples {
        for x in ra.iter_mut() {
            *x = a[next(a.len())];
        }
        for x in rb.iter_mut() {
            *x = b[next(b.len())];
        }
        ratios.push(median(&rb) / median(&ra));
    }
    ratios.sort_by(f64::total_cmp);
    let at =
        |q: f64| ratios[((q * (ratios.len() - 1) as f64).round() as usize).min(ratios.len() - 1)];
    RatioInterval {
        ratio,
        low: at(0.025),
        high: at(0.975),
    }
}

/// What to compare.
pub struct AbConfig {
    pub base: Plan,
    pub a: (String, Vec<String>),
    pub b: (String, Vec<String>),
    pub pairs: usize,
    pub warmup_pairs: usize,
    pub run: RunConfig,
}

/// Run the comparison. `progress` is told about each run as it starts.
pub async fn run_ab(
    cfg: &AbConfig,
    mut progress: impl FnMut(usize, usize, &str),
) -> anyhow::Result<AbResult> {
    let mut plans = Vec::new();
    for (label, assignments) in [&cfg.a, &cfg.b] {
        let mut plan = cfg.base.clone();
        for s in assignments {
            plan.assign(s)?;
        }
        plan.labels.insert("side".into(), label.clone());
        plans.push(plan);
    }
    let total = 2 * (cfg.pairs + cfg.warmup_pairs);
    let mut figures: [Vec<RunFigures>; 2] = [Vec::new(), Vec::new()];
    for pair in 0..cfg.pairs + cfg.warmup_pairs {
        for (side, plan) in plans.iter().enumerate() {
            let n = 2 * pair + side + 1;
            let label = if side == 0 { &cfg.a.0 } else { &cfg.b.0 };
            progress(n, total, label);
            let mut run = cfg.run.clone();
            run.report_dir = cfg.run.report_dir.join(format!("run-{n:03}-{label}"));
            let (_tx, rx) = mpsc::unbounded_channel();
            let summary = run_local(plan, &run, rx).await?;
            if !summary.conserved {
                anyhow::bail!("run {n} ({label}) lost events; see {}", summary.report_dir);
            }
            if pair >= cfg.warmup_pairs {
                figures[side].push(RunFigures::from(&summary));
            }
        }
    }
    let [fa, fb] = figures;
    let tput = |f: &[RunFigures]| f.iter().map(|r| r.throughput_eps).collect::<Vec<_>>();
    let side = |(label, assignments): &(String, Vec<String>), runs: Vec<RunFigures>| Side {
        label: label.clone(),
        assignments: assignments.clone(),
        median_throughput_eps: median(&tput(&runs)),
        runs,
    };
    Ok(AbResult {
        ab_version: AB_VERSION,
        pairs: cfg.pairs,
        warmup_pairs: cfg.warmup_pairs,
        throughput_ratio: median_ratio(&tput(&fa), &tput(&fb), 10_000),
        a: side(&cfg.a, fa),
        b: side(&cfg.b, fb),
    })
}

/// Where an A/B result goes by default.
pub fn default_out(report_dir: &std::path::Path) -> PathBuf {
    report_dir.join("ab.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn bootstrap_interval_brackets_the_ratio_and_narrows_with_less_noise() {
        let a: Vec<f64> = (0..9).map(|i| 100.0 + (i % 3) as f64).collect();
        let b: Vec<f64> = a.iter().map(|x| x * 1.10).collect();
        let r = median_ratio(&a, &b, 2000);
        assert!((r.ratio - 1.10).abs() < 1e-9);
        assert!(r.low <= r.ratio && r.ratio <= r.high);
        assert!(r.low > 1.05 && r.high < 1.15, "{r:?}");
        let noisy: Vec<f64> = (0..9).map(|i| 100.0 + (i * 37 % 50) as f64).collect();
        let wide = median_ratio(&noisy, &noisy, 2000);
        assert!(wide.low < 1.0 && wide.high > 1.0, "{wide:?}");
        assert!(wide.high - wide.low > r.high - r.low);
    }
}
