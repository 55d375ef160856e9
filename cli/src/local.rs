//! `observatory up` and `observatory run`: one local run of the pipeline, and the knob list.

use crate::args::WorkloadArgs;
use anyhow::bail;
use observatory_runner::run::run_local;
use pipeline_plan::{Plan, Role, StageKnobs};
use tokio::sync::mpsc;

pub fn source_bounded(plan: &Plan) -> bool {
    matches!(plan.knobs(Role::Source), Some(StageKnobs::Source(s)) if s.events > 0 || s.duration_seconds > 0.0)
}

/// Forward Ctrl-C presses to the runner.
fn interrupts() -> mpsc::UnboundedReceiver<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    rx
}

pub async fn up(w: WorkloadArgs) -> anyhow::Result<()> {
    let mut plan = w.plan("local")?;
    if w.rate.is_none() && !w.set.iter().any(|s| s.starts_with("source.rate")) && w.plan.is_none() {
        // A steady, watchable rate by default; --rate 0 runs flat out.
        plan.set("source", "rate", "100000")?;
    }
    let cfg = w.config("up")?;
    eprintln!(
        "observatory: starting pipeline `{}` locally ({}); report in {}",
        plan.name,
        if source_bounded(&plan) {
            "bounded run"
        } else {
            "Ctrl-C to stop"
        },
        cfg.report_dir.display()
    );
    eprintln!(
        "observatory: each stage serves /metrics, /stats and /debug/pprof on its admin port (see {}/run/*.ready.json)",
        cfg.report_dir.display()
    );
    let summary = run_local(&plan, &cfg, interrupts()).await?;
    println!("{}", summary.to_text());
    println!(
        "report: {}  (summary.txt, summary.json, flamegraph-<stage>.svg)",
        summary.report_dir
    );
    not_conserved(&summary)
}

pub async fn run(w: WorkloadArgs, json: bool) -> anyhow::Result<()> {
    let plan = w.plan("local")?;
    if !source_bounded(&plan) {
        bail!(
            "`run` needs a bounded workload: --events N or --duration SECONDS (use `up` to run until Ctrl-C)"
        );
    }
    let cfg = w.config("run")?;
    let summary = run_local(&plan, &cfg, interrupts()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{}", summary.to_text());
        println!("report: {}", summary.report_dir);
    }
    not_conserved(&summary)
}

/// A run that lost events, or whose stage died, fails (exit status 1) after its summary.
fn not_conserved(summary: &observatory_runner::summary::RunSummary) -> anyhow::Result<()> {
    if summary.conserved {
        return Ok(());
    }
    match &summary.not_conserved_because {
        Some(why) => bail!(
            "the run is not conserved: {why}; see {}",
            summary.report_dir
        ),
        None => bail!(
            "events were not all accounted for; see {}",
            summary.report_dir
        ),
    }
}

pub fn knobs() {
    for role in Role::CHAIN {
        println!("[{role}]");
        for (k, v) in StageKnobs::defaults(role).to_map() {
            println!("{role}.{k} = {v}");
        }
        println!();
    }
}

/// `observatory robustness`: attacks on a real run, the report on stdout and in the folder.
pub async fn robustness(dir: &std::path::Path) -> anyhow::Result<()> {
    use observatory_runner::robustness::{Options, run_report, table};
    let opts = Options::new(dir)?;
    let rows = run_report(&opts, |n, total, what| {
        eprintln!("observatory: robustness {n}/{total}: {what}");
    })
    .await?;
    print!("{}", table(&rows));
    eprintln!(
        "observatory: report in {}",
        dir.join("robustness.md").display()
    );
    let failed = rows.iter().filter(|r| !r.passed()).count();
    if failed > 0 {
        bail!("{failed} of {} attacked runs did not hold", rows.len());
    }
    Ok(())
}

/// `observatory chaos`: the fault suite, its table on stdout and in the report folder.
pub async fn chaos(short: bool, dir: &std::path::Path) -> anyhow::Result<()> {
    use observatory_runner::chaos::{ChaosOptions, Fault, run_suite, table};
    let faults = if short { Fault::short() } else { Fault::full() };
    let opts = ChaosOptions::new(dir)?;
    let rows = run_suite(&faults, &opts, |n, total, what| {
        eprintln!("observatory: chaos {n}/{total}: {what}");
    })
    .await?;
    print!("{}", table(&rows));
    eprintln!("observatory: table in {}", dir.join("table.md").display());
    let failed = rows.iter().filter(|r| !r.passed()).count();
    if failed > 0 {
        bail!("{failed} of {} faulted runs did not hold", rows.len());
    }
    Ok(())
}
