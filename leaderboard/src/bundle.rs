//! What `observatory lab submit N` uploads, and the server's validation of it. The student's
//! machine is not trusted: the server checks the bundle against the lab's own rule (the
//! course's `lab.toml`, not the bundle's copy of it), recomputes the ratio and its interval
//! from the raw figures with the same statistics the lab runner used, and recomputes the pass.
//! A bundle whose ratio is not what its figures give is refused as tampered. (A student can
//! still invent figures; the verified tier, re-run on the instructor's machine on a hidden
//! seed, is what final rankings use.)

use observatory_stats::{Better, Figures, RatioInterval, Threshold};
use serde::{Deserialize, Serialize};

/// SHA-256 of `bytes`, hex: how a change is named (`change_sha256`) and a token is stored.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The bundle format this crate reads and writes.
pub const BUNDLE_VERSION: u32 = 1;
/// Runs per side a bundle may carry (a lab check makes 2 to 10).
pub const MAX_RUNS: usize = 1000;
/// The range of one figure (a sample or a count).
pub const MIN_FIGURE: f64 = 1e-9;
pub const MAX_FIGURE: f64 = 1e15;

/// One lab check's result, as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub version: u32,
    /// Chosen by the client once per check: a retried upload carries the same key and is
    /// stored once.
    pub idempotency_key: String,
    pub lab: u32,
    pub metric: String,
    pub better: Better,
    pub min_effect: f64,
    pub passed: bool,
    pub conserved: bool,
    /// Code labs: the code met its slot's specification (`None` for knob labs).
    pub correct: Option<bool>,
    /// B/A and its interval as the check reported it (`None` for a lab that only has to
    /// finish).
    pub ratio: Option<RatioInterval>,
    /// Every run's figures, from which the ratio is recomputed (`None` with the ratio).
    pub figures: Option<Figures>,
    /// The student's prediction of B/A, made before the check measured.
    pub prediction: Option<f64>,
    /// The git commit the check ran on, and the sha256 of the student's change (the answer
    /// file, or the slot's STUDENT code).
    pub commit: String,
    pub change_sha256: String,
    pub fingerprint: Fingerprint,
    /// When the check ran (RFC 3339).
    pub checked_at: String,
}

/// The machine the check ran on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    pub cpu_model: String,
    pub cores: u32,
    pub memory_bytes: u64,
    pub kernel: String,
    pub rustc: String,
    /// The A/A noise figure of this machine, if one was measured (the baseline against itself).
    pub aa_noise: Option<RatioInterval>,
}

/// What the server knows of a lab (from the course, not from the bundle).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabRule {
    pub lab: u32,
    pub metric: String,
    pub better: Better,
    pub min_effect: f64,
    /// Only has to finish (no ratio).
    pub completes: bool,
}

/// Why a bundle is refused (each is a 4xx with this message; nothing is stored).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("bundle version {0} is not {BUNDLE_VERSION}: update observatory")]
    Version(u32),
    #[error("lab {lab}: {what}")]
    Mismatch { lab: u32, what: String },
    #[error(
        "lab {0}'s check did not pass: only a passed check is submitted (run `observatory lab check {0}` again)"
    )]
    NotPassed(u32),
    #[error("lab {0}'s check lost events or ran code that does not meet its specification")]
    Unsound(u32),
    #[error("malformed bundle: {0}")]
    Malformed(String),
    #[error(
        "the bundle's ratio {claimed} is not what its figures give ({recomputed}): the bundle was changed after the check"
    )]
    Tampered { claimed: String, recomputed: String },
}

fn show(r: &RatioInterval) -> String {
    format!("{:.4} [{:.4} .. {:.4}]", r.ratio, r.low, r.high)
}

/// Equal up to float rounding (the runner and the server compute the same way).
fn same(x: f64, y: f64) -> bool {
    (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-300)
}

