//! `observatory bench run`: run the criterion suite of the hot paths (`cargo bench`, in the
//! source tree) and summarise what criterion wrote: time per iteration with its interval, and
//! the throughput in events/s or MB/s. The samples (time per iteration) go into a sample file
//! for `observatory bench compare`.

use crate::samples::{SampleSet, Series};
use crate::stats::Better;
use anyhow::{Context, bail};
use serde::Deserialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// One benchmark's result.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    pub id: String,
    /// Mean time per iteration, ns, and its 95% interval.
    pub mean_ns: f64,
    pub low_ns: f64,
    pub high_ns: f64,
    /// Elements or bytes per iteration.
    pub throughput: Option<(String, f64)>,
    /// Time per iteration of each sample, ns.
    pub samples_ns: Vec<f64>,
}

#[derive(Deserialize)]
struct Interval {
    lower_bound: f64,
    upper_bound: f64,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
    confidence_interval: Interval,
}

#[derive(Deserialize)]
struct Estimates {
    mean: Estimate,
}

#[derive(Deserialize)]
struct Benchmark {
    full_id: String,
    #[serde(default)]
    throughput: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Sample {
    iters: Vec<f64>,
    times: Vec<f64>,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "new") && p.join("benchmark.json").is_file() {
                out.push(p);
            } else {
                walk(&p, out);
            }
        }
    }
}

/// Read every result under `criterion_dir` written after `since`.
pub fn read_results(criterion_dir: &Path, since: SystemTime) -> anyhow::Result<Vec<BenchResult>> {
    let mut dirs = Vec::new();
    walk(criterion_dir, &mut dirs);
    let mut out = Vec::new();
    for d in dirs {
        let fresh = std::fs::metadata(d.join("estimates.json"))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        if !fresh {
            continue;
        }
        let read = |f: &str| {
            std::fs::read(d.join(f)).with_context(|| format!("reading {}", d.join(f).display()))
        };
        let b: Benchmark = serde_json::from_slice(&read("benchmark.json")?)?;
        let e: Estimates = serde_json::from_slice(&read("estimates.json")?)?;
        let s: Sample = serde_json::from_slice(&read("sample.json")?)?;
        let throughput = b.throughput.as_ref().and_then(|t| {
            let (kind, n) = t.as_object()?.iter().next()?;
            Some((kind.clone(), n.as_f64()?))
        });
        out.push(BenchResult {
            id: b.full_id,
            mean_ns: e.mean.point_estimate,
            low_ns: e.mean.confidence_interval.lower_bound,
            high_ns: e.mean.confidence_interval.upper_bound,
            throughput,
            samples_ns: s.iters.iter().zip(&s.times).map(|(i, t)| t / i).collect(),
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Run `cargo bench` for the hot-path suite in the workspace at `root`.
pub fn run_suite(root: &Path, filter: Option<&str>) -> anyhow::Result<Vec<BenchResult>> {
    let since = SystemTime::now();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root).args([
        "bench",
        "-p",
        "observatory-bench",
        "--bench",
        "hot_paths",
        "--",
    ]);
    if let Some(f) = filter {
        cmd.arg(f);
    }
    let status = cmd
        .status()
        .context("running cargo bench (needs the source tree and cargo)")?;
    if !status.success() {
        bail!("cargo bench failed ({status})");
    }
    let results = read_results(&root.join("target/criterion"), since)?;
    if results.is_empty() {
        bail!("no benchmark ran (filter {filter:?})");
    }
    Ok(results)
}

fn time(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// The summary table.
pub fn summary(results: &[BenchResult]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<44} {:>12} {:>26} {:>16}",
        "benchmark", "time/iter", "95% interval", "throughput"
    );
    for r in results {
        let tput = match &r.throughput {
            Some((kind, n)) if kind == "Bytes" => format!("{:.1} MB/s", n / r.mean_ns * 1e9 / 1e6),
            Some((_, n)) => format!("{}/s", observatory_runner::summary::si(n / r.mean_ns * 1e9)),
            None => String::new(),
        };
        let _ = writeln!(
            t,
            "{:<44} {:>12} {:>26} {:>16}",
            r.id,
            time(r.mean_ns),
            format!("[{} .. {}]", time(r.low_ns), time(r.high_ns)),
            tput
        );
    }
    t
}

/// The results as a sample file (time per iteration, lower is better).
pub fn samples(results: &[BenchResult]) -> SampleSet {
    let mut set = SampleSet::new("criterion");
    for r in results {
        set.metrics.insert(
            format!("{} time/iter", r.id),
            Series {
                unit: "ns".into(),
                better: Better::Lower,
                samples: r.samples_ns.clone(),
            },
        );
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_criterion_writes() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("parse/borrowed/new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(new.join("benchmark.json"), r#"{"group_id":"parse","function_id":"borrowed","value_str":null,"throughput":{"Elements":1024},"full_id":"parse/borrowed","directory_name":"parse/borrowed","title":"parse/borrowed"}"#).unwrap();
        std::fs::write(new.join("estimates.json"), r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":990.0,"upper_bound":1010.0},"point_estimate":1000.0,"standard_error":5.0},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0},"point_estimate":1.5,"standard_error":0.1}}"#).unwrap();
        std::fs::write(
            new.join("sample.json"),
            r#"{"sampling_mode":"Linear","iters":[10.0,20.0],"times":[10000.0,20200.0]}"#,
        )
        .unwrap();
        let r = read_results(dir.path(), SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].id, "parse/borrowed");
        assert_eq!(r[0].samples_ns, [1000.0, 1010.0]);
        assert_eq!(r[0].throughput, Some(("Elements".into(), 1024.0)));
        let text = summary(&r);
        assert!(
            text.contains("1.02 G/s") && text.contains("1.00 µs"),
            "{text}"
        );
        assert_eq!(
            samples(&r).metrics["parse/borrowed time/iter"]
                .samples
                .len(),
            2
        );
        // Results older than the run are not reported.
        assert!(
            read_results(
                dir.path(),
                SystemTime::now() + std::time::Duration::from_secs(60)
            )
            .unwrap()
            .is_empty()
        );
    }
}
