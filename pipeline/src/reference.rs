//! The expected result of a run, computed in-process from the seed: every window the source's
//! stream gives, with its exact figures, and how many records the parser must reject. A run's
//! log is checked against it ([`compare`]): the tests of conservation, the chaos suite, and the
//! local runner's summary at least once.

use crate::event::{EventRef, Latency, WindowResult, split_key};
use crate::generate::Generator;
use crate::json::parse_into;
use crate::seglog::{LogError, read_log};
use crate::window::{latency_histogram, percentiles};
use pipeline_plan::{ParseMode, SourceKnobs};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A window: (start µs, service, route).
pub type WindowKey = (u64, String, String);

/// The figures of one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Figures {
    pub count: u64,
    pub errors: u64,
    pub bytes: u64,
    pub latency_us: Latency,
}

/// What the seed gives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expected {
    pub windows: BTreeMap<WindowKey, Figures>,
    /// Records the parser rejects (dead letters).
    pub invalid: u64,
}

impl Expected {
    /// Events inside the windows.
    pub fn events(&self) -> u64 {
        self.windows.values().map(|f| f.count).sum()
    }
}

/// The windows the first `knobs.events` events of the source's stream give, naively.
pub fn compute(knobs: &SourceKnobs, window_ms: u64) -> Expected {
    let window_us = window_ms.max(1) * 1000;
    let mut g = Generator::new(knobs);
    let mut groups: BTreeMap<WindowKey, (u64, u64, u64, hdrhistogram::Histogram<u32>)> =
        BTreeMap::new();
    let (mut rec, mut out) = (Vec::new(), Vec::new());
    let mut invalid = 0;
    for _ in 0..knobs.events {
        rec.clear();
        out.clear();
        g.next_into(&mut rec);
        if parse_into(ParseMode::Owned, &rec, &mut out).is_err() {
            invalid += 1;
            continue;
        }
        let Ok(ev) = EventRef::decode(&out) else {
            invalid += 1;
            continue;
        };
        let Ok((service, route)) = split_key(ev.key) else {
            invalid += 1;
            continue;
        };
        let start = ev.ts_us - ev.ts_us % window_us;
        let w = groups
            .entry((start, service.to_string(), route.to_string()))
            .or_insert_with(|| (0, 0, 0, latency_histogram()));
        w.0 += 1;
        w.1 += u64::from(ev.status >= 500);
        w.2 += ev.bytes;
        w.3.saturating_record(u64::from(ev.latency_us));
    }
    let windows = groups
        .into_iter()
        .map(|(k, (count, errors, bytes, h))| {
            (
                k,
                Figures {
                    count,
                    errors,
                    bytes,
                    latency_us: percentiles(&h),
                },
            )
        })
        .collect();
    Expected { windows, invalid }
}

/// What a sink's log holds, window by window (the first copy of a window seen twice).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Persisted {
    pub windows: BTreeMap<WindowKey, Figures>,
    /// Window results the log holds more than once.
    pub duplicated: u64,
    /// Records that are not window results.
    pub undecodable: u64,
}

/// Read a sink's log (every CRC checked).
pub fn read_persisted(dir: &Path) -> Result<Persisted, LogError> {
    let mut p = Persisted::default();
    read_log(dir, |rec| match WindowResult::decode(rec) {
        Ok(w) => {
            let key = (w.window_start_us, w.service, w.route);
            let figures = Figures {
                count: w.count,
                errors: w.errors,
                bytes: w.bytes,
                latency_us: w.latency_us,
            };
            match p.windows.entry(key) {
                std::collections::btree_map::Entry::Occupied(_) => p.duplicated += 1,
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(figures);
                }
            }
        }
        Err(_) => p.undecodable += 1,
    })?;
    Ok(p)
}

/// A log compared with what the seed gives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Comparison {
    pub windows_expected: u64,
    pub windows_in_log: u64,
    /// Expected windows the log does not have.
    pub missing_windows: u64,
    /// Windows in both whose figures differ.
    pub differing_windows: u64,
    /// Of those, windows with more events in the log than the seed gives (never right: a
    /// loss makes windows smaller, only a double count makes them larger).
    pub inflated_windows: u64,
    /// Windows in the log the seed does not give.
    pub extra_windows: u64,
    /// Window results in the log more than once.
    pub duplicated_windows: u64,
    /// Records in the log that are not window results.
    pub undecodable_records: u64,
    pub events_expected: u64,
    pub events_in_log: u64,
    /// Records the seed makes the parser reject.
    pub dead_letters_expected: u64,
}

