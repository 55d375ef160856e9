//! The Experiment's logic, with no I/O: validation, the runs' Pipelines, and the state machine.
//!
//! An Experiment is a lab's A/B run on the cluster: a base pipeline (the workload), the knob
//! assignments of the baseline and of the variant, the metric and the effect that passes. The
//! operator runs the sides in turn, interleaved (baseline 0, variant 0, baseline 1, …): for each
//! run it creates a Pipeline `<experiment>-b<i>` or `-v<i>` (owned by the Experiment), waits
//! until it is Ready, lets it warm up, measures a window of `runSeconds` through Prometheus,
//! marks the window as a Grafana annotation, and deletes the run's Pipeline before the next run,
//! so the sides never share the machine. When every run is measured, the verdict — the ratio of
//! medians with a 95% bootstrap interval (`observatory-stats`, the engine `observatory lab check`
//! uses) — goes into the status.
//!
//! The status is the state machine: [`decide`] reads the Experiment, the current run's Pipeline
//! and the time, and says what to do next; the controller does it and records the outcome with
//! [`record_measurement`] or [`conclude`]. A restarted operator resumes where the status says.

use super::crd::*;
use crate::pipeline::crd::{Pipeline, PipelineSpec};
use crate::pipeline::render::{self, apply_plan, plan_of};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Resource, ResourceExt};
use observatory_stats::{Judgement, Threshold};
use std::collections::BTreeMap;
use std::time::Duration;

/// Seconds after a window's end before it is measured: two scrapes of the cluster's Prometheus
/// (5 s interval), so the window's last samples are in.
pub const SCRAPE_MARGIN: Duration = Duration::from_secs(10);
/// How often a run's readiness is looked at (the Pipelines it owns also wake it).
pub const POLL: Duration = Duration::from_secs(5);
/// Longest name of an Experiment: its run Pipelines' objects (`<name>-b12-aggregate`) must stay
/// within the 63 characters of a DNS label.
pub const MAX_NAME: usize = 40;

/// The label on every metric of a run that says which side it ran (the lab-comparison
/// dashboard's `$baseline` and `$variant` select on it).
pub fn side_label(experiment: &str, side: &str) -> String {
    format!("{experiment}-{side}")
}

/// The pipeline spec with `stage.knob=value` assignments applied, validated like the local runner.
pub fn with_assignments(spec: &PipelineSpec, set: &[String]) -> Result<PipelineSpec, String> {
    let mut plan = plan_of("experiment", spec).map_err(|e| e.to_string())?;
    for a in set {
        plan.assign(a).map_err(|e| format!("`{a}`: {e}"))?;
    }
    let mut out = spec.clone();
    apply_plan(&mut out, &plan)?;
    Ok(out)
}

/// The pipeline spec of a plan (the inverse of [`plan_of`]): how a lab's workload, written for
/// the local runner, becomes the `pipeline` of an Experiment.
pub fn pipeline_spec_of(plan: &pipeline_plan::Plan, image: &str) -> Result<PipelineSpec, String> {
    let mut spec = PipelineSpec {
        image: image.to_string(),
        image_pull_policy: Some(crate::pipeline::crd::PullPolicy::IfNotPresent),
        labels: plan.labels.clone(),
        otlp_endpoint: None,
        sink_storage: None,
        source: Default::default(),
        parse: None,
        aggregate: None,
        sink: None,
    };
    apply_plan(&mut spec, plan)?;
    Ok(spec)
}

/// The runs, in the order they run: baseline 0, variant 0, baseline 1, variant 1, …
pub fn planned_runs(e: &Experiment) -> Vec<RunStatus> {
    let name = e.name_any();
    (0..e.spec.pairs)
        .flat_map(|i| {
            [("baseline", 'b'), ("variant", 'v')].map(|(side, c)| RunStatus {
                side: side.into(),
                pipeline: format!("{name}-{c}{i}"),
                phase: PENDING.into(),
                ..Default::default()
            })
        })
        .collect()
}

