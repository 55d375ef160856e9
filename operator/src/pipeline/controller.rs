//! The reconciler: make a Pipeline's objects what [`render`] says, and say how it went.
//!
//! Each reconcile server-side-applies every stage's ConfigMap, Service, NetworkPolicy and workload with the
//! field manager `observatory-operator` (after creating the Pipeline's token Secret once), deletes the objects of stages that left the spec
//! (found by label), and patches the status: `observedGeneration`, per-stage desired/updated/
//! ready pods, and the conditions `Ready`, `Progressing` and `Degraded`. Notable transitions
//! (created, a stage rolling out, ready, an invalid spec, a failure) become Kubernetes Events.
//! An invalid spec is a `Degraded` condition naming the field, not an error loop; API errors
//! requeue with an exponential backoff and count in `observatory_operator_reconcile_failures_total`.
//! Children are owned by the Pipeline, so deleting it deletes them: no finalizer is needed.

use crate::api::{self, Failures, key};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::pipeline::crd::{Pipeline, PipelineStatus, StageStatus};
use crate::pipeline::pods;
use crate::pipeline::render::{self, Desired, InvalidSpec, MANAGER, Workload, managed_selector};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::Selector;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, instrument, warn};

/// What can go wrong while reconciling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the object has no namespace")]
    NoNamespace,
    #[error("building the status: {0}")]
    Status(#[from] serde_json::Error),
    #[error("reading results: {0}")]
    Results(String),
    #[error("making the pipeline's token: {0}")]
    Token(#[from] std::io::Error),
}

impl Error {
    /// The `error` label of the failure metric.
    pub fn kind(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(s)) => format!("api_{}", s.code),
            Error::Kube(_) => "kube_client".into(),
            Error::NoNamespace => "no_namespace".into(),
            Error::Status(_) => "status".into(),
            Error::Results(_) => "results".into(),
            Error::Token(_) => "token".into(),
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Consecutive failures per Pipeline, for the backoff.
    failures: Failures,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Context {
            recorder: api::recorder(client.clone()),
            client,
            metrics,
            failures: Failures::default(),
        })
    }
}

/// Backoff after `n` consecutive failures: 5 s, 10 s, 20 s, … capped at 5 minutes.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(
        5u64.saturating_mul(1 << n.saturating_sub(1).min(6))
            .min(300),
    )
}

/// Reconcile one Pipeline.
#[instrument(skip_all, fields(pipeline = %key(&*p)))]
pub async fn reconcile(p: Arc<Pipeline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.start_reconcile();
    let result = reconcile_pipeline(&p, &ctx).await;
    match &result {
        Ok(_) => ctx.failures.succeed(&key(&*p)),
        Err(e) => {
            warn!(error = %e, "reconcile failed");
            publish(
                &ctx,
                &p,
                EventType::Warning,
                "ReconcileFailed",
                "Reconcile",
                e.to_string(),
            )
            .await;
        }
    }
    result
}

/// What the controller does after a failed reconcile: count it, and retry with backoff.
pub fn error_policy(p: Arc<Pipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(&error.kind());
    Action::requeue(backoff(ctx.failures.fail(&key(&*p))))
}

async fn publish(
    ctx: &Context,
    p: &Pipeline,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    api::publish(&ctx.recorder, p, None, type_, reason, action, note).await
}

/// An Event about one stage of `p`: the stage's workload is its related object, so events
/// about different stages stay apart.
async fn publish_stage(
    ctx: &Context,
    p: &Pipeline,
    stage: &StageStatus,
    reason: &str,
    note: String,
) {
    let workload = ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some(stage.workload.clone()),
        name: Some(format!("{}-{}", p.name_any(), stage.name)),
        namespace: p.namespace(),
        ..Default::default()
    };
    api::publish(
        &ctx.recorder,
        p,
        Some(workload),
        EventType::Normal,
        reason,
        "Apply",
        note,
    )
    .await
}

async fn apply<K>(api: &Api<K>, name: &str, obj: &K) -> Result<K, Error>
where
    K: Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let pp = PatchParams::apply(MANAGER).force();
    Ok(api.patch(name, &pp, &Patch::Apply(obj)).await?)
}

