//! The A/B engine: two configurations of the pipeline run interleaved (A B A B …) on the same
//! machine, so drift and background noise hit both alike; warm-up pairs are discarded. Every
//! run is a real local run; its figures (events/s, p50/p99 latency, CPU seconds per million
//! events, the largest stage RSS, allocations per event, conservation) become samples, and
//! each metric's ratio B/A gets a 95% bootstrap interval and a verdict ([`crate::stats`]).
//!
//! A/A mode runs the same configuration on both sides: its intervals are this machine's noise
//! floor. Profiles are taken in separate runs after the measured ones (one per side), so the
//! profiler never perturbs a measurement; they feed the differential flamegraph of the report.

use crate::samples::{SampleSet, Series};
use crate::stats::{Comparison, Metric, Options, Totals};
use observatory_runner::run::{RunConfig, run_local};
use observatory_runner::summary::RunSummary;
use pipeline_plan::Plan;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// Version of the A/B result's JSON shape (`ab.json`).
pub const AB_VERSION: u32 = 2;

/// One run's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunFigures {
    pub throughput_eps: f64,
    pub latency_p50_seconds: f64,
    pub latency_p99_seconds: f64,
    /// CPU seconds of all stages per million events emitted.
    pub cpu_seconds_per_million: f64,
    /// Largest per-stage RSS (before profiling), bytes.
    pub max_stage_rss_bytes: f64,
    /// Allocations of all stages per event emitted (0 with telemetry off).
    pub allocations_per_event: f64,
    /// Every stage counted its allocations (allocation counting is part of telemetry).
    #[serde(default = "counted")]
    pub allocations_counted: bool,
    /// Events persisted (in window results) per event emitted: what was not dead-lettered,
    /// discarded or lost.
    #[serde(default)]
    pub delivered_fraction: f64,
    /// CPU seconds per million events, per stage process.
    pub stage_cpu_seconds_per_million: BTreeMap<String, f64>,
    pub conserved: bool,
    pub report_dir: String,
}

fn counted() -> bool {
    true
}

impl RunFigures {
    /// The run metric's value in this run.
    pub fn metric(&self, m: Metric) -> f64 {
        match m {
            Metric::ThroughputEps => self.throughput_eps,
            Metric::LatencyP50Seconds => self.latency_p50_seconds,
            Metric::LatencyP99Seconds => self.latency_p99_seconds,
            Metric::CpuSecondsPerMillion => self.cpu_seconds_per_million,
            Metric::MaxStageRssBytes => self.max_stage_rss_bytes,
            Metric::AllocationsPerEvent => self.allocations_per_event,
            Metric::DeliveredFraction => self.delivered_fraction,
            Metric::InstructionsPerEvent | Metric::KernelEps | Metric::TimePerIteration => f64::NAN,
        }
    }
}

impl From<&RunSummary> for RunFigures {
    /// Every run metric from the run's totals, by the catalogue's formulas (0 when undefined:
    /// no event emitted).
    fn from(s: &RunSummary) -> Self {
        let totals = s.totals();
        let value_of = |m: Metric, t: &Totals| m.value(t).unwrap_or(0.0);
        let value = |m: Metric| value_of(m, &totals);
        // A stage's share: its own CPU over the same events, by the same formula.
        let per_million = |cpu_seconds: f64| {
            value_of(
                Metric::CpuSecondsPerMillion,
                &Totals {
                    cpu_seconds,
                    ..totals
                },
            )
        };
        RunFigures {
            throughput_eps: value(Metric::ThroughputEps),
            latency_p50_seconds: value(Metric::LatencyP50Seconds),
            latency_p99_seconds: value(Metric::LatencyP99Seconds),
            cpu_seconds_per_million: value(Metric::CpuSecondsPerMillion),
            max_stage_rss_bytes: value(Metric::MaxStageRssBytes),
            allocations_per_event: value(Metric::AllocationsPerEvent),
            allocations_counted: s.stages.iter().all(|st| st.allocations_counted),
            delivered_fraction: value(Metric::DeliveredFraction),
            stage_cpu_seconds_per_million: s
                .stages
                .iter()
                .map(|st| (st.name.clone(), per_million(st.cpu_seconds)))
                .collect(),
            conserved: s.conserved,
            report_dir: s.report_dir.clone(),
        }
    }
}

