//! The Experiment reconciler: do what [`experiment::decide`] says, one step per reconcile.
//!
//! Each reconcile reads the current run's Pipeline, decides, and then: creates the run's
//! Pipeline (server-side apply, owned by the Experiment), or measures a finished window through
//! Prometheus, marks it in Grafana and deletes the run's Pipeline, or computes the verdict; then
//! it writes the status. Events mark the notable steps (a run measured, the verdict, a failure).
//! Prometheus being unreachable is an error that requeues with backoff; a window Prometheus has
//! no data for fails the experiment with a message saying what was asked.

use crate::api::{self, Failures, key, not_found_is_ok};
use crate::experiment::results::{Credentials, Grafana, Prometheus, ResultsError, basic_auth};
use crate::experiment::{
    self, Action, Decision, Experiment, ExperimentStatus, Observed, leaderboard,
};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::pipeline::controller::{Error, backoff};
use crate::pipeline::crd::Pipeline;
use crate::pipeline::render::MANAGER;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use std::future::Future;
use std::sync::Arc;
use tracing::{info, instrument, warn};

/// What every Experiment reconcile shares.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub prometheus: Prometheus,
    /// Where run windows are annotated; `None`: not configured (said in each run's status).
    pub grafana: Option<Grafana>,
    failures: Failures,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        prometheus: Prometheus,
        grafana: Option<Grafana>,
    ) -> Arc<Self> {
        Arc::new(Context {
            recorder: api::recorder(client.clone()),
            client,
            metrics,
            prometheus,
            grafana,
            failures: Failures::default(),
        })
    }
}

/// Reconcile one Experiment: one step of its state machine.
#[instrument(skip_all, fields(experiment = %key(&*e)))]
pub async fn reconcile(e: Arc<Experiment>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let _timer = ctx.metrics.start_reconcile();
    let result = step(&e, &ctx).await;
    match &result {
        Ok(_) => ctx.failures.succeed(&key(&*e)),
        Err(err) => {
            warn!(error = %err, "experiment reconcile failed");
            publish(
                &ctx,
                &e,
                EventType::Warning,
                "ReconcileFailed",
                err.to_string(),
            )
            .await;
        }
    }
    result
}

/// After a failed reconcile: count it and retry with backoff.
pub fn error_policy(e: Arc<Experiment>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.failure(&error.kind());
    Requeue::requeue(backoff(ctx.failures.fail(&key(&*e))))
}

async fn publish(ctx: &Context, e: &Experiment, type_: EventType, reason: &str, note: String) {
    api::publish(&ctx.recorder, e, None, type_, reason, "Experiment", note).await
}

/// The label every run Pipeline of experiment `name` carries.
pub fn runs_selector(name: &str) -> String {
    format!("observatory.dev/experiment={name}")
}