fn owner(e: &Experiment) -> OwnerReference {
    OwnerReference {
        api_version: Experiment::api_version(&()).to_string(),
        kind: Experiment::kind(&()).to_string(),
        name: e.name_any(),
        uid: e.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// What one side runs: the base spec with the side's assignments and image, and an unbounded
/// source (the measurement window bounds each run).
fn side_spec(base: &PipelineSpec, side: &Side) -> Result<PipelineSpec, String> {
    let mut spec = with_assignments(base, &side.set)?;
    spec.source.knobs.events = 0;
    spec.source.knobs.duration_seconds = 0.0;
    if let Some(image) = &side.image {
        spec.image = image.clone();
    }
    Ok(spec)
}

/// The Pipeline of one run: the base spec, the side's assignments and image, an unbounded
/// source, and metric labels naming the experiment, the side and the run.
pub fn run_pipeline(e: &Experiment, run: &RunStatus) -> Result<Pipeline, String> {
    let side = if run.side == "baseline" {
        &e.spec.baseline
    } else {
        &e.spec.variant
    };
    let mut spec = side_spec(&e.spec.pipeline, side)?;
    let name = e.name_any();
    spec.labels.extend([
        ("experiment".to_string(), name.clone()),
        ("side".to_string(), side_label(&name, &run.side)),
        ("run".to_string(), run.pipeline.clone()),
    ]);
    let mut p = Pipeline::new(&run.pipeline, spec);
    p.metadata.namespace = e.namespace();
    p.metadata.owner_references = Some(vec![owner(e)]);
    p.metadata.labels = Some(BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            render::MANAGER.to_string(),
        ),
        ("observatory.dev/experiment".to_string(), name),
        ("observatory.dev/side".to_string(), run.side.clone()),
    ]));
    Ok(p)
}

/// Why an Experiment cannot run, naming the field; `None` when it can.
pub fn invalid(e: &Experiment) -> Option<String> {
    let name = e.name_any();
    if name.len() > MAX_NAME {
        return Some(format!(
            "metadata.name: at most {MAX_NAME} characters (its runs' objects are named after it)"
        ));
    }
    let mut base = Pipeline::new(&name, e.spec.pipeline.clone());
    base.metadata.uid = Some("validation".into());
    base.metadata.namespace = e.namespace();
    if let Err(bad) = render::render(&base) {
        // `spec.parse.knobs.x` of the base pipeline is `spec.pipeline.parse.knobs.x` here.
        let field = match bad.field.strip_prefix("spec.") {
            Some(rest) => format!("spec.pipeline.{rest}"),
            None => "spec.pipeline".to_string(),
        };
        return Some(format!("{field}: {}", bad.message));
    }
    for field in ["baseline", "variant"] {
        let run = RunStatus {
            side: field.into(),
            pipeline: format!("{name}-x0"),
            ..Default::default()
        };
        let mut p = match run_pipeline(e, &run) {
            Ok(p) => p,
            Err(msg) => return Some(format!("spec.{field}.set: {msg}")),
        };
        p.metadata.uid = Some("validation".into());
        if let Err(bad) = render::render(&p) {
            return Some(format!("spec.{field} makes an invalid pipeline: {bad}"));
        }
    }
    // Compared as what each side runs, so `[a, b]` and `[b, a]`, or a knob set to its
    // default, are the same side. (Not a CEL rule: `self.baseline != self.variant` compares two
    // separately declared object types, which the API server's CEL type checker refuses.)
    if let (Ok(b), Ok(v)) = (
        side_spec(&e.spec.pipeline, &e.spec.baseline),
        side_spec(&e.spec.pipeline, &e.spec.variant),
    ) && b == v
    {
        return Some(
            "spec.variant: runs the same pipeline as spec.baseline (the same knobs and image): there is nothing to compare"
                .into(),
        );
    }
    if !e.spec.metric.windowed() {
        return Some(format!(
            "spec.metric: {} is not measured over a window on a cluster",
            e.spec.metric
        ));
    }
    if !Threshold::new(e.spec.metric.better(), e.spec.min_effect).reachable() {
        return Some(format!(
            "spec.minEffect: {} is not a reachable effect for {} (lower is better: below 1)",
            e.spec.min_effect,
            e.spec.metric.as_str()
        ));
    }
    None
}

