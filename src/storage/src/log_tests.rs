//! Tests of the partition log: append/read/roll/retention/recovery, torn tails, and faults.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use futures_lite::future::block_on;
use proptest::prelude::*;

use crate::cache::BatchCache;
use crate::config::LogConfig;
use crate::error::StorageError;
use crate::fault::FaultyStorage;
use crate::hdr::{testing::batch, Header};
use crate::io::Storage;
use crate::log::PartitionLog;
use crate::std_io::StdStorage;

pub(crate) fn cache() -> Rc<RefCell<BatchCache>> {
    Rc::new(RefCell::new(BatchCache::new(1 << 20)))
}

pub(crate) fn open<S: Storage>(storage: S, dir: &Path, config: LogConfig) -> PartitionLog<S> {
    block_on(PartitionLog::open(
        Rc::new(storage),
        dir.to_path_buf(),
        config,
        cache(),
        "t-0".into(),
    ))
    .expect("open")
}

pub(crate) fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        write_buffer_bytes: 8192,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

/// Reads every batch from `from` to the high watermark, returning (base, last, payload-len).
pub(crate) fn read_all<S: Storage>(log: &PartitionLog<S>, mut from: i64) -> Vec<(i64, i64, usize)> {
    let mut out = Vec::new();
    while from < log.high_watermark() {
        let r = block_on(log.read(from, 3000)).expect("read");
        assert!(
            !r.records.is_empty(),
            "empty read at {from} below hw {}",
            log.high_watermark()
        );
        let mut at = 0;
        while at < r.records.len() {
            let h = Header::parse(&r.records[at..]).expect("whole batch");
            h.verify(&r.records[at..at + h.size]).expect("crc");
            out.push((h.base_offset, h.last_offset(), h.size));
            from = h.last_offset() + 1;
            at += h.size;
        }
    }
    out
}

#[test]
fn append_flush_read_roll_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), small_segments());
    let mut expect = Vec::new();
    for i in 0..52 {
        let b = batch(3, &vec![i as u8; 100 + i * 7], 1000 + i as i64, -1, 0);
        let a = log.append(&b, 0).unwrap();
        assert_eq!(a.base_offset, i as i64 * 3);
        expect.push((a.base_offset, a.last_offset, b.len()));
        if i % 7 == 0 {
            block_on(log.flush()).unwrap();
        }
    }
    assert_eq!(log.high_watermark(), 3 * 50, "only flushed data is visible");
    block_on(log.flush()).unwrap();
    assert_eq!(log.high_watermark(), 156);
    assert!(log.segment_count() > 3, "segments rolled");
    assert_eq!(read_all(&log, 0), expect);
    // A read in the middle starts at the batch holding the offset.
    let r = block_on(log.read(31, 1)).unwrap();
    assert_eq!(Header::parse(&r.records).unwrap().base_offset, 30);
    assert!(matches!(
        block_on(log.read(157, 10)),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    block_on(log.close()).unwrap();
    drop(log);

    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(log.log_end_offset(), 156);
    assert_eq!(log.high_watermark(), 156);
    assert_eq!(read_all(&log, 0), expect);
    // Appends continue after the recovered tail.
    let a = log.append(&batch(1, b"after", 5000, -1, 0), 0).unwrap();
    assert_eq!(a.base_offset, 156);
    block_on(log.flush()).unwrap();
    assert_eq!(read_all(&log, 154).last().unwrap().0, 156);
}

#[test]
fn corrupt_input_is_refused_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), LogConfig::default());
    let mut b = batch(1, b"payload", 1, -1, 0);
    let last = b.len() - 1;
    b[last] ^= 0xff;
    assert_eq!(log.append(&b, 0).unwrap_err().kafka_error_code(), 2);
    assert_eq!(log.append(&b[..30], 0).unwrap_err().kafka_error_code(), 2);
    let mut wrong_magic = batch(1, b"payload", 1, -1, 0);
    wrong_magic[16] = 1;
    assert!(log.append(&wrong_magic, 0).is_err());
    let huge = batch(1, &vec![0u8; 2 << 20], 1, -1, 0);
    assert_eq!(log.append(&huge, 0).unwrap_err().kafka_error_code(), 10);
    assert_eq!(log.log_end_offset(), 0);
    assert!(!log.needs_flush());
}

