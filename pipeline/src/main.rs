//! `pipeline`: run one stage of the observatory's pipeline, or inspect its data.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use observatory_telemetry::{self as telemetry, LogFormat};
use pipeline::alloc::{self, Dispatch};
use pipeline::generate::Generator;
use pipeline::seglog;
use pipeline::stage::{self, RunOptions};
use pipeline_plan::{Knobs, LabImpl, PlanError, Role, SourceKnobs, StageConfig, StageKnobs};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[global_allocator]
static GLOBAL: Dispatch = Dispatch;

/// jemalloc options, read when jemalloc initialises (only if it is the chosen allocator): heap
/// profiling on, sampling one allocation per 512 KiB on average, which costs little.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:19\0";

#[derive(Parser)]
#[command(
    name = "pipeline",
    version,
    about = "One stage of the observatory's streaming pipeline (source -> parse -> aggregate -> sink), or tools for its data.",
    after_help = "Knobs come from the config file, then PIPELINE_KNOB_<NAME> environment variables, then --set.\n\
                  Logs: RUST_LOG filters (default info); traces go to OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate (or replay) the event stream and send it downstream.
    Source(StageArgs),
    /// Parse JSON records into compact events; count invalid ones by reason.
    Parse(StageArgs),
    /// Aggregate events into tumbling windows per (service, route).
    Aggregate(StageArgs),
    /// Persist window results to the segment log (or discard them).
    Sink(StageArgs),
    /// Check every record of a segment log and print totals (exit 1 on corruption).
    VerifyLog {
        /// The log directory.
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write the source's event stream as JSON lines (a replay file).
    Generate {
        /// Number of events.
        #[arg(long, default_value_t = 1000)]
        events: u64,
        /// Set a source knob, e.g. --set seed=7 --set malformed_rate=0.01 (repeatable).
        #[arg(long = "set", value_name = "KNOB=VALUE")]
        set: Vec<String>,
        /// Output file (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// List a stage's knobs and their defaults (all stages without an argument).
    Knobs {
        /// source, parse, aggregate or sink.
        stage: Option<String>,
    },
    /// Run one stage's hot code in-process over a replay file, for instruction counting
    /// (`valgrind --tool=callgrind --toggle-collect=observatory_measured_region`).
    Kernel {
        /// parse, aggregate or sink (sink: replaying a log made from the input, lab 15, or
        /// compacting its layers, lab 19).
        stage: String,
        /// A JSON-lines file (`pipeline generate`).
        #[arg(long)]
        input: PathBuf,
        /// Set a knob of the stage, e.g. --set mode=borrowed (repeatable).
        #[arg(long = "set", value_name = "KNOB=VALUE")]
        set: Vec<String>,
        /// Aggregate: apply the whole input from this many threads at once (contention; for
        /// wall-clock timing — instruction counts see only the calling thread's region).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Apply the input this many times inside the measured region (longer wall-clock
        /// samples, so scheduler noise is a smaller share of each).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        rounds: u32,
    },
    /// Lab 14's partitions of a seed's keys, as JSON: the second process the `partition`
    /// conformance check compares with its own answers.
    #[command(hide = true)]
    PartitionLanes {
        #[arg(long = "impl")]
        implementation: LabImpl,
        #[arg(long)]
        seed: u64,
    },
    /// Each lab slot's number of mutants, as JSON, when this binary carries them (feature
    /// `lab-mutants`): the labs' authoring check asks before it runs them.
    #[command(hide = true)]
    Mutants,
    /// Check a lab slot's implementation against the slot's specification on the cases a seed
    /// generates; prints JSON (`observatory lab check` runs it before it measures).
    Conformance {
        /// The slot: arena, batcher, blocking, compaction, contention, context, errors, fanout,
        /// fsync, iterators, hotspot, deadlock, leak, partition, percentile, recall, reconcile,
        /// replay, threads or zerocopy.
        slot: String,
        /// baseline, student, reference, or mutant-N (the lab's mutant N, in a binary built
        /// with the `lab-mutants` feature: the labs' authoring check).
        #[arg(long = "impl", default_value = "student")]
        implementation: LabImpl,
        /// Seed of the generated cases.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the JSON report to this file instead of stdout (so that what the checked code
        /// prints cannot garble it).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

/// The part of `pipeline kernel` an instruction counter measures; its unmangled name is what
/// callgrind's `--toggle-collect` matches.
#[inline(never)]
#[unsafe(no_mangle)]
pub fn observatory_measured_region(work: &mut dyn FnMut() -> u64) -> u64 {
    work()
}

/// Run the measured region, timed (the wall clock `lab` kernel checks read).
fn timed_region(work: &mut dyn FnMut() -> u64) -> (u64, std::time::Duration) {
    let t0 = std::time::Instant::now();
    let out = observatory_measured_region(work);
    (out, t0.elapsed())
}

fn kernel(
    stage: &str,
    input: &PathBuf,
    set: &[String],
    threads: usize,
    rounds: u32,
) -> anyhow::Result<()> {
    use pipeline::codec::OutFrame;
    use pipeline::stage::parse::parse_batch;
    let role: Role = stage.parse()?;
    let mut knobs = StageKnobs::defaults(role);
    for s in set {
        let (k, v) = split_assignment(s)?;
        knobs.set(k.strip_prefix(&format!("{role}.")).unwrap_or(k), v)?;
    }
    let labs = pipeline::slots::Hooks::resolve(knobs.common().lab_slot, knobs.common().lab_impl)
        .map_err(anyhow::Error::msg)?;
    // Allocation counting follows the `telemetry` knob here as in a stage process.
    pipeline::alloc::set_counting(knobs.common().telemetry);
    let text = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let raw: Vec<pipeline::codec::Frame> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .chunks(1024)
        .enumerate()
        .map(|(i, chunk)| {
            let mut f = OutFrame::data(chunk.iter().map(|l| l.len() + 4).sum());
            for l in chunk {
                f.push(l);
            }
            f.into_frame(1, i as u64)
        })
        .collect();
    let events: u64 = raw.iter().map(|f| u64::from(f.header.record_count)).sum();
    let (out, elapsed) = match knobs {
        StageKnobs::Parse(k) => timed_region(&mut || {
            (0..rounds)
                .flat_map(|_| raw.iter())
                .map(|f| {
                    u64::from(
                        parse_batch(f, k.mode, 1, labs, &pipeline::window::Horizon::unbounded())
                            .frames[0]
                            .records(),
                    )
                })
                .sum()
        }),
        StageKnobs::Aggregate(k) => {
            // Parsing is set-up here, outside the measured region.
            let parsed: Vec<_> = raw
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    parse_batch(
                        f,
                        pipeline_plan::ParseMode::Borrowed,
                        1,
                        labs,
                        &pipeline::window::Horizon::unbounded(),
                    )
                    .frames
                    .remove(0)
                    .into_frame(1, i as u64)
                })
                .collect();
            if let Some(imp) = labs.get(pipeline_plan::LabSlot::Partition) {
                // Lab 14: one parse thread routing to `threads` aggregate partitions.
                let lanes = Lanes {
                    lanes: threads,
                    window_ms: k.window_ms,
                    max_open: k.max_open_windows as usize,
                    knobs: k.common.clone(),
                };
                return kernel_report(
                    stage,
                    events * u64::from(rounds),
                    timed_region(&mut || partition_region(imp, &parsed, rounds, &lanes)),
                );
            }
            if let Some(imp) = labs.get(pipeline_plan::LabSlot::Contention) {
                // Lab 04: only the shared per-key totals, added to from every thread at once
                // (the window map's own locking would blur what the lab measures).
                return kernel_report(
                    stage,
                    events * threads.max(1) as u64 * u64::from(rounds),
                    timed_region(&mut || contention_region(imp, &parsed, threads, rounds)),
                );
            }
            timed_region(&mut || {
                let state = pipeline::state::SharedState::new(
                    k.state,
                    k.shards,
                    k.window_ms,
                    k.max_open_windows as usize,
                    64,
                    |_| {},
                )
                .with_hooks(labs);
                let apply_all = || {
                    for _ in 0..rounds {
                        for f in &parsed {
                            state.apply_blocking(f.clone());
                        }
                    }
                };
                if threads <= 1 {
                    // In this thread: callgrind's toggle is per thread.
                    apply_all();
                } else {
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            s.spawn(apply_all);
                        }
                    });
                }
                state.close_blocking(u64::MAX).0.len() as u64
            })
        }
        StageKnobs::Sink(_) => {
            // Replaying the sink's log (lab 15): the segment is made outside the region.
            let mut compact = Vec::new();
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let mut ev = Vec::new();
                if pipeline::json::parse_into(pipeline_plan::ParseMode::Owned, line, &mut ev)
                    .is_ok()
                {
                    compact.push(ev);
                }
            }
            if let Some(imp) = labs.get(pipeline_plan::LabSlot::Compaction) {
                // Compacting the log (lab 19): its layers are made outside the region.
                let layers = pipeline::slots::compaction::layers_of(&compact, 8, 10);
                let layers: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
                return kernel_report(
                    stage,
                    events * u64::from(rounds),
                    timed_region(&mut || {
                        (0..rounds)
                            .map(|_| {
                                pipeline::slots::compaction::compact(imp, &layers)
                                    .map_or(0, |segment| segment.len() as u64)
                            })
                            .sum()
                    }),
                );
            }
            if let Some(imp) = labs.get(pipeline_plan::LabSlot::Reconcile) {
                // Reconciling two replicas (lab 20): they are made outside the region.
                let (a, b) = pipeline::slots::reconcile::replicas_of(&compact, 7, 5);
                return kernel_report(
                    stage,
                    events * u64::from(rounds),
                    timed_region(&mut || {
                        (0..rounds)
                            .map(|_| {
                                pipeline::slots::reconcile::reconcile(imp, &a, &b)
                                    .map_or(0, |r| (r.to_a.len() + r.to_b.len()) as u64)
                            })
                            .sum()
                    }),
                );
            }
            let segment = pipeline::slots::replay::segment_of(&compact, 10);
            let imp = labs
                .get(pipeline_plan::LabSlot::Replay)
                .unwrap_or(pipeline_plan::LabImpl::Baseline);
            timed_region(&mut || {
                (0..rounds)
                    .map(|_| {
                        pipeline::slots::replay::replay(imp, &segment).map_or(0, |r| r.windows)
                    })
                    .sum()
            })
        }
        _ => bail!(
            "kernels exist for parse, aggregate and sink (the log's replay, its compaction, or reconciling two replicas)"
        ),
    };
    kernel_report(
        stage,
        events * threads.max(1) as u64 * u64::from(rounds),
        (out, elapsed),
    )
}

