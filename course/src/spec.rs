//! Labs as data: `course/labs/NN-slug/lab.toml`, validated on load.

use observatory_bench::stats::{Better, Metric, Threshold};
use pipeline_plan::{LabSlot, Plan};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no lab number {0} (`observatory lab list` shows them)")]
    NoSuchLab(u32),
}

/// How a lab measures its effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Interleaved end-to-end runs of the local pipeline (`observatory bench ab`).
    Wall,
    /// Callgrind instruction counts of one stage's kernel (deterministic).
    Instructions,
    /// Wall-clock of one stage's kernel in-process, interleaved repeats (`pipeline kernel`).
    Kernel,
    /// One run must finish (within `timeout_seconds`) and conserve its events.
    Completes,
    /// A criterion benchmark (`cargo bench -p observatory-course --bench ...`).
    Criterion,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measure {
    pub mode: Mode,
    /// The stage whose kernel is measured (instructions and kernel modes).
    #[serde(default)]
    pub stage: Option<String>,
    /// Threads applying the input at once (kernel mode).
    #[serde(default = "one")]
    pub threads: usize,
    /// Times the input is applied per timed sample (kernel mode): enough that each sample lasts
    /// a good fraction of a second.
    #[serde(default = "one_u32")]
    pub rounds: u32,
    /// The metric the lab is about: a name from the metric catalogue
    /// (`observatory_stats::Metric`: which way is better comes from there), or `completes`.
    pub metric: String,
    /// The smallest effect that passes, as a fraction: 0.5 means B/A's interval must lie above
    /// 1.5 (higher is better) or below 0.5 (lower is better); 1.0 with higher means 2×.
    #[serde(default)]
    pub min_effect: f64,
    #[serde(default = "five")]
    pub pairs: usize,
    #[serde(default = "sixty")]
    pub timeout_seconds: u64,
}

impl Measure {
    /// The catalogue's metric (`None` for `completes`).
    pub fn catalogue_metric(&self) -> Option<Metric> {
        Metric::from_name(&self.metric)
    }

    /// Which way is better: the catalogue's (higher for `completes`, which is pass or fail).
    pub fn better(&self) -> Better {
        self.catalogue_metric()
            .map_or(Better::Higher, Metric::better)
    }

    /// The pass rule of the lab.
    pub fn threshold(&self) -> Threshold {
        Threshold::new(self.better(), self.min_effect)
    }

    /// Why this metric does not go with this mode, if it does not.
    fn metric_mismatch(&self) -> Option<String> {
        let metric = self.catalogue_metric();
        let fits = match self.mode {
            Mode::Completes => self.metric == "completes",
            Mode::Wall => metric.is_some_and(|m| m.formula().is_some()),
            Mode::Instructions => metric == Some(Metric::InstructionsPerEvent),
            Mode::Kernel => metric == Some(Metric::KernelEps),
            Mode::Criterion => metric == Some(Metric::TimePerIteration),
        };
        (!fits).then(|| match (self.mode, metric) {
            (_, None) if self.mode != Mode::Completes => format!(
                "`{}` is not a metric of the catalogue (observatory_stats::Metric)",
                self.metric
            ),
            (Mode::Wall, _) => format!("`{}` is not an A/B metric", self.metric),
            _ => format!(
                "`{}` is not what the {:?} mode measures",
                self.metric, self.mode
            ),
        })
    }
}

