//! The memory bound of each stage: what its resident memory can reach whatever happens
//! downstream (a slow, stopped or dead neighbour), as a function of its knobs only. Every queue
//! on the data path is bounded in frames and every frame in bytes (`max_frame_bytes`), and the
//! aggregate's open windows are capped (`max_open_windows`), so a stall fills them and then
//! blocks: it never makes them grow. The README's "Memory bounds" table is this function, and
//! the slow-sink test (`runner/tests/backpressure.rs`) checks measured peak RSS against it.

use crate::net::READ_BUFFER;
use crate::window::window_bytes;
use pipeline_plan::{Plan, PlanError, Role, StageConfig, StageKnobs};

/// Resident memory of a stage with empty queues: binary, runtimes, allocator arenas, metrics,
/// the admin server (measured: 9-12 MiB idle, ~25 MiB under load).
pub const BASE_BYTES: u64 = 48 << 20;

/// The allocator does not hand freed pages back at once (jemalloc decays them over ~10 s), and
/// frames are allocated in size classes: the data terms count twice.
pub const ALLOCATOR_SLACK: u64 = 2;

/// One term of a bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub what: &'static str,
    pub bytes: u64,
}

/// A stage's memory bound, with its terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryBound {
    pub terms: Vec<Term>,
}

impl MemoryBound {
    /// `BASE_BYTES + ALLOCATOR_SLACK x (sum of the data terms)`.
    pub fn bytes(&self) -> u64 {
        BASE_BYTES + ALLOCATOR_SLACK * self.terms.iter().map(|t| t.bytes).sum::<u64>()
    }
}

/// The bound of one stage of `plan`, wired as the plan wires it (one connection from each
/// replica upstream, one to each replica downstream).
pub fn of_plan(plan: &Plan, role: Role) -> Result<MemoryBound, PlanError> {
    let down = plan
        .downstream_of(role)
        .map_or(0, |d| plan.replicas(d) as usize);
    let cfg = plan.stage_config(
        role,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &vec![String::new(); down],
    )?;
    Ok(memory_bound(&cfg))
}

/// The bound of the stage `cfg` describes.
pub fn memory_bound(cfg: &StageConfig) -> MemoryBound {
    let common = cfg.knobs.common();
    let cap = u64::from(common.queue_capacity);
    let frame = u64::from(common.max_frame_bytes);
    let lanes = cfg.downstream.len().max(1) as u64;
    let upstreams = u64::from(cfg.upstreams.max(1));
    let mut terms = Vec::new();
    let mut term = |what, bytes| terms.push(Term { what, bytes });
    if !matches!(cfg.knobs, StageKnobs::Source(_)) {
        term(
            "per upstream connection: read buffer + one frame being read",
            upstreams * (READ_BUFFER as u64 + frame),
        );
        term("input queue: queue_capacity frames", cap * frame);
    }
    let alo = common.delivery == pipeline_plan::Delivery::AtLeastOnce;
    match &cfg.knobs {
        StageKnobs::Source(k) => {
            term("the frame being filled", frame);
            if alo {
                term(
                    "at least once: max_unacked_batches positions (64 bytes each)",
                    u64::from(k.max_unacked_batches) * 64,
                );
            }
        }
        StageKnobs::Parse(k) => term(
            "batches in flight: workers x (input + output frame)",
            u64::from(k.workers) * 2 * frame,
        ),
        StageKnobs::Aggregate(k) => {
            term(
                "worker queues: workers x queue_capacity frames",
                u64::from(k.workers) * cap * frame,
            );
            term(
                "open windows: max_open_windows x one window",
                u64::from(k.max_open_windows) * window_bytes() as u64,
            );
            if alo {
                term(
                    "at least once: results kept until the sink acknowledges them, queue_capacity frames per downstream",
                    lanes * cap * frame,
                );
            }
        }
        StageKnobs::Sink(_) => term(
            "writer queue: queue_capacity frames + the log's write buffer",
            cap * frame + (256 << 10),
        ),
    }
    if !matches!(cfg.knobs, StageKnobs::Sink(_)) {
        term(
            "output queues: queue_capacity frames, shared and per downstream",
            (1 + lanes) * cap * frame,
        );
    }
    MemoryBound { terms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_grows_with_the_knobs_it_names_and_nothing_else() {
        use pipeline_plan::Role::*;
        let bound = |role, set: &[&str]| {
            let mut p = Plan::new("t");
            for s in set {
                p.assign(s).unwrap();
            }
            of_plan(&p, role).unwrap().bytes()
        };
        for role in Role::CHAIN {
            let base = bound(role, &[]);
            let more = bound(role, &[&format!("{role}.max_frame_bytes=16777216")]);
            assert!(more > base, "{role}");
            // A stall's length is not a knob: the same knobs give the same bound.
            assert_eq!(bound(role, &[]), base);
        }
        let fewer = bound(Aggregate, &["aggregate.max_open_windows=1024"]);
        assert!(fewer < bound(Aggregate, &[]));
        // More downstream replicas: more lanes to hold frames for.
        assert!(bound(Parse, &["aggregate.replicas=3"]) > bound(Parse, &[]));
        // At least once, the aggregate keeps what the sink has not acknowledged, the source
        // where each unacknowledged batch started.
        let alo = "all.delivery=at_least_once";
        assert!(bound(Aggregate, &[alo]) > bound(Aggregate, &[]));
        assert!(bound(Source, &[alo, "source.max_unacked_batches=65535"]) > bound(Source, &[alo]));
        assert_eq!(bound(Parse, &[alo]), bound(Parse, &[]));
    }

    /// `cargo test -p pipeline --lib bounds -- --ignored --nocapture` prints the default
    /// bounds (the README's table).
    #[test]
    #[ignore]
    fn print_the_default_bounds() {
        let plan = Plan::new("t");
        for role in Role::CHAIN {
            let b = of_plan(&plan, role).unwrap();
            println!("{role}: {} MiB", b.bytes() >> 20);
            for t in &b.terms {
                println!("    {:>8.1} MiB  {}", t.bytes as f64 / 1048576.0, t.what);
            }
        }
        println!("window: {} bytes", crate::window::window_bytes());
    }
}