#[test]
fn torn_tail_is_truncated_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), LogConfig::default());
    for i in 0..10 {
        log.append(&batch(2, &vec![i; 300], 7, -1, 0), 0).unwrap();
    }
    block_on(log.flush()).unwrap();
    drop(log);
    let seg = dir.path().join(format!("{:020}.log", 0));
    // The file is padded to whole pages; its logical length is 10 batches.
    let len = 10 * (crate::hdr::HEADER_BYTES as u64 + 300);
    assert!(std::fs::metadata(&seg).unwrap().len() >= len);
    // Tear the last batch in half and append zeros.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 150).unwrap();
    f.set_len(len + 5000).unwrap();
    let log = open(StdStorage, dir.path(), LogConfig::default());
    assert_eq!(log.log_end_offset(), 18);
    assert_eq!(read_all(&log, 0).len(), 9);
    log.append(&batch(1, b"x", 7, -1, 0), 0).unwrap();
    block_on(log.flush()).unwrap();
    drop(log);
    let log = open(StdStorage, dir.path(), LogConfig::default());
    assert_eq!(log.log_end_offset(), 19);
}

/// What an unclean stop leaves after an O_DIRECT write of a partial page: the last batch
/// followed by zeros to the page's end. Recovery cuts them (unsynced: a crash that undoes
/// the cut leaves the same zeros), and the log goes on from its logical end.
#[test]
fn page_padding_after_the_last_batch_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), LogConfig::default());
    for i in 0..3 {
        log.append(&batch(1, &[i; 100], 7, -1, 0), 0).unwrap();
    }
    block_on(log.flush()).unwrap();
    drop(log);
    let seg = dir.path().join(format!("{:020}.log", 0));
    let len = 3 * (crate::hdr::HEADER_BYTES as u64 + 100);
    let page = crate::io::PAGE_SIZE as u64;
    for round in 0..2 {
        // Padded to the page's end, as a kill -9 after the write leaves it (again after
        // the first round: the cut undone, as a crash before it was durable would).
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len.next_multiple_of(page)).unwrap();
        drop(f);
        let log = open(StdStorage, dir.path(), LogConfig::default());
        assert_eq!(log.log_end_offset(), 3 + round);
        assert!(
            std::fs::metadata(&seg).unwrap().len() < page,
            "the padding is cut"
        );
        log.append(&batch(1, b"next", 7, -1, 0), 0).unwrap();
        block_on(log.flush()).unwrap();
        drop(log);
        let log = open(StdStorage, dir.path(), LogConfig::default());
        assert_eq!(log.log_end_offset(), 4 + round);
        assert_eq!(read_all(&log, 0).len() as i64, 4 + round);
        drop(log);
    }
}

#[test]
fn flipped_bit_in_tail_cuts_from_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), LogConfig::default());
    let mut sizes = Vec::new();
    for i in 0..5 {
        let b = batch(1, &[i; 200], 7, -1, 0);
        sizes.push(b.len());
        log.append(&b, 0).unwrap();
    }
    block_on(log.flush()).unwrap();
    drop(log);
    let seg = dir.path().join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&seg).unwrap();
    let third = sizes[0] + sizes[1] + 100;
    bytes[third] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let log = open(StdStorage, dir.path(), LogConfig::default());
    assert_eq!(log.log_end_offset(), 2);
}

#[test]
fn damaged_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), small_segments());
    for i in 0..40 {
        log.append(&batch(1, &[i; 200], i as i64, -1, 0), 0)
            .unwrap();
    }
    block_on(log.flush()).unwrap();
    let before = read_all(&log, 0);
    drop(log);
    let idx = dir.path().join(format!("{:020}.index", 0));
    std::fs::write(&idx, b"garbage").unwrap();
    std::fs::remove_file(dir.path().join(format!("{:020}.timeindex", 0))).unwrap();
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(read_all(&log, 0), before);
    assert_eq!(
        block_on(log.offset_for_timestamp(25)).unwrap().unwrap().0,
        25
    );
}

