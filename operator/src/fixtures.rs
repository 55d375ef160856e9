//! Test fixtures: the committed sample Pipeline, as the API server would hand it over.

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
