//! Sample files: the samples of one configuration, metric by metric, in one versioned format
//! that every measurement writes (each side of an A/B run, the criterion suite) and
//! `observatory bench compare` reads.
//!
//! ```json
//! {"format": "observatory-samples", "version": 1, "label": "A",
//!  "metrics": {"throughput_eps": {"unit": "events/s", "better": "higher", "samples": [1.5e6, …]}}}
//! ```

use crate::stats::{Better, Comparison, Options, Verdict, compare};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const FORMAT: &str = "observatory-samples";
pub const VERSION: u32 = 1;

/// The samples of one metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub unit: String,
    pub better: Better,
    pub samples: Vec<f64>,
}

/// The samples of one configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleSet {
    pub format: String,
    pub version: u32,
    pub label: String,
    pub metrics: BTreeMap<String, Series>,
}

impl SampleSet {
    pub fn new(label: &str) -> Self {
        SampleSet {
            format: FORMAT.into(),
            version: VERSION,
            label: label.into(),
            metrics: BTreeMap::new(),
        }
    }

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let set: SampleSet = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not an observatory sample file", path.display()))?;
        if set.format != FORMAT || set.version != VERSION {
            anyhow::bail!(
                "{}: format {} version {}, expected {FORMAT} version {VERSION}",
                path.display(),
                set.format,
                set.version
            );
        }
        Ok(set)
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(
            path,
            serde_json::to_vec_pretty(self).expect("samples serialize"),
        )
    }
}

/// The comparison of two sample files, and whether it is a regression.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdicts {
    pub comparisons: Vec<Comparison>,
    /// Metrics significantly worse by more than the threshold.
    pub regressions: Vec<String>,
}

/// Compare every metric both files have. A regression is a metric whose interval says "worse"
/// and whose change exceeds `threshold` (e.g. 0.05 for 5%).
pub fn compare_sets(old: &SampleSet, new: &SampleSet, threshold: f64, opts: &Options) -> Verdicts {
    let mut comparisons = Vec::new();
    let mut regressions = Vec::new();
    for (name, a) in &old.metrics {
        let Some(b) = new.metrics.get(name) else {
            continue;
        };
        let c = compare(name, &a.unit, a.better, &a.samples, &b.samples, opts);
        if c.verdict == Verdict::Worse && (c.ratio.ratio - 1.0).abs() > threshold {
            regressions.push(name.clone());
        }
        comparisons.push(c);
    }
    Verdicts {
        comparisons,
        regressions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(label: &str, throughput: &[f64], latency: &[f64]) -> SampleSet {
        let mut s = SampleSet::new(label);
        s.metrics.insert(
            "throughput_eps".into(),
            Series {
                unit: "events/s".into(),
                better: Better::Higher,
                samples: throughput.to_vec(),
            },
        );
        s.metrics.insert(
            "latency_p99_seconds".into(),
            Series {
                unit: "s".into(),
                better: Better::Lower,
                samples: latency.to_vec(),
            },
        );
        s
    }

    #[test]
    fn a_planted_regression_is_found_and_identical_inputs_are_not() {
        let old = set(
            "old",
            &[100.0, 101.0, 99.5, 100.4, 100.9, 99.8],
            &[0.020, 0.021, 0.0205, 0.0198, 0.0201, 0.0203],
        );
        let same = compare_sets(&old, &old, 0.05, &Options::default());
        assert!(same.regressions.is_empty(), "{same:?}");
        // 20% slower, and 30% higher latency.
        let slower = set(
            "new",
            &[80.0, 80.5, 79.8, 80.2, 81.0, 79.6],
            &[0.026, 0.027, 0.0265, 0.0262, 0.0268, 0.0263],
        );
        let v = compare_sets(&old, &slower, 0.05, &Options::default());
        assert_eq!(v.regressions, ["latency_p99_seconds", "throughput_eps"]);
        // Faster is not a regression.
        let faster = set(
            "new",
            &[120.0, 121.0, 119.5, 120.4, 120.9, 119.8],
            &[0.015, 0.016, 0.0155, 0.0152, 0.0151, 0.0153],
        );
        assert!(
            compare_sets(&old, &faster, 0.05, &Options::default())
                .regressions
                .is_empty()
        );
        // A significant but small change is under the threshold.
        let slightly = set(
            "new",
            &[98.0, 98.9, 97.5, 98.4, 98.9, 97.8],
            &[0.020, 0.021, 0.0205, 0.0198, 0.0201, 0.0203],
        );
        let v = compare_sets(&old, &slightly, 0.05, &Options::default());
        assert!(v.regressions.is_empty(), "{v:?}");
    }

    #[test]
    fn files_round_trip_and_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = set("x", &[1.0, 2.0], &[3.0, 4.0]);
        let path = dir.path().join("s.json");
        s.write(&path).unwrap();
        assert_eq!(SampleSet::read(&path).unwrap(), s);
        std::fs::write(
            &path,
            r#"{"format":"something-else","version":1,"label":"x","metrics":{}}"#,
        )
        .unwrap();
        assert!(
            SampleSet::read(&path)
                .unwrap_err()
                .to_string()
                .contains("expected observatory-samples")
        );
        std::fs::write(&path, "[1,2,3]").unwrap();
        assert!(SampleSet::read(&path).is_err());
    }
}
