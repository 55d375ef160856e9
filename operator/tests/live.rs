//! The live-cluster suite: against a real cluster (`make e2e`, with KUBECONFIG set and the
//! images available to it). Ignored by `cargo test`; `make e2e` says when it skips it.
//!
//! It applies the CRD, runs the controller in-process against a fresh namespace, applies the
//! sample Pipeline, and asserts the objects, the Ready status, a rollout of exactly one stage
//! after a knob change, and that deleting the Pipeline deletes everything it owned.
//!
//! The Experiment test needs `make up`'s Prometheus (it scrapes namespace `observatory`) reachable
//! at `E2E_PROMETHEUS_URL` (`deploy/cluster.sh e2e` port-forwards it): it runs a short lab-02
//! Experiment (2 pairs of 15 s windows) in that namespace with both controllers in-process, and
//! asserts every run was measured from Prometheus with events and no losses, a verdict in the
//! status, and no run Pipeline left behind.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use operator::crd::Pipeline;
use operator::experiment::Experiment;
use operator::metrics::Metrics;
use operator::render::{CONFIG_HASH, MANAGER, managed_selector};
use std::sync::Arc;
use std::time::Duration;

const SAMPLE: &str = include_str!("../../deploy/samples/pipeline-demo.yaml");
const EXPERIMENT: &str = include_str!("../../deploy/experiments/lab-02-batching.yaml");

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
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

fn template_hash(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[CONFIG_HASH]
        .clone()
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster: `make e2e` with KUBECONFIG set"]
async fn a_pipeline_lives_on_a_real_cluster() {
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG points at a reachable cluster");
    let ssa = PatchParams::apply("observatory-e2e").force();

    // The CRD, established.
    establish::<Pipeline>(&client).await;

    // A fresh namespace that enforces the restricted Pod Security profile.
    let ns = format!("observatory-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns_obj: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}
    }))
    .unwrap();
    namespaces
        .patch(&ns, &ssa, &Patch::Apply(&ns_obj))
        .await
        .unwrap();

    // The controller, in-process, watching that namespace.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(operator::controller::run(
        client.clone(),
        Arc::new(Metrics::new()),
        Some(ns.clone()),
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));

    // The sample Pipeline, in the test namespace, with the image under test.
    let mut p: Pipeline = yaml_serde::from_str(SAMPLE).unwrap();
    p.metadata.namespace = Some(ns.clone());
    if let Ok(image) = std::env::var("E2E_PIPELINE_IMAGE") {
        p.spec.image = image;
    }
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    pipelines
        .patch("demo", &ssa, &Patch::Apply(&p))
        .await
        .unwrap();

    // Objects, owned by the Pipeline.
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let selector = ListParams::default().labels(&managed_selector("demo"));
    wait_for("the rendered objects", Duration::from_secs(60), || async {
        deps.list(&selector)
            .await
            .map(|l| l.items.len())
            .unwrap_or(0)
            == 2
            && sts
                .list(&selector)
                .await
                .map(|l| l.items.len())
                .unwrap_or(0)
                == 2
            && svcs
                .list(&selector)
                .await
                .map(|l| l.items.len())
                .unwrap_or(0)
                == 4
            && cms
                .list(&selector)
                .await
                .map(|l| l.items.len())
                .unwrap_or(0)
                == 4
    })
    .await;
    let parse = deps.get("demo-parse").await.unwrap();
    assert_eq!(parse.owner_references()[0].kind, "Pipeline");
    assert!(
        parse
            .managed_fields()
            .iter()
            .any(|f| f.manager.as_deref() == Some(MANAGER))
    );

    // Ready, with the status the operator computed.
    wait_for(
        "the Pipeline to be Ready",
        Duration::from_secs(300),
        || async {
            pipelines
                .get_status("demo")
                .await
                .ok()
                .and_then(|p| p.status)
                .is_some_and(|s| s.summary == "Ready")
        },
    )
    .await;
    let status = pipelines.get_status("demo").await.unwrap().status.unwrap();
    assert_eq!(status.ready_stages, "4/4");
    assert_eq!(status.observed_generation, Some(1));

    // A knob change rolls the parse stage, and only it.
    let source_hash = template_hash(&deps.get("demo-source").await.unwrap());
    let parse_hash = template_hash(&parse);
    let patch = serde_json::json!({"spec": {"parse": {"knobs": {"mode": "owned"}}}});
    pipelines
        .patch("demo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(
        "the parse stage to roll out with the new config",
        Duration::from_secs(300),
        || async {
            let d = deps.get("demo-parse").await.unwrap();
            let st = d.status.clone().unwrap_or_default();
            template_hash(&d) != parse_hash
                && st.observed_generation == d.metadata.generation
                && st.updated_replicas == Some(2)
                && st.ready_replicas == Some(2)
        },
    )
    .await;
    assert_eq!(
        template_hash(&deps.get("demo-source").await.unwrap()),
        source_hash,
        "the source did not roll"
    );
    wait_for(
        "the status of generation 2",
        Duration::from_secs(120),
        || async {
            pipelines
                .get_status("demo")
                .await
                .ok()
                .and_then(|p| p.status)
                .is_some_and(|s| s.observed_generation == Some(2) && s.summary == "Ready")
        },
    )
    .await;

    // Deleting the Pipeline deletes what it owned.
    pipelines
        .delete("demo", &DeleteParams::foreground())
        .await
        .unwrap();
    wait_for(
        "garbage collection of the stages",
        Duration::from_secs(120),
        || async {
            deps.list(&selector)
                .await
                .map(|l| l.items.is_empty())
                .unwrap_or(false)
                && sts
                    .list(&selector)
                    .await
                    .map(|l| l.items.is_empty())
                    .unwrap_or(false)
                && cms
                    .list(&selector)
                    .await
                    .map(|l| l.items.is_empty())
                    .unwrap_or(false)
        },
    )
    .await;

    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), controller).await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
}

