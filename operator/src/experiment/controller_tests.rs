//! Experiment reconciles against a mocked API server at the HTTP layer (tower-test), asserting
//! each request, with Prometheus and Grafana played by small HTTP servers on loopback that
//! record what they were asked (the real Prometheus answers the same queries in
//! `tests/results_live.rs`).

use super::*;
use crate::experiment::{Measurement, RunStatus, initial_status, record_measurement};
use crate::fixtures::api_server::{MockApi, mock};
use crate::fixtures::experiment;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use http::{Method, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const NS: &str = "/namespaces/observatory";
const PIPELINES: &str = "/apis/observatory.dev/v1alpha1/namespaces/observatory/pipelines";

struct ApiServer(MockApi);

impl ApiServer {
    /// Expect the list of the experiment's run Pipelines; answer with `runs`.
    async fn expect_list_runs(&mut self, runs: Vec<Value>) {
        let (req, _, send) = self.0.next().await;
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), PIPELINES);
        let query = req.uri().query().unwrap_or_default();
        assert!(
            query.contains("labelSelector=observatory.dev%2Fexperiment%3Dlab-02-batching"),
            "{query}"
        );
        MockApi::reply(
            send,
            StatusCode::OK,
            &json!({"apiVersion": "observatory.dev/v1alpha1", "kind": "PipelineList",
                "metadata": {"resourceVersion": "5"}, "items": runs}),
        );
    }

    /// Expect the GET of Secret grafana-admin; answer with these keys (None: 404).
    async fn expect_grafana_secret(&mut self, keys: Option<(&str, &str)>) {
        self.expect_secret(
            "grafana-admin",
            keys.map(|(user, password)| vec![("user", user), ("password", password)]),
        )
        .await
    }

    /// Expect the GET of Secret `name`; answer with these keys (None: 404), labelled as a
    /// leaderboard token.
    async fn expect_secret(&mut self, name: &str, keys: Option<Vec<(&str, &str)>>) {
        self.expect_secret_as(
            name,
            keys,
            json!({"observatory.dev/leaderboard-token": "true"}),
            None,
        )
        .await
    }

    /// [`Self::expect_secret`] with these labels and Secret type.
    async fn expect_secret_as(
        &mut self,
        name: &str,
        keys: Option<Vec<(&str, &str)>>,
        labels: Value,
        type_: Option<&str>,
    ) {
        use base64::Engine;
        let (req, _, send) = self.0.next().await;
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), format!("/api/v1{NS}/secrets/{name}"));
        match keys {
            Some(keys) => {
                let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
                let data: serde_json::Map<String, Value> = keys
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), json!(b64(v))))
                    .collect();
                MockApi::reply(
                    send,
                    StatusCode::OK,
                    &json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": name, "namespace": "observatory", "labels": labels},
                        "type": type_.unwrap_or("Opaque"),
                        "data": data}),
                )
            }
            None => MockApi::reply(
                send,
                StatusCode::NOT_FOUND,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("secrets \"{name}\" not found")}),
            ),
        }
    }

    /// Expect the status apply of the Experiment; returns the status.
    async fn expect_status(&mut self) -> Value {
        let path = format!("/apis/observatory.dev/v1alpha1{NS}/experiments/lab-02-batching/status");
        let answer = serde_json::to_value(experiment()).unwrap();
        self.0
            .expect_status_apply(&path, "Experiment", answer)
            .await
    }

    /// Expect an event about the Experiment; returns (type, reason, note).
    async fn expect_event(&mut self) -> (String, String, String) {
        self.0
            .expect_event_about("Experiment", "lab-02-batching")
            .await
    }

    async fn expect_delete_pipeline(&mut self, name: &str) {
        let (req, body, send) = self.0.next().await;
        assert_eq!(req.method(), Method::DELETE);
        assert_eq!(req.uri().path(), format!("{PIPELINES}/{name}"));
        assert_eq!(body["propagationPolicy"], "Foreground");
        MockApi::reply(
            send,
            StatusCode::OK,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        );
    }
}

/// An annotation request: its Authorization header and its body.
type Annotation = (Option<String>, Value);

/// What the stand-ins for Prometheus and Grafana were asked.
#[derive(Clone, Default)]
struct Asked {
    queries: Arc<Mutex<Vec<(String, String)>>>,
    annotations: Arc<Mutex<Vec<Annotation>>>,
}

