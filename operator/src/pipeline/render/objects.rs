//! The Kubernetes objects of one stage: labels and owner, the Service, the sink's volume
//! claim, and the pod template (restricted security context, probes, resources).

use super::*;

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

pub(super) fn labels(pipeline: &str, role: Role, image: &str) -> BTreeMap<String, String> {
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

/// The name of a Pipeline's token Secret.
pub fn token_secret_name(pipeline: &str) -> String {
    format!("{pipeline}-token")
}

/// The Pipeline's token Secret, without its data: the operator creates it once with a random
/// token (`token`) and never rewrites it (a new token would lock out the running stages until
/// they restart); it is owned by the Pipeline, so it goes with it.
pub(super) fn render_token_secret(p: &Pipeline) -> Secret {
    let name = p.name_any();
    Secret {
        metadata: ObjectMeta {
            name: Some(token_secret_name(&name)),
            namespace: p.namespace(),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/instance".to_string(), name.clone()),
                (
                    "app.kubernetes.io/part-of".to_string(),
                    "observatory".to_string(),
                ),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    MANAGER.to_string(),
                ),
            ])),
            owner_references: Some(vec![owner(p)]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

pub(super) fn owner(p: &Pipeline) -> OwnerReference {
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
pub(super) fn downstream(name: &str, plan: &Plan, role: Role) -> Vec<String> {
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

pub(super) fn quantity(s: &str) -> Quantity {
    Quantity(s.to_string())
}

pub(super) fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), quantity("100m")),
            ("memory".to_string(), quantity("64Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), quantity("384Mi"))])),
        ..Default::default()
    }
}

pub(super) fn render_service(
    meta: &ObjectMeta,
    pipeline: &str,
    role: Role,
    headless: bool,
) -> Service {
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

/// Who may reach a stage's pods (`<pipeline>-<stage>`): its data port only the pods of the
/// stage before it in this pipeline (same namespace), its admin port only Prometheus and the
/// operator (pods with those `app.kubernetes.io/name` labels, in any namespace). Everything else
/// is refused once a policy selects the pods, on a network plugin that enforces
/// NetworkPolicies (k3s's does). Traffic from the pod's own node (the kubelet's probes) is
/// always allowed, and `kubectl port-forward` reaches the pod from inside it.
pub(super) fn render_network_policy(
    meta: &ObjectMeta,
    pipeline: &str,
    role: Role,
) -> NetworkPolicy {
    let port = |port: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let named = |name: &str| NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                name.to_string(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(vec![named(PROMETHEUS_NAME), named(OPERATOR_NAME)]),
        ports: Some(vec![port(ADMIN_PORT)]),
    }];
    if let Some(up) = role.upstream() {
        ingress.insert(
            0,
            NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(selector_labels(pipeline, up)),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ports: Some(vec![port(DATA_PORT)]),
            },
        );
    }
    NetworkPolicy {
        metadata: meta.clone(),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(pipeline, role)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            ..Default::default()
        }),
    }
}

pub(super) fn sink_claim(spec: &PipelineSpec) -> PersistentVolumeClaim {
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

pub(super) fn http_probe(path: &str, period: i32) -> Probe {
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

pub(super) fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

pub(super) fn pod_template(
    spec: &PipelineSpec,
    s: &SpecStage<'_>,
    image: &str,
    labels: &BTreeMap<String, String>,
    hash: &str,
    config_map: &str,
    pipeline: &str,
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
    // Every connection between the stages carries the Pipeline's shared token.
    env_vars.push(env(
        "PIPELINE_TOKEN_FILE",
        &format!("{TOKEN_DIR}/{TOKEN_KEY}"),
    ));
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "token".into(),
            mount_path: TOKEN_DIR.into(),
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
                Volume {
                    name: "token".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(token_secret_name(pipeline)),
                        // Owned by root, group fsGroup (the stage's user): readable by it only.
                        default_mode: Some(0o440),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
    }
}
