//! The HTTP client of the leaderboard API (hyper, HTTP/1): what `observatory leaderboard ...`
//! and `observatory lab submit` call, and what the tests drive the real server with.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{method} {url}: {source}")]
    Transport {
        method: Method,
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{method} {url}: no answer within {0:?}", .timeout)]
    Timeout {
        method: Method,
        url: String,
        timeout: Duration,
    },
    /// The server answered with an error: its status and message.
    #[error("{status}: {message}")]
    Status { status: StatusCode, message: String },
    #[error("{url}: the answer is not what was expected: {source}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A client of one server, with one token (or none).
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: Hyper<HttpConnector, Full<Bytes>>,
    pub timeout: Duration,
    /// The largest answer read; a longer one is an error, not memory (a cohort's JSON export
    /// of 500 students and 14 labs is a few MiB).
    pub max_body: usize,
}

/// [`Client::max_body`] unless set otherwise.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// An answer: status, content type and body.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    /// `base`: `http://HOST:PORT` (no trailing slash needed).
    pub fn new(base: &str, token: Option<&str>) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
            http: Hyper::builder(TokioExecutor::new()).build_http(),
            timeout: Duration::from_secs(30),
            max_body: MAX_ANSWER_BYTES,
        }
    }

    pub fn with_token(&self, token: Option<&str>) -> Client {
        Client {
            token: token.map(str::to_string),
            ..self.clone()
        }
    }

    /// Any request; the answer whatever its status.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let transport = |source: Box<dyn std::error::Error + Send + Sync>| ClientError::Transport {
            method: method.clone(),
            url: url.clone(),
            source,
        };
        let mut req = Request::builder().method(method.clone()).uri(&url);
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            req = req.header(hyper::header::CONTENT_TYPE, ct);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| transport(Box::new(e)))?;
        let call = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| transport(Box::new(e)))?;
            let status = resp.status();
            let content_type = resp
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = Limited::new(resp.into_body(), self.max_body)
                .collect()
                .await
                .map_err(&transport)?
                .to_bytes();
            Ok(Answer {
                status,
                content_type,
                body,
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| ClientError::Timeout {
                method: method.clone(),
                url: url.clone(),
                timeout: self.timeout,
            })?
    }

    /// A request whose success is JSON of type `T`; an error status is [`ClientError::Status`]
    /// with the server's message.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(StatusCode, T), ClientError> {
        let a = self.raw(method, path, content_type, body).await?;
        if !a.status.is_success() {
            let message = serde_json::from_slice::<crate::wire::ErrorBody>(&a.body)
                .map(|e| e.error)
                .unwrap_or_else(|_| a.text().trim().to_string());
            return Err(ClientError::Status {
                status: a.status,
                message,
            });
        }
        let v = serde_json::from_slice(&a.body).map_err(|source| ClientError::Decode {
            url: path.to_string(),
            source,
        })?;
        Ok((a.status, v))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Ok(self.call(Method::GET, path, None, Vec::new()).await?.1)
    }

    pub async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<(StatusCode, T), ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|source| ClientError::Decode {
            url: path.to_string(),
            source,
        })?;
        self.call(method, path, Some("application/json"), bytes)
            .await
    }
}