/// Prometheus answering every query with `value` (None: an empty result), and Grafana
/// creating annotation 42; both on loopback.
async fn stand_ins(value: Option<f64>) -> (String, Asked) {
    let asked = Asked::default();
    async fn query(
        State((asked, value)): State<(Asked, Option<f64>)>,
        Query(q): Query<HashMap<String, String>>,
    ) -> Json<Value> {
        asked
            .queries
            .lock()
            .unwrap()
            .push((q["query"].clone(), q["time"].clone()));
        // `or vector(0)` queries always have a sample, as in a real Prometheus.
        let result = match value {
            _ if q["query"].ends_with("or vector(0)") => {
                json!([{"metric": {}, "value": [1.0, "0"]}])
            }
            Some(v) => json!([{"metric": {}, "value": [1.0, v.to_string()]}]),
            None => json!([]),
        };
        Json(json!({"status": "success", "data": {"resultType": "vector", "result": result}}))
    }
    async fn annotate(
        State((asked, _)): State<(Asked, Option<f64>)>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Json<Value> {
        let auth = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        asked.annotations.lock().unwrap().push((auth, body));
        Json(json!({"id": 42, "message": "Annotation added"}))
    }
    let app = axum::Router::new()
        .route("/api/v1/query", get(query))
        .route("/api/annotations", post(annotate))
        .with_state((asked.clone(), value));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, asked)
}

fn context(prometheus: &str, grafana: Option<&str>) -> (Arc<Context>, ApiServer) {
    let (client, api) = mock();
    (
        Context::new(
            client,
            Arc::new(Metrics::new()),
            Prometheus {
                url: prometheus.to_string(),
            },
            grafana.map(|g| Grafana::new(g, "admin", "s3cret")),
        ),
        ApiServer(api),
    )
}

async fn run<F>(e: Experiment, ctx: Arc<Context>, script: F) -> Result<Requeue, Error>
where
    F: Future<Output = ()> + std::marker::Send + 'static,
{
    let server = tokio::spawn(script);
    let result = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(e), ctx))
        .await
        .expect("reconcile finished");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the scripted server finished")
        .expect("the scripted server's assertions held");
    result
}

/// A run Pipeline of the experiment, as the API server lists it.
fn run_pipeline(name: &str, summary: &str, deleting: bool) -> Value {
    let mut p = json!({
        "apiVersion": "observatory.dev/v1alpha1", "kind": "Pipeline",
        "metadata": {"name": name, "namespace": "observatory", "uid": "uid-run",
            "labels": {"observatory.dev/experiment": "lab-02-batching"},
            "ownerReferences": [{"apiVersion": "observatory.dev/v1alpha1", "kind": "Experiment",
                "name": "lab-02-batching", "uid": "uid-exp", "controller": true}]},
        "spec": experiment().spec.pipeline,
        "status": {"summary": summary, "readyStages": "4/4"},
    });
    if deleting {
        p["metadata"]["deletionTimestamp"] = json!("2026-12-01T10:00:00Z");
        p["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
    }
    p
}

fn ready(name: &str) -> Value {
    run_pipeline(name, "Ready", false)
}

/// An Experiment whose first run's window ended `ago` seconds ago.
fn window_over(ago: i64) -> Experiment {
    let mut e = experiment();
    let mut status = initial_status(&e);
    let end = Timestamp::now() - SignedDuration::from_secs(ago);
    let run: &mut RunStatus = &mut status.runs[0];
    run.phase = experiment::MEASURING.into();
    run.deployed_at = Some(Time(end - SignedDuration::from_secs(120)));
    run.window_start = Some(Time(end - SignedDuration::from_secs(60)));
    run.window_end = Some(Time(end));
    e.status = Some(status);
    e
}

#[tokio::test]
async fn a_new_experiment_creates_its_first_run_pipeline() {
    let (ctx, mut server) = context("http://127.0.0.1:1", None);
    let result = run(experiment(), ctx.clone(), async move {
        server.expect_list_runs(vec![]).await;
        let (req, body, send) = server.0.next().await;
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(req.uri().path(), format!("{PIPELINES}/lab-02-batching-b0"));
        let query = req.uri().query().unwrap_or_default();
        assert!(
            query.contains("fieldManager=observatory-operator"),
            "{query}"
        );
        assert_eq!(
            req.headers()["content-type"],
            "application/apply-patch+yaml"
        );
        assert_eq!(body["kind"], "Pipeline");
        assert_eq!(body["spec"]["source"]["knobs"]["batch_size"], 4);
        assert_eq!(body["spec"]["source"]["knobs"]["events"], 0);
        assert_eq!(body["spec"]["labels"]["side"], "lab-02-batching-baseline");
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-exp");
        MockApi::reply(send, StatusCode::OK, &body);
        let status = server.expect_status().await;
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["progress"], "0/6");
        assert_eq!(status["runs"][0]["phase"], "Deploying");
        assert_eq!(status["runs"][1]["phase"], "Pending");
        assert!(status["message"].as_str().unwrap().contains("run 1 of 6"));
    })
    .await;
    assert_eq!(result.unwrap(), Requeue::requeue(experiment::POLL));
}

