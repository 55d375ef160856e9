//! `observatory lab check`: the lab's baseline against a variant (the student's change, the
//! reference solution, or the baseline itself for the authoring check), measured the way the
//! lab says, and a pass only when the effect's interval clears the lab's minimum and no event
//! was lost.

use crate::spec::{Lab, Mode};
use anyhow::{Context, bail};
use observatory_bench::ab::{AbConfig, run_ab};
use observatory_bench::callgrind::{self, InstructionConfig};
use observatory_bench::stats::{Better, Metric, RatioInterval, Threshold};
use observatory_runner::run::{RunConfig, run_local};
use pipeline_plan::{Role, StageKnobs};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What runs against the baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The student's change: the answer file's knobs (knob labs) or the STUDENT function of
    /// the slot (code labs).
    Student(Vec<String>),
    /// The reference solution.
    Reference,
    /// The baseline itself (the authoring check: it must not pass).
    Baseline,
}

impl Variant {
    pub fn label(&self) -> &'static str {
        match self {
            Variant::Student(_) => "student",
            Variant::Reference => "reference",
            Variant::Baseline => "baseline-again",
        }
    }

    /// The variant side's knob assignments.
    pub fn assignments(&self, lab: &Lab) -> Vec<String> {
        match self {
            Variant::Student(answer) if lab.is_code_lab() => {
                let mut v = lab.code_side("student");
                v.extend(answer.iter().cloned());
                v
            }
            Variant::Student(answer) => answer.clone(),
            Variant::Reference => lab.reference_side(),
            Variant::Baseline => lab.baseline_side(),
        }
    }
}

/// Where and how to check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub pipeline_bin: PathBuf,
    pub report_dir: PathBuf,
    /// The repository root (for `cargo bench` in criterion labs).
    pub root: PathBuf,
    /// Seconds of CPU profile per stage for the report's flamegraphs (wall mode; 0: none).
    pub profile_seconds: u64,
}

/// The outcome of a check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub lab: u32,
    pub variant: String,
    pub metric: String,
    pub better: Better,
    pub min_effect: f64,
    /// B/A and its interval (absent for `completes`).
    pub ratio: Option<RatioInterval>,
    pub baseline_value: Option<f64>,
    pub variant_value: Option<f64>,
    /// Every run conserved its events (true where nothing flows, as in kernels).
    pub conserved: bool,
    pub passed: bool,
    /// One line for people.
    pub verdict: String,
    pub report_dir: String,
}

/// Does `r` clear the minimum effect in the right direction? (The catalogue's pass rule,
/// [`Threshold::clears`].)
pub fn clears(r: &RatioInterval, better: Better, min_effect: f64) -> bool {
    Threshold::new(better, min_effect).clears(r)
}

