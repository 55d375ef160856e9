//! `observatory`: the one user-facing command of the Rust Performance Observatory.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use observatory_bench::local::find_pipeline_bin;
use observatory_bench::run::{RunConfig, run_local};
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
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Run two configurations interleaved (A B A B …) and compare them.
    Ab {
        #[command(flatten)]
        workload: Workload,
        /// Label of side A.
        #[arg(long, default_value = "A")]
        a_label: String,
        /// A knob assignment of side A (repeatable), e.g. --a all.telemetry=true.
        #[arg(long = "a", value_name = "STAGE.KNOB=VALUE")]
        a: Vec<String>,
        /// Label of side B.
        #[arg(long, default_value = "B")]
        b_label: String,
        /// A knob assignment of side B (repeatable), e.g. --b all.telemetry=false.
        #[arg(long = "b", value_name = "STAGE.KNOB=VALUE")]
        b: Vec<String>,
        /// Measured pairs of runs.
        #[arg(long, default_value_t = 5)]
        pairs: usize,
        /// Warm-up pairs, run first and discarded.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Write the result JSON here (default: <report dir>/ab.json).
        #[arg(long)]
        out: Option<PathBuf>,
    },
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

async fn bench_ab(
    w: Workload,
    a: (String, Vec<String>),
    b: (String, Vec<String>),
    pairs: usize,
    warmup: usize,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    use observatory_bench::ab::{AbConfig, default_out, run_ab};
    use observatory_bench::summary::si;
    if pairs < 2 {
        bail!("--pairs must be at least 2 to say anything about spread");
    }
    let base = w.plan("ab")?;
    if !source_bounded(&base) {
        bail!("an A/B run needs a bounded workload: --events N or --duration SECONDS");
    }
    let mut run = w.config("ab")?;
    run.live = false;
    let out = out.unwrap_or_else(|| default_out(&run.report_dir));
    let cfg = AbConfig {
        base,
        a,
        b,
        pairs,
        warmup_pairs: warmup,
        run,
    };
    let bar = indicatif::ProgressBar::new((2 * (pairs + warmup)) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} runs  {msg}  (eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let result = run_ab(&cfg, |n, total, label| {
        bar.set_position((n - 1) as u64);
        bar.set_message(format!("run {n}/{total}: {label}"));
    })
    .await;
    bar.finish_and_clear();
    let result = result?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&result)?)?;
    let r = result.throughput_ratio;
    for s in [&result.a, &result.b] {
        let runs: Vec<String> = s.runs.iter().map(|f| si(f.throughput_eps)).collect();
        println!(
            "{:<16} median {}/s   runs: {}",
            s.label,
            si(s.median_throughput_eps),
            runs.join(", ")
        );
    }
    println!(
        "throughput {}/{}: {:.4} (95% bootstrap interval {:.4} .. {:.4})",
        result.b.label, result.a.label, r.ratio, r.low, r.high
    );
    println!("results: {}", out.display());
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
                a_label,
                a,
                b_label,
                b,
                pairs,
                warmup,
                out,
            }) => bench_ab(workload, (a_label, a), (b_label, b), pairs, warmup, out).await,
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
