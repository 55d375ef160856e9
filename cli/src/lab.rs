//! `observatory lab ...`: the course's lab runner (labs are data in `course/labs/`; the
//! checks and progress live in the `observatory-course` crate).

use anyhow::{Context, bail};
use clap::Subcommand;
use observatory_course::check::{CheckOptions, Outcome, Variant, check, check_together};
use observatory_course::predict::{self, Prediction};
use observatory_course::progress::Workspace;
use observatory_course::spec::{Lab, Mode, find, load_labs};
use observatory_runner::local::find_pipeline_bin;
use observatory_runner::sandbox;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Subcommand)]
pub enum LabCommand {
    /// Every lab, its topic, and your progress.
    List,
    /// Show a lab and prepare it (a knob lab gets its answer file).
    Start { n: u32 },
    /// The next hint of a lab.
    Hint { n: u32 },
    /// Measure your change against the baseline; pass when the effect clears the lab's minimum
    /// and nothing was lost.
    Check {
        n: u32,
        /// Check the reference solution instead of yours (instructors).
        #[arg(long)]
        reference: bool,
        /// Skip the CPU profiles and the differential flamegraph (wall-clock labs; faster).
        #[arg(long)]
        no_profile: bool,
        /// Run the A/B on the Kubernetes cluster instead: create an Experiment and wait for the
        /// operator's verdict (wall-clock labs; needs `make up`).
        #[arg(long)]
        k8s: bool,
        /// Your prediction of the effect before it is measured, as B/A of the lab's metric:
        /// `2x`, `0.7`, `+100%`, `-30%` or `same` (asked for on a terminal when left out).
        #[arg(long, allow_hyphen_values = true, value_parser = observatory_course::predict::parse)]
        predict: Option<f64>,
        /// Your answer to the lab's recall question (code labs; asked on a terminal when left
        /// out).
        #[arg(long)]
        recall: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Upload your last check of a lab to your cohort's leaderboard (refused here when that
    /// check failed, was of the reference, or your change was edited since).
    Submit {
        n: u32,
        #[command(flatten)]
        remote: crate::leaderboard::Remote,
    },
    /// Put a lab back to its start (answer file, progress; a code lab's slot file via git).
    Reset { n: u32 },
    /// Print the last check's report (and where its plots and flamegraphs are).
    Report { n: u32 },
    /// Authoring check: every lab's baseline must not pass and its reference must, with the
    /// same runner a student uses.
    DevCheck {
        /// Only this lab.
        #[arg(long)]
        lab: Option<u32>,
        /// Every lab, not only those marked `dev_check` (deterministic or large effects).
        #[arg(long)]
        all: bool,
        /// Check each reference this many times (`make lab-verify` uses 5).
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        /// Write the results as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// A verification's confined check (started by `leaderboard verify` inside its sandbox).
    #[command(hide = true)]
    VerifyRun { request: PathBuf, outcome: PathBuf },
}

/// How `lab check --k8s` runs on the cluster.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// Namespace of the Experiment (the one `make up`'s Prometheus scrapes).
    #[arg(long, default_value = "observatory")]
    namespace: String,
    /// Pipeline image of both sides.
    #[arg(long, default_value = "docker.io/observatory/pipeline:dev")]
    image: String,
    /// Image of the variant, if not --image (a code lab: your build, `make images`).
    #[arg(long)]
    variant_image: Option<String>,
    /// Runs per side.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=20))]
    pairs: u32,
    /// Seconds each run is measured.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(15..=3600))]
    run_seconds: u32,
    /// Seconds each run warms up first.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(0..=600))]
    warmup_seconds: u32,
}

impl ClusterArgs {
    /// The options of an Experiment, on the lab's workload seed or `workload_seed`.
    pub fn options(&self, workload_seed: Option<u64>) -> crate::lab_k8s::K8sOptions {
        crate::lab_k8s::K8sOptions {
            namespace: self.namespace.clone(),
            image: self.image.clone(),
            variant_image: self.variant_image.clone(),
            pairs: self.pairs,
            run_seconds: self.run_seconds,
            warmup_seconds: self.warmup_seconds,
            workload_seed,
        }
    }
}

/// The repository root: the first ancestor of the working directory holding `course/labs`,
/// else the source tree this binary was built from.
pub(crate) fn root() -> anyhow::Result<PathBuf> {
    if let Some(r) = std::env::var_os("OBSERVATORY_ROOT") {
        return Ok(PathBuf::from(r));
    }
    let cwd = std::env::current_dir()?;
    if let Some(r) = cwd.ancestors().find(|d| d.join("course/labs").is_dir()) {
        return Ok(r.to_path_buf());
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if built.join("course/labs").is_dir() {
        return Ok(built);
    }
    bail!("no course/labs here: run observatory lab from the observatory repository")
}

pub(crate) fn workspace(root: &Path) -> Workspace {
    Workspace::new(
        std::env::var_os("OBSERVATORY_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".observatory")),
    )
}

pub async fn run(cmd: LabCommand) -> anyhow::Result<()> {
    let root = root()?;
    let labs = load_labs(&root.join("course/labs"))?;
    let ws = workspace(&root);
    match cmd {
        LabCommand::List => list(&labs, &ws),
        LabCommand::Start { n } => start(find(&labs, n)?, &ws, &root),
        LabCommand::Hint { n } => hint(find(&labs, n)?, &ws),
        LabCommand::Check {
            n,
            reference,
            no_profile,
            k8s,
            cluster,
            predict,
            recall,
        } => {
            let lab = find(&labs, n)?;
            let variant = if reference {
                Variant::Reference
            } else if lab.is_code_lab() {
                Variant::Student(Vec::new())
            } else {
                Variant::Student(ws.answer(lab)?)
            };
            if k8s {
                let opts = cluster.options(None);
                let e = crate::lab_k8s::experiment_for(lab, &variant, &opts)?;
                return if crate::lab_k8s::check_on_cluster(e).await? {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("lab {n} not passed on the cluster yet"))
                };
            }
            let (predicted, recalled) = if reference {
                (None, None)
            } else {
                ask_before(lab, predict, recall)?
            };
            let profile = if no_profile { 0 } else { 2 };
            let t0 = std::time::Instant::now();
            let o = run_check(lab, &variant, &ws, &root, profile, true).await?;
            let seconds = t0.elapsed().as_secs_f64();
            if !reference {
                ws.update(n, |p| {
                    p.started = true;
                    p.checks += 1;
                    p.passed |= o.passed;
                    p.last_verdict = Some(o.verdict.clone());
                    p.last_report = Some(o.report_dir.clone());
                    p.record_seconds(seconds);
                    p.predictions.push(Prediction {
                        at: crate::args::timestamp(),
                        ratio: predicted,
                        recall: recalled.clone(),
                        measured: o.ratio,
                        passed: o.passed,
                    });
                })?;
            }
            print_outcome(lab, &o);
            if !reference {
                print_after(lab, &o, predicted, recalled.as_deref());
            }
            println!(
                "  this check took {seconds:.0} s{}",
                if lab.conformance_slot().is_some() && !reference {
                    ", the build included"
                } else {
                    ""
                }
            );
            if o.passed {
                Ok(())
            } else {
                Err(anyhow::anyhow!("lab {n} not passed yet"))
            }
        }
        LabCommand::Submit { n, remote } => {
            crate::leaderboard::submit(find(&labs, n)?, &ws, &root, &remote).await
        }
        LabCommand::Reset { n } => reset(find(&labs, n)?, &ws, &root),
        LabCommand::Report { n } => report(find(&labs, n)?, &ws),
        LabCommand::DevCheck {
            lab,
            all,
            repeat,
            json,
        } => crate::lab_dev::dev_check(&labs, &ws, &root, lab, all, repeat.max(1), json).await,
        LabCommand::VerifyRun { request, outcome } => {
            crate::verify_sandbox::verify_run(&request, &outcome).await
        }
    }
}

fn list(labs: &[Lab], ws: &Workspace) -> anyhow::Result<()> {
    let p = ws.load()?;
    let done = labs
        .iter()
        .filter(|l| p.labs.get(&l.number()).is_some_and(|x| x.passed))
        .count();
    println!("The course: {} labs, {done} passed.\n", labs.len());
    for l in labs {
        let state = match p.labs.get(&l.number()) {
            Some(x) if x.passed => "passed ",
            Some(x) if x.started => "started",
            _ => "       ",
        };
        let kind = if l.is_code_lab() { "code" } else { "knobs" };
        println!(
            "  {:02}  [{state}]  {:<58} {kind:<5}  ~{} s",
            l.number(),
            l.spec.title,
            l.spec.check_seconds
        );
        println!("       {}", l.spec.topic);
    }
    println!("\nStart one: observatory lab start N");
    Ok(())
}

fn start(lab: &Lab, ws: &Workspace, root: &Path) -> anyhow::Result<()> {
    println!("{}", lab.readme().trim_end());
    println!();
    if let Some(answer) = ws.prepare_answer(lab)? {
        println!("Your answer file: {}", answer.display());
        println!("  (it starts as the baseline; put your knob changes in it)");
    }
    if let Some(file) = &lab.file() {
        println!("The file to edit: {}", root.join(file).display());
        println!(
            "  (the STUDENT function; `observatory lab reset {}` restores it)",
            lab.number()
        );
    }
    ws.update(lab.number(), |p| p.started = true)?;
    println!(
        "\nWhen ready: observatory lab check {}   (about {} s{})   Stuck? observatory lab hint {}",
        lab.number(),
        lab.spec.check_seconds,
        if lab.conformance_slot().is_some() {
            " after the build"
        } else {
            ""
        },
        lab.number()
    );
    Ok(())
}

fn hint(lab: &Lab, ws: &Workspace) -> anyhow::Result<()> {
    let shown = ws
        .load()?
        .labs
        .get(&lab.number())
        .map_or(0, |p| p.hints_shown);
    let hints = &lab.spec.hints;
    if hints.is_empty() {
        let labs: Vec<String> = lab
            .spec
            .revisits
            .iter()
            .map(|n| format!("{n:02}"))
            .collect();
        println!(
            "Lab {:02} is a recall lab: no hints, on purpose. It revisits labs {} (`observatory lab start N` shows their READMEs again; try without them first).",
            lab.number(),
            labs.join(", ")
        );
        return Ok(());
    }
    let i = shown.min(hints.len() - 1);
    println!("Hint {} of {}: {}", i + 1, hints.len(), hints[i]);
    if i + 1 == hints.len() {
        println!("(that was the last hint)");
    }
    ws.update(lab.number(), |p| {
        p.started = true;
        p.hints_shown = (i + 1).max(p.hints_shown);
    })
}

fn reset(lab: &Lab, ws: &Workspace, root: &Path) -> anyhow::Result<()> {
    ws.reset_answer(lab)?;
    if let Some(file) = &lab.file() {
        let status = Command::new("git")
            .current_dir(root)
            .args(["checkout", "HEAD", "--", file])
            .status()
            .context("running git to restore the slot file")?;
        if !status.success() {
            bail!("git could not restore {file}");
        }
        println!("restored {file} from git");
    }
    println!("lab {} is back at its start", lab.number());
    Ok(())
}

fn report(lab: &Lab, ws: &Workspace) -> anyhow::Result<()> {
    let p = ws.load()?;
    let Some(dir) = p
        .labs
        .get(&lab.number())
        .and_then(|x| x.last_report.clone())
    else {
        bail!(
            "no check of lab {} yet: observatory lab check {}",
            lab.number(),
            lab.number()
        );
    };
    let dir = PathBuf::from(dir);
    for f in ["summary.txt", "lab-check.json"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(f)) {
            println!("{}", text.trim_end());
            break;
        }
    }
    println!("\nreport folder: {}", dir.display());
    let mut drawn: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".svg"))
                .collect()
        })
        .unwrap_or_default();
    drawn.sort();
    for n in drawn {
        println!("  {}", dir.join(n).display());
    }
    Ok(())
}

