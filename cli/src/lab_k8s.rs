//! `observatory lab check N --k8s`: a lab's A/B as an `Experiment` on the cluster.
//!
//! The lab's workload becomes the Experiment's pipeline; its baseline knobs and your change (or
//! the reference) become the two sides; the lab's metric and minimum effect carry over. The
//! operator runs the sides in turn and writes the verdict into the Experiment's status; this
//! command creates the Experiment (server-side apply), follows its progress, and prints the
//! verdict. Labs measured by instruction counts, in-process kernels, deadlock timeouts or
//! criterion need one process on this machine: they are checked locally, and say so.

use anyhow::{Context as _, bail};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use observatory_course::check::Variant;
use observatory_course::spec::{Lab, Mode};
use operator::experiment::{Experiment, ExperimentSpec, Side, pipeline_spec_of};
use std::time::Duration;

/// How to run a lab on the cluster.
#[derive(Clone, Debug)]
pub struct K8sOptions {
    pub namespace: String,
    /// The pipeline image (both sides).
    pub image: String,
    /// The variant's image, if it differs (a code lab: your build).
    pub variant_image: Option<String>,
    pub pairs: u32,
    pub run_seconds: u32,
    pub warmup_seconds: u32,
    /// The source's seed, if not the lab's (a cohort's hidden one: `leaderboard verify --k8s`).
    pub workload_seed: Option<u64>,
}

/// The Experiment a lab check runs; an error says why a lab cannot run on the cluster.
pub fn experiment_for(
    lab: &Lab,
    variant: &Variant,
    opts: &K8sOptions,
) -> anyhow::Result<Experiment> {
    let m = &lab.spec.measure;
    if let Variant::Mutant(n) = variant {
        bail!(
            "mutant {n} of lab {:02} is checked for correctness only, on this machine (`observatory lab dev-check`)",
            lab.spec.number
        );
    }
    if m.mode != Mode::Wall {
        bail!(
            "lab {:02} is measured by {}, which needs one process on this machine: run `observatory lab check {}` without --k8s",
            lab.spec.number,
            match m.mode {
                Mode::Instructions => "instruction counts (valgrind)",
                Mode::Kernel => "an in-process kernel",
                Mode::Completes => "whether one run completes",
                Mode::Criterion => "a criterion benchmark",
                Mode::Wall => unreachable!(),
            },
            lab.spec.number
        );
    }
    let metric = m.catalogue_metric().filter(|m| m.windowed()).with_context(|| {
        format!(
            "lab {:02}'s metric `{}` is not one Prometheus can answer for a window on the cluster",
            lab.spec.number, m.metric
        )
    })?;
    let mut plan = lab.base_plan()?;
    if let Some(seed) = opts.workload_seed {
        plan.assign(&format!("source.seed={seed}"))?;
    }
    let pipeline = pipeline_spec_of(&plan, &opts.image).map_err(anyhow::Error::msg)?;
    let name = format!("lab-{:02}-{}", lab.spec.number, variant_tag(variant));
    let mut e = Experiment::new(
        &name,
        ExperimentSpec {
            lab: Some(lab.spec.number),
            pipeline,
            baseline: Side {
                set: lab.baseline_side(),
                image: None,
            },
            variant: Side {
                set: variant.assignments(lab),
                image: opts.variant_image.clone(),
            },
            metric,
            min_effect: m.min_effect,
            pairs: opts.pairs,
            warmup_seconds: opts.warmup_seconds,
            run_seconds: opts.run_seconds,
            ready_timeout_seconds: 300,
            leaderboard: None,
        },
    );
    e.metadata.namespace = Some(opts.namespace.clone());
    if let Some(why) = operator::experiment::invalid(&e) {
        bail!("the Experiment would be invalid: {why}");
    }
    Ok(e)
}

fn variant_tag(v: &Variant) -> &'static str {
    match v {
        Variant::Student(_) => "student",
        Variant::Reference => "reference",
        Variant::Baseline => "baseline",
        Variant::Mutant(_) => "mutant", // refused above
    }
}

