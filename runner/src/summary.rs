//! The summary of one run: what `observatory run --json` prints and `summary.json` holds.
//!
//! Conservation: `events_emitted = events_persisted + dead_lettered + discarded + lost +
//! unaccounted`, where dead letters are invalid input dropped with a reason, discards are
//! deliberate (a `blackhole` sink, a truncated plan), `lost` are counted losses (an upstream's
//! end of stream said more was sent than arrived, a broken downstream connection) and
//! `unaccounted` is whatever no counter explains. `conserved` means nothing is unaccounted
//! and every stage finished its stream.
//!
//! A stage that died (a signal, an error exit) took its counters with it. What it had received
//! and not passed on is then exactly what no survivor explains: the run's residual is
//! attributed to it (`lost_by_stage`), so `lost` holds it and `unaccounted` does not, but the
//! run is not conserved and `not_conserved_because` names the stage. Its last figures seen
//! alive stand in for its final ones (for a dead source, `events_emitted` is then a lower
//! bound); for a dead sink, what it persisted is read from its log.

use observatory_stats::{Metric, Totals};
use pipeline::context::StageStats;
use pipeline_plan::{Plan, Role, StageKnobs};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Version of the summary's JSON shape.
pub const SUMMARY_VERSION: u32 = 1;

/// Per-stage figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageSummary {
    pub name: String,
    /// Peak resident set size of the process before its first CPU profile, bytes: the
    /// pipeline's own footprint (sampled at 10 Hz).
    pub rss_bytes: u64,
    /// Peak RSS including the CPU profiler (pprof-rs holds ~80 MB once it has run).
    pub peak_rss_with_profiler_bytes: u64,
    /// User + system CPU time of the process, seconds.
    pub cpu_seconds: f64,
    /// Heap allocations per event the stage handled (0 when telemetry is off).
    pub allocations_per_event: f64,
    /// Whether the stage counted its allocations (telemetry on).
    #[serde(default = "counted")]
    pub allocations_counted: bool,
    pub events_in: u64,
    pub events_out: u64,
    pub allocator: String,
}

fn counted() -> bool {
    true
}

/// A stage that did not finish its stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageFailure {
    pub stage: String,
    /// How it ended: `killed by signal 9 (SIGKILL)`, `exited with code 2`.
    pub how: String,
    /// The error it printed, if any (`sink.dir: cannot create /proc/nope: ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds after the run started.
    pub after_seconds: f64,
    /// Whether it died before its data port took any traffic (at start-up).
    pub at_start_up: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub summary_version: u32,
    pub pipeline: String,
    pub events_emitted: u64,
    pub events_persisted: u64,
    pub dead_lettered: u64,
    pub discarded: u64,
    pub lost: u64,
    pub unaccounted: i64,
    pub conserved: bool,
    /// Events emitted per second of the run.
    pub throughput_eps: f64,
    /// End-to-end latency percentiles (sink; 0 without a sink).
    pub latency_p50_seconds: f64,
    pub latency_p99_seconds: f64,
    /// From the source starting to the last stage finishing its stream.
    pub duration_seconds: f64,
    /// Drops of every stage, by reason.
    pub drops: BTreeMap<String, u64>,
    /// Losses by the stage where they happened (counted ones, and what a dead stage held).
    #[serde(default)]
    pub lost_by_stage: BTreeMap<String, u64>,
    /// Stages that did not finish their stream: died, failed, or were killed.
    #[serde(default)]
    pub failures: Vec<StageFailure>,
    /// Why the run is not conserved, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_conserved_because: Option<String>,
    /// Stages that died and were restarted (`--restart on-failure`): the run went on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<StageFailure>,
    /// At least once: the sink's log compared with what the seed gives, window by window (a
    /// restarted stage's counters start again from zero, so the log is the account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_check: Option<pipeline::reference::Comparison>,
    pub stages: Vec<StageSummary>,
    /// Where the report (this summary, flamegraphs, logs) was written.
    pub report_dir: String,
}

