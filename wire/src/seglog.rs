//! The sink's append-only segment log (WAL-style).
//!
//! A log is a directory of segment files `00000000000000000000.seg`, `…01.seg`, … Each starts
//! with the 8-byte magic `OBSLOG1\n`, then records: `len u32 LE | crc32 u32 LE | payload`, the
//! CRC (crc32fast, IEEE) covering the payload. A segment is rolled once it passes the size
//! knob. A crash can leave the last record of the last segment torn (short, or failing its
//! CRC); readers tolerate exactly that and report it. Damage anywhere else is corruption.
//! Opening a log for writing truncates a torn tail and continues in a new segment.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

pub const MAGIC: &[u8; 8] = b"OBSLOG1\n";
const RECORD_HEADER: usize = 8;
/// Largest record accepted when reading (a window result is ~150 bytes).
pub const MAX_RECORD: usize = 16 << 20;

/// An I/O error as people read it: "No such file or directory", without "(os error 2)".
pub fn os_message(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

#[derive(Debug, Error)]
pub enum LogError {
    /// The I/O error is part of the message (not a separate `source`), so a chain printed
    /// with `{:#}` says it once.
    #[error("{path}: {}", os_message(error))]
    Io { path: PathBuf, error: io::Error },
    #[error("{path}: not a segment file (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("{path}: corrupt record at byte {offset}: {what}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: &'static str,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |error| LogError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn segment_name(index: u64) -> String {
    format!("{index:020}.seg")
}

/// Segment files of a log directory, in order.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
            continue;
        };
        if let Ok(index) = stem.parse::<u64>() {
            out.push((index, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// What reading one segment found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    pub records: u64,
    /// Bytes of whole, valid records plus the magic.
    pub valid_bytes: u64,
    /// Bytes after the last valid record (a torn tail), if any.
    pub torn_bytes: u64,
}

/// Read every record of one segment, calling `f` with each payload. A bad record followed by
/// nothing else is a torn tail when `last` is set; anything else is corruption.
pub fn scan_segment(
    path: &Path,
    last: bool,
    f: impl FnMut(&[u8]),
) -> Result<SegmentScan, LogError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut data))
        .map_err(io_err(path))?;
    scan_bytes(&data, last, f).map_err(|e| match e {
        ScanError::BadMagic => LogError::BadMagic {
            path: path.to_path_buf(),
        },
        ScanError::Corrupt { offset, what } => LogError::Corrupt {
            path: path.to_path_buf(),
            offset,
            what,
        },
    })
}

/// The 8 bytes before a record's payload: its length and its CRC.
fn record_header(len: u32, payload: &[u8]) -> [u8; RECORD_HEADER] {
    let mut h = [0u8; RECORD_HEADER];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    h
}

/// A whole segment's bytes holding `records` (what [`SegmentLog`] would write): seeds and
/// tests of the reader. Records over [`MAX_RECORD`] are left out.
pub fn segment_bytes<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for r in records {
        let Some(len) = u32::try_from(r.len())
            .ok()
            .filter(|_| r.len() <= MAX_RECORD)
        else {
            continue;
        };
        out.extend_from_slice(&record_header(len, r));
        out.extend_from_slice(r);
    }
    out
}

/// Why a segment's bytes are not a log (a [`LogError`] without the path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    BadMagic,
    Corrupt { offset: u64, what: &'static str },
}

/// [`scan_segment`] on a segment's bytes: the reader itself, which the fuzz target drives.
/// Each payload `f` gets is a slice of `data` (it lives as long as `data` does).
pub fn scan_bytes<'a>(
    data: &'a [u8],
    last: bool,
    mut f: impl FnMut(&'a [u8]),
) -> Result<SegmentScan, ScanError> {
    let mut scan = SegmentScan::default();
    if data.len() < MAGIC.len() {
        // A segment torn before its magic was fully written.
        return if last && MAGIC.starts_with(data) {
            scan.torn_bytes = data.len() as u64;
            Ok(scan)
        } else {
            Err(ScanError::BadMagic)
        };
    }
    if &data[..MAGIC.len()] != MAGIC {
        return Err(ScanError::BadMagic);
    }
    let mut at = MAGIC.len();
    while at < data.len() {
        let rest = &data[at..];
        let problem = if rest.len() < RECORD_HEADER {
            Some("record header cut short")
        } else {
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
            if len > MAX_RECORD {
                Some("record length out of range")
            } else if rest.len() < RECORD_HEADER + len {
                Some("record cut short")
            } else if crc32fast::hash(&rest[RECORD_HEADER..RECORD_HEADER + len]) != crc {
                // A CRC failure on the very last record is a torn write; earlier, corruption.
                if last && rest.len() == RECORD_HEADER + len {
                    Some("checksum mismatch in the last record")
                } else {
                    return Err(ScanError::Corrupt {
                        offset: at as u64,
                        what: "checksum mismatch",
                    });
                }
            } else {
                f(&rest[RECORD_HEADER..RECORD_HEADER + len]);
                scan.records += 1;
                at += RECORD_HEADER + len;
                None
            }
        };
        if let Some(what) = problem {
            if last {
                scan.torn_bytes = (data.len() - at) as u64;
                break;
            }
            return Err(ScanError::Corrupt {
                offset: at as u64,
                what,
            });
        }
    }
    scan.valid_bytes = at as u64;
    Ok(scan)
}