/// Lab 04's measured region: `threads` threads each add every frame `rounds` times to one
/// set of per-key totals; the events counted in the end (all of them, when the totals are
/// right).
fn contention_region(
    imp: pipeline_plan::LabImpl,
    frames: &[pipeline::codec::Frame],
    threads: usize,
    rounds: u32,
) -> u64 {
    let totals = pipeline::slots::contention::key_totals(imp);
    let add_all = || {
        for _ in 0..rounds {
            for f in frames {
                totals.add(f);
            }
        }
    };
    if threads <= 1 {
        add_all();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(add_all);
            }
        });
    }
    totals.snapshot().iter().map(|(_, t)| t.events).sum()
}

/// The aggregate partitions of lab 14's kernel: how many, each one's window map, and the
/// knobs whose injected delay each pays per frame, as an aggregate replica's batch guard does.
struct Lanes {
    lanes: usize,
    window_ms: u64,
    max_open: usize,
    knobs: pipeline_plan::CommonKnobs,
}

/// Lab 14's measured region: this thread routes every event of every frame, `rounds` times,
/// to one of `lanes` partitions with the slot's partitioner (as a parse replica does) and hands
/// each partition its frame over a bounded channel; each partition's thread waits the injected
/// delay of its frame and applies the frame to a window map of its own (as an aggregate
/// replica does). The windows closed in the end.
fn partition_region(
    imp: pipeline_plan::LabImpl,
    frames: &[pipeline::codec::Frame],
    rounds: u32,
    cfg: &Lanes,
) -> u64 {
    use pipeline::codec::{Frame, OutFrame};
    use pipeline::window::{Horizon, WindowMap};
    let (lanes, window_ms, max_open) = (cfg.lanes.max(1), cfg.window_ms, cfg.max_open);
    std::thread::scope(|s| {
        let mut senders = Vec::with_capacity(lanes);
        let mut partitions = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Frame>(8);
            senders.push(tx);
            partitions.push(s.spawn(move || {
                let (mut map, horizon) =
                    (WindowMap::new(window_ms, max_open), Horizon::unbounded());
                for frame in rx {
                    if let Some(d) = cfg.knobs.injected_delay(frame.header.record_count) {
                        std::thread::sleep(d);
                    }
                    pipeline::state::apply_frame(&mut map, &frame, &horizon);
                }
                let mut closed = Vec::new();
                map.close_until(u64::MAX, &mut closed);
                closed.len() as u64
            }));
        }
        for (seq, frame) in (0..rounds).flat_map(|_| frames.iter()).enumerate() {
            let mut out: Vec<OutFrame> = (0..lanes)
                .map(|_| OutFrame::data(frame.payload.len() / lanes))
                .collect();
            for rec in frame.records() {
                if let Ok(key) = pipeline::event::key_of(rec) {
                    out[pipeline::slots::partition::lane(imp, key, lanes) % lanes].push(rec);
                }
            }
            for (tx, f) in senders.iter().zip(out) {
                let _ = tx.send(f.into_frame(1, seq as u64));
            }
        }
        drop(senders);
        partitions.into_iter().map(|p| p.join().unwrap_or(0)).sum()
    })
}

