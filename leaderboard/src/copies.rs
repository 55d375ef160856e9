//! Copies, replays and forgeries across students. A bundle's figures are measured once, on
//! one machine, by one check: no two honest students upload the same wall-clock samples, or
//! one side of another's samples reordered, rescaled or nudged in the sixth digit. Instruction
//! counts are deterministic, so two students with the same change may share them honestly,
//! but not with different changes. Code is compared after normalising (comments and whitespace
//! out) and by a similarity of token trigrams, for the instructor to look at: similar code is a
//! question, not a verdict.
//!
//! What this cannot catch: figures invented from nothing, or every sample of a copy moved by
//! more than a part in a million. Grades count the instructor's re-run for that reason.

use crate::bundle::sha256_hex;
use observatory_stats::Figures;
use serde::{Deserialize, Serialize};

/// Runs a side needs before its shape is compared (with fewer, honest students' shapes could
/// meet by chance).
pub const MIN_SHAPE_RUNS: usize = 5;

/// What a submission's figures are compared with other students' by: digests (sha256 hex),
/// each kept once per student, looked up across every lab and cohort of the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    /// The figures exactly (`None` for a lab without figures).
    pub exact: Option<String>,
    /// Each side of wall-clock samples with at least [`MIN_SHAPE_RUNS`] runs, not all equal:
    /// its samples over their median, sorted, to six significant digits (the same for the side
    /// reordered, scaled by any factor, nudged below a part in a million, or moved to the other
    /// side).
    pub sides: Vec<String>,
    /// The change with comments and whitespace removed.
    pub change: String,
    /// The figures are instruction counts (shared honestly by the same change).
    pub counts: bool,
}

impl Digests {
    pub fn of(figures: Option<&Figures>, change: &str) -> Digests {
        let sides = match figures {
            Some(Figures::Samples { a, b }) => {
                [a, b].into_iter().filter_map(|s| shape(s)).collect()
            }
            _ => Vec::new(),
        };
        Digests {
            exact: figures
                .and_then(|f| serde_json::to_vec(f).ok())
                .map(|j| sha256_hex(&j)),
            sides,
            change: sha256_hex(normalised(change).as_bytes()),
            counts: matches!(figures, Some(Figures::Counts { .. })),
        }
    }

    /// Every digest to look up, with what a match would mean.
    pub fn all(&self) -> Vec<(&str, Copied)> {
        self.exact
            .iter()
            .map(|d| (d.as_str(), Copied::SameFigures))
            .chain(self.sides.iter().map(|d| (d.as_str(), Copied::SameSamples)))
            .collect()
    }
}

fn shape(side: &[f64]) -> Option<String> {
    if side.len() < MIN_SHAPE_RUNS {
        return None;
    }
    let mut v = side.to_vec();
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    if !(median.is_finite() && median > 0.0) || v.first() == v.last() {
        return None;
    }
    let text: Vec<String> = v.iter().map(|x| format!("{:.5e}", x / median)).collect();
    Some(sha256_hex(format!("side:{}", text.join(",")).as_bytes()))
}

/// Why a bundle is refused as another student's (checked at upload, against every cohort).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Copied {
    /// The same wall-clock samples, or instruction counts with another change.
    SameFigures,
    /// One side's samples reordered, rescaled or nudged.
    SameSamples,
}

impl Copied {
    /// Does a match of `mine` on another student's digest (`their_change`, `their_counts`)
    /// make a copy? Counts shared with the same change are not one.
    pub fn check(self, mine: &Digests, their_change: &str, their_counts: bool) -> Option<Copied> {
        if self == Copied::SameFigures && mine.counts && their_counts && mine.change == their_change
        {
            return None;
        }
        Some(self)
    }

    pub fn words(self) -> &'static str {
        match self {
            Copied::SameFigures => "the same figures",
            Copied::SameSamples => "the same samples, reordered, rescaled or nudged,",
        }
    }
}

/// The change with `//` and `/* */` comments and all whitespace removed (string literals
/// are not special: a change is compared, not compiled).
pub fn normalised(change: &str) -> String {
    without_comments(change)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// Tokens of a change: identifiers and numbers whole, every other character alone, comments
/// out.
fn tokens(change: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let text = without_comments(change);
    for c in text.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// The change with each comment replaced by a space (a `//` comment by its line's end).
fn without_comments(change: &str) -> String {
    let mut out = String::with_capacity(change.len());
    let mut chars = change.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                out.push('\n');
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
                out.push(' ');
            }
            (c, _) => out.push(c),
        }
    }
    out
}