fn one() -> usize {
    1
}
fn one_u32() -> u32 {
    1
}
fn five() -> usize {
    5
}
fn sixty() -> u64 {
    60
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignments {
    #[serde(default)]
    pub set: Vec<String>,
}

/// A lab's `lab.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSpec {
    pub number: u32,
    pub title: String,
    /// What the lab teaches (the course's topic list).
    pub topic: String,
    /// The code slot a code lab edits (`pipeline/src/slots/<slot>.rs`); none for knob labs.
    #[serde(default)]
    pub slot: Option<LabSlot>,
    /// The file the student edits, for a code lab without a slot (a criterion benchmark); a
    /// slot's file follows from its name ([`Lab::file`]).
    #[serde(default)]
    pub file: Option<String>,
    /// Part of `make test` (deterministic measurement or a large effect); the rest run in
    /// `make lab-verify`.
    #[serde(default)]
    pub dev_check: bool,
    /// Roughly how long a check takes, seconds (shown before it starts).
    pub check_seconds: u64,
    #[serde(default)]
    pub workload: Assignments,
    #[serde(default)]
    pub baseline: Assignments,
    /// The reference change (knob labs); code labs' reference is `reference.rs`.
    #[serde(default)]
    pub reference: Assignments,
    /// Knob labs: the knobs the student's answer may set (`stage.knob`; `all.knob` allows it
    /// on any stage). Anything else in the answer file is refused: the workload is fixed.
    #[serde(default)]
    pub may_set: Vec<String>,
    /// Code labs without a slot of their own (lab 12): the slot whose specification the
    /// student's code must meet. A slot lab is checked against its own slot.
    #[serde(default)]
    pub conformance: Option<String>,
    /// Code labs: wrong but fast bodies for the STUDENT function (a constant, a skipped call,
    /// a plausible mistake); `observatory lab dev-check` proves each fails on correctness.
    #[serde(default)]
    pub mutants: Vec<String>,
    /// Code labs: one short question about the mechanism, asked before the check, and the
    /// answer shown after it (active recall).
    #[serde(default)]
    pub recall: Option<Recall>,
    /// Code labs: SHA-256 of the slot file up to its STUDENT marker, the part the student
    /// must not edit (the baseline, the dispatch); a check refuses a changed one.
    #[serde(default)]
    pub protected_sha256: Option<String>,
    pub measure: Measure,
    /// Ordered hints; none in a recall lab.
    #[serde(default)]
    pub hints: Vec<String>,
    /// A recall lab: the earlier labs whose topics it revisits, without hints (active recall).
    #[serde(default)]
    pub revisits: Vec<u32>,
}

/// A recall question and the answer shown after the check.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recall {
    pub question: String,
    pub answer: String,
}

/// The file of a code slot.
pub fn slot_file(slot: LabSlot) -> String {
    format!("pipeline/src/slots/{}.rs", slot.as_str())
}

/// A lab: its spec and where it lives.
#[derive(Clone, Debug)]
pub struct Lab {
    pub dir: PathBuf,
    pub slug: String,
    pub spec: LabSpec,
}

impl Lab {
    pub fn number(&self) -> u32 {
        self.spec.number
    }

    /// A lab whose change is code (a slot function or a benchmark), not knobs.
    pub fn is_code_lab(&self) -> bool {
        self.file().is_some()
    }

    /// The file the student edits, relative to the repository: a slot's is
    /// `pipeline/src/slots/<slot>.rs`; a benchmark lab states its own.
    pub fn file(&self) -> Option<String> {
        match self.spec.slot {
            Some(slot) => Some(slot_file(slot)),
            None => self.spec.file.clone(),
        }
    }

    /// The slot whose specification a code lab's student code must meet before it is
    /// measured (`pipeline conformance`).
    pub fn conformance_slot(&self) -> Option<String> {
        self.spec
            .conformance
            .clone()
            .or_else(|| self.spec.slot.map(|s| s.as_str().to_string()))
    }

    /// The slot file holding the STUDENT function that is checked for correctness.
    pub fn conformance_file(&self) -> Option<String> {
        self.conformance_slot()
            .map(|s| format!("pipeline/src/slots/{s}.rs"))
    }

    /// The student's change as it is now ([`change_text`]): the slot file under `root` past
    /// its protected part for a code lab, `answer` for a knob lab.
    pub fn change_text(&self, root: &Path, answer: &[String]) -> std::io::Result<String> {
        match self.conformance_file() {
            Some(file) => {
                let text = std::fs::read_to_string(root.join(file))?;
                Ok(change_text(Some(&text), answer))
            }
            None => Ok(change_text(None, answer)),
        }
    }

    /// The digest of the student's change as it is now (what a check and a submission carry).
    pub fn change_sha256(&self, root: &Path, answer: &[String]) -> std::io::Result<String> {
        Ok(sha256_hex(self.change_text(root, answer)?.as_bytes()))
    }

