//! The live-cluster suite: against a real cluster after `make up` (`make e2e`, with KUBECONFIG
//! set and the images available to it). Ignored by `cargo test`; `make e2e` says when it skips.
//!
//! It tests what is deployed: `make up`'s operator reconciles (no controller runs in this
//! process, so nothing fights the deployed one). Its Pipelines ask for little CPU (10m a stage),
//! so they fit beside the demo on a 2-CPU node. Whatever a test creates is deleted when it ends,
//! passed or failed.
//!
//! - A Pipeline in a fresh namespace (restricted Pod Security): its objects, Ready 4/4, a knob
//!   change rolling exactly the parse stage, an unknown knob refused by name, and a foreground
//!   delete that completes (stages gone, then the Pipeline).
//! - An Experiment in namespace `observatory` (where `make up`'s Prometheus scrapes; reached at
//!   `E2E_PROMETHEUS_URL`, which `deploy/cluster.sh e2e` port-forwards): every run measured with
//!   events and no losses, a verdict, one RunMeasured event per run, no run Pipeline left.

use futures::FutureExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ResourceRequirements, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use operator::experiment::Experiment;
use operator::pipeline::crd::{Pipeline, PipelineSpec};
use operator::pipeline::render::{CONFIG_HASH, MANAGER, managed_selector};
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

const SAMPLE: &str = include_str!("../../deploy/samples/pipeline-demo.yaml");
const EXPERIMENT: &str = include_str!("../../deploy/experiments/lab-02-batching.yaml");
const FIELD_MANAGER: &str = "observatory-e2e";

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Run `body`, then `cleanup` whether `body` passed or panicked, then pass the panic on.
async fn with_cleanup(body: impl Future<Output = ()>, cleanup: impl Future<Output = ()>) {
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    cleanup.await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn client() -> Client {
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG points at a reachable cluster");
    // The deployed operator is what is tested.
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "observatory");
    let op = deps.get_opt("observatory-operator").await.unwrap();
    let available = op
        .and_then(|d| d.status)
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    assert!(
        available > 0,
        "no available observatory-operator in namespace observatory: run `make up` first"
    );
    client
}

/// Small requests, so a test's stages fit beside the demo on a 2-CPU node.
fn small(spec: &mut PipelineSpec) {
    let r = || {
        Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("10m".into())),
                ("memory".to_string(), Quantity("32Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("384Mi".into()),
            )])),
            ..Default::default()
        })
    };
    spec.source.resources = r();
    if let Some(s) = spec.parse.as_mut() {
        s.resources = r();
    }
    if let Some(s) = spec.aggregate.as_mut() {
        s.resources = r();
    }
    if let Some(s) = spec.sink.as_mut() {
        s.resources = r();
    }
    if let Ok(image) = std::env::var("E2E_PIPELINE_IMAGE") {
        spec.image = image;
    }
}