impl RunSummary {
    /// The run's totals, which the catalogue's run metrics are computed from
    /// ([`observatory_stats::Metric::value`]): every stage's CPU and allocations, the largest
    /// stage's RSS (before profiling), over the events the source emitted in the run.
    pub fn totals(&self) -> Totals {
        Totals {
            seconds: self.duration_seconds,
            events_emitted: self.events_emitted as f64,
            events_persisted: self.events_persisted as f64,
            cpu_seconds: self.stages.iter().map(|st| st.cpu_seconds).sum(),
            allocations: self
                .stages
                .iter()
                .map(|st| st.allocations_per_event * st.events_in as f64)
                .sum(),
            max_stage_rss_bytes: self.stages.iter().map(|st| st.rss_bytes).max().unwrap_or(0)
                as f64,
            latency_p50_seconds: self.latency_p50_seconds,
            latency_p99_seconds: self.latency_p99_seconds,
        }
    }

    /// Combine the final stats of the stage processes, by name, in data-flow order (the first
    /// is the source).
    pub fn from_stats(pipeline: &str, named: &[(String, StageStats)], report_dir: &str) -> Self {
        let stats: Vec<&StageStats> = named.iter().map(|(_, s)| s).collect();
        let source = stats.first().copied();
        let sink = stats.iter().copied().find(|s| s.stage == "sink");
        let emitted = source.map_or(0, |s| s.events_emitted);
        let persisted = sink.map_or(0, |s| s.events_persisted);
        // Counters a peer could have inflated never wrap: sums saturate, the balance is
        // taken in i128 and clamped.
        let total =
            |f: fn(&StageStats) -> u64| stats.iter().fold(0u64, |a, s| a.saturating_add(f(s)));
        let dead = total(|s| s.dead_lettered);
        let discarded = total(|s| s.discarded);
        let lost = total(|s| s.lost);
        let balance = i128::from(emitted)
            - i128::from(persisted)
            - i128::from(dead)
            - i128::from(discarded)
            - i128::from(lost);
        let unaccounted = balance.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        let mut drops = BTreeMap::new();
        let mut lost_by_stage = BTreeMap::new();
        for (name, s) in named {
            for (reason, n) in &s.dropped {
                let e = drops.entry(reason.clone()).or_insert(0u64);
                *e = e.saturating_add(*n);
            }
            if s.lost > 0 {
                lost_by_stage.insert(name.clone(), s.lost);
            }
        }
        let started = source.map_or(0, |s| s.started_unix_ns);
        let finished = stats.iter().map(|s| s.finished_unix_ns).max().unwrap_or(0);
        let duration = finished.saturating_sub(started) as f64 / 1e9;
        let latency = sink.and_then(|s| s.end_to_end_latency_us);
        let stages = named
            .iter()
            .map(|(name, s)| {
                let events_in = if s.stage == "source" {
                    s.events_emitted
                } else {
                    s.events_received
                };
                StageSummary {
                    name: name.clone(),
                    rss_bytes: s.peak_rss_unprofiled_bytes,
                    peak_rss_with_profiler_bytes: s.peak_rss_bytes,
                    cpu_seconds: s.cpu_seconds,
                    allocations_per_event: if events_in > 0 {
                        s.allocations as f64 / events_in as f64
                    } else {
                        0.0
                    },
                    allocations_counted: s.telemetry,
                    events_in,
                    events_out: s.events_sent,
                    allocator: s.allocator.clone(),
                }
            })
            .collect();
        RunSummary {
            summary_version: SUMMARY_VERSION,
            pipeline: pipeline.to_string(),
            events_emitted: emitted,
            events_persisted: persisted,
            dead_lettered: dead,
            discarded,
            lost,
            unaccounted,
            conserved: unaccounted == 0 && stats.iter().all(|s| s.finished),
            throughput_eps: Metric::ThroughputEps
                .value(&Totals {
                    seconds: duration,
                    events_emitted: emitted as f64,
                    ..Totals::default()
                })
                .unwrap_or(0.0),
            latency_p50_seconds: latency.map_or(0.0, |l| l.p50 as f64 / 1e6),
            latency_p99_seconds: latency.map_or(0.0, |l| l.p99 as f64 / 1e6),
            duration_seconds: duration,
            drops,
            lost_by_stage,
            failures: Vec::new(),
            restarts: Vec::new(),
            log_check: None,
            not_conserved_because: (unaccounted != 0).then(|| {
                format!("{unaccounted} events are unaccounted for (no counter explains them)")
            }),
            stages,
            report_dir: report_dir.to_string(),
        }
    }