    /// Refuse an answer that sets anything but the lab's own knobs, naming what may be set.
    pub fn check_answer(&self, answer: &[String]) -> Result<(), String> {
        let allowed = |key: &str| {
            let knob = key.split_once('.').map_or(key, |(_, k)| k);
            self.spec
                .may_set
                .iter()
                .any(|m| m == key || m.strip_prefix("all.") == Some(knob))
        };
        let refused: Vec<&str> = answer
            .iter()
            .map(|a| a.split_once('=').map_or(a.as_str(), |(k, _)| k).trim())
            .filter(|k| !allowed(k))
            .collect();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "lab {:02} fixes the workload: your answer may set only {} (it sets {})",
                self.number(),
                self.spec.may_set.join(", "),
                refused.join(", ")
            ))
        }
    }

    /// The text the student reads.
    pub fn readme(&self) -> String {
        std::fs::read_to_string(self.dir.join("README.md")).unwrap_or_default()
    }

    /// The workload both sides share.
    pub fn base_plan(&self) -> Result<Plan, pipeline_plan::PlanError> {
        let mut plan = Plan::new(&format!("lab{:02}", self.spec.number));
        for s in &self.spec.workload.set {
            plan.assign(s)?;
        }
        Ok(plan)
    }

    /// The baseline knobs, with the code slot (if any) running implementation `imp`
    /// (`baseline`, `student` or `reference`).
    pub fn code_side(&self, imp: &str) -> Vec<String> {
        let mut v = self.spec.baseline.set.clone();
        if let Some(slot) = self.spec.slot {
            v.push(format!("all.lab_slot={}", slot.as_str()));
            v.push(format!("all.lab_impl={imp}"));
        }
        v
    }

    /// The knob assignments of the baseline side.
    pub fn baseline_side(&self) -> Vec<String> {
        self.code_side("baseline")
    }

    /// The reference side: the reference knobs, or the slot's reference implementation on top
    /// of the baseline knobs.
    pub fn reference_side(&self) -> Vec<String> {
        if self.is_code_lab() {
            self.code_side("reference")
        } else {
            self.spec.reference.set.clone()
        }
    }

    fn validate(&self) -> Result<(), String> {
        let s = &self.spec;
        let plan = self.base_plan().map_err(|e| format!("workload: {e}"))?;
        for (what, set) in [
            ("baseline", self.baseline_side()),
            ("reference", self.reference_side()),
        ] {
            let mut p = plan.clone();
            for a in &set {
                p.assign(a).map_err(|e| format!("{what}: {e}"))?;
            }
        }
        if let Some(n) = s.revisits.iter().find(|&&n| n == 0 || n >= s.number) {
            return Err(format!(
                "`revisits` names lab {n}: only earlier labs can be revisited"
            ));
        }
        if s.revisits.is_empty() && s.hints.is_empty() {
            return Err("a lab needs at least one hint (or, a recall lab, `revisits`)".into());
        }
        if !s.revisits.is_empty() && !s.hints.is_empty() {
            return Err("a recall lab (`revisits`) has no hints".into());
        }
        if let (Some(slot), Some(file)) = (s.slot, &s.file) {
            return Err(format!(
                "`file = \"{file}\"`: a slot's file follows from its name ({}); leave it out",
                slot_file(slot)
            ));
        }
        if s.file.is_some() && s.slot.is_none() && s.measure.mode != Mode::Criterion {
            return Err("a code lab without a slot must be measured by criterion".into());
        }
        if self.is_code_lab() {
            if s.mutants.is_empty() || s.mutants.iter().any(|m| m.trim().is_empty()) {
                return Err(
                    "a code lab needs `mutants` (wrong but fast STUDENT bodies, none empty)".into(),
                );
            }
            if s.protected_sha256.is_none() {
                return Err(
                    "a code lab needs `protected_sha256` (of its slot file up to the STUDENT marker)"
                        .into(),
                );
            }
            if s.recall.is_none() {
                return Err("a code lab needs a `[recall]` question and answer".into());
            }
            if !s.may_set.is_empty() {
                return Err("`may_set` is for knob labs".into());
            }
        } else {
            if s.may_set.is_empty() {
                return Err("a knob lab needs `may_set`: the knobs the student may change".into());
            }
            for (what, set) in [
                ("baseline", &s.baseline.set),
                ("reference", &s.reference.set),
            ] {
                self.check_answer(set)
                    .map_err(|e| format!("the {what} sets a knob outside may_set: {e}"))?;
            }
        }
        if !s.is_reference_distinct(self.is_code_lab()) {
            return Err("the reference must change something".into());
        }
        let m = &s.measure;
        if !m.threshold().reachable() {
            return Err(
                "measure.min_effect is at least 0 (and below 1 when lower is better)".into(),
            );
        }
        if m.mode == Mode::Kernel && !matches!(m.stage.as_deref(), Some("parse" | "aggregate")) {
            return Err("the kernel mode needs stage = parse or aggregate".into());
        }
        if m.mode == Mode::Instructions
            && !matches!(m.stage.as_deref(), Some("parse" | "aggregate" | "sink"))
        {
            return Err(
                "the instructions mode needs stage = parse, aggregate or sink (the log's replay)"
                    .into(),
            );
        }
        if let Some(why) = m.metric_mismatch() {
            return Err(why);
        }
        if m.rounds == 0 {
            return Err("measure.rounds is at least 1".into());
        }
        if m.pairs < 3 && matches!(m.mode, Mode::Wall | Mode::Kernel) {
            return Err("measure.pairs must be at least 3".into());
        }
        Ok(())
    }
}

