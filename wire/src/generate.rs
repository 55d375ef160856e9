//! The source's workload: a seeded, deterministic stream of JSON web-request logs.
//!
//! The same knobs always give the same bytes, so a test can regenerate the stream a pipeline run
//! consumed and compute the expected aggregates in-process. Keys (service, route) are drawn from
//! a Zipf distribution (an alias table, O(1) per draw); event time advances by a fixed step per
//! event, so windows are deterministic too. A `malformed_rate` fraction of records is broken on
//! purpose, one of four ways, each mapping to one parse drop reason.

use crate::event::DropReason;
use pipeline_plan::{EventTime, SourceKnobs};
use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};
use rand_distr::Distribution;
use rand_distr::weighted::WeightedAliasIndex;
use rand_pcg::Pcg64Mcg;

/// Event time of the first event, in microseconds since the Unix epoch (2025-11-24T16:00:00Z).
pub const BASE_TS_US: u64 = 1_764_000_000_000_000;

const SERVICES: [&str; 16] = [
    "checkout",
    "cart",
    "catalog",
    "search",
    "payments",
    "users",
    "auth",
    "inventory",
    "shipping",
    "orders",
    "reviews",
    "recommend",
    "notify",
    "pricing",
    "media",
    "gateway",
];
const RESOURCES: [&str; 16] = [
    "items",
    "items/:id",
    "sessions",
    "search",
    "orders/:id",
    "orders",
    "profile",
    "tokens",
    "stock/:sku",
    "quotes",
    "reviews/:id",
    "feed",
    "events",
    "prices/:sku",
    "assets/:id",
    "health",
];
const REGIONS: [&str; 4] = ["eu-west-1", "us-east-1", "ap-south-1", "sa-east-1"];
const AGENTS: [&str; 4] = [
    "curl/8.5.0",
    "okhttp/4.12",
    "Go-http-client/2.0",
    "python-requests/2.32",
];
const OK_STATUSES: [u16; 8] = [200, 200, 200, 200, 200, 201, 204, 404];
const ERR_STATUSES: [u16; 3] = [500, 502, 503];
const HEX: &[u8; 16] = b"0123456789abcdef";

/// What kind of record [`Generator::next_into`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Generated {
    Valid,
    /// Broken on purpose; the parser must drop it for this reason.
    Malformed(DropReason),
}

struct Key {
    /// `"service":"…","route":"…","method":"…",` pre-rendered: one copy per event.
    fragment: Vec<u8>,
    /// The same with a byte that is not UTF-8 in the route.
    fragment_bad_utf8: Vec<u8>,
    base_latency_us: u32,
    base_bytes: u32,
    region: &'static str,
}

/// A position of a [`Generator`] (its random state and event index: 24 bytes).
#[derive(Clone, Debug)]
pub struct Mark {
    rng: Pcg64Mcg,
    index: u64,
}

/// The deterministic event generator.
pub struct Generator {
    rng: Pcg64Mcg,
    keys: Vec<Key>,
    zipf: WeightedAliasIndex<f64>,
    index: u64,
    base_us: u64,
    step_us: u64,
    malformed_rate: f64,
    error_rate: f64,
}

/// Name of service `i`.
pub fn service_name(i: usize) -> String {
    match SERVICES.get(i) {
        Some(s) => (*s).to_string(),
        None => format!("svc-{i}"),
    }
}

/// Route `r` of a service.
pub fn route_name(service: &str, r: usize) -> String {
    let resource = RESOURCES[r % RESOURCES.len()];
    let version = 1 + (r / RESOURCES.len()) % 3;
    if r < RESOURCES.len() * 3 {
        format!("/api/v{version}/{service}/{resource}")
    } else {
        format!("/api/v{version}/{service}/{resource}-{r}")
    }
}

