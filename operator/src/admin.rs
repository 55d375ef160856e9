//! The operator's admin port: `/metrics`, `/healthz` (the process runs) and `/readyz` (the
//! Kubernetes API is reachable and no watch has failed lately, see [`Health`]).

use crate::health::Health;
use crate::metrics::Metrics;
use axum::Router;
use axum::routing::get;
use std::sync::Arc;
use tokio::sync::watch;

/// Serve until `shutdown` turns true. `connected` says whether the API server answered.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    connected: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    use axum::http::StatusCode;
    let ready = move || {
        let connected = *connected.borrow();
        let problem = health.problem();
        async move {
            match problem {
                _ if !connected => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: the Kubernetes API is not reachable yet\n".to_string(),
                ),
                Some(why) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
                None => (StatusCode::OK, "ready\n".to_string()),
            }
        }
    };
    let app = Router::new()
        .route("/metrics", get(move || async move { metrics.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready));
    let mut stop = shutdown;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        (code, body)
    }

    #[tokio::test]
    async fn readyz_fails_until_connected_and_while_a_watch_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Arc::new(Health::default());
        let (connected_tx, connected) = watch::channel(false);
        let (stop_tx, stop) = watch::channel(false);
        let server = tokio::spawn(serve(
            listener,
            Arc::new(Metrics::new()),
            health.clone(),
            connected,
            stop,
        ));
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("not reachable"), "{body}");
        connected_tx.send(true).unwrap();
        assert_eq!(get(addr, "/readyz").await.0, 200);
        health.watch_failed("experiments", "ErrorResponse { code: 404 }");
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("watching experiments failed"), "{body}");
        assert_eq!(get(addr, "/healthz").await.0, 200, "alive all the same");
        let (code, metrics) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(metrics.contains("observatory_operator_reconciliations_total"));
        stop_tx.send(true).unwrap();
        server.await.unwrap().unwrap();
    }
}
