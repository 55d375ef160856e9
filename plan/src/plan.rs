//! The plan: which stages run, how many replicas of each, with which knobs, wired in which
//! order. One plan drives both the local runner (child processes on loopback) and the operator
//! (Kubernetes objects).
//!
//! Wiring, the same in both modes: every replica of a stage opens one connection to every
//! replica of the next stage. The source deals its batches round-robin over the parse
//! replicas; parse sends each event to the aggregate replica its key hashes to (the aggregate
//! is partitioned by key, so every window is computed in one place); the aggregate replicas all
//! feed the one sink. So a stage expects one stream per replica of the stage before it.

use crate::PlanError;
use crate::config::{StageConfig, StageKnobs};
use crate::knobs::Role;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Most replicas of one stage.
pub const MAX_REPLICAS: u32 = 64;

/// One stage of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanStage {
    pub knobs: StageKnobs,
    pub replicas: u32,
}

impl PlanStage {
    pub fn role(&self) -> Role {
        self.knobs.role()
    }
}

/// A pipeline: a source followed by a contiguous prefix of `parse -> aggregate -> sink`.
/// The last stage present discards what it would forward, counting it under the drop reason
/// `no_downstream`.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub name: String,
    /// Constant labels put on every metric of every stage (e.g. `run = "baseline"`).
    pub labels: BTreeMap<String, String>,
    stages: Vec<PlanStage>,
}

fn check_replicas(role: Role, replicas: u32) -> Result<(), PlanError> {
    if !(1..=MAX_REPLICAS).contains(&replicas) {
        return Err(PlanError::Knob {
            knob: format!("{role}.replicas"),
            message: format!("must be between 1 and {MAX_REPLICAS}, got {replicas}"),
        });
    }
    if role == Role::Sink && replicas != 1 {
        return Err(PlanError::Knob {
            knob: "sink.replicas".into(),
            message: format!("the sink writes one log: must be 1, got {replicas}"),
        });
    }
    Ok(())
}

impl Plan {
    /// The full four-stage pipeline with default knobs, one replica each.
    pub fn new(name: &str) -> Self {
        Plan {
            name: name.to_string(),
            labels: BTreeMap::new(),
            stages: Role::CHAIN
                .into_iter()
                .map(|r| PlanStage {
                    knobs: StageKnobs::defaults(r),
                    replicas: 1,
                })
                .collect(),
        }
    }

    /// A plan from explicit stages, which must be a source followed by a contiguous prefix of
    /// the rest of the chain.
    pub fn from_stages(name: &str, stages: Vec<PlanStage>) -> Result<Self, PlanError> {
        let roles: Vec<Role> = stages.iter().map(PlanStage::role).collect();
        if roles.is_empty() || roles[..] != Role::CHAIN[..roles.len()] {
            let got: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            return Err(PlanError::Shape(format!(
                "stages must be `source`, then optionally `parse`, `aggregate`, `sink` in that \
                 order without gaps; got [{}]",
                got.join(", ")
            )));
        }
        for s in &stages {
            check_replicas(s.role(), s.replicas)?;
        }
        Ok(Plan {
            name: name.to_string(),
            labels: BTreeMap::new(),
            stages,
        })
    }

    /// The delivery guarantee of the plan: every stage must have the same, and at least once
    /// needs the whole chain (acknowledgements come from the sink's log).
    pub fn delivery(&self) -> crate::Delivery {
        self.stages
            .first()
            .map_or(crate::Delivery::AtMostOnce, |s| s.knobs.common().delivery)
    }

