//! Correctness before speed: each lab slot's specification, checked on cases generated from a
//! seed (the lab's own and a hidden one) and on the slot's fixed cases. `pipeline conformance`
//! runs it on one implementation and prints a [`Conformance`]; `observatory lab check` refuses
//! to measure the student's code until it conforms, so a fast wrong answer (a constant, a
//! skipped call) fails with the input it got wrong.
//!
//! The specification of each slot:
//! - `hotspot`, `iterators`, `percentile`, `recall`, `threads`: the same result as the
//!   baseline on every input.
//! - `errors`: `Ok` for a non-empty UTF-8 record, `NotUtf8 { valid_up_to }` or `Empty`
//!   otherwise, and never a panic.
//! - `leak`: a record seen among the last [`LEAK_RECENT`] records is reported as seen, a new
//!   record as not seen (memory is the measurement's business).
//! - `deadlock`: every close is booked once with its windows, and each call returns.
//! - `blocking`: every lookup goes through the client ([`super::blocking::blocking_lookup`])
//!   and returns its answer.
//! - `zerocopy`: the same compact encoding or drop reason as the pipeline's owned parser
//!   ([`crate::json::parse_into`]) on every record, strings with escapes included.
//! - `fanout`: one request per key ([`super::fanout::request`]), and the answers in the order
//!   of the keys (the service answers out of order), within [`HANG`].
//! - `replay`: the same rebuilt state or error as the baseline (which replays with
//!   [`crate::seglog::scan_bytes`]) on segments with resent windows, torn tails, damage before
//!   the last record and records that are not window results.
//! - `contention`: after each `add` returns, the same totals per key as the baseline's, from
//!   one thread and from [`CONTENTION_THREADS`] threads adding at once.
//! - `partition`: a partition below the number asked for, for every key; the same for the
//!   same key on every call, and in a second process (`pipeline partition-lanes`: two parse
//!   replicas must agree, or a key's windows are split over two aggregate replicas).
//! - `compaction`: the same segment as the baseline, byte for byte (each window once, its
//!   newest copy, in key and window order), or the same error, on layers with updated
//!   windows in the same and in later layers, empty and junk records, and damaged layers.
//! - `reconcile`: the same two repair segments as the baseline, byte for byte (in key and
//!   window order: what each replica lacks, and where the other's copy wins), or the same
//!   error, on replicas that miss windows, hold older copies or equal-count copies with other
//!   bytes, hold junk records, are empty, damaged, out of order or hold a window twice.
//! - `arena`: the same names and counts as the baseline on every frame (names that share a
//!   prefix, empty route segments, undecodable records).
//! - `context`: the same reading, or the same drop reason and message, as the baseline on
//!   every record (valid ones, and every kind of malformed one).
//! - `batcher`: every record fed reaches the network once, in order, in frames of 1 to
//!   [`super::batcher::MAX_BATCH`] records; a record with none after it is sent within
//!   [`super::batcher::MAX_WAIT`]; while the network takes nothing the pipe holds at most
//!   [`super::batcher::MAX_HELD`] records (the feed blocks: backpressure); and the pipe lets
//!   go of its frames within [`HANG`] of the last record.
//! - `fsync`: a sync whenever the durability bound requires one
//!   ([`super::fsync::Unsynced::must_sync`]), and never a panic; otherwise free.

use super::{
    arena, batcher, blocking, compaction, contention, context, deadlock, errors, fanout, fsync,
    hotspot, iterators, leak, partition, percentile, recall, reconcile, replay, threads, zerocopy,
};
use crate::codec::{Frame, OutFrame};
use crate::event::{EventRef, key_of};
use crate::generate::Generator;
use crate::json::parse_into;
use pipeline_plan::lab::{Conformance, Mismatch};
use pipeline_plan::{LabImpl, ParseMode, SourceKnobs};
use rand::{Rng, RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

/// A slot's conformance run.
type SlotRun = fn(&mut Run, LabImpl);

/// Each slot with a specification: its name, its conformance run, and how many mutants its
/// lab has (lab 12's `percentile` is not a knob slot: criterion calls it directly).
const SPECS: [(&str, SlotRun, u8); 20] = [
    ("arena", Run::arena, arena::MUTANTS),
    ("batcher", Run::batcher, batcher::MUTANTS),
    ("blocking", Run::blocking, blocking::MUTANTS),
    ("compaction", Run::compaction, compaction::MUTANTS),
    ("contention", Run::contention, contention::MUTANTS),
    ("context", Run::context, context::MUTANTS),
    ("fanout", Run::fanout, fanout::MUTANTS),
    ("fsync", Run::fsync, fsync::MUTANTS),
    ("errors", Run::errors, errors::MUTANTS),
    ("iterators", Run::iterators, iterators::MUTANTS),
    ("hotspot", Run::hotspot, hotspot::MUTANTS),
    ("deadlock", Run::deadlock, deadlock::MUTANTS),
    ("leak", Run::leak, leak::MUTANTS),
    ("partition", Run::partition, partition::MUTANTS),
    ("percentile", Run::percentile, percentile::MUTANTS),
    ("recall", Run::recall, recall::MUTANTS),
    ("reconcile", Run::reconcile, reconcile::MUTANTS),
    ("replay", Run::replay, replay::MUTANTS),
    ("threads", Run::threads, threads::MUTANTS),
    ("zerocopy", Run::zerocopy, zerocopy::MUTANTS),
];

/// Each slot's number of mutants (`pipeline mutants`: the authoring check compares them with
/// the labs' before it trusts this binary's answers about them); an error in a binary built
/// without them.
pub fn mutant_counts() -> Result<std::collections::BTreeMap<&'static str, u8>, ConformanceError> {
    if !super::HAS_MUTANTS {
        return Err(ConformanceError::MutantsNotCompiled);
    }
    Ok(SPECS.iter().map(|&(name, _, n)| (name, n)).collect())
}

/// The slots with a specification.
pub const SLOTS: [&str; 20] = {
    let mut names = [""; 20];
    let mut i = 0;
    while i < SPECS.len() {
        names[i] = SPECS[i].0;
        i += 1;
    }
    names
};

/// How far back a duplicate must still be recognised (lab 11).
pub const LEAK_RECENT: usize = 1000;

/// Threads adding frames at once in lab 04's concurrent cases.
pub const CONTENTION_THREADS: usize = 4;

/// How long one call may take before it counts as hung (lab 10).
const HANG: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error("no slot `{0}` (slots: {SLOTS:?})")]
    UnknownSlot(String),
    #[error("no mutant {n} of slot `{slot}`: its lab has {mutants}, numbered from 1")]
    NoMutant { slot: String, n: u8, mutants: u8 },
    #[error(
        "this binary was built without the labs' mutants (feature `lab-mutants`, which the labs' authoring check turns on)"
    )]
    MutantsNotCompiled,
}