async fn step(e: &Experiment, ctx: &Context) -> Result<Requeue, Error> {
    let ns = e.namespace().ok_or(Error::NoNamespace)?;
    if e.metadata.deletion_timestamp.is_some() {
        // Being deleted: its run Pipelines are owned by it and go with it; starting another
        // run now would only race the garbage collector.
        return Ok(Requeue::await_change());
    }
    let pipelines: Api<Pipeline> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Timestamp::now();
    // The current run's Pipeline exists only once deployed (a failure then deletes it).
    let deployed = e
        .status
        .as_ref()
        .and_then(|s| s.runs.iter().find(|r| r.phase != experiment::MEASURED))
        .filter(|r| r.phase != experiment::PENDING)
        .map(|r| r.pipeline.clone());
    // Every run Pipeline this experiment owns: the current run's, and any still going away.
    let uid = e.uid();
    let runs: Vec<Pipeline> = pipelines
        .list(&ListParams::default().labels(&runs_selector(&e.name_any())))
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .collect();
    let current = experiment::run_to_observe(e);
    let observed = Observed::of(
        runs.iter()
            .find(|p| current.as_deref() == Some(p.name_any().as_str())),
    );
    let lingering: Vec<String> = runs
        .iter()
        .map(|p| p.name_any())
        .filter(|n| current.as_deref() != Some(n.as_str()))
        .collect();
    let Decision {
        action,
        status,
        delete,
    } = experiment::decide(e, &observed, &lingering, now);
    for name in &delete {
        let going = runs
            .iter()
            .any(|p| p.name_any() == *name && p.metadata.deletion_timestamp.is_some());
        if !going {
            info!(pipeline = %name, "deleting a finished run's pipeline");
            delete_run(&pipelines, name).await?;
        }
    }
    match action {
        Action::Done => settle_leaderboard(e, ctx, &ns).await,
        Action::Wait(after) => {
            patch_status(&ctx.client, &ns, e, &status).await?;
            Ok(Requeue::requeue(after))
        }
        Action::Deploy(p) => {
            let pp = PatchParams::apply(MANAGER).force();
            pipelines
                .patch(&p.name_any(), &pp, &Patch::Apply(&*p))
                .await?;
            info!(pipeline = %p.name_any(), "run pipeline created");
            patch_status(&ctx.client, &ns, e, &status).await?;
            Ok(Requeue::requeue(experiment::POLL))
        }
        Action::Measure(i) => {
            let run = status.runs[i].clone();
            let (Some(start), Some(end)) = (&run.window_start, &run.window_end) else {
                return Ok(Requeue::requeue(experiment::POLL));
            };
            let measured = ctx
                .prometheus
                .measure(e.spec.metric, &run, e.spec.run_seconds, end.0.as_second())
                .await;
            let m = match measured {
                Ok(m) => m,
                Err(ResultsError::NoData { query }) => {
                    let msg = format!(
                        "run {} ({}): Prometheus has no data for `{query}`: is it scraping namespace {ns}?",
                        i + 1,
                        run.pipeline
                    );
                    let status = experiment::failed_status(status, msg.clone(), "NoData");
                    return fail(ctx, e, &ns, status, msg, &pipelines, Some(&run.pipeline)).await;
                }
                Err(other) => {
                    // Unreachable or erroring: retry with backoff; the window stays.
                    return Err(Error::Results(other.to_string()));
                }
            };
            let text = format!(
                "{} {} ({}): {} = {:.4} {}",
                e.name_any(),
                run.side,
                run.pipeline,
                e.spec.metric.as_str(),
                m.value,
                e.spec.metric.unit()
            );
            let annotation = match &ctx.grafana {
                None => "not annotated: the operator has no Grafana configured".to_string(),
                Some(g) => {
                    let written = match authorization(&ctx.client, &g.credentials).await {
                        Ok(auth) => g
                            .annotate(
                                &auth,
                                &e.name_any(),
                                &run,
                                start.0.as_millisecond(),
                                end.0.as_millisecond(),
                                &text,
                            )
                            .await
                            .map_err(|err| err.to_string()),
                        Err(why) => Err(why),
                    };
                    match written {
                        Ok(id) => format!("grafana annotation {id}"),
                        Err(err) => {
                            warn!(error = %err, "could not annotate the run in Grafana");
                            format!("not annotated: {err}")
                        }
                    }
                }
            };
            let status = experiment::record_measurement(status, i, &m, annotation);
            delete_run(&pipelines, &run.pipeline).await?;
            ctx.metrics.experiment_runs.inc();
            patch_status(&ctx.client, &ns, e, &status).await?;
            // Each run is its own event (related: the run's Pipeline), not a series of the first.
            let related = ObjectReference {
                api_version: Some(Pipeline::api_version(&()).into()),
                kind: Some(Pipeline::kind(&()).into()),
                name: Some(run.pipeline.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            };
            api::publish(
                &ctx.recorder,
                e,
                Some(related),
                EventType::Normal,
                "RunMeasured",
                "Experiment",
                text,
            )
            .await;
            Ok(Requeue::requeue(experiment::POLL))
        }
        Action::Conclude => {
            let status = experiment::conclude(e, status);
            patch_status(&ctx.client, &ns, e, &status).await?;
            let passed = status.result.as_ref().is_some_and(|r| r.passed);
            ctx.metrics
                .experiments
                .with_label_values(&[if passed { "passed" } else { "not_passed" }])
                .inc();
            info!(message = %status.message, "experiment finished");
            publish(
                ctx,
                e,
                EventType::Normal,
                "Finished",
                status.message.clone(),
            )
            .await;
            if e.spec.leaderboard.is_some() {
                // The next reconcile (on the status just written) posts the verdict.
                return Ok(Requeue::requeue(experiment::POLL));
            }
            Ok(Requeue::await_change())
        }
        Action::Fail(msg) => fail(ctx, e, &ns, status, msg, &pipelines, deployed.as_deref()).await,
    }
}

/// A finished Experiment: post its verdict to the leaderboard if that is still owed, and say
/// how it went in the status (and an event). A post that could not be made now is retried.
async fn settle_leaderboard(e: &Experiment, ctx: &Context, ns: &str) -> Result<Requeue, Error> {
    let (Some(status), owed) = (&e.status, leaderboard::owed(e)) else {
        return Ok(Requeue::await_change());
    };
    match owed {
        leaderboard::Owed::Nothing => Ok(Requeue::await_change()),
        leaderboard::Owed::Note(line) => {
            patch_status(&ctx.client, ns, e, &leaderboard::with_line(status, line)).await?;
            Ok(Requeue::await_change())
        }
        leaderboard::Owed::Post(v) => {
            let posted = leaderboard::post(&ctx.client, e, &v).await;
            let line = posted.line();
            // The same "not posted yet" line again is not worth a write or an event.
            if status.leaderboard.as_deref() != Some(line.as_str()) {
                patch_status(
                    &ctx.client,
                    ns,
                    e,
                    &leaderboard::with_line(status, line.clone()),
                )
                .await?;
                let (type_, reason) = match &posted {
                    leaderboard::Posted::Done { refused: false, .. } => {
                        (EventType::Normal, "VerificationPosted")
                    }
                    leaderboard::Posted::Done { refused: true, .. } => {
                        (EventType::Warning, "VerificationRefused")
                    }
                    leaderboard::Posted::Retry(_) => (EventType::Warning, "VerificationPending"),
                };
                publish(ctx, e, type_, reason, line).await;
            }
            match posted {
                leaderboard::Posted::Done { .. } => Ok(Requeue::await_change()),
                leaderboard::Posted::Retry(_) => Ok(Requeue::requeue(LEADERBOARD_RETRY)),
            }
        }
    }
}

/// How long a post that could not be made waits before the next try.
pub const LEADERBOARD_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

async fn fail(
    ctx: &Context,
    e: &Experiment,
    ns: &str,
    status: ExperimentStatus,
    msg: String,
    pipelines: &Api<Pipeline>,
    run_pipeline: Option<&str>,
) -> Result<Requeue, Error> {
    if let Some(name) = run_pipeline {
        delete_run(pipelines, name).await?;
    }
    patch_status(&ctx.client, ns, e, &status).await?;
    ctx.metrics.experiments.with_label_values(&["failed"]).inc();
    warn!(%msg, "experiment failed");
    publish(ctx, e, EventType::Warning, "Failed", msg).await;
    Ok(Requeue::await_change())
}

/// Delete a run's Pipeline in the foreground: it stays (with a deletion timestamp) until its
/// pods are gone, so the next run, which waits for it, never shares the machine with it.
async fn delete_run(pipelines: &Api<Pipeline>, name: &str) -> Result<(), Error> {
    pipelines
        .delete(name, &DeleteParams::foreground())
        .await
        .map(|_| ())
        .or_else(not_found_is_ok)?;
    Ok(())
}

/// The `Authorization` header for Grafana, reading the Secret now if that is where the
/// credentials are; why not, as the run's status will say.
async fn authorization(client: &Client, credentials: &Credentials) -> Result<String, String> {
    match credentials {
        Credentials::Fixed { user, password } => Ok(basic_auth(user, password)),
        Credentials::Secret { namespace, name } => {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let secret = secrets
                .get_opt(name)
                .await
                .map_err(|e| format!("reading Secret {namespace}/{name}: {e}"))?
                .ok_or_else(|| format!("Secret {namespace}/{name} does not exist"))?;
            let key = |k: &str| -> Result<String, String> {
                let bytes = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(k))
                    .ok_or_else(|| format!("Secret {namespace}/{name} has no key `{k}`"))?;
                String::from_utf8(bytes.0.clone())
                    .map_err(|_| format!("Secret {namespace}/{name}: `{k}` is not UTF-8"))
            };
            Ok(basic_auth(&key("user")?, &key("password")?))
        }
    }
}

async fn patch_status(
    client: &Client,
    ns: &str,
    e: &Experiment,
    status: &ExperimentStatus,
) -> Result<(), Error> {
    Ok(api::apply_status(client, ns, e, status).await?)
}

/// Run the Experiment controller until `shutdown` resolves. Watches Experiments and the run
/// Pipelines they own, so a run becoming Ready wakes its Experiment.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    namespace: Option<String>,
    prometheus: Prometheus,
    grafana: Option<Grafana>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (experiments, pipelines) = match &namespace {
        Some(ns) => (
            Api::<Experiment>::namespaced(client.clone(), ns),
            Api::<Pipeline>::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let ctx = Context::new(client, metrics, prometheus, grafana);
    Controller::new(experiments, watcher::Config::default().any_semantic())
        .owns(
            pipelines,
            watcher::Config::default().labels("observatory.dev/experiment"),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| {
            health.observe("experiments", res);
            std::future::ready(())
        })
        .await;
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