#[test]
fn a_full_index_rolls_the_segment() {
    // index.interval.bytes=0 indexes every batch; with a huge segment.bytes only the index
    // size (segment.index.bytes, Kafka's rule) ends a segment, so its index stays bounded.
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: crate::config::SEGMENT_BYTES_MAX,
        index_interval_bytes: 0,
        segment_index_bytes: 48,
        ..LogConfig::default()
    };
    let log = open(StdStorage, dir.path(), cfg.clone());
    for i in 0..20 {
        log.append(&batch(1, &[i; 100], i as i64, -1, 0), 0)
            .unwrap();
    }
    block_on(log.flush()).unwrap();
    // 48 bytes hold four 12-byte time index entries (one per batch here): four batches a
    // segment.
    assert_eq!(log.segment_count(), 5);
    let before = read_all(&log, 0);
    assert_eq!(before.len(), 20);
    drop(log);
    let log = open(StdStorage, dir.path(), cfg);
    assert_eq!(read_all(&log, 0), before);
    // The smallest index Kafka allows holds no entry: every batch gets a segment.
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        index_interval_bytes: 0,
        segment_index_bytes: crate::config::SEGMENT_INDEX_BYTES_MIN,
        ..LogConfig::default()
    };
    let log = open(StdStorage, dir.path(), cfg);
    for i in 0..3 {
        log.append(&batch(1, &[i; 100], i as i64, -1, 0), 0)
            .unwrap();
    }
    block_on(log.flush()).unwrap();
    assert_eq!(log.segment_count(), 3);
}

#[test]
fn retention_by_size_time_and_delete_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_segments();
    let log = open(StdStorage, dir.path(), cfg.clone());
    for i in 0..60 {
        log.append(&batch(1, &vec![i; 400], 1_000 + i as i64, -1, 0), 0)
            .unwrap();
    }
    block_on(log.flush()).unwrap();
    let segs = log.segment_count();
    assert!(segs >= 6);
    // Nothing is old enough yet.
    assert_eq!(block_on(log.enforce_retention(2_000)).unwrap(), 0);
    cfg.retention_ms = 1_000;
    log.set_config(cfg.clone()).unwrap();
    // Segments whose newest record is older than now - 1000 go; the active one stays.
    let deleted = block_on(log.enforce_retention(2_030)).unwrap();
    assert!(deleted >= 2, "deleted {deleted}");
    assert!(log.log_start_offset() > 0);
    let start = log.log_start_offset();
    assert!(matches!(
        block_on(log.read(start - 1, 10)),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, start).first().unwrap().0, start);

    cfg.retention_ms = -1;
    cfg.retention_bytes = 4096;
    log.set_config(cfg).unwrap();
    block_on(log.enforce_retention(10_000)).unwrap();
    assert!(log.size_bytes() <= 4096 + 4096, "size {}", log.size_bytes());

    let target = log.high_watermark() - 2;
    assert_eq!(block_on(log.delete_records_before(target)).unwrap(), target);
    assert!(block_on(log.delete_records_before(log.high_watermark() + 1)).is_err());
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(
        log.log_start_offset(),
        target,
        "log start offset survives restart"
    );
    assert_eq!(read_all(&log, target).len(), 2);

    // The checkpoint is replaced, never overwritten in place: a torn leftover of an
    // interrupted replace (never acknowledged) leaves the acknowledged value in force.
    std::fs::write(dir.path().join("log-start-offset.tmp"), b"torn").unwrap();
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(
        log.log_start_offset(),
        target,
        "a stray temp file is ignored"
    );
    let later = target + 1;
    assert_eq!(block_on(log.delete_records_before(later)).unwrap(), later);
    assert!(
        !dir.path().join("log-start-offset.tmp").exists(),
        "the replace renamed its temp file into place"
    );
    drop(log);
    // A segment discarded before a crash (renamed, blocks not yet freed) is swept at open.
    let left = dir.path().join(format!(
        "00000000000000000000.log{}",
        crate::io::DISCARDED_SUFFIX
    ));
    std::fs::write(&left, vec![9u8; 4096]).unwrap();
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(log.log_start_offset(), later);
    assert!(!left.exists(), "a discarded segment is swept at open");
}

#[test]
fn idempotent_retries_get_original_offsets_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), small_segments());
    let mut batches = Vec::new();
    for seq in 0..30 {
        let b = batch(1, &vec![seq as u8; 300], 1, 42, seq);
        assert!(!log.append(&b, 0).unwrap().duplicate);
        batches.push(b);
    }
    let dup = log.append(&batches[28], 0).unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.base_offset, 28);
    assert_eq!(
        log.append(&batch(1, b"gap", 1, 42, 35), 0)
            .unwrap_err()
            .kafka_error_code(),
        45
    );
    block_on(log.flush()).unwrap();
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    let dup = log.append(&batches[29], 0).unwrap();
    assert!(dup.duplicate, "producer state recovered");
    assert_eq!(dup.base_offset, 29);
    assert_eq!(
        log.append(&batch(1, b"next", 1, 42, 30), 0)
            .unwrap()
            .base_offset,
        30
    );
}

