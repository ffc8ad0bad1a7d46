//! Offline verification of a whole data directory (`sluice verify`): every segment of every
//! partition, not only the tail segment that start-up recovery checks.
//!
//! Per segment: each batch's framing (a whole v2 header, a length within the file and within
//! `BATCH_BYTES_MAX`), its CRC32C and counts, and offsets that start at the segment's base
//! and run on without gap or overlap, within and across segments; per sealed segment also its
//! offset and time indexes (every entry at a batch start, sizes and next offset as scanned)
//! and the other sealed files (producer snapshots, the log-start checkpoint). Read only, with
//! plain buffered reads, so it is safe beside a running broker; there the last writes of a
//! tail segment may still be in flight, which is why a torn batch that ends a tail segment is
//! a note (recovery cuts it) rather than a problem.
//!
//! Uses `std::fs` directly, unlike the log (which does its IO through [`crate::io::Storage`]):
//! it is a tool that runs outside the shard runtime.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::config::BATCH_BYTES_MAX;
use crate::format::{self, Kind};
use crate::hdr::{Header, HEADER_BYTES};
use crate::index::{OffsetIndex, TimeIndex};
use crate::log::SCAN_CHUNK_BYTES;

/// One thing wrong (or, for notes, worth saying) about one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub path: PathBuf,
    /// Byte position in the file, when the finding is about one place.
    pub position: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.position {
            Some(p) => write!(f, "{} @{p}: {}", self.path.display(), self.what),
            None => write!(f, "{}: {}", self.path.display(), self.what),
        }
    }
}

/// What a verification found and covered.
#[derive(Debug, Default)]
pub struct Report {
    pub partitions: u64,
    pub segments: u64,
    pub batches: u64,
    /// Bytes of batches checked (framing and CRC).
    pub bytes: u64,
    /// Damage: the exit status of `sluice verify` is 1 when there is any.
    pub problems: Vec<Finding>,
    /// Expected irregularities (an unfinished tail write, a missing index the broker rebuilds).
    pub notes: Vec<Finding>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, path: &Path, position: Option<u64>, what: String) {
        self.problems.push(Finding {
            path: path.to_path_buf(),
            position,
            what,
        });
    }

    fn note(&mut self, path: &Path, position: Option<u64>, what: String) {
        self.notes.push(Finding {
            path: path.to_path_buf(),
            position,
            what,
        });
    }
}

/// Verifies every partition directory under `data_dir` (its subdirectories holding segments
/// or a `partition.metadata`; directories of unfinished deletions, `…-delete`, are skipped).
/// An error is an IO failure that stopped the walk itself (the data dir unreadable);
/// unreadable files are problems in the report.
pub fn verify_data_dir(data_dir: &Path) -> io::Result<Report> {
    let mut report = Report::default();
    let mut dirs = Vec::new();
    for e in fs::read_dir(data_dir)? {
        let e = e?;
        if !e.file_type()?.is_dir() {
            continue;
        }
        let name = e.file_name();
        if name.to_string_lossy().ends_with("-delete") {
            report.note(
                &e.path(),
                None,
                "skipped: a partition directory being removed".into(),
            );
            continue;
        }
        dirs.push(e.path());
    }
    dirs.sort();
    for dir in dirs {
        let files = match list(&dir) {
            Ok(f) => f,
            Err(e) => {
                report.problem(&dir, None, format!("cannot list: {e}"));
                continue;
            }
        };
        if files.segments.is_empty() && !files.has_partition_metadata {
            continue;
        }
        report.partitions += 1;
        verify_partition(&dir, &files, &mut report);
    }
    Ok(report)
}

/// The files of a partition directory the verifier knows.
#[derive(Default)]
struct Files {
    segments: Vec<i64>,
    snapshots: Vec<i64>,
    has_partition_metadata: bool,
    has_log_start: bool,
    has_epochs: bool,
    has_cleaner_checkpoint: bool,
    has_recovery_point: bool,
}