/// What `pipeline kernel` prints: one JSON line.
fn kernel_report(
    stage: &str,
    events: u64,
    (out, elapsed): (u64, std::time::Duration),
) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::json!({
            "stage": stage,
            "events": events,
            "out": out,
            "elapsed_ns": elapsed.as_nanos() as u64,
        })
    );
    Ok(())
}

#[derive(Args)]
struct StageArgs {
    /// Stage config file (TOML): wiring and knobs. Without it, defaults and flags apply.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Pipeline name (a metric label).
    #[arg(long)]
    pipeline: Option<String>,
    /// Data port address (host:port; port 0 picks a free one).
    #[arg(long)]
    listen: Option<String>,
    /// Admin port address (metrics, health, profiles).
    #[arg(long)]
    admin: Option<String>,
    /// A data address of the next stage (repeatable: one connection each; the source deals
    /// its batches over the connected ones, parse routes by key, one per aggregate partition).
    #[arg(long)]
    downstream: Vec<String>,
    /// Service mode (Kubernetes): never complete by itself; a downstream's drain request ends
    /// only that connection, which is re-established.
    #[arg(long)]
    service: bool,
    /// Upstream streams whose end completes the input.
    #[arg(long)]
    upstreams: Option<u32>,
    /// Which replica of its stage this process is (0-based), named in its hello downstream.
    #[arg(long)]
    replica: Option<u32>,
    /// Set a knob of this stage, e.g. --set mode=borrowed (repeatable).
    #[arg(long = "set", value_name = "KNOB=VALUE")]
    set: Vec<String>,
    /// Add a constant label to every metric, e.g. --label run=baseline (repeatable).
    #[arg(long = "label", value_name = "NAME=VALUE")]
    labels: Vec<String>,
    /// Write {pid, stage, data_addr, admin_addr} as JSON here once the ports are bound.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Write the final stats as JSON here at exit.
    #[arg(long)]
    stats_out: Option<PathBuf>,
    /// Keep the admin port up this many seconds after the stream ends (for a last scrape).
    #[arg(long, default_value_t = 0.0)]
    linger_seconds: f64,
    /// Log format.
    #[arg(long, value_enum, env = "PIPELINE_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// A file holding the pipeline's shared token: every connection to and from this stage's
    /// data port must carry it (a Secret mounted as a file in Kubernetes; the local runner
    /// makes one per run).
    #[arg(long, env = "PIPELINE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

fn split_assignment(s: &str) -> Result<(&str, &str), PlanError> {
    s.split_once('=')
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| PlanError::BadAssignment(s.to_string()))
}

