//! The chaos suite: faults done to real stage processes on loopback, each in a run of its own,
//! and what each run then shows (`observatory chaos`, `make chaos`; a short version runs in
//! `make test` from `tests/chaos.rs`).
//!
//! Faults: `kill -9` of a stage mid-run (at most once, and at least once, where the runner
//! restarts it), `SIGSTOP` of a stage (then `SIGCONT`), a sink 1000x slower than the source, a
//! stage that cannot start. Every run is checked the same way ([`Row::passed`]): the run ended
//! by itself; the log holds no window twice; what the summary says was lost is exactly what is
//! missing from the log (`emitted = log + dead-lettered + discarded + lost`, and, for kills and
//! stops, window by window against what the seed gives: nothing in the log the seed does not
//! give); every stage's peak RSS is under its bound ([`pipeline::bounds`]); and per fault, what
//! it must show (at most once, a killed stage is named and the run fails within 10 s of the
//! kill; at least once, it is restarted, nothing is lost and the log is exactly what the seed
//! gives; a stopped stage loses nothing; behind a slow sink the source slows to the sink's
//! pace; a stage that cannot start fails the run within 2 s with its error).

use crate::local::find_pipeline_bin;
use crate::run::{RunConfig, run_local, sink_log_dir};
use crate::summary::RunSummary;
use anyhow::Context;
use pipeline::bounds;
use pipeline::context::StageStats;
use pipeline::reference::Comparison;
use pipeline::stage::ReadyInfo;
use pipeline_plan::{Delivery, Plan, Role, StageKnobs};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One fault.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// `kill -9` of the stage, `after` into the run, with this delivery (at least once, the
    /// runner restarts it).
    Kill {
        role: Role,
        after: Duration,
        delivery: Delivery,
    },
    /// `SIGSTOP` of the stage `after` into the run, `SIGCONT` `stopped` later.
    Stop {
        role: Role,
        after: Duration,
        stopped: Duration,
    },
    /// A sink 1000x slower than the source, for `stall`; then the run is stopped (what is
    /// still queued is given up and counted).
    SlowSink { stall: Duration },
    /// The sink cannot open its log directory.
    CannotStart,
}

impl Fault {
    /// Every fault of the full suite (`make chaos`).
    pub fn full() -> Vec<Fault> {
        let mut v = Fault::kills(Duration::from_secs(3));
        for role in Role::CHAIN {
            v.push(Fault::Stop {
                role,
                after: Duration::from_secs(2),
                stopped: Duration::from_secs(20),
            });
        }
        v.push(Fault::SlowSink {
            stall: Duration::from_secs(60),
        });
        v.push(Fault::CannotStart);
        v
    }

    /// The short version (`make test`).
    pub fn short() -> Vec<Fault> {
        let mut v = Fault::kills(Duration::from_secs(2));
        v.extend([
            Fault::Stop {
                role: Role::Parse,
                after: Duration::from_secs(1),
                stopped: Duration::from_secs(3),
            },
            Fault::SlowSink {
                stall: Duration::from_secs(12),
            },
            Fault::CannotStart,
        ]);
        v
    }

    /// `kill -9` of each stage in turn, `after` into the run: at most once, then at least
    /// once.
    fn kills(after: Duration) -> Vec<Fault> {
        [Delivery::AtMostOnce, Delivery::AtLeastOnce]
            .into_iter()
            .flat_map(|delivery| {
                Role::CHAIN.into_iter().map(move |role| Fault::Kill {
                    role,
                    after,
                    delivery,
                })
            })
            .collect()
    }

