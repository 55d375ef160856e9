//! `operator`: run the observatory's Kubernetes operator ([`operator::run`]), or render a
//! Pipeline's objects. Arguments only; the work is in the library.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use observatory_telemetry::{self as telemetry, LogFormat};
use operator::experiment::results::{Credentials, Grafana, Prometheus};
use operator::pipeline::crd::Pipeline;
use operator::pipeline::render;
use std::path::PathBuf;

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
    print!("{}", render::to_yaml(&desired)?);
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
                let result = runtime.block_on(operator::run::run(operator::run::Options {
                    admin,
                    namespace,
                    lease_namespace,
                    no_leader_election,
                    prometheus: results.prometheus(),
                    grafana: results.grafana(),
                }));
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