    /// Parse and aggregate drop events further ahead than `max_future_skew_ms`: it must span
    /// at least 64 of the source's batches of event time, or the stream's own progress (across
    /// replicas and queues) would be taken for future timestamps.
    fn check_future_skew(&self, role: Role) -> Result<(), PlanError> {
        let Some(crate::StageKnobs::Source(src)) = self.knobs(Role::Source) else {
            return Ok(());
        };
        if !matches!(role, Role::Parse | Role::Aggregate) || !src.replay.is_empty() {
            return Ok(());
        }
        let Some(knobs) = self.knobs(role) else {
            return Ok(());
        };
        let span_us = src
            .event_time_step_us
            .saturating_mul(u64::from(src.batch_size))
            .saturating_mul(64);
        let skew_ms = knobs.common().max_future_skew_ms;
        if span_us > skew_ms.saturating_mul(1000) {
            return Err(PlanError::Knob {
                knob: format!("{role}.max_future_skew_ms"),
                message: format!(
                    "{skew_ms} ms is less than 64 source batches of event time \
                     (source.event_time_step_us x source.batch_size x 64 = {} ms): raise it",
                    span_us / 1000
                ),
            });
        }
        Ok(())
    }

    fn check_delivery(&self) -> Result<(), PlanError> {
        let first = self.delivery();
        if let Some(other) = self
            .stages
            .iter()
            .find(|s| s.knobs.common().delivery != first)
        {
            return Err(PlanError::Knob {
                knob: format!("{}.delivery", other.role()),
                message: format!(
                    "every stage must have the same delivery (the source has `{}`); set it \
                     with `--set all.delivery=...`",
                    serde_json::to_value(first)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ),
            });
        }
        if first != crate::Delivery::AtLeastOnce {
            return Ok(());
        }
        if self.stages.len() != Role::CHAIN.len() {
            return Err(PlanError::Shape(
                "delivery `at_least_once` needs the whole chain, source to sink: the sink's \
                 log is what acknowledges"
                    .into(),
            ));
        }
        if self.replicas(Role::Source) != 1 {
            return Err(PlanError::Shape(
                "delivery `at_least_once` takes one source replica (windows close on the \
                 batches of the one source stream)"
                    .into(),
            ));
        }
        // The source stops at `max_unacked_batches` batches; acks come only as windows close, so
        // those batches must span more than a window (twice, for the batch in flight).
        if let (Some(StageKnobs::Source(src)), Some(StageKnobs::Aggregate(agg))) =
            (self.knobs(Role::Source), self.knobs(Role::Aggregate))
        {
            let batch = src.batch_events();
            let span_us = u64::from(src.max_unacked_batches)
                .saturating_mul(batch)
                .saturating_mul(src.event_time_step_us);
            let need_us = agg.window_ms.saturating_mul(2000);
            if span_us < need_us {
                return Err(PlanError::Knob {
                    knob: "source.max_unacked_batches".into(),
                    message: format!(
                        "{} unacknowledged batches of {batch} events span {} ms of event \
                         time, less than two windows ({} ms): the source would wait for acks \
                         that come only as windows close",
                        src.max_unacked_batches,
                        span_us / 1000,
                        need_us / 1000
                    ),
                });
            }
        }
        Ok(())
    }

    /// The stages in data-flow order.
    pub fn stages(&self) -> &[PlanStage] {
        &self.stages
    }

    pub fn stage(&self, role: Role) -> Option<&PlanStage> {
        self.stages.iter().find(|s| s.role() == role)
    }

    /// A stage's knobs.
    pub fn knobs(&self, role: Role) -> Option<&StageKnobs> {
        self.stage(role).map(|s| &s.knobs)
    }

    /// Replicas of a stage (0 if absent).
    pub fn replicas(&self, role: Role) -> u32 {
        self.stage(role).map_or(0, |s| s.replicas)
    }

    /// The stage that receives `role`'s output, if any.
    pub fn downstream_of(&self, role: Role) -> Option<Role> {
        let at = self.stages.iter().position(|s| s.role() == role)?;
        self.stages.get(at + 1).map(PlanStage::role)
    }

    /// The stage that feeds `role`, if any.
    pub fn upstream_of(&self, role: Role) -> Option<Role> {
        let at = self.stages.iter().position(|s| s.role() == role)?;
        at.checked_sub(1).map(|i| self.stages[i].role())
    }

