//! From a `Pipeline` to the Kubernetes objects it wants: one pure function, no I/O, in three
//! parts: [`plan`] (the spec as the plan the local runner runs), [`validate`] (what the schema
//! cannot check), [`objects`] (each stage's ConfigMap, Service, workload and pod template).
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
//!   StatefulSets, so each pod is reached by name (`demo-parse-1.demo-parse`);
//! - a NetworkPolicy `<pipeline>-<stage>`: the data port admits only the stage before's pods,
//!   the admin port only Prometheus and the operator;
//!
//! and the Pipeline gets a Secret `<pipeline>-token`, the shared token every stage's data
//! connections carry (mounted into every pod).
//!
//! Pods pass the Pod Security "restricted" profile, carry the recommended
//! `app.kubernetes.io/*` labels and Prometheus scrape annotations, are probed on `/healthz`
//! (liveness) and `/readyz` (readiness), and are owned by the Pipeline.

use crate::pipeline::crd::{Pipeline, PipelineSpec, StageSpec};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use pipeline_plan::{Knobs, Plan, PlanError, PlanStage, Role, StageKnobs};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

mod objects;
mod plan;
mod validate;

use objects::*;
pub use objects::{config_hash, managed_selector, selector_labels, token_secret_name};
use plan::*;
pub use plan::{apply_plan, plan_of};
pub use validate::InvalidSpec;
use validate::*;

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
/// Where the Pipeline's token Secret is mounted, and its key.
pub const TOKEN_DIR: &str = "/etc/observatory/token";
pub const TOKEN_KEY: &str = "token";
/// The sink's volume, and its working directory (a relative `sink.dir` lands here).
pub const DATA_DIR: &str = "/var/lib/observatory";
/// `app.kubernetes.io/name` of the Prometheus pods (deploy/monitoring), which scrape the
/// admin ports.
pub const PROMETHEUS_NAME: &str = "prometheus";
/// `app.kubernetes.io/name` of the operator's pods (deploy/base/operator.yaml).
pub const OPERATOR_NAME: &str = "observatory-operator";
/// The non-root user of the images (distroless `nonroot`).
pub const RUN_AS: i64 = 65532;

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
    pub network_policy: NetworkPolicy,
    pub workload: Workload,
    pub config_hash: String,
}

/// Everything a Pipeline wants, in data-flow order.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub plan: Plan,
    pub stages: Vec<StageObjects>,
    /// The shared token's Secret (metadata only: see [`objects::render_token_secret`]).
    pub token_secret: Secret,
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
        let network_policy = render_network_policy(&meta, &name, role);
        let template = pod_template(spec, s, &image, &labels, &hash, &obj_name, &name);
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
            network_policy,
            workload,
            config_hash: hash,
        });
    }
    Ok(Desired {
        plan,
        stages: out,
        token_secret: render_token_secret(p),
    })
}