/// One side of the comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SideRuns {
    pub label: String,
    /// The knob assignments that define this side, on top of the shared workload.
    pub assignments: Vec<String>,
    pub runs: Vec<RunFigures>,
}

impl SideRuns {
    /// The side's samples, in the format `observatory bench compare` reads.
    pub fn samples(&self) -> SampleSet {
        let mut set = SampleSet::new(&self.label);
        for m in Metric::of_a_run() {
            if not_measured(m, &self.runs).is_some() {
                continue;
            }
            set.metrics.insert(
                m.to_string(),
                Series {
                    unit: m.unit().into(),
                    better: m.better(),
                    samples: self.runs.iter().map(|r| r.metric(m)).collect(),
                },
            );
        }
        set
    }
}

/// Why a metric was not measured in these runs, if it was not.
pub fn not_measured(metric: Metric, runs: &[RunFigures]) -> Option<&'static str> {
    (metric == Metric::AllocationsPerEvent && runs.iter().any(|r| !r.allocations_counted))
        .then_some("allocation counting is off (telemetry=false) in some stage")
}

/// The whole result, `ab.json` in the report folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbResult {
    pub ab_version: u32,
    /// `ab`, or `aa` (the same configuration both sides: the noise floor).
    pub mode: String,
    /// The shared workload (plan file text).
    pub workload: String,
    pub pairs: usize,
    pub warmup_pairs: usize,
    pub machine: Machine,
    pub a: SideRuns,
    pub b: SideRuns,
    pub comparisons: Vec<Comparison>,
    /// Metrics left out of the comparison, with the reason (e.g. not measured on one side).
    #[serde(default)]
    pub not_compared: BTreeMap<String, String>,
    /// Every measured run conserved its events.
    pub conserved: bool,
    /// The stage the diff flamegraph looks at: the only stage whose knobs differ, else the one
    /// whose CPU per event changed most.
    pub changed_stage: Option<String>,
    /// Files of the report, relative to its folder.
    pub files: BTreeMap<String, String>,
}

impl AbResult {
    pub fn comparison(&self, metric: &str) -> Option<&Comparison> {
        self.comparisons.iter().find(|c| c.metric == metric)
    }
}

/// Where the measurement was taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    pub hostname: String,
}

impl Machine {
    pub fn here() -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Machine {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            kernel: read("/proc/sys/kernel/osrelease"),
            hostname: read("/proc/sys/kernel/hostname"),
        }
    }
}

/// What to compare.
pub struct AbConfig {
    /// The shared workload (knobs both sides start from).
    pub base: Plan,
    /// (label, knob assignments) of each side.
    pub a: (String, Vec<String>),
    pub b: (String, Vec<String>),
    pub pairs: usize,
    pub warmup_pairs: usize,
    /// Where runs start from: binary, report folder (the A/B report goes there, each run in
    /// `runs/`), live display off.
    pub run: RunConfig,
    /// Seconds of CPU profile per stage in one extra run per side (0: no profiles, no diff
    /// flamegraph).
    pub profile_seconds: u64,
    pub stats: Options,
}

impl AbConfig {
    fn plan(&self, side: &(String, Vec<String>)) -> anyhow::Result<Plan> {
        let mut plan = self.base.clone();
        for s in &side.1 {
            plan.assign(s)?;
        }
        plan.labels.insert("side".into(), side.0.clone());
        Ok(plan)
    }
}

