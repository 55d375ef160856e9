//! The metric catalogue: every metric the observatory compares, defined once.
//!
//! Each [`Metric`] has its name (the one in lab specs, `ab.json`, sample files and the
//! Experiment's `spec.metric`), its unit, which way is better, a one-line definition and how it
//! is computed. A metric of a run is a [`Formula`] over a run's [`Totals`]; the local A/B
//! engine and the lab runner evaluate it with [`Metric::value`] on the totals of a whole local
//! run, and the operator asks Prometheus for [`Metric::promql`], which is built from the same
//! formula and the PromQL of each total ([`Total::promql`]) over a run's measurement window.
//! A test (`bench/tests/catalogue.rs`) feeds one run's figures to both and checks that they
//! agree, through a real Prometheus engine (`promtool`).
//!
//! `delivered_fraction` is a run metric measured on whole runs only (see
//! [`Metric::of_a_window`]). The other metrics come from one process on the student's machine (instruction counts of a
//! stage's kernel under callgrind, a kernel's events per second, criterion's time per
//! iteration) and have no formula: the cluster cannot answer them.

use crate::Better;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A metric the observatory compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    ThroughputEps,
    LatencyP50Seconds,
    LatencyP99Seconds,
    CpuSecondsPerMillion,
    MaxStageRssBytes,
    AllocationsPerEvent,
    DeliveredFraction,
    InstructionsPerEvent,
    KernelEps,
    TimePerIteration,
}

/// A total of a run (or of a measurement window): what the run metrics are computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Total {
    /// The run's duration (or the window's length), seconds.
    Seconds,
    /// Events the source emitted.
    EventsEmitted,
    /// Events inside the window results the sink persisted.
    EventsPersisted,
    /// CPU seconds of every stage process together.
    CpuSeconds,
    /// Heap allocations of every stage process together.
    Allocations,
    /// The largest resident set of any one stage process, bytes.
    MaxStageRssBytes,
    /// Median end-to-end latency at the sink (newest event of a window leaving the source to
    /// its result persisted), seconds.
    LatencyP50Seconds,
    /// 99th percentile of the same, seconds.
    LatencyP99Seconds,
}

/// How a run metric is computed from the run's totals.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Formula {
    /// The total itself.
    Total(Total),
    /// The total per second of the run.
    PerSecond(Total),
    /// The total per event emitted by the source, times `scale`.
    PerEvent { total: Total, scale: f64 },
}

/// A run's totals (the whole local run, or one measurement window on the cluster).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub seconds: f64,
    pub events_emitted: f64,
    pub events_persisted: f64,
    pub cpu_seconds: f64,
    pub allocations: f64,
    pub max_stage_rss_bytes: f64,
    pub latency_p50_seconds: f64,
    pub latency_p99_seconds: f64,
}

impl Totals {
    pub fn get(&self, t: Total) -> f64 {
        match t {
            Total::Seconds => self.seconds,
            Total::EventsEmitted => self.events_emitted,
            Total::EventsPersisted => self.events_persisted,
            Total::CpuSeconds => self.cpu_seconds,
            Total::Allocations => self.allocations,
            Total::MaxStageRssBytes => self.max_stage_rss_bytes,
            Total::LatencyP50Seconds => self.latency_p50_seconds,
            Total::LatencyP99Seconds => self.latency_p99_seconds,
        }
    }
}

impl Total {
    /// The PromQL of this total over the `window_seconds` before the evaluation time, for the
    /// pipeline named `pipeline` (every series of a stage carries `pipeline="<name>"` and
    /// `stage="<role>"`); `None` for [`Total::Seconds`], which is the window itself.
    pub fn promql(self, pipeline: &str, window_seconds: u32) -> Option<String> {
        let sel = |extra: &str| format!("{{pipeline=\"{pipeline}\"{extra}}}");
        let w = format!("[{window_seconds}s]");
        let increase = |name: &str, extra: &str| format!("sum(increase({name}{}{w}))", sel(extra));
        let latency = |q: f64| {
            format!(
                "histogram_quantile({q}, sum by (le) (increase(pipeline_end_to_end_latency_seconds_bucket{}{w})))",
                sel("")
            )
        };
        Some(match self {
            Total::Seconds => return None,
            Total::EventsEmitted => increase("pipeline_events_emitted_total", ",stage=\"source\""),
            Total::EventsPersisted => {
                increase("pipeline_events_persisted_total", ",stage=\"sink\"")
            }
            Total::CpuSeconds => increase("process_cpu_seconds_total", ""),
            Total::Allocations => increase("pipeline_allocations_total", ""),
            Total::MaxStageRssBytes => format!(
                "max(max_over_time(process_resident_memory_bytes{}{w}))",
                sel("")
            ),
            Total::LatencyP50Seconds => latency(0.5),
            Total::LatencyP99Seconds => latency(0.99),
        })
    }
}