/// Create the Pipeline's token Secret with a fresh random token if it does not exist; never
/// rewrite it (running stages hold the token they started with). Create-only, so the
/// operator needs no right to read Secrets: one that exists already is a 409, and stands.
async fn ensure_token(api: &Api<Secret>, secret: &Secret) -> Result<(), Error> {
    let name = secret.name_any();
    let token = pipeline_plan::new_token()?;
    let mut new = secret.clone();
    new.string_data = Some(std::collections::BTreeMap::from([(
        render::TOKEN_KEY.to_string(),
        token,
    )]));
    match api.create(&PostParams::default(), &new).await {
        Ok(_) => {
            info!(secret = %name, "created the pipeline's token");
            Ok(())
        }
        // It exists (made by an earlier reconcile): that one stands.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn reconcile_pipeline(p: &Pipeline, ctx: &Context) -> Result<Action, Error> {
    let ns = p.namespace().ok_or(Error::NoNamespace)?;
    if p.metadata.deletion_timestamp.is_some() {
        // Being deleted: the garbage collector removes the stages it owns. Applying them again
        // would recreate what it deletes, forever when the deletion is in the foreground (the
        // Pipeline waits for its stages to be gone). Nothing to write either.
        debug!("being deleted: its stages go with it");
        return Ok(Action::await_change());
    }
    let client = ctx.client.clone();
    let previous = p.status.clone().unwrap_or_default();
    let desired = match render::render(p) {
        Ok(d) => d,
        Err(invalid) => return degraded(p, ctx, &ns, &previous, &invalid).await,
    };

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    // Before any pod that mounts it.
    ensure_token(&Api::namespaced(client.clone(), &ns), &desired.token_secret).await?;
    let mut stages = Vec::new();
    for s in &desired.stages {
        apply(&cms, &s.name, &s.config_map).await?;
        match apply(&svcs, &s.name, &s.service).await {
            // `spec.clusterIP` is immutable: a Service that must become headless (parse's,
            // from before parse pods were addressed by name) is replaced. Any other refusal
            // is an error like any other.
            Err(Error::Kube(kube::Error::Api(e)))
                if e.code == 422 && e.message.contains("clusterIP") =>
            {
                warn!(service = %s.name, error = %e.message, "the Service cannot be changed in place; replacing it");
                svcs.delete(&s.name, &DeleteParams::background())
                    .await
                    .map(|_| ())
                    .or_else(api::not_found_is_ok)?;
                apply(&svcs, &s.name, &s.service).await?;
            }
            other => {
                other?;
            }
        }
        // Before the pods: who may reach them.
        apply(&policies, &s.name, &s.network_policy).await?;
        let (desired_replicas, updated, ready) = match &s.workload {
            Workload::Deployment(d) => {
                let applied = apply(&deps, &s.name, d).await?;
                let st = applied.status.unwrap_or_default();
                let current = st.observed_generation >= applied.metadata.generation;
                (
                    s.replicas,
                    if current {
                        st.updated_replicas.unwrap_or(0)
                    } else {
                        0
                    },
                    st.ready_replicas.unwrap_or(0),
                )
            }
            Workload::StatefulSet(d) => {
                let applied = apply(&sts, &s.name, d).await?;
                let st = applied.status.unwrap_or_default();
                let current = st.observed_generation >= applied.metadata.generation;
                (
                    s.replicas,
                    if current {
                        st.updated_replicas.unwrap_or(0)
                    } else {
                        0
                    },
                    st.ready_replicas.unwrap_or(0),
                )
            }
        };
        // Not ready: say why, from its pods (scheduling, image, crash, probe).
        let problem = if ready < desired_replicas || updated < desired_replicas {
            let selector = Selector::from_iter(render::selector_labels(&p.name_any(), s.role));
            let lp = ListParams::default().labels_from(&selector);
            pods::problem(&pods.list(&lp).await?.items)
        } else {
            None
        };
        stages.push(StageStatus {
            name: s.role.to_string(),
            workload: s.workload.kind().into(),
            desired_replicas,
            updated_replicas: updated,
            ready_replicas: ready,
            config_hash: s.config_hash.clone(),
            problem,
        });
    }
    let pruned = prune(&client, &ns, &p.name_any(), &desired).await?;

    let status = healthy_status(p, &previous, stages);
    patch_status(&client, &ns, p, &status).await?;
    announce(ctx, p, &previous, &status, &pruned).await;
    let ready = status.summary == "Ready";
    // Owned workloads wake us on every change; the timer is a safety net.
    Ok(Action::requeue(Duration::from_secs(if ready {
        300
    } else {
        30
    })))
}

/// Delete what this Pipeline's operator made but no longer wants (a removed stage).
async fn prune(
    client: &Client,
    ns: &str,
    name: &str,
    desired: &Desired,
) -> Result<Vec<String>, Error> {
    let lp = ListParams::default().labels(&managed_selector(name));
    let mut pruned = Vec::new();
    async fn sweep<K>(
        api: Api<K>,
        lp: &ListParams,
        desired: &Desired,
        pruned: &mut Vec<String>,
    ) -> Result<(), Error>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let wanted = desired.wanted(&K::kind(&()));
        for obj in api.list(lp).await? {
            let n = obj.name_any();
            if !wanted.contains(&n) {
                api.delete(&n, &DeleteParams::background()).await?;
                pruned.push(format!("{}/{n}", K::kind(&())));
            }
        }
        Ok(())
    }
    sweep(
        Api::<Deployment>::namespaced(client.clone(), ns),
        &lp,
        desired,
        &mut pruned,
    )
    .await?;
    sweep(
        Api::<StatefulSet>::namespaced(client.clone(), ns),
        &lp,
        desired,
        &mut pruned,
    )
    .await?;
    sweep(
        Api::<Service>::namespaced(client.clone(), ns),
        &lp,
        desired,
        &mut pruned,
    )
    .await?;
    sweep(
        Api::<ConfigMap>::namespaced(client.clone(), ns),
        &lp,
        desired,
        &mut pruned,
    )
    .await?;
    sweep(
        Api::<NetworkPolicy>::namespaced(client.clone(), ns),
        &lp,
        desired,
        &mut pruned,
    )
    .await?;
    Ok(pruned)
}