/// What the current run's Pipeline looks like.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    /// It does not exist.
    Absent,
    /// It exists and is not Ready; the status summary (e.g. `Progressing`).
    NotReady(String),
    Ready,
    /// It is being deleted (its stages are going): it must be gone before it is created again.
    Deleting,
}

impl Observed {
    pub fn of(p: Option<&Pipeline>) -> Observed {
        match p {
            None => Observed::Absent,
            Some(p) if p.metadata.deletion_timestamp.is_some() => Observed::Deleting,
            Some(p) => {
                let summary = p
                    .status
                    .as_ref()
                    .map(|s| s.summary.clone())
                    .unwrap_or_default();
                if summary == "Ready" {
                    Observed::Ready
                } else if summary.is_empty() {
                    Observed::NotReady("not reconciled yet".into())
                } else {
                    Observed::NotReady(summary)
                }
            }
        }
    }
}

/// What to do next.
#[derive(Clone, Debug)]
pub enum Action {
    /// Write `status` and come back after the duration (nothing else to do yet).
    Wait(Duration),
    /// Create (apply) the run's Pipeline, write `status`, and come back.
    Deploy(Box<Pipeline>),
    /// Measure run `index` over its window, then delete its Pipeline.
    Measure(usize),
    /// Every run is measured: compute the verdict.
    Conclude,
    /// Delete the run's Pipeline (if there) and stop: the experiment failed; `status` says why.
    Fail(String),
    /// Finished: nothing to do until the spec changes.
    Done,
}

/// The next step and the status to write before it.
#[derive(Clone, Debug)]
pub struct Decision {
    pub action: Action,
    pub status: ExperimentStatus,
    /// Run Pipelines of this experiment, other than the current run's, still there: delete
    /// them (a measured run, or one from an earlier spec). The next run is created only once
    /// none is left, so the sides never share the machine.
    pub delete: Vec<String>,
}

fn after(t: &Time, d: Duration) -> Timestamp {
    t.0.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(t.0)
}

fn measured(runs: &[RunStatus]) -> usize {
    runs.iter().filter(|r| r.phase == MEASURED).count()
}

fn progress(runs: &[RunStatus]) -> String {
    format!("{}/{}", measured(runs), runs.len())
}

/// The status an Experiment starts from: every run planned, none started.
pub fn initial_status(e: &Experiment) -> ExperimentStatus {
    let runs = planned_runs(e);
    ExperimentStatus {
        observed_generation: e.metadata.generation,
        phase: RUNNING.into(),
        progress: progress(&runs),
        message: "starting".into(),
        runs,
        result: None,
        leaderboard: None,
        conditions: Vec::new(),
    }
}

/// The status [`decide`] starts from: the recorded one for this generation (resume), or a fresh
/// plan (a new spec starts over).
pub fn working_status(e: &Experiment) -> ExperimentStatus {
    match &e.status {
        Some(s) if s.observed_generation == e.metadata.generation && !s.runs.is_empty() => {
            s.clone()
        }
        _ => initial_status(e),
    }
}

/// The run whose Pipeline [`decide`] needs to see: the first not yet measured, unless the
/// experiment is finished or its spec is invalid (then nothing is looked at).
pub fn run_to_observe(e: &Experiment) -> Option<String> {
    let status = working_status(e);
    if status.phase == SUCCEEDED || status.phase == FAILED || invalid(e).is_some() {
        return None;
    }
    status
        .runs
        .into_iter()
        .find(|r| r.phase != MEASURED)
        .map(|r| r.pipeline)
}