impl LabSpec {
    fn is_reference_distinct(&self, code: bool) -> bool {
        code || self.reference.set != self.baseline.set
    }
}

/// Every lab under `labs_dir`, in number order; a malformed lab is an error naming its file.
pub fn load_labs(labs_dir: &Path) -> Result<Vec<Lab>, SpecError> {
    let read_err = |path: &Path, source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut labs = Vec::new();
    let entries = std::fs::read_dir(labs_dir).map_err(|e| read_err(labs_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| read_err(labs_dir, e))?;
        let path = entry.path().join("lab.toml");
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
        let invalid = |message: String| SpecError::Invalid {
            path: path.clone(),
            message,
        };
        let spec: LabSpec = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let slug = entry.file_name().to_string_lossy().into_owned();
        if !slug.starts_with(&format!("{:02}-", spec.number)) {
            return Err(invalid(format!(
                "the folder must start with the lab number {:02}-",
                spec.number
            )));
        }
        let lab = Lab {
            dir: entry.path(),
            slug,
            spec,
        };
        lab.validate().map_err(invalid)?;
        labs.push(lab);
    }
    labs.sort_by_key(Lab::number);
    for w in labs.windows(2) {
        if w[0].number() == w[1].number() {
            return Err(SpecError::Invalid {
                path: w[1].dir.clone(),
                message: format!("lab number {} is used twice", w[1].number()),
            });
        }
    }
    Ok(labs)
}

/// The lab numbered `n`.
pub fn find(labs: &[Lab], n: u32) -> Result<&Lab, SpecError> {
    labs.iter()
        .find(|l| l.number() == n)
        .ok_or(SpecError::NoSuchLab(n))
}

/// The marker line that starts the part of a slot file the student edits.
pub const STUDENT_MARKER: &str = "// ===== STUDENT";

/// The part of a slot file before its STUDENT marker (`None` without a marker).
pub fn protected_part(text: &str) -> Option<&str> {
    let at = text
        .match_indices(STUDENT_MARKER)
        .find(|(i, _)| *i == 0 || text.as_bytes()[i - 1] == b'\n')?
        .0;
    Some(&text[..at])
}

/// SHA-256 of `bytes`, hex.
pub use observatory_leaderboard::sha256_hex;

/// SHA-256 of the protected part, hex.
pub fn protected_digest(text: &str) -> Option<String> {
    Some(sha256_hex(protected_part(text)?.as_bytes()))
}