fn text_ok(name: &str, v: &str, max: usize) -> Result<(), Refusal> {
    if !crate::text::plain_ok(v, max) {
        return Err(Refusal::Malformed(format!(
            "{name}: {}",
            crate::text::plain_rule(max)
        )));
    }
    Ok(())
}

fn hex_ok(name: &str, v: &str, lens: std::ops::RangeInclusive<usize>) -> Result<(), Refusal> {
    if !lens.contains(&v.len()) || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Refusal::Malformed(format!(
            "{name}: {lens:?} hex digits, got {:?}",
            v.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

impl Bundle {
    /// Validate against `rule`. `Ok` holds the ratio recomputed from the figures (what the
    /// board ranks: `None` for a lab that only has to finish).
    pub fn validate(&self, rule: &LabRule) -> Result<Option<RatioInterval>, Refusal> {
        if self.version != BUNDLE_VERSION {
            return Err(Refusal::Version(self.version));
        }
        let lab = rule.lab;
        // Every text first: a refusal's reason quotes some of them.
        text_ok("metric", &self.metric, 100)?;
        let mismatch = |what: String| Err(Refusal::Mismatch { lab, what });
        if self.lab != lab {
            return mismatch(format!("the bundle is for lab {}", self.lab));
        }
        if self.metric != rule.metric || self.better != rule.better {
            return mismatch(format!(
                "measured {} ({:?} is better), the lab measures {} ({:?} is better)",
                self.metric, self.better, rule.metric, rule.better
            ));
        }
        if !same(self.min_effect, rule.min_effect) {
            return mismatch(format!(
                "checked against a minimum of {}, the lab's is {}",
                self.min_effect, rule.min_effect
            ));
        }
        if !(16..=64).contains(&self.idempotency_key.len())
            || !self
                .idempotency_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Refusal::Malformed(
                "idempotency_key: 16 to 64 letters, digits or '-'".into(),
            ));
        }
        hex_ok("commit", &self.commit, 7..=40)?;
        hex_ok("change_sha256", &self.change_sha256, 64..=64)?;
        text_ok("checked_at", &self.checked_at, 40)?;
        let f = &self.fingerprint;
        text_ok("fingerprint.cpu_model", &f.cpu_model, 200)?;
        text_ok("fingerprint.kernel", &f.kernel, 200)?;
        text_ok("fingerprint.rustc", &f.rustc, 200)?;
        if let Some(p) = self.prediction
            && !(p.is_finite() && p > 0.0)
        {
            return Err(Refusal::Malformed(format!(
                "prediction {p}: a ratio above 0"
            )));
        }
        if !self.passed {
            return Err(Refusal::NotPassed(lab));
        }
        if !self.conserved || self.correct == Some(false) {
            return Err(Refusal::Unsound(lab));
        }
        let (claimed, figures) = match (self.ratio, &self.figures, rule.completes) {
            (None, None, true) => return Ok(None),
            (Some(claimed), Some(figures), false) => (claimed, figures),
            (_, _, true) => return mismatch("a ratio for a lab that only has to finish".into()),
            (_, _, false) => {
                return mismatch("no ratio, or no figures to recompute it from".into());
            }
        };
        let (na, nb) = figures.runs();
        if !(1..=MAX_RUNS).contains(&na) || !(1..=MAX_RUNS).contains(&nb) {
            return Err(Refusal::Malformed(format!(
                "figures: 1 to {MAX_RUNS} runs per side"
            )));
        }
        // Figures a machine can measure: samples finite, from 1e-9 to 1e15 (a 300-digit ratio
        // from 1e-150 against 1e150 once broke the board page), counts from 1 to 1e15.
        let sound = match figures {
            Figures::Samples { a, b } => a
                .iter()
                .chain(b)
                .all(|v| v.is_finite() && (MIN_FIGURE..=MAX_FIGURE).contains(v)),
            Figures::Counts { a, b } => a
                .iter()
                .chain(b)
                .all(|v| (1..=MAX_FIGURE as u64).contains(v)),
        };
        if !sound {
            return Err(Refusal::Malformed(format!(
                "figures: samples from {MIN_FIGURE:e} to {MAX_FIGURE:e}, counts from 1 to {MAX_FIGURE:e}"
            )));
        }
        let recomputed = figures.ratio();
        if !(1e-6..=1e6).contains(&recomputed.ratio) {
            return Err(Refusal::Malformed(format!(
                "the ratio {} is not one a lab check makes (1e-6 to 1e6)",
                recomputed.ratio
            )));
        }
        if !(same(claimed.ratio, recomputed.ratio)
            && same(claimed.low, recomputed.low)
            && same(claimed.high, recomputed.high))
        {
            return Err(Refusal::Tampered {
                claimed: show(&claimed),
                recomputed: show(&recomputed),
            });
        }
        if !Threshold::new(rule.better, rule.min_effect).clears(&recomputed) {
            return Err(Refusal::NotPassed(lab));
        }
        Ok(Some(recomputed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use observatory_stats::{Options, count_ratio, median_ratio};

    fn rule() -> LabRule {
        LabRule {
            lab: 20,
            metric: "instructions_per_event".into(),
            better: Better::Lower,
            min_effect: 0.5,
            completes: false,
        }
    }

    /// A bundle as lab 20's reference check makes it (its figures from a real check).
    fn bundle() -> Bundle {
        let (a, b) = (vec![65_341_214, 65_115_303], vec![14_485_197, 14_485_197]);
        Bundle {
            version: BUNDLE_VERSION,
            idempotency_key: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
            lab: 20,
            metric: "instructions_per_event".into(),
            better: Better::Lower,
            min_effect: 0.5,
            passed: true,
            conserved: true,
            correct: Some(true),
            ratio: Some(count_ratio(&a, &b)),
            figures: Some(Figures::Counts { a, b }),
            prediction: Some(0.3),
            commit: "1af6745".into(),
            change_sha256: "ab".repeat(32),
            fingerprint: Fingerprint {
                cpu_model: "AMD EPYC".into(),
                cores: 2,
                memory_bytes: 24 << 30,
                kernel: "6.18.44".into(),
                rustc: "rustc 1.95.0".into(),
                aa_noise: None,
            },
            checked_at: "2026-12-04T13:30:59Z".into(),
        }
    }

    #[test]
    fn an_honest_passed_check_is_accepted_with_its_recomputed_ratio() {
        let r = bundle().validate(&rule()).unwrap().unwrap();
        assert!((r.ratio - 0.2217).abs() < 1e-3, "{r:?}");
        // Through JSON and back, as it travels.
        let json = serde_json::to_string(&bundle()).unwrap();
        let back: Bundle = serde_json::from_str(&json).unwrap();
        assert_eq!(back.validate(&rule()).unwrap(), Some(r));
    }

    #[test]
    fn a_wall_clock_bundle_is_recomputed_with_the_runners_bootstrap() {
        let (a, b) = (
            vec![13_765.0, 13_500.0, 14_020.0, 13_800.0, 13_650.0],
            vec![76_163.0, 75_000.0, 77_010.0, 76_500.0, 74_900.0],
        );
        let rule = LabRule {
            lab: 1,
            metric: "throughput_eps".into(),
            better: Better::Higher,
            min_effect: 2.0,
            completes: false,
        };
        let mut x = bundle();
        x.lab = 1;
        x.metric = rule.metric.clone();
        x.better = Better::Higher;
        x.min_effect = 2.0;
        x.ratio = Some(median_ratio(&a, &b, &Options::default()));
        x.figures = Some(Figures::Samples { a, b });
        assert!(x.validate(&rule).unwrap().unwrap().low > 5.0);
    }

    #[test]
    fn every_kind_of_bad_bundle_is_refused_with_its_reason() {
        type Edit = fn(&mut Bundle);
        let cases: [(&str, Edit); 18] = [
            ("not pass", |b| b.passed = false),
            ("lost events", |b| b.conserved = false),
            ("specification", |b| b.correct = Some(false)),
            ("version", |b| b.version = 9),
            ("for lab 19", |b| b.lab = 19),
            ("minimum", |b| b.min_effect = 0.9),
            ("measures", |b| b.better = Better::Higher),
            ("changed after the check", |b| {
                b.ratio = Some(RatioInterval {
                    ratio: 0.1,
                    low: 0.1,
                    high: 0.1,
                })
            }),
            ("changed after the check", |b| {
                // Figures edited, the ratio left as it was.
                b.figures = Some(Figures::Counts {
                    a: vec![65_341_214, 65_115_303],
                    b: vec![1_000_000, 1_000_000],
                })
            }),
            ("idempotency_key", |b| b.idempotency_key = "short".into()),
            ("change_sha256", |b| b.change_sha256 = "zz".repeat(32)),
            ("cpu_model", |b| {
                b.fingerprint.cpu_model = "x\u{1b}[2J".into()
            }),
            ("prediction", |b| b.prediction = Some(f64::NAN)),
            ("figures", |b| {
                b.figures = Some(Figures::Counts {
                    a: vec![0],
                    b: vec![1],
                })
            }),
            // Found by a review: a metric carrying a newline forged a line of the server's log;
            // an ESC in it reached a terminal.
            ("metric", |b| {
                b.metric = "instructions_per_event\n2026-12-08T01:40:00Z INFO forged".into()
            }),
            ("metric", |b| {
                b.metric = "\u{1b}[31minstructions_per_event".into()
            }),
            // A 300-digit ratio (1e-150 against 1e150) pushed a board page's columns away.
            ("figures: samples from", |b| {
                b.figures = Some(Figures::Samples {
                    a: vec![1e-150; 6],
                    b: vec![1e150; 6],
                })
            }),
            ("figures: samples from", |b| {
                b.figures = Some(Figures::Samples {
                    a: vec![0.0; 6],
                    b: vec![1.0; 6],
                })
            }),
        ];
        for (want, edit) in cases {
            let mut b = bundle();
            edit(&mut b);
            let err = b.validate(&rule()).expect_err(want).to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn a_ratio_that_does_not_clear_the_lab_is_not_a_pass_whatever_the_bundle_says() {
        // Honest figures of a change that did not reach the lab's minimum, marked passed.
        let (a, b) = (vec![1000, 1000], vec![700, 700]);
        let mut x = bundle();
        x.ratio = Some(count_ratio(&a, &b));
        x.figures = Some(Figures::Counts { a, b });
        assert_eq!(x.validate(&rule()), Err(Refusal::NotPassed(20)));
    }

    #[test]
    fn unknown_fields_and_oversized_run_lists_are_refused() {
        let mut json = serde_json::to_value(bundle()).unwrap();
        json["rank"] = 1.into();
        assert!(serde_json::from_value::<Bundle>(json).is_err());
        let mut x = bundle();
        x.figures = Some(Figures::Counts {
            a: vec![1; MAX_RUNS + 1],
            b: vec![1],
        });
        assert!(matches!(x.validate(&rule()), Err(Refusal::Malformed(_))));
    }

    #[test]
    fn a_lab_that_only_has_to_finish_carries_no_ratio() {
        let rule = LabRule {
            lab: 10,
            metric: "completes".into(),
            better: Better::Lower,
            min_effect: 1.0,
            completes: true,
        };
        let mut x = bundle();
        x.lab = 10;
        x.metric = "completes".into();
        x.min_effect = 1.0;
        x.ratio = None;
        x.figures = None;
        assert_eq!(x.validate(&rule), Ok(None));
        x.figures = Some(Figures::Counts {
            a: vec![1],
            b: vec![1],
        });
        x.ratio = Some(x.figures.as_ref().unwrap().ratio());
        assert!(matches!(x.validate(&rule), Err(Refusal::Mismatch { .. })));
    }
}
