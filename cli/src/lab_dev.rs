//! `observatory lab dev-check`: the labs' authoring check. Every chosen lab's baseline must not
//! pass and its reference must; a code lab's mutants (wrong but fast STUDENT bodies) must fail
//! on correctness; a knob lab must refuse an answer that changes its workload.
//!
//! Mutants are checked exactly as a student's code is (written into the slot file, built with
//! the student's build, checked), in rounds: round r writes mutant r of every lab into that
//! lab's slot file at once, so one build serves every lab of the round (a course of 15 code labs
//! with 28 mutants builds the pipeline 3 times instead of 28). The slot files are restored after
//! each round, and the pipeline is rebuilt from them at the end.

use crate::lab::{Restore, run_check};
use anyhow::{Context, bail};
use observatory_course::check::{Outcome, Variant};
use observatory_course::progress::Workspace;
use observatory_course::spec::Lab;
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

/// The rounds of mutant checks: (index into `labs`, mutant index) pairs, at most one per slot
/// file in a round (labs sharing a file take turns), each lab's mutants in order.
fn rounds(labs: &[(usize, String, usize)]) -> Vec<Vec<(usize, usize)>> {
    let mut next: Vec<usize> = vec![0; labs.len()];
    let mut out = Vec::new();
    loop {
        let mut round = Vec::new();
        let mut files = std::collections::BTreeSet::new();
        for (i, (lab, file, count)) in labs.iter().enumerate() {
            if next[i] < *count && files.insert(file.as_str()) {
                round.push((*lab, next[i]));
                next[i] += 1;
            }
        }
        if round.is_empty() {
            return out;
        }
        out.push(round);
    }
}

/// Round `r` of the mutant checks: every lab's mutant written into its slot file at once, then
/// each checked the way a student's code is (the first check builds, the others find it built).
/// The files are put back before this returns, whatever happened.
async fn mutant_round(
    round: &[(usize, usize)],
    progress: &mut [Progress<'_>],
    ws: &Workspace,
    root: &Path,
) -> anyhow::Result<()> {
    let mut restore = Vec::new();
    for &(i, m) in round {
        let lab = progress[i].lab;
        let Some(file) = lab.conformance_file() else {
            bail!("lab {} has no slot file for its mutants", lab.number());
        };
        let path = root.join(&file);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {file}"))?;
        let mutated = observatory_course::spec::with_student_body(&text, &lab.spec.mutants[m])
            .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        restore.push(Restore::new(path.clone(), text));
        std::fs::write(&path, mutated).with_context(|| format!("writing {file}"))?;
    }
    for &(i, m) in round {
        let lab = progress[i].lab;
        let o = run_check(lab, &Variant::Student(Vec::new()), ws, root, 0, false).await?;
        let refused = o.correct == Some(false) && !o.passed;
        eprintln!(
            "  lab {:02} mutant {}: {}",
            lab.number(),
            m + 1,
            if refused { "refused" } else { "NOT refused" }
        );
        progress[i].mutants[m] = Some((refused, o.verdict));
    }
    drop(restore);
    Ok(())
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
    let code_labs: Vec<(usize, String, usize)> = chosen
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_code_lab())
        .filter_map(|(i, l)| Some((i, l.conformance_file()?, l.spec.mutants.len())))
        .collect();
    let rounds = rounds(&code_labs);
    let total: u64 = chosen
        .iter()
        .map(|l| l.spec.check_seconds * (u64::from(1 + repeat) + l.spec.mutants.len() as u64))
        .sum();
    eprintln!(
        "authoring check of {} labs (baseline must fail, reference must pass{}, wrong but fast mutants must fail on correctness, a workload change must be refused): about {} min, and {} builds of the pipeline for {} mutants",
        chosen.len(),
        if repeat > 1 {
            format!(" {repeat} times out of {repeat}")
        } else {
            String::new()
        },
        total.div_ceil(60),
        rounds.len() + usize::from(!rounds.is_empty()),
        code_labs.iter().map(|(_, _, n)| n).sum::<usize>(),
    );
    let mut progress = Vec::new();
    for lab in &chosen {
        let t0 = std::time::Instant::now();
        let baseline = run_check(lab, &Variant::Baseline, ws, root, 0, false).await?;
        let mut refs = Vec::new();
        for _ in 0..repeat {
            refs.push(run_check(lab, &Variant::Reference, ws, root, 0, false).await?);
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
        progress.push(Progress {
            lab,
            baseline,
            refs,
            mutants: vec![None; lab.spec.mutants.len()],
            answer,
        });
    }
    for (r, round) in rounds.iter().enumerate() {
        let names: Vec<String> = round
            .iter()
            .map(|&(i, m)| format!("{:02}#{}", progress[i].lab.number(), m + 1))
            .collect();
        eprintln!(
            "mutants, round {} of {}: {} (one build for all of them)",
            r + 1,
            rounds.len(),
            names.join(" ")
        );
        let t0 = std::time::Instant::now();
        mutant_round(round, &mut progress, ws, root).await?;
        eprintln!("  round {} took {:.0} s", r + 1, t0.elapsed().as_secs_f64());
    }
    if !rounds.is_empty() {
        // The binary was last built from mutants: build it from the real files again.
        eprintln!("rebuilding the pipeline from the restored slot files");
        crate::lab::build_pipeline(root, true)
            .map_err(|e| e.context("the pipeline does not build from the restored slot files"))?;
    }
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
    use super::rounds;

    #[test]
    fn one_mutant_per_lab_a_round_and_labs_sharing_a_file_take_turns() {
        let labs = vec![
            (0, "a.rs".to_string(), 3),
            (1, "b.rs".to_string(), 1),
            (2, "c.rs".to_string(), 0),
            (3, "a.rs".to_string(), 1),
        ];
        assert_eq!(
            rounds(&labs),
            vec![
                vec![(0, 0), (1, 0)],
                vec![(0, 1)],
                vec![(0, 2)],
                vec![(3, 0)],
            ]
        );
        assert!(rounds(&[]).is_empty());
    }
}
