//! Tests of the recovery point: an open after a crash that starts from it builds the same
//! log as a full scan of the tail, reads only past it, and refuses one that no longer
//! matches the tail (another log's, a cut file, a truncation's).

use std::path::Path;

use bytes::Bytes;
use futures_lite::future::block_on;

use crate::config::LogConfig;
use crate::fault::FaultyStorage;
use crate::hdr::{self, testing::batch, Header};
use crate::io::Storage;
use crate::log::{PartitionLog, RECOVERY_POINT_FILE};
use crate::log_tests::{open, read_all};
use crate::std_io::StdStorage;

/// One segment for everything, a recovery point every 8 KiB.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024 * 1024,
        write_buffer_bytes: 8192,
        index_interval_bytes: 256,
        recovery_point_interval_bytes: 8192,
        ..LogConfig::default()
    }
}

/// An idempotent producer's batch `i` (3 records, sequence `3 * i`), of varied size and
/// timestamp.
fn produced(i: usize) -> Vec<u8> {
    let len = 60 + (i * 53) % 700;
    let ts = 10_000 + ((i * 7919) % 500) as i64;
    batch(3, &vec![i as u8; len], ts, 7, 3 * i as i32)
}

/// Copies every file of `from` into a new directory.
fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
    }
    to
}

fn segment_file(dir: &Path) -> std::path::PathBuf {
    dir.join(format!("{:020}.log", 0))
}

/// What an open built, as far as readers and producers can see it.
fn observe<S: Storage>(log: &PartitionLog<S>) -> String {
    let lookups: Vec<_> = [0, 10_000, 10_100, 10_250, 10_499, 20_000]
        .iter()
        .map(|&ts| block_on(log.offset_for_timestamp(ts)).unwrap())
        .collect();
    let from_middle = read_all(log, log.log_end_offset() / 2);
    format!(
        "end {} hw {} batches {:?} from the middle {:?} by time {lookups:?} epochs {:?} producers {}",
        log.log_end_offset(),
        log.high_watermark(),
        read_all(log, 0),
        from_middle,
        log.leader_epoch_entries(),
        log.producer_count(),
    )
}

/// Opens `dir` as it is and a copy without its recovery point (a full scan of the tail),
/// and checks that both build the same log; returns the first.
fn open_both(dir: &Path) -> PartitionLog<StdStorage> {
    open_both_if(dir, true)
}

fn open_both_if(dir: &Path, written: bool) -> PartitionLog<StdStorage> {
    assert_eq!(
        dir.join(RECOVERY_POINT_FILE).exists(),
        written,
        "a recovery point was written"
    );
    let scanned = copy_dir(dir);
    let _ = std::fs::remove_file(scanned.path().join(RECOVERY_POINT_FILE));
    let full = open(StdStorage, scanned.path(), config());
    let log = open(StdStorage, dir, config());
    assert_eq!(observe(&log), observe(&full));
    log
}

/// Flips one payload byte of the batch at `offset` in the segment file.
fn corrupt_batch_at(dir: &Path, offset: i64) {
    let path = segment_file(dir);
    let mut bytes = std::fs::read(&path).unwrap();
    let mut at = 0;
    loop {
        let h = Header::parse(&bytes[at..]).expect("the batch is in the file");
        if h.base_offset == offset {
            bytes[at + h.size - 1] ^= 0xff;
            break;
        }
        at += h.size;
    }
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn a_crash_recovers_from_the_recovery_point_as_a_full_scan_would_and_reads_only_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), config());
    for i in 0..60 {
        log.append(&produced(i), 0).unwrap();
        if i % 6 == 5 {
            block_on(log.flush()).unwrap();
        }
    }
    // Two more past the last recovery point (well under its interval), flushed.
    let rp_len = std::fs::read(dir.path().join(RECOVERY_POINT_FILE))
        .unwrap()
        .len();
    log.append(&batch(1, b"after", 10_600, 7, 180), 0).unwrap();
    log.append(&batch(1, b"after2", 10_601, 7, 181), 0).unwrap();
    block_on(log.flush()).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join(RECOVERY_POINT_FILE))
            .unwrap()
            .len(),
        rp_len,
        "no new recovery point for a few bytes"
    );
    drop(log); // a crash: no close

    // The prefix is trusted, not read: damage there goes unnoticed, while a full scan
    // cuts the log at it. Damage past the recovery point is found as before.
    let damaged = copy_dir(dir.path());
    corrupt_batch_at(damaged.path(), 0);
    assert_eq!(
        open(StdStorage, damaged.path(), config()).log_end_offset(),
        182
    );
    std::fs::remove_file(damaged.path().join(RECOVERY_POINT_FILE)).unwrap();
    assert_eq!(
        open(StdStorage, damaged.path(), config()).log_end_offset(),
        0
    );
    let damaged = copy_dir(dir.path());
    corrupt_batch_at(damaged.path(), 181);
    assert_eq!(
        open(StdStorage, damaged.path(), config()).log_end_offset(),
        181
    );

    let log = open_both(dir.path());
    // Producer state came from the recovery point and the batches after it: a retry of
    // the last batch is a duplicate, the next sequence is accepted, a gap is refused.
    let retry = log.append(&batch(1, b"after2", 10_601, 7, 181), 0).unwrap();
    assert!(retry.duplicate);
    let old = log.append(&produced(59), 0).unwrap();
    assert!(
        old.duplicate,
        "a batch before the recovery point is known too"
    );
    assert!(log.append(&batch(1, b"gap", 10_700, 7, 190), 0).is_err());
    let next = log.append(&batch(1, b"next", 10_700, 7, 182), 0).unwrap();
    assert_eq!((next.base_offset, next.duplicate), (182, false));
    block_on(log.flush()).unwrap();
    block_on(log.close()).unwrap();
    drop(log);
    // A clean restart reads from the recovery point its close wrote.
    open_both(dir.path());
}