/// Build the pipeline when the lab's change is code, then check.
pub(crate) async fn run_check(
    lab: &Lab,
    variant: &Variant,
    ws: &Workspace,
    root: &Path,
    profile_seconds: u64,
    verbose: bool,
) -> anyhow::Result<Outcome> {
    run_check_seeded(lab, variant, ws, root, profile_seconds, verbose, None).await
}

/// How a student's code is built: the pipeline binary alone, with the features of the whole
/// workspace, so it reuses every dependency `make build` compiled (`-p pipeline` would resolve
/// features for the pipeline alone and compile them again).
pub(crate) const BUILD_PIPELINE: &str = "cargo build --release --workspace --bin pipeline";

/// Run [`BUILD_PIPELINE`] in `root` (`quiet`: without cargo's progress).
pub(crate) fn build_pipeline(root: &Path, quiet: bool) -> anyhow::Result<()> {
    cargo_build(root, BUILD_PIPELINE, quiet)
}

/// Run `command` (`cargo build ...`, split at spaces) in `root`.
fn cargo_build(root: &Path, command: &str, quiet: bool) -> anyhow::Result<()> {
    let mut args: Vec<&str> = command.split(' ').skip(1).collect();
    if quiet {
        args.push("-q");
    }
    let mut cmd = Command::new("cargo");
    sandbox::confine(&mut cmd, sandbox::Kind::Build);
    let status = cmd
        .current_dir(root)
        .args(&args)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("`{command}` failed");
    }
    Ok(())
}