#[test]
fn expired_producer_state_does_not_come_back_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), small_segments());
    // Producer 7 writes at t=1,000 (its state lands in roll snapshots), producer 8 at
    // t=50,000, after the last roll (replayed from the tail segment).
    let mut old = Vec::new();
    for seq in 0..30 {
        let b = batch(1, &vec![seq as u8; 300], 1_000, 7, seq);
        log.append(&b, 0).unwrap();
        old.push(b);
    }
    let young = batch(1, b"young", 50_000, 8, 0);
    log.append(&young, 0).unwrap();
    block_on(log.flush()).unwrap();
    assert!(log.segment_count() > 2, "snapshots were written");
    assert_eq!(log.expire_producers(10_000, 10_000), 0, "not yet");
    drop(log);

    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(log.producer_count(), 2);
    assert_eq!(
        log.expire_producers(55_000, 10_000),
        1,
        "7 is 54 s old, 8 is 5 s old"
    );
    assert_eq!(log.producer_count(), 1);
    // 7 is unknown now: its old retry is appended again (as on Kafka after expiry), while
    // 8's retry is still a duplicate.
    assert!(!log.append(&old[29], 0).unwrap().duplicate);
    assert!(log.append(&young, 0).unwrap().duplicate);
}

#[test]
fn a_full_producer_table_refuses_new_producer_ids() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), LogConfig::default());
    let real = batch(1, b"real", 1_000, 0, 0);
    log.append(&real, 0).unwrap();
    for pid in 1..crate::producer::PRODUCERS_PER_PARTITION_MAX as i64 {
        log.append(&batch(1, b"", 1_000, pid, 0), 0).unwrap();
    }
    let e = log
        .append(&batch(1, b"", 1_000, 1 << 40, 0), 0)
        .unwrap_err();
    assert_eq!(e.kafka_error_code(), 19, "NOT_ENOUGH_REPLICAS: {e}");
    assert_eq!(log.producers_refused(), 1);
    // The check without an append refuses (and counts) the same way.
    assert!(matches!(
        log.check_producer(1 << 41, 0, 0, 0),
        Err(StorageError::ProducersFull { .. })
    ));
    assert_eq!(log.producers_refused(), 2);
    assert!(
        log.append(&real, 0).unwrap().duplicate,
        "the real one kept its state"
    );
}

#[test]
fn check_producer_answers_as_append_would_and_appends_nothing() {
    use crate::producer::SeqCheck;
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), small_segments());
    // Producer 42 (epoch 0): sequences 0..=2 at offsets 0..=2, then 3..=6 at 3..=6.
    log.append(&batch(3, b"a", 1, 42, 0), 0).unwrap();
    log.append(&batch(4, b"b", 1, 42, 3), 0).unwrap();
    let end = log.log_end_offset();
    assert_eq!(log.check_producer(42, 0, 7, 0).unwrap(), SeqCheck::Append);
    assert_eq!(
        log.check_producer(42, 0, 0, 2).unwrap(),
        SeqCheck::Duplicate {
            first_offset: 0,
            last_offset: 2
        }
    );
    assert_eq!(
        log.check_producer(42, 0, 3, 3).unwrap(),
        SeqCheck::Duplicate {
            first_offset: 3,
            last_offset: 6
        }
    );
    let code = |r: crate::error::Result<SeqCheck>| r.unwrap_err().kafka_error_code();
    assert_eq!(code(log.check_producer(42, 0, 9, 0)), 45, "a gap");
    assert_eq!(
        code(log.check_producer(42, 0, 3, 1)),
        45,
        "a partial overlap"
    );
    assert_eq!(code(log.check_producer(42, -1, 7, 0)), 47, "an older epoch");
    assert_eq!(log.check_producer(42, 1, 0, 0).unwrap(), SeqCheck::Append);
    assert_eq!(
        code(log.check_producer(42, 1, 7, 0)),
        45,
        "a new epoch starts at 0"
    );
    assert_eq!(log.check_producer(43, 0, 100, 0).unwrap(), SeqCheck::Append);
    assert_eq!(log.check_producer(-1, -1, -1, 0).unwrap(), SeqCheck::Append);
    assert_eq!(log.log_end_offset(), end, "nothing appended");
    assert_eq!(log.producer_count(), 1, "nothing recorded");
    assert_eq!(log.producers_refused(), 0);
    // What the check said is what an append does.
    assert_eq!(
        log.append(&batch(1, b"c", 1, 42, 7), 0)
            .unwrap()
            .base_offset,
        end
    );
}