#[test]
fn a_recovery_point_that_does_not_match_the_tail_is_ignored() {
    let written = tempfile::tempdir().unwrap();
    let log = open(StdStorage, written.path(), config());
    for i in 0..40 {
        log.append(&produced(i), 0).unwrap();
    }
    block_on(log.flush()).unwrap();
    drop(log);

    // Another log with the same offsets in batches of other sizes: its tail does not hold
    // the batch the recovery point names.
    let other = tempfile::tempdir().unwrap();
    let log = open(
        StdStorage,
        other.path(),
        LogConfig {
            recovery_point_interval_bytes: u64::MAX,
            ..config()
        },
    );
    let mut expect = Vec::new();
    for i in 0..40 {
        let b = batch(3, &vec![9; 100 + i], 5, -1, 0);
        let a = log.append(&b, 0).unwrap();
        expect.push((a.base_offset, a.last_offset, b.len()));
    }
    block_on(log.flush()).unwrap();
    drop(log);
    assert!(!other.path().join(RECOVERY_POINT_FILE).exists());
    std::fs::copy(
        written.path().join(RECOVERY_POINT_FILE),
        other.path().join(RECOVERY_POINT_FILE),
    )
    .unwrap();
    let log = open(StdStorage, other.path(), config());
    assert_eq!(read_all(&log, 0), expect);
    assert_eq!(log.producer_count(), 0, "not the other log's producers");
    drop(log);

    // The tail cut below the recovery point (a lost write-back cache): a scan finds what
    // is left.
    let path = segment_file(written.path());
    let size = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(size / 2).unwrap();
    drop(file);
    let log = open(StdStorage, written.path(), config());
    let kept = read_all(&log, 0);
    assert!(
        !kept.is_empty() && kept.len() < 40,
        "{} batches",
        kept.len()
    );
    assert_eq!(
        kept.last().map(|b| b.1 + 1),
        Some(log.log_end_offset()),
        "the log ends where the scan did"
    );
}

/// A batch a leader of `epoch` stored at `base`.
fn leader_batch(base: i64, epoch: i32, fill: u8, len: usize) -> Vec<u8> {
    let mut b = batch(2, &vec![fill; len], 1_000 + base, -1, 0);
    hdr::set_offset_and_epoch(&mut b, base, epoch);
    b
}

/// 60 batches of 2 records by the leader of epoch 1 (offsets 0 to 119), unflushed.
fn append_old_suffix<S: Storage>(log: &PartitionLog<S>) {
    for i in 0..60 {
        let b = leader_batch(2 * i, 1, i as u8, 300);
        log.append_at(Bytes::copy_from_slice(&b), 0).unwrap();
    }
}

