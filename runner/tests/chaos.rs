//! The short chaos suite, against real stage processes on loopback (`make chaos` runs the full
//! one): kill -9 of each stage in turn mid-run (at most once, then at least once), SIGSTOP of parse for 3 s, a sink 1000x slower
//! than the source for 12 s, a sink that cannot start. Each run must end by itself and say what
//! happened; what it reports lost must be exactly what is missing from the sink's log; every
//! stage must stay under its memory bound; behind the slow sink the source must slow to the
//! sink's pace (see `observatory_runner::chaos` for each fault's checks).
//!
//! And the checks themselves must fail a wrong answer: a summary that hides a loss, a run that
//! ends too late, a source that does not slow down.

use observatory_runner::chaos::{ChaosOptions, Fault, run_suite, table};

/// The short suite's faults `range` (indices into [`Fault::short`]), run as the suite runs them;
/// every row must pass its checks. The suite is split into tests by fault so that a test runner
/// can run them side by side (each run is its own pipeline on its own ports).
async fn short_suite(range: std::ops::Range<usize>) -> Vec<observatory_runner::chaos::Row> {
    let dir = tempfile::tempdir().unwrap();
    let opts = ChaosOptions::new(dir.path()).unwrap();
    let faults = &Fault::short()[range];
    let rows = run_suite(faults, &opts, |n, t, what| {
        eprintln!("chaos {n}/{t}: {what}");
    })
    .await
    .unwrap();
    let text = table(&rows);
    eprintln!("{text}");
    assert!(dir.path().join("table.md").is_file());
    assert_eq!(rows.len(), faults.len());
    for r in &rows {
        assert!(r.passed(), "{}: {:?}\n{text}", r.fault, r.problems);
    }
    rows
}

const STAGES: [&str; 4] = ["source", "parse", "aggregate", "sink"];

/// At most once, a killed stage is named (and the aggregate's kill loses its open window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_short_suite_kills_at_most_once() {
    let rows = short_suite(0..4).await;
    for (kill, stage) in rows.iter().zip(STAGES) {
        assert_eq!(kill.mode, "at_most_once");
        assert!(!kill.conserved, "{kill:?}");
        assert!(
            kill.not_conserved_because
                .as_deref()
                .is_some_and(|w| w.contains(&format!("the {stage} stage was killed by signal 9"))),
            "{:?}",
            kill.not_conserved_because
        );
    }
    assert!(rows[2].lost > 0);
}

/// At least once, each kill is restarted and loses nothing (the log equals the seed's: `passed`
/// checked it window by window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_short_suite_kills_at_least_once() {
    let rows = short_suite(4..8).await;
    for (kill, stage) in rows.iter().zip(STAGES) {
        assert_eq!(kill.mode, "at_least_once");
        assert_eq!(kill.restarted, [stage], "{kill:?}");
        assert!(kill.conserved && kill.lost == 0, "{kill:?}");
        assert_eq!(kill.missing_from_log, Some(0));
    }
}

/// A stopped parse loses nothing; behind a slow sink the source slows by orders of magnitude; a
/// sink that cannot start ends the run (its checks: `passed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_short_suite_stop_slow_sink_and_failed_start() {
    let rows = short_suite(8..11).await;
    assert!(rows[0].fault.starts_with("SIGSTOP"), "{:?}", rows[0].fault);
    assert_eq!(rows[0].lost, 0);
    assert_eq!(rows[0].events_in_log, rows[0].events_emitted);
    let slow = &rows[1];
    assert!(slow.source_rate_eps.unwrap() < 3_000.0, "{slow:?}");
    assert_eq!(rows[2].fault, "sink cannot start");
}

/// The short suite is exactly the faults the three tests above split between them.
#[test]
fn the_short_suite_is_covered_by_the_tests_above() {
    let names: Vec<String> = Fault::short().iter().map(Fault::name).collect();
    assert_eq!(names.len(), 11, "{names:?}");
    assert!(
        names[..8].iter().all(|n| n.starts_with("kill -9")),
        "{names:?}"
    );
    assert!(names[8].starts_with("SIGSTOP") && names[9].starts_with("sink 1000x slower"));
    assert_eq!(names[10], "sink cannot start");
}