    /// Apply `stage.knob=value`; `all.knob=value` sets the knob on every stage that has it.
    /// `stage.replicas=N` sets a stage's replica count.
    pub fn assign(&mut self, assignment: &str) -> Result<(), PlanError> {
        let bad = || PlanError::BadAssignment(assignment.to_string());
        let (path, value) = assignment.split_once('=').ok_or_else(bad)?;
        let (stage, knob) = path.trim().split_once('.').ok_or_else(bad)?;
        self.set(stage, knob, value.trim())
    }

    /// Set one knob of one stage (`all` for every stage that has it), or its `replicas`.
    pub fn set(&mut self, stage: &str, knob: &str, value: &str) -> Result<(), PlanError> {
        if stage == "all" {
            let mut any = false;
            for s in self.stages.iter_mut().filter(|s| s.knobs.has(knob)) {
                s.knobs.set(knob, value)?;
                any = true;
            }
            return if any {
                Ok(())
            } else {
                Err(PlanError::UnknownKnob {
                    knob: format!("all.{knob}"),
                    known: "no stage has it".into(),
                })
            };
        }
        let role: Role = stage.parse()?;
        let s = self
            .stages
            .iter_mut()
            .find(|s| s.role() == role)
            .ok_or_else(|| PlanError::AbsentStage(stage.to_string()))?;
        if knob == "replicas" {
            let n: u32 = value.parse().map_err(|_| PlanError::Knob {
                knob: format!("{role}.replicas"),
                message: format!("must be a whole number, got `{value}`"),
            })?;
            check_replicas(role, n)?;
            s.replicas = n;
            return Ok(());
        }
        s.knobs.set(knob, value)
    }

    /// The config of one stage process. `downstream` holds the data addresses of the next
    /// stage (one connection each), required exactly when the plan has a next stage; the
    /// process expects one stream per replica of the stage before it.
    pub fn stage_config(
        &self,
        role: Role,
        listen: &str,
        admin: &str,
        downstream: &[String],
    ) -> Result<StageConfig, PlanError> {
        let knobs = self
            .knobs(role)
            .ok_or_else(|| PlanError::AbsentStage(role.to_string()))?
            .clone();
        match (self.downstream_of(role), downstream.is_empty()) {
            (Some(next), true) => {
                return Err(PlanError::Shape(format!(
                    "stage `{role}` needs the address of `{next}`"
                )));
            }
            (None, false) => {
                return Err(PlanError::Shape(format!(
                    "stage `{role}` is the last stage and takes no downstream"
                )));
            }
            _ => {}
        }
        self.check_delivery()?;
        self.check_future_skew(role)?;
        let upstreams = self.upstream_of(role).map_or(1, |u| self.replicas(u));
        let max_connections = knobs.common().max_connections;
        if max_connections < upstreams + 8 {
            return Err(PlanError::Knob {
                knob: format!("{role}.max_connections"),
                message: format!(
                    "must leave room for the {upstreams} upstream connections and 8 more, got \
                     {max_connections}"
                ),
            });
        }
        Ok(StageConfig {
            pipeline: self.name.clone(),
            listen: listen.to_string(),
            admin: admin.to_string(),
            downstream: downstream.to_vec(),
            upstreams,
            replica: 0,
            service: false,
            labels: self.labels.clone(),
            knobs,
        })
    }

