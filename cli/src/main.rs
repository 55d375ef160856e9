//! `observatory`: the one user-facing command of the Rust Performance Observatory.

mod lab;
mod lab_k8s;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use observatory_runner::local::find_pipeline_bin;
use observatory_runner::run::{RunConfig, run_local};
use pipeline_plan::{Plan, Role, StageKnobs};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

#[derive(Parser)]
#[command(
    name = "observatory",
    version,
    about = "The Rust Performance Observatory: run the instrumented pipeline (source -> parse -> aggregate -> sink), measure it, do the labs."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the pipeline and watch it live until Ctrl-C (or --duration / --events).
    Up(Workload),
    /// Run a bounded workload (--events or --duration) and print its summary.
    Run {
        #[command(flatten)]
        workload: Workload,
        /// Print the summary as JSON on standard output.
        #[arg(long)]
        json: bool,
    },
    /// List every knob with its default value.
    Knobs,
    /// Measurements.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The course: labs that change the pipeline and prove the effect.
    #[command(subcommand)]
    Lab(lab::LabCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Compare two configurations: interleaved runs (A B A B …), ratios with 95% intervals,
    /// a report with plots and a differential flamegraph; or instruction counts (--mode instructions).
    Ab {
        #[command(flatten)]
        workload: Workload,
        #[command(flatten)]
        sides: Sides,
        #[command(flatten)]
        repeat: Repeat,
        /// `wall`: real runs, timed; `instructions`: callgrind instruction counts of one stage's
        /// kernel over a fixed replay (deterministic; for CPU-bound changes).
        #[arg(long, value_enum, default_value = "wall")]
        mode: Mode,
        /// The stage whose kernel is counted (instructions mode): parse or aggregate.
        #[arg(long, default_value = "parse")]
        stage: String,
    },
    /// Measure this machine's noise floor: the same configuration on both sides.
    Aa {
        #[command(flatten)]
        workload: Workload,
        #[command(flatten)]
        repeat: Repeat,
    },
    /// Compare two sample files (from `bench ab`, `bench aa` or `bench run --json`): exit 1 on a
    /// significant regression beyond the threshold.
    Compare {
        /// The baseline samples.
        old: PathBuf,
        /// The samples to judge.
        new: PathBuf,
        /// A regression must be significant and larger than this fraction.
        #[arg(long, default_value_t = 0.05)]
        threshold: f64,
    },
    /// Run the criterion benchmarks of the hot paths (needs the source tree and cargo) and
    /// print a summary.
    Run {
        /// Only benchmarks whose name contains this.
        filter: Option<String>,
        /// Write the samples (time per iteration) as a sample file, for `bench compare`.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Wall,
    Instructions,
}

#[derive(Args)]
struct Sides {
    /// Label of side A.
    #[arg(long, default_value = "A")]
    a_label: String,
    /// A knob assignment of side A (repeatable), e.g. --a parse.mode=owned.
    #[arg(long = "a", value_name = "STAGE.KNOB=VALUE")]
    a: Vec<String>,
    /// Label of side B.
    #[arg(long, default_value = "B")]
    b_label: String,
    /// A knob assignment of side B (repeatable), e.g. --b parse.mode=borrowed.
    #[arg(long = "b", value_name = "STAGE.KNOB=VALUE")]
    b: Vec<String>,
}

#[derive(Args)]
struct Repeat {
    /// Measured pairs of runs (instructions mode: repeats per side).
    #[arg(long, default_value_t = 6)]
    pairs: usize,
    /// Warm-up pairs, run first and discarded.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
}

#[derive(Args)]
struct Workload {
    /// Run the stages as local processes on loopback (the default mode; for Kubernetes see `make up`).
    #[arg(long)]
    local: bool,
    /// Start from a plan file (TOML: name, [labels], one table of knobs per stage).
    #[arg(long)]
    plan: Option<PathBuf>,
    /// Set a knob, e.g. --set parse.mode=borrowed, --set all.allocator=system (repeatable).
    #[arg(long = "set", value_name = "STAGE.KNOB=VALUE")]
    set: Vec<String>,
    /// Events to emit (shorthand for --set source.events=N).
    #[arg(long)]
    events: Option<u64>,
    /// Seconds to run (shorthand for --set source.duration_seconds=S).
    #[arg(long)]
    duration: Option<f64>,
    /// Events per second, 0 for as fast as possible (shorthand for --set source.rate=N).
    #[arg(long)]
    rate: Option<u64>,
    /// Pipeline name (a metric label).
    #[arg(long)]
    name: Option<String>,
    /// Add a label to every metric, e.g. --label run=baseline (repeatable).
    #[arg(long = "label", value_name = "NAME=VALUE")]
    labels: Vec<String>,
    /// Report folder (default: reports/<time>-<command>).
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// Seconds of CPU profile per stage for the flamegraphs (0: none).
    #[arg(long, default_value_t = 3)]
    profile_seconds: u64,
    /// Keep the stages' admin ports up this many seconds after the stream ends.
    #[arg(long, default_value_t = 0.0)]
    linger: f64,
    /// Start Prometheus (and Grafana) around the run when installed (the default for `up`).
    #[arg(long, conflicts_with = "no_stack")]
    stack: bool,
    /// Do not start Prometheus or Grafana.
    #[arg(long)]
    no_stack: bool,
}

impl Workload {
    fn plan(&self, default_name: &str) -> anyhow::Result<Plan> {
        let mut plan = match &self.plan {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Plan::from_toml(&path.display().to_string(), &text)?
            }
            None => Plan::new(default_name),
        };
        if let Some(n) = &self.name {
            plan.name = n.clone();
        }
        for s in &self.set {
            plan.assign(s)?;
        }
        if let Some(n) = self.events {
            plan.set("source", "events", &n.to_string())?;
        }
        if let Some(d) = self.duration {
            plan.set("source", "duration_seconds", &d.to_string())?;
        }
        if let Some(r) = self.rate {
            plan.set("source", "rate", &r.to_string())?;
        }
        for l in &self.labels {
            let (k, v) = l
                .split_once('=')
                .with_context(|| format!("`{l}` is not NAME=VALUE"))?;
            plan.labels
                .insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(plan)
    }

    fn config(&self, command: &str) -> anyhow::Result<RunConfig> {
        let stack = !self.no_stack && (self.stack || command == "up");
        Ok(RunConfig {
            pipeline_bin: find_pipeline_bin()?,
            report_dir: self.report_dir.clone().unwrap_or_else(|| {
                PathBuf::from("reports").join(format!("{}-{command}", timestamp()))
            }),
            profile_seconds: self.profile_seconds,
            linger: Duration::from_secs_f64(self.linger.max(0.0)),
            live: std::io::stderr().is_terminal(),
            stack,
        })
    }
}

fn source_bounded(plan: &Plan) -> bool {
    matches!(plan.knobs(Role::Source), Some(StageKnobs::Source(s)) if s.events > 0 || s.duration_seconds > 0.0)
}

/// UTC `YYYYmmdd-HHMMSS`.
fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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

async fn up(w: Workload) -> anyhow::Result<()> {
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
    if !summary.conserved {
        bail!("events were not all accounted for; see the report");
    }
    Ok(())
}

async fn run(w: Workload, json: bool) -> anyhow::Result<()> {
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
    Ok(())
}

fn progress_bar(total: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} runs  {msg}  (eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

async fn bench_ab(w: Workload, sides: Sides, repeat: Repeat, aa: bool) -> anyhow::Result<()> {
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

fn bench_instructions(
    w: Workload,
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

fn bench_compare(
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

fn bench_run(filter: Option<String>, json: Option<PathBuf>) -> anyhow::Result<()> {
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

fn knobs() {
    for role in Role::CHAIN {
        println!("[{role}]");
        for (k, v) in StageKnobs::defaults(role).to_map() {
            println!("{role}.{k} = {v}");
        }
        println!();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // One thread: the work happens in the stage processes; spawning children from one
    // long-lived thread also keeps their parent-death signal tied to this process.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("observatory: error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(w) => up(w).await,
            Command::Run { workload, json } => run(workload, json).await,
            Command::Knobs => {
                knobs();
                Ok(())
            }
            Command::Bench(BenchCommand::Ab {
                workload,
                sides,
                repeat,
                mode,
                stage,
            }) => match mode {
                Mode::Wall => bench_ab(workload, sides, repeat, false).await,
                Mode::Instructions => bench_instructions(workload, sides, repeat, &stage),
            },
            Command::Bench(BenchCommand::Aa { workload, repeat }) => {
                let sides = Sides {
                    a_label: "A".into(),
                    a: vec![],
                    b_label: "A'".into(),
                    b: vec![],
                };
                bench_ab(workload, sides, repeat, true).await
            }
            Command::Bench(BenchCommand::Compare {
                old,
                new,
                threshold,
            }) => match bench_compare(&old, &new, threshold) {
                Ok(true) => Ok(()),
                Ok(false) => Err(anyhow::anyhow!(
                    "significant regression (see the table above)"
                )),
                Err(e) => Err(e),
            },
            Command::Bench(BenchCommand::Run { filter, json }) => bench_run(filter, json),
            Command::Lab(cmd) => lab::run(cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("observatory: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