/// Defaults < config file < PIPELINE_KNOB_* < --set < flags.
fn resolve(role: Role, args: &StageArgs) -> anyhow::Result<StageConfig> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the stage config {}", path.display()))?;
            let cfg = StageConfig::from_toml(&path.display().to_string(), &text)?;
            if cfg.role() != role {
                bail!(
                    "{} configures a `{}` stage, but `{role}` was started",
                    path.display(),
                    cfg.role()
                );
            }
            cfg
        }
        None => StageConfig::new("pipeline", StageKnobs::defaults(role)),
    };
    cfg.knobs.apply_env(std::env::vars())?;
    for s in &args.set {
        let (k, v) = split_assignment(s)?;
        let k = k.strip_prefix(&format!("{role}.")).unwrap_or(k);
        cfg.knobs.set(k, v)?;
    }
    for l in &args.labels {
        let (k, v) = split_assignment(l)?;
        cfg.labels.insert(k.to_string(), v.to_string());
    }
    if let Some(v) = &args.pipeline {
        cfg.pipeline = v.clone();
    }
    if let Some(v) = &args.listen {
        cfg.listen = v.clone();
    }
    if let Some(v) = &args.admin {
        cfg.admin = v.clone();
    }
    if !args.downstream.is_empty() {
        cfg.downstream = args.downstream.clone();
    }
    cfg.service |= args.service;
    if let Some(v) = args.upstreams {
        if v == 0 {
            bail!("--upstreams must be at least 1");
        }
        cfg.upstreams = v;
    }
    if let Some(v) = args.replica {
        cfg.replica = v;
    }
    if role == Role::Sink && !cfg.downstream.is_empty() {
        bail!("the sink is the last stage and takes no --downstream");
    }
    Ok(cfg)
}