#[tokio::test]
async fn a_finished_window_is_measured_annotated_and_its_run_deleted() {
    let (url, asked) = stand_ins(Some(12_345.0)).await;
    let (ctx, mut server) = context(&url, Some(&url));
    let e = window_over(30);
    let end = e.status.as_ref().unwrap().runs[0]
        .window_end
        .clone()
        .unwrap();
    let result = run(e, ctx.clone(), async move {
        server
            .expect_list_runs(vec![ready("lab-02-batching-b0")])
            .await;
        server.expect_delete_pipeline("lab-02-batching-b0").await;
        let status = server.expect_status().await;
        let r0 = &status["runs"][0];
        assert_eq!(r0["phase"], "Measured");
        assert_eq!(r0["value"], 12_345.0);
        assert_eq!(r0["events"], 12_345.0);
        assert_eq!(r0["lost"], 0.0);
        assert_eq!(r0["annotation"], "grafana annotation 42");
        assert_eq!(status["progress"], "1/6");
        let (type_, reason, note) = server.expect_event().await;
        assert_eq!((type_.as_str(), reason.as_str()), ("Normal", "RunMeasured"));
        assert!(note.contains("throughput_eps = 12345"), "{note}");
    })
    .await;
    assert_eq!(result.unwrap(), Requeue::requeue(experiment::POLL));
    let queries = asked.queries.lock().unwrap().clone();
    assert_eq!(queries.len(), 3, "value, events, lost");
    for (q, time) in &queries {
        assert!(q.contains("pipeline=\"lab-02-batching-b0\""), "{q}");
        assert!(q.contains("[60s]"), "{q}");
        assert_eq!(
            time,
            &end.0.as_second().to_string(),
            "evaluated at the window's end"
        );
    }
    let annotations = asked.annotations.lock().unwrap().clone();
    assert_eq!(annotations.len(), 1);
    let (auth, body) = &annotations[0];
    assert_eq!(
        auth.as_deref(),
        Some("Basic YWRtaW46czNjcmV0"),
        "admin:s3cret"
    );
    assert_eq!(body["timeEnd"], end.0.as_millisecond());
    assert_eq!(body["time"], end.0.as_millisecond() - 60_000);
    let tags: Vec<&str> = body["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        tags,
        [
            "observatory",
            "experiment:lab-02-batching",
            "baseline",
            "lab-02-batching-b0"
        ]
    );
    assert_eq!(ctx.metrics.experiment_runs.get(), 1);
}