/// One run of one side.
async fn one_run(
    plan: &Plan,
    cfg: &RunConfig,
    dir: PathBuf,
    profile_seconds: u64,
) -> anyhow::Result<RunSummary> {
    let mut run = cfg.clone();
    run.report_dir = dir;
    run.profile_seconds = profile_seconds;
    run.live = false;
    run.stack = false;
    let (_tx, rx) = mpsc::unbounded_channel();
    let summary = run_local(plan, &run, rx).await?;
    if let Some(f) = summary.failures.first() {
        anyhow::bail!(
            "a run of the comparison failed: the {} stage {}{}; see {}",
            f.stage,
            f.how,
            f.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default(),
            summary.report_dir
        );
    }
    Ok(summary)
}

/// Run the comparison and write its report. `progress(n, total, what)` is told about each run.
pub async fn run_ab(
    cfg: &AbConfig,
    progress: impl FnMut(usize, usize, &str),
) -> anyhow::Result<AbResult> {
    let mut results = run_ab_also(cfg, &[], progress).await?;
    Ok(results.remove(0))
}

/// A further B side for [`run_ab_also`]: its (label, knob assignments), and the folder its
/// comparison with A is written to.
pub struct AlsoSide {
    pub side: (String, Vec<String>),
    pub report_dir: PathBuf,
}

