//! Pure tests of the Experiment: its runs, their Pipelines, validation, the state machine and
//! the verdict. No I/O, no clock: `decide` takes the time.

use super::*;
use crate::experiment::results::queries;
use crate::fixtures::experiment;
use crate::pipeline::crd::PipelineStatus;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn ready_pipeline() -> Pipeline {
    let e = experiment();
    let mut p = run_pipeline(&e, &planned_runs(&e)[0]).unwrap();
    p.status = Some(PipelineStatus {
        summary: "Ready".into(),
        ..Default::default()
    });
    p
}

#[test]
fn runs_interleave_the_sides_and_are_named_after_the_experiment() {
    let e = experiment();
    let runs = planned_runs(&e);
    let names: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| (r.side.as_str(), r.pipeline.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("baseline", "lab-02-batching-b0"),
            ("variant", "lab-02-batching-v0"),
            ("baseline", "lab-02-batching-b1"),
            ("variant", "lab-02-batching-v1"),
            ("baseline", "lab-02-batching-b2"),
            ("variant", "lab-02-batching-v2"),
        ]
    );
    assert!(runs.iter().all(|r| r.phase == PENDING));
}

#[test]
fn a_run_pipeline_carries_its_side_an_unbounded_source_labels_and_its_owner() {
    let mut e = experiment();
    e.spec.pipeline.source.knobs.events = 300_000;
    e.spec.variant.image = Some("student/pipeline:lab02".into());
    let runs = planned_runs(&e);
    let b = run_pipeline(&e, &runs[0]).unwrap();
    let v = run_pipeline(&e, &runs[1]).unwrap();
    assert_eq!(b.spec.source.knobs.batch_size, 4);
    assert_eq!(v.spec.source.knobs.batch_size, 256);
    assert_eq!(b.spec.source.knobs.events, 0, "the window bounds the run");
    assert_eq!(b.spec.source.knobs.duration_seconds, 0.0);
    assert_eq!(b.spec.image, "docker.io/observatory/pipeline:dev");
    assert_eq!(v.spec.image, "student/pipeline:lab02");
    assert_eq!(b.spec.labels["side"], "lab-02-batching-baseline");
    assert_eq!(v.spec.labels["side"], "lab-02-batching-variant");
    assert_eq!(b.spec.labels["experiment"], "lab-02-batching");
    assert_eq!(b.spec.labels["run"], "lab-02-batching-b0");
    // Everything else is the base pipeline's.
    assert_eq!(
        v.spec.parse.as_ref().unwrap().knobs.mode,
        e.spec.pipeline.parse.as_ref().unwrap().knobs.mode
    );
    assert_eq!(b.metadata.namespace.as_deref(), Some("observatory"));
    let owner = &b.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Experiment", "uid-exp", Some(true))
    );
    assert_eq!(
        b.metadata.labels.as_ref().unwrap()["observatory.dev/experiment"],
        "lab-02-batching"
    );
    // The run renders: the Pipeline controller will accept it.
    let mut b = b;
    b.metadata.uid = Some("uid-run".into());
    crate::pipeline::render::render(&b).expect("a run's pipeline renders");
}

#[test]
fn assignments_set_knobs_and_replicas_and_refuse_unknown_ones() {
    let spec = experiment().spec.pipeline;
    let out = with_assignments(
        &spec,
        &["parse.workers=4".into(), "aggregate.replicas=3".into()],
    )
    .unwrap();
    assert_eq!(out.parse.as_ref().unwrap().knobs.workers, 4);
    assert_eq!(out.aggregate.as_ref().unwrap().replicas, 3);
    let err = with_assignments(&spec, &["parse.wrokers=4".into()]).unwrap_err();
    assert!(err.contains("parse.wrokers=4"), "{err}");
    let err = with_assignments(&spec, &["parse.workers=0".into()]).unwrap_err();
    assert!(err.contains("workers"), "{err}");
}

#[test]
fn invalid_experiments_fail_with_a_message_naming_the_field() {
    let mut e = experiment();
    e.spec.variant.set = vec!["source.batch_size=lots".into()];
    let d = decide(&e, &Observed::Absent, &[], at(0));
    assert!(matches!(d.action, Action::Fail(_)));
    assert_eq!(d.status.phase, FAILED);
    assert!(
        d.status.message.contains("spec.variant.set"),
        "{}",
        d.status.message
    );
    let failed = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.reason.as_str()),
        ("True", "InvalidSpec")
    );

    let mut e = experiment();
    e.metadata.name = Some("x".repeat(MAX_NAME + 1));
    assert!(invalid(&e).unwrap().contains("metadata.name"));

    let mut e = experiment();
    e.spec.metric = Metric::LatencyP99Seconds;
    e.spec.min_effect = 1.0;
    assert!(invalid(&e).unwrap().contains("spec.minEffect"));

    assert_eq!(invalid(&experiment()), None);
}