    /// Read a plan file: `name`, optional `[labels]`, and one table per stage present
    /// (`[source]`, `[parse]`, ...) holding that stage's knobs and optionally `replicas`.
    pub fn from_toml(path: &str, text: &str) -> Result<Self, PlanError> {
        let cfg_err = |message: String| PlanError::Config {
            path: path.to_string(),
            message,
        };
        let mut table: Map<String, Value> =
            toml::from_str(text).map_err(|e| cfg_err(e.to_string()))?;
        let name = match table.remove("name") {
            Some(Value::String(s)) => s,
            None => "pipeline".to_string(),
            Some(other) => return Err(cfg_err(format!("`name` must be a string, got {other}"))),
        };
        let labels: BTreeMap<String, String> = match table.remove("labels") {
            None => BTreeMap::new(),
            Some(v) => serde_json::from_value(v)
                .map_err(|e| cfg_err(format!("`labels` must map strings to strings: {e}")))?,
        };
        let mut stages = Vec::new();
        for role in Role::CHAIN {
            match table.remove(role.as_str()) {
                None => {}
                Some(Value::Object(mut knobs)) => {
                    let replicas = match knobs.remove("replicas") {
                        None => 1,
                        Some(v) => {
                            v.as_u64()
                                .and_then(|n| u32::try_from(n).ok())
                                .ok_or_else(|| PlanError::Knob {
                                    knob: format!("{role}.replicas"),
                                    message: format!("must be a whole number, got {v}"),
                                })?
                        }
                    };
                    stages.push(PlanStage {
                        knobs: StageKnobs::from_map(role, knobs)?,
                        replicas,
                    });
                }
                Some(other) => {
                    return Err(cfg_err(format!("`{role}` must be a table, got {other}")));
                }
            }
        }
        if let Some(unknown) = table.keys().next() {
            return Err(cfg_err(format!(
                "unknown key `{unknown}` (expected name, labels, source, parse, aggregate, sink)"
            )));
        }
        let mut plan = Plan::from_stages(&name, stages)?;
        plan.labels = labels;
        Ok(plan)
    }

