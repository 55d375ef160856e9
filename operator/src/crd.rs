//! The `Pipeline` custom resource, `observatory.dev/v1alpha1`.
//!
//! A Pipeline lists its stages with their replicas, image, resources and typed knobs — the very
//! knob structs the pipeline processes and the local runner use (`pipeline-plan`), so the
//! schema the API server enforces (enums, ranges) is the one the code validates. CEL rules
//! cover what spans fields: the stages must form a contiguous chain, and the sink is a single
//! log writer.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use pipeline_plan::{AggregateKnobs, ParseKnobs, SinkKnobs, SourceKnobs};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The API group.
pub const GROUP: &str = "observatory.dev";

/// A streaming pipeline of observatory stages: source → parse → aggregate → sink.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "observatory.dev",
    version = "v1alpha1",
    kind = "Pipeline",
    namespaced,
    shortname = "pl",
    status = "PipelineStatus",
    cel,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.readyStages","description":"Stages ready / stages"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.summary","description":"Ready, Progressing or Degraded"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!has(self.aggregate) || has(self.parse)").message("an aggregate stage needs a parse stage before it"))]
#[x_kube(validation = Rule::new("!has(self.sink) || has(self.aggregate)").message("a sink needs an aggregate stage before it"))]
#[x_kube(validation = Rule::new("!has(self.sink) || !has(self.sink.replicas) || self.sink.replicas == 1").message("the sink writes one log: spec.sink.replicas must be 1"))]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    /// Container image of the stages (a stage may override it).
    pub image: String,
    /// Image pull policy of the stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Constant labels on every metric of every stage, e.g. `run: baseline`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// OTLP/HTTP endpoint for the stages' traces (sets `OTEL_EXPORTER_OTLP_ENDPOINT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Size of the sink's volume (default 1Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_storage: Option<Quantity>,
    pub source: StageSpec<SourceKnobs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse: Option<StageSpec<ParseKnobs>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<StageSpec<AggregateKnobs>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<StageSpec<SinkKnobs>>,
}

/// How the kubelet pulls images.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

fn one() -> i32 {
    1
}

/// One stage: how many pods, which image, what resources, which knobs.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(bound = "K: JsonSchema + Default + Serialize")]
pub struct StageSpec<K> {
    /// Pods of this stage. The aggregate is partitioned by key across its pods; the sink has 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub replicas: i32,
    /// Image of this stage, if not `spec.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory of each pod (defaults: requests 100m CPU, 64Mi memory; limit 384Mi memory,
    /// room for a CPU profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The stage's knobs (`observatory knobs` lists them with their defaults).
    #[serde(default)]
    pub knobs: K,
}

impl<K: Default> Default for StageSpec<K> {
    fn default() -> Self {
        StageSpec {
            replicas: 1,
            image: None,
            resources: None,
            knobs: K::default(),
        }
    }
}

/// What the operator observed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Stages with all pods ready, over stages, e.g. `3/4`.
    #[serde(default)]
    pub ready_stages: String,
    /// `Ready`, `Progressing` or `Degraded`.
    #[serde(default)]
    pub summary: String,
    /// Per stage: desired, updated and ready pods.
    #[serde(default)]
    pub stages: Vec<StageStatus>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The observed state of one stage.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    pub name: String,
    /// `Deployment` or `StatefulSet`.
    pub workload: String,
    pub desired_replicas: i32,
    pub updated_replicas: i32,
    pub ready_replicas: i32,
    /// Hash of the stage's config; a new hash rolls the stage's pods.
    pub config_hash: String,
}

/// The CRDs as YAML (`Pipeline`, then `Experiment`), with a header saying where they come from.
pub fn crd_yaml() -> Result<String, yaml_serde::Error> {
    use kube::CustomResourceExt;
    let pipeline = yaml_serde::to_string(&Pipeline::crd())?;
    let experiment = yaml_serde::to_string(&crate::experiment::Experiment::crd())?;
    Ok(format!(
        "# Generated by `cargo run -p operator --bin crdgen -- --out deploy/base/crd.yaml`: do not edit.\n{pipeline}---\n{experiment}"
    ))
}
