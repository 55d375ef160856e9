//! Statistics for comparing two samples of a metric, robustly, on a noisy machine; the
//! [`catalogue`] of metrics and the pass rule ([`threshold`]) that every comparison uses.
//!
//! The effect of B over A is the ratio of medians, `median(B) / median(A)`, with a 95%
//! percentile-bootstrap interval (each side resampled independently; a fixed seed, so a report
//! reproduces). Medians because a shared 2-core VM throws outlier runs, and because the
//! interval's false-positive rate stays near the nominal 5% down to 5 runs a side, where the
//! ratio of means does not (measured: 4.5% vs 13.8% at n = 5, normal noise; `cargo test`
//! checks the rate over many seeds).
//!
//! A difference is a difference only when the interval excludes 1: an effect inside the noise is
//! never a win. An interval wider than `max_ci_width` is flagged as too noisy to conclude, and a
//! real but tiny effect (the whole interval within `min_effect` of 1, e.g. 6.0407 vs 6.0406
//! allocations per event) is called negligible rather than better or worse.

pub mod catalogue;
pub mod threshold;

pub use catalogue::{Formula, Metric, Total, Totals};
pub use threshold::{Judgement, Threshold};

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which way is better for a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// The outcome of a comparison, from B's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// B is better, and the interval excludes 1.
    Better,
    /// B is worse, and the interval excludes 1.
    Worse,
    /// The interval contains 1 and is narrow: no difference beyond the noise.
    WithinNoise,
    /// The interval contains 1 and is too wide to say anything.
    TooNoisy,
    /// The interval excludes 1 but lies entirely within `min_effect` of it: a real difference
    /// too small to matter.
    Negligible,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::WithinNoise => "no significant difference",
            Verdict::TooNoisy => "inconclusive: too noisy",
            Verdict::Negligible => "negligible (under 0.5%)",
        })
    }
}

/// A ratio B/A and its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RatioInterval {
    pub ratio: f64,
    pub low: f64,
    pub high: f64,
}

impl RatioInterval {
    pub fn excludes_one(&self) -> bool {
        self.low > 1.0 || self.high < 1.0
    }

    pub fn width(&self) -> f64 {
        self.high - self.low
    }
}

/// How to compare.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Options {
    pub resamples: usize,
    /// Intervals wider than this (in ratio units) are flagged as too noisy.
    pub max_ci_width: f64,
    /// Effects whose whole interval lies within this of 1 are negligible (0.005 = 0.5%).
    pub min_effect: f64,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            resamples: 10_000,
            max_ci_width: 0.20,
            min_effect: 0.005,
            seed: 0x0B5E_C0DE,
        }
    }
}

/// One metric compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub metric: String,
    pub unit: String,
    pub better: Better,
    pub a_median: f64,
    pub b_median: f64,
    /// Coefficient of variation of each side's samples (spread relative to the mean).
    pub a_cv: f64,
    pub b_cv: f64,
    pub ratio: RatioInterval,
    pub verdict: Verdict,
    /// The interval is wider than `max_ci_width`.
    pub too_noisy: bool,
}

/// The median (0 for none).
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Coefficient of variation (sample standard deviation over the mean; 0 when undefined).
pub fn cv(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    if mean == 0.0 {
        return 0.0;
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
    var.sqrt() / mean.abs()
}

/// The raw figures a ratio is computed from, kept with a result so that anyone can recompute
/// the ratio and its interval (a leaderboard does, from a student's submission).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Figures {
    /// A metric's samples, one per run, of the baseline (a) and the change (b): the ratio of
    /// medians with the bootstrap interval ([`median_ratio`] with the default [`Options`]).
    // `kind`, `a` and `b`, nothing else (serde's deny_unknown_fields, which utoipa does not
    // carry into a tagged enum's variants).
    #[cfg_attr(feature = "openapi", schema(max_properties = 3))]
    Samples { a: Vec<f64>, b: Vec<f64> },
    /// Counts of a deterministic measurement, one per run ([`count_ratio`]).
    #[cfg_attr(feature = "openapi", schema(max_properties = 3))]
    Counts { a: Vec<u64>, b: Vec<u64> },
}

impl Figures {
    /// B/A and its interval, computed the one way every result is.
    pub fn ratio(&self) -> RatioInterval {
        match self {
            Figures::Samples { a, b } => median_ratio(a, b, &Options::default()),
            Figures::Counts { a, b } => count_ratio(a, b),
        }
    }

    /// Runs on each side.
    pub fn runs(&self) -> (usize, usize) {
        match self {
            Figures::Samples { a, b } => (a.len(), b.len()),
            Figures::Counts { a, b } => (a.len(), b.len()),
        }
    }
}

