//! Logs and traces, set up the same way for every observatory process (pipeline stages, the
//! operator).
//!
//! Logs go to stderr through `tracing-subscriber`, filtered by `RUST_LOG` (default `info`), as
//! text or JSON. When the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans of the given targets, down to `debug`
//! level, are also exported over OTLP/HTTP (protobuf) with a batch exporter. Hot-path spans
//! belong at `debug`, so they cost nothing when no exporter is configured.
//!
//! [`process`] exports the `process_*` Prometheus metrics, with CPU time to the microsecond.

pub mod process;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Keeps the trace exporter alive; call [`Telemetry::shutdown`] to flush it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Whether an OTLP endpoint is configured through the standard variables.
pub fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// Install the global subscriber; spans of `trace_targets` (e.g. `["pipeline"]`) go to OTLP
/// when it is configured. Must run before the Tokio runtime starts (the OTLP HTTP client is a
/// blocking one, driven by the exporter's own thread).
pub fn init(
    service_name: &str,
    format: LogFormat,
    trace_targets: &[&str],
) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let fmt_layer = match format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    }
    .with_filter(filter);

    let provider = if otlp_configured() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .context("building the OTLP span exporter")?;
        let mut resource = Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name(service_name.to_string());
        }
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource.build())
                .build(),
        )
    } else {
        None
    };
    let targets = trace_targets.iter().fold(Targets::new(), |t, target| {
        t.with_target(*target, tracing::Level::DEBUG)
    });
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service_name.to_string()))
            .with_filter(targets)
    });
    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .context("installing the tracing subscriber")?;
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Flush and stop the trace exporter, if any.
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "trace exporter shutdown");
        }
    }
}