#[test]
fn a_truncation_removes_the_recovery_point_and_recovery_finds_the_new_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), config());
    append_old_suffix(&log);
    block_on(log.flush()).unwrap();
    assert!(dir.path().join(RECOVERY_POINT_FILE).exists());
    block_on(log.truncate_to(20)).unwrap();
    assert!(
        !dir.path().join(RECOVERY_POINT_FILE).exists(),
        "the truncation removed it"
    );
    // A new leader's batches at the same offsets, of other sizes, past the old point.
    for i in 10..70 {
        let b = leader_batch(2 * i, 3, 100 + i as u8, 200);
        log.append_at(Bytes::copy_from_slice(&b), 0).unwrap();
    }
    block_on(log.flush()).unwrap();
    drop(log);
    let log = open_both(dir.path());
    assert_eq!(log.log_end_offset(), 140);
    assert_eq!(log.leader_epoch_entries(), vec![(1, 0), (3, 20)]);
}

/// A recovery point the stale way a truncation racing its write would leave it: written for
/// the old suffix after the cut. The batch check refuses it, whether the new batches lie
/// elsewhere in the file or exactly where the old ones did (same sizes, other epoch and
/// timestamps, which a stale time index would answer wrongly for).
#[test]
fn a_recovery_point_of_a_truncated_suffix_is_refused() {
    for (len, ts) in [(400, 1_000), (300, 50_000)] {
        let dir = tempfile::tempdir().unwrap();
        let log = open(StdStorage, dir.path(), config());
        append_old_suffix(&log);
        block_on(log.flush()).unwrap();
        let stale = std::fs::read(dir.path().join(RECOVERY_POINT_FILE)).unwrap();
        block_on(log.truncate_to(20)).unwrap();
        for i in 10..60 {
            let mut b = batch(2, &vec![100 + i as u8; len], ts + i as i64, -1, 0);
            hdr::set_offset_and_epoch(&mut b, 2 * i as i64, 3);
            log.append_at(Bytes::copy_from_slice(&b), 0).unwrap();
        }
        block_on(log.flush()).unwrap();
        drop(log);
        std::fs::write(dir.path().join(RECOVERY_POINT_FILE), stale).unwrap();
        let log = open_both(dir.path());
        assert_eq!(log.log_end_offset(), 120);
        assert_eq!(log.leader_epoch_entries(), vec![(1, 0), (3, 20)]);
        let found = block_on(log.offset_for_timestamp(ts + 59)).unwrap();
        assert_eq!(found.map(|f| f.0), Some(118), "len {len}");
    }
}

/// Under the flusher (writes, syncs and recovery points interleaved) and a power loss at
/// any point: the recovered log is what a full scan finds, and holds every acknowledged batch.
#[test]
fn a_power_loss_under_the_flusher_recovers_as_a_full_scan_would() {
    use futures_lite::future::{or, yield_now};
    for stop_after in [7usize, 40, 111, 250] {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::default();
        storage.plan.yield_each_io.set(true);
        storage.plan.model_durability();
        let log = open(storage.clone(), dir.path(), config());
        let acked = std::cell::Cell::new(0i64);
        let producer = async {
            for i in 0..stop_after {
                let a = log.append(&produced(i), 0).unwrap();
                if i % 3 == 2 {
                    log.wait_durable(a.last_offset).await.unwrap();
                    acked.set(a.last_offset + 1);
                }
                yield_now().await;
            }
            for _ in 0..(stop_after % 7) {
                yield_now().await;
            }
        };
        let flusher = async {
            let _ = log.run_flusher(|| false, |_| {}).await;
        };
        block_on(or(producer, flusher));
        storage.plan.power_loss();
        drop(log);
        let log = open_both_if(dir.path(), stop_after >= 40);
        assert!(
            log.log_end_offset() >= acked.get(),
            "{stop_after}: end {} below the acknowledged {}",
            log.log_end_offset(),
            acked.get()
        );
    }
}

/// A truncation that starts while a recovery point is being written (its flush's sync done,
/// the file's replacement in flight) waits for it and then removes it: none of the old
/// suffix is left behind, wherever in the write the truncation begins.
#[test]
fn a_truncation_racing_a_recovery_point_write_leaves_none_behind() {
    use futures_lite::future::{yield_now, zip};
    for delay in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::default();
        storage.plan.yield_each_io.set(true);
        let log = open(storage, dir.path(), config());
        append_old_suffix(&log);
        let truncation = async {
            for _ in 0..delay {
                yield_now().await;
            }
            log.truncate_to(20).await
        };
        let (flushed, truncated) = block_on(zip(log.flush(), truncation));
        flushed.unwrap();
        truncated.unwrap();
        assert!(
            !dir.path().join(RECOVERY_POINT_FILE).exists(),
            "delay {delay}: a recovery point of the removed suffix is left"
        );
        assert_eq!(log.log_end_offset(), 20);
    }
}
