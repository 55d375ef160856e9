//! A minimal HTTP/1 GET over loopback (hyper), for scraping stages' admin ports.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// GET `url`; the status and the whole body. Fails on connection errors and on timeout.
pub async fn get(url: &str, timeout: Duration) -> anyhow::Result<(StatusCode, Bytes)> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = url.parse()?;
    let fetch = async {
        let resp = client.get(uri).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| anyhow::anyhow!("GET {url}: no answer within {timeout:?}"))?
}

/// GET `url` and insist on 200.
pub async fn get_ok(url: &str, timeout: Duration) -> anyhow::Result<Bytes> {
    let (status, body) = get(url, timeout).await?;
    if status != StatusCode::OK {
        anyhow::bail!(
            "GET {url}: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok(body)
}
