//! The admin port: everything a person or Prometheus asks a stage, kept off the data port.
//!
//! | path | what |
//! |---|---|
//! | `/metrics` | Prometheus text format |
//! | `/stats` | JSON snapshot ([`crate::context::StageStats`]) |
//! | `/healthz` | liveness: 200 while the process serves |
//! | `/readyz` | readiness: 200 once the data port is bound and the downstream connected |
//! | `/debug/pprof/profile?seconds=N&frequency=F` | CPU profile, gzipped pprof protobuf (default 10 s at 99 Hz) |
//! | `/debug/pprof/flamegraph?seconds=N&frequency=F` | the same as an SVG flamegraph |
//! | `/debug/pprof/folded?seconds=N&frequency=F` | the same as collapsed stacks (`a;b;c 12` per line, all threads merged), for differential flamegraphs |
//! | `/debug/pprof/heap` | jemalloc heap profile (in use), gzipped pprof protobuf |
//! | `/debug/pprof/heap/flamegraph` | the same as an SVG flamegraph |
//!
//! A CPU profile ends early, with what it has, when the stage shuts down, so a capture that
//! spans the end of a run still returns.

use crate::alloc;
use crate::context::StageCtx;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pipeline_plan::Allocator;
use serde::Deserialize;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Sampling frequency by default: higher rates undercount on small VMs.
pub const DEFAULT_FREQUENCY: i32 = 99;

pub fn router(ctx: Arc<StageCtx>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/debug/pprof/profile", get(cpu_profile))
        .route("/debug/pprof/flamegraph", get(cpu_flamegraph))
        .route("/debug/pprof/folded", get(cpu_folded))
        .route("/debug/pprof/heap", get(heap_profile))
        .route("/debug/pprof/heap/flamegraph", get(heap_flamegraph))
        .with_state(ctx)
}

/// Most admin connections open at once; more are closed on accept (a scraper, the runner and
/// an operator need a handful).
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's headers, and how long a kept-alive
/// connection may sit idle between requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection lives (the longest profile, 300 s, and some).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(330);
/// At shutdown, how long in-flight requests have to complete.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serve until the stage's shutdown token is cancelled: at most [`MAX_CONNECTIONS`], each
/// with [`HEADER_TIMEOUT`] for its headers (and between kept-alive requests) and at most
/// [`CONNECTION_LIFETIME`]; at shutdown, idle connections close at once and in-flight
/// requests get [`SHUTDOWN_GRACE`].
pub async fn serve(listener: TcpListener, ctx: Arc<StageCtx>) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let shutdown = ctx.shutdown.clone();
    let app = router(ctx);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (sock, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(sock);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true);
            let conn = http.serve_connection(TokioIo::new(sock), service);
            let mut conn = std::pin::pin!(conn);
            let lifetime = tokio::time::sleep(CONNECTION_LIFETIME);
            tokio::select! {
                _ = &mut conn => return,
                _ = lifetime => {}
                _ = shutdown.cancelled() => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        });
    }
    // Every connection holds a slot until it is done: wait for them all (each is bounded).
    let all = MAX_CONNECTIONS as u32;
    let _ = tokio::time::timeout(SHUTDOWN_GRACE * 2, slots.acquire_many(all)).await;
    Ok(())
}

async fn index(State(ctx): State<Arc<StageCtx>>) -> String {
    format!(
        "pipeline {} stage of `{}`\n\n/metrics\n/stats\n/healthz\n/readyz\n\
         /debug/pprof/profile?seconds=10\n/debug/pprof/flamegraph?seconds=10\n\
         /debug/pprof/heap\n/debug/pprof/heap/flamegraph\n",
        ctx.cfg.role(),
        ctx.cfg.pipeline
    )
}

async fn metrics(State(ctx): State<Arc<StageCtx>>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        ctx.metrics.render(),
    )
        .into_response()
}