impl Comparison {
    /// The log is exactly what the seed gives, each window once.
    pub fn is_exact(&self) -> bool {
        self.missing_windows == 0
            && self.differing_windows == 0
            && self.extra_windows == 0
            && self.duplicated_windows == 0
            && self.undecodable_records == 0
    }

    /// What is wrong, for people (`None` when exact).
    pub fn problem(&self) -> Option<String> {
        if self.is_exact() {
            return None;
        }
        let mut parts = Vec::new();
        for (n, what) in [
            (self.missing_windows, "missing"),
            (self.differing_windows, "with other figures"),
            (self.extra_windows, "not given by the seed"),
            (self.duplicated_windows, "persisted twice"),
        ] {
            if n > 0 {
                parts.push(format!("{n} windows {what}"));
            }
        }
        if self.undecodable_records > 0 {
            parts.push(format!(
                "{} records that are not window results",
                self.undecodable_records
            ));
        }
        Some(format!(
            "the log differs from what the seed gives: {}; {} of {} events in it",
            parts.join(", "),
            self.events_in_log,
            self.events_expected
        ))
    }
}

/// Compare the log in `dir` with what the first `events` events of the source `knobs` give
/// with windows of `window_ms`.
pub fn check_log(
    knobs: &SourceKnobs,
    window_ms: u64,
    events: u64,
    dir: &Path,
) -> Result<Comparison, LogError> {
    let knobs = SourceKnobs {
        events,
        ..knobs.clone()
    };
    let got = read_persisted(dir)?;
    Ok(compare(&compute(&knobs, window_ms), &got))
}

/// Compare a log with what the seed gives.
pub fn compare(want: &Expected, got: &Persisted) -> Comparison {
    let mut c = Comparison {
        windows_expected: want.windows.len() as u64,
        windows_in_log: got.windows.len() as u64,
        duplicated_windows: got.duplicated,
        undecodable_records: got.undecodable,
        events_expected: want.events(),
        events_in_log: got.windows.values().map(|f| f.count).sum(),
        dead_letters_expected: want.invalid,
        ..Comparison::default()
    };
    for (k, w) in &want.windows {
        match got.windows.get(k) {
            None => c.missing_windows += 1,
            Some(g) if g != w => {
                c.differing_windows += 1;
                c.inflated_windows += u64::from(g.count > w.count);
            }
            Some(_) => {}
        }
    }
    c.extra_windows = got
        .windows
        .keys()
        .filter(|k| !want.windows.contains_key(*k))
        .count() as u64;
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(events: u64) -> SourceKnobs {
        SourceKnobs {
            events,
            seed: 7,
            malformed_rate: 0.02,
            ..SourceKnobs::default()
        }
    }

    #[test]
    fn a_log_that_is_wrong_in_any_way_is_not_exact() {
        let want = compute(&knobs(50_000), 100);
        assert!(want.invalid > 0 && want.windows.len() > 10);
        let exact = Persisted {
            windows: want.windows.clone(),
            ..Persisted::default()
        };
        assert!(compare(&want, &exact).is_exact());
        assert_eq!(compare(&want, &exact).problem(), None);

        let mut missing = exact.clone();
        missing.windows.pop_first();
        let c = compare(&want, &missing);
        assert_eq!((c.missing_windows, c.is_exact()), (1, false));

        let mut off_by_one = exact.clone();
        if let Some(f) = off_by_one.windows.values_mut().next() {
            f.count += 1;
        }
        let c = compare(&want, &off_by_one);
        assert_eq!((c.differing_windows, c.inflated_windows), (1, 1));

        let mut extra = exact.clone();
        extra.windows.insert(
            (1, "x".into(), "/y".into()),
            want.windows.values().next().cloned().unwrap(),
        );
        assert_eq!(compare(&want, &extra).extra_windows, 1);

        let twice = Persisted {
            duplicated: 1,
            ..exact.clone()
        };
        assert!(!compare(&want, &twice).is_exact());
        let garbage = Persisted {
            undecodable: 1,
            ..exact
        };
        let c = compare(&want, &garbage);
        assert!(
            c.problem()
                .is_some_and(|p| p.contains("not window results"))
        );
    }

    #[test]
    fn the_reference_is_a_function_of_the_seed() {
        assert_eq!(compute(&knobs(20_000), 100), compute(&knobs(20_000), 100));
        let other = SourceKnobs {
            seed: 8,
            ..knobs(20_000)
        };
        assert_ne!(compute(&other, 100), compute(&knobs(20_000), 100));
    }
}