    /// The plan file text (every knob written out).
    pub fn to_toml(&self) -> String {
        let mut table = Map::new();
        table.insert("name".into(), Value::String(self.name.clone()));
        if !self.labels.is_empty() {
            let labels = self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            table.insert("labels".into(), Value::Object(labels));
        }
        for s in &self.stages {
            let mut knobs = s.knobs.to_map();
            if s.replicas != 1 {
                knobs.insert("replicas".into(), Value::from(s.replicas));
            }
            table.insert(s.role().to_string(), Value::Object(knobs));
        }
        toml::to_string(&table).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knobs::{Allocator, ParseMode, StateStrategy};

    fn stage(role: Role) -> PlanStage {
        PlanStage {
            knobs: StageKnobs::defaults(role),
            replicas: 1,
        }
    }

    #[test]
    fn a_mutant_is_named_but_no_knob_selects_it() {
        use crate::knobs::LabImpl;
        for (text, imp) in [
            ("baseline", LabImpl::Baseline),
            ("student", LabImpl::Student),
            ("reference", LabImpl::Reference),
            ("mutant-3", LabImpl::Mutant(3)),
        ] {
            assert_eq!(text.parse::<LabImpl>(), Ok(imp));
            assert_eq!(imp.to_string(), text);
        }
        for bad in ["mutant-0", "mutant-", "mutant-256", "mutant", "Student"] {
            assert!(bad.parse::<LabImpl>().is_err(), "{bad}");
        }
        let mut p = Plan::new("t");
        p.assign("all.lab_impl=student").unwrap();
        for bad in ["all.lab_impl=mutant", "all.lab_impl=mutant-1"] {
            assert!(p.assign(bad).is_err(), "{bad} was taken");
        }
    }

    #[test]
    fn at_least_once_is_refused_where_it_cannot_hold() {
        let config = |p: &Plan| p.stage_config(Role::Parse, "a:1", "a:2", &["b:1".into()]);
        let mut p = Plan::new("t");
        p.assign("all.delivery=at_least_once").unwrap();
        assert!(config(&p).is_ok(), "the default plan takes it");
        // One stage on its own.
        let mut mixed = Plan::new("t");
        mixed.assign("sink.delivery=at_least_once").unwrap();
        let e = config(&mixed).unwrap_err().to_string();
        assert!(
            e.contains("sink.delivery") && e.contains("same delivery"),
            "{e}"
        );
        // Batches that cannot be regenerated, or whose event times are not the same again.
        for (knob, set) in [
            ("source.replay", "source.replay=/tmp/events.jsonl"),
            ("source.event_time", "source.event_time=wall_clock"),
            ("source.event_time_step_us", "source.event_time_step_us=0"),
            // Lab 02's pipe sends what it is fed once: nothing to resend.
            ("source.lab_slot", "all.lab_slot=batcher"),
        ] {
            let mut q = Plan::new("t");
            q.assign(set).unwrap();
            let e = q
                .assign("all.delivery=at_least_once")
                .unwrap_err()
                .to_string();
            assert!(e.contains(knob), "{set}: {e}");
        }
        // Lab 02's pipe takes generated records only.
        let mut piped = Plan::new("t");
        piped.assign("all.lab_slot=batcher").unwrap();
        let e = piped
            .assign("source.replay=/tmp/events.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.contains("source.lab_slot") && e.contains("replay"), "{e}");
        // Too few unacknowledged batches to span two windows: the source would wait forever.
        let mut short = p.clone();
        short.assign("source.max_unacked_batches=10").unwrap();
        let e = config(&short).unwrap_err().to_string();
        assert!(e.contains("source.max_unacked_batches"), "{e}");
        // A partial chain (no sink to acknowledge), or two sources.
        let mut two = p.clone();
        two.assign("source.replicas=2").unwrap();
        assert!(config(&two).is_err());
        let partial = Plan::from_stages(
            "t",
            vec![stage(Role::Source), stage(Role::Parse)]
                .into_iter()
                .map(|mut s| {
                    s.knobs.set("delivery", "at_least_once").unwrap();
                    s
                })
                .collect(),
        )
        .unwrap();
        assert!(
            partial
                .stage_config(Role::Parse, "a:1", "a:2", &[])
                .unwrap_err()
                .to_string()
                .contains("whole chain")
        );
    }

    fn parse_knobs(plan: &Plan) -> &crate::ParseKnobs {
        match plan.knobs(Role::Parse) {
            Some(StageKnobs::Parse(p)) => p,
            other => panic!("no parse stage: {other:?}"),
        }
    }

    #[test]
    fn assignments_reach_the_right_stage() {
        let mut plan = Plan::new("demo");
        plan.assign("parse.mode=borrowed").unwrap();
        plan.assign("aggregate.state = owner").unwrap();
        plan.assign("all.allocator=system").unwrap();
        plan.assign("aggregate.replicas=3").unwrap();
        assert_eq!(parse_knobs(&plan).mode, ParseMode::Borrowed);
        for s in plan.stages() {
            assert_eq!(
                s.knobs.common().allocator,
                Allocator::System,
                "{:?}",
                s.role()
            );
        }
        match plan.knobs(Role::Aggregate) {
            Some(StageKnobs::Aggregate(a)) => assert_eq!(a.state, StateStrategy::Owner),
            other => panic!("{other:?}"),
        }
        assert_eq!(plan.replicas(Role::Aggregate), 3);
    }

    #[test]
    fn bad_assignments_are_clear_errors() {
        let mut plan = Plan::new("demo");
        let cases = [
            (
                "parse.mode=fast",
                "knob `parse.mode`: unknown variant `fast`",
            ),
            (
                "parse.workers=0",
                "knob `parse.workers`: must be between 1 and 64, got 0",
            ),
            (
                "parse.workers=many",
                "knob `parse.workers`: invalid type: string \"many\"",
            ),
            (
                "source.malformed_rate=1.5",
                "knob `source.malformed_rate`: must be between 0 and 1",
            ),
            (
                "sink.fsync_interval_ms=-3",
                "knob `sink.fsync_interval_ms`: invalid value: integer `-3`",
            ),
            (
                "sink.replicas=2",
                "knob `sink.replicas`: the sink writes one log: must be 1, got 2",
            ),
            (
                "parse.replicas=0",
                "knob `parse.replicas`: must be between 1 and 64, got 0",
            ),
            (
                "parse.replicas=two",
                "knob `parse.replicas`: must be a whole number",
            ),
            ("reduce.mode=x", "unknown stage `reduce`"),
            ("parse.nope=1", "unknown knob `parse.nope`"),
            ("all.nope=1", "unknown knob `all.nope`"),
            ("parse", "`parse` is not of the form `stage.knob=value`"),
            ("parsemode=1", "`parsemode=1` is not of the form"),
        ];
        for (input, want) in cases {
            let err = plan.assign(input).unwrap_err().to_string();
            assert!(
                err.starts_with(want),
                "{input}: got `{err}`, want `{want}...`"
            );
        }
        // A failed assignment leaves the plan untouched.
        assert_eq!(plan, Plan::new("demo"));
    }

    #[test]
    fn chain_shape_is_enforced() {
        use crate::knobs::Role::*;
        let ok = Plan::from_stages("p", vec![stage(Source), stage(Parse)]);
        assert!(ok.is_ok());
        assert_eq!(ok.unwrap().downstream_of(Parse), None);
        for bad in [
            vec![],
            vec![stage(Parse)],
            vec![stage(Source), stage(Aggregate)],
            vec![stage(Source), stage(Parse), stage(Parse)],
        ] {
            assert!(matches!(
                Plan::from_stages("p", bad),
                Err(PlanError::Shape(_))
            ));
        }
    }

    #[test]
    fn stage_configs_follow_the_chain() {
        let mut plan = Plan::new("demo");
        plan.labels.insert("run".into(), "b".into());
        plan.assign("parse.replicas=2").unwrap();
        plan.assign("aggregate.replicas=3").unwrap();
        let sink = vec!["127.0.0.1:7003".to_string()];
        let cfg = plan
            .stage_config(Role::Aggregate, "127.0.0.1:0", "127.0.0.1:0", &sink)
            .unwrap();
        assert_eq!(cfg.role(), Role::Aggregate);
        assert_eq!(cfg.downstream, sink);
        assert_eq!(cfg.upstreams, 2, "one stream per parse replica");
        assert_eq!(cfg.labels.get("run").map(String::as_str), Some("b"));
        let cfg = plan.stage_config(Role::Sink, "a", "b", &[]).unwrap();
        assert_eq!(cfg.upstreams, 3, "one stream per aggregate partition");
        assert_eq!(
            plan.stage_config(Role::Source, "a", "b", &sink)
                .unwrap()
                .upstreams,
            1
        );
        assert!(plan.stage_config(Role::Parse, "a", "b", &[]).is_err());
        assert!(plan.stage_config(Role::Sink, "a", "b", &sink).is_err());
        assert_eq!(plan.downstream_of(Role::Source), Some(Role::Parse));
        assert_eq!(plan.upstream_of(Role::Source), None);
    }

    #[test]
    fn plan_file_round_trips_and_rejects_unknown_tables() {
        let mut plan = Plan::new("lab");
        plan.assign("parse.mode=borrowed").unwrap();
        plan.assign("source.events=1000").unwrap();
        plan.assign("aggregate.replicas=2").unwrap();
        plan.labels.insert("lab".into(), "06".into());
        let back = Plan::from_toml("plan.toml", &plan.to_toml()).unwrap();
        assert_eq!(back, plan);
        let short = Plan::from_toml(
            "p.toml",
            "name = \"x\"\n[source]\n[parse]\nmode = \"borrowed\"\nreplicas = 4\n",
        )
        .unwrap();
        assert_eq!(short.stages().len(), 2);
        assert_eq!(short.replicas(Role::Parse), 4);
        let err = Plan::from_toml("p.toml", "[source]\n[reduce]\n").unwrap_err();
        assert!(err.to_string().contains("unknown key `reduce`"), "{err}");
        let err = Plan::from_toml(
            "p.toml",
            "[source]\n[parse]\n[aggregate]\n[sink]\nreplicas = 2\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("sink.replicas"), "{err}");
    }
}