impl Metric {
    pub const ALL: [Metric; 10] = [
        Metric::ThroughputEps,
        Metric::LatencyP50Seconds,
        Metric::LatencyP99Seconds,
        Metric::CpuSecondsPerMillion,
        Metric::MaxStageRssBytes,
        Metric::AllocationsPerEvent,
        Metric::DeliveredFraction,
        Metric::InstructionsPerEvent,
        Metric::KernelEps,
        Metric::TimePerIteration,
    ];

    /// The metrics of a run (those with a [`Formula`]): what the A/B engine compares.
    pub fn of_a_run() -> impl Iterator<Item = Metric> {
        Metric::ALL.into_iter().filter(|m| m.formula().is_some())
    }

    /// The run metrics the cluster measures over a window of a running pipeline (an
    /// Experiment's `spec.metric`): every run metric but `delivered_fraction`, whose events
    /// still inside open aggregate windows at the window's end are not persisted yet, so a
    /// window would understate it; it is measured on whole runs only.
    pub fn of_a_window() -> impl Iterator<Item = Metric> {
        Metric::of_a_run().filter(|m| *m != Metric::DeliveredFraction)
    }

    /// Whether the cluster measures this metric over a window ([`Metric::of_a_window`]).
    pub fn windowed(self) -> bool {
        Metric::of_a_window().any(|m| m == self)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::ThroughputEps => "throughput_eps",
            Metric::LatencyP50Seconds => "latency_p50_seconds",
            Metric::LatencyP99Seconds => "latency_p99_seconds",
            Metric::CpuSecondsPerMillion => "cpu_seconds_per_million",
            Metric::MaxStageRssBytes => "max_stage_rss_bytes",
            Metric::AllocationsPerEvent => "allocations_per_event",
            Metric::DeliveredFraction => "delivered_fraction",
            Metric::InstructionsPerEvent => "instructions_per_event",
            Metric::KernelEps => "kernel_eps",
            Metric::TimePerIteration => "time_per_iteration",
        }
    }

    /// The metric of this name.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == name)
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::ThroughputEps | Metric::KernelEps => "events/s",
            Metric::LatencyP50Seconds | Metric::LatencyP99Seconds => "s",
            Metric::CpuSecondsPerMillion | Metric::TimePerIteration => "s",
            Metric::MaxStageRssBytes => "bytes",
            Metric::AllocationsPerEvent => "allocations",
            Metric::DeliveredFraction => "",
            Metric::InstructionsPerEvent => "instructions",
        }
    }

    pub fn better(self) -> Better {
        match self {
            Metric::ThroughputEps | Metric::DeliveredFraction | Metric::KernelEps => Better::Higher,
            _ => Better::Lower,
        }
    }

    /// One line: what the metric is.
    pub fn definition(self) -> &'static str {
        match self {
            Metric::ThroughputEps => "events the source emitted per second of the run",
            Metric::LatencyP50Seconds => {
                "median end-to-end latency: the newest event of a window leaving the source to the window's result persisted by the sink"
            }
            Metric::LatencyP99Seconds => "99th percentile of the same end-to-end latency",
            Metric::CpuSecondsPerMillion => {
                "CPU seconds of all stage processes per million events the source emitted"
            }
            Metric::MaxStageRssBytes => "the largest resident set of any one stage process",
            Metric::AllocationsPerEvent => {
                "heap allocations of all stage processes per event the source emitted"
            }
            Metric::DeliveredFraction => {
                "events persisted in window results per event the source emitted"
            }
            Metric::InstructionsPerEvent => {
                "instructions (callgrind) of one stage's kernel per event, on a fixed input"
            }
            Metric::KernelEps => "events per second through one stage's kernel, in one process",
            Metric::TimePerIteration => "criterion's time per iteration of the lab's benchmark",
        }
    }

    /// How a run metric is computed from a run's totals (`None` for the one-process metrics).
    pub fn formula(self) -> Option<Formula> {
        Some(match self {
            Metric::ThroughputEps => Formula::PerSecond(Total::EventsEmitted),
            Metric::LatencyP50Seconds => Formula::Total(Total::LatencyP50Seconds),
            Metric::LatencyP99Seconds => Formula::Total(Total::LatencyP99Seconds),
            Metric::CpuSecondsPerMillion => Formula::PerEvent {
                total: Total::CpuSeconds,
                scale: 1e6,
            },
            Metric::MaxStageRssBytes => Formula::Total(Total::MaxStageRssBytes),
            Metric::AllocationsPerEvent => Formula::PerEvent {
                total: Total::Allocations,
                scale: 1.0,
            },
            Metric::DeliveredFraction => Formula::PerEvent {
                total: Total::EventsPersisted,
                scale: 1.0,
            },
            Metric::InstructionsPerEvent | Metric::KernelEps | Metric::TimePerIteration => {
                return None;
            }
        })
    }

    /// Samples `a` and `b` of this metric compared ([`crate::compare`] under its name, unit
    /// and direction).
    pub fn compare(self, a: &[f64], b: &[f64], opts: &crate::Options) -> crate::Comparison {
        crate::compare(self.as_str(), self.unit(), self.better(), a, b, opts)
    }

    /// The metric's value for these totals: `None` for a metric without a formula, or when
    /// its denominator (events emitted, seconds) is 0.
    pub fn value(self, t: &Totals) -> Option<f64> {
        let per = |x: f64, d: f64| (d > 0.0).then(|| x / d);
        match self.formula()? {
            Formula::Total(total) => Some(t.get(total)),
            Formula::PerSecond(total) => per(t.get(total), t.seconds),
            Formula::PerEvent { total, scale } => {
                per(t.get(total), t.events_emitted).map(|v| v * scale)
            }
        }
    }

    /// The PromQL of the metric over the `window_seconds` before the evaluation time, for the
    /// pipeline `pipeline`: the formula over each total's PromQL. `None` for a metric the
    /// cluster does not measure over a window.
    pub fn promql(self, pipeline: &str, window_seconds: u32) -> Option<String> {
        if !self.windowed() {
            return None;
        }
        let q = |t: Total| t.promql(pipeline, window_seconds);
        match self.formula()? {
            Formula::Total(total) => q(total),
            Formula::PerSecond(total) => Some(format!("{} / {window_seconds}", q(total)?)),
            Formula::PerEvent { total, scale } => {
                let ratio = format!("{} / {}", q(total)?, q(Total::EventsEmitted)?);
                Some(if scale == 1.0 {
                    ratio
                } else {
                    format!("{ratio} * {scale:e}")
                })
            }
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
            format!("`{s}` is not a metric (one of: {})", names.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_its_serde_name_and_parses_back() {
        for m in Metric::ALL {
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.as_str())
            );
            assert_eq!(m.as_str().parse::<Metric>(), Ok(m));
            assert!(!m.definition().is_empty());
        }
        assert!(
            "throughput"
                .parse::<Metric>()
                .unwrap_err()
                .contains("kernel_eps")
        );
    }

    #[test]
    fn run_metrics_are_per_event_emitted_and_undefined_without_events() {
        let t = Totals {
            seconds: 10.0,
            events_emitted: 1000.0,
            events_persisted: 990.0,
            cpu_seconds: 2.0,
            allocations: 6070.0,
            max_stage_rss_bytes: 2e7,
            latency_p50_seconds: 0.02,
            latency_p99_seconds: 0.07,
        };
        let v = |m: Metric| m.value(&t).unwrap();
        assert_eq!(v(Metric::ThroughputEps), 100.0);
        assert_eq!(v(Metric::AllocationsPerEvent), 6.07);
        assert_eq!(v(Metric::CpuSecondsPerMillion), 2000.0);
        assert_eq!(v(Metric::DeliveredFraction), 0.99);
        assert_eq!(v(Metric::MaxStageRssBytes), 2e7);
        assert_eq!(Metric::InstructionsPerEvent.value(&t), None);
        let empty = Totals::default();
        assert_eq!(Metric::AllocationsPerEvent.value(&empty), None);
        assert_eq!(Metric::ThroughputEps.value(&empty), None);
        assert_eq!(Metric::of_a_run().count(), 7);
    }

    #[test]
    fn the_promql_is_the_formula_over_every_stage_of_the_run() {
        let q = |m: Metric| m.promql("p", 60).unwrap();
        assert!(q(Metric::ThroughputEps).ends_with("/ 60"));
        // Allocations of every stage (no stage selector), per event the source emitted.
        assert_eq!(
            q(Metric::AllocationsPerEvent),
            "sum(increase(pipeline_allocations_total{pipeline=\"p\"}[60s])) / sum(increase(pipeline_events_emitted_total{pipeline=\"p\",stage=\"source\"}[60s]))"
        );
        assert!(q(Metric::CpuSecondsPerMillion).ends_with(" * 1e6"));
        assert!(Metric::KernelEps.promql("p", 60).is_none());
        assert!(Metric::DeliveredFraction.promql("p", 60).is_none());
        assert_eq!(Metric::of_a_window().count(), 6);
    }
}