/// `kubectl patch pipeline demo --type merge` of parse's knobs.
async fn set_parse_knobs(pipelines: &Api<Pipeline>, knobs: serde_json::Value) {
    let patch = serde_json::json!({"spec": {"parse": {"knobs": knobs}}});
    pipelines
        .patch("demo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Objects the selector finds (`usize::MAX` when the list fails, which no check expects).
async fn how_many<K>(api: &Api<K>, lp: &ListParams) -> usize
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(lp)
        .await
        .map(|l| l.items.len())
        .unwrap_or(usize::MAX)
}

fn template_hash(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> String {
    template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[CONFIG_HASH]
        .clone()
}

async fn dep_hash(deps: &Api<Deployment>, name: &str) -> String {
    template_hash(&deps.get(name).await.unwrap().spec.unwrap().template)
}

async fn sts_hash(sts: &Api<StatefulSet>, name: &str) -> String {
    template_hash(&sts.get(name).await.unwrap().spec.unwrap().template)
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster after `make up`: `make e2e` with KUBECONFIG set"]
async fn a_pipeline_lives_on_a_real_cluster() {
    let client = client().await;
    let ns = format!("observatory-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns_obj: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}
    }))
    .unwrap();
    let ssa = PatchParams::apply(FIELD_MANAGER).force();
    namespaces
        .patch(&ns, &ssa, &Patch::Apply(&ns_obj))
        .await
        .unwrap();
    let cleanup = {
        let namespaces = namespaces.clone();
        let ns = ns.clone();
        async move {
            let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
        }
    };
    with_cleanup(pipeline_scenario(client, ns), cleanup).await;
}

async fn pipeline_scenario(client: Client, ns: String) {
    let ssa = PatchParams::apply(FIELD_MANAGER).force();
    let mut p: Pipeline = yaml_serde::from_str(SAMPLE).unwrap();
    p.metadata.namespace = Some(ns.clone());
    small(&mut p.spec);
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    pipelines
        .patch("demo", &ssa, &Patch::Apply(&p))
        .await
        .unwrap();

    // Objects, owned by the Pipeline and applied by the operator.
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let nps: Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
        Api::namespaced(client.clone(), &ns);
    let selector = ListParams::default().labels(&managed_selector("demo"));
    wait_for("the rendered objects", Duration::from_secs(60), || async {
        how_many(&deps, &selector).await == 1
            && how_many(&sts, &selector).await == 3
            && how_many(&svcs, &selector).await == 4
            && how_many(&cms, &selector).await == 4
            && how_many(&nps, &selector).await == 4
    })
    .await;
    // The pipeline's token, made once by the operator.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let token = secrets.get("demo-token").await.unwrap();
    assert_eq!(token.data.unwrap()["token"].0.len(), 64);
    let parse = sts.get("demo-parse").await.unwrap();
    assert_eq!(parse.owner_references()[0].kind, "Pipeline");
    assert!(
        parse
            .managed_fields()
            .iter()
            .any(|f| f.manager.as_deref() == Some(MANAGER))
    );

    // Ready, with the status the operator computed.
    let ready = |generation: i64| {
        let pipelines = pipelines.clone();
        async move {
            pipelines
                .get_status("demo")
                .await
                .ok()
                .and_then(|p| p.status)
                .is_some_and(|s| s.summary == "Ready" && s.observed_generation == Some(generation))
        }
    };
    wait_for("the Pipeline to be Ready", Duration::from_secs(300), || {
        ready(1)
    })
    .await;
    let status = pipelines.get_status("demo").await.unwrap().status.unwrap();
    assert_eq!(status.ready_stages, "4/4");

    // A knob change rolls the parse stage, and only it.
    let source_hash = dep_hash(&deps, "demo-source").await;
    let parse_hash = sts_hash(&sts, "demo-parse").await;
    let agg_hash = sts_hash(&sts, "demo-aggregate").await;
    set_parse_knobs(&pipelines, serde_json::json!({"mode": "owned"})).await;
    wait_for(
        "the parse stage to roll out with the new config",
        Duration::from_secs(300),
        || async {
            let s = sts.get("demo-parse").await.unwrap();
            let st = s.status.clone().unwrap_or_default();
            template_hash(&s.spec.clone().unwrap().template) != parse_hash
                && st.observed_generation == s.metadata.generation
                && st.updated_replicas == Some(2)
                && st.ready_replicas == Some(2)
        },
    )
    .await;
    assert_eq!(
        dep_hash(&deps, "demo-source").await,
        source_hash,
        "the source did not roll"
    );
    assert_eq!(
        sts_hash(&sts, "demo-aggregate").await,
        agg_hash,
        "the aggregate did not roll"
    );
    wait_for(
        "the status of generation 2",
        Duration::from_secs(120),
        || ready(2),
    )
    .await;

    // An unknown knob is refused by name, and nothing is applied.
    set_parse_knobs(&pipelines, serde_json::json!({"workerz": 4})).await;
    wait_for(
        "the Pipeline to be Degraded",
        Duration::from_secs(60),
        || async {
            pipelines
                .get_status("demo")
                .await
                .ok()
                .and_then(|p| p.status)
                .is_some_and(|s| {
                    s.summary == "Degraded"
                        && s.conditions
                            .iter()
                            .any(|c| c.message.contains("spec.parse.knobs.workerz"))
                })
        },
    )
    .await;

    // A foreground delete completes: the stages go, then the Pipeline (the operator does not
    // re-apply what the garbage collector deletes).
    pipelines
        .delete("demo", &DeleteParams::foreground())
        .await
        .unwrap();
    wait_for(
        "the Pipeline and its stages to be gone",
        Duration::from_secs(180),
        || async {
            pipelines.get_opt("demo").await.ok().flatten().is_none()
                && how_many(&deps, &selector).await == 0
                && how_many(&sts, &selector).await == 0
                && how_many(&cms, &selector).await == 0
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster after `make up`: `make e2e` with KUBECONFIG set"]
async fn an_experiment_measures_both_sides_on_a_real_cluster() {
    std::env::var("E2E_PROMETHEUS_URL")
        .expect("E2E_PROMETHEUS_URL: the cluster's Prometheus (deploy/cluster.sh e2e sets it)");
    let client = client().await;
    // Prometheus scrapes namespace observatory: the experiment runs there.
    let ns = "observatory";
    let name = format!("e2e-{}", std::process::id());
    let experiments: Api<Experiment> = Api::namespaced(client.clone(), ns);
    let cleanup = {
        let experiments = experiments.clone();
        let name = name.clone();
        async move {
            let _ = experiments.delete(&name, &DeleteParams::foreground()).await;
        }
    };
    with_cleanup(experiment_scenario(client, name), cleanup).await;
}

async fn experiment_scenario(client: Client, name: String) {
    let ns = "observatory";
    let experiments: Api<Experiment> = Api::namespaced(client.clone(), ns);
    let mut e: Experiment = yaml_serde::from_str(EXPERIMENT).unwrap();
    e.metadata.name = Some(name.clone());
    e.spec.pairs = 2;
    e.spec.warmup_seconds = 5;
    e.spec.run_seconds = 15;
    small(&mut e.spec.pipeline);
    experiments
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&e),
        )
        .await
        .unwrap();
    wait_for(
        "the experiment to finish",
        Duration::from_secs(1200),
        || async {
            experiments
                .get_status(&name)
                .await
                .ok()
                .and_then(|e| e.status)
                .is_some_and(|s| s.phase == "Succeeded" || s.phase == "Failed")
        },
    )
    .await;
    let status = experiments.get_status(&name).await.unwrap().status.unwrap();
    assert_eq!(status.phase, "Succeeded", "{}", status.message);
    assert_eq!(status.runs.len(), 4);
    for r in &status.runs {
        assert_eq!(r.phase, "Measured", "{r:?}");
        assert!(r.value.unwrap() > 0.0 && r.events.unwrap() > 0.0, "{r:?}");
        assert!(r.lost.unwrap() < 0.5, "{r:?}");
    }
    let result = status.result.expect("a verdict");
    eprintln!("experiment {name}: {} ({})", result.summary, result.verdict);

    // One event per measured run, each naming its run.
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let measured: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|ev| {
            ev.reason.as_deref() == Some("RunMeasured")
                && ev.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
        })
        .filter_map(|ev| ev.related.and_then(|r| r.name))
        .collect();
    assert_eq!(measured.len(), 4, "{measured:?}");

    // The run Pipelines are gone (each deleted after its window, waited for before the next).
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), ns);
    wait_for("no run pipeline left", Duration::from_secs(120), || async {
        pipelines
            .list(&ListParams::default().labels(&format!("observatory.dev/experiment={name}")))
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(false)
    })
    .await;
}