    /// At least once: take the account from the sink's log, compared window by window with
    /// what the first `events_emitted` events of the seed give. Exact (each window once, every
    /// figure equal) and no stage failed for good: conserved, nothing lost, the dead letters
    /// those the seed makes. Otherwise the difference is the loss and the reason says what.
    pub fn check_log_against_seed(&mut self, plan: &Plan, log_dir: &std::path::Path) {
        let (Some(StageKnobs::Source(src)), Some(StageKnobs::Aggregate(agg))) =
            (plan.knobs(Role::Source), plan.knobs(Role::Aggregate))
        else {
            return;
        };
        let c = match pipeline::reference::check_log(
            src,
            agg.window_ms,
            self.events_emitted,
            log_dir,
        ) {
            Ok(c) => c,
            Err(e) => {
                self.conserved = false;
                self.not_conserved_because = Some(format!("the sink's log cannot be read: {e}"));
                return;
            }
        };
        self.events_persisted = c.events_in_log;
        if self.failures.is_empty() {
            self.dead_lettered = c.dead_letters_expected;
            let explained = self.events_persisted + self.dead_lettered + self.discarded;
            self.lost = self.events_emitted.saturating_sub(explained);
            self.unaccounted = 0;
            self.conserved = c.is_exact() && self.lost == 0;
            self.not_conserved_because = c.problem();
        } else if let Some(problem) = c.problem() {
            let why = self.not_conserved_because.take().unwrap_or_default();
            self.not_conserved_because = Some(format!("{why}; {problem}"));
        }
        self.log_check = Some(c);
    }

