//! Where an Experiment's numbers come from and where its windows are marked.
//!
//! - [`queries`]: the PromQL of a run's window (pure; the dashboards test runs them against a
//!   real Prometheus scraping a real pipeline).
//! - [`Prometheus`]: instant queries over the HTTP API (`/api/v1/query`).
//! - [`Grafana`]: an annotation per run window (`POST /api/annotations`, basic auth).

use crate::experiment::{Measurement, Metric, RunStatus};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use observatory_stats::Total;
use serde::Deserialize;
use std::time::Duration;

/// What can go wrong reading results.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("Prometheus has no data for `{query}` (is it scraping the run's pods?)")]
    NoData { query: String },
    #[error("{metric} is not a metric of a run: the cluster cannot measure it")]
    NotARunMetric { metric: String },
    #[error("unexpected answer from {url}: {message}")]
    Answer { url: String, message: String },
}

/// The PromQL of one run's window, evaluated at the window's end.
#[derive(Clone, Debug, PartialEq)]
pub struct Queries {
    /// The metric compared.
    pub value: String,
    /// Events the source emitted in the window.
    pub events: String,
    /// Events lost in transit in the window.
    pub lost: String,
}

/// The drop reasons that count as losses (the pipeline's `DropClass::Loss`; a test holds the
/// two together).
pub const LOSS_REASONS: &str = "lost_in_transit|downstream_lost|window_limit|abandoned";

/// The queries for `metric` over the last `window_seconds` of the run whose Pipeline is
/// `pipeline` (every metric of a stage carries `pipeline="<name>"`): the metric's PromQL is the
/// catalogue's ([`Metric::promql`]), built from the same formula the local A/B engine computes.
/// `None` for a metric the cluster cannot answer (no formula).
pub fn queries(metric: Metric, pipeline: &str, window_seconds: u32) -> Option<Queries> {
    let lost = format!(
        "sum(increase(pipeline_events_dropped_total{{pipeline=\"{pipeline}\",reason=~\"{LOSS_REASONS}\"}}[{window_seconds}s])) or vector(0)"
    );
    Some(Queries {
        value: metric.promql(pipeline, window_seconds)?,
        events: Total::EventsEmitted.promql(pipeline, window_seconds)?,
        lost,
    })
}

async fn request(
    method: Method,
    url: &str,
    auth: Option<&str>,
    body: Option<String>,
    timeout: Duration,
) -> Result<Bytes, ResultsError> {
    let http = |message: String| ResultsError::Http {
        url: url.to_string(),
        message,
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().method(method).uri(url);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| http(e.to_string()))?;
    let fetch = async {
        let resp = client.request(req).await.map_err(|e| http(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| http(e.to_string()))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(ResultsError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            });
        }
        Ok(bytes)
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| http(format!("no answer within {timeout:?}")))?
}

/// A Prometheus server's HTTP API.
#[derive(Clone, Debug)]
pub struct Prometheus {
    /// e.g. `http://prometheus.observatory.svc:9090`
    pub url: String,
}

#[derive(Deserialize)]
struct QueryAnswer {
    status: String,
    #[serde(default)]
    data: Option<QueryData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct QueryData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    value: (f64, String),
}

impl Prometheus {
    /// One instant query at `time` (Unix seconds): the single number it returns.
    pub async fn scalar(&self, query: &str, time: i64) -> Result<f64, ResultsError> {
        let qs = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", query)
            .append_pair("time", &time.to_string())
            .finish();
        let url = format!("{}/api/v1/query?{qs}", self.url.trim_end_matches('/'));
        let body = request(Method::GET, &url, None, None, Duration::from_secs(20)).await?;
        let answer = |message: String| ResultsError::Answer {
            url: url.clone(),
            message,
        };
        let a: QueryAnswer = serde_json::from_slice(&body).map_err(|e| answer(e.to_string()))?;
        if a.status != "success" {
            return Err(answer(a.error.unwrap_or(a.status)));
        }
        let data = a.data.ok_or_else(|| answer("no data field".into()))?;
        if data.result_type != "vector" {
            return Err(answer(format!(
                "a {} instead of a vector",
                data.result_type
            )));
        }
        let v = match data.result.as_slice() {
            [] => {
                return Err(ResultsError::NoData {
                    query: query.to_string(),
                });
            }
            [one] => &one.value.1,
            more => return Err(answer(format!("{} series instead of one", more.len()))),
        };
        let v: f64 = v
            .parse()
            .map_err(|_| answer(format!("`{v}` is not a number")))?;
        if v.is_nan() {
            return Err(ResultsError::NoData {
                query: query.to_string(),
            });
        }
        Ok(v)
    }

    /// The metric, the events and the losses of one run's window.
    pub async fn measure(
        &self,
        metric: Metric,
        run: &RunStatus,
        window_seconds: u32,
        end: i64,
    ) -> Result<Measurement, ResultsError> {
        let q = queries(metric, &run.pipeline, window_seconds).ok_or_else(|| {
            ResultsError::NotARunMetric {
                metric: metric.to_string(),
            }
        })?;
        Ok(Measurement {
            value: self.scalar(&q.value, end).await?,
            events: self.scalar(&q.events, end).await?,
            lost: self.scalar(&q.lost, end).await?,
        })
    }
}

/// A Grafana server that takes annotations.
#[derive(Clone, Debug)]
pub struct Grafana {
    /// e.g. `http://grafana.observatory.svc:3000`
    pub url: String,
    /// The account that writes the annotations (an Editor or Admin).
    pub credentials: Credentials,
}

/// Where Grafana's user and password come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Credentials {
    /// Given at start (`--grafana-password`).
    Fixed { user: String, password: String },
    /// Keys `user` and `password` of a Secret, read each time an annotation is written: a
    /// Secret created after the operator started (as `make up` does), or changed since, is used.
    Secret { namespace: String, name: String },
}

/// The `Authorization` header value of basic auth.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

impl Grafana {
    /// Grafana at `url` with a fixed user and password.
    pub fn new(url: &str, user: &str, password: &str) -> Grafana {
        Grafana::with(
            url,
            Credentials::Fixed {
                user: user.into(),
                password: password.into(),
            },
        )
    }

    /// Grafana at `url` with these credentials.
    pub fn with(url: &str, credentials: Credentials) -> Grafana {
        Grafana {
            url: url.trim_end_matches('/').to_string(),
            credentials,
        }
    }

    /// Mark a run's window (milliseconds since the epoch) with the given `Authorization`
    /// header; the annotation's id.
    pub async fn annotate(
        &self,
        authorization: &str,
        experiment: &str,
        run: &RunStatus,
        start_ms: i64,
        end_ms: i64,
        text: &str,
    ) -> Result<i64, ResultsError> {
        let url = format!("{}/api/annotations", self.url);
        let body = serde_json::json!({
            "time": start_ms,
            "timeEnd": end_ms,
            "tags": ["observatory", format!("experiment:{experiment}"), run.side, run.pipeline],
            "text": text,
        });
        let bytes = request(
            Method::POST,
            &url,
            Some(authorization),
            Some(body.to_string()),
            Duration::from_secs(10),
        )
        .await?;
        #[derive(Deserialize)]
        struct Created {
            id: i64,
        }
        let c: Created = serde_json::from_slice(&bytes).map_err(|e| ResultsError::Answer {
            url: url.clone(),
            message: e.to_string(),
        })?;
        Ok(c.id)
    }
}
