//! From a `Pipeline` to the Kubernetes objects it wants: one pure function, no I/O.
//!
//! The spec becomes a [`Plan`] — the same plan the local runner executes — and every stage
//! becomes:
//! - a ConfigMap `<pipeline>-<stage>` holding the stage's config file (`stage.toml`: knobs and
//!   wiring, in service mode);
//! - a Deployment (source) or a StatefulSet (parse, aggregate, sink: stable pod names, which
//!   the stage before connects to one by one; the aggregate's name is its key partition, the
//!   sink's carries its log's volume), whose pod template carries a hash of the config, so a
//!   knob change rolls exactly that stage;
//! - a Service `<pipeline>-<stage>` with the admin port (and the data port); headless for the
//!   StatefulSets, so each pod is reached by name (`demo-parse-1.demo-parse`).
//!
//! Pods pass the Pod Security "restricted" profile, carry the recommended
//! `app.kubernetes.io/*` labels and Prometheus scrape annotations, are probed on `/healthz`
//! (liveness) and `/readyz` (readiness), and are owned by the Pipeline.

use crate::crd::{Pipeline, PipelineSpec, StageSpec};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext,
    Service, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use pipeline_plan::{Knobs, Plan, PlanError, PlanStage, Role, StageKnobs};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// Data port of every stage.
pub const DATA_PORT: i32 = 7000;
/// Admin port (metrics, health, profiles) of every stage.
pub const ADMIN_PORT: i32 = 9000;
/// The field manager of the operator's server-side applies.
pub const MANAGER: &str = "observatory-operator";
/// Pod template annotation carrying the hash of the stage's config.
pub const CONFIG_HASH: &str = "observatory.dev/config-hash";
/// Where the config file is mounted.
pub const CONFIG_DIR: &str = "/etc/observatory";
/// The sink's volume, and its working directory (a relative `sink.dir` lands here).
pub const DATA_DIR: &str = "/var/lib/observatory";
/// The non-root user of the images (distroless `nonroot`).
pub const RUN_AS: i64 = 65532;

/// A spec the operator cannot run, with the field to blame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSpec {
    /// The offending field, e.g. `spec.parse.knobs.workers`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for InvalidSpec {}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidSpec {
    InvalidSpec {
        field: field.into(),
        message: message.into(),
    }
}

/// `parse.workers` -> `spec.parse.knobs.workers`; `sink.replicas` -> `spec.sink.replicas`.
fn field_of(knob: &str) -> String {
    match knob.split_once('.') {
        Some((stage, "replicas")) => format!("spec.{stage}.replicas"),
        Some((stage, k)) => format!("spec.{stage}.knobs.{k}"),
        None => format!("spec.{knob}"),
    }
}

impl From<PlanError> for InvalidSpec {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Knob { knob, message } => invalid(field_of(&knob), message),
            PlanError::UnknownKnob { knob, known } => {
                invalid(field_of(&knob), format!("unknown knob (known: {known})"))
            }
            other => invalid("spec", other.to_string()),
        }
    }
}

/// A stage of the spec, type-erased: its knobs as the plan holds them.
struct SpecStage<'a> {
    role: Role,
    replicas: i32,
    image: Option<&'a str>,
    resources: Option<&'a ResourceRequirements>,
    knobs: StageKnobs,
}

fn spec_stage<'a, K: Knobs>(
    role: Role,
    s: &'a StageSpec<K>,
    wrap: fn(K) -> StageKnobs,
) -> Result<SpecStage<'a>, InvalidSpec> {
    if let Some(bad) = s.knobs.unknown.first() {
        return Err(PlanError::UnknownKnob {
            knob: format!("{role}.{bad}"),
            known: K::names().join(", "),
        }
        .into());
    }
    s.knobs.validate(role.as_str())?;
    Ok(SpecStage {
        role,
        replicas: s.replicas,
        image: s.image.as_deref(),
        resources: s.resources.as_ref(),
        knobs: wrap(s.knobs.knobs.clone()),
    })
}

