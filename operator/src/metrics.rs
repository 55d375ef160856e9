//! The operator's own metrics: reconcile runs, failures by error kind, reconcile duration, and
//! the process's CPU and memory.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::time::Instant;

pub struct Metrics {
    pub registry: Registry,
    pub reconciliations: IntCounter,
    pub failures: IntCounterVec,
    pub duration: Histogram,
    /// 1 while this replica holds the leader lease.
    pub leader: IntGauge,
    /// Experiment runs measured.
    pub experiment_runs: IntCounter,
    /// Experiments finished, by outcome (`passed`, `not_passed`, `failed`).
    pub experiments: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciliations = IntCounter::new(
            "observatory_operator_reconciliations_total",
            "Reconcile runs of Pipelines and Experiments.",
        )
        .expect("valid metric");
        let failures = IntCounterVec::new(
            Opts::new(
                "observatory_operator_reconcile_failures_total",
                "Reconcile runs that failed, by error kind (api_<HTTP code>, kube_client, ...).",
            ),
            &["error"],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "observatory_operator_reconcile_duration_seconds",
                "Time to reconcile one Pipeline or Experiment.",
            )
            .buckets(vec![
                // A real API server answers in tens to hundreds of milliseconds a request, and
                // a reconcile makes a dozen or more (p50 0.26 s seen on one; p99 above 5 s).
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ]),
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "observatory_operator_leader",
            "1 while this operator replica holds the leader lease and reconciles.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(leader.clone()))
            .expect("registered once");
        let experiment_runs = IntCounter::new(
            "observatory_operator_experiment_runs_measured_total",
            "Experiment runs whose window was measured through Prometheus.",
        )
        .expect("valid metric");
        let experiments = IntCounterVec::new(
            Opts::new(
                "observatory_operator_experiments_finished_total",
                "Experiments finished, by outcome: passed, not_passed (measured, effect too small or events lost), failed (not measured).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        for outcome in ["passed", "not_passed", "failed"] {
            experiments.with_label_values(&[outcome]);
        }
        registry
            .register(Box::new(experiment_runs.clone()))
            .expect("registered once");
        registry
            .register(Box::new(experiments.clone()))
            .expect("registered once");
        registry
            .register(Box::new(reconciliations.clone()))
            .expect("registered once");
        registry
            .register(Box::new(failures.clone()))
            .expect("registered once");
        // The common kinds exist from the start, at 0, so dashboards see series, not gaps.
        for kind in ["api_409", "api_500", "kube_client"] {
            failures.with_label_values(&[kind]);
        }
        registry
            .register(Box::new(duration.clone()))
            .expect("registered once");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                observatory_telemetry::process::ProcessMetrics::for_self(),
            ))
            .expect("registered once");
        Metrics {
            registry,
            reconciliations,
            failures,
            duration,
            leader,
            experiment_runs,
            experiments,
        }
    }

    /// Count a reconcile run; its duration is observed when the timer drops.
    pub fn start_reconcile(&self) -> ReconcileTimer<'_> {
        self.reconciliations.inc();
        ReconcileTimer {
            histogram: &self.duration,
            start: Instant::now(),
        }
    }

    /// Count a failure of the given kind.
    pub fn failure(&self, kind: &str) {
        self.failures.with_label_values(&[kind]).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)
        {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }
}

pub struct ReconcileTimer<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}