/// Totals of a whole log.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogTotals {
    pub segments: u64,
    pub records: u64,
    pub bytes: u64,
    pub torn_tail_bytes: u64,
}

/// Read every record of every segment in order.
pub fn read_log(dir: &Path, mut f: impl FnMut(&[u8])) -> Result<LogTotals, LogError> {
    let segs = segments(dir)?;
    let mut totals = LogTotals::default();
    for (i, (_, path)) in segs.iter().enumerate() {
        let scan = scan_segment(path, i + 1 == segs.len(), &mut f)?;
        totals.segments += 1;
        totals.records += scan.records;
        totals.bytes += scan.valid_bytes;
        totals.torn_tail_bytes += scan.torn_bytes;
    }
    Ok(totals)
}

/// What a sink's log holds, as window results.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WindowTotals {
    pub log: LogTotals,
    /// Events inside the window results.
    pub events: u64,
    /// Records that do not decode as a window result.
    pub undecodable: u64,
    /// Windows (start, service, route) the log holds more than once.
    pub duplicated: u64,
}

/// Read a sink's log as window results (every CRC checked): what `pipeline verify-log` and the
/// local runner report.
pub fn read_windows(dir: &Path) -> Result<WindowTotals, LogError> {
    let mut t = WindowTotals::default();
    let mut seen = std::collections::HashSet::new();
    t.log = read_log(dir, |rec| match crate::event::WindowResult::decode(rec) {
        Ok(w) => {
            t.events = t.events.saturating_add(w.count);
            if !seen.insert((w.window_start_us, w.service, w.route)) {
                t.duplicated += 1;
            }
        }
        Err(_) => t.undecodable += 1,
    })?;
    Ok(t)
}

/// The writing end of a log.
pub struct SegmentLog {
    dir: PathBuf,
    segment_bytes: u64,
    index: u64,
    written: u64,
    file: BufWriter<File>,
    /// Bytes written since the last sync.
    unsynced: bool,
}

/// What opening an existing log found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub existing_records: u64,
    pub truncated_bytes: u64,
}

