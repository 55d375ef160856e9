//! `observatory bench`: the A/B engine, instruction counts, sample comparisons and the
//! criterion suite, with their progress and their tables.

use crate::args::{Repeat, Sides, WorkloadArgs};
use crate::local::source_bounded;
use anyhow::bail;
use pipeline_plan::{Role, StageKnobs};
use std::path::PathBuf;

pub fn progress_bar(total: usize) -> indicatif::ProgressBar {
    count_bar(total, "runs")
}

/// A bar of `total` things called `unit`, with a message and the time left.
pub fn count_bar(total: usize, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:30}} {{pos}}/{{len}} {unit}  {{msg}}  (eta {{eta}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// The bar of a lab check's steps, with elapsed time (hidden when stderr is not a terminal).
pub fn step_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed}] {bar:24} {pos}/{len}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

pub async fn bench_ab(
    w: WorkloadArgs,
    sides: Sides,
    repeat: Repeat,
    aa: bool,
) -> anyhow::Result<()> {
    use observatory_bench::ab::{AbConfig, run_ab};
    use observatory_bench::report::summary_text;
    if repeat.pairs < 3 {
        bail!("--pairs must be at least 3 to say anything about spread");
    }
    let base = w.plan(if aa { "aa" } else { "ab" })?;
    if !source_bounded(&base) {
        bail!("a measurement needs a bounded workload: --events N or --duration SECONDS");
    }
    let mut run = w.config(if aa { "aa" } else { "ab" })?;
    run.live = false;
    let report_dir = run.report_dir.clone();
    let (a, b) = if aa {
        (
            ("A".to_string(), Vec::new()),
            ("A'".to_string(), Vec::new()),
        )
    } else {
        ((sides.a_label, sides.a), (sides.b_label, sides.b))
    };
    let cfg = AbConfig {
        base,
        a,
        b,
        pairs: repeat.pairs,
        warmup_pairs: repeat.warmup,
        run,
        profile_seconds: if aa { 0 } else { w.profile_seconds },
        stats: Default::default(),
    };
    let bar = progress_bar(
        2 * (repeat.pairs + repeat.warmup) + if cfg.profile_seconds > 0 { 2 } else { 0 },
    );
    let result = run_ab(&cfg, |n, total, what| {
        bar.set_position((n - 1) as u64);
        bar.set_message(format!("run {n}/{total}: {what}"));
    })
    .await;
    bar.finish_and_clear();
    let result = result?;
    print!("{}", summary_text(&result));
    println!("report: {}", report_dir.display());
    Ok(())
}

pub fn bench_instructions(
    w: WorkloadArgs,
    sides: Sides,
    repeat: Repeat,
    stage: &str,
) -> anyhow::Result<()> {
    use observatory_bench::callgrind::{InstructionConfig, run};
    let base = w.plan("instructions")?;
    let events = match base.knobs(Role::Source) {
        Some(StageKnobs::Source(s)) if s.events > 0 => s.events,
        _ => 20_000,
    };
    let run_cfg = w.config("instructions")?;
    let cfg = InstructionConfig {
        pipeline_bin: run_cfg.pipeline_bin,
        dir: run_cfg.report_dir.clone(),
        base: &base,
        stage: stage.parse()?,
        a: (sides.a_label, sides.a),
        b: (sides.b_label, sides.b),
        events,
        repeats: repeat.pairs.clamp(1, 5),
    };
    let bar = progress_bar(2 * cfg.repeats);
    let result = run(&cfg, |n, total, what| {
        bar.set_position((n - 1) as u64);
        bar.set_message(format!("callgrind {n}/{total}: {what}"));
    });
    bar.finish_and_clear();
    let r = result?;
    println!(
        "instructions of the {} kernel over {} replayed events (callgrind):",
        r.stage, r.events
    );
    for s in [&r.a, &r.b] {
        println!(
            "  {:<14} {:>10.1} instructions/event  (repeats {:?}, spread {:.4}%)",
            s.label,
            s.instructions_per_event,
            s.instructions,
            s.spread * 100.0
        );
    }
    println!(
        "B/A: {:.4} [{:.4} .. {:.4}]  {}",
        r.ratio.ratio, r.ratio.low, r.ratio.high, r.verdict
    );
    println!("results: {}", cfg.dir.join("instructions.json").display());
    Ok(())
}

pub fn bench_compare(
    old: &std::path::Path,
    new: &std::path::Path,
    threshold: f64,
) -> anyhow::Result<bool> {
    use observatory_bench::samples::{SampleSet, compare_sets};
    let (a, b) = (SampleSet::read(old)?, SampleSet::read(new)?);
    let v = compare_sets(&a, &b, threshold, &Default::default());
    if v.comparisons.is_empty() {
        bail!("the two files share no metric");
    }
    println!(
        "{} -> {} (regression: significantly worse by more than {:.1}%)",
        a.label,
        b.label,
        threshold * 100.0
    );
    for c in &v.comparisons {
        println!(
            "  {:<40} {:.4} [{:.4} .. {:.4}]  {}{}",
            c.metric,
            c.ratio.ratio,
            c.ratio.low,
            c.ratio.high,
            c.verdict,
            if v.regressions.contains(&c.metric) {
                "  REGRESSION"
            } else {
                ""
            }
        );
    }
    Ok(v.regressions.is_empty())
}

pub fn bench_run(filter: Option<String>, json: Option<PathBuf>) -> anyhow::Result<()> {
    use observatory_bench::criterion_summary::{run_suite, summary};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let results = run_suite(&root, filter.as_deref())?;
    print!("{}", summary(&results));
    if let Some(path) = json {
        observatory_bench::criterion_summary::samples(&results).write(&path)?;
        println!("samples: {}", path.display());
    }
    Ok(())
}