#[tokio::test]
async fn without_grafana_the_run_says_it_was_not_annotated() {
    let (url, _) = stand_ins(Some(1.0)).await;
    let (ctx, mut server) = context(&url, None);
    run(window_over(30), ctx, async move {
        server
            .expect_list_runs(vec![ready("lab-02-batching-b0")])
            .await;
        server.expect_delete_pipeline("lab-02-batching-b0").await;
        let status = server.expect_status().await;
        assert_eq!(
            status["runs"][0]["annotation"],
            "not annotated: the operator has no Grafana configured"
        );
        server.expect_event().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_window_prometheus_has_no_data_for_fails_the_experiment() {
    let (url, _) = stand_ins(None).await;
    let (ctx, mut server) = context(&url, None);
    let result = run(window_over(30), ctx.clone(), async move {
        server
            .expect_list_runs(vec![ready("lab-02-batching-b0")])
            .await;
        server.expect_delete_pipeline("lab-02-batching-b0").await;
        let status = server.expect_status().await;
        assert_eq!(status["phase"], "Failed");
        let msg = status["message"].as_str().unwrap();
        assert!(
            msg.contains("no data") && msg.contains("scraping namespace observatory"),
            "{msg}"
        );
        let (type_, reason, _) = server.expect_event().await;
        assert_eq!((type_.as_str(), reason.as_str()), ("Warning", "Failed"));
    })
    .await;
    assert_eq!(result.unwrap(), Requeue::await_change());
    assert_eq!(
        ctx.metrics.experiments.with_label_values(&["failed"]).get(),
        1
    );
}

#[tokio::test]
async fn an_unreachable_prometheus_is_an_error_that_retries_and_keeps_the_window() {
    // Port 1 on loopback: connection refused.
    let (ctx, mut server) = context("http://127.0.0.1:1", None);
    let e = window_over(30);
    let result = run(e.clone(), ctx.clone(), async move {
        server
            .expect_list_runs(vec![ready("lab-02-batching-b0")])
            .await;
        let (type_, reason, note) = server.expect_event().await;
        assert_eq!(
            (type_.as_str(), reason.as_str()),
            ("Warning", "ReconcileFailed")
        );
        assert!(note.contains("127.0.0.1:1"), "{note}");
    })
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), "results");
    assert_eq!(
        error_policy(Arc::new(e), &err, ctx.clone()),
        Requeue::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        ctx.metrics.failures.with_label_values(&["results"]).get(),
        1
    );
}

/// Every run of `e` measured (the variant about 3x the baseline), no verdict yet.
fn all_measured(e: &Experiment) -> ExperimentStatus {
    let mut status = initial_status(e);
    for (i, v) in [10e3, 30e3, 10.2e3, 30.5e3, 9.9e3, 29.8e3]
        .into_iter()
        .enumerate()
    {
        let m = Measurement {
            value: v,
            events: v * 60.0,
            lost: 0.0,
        };
        status = record_measurement(status, i, &m, "grafana annotation 1".into());
    }
    status
}

#[tokio::test]
async fn the_last_measurement_concludes_with_the_verdict() {
    let mut e = experiment();
    e.status = Some(all_measured(&e));
    let (ctx, mut server) = context("http://127.0.0.1:1", None);
    let result = run(e, ctx.clone(), async move {
        server.expect_list_runs(vec![]).await;
        let status = server.expect_status().await;
        assert_eq!(status["phase"], "Succeeded");
        assert_eq!(status["result"]["passed"], true);
        assert_eq!(status["result"]["verdict"], "better");
        assert!(status["result"]["low"].as_f64().unwrap() >= 2.0);
        assert_eq!(status["conditions"][0]["type"], "Complete");
        assert_eq!(status["conditions"][0]["status"], "True");
        let (_, reason, note) = server.expect_event().await;
        assert_eq!(reason, "Finished");
        assert!(note.contains("passed"), "{note}");
    })
    .await;
    assert_eq!(result.unwrap(), Requeue::await_change());
    assert_eq!(
        ctx.metrics.experiments.with_label_values(&["passed"]).get(),
        1
    );
}

#[tokio::test]
async fn an_invalid_experiment_fails_without_creating_anything() {
    let mut e = experiment();
    e.spec.baseline.set = vec!["parse.mode=fast".into()];
    let (ctx, mut server) = context("http://127.0.0.1:1", None);
    let result = run(e, ctx, async move {
        server.expect_list_runs(vec![]).await;
        let status = server.expect_status().await;
        assert_eq!(status["phase"], "Failed");
        let msg = status["message"].as_str().unwrap();
        assert!(
            msg.contains("spec.baseline.set") && msg.contains("parse.mode=fast"),
            "{msg}"
        );
        let (type_, reason, _) = server.expect_event().await;
        assert_eq!((type_.as_str(), reason.as_str()), ("Warning", "Failed"));
    })
    .await;
    assert_eq!(result.unwrap(), Requeue::await_change());
}

fn context_with_secret(prometheus: &str, grafana: &str) -> (Arc<Context>, ApiServer) {
    let (client, api) = mock();
    let credentials = crate::experiment::results::Credentials::Secret {
        namespace: "observatory".into(),
        name: "grafana-admin".into(),
    };
    (
        Context::new(
            client,
            Arc::new(Metrics::new()),
            Prometheus {
                url: prometheus.to_string(),
            },
            Some(Grafana::with(grafana, credentials)),
        ),
        ApiServer(api),
    )
}

#[tokio::test]
async fn the_grafana_password_is_read_from_its_secret_at_each_annotation() {
    // `make up` creates Secret grafana-admin after the operator has started: a password read
    // once at start is empty forever. Read at each annotation, the Secret as it is now counts.
    let (url, asked) = stand_ins(Some(100.0)).await;
    let (ctx, mut server) = context_with_secret(&url, &url);
    let e = window_over(30);
    run(e, ctx.clone(), async move {
        server
            .expect_list_runs(vec![ready("lab-02-batching-b0")])
            .await;
        server
            .expect_grafana_secret(Some(("admin", "s3cret")))
            .await;
        server.expect_delete_pipeline("lab-02-batching-b0").await;
        let status = server.expect_status().await;
        assert_eq!(status["runs"][0]["annotation"], "grafana annotation 42");
        server.expect_event().await;
    })
    .await
    .unwrap();
    let annotations = asked.annotations.lock().unwrap().clone();
    assert_eq!(annotations[0].0.as_deref(), Some("Basic YWRtaW46czNjcmV0"));

    // No Secret (yet): the run is measured all the same, and says why it is not annotated.
    let (ctx, mut server) = context_with_secret(&url, &url);
    run(window_over(30), ctx, async move {
        server
            .expect_list_runs(vec![ready("lab-02-batching-b0")])
            .await;
        server.expect_grafana_secret(None).await;
        server.expect_delete_pipeline("lab-02-batching-b0").await;
        let status = server.expect_status().await;
        assert_eq!(status["runs"][0]["phase"], "Measured");
        let note = status["runs"][0]["annotation"].as_str().unwrap();
        assert!(
            note.starts_with("not annotated: Secret observatory/grafana-admin does not exist"),
            "{note}"
        );
        server.expect_event().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn each_measured_run_is_its_own_event() {
    // The event recorder folds events with the same reason and objects into a series that
    // keeps the first note: six RunMeasured events showed b0's value six times. Each names its
    // run as the related object, so each is created, not patched into a series.
    let (url, _) = stand_ins(Some(7.0)).await;
    let (ctx, server) = context(&url, None);
    let server = Arc::new(tokio::sync::Mutex::new(server));
    let mut e = window_over(30);
    let s = server.clone();
    run(e.clone(), ctx.clone(), async move {
        let mut server = s.lock().await;
        server
            .expect_list_runs(vec![ready("lab-02-batching-b0")])
            .await;
        server.expect_delete_pipeline("lab-02-batching-b0").await;
        server.expect_status().await;
        let (req, body, send) = server.0.next().await;
        assert_eq!(req.method(), Method::POST, "a new event");
        assert_eq!(body["reason"], "RunMeasured");
        assert_eq!(body["related"]["name"], "lab-02-batching-b0");
        MockApi::reply(send, StatusCode::CREATED, &body);
    })
    .await
    .unwrap();
    // The second run, measured by the same operator (the same recorder).
    let mut status = e.status.take().unwrap();
    status.runs[0].phase = experiment::MEASURED.into();
    status.runs[0].value = Some(7.0);
    let end = Timestamp::now() - SignedDuration::from_secs(30);
    let r1 = &mut status.runs[1];
    r1.phase = experiment::MEASURING.into();
    r1.window_start = Some(Time(end - SignedDuration::from_secs(60)));
    r1.window_end = Some(Time(end));
    e.status = Some(status);
    run(e, ctx, async move {
        let mut server = server.lock().await;
        server
            .expect_list_runs(vec![ready("lab-02-batching-v0")])
            .await;
        server.expect_delete_pipeline("lab-02-batching-v0").await;
        server.expect_status().await;
        let (req, body, send) = server.0.next().await;
        assert_eq!(
            req.method(),
            Method::POST,
            "a second event, not a PATCH of the first one's series"
        );
        assert_eq!(body["related"]["name"], "lab-02-batching-v0");
        assert!(body["note"].as_str().unwrap().contains("variant"));
        MockApi::reply(send, StatusCode::CREATED, &body);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_next_run_waits_until_the_last_runs_pipeline_is_gone() {
    // Run 1 measured, its Pipeline still being deleted (foreground: its pods are stopping).
    let mut e = experiment();
    let m = Measurement {
        value: 1.0,
        events: 60.0,
        lost: 0.0,
    };
    e.status = Some(record_measurement(initial_status(&e), 0, &m, "x".into()));
    let (ctx, mut server) = context("http://127.0.0.1:1", None);
    let result = run(e.clone(), ctx.clone(), async move {
        server
            .expect_list_runs(vec![run_pipeline("lab-02-batching-b0", "Ready", true)])
            .await;
        // Nothing is deleted again, nothing created: the status says why it waits.
        let status = server.expect_status().await;
        assert_eq!(status["runs"][1]["phase"], "Pending");
        let msg = status["message"].as_str().unwrap();
        assert!(
            msg.contains("run 2 of 6")
                && msg.contains("waiting for the previous run's pipeline")
                && msg.contains("lab-02-batching-b0"),
            "{msg}"
        );
    })
    .await;
    assert_eq!(result.unwrap(), Requeue::requeue(experiment::POLL));

    // A run Pipeline left over and not being deleted (an operator restart between the
    // measurement and the delete): deleted, and waited for.
    let (ctx, mut server) = context("http://127.0.0.1:1", None);
    run(e.clone(), ctx, async move {
        server
            .expect_list_runs(vec![run_pipeline("lab-02-batching-b0", "Ready", false)])
            .await;
        server.expect_delete_pipeline("lab-02-batching-b0").await;
        let status = server.expect_status().await;
        assert_eq!(status["runs"][1]["phase"], "Pending");
    })
    .await
    .unwrap();

    // Gone: the next run is created.
    let (ctx, mut server) = context("http://127.0.0.1:1", None);
    run(e, ctx, async move {
        server.expect_list_runs(vec![]).await;
        let (req, body, send) = server.0.next().await;
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(req.uri().path(), format!("{PIPELINES}/lab-02-batching-v0"));
        MockApi::reply(send, StatusCode::OK, &body);
        let status = server.expect_status().await;
        assert_eq!(status["runs"][1]["phase"], "Deploying");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_experiment_being_deleted_touches_nothing() {
    let mut e = experiment();
    e.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let (ctx, mut server) = context("http://127.0.0.1:1", None);
    let result = tokio::time::timeout(Duration::from_secs(5), reconcile(Arc::new(e), ctx))
        .await
        .expect("reconcile finished without waiting on the API");
    assert_eq!(result.unwrap(), Requeue::await_change());
    server.0.expect_no_request().await;
}

#[tokio::test]
async fn identical_sides_are_refused() {
    // Once a CEL rule (`self.baseline != self.variant`) that a real API server refused to
    // compile; now the operator's check, comparing what each side runs.
    let mut e = experiment();
    e.spec.baseline.set = vec!["source.batch_size=4".into(), "parse.workers=2".into()];
    e.spec.variant.set = vec!["parse.workers=2".into(), "source.batch_size=4".into()];
    let why = experiment::invalid(&e).unwrap();
    assert!(
        why.starts_with("spec.variant: runs the same pipeline"),
        "{why}"
    );
    e.spec.variant.image = Some("observatory/pipeline:student".into());
    assert_eq!(
        experiment::invalid(&e),
        None,
        "a code lab: same knobs, another image"
    );
}

#[tokio::test]
async fn a_failing_watch_makes_the_operator_unready() {
    // The Experiment CRD is missing: every list of experiments is a 404. The controller logs
    // a warning and /readyz fails (Health), instead of saying only "leading".
    let (client, mut api) = mock();
    let health = Arc::new(crate::health::Health::default());
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_controller(client, health.clone(), async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let answer = tokio::spawn(async move {
        loop {
            let (_, _, send) = api.next().await;
            MockApi::reply(
                send,
                StatusCode::NOT_FOUND,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"}),
            );
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while health.problem().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no watch failure recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let why = health.problem().unwrap();
    assert!(why.contains("watching experiments failed"), "{why}");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    answer.abort();
}

async fn run_controller(
    client: kube::Client,
    health: Arc<crate::health::Health>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    super::run(
        client,
        Arc::new(Metrics::new()),
        health,
        Some("observatory".into()),
        Prometheus {
            url: "http://127.0.0.1:1".into(),
        },
        None,
        stop,
    )
    .await
}

/// What the stand-in leaderboard was sent: (path, Authorization, body).
type Posts = Arc<Mutex<Vec<(String, Option<String>, Value)>>>;

/// A leaderboard on loopback answering every verification with `status` and `answer`
/// (`None`: it accepts the connection and never answers).
async fn leaderboard_stand_in(status: StatusCode, answer: Option<Value>) -> (String, Posts) {
    let posts: Posts = Arc::default();
    let app = axum::Router::new()
        .route(
            "/api/cohorts/{cohort}/submissions/{id}/verification",
            post(
                async |State((posts, status, answer)): State<(
                    Posts,
                    StatusCode,
                    Option<Value>,
                )>,
                       uri: http::Uri,
                       headers: HeaderMap,
                       Json(body): Json<Value>| {
                    let auth = headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_string());
                    posts
                        .lock()
                        .unwrap()
                        .push((uri.path().to_string(), auth, body));
                    match answer {
                        Some(a) => (status, Json(a)),
                        None => std::future::pending().await,
                    }
                },
            ),
        )
        .with_state((posts.clone(), status, answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, posts)
}

/// A finished Experiment (b/a 3.0, passed) that names a leaderboard submission to verify.
fn concluded_for(url: &str) -> Experiment {
    let mut e = experiment();
    e.spec.leaderboard = Some(crate::experiment::LeaderboardTarget {
        url: url.to_string(),
        cohort: "perf-2026".into(),
        submission: "s-0042".into(),
        token_secret: "leaderboard-instructor".into(),
    });
    e.status = Some(experiment::conclude(&e, all_measured(&e)));
    e
}

use crate::experiment::leaderboard::TOKEN_LABEL;

/// One reconcile of `concluded_for(url)` whose post is not made now: Secret
/// leaderboard-instructor answered as `secret` (its labels and type, with a `token`; `None`:
/// 404), then the status and a VerificationPending event; it comes back after
/// [`LEADERBOARD_RETRY`]. Returns the status line.
async fn not_posted(url: &str, secret: Option<(Value, Option<&'static str>)>) -> String {
    let (ctx, mut server) = context("http://127.0.0.1:1", None);
    let line = Arc::new(Mutex::new(String::new()));
    let seen = line.clone();
    let requeue = run(concluded_for(url), ctx, async move {
        server.expect_list_runs(vec![]).await;
        match secret {
            Some((labels, type_)) => {
                server
                    .expect_secret_as(
                        "leaderboard-instructor",
                        Some(vec![("token", "a token")]),
                        labels,
                        type_,
                    )
                    .await
            }
            None => server.expect_secret("leaderboard-instructor", None).await,
        }
        let status = server.expect_status().await;
        *seen.lock().unwrap() = status["leaderboard"].as_str().unwrap().to_string();
        let (type_, reason, _) = server.expect_event().await;
        assert_eq!(
            (type_.as_str(), reason.as_str()),
            ("Warning", "VerificationPending")
        );
    })
    .await
    .unwrap();
    assert_eq!(requeue, Requeue::requeue(LEADERBOARD_RETRY));
    line.lock().unwrap().clone()
}

#[tokio::test]
async fn the_verdict_is_posted_to_the_leaderboard_with_the_instructors_token() {
    let (url, posts) = leaderboard_stand_in(
        StatusCode::OK,
        Some(json!({"agrees": false, "flagged": true})),
    )
    .await;
    let e = concluded_for(&url);
    let result = e.status.as_ref().unwrap().result.clone().unwrap();
    let (ctx, mut server) = context("http://127.0.0.1:1", None);
    let requeue = run(e, ctx, async move {
        server.expect_list_runs(vec![]).await;
        server
            .expect_secret(
                "leaderboard-instructor",
                Some(vec![("token", "obs_instructor-token\n")]),
            )
            .await;
        let status = server.expect_status().await;
        assert_eq!(status["phase"], "Succeeded", "the verdict stays");
        let line = status["leaderboard"].as_str().unwrap();
        assert!(line.starts_with("posted: FLAGGED"), "{line}");
        let (type_, reason, note) = server.expect_event().await;
        assert_eq!(
            (type_.as_str(), reason.as_str()),
            ("Normal", "VerificationPosted")
        );
        assert!(note.contains("FLAGGED"), "{note}");
    })
    .await
    .unwrap();
    assert_eq!(requeue, Requeue::await_change());
    let posts = posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 1);
    let (path, auth, body) = &posts[0];
    assert_eq!(
        path,
        "/api/cohorts/perf-2026/submissions/s-0042/verification"
    );
    assert_eq!(auth.as_deref(), Some("Bearer obs_instructor-token"));
    assert_eq!(body["passed"], true);
    // JSON carries 17 digits; a parser without `float_roundtrip` may land one ulp away.
    for (k, want) in [
        ("ratio", result.ratio),
        ("low", result.low),
        ("high", result.high),
    ] {
        let got = body["ratio"][k].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-12 * want.abs(),
            "{k}: {got} != {want}"
        );
    }
    assert_eq!(body["machine"], "Experiment observatory/lab-02-batching");

    // Posted: a later reconcile posts nothing again.
    let mut settled = concluded_for(&url);
    if let Some(s) = settled.status.as_mut() {
        s.leaderboard = Some("posted: agrees with the self-reported ratio".into());
    }
    let (ctx, mut server) = context("http://127.0.0.1:1", None);
    let requeue = run(settled, ctx, async move {
        server.expect_list_runs(vec![]).await;
        server.0.expect_no_request().await;
    })
    .await
    .unwrap();
    assert_eq!(requeue, Requeue::await_change());
    assert_eq!(posts.len(), 1);
}

#[tokio::test]
async fn a_refused_verification_is_final_and_says_why() {
    let (url, posts) = leaderboard_stand_in(
        StatusCode::NOT_FOUND,
        Some(json!({"error": "no submission s-0042 in cohort perf-2026"})),
    )
    .await;
    let (ctx, mut server) = context("http://127.0.0.1:1", None);
    let requeue = run(concluded_for(&url), ctx, async move {
        server.expect_list_runs(vec![]).await;
        server
            .expect_secret("leaderboard-instructor", Some(vec![("token", "t")]))
            .await;
        let status = server.expect_status().await;
        assert_eq!(
            status["leaderboard"],
            "refused: 404 Not Found: no submission s-0042 in cohort perf-2026"
        );
        let (type_, reason, _) = server.expect_event().await;
        assert_eq!(
            (type_.as_str(), reason.as_str()),
            ("Warning", "VerificationRefused")
        );
    })
    .await
    .unwrap();
    assert_eq!(requeue, Requeue::await_change(), "a refusal is not retried");
    assert_eq!(posts.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_unreachable_leaderboard_or_a_missing_secret_is_retried_and_said() {
    // Nothing listens on port 1.
    let line = not_posted(
        "http://127.0.0.1:1",
        Some((json!({TOKEN_LABEL: "true"}), None)),
    )
    .await;
    assert!(
        line.starts_with("not posted yet: POST http://127.0.0.1:1/api/cohorts/perf-2026/submissions/s-0042/verification")
            && line.ends_with("; retrying"),
        "{line}"
    );

    // No Secret yet.
    let (url, posts) = leaderboard_stand_in(
        StatusCode::OK,
        Some(json!({"agrees": true, "flagged": false})),
    )
    .await;
    assert_eq!(
        not_posted(&url, None).await,
        "not posted yet: Secret observatory/leaderboard-instructor does not exist; retrying"
    );
    assert!(
        posts.lock().unwrap().is_empty(),
        "nothing posted without a token"
    );

    // A server that takes the request and never answers: the reconcile gives up after the
    // post's time limit (the test's own limit is 10 s more), and retries later.
    let (url, _) = leaderboard_stand_in(StatusCode::OK, None).await;
    let (ctx, mut server) = context("http://127.0.0.1:1", None);
    let started = std::time::Instant::now();
    let e = concluded_for(&url);
    let reconcile = tokio::spawn(reconcile(Arc::new(e), ctx));
    server.expect_list_runs(vec![]).await;
    server
        .expect_secret("leaderboard-instructor", Some(vec![("token", "t")]))
        .await;
    let status = tokio::time::timeout(
        leaderboard::POST_TIMEOUT + Duration::from_secs(10),
        server.expect_status(),
    )
    .await
    .expect("the stalled post ended in time");
    assert!(
        status["leaderboard"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{status}"
    );
    server.expect_event().await;
    assert_eq!(
        reconcile.await.unwrap().unwrap(),
        Requeue::requeue(LEADERBOARD_RETRY)
    );
    assert!(started.elapsed() >= leaderboard::POST_TIMEOUT);
}

#[tokio::test]
async fn a_failed_experiment_posts_nothing_and_says_so() {
    let (url, posts) = leaderboard_stand_in(
        StatusCode::OK,
        Some(json!({"agrees": true, "flagged": false})),
    )
    .await;
    let mut e = concluded_for(&url);
    if let Some(s) = e.status.as_mut() {
        *s = experiment::failed_status(s.clone(), "run 2: no data".into(), "NoData");
        s.result = None;
    }
    let (ctx, mut server) = context("http://127.0.0.1:1", None);
    let requeue = run(e, ctx, async move {
        server.expect_list_runs(vec![]).await;
        let status = server.expect_status().await;
        let line = status["leaderboard"].as_str().unwrap();
        assert!(
            line.starts_with("not posted: the Experiment failed"),
            "{line}"
        );
    })
    .await
    .unwrap();
    assert_eq!(requeue, Requeue::await_change());
    assert!(posts.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_reconcile_that_concludes_comes_back_to_post() {
    let mut e = concluded_for("http://127.0.0.1:1");
    // One step before: every run measured, no verdict yet.
    if let Some(s) = e.status.as_mut() {
        s.result = None;
        s.phase = experiment::RUNNING.into();
    }
    let (ctx, mut server) = context("http://127.0.0.1:1", None);
    let requeue = run(e, ctx, async move {
        server.expect_list_runs(vec![]).await;
        let status = server.expect_status().await;
        assert_eq!(status["phase"], "Succeeded");
        assert!(status.get("leaderboard").is_none_or(Value::is_null));
        server.expect_event().await;
    })
    .await
    .unwrap();
    assert_eq!(requeue, Requeue::requeue(experiment::POLL));
}

#[tokio::test]
async fn only_a_secret_labelled_as_a_leaderboard_token_is_ever_sent() {
    // Whoever creates the Experiment names the URL and the Secret: an unlabelled Secret, or a
    // ServiceAccount's token even if labelled, is never sent, and the status says why.
    let (url, posts) = leaderboard_stand_in(
        StatusCode::OK,
        Some(json!({"agrees": true, "flagged": false})),
    )
    .await;
    for secret in [
        (json!({}), None),
        (json!({TOKEN_LABEL: "yes"}), None),
        (
            json!({TOKEN_LABEL: "true"}),
            Some("kubernetes.io/service-account-token"),
        ),
    ] {
        let line = not_posted(&url, Some(secret)).await;
        assert!(
            line.contains("is not a leaderboard token")
                && line.contains("observatory.dev/leaderboard-token=true"),
            "{line}"
        );
    }
    assert!(
        posts.lock().unwrap().is_empty(),
        "no token left the cluster"
    );
}

#[tokio::test]
async fn a_post_still_failing_the_same_way_writes_nothing_again() {
    // A leaderboard down for hours: one status line and one event, not one every 30 s.
    let mut e = concluded_for("http://127.0.0.1:1");
    if let Some(s) = e.status.as_mut() {
        s.leaderboard = Some(
            "not posted yet: Secret observatory/leaderboard-instructor does not exist; retrying"
                .into(),
        );
    }
    let (ctx, mut server) = context("http://127.0.0.1:1", None);
    let requeue = run(e, ctx, async move {
        server.expect_list_runs(vec![]).await;
        server.expect_secret("leaderboard-instructor", None).await;
        server.0.expect_no_request().await;
    })
    .await
    .unwrap();
    assert_eq!(
        requeue,
        Requeue::requeue(LEADERBOARD_RETRY),
        "and it still retries"
    );
}