/// A change's token trigrams, hashed and sorted (what [`similarity`] compares).
fn trigrams(change: &str) -> Vec<u64> {
    use std::hash::{Hash, Hasher};
    let toks = tokens(change);
    let hash = |w: &[String]| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        w.hash(&mut h);
        h.finish()
    };
    let mut grams: Vec<u64> = if toks.len() < 3 {
        vec![hash(&toks)]
    } else {
        toks.windows(3).map(hash).collect()
    };
    grams.sort_unstable();
    grams.dedup();
    grams
}

/// The Jaccard index of two sorted, deduplicated sets.
fn jaccard(x: &[u64], y: &[u64]) -> f64 {
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < x.len() && j < y.len() {
        match x[i].cmp(&y[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = x.len() + y.len() - both;
    if union == 0 {
        1.0
    } else {
        both as f64 / union as f64
    }
}

/// How alike two changes are, from 0 to 1: the Jaccard index of their token trigrams
/// (renaming a variable or reordering two statements leaves most trigrams in place).
pub fn similarity(a: &str, b: &str) -> f64 {
    jaccard(&trigrams(a), &trigrams(b))
}

/// Code at least this similar is listed for the instructor.
pub const SIMILAR: f64 = 0.9;

/// Two students' changes to one code lab that look alike.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Alike {
    pub lab: u32,
    pub student: String,
    pub submission: String,
    pub other: String,
    pub other_submission: String,
    /// 1.0: the same code once comments and whitespace are out.
    pub similarity: f64,
}

/// One student's latest change to a code lab.
#[derive(Clone, Debug)]
pub struct Change<'a> {
    pub lab: u32,
    pub student: &'a str,
    pub submission: &'a str,
    pub text: &'a str,
}

/// Pairs of students whose changes to the same code lab are at least [`SIMILAR`] alike,
/// most alike first. `changes` holds one change per student and lab (their latest).
pub fn alike(changes: &[Change<'_>]) -> Vec<Alike> {
    let pair = |a: &Change<'_>, b: &Change<'_>, similarity: f64| Alike {
        lab: a.lab,
        student: a.student.to_string(),
        submission: a.submission.to_string(),
        other: b.student.to_string(),
        other_submission: b.submission.to_string(),
        similarity,
    };
    // The same normal form: listed against the first student who has it (a group of n makes
    // n - 1 rows, not n^2 / 2); only the first of each group is compared further.
    let mut out = Vec::new();
    let mut first: std::collections::HashMap<(u32, String), usize> = Default::default();
    let mut reps: Vec<usize> = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        match first.entry((c.lab, normalised(c.text))) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let r = &changes[*e.get()];
                if r.student != c.student {
                    out.push(pair(r, c, 1.0));
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(i);
                reps.push(i);
            }
        }
    }
    // Trigrams once per representative; two sets whose sizes differ by more than the
    // threshold allows cannot reach it.
    let grams: Vec<Vec<u64>> = reps.iter().map(|&i| trigrams(changes[i].text)).collect();
    for x in 0..reps.len() {
        for y in x + 1..reps.len() {
            let (a, b) = (&changes[reps[x]], &changes[reps[y]]);
            if a.lab != b.lab || a.student == b.student {
                continue;
            }
            let (m, n) = (grams[x].len(), grams[y].len());
            if (m.min(n) as f64) < SIMILAR * m.max(n) as f64 {
                continue;
            }
            let s = jaccard(&grams[x], &grams[y]);
            if s >= SIMILAR {
                out.push(pair(a, b, s));
            }
        }
    }
    out.sort_by(|x, y| {
        y.similarity
            .total_cmp(&x.similarity)
            .then(x.lab.cmp(&y.lab))
    });
    out.truncate(MAX_ALIKE);
    out
}