#[test]
fn the_checks_fail_wrong_answers() {
    use observatory_runner::chaos::{Observed, check};
    use observatory_runner::summary::{RunSummary, StageFailure};
    // What the seed gives for the kill below: 1000 events, none malformed.
    let seed_gives = |events_in_log| pipeline::reference::Comparison {
        windows_expected: 10,
        windows_in_log: 10,
        events_expected: 1000,
        events_in_log,
        ..Default::default()
    };
    let seen = |events_in_log, duplicated_windows, seconds_to_end, rates| Observed {
        events_in_log,
        duplicated_windows,
        undecodable_records: 0,
        seconds_to_end,
        rates,
        reference: Some(seed_gives(events_in_log)),
    };
    let stats: Vec<(String, pipeline::context::StageStats)> =
        ["source", "parse", "aggregate", "sink"]
            .into_iter()
            .map(|name| {
                let st = pipeline::context::StageStats {
                    stage: name.into(),
                    finished: true,
                    peak_rss_unprofiled_bytes: 20 << 20,
                    ..Default::default()
                };
                (name.to_string(), st)
            })
            .collect();
    let base = RunSummary::from_stats("chaos", &stats, "r");
    let kill = Fault::Kill {
        role: pipeline_plan::Role::Aggregate,
        after: std::time::Duration::from_secs(1),
        delivery: pipeline_plan::Delivery::AtMostOnce,
    };
    let mut s = base.clone();
    s.events_emitted = 1000;
    s.events_persisted = 900;
    s.attribute_failures(
        vec![StageFailure {
            stage: "aggregate".into(),
            how: "killed by signal 9 (SIGKILL)".into(),
            error: None,
            after_seconds: 1.0,
            at_start_up: false,
        }],
        None,
    );
    let kill_plan = kill.plan().unwrap();
    let after_kill = |s: &RunSummary, seen: Observed| check(&kill, &kill_plan, s, &seen);
    // The right answer: 900 in the log, 100 lost, ended 3 s after the kill.
    let right = after_kill(&s, seen(900, 0, 3.0, None));
    assert!(right.passed(), "{:?}", right.problems);
    // A loss the summary does not report: 800 in the log.
    assert!(!after_kill(&s, seen(800, 0, 3.0, None)).passed());
    // A window twice in the log.
    assert!(!after_kill(&s, seen(900, 1, 3.0, None)).passed());
    // Garbage in the log.
    let mut garbage = seen(900, 0, 3.0, None);
    garbage.undecodable_records = 1;
    assert!(!after_kill(&s, garbage).passed());
    // A stage over its memory bound (the aggregate's is 326 MiB with 1 MiB frames).
    let mut fat = s.clone();
    fat.stages[2].rss_bytes = 400 << 20;
    assert!(!after_kill(&fat, seen(900, 0, 3.0, None)).passed());
    // A summary that leaves a stage out.
    let mut partial = s.clone();
    partial.stages.pop();
    assert!(!after_kill(&partial, seen(900, 0, 3.0, None)).passed());
    // Too slow to end.
    assert!(!after_kill(&s, seen(900, 0, 11.0, None)).passed());
    // A killed stage nobody named.
    let mut unnamed = s.clone();
    unnamed.failures.clear();
    assert!(!after_kill(&unnamed, seen(900, 0, 3.0, None)).passed());
    // A log with a window the seed does not give, or one with more events than it gives
    // (a double count hidden by a loss elsewhere).
    let mut extra = seen(900, 0, 3.0, None);
    extra.reference.as_mut().unwrap().extra_windows = 1;
    assert!(!after_kill(&s, extra).passed());
    let mut inflated = seen(900, 0, 3.0, None);
    inflated.reference.as_mut().unwrap().inflated_windows = 1;
    assert!(!after_kill(&s, inflated).passed());
    // A log never compared with the seed.
    let mut unchecked = seen(900, 0, 3.0, None);
    unchecked.reference = None;
    assert!(!after_kill(&s, unchecked).passed());

    // At least once: the killed stage restarted, nothing lost, the log exactly the seed's.
    let alo_kill = Fault::Kill {
        role: pipeline_plan::Role::Aggregate,
        after: std::time::Duration::from_secs(1),
        delivery: pipeline_plan::Delivery::AtLeastOnce,
    };
    let alo_plan = alo_kill.plan().unwrap();
    let mut whole = base.clone();
    whole.events_emitted = 1000;
    whole.events_persisted = 1000;
    whole.restarts = vec![StageFailure {
        stage: "aggregate".into(),
        how: "killed by signal 9 (SIGKILL)".into(),
        error: None,
        after_seconds: 1.0,
        at_start_up: false,
    }];
    let after_alo_kill = |s: &RunSummary, seen: Observed| check(&alo_kill, &alo_plan, s, &seen);
    let right = after_alo_kill(&whole, seen(1000, 0, 9.0, None));
    assert!(right.passed(), "{:?}", right.problems);
    assert_eq!(right.mode, "at_least_once");
    // The at-most-once answer (a loss, counted) is wrong at least once.
    assert!(!after_alo_kill(&s, seen(900, 0, 3.0, None)).passed());
    // A log that is not exactly the seed's: a window with other figures.
    let mut off = seen(1000, 0, 9.0, None);
    off.reference.as_mut().unwrap().differing_windows = 1;
    assert!(!after_alo_kill(&whole, off).passed());
    // A window twice.
    assert!(!after_alo_kill(&whole, seen(1000, 1, 9.0, None)).passed());
    // Not restarted (failed for good), or another stage restarted.
    let mut not_restarted = whole.clone();
    not_restarted.restarts.clear();
    assert!(!after_alo_kill(&not_restarted, seen(1000, 0, 9.0, None)).passed());
    let mut other = whole.clone();
    other.restarts[0].stage = "parse".into();
    assert!(!after_alo_kill(&other, seen(1000, 0, 9.0, None)).passed());
    // A source that kept its pace behind a slow sink.
    let slow = Fault::SlowSink {
        stall: std::time::Duration::from_secs(12),
    };
    let slow_plan = slow.plan().unwrap();
    let mut ok = base.clone();
    ok.events_emitted = 1000;
    ok.lost = 1000;
    let behind_slow_sink = |rates| {
        let mut seen = seen(0, 0, 1.0, Some(rates));
        seen.reference = None;
        check(&slow, &slow_plan, &ok, &seen)
    };
    assert!(behind_slow_sink((500.0, 333.0)).passed());
    assert!(!behind_slow_sink((150_000.0, 333.0)).passed());
}