/// [`run_check`] on another workload seed (a cohort's hidden one: `leaderboard verify`).
pub(crate) async fn run_check_seeded(
    lab: &Lab,
    variant: &Variant,
    ws: &Workspace,
    root: &Path,
    profile_seconds: u64,
    verbose: bool,
    workload_seed: Option<u64>,
) -> anyhow::Result<Outcome> {
    let m = &lab.spec.measure;
    let learnt = ws
        .load()
        .ok()
        .and_then(|p| p.labs.get(&lab.number()).and_then(|x| x.estimate_seconds()));
    // The student's code is in the pipeline (a slot, or lab 12's p99 that its conformance
    // checks), so a student's check builds it first.
    let builds = lab.conformance_slot().is_some() && matches!(variant, Variant::Student(_));
    if verbose {
        let estimate = match learnt {
            Some(s) => format!("about {s:.0} s, as the last checks here took"),
            None if builds => format!(
                "about {} s, plus the build (20 s to 3 min, longer on a cold target folder)",
                lab.spec.check_seconds
            ),
            None => format!("about {} s", lab.spec.check_seconds),
        };
        eprintln!(
            "lab {:02}: {} vs baseline, {}: {estimate}",
            lab.number(),
            variant.label(),
            describe(m.mode),
        );
    }
    if builds {
        eprintln!(
            "step 1: building the pipeline with your code ({BUILD_PIPELINE}; cargo's own progress follows)"
        );
        let t0 = std::time::Instant::now();
        build_pipeline(root, false).map_err(|e| {
            e.context("your code does not build yet (the compiler's message is above)")
        })?;
        eprintln!("  built in {:.0} s", t0.elapsed().as_secs_f64());
    }
    let report_dir = report_dir(lab, variant, ws);
    if verbose {
        let mut step = if builds { 2 } else { 1 };
        if lab.conformance_slot().is_some() && !matches!(variant, Variant::Baseline) {
            eprintln!(
                "step {step}: correctness first: the code under test against the slot's specification, on the lab's seed and a hidden one"
            );
            step += 1;
        }
        eprintln!(
            "step {step}: measuring by {}; report: {}",
            describe(m.mode),
            report_dir.display()
        );
    }
    let opts = CheckOptions {
        pipeline_bin: find_pipeline_bin()?,
        report_dir,
        root: root.to_path_buf(),
        profile_seconds: if m.mode == Mode::Wall {
            profile_seconds
        } else {
            0
        },
        workload_seed,
    };
    // A bar with elapsed time on a terminal; one line per step otherwise (logs, CI).
    let bar = crate::bench::step_bar();
    let on_terminal = std::io::stderr().is_terminal();
    let mut last = String::new();
    let result = check(lab, variant, &opts, |n, total, what| {
        bar.set_length(total as u64);
        bar.set_position((n - 1) as u64);
        bar.set_message(what.to_string());
        if verbose && !on_terminal && what != last {
            eprintln!("  [{n}/{total}] {what}");
            last = what.to_string();
        }
    })
    .await;
    bar.finish_and_clear();
    result
}

