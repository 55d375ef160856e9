//! One measured run of a plan on this machine: start the processes, show live throughput,
//! capture a CPU flamegraph of every stage during the run, wait for the stream to end (or for
//! an interrupt to drain it), and write the report folder:
//!
//! ```text
//! <report>/summary.json     the RunSummary
//! <report>/summary.txt      the same for people
//! <report>/plan.toml        the exact plan, to run it again
//! <report>/flamegraph-<stage>.svg  (and folded-<stage>.txt, its collapsed stacks)
//! <report>/run/             stage configs, logs, ready and stats files, the sink's log
//! ```

use crate::local::{LocalOptions, LocalRun, StageProc, describe_exit, log_tail, stage_error};
use crate::summary::{RunSummary, StageFailure, group, si};
use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pipeline::context::StageStats;
use pipeline_plan::{Plan, Role, StageKnobs};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How to run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub pipeline_bin: PathBuf,
    pub report_dir: PathBuf,
    /// Seconds of CPU profile per stage (0: no flamegraphs).
    pub profile_seconds: u64,
    /// Keep admin ports up this long after the stream ends.
    pub linger: Duration,
    /// Draw the live per-stage display on stderr (when it is a terminal).
    pub live: bool,
    /// Start Prometheus (and Grafana) around the run, when installed.
    pub stack: bool,
    /// Whether a stage that dies is restarted.
    pub restart: Restart,
}

impl RunConfig {
    /// A run for a suite (chaos, robustness): no profiles, no display, no stack, no lingering;
    /// a dead stage restarted as the plan's delivery says.
    pub fn quiet(pipeline_bin: PathBuf, report_dir: PathBuf) -> Self {
        RunConfig {
            pipeline_bin,
            report_dir,
            profile_seconds: 0,
            linger: Duration::ZERO,
            live: false,
            stack: false,
            restart: Restart::Auto,
        }
    }
}

/// Whether the runner restarts a stage that dies mid-run (exits non-zero or on a signal), on
/// the same ports, as a Deployment would.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Restart {
    /// `OnFailure` when the plan's delivery is `at_least_once`, else `Never`.
    #[default]
    Auto,
    OnFailure,
    Never,
}

/// Restarts per stage before the runner gives up on it (a crash loop).
pub const MAX_RESTARTS: u32 = 5;

/// With a Prometheus around, stages stay up this long after their stream so the last scrape
/// sees their final counters (it scrapes every second).
const LINGER_FOR_SCRAPE: Duration = Duration::from_secs(3);

/// A drain that takes longer than this is told to give up (a second SIGTERM: each stage counts
/// what it still holds as abandoned, writes its stats and exits); one that still runs
/// [`KILL_AFTER_GIVING_UP`] later is killed.
const GIVE_UP_AFTER_DRAIN: Duration = Duration::from_secs(40);
/// After a stage died, the others drain for this long, then give up: nothing can reach the
/// stages below a dead one, so waiting longer only delays the report.
const GIVE_UP_AFTER_DEATH: Duration = Duration::from_secs(3);
const KILL_AFTER_GIVING_UP: Duration = Duration::from_secs(6);
/// The same, for a stage that died at start-up (a second signal must not coalesce with the
/// first, so not at once).
const GIVE_UP_AT_START_UP: Duration = Duration::from_millis(300);

/// Where the run is in stopping.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stopping {
    Running,
    /// Drain asked (SIGTERM); give up at this time.
    Draining(Instant),
    /// Told to give up (second SIGTERM) at this time.
    GivingUp(Instant),
    Killed,
}

