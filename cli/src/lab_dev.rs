//! `observatory lab dev-check`: the labs' authoring check. Every chosen lab's baseline must not
//! pass and its reference must; a code lab's mutants (wrong but fast STUDENT bodies) must fail
//! on correctness; a knob lab must refuse an answer that changes its workload.
//!
//! Mutants are compiled into the pipeline, not written into the slot files: each lab's
//! `mutants` become functions with the STUDENT signature in a generated file beside its slot
//! (`pipeline/src/slots/mutants/`; the check stops when one is stale), built once with the
//! pipeline's `lab-mutants` feature, and each runs the conformance check a student's code runs
//! first, as `--impl mutant-N`, in a binary that says it carries every lab's. One build for
//! every mutant, and no slot file is touched (so nothing is rebuilt afterwards). The build
//! without the feature is put back at the end.
//!
//! The labs that measure time (end-to-end runs, a kernel's events/s, criterion) are checked
//! first, alone; the mutants' build then runs in the background beside the rest (instruction
//! counts do not move under load, and a deadlocked baseline waits on idle processes), which run
//! a copy of the binary, since the build replaces `target/release/pipeline` when it ends.

use crate::lab::{run_check, run_checks_together};
use anyhow::{Context, bail};
use observatory_course::check::{Outcome, Variant};
use observatory_course::progress::Workspace;
use observatory_course::spec::{Lab, Mode};
use std::path::{Path, PathBuf};

#[derive(serde::Serialize)]
struct DevResult {
    lab: u32,
    slug: String,
    baseline_passed: bool,
    baseline_verdict: String,
    reference_passes: u32,
    reference_runs: u32,
    reference: Vec<Outcome>,
    /// Code labs: every mutant (a wrong but fast STUDENT body) failed on correctness.
    mutant_refused: Option<bool>,
    /// Code labs: each mutant's verdict, in the order of the lab's `mutants`.
    mutant_verdicts: Vec<String>,
    /// Knob labs: an answer changing a workload knob was refused, and the message.
    answer_refused: Option<bool>,
    answer_message: Option<String>,
}

/// One lab's authoring check as its runs come in.
struct Progress<'a> {
    lab: &'a Lab,
    baseline: Outcome,
    refs: Vec<Outcome>,
    /// (refused, verdict) of each mutant, in the lab's order; `None` until its round ran.
    mutants: Vec<Option<(bool, String)>>,
    answer: Option<(bool, String)>,
}

/// The answer check: an answer setting a workload knob is refused before anything runs.
async fn answer_check(lab: &Lab, ws: &Workspace, root: &Path) -> (bool, String) {
    let knob = lab
        .spec
        .workload
        .set
        .first()
        .and_then(|a| a.split_once('='))
        .map_or("source.events", |(k, _)| k);
    let mut answer = lab.spec.reference.set.clone();
    answer.push(format!("{knob}=1"));
    match run_check(lab, &Variant::Student(answer), ws, root, 0, false).await {
        Err(e) => (e.to_string().contains("may set only"), e.to_string()),
        Ok(o) => (false, format!("not refused: {}", o.verdict)),
    }
}

/// The generated mutant files must match the labs' `mutants` before they are built.
fn mutant_files_current(root: &Path, labs: &[Lab]) -> anyhow::Result<()> {
    let stale = observatory_course::spec::stale_mutant_files(root, labs)
        .map_err(|e| anyhow::anyhow!("reading the mutant files: {e}"))?;
    if !stale.is_empty() {
        bail!(
            "the generated mutant files {} do not match their labs' `mutants`: write them with `UPDATE_MUTANTS=1 cargo test --release -p observatory-course --test labs`",
            stale.join(" ")
        );
    }
    Ok(())
}