/// Where a check of `variant` writes its report: a new folder under the lab's reports.
fn report_dir(lab: &Lab, variant: &Variant, ws: &Workspace) -> PathBuf {
    ws.reports_dir(lab)
        .join(format!("{}-{}", crate::args::timestamp(), variant.label()))
}

/// The authoring check's checks of the shipped code in `pipeline_bin` (no build, the lab's seed, no profile),
/// measured together where the lab's mode allows ([`check_together`]: in wall mode the
/// variants share the baseline's runs).
pub(crate) async fn run_checks_together(
    lab: &Lab,
    variants: &[Variant],
    ws: &Workspace,
    root: &Path,
    pipeline_bin: &Path,
) -> anyhow::Result<Vec<Outcome>> {
    let with_opts: Vec<(Variant, CheckOptions)> = variants
        .iter()
        .map(|v| {
            let opts = CheckOptions {
                pipeline_bin: pipeline_bin.to_path_buf(),
                report_dir: report_dir(lab, v, ws),
                root: root.to_path_buf(),
                profile_seconds: 0,
                workload_seed: None,
            };
            (v.clone(), opts)
        })
        .collect();
    let bar = crate::bench::step_bar();
    let result = check_together(lab, &with_opts, |n, total, what| {
        bar.set_length(total as u64);
        bar.set_position((n - 1) as u64);
        bar.set_message(what.to_string());
    })
    .await;
    bar.finish_and_clear();
    result
}