fn list(dir: &Path) -> io::Result<Files> {
    let mut f = Files::default();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let Some(name) = name.to_str() else { continue };
        let base = |ext: &str| name.strip_suffix(ext).and_then(|s| s.parse::<i64>().ok());
        if let Some(b) = base(".log") {
            f.segments.push(b);
        } else if let Some(b) = base(".snapshot") {
            f.snapshots.push(b);
        } else if name == "partition.metadata" {
            f.has_partition_metadata = true;
        } else if name == "log-start-offset" {
            f.has_log_start = true;
        } else if name == crate::log::CLEANER_CHECKPOINT_FILE {
            f.has_cleaner_checkpoint = true;
        } else if name == crate::log::RECOVERY_POINT_FILE {
            f.has_recovery_point = true;
        } else if name == crate::leader_epoch::CHECKPOINT_FILE {
            f.has_epochs = true;
        }
    }
    f.segments.sort_unstable();
    f.snapshots.sort_unstable();
    Ok(f)
}

fn segment_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

fn verify_partition(dir: &Path, files: &Files, report: &mut Report) {
    let mut expected: Option<i64> = None;
    for (i, &base) in files.segments.iter().enumerate() {
        let path = segment_path(dir, base, "log");
        let is_tail = i + 1 == files.segments.len();
        if let Some(next) = expected {
            if base != next {
                report.problem(
                    &path,
                    None,
                    format!(
                        "segment starts at offset {base} but the previous one ends before {next} \
                         ({})",
                        if base > next { "a gap" } else { "an overlap" }
                    ),
                );
            }
        }
        report.segments += 1;
        match verify_segment(&path, base, is_tail, report) {
            // After damage the rest of the segment is unknown: its indexes and where it
            // ends cannot be judged, and saying so would only repeat the one problem.
            Ok(scan) if !scan.complete => expected = None,
            Ok(scan) => {
                if !is_tail {
                    verify_indexes(dir, base, &scan, report);
                    verify_txn_index(dir, base, &scan, report);
                }
                expected = Some(scan.next_offset);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Beside a running broker: retention or a deletion removed it meanwhile.
                report.note(&path, None, "removed while being verified".into());
                expected = None;
            }
            Err(e) => {
                report.problem(&path, None, format!("cannot read: {e}"));
                expected = None;
            }
        }
    }
    for &snap in &files.snapshots {
        let path = segment_path(dir, snap, "snapshot");
        check_snapshot(&path, report);
    }
    if files.has_log_start {
        check_sealed(&dir.join("log-start-offset"), Kind::LogStartOffset, report);
    }
    if files.has_cleaner_checkpoint {
        let path = dir.join(crate::log::CLEANER_CHECKPOINT_FILE);
        check_sealed(&path, Kind::CleanerCheckpoint, report);
    }
    if files.has_recovery_point {
        // A stale one (of an older tail) is normal: only a damaged file is reported.
        let path = dir.join(crate::log::RECOVERY_POINT_FILE);
        check_sealed(&path, Kind::RecoveryPoint, report);
    }
    if files.has_epochs {
        let path = dir.join(crate::leader_epoch::CHECKPOINT_FILE);
        match fs::read(&path) {
            Ok(b) if crate::leader_epoch::LeaderEpochCache::decode(&b).is_some() => {}
            Ok(_) => report.problem(&path, None, "not a leader-epoch checkpoint".into()),
            Err(e) => report.problem(&path, None, format!("cannot read: {e}")),
        }
    }
}

/// What a segment scan learned, for its indexes.
struct Scanned {
    /// Batch start position → (base offset, running max timestamp including that batch).
    batches: BTreeMap<u64, (i64, i64)>,
    /// Where the whole batches end.
    size: u64,
    next_offset: i64,
    /// The scan reached the end of the segment's data (no damage stopped it).
    complete: bool,
}