/// The student's change: a slot file past its protected part (the STUDENT code), or a knob
/// answer's lines. A verification re-runs exactly this; its sha256 names it.
pub fn change_text(text: Option<&str>, answer: &[String]) -> String {
    match text {
        Some(text) => {
            let protected = protected_part(text).map_or(0, str::len);
            text[protected..].to_string()
        }
        None => answer.join("\n"),
    }
}

/// The STUDENT function's signature (the first `fn student(` after the STUDENT marker): from
/// the start of its line (so `async` is kept) to its body's `{`.
fn student_header(text: &str) -> Result<&str, String> {
    let start = protected_part(text)
        .ok_or("the slot file has no STUDENT marker")?
        .len();
    let rest = &text[start..];
    let f = rest
        .find("fn student(")
        .ok_or("no `fn student(` after the STUDENT marker")?;
    let line = rest[..f].rfind('\n').map_or(0, |i| i + 1);
    let open = f + rest[f..]
        .find('{')
        .ok_or("the STUDENT function has no body")?;
    Ok(&rest[line..open])
}

/// The folder, relative to the repository, of the generated mutant files
/// ([`mutants_source`]): `<slot>.rs`, included by the slot file of the same name.
pub const MUTANTS_DIR: &str = "pipeline/src/slots/mutants";

/// The generated Rust file that compiles a lab's mutants (wrong but fast STUDENT bodies) into
/// its slot: each mutant is a function `mutant_N` with the STUDENT function's signature and
/// the mutant's body, compiled only with the pipeline's `lab-mutants` feature, and the slot's
/// dispatch calls mutant N through the macro `mutants!(n, |m| m(args))` (which forwards to
/// the pipeline's `call_mutant!` with the list of names). `slot_text` is the slot file, `lab`
/// the lab's folder name (for the header).
pub fn mutants_source(slot_text: &str, lab: &str, mutants: &[String]) -> Result<String, String> {
    mutants_source_with(student_header(slot_text)?, lab, mutants)
}

/// The most mutants a lab may have (the dispatch macro recurses once per mutant).
pub const MAX_MUTANTS: usize = 64;

/// [`mutants_source`] with the STUDENT signature given (`header`: up to the body's `{`).
fn mutants_source_with(header: &str, lab: &str, mutants: &[String]) -> Result<String, String> {
    if mutants.len() > MAX_MUTANTS {
        return Err(format!("{} mutants: at most {MAX_MUTANTS}", mutants.len()));
    }
    for (i, body) in mutants.iter().enumerate() {
        // A body that closed its function early would put code outside `cfg(feature)`.
        if body.matches('{').count() != body.matches('}').count() {
            return Err(format!("mutant {}: its braces do not balance", i + 1));
        }
    }
    let names: Vec<String> = (1..=mutants.len()).map(|n| format!("mutant_{n}")).collect();
    let mut out = format!(
        "// @generated from `mutants` in course/labs/{lab}/lab.toml and the STUDENT function's\n\
         // signature; do not edit (course/tests/labs.rs and the authoring check fail when this\n\
         // file is stale). The lab's wrong but fast STUDENT bodies, compiled in with the\n\
         // pipeline's `lab-mutants` feature: `mutants!(n, |m| m(args))` calls mutant n (from 1).\n\
         // Included at the end of the slot's protected part: nothing here comes before the\n\
         // baseline or the dispatch.\n\n\
         /// How many mutants the lab of this slot has.\n\
         pub const MUTANTS: u8 = {};\n\n\
         macro_rules! mutants {{\n    \
         ($n:expr, |$m:ident| $e:expr) => {{\n        \
         call_mutant!($n, [{}], |$m| $e)\n    \
         }};\n}}\n\
         // The slot's dispatch, above the `include!`, finds it through this `use`.\n\
         pub(crate) use mutants;\n",
        mutants.len(),
        names.join(", ")
    );
    for (i, body) in mutants.iter().enumerate() {
        let header = header.replacen("fn student(", &format!("fn mutant_{}(", i + 1), 1);
        out.push_str(&format!(
            "\n#[cfg(feature = \"lab-mutants\")]\n#[allow(unused, clippy::all)]\n{header}{{\n    {}\n}}\n",
            body.trim()
        ));
    }
    Ok(out)
}

