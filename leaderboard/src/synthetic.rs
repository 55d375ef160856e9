//! Synthetic submissions: bundles made the way the lab runner makes them (the ratio and the pass
//! computed from the figures by the same statistics), for a demo cohort
//! (`observatory leaderboard seed`), the load benchmark and the tests. Every one is labelled
//! as synthetic by its machine (`Synthetic ...`), so a seeded cohort is never mistaken for a
//! real one.

use crate::{Bundle, Fingerprint, LabRule, sha256_hex};
use observatory_stats::{Figures, Threshold};

/// The machine a synthetic bundle claims.
pub fn fingerprint(cpu_model: &str, cores: u32) -> Fingerprint {
    Fingerprint {
        cpu_model: cpu_model.to_string(),
        cores,
        memory_bytes: 8 << 30,
        kernel: "6.1".into(),
        rustc: "rustc 1.95.0".into(),
        aa_noise: None,
    }
}

/// A bundle for `rule` whose change measured `factor` times the baseline (six runs a side,
/// spread by `spread` around it); for a lab that only has to finish, no ratio. Its `passed`
/// is what the lab's rule says of it, so a factor that does not clear the lab's minimum makes
/// a bundle the server refuses as not passed.
pub fn bundle(rule: &LabRule, key: &str, factor: f64, spread: f64, change: &str) -> Bundle {
    let (ratio, figures, passed) = if rule.completes {
        (None, None, true)
    } else {
        // The baseline's runs, each jittered by under half a unit from the key: two students'
        // checks never measure the same samples (the server refuses a copy of another's).
        let jitter = sha256_hex(key.as_bytes());
        let a: Vec<f64> = (0..6)
            .map(|i| {
                let byte = u8::from_str_radix(&jitter[2 * i..2 * i + 2], 16).unwrap_or(128);
                1000.0 + (i as f64) * 3.0 + (f64::from(byte) / 255.0 - 0.5)
            })
            .collect();
        let b: Vec<f64> = a
            .iter()
            .enumerate()
            .map(|(i, x)| x * factor * (1.0 + spread * ((i % 3) as f64 - 1.0)))
            .collect();
        let figures = Figures::Samples { a, b };
        let ratio = figures.ratio();
        let passed = Threshold::new(rule.better, rule.min_effect).clears(&ratio);
        (Some(ratio), Some(figures), passed)
    };
    Bundle {
        version: crate::bundle::BUNDLE_VERSION,
        idempotency_key: key.to_string(),
        lab: rule.lab,
        metric: rule.metric.clone(),
        better: rule.better,
        min_effect: rule.min_effect,
        passed,
        conserved: true,
        correct: None,
        ratio,
        figures,
        prediction: None,
        commit: "0000000".into(),
        change_sha256: sha256_hex(change.as_bytes()),
        fingerprint: fingerprint("Synthetic CPU @ 2.0GHz", 2),
        checked_at: "2026-12-05T00:00:00Z".into(),
    }
}

/// A factor that clears `rule`'s minimum, `strength` (0 to 1) of the way from just clearing it
/// to a large effect (4x beyond the minimum).
pub fn passing_factor(rule: &LabRule, strength: f64) -> f64 {
    let s = strength.clamp(0.0, 1.0);
    match rule.better {
        // B/A must lie below 1 - min: from 0.9 of that bound down to a quarter of it.
        observatory_stats::Better::Lower => {
            let bound = (1.0 - rule.min_effect).max(0.01);
            bound * (0.9 - 0.65 * s)
        }
        // B/A must lie above 1 + min: from 1.1 times that bound up to 4 times it.
        observatory_stats::Better::Higher => (1.0 + rule.min_effect) * (1.1 + 2.9 * s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use observatory_stats::Better;

    fn rule(better: Better, min_effect: f64, completes: bool) -> LabRule {
        LabRule {
            lab: 3,
            metric: "throughput_eps".into(),
            better,
            min_effect,
            completes,
        }
    }

    #[test]
    fn a_passing_factor_makes_a_bundle_the_lab_accepts_and_a_weak_one_is_refused() {
        for r in [
            rule(Better::Lower, 0.1, false),
            rule(Better::Lower, 0.8, false),
            rule(Better::Higher, 1.0, false),
            rule(Better::Higher, 0.05, false),
        ] {
            for s in [0.0, 0.5, 1.0] {
                let b = bundle(&r, "k-0001-aaaa-bbbb", passing_factor(&r, s), 0.01, "x");
                assert!(b.passed, "{r:?} {s}");
                assert!(b.validate(&r).is_ok(), "{r:?} {s}: {:?}", b.validate(&r));
            }
            let none = bundle(&r, "k-0001-aaaa-bbbb", 1.0, 0.01, "x");
            assert!(!none.passed, "no effect does not pass {r:?}");
            assert!(none.validate(&r).is_err());
        }
        let finish = rule(Better::Lower, 1.0, true);
        let b = bundle(&finish, "k-0001-aaaa-bbbb", 1.0, 0.0, "x");
        assert_eq!(b.validate(&finish), Ok(None));
    }
}