/// The objects of a Pipeline as a multi-document YAML stream (what `operator render` prints).
pub fn to_yaml(desired: &Desired) -> Result<String, yaml_serde::Error> {
    let mut out = String::new();
    for s in &desired.stages {
        let workload = match &s.workload {
            Workload::Deployment(d) => yaml_serde::to_string(d)?,
            Workload::StatefulSet(d) => yaml_serde::to_string(d)?,
        };
        for doc in [
            yaml_serde::to_string(&s.config_map)?,
            yaml_serde::to_string(&s.service)?,
            yaml_serde::to_string(&s.network_policy)?,
            workload,
        ] {
            out.push_str("---\n");
            out.push_str(&doc);
        }
    }
    Ok(out)
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
    fn each_data_port_admits_only_the_stage_before_and_each_admin_port_only_prometheus() {
        let d = render(&sample()).unwrap();
        for s in &d.stages {
            let np = &s.network_policy;
            assert_eq!(np.metadata.name.as_deref(), Some(s.name.as_str()));
            let spec = np.spec.as_ref().unwrap();
            // It selects exactly this stage's pods (what its Service selects), for ingress.
            assert_eq!(
                spec.pod_selector.as_ref().unwrap().match_labels,
                s.service.spec.as_ref().unwrap().selector
            );
            assert_eq!(
                spec.policy_types.as_deref(),
                Some(&["Ingress".to_string()][..])
            );
            let rules = spec.ingress.as_ref().unwrap();
            let by_port = |port: i32| {
                rules
                    .iter()
                    .filter(|r| {
                        r.ports.as_ref().unwrap().iter().any(|p| {
                            p.port == Some(IntOrString::Int(port))
                                && p.protocol.as_deref() == Some("TCP")
                        })
                    })
                    .flat_map(|r| r.from.clone().unwrap())
                    .collect::<Vec<_>>()
            };
            let data = by_port(DATA_PORT);
            match s.role.upstream() {
                None => assert!(data.is_empty(), "the source has no data port"),
                Some(up) => {
                    assert_eq!(data.len(), 1, "{:?}", s.role);
                    assert!(data[0].namespace_selector.is_none(), "same namespace only");
                    assert_eq!(
                        data[0].pod_selector.as_ref().unwrap().match_labels,
                        Some(selector_labels("demo", up))
                    );
                }
            }
            let admin = by_port(ADMIN_PORT);
            let names: Vec<_> = admin
                .iter()
                .map(|peer| {
                    assert_eq!(peer.namespace_selector, Some(LabelSelector::default()));
                    peer.pod_selector
                        .as_ref()
                        .unwrap()
                        .match_labels
                        .as_ref()
                        .unwrap()["app.kubernetes.io/name"]
                        .clone()
                })
                .collect();
            assert_eq!(names, [PROMETHEUS_NAME, OPERATOR_NAME]);
            assert_eq!(rules.len(), data.len() + 1, "no other rule");
        }
        // The labels it names are the ones the monitoring and operator manifests give.
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
        let prom = std::fs::read_to_string(format!("{root}/monitoring/prometheus.yaml")).unwrap();
        assert!(prom.contains(&format!("app.kubernetes.io/name: {PROMETHEUS_NAME}")));
        let op = std::fs::read_to_string(format!("{root}/base/operator.yaml")).unwrap();
        assert!(op.contains(&format!("app.kubernetes.io/name: {OPERATOR_NAME}")));
    }

    #[test]
    fn every_pod_reads_the_pipelines_token_from_its_secret() {
        let d = render(&sample()).unwrap();
        let secret = &d.token_secret;
        assert_eq!(secret.metadata.name.as_deref(), Some("demo-token"));
        assert_eq!(
            secret.metadata.owner_references.as_ref().unwrap()[0].kind,
            "Pipeline"
        );
        assert!(
            secret.data.is_none() && secret.string_data.is_none(),
            "made by the operator"
        );
        for s in &d.stages {
            let pod = s.workload.pod_template().spec.as_ref().unwrap();
            let vol = pod
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .find(|v| v.name == "token")
                .unwrap();
            let src = vol.secret.as_ref().unwrap();
            assert_eq!(src.secret_name.as_deref(), Some("demo-token"));
            assert_eq!(src.default_mode, Some(0o440));
            let c = &pod.containers[0];
            let mount = c
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .find(|m| m.name == "token")
                .unwrap();
            assert_eq!(
                (mount.mount_path.as_str(), mount.read_only),
                (TOKEN_DIR, Some(true))
            );
            let env = c
                .env
                .as_ref()
                .unwrap()
                .iter()
                .find(|e| e.name == "PIPELINE_TOKEN_FILE")
                .unwrap();
            assert_eq!(
                env.value.as_deref(),
                Some(format!("{TOKEN_DIR}/{TOKEN_KEY}").as_str())
            );
        }
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
        // The stages whose hash differs from the base's.
        let changed = |p: &Pipeline| -> Vec<Role> {
            hashes(&render(p).unwrap())
                .into_iter()
                .zip(hashes(&base))
                .filter(|(a, b)| a != b)
                .map(|(a, _)| a.0)
                .collect()
        };

        // The same spec renders the same hashes.
        assert_eq!(hashes(&render(&sample()).unwrap()), hashes(&base));

        // A parse knob rolls parse only.
        let mut p = sample();
        p.spec.parse.as_mut().unwrap().knobs.mode = pipeline_plan::ParseMode::Owned;
        assert_eq!(changed(&p), [Role::Parse]);

        // Replicas alone do not change a stage's config ...
        let mut p = sample();
        p.spec.source.replicas = 3;
        assert_eq!(hashes(&render(&p).unwrap()), hashes(&base));
        // ... but more aggregate partitions rewire parse (it must reach them).
        let mut p = sample();
        p.spec.aggregate.as_mut().unwrap().replicas = 3;
        assert_eq!(changed(&p), [Role::Parse]);

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