fn verify_segment(
    path: &Path,
    base: i64,
    is_tail: bool,
    report: &mut Report,
) -> io::Result<Scanned> {
    let file = File::open(path)?;
    let file_size = file.metadata()?.len();
    let mut scan = Scanned {
        batches: BTreeMap::new(),
        size: 0,
        next_offset: base,
        complete: true,
    };
    let mut max_ts = i64::MIN;
    let mut pos = 0u64;
    let mut header = [0u8; HEADER_BYTES];
    while pos < file_size {
        let left = file_size - pos;
        if left < HEADER_BYTES as u64 {
            let rest = read_exact_at(&file, pos, left as usize)?;
            scan.complete = end_of_data(path, pos, &rest, is_tail, &file, file_size, report)?;
            break;
        }
        file.read_exact_at(&mut header, pos)?;
        let Some(h) = Header::parse(&header) else {
            scan.complete = end_of_data(path, pos, &header, is_tail, &file, file_size, report)?;
            break;
        };
        if h.magic != 2 || h.size > BATCH_BYTES_MAX {
            report.problem(
                path,
                Some(pos),
                format!(
                    "not a batch: magic {}, {} bytes (the rest of the segment is unchecked)",
                    h.magic, h.size
                ),
            );
            scan.complete = false;
            break;
        }
        if h.size as u64 > left {
            let what = format!(
                "batch at offset {} of {} bytes runs past the end of the file ({left} bytes left)",
                h.base_offset, h.size
            );
            if is_tail {
                report.note(
                    path,
                    Some(pos),
                    format!("{what}: a torn last write, cut by recovery"),
                );
            } else {
                report.problem(path, Some(pos), what);
            }
            scan.complete = false;
            break;
        }
        let batch = read_exact_at(&file, pos, h.size)?;
        if let Err(e) = h.verify(&batch) {
            let what = format!("batch at offset {}: {e}", h.base_offset);
            if is_tail && rest_is_zero(&file, pos + h.size as u64, file_size)? {
                report.note(
                    path,
                    Some(pos),
                    format!("{what}: the last write of the tail, cut by recovery"),
                );
            } else {
                report.problem(
                    path,
                    Some(pos),
                    format!("{what} (the rest of the segment is unchecked)"),
                );
            }
            scan.complete = false;
            break;
        }
        if h.base_offset != scan.next_offset {
            report.problem(
                path,
                Some(pos),
                format!(
                    "batch starts at offset {} where offset {} was due",
                    h.base_offset, scan.next_offset
                ),
            );
        }
        // Fewer records than offsets is what compaction leaves (a batch keeps its range);
        // more can never be.
        if h.records_count < 0 || h.records_count as i64 > h.last_offset_delta as i64 + 1 {
            report.problem(
                path,
                Some(pos),
                format!(
                    "batch at offset {} holds {} records for {} offsets",
                    h.base_offset,
                    h.records_count,
                    h.last_offset_delta as i64 + 1
                ),
            );
        }
        max_ts = max_ts.max(h.max_timestamp);
        scan.batches.insert(pos, (h.base_offset, max_ts));
        scan.next_offset = h.last_offset() + 1;
        report.batches += 1;
        report.bytes += h.size as u64;
        pos += h.size as u64;
        scan.size = pos;
    }
    Ok(scan)
}

/// No batch header at `pos`: a tail segment may end in zeros (preallocated space); anything
/// else, and any sealed segment with bytes left, is damage. Returns whether the end is clean.
fn end_of_data(
    path: &Path,
    pos: u64,
    head: &[u8],
    is_tail: bool,
    file: &File,
    file_size: u64,
    report: &mut Report,
) -> io::Result<bool> {
    let zero =
        head.iter().all(|&b| b == 0) && rest_is_zero(file, pos + head.len() as u64, file_size)?;
    if !(is_tail && zero) {
        report.problem(
            path,
            Some(pos),
            format!(
                "{} bytes after the last whole batch are not a batch{}",
                file_size - pos,
                if is_tail {
                    ""
                } else {
                    " (a sealed segment ends with its last batch)"
                }
            ),
        );
    }
    Ok(is_tail && zero)
}