impl Generator {
    pub fn new(knobs: &SourceKnobs) -> Self {
        let mut rng = Pcg64Mcg::seed_from_u64(knobs.seed);
        let services = knobs.services as usize;
        let routes = knobs.routes as usize;
        let mut keys = Vec::with_capacity(services * routes);
        for s in 0..services {
            let service = service_name(s);
            for r in 0..routes {
                let route = route_name(&service, r);
                let method = ["GET", "GET", "GET", "POST", "PUT", "DELETE"][rng.random_range(0..6)];
                let fragment = format!(
                    "\"service\":\"{service}\",\"route\":\"{route}\",\"method\":\"{method}\","
                )
                .into_bytes();
                let mut fragment_bad_utf8 = fragment.clone();
                // Replace the route's leading '/' with a byte pair that is not UTF-8.
                let at = "\"service\":\"".len() + service.len() + "\",\"route\":\"".len();
                debug_assert_eq!(fragment[at], b'/');
                fragment_bad_utf8.splice(at..at + 1, [0xC3u8, 0x28]);
                // Log-uniform base latency between 200 µs and 200 ms.
                let base_latency_us = (200.0 * 1000f64.powf(rng.random::<f64>())) as u32;
                let base_bytes = rng.random_range(200..20_000);
                let region = REGIONS[rng.random_range(0..REGIONS.len())];
                keys.push(Key {
                    fragment,
                    fragment_bad_utf8,
                    base_latency_us,
                    base_bytes,
                    region,
                });
            }
        }
        // Hot keys are spread over services rather than all in the first one.
        keys.shuffle(&mut rng);
        let weights: Vec<f64> = (0..keys.len())
            .map(|k| 1.0 / ((k + 1) as f64).powf(knobs.zipf_skew))
            .collect();
        // Weights are finite and positive for the validated knob ranges.
        let zipf = WeightedAliasIndex::new(weights).unwrap_or_else(|_| {
            WeightedAliasIndex::new(vec![1.0]).expect("a single positive weight is valid")
        });
        Generator {
            rng,
            keys,
            zipf,
            index: 0,
            base_us: match knobs.event_time {
                EventTime::Fixed => BASE_TS_US,
                EventTime::WallClock => crate::event::now_ns() / 1000,
            },
            step_us: knobs.event_time_step_us,
            malformed_rate: knobs.malformed_rate,
            error_rate: knobs.error_rate,
        }
    }

    /// Events generated so far.
    pub fn generated(&self) -> u64 {
        self.index
    }

    /// Where the generator is: [`Generator::restore`] goes back there, and the same records
    /// follow (a resend regenerates instead of keeping bytes).
    pub fn mark(&self) -> Mark {
        Mark {
            rng: self.rng.clone(),
            index: self.index,
        }
    }

    /// Go back (or forward) to a position taken with [`Generator::mark`].
    pub fn restore(&mut self, mark: &Mark) {
        self.rng = mark.rng.clone();
        self.index = mark.index;
    }

    /// Event time of event `index`.
    pub fn ts_of(&self, index: u64) -> u64 {
        self.base_us + index * self.step_us
    }

    /// Event time of the next event.
    pub fn next_ts(&self) -> u64 {
        self.base_us + self.index * self.step_us
    }

    /// Append the next record (one JSON object, no newline) to `out`.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> Generated {
        let ts = self.next_ts();
        self.index += 1;
        let k = self.zipf.sample(&mut self.rng);
        let key = &self.keys[k];
        let trace = (self.rng.next_u64(), self.rng.next_u64());
        let status = if self.rng.random::<f64>() < self.error_rate {
            ERR_STATUSES[(trace.0 % 3) as usize]
        } else {
            OK_STATUSES[(trace.0 % 8) as usize]
        };
        let u = self.rng.random::<f64>();
        let tail = if trace.1.is_multiple_of(100) {
            8.0
        } else {
            1.0
        };
        let latency_us = ((key.base_latency_us as f64) * (0.5 + u) * tail) as u64 + 1;
        let bytes = ((key.base_bytes as f64) * (0.25 + 1.5 * (1.0 - u))) as u64;
        let agent = AGENTS[(trace.1 % 4) as usize];
        let kind = if self.malformed_rate > 0.0 && self.rng.random::<f64>() < self.malformed_rate {
            match self.rng.random_range(0..4) {
                0 => Generated::Malformed(DropReason::BadJson),
                1 => Generated::Malformed(DropReason::MissingField),
                2 => Generated::Malformed(DropReason::BadUtf8),
                _ => Generated::Malformed(DropReason::OutOfRange),
            }
        } else {
            Generated::Valid
        };

