//! `observatory lab check`: the lab's baseline against a variant (the student's change, the
//! reference solution, or the baseline itself for the authoring check), measured the way the
//! lab says, and a pass only when the effect's interval clears the lab's minimum and no event
//! was lost.

use crate::spec::{Lab, Mode};
use anyhow::{Context, bail};
use observatory_bench::ab::{AbConfig, AlsoSide, run_ab, run_ab_also};
use observatory_bench::callgrind::{self, InstructionConfig};
use observatory_bench::stats::{Better, Figures, Metric, RatioInterval, Threshold};
use observatory_runner::run::{RunConfig, run_local};
use observatory_runner::sandbox::{Kind, confine};
use pipeline_plan::lab::Conformance;
use pipeline_plan::{LabImpl, Role, StageKnobs};
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
    /// A code lab's mutant N (from 1; the authoring check: it must fail on correctness). Only
    /// its correctness is checked, in a pipeline built with the `lab-mutants` feature: a
    /// mutant that meets the slot's specification is not measured.
    Mutant(u8),
}

impl Variant {
    pub fn label(&self) -> String {
        match self {
            Variant::Student(_) => "student".into(),
            Variant::Reference => "reference".into(),
            Variant::Baseline => "baseline-again".into(),
            Variant::Mutant(n) => format!("mutant-{n}"),
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
            Variant::Baseline | Variant::Mutant(_) => lab.baseline_side(),
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
    /// Replace the workload's seed on both sides (a cohort's hidden workload: the
    /// instructor's verification of a leaderboard submission). `None`: the lab's own seed.
    pub workload_seed: Option<u64>,
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
    /// Code labs: the code under test met its slot's specification on the lab's seed and a
    /// hidden one (`None` where nothing was checked: knob labs, the baseline). Nothing is
    /// measured when it did not.
    #[serde(default)]
    pub correct: Option<bool>,
    #[serde(default)]
    pub conformance: Vec<Conformance>,
    /// Which way the change went and by how much ([`Threshold::direction`]).
    #[serde(default)]
    pub direction: Option<String>,
    /// Every run's figures, from which `ratio` is computed ([`Figures::ratio`]): what a
    /// leaderboard submission carries, so that the server can recompute it.
    #[serde(default)]
    pub figures: Option<Figures>,
    /// The student's change that was checked ([`Lab::change_sha256`]; `None` for the
    /// reference and the baseline).
    #[serde(default)]
    pub change_sha256: Option<String>,
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

/// A check up to its measurement: the outcome so far and, unless it ended there (a wrong
/// result is not measured), the workload and the two sides to measure.
struct Prepared {
    outcome: Outcome,
    measure: Option<ToMeasure>,
}

/// The workload and the two sides of a comparison.
struct ToMeasure {
    base: pipeline_plan::Plan,
    a: Side,
    b: Side,
}

/// A side of a comparison: its label and knob assignments.
type Side = (String, Vec<String>);

/// A side's B/A with its interval, the baseline's and the variant's value, and the figures.
type Measured = (RatioInterval, f64, f64, Figures);

/// Run the check. `progress(done, total, what)` reports each step.
pub async fn check(
    lab: &Lab,
    variant: &Variant,
    opts: &CheckOptions,
    mut progress: impl FnMut(usize, usize, &str),
) -> anyhow::Result<Outcome> {
    let Prepared {
        mut outcome,
        measure,
    } = prepare(lab, variant, opts, &mut progress)?;
    let Some(sides) = measure else {
        return Ok(outcome);
    };
    let (measured, changes) =
        measure_one(lab, variant, &mut outcome, sides, opts, &mut progress).await?;
    finish(lab, outcome, measured, &changes, opts)
}

/// Several variants against one baseline: the labs' authoring check (the baseline again and
/// the reference). In wall mode their runs share the rounds and the baseline's runs
/// ([`run_ab_also`]: 3 runs a round instead of 2 x 2, each variant still paired with a baseline
/// run in every round); in the other modes each variant is checked in turn, as [`check`] does.
/// Each variant has its own options (its report folder); the shared runs go to the first's,
/// so the workload seed, the profile and the binary must agree.
pub async fn check_together(
    lab: &Lab,
    variants: &[(Variant, CheckOptions)],
    mut progress: impl FnMut(usize, usize, &str),
) -> anyhow::Result<Vec<Outcome>> {
    let m = &lab.spec.measure;
    if m.mode != Mode::Wall || variants.len() < 2 {
        let mut outcomes = Vec::new();
        for (variant, opts) in variants {
            outcomes.push(check(lab, variant, opts, &mut progress).await?);
        }
        return Ok(outcomes);
    }
    let first = &variants[0].1;
    if variants.iter().any(|(_, o)| {
        (o.workload_seed, o.profile_seconds, &o.pipeline_bin)
            != (
                first.workload_seed,
                first.profile_seconds,
                &first.pipeline_bin,
            )
    }) {
        bail!("variants checked together must share the workload seed, the profile and the binary");
    }
    let mut outcomes = Vec::new();
    // (index in `outcomes`, workload, B side, options) of each variant still to be measured.
    let mut to_measure = Vec::new();
    let mut baseline: Option<Side> = None;
    for (variant, opts) in variants {
        let p = prepare(lab, variant, opts, &mut progress)?;
        if let Some(ToMeasure { base, a, b }) = p.measure {
            baseline = Some(a);
            to_measure.push((outcomes.len(), base, b, opts));
        }
        outcomes.push(p.outcome);
    }
    let (Some(a), Some((_, base, _, opts))) = (baseline, to_measure.first()) else {
        return Ok(outcomes);
    };
    if to_measure
        .iter()
        .any(|(_, other, _, _)| other.to_toml() != base.to_toml())
    {
        bail!("variants checked together must share the workload");
    }
    let cfg = wall_config(
        lab,
        ToMeasure {
            base: base.clone(),
            a,
            b: to_measure[0].2.clone(),
        },
        opts,
    );
    let also: Vec<AlsoSide> = to_measure[1..]
        .iter()
        .map(|(_, _, side, o)| AlsoSide {
            side: side.clone(),
            report_dir: o.report_dir.clone(),
        })
        .collect();
    let results = run_ab_also(&cfg, &also, &mut progress).await?;
    let mut done: Vec<Option<Outcome>> = outcomes.into_iter().map(Some).collect();
    for ((i, _, _, opts), r) in to_measure.iter().zip(results) {
        let mut outcome = done[*i].take().context("an outcome measured twice")?;
        outcome.conserved = r.conserved;
        let measured = wall_measured(&r, &m.metric)?;
        done[*i] = Some(finish(lab, outcome, Some(measured), &[], opts)?);
    }
    Ok(done.into_iter().flatten().collect())
}

/// A check's validation and correctness steps, up to what is measured.
fn prepare(
    lab: &Lab,
    variant: &Variant,
    opts: &CheckOptions,
    mut progress: impl FnMut(usize, usize, &str),
) -> anyhow::Result<Prepared> {
    let m = &lab.spec.measure;
    if let Variant::Student(answer) = variant
        && !lab.is_code_lab()
    {
        lab.check_answer(answer).map_err(anyhow::Error::msg)?;
    }
    if let Variant::Mutant(n) = variant
        && (lab.conformance_slot().is_none() || *n == 0 || usize::from(*n) > lab.spec.mutants.len())
    {
        bail!("lab {} has no mutant {n}", lab.number());
    }
    std::fs::create_dir_all(&opts.report_dir)
        .with_context(|| format!("creating {}", opts.report_dir.display()))?;
    let mut base = lab.base_plan()?;
    if let Some(seed) = opts.workload_seed {
        base.assign(&format!("source.seed={seed}"))?;
    }
    let a = ("baseline".to_string(), lab.baseline_side());
    let b = (variant.label(), variant.assignments(lab));
    let mut outcome = Outcome {
        lab: lab.number(),
        variant: variant.label(),
        metric: m.metric.clone(),
        better: m.better(),
        min_effect: m.min_effect,
        ratio: None,
        baseline_value: None,
        variant_value: None,
        conserved: true,
        correct: None,
        conformance: Vec::new(),
        direction: None,
        figures: None,
        change_sha256: match variant {
            Variant::Student(answer) => Some(
                lab.change_sha256(&opts.root, answer)
                    .context("reading the student's change")?,
            ),
            _ => None,
        },
        passed: false,
        verdict: String::new(),
        report_dir: opts.report_dir.display().to_string(),
    };
    // Correctness before speed: the code under test must meet its slot's specification first.
    if let Some(imp) = conformance_impl(lab, variant) {
        if imp == LabImpl::Student {
            protected_unchanged(lab, &opts.root)?;
        }
        let seeds = [
            ("the lab's", source_seed(&base)),
            ("a hidden", hidden_seed()),
        ];
        for (i, (which, seed)) in seeds.into_iter().enumerate() {
            progress(
                i + 1,
                seeds.len(),
                &format!("correctness: your code against the specification, {which} seed"),
            );
            let slot = lab.conformance_slot().context("not a code lab")?;
            let c = conformance(
                &opts.pipeline_bin,
                &slot,
                &imp.to_string(),
                seed,
                &opts.report_dir,
                CONFORMANCE_LIMIT,
            )?;
            let failed = c.mismatch.clone();
            outcome.conformance.push(c);
            if let Some(mm) = failed {
                outcome.correct = Some(false);
                outcome.verdict = format!(
                    "wrong result, so nothing was measured (correctness before speed): on {which} seed {seed}, case {}: input {}: expected {}, got {}",
                    mm.case, mm.input, mm.expected, mm.got
                );
                write_outcome(&outcome, opts)?;
                return Ok(Prepared {
                    outcome,
                    measure: None,
                });
            }
        }
        outcome.correct = Some(true);
        if let Variant::Mutant(n) = variant {
            outcome.verdict = format!(
                "mutant {n} meets the slot's specification on the lab's seed and a hidden one: the conformance check does not catch this wrong answer"
            );
            write_outcome(&outcome, opts)?;
            return Ok(Prepared {
                outcome,
                measure: None,
            });
        }
    }
    Ok(Prepared {
        outcome,
        measure: Some(ToMeasure { base, a, b }),
    })
}
/// Measure a prepared check's two sides the way its lab says; (B/A and the figures, or `None`
/// where nothing is compared; the functions whose instruction counts changed most).
async fn measure_one(
    lab: &Lab,
    variant: &Variant,
    outcome: &mut Outcome,
    ToMeasure { base, a, b }: ToMeasure,
    opts: &CheckOptions,
    mut progress: impl FnMut(usize, usize, &str),
) -> anyhow::Result<(Option<Measured>, Vec<callgrind::FunctionChange>)> {
    let m = &lab.spec.measure;
    // The functions that changed most (instruction counts).
    let mut changes: Vec<callgrind::FunctionChange> = Vec::new();
    let measured: Option<Measured> = match m.mode {
        Mode::Wall => {
            let cfg = wall_config(lab, ToMeasure { base, a, b }, opts);
            let r = run_ab(&cfg, &mut progress).await?;
            outcome.conserved = r.conserved;
            Some(wall_measured(&r, &m.metric)?)
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
            // Changes under half an instruction per event are rounding, not news.
            changes = r
                .top_changes
                .iter()
                .filter(|c| c.delta().abs() >= 0.5)
                .take(3)
                .cloned()
                .collect();
            Some((
                r.ratio,
                r.a.instructions_per_event,
                r.b.instructions_per_event,
                Figures::Counts {
                    a: r.a.instructions.clone(),
                    b: r.b.instructions.clone(),
                },
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
    Ok((measured, changes))
}

/// A wall-mode lab's A/B: its pairs, no warm-up, runs under `opts` (one definition for a
/// check alone and for variants checked together).
fn wall_config(lab: &Lab, ToMeasure { base, a, b }: ToMeasure, opts: &CheckOptions) -> AbConfig {
    AbConfig {
        base,
        a,
        b,
        pairs: lab.spec.measure.pairs,
        warmup_pairs: 0,
        run: run_config(opts),
        profile_seconds: opts.profile_seconds,
        stats: Default::default(),
    }
}

/// A wall-mode comparison's B/A of the lab's metric, the sides' medians and every run's value.
fn wall_measured(r: &observatory_bench::ab::AbResult, metric: &str) -> anyhow::Result<Measured> {
    let c = r
        .comparison(metric)
        .with_context(|| format!("the A/B run did not compare {metric}"))?;
    let metric = Metric::from_name(metric)
        .with_context(|| format!("no metric {metric} in the catalogue"))?;
    let samples = |side: &observatory_bench::ab::SideRuns| -> Vec<f64> {
        side.runs.iter().map(|run| run.metric(metric)).collect()
    };
    let figures = Figures::Samples {
        a: samples(&r.a),
        b: samples(&r.b),
    };
    Ok((c.ratio, c.a_median, c.b_median, figures))
}

/// Judge what was measured against the lab's threshold, write the outcome, and return it.
fn finish(
    lab: &Lab,
    mut outcome: Outcome,
    measured: Option<Measured>,
    changes: &[callgrind::FunctionChange],
    opts: &CheckOptions,
) -> anyhow::Result<Outcome> {
    let m = &lab.spec.measure;
    if let Some((r, a_value, b_value, figures)) = measured {
        outcome.ratio = Some(r);
        outcome.figures = Some(figures);
        outcome.baseline_value = Some(a_value);
        outcome.variant_value = Some(b_value);
        let lost = if outcome.conserved { 0.0 } else { 1.0 };
        let judged = m.threshold().judge(&r, lost);
        let direction = m.threshold().direction(&r);
        outcome.passed = judged.passed;
        outcome.verdict = format!(
            "{}: B/A = {:.3} [{:.3} .. {:.3}] (needs {}): {direction}{}",
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
        outcome.direction = Some(direction);
        if !changes.is_empty() {
            let list: Vec<String> = changes
                .iter()
                .map(|c| {
                    format!(
                        "{} {:.0} → {:.0}",
                        short_name(&c.function),
                        c.a_per_event,
                        c.b_per_event
                    )
                })
                .collect();
            outcome.verdict.push_str(&format!(
                "; most changed (own instructions per event): {} (functions.md, instructions-diff.svg)",
                list.join(", ")
            ));
        }
    }
    write_outcome(&outcome, opts)?;
    Ok(outcome)
}

/// A function's name cut to 60 characters, short enough for one line of the verdict.
fn short_name(f: &str) -> String {
    let cut: String = f.chars().take(60).collect();
    if cut.len() < f.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

fn write_outcome(outcome: &Outcome, opts: &CheckOptions) -> anyhow::Result<()> {
    std::fs::write(
        opts.report_dir.join("lab-check.json"),
        serde_json::to_string_pretty(outcome)? + "\n",
    )?;
    Ok(())
}

/// The implementation whose correctness a check establishes first: the student's code and
/// the reference of a code lab (the baseline is the lab's starting point, wrong or slow).
fn conformance_impl(lab: &Lab, variant: &Variant) -> Option<LabImpl> {
    lab.conformance_slot()?;
    match variant {
        Variant::Student(_) => Some(LabImpl::Student),
        Variant::Reference => Some(LabImpl::Reference),
        Variant::Mutant(n) => Some(LabImpl::Mutant(*n)),
        Variant::Baseline => None,
    }
}

/// The slot file's part above the STUDENT marker (the baseline, the dispatch) is as shipped.
fn protected_unchanged(lab: &Lab, root: &Path) -> anyhow::Result<()> {
    let (Some(file), Some(want)) = (lab.conformance_file(), &lab.spec.protected_sha256) else {
        return Ok(());
    };
    let text =
        std::fs::read_to_string(root.join(&file)).with_context(|| format!("reading {file}"))?;
    if crate::spec::protected_digest(&text).as_deref() != Some(want.as_str()) {
        bail!(
            "{file}: the part above the `{}` line (the baseline and the dispatch) is not as shipped; only the STUDENT part is yours to change. Restore it with `git diff {file}`, or start over with `observatory lab reset {}`",
            crate::spec::STUDENT_MARKER,
            lab.number()
        );
    }
    Ok(())
}

/// A seed the student has not seen: fresh for every check.
fn hidden_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn source_seed(plan: &pipeline_plan::Plan) -> u64 {
    match plan.knobs(Role::Source) {
        Some(StageKnobs::Source(s)) => s.seed,
        _ => 1,
    }
}

/// How long a conformance run may take (a stuck STUDENT function is stopped).
const CONFORMANCE_LIMIT: Duration = Duration::from_secs(60);

/// `pipeline conformance` (the binary `bin`) of `slot`, stopped after `limit`. Its report
/// goes to a file of its own: what the checked code prints (stdout and stderr, kept beside it
/// in `dir`) cannot garble it.
fn conformance(
    bin: &Path,
    slot: &str,
    imp: &str,
    seed: u64,
    dir: &Path,
    limit: Duration,
) -> anyhow::Result<Conformance> {
    let slot = slot.to_string();
    // Files, not pipes: code under test that prints a lot cannot stall on a full pipe.
    let out_path = dir.join(format!("conformance-{seed}.json"));
    let stdout_path = dir.join(format!("conformance-{seed}.stdout"));
    let err_path = dir.join(format!("conformance-{seed}.stderr"));
    // No answer from an earlier check may stand in for this one.
    let _ = std::fs::remove_file(&out_path);
    let mut cmd = Command::new(bin);
    confine(&mut cmd, Kind::Run);
    let mut child = cmd
        .args([
            "conformance",
            &slot,
            "--impl",
            imp,
            "--seed",
            &seed.to_string(),
            "--out",
        ])
        .arg(&out_path)
        .stdout(std::fs::File::create(&stdout_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("running {} conformance", bin.display()))?;
    let started = std::time::Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Conformance::failed(
                slot,
                imp.into(),
                seed,
                format!("an answer within {} s", limit.as_secs_f64()),
                "no answer: the code is stuck (an endless loop or a lock never released?)".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait()?;
    if !status.success() {
        // The checked code took the process down (an abort, a stack overflow, an exit).
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        let tail: String = err
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect();
        return Ok(Conformance::failed(
            slot,
            imp.into(),
            seed,
            "answers".into(),
            format!("the process ended ({status}) {tail}"),
        ));
    }
    let text = std::fs::read(&out_path).with_context(|| {
        format!(
            "pipeline conformance ended without writing its answer to {}",
            out_path.display()
        )
    })?;
    let report: Conformance = serde_json::from_slice(&text).with_context(|| {
        format!(
            "pipeline conformance's answer in {} is not a report (its output is in {})",
            out_path.display(),
            stdout_path.display()
        )
    })?;
    // A report about another slot, implementation or seed answers a question not asked.
    if (
        report.slot.as_str(),
        report.implementation.as_str(),
        report.seed,
    ) != (&slot, imp, seed)
    {
        bail!(
            "pipeline conformance's answer in {} is for {} {} seed {}, not {slot} {imp} seed {seed}",
            out_path.display(),
            report.slot,
            report.implementation,
            report.seed
        );
    }
    Ok(report)
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
) -> anyhow::Result<(RatioInterval, f64, f64, Figures)> {
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
            confine(&mut cmd, Kind::Run);
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
    let [a, b] = samples;
    Ok((c.ratio, c.a_median, c.b_median, Figures::Samples { a, b }))
}

/// Criterion mode (lab 12): run the benchmark, read criterion's raw samples of `lab12/baseline`
/// and the variant's id, and compare time per iteration with the bootstrap.
fn criterion_ab(
    variant: &Variant,
    opts: &CheckOptions,
    progress: &mut impl FnMut(usize, usize, &str),
) -> anyhow::Result<(RatioInterval, f64, f64, Figures)> {
    let (bench, id) = match variant {
        Variant::Student(_) => ("lab12_student", "student"),
        Variant::Reference => ("lab12_reference", "reference"),
        Variant::Baseline => ("lab12_reference", "baseline_again"),
        // `check` returns once a mutant's correctness is known.
        Variant::Mutant(n) => bail!("mutant {n} is not measured"),
    };
    progress(1, 2, &format!("cargo bench --bench {bench} --no-run"));
    let exe = build_bench(&opts.root, bench)?;
    progress(2, 2, &format!("running {bench}"));
    // Criterion's files go to the report, not to the target folder: the benchmark (a student's
    // code) runs confined when a verification confines it, and writes only there.
    let home = opts.report_dir.join("criterion");
    let group = home.join("lab12");
    let _ = std::fs::remove_dir_all(&group);
    let mut cmd = Command::new(&exe);
    confine(&mut cmd, Kind::Run);
    let out = cmd
        // Where cargo bench runs a benchmark: its package's folder.
        .current_dir(opts.root.join("course"))
        .env("CRITERION_HOME", &home)
        .args([
            "--bench",
            "--noplot",
            "--warm-up-time",
            "1",
            "--measurement-time",
            "3",
            "lab12/",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    std::fs::write(opts.report_dir.join("criterion.txt"), &out.stdout)?;
    if !out.status.success() {
        bail!("the benchmark {bench} failed (its message is above)");
    }
    let a = samples(&group.join("baseline"))?;
    let b = samples(&group.join(id)).with_context(|| {
        format!("the benchmark must measure `lab12/{id}` next to `lab12/baseline`")
    })?;
    let c = Metric::TimePerIteration.compare(&a, &b, &Default::default());
    Ok((c.ratio, c.a_median, c.b_median, Figures::Samples { a, b }))
}

/// Build the course's benchmark `bench` (`cargo bench --no-run`, cargo's progress and messages
/// on the terminal) and return its executable.
fn build_bench(root: &Path, bench: &str) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new("cargo");
    confine(&mut cmd, Kind::Build);
    let out = cmd
        .current_dir(root)
        .args([
            "bench",
            "--no-run",
            "-q",
            "--message-format=json-render-diagnostics",
            "-p",
            "observatory-course",
            "--bench",
            bench,
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo bench --no-run")?;
    if !out.status.success() {
        bail!("cargo bench --bench {bench} --no-run failed (cargo's message is above)");
    }
    #[derive(Deserialize)]
    struct Message {
        reason: String,
        target: Option<Target>,
        executable: Option<PathBuf>,
    }
    #[derive(Deserialize)]
    struct Target {
        name: String,
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Message>(l).ok())
        .filter(|m| m.reason == "compiler-artifact")
        .filter(|m| m.target.as_ref().is_some_and(|t| t.name == bench))
        .find_map(|m| m.executable)
        .with_context(|| format!("cargo built no executable for the benchmark {bench}"))
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

    /// A stand-in for the pipeline binary: a shell script that answers `conformance` the way
    /// `script` says (`$8` is the `--out` path).
    fn fake_pipeline(dir: &Path, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("pipeline");
        std::fs::write(&bin, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    }

    #[test]
    fn a_stuck_printing_crashing_or_garbled_check_is_a_clear_finding_not_a_pass() {
        let dir = tempfile::tempdir().unwrap();
        let run = |script: &str, limit_ms: u64| {
            let bin = fake_pipeline(dir.path(), script);
            let t = std::time::Instant::now();
            let r = conformance(
                &bin,
                "hotspot",
                "student",
                7,
                dir.path(),
                Duration::from_millis(limit_ms),
            );
            (r, t.elapsed())
        };
        // An endless loop: stopped at the limit, reported as stuck, the process killed.
        let (r, took) = run("exec sleep 30", 500);
        let c = r.unwrap();
        assert!(!c.conforms());
        assert!(c.mismatch.unwrap().got.contains("stuck"));
        assert!(took < Duration::from_secs(10), "{took:?}");
        // Code that prints on stdout: the answer is read from its own file all the same.
        let good =
            r#"{"slot":"hotspot","implementation":"student","seed":7,"cases":3,"mismatch":null}"#;
        let (r, _) = run(
            &format!("echo 'hello from student code'; echo '{good}' > \"$8\""),
            5000,
        );
        let c = r.unwrap();
        assert!(c.conforms() && c.cases == 3, "{c:?}");
        assert!(
            std::fs::read_to_string(dir.path().join("conformance-7.stdout"))
                .unwrap()
                .contains("hello from student")
        );
        // A crash: the process's last words, and no pass.
        let (r, _) = run(
            "echo 'thread main has overflowed its stack' >&2; exit 134",
            5000,
        );
        let m = r.unwrap().mismatch.unwrap();
        assert!(
            m.got.contains("the process ended") && m.got.contains("overflowed"),
            "{m:?}"
        );
        // No answer, or a garbled one: an error naming the file, never a pass.
        let (r, _) = run("exit 0", 5000);
        assert!(format!("{:#}", r.unwrap_err()).contains("without writing its answer"));
        let (r, _) = run("echo 'not json' > \"$8\"", 5000);
        assert!(format!("{:#}", r.unwrap_err()).contains("is not a report"));
        // A report for another seed (an old one, or a forged one) is not this check's answer.
        let other = good.replace("\"seed\":7", "\"seed\":8");
        let (r, _) = run(&format!("echo '{other}' > \"$8\""), 5000);
        assert!(
            format!("{:#}", r.unwrap_err()).contains("is for hotspot student seed 8"),
            "a report for another seed was taken"
        );
    }

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