/// Run the check. `progress(done, total, what)` reports each step.
pub async fn check(
    lab: &Lab,
    variant: &Variant,
    opts: &CheckOptions,
    mut progress: impl FnMut(usize, usize, &str),
) -> anyhow::Result<Outcome> {
    let m = &lab.spec.measure;
    std::fs::create_dir_all(&opts.report_dir)
        .with_context(|| format!("creating {}", opts.report_dir.display()))?;
    let base = lab.base_plan()?;
    let a = ("baseline".to_string(), lab.baseline_side());
    let b = (variant.label().to_string(), variant.assignments(lab));
    let mut outcome = Outcome {
        lab: lab.number(),
        variant: variant.label().into(),
        metric: m.metric.clone(),
        better: m.better(),
        min_effect: m.min_effect,
        ratio: None,
        baseline_value: None,
        variant_value: None,
        conserved: true,
        passed: false,
        verdict: String::new(),
        report_dir: opts.report_dir.display().to_string(),
    };
    // B/A with its interval, and the baseline's and the variant's value.
    let measured: Option<(RatioInterval, f64, f64)> = match m.mode {
        Mode::Wall => {
            let cfg = AbConfig {
                base,
                a,
                b,
                pairs: m.pairs,
                warmup_pairs: 0,
                run: run_config(opts),
                profile_seconds: opts.profile_seconds,
                stats: Default::default(),
            };
            let r = run_ab(&cfg, &mut progress).await?;
            outcome.conserved = r.conserved;
            let c = r
                .comparison(&m.metric)
                .with_context(|| format!("the A/B run did not compare {}", m.metric))?;
            Some((c.ratio, c.a_median, c.b_median))
        }
        Mode::Instructions => {
            let stage: Role = m.stage.as_deref().unwrap_or("parse").parse()?;
            let events = source_events(&base).unwrap_or(20_000);
            let cfg = InstructionConfig {
                pipeline_bin: opts.pipeline_bin.clone(),
                dir: opts.report_dir.clone(),
                base: &base,
                stage,
                a,
                b,
                events,
                repeats: 2,
            };
            let r = callgrind::run(&cfg, &mut progress)?;
            Some((
                r.ratio,
                r.a.instructions_per_event,
                r.b.instructions_per_event,
            ))
        }
        Mode::Kernel => Some(kernel_ab(lab, &base, &a.1, &b.1, opts, &mut progress)?),
        Mode::Completes => {
            let mut plan = base.clone();
            for s in &b.1 {
                plan.assign(s)?;
            }
            progress(1, 1, &format!("one run, at most {} s", m.timeout_seconds));
            let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let run_cfg = run_config(opts);
            let limit = Duration::from_secs(m.timeout_seconds);
            match tokio::time::timeout(limit, run_local(&plan, &run_cfg, rx)).await {
                Ok(summary) => {
                    let s = summary?;
                    outcome.conserved = s.conserved;
                    outcome.passed = s.conserved;
                    outcome.verdict = format!(
                        "finished in {:.1} s; {} of {} events accounted for{}",
                        s.duration_seconds,
                        s.events_persisted + s.dead_lettered + s.discarded,
                        s.events_emitted,
                        match (&s.conserved, &s.not_conserved_because) {
                            (true, _) => String::new(),
                            (false, Some(why)) => format!(" — {why}"),
                            (false, None) => " — events were lost".to_string(),
                        }
                    );
                }
                Err(_) => {
                    // Dropping the run killed its processes.
                    outcome.conserved = false;
                    outcome.verdict = format!(
                        "did not finish within {} s: the pipeline is stuck (the stage processes were stopped)",
                        m.timeout_seconds
                    );
                }
            }
            None
        }
        Mode::Criterion => Some(criterion_ab(variant, opts, &mut progress)?),
    };
    if let Some((r, a_value, b_value)) = measured {
        outcome.ratio = Some(r);
        outcome.baseline_value = Some(a_value);
        outcome.variant_value = Some(b_value);
        let lost = if outcome.conserved { 0.0 } else { 1.0 };
        let judged = m.threshold().judge(&r, lost);
        outcome.passed = judged.passed;
        outcome.verdict = format!(
            "{}: B/A = {:.3} [{:.3} .. {:.3}] (needs {}){}",
            m.metric,
            r.ratio,
            r.low,
            r.high,
            judged.required,
            if outcome.conserved {
                ""
            } else {
                "; events were lost"
            }
        );
    }
    std::fs::write(
        opts.report_dir.join("lab-check.json"),
        serde_json::to_string_pretty(&outcome)? + "\n",
    )?;
    Ok(outcome)
}

fn run_config(opts: &CheckOptions) -> RunConfig {
    RunConfig {
        restart: observatory_runner::run::Restart::Never,
        ..RunConfig::quiet(opts.pipeline_bin.clone(), opts.report_dir.clone())
    }
}

fn source_events(plan: &pipeline_plan::Plan) -> Option<u64> {
    match plan.knobs(Role::Source) {
        Some(StageKnobs::Source(s)) if s.events > 0 => Some(s.events),
        _ => None,
    }
}

