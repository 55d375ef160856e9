//! Whether the controllers can see what they watch: the operator's `/readyz`.
//!
//! A watch that fails (its CRD missing, RBAC denied, the API server refusing) leaves a
//! controller blind while the process looks fine. Each failure is logged as a warning and
//! recorded here; `/readyz` fails while any watch failed within the last [`WINDOW`] (longer
//! than the watcher's longest retry backoff, 30 s), so a watch that keeps failing keeps the
//! replica unready, and one that recovered stops counting once its retries succeed.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a watch failure keeps `/readyz` failing.
pub const WINDOW: Duration = Duration::from_secs(90);

/// The latest watch failure of each controller.
#[derive(Default)]
pub struct Health {
    failures: Mutex<BTreeMap<&'static str, (Instant, String)>>,
}

impl Health {
    /// The watch of `what` (e.g. `experiments`) failed with `error`, now.
    pub fn watch_failed(&self, what: &'static str, error: &str) {
        self.watch_failed_at(what, error, Instant::now());
    }

    pub fn watch_failed_at(&self, what: &'static str, error: &str, at: Instant) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(what, (at, error.to_string()));
    }

    /// Take one result of a controller's run stream: a failed watch is a warning and is
    /// recorded; a failed reconcile was already logged by the reconciler.
    pub fn observe<T, E: std::fmt::Display>(
        &self,
        what: &'static str,
        res: Result<T, kube::runtime::controller::Error<E, kube::runtime::watcher::Error>>,
    ) {
        use kube::runtime::controller::Error as C;
        match res {
            Ok(_) => {}
            Err(C::QueueError(e)) => {
                tracing::warn!(error = %e, watching = what, "a watch failed; retrying with backoff (the operator is not ready meanwhile)");
                self.watch_failed(what, &e.to_string());
            }
            Err(e) => tracing::debug!(error = %e, controller = what, "reconcile error"),
        }
    }

    /// Why the operator is not ready, if a watch failed recently.
    pub fn problem(&self) -> Option<String> {
        self.problem_at(Instant::now())
    }

    pub fn problem_at(&self, now: Instant) -> Option<String> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let recent: Vec<String> = failures
            .iter()
            .filter(|(_, (at, _))| now.saturating_duration_since(*at) < WINDOW)
            .map(|(what, (at, error))| {
                format!(
                    "watching {what} failed {} s ago: {error}",
                    now.saturating_duration_since(*at).as_secs()
                )
            })
            .collect();
        (!recent.is_empty()).then(|| recent.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recent_watch_failure_is_a_problem_and_an_old_one_is_not() {
        let h = Health::default();
        let t0 = Instant::now();
        assert_eq!(h.problem_at(t0), None);
        h.watch_failed_at("experiments", "ErrorResponse 404 not found", t0);
        let p = h.problem_at(t0 + Duration::from_secs(10)).unwrap();
        assert!(
            p.contains("watching experiments failed 10 s ago: ErrorResponse 404"),
            "{p}"
        );
        assert_eq!(h.problem_at(t0 + WINDOW + Duration::from_secs(1)), None);
        // A watch that keeps failing stays a problem.
        h.watch_failed_at("experiments", "again", t0 + WINDOW);
        assert!(h.problem_at(t0 + WINDOW + Duration::from_secs(1)).is_some());
    }
}