/// The median of repeated counts (instructions per run): the upper middle one of an even
/// number, so that it is one of the counts measured (0 for none).
pub fn count_median(counts: &[u64]) -> f64 {
    let mut v = counts.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0) as f64
}

/// B/A of repeated counts of a deterministic measurement (instructions): the ratio of the
/// [`count_median`]s, and the interval every pairing of an A run with a B run spans (a count
/// moves only with what the runs do differently, such as a hash seed). The lab runner measures
/// with it and the leaderboard recomputes a submission's ratio with it.
pub fn count_ratio(a: &[u64], b: &[u64]) -> RatioInterval {
    let ratios: Vec<f64> = a
        .iter()
        .flat_map(|x| b.iter().map(move |y| *y as f64 / *x as f64))
        .collect();
    RatioInterval {
        ratio: count_median(b) / count_median(a),
        low: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        high: ratios.iter().copied().fold(0.0, f64::max),
    }
}

/// Ratio of medians B/A with a 95% percentile-bootstrap interval.
pub fn median_ratio(a: &[f64], b: &[f64], opts: &Options) -> RatioInterval {
    let ratio = median(b) / median(a);
    if a.is_empty() || b.is_empty() {
        return RatioInterval {
            ratio,
            low: f64::NAN,
            high: f64::NAN,
        };
    }
    let mut rng = Pcg64Mcg::seed_from_u64(opts.seed);
    let mut ratios = Vec::with_capacity(opts.resamples);
    let (mut ra, mut rb) = (vec![0.0; a.len()], vec![0.0; b.len()]);
    for _ in 0..opts.resamples {
        for x in ra.iter_mut() {
            *x = a[(rng.next_u64() % a.len() as u64) as usize];
        }
        for x in rb.iter_mut() {
            *x = b[(rng.next_u64() % b.len() as u64) as usize];
        }
        let r = median(&rb) / median(&ra);
        if r.is_finite() {
            ratios.push(r);
        }
    }
    if ratios.is_empty() {
        return RatioInterval {
            ratio,
            low: f64::NAN,
            high: f64::NAN,
        };
    }
    ratios.sort_by(f64::total_cmp);
    let at =
        |q: f64| ratios[((q * (ratios.len() - 1) as f64).round() as usize).min(ratios.len() - 1)];
    RatioInterval {
        ratio,
        low: at(0.025),
        high: at(0.975),
    }
}