/// Rows of alike code listed at most (the most alike first).
pub const MAX_ALIKE: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(a: &[f64], b: &[f64]) -> Figures {
        Figures::Samples {
            a: a.to_vec(),
            b: b.to_vec(),
        }
    }

    /// What matches between two digests, as the server looks it up.
    fn matched(mine: &Digests, theirs: &Digests) -> Option<Copied> {
        let their: Vec<&str> = theirs.all().into_iter().map(|(d, _)| d).collect();
        mine.all()
            .into_iter()
            .filter(|(d, _)| their.contains(d))
            .find_map(|(_, kind)| kind.check(mine, &theirs.change, theirs.counts))
    }

    #[test]
    fn replayed_reordered_rescaled_nudged_and_swapped_samples_are_copies() {
        let a = [1000.0, 1004.0, 997.5, 1010.0, 1001.0, 999.0];
        let b = [500.0, 503.0, 498.5, 505.5, 501.0, 499.5];
        let ada = Digests::of(Some(&samples(&a, &b)), "fn f() { a }");
        let copy = |a: Vec<f64>, b: Vec<f64>| Digests::of(Some(&samples(&a, &b)), "fn f() { b }");
        let scale = |v: &[f64], k: f64| v.iter().map(|x| x * k).collect::<Vec<_>>();
        let mut reversed = (a.to_vec(), b.to_vec());
        reversed.0.reverse();
        reversed.1.reverse();
        let mut nudged = b.to_vec();
        nudged[5] *= 1.0 + 1e-9;
        let mut nudged6 = b.to_vec();
        nudged6[2] *= 1.0 + 1e-7;
        for (what, forged) in [
            ("a replay with another change", copy(a.to_vec(), b.to_vec())),
            ("both sides scaled", copy(scale(&a, 0.5), scale(&b, 0.5))),
            ("one side scaled", copy(scale(&a, 0.5), b.to_vec())),
            ("runs reordered", copy(reversed.0, reversed.1)),
            ("one sample nudged by 1e-9", copy(a.to_vec(), nudged)),
            ("one sample nudged by 1e-7", copy(a.to_vec(), nudged6)),
            ("the sides swapped", copy(b.to_vec(), a.to_vec())),
        ] {
            assert!(matched(&forged, &ada).is_some(), "{what}");
        }
        // Another honest run of the same code: other samples.
        let bob = [1002.0, 999.0, 1006.5, 1001.5, 995.0, 1003.0];
        let bob_b = [501.5, 499.0, 504.0, 500.5, 497.0, 502.0];
        assert_eq!(matched(&copy(bob.to_vec(), bob_b.to_vec()), &ada), None);
        // Too few runs to compare a side's shape: only the exact figures count.
        let few = Digests::of(Some(&samples(&[1.0, 2.0], &[0.5, 0.7])), "");
        assert!(few.sides.is_empty() && few.exact.is_some());
    }

    #[test]
    fn counts_are_shared_honestly_by_the_same_change_only() {
        let counts = Figures::Counts {
            a: vec![1000, 1000],
            b: vec![600, 600],
        };
        let ada = Digests::of(Some(&counts), "fn f() {\n  a // mine\n}");
        let same_code = Digests::of(Some(&counts), "fn f() { a }");
        assert_eq!(matched(&same_code, &ada), None);
        let other_code = Digests::of(Some(&counts), "fn f() { b }");
        assert_eq!(matched(&other_code, &ada), Some(Copied::SameFigures));
        // Counts have no shape (every honest baseline's counts are alike), labs without
        // figures no digest at all.
        assert!(ada.sides.is_empty());
        assert!(Digests::of(None, "x").all().is_empty());
    }

    #[test]
    fn code_alike_after_comments_whitespace_and_a_rename_is_listed() {
        let ada = "fn student(key: &str) -> u32 {\n    // hash once\n    let h = fnv(key);\n    (h % 64) as u32\n}";
        let reformatted = "fn student(key:&str)->u32{ /* mine */ let h=fnv(key); (h % 64) as u32 }";
        assert_eq!(normalised(ada), normalised(reformatted));
        let renamed =
            "fn student(key: &str) -> u32 {\n    let hh = fnv(key);\n    (hh % 64) as u32\n}";
        let own = "fn student(key: &str) -> u32 {\n    let mut n = 0u32;\n    for b in key.bytes() { n = n.wrapping_mul(31).wrapping_add(b as u32); }\n    n & 63\n}";
        assert!(similarity(ada, renamed) < 1.0);
        let changes = [
            Change {
                lab: 9,
                student: "ada",
                submission: "s1",
                text: ada,
            },
            Change {
                lab: 9,
                student: "bob",
                submission: "s2",
                text: reformatted,
            },
            Change {
                lab: 9,
                student: "cy",
                submission: "s3",
                text: own,
            },
            Change {
                lab: 10,
                student: "dee",
                submission: "s4",
                text: ada,
            },
        ];
        let found = alike(&changes);
        let pairs: Vec<(&str, &str, f64)> = found
            .iter()
            .map(|a| (a.student.as_str(), a.other.as_str(), a.similarity))
            .collect();
        assert_eq!(pairs, [("ada", "bob", 1.0)], "{found:?}");
        assert!(similarity(ada, own) < 0.5, "{}", similarity(ada, own));
        // 300 students with the same code: 299 rows against the first, not 44,850 pairs.
        let names: Vec<String> = (0..300).map(|i| format!("s{i:03}")).collect();
        let many: Vec<Change<'_>> = names
            .iter()
            .map(|n| Change {
                lab: 9,
                student: n,
                submission: n,
                text: ada,
            })
            .collect();
        let found = alike(&many);
        assert_eq!(found.len(), 299);
        assert!(
            found
                .iter()
                .all(|a| a.student == "s000" && a.similarity == 1.0)
        );
    }
}
