//! The operator process: the admin port from the start, the API server connected with
//! backoff, leader election (a Lease), and both controllers while this replica leads.

use crate::admin;
use crate::experiment::results::{Grafana, Prometheus};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::{experiment, pipeline};
use anyhow::Context as _;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{info, warn};

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Admin address: /metrics, /healthz, /readyz.
    pub admin: String,
    /// Watch this namespace only (default: every namespace).
    pub namespace: Option<String>,
    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else `observatory`).
    pub lease_namespace: Option<String>,
    /// Reconcile without leader election (a single replica, or tests).
    pub no_leader_election: bool,
    /// Where Experiments read their results.
    pub prometheus: Prometheus,
    /// Where Experiments mark their runs (none: not annotated, and they say so).
    pub grafana: Option<Grafana>,
}

/// Both controllers, until `stop` says so.
async fn controllers(
    client: Client,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    namespace: Option<String>,
    opts: &Options,
    stop: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>,
) {
    tokio::join!(
        pipeline::controller::run(
            client.clone(),
            metrics.clone(),
            health.clone(),
            namespace.clone(),
            stop()
        ),
        experiment::controller::run(
            client,
            metrics,
            health,
            namespace,
            opts.prometheus.clone(),
            opts.grafana.clone(),
            stop(),
        ),
    );
}

/// Resolves on the first SIGTERM or SIGINT.
async fn terminated() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("could not install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Connect to the API server, retrying with backoff while the admin port keeps serving;
/// `None` if stopped first.
async fn connect(mut stop: watch::Receiver<bool>) -> anyhow::Result<Option<Client>> {
    let mut backoff = std::time::Duration::from_secs(1);
    loop {
        let client = Client::try_default()
            .await
            .context("loading the Kubernetes config (in-cluster, or KUBECONFIG)")?;
        match client.apiserver_version().await {
            Ok(v) => {
                info!(version = %v.git_version, "connected to the Kubernetes API");
                return Ok(Some(client));
            }
            Err(e) => warn!(error = %e, retry_in = ?backoff, "cannot reach the Kubernetes API"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return Ok(None),
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
    }
}

/// Run the operator until SIGTERM or SIGINT.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let Options {
        admin,
        namespace,
        lease_namespace,
        no_leader_election,
        ..
    } = opts.clone();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (connected_tx, connected_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(&admin)
        .await
        .with_context(|| format!("binding the admin address {admin}"))?;
    info!(%admin, "admin port: /metrics /healthz /readyz");
    let admin_task = tokio::spawn(admin::serve(
        listener,
        metrics.clone(),
        health.clone(),
        connected_rx,
        stop_rx.clone(),
    ));
    tokio::spawn(async move {
        terminated().await;
        info!("signal received: stopping");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let Some(client) = connect(stop_rx.clone()).await? else {
        let _ = admin_task.await;
        return Ok(());
    };
    let _ = connected_tx.send(true);

    if no_leader_election {
        metrics.leader.set(1);
        let rx = stop_rx.clone();
        controllers(client, metrics, health, namespace, &opts, || {
            Box::pin(stopped(rx.clone()))
        })
        .await;
        let _ = admin_task.await;
        return Ok(());
    }
    let lease_ns = lease_namespace
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "observatory".into());
    let identity = std::env::var("POD_NAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| format!("operator-{}", std::process::id()));
    let manager = LeaseManagerBuilder::new(client.clone(), "observatory-operator")
        .with_namespace(&lease_ns)
        .with_identity(&identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .context("setting up leader election")?;
    let (mut leader, lease_task) = manager.watch().await;
    info!(
        identity,
        lease_namespace = lease_ns,
        "waiting for leadership"
    );
    loop {
        tokio::select! {
            _ = stopped(stop_rx.clone()) => break,
            changed = leader.wait_for(|l| *l) => {
                if changed.is_err() {
                    warn!("leader election stopped");
                    break;
                }
            }
        }
        info!("leading: reconciling Pipelines and Experiments");
        metrics.leader.set(1);
        let until = || -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>> {
            let mut lost = leader.clone();
            let stop = stop_rx.clone();
            Box::pin(async move {
                tokio::select! {
                    _ = lost.wait_for(|l| !*l) => info!("lost leadership"),
                    _ = stopped(stop) => {}
                }
            })
        };
        controllers(
            client.clone(),
            metrics.clone(),
            health.clone(),
            namespace.clone(),
            &opts,
            until,
        )
        .await;
        metrics.leader.set(0);
        if *stop_rx.borrow() {
            break;
        }
    }
    // Closing the channel makes the manager release the lease and finish.
    drop(leader);
    match lease_task.await {
        Ok(Ok(_)) => info!("released the leader lease"),
        Ok(Err(e)) => warn!(error = %e, "leader election ended with an error"),
        Err(e) => warn!(error = %e, "leader election task failed"),
    }
    let _ = admin_task.await;
    Ok(())
}
