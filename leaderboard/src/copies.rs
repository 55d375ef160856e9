//! Copies, replays and forgeries across students. A bundle's figures are measured once, on
//! one machine, by one check: no two honest students upload the same wall-clock samples, or
//! samples that are another's scaled by a factor. Instruction counts are deterministic, so two
//! students with the same change may share them honestly, but not with different changes.
//! Code is compared after normalising (comments and whitespace out) and by a similarity of
//! token trigrams, for the instructor to look at: similar code is a question, not a verdict.

use crate::bundle::sha256_hex;
use observatory_stats::Figures;
use serde::{Deserialize, Serialize};

/// The digests the server keeps of a submission to compare it with other students'.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    /// The figures exactly (`""` for a lab without figures).
    pub figures: String,
    /// Wall-clock samples divided by the baseline's first one (`""` for counts or none): the
    /// same for samples scaled by any factor.
    pub shape: String,
    /// The change with comments and whitespace removed.
    pub change: String,
}

impl Digests {
    pub fn of(figures: Option<&Figures>, change: &str) -> Digests {
        Digests {
            figures: figures
                .and_then(|f| serde_json::to_vec(f).ok())
                .map_or_else(String::new, |j| sha256_hex(&j)),
            shape: figures.map_or_else(String::new, shape_digest),
            change: sha256_hex(normalised(change).as_bytes()),
        }
    }
}

/// Samples divided by the baseline's first sample, at 9 significant digits.
fn shape_digest(f: &Figures) -> String {
    let Figures::Samples { a, b } = f else {
        return String::new();
    };
    let Some(&unit) = a.first().filter(|u| u.is_finite() && **u != 0.0) else {
        return String::new();
    };
    let text: Vec<String> = a
        .iter()
        .chain([f64::NAN].iter())
        .chain(b)
        .map(|x| format!("{:.8e}", x / unit))
        .collect();
    sha256_hex(text.join(",").as_bytes())
}

/// Why a bundle is refused as another student's (checked at upload, against the cohort).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Copied {
    /// The same wall-clock samples or instruction counts with another change.
    SameFigures,
    /// Another student's samples scaled by a factor.
    ScaledFigures,
}

impl Copied {
    /// `mine` against `theirs` (another student's). Counts shared with the same change are
    /// not a copy (a deterministic measurement of the same code).
    pub fn check(mine: &Digests, theirs: &Digests, counts: bool) -> Option<Copied> {
        if !mine.figures.is_empty() && mine.figures == theirs.figures {
            if counts && mine.change == theirs.change {
                return None;
            }
            return Some(Copied::SameFigures);
        }
        if !mine.shape.is_empty() && mine.shape == theirs.shape {
            return Some(Copied::ScaledFigures);
        }
        None
    }

    pub fn words(self) -> &'static str {
        match self {
            Copied::SameFigures => "the same figures",
            Copied::ScaledFigures => "the same figures scaled by a factor",
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

    #[test]
    fn replayed_and_scaled_samples_are_copies_and_a_fresh_measurement_is_not() {
        let ada = samples(&[100.0, 101.0, 99.5], &[50.0, 50.5, 49.0]);
        let ada_d = Digests::of(Some(&ada), "fn f() { a }");
        // Ada's bundle replayed, or her figures under another change: the same figures.
        let replay = Digests::of(Some(&ada), "fn f() { b }");
        assert_eq!(
            Copied::check(&replay, &ada_d, false),
            Some(Copied::SameFigures)
        );
        // Her figures scaled by 0.5 (and the ratio with them): the same shape.
        let half = samples(&[50.0, 50.5, 49.75], &[25.0, 25.25, 24.5]);
        let half_d = Digests::of(Some(&half), "fn f() { a }");
        assert_eq!(
            Copied::check(&half_d, &ada_d, false),
            Some(Copied::ScaledFigures)
        );
        // Another honest run of the same code: other samples.
        let bob = samples(&[100.2, 100.9, 99.7], &[50.1, 50.4, 49.2]);
        assert_eq!(
            Copied::check(&Digests::of(Some(&bob), "fn f() { a }"), &ada_d, false),
            None
        );
    }

    #[test]
    fn counts_are_shared_honestly_by_the_same_change_only() {
        let counts = Figures::Counts {
            a: vec![1000, 1000],
            b: vec![600, 600],
        };
        let ada = Digests::of(Some(&counts), "fn f() {\n  a // mine\n}");
        let same_code = Digests::of(Some(&counts), "fn f() { a }");
        assert_eq!(Copied::check(&same_code, &ada, true), None);
        let other_code = Digests::of(Some(&counts), "fn f() { b }");
        assert_eq!(
            Copied::check(&other_code, &ada, true),
            Some(Copied::SameFigures)
        );
        // Labs without figures never match on figures.
        let none = Digests::of(None, "x");
        assert_eq!(Copied::check(&none, &Digests::of(None, "y"), false), None);
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