#[test]
fn fsync_failure_makes_partition_refuse_writes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::default();
    let plan = storage.plan.clone();
    let log = open(storage, dir.path(), LogConfig::default());
    log.append(&batch(1, b"a", 1, -1, 0), 0).unwrap();
    block_on(log.flush()).unwrap();
    log.append(&batch(1, b"b", 1, -1, 0), 0).unwrap();
    plan.fail_fsync_in.set(1);
    assert!(block_on(log.flush()).is_err());
    assert_eq!(
        log.high_watermark(),
        1,
        "the unsynced batch never became visible"
    );
    assert!(block_on(log.wait_durable(1)).is_err());
    assert_eq!(
        log.append(&batch(1, b"c", 1, -1, 0), 0)
            .unwrap_err()
            .kafka_error_code(),
        56
    );
    drop(log);
    let log = open(StdStorage, dir.path(), LogConfig::default());
    assert!(log.log_end_offset() >= 1, "synced data survives");
}

#[test]
fn a_disk_too_full_to_reserve_ahead_still_takes_writes_that_fit() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::default();
    let plan = storage.plan.clone();
    plan.preallocate_no_space.set(true);
    let log = open(storage, dir.path(), LogConfig::default());
    for (i, v) in [b"a", b"b", b"c"].iter().enumerate() {
        log.append(&batch(1, *v, 1, -1, 0), 0).unwrap();
        block_on(log.flush()).unwrap();
        assert_eq!(log.high_watermark(), i as i64 + 1, "acknowledged");
    }
    assert!(
        plan.preallocations_refused.get() >= 1,
        "the reservation was asked for and refused"
    );
    // Room again: reservations resume, writes go on.
    plan.preallocate_no_space.set(false);
    log.append(&batch(1, b"d", 1, -1, 0), 0).unwrap();
    block_on(log.flush()).unwrap();
    drop(log);
    let log = open(StdStorage, dir.path(), LogConfig::default());
    assert_eq!(log.log_end_offset(), 4, "every flushed batch survives");
}

/// Storage whose IO yields once per call (so tasks interleave as with real IO), and its plan.
fn yielding_storage() -> (FaultyStorage, Rc<crate::fault::FaultPlan>) {
    let storage = FaultyStorage::default();
    storage.plan.yield_each_io.set(true);
    let plan = storage.plan.clone();
    (storage, plan)
}

/// How a flusher run ended (`None`: it did not), and the batches acknowledged.
type FlusherRun = (Option<crate::error::Result<()>>, Vec<(i64, i64, usize)>);

/// A producer with `window` batches in flight against `run_flusher` over storage whose IO
/// yields (so appends, writes and syncs interleave); returns the flusher's result if it
/// ended first, and every batch acknowledged (base offset, last offset, size).
fn produce_against_flusher(
    log: &PartitionLog<FaultyStorage>,
    batches: usize,
    window: usize,
) -> FlusherRun {
    use futures_lite::future::{or, yield_now};
    let acked = RefCell::new(Vec::new());
    let producer = async {
        let mut in_flight = std::collections::VecDeque::new();
        for i in 0..batches {
            if in_flight.len() >= window {
                let (a, len): (crate::log::Appended, usize) = in_flight.pop_front().unwrap();
                if log.wait_durable(a.last_offset).await.is_err() {
                    return None;
                }
                acked.borrow_mut().push((a.base_offset, a.last_offset, len));
            }
            let b = batch(2, &vec![i as u8; 50 + (i * 37) % 900], i as i64, -1, 0);
            match log.append(&b, 0) {
                Ok(a) => in_flight.push_back((a, b.len())),
                Err(_) => return None,
            }
            yield_now().await;
        }
        for (a, len) in in_flight {
            if log.wait_durable(a.last_offset).await.is_err() {
                return None;
            }
            acked.borrow_mut().push((a.base_offset, a.last_offset, len));
        }
        None
    };
    let flusher = async { Some(log.run_flusher(|| false, |_| {}).await) };
    let ended = {
        let (mut flusher, mut producer) = (std::pin::pin!(flusher), std::pin::pin!(producer));
        block_on(async {
            match or(flusher.as_mut(), producer.as_mut()).await {
                // The producer gave up on a failed log: the flusher says why.
                None if log.failure().is_some() => flusher.await,
                ended => ended,
            }
        })
    };
    (ended, acked.into_inner())
}

