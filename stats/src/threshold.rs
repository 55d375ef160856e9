//! The pass rule, defined once: an effect passes when the whole 95% interval of B/A lies beyond
//! the minimum effect in the direction that is better, and nothing was lost. `observatory lab
//! check`, the Experiment's verdict and the leaderboard all judge with [`Threshold::judge`].

use crate::{Better, RatioInterval};
use serde::{Deserialize, Serialize};

/// How far B/A must move, and which way, to pass.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub better: Better,
    /// The smallest effect that passes, as a fraction: 1.0 when higher is better means the
    /// interval of B/A must lie at or above 2.0; 0.3 when lower is better, at or below 0.7.
    pub min_effect: f64,
}

/// A judged effect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The interval clears the threshold.
    pub clears: bool,
    /// It clears and nothing was lost.
    pub passed: bool,
    /// What clearing means, e.g. `B/A ≥ 2.00`.
    pub required: String,
}

impl Threshold {
    pub fn new(better: Better, min_effect: f64) -> Threshold {
        Threshold { better, min_effect }
    }

    /// The bound B/A must reach: `1 + min_effect` or `1 - min_effect`.
    pub fn bound(&self) -> f64 {
        match self.better {
            Better::Higher => 1.0 + self.min_effect,
            Better::Lower => 1.0 - self.min_effect,
        }
    }

    /// Does the whole interval clear the bound in the better direction?
    pub fn clears(&self, r: &RatioInterval) -> bool {
        match self.better {
            Better::Higher => r.low >= self.bound(),
            Better::Lower => r.high <= self.bound(),
        }
    }

    /// `B/A ≥ 2.00` or `B/A ≤ 0.70`.
    pub fn required(&self) -> String {
        match self.better {
            Better::Higher => format!("B/A ≥ {:.2}", self.bound()),
            Better::Lower => format!("B/A ≤ {:.2}", self.bound()),
        }
    }

    /// Whether some effect could pass: not when the minimum is negative, nor when lower is
    /// better and the minimum is 100% or more (B/A would have to reach 0).
    pub fn reachable(&self) -> bool {
        !(self.min_effect < 0.0 || (self.better == Better::Lower && self.min_effect >= 1.0))
    }

    /// Which way the change went and by how much, in words: `"38.1% better"`, `"the wrong
    /// way: 12.0% worse"`, or no change the interval can tell from noise. The size is of the
    /// metric (B/A 0.70 with lower better is 30.0% better).
    pub fn direction(&self, r: &RatioInterval) -> String {
        if !(r.ratio.is_finite() && r.low.is_finite() && r.high.is_finite()) {
            return "not measurable (no finite ratio)".into();
        }
        let pct = (r.ratio - 1.0).abs() * 100.0;
        let better = match self.better {
            Better::Higher => r.low > 1.0,
            Better::Lower => r.high < 1.0,
        };
        let worse = match self.better {
            Better::Higher => r.high < 1.0,
            Better::Lower => r.low > 1.0,
        };
        if better {
            format!("{pct:.1}% better")
        } else if worse {
            format!("the wrong way: {pct:.1}% worse")
        } else {
            format!(
                "no change the interval can tell from noise ([{:.3} .. {:.3}] holds 1)",
                r.low, r.high
            )
        }
    }

    /// The verdict: `passed` only when the interval clears and `lost` (events lost in the
    /// measured runs) is 0.
    pub fn judge(&self, r: &RatioInterval, lost: f64) -> Judgement {
        let clears = self.clears(r);
        Judgement {
            clears,
            passed: clears && lost < 0.5,
            required: self.required(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(ratio: f64, low: f64, high: f64) -> RatioInterval {
        RatioInterval { ratio, low, high }
    }

    #[test]
    fn the_whole_interval_must_clear_in_the_better_direction() {
        let up = Threshold::new(Better::Higher, 0.5);
        assert!(up.clears(&r(1.6, 1.5, 1.7)));
        assert!(!up.clears(&r(1.6, 1.45, 1.7)));
        assert!(!Threshold::new(Better::Higher, 0.0).clears(&r(0.6, 0.55, 0.7)));
        let down = Threshold::new(Better::Lower, 0.25);
        assert!(down.clears(&r(0.6, 0.55, 0.7)));
        assert!(!down.clears(&r(0.8, 0.7, 0.9)));
        assert_eq!(up.required(), "B/A ≥ 1.50");
        assert_eq!(up.direction(&r(1.6, 1.45, 1.7)), "60.0% better");
        assert_eq!(
            up.direction(&r(0.8, 0.7, 0.9)),
            "the wrong way: 20.0% worse"
        );
        assert!(up.direction(&r(1.01, 0.9, 1.1)).starts_with("no change"));
        assert_eq!(down.direction(&r(0.7, 0.69, 0.71)), "30.0% better");
        assert_eq!(
            down.direction(&r(1.2, 1.1, 1.3)),
            "the wrong way: 20.0% worse"
        );
        assert_eq!(down.required(), "B/A ≤ 0.75");
    }

    #[test]
    fn a_loss_fails_an_effect_that_clears() {
        let t = Threshold::new(Better::Higher, 1.0);
        let j = t.judge(&r(3.0, 2.5, 3.5), 12.0);
        assert!(j.clears && !j.passed);
        assert!(t.judge(&r(3.0, 2.5, 3.5), 0.0).passed);
        assert!(!t.judge(&r(3.0, 1.5, 3.5), 0.0).passed);
        // Too few runs give no interval (NaN bounds): that never passes.
        assert!(!t.judge(&r(3.0, f64::NAN, f64::NAN), 0.0).passed);
        assert!(!Threshold::new(Better::Lower, 0.3).clears(&r(0.5, f64::NAN, f64::NAN)));
    }

    #[test]
    fn unreachable_minimums_are_refused() {
        assert!(!Threshold::new(Better::Lower, 1.0).reachable());
        assert!(!Threshold::new(Better::Higher, -0.1).reachable());
        assert!(Threshold::new(Better::Higher, 3.0).reachable());
        assert!(Threshold::new(Better::Lower, 0.3).reachable());
    }
}