#[test]
fn a_new_experiment_deploys_its_first_run() {
    let e = experiment();
    let d = decide(&e, &Observed::Absent, &[], at(0));
    let Action::Deploy(p) = d.action else {
        panic!("expected a deploy, got {:?}", d.action)
    };
    assert_eq!(p.metadata.name.as_deref(), Some("lab-02-batching-b0"));
    assert_eq!(d.status.phase, RUNNING);
    assert_eq!(d.status.progress, "0/6");
    assert_eq!(d.status.runs[0].phase, DEPLOYING);
    assert_eq!(d.status.runs[0].deployed_at, Some(Time(at(0))));
    assert_eq!(d.status.observed_generation, Some(1));
}

#[test]
fn a_run_waits_for_ready_then_warms_up_then_is_measured_after_its_window() {
    let mut e = experiment();
    e.status = Some(decide(&e, &Observed::Absent, &[], at(0)).status);

    // Not Ready yet: wait.
    let d = decide(&e, &Observed::NotReady("Progressing".into()), &[], at(20));
    assert!(matches!(d.action, Action::Wait(POLL)));
    assert!(d.status.message.contains("waiting"), "{}", d.status.message);
    e.status = Some(d.status);

    // Ready: the window is warm-up (15 s) later, and lasts 60 s.
    let d = decide(&e, &Observed::of(Some(&ready_pipeline())), &[], at(30));
    assert_eq!(d.status.runs[0].phase, MEASURING);
    assert_eq!(d.status.runs[0].window_start, Some(Time(at(45))));
    assert_eq!(d.status.runs[0].window_end, Some(Time(at(105))));
    let Action::Wait(w) = d.action else {
        panic!("{:?}", d.action)
    };
    assert_eq!(w, Duration::from_secs(75) + SCRAPE_MARGIN);
    e.status = Some(d.status);

    // Inside the window: wait for the rest of it and the scrape margin.
    let d = decide(&e, &Observed::Ready, &[], at(100));
    let Action::Wait(w) = d.action else {
        panic!("{:?}", d.action)
    };
    assert_eq!(w, Duration::from_secs(15));
    assert_eq!(
        d.status.runs[0].window_start,
        Some(Time(at(45))),
        "the window holds"
    );

    // Past the window's end and the margin: measure run 0.
    let d = decide(&e, &Observed::Ready, &[], at(115));
    assert!(matches!(d.action, Action::Measure(0)), "{:?}", d.action);
}

#[test]
fn a_run_that_never_gets_ready_fails_the_experiment() {
    let mut e = experiment();
    e.status = Some(decide(&e, &Observed::Absent, &[], at(0)).status);
    let d = decide(&e, &Observed::NotReady("Degraded".into()), &[], at(299));
    assert!(matches!(d.action, Action::Wait(_)));
    let d = decide(&e, &Observed::NotReady("Degraded".into()), &[], at(300));
    let Action::Fail(msg) = d.action else {
        panic!("{:?}", d.action)
    };
    assert!(
        msg.contains("not Ready 300 s") && msg.contains("Degraded"),
        "{msg}"
    );
    assert_eq!(d.status.phase, FAILED);
}

#[test]
fn a_run_that_stops_being_ready_starts_its_window_over() {
    let mut e = experiment();
    e.status = Some(decide(&e, &Observed::Absent, &[], at(0)).status);
    e.status = Some(decide(&e, &Observed::Ready, &[], at(10)).status);
    let d = decide(&e, &Observed::NotReady("Progressing".into()), &[], at(50));
    assert_eq!(d.status.runs[0].window_start, None);
    assert_eq!(d.status.runs[0].phase, DEPLOYING);
    assert_eq!(d.status.runs[0].deployed_at, Some(Time(at(50))));
}

fn measured(e: &Experiment, values: &[(f64, f64)], lost: f64) -> ExperimentStatus {
    let mut status = initial_status(e);
    for (i, (b, v)) in values.iter().enumerate() {
        for (j, value) in [(2 * i, b), (2 * i + 1, v)] {
            let m = Measurement {
                value: *value,
                events: value * 60.0,
                lost: if j == 1 { lost } else { 0.0 }, // only the first variant run loses
            };
            status = record_measurement(status, j, &m, "grafana annotation 7".into());
        }
    }
    status
}

#[test]
fn every_run_measured_means_conclude_and_then_done() {
    let mut e = experiment();
    let status = measured(&e, &[(1e4, 3e4), (1e4, 3e4), (1e4, 3e4)], 0.0);
    assert_eq!(status.progress, "6/6");
    e.status = Some(status);
    assert!(matches!(
        decide(&e, &Observed::Absent, &[], at(0)).action,
        Action::Conclude
    ));
    let done = conclude(&e, e.status.clone().unwrap());
    e.status = Some(done);
    assert!(matches!(
        decide(&e, &Observed::Absent, &[], at(0)).action,
        Action::Done
    ));
}

