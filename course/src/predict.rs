//! Predict, then measure: before a check the student says what the change will do to the
//! lab's metric (as B/A: `2x`, `+100%`, `-30%`, `same`), and the verdict puts the prediction
//! next to the measured interval. Active recall: committing to a number first is what makes the
//! measurement teach.

use observatory_bench::stats::{Better, RatioInterval};
use serde::{Deserialize, Serialize};

/// One prediction and what was measured after it (kept with the progress).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// When (UTC, `YYYYMMDD-HHMMSS`).
    pub at: String,
    /// The predicted B/A of the lab's metric (`None`: the student skipped it).
    pub ratio: Option<f64>,
    /// The student's answer to the lab's recall question (code labs).
    #[serde(default)]
    pub recall: Option<String>,
    /// The measured B/A and interval (`None` when nothing was measured).
    pub measured: Option<RatioInterval>,
    pub passed: bool,
}

/// Read a prediction of B/A: `2x`, `0.7x`, `1.5`, `+100%`, `-30%`, `same`.
pub fn parse(text: &str) -> Result<f64, String> {
    let t = text.trim().to_ascii_lowercase();
    let bad = || {
        format!(
            "`{text}` is not a prediction: write B/A as `2x` or `0.7`, a change as `+100%` or `-30%`, or `same`"
        )
    };
    let v = if t == "same" {
        1.0
    } else if let Some(p) = t.strip_suffix('%') {
        let p: f64 = p.trim().parse().map_err(|_| bad())?;
        1.0 + p / 100.0
    } else {
        let n = t
            .strip_suffix('x')
            .or_else(|| t.strip_suffix('×'))
            .unwrap_or(&t);
        n.trim().parse().map_err(|_| bad())?
    };
    if v.is_finite() && v > 0.0 && v < 1e6 {
        Ok(v)
    } else {
        Err(format!("{}: B/A must be above 0", bad()))
    }
}

/// The prediction next to the measurement, in one line.
pub fn compare(predicted: f64, measured: &RatioInterval, better: Better) -> String {
    let way = |r: f64| match (r > 1.0, better) {
        _ if (r - 1.0).abs() < 1e-9 => "no change",
        (true, Better::Higher) | (false, Better::Lower) => "better",
        _ => "worse",
    };
    let verdict = if measured.low <= predicted && predicted <= measured.high {
        "inside the interval: well predicted".to_string()
    } else if way(predicted) != way(measured.ratio) {
        format!(
            "you expected {}, it was {}: worth finding out why",
            way(predicted),
            way(measured.ratio)
        )
    } else {
        let off = (predicted / measured.ratio - 1.0) * 100.0;
        format!(
            "the right direction; your number was {:.0}% {} than measured",
            off.abs(),
            if off > 0.0 { "higher" } else { "lower" }
        )
    };
    format!(
        "you predicted B/A {predicted:.2}; measured {:.3} [{:.3} .. {:.3}]: {verdict}",
        measured.ratio, measured.low, measured.high
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_read_as_ratios() {
        assert_eq!(parse("2x"), Ok(2.0));
        assert_eq!(parse(" 0.7 "), Ok(0.7));
        assert_eq!(parse("+100%"), Ok(2.0));
        assert!((parse("-30%").unwrap() - 0.7).abs() < 1e-12);
        assert_eq!(parse("same"), Ok(1.0));
        for bad in ["", "fast", "-100%", "0", "nan", "-2x", "inf"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_comparison_says_how_the_prediction_fared() {
        let m = RatioInterval {
            ratio: 1.6,
            low: 1.5,
            high: 1.7,
        };
        assert!(compare(1.55, &m, Better::Higher).contains("well predicted"));
        assert!(compare(3.2, &m, Better::Higher).contains("100% higher"));
        assert!(compare(0.5, &m, Better::Higher).contains("you expected worse, it was better"));
        let fewer = RatioInterval {
            ratio: 0.4,
            low: 0.39,
            high: 0.41,
        };
        assert!(compare(0.8, &fewer, Better::Lower).contains("100% higher than measured"));
    }
}