/// Check implementation `imp` of `slot` on the cases of `seed`.
pub fn check(slot: &str, imp: LabImpl, seed: u64) -> Result<Conformance, ConformanceError> {
    let Some(&(_, run_slot, mutants)) = SPECS.iter().find(|(name, _, _)| *name == slot) else {
        return Err(ConformanceError::UnknownSlot(slot.to_string()));
    };
    if let LabImpl::Mutant(n) = imp {
        // Refused here, not found out by a panic that the run would count as a wrong answer.
        mutant_counts()?;
        if n == 0 || n > mutants {
            return Err(ConformanceError::NoMutant {
                slot: slot.to_string(),
                n,
                mutants,
            });
        }
    }
    let mut run = Run::new(seed);
    run_slot(&mut run, imp);
    Ok(Conformance {
        slot: slot.to_string(),
        implementation: imp.to_string(),
        seed,
        cases: run.cases,
        mismatch: run.mismatch,
    })
}

struct Run {
    rng: Pcg64Mcg,
    seed: u64,
    cases: u64,
    mismatch: Option<Mismatch>,
}

/// A segment, one line per record, and its size and checksum (the same lines and line count
/// with other bytes still differ).
fn segment_lines(segment: &[u8]) -> Result<Vec<String>, crate::seglog::ScanError> {
    let mut lines = Vec::new();
    crate::seglog::scan_bytes(segment, false, |rec| {
        lines.push(match crate::event::WindowRef::decode(rec) {
            Ok(w) => format!(
                "{} {} @{}: {} events, {} bytes",
                w.service, w.route, w.window_start_us, w.count, w.bytes
            ),
            Err(_) => format!("a record that is not a window: {}", show_bytes(rec)),
        });
    })?;
    lines.push(format!(
        "a segment of {} bytes, crc32 {:08x}",
        segment.len(),
        crc32fast::hash(segment)
    ));
    Ok(lines)
}

/// A call's result, or the panic it ended in.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        format!("panicked: {msg}")
    })
}

/// Two long renderings cut to where they first differ (with a little before it), so a
/// mismatch in a long list shows the entry that differs, not a page of equal ones.
fn around_first_difference(a: &str, b: &str) -> (String, String) {
    const BEFORE: usize = 60;
    const AFTER: usize = 240;
    let at = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i);
    let cut = |s: &str| {
        let mut from = at.saturating_sub(BEFORE);
        while !s.is_char_boundary(from) {
            from -= 1;
        }
        let mut to = (at + AFTER).min(s.len());
        while !s.is_char_boundary(to) {
            to += 1;
        }
        let mut out = String::new();
        if from > 0 {
            out.push('…');
        }
        out.push_str(&s[from..to]);
        if to < s.len() {
            out.push_str(&format!("… ({} chars in all)", s.chars().count()));
        }
        out
    };
    (cut(a), cut(b))
}

/// A frame, as a mismatch names it.
fn frame_size(frame: &Frame) -> String {
    format!("a frame of {} records", frame.records().count())
}

/// A compact event's key as `service route` (raw bytes where it is not a key).
fn show_key(key: &[u8]) -> String {
    match crate::event::split_key(key) {
        Ok((service, route)) => format!("{service} {route}"),
        Err(_) => show_bytes(key),
    }
}

fn show_bytes(b: &[u8]) -> String {
    const MAX: usize = 120;
    let cut = &b[..b.len().min(MAX)];
    let mut s = format!("{:?}", String::from_utf8_lossy(cut));
    if b.len() > MAX {
        s.push_str(&format!(" … ({} bytes)", b.len()));
    }
    if std::str::from_utf8(cut).is_err() {
        s.push_str(&format!(" (bytes {cut:02x?})"));
    }
    s
}

type Replayed = Result<replay::Rebuilt, crate::seglog::ScanError>;

/// A rebuilt state in a line: its totals, and the events of `key` if one is named.
fn rebuilt_summary(r: &Replayed, key: Option<&(String, String)>) -> String {
    match r {
        Err(e) => format!("Err({e:?})"),
        Ok(r) => {
            let mut s = format!(
                "{} windows, {} duplicates, {} undecodable, {} torn bytes, {} keys, {} events",
                r.windows,
                r.duplicates,
                r.undecodable,
                r.torn_bytes,
                r.events.len(),
                r.events.values().sum::<u64>()
            );
            if let Some(k) = key {
                s.push_str(&format!("; {k:?}: {:?}", r.events.get(k)));
            }
            s
        }
    }
}

/// Both sides of a mismatch, naming the first (service, route) whose events differ.
fn rebuilt_difference(want: &Replayed, got: &Replayed) -> (String, String) {
    let key = match (want, got) {
        (Ok(w), Ok(g)) => w
            .events
            .iter()
            .find(|(k, n)| g.events.get(*k) != Some(*n))
            .map(|(k, _)| k)
            .or_else(|| g.events.keys().find(|k| !w.events.contains_key(*k))),
        _ => None,
    };
    (rebuilt_summary(want, key), rebuilt_summary(got, key))
}

/// The partitions lab 14's implementation `imp` gives the keys of `seed`, four partitions,
/// in the order of the keys (what `pipeline partition-lanes` prints for another process).
pub fn partition_lanes(imp: LabImpl, seed: u64) -> Vec<usize> {
    let keys = Run::new(seed).partition_keys();
    keys.iter().map(|k| partition::lane(imp, k, 4)).collect()
}

/// The same, computed by a second `pipeline` process; `None` when this process is not the
/// `pipeline` binary (a unit test), which has no `partition-lanes` to ask.
fn partition_lanes_elsewhere(imp: LabImpl, seed: u64) -> Option<Result<Vec<usize>, String>> {
    let exe = std::env::current_exe().ok()?;
    if exe.file_stem()? != "pipeline" {
        return None;
    }
    use std::process::{Command, Stdio};
    // Files, not pipes: what the checked code prints cannot fill a pipe and stall it.
    let base = std::env::temp_dir().join(format!(
        "observatory-partition-{}-{seed}",
        std::process::id()
    ));
    let (out_path, err_path) = (base.with_extension("out"), base.with_extension("err"));
    let files = std::fs::File::create(&out_path).and_then(|o| {
        let e = std::fs::File::create(&err_path)?;
        Ok((o, e))
    });
    let child = files.and_then(|(o, e)| {
        Command::new(&exe)
            .args(["partition-lanes", "--impl", &imp.to_string(), "--seed"])
            .arg(seed.to_string())
            .stdin(Stdio::null())
            .stdout(o)
            .stderr(e)
            .spawn()
    });
    let answer = match child {
        Err(e) => Err(format!("could not start a second process: {e}")),
        Ok(mut child) => {
            // Stopped here if it hangs: a kill of this process would leave it running.
            let started = std::time::Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(status)) if status.success() => {
                        let stdout = std::fs::read(&out_path).unwrap_or_default();
                        break serde_json::from_slice(&stdout).map_err(|e| {
                            format!("the second process printed no list of partitions: {e}")
                        });
                    }
                    Ok(Some(status)) => {
                        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
                        let last = stderr.trim().lines().last().unwrap_or("").to_string();
                        break Err(format!("the second process failed ({status}): {last}"));
                    }
                    Ok(None) if started.elapsed() < HANG => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Ok(None) | Err(_) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break Err(format!(
                            "the second process gave no answer within {} s",
                            HANG.as_secs()
                        ));
                    }
                }
            }
        }
    };
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    Some(answer)
}

impl Run {
    fn new(seed: u64) -> Run {
        Run {
            rng: Pcg64Mcg::seed_from_u64(seed),
            seed,
            cases: 0,
            mismatch: None,
        }
    }