/// The drain deadline holds under any backlog: with the sink stopped (SIGSTOP) and everything
/// above it full, a drained aggregate gives up when its 30 s run out, counts what it held as
/// abandoned, writes its stats and exits; it used to wait forever, the full queue always
/// winning over the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_holds_behind_a_stopped_sink() {
    use observatory_runner::local::{LocalOptions, LocalRun, find_pipeline_bin};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let mut plan = pipeline_plan::Plan::new("deadline");
    for a in ["source.rate=200000", "aggregate.window_ms=10"] {
        plan.assign(a).unwrap();
    }
    let opts = LocalOptions {
        pipeline_bin: find_pipeline_bin().unwrap(),
        workdir: dir.path().join("run"),
        linger: Duration::ZERO,
    };
    let mut run = LocalRun::start(&plan, &opts).await.unwrap();
    let pid = |role: pipeline_plan::Role| run.stage(role).unwrap().pid() as libc::pid_t;
    let (sink, aggregate) = (
        pid(pipeline_plan::Role::Sink),
        pid(pipeline_plan::Role::Aggregate),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // SAFETY: signals to processes this test started.
    unsafe { libc::kill(sink, libc::SIGSTOP) };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let drained = Instant::now();
    unsafe { libc::kill(aggregate, libc::SIGTERM) };
    let idx = run
        .stages
        .iter()
        .position(|s| s.role == pipeline_plan::Role::Aggregate)
        .unwrap();
    while !run.stages[idx].has_exited() {
        assert!(
            drained.elapsed() < Duration::from_secs(45),
            "the drained aggregate was still running 45 s later, behind a stopped sink"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = drained.elapsed();
    assert!(took >= Duration::from_secs(29), "gave up early: {took:?}");
    assert!(run.stages[idx].status().unwrap().success());
    unsafe { libc::kill(sink, libc::SIGCONT) };
    run.signal(libc::SIGTERM);
    let ends = run.finish(Duration::from_secs(40)).await;
    let agg = ends
        .iter()
        .find(|e| e.role == pipeline_plan::Role::Aggregate)
        .and_then(|e| e.stats.clone())
        .expect("the aggregate wrote its stats");
    assert!(
        agg.dropped.get("abandoned").copied().unwrap_or(0) > 0,
        "what the aggregate held is counted: {:?}",
        agg.dropped
    );
    eprintln!(
        "the aggregate gave up {took:?} after its drain began: {:?}",
        agg.dropped
    );
    for e in &ends {
        if let Some(st) = &e.stats {
            eprintln!(
                "{}: emitted {} received {} sent {} dropped {:?}",
                e.name, st.events_emitted, st.events_received, st.events_sent, st.dropped
            );
        }
    }
}

/// At least once, an interrupt drains the run as at most once does: the source stops taking
/// new events at once (a bounded run's count used to win over the drain: it went on emitting
/// for the 30 s drain deadline and lost its last window), its last batch closes every window,
/// and the log is exactly what the seed gives for what was emitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_an_interrupt_drains_the_run_and_the_log_is_the_seeds() {
    use observatory_runner::local::find_pipeline_bin;
    use observatory_runner::run::{RunConfig, run_local};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let mut plan = pipeline_plan::Plan::new("drain");
    for a in [
        "all.delivery=at_least_once",
        "source.events=5000000",
        "source.rate=100000",
        "source.malformed_rate=0.01",
    ] {
        plan.assign(a).unwrap();
    }
    let cfg = RunConfig::quiet(find_pipeline_bin().unwrap(), dir.path().to_path_buf());
    let (interrupt, interrupts) = tokio::sync::mpsc::unbounded_channel();
    let run_plan = plan.clone();
    let run = tokio::spawn(async move { run_local(&run_plan, &cfg, interrupts).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    interrupt.send(()).unwrap();
    let s = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ends")
        .unwrap()
        .unwrap();
    let c = s
        .log_check
        .clone()
        .expect("the log is checked at least once");
    assert!(c.is_exact(), "{c:?}");
    assert!(s.conserved && s.lost == 0, "{s:?}");
    assert!(
        s.events_emitted < 1_000_000,
        "the source stopped when drained, not at its count: {}",
        s.events_emitted
    );
    assert_eq!(c.events_in_log + c.dead_letters_expected, s.events_emitted);
}

/// At least once, a stage killed again right after its restart (before it has handled an
/// event) is restarted again, and the run still loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_a_stage_killed_twice_in_a_row_is_restarted_twice() {
    use observatory_runner::local::find_pipeline_bin;
    use observatory_runner::run::{RunConfig, run_local};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let mut plan = pipeline_plan::Plan::new("twice");
    for a in [
        "all.delivery=at_least_once",
        "source.events=1500000",
        "source.rate=200000",
    ] {
        plan.assign(a).unwrap();
    }
    let cfg = RunConfig::quiet(find_pipeline_bin().unwrap(), dir.path().to_path_buf());
    let (_interrupt, interrupts) = tokio::sync::mpsc::unbounded_channel();
    let run_plan = plan.clone();
    let run = tokio::spawn(async move { run_local(&run_plan, &cfg, interrupts).await });
    let ready = dir.path().join("run").join("aggregate.ready.json");
    let pid_of = || -> Option<u32> {
        let r: pipeline::stage::ReadyInfo =
            serde_json::from_slice(&std::fs::read(&ready).ok()?).ok()?;
        Some(r.pid)
    };
    let kill = |pid: u32| unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = pid_of().expect("the aggregate is up");
    kill(first);
    // The restarted one, killed as soon as it is ready.
    let second = loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if let Some(p) = pid_of().filter(|p| *p != first) {
            break p;
        }
    };
    kill(second);
    let s = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the run ends")
        .unwrap()
        .unwrap();
    let restarted: Vec<&str> = s.restarts.iter().map(|r| r.stage.as_str()).collect();
    assert_eq!(restarted, ["aggregate", "aggregate"], "{s:?}");
    assert!(s.failures.is_empty(), "{:?}", s.failures);
    let c = s.log_check.clone().unwrap();
    assert!(c.is_exact() && s.conserved && s.lost == 0, "{c:?}");
}
