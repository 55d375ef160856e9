//! The deterministic mode: instructions, not seconds. One stage's hot code (`pipeline kernel`)
//! runs over a fixed replay of its input under valgrind's callgrind, counting only inside the
//! measured region; each side is repeated, and the spread between repeats is reported.
//!
//! With the system allocator the count repeats exactly; jemalloc's time-based purging moves it
//! by about 0.01% (measured here). Either way it is far below the noise of wall-clock runs on a
//! shared machine, so a CPU-bound change shows even when seconds cannot tell.

use crate::stats::{RatioInterval, Verdict};
use anyhow::{Context, bail};
use pipeline::generate::Generator;
use pipeline_plan::{Plan, Role, SourceKnobs, StageKnobs};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Version of the instruction result's JSON shape (`instructions.json`).
pub const VERSION: u32 = 1;

/// Counts of one side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SideCounts {
    pub label: String,
    pub assignments: Vec<String>,
    /// Instructions in the measured region, one per repeat.
    pub instructions: Vec<u64>,
    pub instructions_per_event: f64,
    /// (max − min) / min of the repeats.
    pub spread: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstructionResult {
    pub version: u32,
    pub stage: String,
    pub events: u64,
    pub a: SideCounts,
    pub b: SideCounts,
    /// B/A of the medians; the interval spans every pairing of repeats.
    pub ratio: RatioInterval,
    pub verdict: Verdict,
    /// The functions whose own instructions changed most from A to B (first repeat of each
    /// side, `callgrind_annotate`), largest change first; `functions.md` has the full table.
    #[serde(default)]
    pub top_changes: Vec<FunctionChange>,
}

/// One function's own instructions per event on each side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionChange {
    pub function: String,
    pub a_per_event: f64,
    pub b_per_event: f64,
}

impl FunctionChange {
    pub fn delta(&self) -> f64 {
        self.b_per_event - self.a_per_event
    }
}