async fn establish<K: CustomResourceExt>(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = K::crd();
    let name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &name,
        &PatchParams::apply("observatory-e2e").force(),
        &Patch::Apply(crd),
    )
    .await
    .unwrap();
    wait_for(
        &format!("{name} to be established"),
        Duration::from_secs(60),
        || async {
            crds.get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .is_some_and(|s| {
                    s.conditions
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with `make up`'s Prometheus: `make e2e` with KUBECONFIG set"]
async fn an_experiment_measures_both_sides_on_a_real_cluster() {
    let prometheus = std::env::var("E2E_PROMETHEUS_URL")
        .expect("E2E_PROMETHEUS_URL: the cluster's Prometheus (deploy/cluster.sh e2e sets it)");
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG points at a reachable cluster");
    establish::<Pipeline>(&client).await;
    establish::<Experiment>(&client).await;
    // Prometheus scrapes namespace observatory: the experiment runs there.
    let ns = "observatory";
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let metrics = Arc::new(Metrics::new());
    let pipelines_task = tokio::spawn(operator::controller::run(
        client.clone(),
        metrics.clone(),
        Some(ns.into()),
        stop(),
    ));
    let experiments_task = tokio::spawn(operator::experiment_controller::run(
        client.clone(),
        metrics,
        Some(ns.into()),
        operator::results::Prometheus { url: prometheus },
        None,
        stop(),
    ));

    let mut e: Experiment = yaml_serde::from_str(EXPERIMENT).unwrap();
    let name = format!("e2e-{}", std::process::id());
    e.metadata.name = Some(name.clone());
    e.spec.pairs = 2;
    e.spec.warmup_seconds = 5;
    e.spec.run_seconds = 15;
    if let Ok(image) = std::env::var("E2E_PIPELINE_IMAGE") {
        e.spec.pipeline.image = image;
    }
    let experiments: Api<Experiment> = Api::namespaced(client.clone(), ns);
    experiments
        .patch(
            &name,
            &PatchParams::apply("observatory-e2e").force(),
            &Patch::Apply(&e),
        )
        .await
        .unwrap();
    wait_for(
        "the experiment to finish",
        Duration::from_secs(900),
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
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), ns);
    let left = pipelines
        .list(&ListParams::default().labels(&format!("observatory.dev/experiment={name}")))
        .await
        .unwrap();
    assert!(
        left.items.is_empty(),
        "run pipelines are deleted after their window"
    );

    let _ = experiments.delete(&name, &DeleteParams::foreground()).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), pipelines_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), experiments_task).await;
}