#[test]
fn flusher_overlaps_writes_with_syncs_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, plan) = yielding_storage();
    // Small segments: rolls happen while a sync of the previous segment is in flight.
    let log = open(storage, dir.path(), small_segments());
    let (ended, acked) = produce_against_flusher(&log, 300, 6);
    assert!(ended.is_none(), "the flusher ended: {ended:?}");
    assert_eq!(acked.len(), 300);
    assert!(
        plan.write_during_sync.get(),
        "a write ran while an fdatasync was in flight"
    );
    assert_eq!(log.high_watermark(), 600);
    assert_eq!(read_all(&log, 0), acked);
    assert!(log.segment_count() > 10, "segments rolled");
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(read_all(&log, 0), acked, "everything acknowledged survives");
}

#[test]
fn fsync_failure_under_the_flusher_fails_waiters_and_keeps_synced_data() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, plan) = yielding_storage();
    plan.fail_fsync_in.set(25);
    let log = open(storage, dir.path(), small_segments());
    let (ended, acked) = produce_against_flusher(&log, 300, 6);
    match ended {
        Some(Err(e)) => assert_eq!(e.kafka_error_code(), 56, "{e}"),
        other => panic!("the flusher must end with the fsync error, got {other:?}"),
    }
    assert!(acked.len() < 300, "not everything was acknowledged");
    assert!(log.failure().is_some());
    let hw = log.high_watermark();
    assert!(
        acked.last().is_none_or(|a| a.1 < hw),
        "every acknowledged batch is below the high watermark {hw}"
    );
    assert!(log.append(&batch(1, b"late", 1, -1, 0), 0).is_err());
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    let recovered = read_all(&log, 0);
    assert!(recovered.len() >= acked.len());
    assert_eq!(
        recovered[..acked.len()],
        acked[..],
        "acknowledged prefix intact"
    );
}

#[test]
fn short_write_then_crash_recovers_synced_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::default();
    let plan = storage.plan.clone();
    let log = open(storage, dir.path(), LogConfig::default());
    for i in 0..20 {
        log.append(&batch(1, &vec![i; 500], 1, -1, 0), 0).unwrap();
    }
    block_on(log.flush()).unwrap();
    for i in 0..20 {
        log.append(&batch(1, &vec![i; 500], 1, -1, 0), 0).unwrap();
    }
    plan.short_write_in.set(1);
    plan.short_write_bytes.set(6000);
    assert!(block_on(log.flush()).is_err());
    plan.crashed.set(true);
    drop(log);
    let log = open(StdStorage, dir.path(), LogConfig::default());
    let end = log.log_end_offset();
    assert!((20..40).contains(&end), "end {end}");
    let all = read_all(&log, 0);
    assert_eq!(all.len() as i64, end);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Any sequence of appends and flushes, then a crash that cuts the file anywhere past
    /// the synced length: recovery keeps every synced batch and only whole batches.
    #[test]
    fn recovery_keeps_synced_prefix(
        sizes in prop::collection::vec(1usize..3000, 1..40),
        flush_every in 1usize..8,
        cut in 0u64..20_000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig { segment_bytes: 16 * 1024, write_buffer_bytes: 4096, ..LogConfig::default() };
        let log = open(StdStorage, dir.path(), cfg.clone());
        for (i, s) in sizes.iter().enumerate() {
            log.append(&batch(1, &vec![i as u8; *s], i as i64, -1, 0), 0).unwrap();
            if i % flush_every == 0 {
                block_on(log.flush()).unwrap();
            }
        }
        let synced = log.high_watermark();
        drop(log);
        // Cut the newest segment somewhere after what was synced (the unsynced part may be lost).
        let mut segs: Vec<_> = std::fs::read_dir(dir.path()).unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        segs.sort();
        let tail = segs.last().unwrap();
        let len = std::fs::metadata(tail).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(tail).unwrap();
        f.set_len(len + cut % 5000).unwrap();
        let log = open(StdStorage, dir.path(), cfg);
        prop_assert!(log.log_end_offset() >= synced);
        let all = read_all(&log, 0);
        prop_assert_eq!(all.len() as i64, log.log_end_offset());
        for (i, (base, _, size)) in all.iter().enumerate() {
            prop_assert_eq!(*base, i as i64);
            prop_assert_eq!(*size, sizes[i] + crate::hdr::HEADER_BYTES);
        }
    }
}