/// Run `plan` to the end of its stream. Each message on `interrupts` is an interrupt (Ctrl-C):
/// the first drains the pipeline (the summary is still written), a second kills it.
pub async fn run_local(
    plan: &Plan,
    cfg: &RunConfig,
    mut interrupts: mpsc::UnboundedReceiver<()>,
) -> anyhow::Result<RunSummary> {
    std::fs::create_dir_all(&cfg.report_dir)
        .with_context(|| format!("creating {}", cfg.report_dir.display()))?;
    std::fs::write(cfg.report_dir.join("plan.toml"), plan.to_toml())?;
    let opts = LocalOptions {
        pipeline_bin: cfg.pipeline_bin.clone(),
        workdir: cfg.report_dir.join("run"),
        linger: if cfg.stack {
            cfg.linger.max(LINGER_FOR_SCRAPE)
        } else {
            cfg.linger
        },
    };
    let mut run = LocalRun::start(plan, &opts).await?;
    let stack = if cfg.stack {
        let targets: Vec<String> = run
            .stages
            .iter()
            .map(|s| s.ready.admin_addr.clone())
            .collect();
        let stack = crate::stack::start(&opts.workdir, &targets).await;
        for note in &stack.notes {
            eprintln!("observatory: {note}");
        }
        Some(stack)
    } else {
        None
    };

    let mut profiles = JoinSet::new();
    let mut profiling = cfg.profile_seconds == 0;
    let live = Live::new(&run, cfg.live);
    let started = Instant::now();
    let mut interrupted = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut ticks = 0u64;
    let mut stopping = Stopping::Running;
    let mut failures: Vec<(usize, StageFailure)> = Vec::new();
    let mut restarts: Vec<StageFailure> = Vec::new();
    let restart = match cfg.restart {
        Restart::Auto => plan.delivery() == pipeline_plan::Delivery::AtLeastOnce,
        Restart::OnFailure => true,
        Restart::Never => false,
    };
    // The last figures seen from each stage alive: a stage that dies leaves nothing else.
    let mut last_seen: Vec<Option<StageStats>> = vec![None; run.stages.len()];
    while !run.all_exited() {
        tokio::select! {
            _ = tick.tick() => {
                ticks += 1;
                for i in run.newly_exited() {
                    if let Some(f) = failure(&run.stages[i], started, &last_seen[i]) {
                        live.note(&f.1);
                        // Every stage here was ready once (one that fails before is a failed
                        // start, never restarted); one that keeps dying stops at MAX_RESTARTS.
                        if restart
                            && stopping == Stopping::Running
                            && run.stages[i].restarts < MAX_RESTARTS
                        {
                            match run.restart(i, &opts).await {
                                Ok(()) => {
                                    live.note(&format!(
                                        "restarted the {} stage on the same ports (restart {} of at most {MAX_RESTARTS})",
                                        run.stages[i].name, run.stages[i].restarts
                                    ));
                                    last_seen[i] = None;
                                    restarts.push(f.0);
                                    continue;
                                }
                                Err(e) => live.note(&format!("could not restart the {} stage: {e:#}", run.stages[i].name)),
                            }
                        }
                        failures.push((i, f.0.clone()));
                        if stopping == Stopping::Running {
                            live.note("stopping the other stages; what they cannot deliver is counted as lost");
                            run.signal(libc::SIGTERM);
                            let now = Instant::now();
                            // A pipeline that never got going has nothing worth draining.
                            let grace = if f.0.at_start_up { GIVE_UP_AT_START_UP } else { GIVE_UP_AFTER_DEATH };
                            stopping = Stopping::Draining(now + grace);
                        }
                    }
                }
                let polled = if ticks.is_multiple_of(5) || !profiling { run.poll().await } else { Vec::new() };
                for (seen, p) in last_seen.iter_mut().zip(&polled) {
                    if p.is_some() {
                        seen.clone_from(p);
                    }
                }
                if !profiling && warmed_up(plan, &polled, started.elapsed()) {
                    profiling = true;
                    start_profiles(&run, cfg, &plan.name, &mut profiles);
                    live.note(&format!(
                        "capturing {} s CPU flamegraphs of every stage (pprof-rs adds ~80-150 MB to each stage's RSS from now on; the summary reports RSS from before)",
                        cfg.profile_seconds
                    ));
                }
                if ticks.is_multiple_of(5) {
                    live.update(&polled, started.elapsed());
                }
                stopping = escalate(&mut run, stopping, &live);
            }
            Some(()) = interrupts.recv() => {
                interrupted += 1;
                let now = Instant::now();
                if interrupted == 1 {
                    live.note("interrupted: draining the pipeline (interrupt again to stop waiting)");
                    run.signal(libc::SIGTERM);
                    stopping = Stopping::Draining(now + GIVE_UP_AFTER_DRAIN);
                } else if interrupted == 2 {
                    live.note("interrupted again: the stages give up (what they hold is counted as abandoned); once more kills them");
                    run.signal(libc::SIGTERM);
                    stopping = Stopping::GivingUp(now);
                } else {
                    live.note("killing the stages");
                    run.signal(libc::SIGKILL);
                    stopping = Stopping::Killed;
                }
            }
        }
    }
    live.finish();
    let ends = run.finish(LINGER_FOR_SCRAPE + Duration::from_secs(5)).await;
    // Stages that ended badly after the loop (killed by the runner itself) count too.
    for (i, end) in ends.iter().enumerate() {
        if !end.status.success() && !failures.iter().any(|(j, _)| *j == i) {
            failures.push((
                i,
                stage_failure(
                    &end.name,
                    end.status,
                    &end.log,
                    started.elapsed().as_secs_f64(),
                    false,
                ),
            ));
        }
    }
    failures.sort_by_key(|(i, _)| *i);
    let stats: Vec<(String, StageStats)> = ends
        .iter()
        .zip(last_seen)
        .map(|(end, seen)| {
            let st = end.stats.clone().unwrap_or_else(|| {
                let mut s = seen.unwrap_or_default();
                s.stage = end.role.to_string();
                s.finished = false;
                s
            });
            (end.name.clone(), st)
        })
        .collect();
    let sink_died = failures.iter().any(|(i, _)| ends[*i].role == Role::Sink);
    let persisted_in_log = if sink_died {
        sink_log_dir(plan, &opts.workdir)
            .and_then(|d| pipeline::seglog::read_windows(&d).ok())
            .map(|w| w.events)
    } else {
        None
    };
    if let Some(p) = stack.as_ref().and_then(|s| s.prometheus.as_ref()) {
        let dir = opts.workdir.join("prometheus");
        eprintln!(
            "observatory: Prometheus at {} stops with the run; its data stays: prometheus --config.file={} --storage.tsdb.path={}",
            p.url,
            dir.join("prometheus.yml").display(),
            dir.join("data").display()
        );
    }
    drop(stack);
    while let Some(done) = profiles.join_next().await {
        match done {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "a flamegraph was not captured"),
            Err(e) => tracing::warn!(error = %e, "a flamegraph task failed"),
        }
    }
    let mut summary =
        RunSummary::from_stats(&plan.name, &stats, &cfg.report_dir.display().to_string());
    summary.attribute_failures(
        failures.into_iter().map(|(_, f)| f).collect(),
        persisted_in_log,
    );
    summary.restarts = restarts;
    if plan.delivery() == pipeline_plan::Delivery::AtLeastOnce
        && let Some(dir) = sink_log_dir(plan, &opts.workdir)
    {
        summary.check_log_against_seed(plan, &dir);
    }
    std::fs::write(
        cfg.report_dir.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    std::fs::write(cfg.report_dir.join("summary.txt"), summary.to_text())?;
    Ok(summary)
}