/// Create the Experiment and follow it to its verdict; `Ok(true)` when it passed.
pub async fn check_on_cluster(e: Experiment) -> anyhow::Result<bool> {
    let client = Client::try_default().await.context(
        "no Kubernetes cluster: KUBECONFIG (or ~/.kube/config) must point at one where `make up` ran",
    )?;
    let ns = e.namespace().unwrap_or_else(|| "observatory".into());
    let api: Api<Experiment> = Api::namespaced(client, &ns);
    let name = e.name_any();
    // A previous check of the same lab: start over.
    if api.get_opt(&name).await?.is_some() {
        eprintln!("replacing the previous Experiment {ns}/{name}");
        api.delete(&name, &DeleteParams::foreground()).await?;
        while api.get_opt(&name).await?.is_some() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    api.patch(
        &name,
        &PatchParams::apply("observatory-cli").force(),
        &Patch::Apply(&e),
    )
    .await
    .with_context(|| {
        format!("creating Experiment {ns}/{name} (is the operator's CRD installed? `make up`)")
    })?;
    let s = &e.spec;
    let per_run = s.warmup_seconds + s.run_seconds + 30;
    eprintln!(
        "Experiment {ns}/{name}: {} runs of {} s (+{} s warm-up), about {} min; follow it with\n  kubectl -n {ns} get experiment {name} -w\nand on the Lab comparison dashboard (baseline = {name}-baseline, variant = {name}-variant)",
        2 * s.pairs,
        s.run_seconds,
        s.warmup_seconds,
        (2 * s.pairs * per_run).div_ceil(60)
    );
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let Some(status) = api.get_status(&name).await?.status else {
            continue;
        };
        let line = format!("[{}] {}", status.progress, status.message);
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        match status.phase.as_str() {
            "Succeeded" => {
                let r = status
                    .result
                    .context("a finished Experiment has a result")?;
                println!(
                    "{}: {} (baseline median {:.4} {unit}, variant {:.4} {unit}; needs {})",
                    r.metric,
                    r.summary,
                    r.baseline_median,
                    r.variant_median,
                    r.required,
                    unit = r.unit
                );
                println!(
                    "{}",
                    if r.passed {
                        "PASSED on the cluster"
                    } else {
                        "not passed"
                    }
                );
                return Ok(r.passed);
            }
            "Failed" => bail!("the Experiment failed: {}", status.message),
            _ => {}
        }
    }
}