/// A condition, keeping its last transition time while its status holds.
fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn healthy_status(
    p: &Pipeline,
    previous: &PipelineStatus,
    stages: Vec<StageStatus>,
) -> PipelineStatus {
    let generation = p.metadata.generation;
    let ready: Vec<&StageStatus> = stages
        .iter()
        .filter(|s| {
            s.ready_replicas >= s.desired_replicas && s.updated_replicas >= s.desired_replicas
        })
        .collect();
    let all_ready = ready.len() == stages.len();
    let waiting: Vec<String> = stages
        .iter()
        .filter(|s| !ready.iter().any(|r| r.name == s.name))
        .map(|s| {
            let mut line = format!(
                "{} {}/{} ready, {}/{} updated",
                s.name,
                s.ready_replicas,
                s.desired_replicas,
                s.updated_replicas,
                s.desired_replicas
            );
            if let Some(why) = &s.problem {
                line.push_str(&format!(" ({why})"));
            }
            line
        })
        .collect();
    let c = &previous.conditions;
    let conditions = vec![
        if all_ready {
            condition(
                c,
                "Ready",
                true,
                "AllStagesReady",
                format!("all {} stages ready", stages.len()),
                generation,
            )
        } else {
            condition(
                c,
                "Ready",
                false,
                "StagesNotReady",
                waiting.join("; "),
                generation,
            )
        },
        if all_ready {
            condition(
                c,
                "Progressing",
                false,
                "RolloutComplete",
                "every stage runs its current config".into(),
                generation,
            )
        } else {
            condition(
                c,
                "Progressing",
                true,
                "RollingOut",
                waiting.join("; "),
                generation,
            )
        },
        condition(
            c,
            "Degraded",
            false,
            "AsExpected",
            "the spec is valid and applied".into(),
            generation,
        ),
    ];
    PipelineStatus {
        observed_generation: generation,
        ready_stages: format!("{}/{}", ready.len(), stages.len()),
        summary: if all_ready { "Ready" } else { "Progressing" }.into(),
        stages,
        conditions,
    }
}