    /// Lab 14's keys: the seed's (distinct, in the order first seen), then edge cases.
    fn partition_keys(&mut self) -> Vec<Vec<u8>> {
        let mut seen = std::collections::HashSet::new();
        let mut keys: Vec<Vec<u8>> = self
            .compact(3000)
            .iter()
            .filter_map(|ev| key_of(ev).ok().map(<[u8]>::to_vec))
            .filter(|k| seen.insert(k.clone()))
            .collect();
        keys.extend([Vec::new(), vec![0], vec![0xff; 300], b"\x01a\x01/".to_vec()]);
        for _ in 0..200 {
            let n = self.rng.random_range(0..40);
            keys.push((0..n).map(|_| self.rng.random::<u8>()).collect());
        }
        keys
    }

    fn compaction(&mut self, imp: LabImpl) {
        use crate::seglog::{MAGIC, segment_bytes};
        let events = self.compact(3000);
        let mut cases: Vec<(String, Vec<Vec<u8>>)> = vec![
            ("no layers".into(), Vec::new()),
            ("one empty layer".into(), vec![MAGIC.to_vec()]),
        ];
        for layers in [1, 2, 3, 5, 8] {
            for update in [0, 3, 10] {
                let n = self.rng.random_range(1..=events.len());
                let updated = match update {
                    0 => "none written again".to_string(),
                    u => format!("one in {u} written again later"),
                };
                cases.push((
                    format!("{layers} layer(s) of the windows of {n} events, {updated}"),
                    compaction::layers_of(&events[..n], layers, update),
                ));
            }
        }
        // Records that are not window results, between windows.
        let mut junk = compaction::layers_of(&events, 3, 4);
        let mut records = Vec::new();
        let _ = crate::seglog::scan_bytes(&junk[1], false, |r| records.push(r.to_vec()));
        records.insert(records.len() / 2, b"not a window".to_vec());
        records.push(Vec::new());
        junk[1] = segment_bytes(records.iter().map(Vec::as_slice));
        cases.push((
            "3 layers, the second with an empty and a junk record".into(),
            junk,
        ));
        // Damaged layers: a flipped byte, a torn last record, a bad magic.
        let whole = compaction::layers_of(&events, 3, 4);
        let mut flipped = whole.clone();
        let mid = flipped[1].len() / 2;
        flipped[1][mid] ^= 0x40;
        cases.push(("3 layers, a byte of the second flipped".into(), flipped));
        let mut torn = whole.clone();
        let cut = torn[2].len() - 3;
        torn[2].truncate(cut);
        cases.push(("3 layers, the last one's last record torn".into(), torn));
        let mut magic = whole;
        magic[0][0] = b'X';
        cases.push(("3 layers, the first with a bad magic".into(), magic));
        self.same_as_baseline(
            imp,
            cases,
            |imp, (_, layers)| {
                let layers: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
                segment_lines(&compaction::compact(imp, &layers)?)
            },
            |(name, layers)| {
                let sizes: Vec<usize> = layers.iter().map(Vec::len).collect();
                format!("{name} (layer sizes {sizes:?} bytes)")
            },
        );
    }

    fn reconcile(&mut self, imp: LabImpl) {
        use crate::seglog::{MAGIC, scan_bytes, segment_bytes};
        let events = self.compact(3000);
        let empty = MAGIC.to_vec();
        let mut cases: Vec<(String, Vec<u8>, Vec<u8>)> = vec![
            ("two empty replicas".into(), empty.clone(), empty.clone()),
            ("no bytes at all in A".into(), Vec::new(), empty.clone()),
        ];
        let (whole, _) = reconcile::replicas_of(&events, 0, 0);
        cases.push(("A empty, B whole".into(), empty.clone(), whole.clone()));
        cases.push(("A whole, B empty".into(), whole.clone(), empty.clone()));
        cases.push((
            "the same replica twice".into(),
            whole.clone(),
            whole.clone(),
        ));
        for missed in [0, 2, 3, 7] {
            for late in [0, 1, 4, 9] {
                let n = self.rng.random_range(1..=events.len());
                let (a, b) = reconcile::replicas_of(&events[..n], missed, late);
                let name = format!(
                    "the windows of {n} events, one in {missed} missed by a replica, one in {late} differing"
                );
                cases.push((format!("{name} (A, B)"), a.clone(), b.clone()));
                cases.push((format!("{name} (B, A)"), b, a));
            }
        }
        let records = |segment: &[u8]| {
            let mut out = Vec::new();
            let _ = scan_bytes(segment, false, |r| out.push(r.to_vec()));
            out
        };
        let (a, b) = reconcile::replicas_of(&events, 3, 4);
        // Records that are not window results, between windows.
        let mut junk = records(&b);
        junk.insert(junk.len() / 2, b"not a window".to_vec());
        junk.insert(1, Vec::new());
        let junk = segment_bytes(junk.iter().map(Vec::as_slice));
        cases.push(("B with an empty and a junk record".into(), a.clone(), junk));
        // Not compacted: two windows swapped, a window twice, the order of (start, key).
        let mut swapped = records(&a);
        let mid = swapped.len() / 2;
        swapped.swap(mid, mid + 1);
        let swapped = segment_bytes(swapped.iter().map(Vec::as_slice));
        cases.push((
            "A with two windows swapped".into(),
            swapped.clone(),
            b.clone(),
        ));
        cases.push(("B with two windows swapped".into(), a.clone(), swapped));
        let mut twice = records(&b);
        let last = twice[twice.len() - 1].clone();
        twice.push(last);
        let twice = segment_bytes(twice.iter().map(Vec::as_slice));
        cases.push(("B with its last window twice".into(), a.clone(), twice));
        let mut by_start = compaction::layers_of(&events, 1, 0);
        cases.push((
            "A in window order, not key order (a layer, not compacted)".into(),
            by_start.remove(0),
            b.clone(),
        ));
        // Damaged replicas: a flipped byte, a torn last record, a bad magic, both damaged.
        let mut flipped = a.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 0x40;
        cases.push(("A with a byte flipped".into(), flipped.clone(), b.clone()));
        let mut torn = b.clone();
        torn.truncate(torn.len() - 3);
        cases.push((
            "B with its last record torn".into(),
            a.clone(),
            torn.clone(),
        ));
        let mut magic = b.clone();
        magic[0] = b'X';
        cases.push(("B with a bad magic".into(), a.clone(), magic));
        cases.push(("A with a byte flipped, B torn".into(), flipped, torn));
        self.same_as_baseline(
            imp,
            cases,
            |imp, (_, a, b)| {
                let repair = reconcile::reconcile(imp, a, b)?;
                let lines = |segment: &[u8]| {
                    segment_lines(segment).unwrap_or_else(|e| vec![format!("not a segment: {e:?}")])
                };
                Ok::<_, reconcile::ReconcileError>((
                    lines(&repair.to_a)
                        .into_iter()
                        .map(|l| format!("to A: {l}"))
                        .collect::<Vec<_>>(),
                    lines(&repair.to_b)
                        .into_iter()
                        .map(|l| format!("to B: {l}"))
                        .collect::<Vec<_>>(),
                ))
            },
            |(name, a, b)| format!("{name} (replicas of {} and {} bytes)", a.len(), b.len()),
        );
    }