fn spec_stages(spec: &PipelineSpec) -> Result<Vec<SpecStage<'_>>, InvalidSpec> {
    let mut out = vec![spec_stage(Role::Source, &spec.source, StageKnobs::Source)?];
    if let Some(s) = &spec.parse {
        out.push(spec_stage(Role::Parse, s, StageKnobs::Parse)?);
    }
    if let Some(s) = &spec.aggregate {
        out.push(spec_stage(Role::Aggregate, s, StageKnobs::Aggregate)?);
    }
    if let Some(s) = &spec.sink {
        out.push(spec_stage(Role::Sink, s, StageKnobs::Sink)?);
    }
    Ok(out)
}

/// The plan a spec describes: the same plan `observatory run` would execute locally.
pub fn plan_of(name: &str, spec: &PipelineSpec) -> Result<Plan, InvalidSpec> {
    let stages = spec_stages(spec)?
        .into_iter()
        .map(|s| {
            let replicas = u32::try_from(s.replicas)
                .map_err(|_| invalid(format!("spec.{}.replicas", s.role), "must be at least 1"))?;
            Ok(PlanStage {
                knobs: s.knobs,
                replicas,
            })
        })
        .collect::<Result<Vec<_>, InvalidSpec>>()?;
    let mut plan = Plan::from_stages(name, stages)?;
    plan.labels = spec.labels.clone();
    Ok(plan)
}

/// The workload of a stage.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    Deployment(Deployment),
    StatefulSet(StatefulSet),
}

impl Workload {
    pub fn kind(&self) -> &'static str {
        match self {
            Workload::Deployment(_) => "Deployment",
            Workload::StatefulSet(_) => "StatefulSet",
        }
    }

    pub fn pod_template(&self) -> &PodTemplateSpec {
        match self {
            Workload::Deployment(d) => &d.spec.as_ref().expect("rendered with a spec").template,
            Workload::StatefulSet(s) => &s.spec.as_ref().expect("rendered with a spec").template,
        }
    }
}

/// Everything one stage needs.
#[derive(Clone, Debug, PartialEq)]
pub struct StageObjects {
    pub role: Role,
    /// `<pipeline>-<stage>`: the name of every object of the stage.
    pub name: String,
    pub replicas: i32,
    pub config_map: ConfigMap,
    pub service: Service,
    pub workload: Workload,
    pub config_hash: String,
}

/// Everything a Pipeline wants, in data-flow order.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub plan: Plan,
    pub stages: Vec<StageObjects>,
}

impl Desired {
    /// Names of the objects this Pipeline wants, for pruning the rest.
    pub fn names(&self) -> Vec<String> {
        self.stages.iter().map(|s| s.name.clone()).collect()
    }

    /// Names of the objects of `kind` this Pipeline wants: every stage has a ConfigMap and a
    /// Service, but a workload of one kind only, so a stage whose workload changed kind (parse,
    /// once a Deployment) has its old workload pruned although the name is still wanted.
    pub fn wanted(&self, kind: &str) -> Vec<String> {
        self.stages
            .iter()
            .filter(|s| !matches!(kind, "Deployment" | "StatefulSet") || s.workload.kind() == kind)
            .map(|s| s.name.clone())
            .collect()
    }
}

/// Labels that select one stage's pods.
pub fn selector_labels(pipeline: &str, role: Role) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "observatory-pipeline".to_string(),
        ),
        (
            "app.kubernetes.io/instance".to_string(),
            pipeline.to_string(),
        ),
        ("app.kubernetes.io/component".to_string(), role.to_string()),
    ])
}

/// The label selector of every object the operator manages for one Pipeline.
pub fn managed_selector(pipeline: &str) -> String {
    format!("app.kubernetes.io/instance={pipeline},app.kubernetes.io/managed-by={MANAGER}")
}

