//! Test fixtures: the committed sample Pipeline and Experiment, as the API server would hand
//! them over.

use crate::crd::Pipeline;

/// `deploy/samples/pipeline-demo.yaml`, with the uid and generation a cluster would give it.
pub fn sample() -> Pipeline {
    let text = include_str!("../../deploy/samples/pipeline-demo.yaml");
    let mut p: Pipeline = yaml_serde::from_str(text).expect("the sample parses as a Pipeline");
    p.metadata.uid = Some("uid-demo".into());
    p.metadata.generation = Some(1);
    p.metadata.resource_version = Some("100".into());
    p
}

/// `deploy/experiments/lab-02-batching.yaml`, as the API server would hand it over.
pub fn experiment() -> crate::experiment::Experiment {
    let text = include_str!("../../deploy/experiments/lab-02-batching.yaml");
    let mut e: crate::experiment::Experiment =
        yaml_serde::from_str(text).expect("the sample parses as an Experiment");
    e.metadata.uid = Some("uid-exp".into());
    e.metadata.generation = Some(1);
    e.metadata.resource_version = Some("200".into());
    e
}