/// Every mutant of the chosen code labs, checked against its slot's specification in the
/// pipeline just built with them ([`MutantBuild`]).
async fn mutant_checks(
    progress: &mut [Progress<'_>],
    ws: &Workspace,
    root: &Path,
) -> anyhow::Result<()> {
    let want: Vec<(String, usize)> = progress
        .iter()
        .filter_map(|p| Some((p.lab.conformance_slot()?, p.lab.spec.mutants.len())))
        .collect();
    carries_the_mutants(&observatory_runner::local::find_pipeline_bin()?, &want)?;
    for p in progress.iter_mut() {
        let lab = p.lab;
        if !lab.is_code_lab() {
            continue;
        }
        let t0 = std::time::Instant::now();
        for m in 0..lab.spec.mutants.len() {
            let n = u8::try_from(m + 1).context("more than 255 mutants")?;
            let o = run_check(lab, &Variant::Mutant(n), ws, root, 0, false).await?;
            let refused = o.correct == Some(false) && !o.passed;
            p.mutants[m] = Some((refused, o.verdict));
        }
        eprintln!(
            "  lab {:02}: {} of {} mutants refused ({:.0} s)",
            lab.number(),
            p.mutants.iter().flatten().filter(|(r, _)| *r).count(),
            p.mutants.len(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The pipeline binary the checks run must be the one just built with the mutants, and carry
/// every lab's: a binary without them would fail every mutant's run, and a failed run counts
/// as a refused mutant.
fn carries_the_mutants(bin: &Path, want: &[(String, usize)]) -> anyhow::Result<()> {
    let out = std::process::Command::new(bin)
        .arg("mutants")
        .output()
        .with_context(|| format!("running {} mutants", bin.display()))?;
    let mismatch = |why: String| {
        anyhow::anyhow!(
            "{} is not the pipeline `{BUILD_MUTANTS}` just built ({why}): is PIPELINE_BIN set, or CARGO_TARGET_DIR another folder than this observatory's?",
            bin.display()
        )
    };
    if !out.status.success() {
        return Err(mismatch(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let counts: std::collections::BTreeMap<String, usize> = serde_json::from_slice(&out.stdout)
        .map_err(|e| mismatch(format!("its `mutants` answer is not a count per slot: {e}")))?;
    for (slot, n) in want {
        let have = counts.get(slot).copied().unwrap_or(0);
        if have != *n {
            return Err(mismatch(format!(
                "it has {have} mutants for slot `{slot}`, its lab has {n}"
            )));
        }
    }
    Ok(())
}

/// How the authoring check builds the pipeline with the labs' mutants: the student's build
/// ([`crate::lab::BUILD_PIPELINE`]) with the `lab-mutants` feature, which compiles the pipeline
/// crate again and reuses every dependency.
pub(crate) const BUILD_MUTANTS: &str =
    "cargo build --release --workspace --bin pipeline --features pipeline/lab-mutants";

/// Whether a lab's check measures time (end-to-end runs, a kernel's events/s, criterion's
/// samples) and so wants a quiet machine.
fn measures_time(lab: &Lab) -> bool {
    matches!(
        lab.spec.measure.mode,
        Mode::Wall | Mode::Kernel | Mode::Criterion
    )
}

/// One lab's baseline and reference checks (and a knob lab's answer check), running `bin`.
async fn check_lab<'a>(
    lab: &'a Lab,
    ws: &Workspace,
    root: &Path,
    repeat: u32,
    bin: &Path,
) -> anyhow::Result<Progress<'a>> {
    let t0 = std::time::Instant::now();
    // The baseline again and the first reference check together (in wall mode they share
    // the baseline's runs); further repeats of the reference one at a time.
    let together = if repeat > 0 {
        vec![Variant::Baseline, Variant::Reference]
    } else {
        vec![Variant::Baseline]
    };
    let mut first = run_checks_together(lab, &together, ws, root, bin)
        .await?
        .into_iter();
    let baseline = first.next().context("no outcome for the baseline")?;
    let mut refs: Vec<Outcome> = first.collect();
    for _ in 1..repeat {
        let again = run_checks_together(lab, &[Variant::Reference], ws, root, bin).await?;
        refs.extend(again);
    }
    let answer = if lab.is_code_lab() {
        None
    } else {
        Some(answer_check(lab, ws, root).await)
    };
    eprintln!(
        "  lab {:02}: baseline {}, reference {}/{repeat} passed ({:.0} s)",
        lab.number(),
        if baseline.passed { "PASSED" } else { "fails" },
        refs.iter().filter(|o| o.passed).count(),
        t0.elapsed().as_secs_f64()
    );
    Ok(Progress {
        lab,
        baseline,
        refs,
        mutants: vec![None; lab.spec.mutants.len()],
        answer,
    })
}

/// [`check_lab`] of each of `labs`, in turn.
async fn check_labs<'a>(
    labs: &[&'a Lab],
    ws: &Workspace,
    root: &Path,
    repeat: u32,
    bin: &Path,
) -> anyhow::Result<Vec<Progress<'a>>> {
    let mut done = Vec::new();
    for lab in labs {
        done.push(check_lab(lab, ws, root, repeat, bin).await?);
    }
    Ok(done)
}

/// [`BUILD_MUTANTS`] in the background (cargo's output to a log file, shown when it fails);
/// dropped unfinished, it is stopped.
struct MutantBuild {
    /// cargo's exit status and its seconds, from the moment it exited.
    task: tokio::task::JoinHandle<std::io::Result<(std::process::ExitStatus, f64)>>,
    log: PathBuf,
}

impl MutantBuild {
    fn start(root: &Path, log_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let log = log_dir.join("mutants-build.log");
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        eprintln!(
            "mutants: building the pipeline with them in the background ({BUILD_MUTANTS}; log: {})",
            log.display()
        );
        let started = std::time::Instant::now();
        let mut child = tokio::process::Command::new("cargo")
            .current_dir(root)
            .args(BUILD_MUTANTS.split(' ').skip(1))
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .context("running cargo")?;
        let task = tokio::spawn(async move {
            let status = child.wait().await?;
            Ok((status, started.elapsed().as_secs_f64()))
        });
        Ok(MutantBuild { task, log })
    }

    async fn finish(mut self) -> anyhow::Result<()> {
        let (status, seconds) = (&mut self.task)
            .await
            .context("the build's task")?
            .context("waiting for cargo")?;
        if !status.success() {
            let out = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("{out}");
            bail!(
                "the pipeline does not build with the labs' mutants: `{BUILD_MUTANTS}` failed (above)"
            );
        }
        eprintln!("mutants: built in {seconds:.0} s (beside the checks above)");
        Ok(())
    }
}

impl Drop for MutantBuild {
    /// Unfinished, the task and its child go (`kill_on_drop`).
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn dev_check(
    labs: &[Lab],
    ws: &Workspace,
    root: &Path,
    only: Option<u32>,
    all: bool,
    repeat: u32,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    let chosen: Vec<&Lab> = labs
        .iter()
        .filter(|l| only.map_or(all || l.spec.dev_check, |n| n == l.number()))
        .collect();
    if chosen.is_empty() {
        bail!("no lab matches");
    }
    let mutants: usize = chosen.iter().map(|l| l.spec.mutants.len()).sum();
    let total: u64 = chosen
        .iter()
        .map(|l| l.spec.check_seconds * u64::from(1 + repeat))
        .sum();
    eprintln!(
        "authoring check of {} labs (baseline must fail, reference must pass{}, wrong but fast mutants must fail on correctness, a workload change must be refused): about {} min, and one build of the pipeline for {mutants} mutants",
        chosen.len(),
        if repeat > 1 {
            format!(" {repeat} times out of {repeat}")
        } else {
            String::new()
        },
        total.div_ceil(60),
    );
    // Time-measuring labs first, alone; then the mutants' build beside the rest (module docs).
    let (timed, untimed): (Vec<&Lab>, Vec<&Lab>) =
        chosen.iter().copied().partition(|l| measures_time(l));
    let bin = observatory_runner::local::find_pipeline_bin()?;
    let mut progress = check_labs(&timed, ws, root, repeat, &bin).await?;
    if mutants > 0 {
        mutant_files_current(root, labs)?;
        // Copied before the build starts: a warm build may end at once.
        // Absolute: a run starts its stages from its own folder.
        let copy = std::path::absolute(ws.dir.join("dev-check").join("pipeline"))?;
        std::fs::create_dir_all(copy.parent().context("a folder")?)?;
        std::fs::copy(&bin, &copy)
            .with_context(|| format!("copying {} to {}", bin.display(), copy.display()))?;
        let build = MutantBuild::start(root, &ws.dir)?;
        // A failed check drops the build here, which stops it.
        let checked = async {
            let mut done = check_labs(&untimed, ws, root, repeat, &copy).await?;
            progress.append(&mut done);
            build.finish().await?;
            mutant_checks(&mut progress, ws, root).await
        }
        .await;
        // The binary of `make build` and a student's check again (cargo finds it built).
        let restored = crate::lab::build_pipeline(root, true)
            .map_err(|e| e.context("the pipeline does not build without the mutants"));
        let _ = std::fs::remove_file(&copy);
        checked?;
        restored?;
    } else {
        progress.extend(check_labs(&untimed, ws, root, repeat, &bin).await?);
    }
    progress.sort_by_key(|p| p.lab.number());
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for p in progress {
        results.push(summarize(p, repeat, &mut failures));
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&results)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("results: {}", path.display());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "labs failing the authoring check: {failures:?}"
        ))
    }
}

/// Print one lab's lines of the authoring check and note it in `failures` when it failed.
fn summarize(p: Progress<'_>, repeat: u32, failures: &mut Vec<u32>) -> DevResult {
    let Progress {
        lab,
        baseline: b,
        refs,
        mutants,
        answer,
    } = p;
    let passes = refs.iter().filter(|o| o.passed).count() as u32;
    let refs_correct = refs.iter().all(|o| o.correct != Some(false));
    let mutants: Vec<(bool, String)> = mutants
        .into_iter()
        .map(|m| m.unwrap_or((false, "not checked".into())))
        .collect();
    let mutant_refused = lab.is_code_lab().then(|| mutants.iter().all(|(r, _)| *r));
    let (answer_refused, answer_message) = match answer {
        Some((r, m)) => (Some(r), Some(m)),
        None => (None, None),
    };
    let ok = !b.passed
        && passes == repeat
        && refs_correct
        && mutant_refused != Some(false)
        && answer_refused != Some(false);
    println!(
        "{} lab {:02} {:<28} baseline: {:<8} reference: {passes}/{repeat} passed   {}",
        if ok { "ok  " } else { "FAIL" },
        lab.number(),
        lab.slug,
        if b.passed { "PASSED" } else { "fails" },
        match (mutant_refused, answer_refused) {
            (Some(true), _) => "mutants: refused",
            (Some(false), _) => "mutants: NOT all refused",
            (_, Some(true)) => "workload change: refused",
            (_, Some(false)) => "workload change: NOT refused",
            _ => "",
        }
    );
    println!("       baseline  {}", b.verdict);
    for r in &refs {
        println!("       reference {}", r.verdict);
    }
    for (_, v) in &mutants {
        println!("       mutant    {v}");
    }
    if let Some(m) = &answer_message {
        println!("       answer    {m}");
    }
    if !ok {
        failures.push(lab.number());
    }
    DevResult {
        lab: lab.number(),
        slug: lab.slug.clone(),
        baseline_passed: b.passed,
        baseline_verdict: b.verdict,
        reference_passes: passes,
        reference_runs: repeat,
        reference: refs,
        mutant_refused,
        mutant_verdicts: mutants.into_iter().map(|(_, v)| v).collect(),
        answer_refused,
        answer_message,
    }
}

#[cfg(test)]
mod tests {
    use super::carries_the_mutants;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in pipeline answering `mutants` with `script`'s output and status.
    fn stand_in(dir: &std::path::Path, script: &str) -> std::path::PathBuf {
        let bin = dir.join("pipeline");
        std::fs::write(
            &bin,
            format!("#!/bin/sh\n[ \"$1\" = mutants ] || exit 3\n{script}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    }

    /// Only a binary that carries every lab's mutants runs them: one built without the
    /// feature (its mutant runs would all fail, and count as refused), an older one, or one
    /// with other mutant lists is refused, naming why.
    #[test]
    fn mutants_run_only_in_a_binary_that_carries_the_labs() {
        let dir = tempfile::tempdir().unwrap();
        let want = vec![("hotspot".to_string(), 1), ("fanout".to_string(), 2)];
        let ok = stand_in(dir.path(), r#"echo '{"fanout":2,"hotspot":1,"leak":1}'"#);
        carries_the_mutants(&ok, &want).unwrap();
        for (script, why) in [
            (
                "echo \"pipeline: error: this binary was built without the labs' mutants\" >&2; exit 2",
                "without the labs' mutants",
            ),
            (
                "echo 'error: unrecognized subcommand' >&2; exit 2",
                "unrecognized",
            ),
            (
                r#"echo '{"fanout":1,"hotspot":1}'"#,
                "1 mutants for slot `fanout`",
            ),
            (r#"echo '{"fanout":2}'"#, "0 mutants for slot `hotspot`"),
            ("echo 'not json'", "not a count per slot"),
        ] {
            let d = tempfile::tempdir().unwrap();
            let e = carries_the_mutants(&stand_in(d.path(), script), &want).unwrap_err();
            let e = e.to_string();
            assert!(
                e.contains(why) && e.contains("is not the pipeline"),
                "{script}: {e}"
            );
        }
    }
}