/// The STUDENT signature a generated mutant file was written with (from its `fn mutant_1(`
/// line), so a student's own edit of the signature does not make the file stale.
fn generated_header(generated: &str) -> Option<String> {
    let f = generated.find("fn mutant_1(")?;
    let line = generated[..f].rfind('\n').map_or(0, |i| i + 1);
    let open = f + generated[f..].find('{')?;
    Some(generated[line..open].replacen("fn mutant_1(", "fn student(", 1))
}

/// A code lab's generated mutant file: where it goes ([`MUTANTS_DIR`], relative to the
/// repository), the lab, and its slot file (path and text).
struct MutantTarget<'a> {
    path: String,
    lab: &'a Lab,
    slot_file: String,
    slot_text: String,
}

impl MutantTarget<'_> {
    /// The STUDENT signature of the slot file, up to the body's `{`.
    fn student_header(&self) -> Result<&str, String> {
        student_header(&self.slot_text).map_err(|e| format!("{}: {e}", self.slot_file))
    }
}

/// Every code lab's [`MutantTarget`]. Two labs checked against one slot is an error: the slot's
/// file would have two lists.
fn mutant_targets<'a>(root: &Path, labs: &'a [Lab]) -> Result<Vec<MutantTarget<'a>>, String> {
    let mut out: Vec<MutantTarget<'a>> = Vec::new();
    for lab in labs {
        let (Some(slot), Some(slot_file)) = (lab.conformance_slot(), lab.conformance_file()) else {
            continue;
        };
        let path = format!("{MUTANTS_DIR}/{slot}.rs");
        if out.iter().any(|t| t.path == path) {
            return Err(format!(
                "two labs are checked against slot `{slot}`: its mutants would need one list"
            ));
        }
        let slot_text = std::fs::read_to_string(root.join(&slot_file))
            .map_err(|e| format!("reading {slot_file}: {e}"))?;
        out.push(MutantTarget {
            path,
            lab,
            slot_file,
            slot_text,
        });
    }
    Ok(out)
}

/// Every code lab's generated mutant file under `root` as it should be: (path relative to
/// `root`, contents).
pub fn mutant_files(root: &Path, labs: &[Lab]) -> Result<Vec<(String, String)>, String> {
    mutant_targets(root, labs)?
        .into_iter()
        .map(|t| {
            let source = mutants_source_with(t.student_header()?, &t.lab.slug, &t.lab.spec.mutants)
                .map_err(|e| format!("{}: {e}", t.slot_file))?;
            Ok((t.path, source))
        })
        .collect()
}

/// The generated mutant files that do not match their lab's `mutants` (paths relative to
/// `root`). The signature is compared as the file has it: a student who renamed a parameter
/// of their STUDENT function has not made it stale (the mutants are functions of their own).
pub fn stale_mutant_files(root: &Path, labs: &[Lab]) -> Result<Vec<String>, String> {
    let mut stale = Vec::new();
    for t in mutant_targets(root, labs)? {
        let have = std::fs::read_to_string(root.join(&t.path)).unwrap_or_default();
        let header = match generated_header(&have) {
            Some(header) => header,
            None => t.student_header()?.to_string(),
        };
        if have != mutants_source_with(&header, &t.lab.slug, &t.lab.spec.mutants)? {
            stale.push(t.path);
        }
    }
    Ok(stale)
}

/// Write the mutant files that differ from [`mutant_files`] (an unchanged file is not touched,
/// so cargo does not rebuild for it); the paths written.
pub fn write_mutant_files(root: &Path, labs: &[Lab]) -> Result<Vec<String>, String> {
    let mut written = Vec::new();
    for (path, source) in mutant_files(root, labs)? {
        let full = root.join(&path);
        if std::fs::read_to_string(&full).ok().as_deref() != Some(source.as_str()) {
            std::fs::write(&full, &source).map_err(|e| format!("writing {path}: {e}"))?;
            written.push(path);
        }
    }
    Ok(written)
}
