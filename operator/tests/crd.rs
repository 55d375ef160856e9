//! The CRD in deploy/ is what the code generates, and the sample Pipeline passes its rules.

use kube::CustomResourceExt;
use operator::crd::{Pipeline, crd_yaml};

const COMMITTED: &str = include_str!("../../deploy/base/crd.yaml");
const SAMPLE: &str = include_str!("../../deploy/samples/pipeline-demo.yaml");

#[test]
fn the_committed_crd_is_the_generated_one() {
    let generated = crd_yaml().unwrap();
    assert!(
        COMMITTED == generated,
        "deploy/base/crd.yaml is stale: run `cargo run -p operator --bin crdgen -- --out deploy/base/crd.yaml`"
    );
    let crd = Pipeline::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("pipelines.observatory.dev")
    );
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["pl".to_string()][..])
    );
    let version = &crd.spec.versions[0];
    assert!(
        version.subresources.as_ref().unwrap().status.is_some(),
        "a status subresource"
    );
    let columns: Vec<&str> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Ready", "Status", "Age"]);
}

fn sample() -> Pipeline {
    yaml_serde::from_str(SAMPLE).expect("the sample is a Pipeline")
}

#[test]
fn the_sample_passes_the_crd_cel_rules_and_broken_chains_do_not() {
    sample()
        .validate_cel()
        .expect("the sample passes every CEL rule");

    let mut p = sample();
    p.spec.parse = None;
    let err = p.validate_cel().unwrap_err().to_string();
    assert!(
        err.contains("an aggregate stage needs a parse stage before it"),
        "{err}"
    );

    let mut p = sample();
    p.spec.aggregate = None;
    let err = p.validate_cel().unwrap_err().to_string();
    assert!(
        err.contains("a sink needs an aggregate stage before it"),
        "{err}"
    );

    let mut p = sample();
    p.spec.sink.as_mut().unwrap().replicas = 3;
    let err = p.validate_cel().unwrap_err().to_string();
    assert!(err.contains("spec.sink.replicas must be 1"), "{err}");

    // A truncated but contiguous chain is fine.
    let mut p = sample();
    p.spec.sink = None;
    p.spec.aggregate = None;
    p.validate_cel()
        .expect("source -> parse is a valid pipeline");
}