/// The allocator is chosen at the first allocation from `PIPELINE_KNOB_ALLOCATOR`; if the
/// resolved config wants the other one, start again with the variable set.
fn ensure_allocator(cfg: &StageConfig) -> anyhow::Result<()> {
    let want = cfg.knobs.common().allocator;
    if alloc::active() == want {
        return Ok(());
    }
    if std::env::var_os("PIPELINE_REEXEC").is_some() {
        bail!(
            "allocator {} requested but {} is active after re-exec",
            want.as_str(),
            alloc::active().as_str()
        );
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("PIPELINE_KNOB_ALLOCATOR", want.as_str())
        .env("PIPELINE_REEXEC", "1")
        .exec();
    Err(err).context("re-executing with the requested allocator")
}

fn run_stage(role: Role, args: StageArgs) -> anyhow::Result<()> {
    let cfg = resolve(role, &args)?;
    ensure_allocator(&cfg)?;
    let telemetry = telemetry::init(&format!("pipeline-{role}"), args.log_format, &["pipeline"])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.knobs.common().runtime_threads as usize)
        .thread_name(format!("{role}-rt"))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let opts = RunOptions {
        ready_file: args.ready_file,
        stats_out: args.stats_out,
        linger: Duration::from_secs_f64(args.linger_seconds.max(0.0)),
        token: match &args.token_file {
            Some(path) => {
                Some(pipeline::admission::read_token_file(path).map_err(anyhow::Error::msg)?)
            }
            None => None,
        },
    };
    let result = runtime.block_on(stage::run(cfg, opts));
    telemetry.shutdown();
    result
}