/// Decide the next step from the Experiment, its current run's Pipeline, the experiment's
/// other run Pipelines that still exist (`lingering`), and the time.
pub fn decide(
    e: &Experiment,
    current: &Observed,
    lingering: &[String],
    now: Timestamp,
) -> Decision {
    let mut d = decide_step(e, current, !lingering.is_empty(), now);
    d.delete = lingering.to_vec();
    if !lingering.is_empty() && matches!(d.action, Action::Wait(_)) {
        d.status.message = format!(
            "{} (deleting {} first)",
            d.status.message,
            lingering.join(", ")
        );
    }
    d
}

fn decide_step(e: &Experiment, current: &Observed, lingering: bool, now: Timestamp) -> Decision {
    let mut status = working_status(e);
    if status.phase == SUCCEEDED || status.phase == FAILED {
        return Decision {
            action: Action::Done,
            status,
            delete: Vec::new(),
        };
    }
    if let Some(why) = invalid(e) {
        return failed(status, format!("invalid spec: {why}"), "InvalidSpec");
    }
    let Some(i) = status.runs.iter().position(|r| r.phase != MEASURED) else {
        return Decision {
            action: Action::Conclude,
            status,
            delete: Vec::new(),
        };
    };
    let spec = &e.spec;
    let total = status.runs.len();
    let run = &mut status.runs[i];
    let what = format!("run {} of {total} ({}, {})", i + 1, run.side, run.pipeline);
    let (action, message) = match current {
        Observed::Absent if lingering => (
            Action::Wait(POLL),
            format!(
                "{what}: waiting for the previous run's pipeline to be gone, so the sides never share the machine"
            ),
        ),
        Observed::Deleting => {
            run.window_start = None;
            run.window_end = None;
            (
                Action::Wait(POLL),
                format!("{what}: its pipeline is being deleted; it is created again once gone"),
            )
        }
        Observed::Absent => {
            // Not created yet; or created and gone (someone deleted it): create it, from scratch.
            let recreated = run.phase != PENDING && run.deployed_at.is_some();
            let p = match run_pipeline(e, run) {
                Ok(p) => p,
                Err(msg) => return failed(status, format!("invalid spec: {msg}"), "InvalidSpec"),
            };
            run.phase = DEPLOYING.into();
            run.deployed_at = Some(Time(now));
            run.window_start = None;
            run.window_end = None;
            let message = if recreated {
                format!("{what}: its pipeline disappeared; creating it again")
            } else {
                format!("{what}: creating its pipeline")
            };
            (Action::Deploy(Box::new(p)), message)
        }
        Observed::NotReady(summary) if run.window_start.is_none() => {
            let since = run.deployed_at.clone().unwrap_or(Time(now));
            let deadline = after(
                &since,
                Duration::from_secs(spec.ready_timeout_seconds.into()),
            );
            if now >= deadline {
                let msg = format!(
                    "{what}: its pipeline was not Ready {} s after it was created ({summary})",
                    spec.ready_timeout_seconds
                );
                return failed(status, msg, "RunNotReady");
            }
            run.phase = DEPLOYING.into();
            (
                Action::Wait(POLL),
                format!("{what}: waiting for its pipeline to be Ready ({summary})"),
            )
        }
        Observed::NotReady(summary) => {
            // Ready once, not any more: the window is spoiled. Start the window again when
            // it is Ready again.
            run.phase = DEPLOYING.into();
            run.window_start = None;
            run.window_end = None;
            run.deployed_at = Some(Time(now));
            (
                Action::Wait(POLL),
                format!(
                    "{what}: its pipeline stopped being Ready ({summary}); the window starts over"
                ),
            )
        }
        Observed::Ready => match (&run.window_start, &run.window_end) {
            (Some(_), Some(end)) => {
                let measure_at = after(end, SCRAPE_MARGIN);
                if now >= measure_at {
                    (Action::Measure(i), format!("{what}: measuring its window"))
                } else {
                    let left = now.duration_until(measure_at);
                    let left = Duration::try_from(left).unwrap_or(POLL);
                    (
                        Action::Wait(
                            left.min(Duration::from_secs(60))
                                .max(Duration::from_secs(1)),
                        ),
                        format!("{what}: running; measured in {} s", left.as_secs()),
                    )
                }
            }
            _ => {
                let start = after(&Time(now), Duration::from_secs(spec.warmup_seconds.into()));
                let end = after(&Time(start), Duration::from_secs(spec.run_seconds.into()));
                run.phase = MEASURING.into();
                run.window_start = Some(Time(start));
                run.window_end = Some(Time(end));
                (
                    Action::Wait(
                        Duration::from_secs((spec.warmup_seconds + spec.run_seconds).into())
                            + SCRAPE_MARGIN,
                    ),
                    format!(
                        "{what}: Ready; warming up {} s, then measuring {} s",
                        spec.warmup_seconds, spec.run_seconds
                    ),
                )
            }
        },
    };
    status.message = message;
    status.progress = progress(&status.runs);
    Decision {
        action,
        status,
        delete: Vec::new(),
    }
}