    fn partition(&mut self, imp: LabImpl) {
        let keys = self.partition_keys();
        let shown = |lanes: &[usize]| -> Vec<String> {
            keys.iter()
                .zip(lanes)
                .map(|(k, l)| format!("{} → {l}", show_key(k)))
                .collect()
        };
        for lanes in [1usize, 2, 3, 4, 7, 64] {
            let first = guarded(|| {
                keys.iter()
                    .map(|k| partition::lane(imp, k, lanes))
                    .collect::<Vec<_>>()
            });
            let out_of_range = first.clone().map(|got| {
                keys.iter()
                    .zip(&got)
                    .find(|(_, l)| **l >= lanes)
                    .map(|(k, l)| format!("{} → partition {l}", show_key(k)))
            });
            let input = || format!("{} keys, partitions 0 to {}", keys.len(), lanes - 1);
            if !self.case(input, &None, out_of_range) {
                return;
            }
            let Ok(first) = first else { return };
            let first: Vec<usize> = first;
            // The same keys again, last first: the same partition for each.
            let again = guarded(|| {
                let mut v: Vec<usize> = keys
                    .iter()
                    .rev()
                    .map(|k| partition::lane(imp, k, lanes))
                    .collect();
                v.reverse();
                shown(&v)
            });
            let input = || {
                format!(
                    "the same {} keys again, in reverse order, partitions 0 to {}",
                    keys.len(),
                    lanes - 1
                )
            };
            if !self.case(input, &shown(&first), again) {
                return;
            }
        }
        if let Some(elsewhere) = partition_lanes_elsewhere(imp, self.seed) {
            let here = shown(&partition_lanes(imp, self.seed));
            let input = || {
                format!(
                    "the same {} keys in a second process (a second parse replica), partitions 0 to 3",
                    keys.len()
                )
            };
            self.case(input, &here, elsewhere.map(|v| shown(&v)));
        }
    }

    /// Record one case; false once a mismatch is found (stop generating).
    fn case<T: PartialEq + Debug>(
        &mut self,
        input: impl FnOnce() -> String,
        expected: &T,
        got: Result<T, String>,
    ) -> bool {
        if self.mismatch.is_some() {
            return false;
        }
        let case = self.cases;
        self.cases += 1;
        let got = match got {
            Ok(g) if &g == expected => return true,
            Ok(g) => format!("{g:?}"),
            Err(panic) => panic,
        };
        let (expected, got) = around_first_difference(&format!("{expected:?}"), &got);
        self.mismatch = Some(Mismatch {
            case,
            input: input(),
            expected,
            got,
        });
        false
    }

    /// The same result as the baseline on every input (`f` calls the implementation it is
    /// given); stops at the first mismatch.
    fn same_as_baseline<I, T: PartialEq + Debug>(
        &mut self,
        imp: LabImpl,
        inputs: impl IntoIterator<Item = I>,
        f: impl Fn(LabImpl, &I) -> T,
        show: impl Fn(&I) -> String,
    ) {
        for input in inputs {
            let want = f(LabImpl::Baseline, &input);
            let got = guarded(|| f(imp, &input));
            if !self.case(|| show(&input), &want, got) {
                return;
            }
        }
    }

    /// Source records of this seed (valid ones, and malformed ones at `malformed_rate`).
    fn records(&self, n: u64, malformed_rate: f64) -> Vec<Vec<u8>> {
        let knobs = SourceKnobs {
            seed: self.seed,
            events: n,
            malformed_rate,
            services: 20,
            routes: 20,
            ..SourceKnobs::default()
        };
        let mut g = Generator::new(&knobs);
        (0..n)
            .map(|_| {
                let mut rec = Vec::new();
                g.next_into(&mut rec);
                rec
            })
            .collect()
    }

    /// Compact events of this seed's valid records.
    fn compact(&self, n: u64) -> Vec<Vec<u8>> {
        self.records(n, 0.0)
            .iter()
            .filter_map(|rec| {
                let mut out = Vec::new();
                parse_into(ParseMode::Owned, rec, &mut out).ok()?;
                Some(out)
            })
            .collect()
    }

    fn hotspot(&mut self, imp: LabImpl) {
        let mut keys: Vec<Vec<u8>> = [
            &b"checkout\x00/api/v1/orders/42"[..],
            b"search\x00/api/v2/search",
            b"web\x00/static/app.js",
            b"web\x00/",
            b"x\x00nothing",
            b"",
            b"a\x00/api/v1/userz",
            b"a\x00/api/v3/users",
            b"a\x00xx/rpcxx",
        ]
        .iter()
        .map(|k| k.to_vec())
        .collect();
        for ev in self.compact(3000) {
            if let Ok(k) = key_of(&ev) {
                keys.push(k.to_vec());
            }
        }
        // Keys built from pieces of the prefixes: near misses, several prefixes in one key.
        const PIECES: [&str; 12] = [
            "/api", "/v1", "/v2", "/users", "/orders", "/health", "/static", "/x", "z", "/", "",
            "\0",
        ];
        for _ in 0..2000 {
            let n = self.rng.random_range(0..5);
            let key: String = (0..n)
                .map(|_| PIECES[self.rng.random_range(0..PIECES.len())])
                .collect();
            keys.push(key.into_bytes());
        }
        self.same_as_baseline(
            imp,
            keys,
            |imp, key| hotspot::route_class(imp, key),
            |key| show_bytes(key),
        );
    }

    /// Frames of this seed's events: one empty, then runs of 1 to 299 events with an
    /// undecodable record among them now and then.
    fn frames(&mut self) -> Vec<Frame> {
        let events = self.compact(4000);
        let mut frames: Vec<Frame> = vec![OutFrame::data(64).into_frame(1, 0)];
        let mut at = 0;
        while at < events.len() {
            let n = self.rng.random_range(1..300).min(events.len() - at);
            let mut f = OutFrame::data(64 * 1024);
            for ev in &events[at..at + n] {
                f.push(ev);
                if self.rng.random_ratio(1, 50) {
                    f.push(b"\x01undecodable");
                }
            }
            at += n;
            frames.push(f.into_frame(1, frames.len() as u64));
        }
        frames
    }

    fn iterators(&mut self, imp: LabImpl) {
        let frames = self.frames();
        self.same_as_baseline(imp, frames, iterators::summarize, |frame| {
            let decodable = frame
                .records()
                .filter(|r| EventRef::decode(r).is_ok())
                .count();
            format!(
                "a frame of {} records ({decodable} decodable)",
                frame.records().count()
            )
        });
    }

    fn threads(&mut self, imp: LabImpl) {
        // The seed's frames (the empty one included), and frames of 1, 2 and 3 records.
        let mut frames = self.frames();
        for n in 1..=3u8 {
            let mut f = OutFrame::data(64);
            for i in 0..n {
                f.push(&[i, n, 7]);
            }
            frames.push(f.into_frame(1, 0));
        }
        self.same_as_baseline(imp, frames, threads::digest, frame_size);
    }

