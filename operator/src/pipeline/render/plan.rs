//! A Pipeline spec as the [`Plan`] the local runner executes, and back: the same knobs and
//! replicas, stage by stage ([`plan_of`] one way, [`apply_plan`] the other).

use super::*;

/// A stage of the spec, type-erased: its knobs as the plan holds them.
pub(super) struct SpecStage<'a> {
    pub(super) role: Role,
    pub(super) replicas: i32,
    pub(super) image: Option<&'a str>,
    pub(super) resources: Option<&'a ResourceRequirements>,
    pub(super) knobs: StageKnobs,
}

pub(super) fn spec_stage<'a, K: Knobs>(
    role: Role,
    s: &'a StageSpec<K>,
    wrap: fn(K) -> StageKnobs,
) -> Result<SpecStage<'a>, InvalidSpec> {
    if let Some(bad) = s.knobs.unknown.first() {
        return Err(PlanError::UnknownKnob {
            knob: format!("{role}.{bad}"),
            known: K::names().join(", "),
        }
        .into());
    }
    s.knobs.validate(role.as_str())?;
    Ok(SpecStage {
        role,
        replicas: s.replicas,
        image: s.image.as_deref(),
        resources: s.resources.as_ref(),
        knobs: wrap(s.knobs.knobs.clone()),
    })
}

pub(super) fn spec_stages(spec: &PipelineSpec) -> Result<Vec<SpecStage<'_>>, InvalidSpec> {
    let mut out = vec![spec_stage(Role::Source, &spec.source, StageKnobs::Source)?];
    if let Some(s) = &spec.parse {
        out.push(spec_stage(Role::Parse, s, StageKnobs::Parse)?);
    }
    if let Some(s) = &spec.aggregate {
        out.push(spec_stage(Role::Aggregate, s, StageKnobs::Aggregate)?);
    }
    if let Some(s) = &spec.sink {
        out.push(spec_stage(Role::Sink, s, StageKnobs::Sink)?);
    }
    Ok(out)
}

/// The plan a spec describes: the same plan `observatory run` would execute locally.
pub fn plan_of(name: &str, spec: &PipelineSpec) -> Result<Plan, InvalidSpec> {
    let stages = spec_stages(spec)?
        .into_iter()
        .map(|s| {
            let replicas = u32::try_from(s.replicas)
                .map_err(|_| invalid(format!("spec.{}.replicas", s.role), "must be at least 1"))?;
            Ok(PlanStage {
                knobs: s.knobs,
                replicas,
            })
        })
        .collect::<Result<Vec<_>, InvalidSpec>>()?;
    let mut plan = Plan::from_stages(name, stages)?;
    plan.labels = spec.labels.clone();
    Ok(plan)
}

/// Write a plan's stages (knobs and replicas) into a spec, adding the stages it lacks; what the
/// plan does not hold (images, resources, storage) stays as it was.
pub fn apply_plan(spec: &mut PipelineSpec, plan: &Plan) -> Result<(), String> {
    fn put<K: Clone>(slot: &mut StageSpec<K>, replicas: u32, knobs: &K) -> Result<(), String> {
        slot.replicas = i32::try_from(replicas).map_err(|_| "too many replicas")?;
        slot.knobs = knobs.clone().into();
        Ok(())
    }
    for s in plan.stages() {
        match &s.knobs {
            StageKnobs::Source(k) => put(&mut spec.source, s.replicas, k)?,
            StageKnobs::Parse(k) => put(spec.parse.get_or_insert_default(), s.replicas, k)?,
            StageKnobs::Aggregate(k) => put(spec.aggregate.get_or_insert_default(), s.replicas, k)?,
            StageKnobs::Sink(k) => put(spec.sink.get_or_insert_default(), s.replicas, k)?,
        }
    }
    Ok(())
}
