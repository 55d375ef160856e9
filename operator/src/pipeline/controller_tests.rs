//! Reconcile tests against a mocked API server at the HTTP layer (tower-test): each test plays
//! the API server, answering the operator's requests one by one and asserting each: method,
//! path, field manager, and body.

use super::*;
use crate::fixtures::api_server::{MockApi, mock};
use crate::fixtures::sample;
use crate::pipeline::render::{CONFIG_HASH, render};
use http::{Method, Request, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

fn context() -> (Arc<Context>, ApiServer) {
    let (client, api) = mock();
    (
        Context::new(client, Arc::new(Metrics::new())),
        ApiServer(api),
    )
}

/// How the mocked API server reports workloads.
#[derive(Clone, Copy)]
enum Pods {
    /// Just created: nothing ready yet.
    None,
    /// Every desired pod updated and ready.
    Ready,
}

/// A list of existing objects the server returns when the operator looks for leftovers.
#[derive(Default)]
struct Existing {
    deployments: Vec<&'static str>,
    statefulsets: Vec<&'static str>,
    services: Vec<&'static str>,
    configmaps: Vec<&'static str>,
    networkpolicies: Vec<&'static str>,
}

struct ApiServer(MockApi);

const NS: &str = "/namespaces/observatory";

impl ApiServer {
    /// Expect a server-side apply of `path` by our field manager; answer with the object (and,
    /// for workloads, a status). Returns the applied body.
    async fn expect_apply(&mut self, path: &str, pods: Pods) -> Value {
        let (req, body, send) = self.0.next().await;
        assert_eq!(req.method(), Method::PATCH, "{path}");
        assert_eq!(req.uri().path(), path);
        let query = req.uri().query().unwrap_or_default();
        assert!(
            query.contains("fieldManager=observatory-operator"),
            "{path}: {query}"
        );
        assert!(query.contains("force=true"), "{path}: {query}");
        assert_eq!(
            req.headers()["content-type"],
            "application/apply-patch+yaml"
        );
        let mut answer = body.clone();
        answer["metadata"]["generation"] = json!(1);
        answer["metadata"]["uid"] = json!("uid-child");
        if let Some(replicas) = body["spec"]["replicas"].as_i64() {
            answer["status"] = match pods {
                Pods::None => json!({"observedGeneration": 1, "replicas": 0}),
                Pods::Ready => json!({
                    "observedGeneration": 1,
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": replicas,
                }),
            };
        }
        MockApi::reply(send, StatusCode::OK, &answer);
        body
    }

    /// Expect the creation of the Pipeline's token Secret: answer that it exists already
    /// (409), or create it (returned: the created body).
    async fn expect_token(&mut self, exists: bool) -> Option<Value> {
        let (req, body, send) = self.0.next().await;
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), format!("/api/v1{NS}/secrets"));
        assert_eq!(body["metadata"]["name"], "demo-token");
        if exists {
            MockApi::reply(
                send,
                StatusCode::CONFLICT,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409,
                    "message": "secrets \"demo-token\" already exists"}),
            );
            return None;
        }
        MockApi::reply(send, StatusCode::CREATED, &body);
        Some(body)
    }

    /// Expect the token's creation (a Pipeline with no pods yet has no token yet either) and the
    /// applies of every stage of `d`, in order; returns the workload bodies.
    async fn expect_stages(&mut self, d: &Desired, pods: Pods) -> Vec<Value> {
        if let Some(created) = self.expect_token(!matches!(pods, Pods::None)).await {
            let token = created["stringData"]["token"].as_str().unwrap();
            assert_eq!(token.len(), 64, "32 random bytes, hex");
            assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(created["metadata"]["ownerReferences"][0]["uid"], "uid-demo");
        }
        let mut workloads = Vec::new();
        for s in &d.stages {
            let cm = self
                .expect_apply(&format!("/api/v1{NS}/configmaps/{}", s.name), pods)
                .await;
            assert_eq!(cm["kind"], "ConfigMap");
            assert_eq!(cm["metadata"]["ownerReferences"][0]["uid"], "uid-demo");
            let svc = self
                .expect_apply(&format!("/api/v1{NS}/services/{}", s.name), pods)
                .await;
            assert_eq!(svc["kind"], "Service");
            let np = self
                .expect_apply(
                    &format!("/apis/networking.k8s.io/v1{NS}/networkpolicies/{}", s.name),
                    pods,
                )
                .await;
            assert_eq!(np["kind"], "NetworkPolicy");
            let plural = match s.workload {
                Workload::Deployment(_) => "deployments",
                Workload::StatefulSet(_) => "statefulsets",
            };
            let w = self
                .expect_apply(&format!("/apis/apps/v1{NS}/{plural}/{}", s.name), pods)
                .await;
            assert_eq!(w["kind"], s.workload.kind());
            workloads.push(w);
            if let Pods::None = pods {
                self.expect_pods_of(s).await;
            }
        }
        workloads
    }

    /// A stage that is not ready: expect the list of its pods; the sink's one pod is
    /// unschedulable (as on a full 2-CPU node), the others have none yet.
    async fn expect_pods_of(&mut self, s: &crate::pipeline::render::StageObjects) {
        let (req, _, send) = self.0.next().await;
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), format!("/api/v1{NS}/pods"));
        let query = req.uri().query().unwrap_or_default();
        let component = format!("app.kubernetes.io%2Fcomponent%3D{}", s.role);
        assert!(query.contains(&component), "{query}");
        let items = if s.role == pipeline_plan::Role::Sink {
            json!([{"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "demo-sink-0", "namespace": "observatory"},
                "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                    "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient cpu."}]}}])
        } else {
            json!([])
        };
        MockApi::reply(
            send,
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "9"}, "items": items}),
        );
    }

    /// Expect the five label-selected lists that look for leftovers, and the deletes of those
    /// not wanted.
    async fn expect_prune(&mut self, existing: Existing, desired: &Desired) -> Vec<String> {
        let mut deleted = Vec::new();
        for (path, kind, names) in [
            (
                format!("/apis/apps/v1{NS}/deployments"),
                "Deployment",
                existing.deployments,
            ),
            (
                format!("/apis/apps/v1{NS}/statefulsets"),
                "StatefulSet",
                existing.statefulsets,
            ),
            (
                format!("/api/v1{NS}/services"),
                "Service",
                existing.services,
            ),
            (
                format!("/api/v1{NS}/configmaps"),
                "ConfigMap",
                existing.configmaps,
            ),
            (
                format!("/apis/networking.k8s.io/v1{NS}/networkpolicies"),
                "NetworkPolicy",
                existing.networkpolicies,
            ),
        ] {
            let (req, _, send) = self.0.next().await;
            assert_eq!(req.method(), Method::GET);
            assert_eq!(req.uri().path(), path);
            let query = req.uri().query().unwrap_or_default();
            assert!(
                query.contains("labelSelector=app.kubernetes.io%2Finstance%3Ddemo%2Capp.kubernetes.io%2Fmanaged-by%3Dobservatory-operator"),
                "{query}"
            );
            let items: Vec<Value> = names
                .iter()
                .map(|n| json!({"apiVersion": match kind { "Deployment" | "StatefulSet" => "apps/v1", "NetworkPolicy" => "networking.k8s.io/v1", _ => "v1" }, "kind": kind, "metadata": {"name": n, "namespace": "observatory"}}))
                .collect();
            MockApi::reply(
                send,
                StatusCode::OK,
                &json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "7"}, "items": items}),
            );
            let wanted = desired.wanted(kind);
            for n in names.iter().filter(|n| !wanted.contains(&n.to_string())) {
                let (req, _, send) = self.0.next().await;
                assert_eq!(req.method(), Method::DELETE, "{n}");
                assert_eq!(req.uri().path(), format!("{path}/{n}"));
                MockApi::reply(
                    send,
                    StatusCode::OK,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                );
                deleted.push(format!("{kind}/{n}"));
            }
        }
        deleted
    }

    /// Expect the status apply; returns the status.
    async fn expect_status(&mut self) -> Value {
        let path = format!("/apis/observatory.dev/v1alpha1{NS}/pipelines/demo/status");
        let answer = serde_json::to_value(sample()).unwrap();
        self.0.expect_status_apply(&path, "Pipeline", answer).await
    }

    /// Expect an event about the Pipeline; returns (type, reason, note).
    async fn expect_event(&mut self) -> (String, String, String) {
        self.0.expect_event_about("Pipeline", "demo").await
    }

    /// Answer the next request with an API error.
    async fn fail_next(&mut self, code: u16) -> Request<Body> {
        self.fail_next_saying(code, "injected").await
    }

    /// Answer the next request with an API error saying `message`.
    async fn fail_next_saying(&mut self, code: u16, message: &str) -> Request<Body> {
        let (req, _, send) = self.0.next().await;
        let status = StatusCode::from_u16(code).unwrap();
        MockApi::reply(
            send,
            status,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": "Injected", "code": code}),
        );
        req
    }
}