async fn stats(State(ctx): State<Arc<StageCtx>>) -> Json<crate::context::StageStats> {
    Json(ctx.stats())
}

async fn readyz(State(ctx): State<Arc<StageCtx>>) -> Response {
    if ctx.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the data port or the downstream connection\n",
        )
            .into_response()
    }
}

#[derive(Debug, Deserialize)]
struct ProfileParams {
    seconds: Option<u64>,
    frequency: Option<i32>,
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, msg + "\n").into_response()
}

static PROFILING: AtomicBool = AtomicBool::new(false);

/// Marks the (process-wide, single) CPU profiler busy while alive.
struct ProfilerSlot;

impl ProfilerSlot {
    fn take() -> Option<Self> {
        PROFILING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| ProfilerSlot)
    }
}

impl Drop for ProfilerSlot {
    fn drop(&mut self) {
        PROFILING.store(false, Ordering::Release);
    }
}

/// Profile the whole process for `params.seconds` (or until shutdown).
async fn capture(ctx: &StageCtx, params: ProfileParams) -> Result<pprof::Report, Response> {
    let seconds = params.seconds.unwrap_or(10);
    let frequency = params.frequency.unwrap_or(DEFAULT_FREQUENCY);
    if !(1..=300).contains(&seconds) {
        return Err(bad_request(format!(
            "seconds must be 1..=300, got {seconds}"
        )));
    }
    if !(1..=1000).contains(&frequency) {
        return Err(bad_request(format!(
            "frequency must be 1..=1000 Hz, got {frequency}"
        )));
    }
    let slot = ProfilerSlot::take().ok_or_else(|| {
        (
            StatusCode::CONFLICT,
            "a CPU profile is already being taken\n",
        )
            .into_response()
    })?;
    ctx.sample_rss();
    ctx.profiled.store(true, Ordering::Relaxed);
    let stop = ctx.shutdown.clone();
    // The profile stops when its client goes away (hyper drops this future on a closed
    // connection, and with it the guard), not at its deadline: the slot is free again at once.
    let gone = tokio_util::sync::CancellationToken::new();
    let _on_drop = gone.clone().drop_guard();
    let result = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(frequency)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline && !stop.is_cancelled() && !gone.is_cancelled() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if gone.is_cancelled() {
            // Nobody to send it to: free the profiler now, without symbolizing a report.
            drop(guard);
            return Err(pprof::Error::CreatingError);
        }
        guard.report().build()
    })
    .await;
    match result {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(e)) => Err(server_error(format!("profiler: {e}"))),
        Err(e) => Err(server_error(format!("profiler task: {e}"))),
    }
}

fn server_error(msg: String) -> Response {
    tracing::warn!(%msg, "admin request failed");
    (StatusCode::INTERNAL_SERVER_ERROR, msg + "\n").into_response()
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)?;
    enc.finish()
}

async fn cpu_profile(State(ctx): State<Arc<StageCtx>>, Query(p): Query<ProfileParams>) -> Response {
    let report = match capture(&ctx, p).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    use pprof::protos::Message;
    let body = report
        .pprof()
        .map_err(|e| e.to_string())
        .map(|profile| profile.encode_to_vec())
        .and_then(|raw| gzip(&raw).map_err(|e| e.to_string()));
    match body {
        Ok(gz) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"profile.pb.gz\"",
                ),
            ],
            gz,
        )
            .into_response(),
        Err(e) => server_error(format!("encoding the profile: {e}")),
    }
}

async fn cpu_flamegraph(
    State(ctx): State<Arc<StageCtx>>,
    Query(p): Query<ProfileParams>,
) -> Response {
    let report = match capture(&ctx, p).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let title = format!("{} stage: CPU ({})", ctx.cfg.role(), ctx.cfg.pipeline);
    if report.data.is_empty() {
        let svg = empty_svg(
            &title,
            "no CPU samples: the stage was idle while profiled, or its work ended before the profile started (profile a longer run)",
        );
        return ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response();
    }
    let mut options = pprof::flamegraph::Options::default();
    options.title = title;
    let mut svg = Vec::new();
    match report.flamegraph_with_options(&mut svg, &mut options) {
        Ok(()) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        Err(e) => server_error(format!("rendering the flamegraph: {e}")),
    }
}