/// Compare samples `a` and `b` of one metric.
pub fn compare(
    metric: &str,
    unit: &str,
    better: Better,
    a: &[f64],
    b: &[f64],
    opts: &Options,
) -> Comparison {
    let ratio = median_ratio(a, b, opts);
    // A NaN width (too few samples) is as good as no interval: too noisy.
    let too_noisy = ratio.width().is_nan() || ratio.width() > opts.max_ci_width;
    let negligible = ratio.low >= 1.0 - opts.min_effect && ratio.high <= 1.0 + opts.min_effect;
    let verdict = if ratio.excludes_one() && negligible {
        Verdict::Negligible
    } else if ratio.excludes_one() {
        let b_higher = ratio.ratio > 1.0;
        if b_higher == (better == Better::Higher) {
            Verdict::Better
        } else {
            Verdict::Worse
        }
    } else if too_noisy {
        Verdict::TooNoisy
    } else {
        Verdict::WithinNoise
    };
    Comparison {
        metric: metric.into(),
        unit: unit.into(),
        better,
        a_median: median(a),
        b_median: median(b),
        a_cv: cv(a),
        b_cv: cv(b),
        ratio,
        verdict,
        too_noisy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    #[test]
    fn a_count_ratio_is_of_measured_medians_and_spans_every_pairing() {
        let r = count_ratio(&[100, 102], &[50, 51, 52]);
        assert_eq!(r.ratio, 51.0 / 102.0);
        assert_eq!((r.low, r.high), (50.0 / 102.0, 52.0 / 100.0));
        let exact = count_ratio(&[7, 7], &[7]);
        assert_eq!((exact.ratio, exact.low, exact.high), (1.0, 1.0, 1.0));
        // Nothing measured: not a ratio (a leaderboard refuses it), and no panic.
        assert!(!count_ratio(&[], &[5]).ratio.is_finite());
        assert!(count_ratio(&[5], &[]).low > count_ratio(&[5], &[]).high);
    }

    fn normal(rng: &mut Pcg64Mcg, mean: f64, sd: f64, n: usize) -> Vec<f64> {
        // Box-Muller: enough for tests.
        (0..n)
            .map(|_| {
                let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                mean + sd * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect()
    }

    fn opts(seed: u64) -> Options {
        Options {
            resamples: 1000,
            seed,
            ..Options::default()
        }
    }

    #[test]
    fn medians_and_spread() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(cv(&[5.0, 5.0, 5.0]), 0.0);
        assert!((cv(&[9.0, 10.0, 11.0]) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn a_known_ten_percent_effect_is_detected() {
        let mut rng = Pcg64Mcg::seed_from_u64(7);
        let (mut detected, trials) = (0, 200);
        for t in 0..trials {
            let a = normal(&mut rng, 100.0, 3.0, 8);
            let b = normal(&mut rng, 110.0, 3.3, 8);
            let c = compare("throughput", "events/s", Better::Higher, &a, &b, &opts(t));
            if c.verdict == Verdict::Better {
                detected += 1;
                assert!(
                    c.ratio.low > 1.0 && (c.ratio.ratio - 1.1).abs() < 0.06,
                    "{c:?}"
                );
            }
        }
        assert!(detected >= 190, "10% detected in {detected} of {trials}");
        // The same effect on a lower-is-better metric is a regression.
        let a = normal(&mut rng, 100.0, 3.0, 8);
        let b = normal(&mut rng, 110.0, 3.3, 8);
        assert_eq!(
            compare("latency", "s", Better::Lower, &a, &b, &opts(1)).verdict,
            Verdict::Worse
        );
    }

    #[test]
    fn no_effect_is_a_false_positive_near_the_nominal_rate() {
        let mut rng = Pcg64Mcg::seed_from_u64(11);
        let trials = 1000;
        let mut false_positives = 0;
        for t in 0..trials {
            let a = normal(&mut rng, 100.0, 3.0, 8);
            let b = normal(&mut rng, 100.0, 3.0, 8);
            let c = compare("throughput", "events/s", Better::Higher, &a, &b, &opts(t));
            if matches!(c.verdict, Verdict::Better | Verdict::Worse) {
                false_positives += 1;
            }
        }
        let rate = false_positives as f64 / trials as f64;
        // Nominal 5%; the binomial spread over 1000 trials is about ±1.4 points.
        assert!((0.01..=0.08).contains(&rate), "false-positive rate {rate}");
    }

    #[test]
    fn a_too_noisy_series_is_flagged_not_concluded() {
        let mut rng = Pcg64Mcg::seed_from_u64(3);
        let a = normal(&mut rng, 100.0, 30.0, 6);
        let b = normal(&mut rng, 100.0, 30.0, 6);
        let c = compare("throughput", "events/s", Better::Higher, &a, &b, &opts(5));
        assert!(c.too_noisy, "{c:?}");
        assert_eq!(c.verdict, Verdict::TooNoisy);
        assert!(c.a_cv > 0.15);
        // The same, quiet: within the noise, and said so.
        let a = normal(&mut rng, 100.0, 1.0, 6);
        let b = normal(&mut rng, 100.0, 1.0, 6);
        let c = compare("throughput", "events/s", Better::Higher, &a, &b, &opts(5));
        assert_eq!(c.verdict, Verdict::WithinNoise, "{c:?}");
        assert!(!c.too_noisy);
    }

    #[test]
    fn a_tiny_but_real_difference_is_negligible_not_worse() {
        // Allocations per event from a real A/B run: deterministic up to the fourth digit.
        let a = [6.040672, 6.0406475, 6.0406465, 6.040660, 6.040655];
        let b = [6.040700, 6.040710, 6.040690, 6.040705, 6.040720];
        let c = compare("allocs", "", Better::Lower, &a, &b, &opts(1));
        assert!(c.ratio.excludes_one(), "{c:?}");
        assert_eq!(c.verdict, Verdict::Negligible);
        // The same shape 2% apart is a finding.
        let b: Vec<f64> = a.iter().map(|x| x * 1.02).collect();
        let c = compare("allocs", "", Better::Lower, &a, &b, &opts(1));
        assert_eq!(c.verdict, Verdict::Worse);
    }

    #[test]
    fn the_interval_reproduces_for_a_seed() {
        let a = [100.0, 101.0, 99.0, 100.5, 98.7];
        let b = [104.0, 106.0, 103.0, 105.5, 104.7];
        let x = median_ratio(&a, &b, &Options::default());
        assert_eq!(x, median_ratio(&a, &b, &Options::default()));
        assert!(x.low <= x.ratio && x.ratio <= x.high);
    }
}
