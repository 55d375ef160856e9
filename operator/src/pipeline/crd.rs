//! The `Pipeline` custom resource, `observatory.dev/v1alpha1`.
//!
//! A Pipeline lists its stages with their replicas, image, resources and typed knobs — the very
//! knob structs the pipeline processes and the local runner use (`pipeline-plan`), so the
//! schema the API server enforces (enums, ranges) is the one the code validates. CEL rules
//! cover what spans fields: the stages must form a contiguous chain, and the sink is a single
//! log writer.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use pipeline_plan::{AggregateKnobs, Knobs, ParseKnobs, SinkKnobs, SourceKnobs};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

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
#[serde(rename_all = "camelCase", bound(deserialize = "K: Knobs"))]
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
    /// The stage's knobs (`observatory knobs` lists them with their defaults). A key that is not
    /// a knob of the stage is kept, and refused by the operator (the Pipeline turns `Degraded`
    /// naming it) instead of being dropped.
    #[serde(default)]
    pub knobs: SpecKnobs<K>,
}

impl<K: Default> Default for StageSpec<K> {
    fn default() -> Self {
        StageSpec {
            replicas: 1,
            image: None,
            resources: None,
            knobs: SpecKnobs::default(),
        }
    }
}

/// A stage's knobs as a spec holds them: the typed knobs, and the keys that are not knobs of
/// the stage.
///
/// The API server prunes fields its schema does not know, with only a warning to the client
/// (`kubectl patch` shows it; an operator or a script never sees it), so a misspelt knob would
/// silently run with the default. The knobs' schema therefore keeps unknown fields
/// (`x-kubernetes-preserve-unknown-fields`), reading one is never an error (a single bad
/// object must not break the operator's watch of every Pipeline), and rendering refuses it by
/// name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpecKnobs<K> {
    pub knobs: K,
    /// Keys of the spec's `knobs` that this stage does not have, in the order written.
    pub unknown: Vec<String>,
}

impl<K> From<K> for SpecKnobs<K> {
    fn from(knobs: K) -> Self {
        SpecKnobs {
            knobs,
            unknown: Vec::new(),
        }
    }
}

impl<K> Deref for SpecKnobs<K> {
    type Target = K;
    fn deref(&self) -> &K {
        &self.knobs
    }
}

impl<K> DerefMut for SpecKnobs<K> {
    fn deref_mut(&mut self) -> &mut K {
        &mut self.knobs
    }
}

impl<'de, K: Knobs> Deserialize<'de> for SpecKnobs<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = serde_json::Map::<String, Value>::deserialize(d)?;
        let known = K::names();
        let unknown: Vec<String> = map.keys().filter(|k| !known.contains(k)).cloned().collect();
        for k in &unknown {
            map.remove(k);
        }
        let knobs = K::deserialize(Value::Object(map)).map_err(serde::de::Error::custom)?;
        Ok(SpecKnobs { knobs, unknown })
    }
}

impl<K: Serialize> Serialize for SpecKnobs<K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.knobs.serialize(s)
    }
}

impl<K: JsonSchema> JsonSchema for SpecKnobs<K> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("{}InSpec", K::schema_name()).into()
    }

    fn inline_schema() -> bool {
        K::inline_schema()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = K::json_schema(generator);
        schema.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
        schema
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
    /// Why the stage is not ready, from its pods (e.g. `pod demo-sink-0: not scheduled
    /// (Unschedulable): 0/1 nodes are available: 1 Insufficient cpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The integer formats a Kubernetes API server recognizes. Others (`uint32`, `uint64`, which
/// schemars writes for Rust's unsigned types) draw `unrecognized format` warnings on every
/// apply of the CRD (seen on Kubernetes 1.36).
pub const INTEGER_FORMATS: [&str; 2] = ["int32", "int64"];

/// Rewrite what schemars generates into what a Kubernetes API server takes without warnings:
/// an unsigned format becomes `int64` with its range as `minimum`/`maximum` (the API server
/// stores integers as int64 anyway).
fn kubernetes_formats(v: &mut Value) {
    match v {
        Value::Object(map) => {
            // The largest value of the type, where int64 does not already bound it.
            let max = match map.get("format").and_then(Value::as_str) {
                Some("uint8") => Some(Some(u64::from(u8::MAX))),
                Some("uint16") => Some(Some(u64::from(u16::MAX))),
                Some("uint32") => Some(Some(u64::from(u32::MAX))),
                Some("uint64" | "uint") => Some(None),
                _ => None,
            };
            if let Some(max) = max {
                map.insert("format".into(), "int64".into());
                let low = map.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
                map.insert("minimum".into(), low.max(0.0).into());
                let high = map
                    .get("maximum")
                    .and_then(Value::as_f64)
                    .unwrap_or(f64::INFINITY);
                if let Some(max) = max.filter(|m| (*m as f64) < high) {
                    map.insert("maximum".into(), max.into());
                }
            }
            map.values_mut().for_each(kubernetes_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(kubernetes_formats),
        _ => {}
    }
}

fn for_kubernetes(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let mut v = serde_json::to_value(&crd).expect("a CRD serializes");
    kubernetes_formats(&mut v);
    serde_json::from_value(v).expect("the rewritten CRD is still a CRD")
}

/// Both CRDs as the cluster gets them (`Pipeline`, then `Experiment`): use these, not
/// `CustomResourceExt::crd()`, whose formats a real API server warns about.
pub fn crds() -> [CustomResourceDefinition; 2] {
    use kube::CustomResourceExt;
    [
        for_kubernetes(Pipeline::crd()),
        for_kubernetes(crate::experiment::Experiment::crd()),
    ]
}

/// The CRDs as YAML (`Pipeline`, then `Experiment`), with a header saying where they come from.
pub fn crd_yaml() -> Result<String, yaml_serde::Error> {
    let [pipeline, experiment] = crds();
    let pipeline = yaml_serde::to_string(&pipeline)?;
    let experiment = yaml_serde::to_string(&experiment)?;
    Ok(format!(
        "# Generated by `cargo run -p operator --bin crdgen -- --out deploy/base/crd.yaml`: do not edit.\n{pipeline}---\n{experiment}"
    ))
}