/// A Kubernetes name made of `s`: lowercase letters, digits and '-', at most 63 characters.
fn dns_label(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    mapped
        .trim_matches('-')
        .chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

/// The Secret (in the Experiment's namespace) holding a cohort's instructor token for the
/// operator's post.
pub fn token_secret_name(cohort: &str) -> String {
    dns_label(&format!("leaderboard-{cohort}"))
}

/// The Experiment that re-runs a submission of a knob lab on the cluster, on the cohort's
/// hidden workload seed, and has the operator post its verdict to the leaderboard (`url` is
/// the server as the operator reaches it in the cluster).
pub fn verification_experiment(
    lab: &Lab,
    cohort: &str,
    d: &observatory_leaderboard_server::wire::SubmissionDetail,
    opts: &K8sOptions,
    url: &str,
) -> anyhow::Result<Experiment> {
    if lab.is_code_lab() {
        bail!(
            "lab {:02} is a code lab: its re-run needs a pipeline image built with the student's code; verify it on this machine (without --k8s)",
            lab.number()
        );
    }
    let opts = K8sOptions {
        workload_seed: Some(d.hidden_seed),
        ..opts.clone()
    };
    let variant = Variant::Student(d.change.lines().map(str::to_string).collect());
    let mut e = experiment_for(lab, &variant, &opts)?;
    let name = dns_label(&format!("verify-{}", d.id));
    e.metadata.name = Some(name);
    e.spec.leaderboard = Some(operator::experiment::LeaderboardTarget {
        url: url.to_string(),
        cohort: cohort.to_string(),
        submission: d.id.clone(),
        token_secret: token_secret_name(cohort),
    });
    if let Some(why) = operator::experiment::invalid(&e) {
        bail!("the Experiment would be invalid: {why}");
    }
    Ok(e)
}

/// Put the instructor's token where the operator reads it, run the Experiment to its verdict,
/// and wait (up to a minute) for the operator to post it; prints what the leaderboard said.
pub async fn verify_on_cluster(e: Experiment, token: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let client = Client::try_default().await.context(
        "no Kubernetes cluster: KUBECONFIG (or ~/.kube/config) must point at one where `make up` ran",
    )?;
    let ns = e.namespace().unwrap_or_else(|| "observatory".into());
    let Some(target) = e.spec.leaderboard.clone() else {
        bail!("the Experiment names no leaderboard");
    };
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(target.token_secret.clone()),
            namespace: Some(ns.clone()),
            // The operator sends only a Secret marked as a leaderboard token.
            labels: Some(
                [(
                    operator::experiment::leaderboard::TOKEN_LABEL.to_string(),
                    "true".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        string_data: Some([("token".to_string(), token.to_string())].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch(
            &target.token_secret,
            &PatchParams::apply("observatory-cli").force(),
            &Patch::Apply(&secret),
        )
        .await
        .with_context(|| format!("writing Secret {ns}/{}", target.token_secret))?;
    let name = e.name_any();
    check_on_cluster(e).await?;
    let api: Api<Experiment> = Api::namespaced(client, &ns);
    for _ in 0..60 {
        let line = api
            .get_status(&name)
            .await?
            .status
            .and_then(|s| s.leaderboard);
        match line {
            Some(l) if !l.starts_with(operator::experiment::leaderboard::NOT_YET) => {
                println!("leaderboard: {l}");
                return Ok(());
            }
            Some(l) => eprintln!("leaderboard: {l}"),
            None => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!(
        "the operator has not posted the verdict within a minute: kubectl -n {ns} describe experiment {name}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use observatory_course::spec::load_labs;
    use operator::experiment::Metric;
    use std::path::Path;

    fn labs() -> Vec<Lab> {
        load_labs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../course/labs")).unwrap()
    }

    fn opts() -> K8sOptions {
        K8sOptions {
            namespace: "observatory".into(),
            image: "docker.io/observatory/pipeline:dev".into(),
            variant_image: None,
            pairs: 3,
            run_seconds: 60,
            warmup_seconds: 15,
            workload_seed: None,
        }
    }

    #[test]
    fn a_wall_clock_lab_becomes_an_experiment_with_its_sides_metric_and_effect() {
        // The course's lab 14 before it became a code lab, kept as a fixture.
        let fixture = load_labs(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../course/tests/fixtures/knob-wall"),
        )
        .unwrap();
        let lab = &fixture[0];
        let answer = Variant::Student(vec!["aggregate.workers=2".into()]);
        let e = experiment_for(lab, &answer, &opts()).unwrap();
        assert_eq!(e.name_any(), "lab-14-student");
        assert_eq!(e.spec.metric, Metric::ThroughputEps);
        assert_eq!(e.spec.min_effect, lab.spec.measure.min_effect);
        assert_eq!(e.spec.baseline.set, lab.baseline_side());
        assert_eq!(e.spec.variant.set, ["aggregate.workers=2"]);
        assert_eq!(e.spec.lab, Some(14));
        // The workload is the lab's.
        let plan = lab.base_plan().unwrap();
        assert_eq!(
            operator::pipeline::render::plan_of("lab14", &e.spec.pipeline)
                .unwrap()
                .knobs(pipeline_plan::Role::Source),
            plan.knobs(pipeline_plan::Role::Source)
        );
    }

    #[test]
    fn a_verification_reruns_the_submitted_change_on_the_hidden_seed_and_posts_back() {
        use observatory_course::submission::rule_of;
        use observatory_leaderboard_server::wire::SubmissionDetail;
        let fixture = load_labs(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../course/tests/fixtures/knob-wall"),
        )
        .unwrap();
        let lab = &fixture[0];
        let change = "aggregate.workers=2";
        let d = SubmissionDetail {
            id: "s_0123456789abcdef01234567".into(),
            student: "ada".into(),
            lab: 14,
            bundle: observatory_leaderboard::synthetic::bundle(
                &rule_of(lab),
                "k-0001-aaaa-bbbb",
                2.5,
                0.01,
                change,
            ),
            change: change.into(),
            hidden_seed: 7_301_928_374,
            verification: None,
        };
        let url = "http://leaderboard.observatory.svc:8088";
        let e = verification_experiment(lab, "Perf_2026", &d, &opts(), url).unwrap();
        assert_eq!(e.name_any(), "verify-s-0123456789abcdef01234567");
        assert_eq!(e.spec.variant.set, [change]);
        let plan = operator::pipeline::render::plan_of("v", &e.spec.pipeline).unwrap();
        let source = plan.knobs(pipeline_plan::Role::Source);
        assert!(
            format!("{source:?}").contains("seed: 7301928374"),
            "the hidden seed is the workload's: {source:?}"
        );
        let t = e.spec.leaderboard.clone().unwrap();
        assert_eq!(
            (
                t.url.as_str(),
                t.cohort.as_str(),
                t.submission.as_str(),
                t.token_secret.as_str()
            ),
            (
                url,
                "Perf_2026",
                "s_0123456789abcdef01234567",
                "leaderboard-perf-2026"
            )
        );
        // The lab's own seed without a hidden one: the two Experiments differ in it alone.
        let plain = experiment_for(lab, &Variant::Student(vec![change.into()]), &opts()).unwrap();
        assert_ne!(plain.spec.pipeline, e.spec.pipeline);
        // A code lab needs an image with the student's code: refused, saying what to do.
        let labs = labs();
        let code = labs.iter().find(|l| l.spec.number == 3).unwrap();
        let err =
            verification_experiment(code, "c", &SubmissionDetail { lab: 3, ..d }, &opts(), url)
                .unwrap_err()
                .to_string();
        assert!(err.contains("without --k8s"), "{err}");
    }

    #[test]
    fn a_code_lab_runs_the_student_slot_and_can_use_the_students_image() {
        let labs = labs();
        let lab = labs.iter().find(|l| l.spec.number == 3).unwrap();
        let mut o = opts();
        o.variant_image = Some("me/pipeline:lab03".into());
        let e = experiment_for(lab, &Variant::Student(Vec::new()), &o).unwrap();
        assert!(
            e.spec
                .variant
                .set
                .contains(&"all.lab_impl=student".to_string())
        );
        assert!(
            e.spec
                .baseline
                .set
                .contains(&"all.lab_impl=baseline".to_string())
        );
        assert_eq!(e.spec.variant.image.as_deref(), Some("me/pipeline:lab03"));
    }

    #[test]
    fn labs_that_need_one_local_process_say_so() {
        let labs = labs();
        for (n, why) in [
            (6, "instruction counts"),
            (4, "in-process kernel"),
            (10, "completes"),
            (12, "criterion"),
        ] {
            let lab = labs.iter().find(|l| l.spec.number == n).unwrap();
            let err = experiment_for(lab, &Variant::Reference, &opts())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(why) && err.contains("without --k8s"),
                "{n}: {err}"
            );
        }
    }

    #[test]
    fn a_lab_metric_prometheus_cannot_window_is_refused() {
        let labs = labs();
        // Lab 05 compares the delivered fraction of a bounded run.
        let lab = labs.iter().find(|l| l.spec.number == 5).unwrap();
        let err = experiment_for(lab, &Variant::Reference, &opts())
            .unwrap_err()
            .to_string();
        assert!(err.contains("delivered_fraction"), "{err}");
    }
}
