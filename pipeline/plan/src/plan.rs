//! The plan: which stages run, with which knobs, wired in which order. One plan drives both the
//! local runner (child processes on loopback) and the operator (Kubernetes objects).

use crate::PlanError;
use crate::config::{StageConfig, StageKnobs};
use crate::knobs::Role;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A pipeline: a source followed by a contiguous prefix of `parse -> aggregate -> sink`.
/// The last stage present discards what it would forward, counting it under the drop reason
/// `no_downstream`.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub name: String,
    /// Constant labels put on every metric of every stage (e.g. `run = "baseline"`).
    pub labels: BTreeMap<String, String>,
    stages: Vec<StageKnobs>,
}

impl Plan {
    /// The full four-stage pipeline with default knobs.
    pub fn new(name: &str) -> Self {
        Plan {
            name: name.to_string(),
            labels: BTreeMap::new(),
            stages: Role::CHAIN.into_iter().map(StageKnobs::defaults).collect(),
        }
    }

    /// A plan from explicit stages, which must be a source followed by a contiguous prefix of
    /// the rest of the chain.
    pub fn from_stages(name: &str, stages: Vec<StageKnobs>) -> Result<Self, PlanError> {
        let roles: Vec<Role> = stages.iter().map(StageKnobs::role).collect();
        if roles.is_empty() || roles[..] != Role::CHAIN[..roles.len()] {
            let got: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            return Err(PlanError::Shape(format!(
                "stages must be `source`, then optionally `parse`, `aggregate`, `sink` in that \
                 order without gaps; got [{}]",
                got.join(", ")
            )));
        }
        Ok(Plan {
            name: name.to_string(),
            labels: BTreeMap::new(),
            stages,
        })
    }

    /// The stages in data-flow order.
    pub fn stages(&self) -> &[StageKnobs] {
        &self.stages
    }

    pub fn stage(&self, role: Role) -> Option<&StageKnobs> {
        self.stages.iter().find(|s| s.role() == role)
    }

    /// The stage that receives `role`'s output, if any.
    pub fn downstream_of(&self, role: Role) -> Option<Role> {
        let at = self.stages.iter().position(|s| s.role() == role)?;
        self.stages.get(at + 1).map(StageKnobs::role)
    }

    /// Apply `stage.knob=value`; `all.knob=value` sets the knob on every stage that has it.
    pub fn assign(&mut self, assignment: &str) -> Result<(), PlanError> {
        let bad = || PlanError::BadAssignment(assignment.to_string());
        let (path, value) = assignment.split_once('=').ok_or_else(bad)?;
        let (stage, knob) = path.trim().split_once('.').ok_or_else(bad)?;
        self.set(stage, knob, value.trim())
    }

    /// Set one knob of one stage (`all` for every stage that has it).
    pub fn set(&mut self, stage: &str, knob: &str, value: &str) -> Result<(), PlanError> {
        if stage == "all" {
            let mut any = false;
            for s in self.stages.iter_mut().filter(|s| s.has(knob)) {
                s.set(knob, value)?;
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
        s.set(knob, value)
    }

    /// The config of one stage process. `downstream` is the data address of the next stage,
    /// required exactly when the plan has a next stage.
    pub fn stage_config(
        &self,
        role: Role,
        listen: &str,
        admin: &str,
        downstream: Option<&str>,
    ) -> Result<StageConfig, PlanError> {
        let knobs = self
            .stage(role)
            .ok_or_else(|| PlanError::AbsentStage(role.to_string()))?
            .clone();
        match (self.downstream_of(role), downstream) {
            (Some(next), None) => {
                return Err(PlanError::Shape(format!(
                    "stage `{role}` needs the address of `{next}`"
                )));
            }
            (None, Some(_)) => {
                return Err(PlanError::Shape(format!(
                    "stage `{role}` is the last stage and takes no downstream"
                )));
            }
            _ => {}
        }
        Ok(StageConfig {
            pipeline: self.name.clone(),
            listen: listen.to_string(),
            admin: admin.to_string(),
            downstream: downstream.map(str::to_string),
            upstreams: 1,
            labels: self.labels.clone(),
            knobs,
        })
    }

    /// Read a plan file: `name`, optional `[labels]`, and one table per stage present
    /// (`[source]`, `[parse]`, ...) holding that stage's knobs.
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
                Some(Value::Object(knobs)) => stages.push(StageKnobs::from_map(role, knobs)?),
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
            table.insert(s.role().to_string(), Value::Object(s.to_map()));
        }
        toml::to_string(&table).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knobs::{Allocator, ParseMode, StateStrategy};

    fn parse_knobs(plan: &Plan) -> &crate::ParseKnobs {
        match plan.stage(Role::Parse) {
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
        assert_eq!(parse_knobs(&plan).mode, ParseMode::Borrowed);
        for s in plan.stages() {
            assert_eq!(s.common().allocator, Allocator::System, "{:?}", s.role());
        }
        match plan.stage(Role::Aggregate) {
            Some(StageKnobs::Aggregate(a)) => assert_eq!(a.state, StateStrategy::Owner),
            other => panic!("{other:?}"),
        }
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
        let ok = Plan::from_stages(
            "p",
            vec![StageKnobs::defaults(Source), StageKnobs::defaults(Parse)],
        );
        assert!(ok.is_ok());
        assert_eq!(ok.unwrap().downstream_of(Parse), None);
        for bad in [
            vec![],
            vec![StageKnobs::defaults(Parse)],
            vec![
                StageKnobs::defaults(Source),
                StageKnobs::defaults(Aggregate),
            ],
            vec![
                StageKnobs::defaults(Source),
                StageKnobs::defaults(Parse),
                StageKnobs::defaults(Parse),
            ],
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
        let cfg = plan
            .stage_config(
                Role::Aggregate,
                "127.0.0.1:0",
                "127.0.0.1:0",
                Some("127.0.0.1:7003"),
            )
            .unwrap();
        assert_eq!(cfg.role(), Role::Aggregate);
        assert_eq!(cfg.downstream.as_deref(), Some("127.0.0.1:7003"));
        assert_eq!(cfg.labels.get("run").map(String::as_str), Some("b"));
        assert!(plan.stage_config(Role::Parse, "a", "b", None).is_err());
        assert!(plan.stage_config(Role::Sink, "a", "b", Some("c")).is_err());
        assert_eq!(plan.downstream_of(Role::Source), Some(Role::Parse));
    }

    #[test]
    fn plan_file_round_trips_and_rejects_unknown_tables() {
        let mut plan = Plan::new("lab");
        plan.assign("parse.mode=borrowed").unwrap();
        plan.assign("source.events=1000").unwrap();
        plan.labels.insert("lab".into(), "06".into());
        let back = Plan::from_toml("plan.toml", &plan.to_toml()).unwrap();
        assert_eq!(back, plan);
        let short = Plan::from_toml(
            "p.toml",
            "name = \"x\"\n[source]\n[parse]\nmode = \"borrowed\"\n",
        )
        .unwrap();
        assert_eq!(short.stages().len(), 2);
        let err = Plan::from_toml("p.toml", "[source]\n[reduce]\n").unwrap_err();
        assert!(err.to_string().contains("unknown key `reduce`"), "{err}");
    }
}