/// Kernel mode: `pipeline kernel` of one stage, both sides interleaved `pairs` times, events/s
/// compared with the bootstrap.
fn kernel_ab(
    lab: &Lab,
    base: &pipeline_plan::Plan,
    a: &[String],
    b: &[String],
    opts: &CheckOptions,
    progress: &mut impl FnMut(usize, usize, &str),
) -> anyhow::Result<(RatioInterval, f64, f64)> {
    let m = &lab.spec.measure;
    let stage: Role = m.stage.as_deref().unwrap_or("aggregate").parse()?;
    let Some(StageKnobs::Source(source)) = base.knobs(Role::Source) else {
        bail!("the workload has no source");
    };
    let events = source_events(base).unwrap_or(200_000);
    let input = opts.report_dir.join("input.jsonl");
    callgrind::write_input(source, events, &input)?;
    let sides = [
        callgrind::side_knobs(base, stage, a)?,
        callgrind::side_knobs(base, stage, b)?,
    ];
    let mut samples = [Vec::new(), Vec::new()];
    let total = 2 * m.pairs;
    for p in 0..m.pairs {
        for side in 0..2 {
            progress(
                2 * p + side + 1,
                total,
                if side == 0 { "baseline" } else { "variant" },
            );
            let mut cmd = Command::new(&opts.pipeline_bin);
            cmd.args(["kernel", stage.as_str(), "--input"])
                .arg(&input)
                .args(["--threads", &m.threads.to_string()])
                .args(["--rounds", &m.rounds.to_string()]);
            for (k, v) in sides[side].to_text() {
                cmd.arg("--set").arg(format!("{k}={v}"));
            }
            let out = cmd.output().context("running pipeline kernel")?;
            if !out.status.success() {
                bail!(
                    "pipeline kernel failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            #[derive(Deserialize)]
            struct K {
                events: u64,
                elapsed_ns: u64,
            }
            let k: K =
                serde_json::from_slice(&out.stdout).context("reading the kernel's output")?;
            samples[side].push(k.events as f64 / (k.elapsed_ns.max(1) as f64 / 1e9));
        }
    }
    let c = Metric::KernelEps.compare(&samples[0], &samples[1], &Default::default());
    std::fs::write(
        opts.report_dir.join("kernel.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "baseline_eps": samples[0], "variant_eps": samples[1], "comparison": c,
        }))?,
    )?;
    Ok((c.ratio, c.a_median, c.b_median))
}

/// Criterion mode (lab 12): run the benchmark, read criterion's raw samples of `lab12/baseline`
/// and the variant's id, and compare time per iteration with the bootstrap.
fn criterion_ab(
    variant: &Variant,
    opts: &CheckOptions,
    progress: &mut impl FnMut(usize, usize, &str),
) -> anyhow::Result<(RatioInterval, f64, f64)> {
    let (bench, id) = match variant {
        Variant::Student(_) => ("lab12_student", "student"),
        Variant::Reference => ("lab12_reference", "reference"),
        Variant::Baseline => ("lab12_reference", "baseline_again"),
    };
    progress(
        1,
        1,
        &format!("cargo bench --bench {bench} (builds it first)"),
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| opts.root.join("target"));
    let group = target.join("criterion").join("lab12");
    let _ = std::fs::remove_dir_all(&group);
    let out = Command::new("cargo")
        .current_dir(&opts.root)
        .args([
            "bench",
            "-q",
            "-p",
            "observatory-course",
            "--bench",
            bench,
            "--",
        ])
        .args([
            "--noplot",
            "--warm-up-time",
            "1",
            "--measurement-time",
            "3",
            "lab12/",
        ])
        .output()
        .context("running cargo bench")?;
    std::fs::write(opts.report_dir.join("criterion.txt"), &out.stdout)?;
    if !out.status.success() {
        bail!(
            "cargo bench --bench {bench} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let a = samples(&group.join("baseline"))?;
    let b = samples(&group.join(id)).with_context(|| {
        format!("the benchmark must measure `lab12/{id}` next to `lab12/baseline`")
    })?;
    let c = Metric::TimePerIteration.compare(&a, &b, &Default::default());
    Ok((c.ratio, c.a_median, c.b_median))
}

/// Seconds per iteration of each criterion sample (`new/sample.json`).
fn samples(dir: &Path) -> anyhow::Result<Vec<f64>> {
    #[derive(Deserialize)]
    struct Sample {
        iters: Vec<f64>,
        times: Vec<f64>,
    }
    let path = dir.join("new").join("sample.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let s: Sample = serde_json::from_str(&text)?;
    Ok(s.iters
        .iter()
        .zip(&s.times)
        .filter(|(i, _)| **i > 0.0)
        .map(|(i, t)| t / i / 1e9)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_effect_passes_only_when_its_whole_interval_clears_the_minimum() {
        let r = |ratio, low, high| RatioInterval { ratio, low, high };
        assert!(clears(&r(1.6, 1.55, 1.7), Better::Higher, 0.5));
        assert!(!clears(&r(1.6, 1.45, 1.7), Better::Higher, 0.5));
        assert!(!clears(&r(0.6, 0.55, 0.7), Better::Higher, 0.0));
        assert!(clears(&r(0.6, 0.55, 0.7), Better::Lower, 0.25));
        assert!(!clears(&r(0.8, 0.7, 0.9), Better::Lower, 0.25));
    }
}
