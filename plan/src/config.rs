//! The config file of one stage process: its wiring (addresses, upstream count, labels) and its
//! knobs. The local runner writes one per process; the operator renders the same file into a
//! ConfigMap.

use crate::knobs::{AggregateKnobs, CommonKnobs, Knobs, ParseKnobs, Role, SinkKnobs, SourceKnobs};
use crate::{KNOB_ENV_PREFIX, PlanError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The knobs of one stage, tagged by its role.
#[derive(Clone, Debug, PartialEq)]
pub enum StageKnobs {
    Source(SourceKnobs),
    Parse(ParseKnobs),
    Aggregate(AggregateKnobs),
    Sink(SinkKnobs),
}

impl StageKnobs {
    /// Defaults of a role.
    pub fn defaults(role: Role) -> Self {
        match role {
            Role::Source => StageKnobs::Source(SourceKnobs::default()),
            Role::Parse => StageKnobs::Parse(ParseKnobs::default()),
            Role::Aggregate => StageKnobs::Aggregate(AggregateKnobs::default()),
            Role::Sink => StageKnobs::Sink(SinkKnobs::default()),
        }
    }

    pub fn role(&self) -> Role {
        match self {
            StageKnobs::Source(_) => Role::Source,
            StageKnobs::Parse(_) => Role::Parse,
            StageKnobs::Aggregate(_) => Role::Aggregate,
            StageKnobs::Sink(_) => Role::Sink,
        }
    }

    pub fn common(&self) -> &CommonKnobs {
        match self {
            StageKnobs::Source(k) => k.common(),
            StageKnobs::Parse(k) => k.common(),
            StageKnobs::Aggregate(k) => k.common(),
            StageKnobs::Sink(k) => k.common(),
        }
    }

    /// Build a role's knobs from a key/value map.
    pub fn from_map(role: Role, map: Map<String, Value>) -> Result<Self, PlanError> {
        let stage = role.as_str();
        Ok(match role {
            Role::Source => StageKnobs::Source(SourceKnobs::from_map(stage, map)?),
            Role::Parse => StageKnobs::Parse(ParseKnobs::from_map(stage, map)?),
            Role::Aggregate => StageKnobs::Aggregate(AggregateKnobs::from_map(stage, map)?),
            Role::Sink => StageKnobs::Sink(SinkKnobs::from_map(stage, map)?),
        })
    }

    /// The knobs as a key/value map (every knob, defaults included).
    pub fn to_map(&self) -> Map<String, Value> {
        let value = match self {
            StageKnobs::Source(k) => serde_json::to_value(k),
            StageKnobs::Parse(k) => serde_json::to_value(k),
            StageKnobs::Aggregate(k) => serde_json::to_value(k),
            StageKnobs::Sink(k) => serde_json::to_value(k),
        };
        match value {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    /// Every knob's value as the text [`StageKnobs::set`] accepts (strings unquoted), e.g. for
    /// `--set knob=value` arguments or metric labels.
    pub fn to_text(&self) -> Vec<(String, String)> {
        self.to_map()
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect()
    }

    /// Set one knob from text.
    pub fn set(&mut self, key: &str, raw: &str) -> Result<(), PlanError> {
        let stage = self.role().as_str();
        match self {
            StageKnobs::Source(k) => k.set(stage, key, raw),
            StageKnobs::Parse(k) => k.set(stage, key, raw),
            StageKnobs::Aggregate(k) => k.set(stage, key, raw),
            StageKnobs::Sink(k) => k.set(stage, key, raw),
        }
    }

    /// Whether this stage has a knob of that name.
    pub fn has(&self, key: &str) -> bool {
        self.to_map().contains_key(key)
    }

    /// Apply `PIPELINE_KNOB_<NAME>=value` overrides from the given environment.
    pub fn apply_env<I>(&mut self, vars: I) -> Result<(), PlanError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        for (name, value) in vars {
            if let Some(knob) = name.strip_prefix(KNOB_ENV_PREFIX) {
                self.set(&knob.to_ascii_lowercase(), &value)?;
            }
        }
        Ok(())
    }
}

/// Everything one stage process needs: wiring and knobs.
#[derive(Clone, Debug, PartialEq)]
pub struct StageConfig {
    /// Name of the pipeline this stage belongs to (a metric label).
    pub pipeline: String,
    /// Data port address to listen on (`host:0` picks a free port).
    pub listen: String,
    /// Admin port address (metrics, profiles, health).
    pub admin: String,
    /// Data addresses of the next stage, one connection each; empty makes this the last stage.
    /// The source deals batches round-robin over them; parse routes each event by its key's
    /// hash (one address per aggregate partition); the aggregate deals round-robin.
    pub downstream: Vec<String>,
    /// Upstream streams whose end completes this stage's input (run mode).
    pub upstreams: u32,
    /// Which replica of its stage this process is (0-based; named in its hello downstream;
    /// in run mode each upstream replica is admitted once).
    pub replica: u32,
    /// Service mode (Kubernetes): the stage never completes by itself; a drain request from a
    /// downstream ends only that connection, which is then re-established; a finished bounded
    /// source stays up (idle) until it is signalled.
    pub service: bool,
    /// Extra constant labels on every metric (e.g. `run = "baseline"`).
    pub labels: BTreeMap<String, String>,
    pub knobs: StageKnobs,
}

/// The on-disk (TOML) form; `knobs` is read by role once the role is known.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageFile {
    pipeline: String,
    role: Role,
    listen: String,
    admin: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    downstream: Vec<String>,
    #[serde(default = "one")]
    upstreams: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    replica: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    service: bool,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    knobs: Map<String, Value>,
}

/// A new shared token for a pipeline's data connections (the stages admit only peers that
/// carry it): 32 random bytes from the OS, as hex. Made by the local runner per run and by the
/// operator per Pipeline.
pub fn new_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn one() -> u32 {
    1
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl StageConfig {
    pub fn new(pipeline: &str, knobs: StageKnobs) -> Self {
        StageConfig {
            pipeline: pipeline.to_string(),
            listen: "127.0.0.1:0".into(),
            admin: "127.0.0.1:0".into(),
            downstream: Vec::new(),
            upstreams: 1,
            replica: 0,
            service: false,
            labels: BTreeMap::new(),
            knobs,
        }
    }

    pub fn role(&self) -> Role {
        self.knobs.role()
    }

    /// Parse a stage config file's text. `path` only names the file in errors.
    pub fn from_toml(path: &str, text: &str) -> Result<Self, PlanError> {
        let file: StageFile = toml::from_str(text).map_err(|e| PlanError::Config {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        if file.upstreams == 0 {
            return Err(PlanError::Config {
                path: path.to_string(),
                message: "`upstreams` must be at least 1".into(),
            });
        }
        Ok(StageConfig {
            pipeline: file.pipeline,
            listen: file.listen,
            admin: file.admin,
            downstream: file.downstream,
            upstreams: file.upstreams,
            replica: file.replica,
            service: file.service,
            labels: file.labels,
            knobs: StageKnobs::from_map(file.role, file.knobs)?,
        })
    }

    /// The config file text, every knob written out.
    pub fn to_toml(&self) -> String {
        let file = StageFile {
            pipeline: self.pipeline.clone(),
            role: self.role(),
            listen: self.listen.clone(),
            admin: self.admin.clone(),
            downstream: self.downstream.clone(),
            upstreams: self.upstreams,
            replica: self.replica,
            service: self.service,
            labels: self.labels.clone(),
            knobs: self.knobs.to_map(),
        };
        // Serializing plain strings, integers, floats, booleans and string maps cannot fail.
        toml::to_string(&file).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knobs::{FsyncPolicy, ParseMode};

    #[test]
    fn toml_round_trip_keeps_every_knob() {
        let mut knobs = StageKnobs::defaults(Role::Sink);
        knobs.set("fsync", "batch").unwrap();
        knobs.set("dir", "/var/lib/obs").unwrap();
        let mut cfg = StageConfig::new("demo", knobs);
        cfg.labels.insert("run".into(), "a".into());
        cfg.service = true;
        cfg.upstreams = 3;
        cfg.replica = 2;
        let text = cfg.to_toml();
        let back = StageConfig::from_toml("t.toml", &text).unwrap();
        assert_eq!(back, cfg);
        match back.knobs {
            StageKnobs::Sink(s) => {
                assert_eq!(s.fsync, FsyncPolicy::Batch);
                assert_eq!(s.dir, "/var/lib/obs");
            }
            other => panic!("wrong role {other:?}"),
        }
    }

    #[test]
    fn partial_knob_table_takes_defaults() {
        let text = "pipeline = \"p\"\nrole = \"parse\"\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[knobs]\nmode = \"borrowed\"\n";
        let cfg = StageConfig::from_toml("p.toml", text).unwrap();
        assert!(cfg.downstream.is_empty() && !cfg.service && cfg.upstreams == 1);
        let with_downstreams = text.replace("[knobs]", "downstream = [\"a:1\", \"b:2\"]\n[knobs]");
        let two = StageConfig::from_toml("p.toml", &with_downstreams).unwrap();
        assert_eq!(two.downstream, ["a:1", "b:2"]);
        let StageKnobs::Parse(p) = cfg.knobs else {
            panic!("not parse")
        };
        assert_eq!(p.mode, ParseMode::Borrowed);
        assert_eq!(p.workers, 1);
        assert_eq!(p.common.queue_capacity, 8);
    }

    #[test]
    fn file_errors_name_the_knob_or_the_file() {
        let base = "pipeline = \"p\"\nrole = \"parse\"\nlisten = \"a\"\nadmin = \"b\"\n";
        let err = StageConfig::from_toml("p.toml", &format!("{base}[knobs]\nmode = \"fast\"\n"))
            .unwrap_err();
        assert!(
            matches!(&err, PlanError::Knob { knob, message } if knob == "parse.mode" && message.contains("owned")),
            "{err}"
        );
        let err =
            StageConfig::from_toml("p.toml", &format!("{base}[knobs]\nworkerz = 2\n")).unwrap_err();
        assert!(
            matches!(&err, PlanError::UnknownKnob { knob, .. } if knob == "parse.workerz"),
            "{err}"
        );
        let err =
            StageConfig::from_toml("p.toml", &format!("{base}[knobs]\nworkers = 0\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "knob `parse.workers`: must be between 1 and 64, got 0"
        );
        let err = StageConfig::from_toml("p.toml", "role = \"parse\"\nbogus = 1\n").unwrap_err();
        assert!(
            matches!(&err, PlanError::Config { path, .. } if path == "p.toml"),
            "{err}"
        );
        let err = StageConfig::from_toml("p.toml", &base.replace("parse", "reduce")).unwrap_err();
        assert!(err.to_string().contains("reduce"), "{err}");
    }

    #[test]
    fn env_overrides_apply_and_reject_unknown_knobs() {
        let mut knobs = StageKnobs::defaults(Role::Aggregate);
        knobs
            .apply_env([
                ("PATH".to_string(), "/bin".to_string()),
                ("PIPELINE_KNOB_STATE".to_string(), "sharded".to_string()),
                ("PIPELINE_KNOB_WINDOW_MS".to_string(), "250".to_string()),
            ])
            .unwrap();
        let StageKnobs::Aggregate(a) = &knobs else {
            panic!()
        };
        assert_eq!(a.window_ms, 250);
        assert_eq!(a.state, crate::StateStrategy::Sharded);
        let err = knobs
            .apply_env([("PIPELINE_KNOB_MODE".to_string(), "owned".to_string())])
            .unwrap_err();
        assert!(matches!(err, PlanError::UnknownKnob { ref knob, .. } if knob == "aggregate.mode"));
    }
}