fn failed(status: ExperimentStatus, message: String, reason: &str) -> Decision {
    Decision {
        status: failed_status(status, message.clone(), reason),
        action: Action::Fail(message),
        delete: Vec::new(),
    }
}

/// The status of an experiment that could not be measured: phase `Failed`, condition `Failed`
/// with the reason.
pub fn failed_status(
    mut status: ExperimentStatus,
    message: String,
    reason: &str,
) -> ExperimentStatus {
    status.phase = FAILED.into();
    status.conditions = vec![
        condition("Complete", false, reason, &message),
        condition("Failed", true, reason, &message),
    ];
    status.message = message;
    status
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: None,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// What Prometheus said about one run's window.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    pub value: f64,
    pub events: f64,
    pub lost: f64,
}

/// Record a run's measurement (and the annotation that marks it).
pub fn record_measurement(
    mut status: ExperimentStatus,
    index: usize,
    m: &Measurement,
    annotation: String,
) -> ExperimentStatus {
    if let Some(run) = status.runs.get_mut(index) {
        run.phase = MEASURED.into();
        run.value = Some(m.value);
        run.events = Some(m.events);
        run.lost = Some(m.lost);
        run.annotation = Some(annotation);
    }
    status.progress = progress(&status.runs);
    status.message = format!(
        "measured {} of {} runs",
        measured(&status.runs),
        status.runs.len()
    );
    status
}

/// The verdict from every measured run: ratio of medians with its bootstrap interval; passed
/// when the interval clears the minimum effect and no run lost events.
pub fn conclude(e: &Experiment, mut status: ExperimentStatus) -> ExperimentStatus {
    let values = |side: &str| -> Vec<f64> {
        status
            .runs
            .iter()
            .filter(|r| r.side == side)
            .filter_map(|r| r.value)
            .collect()
    };
    let (a, b) = (values("baseline"), values("variant"));
    let metric = e.spec.metric;
    let c = metric.compare(&a, &b, &Default::default());
    let lost: f64 = status.runs.iter().filter_map(|r| r.lost).sum();
    let Judgement {
        passed, required, ..
    } = Threshold::new(metric.better(), e.spec.min_effect).judge(&c.ratio, lost);
    let summary = format!(
        "B/A = {:.3} [{:.3} .. {:.3}]",
        c.ratio.ratio, c.ratio.low, c.ratio.high
    );
    let message = if lost >= 0.5 {
        format!("{summary}: events were lost ({lost:.0}), so it does not pass")
    } else if passed {
        format!("{summary}: clears {required}: passed")
    } else {
        format!("{summary}: does not clear {required}")
    };
    status.result = Some(ExperimentResult {
        metric: metric.as_str().into(),
        unit: metric.unit().into(),
        baseline_median: c.a_median,
        variant_median: c.b_median,
        ratio: c.ratio.ratio,
        low: c.ratio.low,
        high: c.ratio.high,
        verdict: c.verdict.to_string(),
        required,
        passed,
        summary,
    });
    status.phase = SUCCEEDED.into();
    status.conditions = vec![
        condition("Complete", true, "Measured", &message),
        condition("Failed", false, "Measured", "every run was measured"),
    ];
    status.message = message;
    status.progress = progress(&status.runs);
    status
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