    fn recall(&mut self, imp: LabImpl) {
        // The seed's frames (hot and repeated keys: its Zipf mix), and the status edges.
        let mut frames = self.frames();
        let mut f = OutFrame::data(1024);
        for status in [100u16, 399, 400, 499, 500, 599] {
            let mut rec = Vec::new();
            crate::event::encode_event(
                &mut rec,
                "a",
                "/b",
                crate::event::Method::Get,
                status,
                1,
                0,
                1,
            );
            f.push(&rec);
        }
        frames.push(f.into_frame(1, 0));
        self.same_as_baseline(imp, frames, recall::tally, frame_size);
    }

    fn zerocopy(&mut self, imp: LabImpl) {
        let mut records: Vec<Vec<u8>> = [
            &br#"{"ts":5,"service":"api","route":"/a","method":"GET","status":200,"latency_us":10,"bytes":3}"#[..],
            br#"{"ts":6,"service":"a\"pi","route":"/a","method":"GET","status":200,"latency_us":10,"bytes":3}"#,
            br#"{"ts":7,"service":"api","route":"/\u00e9t\u00e9","method":"GET","status":200,"latency_us":1,"bytes":0}"#,
            br#"{"ts":8,"service":"api","route":"\/a","method":"G\u0045T","status":200,"latency_us":1,"bytes":0,"region":"eu\\1","user_agent":"\"x\""}"#,
            br#"{"ts":9,"service":"api","route":"/a","method":"GET","status":200,"latency_us":1}"#,
            br#"{"ts":9,"service":7,"route":"/a","method":"GET","status":200,"latency_us":1,"bytes":0}"#,
            b"not json",
            b"",
            b"\xff",
        ]
        .iter()
        .map(|r| r.to_vec())
        .collect();
        // Generated records, a third of them with an escape put into one of their strings.
        const ESCAPES: [&str; 5] = ["\\\"", "\\\\", "\\/", "\\u00e9", "\\n"];
        for rec in self.records(3000, 0.1) {
            let starts: Vec<usize> = rec
                .windows(3)
                .enumerate()
                .filter(|(_, w)| *w == b"\":\"")
                .map(|(i, _)| i + 3)
                .collect();
            if !starts.is_empty() && self.rng.random_ratio(1, 3) {
                let at = starts[self.rng.random_range(0..starts.len())];
                let esc = ESCAPES[self.rng.random_range(0..ESCAPES.len())];
                let mut r = rec[..at].to_vec();
                r.extend_from_slice(esc.as_bytes());
                r.extend_from_slice(&rec[at..]);
                records.push(r);
            } else {
                records.push(rec);
            }
        }
        for rec in records {
            let run = |owned: bool| {
                let mut out = Vec::new();
                let r = if owned {
                    crate::json::parse_into(ParseMode::Owned, &rec, &mut out)
                } else {
                    zerocopy::parse_into(imp, &rec, &mut out)
                };
                r.map(|ts| (ts, out))
            };
            let want = run(true);
            let got = guarded(|| run(false));
            if !self.case(|| show_bytes(&rec), &want, got) {
                return;
            }
        }
    }

    fn percentile(&mut self, imp: LabImpl) {
        let mut inputs: Vec<Vec<u32>> = [0usize, 1, 2, 3, 99, 100, 101, 199, 200, 201, 4096]
            .iter()
            .map(|&n| (0..n as u32).rev().collect())
            .collect();
        inputs.push(vec![7; 100]);
        inputs.push(vec![u32::MAX, 0, u32::MAX]);
        for _ in 0..300 {
            let n = self.rng.random_range(0..5000);
            let spread = if self.rng.random_bool(0.3) {
                10
            } else {
                u32::MAX
            };
            inputs.push((0..n).map(|_| self.rng.random_range(0..spread)).collect());
        }
        for input in inputs {
            let want = percentile::p99(LabImpl::Baseline, &mut input.clone());
            let mut mine = input.clone();
            let got = guarded(|| percentile::p99(imp, &mut mine));
            let show = || {
                let head: Vec<u32> = input.iter().take(8).copied().collect();
                format!("{} values, starting {head:?}", input.len())
            };
            if !self.case(show, &want, got) {
                return;
            }
        }
    }

    fn errors(&mut self, imp: LabImpl) {
        let mut records: Vec<Vec<u8>> = vec![
            b"{\"a\":1}".to_vec(),
            Vec::new(),
            b"ab\xffcd".to_vec(),
            b"\xff".to_vec(),
            b"\xc3\x28".to_vec(),
            " ".as_bytes().to_vec(),
            "\u{e9}t\u{e9}".as_bytes().to_vec(),
        ];
        records.extend(self.records(3000, 0.3));
        for _ in 0..500 {
            let n = self.rng.random_range(0..40);
            let mut r = vec![0u8; n];
            self.rng.fill_bytes(&mut r);
            records.push(r);
        }
        for rec in records {
            let want = match std::str::from_utf8(&rec) {
                Err(e) => Err(errors::PrecheckError::NotUtf8 {
                    valid_up_to: e.valid_up_to(),
                }),
                Ok("") => Err(errors::PrecheckError::Empty),
                Ok(_) => Ok(()),
            };
            let got = guarded(|| errors::precheck(imp, &rec));
            if !self.case(|| show_bytes(&rec), &want, got) {
                return;
            }
        }
    }

    fn leak(&mut self, imp: LabImpl) {
        // Records unique to this seed, so what an earlier call remembered does not count.
        let tag = self.rng.next_u64();
        let mut history: Vec<Vec<u8>> = Vec::new();
        for i in 0..20_000u64 {
            let repeat = !history.is_empty() && self.rng.random_bool(0.3);
            let (rec, want) = if repeat {
                let back = self.rng.random_range(1..=LEAK_RECENT.min(history.len()));
                (history[history.len() - back].clone(), true)
            } else {
                (format!("conformance-{tag:016x}-{i}").into_bytes(), false)
            };
            let got = guarded(|| leak::remember(imp, &rec));
            let show = || {
                if want {
                    format!(
                        "{} (seen among the last {LEAK_RECENT} records)",
                        show_bytes(&rec)
                    )
                } else {
                    format!("{} (never seen before)", show_bytes(&rec))
                }
            };
            if !self.case(show, &want, got) {
                return;
            }
            history.push(rec);
        }
    }