/// Before a student's check: the prediction and (code labs) the recall answer, from the
/// flags or, on a terminal, asked for. Enter skips either.
fn ask_before(
    lab: &Lab,
    predict: Option<f64>,
    recall: Option<String>,
) -> anyhow::Result<(Option<f64>, Option<String>)> {
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let m = &lab.spec.measure;
    let question = lab.spec.recall.as_ref().map(|r| r.question.clone());
    let recall = match (recall, &question) {
        (Some(a), _) => Some(a),
        (None, Some(q)) if interactive => {
            eprintln!("Recall, before you measure: {q}");
            let a = read_line("  your answer (Enter to skip): ")?;
            (!a.is_empty()).then_some(a)
        }
        _ => None,
    };
    let predicted = match predict {
        Some(p) => Some(p),
        None if interactive && m.mode != Mode::Completes => loop {
            let a = read_line(&format!(
                "Predict B/A of {} ({} is better) before it is measured, e.g. 2x, 0.7, -30%, same (Enter to skip): ",
                m.metric,
                match m.better() {
                    observatory_bench::stats::Better::Higher => "higher",
                    observatory_bench::stats::Better::Lower => "lower",
                }
            ))?;
            if a.is_empty() {
                break None;
            }
            match predict::parse(&a) {
                Ok(v) => break Some(v),
                Err(e) => eprintln!("  {e}"),
            }
        },
        None => None,
    };
    Ok((predicted, recall))
}

fn read_line(prompt: &str) -> anyhow::Result<String> {
    use std::io::Write;
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// After a student's check: the prediction against the measurement, and the recall answer.
fn print_after(lab: &Lab, o: &Outcome, predicted: Option<f64>, recalled: Option<&str>) {
    match (predicted, &o.ratio) {
        (Some(p), Some(r)) => println!("  prediction: {}", predict::compare(p, r, o.better)),
        (Some(p), None) => println!("  prediction: B/A {p:.2}; nothing was measured"),
        (None, Some(_)) if lab.spec.measure.mode != Mode::Completes => println!(
            "  prediction: none (predict first next time: --predict 2x, or answer the prompt)"
        ),
        _ => {}
    }
    if let Some(r) = &lab.spec.recall {
        if let Some(a) = recalled {
            println!("  recall: you answered: {a}");
        }
        println!("  recall: {}", r.answer);
    }
}

fn describe(mode: Mode) -> &'static str {
    match mode {
        Mode::Wall => "interleaved end-to-end runs",
        Mode::Instructions => "callgrind instruction counts",
        Mode::Kernel => "in-process kernel timings, interleaved",
        Mode::Completes => "one run that must finish",
        Mode::Criterion => "your criterion benchmark",
    }
}

fn print_outcome(lab: &Lab, o: &Outcome) {
    let word = if o.passed { "PASSED" } else { "not yet" };
    println!("lab {:02} {word}: {}", lab.number(), o.verdict);
    if let (Some(a), Some(b)) = (o.baseline_value, o.variant_value) {
        println!("  baseline {a:.4}   yours {b:.4}   ({})", o.metric);
    }
    println!(
        "  report: {}   (observatory lab report {})",
        o.report_dir,
        lab.number()
    );
    if !o.passed {
        println!("  stuck? observatory lab hint {}", lab.number());
    }
}
