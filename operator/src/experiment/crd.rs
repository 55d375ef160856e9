//! The `Experiment` custom resource: its spec (the workload, the two sides, the metric and the
//! effect that passes) and its status (every run, then the verdict). The logic that moves it
//! along is in [`super::machine`].

use crate::pipeline::crd::PipelineSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An A/B measurement of two configurations of a pipeline on the cluster.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "observatory.dev",
    version = "v1alpha1",
    kind = "Experiment",
    namespaced,
    shortname = "exp",
    status = "ExperimentStatus",
    cel,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Runs","type":"string","jsonPath":".status.progress","description":"Runs measured / runs"}"#,
    printcolumn = r#"{"name":"Metric","type":"string","jsonPath":".spec.metric"}"#,
    printcolumn = r#"{"name":"Ratio","type":"string","jsonPath":".status.result.summary","description":"B/A with its 95% interval"}"#,
    printcolumn = r#"{"name":"Passed","type":"boolean","jsonPath":".status.result.passed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentSpec {
    /// The course lab this measures (informative; `observatory lab check N --k8s` sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 99))]
    pub lab: Option<u32>,
    /// The pipeline both sides start from: the workload. Its source is made unbounded
    /// (`events` and `durationSeconds` 0): the measurement window bounds each run.
    pub pipeline: PipelineSpec,
    /// What the baseline changes on the pipeline.
    #[serde(default)]
    pub baseline: Side,
    /// What the variant changes on the pipeline.
    #[serde(default)]
    pub variant: Side,
    /// The metric compared, B/A.
    #[schemars(schema_with = "run_metric_schema")]
    pub metric: Metric,
    /// The smallest effect that passes, as a fraction: 1.0 with a higher-is-better metric means
    /// the interval of B/A must lie above 2.0; 0.3 with a lower-is-better one, below 0.7.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub min_effect: f64,
    /// Runs per side (interleaved baseline, variant, baseline, …).
    #[serde(default = "default_pairs")]
    #[schemars(range(min = 2, max = 20))]
    pub pairs: u32,
    /// Seconds between a run's pipeline becoming Ready and its measurement window.
    #[serde(default = "default_warmup")]
    #[schemars(range(min = 0, max = 600))]
    pub warmup_seconds: u32,
    /// Length of each run's measurement window.
    #[serde(default = "default_run_seconds")]
    #[schemars(range(min = 15, max = 3600))]
    pub run_seconds: u32,
    /// A run whose pipeline is not Ready this long after it was created fails the experiment.
    #[serde(default = "default_ready_timeout")]
    #[schemars(range(min = 30, max = 3600))]
    pub ready_timeout_seconds: u32,
    /// Post the verdict to a cohort leaderboard as the verification of one student's
    /// submission (the verified tier): `observatory leaderboard verify --k8s` sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaderboard: Option<LeaderboardTarget>,
}

/// Where an Experiment's verdict is posted, and as whom.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaderboardTarget {
    /// The leaderboard server, e.g. `http://leaderboard.observatory.svc:8088`.
    #[schemars(length(min = 8, max = 2048), pattern(r"^https?://[^\s]+$"))]
    pub url: String,
    /// The cohort.
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9._-]{1,64}$"))]
    pub cohort: String,
    /// The submission this Experiment re-runs.
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9._-]{1,64}$"))]
    pub submission: String,
    /// A Secret in the Experiment's namespace whose key `token` holds the cohort's instructor
    /// token (read when the verdict is posted). It must carry the label
    /// `observatory.dev/leaderboard-token=true`: no other Secret is ever sent.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    )]
    pub token_secret: String,
}

fn default_pairs() -> u32 {
    3
}
fn default_warmup() -> u32 {
    15
}
fn default_run_seconds() -> u32 {
    60
}
fn default_ready_timeout() -> u32 {
    300
}

/// One side of the comparison.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Side {
    /// Knob assignments, `stage.knob=value` (`all.knob=value` for every stage that has it,
    /// `stage.replicas=N`), as in `observatory run --set`.
    #[serde(default)]
    pub set: Vec<String>,
    /// The image of this side's stages, if not the pipeline's (a code lab: the student's build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// The metric compared: one of the catalogue's metrics (`observatory_stats::Metric`, the names
/// of the local A/B engine) that the cluster's Prometheus answers for a window.
pub use observatory_stats::Metric;

/// The schema of `spec.metric`: the names of the catalogue's run metrics.
fn run_metric_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = Metric::of_a_window().map(Metric::as_str).collect();
    schemars::json_schema!({
        "description": "The metric compared, B/A (a metric of the catalogue measured over a window).",
        "type": "string",
        "enum": names,
    })
}

/// What the operator observed and concluded.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Running`, `Succeeded` (measured; see `result.passed`) or `Failed` (not measured).
    #[serde(default)]
    pub phase: String,
    /// Runs measured / runs, e.g. `3/6`.
    #[serde(default)]
    pub progress: String,
    /// What is happening now, or why it failed.
    #[serde(default)]
    pub message: String,
    /// Every run, in the order they run.
    #[serde(default)]
    pub runs: Vec<RunStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ExperimentResult>,
    /// The verdict posted to the leaderboard (`spec.leaderboard`): `posted: agrees`,
    /// `posted: FLAGGED ...`, `refused: ...` (final), or `not posted yet: ...` (retrying).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaderboard: Option<String>,
    /// `Complete` and `Failed`, as a Job has.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One run of one side.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// `baseline` or `variant`.
    pub side: String,
    /// The run's Pipeline (`<experiment>-b<i>` or `-v<i>`).
    pub pipeline: String,
    /// `Pending`, `Deploying`, `Measuring`, `Measured`.
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<Time>,
    /// The metric over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Events the source emitted in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<f64>,
    /// Events lost in transit in the window (dead letters and discards are not losses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<f64>,
    /// The Grafana annotation marking the window: its id, or why there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
}

/// The verdict.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentResult {
    pub metric: String,
    pub unit: String,
    pub baseline_median: f64,
    pub variant_median: f64,
    /// B/A of the medians, with its 95% percentile-bootstrap interval.
    pub ratio: f64,
    pub low: f64,
    pub high: f64,
    /// `better`, `worse`, `no significant difference`, `too noisy to conclude`, …
    pub verdict: String,
    /// What passing needs, e.g. `B/A ≥ 2.00`.
    pub required: String,
    /// The interval clears the minimum effect and no run lost events.
    pub passed: bool,
    /// One line: `B/A = 2.41 [2.10 .. 2.77]`.
    pub summary: String,
}

/// The phases an Experiment goes through.
pub const RUNNING: &str = "Running";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";

/// A run's phases.
pub const PENDING: &str = "Pending";
pub const DEPLOYING: &str = "Deploying";
pub const MEASURING: &str = "Measuring";
pub const MEASURED: &str = "Measured";