    /// The delivery mode of the run.
    pub fn mode(&self) -> &'static str {
        match self {
            Fault::Kill {
                delivery: Delivery::AtLeastOnce,
                ..
            } => "at_least_once",
            _ => "at_most_once",
        }
    }

    pub fn name(&self) -> String {
        match self {
            Fault::Kill { role, .. } => format!("kill -9 {role}"),
            Fault::Stop { role, stopped, .. } => {
                format!("SIGSTOP {role} {} s", stopped.as_secs())
            }
            Fault::SlowSink { stall } => format!("sink 1000x slower, {} s", stall.as_secs()),
            Fault::CannotStart => "sink cannot start".into(),
        }
    }

    /// The run the fault is done to.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let mut plan = Plan::new("chaos");
        // Frames of at most 1 MiB everywhere: the bounds are then tight enough to mean
        // something (the source's frames are ~200 KB).
        let mut set = vec!["all.max_frame_bytes=1048576".to_string()];
        match self {
            Fault::Kill {
                delivery: Delivery::AtMostOnce,
                ..
            } => set.extend(["source.events=3000000".into(), "source.rate=200000".into()]),
            // The run goes on after the kill (the stage is restarted): shorter, and with
            // malformed records, whose dead letters die with a killed parse.
            Fault::Kill {
                delivery: Delivery::AtLeastOnce,
                ..
            } => set.extend([
                "all.delivery=at_least_once".into(),
                "source.events=1500000".into(),
                "source.rate=200000".into(),
                "source.malformed_rate=0.01".into(),
            ]),
            Fault::Stop { .. } => {
                set.extend(["source.events=1000000".into(), "source.rate=200000".into()])
            }
            Fault::SlowSink { stall } => set.extend([
                format!("source.duration_seconds={}", stall.as_secs()),
                format!("source.rate={SLOW_SINK_SOURCE_RATE}"),
                // 10 ms windows of 10 us events: ~1,000 events a window, one frame of
                // results each; at 3.3 s a frame the sink takes ~300 events/s.
                "aggregate.window_ms=10".into(),
                format!("sink.inject_delay_us={SLOW_SINK_DELAY_US}"),
            ]),
            Fault::CannotStart => {
                set.extend(["source.events=1000".into(), "sink.dir=/proc/nope".into()])
            }
        }
        for s in &set {
            plan.assign(s)?;
        }
        Ok(plan)
    }
}

const SLOW_SINK_SOURCE_RATE: u64 = 300_000;
const SLOW_SINK_DELAY_US: u64 = 3_333_000;

/// What one faulted run showed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub fault: String,
    /// Delivery mode: `at_most_once` or `at_least_once`.
    pub mode: String,
    pub events_emitted: u64,
    /// What the sink's log holds (read back, every CRC checked).
    pub events_in_log: u64,
    pub dead_lettered: u64,
    pub lost: u64,
    /// Windows the log holds more than once.
    pub duplicated_windows: u64,
    /// Events the seed gives that the log lacks (compared window by window), where known.
    pub missing_from_log: Option<u64>,
    /// Stages the runner restarted.
    pub restarted: Vec<String>,
    /// `emitted = log + dead-lettered + discarded + lost`: the summary's loss is exactly what
    /// is missing from the log.
    pub loss_matches_log: bool,
    pub conserved: bool,
    pub not_conserved_because: Option<String>,
    /// Peak RSS per stage, MiB, and its bound.
    pub peak_rss_mib: BTreeMap<String, f64>,
    pub bound_mib: BTreeMap<String, f64>,
    /// Seconds from the fault (the kill, the stop, the end of the stall, the start) to the
    /// end of the run.
    pub seconds_to_end: f64,
    /// Behind a slow sink: events/s the source emitted and the sink persisted over the
    /// second half of the stall.
    pub source_rate_eps: Option<f64>,
    pub sink_rate_eps: Option<f64>,
    /// What did not hold (empty when the run passed).
    pub problems: Vec<String>,
}

impl Row {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Where and how to run the suite.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    pub pipeline_bin: PathBuf,
    /// Each run's report goes in a folder of its own under here.
    pub dir: PathBuf,
}

impl ChaosOptions {
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        Ok(ChaosOptions {
            pipeline_bin: find_pipeline_bin()?,
            dir: dir.to_path_buf(),
        })
    }
}