    fn deadlock(&mut self, imp: LabImpl) {
        let totals = || {
            let b = deadlock::book();
            (b.closes, b.windows)
        };
        let before = totals();
        let calls: Vec<usize> = (0..200)
            .map(|_| match self.rng.random_range(0..4) {
                0 => 0,
                _ => self.rng.random_range(1..50),
            })
            .collect();
        for &windows in &calls {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(guarded(|| deadlock::on_close(imp, windows)));
            });
            let got = match rx.recv_timeout(HANG) {
                Ok(r) => r,
                // The thread stays stuck; the process ends after the report.
                Err(_) => Err(format!(
                    "did not return within {} s (a deadlock?)",
                    HANG.as_secs()
                )),
            };
            if !self.case(|| format!("on_close({windows})"), &(), got) {
                return;
            }
        }
        let after = totals();
        let want = (calls.len() as u64, calls.iter().sum::<usize>() as u64);
        let got = (after.0 - before.0, after.1 - before.1);
        self.case(
            || {
                format!(
                    "{} closes of {} windows in all, booked as (closes, windows)",
                    want.0, want.1
                )
            },
            &want,
            Ok(got),
        );
    }

    /// A runtime like a stage's (two workers, timers); `None` (and a failed case) without one.
    fn runtime(&mut self) -> Option<tokio::runtime::Runtime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build();
        if rt.is_err() {
            self.case(
                || "starting a runtime".into(),
                &(),
                Err("no runtime".into()),
            );
        }
        rt.ok()
    }

    fn fanout(&mut self, imp: LabImpl) {
        let Some(rt) = self.runtime() else { return };
        let mut lists: Vec<Vec<u64>> = vec![vec![], vec![7], vec![2, 1], vec![5, 5, 5]];
        for _ in 0..24 {
            let n = self.rng.random_range(2..40);
            lists.push((0..n).map(|_| self.rng.next_u64()).collect());
        }
        for keys in lists {
            let want: Vec<u64> = keys.iter().map(|&k| fanout::answer(k)).collect();
            let want = (want, keys.len() as u64);
            let before = fanout::requests();
            let call = fanout::enrich(imp, keys.clone());
            let got = guarded(|| rt.block_on(async { tokio::time::timeout(HANG, call).await }))
                .and_then(|r| r.map_err(|_| format!("did not finish within {} s", HANG.as_secs())))
                .map(|answers| (answers, fanout::requests() - before));
            let show = || {
                let head: Vec<u64> = keys.iter().take(4).copied().collect();
                format!(
                    "{} keys, starting {head:?}: (answers in the order of the keys, requests made)",
                    keys.len()
                )
            };
            if !self.case(show, &want, got) {
                return;
            }
        }
    }

    fn arena(&mut self, imp: LabImpl) {
        // The seed's frames (hot keys repeated: its Zipf mix), and names that sort close.
        let mut frames = self.frames();
        let mut f = OutFrame::data(1024);
        use crate::event::{Method, encode_event};
        for (service, route, method) in [
            ("a", "/b", Method::Get),
            ("a", "/b/c", Method::Get),
            ("a", "/b", Method::Get),
            ("a.b", "/c", Method::Delete),
            ("a", "/b.c", Method::Delete),
            ("a", "//b//", Method::Options),
            ("a", "/", Method::Head),
            ("é", "/ü/x", Method::Patch),
        ] {
            let mut rec = Vec::new();
            encode_event(&mut rec, service, route, method, 200, 1, 0, 1);
            f.push(&rec);
        }
        f.push(b"\x01undecodable");
        frames.push(f.into_frame(1, 0));
        self.same_as_baseline(imp, frames, arena::names, frame_size);
    }

    fn contention(&mut self, imp: LabImpl) {
        // Sorted by key, one readable line per key (a mismatch shows the first that differs).
        let sorted = |mut v: Vec<(Vec<u8>, contention::Totals)>| -> Vec<String> {
            v.sort();
            v.iter()
                .map(|(key, t)| {
                    format!(
                        "{}: {} events, {} µs, {} bytes",
                        show_key(key),
                        t.events,
                        t.latency_us,
                        t.bytes
                    )
                })
                .collect()
        };
        let frames = self.frames();
        let records = |n: usize| -> usize { frames[..n].iter().map(|f| f.records().count()).sum() };
        // One thread: after every frame, the totals so far.
        let (want, got) = (
            contention::key_totals(LabImpl::Baseline),
            contention::key_totals(imp),
        );
        for (i, frame) in frames.iter().enumerate() {
            want.add(frame);
            let expected = sorted(want.snapshot());
            let result = guarded(|| {
                got.add(frame);
                sorted(got.snapshot())
            });
            let input = || {
                format!(
                    "one thread, after adding frames 1 to {} of the seed's ({} records)",
                    i + 1,
                    records(i + 1)
                )
            };
            if !self.case(input, &expected, result) {
                return;
            }
        }
        // Several threads at once, each adding every frame (from its own starting frame), a
        // few times over: updates must not be lost, nor counted twice, under contention.
        const ROUNDS: usize = 20;
        let want = contention::key_totals(LabImpl::Baseline);
        for _ in 0..CONTENTION_THREADS * ROUNDS {
            for frame in &frames {
                want.add(frame);
            }
        }
        let expected = sorted(want.snapshot());
        for attempt in 0..3 {
            let result = guarded(|| {
                let totals = contention::key_totals(imp);
                std::thread::scope(|s| {
                    for t in 0..CONTENTION_THREADS {
                        let (totals, frames) = (&totals, &frames);
                        s.spawn(move || {
                            for _ in 0..ROUNDS {
                                for i in 0..frames.len() {
                                    totals.add(&frames[(i + t * 7) % frames.len()]);
                                }
                            }
                        });
                    }
                });
                sorted(totals.snapshot())
            });
            let input = || {
                format!(
                    "{CONTENTION_THREADS} threads at once (attempt {}), each adding the seed's {} frames ({} records) {ROUNDS} times",
                    attempt + 1,
                    frames.len(),
                    records(frames.len())
                )
            };
            if !self.case(input, &expected, result) {
                return;
            }
        }
    }

    fn context(&mut self, imp: LabImpl) {
        let mut records: Vec<Vec<u8>> = [
            &b""[..],
            b"{}",
            b"ab\xffcd",
            br#"{"status":200,"latency_us":12,"bytes":34}"#,
            br#"{"status": 204 ,"latency_us":1,"bytes":0}"#,
            br#"{"user_agent":"status","latency_us":1,"bytes":0}"#,
            br#"{"status":100,"latency_us":1,"bytes":0}"#,
            br#"{"status":599,"latency_us":1,"bytes":0}"#,
            br#"{"status":99,"latency_us":1,"bytes":0}"#,
            br#"{"status":600,"latency_us":1,"bytes":0}"#,
            br#"{"status":0}"#,
            br#"{"status":65536,"latency_us":1,"bytes":0}"#,
            br#"{"status":"200","latency_us":1,"bytes":0}"#,
            br#"{"status":-5,"latency_us":1,"bytes":0}"#,
            br#"{"status":,"latency_us":1}"#,
            br#"{"status":200}"#,
            br#"{"status":200,"latency_us":18446744073709551616,"bytes":0}"#,
            br#"{"status":200,"latency_us":7,"bytes":1.5}"#,
            br#"{"status":200,"latency_us":7}"#,
            br#"{"status":200,"latency_us":7,"bytes":"#,
        ]
        .iter()
        .map(|r| r.to_vec())
        .collect();
        records.extend(self.records(3000, 0.2));
        self.same_as_baseline(
            imp,
            records,
            |imp, rec| context::validate(imp, rec, true),
            |rec| {
                format!(
                    "the record {}: (reading, or (reason, message))",
                    show_bytes(rec)
                )
            },
        );
    }

    fn batcher(&mut self, imp: LabImpl) {
        use batcher::{Ended, Feed, Finished, Frames, MAX_BATCH, MAX_HELD, MAX_WAIT};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::mpsc;
        type Sent = Vec<Vec<Vec<u8>>>;
        // Distinct records of varied lengths, so a lost, repeated or reordered one shows.
        let seed = self.seed;
        let record = move |i: usize| {
            let mut r = format!("{seed:x}-{i}-").into_bytes();
            r.resize(r.len() + i % 37, b'x');
            r
        };
        // Whether `frames` carry exactly `want`, in order, in frames of 1..=MAX_BATCH.
        let judge = |want: &[Vec<u8>], frames: &Sent| -> Result<(), String> {
            if let Some(f) = frames.iter().find(|f| f.is_empty() || f.len() > MAX_BATCH) {
                return Err(format!(
                    "a frame of {} records (a frame carries 1 to {MAX_BATCH})",
                    f.len()
                ));
            }
            let got: Vec<&Vec<u8>> = frames.iter().flatten().collect();
            if let Some(i) = (0..want.len().min(got.len())).find(|&i| &want[i] != got[i]) {
                return Err(format!(
                    "record {i} was {} where {} was fed",
                    show_bytes(got[i]),
                    show_bytes(&want[i])
                ));
            }
            if got.len() != want.len() {
                return Err(format!("{} of {} records delivered", got.len(), want.len()));
            }
            Ok(())
        };
        let ended = |finished: &Finished| match finished.wait(HANG) {
            Ended::Done { panicked: false } => Ok(()),
            Ended::Done { panicked: true } => Err("the batching thread panicked".to_string()),
            Ended::StillRunning => Err(format!(
                "still holding its frames {} s after the last record (the pipe never finished)",
                HANG.as_secs()
            )),
        };
        let push = |feed: &mut Feed, i: usize, r: Vec<u8>| match guarded(|| feed.push(r)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "the feed refused record {i} (`false`: closed) while the network was there"
            )),
            Err(panic) => Err(format!("the feed {panic}")),
        };
        // A pipe whose frames go to a channel (`gate`: the network takes nothing until the
        // gate's sender goes).
        let start = |gate: Option<mpsc::Receiver<()>>| {
            let (tx, rx) = mpsc::channel::<Vec<Vec<u8>>>();
            let mut gate = gate;
            let (frames, finished) = Frames::new(move |f| {
                if let Some(g) = gate.take() {
                    let _ = g.recv();
                }
                tx.send(f).is_ok()
            });
            guarded(move || batcher::start(imp, frames)).map(|feed| (feed, finished, rx))
        };

        // 1. Everything, once, in order; and the pipe finishes after the last record.
        let mut sizes = vec![0, 1, 5, MAX_BATCH - 1, MAX_BATCH, MAX_BATCH + 1, 20_000];
        for _ in 0..6 {
            sizes.push(self.rng.random_range(2..5000));
        }
        for n in sizes {
            let got = start(None).and_then(|(mut feed, finished, rx)| {
                let want: Vec<Vec<u8>> = (0..n).map(record).collect();
                for (i, r) in want.iter().enumerate() {
                    push(&mut feed, i, r.clone())?;
                }
                drop(feed);
                ended(&finished)?;
                judge(&want, &rx.try_iter().collect())
            });
            let show = || {
                format!(
                    "{n} records fed as fast as the network takes them, then the end of the stream"
                )
            };
            let want = "every record delivered once, in order, then the pipe finished";
            if !self.case(show, &want, got.map(|()| want)) {
                return;
            }
        }

        // 2. A record with nothing after it does not wait for a frame to fill.
        let wait = 3 * MAX_WAIT; // three times the bound: a loaded machine is slow
        let got = start(None).and_then(|(mut feed, finished, rx)| {
            let want: Vec<Vec<u8>> = (0..3).map(record).collect();
            for (i, r) in want.iter().enumerate() {
                push(&mut feed, i, r.clone())?;
            }
            let deadline = std::time::Instant::now() + wait;
            let mut frames = Vec::new();
            while frames.iter().map(Vec::len).sum::<usize>() < want.len() {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(f) => frames.push(f),
                    Err(_) => break,
                }
            }
            let sent = frames.iter().map(Vec::len).sum::<usize>();
            drop(feed);
            let _ = ended(&finished);
            if sent < want.len() {
                return Err(format!(
                    "{sent} of 3 sent after {} ms: a partial frame waited for records that may never come",
                    wait.as_millis()
                ));
            }
            judge(&want, &frames)
        });
        let show = || format!("3 records, then nothing for {} ms", wait.as_millis());
        let want = "all 3 sent";
        if !self.case(show, &want, got.map(|()| want)) {
            return;
        }

        // 3. Backpressure: while the network takes nothing, the feed blocks before the pipe
        // holds more than MAX_HELD records; once the network is back, everything arrives.
        let (release, gate) = mpsc::channel::<()>();
        let got = start(Some(gate)).and_then(|(mut feed, finished, rx)| {
            let accepted = Arc::new(AtomicUsize::new(0));
            let count = accepted.clone();
            let (done_tx, done) = mpsc::channel();
            std::thread::spawn(move || {
                let mut result = Ok(());
                for i in 0..=MAX_HELD {
                    result = push(&mut feed, i, record(i));
                    if result.is_err() {
                        break;
                    }
                    count.store(i + 1, Ordering::Relaxed);
                }
                drop(feed);
                let _ = done_tx.send(result);
            });
            // Until the feeder blocks (no progress for 100 ms) or has fed past the bound.
            let (mut last, mut still) = (usize::MAX, 0);
            for _ in 0..100 {
                std::thread::sleep(Duration::from_millis(20));
                let now = accepted.load(Ordering::Relaxed);
                still = if now == last { still + 1 } else { 0 };
                last = now;
                if still == 5 || now > MAX_HELD {
                    break;
                }
            }
            let held = accepted.load(Ordering::Relaxed);
            drop(release);
            let fed = done.recv_timeout(HANG);
            if held > MAX_HELD {
                let _ = ended(&finished);
                return Err(format!(
                    "{held} records accepted while the network took none, more than the {MAX_HELD} a pipe may hold: nothing pushes back in time, so under a slow sink the source's memory grows with its backlog"
                ));
            }
            match fed {
                Ok(result) => result?,
                Err(_) => {
                    return Err(format!(
                        "the feed still blocked {} s after the network came back",
                        HANG.as_secs()
                    ));
                }
            }
            ended(&finished)?;
            let want: Vec<Vec<u8>> = (0..=MAX_HELD).map(record).collect();
            judge(&want, &rx.try_iter().collect())
        });
        let show = || {
            format!(
                "{} records fed while the network takes none (at most {MAX_HELD} may be held), then the network back",
                MAX_HELD + 1
            )
        };
        let want = "the feed blocked, then every record arrived in order";
        self.case(show, &want, got.map(|()| want));
    }

    fn replay(&mut self, imp: LabImpl) {
        use crate::seglog::{MAGIC, segment_bytes};
        let events = self.compact(4000);
        let mut cases: Vec<(String, Vec<u8>)> = vec![
            ("no bytes".into(), Vec::new()),
            ("only the magic".into(), MAGIC.to_vec()),
            ("half the magic (torn)".into(), MAGIC[..4].to_vec()),
            ("a bad magic".into(), b"NOTALOG\n".to_vec()),
            (
                "one record that is not a window result".into(),
                segment_bytes([&b"garbage"[..]]),
            ),
        ];
        for i in 0..40 {
            let n = self.rng.random_range(1..events.len());
            let from = self.rng.random_range(0..events.len() - n + 1);
            let resend = [0, 1, 2, 3, 5, 10][i % 6];
            let seg = super::replay::segment_of(&events[from..from + n], resend);
            let what = format!("a segment of {n} events' windows, resending every {resend}");
            match i % 5 {
                // A crash tore the last record: cut it anywhere.
                1 if seg.len() > 9 => {
                    let cut = self.rng.random_range(1..60.min(seg.len() - 8));
                    cases.push((
                        format!("{what}, the last {cut} bytes torn off"),
                        seg[..seg.len() - cut].to_vec(),
                    ));
                }
                // Damage before the last record: corruption, an error.
                2 if seg.len() > 400 => {
                    let at = self.rng.random_range(8..seg.len() - 300);
                    let mut bad = seg.clone();
                    bad[at] ^= 0x20;
                    cases.push((format!("{what}, byte {at} flipped"), bad));
                }
                // A record whose checksum holds but is not a window result, amid windows.
                3 => {
                    let mut recs = Vec::new();
                    let _ = crate::seglog::scan_bytes(&seg, true, |r| recs.push(r.to_vec()));
                    let at = self.rng.random_range(0..=recs.len());
                    recs.insert(at, b"\x05hello".to_vec());
                    cases.push((
                        format!("{what}, with a record that is not a window result at {at}"),
                        segment_bytes(recs.iter().map(Vec::as_slice)),
                    ));
                }
                _ => cases.push((what, seg)),
            }
        }
        for (what, seg) in cases {
            let want = replay::replay(LabImpl::Baseline, &seg);
            let got = guarded(|| replay::replay(imp, &seg));
            // The rebuilt state is large: a mismatch shows its totals and the first key that
            // differs, not every key.
            let (expected, got) = match got {
                Ok(got) if got == want => (String::new(), Ok(String::new())),
                Ok(got) => {
                    let (e, g) = rebuilt_difference(&want, &got);
                    (e, Ok(g))
                }
                Err(panic) => (rebuilt_summary(&want, None), Err(panic)),
            };
            if !self.case(|| what.clone(), &expected, got) {
                return;
            }
        }
    }

    fn fsync(&mut self, imp: LabImpl) {
        use fsync::{MAX_AGE, MAX_BATCHES, Unsynced};
        let ms = |n: u64| Duration::from_millis(n);
        let mut cases: Vec<Unsynced> = Vec::new();
        // The edges of the bound, with and without a queue.
        for batches in [
            1,
            2,
            MAX_BATCHES - 1,
            MAX_BATCHES,
            MAX_BATCHES + 1,
            u32::MAX,
        ] {
            for oldest in [
                Duration::ZERO,
                ms(1),
                MAX_AGE - Duration::from_nanos(1),
                MAX_AGE,
                MAX_AGE + Duration::from_nanos(1),
                ms(10_000),
            ] {
                for queued in [0, 1, 1000] {
                    cases.push(Unsynced {
                        batches,
                        oldest,
                        queued,
                    });
                }
            }
        }
        for _ in 0..2000 {
            cases.push(Unsynced {
                batches: self.rng.random_range(1..2 * MAX_BATCHES),
                oldest: Duration::from_micros(
                    self.rng.random_range(0..2 * MAX_AGE.as_micros() as u64),
                ),
                queued: self.rng.random_range(0..64),
            });
        }
        for u in cases {
            let got = guarded(|| fsync::should_sync(imp, &u));
            let show = || {
                format!(
                    "{u:?}: must it sync? (the bound: oldest < {MAX_AGE:?} and batches < {MAX_BATCHES})"
                )
            };
            let ok = if u.must_sync() {
                self.case(show, &true, got)
            } else {
                // Free to choose; only a panic is wrong.
                self.case(show, &(), got.map(|_| ()))
            };
            if !ok {
                return;
            }
        }
    }

    fn blocking(&mut self, imp: LabImpl) {
        let Some(rt) = self.runtime() else { return };
        for i in 0..16 {
            let before = blocking::lookups();
            let got = guarded(|| rt.block_on(blocking::lookup(imp)));
            let made = blocking::lookups() - before;
            let got = got.map(|v| (v, made));
            if !self.case(
                || format!("lookup number {i}: (answer, calls of blocking_lookup)"),
                &(1, 1),
                got,
            ) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slots without process-wide state (the others are checked through the binary, in
    /// `tests/conformance.rs`: tests in one process share the statics).
    #[test]
    fn the_baseline_conforms_where_it_is_correct_and_the_reference_everywhere() {
        for slot in ["hotspot", "iterators", "percentile", "errors"] {
            let seed = 7;
            if crate::slots::HAS_REFERENCE {
                let r = check(slot, LabImpl::Reference, seed).unwrap();
                assert!(r.conforms(), "{slot}: {:?}", r.mismatch);
                assert!(r.cases >= 16, "{slot}: {} cases", r.cases);
            }
            if slot != "errors" {
                let b = check(slot, LabImpl::Baseline, seed).unwrap();
                assert!(b.conforms(), "{slot}: {:?}", b.mismatch);
            }
        }
        let e = check("errors", LabImpl::Baseline, 1).unwrap();
        assert!(e.mismatch.unwrap().got.starts_with("panicked"));
    }

    #[test]
    fn a_long_mismatch_is_shown_where_it_differs() {
        let a = format!("[{}1, 2]", "0, ".repeat(500));
        let b = format!("[{}1, 3]", "0, ".repeat(500));
        let (x, y) = around_first_difference(&a, &b);
        assert!(x.starts_with('…') && x.ends_with("1, 2]"), "{x}");
        assert!(y.starts_with('…') && y.ends_with("1, 3]"), "{y}");
        assert!(x.len() < 100, "{x}");
        let (x, y) = around_first_difference("short", "shirt");
        assert_eq!((x.as_str(), y.as_str()), ("short", "shirt"));
        let long = "é".repeat(400);
        let (x, _) = around_first_difference(&long, &format!("{long}x"));
        assert!(x.contains("chars in all") || x.ends_with('é'), "{x}");
    }

    #[test]
    fn cases_depend_on_the_seed() {
        let a = Run {
            rng: Pcg64Mcg::seed_from_u64(1),
            seed: 1,
            cases: 0,
            mismatch: None,
        };
        let b = Run {
            rng: Pcg64Mcg::seed_from_u64(2),
            seed: 2,
            cases: 0,
            mismatch: None,
        };
        assert_ne!(a.records(5, 0.0), b.records(5, 0.0));
        assert!(check("nope", LabImpl::Student, 1).is_err());
        // A mutant the slot's lab does not have, or any mutant in a binary without them, is
        // refused before anything runs (a panic would count as a wrong answer).
        for n in [0, hotspot::MUTANTS + 1] {
            let e = check("hotspot", LabImpl::Mutant(n), 1).unwrap_err();
            let want = if super::super::HAS_MUTANTS {
                "no mutant"
            } else {
                "without the labs' mutants"
            };
            assert!(e.to_string().contains(want), "{e}");
        }
        if !super::super::HAS_MUTANTS {
            let e = check("hotspot", LabImpl::Mutant(1), 1).unwrap_err();
            assert!(e.to_string().contains("lab-mutants"), "{e}");
        }
        assert_eq!(SLOTS.len(), SPECS.len());
        assert!(SLOTS.iter().all(|s| !s.is_empty()));
    }
}
