//! What makes a Pipeline spec invalid, with the field to blame: the error type, and the checks
//! beyond the schema (resources, the stage chain).

use super::*;

/// A spec the operator cannot run, with the field to blame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSpec {
    /// The offending field, e.g. `spec.parse.knobs.workers`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for InvalidSpec {}

pub(super) fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidSpec {
    InvalidSpec {
        field: field.into(),
        message: message.into(),
    }
}

/// `parse.workers` -> `spec.parse.knobs.workers`; `sink.replicas` -> `spec.sink.replicas`.
pub(super) fn field_of(knob: &str) -> String {
    match knob.split_once('.') {
        Some((stage, "replicas")) => format!("spec.{stage}.replicas"),
        Some((stage, k)) => format!("spec.{stage}.knobs.{k}"),
        None => format!("spec.{knob}"),
    }
}

impl From<PlanError> for InvalidSpec {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Knob { knob, message } => invalid(field_of(&knob), message),
            PlanError::UnknownKnob { knob, known } => {
                invalid(field_of(&knob), format!("unknown knob (known: {known})"))
            }
            other => invalid("spec", other.to_string()),
        }
    }
}

/// A quantity in base units (cores or bytes), for comparing requests with limits.
pub(super) fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        _ => return None,
    };
    Some(n * scale)
}

/// Requests must be well-formed and within limits: the API server accepts a workload that
/// breaks this, and then refuses every pod of it.
pub(super) fn check_resources(role: Role, r: &ResourceRequirements) -> Result<(), InvalidSpec> {
    let field = format!("spec.{role}.resources");
    let empty = BTreeMap::new();
    let requests = r.requests.as_ref().unwrap_or(&empty);
    let limits = r.limits.as_ref().unwrap_or(&empty);
    for (kind, map) in [("requests", requests), ("limits", limits)] {
        for (res, q) in map {
            if parse_quantity(&q.0).is_none() {
                return Err(invalid(
                    format!("{field}.{kind}.{res}"),
                    format!("`{}` is not a quantity", q.0),
                ));
            }
        }
    }
    for (res, limit) in limits {
        if let (Some(req), Some(lim)) = (
            requests.get(res).and_then(|q| parse_quantity(&q.0)),
            parse_quantity(&limit.0),
        ) && req > lim
        {
            return Err(invalid(
                format!("{field}.requests.{res}"),
                format!("request {} exceeds the limit {}", requests[res].0, limit.0),
            ));
        }
    }
    Ok(())
}

/// Rules the schema cannot express.
pub(super) fn check_semantics(
    spec: &PipelineSpec,
    stages: &[SpecStage<'_>],
) -> Result<(), InvalidSpec> {
    if spec.image.trim().is_empty() {
        return Err(invalid("spec.image", "must name a container image"));
    }
    for s in stages {
        if let Some(r) = s.resources {
            check_resources(s.role, r)?;
        }
        match &s.knobs {
            StageKnobs::Source(k) if !k.replay.is_empty() => {
                return Err(invalid(
                    "spec.source.knobs.replay",
                    "replaying a file is not supported in the cluster (the image carries no event files); leave it empty to generate events",
                ));
            }
            StageKnobs::Sink(k) if k.dir.starts_with('/') && !k.dir.starts_with(DATA_DIR) => {
                return Err(invalid(
                    "spec.sink.knobs.dir",
                    format!(
                        "must be relative or under {DATA_DIR} (the sink's volume; the rest of the filesystem is read-only), got `{}`",
                        k.dir
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}