    /// Account for stages that died: the residual (what no survivor explains) is what they
    /// held, attributed to the first of them in data-flow order; `persisted_in_log` (read from
    /// the log of a dead sink) replaces the sink's last figure seen alive.
    pub fn attribute_failures(
        &mut self,
        failures: Vec<StageFailure>,
        persisted_in_log: Option<u64>,
    ) {
        if failures.is_empty() {
            return;
        }
        if let Some(p) = persisted_in_log {
            self.events_persisted = p;
        }
        let explained = self.events_persisted + self.dead_lettered + self.discarded + self.lost;
        // A dead source's last count seen can be behind what its downstream received.
        self.events_emitted = self.events_emitted.max(explained);
        let residual = self.events_emitted - explained;
        let first = &failures[0];
        if residual > 0 {
            *self.lost_by_stage.entry(first.stage.clone()).or_insert(0) += residual;
            self.lost += residual;
        }
        self.unaccounted = 0;
        self.conserved = false;
        let names: Vec<String> = failures
            .iter()
            .map(|f| {
                format!(
                    "the {} stage {}{}{}",
                    f.stage,
                    crate::local::with_verb(&f.how),
                    if f.at_start_up { " at start-up" } else { "" },
                    f.error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        self.not_conserved_because = Some(if residual > 0 {
            format!(
                "{}; {} events it held (received, not passed on) were lost with it",
                names.join(", "),
                group(residual)
            )
        } else {
            names.join(", ")
        });
        self.failures = failures;
    }

    /// The human-readable summary.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "Pipeline `{}`: {} events in {:.2} s = {}/s",
            self.pipeline,
            group(self.events_emitted),
            self.duration_seconds,
            si(self.throughput_eps)
        );
        let _ = writeln!(
            t,
            "conservation: emitted {} = persisted {} + dead-lettered {} + discarded {} + lost {}{}  {}",
            group(self.events_emitted),
            group(self.events_persisted),
            group(self.dead_lettered),
            group(self.discarded),
            group(self.lost),
            if self.unaccounted != 0 {
                format!(" + UNACCOUNTED {}", self.unaccounted)
            } else {
                String::new()
            },
            if self.conserved {
                "(conserved)"
            } else {
                "(NOT conserved)"
            }
        );
        let _ = writeln!(
            t,
            "end-to-end latency: p50 {}  p99 {}",
            duration(self.latency_p50_seconds),
            duration(self.latency_p99_seconds)
        );
        if let Some(why) = &self.not_conserved_because {
            let _ = writeln!(t, "NOT conserved: {why}");
        }
        for r in &self.restarts {
            let _ = writeln!(
                t,
                "restarted: the {} stage {} after {:.1} s",
                r.stage,
                crate::local::with_verb(&r.how),
                r.after_seconds
            );
        }
        if let Some(c) = &self.log_check {
            let _ = writeln!(
                t,
                "log check (at least once): {} of {} windows, {} of {} events, {} duplicated: {}",
                group(c.windows_in_log),
                group(c.windows_expected),
                group(c.events_in_log),
                group(c.events_expected),
                c.duplicated_windows,
                if c.is_exact() {
                    "exactly what the seed gives"
                } else {
                    "NOT what the seed gives"
                }
            );
        }
        for (title, counts) in [
            ("lost by stage", &self.lost_by_stage),
            ("drops", &self.drops),
        ] {
            if !counts.is_empty() {
                let parts: Vec<String> = counts
                    .iter()
                    .map(|(r, n)| format!("{r} {}", group(*n)))
                    .collect();
                let _ = writeln!(t, "{title}: {}", parts.join(", "));
            }
        }
        let _ = writeln!(
            t,
            "\n{:<10} {:>12} {:>12} {:>9} {:>12} {:>10}",
            "stage", "events in", "events out", "cpu s", "peak RSS", "allocs/ev"
        );
        for s in &self.stages {
            let _ = writeln!(
                t,
                "{:<10} {:>12} {:>12} {:>9.2} {:>9.1} MiB {:>10.3}",
                s.name,
                group(s.events_in),
                group(s.events_out),
                s.cpu_seconds,
                s.rss_bytes as f64 / (1 << 20) as f64,
                s.allocations_per_event
            );
        }
        t
    }
}

/// 1234567 -> "1,234,567".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 1.45e6 -> "1.45 M".
pub fn si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Seconds in a readable unit.
pub fn duration(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(stats: &[&StageStats]) -> Vec<(String, StageStats)> {
        stats
            .iter()
            .map(|s| (s.stage.clone(), (*s).clone()))
            .collect()
    }

    fn stage(name: &str) -> StageStats {
        StageStats {
            stage: name.into(),
            finished: true,
            ..Default::default()
        }
    }

    #[test]
    fn conservation_is_computed_from_every_stage() {
        let mut src = stage("source");
        src.events_emitted = 1000;
        src.started_unix_ns = 1_000_000_000;
        src.finished_unix_ns = 1_500_000_000;
        src.allocations = 50;
        let mut parse = stage("parse");
        parse.events_received = 1000;
        parse.dead_lettered = 10;
        parse.dropped.insert("bad_json".into(), 10);
        let mut sink = stage("sink");
        sink.events_persisted = 985;
        sink.lost = 5;
        sink.dropped.insert("lost_in_transit".into(), 5);
        sink.finished_unix_ns = 3_000_000_000;
        let s = RunSummary::from_stats("p", &named(&[&src, &parse, &sink]), "r");
        assert_eq!((s.dead_lettered, s.lost, s.unaccounted), (10, 5, 0));
        assert!(s.conserved);
        assert_eq!(s.duration_seconds, 2.0);
        assert_eq!(s.throughput_eps, 500.0);
        assert_eq!(s.stages[0].allocations_per_event, 0.05);
        assert_eq!(s.drops.len(), 2);

        sink.events_persisted = 980;
        let s = RunSummary::from_stats("p", &named(&[&src, &parse, &sink]), "r");
        assert_eq!(s.unaccounted, 5);
        assert!(!s.conserved);
        assert!(s.to_text().contains("UNACCOUNTED 5"));

        sink.events_persisted = 985;
        parse.finished = false;
        assert!(!RunSummary::from_stats("p", &named(&[&src, &parse, &sink]), "r").conserved);
    }

    #[test]
    fn number_formatting() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(si(1_450_000.0), "1.45 M");
        assert_eq!(duration(0.0274), "27.4 ms");
    }
}