/// Shutdown: once `close` starts, appends fail (NOT_LEADER_OR_FOLLOWER to the client), so
/// nothing is acknowledged that the closing flush does not cover.
#[test]
fn a_closed_log_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), small_segments());
    log.append(&batch(2, b"before", 1000, -1, 0), 0).unwrap();
    block_on(log.close()).unwrap();
    let refused = log.append(&batch(1, b"after", 1000, -1, 0), 0);
    match refused {
        Err(e @ StorageError::Closed { .. }) => assert_eq!(e.kafka_error_code(), 6),
        other => panic!("append after close: {other:?}"),
    }
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(
        read_all(&log, 0),
        vec![(0, 1, batch(2, b"before", 1000, -1, 0).len())]
    );
}

/// Clean shutdown under a running flusher: `close` starts at every point of the flusher's
/// cycle (after `k` IO yields), with appends that nobody waited for (acks=1). Whatever the
/// flusher wrote but had not synced yet, including new segment files whose directory entry
/// only its sync stage makes durable, must be durable when `close` returns: a power loss
/// right after it keeps every appended batch. Both poll orders of the two tasks are tried.
#[test]
fn close_waits_for_the_flusher_so_a_power_loss_after_it_keeps_every_append() {
    use futures_lite::future::{or, yield_now};
    for (k, closer_first) in (0..60).flat_map(|k| [(k, false), (k, true)]) {
        let dir = tempfile::tempdir().unwrap();
        let (storage, plan) = yielding_storage();
        plan.model_durability();
        let log = open(storage, dir.path(), small_segments());
        let mut appended = Vec::new();
        let flusher_ended = std::cell::Cell::new(false);
        let flusher = async {
            let _ = log.run_flusher(|| false, |_| {}).await;
            flusher_ended.set(true);
            // Ended: leave the closer to finish.
            futures_lite::future::pending::<()>().await
        };
        let closer = async {
            for i in 0..40u8 {
                let b = batch(2, &vec![i; 300], i64::from(i), -1, 0);
                let a = log.append(&b, 0).expect("append");
                appended.push((a.base_offset, a.last_offset, b.len()));
                if i % 8 == 7 {
                    yield_now().await;
                }
            }
            for _ in 0..k {
                yield_now().await;
            }
            log.close().await.expect("close");
        };
        if closer_first {
            block_on(or(closer, flusher));
        } else {
            block_on(or(flusher, closer));
        }
        assert!(
            flusher_ended.get(),
            "no flush of a closed log still runs ({k} yields, closer first: {closer_first})"
        );
        plan.power_loss();
        drop(log);
        let log = open(StdStorage, dir.path(), small_segments());
        assert_eq!(
            read_all(&log, 0),
            appended,
            "close after {k} yields, closer polled first: {closer_first}"
        );
    }
}

/// A deletion retires the log and waits for a flush stage in progress: nothing is written
/// into the directory once `retire_and_fence` returns (the broker then moves the directory,
/// and a new topic of the same name may create it again).
#[test]
fn retire_and_fence_waits_for_a_write_stage_in_progress() {
    use futures_lite::future::{or, yield_now};
    for k in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _plan) = yielding_storage();
        let log = open(storage, dir.path(), small_segments());
        let fenced = std::cell::Cell::new(false);
        let files_at_fence = RefCell::new(Vec::new());
        let listing = |d: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (e.file_name(), e.metadata().unwrap().len())
                })
                .collect();
            v.sort();
            v
        };
        let flusher = async {
            let _ = log.run_flusher(|| false, |_| {}).await;
            futures_lite::future::pending::<()>().await
        };
        let deleter = async {
            for i in 0..40u8 {
                let _ = log.append(&batch(2, &vec![i; 300], i64::from(i), -1, 0), 0);
                yield_now().await;
            }
            for _ in 0..k {
                yield_now().await;
            }
            log.retire_and_fence().await;
            fenced.set(true);
            *files_at_fence.borrow_mut() = listing(dir.path());
            // Let anything still running make progress, then look again.
            for _ in 0..200 {
                yield_now().await;
            }
        };
        block_on(or(flusher, deleter));
        assert!(fenced.get());
        assert_eq!(
            listing(dir.path()),
            *files_at_fence.borrow(),
            "nothing written after the fence ({k} yields)"
        );
    }
}

