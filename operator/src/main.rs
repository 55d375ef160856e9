//! `operator`: run the observatory's Kubernetes operator, or render a Pipeline's objects.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use observatory_telemetry::{self as telemetry, LogFormat};
use operator::crd::Pipeline;
use operator::health::Health;
use operator::metrics::Metrics;
use operator::results::{Credentials, Grafana, Prometheus};
use operator::{controller, experiment_controller, render};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Parser)]
#[command(
    name = "operator",
    version,
    about = "The observatory's Kubernetes operator: reconciles Pipeline resources into running stages, and runs Experiments (a lab's A/B on the cluster)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (uses the in-cluster config, or KUBECONFIG).
    Run {
        /// Admin address: /metrics, /healthz, /readyz.
        #[arg(long, default_value = "0.0.0.0:8080")]
        admin: String,
        /// Watch Pipelines in this namespace only (default: every namespace).
        #[arg(long)]
        namespace: Option<String>,
        /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else `observatory`).
        #[arg(long)]
        lease_namespace: Option<String>,
        /// Reconcile without leader election (a single replica, or tests).
        #[arg(long)]
        no_leader_election: bool,
        /// Log format.
        #[arg(long, value_enum, env = "OPERATOR_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
        #[command(flatten)]
        results: ResultsArgs,
    },
    /// Print the objects a Pipeline file renders to, as YAML (nothing is applied).
    Render {
        /// A Pipeline manifest.
        file: PathBuf,
    },
}

/// Where Experiments read their results and mark their runs.
#[derive(clap::Args, Clone)]
struct ResultsArgs {
    /// Prometheus that scrapes the pipelines (Experiments query it).
    #[arg(
        long,
        env = "PROMETHEUS_URL",
        default_value = "http://prometheus.observatory.svc:9090"
    )]
    prometheus_url: String,
    /// Grafana to annotate Experiment runs in (none: runs are not annotated, and say so).
    #[arg(long, env = "GRAFANA_URL")]
    grafana_url: Option<String>,
    /// Secret with keys `user` and `password` of a Grafana account allowed to write
    /// annotations, in the operator's namespace; read at each annotation, so it may be created
    /// or changed after the operator started.
    #[arg(long, env = "GRAFANA_SECRET")]
    grafana_secret: Option<String>,
    /// Namespace of that Secret (default: $POD_NAMESPACE, else `observatory`).
    #[arg(long, env = "GRAFANA_SECRET_NAMESPACE")]
    grafana_secret_namespace: Option<String>,
    /// Grafana user allowed to write annotations (with --grafana-password, instead of a Secret).
    #[arg(long, env = "GRAFANA_USER", default_value = "admin")]
    grafana_user: String,
    /// Its password (given, it is used instead of --grafana-secret).
    #[arg(
        long,
        env = "GRAFANA_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    grafana_password: String,
}

impl ResultsArgs {
    fn prometheus(&self) -> Prometheus {
        Prometheus {
            url: self.prometheus_url.clone(),
        }
    }

    fn grafana(&self) -> Option<Grafana> {
        let url = self.grafana_url.as_deref().filter(|u| !u.is_empty())?;
        let credentials = match &self.grafana_secret {
            Some(name) if self.grafana_password.is_empty() => Credentials::Secret {
                namespace: self
                    .grafana_secret_namespace
                    .clone()
                    .or_else(|| std::env::var("POD_NAMESPACE").ok())
                    .unwrap_or_else(|| "observatory".into()),
                name: name.clone(),
            },
            _ => Credentials::Fixed {
                user: self.grafana_user.clone(),
                password: self.grafana_password.clone(),
            },
        };
        Some(Grafana::with(url, credentials))
    }
}

/// Both controllers, until `stop` says so.
async fn controllers(
    client: Client,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    namespace: Option<String>,
    results: &ResultsArgs,
    stop: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>,
) {
    tokio::join!(
        controller::run(
            client.clone(),
            metrics.clone(),
            health.clone(),
            namespace.clone(),
            stop()
        ),
        experiment_controller::run(
            client,
            metrics,
            health,
            namespace,
            results.prometheus(),
            results.grafana(),
            stop(),
        ),
    );
}

fn render_file(file: PathBuf) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut p: Pipeline = yaml_serde::from_str(&text)
        .with_context(|| format!("{} is not a Pipeline", file.display()))?;
    if p.metadata.namespace.is_none() {
        p.metadata.namespace = Some("default".into());
    }
    p.metadata
        .uid
        .get_or_insert_with(|| "00000000-0000-0000-0000-000000000000".into());
    let desired = render::render(&p).map_err(|e| anyhow::anyhow!("invalid Pipeline: {e}"))?;
    let mut out = String::new();
    for s in &desired.stages {
        let workload = match &s.workload {
            render::Workload::Deployment(d) => yaml_serde::to_string(d)?,
            render::Workload::StatefulSet(d) => yaml_serde::to_string(d)?,
        };
        for doc in [
            yaml_serde::to_string(&s.config_map)?,
            yaml_serde::to_string(&s.service)?,
            workload,
        ] {
            out.push_str("---\n");
            out.push_str(&doc);
        }
    }
    print!("{out}");
    Ok(())
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

async fn run(
    admin: String,
    namespace: Option<String>,
    lease_namespace: Option<String>,
    no_leader_election: bool,
    results: ResultsArgs,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (connected_tx, connected_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(&admin)
        .await
        .with_context(|| format!("binding the admin address {admin}"))?;
    info!(%admin, "admin port: /metrics /healthz /readyz");
    let admin_task = tokio::spawn(operator::admin::serve(
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
        controllers(client, metrics, health, namespace, &results, || {
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
            &results,
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Render { file } => render_file(file),
        Command::Run {
            admin,
            namespace,
            lease_namespace,
            no_leader_election,
            log_format,
            results,
        } => telemetry::init("observatory-operator", log_format, &["operator"]).and_then(
            |telemetry| {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .context("starting the async runtime")?;
                let result = runtime.block_on(run(
                    admin,
                    namespace,
                    lease_namespace,
                    no_leader_election,
                    results,
                ));
                telemetry.shutdown();
                result
            },
        ),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("operator: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