/// Run a reconcile against the scripted server; both must finish within 10 s.
async fn run<F>(p: Pipeline, ctx: Arc<Context>, script: F) -> Result<Action, Error>
where
    F: Future<Output = ()> + Send + 'static,
{
    let server = tokio::spawn(script);
    let result = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(p), ctx))
        .await
        .expect("reconcile finished");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the scripted server finished")
        .expect("the scripted server's assertions held");
    result
}

#[tokio::test]
async fn a_pipeline_being_deleted_is_left_to_the_garbage_collector() {
    // Deleted in the foreground, as the Experiment deletes its runs: the Pipeline waits for
    // its stages to go. Applying them again would recreate what the garbage collector deletes,
    // forever (seen on a real cluster). No request at all is the answer.
    let (ctx, mut server) = context();
    let mut p = sample();
    p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    p.metadata.finalizers = Some(vec!["foregroundDeletion".into()]);
    let result = tokio::time::timeout(Duration::from_secs(5), reconcile(Arc::new(p), ctx))
        .await
        .expect("reconcile finished without waiting on the API");
    assert_eq!(result.unwrap(), Action::await_change());
    server.0.expect_no_request().await;
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("condition {type_}"))
}

#[tokio::test]
async fn creates_every_stage_from_scratch_and_reports_it_progressing() {
    let (ctx, mut server) = context();
    let d = render(&sample()).unwrap();
    let wanted = d.clone();
    let result = run(sample(), ctx.clone(), async move {
        let workloads = server.expect_stages(&d, Pods::None).await;
        assert_eq!(workloads[1]["spec"]["replicas"], 2, "parse has two pods");
        assert_eq!(
            workloads[1]["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH],
            d.stages[1].config_hash
        );
        assert!(
            server
                .expect_prune(Existing::default(), &wanted)
                .await
                .is_empty()
        );
        let status = server.expect_status().await;
        assert_eq!(status["observedGeneration"], 1);
        assert_eq!(status["readyStages"], "0/4");
        assert_eq!(status["summary"], "Progressing");
        let stages = status["stages"].as_array().unwrap();
        assert_eq!(stages.len(), 4);
        assert_eq!(stages[2]["name"], "aggregate");
        assert_eq!(stages[2]["workload"], "StatefulSet");
        assert_eq!(stages[2]["desiredReplicas"], 2);
        assert_eq!(stages[2]["readyReplicas"], 0);
        assert_eq!(condition(&status, "Ready")["status"], "False");
        assert_eq!(condition(&status, "Ready")["reason"], "StagesNotReady");
        let why = condition(&status, "Ready")["message"].as_str().unwrap();
        assert!(why.contains("parse 0/2 ready"), "{why}");
        // Not only "0/1 ready": why, from the pod.
        assert!(
            why.contains("sink 0/1 ready, 0/1 updated (pod demo-sink-0: not scheduled (Unschedulable): 0/1 nodes are available: 1 Insufficient cpu.)"),
            "{why}"
        );
        assert_eq!(
            stages[3]["problem"],
            "pod demo-sink-0: not scheduled (Unschedulable): 0/1 nodes are available: 1 Insufficient cpu."
        );
        assert!(stages[0].get("problem").is_none(), "no pod, nothing to say yet");
        assert_eq!(condition(&status, "Progressing")["status"], "True");
        assert_eq!(condition(&status, "Degraded")["status"], "False");
        assert_eq!(condition(&status, "Degraded")["observedGeneration"], 1);
        let (type_, reason, note) = server.expect_event().await;
        assert_eq!((type_.as_str(), reason.as_str()), ("Normal", "Created"));
        assert!(note.contains("source, parse, aggregate, sink"));
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));
    assert_eq!(ctx.metrics.reconciliations.get(), 1);
    assert_eq!(ctx.metrics.duration.get_sample_count(), 1);
}

/// The status a previous reconcile left when everything was ready.
fn ready_status(d: &Desired) -> PipelineStatus {
    let now = Time(Timestamp::now());
    PipelineStatus {
        observed_generation: Some(1),
        ready_stages: "4/4".into(),
        summary: "Ready".into(),
        stages: d
            .stages
            .iter()
            .map(|s| StageStatus {
                name: s.role.to_string(),
                workload: s.workload.kind().into(),
                desired_replicas: s.replicas,
                updated_replicas: s.replicas,
                ready_replicas: s.replicas,
                config_hash: s.config_hash.clone(),
                problem: None,
            })
            .collect(),
        conditions: ["Ready", "Progressing", "Degraded"]
            .iter()
            .map(|t| Condition {
                type_: (*t).into(),
                status: if *t == "Ready" { "True" } else { "False" }.into(),
                reason: "Before".into(),
                message: String::new(),
                observed_generation: Some(1),
                last_transition_time: now.clone(),
            })
            .collect(),
    }
}

#[tokio::test]
async fn ready_workloads_make_the_pipeline_ready() {
    let (ctx, mut server) = context();
    let d = render(&sample()).unwrap();
    let wanted = d.clone();
    let result = run(sample(), ctx, async move {
        server.expect_stages(&d, Pods::Ready).await;
        server.expect_prune(Existing::default(), &wanted).await;
        let status = server.expect_status().await;
        assert_eq!(status["readyStages"], "4/4");
        assert_eq!(status["summary"], "Ready");
        assert_eq!(condition(&status, "Ready")["status"], "True");
        assert_eq!(condition(&status, "Ready")["reason"], "AllStagesReady");
        assert_eq!(condition(&status, "Progressing")["status"], "False");
        assert_eq!(server.expect_event().await.1, "Created");
        assert_eq!(server.expect_event().await.1, "Ready");
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn a_knob_change_rolls_that_stage_only() {
    let (ctx, mut server) = context();
    let before = render(&sample()).unwrap();
    let mut p = sample();
    p.status = Some(ready_status(&before));
    p.metadata.generation = Some(2);
    p.spec.parse.as_mut().unwrap().knobs.mode = pipeline_plan::ParseMode::Owned;
    let after = render(&p).unwrap();
    let wanted = after.clone();
    let old_hashes: Vec<String> = before
        .stages
        .iter()
        .map(|s| s.config_hash.clone())
        .collect();
    let result = run(p, ctx, async move {
        let workloads = server.expect_stages(&after, Pods::Ready).await;
        let hashes: Vec<String> = workloads
            .iter()
            .map(|w| {
                w["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        for (i, (new, old)) in hashes.iter().zip(&old_hashes).enumerate() {
            assert_eq!(
                new != old,
                i == 1,
                "stage {i}: only parse (1) gets a new config hash"
            );
        }
        server.expect_prune(Existing::default(), &wanted).await;
        let status = server.expect_status().await;
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(status["stages"][1]["configHash"], hashes[1]);
        // The Ready condition held through the change: its transition time is kept.
        assert_eq!(condition(&status, "Ready")["status"], "True");
        let (type_, reason, note) = server.expect_event().await;
        assert_eq!((type_.as_str(), reason.as_str()), ("Normal", "RollingOut"));
        assert!(note.starts_with("stage parse: config changed"), "{note}");
    })
    .await;
    assert!(result.is_ok());
}

#[tokio::test]
async fn an_invalid_spec_is_degraded_with_the_field_named_and_nothing_applied() {
    let (ctx, mut server) = context();
    let mut p = sample();
    p.spec.parse.as_mut().unwrap().knobs.workers = 0;
    let result = run(p, ctx.clone(), async move {
        // The first request is the status: nothing is applied.
        let status = server.expect_status().await;
        assert_eq!(status["summary"], "Degraded");
        let degraded = condition(&status, "Degraded");
        assert_eq!(degraded["status"], "True");
        assert_eq!(degraded["reason"], "InvalidSpec");
        assert_eq!(
            degraded["message"],
            "invalid spec: spec.parse.knobs.workers: must be between 1 and 64, got 0"
        );
        assert_eq!(condition(&status, "Ready")["status"], "False");
        let (type_, reason, note) = server.expect_event().await;
        assert_eq!(
            (type_.as_str(), reason.as_str()),
            ("Warning", "InvalidSpec")
        );
        assert!(note.contains("spec.parse.knobs.workers"));
    })
    .await;
    // Not an error: no crash loop, no retry; a fixed spec wakes the controller.
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(
        ctx.metrics.failures.with_label_values(&["api_500"]).get(),
        0
    );
}

#[tokio::test]
async fn api_errors_requeue_with_backoff_and_count_as_failures() {
    for code in [409u16, 500] {
        let (ctx, mut server) = context();
        let p = Arc::new(sample());
        let result = run((*p).clone(), ctx.clone(), async move {
            server.expect_token(true).await;
            let req = server.fail_next(code).await;
            assert_eq!(req.method(), Method::PATCH);
            assert!(req.uri().path().ends_with("/configmaps/demo-source"));
            let (type_, reason, note) = server.expect_event().await;
            assert_eq!(
                (type_.as_str(), reason.as_str()),
                ("Warning", "ReconcileFailed")
            );
            assert!(note.contains("injected"), "{note}");
        })
        .await;
        let err = result.unwrap_err();
        assert_eq!(err.kind(), format!("api_{code}"));
        assert_eq!(
            error_policy(p.clone(), &err, ctx.clone()),
            Action::requeue(Duration::from_secs(5))
        );
        assert_eq!(
            error_policy(p.clone(), &err, ctx.clone()),
            Action::requeue(Duration::from_secs(10))
        );
        let label = format!("api_{code}");
        assert_eq!(
            ctx.metrics
                .failures
                .with_label_values(&[label.as_str()])
                .get(),
            2
        );
        let text = ctx.metrics.render();
        assert!(
            text.contains(&format!(
                "observatory_operator_reconcile_failures_total{{error=\"api_{code}\"}} 2"
            )),
            "{text}"
        );
    }
    assert_eq!(
        backoff(20),
        Duration::from_secs(300),
        "capped at five minutes"
    );
}

#[tokio::test]
async fn objects_of_a_removed_stage_are_deleted() {
    let (ctx, mut server) = context();
    let before = render(&sample()).unwrap();
    let mut p = sample();
    p.status = Some(ready_status(&before));
    p.spec.sink = None;
    let after = render(&p).unwrap();
    let wanted = after.clone();
    let result = run(p, ctx, async move {
        server.expect_stages(&after, Pods::Ready).await;
        let deleted = server
            .expect_prune(
                Existing {
                    deployments: vec!["demo-source", "demo-parse"],
                    statefulsets: vec!["demo-parse", "demo-aggregate", "demo-sink"],
                    services: vec!["demo-source", "demo-parse", "demo-aggregate", "demo-sink"],
                    configmaps: vec!["demo-source", "demo-parse", "demo-aggregate", "demo-sink"],
                    networkpolicies: vec!["demo-source", "demo-parse", "demo-aggregate", "demo-sink"],
                },
                &wanted,
            )
            .await;
        // The sink's objects go; so does parse's Deployment from before parse pods were a
        // StatefulSet (the name is still wanted, but not as a Deployment).
        assert_eq!(
            deleted,
            [
                "Deployment/demo-parse",
                "StatefulSet/demo-sink",
                "Service/demo-sink",
                "ConfigMap/demo-sink",
                "NetworkPolicy/demo-sink"
            ]
        );
        let status = server.expect_status().await;
        assert_eq!(status["readyStages"], "3/3");
        // The aggregate is now the last stage: its config changed (no downstream).
        let (_, reason, note) = server.expect_event().await;
        assert_eq!(reason, "RollingOut");
        assert!(note.starts_with("stage aggregate"), "{note}");
        let (_, reason, note) = server.expect_event().await;
        assert_eq!(reason, "StageRemoved");
        assert_eq!(
            note,
            "deleted Deployment/demo-parse, StatefulSet/demo-sink, Service/demo-sink, ConfigMap/demo-sink, NetworkPolicy/demo-sink"
        );
    })
    .await;
    assert!(result.is_ok());
}

/// The value of an unlabelled sample in a metrics text.
fn sample_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in the metrics"))
}

#[tokio::test]
async fn the_operator_measures_its_own_reconciles() {
    let (ctx, mut server) = context();
    let d = render(&sample()).unwrap();
    let wanted = d.clone();
    let rounds = 50;
    let mut p = sample();
    p.status = Some(ready_status(&d));
    let script = async move {
        for _ in 0..rounds {
            server.expect_stages(&d, Pods::Ready).await;
            server.expect_prune(Existing::default(), &wanted).await;
            server.expect_status().await;
        }
    };
    let server = tokio::spawn(script);
    for _ in 0..rounds {
        reconcile(Arc::new(p.clone()), ctx.clone()).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap();
    let text = ctx.metrics.render();
    let count = sample_value(
        &text,
        "observatory_operator_reconcile_duration_seconds_count",
    );
    let sum = sample_value(&text, "observatory_operator_reconcile_duration_seconds_sum");
    let rss = sample_value(&text, "process_resident_memory_bytes");
    assert_eq!(count, rounds as f64);
    assert_eq!(
        sample_value(&text, "observatory_operator_reconciliations_total"),
        rounds as f64
    );
    assert!(sum > 0.0 && rss > 0.0);
    // For the record (run with --nocapture): each reconcile is 17 API round trips to the mock.
    eprintln!(
        "operator metrics after {rounds} reconciles against the mock: mean reconcile {:.2} ms, process RSS {:.1} MiB",
        sum / count * 1e3,
        rss / (1 << 20) as f64
    );
}

#[tokio::test]
async fn a_service_that_cannot_change_in_place_is_replaced() {
    // parse's Service was a ClusterIP Service before parse pods were addressed by name; its
    // `spec.clusterIP` is immutable, so applying the headless one is refused (422). It is
    // deleted and applied again, instead of failing every reconcile.
    let (ctx, mut server) = context();
    let d = render(&sample()).unwrap();
    let mut p = sample();
    p.status = Some(ready_status(&d));
    let result = run(p, ctx, async move {
        server.expect_token(true).await;
        for s in &d.stages {
            server
                .expect_apply(&format!("/api/v1{NS}/configmaps/{}", s.name), Pods::Ready)
                .await;
            let svc = format!("/api/v1{NS}/services/{}", s.name);
            if s.role == pipeline_plan::Role::Parse {
                // What an API server says of a ClusterIP Service applied as headless.
                let req = server
                    .fail_next_saying(422, "Service \"demo-parse\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"None\"}: may not change once set")
                    .await;
                assert_eq!(req.uri().path(), svc);
                let (req, _, send) = server.0.next().await;
                assert_eq!(req.method(), Method::DELETE);
                assert_eq!(req.uri().path(), svc);
                MockApi::reply(
                    send,
                    StatusCode::OK,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                );
            }
            let body = server.expect_apply(&svc, Pods::Ready).await;
            if s.role == pipeline_plan::Role::Parse {
                assert_eq!(body["spec"]["clusterIP"], "None", "headless");
            }
            server
                .expect_apply(
                    &format!("/apis/networking.k8s.io/v1{NS}/networkpolicies/{}", s.name),
                    Pods::Ready,
                )
                .await;
            let plural = match s.workload {
                Workload::Deployment(_) => "deployments",
                Workload::StatefulSet(_) => "statefulsets",
            };
            server
                .expect_apply(
                    &format!("/apis/apps/v1{NS}/{plural}/{}", s.name),
                    Pods::Ready,
                )
                .await;
        }
        server.expect_prune(Existing::default(), &d).await;
        let status = server.expect_status().await;
        assert_eq!(status["summary"], "Ready");
    })
    .await;
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_service_refused_for_another_reason_is_an_error_not_a_replacement() {
    // Only an immutable clusterIP is worth deleting a Service for; any other 422 fails the
    // reconcile (and is retried with backoff), with nothing deleted.
    let (ctx, mut server) = context();
    let result = run(sample(), ctx, async move {
        server.expect_token(true).await;
        server
            .expect_apply(&format!("/api/v1{NS}/configmaps/demo-source"), Pods::Ready)
            .await;
        server
            .fail_next_saying(
                422,
                "Service \"demo-source\" is invalid: spec.ports[0].port: Invalid value: 0",
            )
            .await;
        let (_, reason, _) = server.expect_event().await;
        assert_eq!(reason, "ReconcileFailed");
        server.0.expect_no_request().await;
    })
    .await;
    assert_eq!(result.unwrap_err().kind(), "api_422");
}