/// Wait for a stage's ready file and read it.
pub(crate) async fn ready(
    run_dir: &Path,
    stage: &str,
    timeout: Duration,
) -> anyhow::Result<ReadyInfo> {
    let path = run_dir.join(format!("{stage}.ready.json"));
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read(&path)
            && let Ok(r) = serde_json::from_slice(&text)
        {
            return Ok(r);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

async fn stats(r: &ReadyInfo) -> Option<StageStats> {
    let url = format!("http://{}/stats", r.admin_addr);
    let body = crate::http::get_ok(&url, Duration::from_secs(1))
        .await
        .ok()?;
    serde_json::from_slice(&body).ok()
}

/// Do one fault to one run and check what it shows.
pub async fn run_fault(fault: &Fault, opts: &ChaosOptions, index: usize) -> anyhow::Result<Row> {
    let plan = fault.plan()?;
    let report = opts.dir.join(format!("{index:02}-{}", slug(&fault.name())));
    let _ = std::fs::remove_dir_all(&report);
    let run_dir = report.join("run");
    let cfg = RunConfig::quiet(opts.pipeline_bin.clone(), report.clone());
    let (interrupt, interrupts) = mpsc::unbounded_channel();
    let started = Instant::now();
    let task_plan = plan.clone();
    let run = tokio::spawn(async move { run_local(&task_plan, &cfg, interrupts).await });
    let mut rates = None;
    let fault_at = match fault {
        Fault::Kill { role, after, .. } => {
            let r = ready(&run_dir, role.as_str(), Duration::from_secs(30)).await?;
            tokio::time::sleep_until(started + *after).await;
            signal(r.pid, libc::SIGKILL);
            Instant::now()
        }
        Fault::Stop {
            role,
            after,
            stopped,
        } => {
            let r = ready(&run_dir, role.as_str(), Duration::from_secs(30)).await?;
            tokio::time::sleep_until(started + *after).await;
            signal(r.pid, libc::SIGSTOP);
            tokio::time::sleep(*stopped).await;
            signal(r.pid, libc::SIGCONT);
            Instant::now()
        }
        Fault::SlowSink { stall } => {
            let source = ready(&run_dir, "source", Duration::from_secs(30)).await?;
            let sink = ready(&run_dir, "sink", Duration::from_secs(30)).await?;
            tokio::time::sleep_until(started + *stall / 2).await;
            let t0 = Instant::now();
            let a = (stats(&source).await, stats(&sink).await);
            tokio::time::sleep_until(started + *stall).await;
            let b = (stats(&source).await, stats(&sink).await);
            let dt = t0.elapsed().as_secs_f64();
            if let ((Some(s0), Some(k0)), (Some(s1), Some(k1))) = (a, b) {
                rates = Some((
                    (s1.events_emitted - s0.events_emitted) as f64 / dt,
                    (k1.events_persisted - k0.events_persisted) as f64 / dt,
                ));
            }
            // The stall is over: stop the run; what is still queued is given up, counted.
            let over = Instant::now();
            let _ = interrupt.send(());
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = interrupt.send(());
            over
        }
        Fault::CannotStart => started,
    };
    let summary = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .context("the run did not end within 120 s of its fault")?
        .context("the run task")?;
    let seconds_to_end = fault_at.elapsed().as_secs_f64();
    let summary = summary?;
    // No log where the sink never opened one; a log that cannot be read fails the run.
    let log = match sink_log_dir(&plan, &run_dir) {
        Some(dir) if dir.exists() => pipeline::seglog::read_windows(&dir)
            .with_context(|| format!("reading the sink's log {}", dir.display()))?,
        _ => Default::default(),
    };
    // Where the stream is a function of the seed and complete (not cut by a stall), the log
    // is compared window by window with what the seed gives.
    let reference = match (fault, plan.knobs(Role::Source), plan.knobs(Role::Aggregate)) {
        (
            Fault::Kill { .. } | Fault::Stop { .. },
            Some(StageKnobs::Source(src)),
            Some(StageKnobs::Aggregate(agg)),
        ) => match sink_log_dir(&plan, &run_dir) {
            Some(dir) if dir.exists() => Some(
                pipeline::reference::check_log(src, agg.window_ms, summary.events_emitted, &dir)
                    .with_context(|| format!("reading the sink's log {}", dir.display()))?,
            ),
            _ => None,
        },
        _ => None,
    };
    let seen = Observed {
        events_in_log: log.events,
        duplicated_windows: log.duplicated,
        undecodable_records: log.undecodable,
        seconds_to_end,
        rates,
        reference,
    };
    Ok(check(fault, &plan, &summary, &seen))
}

/// What was seen of a faulted run besides its summary.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Events in the sink's log, read back.
    pub events_in_log: u64,
    /// Windows the log holds more than once.
    pub duplicated_windows: u64,
    /// Records in the log that are not window results.
    pub undecodable_records: u64,
    /// From the fault to the end of the run.
    pub seconds_to_end: f64,
    /// Behind a slow sink: (source, sink) events/s over the second half of the stall.
    pub rates: Option<(f64, f64)>,
    /// The log compared with what the seed gives (kills and stops).
    pub reference: Option<Comparison>,
}

/// Every stage's peak RSS (MiB) and its documented bound ([`pipeline::bounds`]).
pub struct MemoryCheck {
    pub peak_rss_mib: BTreeMap<String, f64>,
    pub bound_mib: BTreeMap<String, f64>,
}

/// Check every stage of run `s` of `plan` against its memory bound: a stage over its bound, a
/// stage without a computable bound, or a stage of the plan without figures is a problem.
pub fn memory_check(plan: &Plan, s: &RunSummary, problems: &mut Vec<String>) -> MemoryCheck {
    let mut peak_rss_mib = BTreeMap::new();
    let mut bound_mib = BTreeMap::new();
    let mib = |b: u64| (b as f64 / f64::from(1 << 20) * 10.0).round() / 10.0;
    for st in &s.stages {
        // A stage whose bound cannot be computed is a problem, not a pass.
        let bound = Role::CHAIN
            .iter()
            .find(|r| st.name.starts_with(r.as_str()))
            .and_then(|r| bounds::of_plan(plan, *r).ok())
            .map(|b| b.bytes());
        let Some(bound) = bound else {
            problems.push(format!("no memory bound for the stage `{}`", st.name));
            continue;
        };
        peak_rss_mib.insert(st.name.clone(), mib(st.rss_bytes));
        bound_mib.insert(st.name.clone(), mib(bound));
        if st.rss_bytes > bound {
            problems.push(format!(
                "{} peaked at {} MiB, over its bound of {} MiB",
                st.name,
                mib(st.rss_bytes),
                mib(bound)
            ));
        }
    }
    for stage in plan.stages() {
        let role = stage.role();
        if !s.stages.iter().any(|st| st.name.starts_with(role.as_str())) {
            problems.push(format!("the summary has no figures of the {role} stage"));
        }
    }
    MemoryCheck {
        peak_rss_mib,
        bound_mib,
    }
}

/// What a fault's run must show: the run of `plan` (the fault's, [`Fault::plan`]) ended with
/// summary `s`, and this was `seen`.
pub fn check(fault: &Fault, plan: &Plan, s: &RunSummary, seen: &Observed) -> Row {
    let Observed {
        events_in_log,
        duplicated_windows,
        undecodable_records,
        seconds_to_end,
        rates,
        ref reference,
    } = *seen;
    let mut problems = Vec::new();
    let explained = events_in_log + s.dead_lettered + s.discarded + s.lost;
    let loss_matches_log = explained == s.events_emitted;
    if !loss_matches_log {
        problems.push(format!(
            "emitted {} but log {} + dead-lettered {} + discarded {} + lost {} = {explained}",
            s.events_emitted, events_in_log, s.dead_lettered, s.discarded, s.lost
        ));
    }
    if duplicated_windows > 0 {
        problems.push(format!("{duplicated_windows} windows are in the log twice"));
    }
    if undecodable_records > 0 {
        problems.push(format!(
            "{undecodable_records} records in the log are not window results"
        ));
    }
    let MemoryCheck {
        peak_rss_mib,
        bound_mib,
    } = memory_check(plan, s, &mut problems);
    if let Some(c) = reference {
        // Nothing in the log that the seed does not give, and the loss the summary reports
        // is what the log lacks (the events, and the dead letters the seed makes that a
        // killed parse took with it).
        if c.extra_windows > 0 || c.inflated_windows > 0 {
            problems.push(format!(
                "the log has {} windows the seed does not give and {} with more events than it gives",
                c.extra_windows, c.inflated_windows
            ));
        }
        let missing = c.events_expected.saturating_sub(c.events_in_log)
            + c.dead_letters_expected.saturating_sub(s.dead_lettered);
        if s.lost != missing || s.dead_lettered > c.dead_letters_expected {
            problems.push(format!(
                "the summary says {} lost, but the log lacks {} events the seed gives and {} of its dead letters",
                s.lost,
                c.events_expected.saturating_sub(c.events_in_log),
                c.dead_letters_expected.saturating_sub(s.dead_lettered)
            ));
        }
    } else if matches!(fault, Fault::Kill { .. } | Fault::Stop { .. }) {
        problems.push("the log was not compared with the seed".into());
    }
    let failed: Vec<&str> = s.failures.iter().map(|f| f.stage.as_str()).collect();
    let restarted: Vec<String> = s.restarts.iter().map(|f| f.stage.clone()).collect();
    match fault {
        Fault::Kill {
            role,
            delivery: Delivery::AtLeastOnce,
            ..
        } => {
            if restarted != [role.as_str()] || !failed.is_empty() {
                problems.push(format!(
                    "restarted {restarted:?} and failed {failed:?}, not restarted [{role}]"
                ));
            }
            let exact = reference.as_ref().is_some_and(Comparison::is_exact);
            if !exact || !s.conserved || s.lost > 0 {
                problems.push(format!(
                    "at least once, a kill must lose nothing and leave the log exactly as the seed gives: lost {}, {}",
                    s.lost,
                    reference
                        .as_ref()
                        .and_then(Comparison::problem)
                        .unwrap_or_else(|| "conserved".into())
                ));
            }
        }
        Fault::Kill { role, .. } => {
            if failed != [role.as_str()] {
                problems.push(format!("failures named {failed:?}, not [{role}]"));
            }
            if s.conserved || s.not_conserved_because.is_none() {
                problems.push("a run with a killed stage claims to be conserved".into());
            }
            if seconds_to_end > 10.0 {
                problems.push(format!(
                    "ended {seconds_to_end:.1} s after the kill (> 10 s)"
                ));
            }
        }
        Fault::Stop { .. } => {
            if !s.conserved || s.lost > 0 || !failed.is_empty() {
                problems.push(format!(
                    "a stopped stage lost events or failed: lost {}, failures {failed:?}",
                    s.lost
                ));
            }
        }
        Fault::SlowSink { .. } => {
            if !failed.is_empty() || s.unaccounted != 0 {
                problems.push(format!(
                    "failures {failed:?}, unaccounted {}",
                    s.unaccounted
                ));
            }
            match rates {
                Some((source, sink)) => {
                    // The source keeps pace with the sink (1000x slower than it would go),
                    // not with its own rate.
                    let pace = (2.0 * sink).max(0.01 * SLOW_SINK_SOURCE_RATE as f64);
                    if source > pace {
                        problems.push(format!(
                            "the source emitted {source:.0} events/s behind a sink persisting {sink:.0}/s"
                        ));
                    }
                }
                None => problems.push("could not read the rates during the stall".into()),
            }
        }
        Fault::CannotStart => {
            let named = s
                .failures
                .first()
                .and_then(|f| f.error.as_deref())
                .is_some_and(|e| e.starts_with("sink.dir: cannot create /proc/nope"));
            if !named || failed != ["sink"] {
                problems.push(format!(
                    "the failure did not name sink.dir: {:?}",
                    s.failures
                ));
            }
            if seconds_to_end > 2.0 {
                problems.push(format!(
                    "the run took {seconds_to_end:.1} s to fail (> 2 s)"
                ));
            }
        }
    }
    Row {
        fault: fault.name(),
        mode: fault.mode().into(),
        missing_from_log: reference
            .as_ref()
            .map(|c| c.events_expected.saturating_sub(c.events_in_log)),
        restarted,
        events_emitted: s.events_emitted,
        events_in_log,
        dead_lettered: s.dead_lettered,
        lost: s.lost,
        duplicated_windows,
        loss_matches_log,
        conserved: s.conserved,
        not_conserved_because: s.not_conserved_because.clone(),
        peak_rss_mib,
        bound_mib,
        seconds_to_end: (seconds_to_end * 10.0).round() / 10.0,
        source_rate_eps: rates.map(|r| r.0.round()),
        sink_rate_eps: rates.map(|r| r.1.round()),
        problems,
    }
}

pub(crate) fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// The table people read (Markdown).
pub fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| fault | mode | emitted | in log | lost | missing vs seed | dup. windows | loss = missing | restarted | peak RSS MiB (bound) | s to end | source / sink ev/s | result |"
    );
    let _ = writeln!(
        t,
        "|---|---|---:|---:|---:|---:|---:|---|---|---|---:|---|---|"
    );
    for r in rows {
        let rss: Vec<String> = r
            .peak_rss_mib
            .iter()
            .map(|(k, v)| format!("{k} {v} ({})", r.bound_mib.get(k).copied().unwrap_or(0.0)))
            .collect();
        let rates = match (r.source_rate_eps, r.sink_rate_eps) {
            (Some(a), Some(b)) => format!("{a:.0} / {b:.0}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} |",
            r.fault,
            r.mode,
            r.events_emitted,
            r.events_in_log,
            r.lost,
            r.missing_from_log
                .map_or_else(|| "-".to_string(), |m| m.to_string()),
            r.duplicated_windows,
            if r.loss_matches_log { "yes" } else { "NO" },
            if r.restarted.is_empty() {
                "-".to_string()
            } else {
                r.restarted.join(", ")
            },
            rss.join(", "),
            r.seconds_to_end,
            rates,
            if r.passed() {
                "pass".to_string()
            } else {
                format!("FAIL: {}", r.problems.join("; "))
            }
        );
    }
    t
}

/// Run `faults` one after another, writing `table.md` and `chaos.json` to `opts.dir`.
pub async fn run_suite(
    faults: &[Fault],
    opts: &ChaosOptions,
    mut progress: impl FnMut(usize, usize, &str),
) -> anyhow::Result<Vec<Row>> {
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("creating {}", opts.dir.display()))?;
    let mut rows = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        progress(i + 1, faults.len(), &f.name());
        rows.push(run_fault(f, opts, i + 1).await?);
    }
    std::fs::write(opts.dir.join("table.md"), table(&rows))?;
    std::fs::write(
        opts.dir.join("chaos.json"),
        serde_json::to_vec_pretty(&rows)?,
    )?;
    Ok(rows)
}
