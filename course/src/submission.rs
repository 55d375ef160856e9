//! A leaderboard submission (`observatory lab submit N`), made from the student's last check
//! of a lab: the check's verdict, ratio and every run's figures, the digest of the change that
//! was checked, the commit, the machine's fingerprint and the prediction made before the check.
//! A failed check, a check of something other than the student's change, and a change edited
//! since it was checked are refused here, before anything is sent.

use crate::check::Outcome;
use crate::spec::{Lab, Mode};
use observatory_leaderboard::bundle::BUNDLE_VERSION;
use observatory_leaderboard::{Bundle, Fingerprint, LabRule};

/// What the server checks a lab's bundles against: the course's own rule for the lab.
pub fn rule_of(lab: &Lab) -> LabRule {
    let m = &lab.spec.measure;
    LabRule {
        lab: lab.number(),
        metric: m.metric.clone(),
        better: m.better(),
        min_effect: m.min_effect,
        completes: m.mode == Mode::Completes,
    }
}

/// Why the last check cannot be submitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotSubmittable {
    #[error("lab {0} has no check to submit: run `observatory lab check {0}` first")]
    NoCheck(u32),
    #[error("lab {lab}'s last check did not pass ({verdict}): only a passed check is submitted")]
    Failed { lab: u32, verdict: String },
    #[error(
        "lab {lab}'s last check ran the {variant}, not your change: run `observatory lab check {lab}`"
    )]
    NotYours { lab: u32, variant: String },
    #[error(
        "lab {0}: your change was edited after it was checked, so the check is stale: run `observatory lab check {0}` again"
    )]
    Stale(u32),
}

/// What a bundle carries besides the check.
#[derive(Clone, Debug, PartialEq)]
pub struct SubmitContext {
    /// The digest of the student's change as it is now ([`Lab::change_sha256`]).
    pub change_sha256_now: String,
    pub commit: String,
    pub fingerprint: Fingerprint,
    /// The prediction made before the check (the last one in progress).
    pub prediction: Option<f64>,
    /// When the check ran (RFC 3339).
    pub checked_at: String,
    pub idempotency_key: String,
}

/// The bundle for `outcome`, the student's last check of `lab`.
pub fn bundle_of(
    lab: &Lab,
    outcome: &Outcome,
    cx: SubmitContext,
) -> Result<Bundle, NotSubmittable> {
    let n = lab.number();
    if outcome.lab != n {
        return Err(NotSubmittable::NoCheck(n));
    }
    if outcome.variant != "student" {
        return Err(NotSubmittable::NotYours {
            lab: n,
            variant: outcome.variant.clone(),
        });
    }
    if !outcome.passed {
        return Err(NotSubmittable::Failed {
            lab: n,
            verdict: outcome.verdict.clone(),
        });
    }
    if outcome.change_sha256.as_deref() != Some(cx.change_sha256_now.as_str()) {
        return Err(NotSubmittable::Stale(n));
    }
    Ok(Bundle {
        version: BUNDLE_VERSION,
        idempotency_key: cx.idempotency_key,
        lab: n,
        metric: outcome.metric.clone(),
        better: outcome.better,
        min_effect: outcome.min_effect,
        passed: outcome.passed,
        conserved: outcome.conserved,
        correct: outcome.correct,
        ratio: outcome.ratio,
        figures: outcome.figures.clone(),
        prediction: cx.prediction,
        commit: cx.commit,
        change_sha256: cx.change_sha256_now,
        fingerprint: cx.fingerprint,
        checked_at: cx.checked_at,
    })
}

/// This machine's fingerprint (what is unknown stays empty or 0; the A/A noise figure is the
/// caller's, from an A/A run if one was made).
pub fn this_machine() -> Fingerprint {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let field = |text: &str, name: &str| -> Option<String> {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let cpuinfo = read("/proc/cpuinfo");
    let memory_kib: u64 = field(&read("/proc/meminfo"), "MemTotal")
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Fingerprint {
        cpu_model: field(&cpuinfo, "model name").unwrap_or_default(),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
        memory_bytes: memory_kib.saturating_mul(1024),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        rustc,
        aa_noise: None,
    }
}
