//! Running one stage process: bind the ports, announce them, serve the admin endpoints, run
//! the role until its stream ends (or a signal drains it), then report and exit. Every role
//! obeys the stage contract ([`contract`]: typed knobs, readiness, one batch guard, drops with
//! a reason, the common series).

pub mod aggregate;
pub mod contract;
pub mod parse;
pub mod sink;
pub mod source;

use crate::context::StageCtx;
use crate::{admin, alloc};
use anyhow::Context;
use pipeline_plan::{Role, StageConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{info, warn};

/// Process-level options that are not knobs.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Write [`ReadyInfo`] here (atomically) once the ports are bound.
    pub ready_file: Option<PathBuf>,
    /// Write the final [`crate::context::StageStats`] here as JSON.
    pub stats_out: Option<PathBuf>,
    /// After a stream that ended by itself, keep the admin port up this long (so a scraper
    /// sees the final counters); a signal ends it early.
    pub linger: Duration,
    /// The shared token's digest ([`crate::admission`]).
    pub token: Option<crate::admission::TokenDigest>,
}

/// The bound addresses of a started stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    pub pid: u32,
    pub stage: String,
    pub data_addr: Option<String>,
    pub admin_addr: String,
}

/// Write a file so that readers never see it half-written.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

pub async fn run(cfg: StageConfig, opts: RunOptions) -> anyhow::Result<()> {
    let role = cfg.role();
    let common = cfg.knobs.common();
    let labs = crate::slots::Hooks::resolve(common.lab_slot, common.lab_impl)
        .map_err(anyhow::Error::msg)?;
    let ctx = StageCtx::new(cfg, labs);
    if let Some(t) = opts.token {
        let _ = ctx.token.set(t);
    }
    alloc::set_counting(ctx.metrics.telemetry);
    let admin = TcpListener::bind(&ctx.cfg.admin)
        .await
        .with_context(|| format!("binding the admin port {}", ctx.cfg.admin))?;
    let data = match role {
        Role::Source => None,
        _ => Some(
            TcpListener::bind(&ctx.cfg.listen)
                .await
                .with_context(|| format!("binding the data port {}", ctx.cfg.listen))?,
        ),
    };
    // The signal handlers before readiness is announced: a supervisor may stop the stage as soon
    // as it reads the ready file, and a SIGTERM before them would kill it outright (no drain,
    // no stats).
    let signals = install_signals();
    let ready = ReadyInfo {
        pid: std::process::id(),
        stage: role.to_string(),
        data_addr: data
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.to_string()),
        admin_addr: admin.local_addr()?.to_string(),
    };
    info!(
        stage = %role,
        pipeline = %ctx.cfg.pipeline,
        admin = %ready.admin_addr,
        data = ready.data_addr.as_deref().unwrap_or("-"),
        downstream = ctx.cfg.downstream.join(",").as_str(),
        service = ctx.cfg.service,
        allocator = alloc::active().as_str(),
        "stage started"
    );
    if let Some(path) = &opts.ready_file {
        write_atomically(path, &serde_json::to_vec(&ready)?)
            .with_context(|| format!("writing the ready file {}", path.display()))?;
    }
    let admin_task = tokio::spawn(admin::serve(admin, ctx.clone()));
    let sampler = ctx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while !sampler.shutdown.is_cancelled() {
            tick.tick().await;
            sampler.sample_rss();
        }
    });
    if let Some(signals) = signals {
        tokio::spawn(on_signals(ctx.clone(), signals));
    }
    tokio::spawn(drain_deadline(ctx.clone()));

    let result = match (role, data) {
        (Role::Source, _) => source::run(ctx.clone()).await,
        (Role::Parse, Some(l)) => parse::run(ctx.clone(), l).await,
        (Role::Aggregate, Some(l)) => aggregate::run(ctx.clone(), l).await,
        (Role::Sink, Some(l)) => sink::run(ctx.clone(), l).await,
        (_, None) => unreachable!("every role but the source has a data listener"),
    };
    let finished = crate::net::now_ns();
    ctx.finished_unix_ns
        .store(finished, std::sync::atomic::Ordering::Relaxed);
    ctx.metrics.finished_at.set(finished as f64 / 1e9);
    ctx.finished
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let stats = ctx.stats();
    if let Err(e) = &result {
        warn!(error = %format!("{e:#}"), "stage failed");
    }
    info!(
        received = stats.events_received,
        sent = stats.events_sent,
        dead_lettered = stats.dead_lettered,
        lost = stats.lost,
        cpu_seconds = format!("{:.2}", stats.cpu_seconds),
        peak_rss_mib = stats.peak_rss_bytes >> 20,
        "stage finished"
    );
    if let Some(path) = &opts.stats_out {
        write_atomically(path, &serde_json::to_vec_pretty(&stats)?)
            .with_context(|| format!("writing the stats file {}", path.display()))?;
    }
    if result.is_ok() && !ctx.drain.is_cancelled() {
        if ctx.cfg.service {
            // A service (a finished bounded source) stays up, idle, until it is stopped.
            info!("stream finished; staying up until signalled (service mode)");
            ctx.drain.cancelled().await;
        } else if !opts.linger.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(opts.linger) => {}
                _ = ctx.drain.cancelled() => {}
            }
        }
    }
    ctx.shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(5), admin_task)
        .await
        .is_err()
    {
        warn!("admin server did not stop within 5 s");
    }
    result
}

/// A drain (however it was asked for) has [`crate::net::DRAIN_TIMEOUT`] to finish; then the
/// stage gives up waiting: what is still queued is counted as `abandoned`.
async fn drain_deadline(ctx: std::sync::Arc<StageCtx>) {
    ctx.drain.cancelled().await;
    tokio::select! {
        _ = tokio::time::sleep(crate::net::DRAIN_TIMEOUT) => {
            warn!(
                timeout = ?crate::net::DRAIN_TIMEOUT,
                "drain deadline passed: giving up; what is still queued is counted as abandoned"
            );
            ctx.abandon.cancel();
        }
        _ = ctx.abandon.cancelled() => {}
    }
}

/// How long a stage told to give up (a second signal) may take to write its stats and exit.
const ABANDON_EXIT: Duration = Duration::from_secs(5);

/// SIGTERM's and SIGINT's streams: from here on neither stops the process by default.
fn install_signals() -> Option<(Signal, Signal)> {
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => Some((term, int)),
        (Err(e), _) | (_, Err(e)) => {
            warn!(error = %e, "could not install signal handlers");
            None
        }
    }
}

/// First SIGTERM/SIGINT: finish the stream (drain). Second: give up waiting (count what is
/// queued as abandoned, write the stats, exit). Third, or no exit within [`ABANDON_EXIT`] of
/// the second: exit at once.
async fn on_signals(ctx: std::sync::Arc<StageCtx>, (mut term, mut int): (Signal, Signal)) {
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        seen += 1;
        if seen == 1 {
            info!("signal received: finishing the stream (signal again to give up waiting)");
            ctx.drain.cancel();
        } else if seen == 2 {
            warn!("second signal: giving up; what is still queued is counted as abandoned");
            ctx.drain.cancel();
            ctx.abandon.cancel();
            tokio::spawn(async {
                tokio::time::sleep(ABANDON_EXIT).await;
                warn!("still running {ABANDON_EXIT:?} after giving up: exiting now");
                std::process::exit(130);
            });
        } else {
            warn!("third signal: exiting now");
            std::process::exit(130);
        }
    }
}