fn verify_log(dir: PathBuf, json: bool) -> anyhow::Result<bool> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let (totals, events, undecodable) = match seglog::read_windows(&dir) {
        Ok(w) => (w.log, w.events, w.undecodable),
        Err(e) => {
            println!("CORRUPT    {e}");
            return Ok(false);
        }
    };
    if json {
        let v = serde_json::json!({
            "dir": dir,
            "segments": totals.segments,
            "records": totals.records,
            "events": events,
            "bytes": totals.bytes,
            "torn_tail_bytes": totals.torn_tail_bytes,
            "undecodable_records": undecodable,
            "ok": undecodable == 0,
        });
        println!("{v:#}");
    } else {
        println!("log        {}", dir.display());
        println!("segments   {}", totals.segments);
        println!(
            "records    {} window results, every CRC checked",
            totals.records
        );
        println!("events     {events}");
        println!("bytes      {}", totals.bytes);
        if totals.torn_tail_bytes > 0 {
            println!(
                "torn tail  {} bytes after the last whole record (tolerated)",
                totals.torn_tail_bytes
            );
        } else {
            println!("torn tail  none");
        }
        if undecodable > 0 {
            println!("ERROR      {undecodable} records pass their CRC but are not window results");
        }
    }
    Ok(undecodable == 0)
}

fn generate(events: u64, set: &[String], output: Option<PathBuf>) -> anyhow::Result<()> {
    let mut knobs = SourceKnobs::default();
    for s in set {
        let (k, v) = split_assignment(s)?;
        knobs.set("source", k.strip_prefix("source.").unwrap_or(k), v)?;
    }
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut g = Generator::new(&knobs);
    let mut line = Vec::with_capacity(256);
    for _ in 0..events {
        line.clear();
        g.next_into(&mut line);
        line.push(b'\n');
        out.write_all(&line)?;
    }
    out.flush()?;
    Ok(())
}

fn print_knobs(stage: Option<String>) -> anyhow::Result<()> {
    let roles = match stage {
        Some(s) => vec![s.parse::<Role>()?],
        None => Role::CHAIN.to_vec(),
    };
    for role in roles {
        println!("[{role}]");
        for (k, v) in StageKnobs::defaults(role).to_map() {
            println!("{k} = {v}");
        }
        println!();
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Source(a) => run_stage(Role::Source, a),
        Command::Parse(a) => run_stage(Role::Parse, a),
        Command::Aggregate(a) => run_stage(Role::Aggregate, a),
        Command::Sink(a) => run_stage(Role::Sink, a),
        Command::VerifyLog { dir, json } => match verify_log(dir, json) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Generate {
            events,
            set,
            output,
        } => generate(events, &set, output),
        Command::Knobs { stage } => print_knobs(stage),
        Command::Kernel {
            stage,
            input,
            set,
            threads,
            rounds,
        } => kernel(&stage, &input, &set, threads, rounds),
        Command::Conformance {
            slot,
            implementation,
            seed,
            out,
        } => conformance(&slot, implementation, seed, out.as_deref()),
        Command::Mutants => pipeline::slots::conformance::mutant_counts()
            .map_err(anyhow::Error::from)
            .and_then(|counts| {
                println!("{}", serde_json::to_string(&counts)?);
                Ok(())
            }),
        Command::PartitionLanes {
            implementation,
            seed,
        } => lab_impl(implementation).and_then(|imp| {
            let lanes = pipeline::slots::conformance::partition_lanes(imp, seed);
            println!("{}", serde_json::to_string(&lanes)?);
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipeline: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The implementation `--impl` names, refused where this binary lacks it.
fn lab_impl(imp: LabImpl) -> anyhow::Result<LabImpl> {
    if imp == LabImpl::Reference && !pipeline::slots::HAS_REFERENCE {
        bail!("this binary was built without the reference solutions (feature `lab-reference`)");
    }
    if matches!(imp, LabImpl::Mutant(_)) {
        pipeline::slots::conformance::mutant_counts()?;
    }
    Ok(imp)
}

fn conformance(
    slot: &str,
    implementation: LabImpl,
    seed: u64,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let imp = lab_impl(implementation)?;
    // A panic of the checked code is a finding, reported in the JSON, not on stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let report = pipeline::slots::conformance::check(slot, imp, seed)?;
    let json = serde_json::to_string(&report)?;
    match out {
        Some(path) => std::fs::write(path, json + "\n")
            .with_context(|| format!("writing {}", path.display()))?,
        None => println!("{json}"),
    }
    Ok(())
}
