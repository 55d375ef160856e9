//! The student's progress (`.observatory/progress.json`) and knob answers
//! (`.observatory/answers/NN.toml`), at the repository root. Small, human-readable files.

use crate::spec::Lab;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The state of one lab.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabProgress {
    pub started: bool,
    /// How many hints have been shown.
    pub hints_shown: usize,
    pub checks: u32,
    pub passed: bool,
    /// The last check: its one-line verdict and report folder.
    pub last_verdict: Option<String>,
    pub last_report: Option<String>,
    /// Wall seconds of the last checks on this machine, build included (newest last; the
    /// estimate shown before a check is learnt from them).
    #[serde(default)]
    pub check_seconds: Vec<f64>,
    /// Every prediction made before a check, with what was measured.
    #[serde(default)]
    pub predictions: Vec<crate::predict::Prediction>,
}

/// How many check durations are kept per lab.
const KEEP_SECONDS: usize = 5;

impl LabProgress {
    /// Remember how long a check took.
    pub fn record_seconds(&mut self, seconds: f64) {
        self.check_seconds.push(seconds);
        let extra = self.check_seconds.len().saturating_sub(KEEP_SECONDS);
        self.check_seconds.drain(..extra);
    }

    /// The estimate of the next check: the median of the last checks here, if any.
    pub fn estimate_seconds(&self) -> Option<f64> {
        let mut v: Vec<f64> = self
            .check_seconds
            .iter()
            .copied()
            .filter(|s| s.is_finite())
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub labs: BTreeMap<u32, LabProgress>,
}

/// Where a student's files live.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub dir: PathBuf,
}

impl Workspace {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Workspace { dir: dir.into() }
    }

    fn progress_path(&self) -> PathBuf {
        self.dir.join("progress.json")
    }

    pub fn answer_path(&self, lab: &Lab) -> PathBuf {
        self.dir
            .join("answers")
            .join(format!("{:02}.toml", lab.number()))
    }

    pub fn reports_dir(&self, lab: &Lab) -> PathBuf {
        self.dir.join("reports").join(&lab.slug)
    }

    /// The progress so far (empty when none was saved; a damaged file is an error).
    pub fn load(&self) -> anyhow::Result<Progress> {
        let path = self.progress_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{} is damaged ({e}); delete it to start over",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Progress::default()),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    pub fn save(&self, p: &Progress) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.progress_path();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(p)? + "\n")?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Update one lab's progress.
    pub fn update(&self, lab: u32, f: impl FnOnce(&mut LabProgress)) -> anyhow::Result<()> {
        let mut p = self.load()?;
        f(p.labs.entry(lab).or_default());
        self.save(&p)
    }

    /// Write the answer file of a knob lab, starting from the baseline (kept if it exists).
    pub fn prepare_answer(&self, lab: &Lab) -> anyhow::Result<Option<PathBuf>> {
        if lab.is_code_lab() {
            return Ok(None);
        }
        let path = self.answer_path(lab);
        if !path.exists() {
            write_answer(&path, lab)?;
        }
        Ok(Some(path))
    }

    /// Put a knob lab's answer back to the baseline.
    pub fn reset_answer(&self, lab: &Lab) -> anyhow::Result<()> {
        if !lab.is_code_lab() {
            write_answer(&self.answer_path(lab), lab)?;
        }
        self.update(lab.number(), |p| *p = LabProgress::default())
    }

    /// The student's knob assignments for a knob lab.
    pub fn answer(&self, lab: &Lab) -> anyhow::Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            set: Vec<String>,
        }
        let path = self.answer_path(lab);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!(
                "reading {} ({e}): run `observatory lab start {}` first",
                path.display(),
                lab.number()
            )
        })?;
        let a: Answer =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(a.set)
    }
}

fn write_answer(path: &Path, lab: &Lab) -> anyhow::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let set: Vec<String> = lab
        .spec
        .baseline
        .set
        .iter()
        .map(|s| format!("  {s:?},"))
        .collect();
    std::fs::write(
        path,
        format!(
            "# Lab {:02}: {}\n# Your change: the knob assignments of the variant (stage.knob=value; `observatory knobs`\n# lists them all). It starts as the baseline; `observatory lab check {}` measures it against it.\nset = [\n{}\n]\n",
            lab.number(),
            lab.spec.title,
            lab.number(),
            set.join("\n")
        ),
    )?;
    Ok(())
}