/// Retention and DeleteRecords act on paths in the log's directory too: once a deletion has
/// fenced the log they are refused, and a DeleteRecords already running (replacing the log
/// start checkpoint, removing segments) is waited for, at every point of its progress.
#[test]
fn retire_and_fence_covers_retention_and_delete_records() {
    use futures_lite::future::{yield_now, zip};
    for k in 0..30 {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _plan) = yielding_storage();
        let log = open(storage, dir.path(), small_segments());
        for i in 0..40u8 {
            log.append(&batch(2, &vec![i; 300], i64::from(i), -1, 0), 0)
                .unwrap();
        }
        block_on(log.flush()).unwrap();
        let listing = || {
            let mut v: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let after_fence = RefCell::new(None);
        let deleter = async {
            let _ = log.delete_records_before(60).await;
        };
        let fencer = async {
            for _ in 0..k {
                yield_now().await;
            }
            log.retire_and_fence().await;
            *after_fence.borrow_mut() = Some(listing());
            for _ in 0..100 {
                yield_now().await;
            }
        };
        block_on(zip(deleter, fencer));
        assert_eq!(
            Some(listing()),
            *after_fence.borrow(),
            "nothing changed after the fence ({k} yields)"
        );
        let refused = block_on(log.enforce_retention(i64::MAX)).unwrap_err();
        assert!(matches!(refused, StorageError::Deleted { .. }), "{refused}");
        let refused = block_on(log.delete_records_before(70)).unwrap_err();
        assert!(matches!(refused, StorageError::Deleted { .. }), "{refused}");
    }
}

#[test]
fn retention_offset_is_where_enforce_retention_moves_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_segments();
    let log = open(StdStorage, dir.path(), cfg.clone());
    for i in 0..80 {
        log.append(&batch(1, &vec![i; 400], 1_000 + i as i64, -1, 0), 0)
            .unwrap();
    }
    block_on(log.flush()).unwrap();
    let segs = log.segment_count();
    assert!(segs >= 8, "{segs} segments");
    let check = |now: i64| {
        let segs = log.segment_count();
        let want = log.retention_offset(now);
        assert_eq!(log.segment_count(), segs, "it deletes nothing");
        let before = log.log_start_offset();
        block_on(log.enforce_retention(now)).unwrap();
        match want {
            None => assert_eq!(log.log_start_offset(), before, "at {now}"),
            Some(to) => {
                assert!(to > before);
                assert_eq!(log.log_start_offset(), to, "at {now}");
            }
        }
        want
    };
    // No retention configured, then nothing old enough.
    assert_eq!(check(1_000_000), None);
    cfg.retention_ms = 1_000;
    log.set_config(cfg.clone()).unwrap();
    assert_eq!(check(2_000), None);
    // By time: segments whose newest record is older than now - 1000.
    let by_time = check(2_020).expect("old segments go");
    let segs = log.segment_count();
    // DeleteRecords moved the start inside the first kept segment: retention that would
    // keep that segment does not move the start.
    block_on(log.delete_records_before(by_time + 1)).unwrap();
    assert_eq!(log.retention_offset(2_020), None);
    assert_eq!(log.segment_count(), segs);
    // By size.
    cfg.retention_ms = -1;
    cfg.retention_bytes = 8192;
    log.set_config(cfg.clone()).unwrap();
    let by_size = check(0).expect("over the size");
    assert!(by_size > by_time);
    assert!(log.size_bytes() <= 8192 + 4096);
    assert_eq!(check(0), None);
    // Everything expired: all but the active segment.
    cfg.retention_bytes = -1;
    cfg.retention_ms = 0;
    log.set_config(cfg).unwrap();
    let all = check(1_000_000).expect("all closed segments");
    assert_eq!(log.segment_count(), 1);
    assert!(all > by_size);
}