async fn degraded(
    p: &Pipeline,
    ctx: &Context,
    ns: &str,
    previous: &PipelineStatus,
    invalid: &InvalidSpec,
) -> Result<Action, Error> {
    let generation = p.metadata.generation;
    let c = &previous.conditions;
    let message = format!("invalid spec: {invalid}");
    let status = PipelineStatus {
        observed_generation: generation,
        ready_stages: previous.ready_stages.clone(),
        summary: "Degraded".into(),
        stages: previous.stages.clone(),
        conditions: vec![
            condition(
                c,
                "Ready",
                false,
                "InvalidSpec",
                message.clone(),
                generation,
            ),
            condition(
                c,
                "Progressing",
                false,
                "InvalidSpec",
                "nothing is applied until the spec is fixed".into(),
                generation,
            ),
            condition(
                c,
                "Degraded",
                true,
                "InvalidSpec",
                message.clone(),
                generation,
            ),
        ],
    };
    let was_same = previous
        .conditions
        .iter()
        .any(|c| c.type_ == "Degraded" && c.status == "True" && c.message == message);
    patch_status(&ctx.client, ns, p, &status).await?;
    if !was_same {
        warn!(%invalid, "invalid spec");
        publish(
            ctx,
            p,
            EventType::Warning,
            "InvalidSpec",
            "Validate",
            message,
        )
        .await;
    }
    // Nothing to retry: a new spec wakes the controller.
    Ok(Action::await_change())
}

async fn patch_status(
    client: &Client,
    ns: &str,
    p: &Pipeline,
    status: &PipelineStatus,
) -> Result<(), Error> {
    Ok(api::apply_status(client, ns, p, status).await?)
}

/// Events for what changed since the previous status.
async fn announce(
    ctx: &Context,
    p: &Pipeline,
    previous: &PipelineStatus,
    status: &PipelineStatus,
    pruned: &[String],
) {
    if previous.stages.is_empty() {
        let names: Vec<&str> = status.stages.iter().map(|s| s.name.as_str()).collect();
        publish(
            ctx,
            p,
            EventType::Normal,
            "Created",
            "Apply",
            format!("created stages {}", names.join(", ")),
        )
        .await;
    } else {
        for s in &status.stages {
            match previous.stages.iter().find(|o| o.name == s.name) {
                Some(old) if old.config_hash != s.config_hash => {
                    let note = format!(
                        "stage {}: config changed ({} -> {}), rolling its pods",
                        s.name, old.config_hash, s.config_hash
                    );
                    info!("{note}");
                    publish_stage(ctx, p, s, "RollingOut", note).await;
                }
                None => {
                    publish_stage(ctx, p, s, "StageAdded", format!("stage {} added", s.name)).await
                }
                _ => {}
            }
        }
    }
    if !pruned.is_empty() {
        publish(
            ctx,
            p,
            EventType::Normal,
            "StageRemoved",
            "Prune",
            format!("deleted {}", pruned.join(", ")),
        )
        .await;
    }
    let was_ready = previous.summary == "Ready";
    if status.summary == "Ready" && !was_ready {
        publish(
            ctx,
            p,
            EventType::Normal,
            "Ready",
            "Reconcile",
            format!("all {} stages ready", status.stages.len()),
        )
        .await;
    }
}

/// Run the controller until `shutdown` resolves. Watches Pipelines (in `namespace`, or every
/// namespace) and the workloads it owns, so rollouts wake it.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let pipelines: Api<Pipeline> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let (deps, sts) = match &namespace {
        Some(ns) => (
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<StatefulSet>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::<Deployment>::all(client.clone()),
            Api::<StatefulSet>::all(client.clone()),
        ),
    };
    let ctx = Context::new(client, metrics);
    Controller::new(pipelines, watcher::Config::default().any_semantic())
        .owns(deps, owned.clone())
        .owns(sts, owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| {
            health.observe("pipelines", res);
            std::future::ready(())
        })
        .await;
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