impl SegmentLog {
    /// Open (or create) a log. A torn tail left by a crash is truncated; writing continues in a
    /// fresh segment.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Self, Recovery), LogError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let segs = segments(dir)?;
        let mut recovery = Recovery::default();
        let mut next = 0;
        for (i, (index, path)) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            let scan = scan_segment(path, last, |_| {})?;
            recovery.existing_records += scan.records;
            if last && scan.torn_bytes > 0 {
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err(path))?;
                file.set_len(scan.valid_bytes).map_err(io_err(path))?;
                file.sync_all().map_err(io_err(path))?;
                recovery.truncated_bytes = scan.torn_bytes;
            }
            next = index + 1;
        }
        let file = Self::create_segment(dir, next)?;
        Ok((
            SegmentLog {
                dir: dir.to_path_buf(),
                segment_bytes,
                index: next,
                written: MAGIC.len() as u64,
                file,
                unsynced: true,
            },
            recovery,
        ))
    }

    fn create_segment(dir: &Path, index: u64) -> Result<BufWriter<File>, LogError> {
        let path = dir.join(segment_name(index));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut w = BufWriter::with_capacity(256 << 10, file);
        w.write_all(MAGIC).map_err(io_err(&path))?;
        Ok(w)
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join(segment_name(self.index))
    }

    /// Append one record. Returns the bytes written (header included).
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, LogError> {
        if self.written >= self.segment_bytes {
            self.roll()?;
        }
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| (*l as usize) <= MAX_RECORD)
            .ok_or_else(|| LogError::Io {
                path: self.current_path(),
                error: io::Error::new(io::ErrorKind::InvalidInput, "record too large"),
            })?;
        let path = self.current_path();
        let w = &mut self.file;
        w.write_all(&record_header(len, payload))
            .and_then(|_| w.write_all(payload))
            .map_err(io_err(&path))?;
        let n = (RECORD_HEADER + payload.len()) as u64;
        self.written += n;
        self.unsynced = true;
        Ok(n)
    }

    fn roll(&mut self) -> Result<(), LogError> {
        self.sync()?;
        self.index += 1;
        self.file = Self::create_segment(&self.dir, self.index)?;
        self.written = MAGIC.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    /// Push buffered bytes to the OS (no fsync).
    pub fn flush(&mut self) -> Result<(), LogError> {
        let path = self.current_path();
        self.file.flush().map_err(io_err(&path))
    }

    /// Flush and fsync the current segment (and the directory, for a new segment's entry).
    /// Returns whether there was anything to sync.
    pub fn sync(&mut self) -> Result<bool, LogError> {
        if !self.unsynced {
            return Ok(false);
        }
        self.flush()?;
        let path = self.current_path();
        self.file.get_ref().sync_data().map_err(io_err(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        self.unsynced = false;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("record-{i}-{}", "x".repeat(i % 50)).into_bytes())
            .collect()
    }

    fn write(dir: &Path, recs: &[Vec<u8>], segment_bytes: u64) {
        let (mut log, _) = SegmentLog::open(dir, segment_bytes).unwrap();
        for r in recs {
            log.append(r).unwrap();
        }
        log.sync().unwrap();
    }

    fn read(dir: &Path) -> (Vec<Vec<u8>>, LogTotals) {
        let mut out = Vec::new();
        let totals = read_log(dir, |p| out.push(p.to_vec())).unwrap();
        (out, totals)
    }

    #[test]
    fn records_round_trip_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let recs = payloads(500);
        write(dir.path(), &recs, 4096);
        let (back, totals) = read(dir.path());
        assert_eq!(back, recs);
        assert!(totals.segments > 3, "rolled: {totals:?}");
        assert_eq!(totals.torn_tail_bytes, 0);
    }

    #[test]
    fn every_torn_tail_is_tolerated_and_repaired() {
        let recs = payloads(20);
        let full = {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), &recs, 1 << 20);
            fs::read(segments(dir.path()).unwrap()[0].1.clone()).unwrap()
        };
        // Cut the file at every byte of the last two records.
        let last_two: usize = recs[18..].iter().map(|r| r.len() + 8).sum();
        for cut in (full.len() - last_two)..full.len() {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(segment_name(0)), &full[..cut]).unwrap();
            let (back, totals) = read(dir.path());
            assert!(
                back.len() == 18 || back.len() == 19,
                "cut {cut}: {}",
                back.len()
            );
            assert_eq!(back[..], recs[..back.len()]);
            let valid = MAGIC.len() + back.iter().map(|r| r.len() + 8).sum::<usize>();
            assert_eq!(
                valid as u64 + totals.torn_tail_bytes,
                cut as u64,
                "cut {cut}"
            );
            assert_eq!(totals.bytes, valid as u64);
            // Reopening repairs the tail and appends after it.
            let (mut log, rec) = SegmentLog::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(rec.existing_records, back.len() as u64);
            assert_eq!(rec.truncated_bytes, totals.torn_tail_bytes);
            log.append(b"after-crash").unwrap();
            log.sync().unwrap();
            let (again, totals) = read(dir.path());
            assert_eq!(totals.torn_tail_bytes, 0);
            assert_eq!(again.last().unwrap(), b"after-crash");
            assert_eq!(again.len(), back.len() + 1);
        }
    }

    #[test]
    fn a_flipped_bit_in_the_tail_record_is_torn_but_earlier_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let recs = payloads(10);
        write(dir.path(), &recs, 1 << 20);
        let path = segments(dir.path()).unwrap()[0].1.clone();
        let good = fs::read(&path).unwrap();

        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        fs::write(&path, &bad).unwrap();
        let (back, totals) = read(dir.path());
        assert_eq!(back.len(), 9);
        assert!(totals.torn_tail_bytes > 0);

        let mut bad = good.clone();
        bad[MAGIC.len() + 8] ^= 1; // first payload byte
        fs::write(&path, &bad).unwrap();
        let err = read_log(dir.path(), |_| {}).unwrap_err();
        assert!(matches!(err, LogError::Corrupt { offset: 8, .. }), "{err}");

        // Damage in an earlier segment is never a torn tail.
        fs::write(&path, &good[..good.len() - 3]).unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 1 << 20).unwrap();
        log.append(b"x").unwrap();
        log.sync().unwrap();
        assert!(read_log(dir.path(), |_| {}).is_ok(), "repaired by open");
        fs::write(&path, &good[..good.len() - 3]).unwrap();
        assert!(matches!(
            read_log(dir.path(), |_| {}),
            Err(LogError::Corrupt { .. })
        ));
    }

    #[test]
    fn not_a_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(segment_name(0)), b"hello world, not a log").unwrap();
        assert!(matches!(
            read_log(dir.path(), |_| {}),
            Err(LogError::BadMagic { .. })
        ));
        assert_eq!(
            read_log(&dir.path().join("missing"), |_| {}).unwrap(),
            LogTotals::default()
        );
    }
}