/// Send the next signal when its time has come: give up after the drain's deadline, kill
/// after giving up's.
fn escalate(run: &mut LocalRun, stopping: Stopping, live: &Live) -> Stopping {
    let now = Instant::now();
    match stopping {
        Stopping::Draining(give_up) if now >= give_up => {
            live.note("the stages are still draining: telling them to give up (what they hold is counted as abandoned)");
            run.signal(libc::SIGTERM);
            Stopping::GivingUp(now)
        }
        Stopping::GivingUp(at) if now >= at + KILL_AFTER_GIVING_UP => {
            live.note("the stages did not exit after giving up: killing them");
            run.signal(libc::SIGKILL);
            Stopping::Killed
        }
        other => other,
    }
}

/// How a stage that ended badly failed, from its exit status and its log.
fn stage_failure(
    name: &str,
    status: std::process::ExitStatus,
    log: &std::path::Path,
    after_seconds: f64,
    at_start_up: bool,
) -> StageFailure {
    StageFailure {
        stage: name.to_string(),
        how: describe_exit(status),
        error: stage_error(log),
        after_seconds,
        at_start_up,
    }
}

/// A stage that exited: `None` if it finished its stream (exit 0), or what happened and the
/// note for the terminal (with the end of its log).
fn failure(
    stage: &StageProc,
    started: Instant,
    last_seen: &Option<StageStats>,
) -> Option<(StageFailure, String)> {
    let status = stage.status()?;
    if status.success() {
        return None;
    }
    let after = stage
        .exited_at
        .unwrap_or_else(Instant::now)
        .saturating_duration_since(started)
        .as_secs_f64();
    let at_start_up = last_seen
        .as_ref()
        .is_none_or(|s| s.events_received == 0 && s.events_emitted == 0);
    let f = stage_failure(&stage.name, status, &stage.log, after, at_start_up);
    let mut note = format!(
        "the {} stage {} {after:.1} s into the run{}",
        stage.name,
        crate::local::with_verb(&f.how),
        if at_start_up { " (at start-up)" } else { "" }
    );
    if let Some(e) = &f.error {
        note.push_str(&format!(": {e}"));
    }
    let tail = log_tail(&stage.log, 8);
    if !tail.is_empty() {
        note.push_str(&format!(
            "\nthe end of {}:\n{}",
            stage.log.display(),
            tail.lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    Some((f, note))
}

/// The sink's log directory, as the sink resolves it (relative to its working directory).
pub fn sink_log_dir(plan: &Plan, workdir: &std::path::Path) -> Option<PathBuf> {
    match plan.knobs(Role::Sink) {
        Some(StageKnobs::Sink(k)) if k.mode == pipeline_plan::SinkMode::Log => {
            Some(workdir.join(&k.dir))
        }
        _ => None,
    }
}

/// Flamegraphs start once the run is past its warm-up: a quarter of its events or of its
/// duration, or 3 s into an open-ended run. Peak RSS before that is the pipeline's own.
fn warmed_up(plan: &Plan, polled: &[Option<StageStats>], elapsed: Duration) -> bool {
    let Some(StageKnobs::Source(k)) = plan.knobs(Role::Source) else {
        return true;
    };
    if k.events > 0 {
        let emitted = polled
            .first()
            .and_then(|s| s.as_ref())
            .map_or(0, |s| s.events_emitted);
        emitted >= k.events / 4
    } else if k.duration_seconds > 0.0 {
        elapsed.as_secs_f64() >= k.duration_seconds / 4.0
    } else {
        elapsed >= Duration::from_secs(3)
    }
}

fn start_profiles(
    run: &LocalRun,
    cfg: &RunConfig,
    pipeline: &str,
    profiles: &mut JoinSet<anyhow::Result<PathBuf>>,
) {
    for s in &run.stages {
        let url = s.admin_url(&format!(
            "/debug/pprof/folded?seconds={}",
            cfg.profile_seconds
        ));
        let folded_path = cfg.report_dir.join(format!("folded-{}.txt", s.name));
        let svg = cfg.report_dir.join(format!("flamegraph-{}.svg", s.name));
        let title = format!("{} stage: CPU ({pipeline})", s.name);
        let wait = Duration::from_secs(cfg.profile_seconds + 30);
        profiles.spawn(async move {
            let body = crate::http::get_ok(&url, wait).await?;
            let folded = String::from_utf8_lossy(&body).into_owned();
            std::fs::write(&folded_path, &folded)?;
            crate::flame::render(&folded, &title, &svg)?;
            anyhow::Ok(svg)
        });
    }
}

/// The live per-stage display: one line per stage, refreshed twice a second.
struct Live {
    multi: MultiProgress,
    bars: Vec<ProgressBar>,
    last: std::sync::Mutex<(Vec<u64>, Duration)>,
}

impl Live {
    fn new(run: &LocalRun, enabled: bool) -> Self {
        let target = if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let style = ProgressStyle::with_template("{prefix:>10} {spinner:.green} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bars = run
            .stages
            .iter()
            .map(|s| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(s.name.clone());
                bar.set_message(format!("starting (admin http://{})", s.ready.admin_addr));
                bar
            })
            .collect();
        Live {
            multi,
            bars,
            last: std::sync::Mutex::new((vec![0; run.stages.len()], Duration::ZERO)),
        }
    }

    fn update(&self, stats: &[Option<StageStats>], elapsed: Duration) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let dt = (elapsed - last.1).as_secs_f64().max(1e-3);
        for (i, (bar, s)) in self.bars.iter().zip(stats).enumerate() {
            let Some(s) = s else {
                continue;
            };
            let handled = if s.stage == "source" {
                s.events_emitted
            } else {
                s.events_received
            };
            let rate = (handled.saturating_sub(last.0[i])) as f64 / dt;
            last.0[i] = handled;
            let dropped: u64 = s.dropped.values().sum();
            bar.set_message(format!(
                "{:>9} ev/s  in {:>13}  out {:>13}  dropped {:>9}  {:>5.1} MiB  {}",
                si(rate),
                group(handled),
                group(s.events_sent),
                group(dropped),
                s.rss_bytes as f64 / (1 << 20) as f64,
                if s.finished { "finished" } else { "" }
            ));
            bar.tick();
        }
        last.1 = elapsed;
    }

    fn note(&self, msg: &str) {
        let msg = format!("observatory: {msg}");
        if self.multi.println(&msg).is_err() || self.multi.is_hidden() {
            eprintln!("{msg}");
        }
    }

    fn finish(&self) {
        for bar in &self.bars {
            bar.finish();
        }
    }
}
