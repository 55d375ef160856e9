//! The report folder of an A/B (or A/A) measurement:
//!
//! ```text
//! ab.json                      the result (AB_VERSION; fields documented on AbResult)
//! summary.txt                  the comparison table, for people
//! a.samples.json, b.samples.json   each side's samples (for `observatory bench compare`)
//! throughput.svg, latency.svg, cpu.svg   one point per run, a line per side
//! diff-flamegraph-<stage>.svg  the only stage whose knobs differ (else: whose CPU per event changed most), A to B
//! runs/                        every run's own report (summary, logs, configs)
//! ```

use crate::ab::AbResult;
use crate::plot::{self, A_COLOR, A_LIGHT, B_COLOR, B_LIGHT, Line};
use crate::stats::Verdict;
use observatory_runner::flame;
use observatory_runner::summary::si;
use std::fmt::Write as _;
use std::path::Path;

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "events/s" => format!("{}/s", si(v)),
        "s" if v < 1.0 => format!("{:.2} ms", v * 1e3),
        "s" => format!("{v:.3} s"),
        "bytes" => format!("{:.1} MiB", v / (1 << 20) as f64),
        _ => format!("{v:.3}"),
    }
}

/// The comparison table.
pub fn summary_text(r: &AbResult) -> String {
    let mut t = String::new();
    let mode = if r.mode == "aa" {
        "A/A (the noise floor: both sides run the same configuration)"
    } else {
        "A/B"
    };
    let _ = writeln!(
        t,
        "{mode}: {} measured pairs (+{} warm-up), interleaved, on {} cores ({})",
        r.pairs, r.warmup_pairs, r.machine.cores, r.machine.hostname
    );
    let _ = writeln!(t, "A = {:<14} {}", r.a.label, r.a.assignments.join(" "));
    let _ = writeln!(t, "B = {:<14} {}", r.b.label, r.b.assignments.join(" "));
    let _ = writeln!(
        t,
        "every run conserved its events: {}",
        if r.conserved { "yes" } else { "NO" }
    );
    let _ = writeln!(
        t,
        "\n{:<26} {:>14} {:>14} {:>30}  verdict",
        "metric", "A (median)", "B (median)", "B/A [95% bootstrap CI]"
    );
    for c in &r.comparisons {
        let _ = writeln!(
            t,
            "{:<26} {:>14} {:>14} {:>30}  {}{}",
            c.metric,
            fmt_value(c.a_median, &c.unit),
            fmt_value(c.b_median, &c.unit),
            format!(
                "{:.4} [{:.4} .. {:.4}]",
                c.ratio.ratio, c.ratio.low, c.ratio.high
            ),
            c.verdict,
            if c.too_noisy && matches!(c.verdict, Verdict::Better | Verdict::Worse) {
                " (imprecise: wide interval)"
            } else {
                ""
            }
        );
    }
    for (metric, why) in &r.not_compared {
        let _ = writeln!(t, "{metric:<26} not compared: {why}");
    }
    let _ = writeln!(
        t,
        "\nA difference counts only when its interval excludes 1.0; the ratio is of medians."
    );
    if let Some(s) = &r.changed_stage {
        let _ = writeln!(t, "stage the differential flamegraph shows: {s}");
    }
    if !r.files.is_empty() {
        let _ = writeln!(t, "\nfiles:");
        for (what, f) in &r.files {
            let _ = writeln!(t, "  {what:<18} {f}");
        }
    }
    t
}

/// One line per side, in the sides' colours.
fn a_and_b<'a>(r: &AbResult, a: &'a [f64], b: &'a [f64]) -> [Line<'a>; 2] {
    [
        Line {
            label: format!("A: {}", r.a.label),
            values: a,
            color: A_COLOR,
        },
        Line {
            label: format!("B: {}", r.b.label),
            values: b,
            color: B_COLOR,
        },
    ]
}

/// Write the report (and fill `r.files`). `profiles` are the folders of the profiled run of
/// each side, holding `folded-<stage>.txt`.
pub fn write(dir: &Path, r: &mut AbResult, profiles: [Option<&Path>; 2]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut files = std::collections::BTreeMap::new();
    r.a.samples().write(&dir.join("a.samples.json"))?;
    r.b.samples().write(&dir.join("b.samples.json"))?;
    files.insert("samples_a".to_string(), "a.samples.json".to_string());
    files.insert("samples_b".to_string(), "b.samples.json".to_string());

    let col = |side: &crate::ab::SideRuns, f: fn(&crate::ab::RunFigures) -> f64| {
        side.runs.iter().map(f).collect::<Vec<_>>()
    };
    let (ta, tb) = (
        col(&r.a, |f| f.throughput_eps),
        col(&r.b, |f| f.throughput_eps),
    );
    plot::per_run(
        &dir.join("throughput.svg"),
        "Throughput per run",
        "M events/s",
        1e-6,
        &a_and_b(r, &ta, &tb),
    )?;
    let (a50, a99) = (
        col(&r.a, |f| f.latency_p50_seconds),
        col(&r.a, |f| f.latency_p99_seconds),
    );
    let (b50, b99) = (
        col(&r.b, |f| f.latency_p50_seconds),
        col(&r.b, |f| f.latency_p99_seconds),
    );
    plot::per_run(
        &dir.join("latency.svg"),
        "End-to-end latency per run (p50, p99)",
        "ms",
        1e3,
        &[
            Line {
                label: format!("A p50: {}", r.a.label),
                values: &a50,
                color: A_LIGHT,
            },
            Line {
                label: format!("A p99: {}", r.a.label),
                values: &a99,
                color: A_COLOR,
            },
            Line {
                label: format!("B p50: {}", r.b.label),
                values: &b50,
                color: B_LIGHT,
            },
            Line {
                label: format!("B p99: {}", r.b.label),
                values: &b99,
                color: B_COLOR,
            },
        ],
    )?;
    let (ca, cb) = (
        col(&r.a, |f| f.cpu_seconds_per_million),
        col(&r.b, |f| f.cpu_seconds_per_million),
    );
    plot::per_run(
        &dir.join("cpu.svg"),
        "CPU seconds per million events, per run",
        "s",
        1.0,
        &a_and_b(r, &ca, &cb),
    )?;
    for (k, f) in [
        ("plot_throughput", "throughput.svg"),
        ("plot_latency", "latency.svg"),
        ("plot_cpu", "cpu.svg"),
    ] {
        files.insert(k.to_string(), f.to_string());
    }

    if let ([Some(pa), Some(pb)], Some(stage)) = (profiles, &r.changed_stage) {
        let read = |d: &Path| {
            std::fs::read_to_string(d.join(format!("folded-{stage}.txt"))).unwrap_or_default()
        };
        let name = format!("diff-flamegraph-{stage}.svg");
        flame::diff(
            &read(pa),
            &read(pb),
            &format!("{stage} stage: CPU, A ({}) to B ({})", r.a.label, r.b.label),
            &dir.join(&name),
        )?;
        files.insert("diff_flamegraph".to_string(), name);
    }
    files.insert("summary".to_string(), "summary.txt".to_string());
    files.insert("result".to_string(), "ab.json".to_string());
    r.files = files;
    std::fs::write(dir.join("summary.txt"), summary_text(r))?;
    std::fs::write(dir.join("ab.json"), serde_json::to_vec_pretty(r)?)?;
    Ok(())
}