#[test]
fn the_verdict_passes_a_clear_effect_and_nothing_inside_the_noise() {
    let e = experiment(); // throughput, needs B/A ≥ 2.0
    let s = conclude(
        &e,
        measured(
            &e,
            &[
                (10_000.0, 30_500.0),
                (10_400.0, 29_800.0),
                (9_800.0, 31_000.0),
            ],
            0.0,
        ),
    );
    let r = s.result.as_ref().unwrap();
    assert!(r.passed, "{r:?}");
    assert!(r.low >= 2.0 && r.ratio > 2.9 && r.ratio < 3.2, "{r:?}");
    assert_eq!(r.verdict, "better");
    assert_eq!(r.required, "B/A ≥ 2.00");
    assert_eq!(s.phase, SUCCEEDED);
    assert!(s.message.contains("passed"));
    let complete = s.conditions.iter().find(|c| c.type_ == "Complete").unwrap();
    assert_eq!(complete.status, "True");

    // A real but too-small effect: better, not passed.
    let s = conclude(
        &e,
        measured(
            &e,
            &[
                (10_000.0, 15_000.0),
                (10_100.0, 15_200.0),
                (9_900.0, 14_900.0),
            ],
            0.0,
        ),
    );
    let r = s.result.unwrap();
    assert!(!r.passed && r.verdict == "better", "{r:?}");
    assert!(
        s.message.contains("does not clear B/A ≥ 2.00"),
        "{}",
        s.message
    );

    // No difference.
    let s = conclude(
        &e,
        measured(
            &e,
            &[
                (10_000.0, 10_050.0),
                (10_100.0, 9_950.0),
                (9_900.0, 10_000.0),
            ],
            0.0,
        ),
    );
    let r = s.result.unwrap();
    assert!(!r.passed && r.low < 1.0 && r.high > 1.0, "{r:?}");
}

#[test]
fn lost_events_fail_the_verdict_whatever_the_effect() {
    let e = experiment();
    let s = conclude(
        &e,
        measured(
            &e,
            &[
                (10_000.0, 30_000.0),
                (10_000.0, 30_000.0),
                (10_000.0, 30_000.0),
            ],
            12.0,
        ),
    );
    let r = s.result.unwrap();
    assert!(!r.passed, "{r:?}");
    assert!(s.message.contains("events were lost (12)"), "{}", s.message);
}

#[test]
fn lower_is_better_metrics_need_the_interval_below_one_minus_the_effect() {
    let mut e = experiment();
    e.spec.metric = Metric::LatencyP50Seconds;
    e.spec.min_effect = 0.3;
    let s = conclude(
        &e,
        measured(&e, &[(0.140, 0.046), (0.150, 0.050), (0.138, 0.047)], 0.0),
    );
    let r = s.result.unwrap();
    assert!(r.passed && r.high <= 0.7, "{r:?}");
    assert_eq!(r.required, "B/A ≤ 0.70");
}

#[test]
fn a_changed_spec_starts_the_runs_over() {
    let mut e = experiment();
    let status = measured(&e, &[(1e4, 3e4)], 0.0);
    e.status = Some(status);
    e.metadata.generation = Some(2);
    let d = decide(&e, &Observed::Absent, &[], at(0));
    assert_eq!(d.status.progress, "0/6");
    assert_eq!(d.status.observed_generation, Some(2));
}

#[test]
fn queries_select_the_run_and_its_window() {
    for m in Metric::of_a_window() {
        let q = queries(m, "lab-02-batching-b1", 60).unwrap();
        for text in [&q.value, &q.events, &q.lost] {
            assert!(text.contains("pipeline=\"lab-02-batching-b1\""), "{text}");
            assert!(text.contains("[60s]"), "{text}");
        }
        assert_eq!(Metric::from_name(m.as_str()), Some(m));
    }
    assert!(
        queries(Metric::ThroughputEps, "p", 60)
            .unwrap()
            .value
            .ends_with("/ 60")
    );
    assert!(
        queries(Metric::LatencyP99Seconds, "p", 60)
            .unwrap()
            .value
            .starts_with("histogram_quantile(0.99,")
    );
}

#[test]
fn a_plan_becomes_the_same_pipeline_spec_and_back() {
    let mut plan = pipeline_plan::Plan::new("lab02");
    for a in [
        "source.events=300000",
        "parse.workers=3",
        "aggregate.replicas=2",
    ] {
        plan.assign(a).unwrap();
    }
    let spec = pipeline_spec_of(&plan, "observatory/pipeline:dev").unwrap();
    assert_eq!(spec.image, "observatory/pipeline:dev");
    assert_eq!(spec.source.knobs.events, 300_000);
    assert_eq!(spec.parse.as_ref().unwrap().knobs.workers, 3);
    assert_eq!(spec.aggregate.as_ref().unwrap().replicas, 2);
    assert!(spec.sink.is_some());
    let back = plan_of("lab02", &spec).unwrap();
    assert_eq!(
        back.to_toml(),
        plan.to_toml(),
        "the round trip keeps every knob"
    );
}