fn read_exact_at(file: &File, pos: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, pos)?;
    Ok(buf)
}

fn rest_is_zero(file: &File, mut pos: u64, file_size: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; SCAN_CHUNK_BYTES];
    while pos < file_size {
        let n = ((file_size - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

/// A sealed segment's indexes must agree with its batches. A missing index is only a note:
/// the broker rebuilds it at start (a crash right after the roll leaves none).
fn verify_indexes(dir: &Path, base: i64, scan: &Scanned, report: &mut Report) {
    let path = segment_path(dir, base, "index");
    if let Some((meta, body)) = read_sealed(&path, Kind::OffsetIndex, report) {
        if meta[0] as u64 != scan.size || meta[1] != scan.next_offset {
            report.problem(
                &path,
                None,
                format!(
                    "says the segment is {} bytes up to offset {}, the scan found {} bytes up to {}",
                    meta[0], meta[1], scan.size, scan.next_offset
                ),
            );
        }
        match OffsetIndex::decode(&body, scan.size.max(1)) {
            None => report.problem(
                &path,
                None,
                "entries out of order or past the segment".into(),
            ),
            Some(index) => {
                for &(rel, position) in index.entries() {
                    let at = scan.batches.get(&(position as u64)).map(|b| b.0);
                    if at != Some(base + rel as i64) {
                        report.problem(
                            &path,
                            None,
                            format!(
                                "entry (offset {}, position {position}) does not point at that \
                                 batch (found {at:?})",
                                base + rel as i64
                            ),
                        );
                    }
                }
            }
        }
    }
    let path = segment_path(dir, base, "timeindex");
    if let Some((meta, body)) = read_sealed(&path, Kind::TimeIndex, report) {
        if meta[0] as u64 != scan.size {
            report.problem(
                &path,
                None,
                format!(
                    "says the segment is {} bytes, the scan found {}",
                    meta[0], scan.size
                ),
            );
        }
        match TimeIndex::decode(&body) {
            None => report.problem(&path, None, "entries out of order".into()),
            Some(index) => {
                let by_offset: BTreeMap<i64, i64> = scan.batches.values().copied().collect();
                for &(ts, rel) in index.entries() {
                    let offset = base + rel as i64;
                    let found = by_offset.get(&offset);
                    if found != Some(&ts) {
                        report.problem(
                            &path,
                            None,
                            format!(
                                "entry (timestamp {ts}, offset {offset}) does not match the \
                                 batches (largest timestamp there: {found:?})"
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// A sealed segment's aborted transactions (`.txnindex`, only where a transaction was
/// aborted): whole, in marker order, each ending by a marker inside the segment.
fn verify_txn_index(dir: &Path, base: i64, scan: &Scanned, report: &mut Report) {
    let path = segment_path(dir, base, "txnindex");
    if !path.exists() {
        return;
    }
    let Some((meta, body)) = read_sealed(&path, Kind::TxnIndex, report) else {
        return;
    };
    if meta[0] != scan.next_offset {
        report.problem(
            &path,
            None,
            format!(
                "says the segment ends at offset {}, the scan found {}",
                meta[0], scan.next_offset
            ),
        );
    }
    if body.len() % crate::txn::ABORTED_TXN_BYTES != 0 {
        report.problem(&path, None, "not whole entries".into());
    }
    let entries = match crate::txn::AbortedTxn::decode_all(&body) {
        Ok(entries) => entries,
        Err(kept) => {
            report.problem(
                &path,
                None,
                format!("entry {} is unreadable or out of order", kept.len()),
            );
            kept
        }
    };
    for t in entries {
        if t.last_offset < base || t.last_offset >= scan.next_offset {
            report.problem(
                &path,
                None,
                format!(
                    "producer {}'s abort at offset {} is outside the segment",
                    t.producer_id, t.last_offset
                ),
            );
        }
    }
}

/// The meta and body of a sealed file; `None` when it is missing (a note) or damaged (a
/// problem).
fn read_sealed(path: &Path, kind: Kind, report: &mut Report) -> Option<([i64; 4], Vec<u8>)> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            report.note(
                path,
                None,
                "missing (rebuilt by the broker at start)".into(),
            );
            return None;
        }
        Err(e) => {
            report.problem(path, None, format!("cannot read: {e}"));
            return None;
        }
    };
    match format::unseal(kind, &bytes) {
        Some((meta, body)) => Some((meta, body.to_vec())),
        None => {
            report.problem(
                path,
                None,
                format!("damaged {kind:?} file (bad header or CRC32C)"),
            );
            None
        }
    }
}

fn check_sealed(path: &Path, kind: Kind, report: &mut Report) {
    let _ = read_sealed(path, kind, report);
}

/// A producer snapshot is of either kind: with timestamps (written now) or without (older
/// data dirs), as the log reads them at open. Its body must decode too.
fn check_snapshot(path: &Path, report: &mut Report) {
    let Ok(bytes) = fs::read(path) else {
        // Missing or unreadable: read_sealed says which.
        check_sealed(path, Kind::ProducerSnapshotTimed, report);
        return;
    };
    let sealed = format::unseal(Kind::ProducerSnapshotTimed, &bytes)
        .or_else(|| format::unseal(Kind::ProducerSnapshot, &bytes));
    match sealed {
        Some((meta, body)) if crate::producer::ProducerState::decode(body, meta[1]).is_some() => {}
        Some(_) => report.problem(path, None, "producer snapshot body does not decode".into()),
        None => report.problem(
            path,
            None,
            "damaged producer snapshot file (bad header or CRC32C)".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hdr::testing::batch;

    /// Writes a partition of two sealed segments (with indexes) and a tail, as the log does.
    fn write_partition(dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        let mut next = 0i64;
        for (seg, count) in [(0, 3), (1, 2), (2, 2)] {
            let base = next;
            let mut bytes = Vec::new();
            let mut index = OffsetIndex::default();
            let mut time = TimeIndex::default();
            for i in 0..count {
                let mut b = batch(2, &[seg as u8; 100], 1000 + next, -1, -1);
                crate::hdr::set_offset_and_epoch(&mut b, next, 0);
                index.push((next - base) as u32, bytes.len() as u32);
                time.maybe_push(1000 + next, (next - base) as u32);
                let _ = i;
                bytes.extend_from_slice(&b);
                next += 2;
            }
            let is_tail = seg == 2;
            if is_tail {
                bytes.resize(bytes.len() + 8192, 0); // preallocated space
            } else {
                let size = bytes.len() as i64;
                let sealed = format::seal(Kind::OffsetIndex, [size, next, 0, 0], &index.encode());
                fs::write(segment_path(dir, base, "index"), sealed).unwrap();
                let sealed = format::seal(Kind::TimeIndex, [size, 0, 0, 0], &time.encode());
                fs::write(segment_path(dir, base, "timeindex"), sealed).unwrap();
            }
            fs::write(segment_path(dir, base, "log"), bytes).unwrap();
        }
    }

    #[test]
    fn a_clean_partition_passes() {
        let d = tempfile::tempdir().unwrap();
        write_partition(&d.path().join("t-0"));
        let r = verify_data_dir(d.path()).unwrap();
        assert!(r.is_clean(), "{:?}", r.problems);
        assert_eq!((r.partitions, r.segments, r.batches), (1, 3, 7));
    }

    #[test]
    fn producer_snapshots_of_both_kinds_pass_and_a_bad_body_is_found() {
        use crate::producer::{ProducerState, SNAPSHOT_BODY_VERSION};
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("t-0");
        write_partition(&dir);
        let mut body = Vec::new();
        ProducerState::default().encode(&mut body);
        // As the log writes them now (with timestamps) and as older data dirs hold them.
        let timed = format::seal(
            Kind::ProducerSnapshotTimed,
            [4, SNAPSHOT_BODY_VERSION, 0, 0],
            &body,
        );
        fs::write(segment_path(&dir, 4, "snapshot"), timed).unwrap();
        // An old file's body is version 0: an empty table is its count alone.
        let old = format::seal(Kind::ProducerSnapshot, [6, 0, 0, 0], &0u32.to_be_bytes());
        fs::write(segment_path(&dir, 6, "snapshot"), old).unwrap();
        let r = verify_data_dir(d.path()).unwrap();
        assert!(r.is_clean(), "{:?}", r.problems);
        // A well-sealed file whose body is not a producer table.
        let junk = format::seal(
            Kind::ProducerSnapshotTimed,
            [4, SNAPSHOT_BODY_VERSION, 0, 0],
            b"junk",
        );
        fs::write(segment_path(&dir, 4, "snapshot"), junk).unwrap();
        let r = verify_data_dir(d.path()).unwrap();
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    }

    #[test]
    fn a_damaged_leader_epoch_checkpoint_is_found() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("t-0");
        write_partition(&dir);
        let path = dir.join(crate::leader_epoch::CHECKPOINT_FILE);
        fs::write(&path, "0\n1\n0 0\n").unwrap();
        assert!(verify_data_dir(d.path()).unwrap().is_clean());
        fs::write(&path, "0\n2\n0 0\n").unwrap();
        let r = verify_data_dir(d.path()).unwrap();
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].path, path);
    }

    #[test]
    fn a_flipped_byte_in_a_sealed_segment_is_found() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("t-0");
        write_partition(&dir);
        let path = segment_path(&dir, 6, "log");
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.len() - 10; // inside the last batch's records
        bytes[at] ^= 0x40;
        fs::write(&path, bytes).unwrap();
        let r = verify_data_dir(d.path()).unwrap();
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].what.contains("crc32c"), "{}", r.problems[0]);
        assert_eq!(r.problems[0].path, path);
    }

    #[test]
    fn gaps_torn_tails_and_damaged_indexes() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("t-0");
        write_partition(&dir);
        // A torn last write of the tail is a note.
        let tail = segment_path(&dir, 10, "log");
        let mut bytes = fs::read(&tail).unwrap();
        let mut b = batch(1, &[7; 300], 5000, -1, -1);
        crate::hdr::set_offset_and_epoch(&mut b, 14, 0);
        let end = bytes.iter().rposition(|&x| x != 0).unwrap() + 1;
        bytes[end..end + 100].copy_from_slice(&b[..100]);
        fs::write(&tail, &bytes).unwrap();
        let r = verify_data_dir(d.path()).unwrap();
        assert!(r.is_clean(), "{:?}", r.problems);
        assert!(r.notes.iter().any(|n| n.path == tail), "{:?}", r.notes);
        // A damaged index is a problem; a missing one a note.
        let index = segment_path(&dir, 0, "index");
        let mut bytes = fs::read(&index).unwrap();
        bytes[50] ^= 1;
        fs::write(&index, bytes).unwrap();
        fs::remove_file(segment_path(&dir, 6, "timeindex")).unwrap();
        // A missing segment leaves a gap.
        fs::remove_file(segment_path(&dir, 6, "log")).unwrap();
        fs::remove_file(segment_path(&dir, 6, "index")).unwrap();
        let r = verify_data_dir(d.path()).unwrap();
        let problems: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("damaged"), "{problems:?}");
        assert!(problems[1].contains("a gap"), "{problems:?}");
    }
}