/// Collapsed stacks of a report, outermost frame first, threads merged, heaviest first.
pub fn folded(report: &pprof::Report) -> String {
    let mut stacks: std::collections::HashMap<String, isize> = std::collections::HashMap::new();
    for (frames, count) in &report.data {
        let names: Vec<String> = frames
            .frames
            .iter()
            .rev()
            .flat_map(|frame| frame.iter().rev().map(|symbol| symbol.to_string()))
            .collect();
        if !names.is_empty() {
            *stacks.entry(names.join(";")).or_insert(0) += count;
        }
    }
    let mut lines: Vec<(String, isize)> = stacks.into_iter().collect();
    lines.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    lines
        .into_iter()
        .map(|(stack, n)| format!("{stack} {n}\n"))
        .collect()
}

async fn cpu_folded(State(ctx): State<Arc<StageCtx>>, Query(p): Query<ProfileParams>) -> Response {
    match capture(&ctx, p).await {
        Ok(report) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            folded(&report),
        )
            .into_response(),
        Err(resp) => resp,
    }
}

/// A small SVG that says why there is no flamegraph.
fn empty_svg(title: &str, note: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1200\" height=\"80\">\
         <text x=\"600\" y=\"30\" text-anchor=\"middle\" font-size=\"17\">{title}</text>\
         <text x=\"600\" y=\"60\" text-anchor=\"middle\" font-size=\"14\">{note}</text></svg>\n"
    )
}

/// A heap profile. The first one in a process costs ~130 MB of RSS for good (measured: 9.5 ->
/// 141.8 MB; later ones ~4 MB): the symbolizer's tables of the binary's debug information,
/// which it keeps. So the stage counts itself as profiled from here on (its
/// `peak_rss_unprofiled_bytes`, what run summaries report, leaves this out) and logs the cost.
async fn heap_dump(ctx: &StageCtx, svg: bool) -> Response {
    ctx.sample_rss();
    ctx.profiled.store(true, Ordering::Relaxed);
    let before = crate::context::current_rss();
    let response = heap_dump_inner(svg).await;
    let after = crate::context::current_rss();
    tracing::info!(
        rss_before_mib = before >> 20,
        rss_after_mib = after >> 20,
        "heap profile taken (its symbolizer's memory stays)"
    );
    response
}

async fn heap_dump_inner(svg: bool) -> Response {
    if alloc::active() != Allocator::Jemalloc {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "heap profiles need the jemalloc allocator (knob `allocator = \"jemalloc\"`)\n",
        )
            .into_response();
    }
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "jemalloc heap profiling is not enabled\n",
        )
            .into_response();
    };
    let mut ctl = ctl.lock().await;
    if !ctl.activated() {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "jemalloc heap profiling is not active\n",
        )
            .into_response();
    }
    if svg {
        match ctl.dump_flamegraph() {
            Ok(bytes) => ([(header::CONTENT_TYPE, "image/svg+xml")], bytes).into_response(),
            Err(e) => server_error(format!("heap flamegraph: {e}")),
        }
    } else {
        match ctl.dump_pprof() {
            Ok(bytes) => (
                [
                    (header::CONTENT_TYPE, "application/octet-stream"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"heap.pb.gz\"",
                    ),
                ],
                bytes,
            )
                .into_response(),
            Err(e) => server_error(format!("heap profile: {e}")),
        }
    }
}

async fn heap_profile(State(ctx): State<Arc<StageCtx>>) -> Response {
    heap_dump(&ctx, false).await
}

async fn heap_flamegraph(State(ctx): State<Arc<StageCtx>>) -> Response {
    heap_dump(&ctx, true).await
}