/// Own (exclusive) instructions per function of one callgrind file, read from
/// `callgrind_annotate --inclusive=no`; a function inlined into several source files is summed.
pub fn functions(out: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let o = Command::new("callgrind_annotate")
        .args([
            "--inclusive=no",
            "--threshold=100",
            "--auto=no",
            "--show-percs=no",
        ])
        .arg(out)
        .output()
        .context("running callgrind_annotate (it comes with valgrind)")?;
    if !o.status.success() {
        bail!(
            "callgrind_annotate {}: {}",
            out.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(parse_annotate(&String::from_utf8_lossy(&o.stdout)))
}

/// The function lines of `callgrind_annotate` output: `1,234 file:function [object]`.
pub fn parse_annotate(text: &str) -> BTreeMap<String, u64> {
    let mut by_fn = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some((count, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let Ok(n) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        let rest = rest.trim();
        // Older callgrind_annotate prints a percentage column even when asked not to.
        let rest = match rest.strip_prefix('(') {
            Some(r) => r.split_once(')').map_or(r, |(_, t)| t).trim(),
            None => rest,
        };
        if rest.starts_with("PROGRAM TOTALS") {
            continue;
        }
        let Some((_, func)) = rest.split_once(':') else {
            continue;
        };
        let func = match func.rfind(" [") {
            Some(i) if func.ends_with(']') => &func[..i],
            _ => func,
        };
        *by_fn.entry(func.trim().to_string()).or_insert(0) += n;
    }
    by_fn
}

/// Every function of either side with its own instructions per event, largest change first.
pub fn function_changes(
    a: &BTreeMap<String, u64>,
    b: &BTreeMap<String, u64>,
    events: u64,
) -> Vec<FunctionChange> {
    let per = |m: &BTreeMap<String, u64>, f: &str| {
        m.get(f).copied().unwrap_or(0) as f64 / events.max(1) as f64
    };
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut v: Vec<FunctionChange> = names
        .into_iter()
        .map(|f| FunctionChange {
            function: f.clone(),
            a_per_event: per(a, f),
            b_per_event: per(b, f),
        })
        .collect();
    v.sort_by(|x, y| y.delta().abs().total_cmp(&x.delta().abs()));
    v
}

/// The per-function report of an instruction count: `functions.md` (the table, and how to
/// read the files with callgrind_annotate yourself) and `instructions-diff.svg`, a
/// differential flamegraph of each function's own instructions (callgrind keeps callers and
/// callees rather than whole stacks, so each function is one frame under the measured region).
fn function_report(
    dir: &Path,
    labels: [&str; 2],
    files: [&Path; 2],
    events: u64,
) -> anyhow::Result<Vec<FunctionChange>> {
    let [fa, fb] = [functions(files[0])?, functions(files[1])?];
    let changes = function_changes(&fa, &fb, events);
    let mut md = format!(
        "# Instructions per event, by function (own instructions, callgrind)\n\nA = {}, B = {}; {events} events. Largest change first.\n\n| function | A | B | B − A |\n|---|---:|---:|---:|\n",
        labels[0], labels[1]
    );
    for c in changes.iter().take(40) {
        md.push_str(&format!(
            "| `{}` | {:.1} | {:.1} | {:+.1} |\n",
            c.function.replace('|', "\\|"),
            c.a_per_event,
            c.b_per_event,
            c.delta()
        ));
    }
    md.push_str(&format!(
        "\nThe same from the files, with source lines: `callgrind_annotate --inclusive=yes {}` (and `{}`); `--tree=caller` shows who calls what.\n",
        files[0].display(),
        files[1].display()
    ));
    std::fs::write(dir.join("functions.md"), md)?;
    let folded = |m: &BTreeMap<String, u64>| -> String {
        m.iter()
            .filter(|(_, n)| **n > 0)
            .map(|(f, n)| format!("measured region;{} {n}\n", f.replace(';', ":")))
            .collect()
    };
    observatory_runner::flame::render(
        &folded(&fb),
        &format!("Instructions by function: {}", labels[1]),
        &dir.join("instructions-b.svg"),
    )?;
    observatory_runner::flame::diff(
        &folded(&fa),
        &folded(&fb),
        &format!("Instructions by function, {} to {}", labels[0], labels[1]),
        &dir.join("instructions-diff.svg"),
    )?;
    Ok(changes)
}

/// Is valgrind there?
pub fn available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Write the replay: the plan's source stream as JSON lines.
pub fn write_input(source: &SourceKnobs, events: u64, path: &Path) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut g = Generator::new(source);
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

/// The knobs of `stage` on one side: the base plan with the side's assignments.
pub fn side_knobs(base: &Plan, stage: Role, set: &[String]) -> anyhow::Result<StageKnobs> {
    let mut plan = base.clone();
    for s in set {
        plan.assign(s)?;
    }
    plan.knobs(stage)
        .cloned()
        .with_context(|| format!("the plan has no {stage} stage"))
}

/// Count the instructions of one kernel run.
fn count(
    pipeline_bin: &Path,
    stage: Role,
    knobs: &StageKnobs,
    input: &Path,
    out: &Path,
) -> anyhow::Result<u64> {
    let mut cmd = Command::new("valgrind");
    observatory_runner::sandbox::confine(&mut cmd, observatory_runner::sandbox::Kind::Run);
    cmd.arg("--tool=callgrind")
        .arg("--toggle-collect=observatory_measured_region")
        // The owner strategy's thread: callgrind's toggle is per thread.
        .arg("--toggle-collect=observatory_owner_loop")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(pipeline_bin)
        .args(["kernel", stage.as_str(), "--input"])
        .arg(input)
        .env("PIPELINE_KNOB_ALLOCATOR", knobs.common().allocator.as_str())
        // Heap profiling samples at random: off, so repeats agree.
        .env("_RJEM_MALLOC_CONF", "prof_active:false");
    for (k, v) in knobs.to_text() {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    let output = cmd.output().context("running valgrind")?;
    if !output.status.success() {
        bail!(
            "the kernel under callgrind failed: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let text =
        std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no instruction total in {}", out.display()))
}

fn side_counts(label: &str, assignments: &[String], counts: Vec<u64>, events: u64) -> SideCounts {
    let (min, max) = (
        counts.iter().copied().min().unwrap_or(0),
        counts.iter().copied().max().unwrap_or(0),
    );
    let median = crate::stats::count_median(&counts);
    SideCounts {
        label: label.into(),
        assignments: assignments.to_vec(),
        instructions: counts,
        instructions_per_event: median / events.max(1) as f64,
        spread: if min > 0 {
            (max - min) as f64 / min as f64
        } else {
            0.0
        },
    }
}

/// What to count.
pub struct InstructionConfig<'a> {
    pub pipeline_bin: PathBuf,
    pub dir: PathBuf,
    pub base: &'a Plan,
    pub stage: Role,
    pub a: (String, Vec<String>),
    pub b: (String, Vec<String>),
    pub events: u64,
    pub repeats: usize,
}

/// Count both sides, `repeats` times each (the two sides of a repeat at once), and compare.
pub fn run(
    cfg: &InstructionConfig<'_>,
    mut progress: impl FnMut(usize, usize, &str),
) -> anyhow::Result<InstructionResult> {
    if !matches!(cfg.stage, Role::Parse | Role::Aggregate | Role::Sink) {
        bail!("instruction counts exist for the parse, aggregate and sink (log replay) kernels");
    }
    if !available() {
        bail!("the instructions mode needs valgrind (apt-get install valgrind)");
    }
    std::fs::create_dir_all(&cfg.dir)?;
    let Some(StageKnobs::Source(source)) = cfg.base.knobs(Role::Source) else {
        bail!("the plan has no source");
    };
    let input = cfg.dir.join("input.jsonl");
    write_input(source, cfg.events, &input)?;
    let sides = [
        side_knobs(cfg.base, cfg.stage, &cfg.a.1)?,
        side_knobs(cfg.base, cfg.stage, &cfg.b.1)?,
    ];
    let labels = [cfg.a.0.as_str(), cfg.b.0.as_str()];
    let mut counts = [Vec::new(), Vec::new()];
    // Each repeat counts both sides at once, one Valgrind process each (a process under
    // Valgrind runs on one core): the counts are the same either way, the wall time halves on
    // two cores.
    for r in 0..cfg.repeats {
        progress(
            r + 1,
            cfg.repeats,
            &format!("{} and {}, at once", labels[0], labels[1]),
        );
        let [ca, cb] = std::thread::scope(|s| {
            let run = |side: usize| {
                let out = cfg.dir.join(format!("callgrind.{}.{r}.out", labels[side]));
                let (sides, input) = (&sides, &input);
                s.spawn(move || count(&cfg.pipeline_bin, cfg.stage, &sides[side], input, &out))
            };
            let (a, b) = (run(0), run(1));
            [a.join(), b.join()]
        });
        for (side, c) in [ca, cb].into_iter().enumerate() {
            let c = c.map_err(|_| anyhow::anyhow!("counting {} panicked", labels[side]))?;
            counts[side].push(c?);
        }
    }
    let [ca, cb] = counts;
    let a = side_counts(&cfg.a.0, &cfg.a.1, ca, cfg.events);
    let b = side_counts(&cfg.b.0, &cfg.b.1, cb, cfg.events);
    let ratio = crate::stats::count_ratio(&a.instructions, &b.instructions);
    // Fewer instructions are better.
    let verdict = if !ratio.excludes_one() {
        Verdict::WithinNoise
    } else if ratio.ratio < 1.0 {
        Verdict::Better
    } else {
        Verdict::Worse
    };
    let first = |label: &str| cfg.dir.join(format!("callgrind.{label}.0.out"));
    let (fa, fb) = (first(labels[0]), first(labels[1]));
    let top_changes = function_report(&cfg.dir, labels, [&fa, &fb], cfg.events)?
        .into_iter()
        .take(5)
        .collect();
    let result = InstructionResult {
        version: VERSION,
        stage: cfg.stage.to_string(),
        events: cfg.events,
        a,
        b,
        ratio,
        verdict,
        top_changes,
    };
    std::fs::write(
        cfg.dir.join("instructions.json"),
        serde_json::to_vec_pretty(&result)?,
    )?;
    Ok(result)
}