        let start = out.len();
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(b"{\"ts\":");
        out.extend_from_slice(num.format(ts).as_bytes());
        out.extend_from_slice(b",\"trace_id\":\"");
        for word in [trace.0, trace.1] {
            for i in (0..16).rev() {
                out.push(HEX[((word >> (i * 4)) & 0xf) as usize]);
            }
        }
        out.extend_from_slice(b"\",");
        if kind == Generated::Malformed(DropReason::BadUtf8) {
            out.extend_from_slice(&key.fragment_bad_utf8);
        } else {
            out.extend_from_slice(&key.fragment);
        }
        if kind != Generated::Malformed(DropReason::MissingField) {
            out.extend_from_slice(b"\"status\":");
            let status = if kind == Generated::Malformed(DropReason::OutOfRange) {
                1000 + status
            } else {
                status
            };
            out.extend_from_slice(num.format(status).as_bytes());
            out.push(b',');
        }
        out.extend_from_slice(b"\"latency_us\":");
        out.extend_from_slice(num.format(latency_us).as_bytes());
        out.extend_from_slice(b",\"bytes\":");
        out.extend_from_slice(num.format(bytes).as_bytes());
        out.extend_from_slice(b",\"region\":\"");
        out.extend_from_slice(key.region.as_bytes());
        out.extend_from_slice(b"\",\"user_agent\":\"");
        out.extend_from_slice(agent.as_bytes());
        out.extend_from_slice(b"\"}");
        if kind == Generated::Malformed(DropReason::BadJson) {
            // Truncate mid-record, as a torn write would.
            let len = out.len() - start;
            out.truncate(start + len / 2);
        }
        kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(seed: u64, malformed: f64) -> SourceKnobs {
        SourceKnobs {
            seed,
            malformed_rate: malformed,
            ..SourceKnobs::default()
        }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let run = |seed| {
            let mut g = Generator::new(&knobs(seed, 0.1));
            let mut out = Vec::new();
            for _ in 0..2000 {
                g.next_into(&mut out);
                out.push(b'\n');
            }
            out
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn valid_records_are_json_of_about_200_bytes() {
        let mut g = Generator::new(&knobs(1, 0.0));
        let mut total = 0;
        for _ in 0..1000 {
            let mut out = Vec::new();
            assert_eq!(g.next_into(&mut out), Generated::Valid);
            let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
            assert!(v["status"].as_u64().unwrap() < 600);
            assert_eq!(v["trace_id"].as_str().unwrap().len(), 32);
            total += out.len();
        }
        let mean = total / 1000;
        assert!((180..=240).contains(&mean), "mean record size {mean}");
    }

    #[test]
    fn zipf_makes_hot_keys() {
        let count_top = |skew: f64| {
            let mut g = Generator::new(&SourceKnobs {
                zipf_skew: skew,
                ..knobs(3, 0.0)
            });
            let mut counts = std::collections::HashMap::new();
            for _ in 0..20_000 {
                let mut out = Vec::new();
                g.next_into(&mut out);
                let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
                let key = format!("{}{}", v["service"], v["route"]);
                *counts.entry(key).or_insert(0u32) += 1;
            }
            counts.values().copied().max().unwrap()
        };
        // 256 keys: uniform gives ~78 per key; s=1.1 puts ~1/4.5 of the mass on the top key.
        assert!(count_top(0.0) < 150, "uniform top {}", count_top(0.0));
        assert!(count_top(1.1) > 3000, "zipf top {}", count_top(1.1));
    }

    #[test]
    fn malformed_rate_is_honoured_with_all_four_kinds() {
        let mut g = Generator::new(&knobs(5, 0.2));
        let mut kinds = std::collections::HashMap::new();
        for _ in 0..10_000 {
            let mut out = Vec::new();
            *kinds.entry(g.next_into(&mut out)).or_insert(0u32) += 1;
        }
        let valid = kinds[&Generated::Valid];
        assert!((7700..8300).contains(&valid), "valid {valid}");
        for r in [
            DropReason::BadJson,
            DropReason::MissingField,
            DropReason::BadUtf8,
            DropReason::OutOfRange,
        ] {
            assert!(kinds[&Generated::Malformed(r)] > 350, "{r:?}: {kinds:?}");
        }
    }

    #[test]
    fn event_time_advances_by_the_step() {
        let mut g = Generator::new(&SourceKnobs {
            event_time_step_us: 25,
            ..knobs(1, 0.0)
        });
        let mut out = Vec::new();
        g.next_into(&mut out);
        out.clear();
        g.next_into(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ts"].as_u64().unwrap(), BASE_TS_US + 25);
    }
}
