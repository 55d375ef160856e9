//! Test fixtures: the committed sample Pipeline and Experiment, as the API server would hand
//! them over.

use crate::pipeline::crd::Pipeline;

/// `deploy/samples/pipeline-demo.yaml`, with the uid and generation a cluster would give it.
pub fn sample() -> Pipeline {
    let text = include_str!("../../deploy/samples/pipeline-demo.yaml");
    let mut p: Pipeline = yaml_serde::from_str(text).expect("the sample parses as a Pipeline");
    p.metadata.uid = Some("uid-demo".into());
    p.metadata.generation = Some(1);
    p.metadata.resource_version = Some("100".into());
    p
}

/// `deploy/experiments/lab-02-batching.yaml`, as the API server would hand it over.
pub fn experiment() -> crate::experiment::Experiment {
    let text = include_str!("../../deploy/experiments/lab-02-batching.yaml");
    let mut e: crate::experiment::Experiment =
        yaml_serde::from_str(text).expect("the sample parses as an Experiment");
    e.metadata.uid = Some("uid-exp".into());
    e.metadata.generation = Some(1);
    e.metadata.resource_version = Some("200".into());
    e
}

/// The mocked API server of the reconcile tests (tower-test at the HTTP layer): each test
/// answers the operator's requests one by one and asserts each.
pub mod api_server {
    use http::{Method, Request, Response, StatusCode};
    use http_body_util::BodyExt;
    use kube::Client;
    use kube::client::Body;
    use serde_json::Value;

    pub type Send = tower_test::mock::SendResponse<Response<Body>>;

    pub struct MockApi(tower_test::mock::Handle<Request<Body>, Response<Body>>);

    /// A client talking to a fresh mocked API server.
    pub fn mock() -> (Client, MockApi) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), MockApi(handle))
    }

    impl MockApi {
        /// The next request, with its body as JSON (`Null` when empty).
        pub async fn next(&mut self) -> (Request<Body>, Value, Send) {
            let (req, send) = self
                .0
                .next_request()
                .await
                .expect("the operator sent a request");
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.expect("request body").to_bytes();
            let json = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("a JSON body")
            };
            (Request::from_parts(parts, Body::empty()), json, send)
        }

        /// The operator sent nothing (more): no request arrives within half a second.
        pub async fn expect_no_request(&mut self) {
            let next =
                tokio::time::timeout(std::time::Duration::from_millis(500), self.0.next_request())
                    .await;
            if let Ok(Some((req, _))) = next {
                panic!("unexpected request: {} {}", req.method(), req.uri());
            }
        }

        pub fn reply(send: Send, status: StatusCode, body: &Value) {
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(body).unwrap()))
                    .unwrap(),
            );
        }

        /// Expect a server-side apply of the status at `path` (an object of `kind`) by the
        /// operator's field manager; answer with `object` carrying that status. Returns it.
        pub async fn expect_status_apply(
            &mut self,
            path: &str,
            kind: &str,
            mut object: Value,
        ) -> Value {
            let (req, body, send) = self.next().await;
            assert_eq!(req.method(), Method::PATCH);
            assert_eq!(req.uri().path(), path);
            let query = req.uri().query().unwrap_or_default();
            assert!(
                query.contains("fieldManager=observatory-operator") && query.contains("force=true"),
                "{query}"
            );
            assert_eq!(body["kind"], kind);
            assert_eq!(body["apiVersion"], "observatory.dev/v1alpha1");
            object["status"] = body["status"].clone();
            Self::reply(send, StatusCode::OK, &object);
            body["status"].clone()
        }

        /// Expect an Event about the object `kind`/`name` in namespace observatory, reported by
        /// the operator; returns (type, reason, note).
        pub async fn expect_event_about(
            &mut self,
            kind: &str,
            name: &str,
        ) -> (String, String, String) {
            let (req, body, send) = self.next().await;
            assert_eq!(req.method(), Method::POST);
            assert_eq!(
                req.uri().path(),
                "/apis/events.k8s.io/v1/namespaces/observatory/events"
            );
            assert_eq!(body["regarding"]["kind"], kind);
            assert_eq!(body["regarding"]["name"], name);
            assert_eq!(
                body["reportingController"],
                crate::pipeline::render::MANAGER
            );
            Self::reply(send, StatusCode::CREATED, &body);
            (
                body["type"].as_str().unwrap().into(),
                body["reason"].as_str().unwrap().into(),
                body["note"].as_str().unwrap_or_default().into(),
            )
        }
    }
}