fn labels(pipeline: &str, role: Role, image: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(pipeline, role);
    l.insert("app.kubernetes.io/part-of".into(), "observatory".into());
    l.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    let tag = image
        .rsplit_once(':')
        .map(|(_, t)| t)
        .filter(|t| !t.contains('/'));
    if let Some(tag) = tag.filter(|t| t.len() <= 63) {
        l.insert("app.kubernetes.io/version".into(), tag.to_string());
    }
    l
}

fn owner(p: &Pipeline) -> OwnerReference {
    OwnerReference {
        api_version: Pipeline::api_version(&()).to_string(),
        kind: Pipeline::kind(&()).to_string(),
        name: p.name_any(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The data addresses of the stage after `role`, one connection each (see the plan's wiring):
/// the parse Service once per parse pod (connections spread over the pods), each aggregate
/// partition by its stable name, the sink.
fn downstream(name: &str, plan: &Plan, role: Role) -> Vec<String> {
    match plan.downstream_of(role) {
        None => Vec::new(),
        // Each parse pod by its stable name: through the Service, kube-proxy picks a pod per
        // connection (both could land on one), and a reconnect after a rollout can hit a stale
        // endpoint. By name, the source deals over every pod, and a restarted pod is reached
        // again at the same address.
        Some(Role::Parse) => (0..plan.replicas(Role::Parse))
            .map(|i| format!("{name}-parse-{i}.{name}-parse:{DATA_PORT}"))
            .collect(),
        Some(Role::Aggregate) => (0..plan.replicas(Role::Aggregate))
            .map(|i| format!("{name}-aggregate-{i}.{name}-aggregate:{DATA_PORT}"))
            .collect(),
        Some(Role::Sink) => vec![format!("{name}-sink-0.{name}-sink:{DATA_PORT}")],
        Some(Role::Source) => unreachable!("nothing feeds the source"),
    }
}

/// A short, stable hash of a config file.
pub fn config_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn quantity(s: &str) -> Quantity {
    Quantity(s.to_string())
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), quantity("100m")),
            ("memory".to_string(), quantity("64Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), quantity("384Mi"))])),
        ..Default::default()
    }
}

/// A quantity in base units (cores or bytes), for comparing requests with limits.
fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        _ => return None,
    };
    Some(n * scale)
}

/// Requests must be well-formed and within limits: the API server accepts a workload that
/// breaks this, and then refuses every pod of it.
fn check_resources(role: Role, r: &ResourceRequirements) -> Result<(), InvalidSpec> {
    let field = format!("spec.{role}.resources");
    let empty = BTreeMap::new();
    let requests = r.requests.as_ref().unwrap_or(&empty);
    let limits = r.limits.as_ref().unwrap_or(&empty);
    for (kind, map) in [("requests", requests), ("limits", limits)] {
        for (res, q) in map {
            if parse_quantity(&q.0).is_none() {
                return Err(invalid(
                    format!("{field}.{kind}.{res}"),
                    format!("`{}` is not a quantity", q.0),
                ));
            }
        }
    }
    for (res, limit) in limits {
        if let (Some(req), Some(lim)) = (
            requests.get(res).and_then(|q| parse_quantity(&q.0)),
            parse_quantity(&limit.0),
        ) && req > lim
        {
            return Err(invalid(
                format!("{field}.requests.{res}"),
                format!("request {} exceeds the limit {}", requests[res].0, limit.0),
            ));
        }
    }
    Ok(())
}

/// Rules the schema cannot express.
fn check_semantics(spec: &PipelineSpec, stages: &[SpecStage<'_>]) -> Result<(), InvalidSpec> {
    if spec.image.trim().is_empty() {
        return Err(invalid("spec.image", "must name a container image"));
    }
    for s in stages {
        if let Some(r) = s.resources {
            check_resources(s.role, r)?;
        }
        match &s.knobs {
            StageKnobs::Source(k) if !k.replay.is_empty() => {
                return Err(invalid(
                    "spec.source.knobs.replay",
                    "replaying a file is not supported in the cluster (the image carries no event files); leave it empty to generate events",
                ));
            }
            StageKnobs::Sink(k) if k.dir.starts_with('/') && !k.dir.starts_with(DATA_DIR) => {
                return Err(invalid(
                    "spec.sink.knobs.dir",
                    format!(
                        "must be relative or under {DATA_DIR} (the sink's volume; the rest of the filesystem is read-only), got `{}`",
                        k.dir
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Render a Pipeline into the objects it wants.
pub fn render(p: &Pipeline) -> Result<Desired, InvalidSpec> {
    let name = p.name_any();
    let ns = p.namespace();
    let spec = &p.spec;
    let stages = spec_stages(spec)?;
    check_semantics(spec, &stages)?;
    let plan = plan_of(&name, spec)?;
    let owner = owner(p);
    let mut out = Vec::new();
    for s in &stages {
        let role = s.role;
        let obj_name = format!("{name}-{role}");
        let image = s.image.unwrap_or(&spec.image).to_string();
        let labels = labels(&name, role, &image);
        let meta = ObjectMeta {
            name: Some(obj_name.clone()),
            namespace: ns.clone(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        };
        let listen = format!("0.0.0.0:{DATA_PORT}");
        let admin = format!("0.0.0.0:{ADMIN_PORT}");
        let mut cfg = plan.stage_config(role, &listen, &admin, &downstream(&name, &plan, role))?;
        cfg.service = true;
        // Only run mode counts upstream streams; leaving the count out means scaling one stage
        // does not roll the next one for nothing.
        cfg.upstreams = 1;
        let toml = cfg.to_toml();
        let hash = config_hash(&toml);
        let config_map = ConfigMap {
            metadata: meta.clone(),
            data: Some(BTreeMap::from([("stage.toml".to_string(), toml)])),
            ..Default::default()
        };
        // Every stage with a data port is a StatefulSet behind a headless Service: its pods
        // have stable names that the stage before it connects to, one connection each.
        let stateful = role != Role::Source;
        let service = render_service(&meta, &name, role, stateful);
        let template = pod_template(spec, s, &image, &labels, &hash, &obj_name);
        let selector = LabelSelector {
            match_labels: Some(selector_labels(&name, role)),
            ..Default::default()
        };
        let workload = if stateful {
            Workload::StatefulSet(StatefulSet {
                metadata: meta.clone(),
                spec: Some(StatefulSetSpec {
                    replicas: Some(s.replicas),
                    selector,
                    service_name: Some(obj_name.clone()),
                    // Partitions start together; each one's identity is what matters.
                    pod_management_policy: Some("Parallel".into()),
                    template,
                    volume_claim_templates: (role == Role::Sink).then(|| vec![sink_claim(spec)]),
                    persistent_volume_claim_retention_policy: (role == Role::Sink).then(|| {
                        StatefulSetPersistentVolumeClaimRetentionPolicy {
                            when_deleted: Some("Delete".into()),
                            when_scaled: Some("Retain".into()),
                        }
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        } else {
            Workload::Deployment(Deployment {
                metadata: meta.clone(),
                spec: Some(DeploymentSpec {
                    replicas: Some(s.replicas),
                    selector,
                    template,
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        out.push(StageObjects {
            role,
            name: obj_name,
            replicas: s.replicas,
            config_map,
            service,
            workload,
            config_hash: hash,
        });
    }
    Ok(Desired { plan, stages: out })
}

fn render_service(meta: &ObjectMeta, pipeline: &str, role: Role, headless: bool) -> Service {
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let mut ports = vec![port("admin", ADMIN_PORT)];
    if role != Role::Source {
        ports.insert(0, port("data", DATA_PORT));
    }
    Service {
        metadata: meta.clone(),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(pipeline, role)),
            ports: Some(ports),
            cluster_ip: headless.then(|| "None".to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn sink_claim(spec: &PipelineSpec) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    spec.sink_storage.clone().unwrap_or_else(|| quantity("1Gi")),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn http_probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn pod_template(
    spec: &PipelineSpec,
    s: &SpecStage<'_>,
    image: &str,
    labels: &BTreeMap<String, String>,
    hash: &str,
    config_map: &str,
) -> PodTemplateSpec {
    let role = s.role;
    let annotations = BTreeMap::from([
        (CONFIG_HASH.to_string(), hash.to_string()),
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), ADMIN_PORT.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ]);
    let mut ports = vec![ContainerPort {
        name: Some("admin".into()),
        container_port: ADMIN_PORT,
        protocol: Some("TCP".into()),
        ..Default::default()
    }];
    if role != Role::Source {
        ports.insert(
            0,
            ContainerPort {
                name: Some("data".into()),
                container_port: DATA_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        );
    }
    // The allocator is chosen before main() from this variable; setting it saves a re-exec.
    let mut env_vars = vec![
        env(
            "PIPELINE_KNOB_ALLOCATOR",
            s.knobs.common().allocator.as_str(),
        ),
        env("PIPELINE_LOG_FORMAT", "json"),
    ];
    if let Some(endpoint) = &spec.otlp_endpoint {
        env_vars.push(env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint));
    }
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        // Scratch space for heap-profile dumps; the root filesystem is read-only.
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    ];
    if role == Role::Sink {
        mounts.push(VolumeMount {
            name: "data".into(),
            mount_path: DATA_DIR.into(),
            ..Default::default()
        });
    }
    let container = Container {
        name: "pipeline".into(),
        image: Some(image.into()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        args: Some(vec![
            role.to_string(),
            "--config".into(),
            format!("{CONFIG_DIR}/stage.toml"),
        ]),
        env: Some(env_vars),
        ports: Some(ports),
        liveness_probe: Some(http_probe("/healthz", 10)),
        readiness_probe: Some(http_probe("/readyz", 5)),
        resources: Some(s.resources.cloned().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        working_dir: (role == Role::Sink).then(|| DATA_DIR.to_string()),
        ..Default::default()
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels.clone()),
            annotations: Some(annotations),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            // Longer than a stage's drain (30 s): a stopping stage finishes its streams.
            termination_grace_period_seconds: Some(45),
            automount_service_account_token: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            volumes: Some(vec![
                Volume {
                    name: "config".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: config_map.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "tmp".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sample;
    use pipeline_plan::StageConfig;

    fn stage(d: &Desired, role: Role) -> &StageObjects {
        d.stages
            .iter()
            .find(|s| s.role == role)
            .expect("stage rendered")
    }

    fn stage_config(s: &StageObjects) -> StageConfig {
        let text = &s.config_map.data.as_ref().unwrap()["stage.toml"];
        StageConfig::from_toml("configmap", text)
            .expect("the rendered config loads in the pipeline")
    }

    #[test]
    fn every_stage_gets_a_config_map_a_workload_and_a_service() {
        let d = render(&sample()).unwrap();
        let kinds: Vec<(Role, &str, &str)> = d
            .stages
            .iter()
            .map(|s| (s.role, s.name.as_str(), s.workload.kind()))
            .collect();
        assert_eq!(
            kinds,
            [
                (Role::Source, "demo-source", "Deployment"),
                (Role::Parse, "demo-parse", "StatefulSet"),
                (Role::Aggregate, "demo-aggregate", "StatefulSet"),
                (Role::Sink, "demo-sink", "StatefulSet"),
            ]
        );
        for s in &d.stages {
            assert_eq!(s.config_map.metadata.name.as_deref(), Some(s.name.as_str()));
            assert_eq!(s.service.metadata.name.as_deref(), Some(s.name.as_str()));
            assert_eq!(
                s.config_map.metadata.namespace.as_deref(),
                Some("observatory")
            );
        }
    }

    #[test]
    fn labels_and_owner_references_follow_the_conventions() {
        let d = render(&sample()).unwrap();
        for s in &d.stages {
            let l = s.config_map.metadata.labels.as_ref().unwrap();
            assert_eq!(l["app.kubernetes.io/name"], "observatory-pipeline");
            assert_eq!(l["app.kubernetes.io/instance"], "demo");
            assert_eq!(l["app.kubernetes.io/component"], s.role.as_str());
            assert_eq!(l["app.kubernetes.io/part-of"], "observatory");
            assert_eq!(l["app.kubernetes.io/managed-by"], MANAGER);
            assert_eq!(l["app.kubernetes.io/version"], "dev");
            let owners = s.config_map.metadata.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "Pipeline");
            assert_eq!(owners[0].api_version, "observatory.dev/v1alpha1");
            assert_eq!(owners[0].uid, "uid-demo");
            assert_eq!(owners[0].controller, Some(true));
            let tpl = s.workload.pod_template();
            let pod_labels = tpl.metadata.as_ref().unwrap().labels.as_ref().unwrap();
            for (k, v) in selector_labels("demo", s.role) {
                assert_eq!(pod_labels[&k], v, "pods carry the selector labels");
            }
            let ann = tpl.metadata.as_ref().unwrap().annotations.as_ref().unwrap();
            assert_eq!(ann["prometheus.io/scrape"], "true");
            assert_eq!(ann["prometheus.io/port"], "9000");
            assert_eq!(ann[CONFIG_HASH], s.config_hash);
        }
    }

    #[test]
    fn pods_are_probed_resourced_and_pass_the_restricted_profile() {
        let d = render(&sample()).unwrap();
        for s in &d.stages {
            let pod = s.workload.pod_template().spec.as_ref().unwrap();
            let psc = pod.security_context.as_ref().unwrap();
            assert_eq!(psc.run_as_non_root, Some(true));
            assert_eq!(
                psc.seccomp_profile.as_ref().unwrap().type_,
                "RuntimeDefault"
            );
            assert_eq!(pod.containers.len(), 1);
            let c = &pod.containers[0];
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.run_as_non_root, Some(true));
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_string()][..])
            );
            assert!(sc.capabilities.as_ref().unwrap().add.is_none());
            assert!(sc.privileged.is_none());
            let live = c
                .liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap();
            let ready = c
                .readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap();
            assert_eq!(live.path.as_deref(), Some("/healthz"));
            assert_eq!(ready.path.as_deref(), Some("/readyz"));
            assert_eq!(live.port, IntOrString::String("admin".into()));
            let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
            assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
            assert_eq!(c.args.as_ref().unwrap()[0], s.role.as_str());
            let mounts: Vec<&str> = c
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .map(|m| m.mount_path.as_str())
                .collect();
            assert!(mounts.contains(&CONFIG_DIR));
        }
        // The parse stage asked for its own resources.
        let parse = stage(&d, Role::Parse)
            .workload
            .pod_template()
            .spec
            .clone()
            .unwrap();
        let res = parse.containers[0].resources.as_ref().unwrap();
        assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "250m");
    }

    #[test]
    fn the_config_map_is_the_plan_wired_for_the_cluster() {
        let d = render(&sample()).unwrap();
        let src = stage_config(stage(&d, Role::Source));
        assert!(src.service);
        assert_eq!(
            src.downstream,
            [
                "demo-parse-0.demo-parse:7000",
                "demo-parse-1.demo-parse:7000"
            ],
            "one connection to each parse pod, by its name"
        );
        let parse = stage_config(stage(&d, Role::Parse));
        assert_eq!(
            parse.downstream,
            [
                "demo-aggregate-0.demo-aggregate:7000",
                "demo-aggregate-1.demo-aggregate:7000"
            ],
            "each aggregate partition by its stable name"
        );
        let StageKnobs::Parse(k) = &parse.knobs else {
            panic!()
        };
        assert_eq!(
            k.mode,
            pipeline_plan::ParseMode::Borrowed,
            "the spec's knob"
        );
        let agg = stage_config(stage(&d, Role::Aggregate));
        assert_eq!(agg.downstream, ["demo-sink-0.demo-sink:7000"]);
        assert!(agg.service, "service mode: streams come and go");
        let sink = stage_config(stage(&d, Role::Sink));
        assert!(sink.downstream.is_empty());
        assert_eq!(sink.listen, "0.0.0.0:7000");
        assert_eq!(sink.admin, "0.0.0.0:9000");
        assert_eq!(sink.labels["run"], "baseline");
        // The same plan the local runner would run.
        let local = d
            .plan
            .stage_config(
                Role::Parse,
                "0.0.0.0:7000",
                "0.0.0.0:9000",
                &parse.downstream,
            )
            .unwrap();
        assert_eq!(local.knobs, parse.knobs);
    }

    #[test]
    fn stateful_stages_have_stable_names_and_the_sink_a_volume() {
        let d = render(&sample()).unwrap();
        let Workload::StatefulSet(agg) = &stage(&d, Role::Aggregate).workload else {
            panic!()
        };
        let spec = agg.spec.as_ref().unwrap();
        assert_eq!(spec.service_name.as_deref(), Some("demo-aggregate"));
        assert_eq!(spec.replicas, Some(2));
        assert!(spec.volume_claim_templates.is_none());
        assert_eq!(
            stage(&d, Role::Aggregate)
                .service
                .spec
                .as_ref()
                .unwrap()
                .cluster_ip
                .as_deref(),
            Some("None")
        );
        let Workload::StatefulSet(sink) = &stage(&d, Role::Sink).workload else {
            panic!()
        };
        let spec = sink.spec.as_ref().unwrap();
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("data"));
        assert_eq!(
            spec.persistent_volume_claim_retention_policy
                .as_ref()
                .unwrap()
                .when_deleted
                .as_deref(),
            Some("Delete")
        );
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.working_dir.as_deref(), Some(DATA_DIR));
        // The source has no data port; the others do.
        let ports = |r| {
            stage(&d, r)
                .service
                .spec
                .as_ref()
                .unwrap()
                .ports
                .as_ref()
                .unwrap()
                .iter()
                .map(|p| p.port)
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(Role::Source), [ADMIN_PORT]);
        assert_eq!(ports(Role::Parse), [DATA_PORT, ADMIN_PORT]);
    }

    #[test]
    fn the_config_hash_changes_exactly_when_a_stages_config_changes() {
        let base = render(&sample()).unwrap();
        let hashes = |d: &Desired| {
            d.stages
                .iter()
                .map(|s| (s.role, s.config_hash.clone()))
                .collect::<Vec<_>>()
        };

        // The same spec renders the same hashes.
        assert_eq!(hashes(&render(&sample()).unwrap()), hashes(&base));

        // A parse knob rolls parse only.
        let mut p = sample();
        p.spec.parse.as_mut().unwrap().knobs.mode = pipeline_plan::ParseMode::Owned;
        let changed: Vec<Role> = hashes(&render(&p).unwrap())
            .into_iter()
            .zip(hashes(&base))
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.0)
            .collect();
        assert_eq!(changed, [Role::Parse]);

        // Replicas alone do not change a stage's config ...
        let mut p = sample();
        p.spec.source.replicas = 3;
        assert_eq!(hashes(&render(&p).unwrap()), hashes(&base));
        // ... but more aggregate partitions rewire parse (it must reach them).
        let mut p = sample();
        p.spec.aggregate.as_mut().unwrap().replicas = 3;
        let changed: Vec<Role> = hashes(&render(&p).unwrap())
            .into_iter()
            .zip(hashes(&base))
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.0)
            .collect();
        assert_eq!(changed, [Role::Parse]);

        // Metric labels are config too.
        let mut p = sample();
        p.spec.labels.insert("run".into(), "variant".into());
        assert!(
            hashes(&render(&p).unwrap())
                .iter()
                .zip(hashes(&base))
                .all(|(a, b)| a != &b)
        );
    }

    #[test]
    fn a_removed_stage_disappears_from_the_plan() {
        let mut p = sample();
        p.spec.sink = None;
        let d = render(&p).unwrap();
        assert_eq!(d.names(), ["demo-source", "demo-parse", "demo-aggregate"]);
        assert!(
            stage_config(stage(&d, Role::Aggregate))
                .downstream
                .is_empty(),
            "the last stage discards"
        );
        p.spec.aggregate = None;
        assert_eq!(render(&p).unwrap().names(), ["demo-source", "demo-parse"]);
    }

    #[test]
    fn invalid_specs_name_the_field() {
        type Mutation = Box<dyn Fn(&mut Pipeline)>;
        let cases: Vec<(Mutation, &str, &str)> = vec![
            (
                Box::new(|p| p.spec.parse.as_mut().unwrap().knobs.workers = 0),
                "spec.parse.knobs.workers",
                "between 1 and 64",
            ),
            (
                Box::new(|p| p.spec.source.knobs.malformed_rate = 2.0),
                "spec.source.knobs.malformed_rate",
                "between 0 and 1",
            ),
            (
                Box::new(|p| p.spec.sink.as_mut().unwrap().replicas = 2),
                "spec.sink.replicas",
                "one log",
            ),
            (
                Box::new(|p| p.spec.parse.as_mut().unwrap().replicas = 0),
                "spec.parse.replicas",
                "between 1 and 64",
            ),
            (Box::new(|p| p.spec.parse = None), "spec", "contiguous"),
            (
                Box::new(|p| p.spec.image = " ".into()),
                "spec.image",
                "container image",
            ),
            (
                Box::new(|p| p.spec.source.knobs.replay = "/events.jsonl".into()),
                "spec.source.knobs.replay",
                "not supported",
            ),
            (
                Box::new(|p| p.spec.sink.as_mut().unwrap().knobs.dir = "/etc/log".into()),
                "spec.sink.knobs.dir",
                "read-only",
            ),
            (
                Box::new(|p| {
                    p.spec.parse.as_mut().unwrap().resources = Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([("memory".into(), quantity("1Gi"))])),
                        limits: Some(BTreeMap::from([("memory".into(), quantity("512Mi"))])),
                        ..Default::default()
                    })
                }),
                "spec.parse.resources.requests.memory",
                "exceeds the limit",
            ),
            (
                Box::new(|p| {
                    p.spec.parse.as_mut().unwrap().resources = Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([("cpu".into(), quantity("lots"))])),
                        ..Default::default()
                    })
                }),
                "spec.parse.resources.requests.cpu",
                "not a quantity",
            ),
        ];
        for (mutate, field, words) in cases {
            let mut p = sample();
            mutate(&mut p);
            let err = render(&p).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(
                err.message.contains(words)
                    || (words == "contiguous" && err.message.contains("without gaps")),
                "{err}"
            );
        }
    }

    #[test]
    fn an_unknown_knob_is_kept_by_the_schema_and_refused_by_name() {
        // As the API server hands it over: the knobs schema preserves unknown fields.
        let mut v = serde_json::to_value(sample()).unwrap();
        v["spec"]["parse"]["knobs"]["workerz"] = 4.into();
        let p: Pipeline =
            serde_json::from_value(v).expect("an unknown knob does not fail the read");
        assert_eq!(p.spec.parse.as_ref().unwrap().knobs.unknown, ["workerz"]);
        let err = render(&p).unwrap_err();
        assert_eq!(err.field, "spec.parse.knobs.workerz", "{err}");
        assert!(
            err.message.contains("unknown knob") && err.message.contains("workers"),
            "{err}"
        );
        // The known knobs around it are read as usual.
        assert_eq!(
            p.spec.parse.as_ref().unwrap().knobs.mode,
            pipeline_plan::ParseMode::Borrowed
        );
    }

    #[test]
    fn quantities_compare_in_base_units() {
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("1Gi"), Some(1024f64.powi(3)));
        assert!(parse_quantity("1Gi").unwrap() > parse_quantity("1000Mi").unwrap());
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("x"), None);
    }
}
