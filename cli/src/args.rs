//! The command line's arguments: the commands, and how a workload's flags become a plan and a
//! run configuration.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use observatory_runner::local::find_pipeline_bin;
use observatory_runner::run::RunConfig;
use pipeline_plan::Plan;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "observatory",
    version,
    about = "The Rust Performance Observatory: run the instrumented pipeline (source -> parse -> aggregate -> sink), measure it, do the labs."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start the pipeline and watch it live until Ctrl-C (or --duration / --events).
    Up(WorkloadArgs),
    /// Run a bounded workload (--events or --duration) and print its summary.
    Run {
        #[command(flatten)]
        workload: WorkloadArgs,
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
    Lab(crate::lab::LabCommand),
    /// Cohort leaderboards: the server, and the instructor's commands (students use
    /// `observatory lab submit N`).
    #[command(subcommand)]
    Leaderboard(crate::leaderboard::LeaderboardCommand),
    /// Do faults to real stage processes (kill -9, SIGSTOP, a 1000x slower sink, a stage that
    /// cannot start), one run each, and write what each run showed to a table
    /// (<report-dir>/table.md, chaos.json). Exit 1 if any run did not hold.
    Chaos {
        /// The short version (kill -9 of each stage, SIGSTOP of parse for 3 s, a slow sink for
        /// 12 s, a stage that cannot start: about a minute; the one `make test` runs).
        #[arg(long)]
        short: bool,
        /// Where the table and each run's report go.
        #[arg(long, default_value = "reports/chaos")]
        report_dir: PathBuf,
    },
    /// Attack a real local run from outside, as a hostile pod would (forged ends of stream,
    /// wrong tokens, insiders with the token, random records, held frames, floods, slow admin
    /// clients, an abandoned profile, a far-future event), and write what the pipeline counted
    /// (<report-dir>/robustness.md, robustness.json). About a minute. Exit 1 if any run did
    /// not hold.
    Robustness {
        /// Where the report and each run's report go.
        #[arg(long, default_value = "reports/chaos")]
        report_dir: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Compare two configurations: interleaved runs (A B A B …), ratios with 95% intervals,
    /// a report with plots and a differential flamegraph; or instruction counts (--mode instructions).
    Ab {
        #[command(flatten)]
        workload: WorkloadArgs,
        #[command(flatten)]
        sides: Sides,
        #[command(flatten)]
        repeat: Repeat,
        /// `wall`: real runs, timed; `instructions`: callgrind instruction counts of one stage's
        /// kernel over a fixed replay (deterministic; for CPU-bound changes).
        #[arg(long, value_enum, default_value = "wall")]
        mode: BenchMode,
        /// The stage whose kernel is counted (instructions mode): parse, aggregate or sink (the sink log's replay, lab 15).
        #[arg(long, default_value = "parse")]
        stage: String,
    },
    /// Measure this machine's noise floor: the same configuration on both sides.
    Aa {
        #[command(flatten)]
        workload: WorkloadArgs,
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
pub enum BenchMode {
    Wall,
    Instructions,
}

#[derive(Args)]
pub struct Sides {
    /// Label of side A.
    #[arg(long, default_value = "A")]
    pub a_label: String,
    /// A knob assignment of side A (repeatable), e.g. --a parse.mode=owned.
    #[arg(long = "a", value_name = "STAGE.KNOB=VALUE")]
    pub a: Vec<String>,
    /// Label of side B.
    #[arg(long, default_value = "B")]
    pub b_label: String,
    /// A knob assignment of side B (repeatable), e.g. --b parse.mode=borrowed.
    #[arg(long = "b", value_name = "STAGE.KNOB=VALUE")]
    pub b: Vec<String>,
}

#[derive(Args)]
pub struct Repeat {
    /// Measured pairs of runs (instructions mode: repeats per side).
    #[arg(long, default_value_t = 6)]
    pub pairs: usize,
    /// Warm-up pairs, run first and discarded.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
}

#[derive(Args)]
pub struct WorkloadArgs {
    /// Run the stages as local processes on loopback (the default mode; for Kubernetes see `make up`).
    #[arg(long)]
    pub local: bool,
    /// Start from a plan file (TOML: name, [labels], one table of knobs per stage).
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Set a knob, e.g. --set parse.mode=borrowed, --set all.allocator=system (repeatable).
    #[arg(long = "set", value_name = "STAGE.KNOB=VALUE")]
    pub set: Vec<String>,
    /// Events to emit (shorthand for --set source.events=N).
    #[arg(long)]
    pub events: Option<u64>,
    /// Seconds to run (shorthand for --set source.duration_seconds=S).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Events per second, 0 for as fast as possible (shorthand for --set source.rate=N).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Pipeline name (a metric label).
    #[arg(long)]
    pub name: Option<String>,
    /// Add a label to every metric, e.g. --label run=baseline (repeatable).
    #[arg(long = "label", value_name = "NAME=VALUE")]
    pub labels: Vec<String>,
    /// Report folder (default: reports/<time>-<command>).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// Seconds of CPU profile per stage for the flamegraphs (0: none).
    #[arg(long, default_value_t = 3)]
    pub profile_seconds: u64,
    /// Keep the stages' admin ports up this many seconds after the stream ends.
    #[arg(long, default_value_t = 0.0)]
    pub linger: f64,
    /// Start Prometheus (and Grafana) around the run when installed (the default for `up`).
    #[arg(long, conflicts_with = "no_stack")]
    pub stack: bool,
    /// Do not start Prometheus or Grafana.
    #[arg(long)]
    pub no_stack: bool,
    /// Restart a stage that dies, on the same ports (`on-failure`, the default with
    /// `--set all.delivery=at_least_once`) or never (the default otherwise).
    #[arg(long, value_enum)]
    pub restart: Option<RestartArg>,
}

/// `--restart`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartArg {
    OnFailure,
    Never,
}

impl WorkloadArgs {
    pub fn plan(&self, default_name: &str) -> anyhow::Result<Plan> {
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

    pub fn config(&self, command: &str) -> anyhow::Result<RunConfig> {
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
            restart: match self.restart {
                None => observatory_runner::run::Restart::Auto,
                Some(RestartArg::OnFailure) => observatory_runner::run::Restart::OnFailure,
                Some(RestartArg::Never) => observatory_runner::run::Restart::Never,
            },
        })
    }
}

/// UTC `YYYYmmdd-HHMMSS`: the name of a report folder.
pub fn timestamp() -> String {
    jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string()
}