/// [`run_ab`] with more B sides, each compared with the same A runs: every round runs A, B,
/// then each side of `also`, in that order (so every B side keeps its pairs with A, as in a
/// comparison of its own). The labs' authoring check measures the baseline again and the
/// reference so: three runs a round instead of four. One result per B side, `cfg.b`'s first
/// (written to `cfg.run.report_dir`, where every run's folder is), then `also`'s in order.
pub async fn run_ab_also(
    cfg: &AbConfig,
    also: &[AlsoSide],
    mut progress: impl FnMut(usize, usize, &str),
) -> anyhow::Result<Vec<AbResult>> {
    let mut sides = vec![&cfg.a, &cfg.b];
    sides.extend(also.iter().map(|x| &x.side));
    let plans = sides
        .iter()
        .map(|s| cfg.plan(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let labels: Vec<&str> = sides.iter().map(|s| s.0.as_str()).collect();
    let profiled = usize::from(cfg.profile_seconds > 0) * sides.len();
    let total = sides.len() * (cfg.pairs + cfg.warmup_pairs) + profiled;
    let runs_dir = cfg.run.report_dir.join("runs");
    let mut figures: Vec<Vec<RunFigures>> = vec![Vec::new(); sides.len()];
    let mut n = 0;
    for pair in 0..cfg.pairs + cfg.warmup_pairs {
        let warmup = pair < cfg.warmup_pairs;
        for side in 0..sides.len() {
            n += 1;
            let what = format!("{}{}", labels[side], if warmup { " (warm-up)" } else { "" });
            progress(n, total, &what);
            let dir = runs_dir.join(format!("{n:03}-{}", labels[side]));
            let summary = one_run(&plans[side], &cfg.run, dir, 0).await?;
            if !summary.conserved {
                anyhow::bail!(
                    "run {n} ({}) lost events; see {}",
                    labels[side],
                    summary.report_dir
                );
            }
            if !warmup {
                figures[side].push(RunFigures::from(&summary));
            }
        }
    }
    let mut profiles: Vec<Option<PathBuf>> = vec![None; sides.len()];
    if profiled > 0 {
        for side in 0..sides.len() {
            n += 1;
            progress(n, total, &format!("{} (profiled)", labels[side]));
            let dir = runs_dir.join(format!("profile-{}", labels[side]));
            let plan = profiled_plan(&plans[side], cfg.profile_seconds)?;
            one_run(&plan, &cfg.run, dir.clone(), cfg.profile_seconds).await?;
            profiles[side] = Some(dir);
        }
    }
    let report_dirs =
        std::iter::once(&cfg.run.report_dir).chain(also.iter().map(|x| &x.report_dir));
    let mut results = Vec::new();
    for (k, dir) in (1..sides.len()).zip(report_dirs) {
        let mut result = compare(
            cfg,
            [sides[0], sides[k]],
            [&plans[0], &plans[k]],
            [figures[0].clone(), figures[k].clone()],
        );
        crate::report::write(
            dir,
            &mut result,
            [profiles[0].as_deref(), profiles[k].as_deref()],
        )?;
        results.push(result);
    }
    Ok(results)
}

/// The comparison of side A with one B side, from their runs' figures.
fn compare(
    cfg: &AbConfig,
    [a, b]: [&(String, Vec<String>); 2],
    plans: [&Plan; 2],
    [fa, fb]: [Vec<RunFigures>; 2],
) -> AbResult {
    let mut not_compared = BTreeMap::new();
    let mut comparisons = Vec::new();
    for m in Metric::of_a_run() {
        let name = m.as_str();
        for (side, runs) in [("A", &fa), ("B", &fb)] {
            if let Some(why) = not_measured(m, runs) {
                not_compared.insert(name.to_string(), format!("side {side}: {why}"));
            }
        }
        if !not_compared.contains_key(name) {
            let a: Vec<f64> = fa.iter().map(|r| r.metric(m)).collect();
            let b: Vec<f64> = fb.iter().map(|r| r.metric(m)).collect();
            comparisons.push(m.compare(&a, &b, &cfg.stats));
        }
    }
    let conserved = fa.iter().chain(&fb).all(|r| r.conserved);
    let changed_stage = configured_stage(plans[0], plans[1]).or_else(|| changed_stage(&fa, &fb));
    AbResult {
        ab_version: AB_VERSION,
        mode: if a.1 == b.1 { "aa" } else { "ab" }.into(),
        workload: cfg.base.to_toml(),
        pairs: cfg.pairs,
        warmup_pairs: cfg.warmup_pairs,
        machine: Machine::here(),
        a: SideRuns {
            label: a.0.clone(),
            assignments: a.1.clone(),
            runs: fa,
        },
        b: SideRuns {
            label: b.0.clone(),
            assignments: b.1.clone(),
            runs: fb,
        },
        comparisons,
        not_compared,
        conserved,
        changed_stage,
        files: BTreeMap::new(),
    }
}

/// The plan of a side's profiled run: bounded by time, twice the profile's length, so the
/// profile (taken from a quarter of the run on) lies inside the stream. A short measured run
/// (400,000 events at 400,000/s: 1 s) would otherwise end under a 2 s profile, which then
/// caught 0-5 samples of the stage it was for.
fn profiled_plan(plan: &Plan, profile_seconds: u64) -> anyhow::Result<Plan> {
    let mut p = plan.clone();
    p.set("source", "events", "0")?;
    p.set(
        "source",
        "duration_seconds",
        &(2 * profile_seconds.max(1)).to_string(),
    )?;
    Ok(p)
}

/// The one stage whose knobs differ between the sides, when exactly one does (`parse.mode`
/// owned vs borrowed: parse, whatever the noise in the other stages' CPU says).
fn configured_stage(a: &Plan, b: &Plan) -> Option<String> {
    let roles = a.stages().iter().chain(b.stages()).map(|s| s.role());
    let differing: std::collections::BTreeSet<String> = roles
        .filter(|&r| a.stage(r) != b.stage(r))
        .map(|r| r.to_string())
        .collect();
    match differing.len() {
        1 => differing.into_iter().next(),
        _ => None,
    }
}

/// Otherwise, the stage whose median CPU per event moved most between the sides, in CPU
/// seconds; not relatively: a stage that barely runs (a sink at 0.03 s per million events)
/// swings by tens of percent from timer wake-ups alone and would win on noise.
fn changed_stage(a: &[RunFigures], b: &[RunFigures]) -> Option<String> {
    let stages: Vec<String> = a
        .first()?
        .stage_cpu_seconds_per_million
        .keys()
        .cloned()
        .collect();
    let median = |runs: &[RunFigures], stage: &str| {
        crate::stats::median(
            &runs
                .iter()
                .filter_map(|r| r.stage_cpu_seconds_per_million.get(stage).copied())
                .collect::<Vec<_>>(),
        )
    };
    stages
        .into_iter()
        .map(|s| {
            let (ma, mb) = (median(a, &s), median(b, &s));
            (s, (mb - ma).abs())
        })
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .map(|(s, _)| s)
}

/// Where an A/B result goes.
pub fn result_path(report_dir: &Path) -> PathBuf {
    report_dir.join("ab.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(allocations: f64, counted: bool) -> RunFigures {
        RunFigures {
            throughput_eps: 1e6,
            latency_p50_seconds: 0.02,
            latency_p99_seconds: 0.03,
            cpu_seconds_per_million: 0.9,
            max_stage_rss_bytes: 2e7,
            allocations_per_event: allocations,
            allocations_counted: counted,
            delivered_fraction: 1.0,
            stage_cpu_seconds_per_million: BTreeMap::new(),
            conserved: true,
            report_dir: String::new(),
        }
    }

    /// Three sides in one set of rounds, with real pipelines: each B side is paired with the
    /// same A runs and gets its own runs and report. Wrong pairings fail it: the reference
    /// side given B's runs (or A's) would show no change in allocations, B given C's would
    /// show one, and a round out of order would name its runs otherwise.
    #[tokio::test(flavor = "multi_thread")]
    async fn further_b_sides_share_the_rounds_and_the_a_runs() {
        let Ok(bin) = observatory_runner::local::find_pipeline_bin() else {
            panic!("no pipeline binary: `make build` first");
        };
        let dir = tempfile::tempdir().unwrap();
        let mut base = Plan::new("also");
        base.assign("source.events=100000").unwrap();
        let side =
            |label: &str, mode: &str| (label.to_string(), vec![format!("parse.mode={mode}")]);
        let cfg = AbConfig {
            base,
            a: side("owned", "owned"),
            b: side("owned-again", "owned"),
            pairs: 2,
            warmup_pairs: 0,
            run: RunConfig::quiet(bin, dir.path().join("ab")),
            profile_seconds: 0,
            stats: Default::default(),
        };
        let also = [AlsoSide {
            side: side("borrowed", "borrowed"),
            report_dir: dir.path().join("also"),
        }];
        let mut seen = Vec::new();
        let results = run_ab_also(&cfg, &also, |n, total, what| {
            seen.push(format!("{n}/{total} {what}"))
        })
        .await
        .unwrap();
        assert_eq!(
            seen,
            [
                "1/6 owned",
                "2/6 owned-again",
                "3/6 borrowed",
                "4/6 owned",
                "5/6 owned-again",
                "6/6 borrowed"
            ]
        );
        assert_eq!(results.len(), 2);
        let (again, borrowed) = (&results[0], &results[1]);
        assert_eq!(
            (again.mode.as_str(), again.b.label.as_str()),
            ("aa", "owned-again")
        );
        assert_eq!(
            (borrowed.mode.as_str(), borrowed.b.label.as_str()),
            ("ab", "borrowed")
        );
        assert_eq!(again.a, borrowed.a, "both compared with the same A runs");
        let run_dirs = |side: &SideRuns| -> Vec<String> {
            side.runs
                .iter()
                .map(|r| {
                    r.report_dir
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(run_dirs(&again.a), ["001-owned", "004-owned"]);
        assert_eq!(run_dirs(&again.b), ["002-owned-again", "005-owned-again"]);
        assert_eq!(run_dirs(&borrowed.b), ["003-borrowed", "006-borrowed"]);
        // Borrowed parsing does not allocate per event, owned parsing does.
        let allocations = |r: &AbResult| {
            r.comparisons
                .iter()
                .find(|c| c.metric == "allocations_per_event")
                .map(|c| c.ratio.ratio)
                .unwrap()
        };
        assert!(allocations(borrowed) < 0.5, "{:?}", borrowed.comparisons);
        assert!(
            (allocations(again) - 1.0).abs() < 0.1,
            "{:?}",
            again.comparisons
        );
        assert!(result_path(&dir.path().join("ab")).is_file());
        assert!(result_path(&dir.path().join("also")).is_file());
    }

    #[test]
    fn allocations_are_not_compared_where_they_were_not_counted() {
        // Telemetry off stops allocation counting: its 0 must not read as "fewer allocations".
        let off = SideRuns {
            label: "off".into(),
            assignments: vec!["all.telemetry=false".into()],
            runs: vec![run(0.004, false), run(0.004, false)],
        };
        assert!(not_measured(Metric::AllocationsPerEvent, &off.runs).is_some());
        assert!(not_measured(Metric::ThroughputEps, &off.runs).is_none());
        let samples = off.samples();
        assert!(!samples.metrics.contains_key("allocations_per_event"));
        assert!(samples.metrics.contains_key("throughput_eps"));
        let on = SideRuns {
            label: "on".into(),
            assignments: vec![],
            runs: vec![run(6.04, true)],
        };
        assert!(not_measured(Metric::AllocationsPerEvent, &on.runs).is_none());
        assert_eq!(on.samples().metrics.len(), Metric::of_a_run().count());
    }

    #[test]
    fn the_changed_stage_is_where_the_most_cpu_moved_not_the_noisiest_small_stage() {
        let with = |parse: f64, sink: f64| {
            let mut r = run(6.04, true);
            r.stage_cpu_seconds_per_million =
                BTreeMap::from([("parse".into(), parse), ("sink".into(), sink)]);
            r
        };
        // Parse gets 10% cheaper (0.06 s per million events); the sink, which barely runs,
        // swings by 40% of almost nothing (0.004 s).
        let a = [with(0.60, 0.010), with(0.61, 0.011), with(0.59, 0.009)];
        let b = [with(0.54, 0.006), with(0.55, 0.006), with(0.53, 0.007)];
        assert_eq!(changed_stage(&a, &b).as_deref(), Some("parse"));
        assert_eq!(changed_stage(&[], &b), None);
    }

    #[test]
    fn a_profiled_run_lasts_twice_the_profile() {
        let mut plan = Plan::new("t");
        plan.assign("source.events=400000").unwrap();
        plan.assign("source.rate=400000").unwrap();
        let p = profiled_plan(&plan, 2).unwrap();
        let Some(pipeline_plan::StageKnobs::Source(s)) = p.knobs(pipeline_plan::Role::Source)
        else {
            panic!("no source");
        };
        assert_eq!((s.events, s.duration_seconds, s.rate), (0, 4.0, 400_000));
    }

    #[test]
    fn the_stage_whose_knobs_differ_is_the_changed_one() {
        let base = Plan::new("t");
        let with = |assignments: &[&str]| {
            let mut p = base.clone();
            for a in assignments {
                p.assign(a).unwrap();
            }
            p
        };
        let owned = with(&["parse.mode=owned"]);
        let borrowed = with(&["parse.mode=borrowed"]);
        assert_eq!(
            configured_stage(&owned, &borrowed).as_deref(),
            Some("parse")
        );
        // Labels are not knobs; the same knobs on both sides (A/A) name no stage.
        let mut labelled = owned.clone();
        labelled.labels.insert("side".into(), "B".into());
        assert_eq!(configured_stage(&owned, &labelled), None);
        // A change on every stage names no single one.
        let all = with(&["all.telemetry=false"]);
        assert_eq!(configured_stage(&base, &all), None);
    }
}
