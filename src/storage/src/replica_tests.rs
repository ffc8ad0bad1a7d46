//! Tests of the follower's side of the log: appends at the leader's offsets, truncation of
//! a divergent suffix (recovery, producer state, crashes), and the leader-epoch history.

use std::path::Path;

use bytes::Bytes;
use futures_lite::future::block_on;

use crate::error::StorageError;
use crate::fault::FaultyStorage;
use crate::hdr::{self, testing::batch, Header};
use crate::io::Storage;
use crate::leader_epoch::{CHECKPOINT_FILE, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};
use crate::log::PartitionLog;
use crate::log_tests::{open, read_all, small_segments};
use crate::std_io::StdStorage;

/// A batch as a leader of `epoch` stored it at `base` (`count` records, `fill` payload).
fn leader_batch(base: i64, epoch: i32, count: i32, fill: u8, len: usize) -> Vec<u8> {
    let mut b = batch(count, &vec![fill; len], 1_000 + base, -1, 0);
    hdr::set_offset_and_epoch(&mut b, base, epoch);
    b
}

/// Every batch from `from` to the high watermark, byte for byte.
fn read_raw<S: Storage>(log: &PartitionLog<S>, mut from: i64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while from < log.high_watermark() {
        let r = block_on(log.read(from, 1 << 20)).expect("read");
        assert!(!r.records.is_empty(), "empty read at {from}");
        let mut at = 0;
        while at < r.records.len() {
            let h = Header::parse(&r.records[at..]).expect("whole batch");
            out.push(r.records[at..at + h.size].to_vec());
            from = h.last_offset() + 1;
            at += h.size;
        }
    }
    out
}

/// A follower log over `storage` with `n` batches of 3 records each (epoch 1 for the first
/// half, 4 after), flushed; returns the log and the batches.
fn follower_with<S: Storage>(storage: S, dir: &Path, n: usize) -> (PartitionLog<S>, Vec<Vec<u8>>) {
    let log = open(storage, dir, small_segments());
    let mut batches = Vec::new();
    for i in 0..n {
        let epoch = if i < n / 2 { 1 } else { 4 };
        let b = leader_batch(3 * i as i64, epoch, 3, i as u8, 200 + (i * 37) % 300);
        let a = log.append_at(Bytes::copy_from_slice(&b), 0).unwrap();
        assert_eq!(
            (a.base_offset, a.last_offset),
            (3 * i as i64, 3 * i as i64 + 2)
        );
        batches.push(b);
    }
    block_on(log.flush()).unwrap();
    (log, batches)
}

#[test]
fn append_at_keeps_the_leaders_bytes_and_refuses_misfits() {
    let dir = tempfile::tempdir().unwrap();
    let (log, batches) = follower_with(StdStorage, dir.path(), 6);
    assert_eq!(read_raw(&log, 0), batches, "bytes as the leader wrote them");
    let end = log.log_end_offset();
    assert_eq!(end, 18);
    let refused = |b: &[u8]| log.append_at(Bytes::copy_from_slice(b), 0).unwrap_err();
    // Not at the log end: a gap, or an offset already written.
    for base in [19, 15, 0] {
        let e = refused(&leader_batch(base, 4, 1, 9, 10));
        assert!(matches!(e, StorageError::ReplicaMismatch { .. }), "{e}");
    }
    // A leader epoch older than the log's newest.
    let e = refused(&leader_batch(end, 3, 1, 9, 10));
    assert!(matches!(e, StorageError::ReplicaMismatch { .. }), "{e}");
    // A corrupt batch, as on the produce path.
    let mut bad = leader_batch(end, 4, 1, 9, 10);
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(refused(&bad).kafka_error_code(), 2);
    assert_eq!(log.log_end_offset(), end, "nothing appended");
    assert!(!log.needs_flush());
    // Reopened, the bytes are still the leader's.
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(read_raw(&log, 0), batches);
    log.append_at(Bytes::copy_from_slice(&leader_batch(end, 5, 2, 1, 10)), 0)
        .unwrap();
    assert_eq!(log.log_end_offset(), end + 2);
}

#[test]
fn truncation_across_segments_and_mid_segment_then_new_bytes_at_the_same_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (log, batches) = follower_with(StdStorage, dir.path(), 40);
    let segments = log.segment_count();
    assert!(segments > 4, "{segments} segments");

    // Inside a batch: refused, nothing changes, the log goes on.
    let e = block_on(log.truncate_to(31)).unwrap_err();
    assert!(matches!(e, StorageError::ReplicaMismatch { .. }), "{e}");
    assert!(log.failure().is_none());
    assert_eq!(log.log_end_offset(), 120);
    // Past the end: nothing to do.
    block_on(log.truncate_to(500)).unwrap();
    assert_eq!(read_raw(&log, 0), batches);

    // Mid-segment, several segments back.
    block_on(log.truncate_to(3 * 25)).unwrap();
    assert_eq!(log.log_end_offset(), 75);
    assert_eq!(log.high_watermark(), 75);
    assert!(log.segment_count() < segments);
    assert_eq!(read_raw(&log, 0), batches[..25]);
    // Different bytes at the same offsets (a new leader's), read back exactly.
    let mut expect = batches[..25].to_vec();
    for i in 25..32 {
        let b = leader_batch(3 * i as i64, 6, 3, 200 + i as u8, 100 + i * 11);
        log.append_at(Bytes::copy_from_slice(&b), 0).unwrap();
        expect.push(b);
    }
    block_on(log.flush()).unwrap();
    assert_eq!(read_raw(&log, 0), expect);
    // Reads from the middle start at the right batch (indexes were cut too).
    assert_eq!(read_raw(&log, 3 * 26 + 1), expect[26..]);

    // Exactly at a segment's first batch.
    let seg_base = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log")?.parse::<i64>().ok()
        })
        .filter(|&b| b > 0 && b < 75)
        .max()
        .expect("a segment after the first");
    block_on(log.truncate_to(seg_base)).unwrap();
    let kept = (seg_base / 3) as usize;
    assert_eq!(read_raw(&log, 0), expect[..kept]);
    let b = leader_batch(seg_base, 7, 3, 77, 50);
    log.append_at(Bytes::copy_from_slice(&b), 0).unwrap();
    block_on(log.flush()).unwrap();
    let mut expect = expect[..kept].to_vec();
    expect.push(b);
    assert_eq!(read_raw(&log, 0), expect);

    // Recovery returns the truncated-and-rewritten log.
    block_on(log.close()).unwrap();
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(log.log_end_offset(), seg_base + 3);
    assert_eq!(read_raw(&log, 0), expect);
    // Down to the log start: empty, then written again.
    block_on(log.truncate_to(0)).unwrap();
    assert_eq!((log.log_end_offset(), log.segment_count()), (0, 1));
    log.append_at(Bytes::copy_from_slice(&leader_batch(0, 9, 1, 1, 10)), 0)
        .unwrap();
    block_on(log.flush()).unwrap();
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(
        read_all(&log, 0),
        vec![(0, 0, leader_batch(0, 9, 1, 1, 10).len())]
    );
}

#[test]
fn producer_state_after_truncation_forgets_removed_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), small_segments());
    let mut sent = Vec::new();
    for seq in 0..30 {
        let b = batch(1, &vec![seq as u8; 300], 1_000, 42, seq);
        assert_eq!(log.append(&b, 0).unwrap().base_offset, seq as i64);
        sent.push(b);
    }
    block_on(log.flush()).unwrap();
    assert!(
        log.segment_count() > 2,
        "snapshots at rolls are used by the rebuild"
    );
    block_on(log.truncate_to(20)).unwrap();
    // A retry of a removed batch is appended again, at the new end.
    let again = log.append(&sent[20], 0).unwrap();
    assert!(
        !again.duplicate,
        "the removed batch's sequence was forgotten"
    );
    assert_eq!(again.base_offset, 20);
    // A retry of a kept one is still a duplicate with its offsets.
    let dup = log.append(&sent[19], 0).unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.base_offset, 19);
    // Older batches the five-batch window had dropped are back in it (rebuilt, not cut).
    block_on(log.flush()).unwrap();
    block_on(log.truncate_to(17)).unwrap();
    for seq in [12, 16] {
        let dup = log.append(&sent[seq], 0).unwrap();
        assert!(dup.duplicate, "seq {seq}");
        assert_eq!(dup.base_offset, seq as i64);
    }
    assert!(!log.append(&sent[17], 0).unwrap().duplicate);
}

#[test]
fn epoch_checkpoint_round_trip_lookup_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = follower_with(StdStorage, dir.path(), 10);
    // Epoch 1 from 0, epoch 4 from 15; then a leader of epoch 6 appends at 30.
    log.begin_epoch(6).unwrap();
    log.append(&batch(2, b"leader", 5, -1, 0), 0).unwrap();
    assert_eq!(log.leader_epoch_entries(), vec![(1, 0), (4, 15), (6, 30)]);
    block_on(log.flush()).unwrap();
    let file = dir.path().join(CHECKPOINT_FILE);
    // Every entry starts in the tail segment: the checkpoint waits for a roll or the close
    // (a restart before either assigns them again from the tail's batches, below).
    assert!(!file.exists());
    assert_eq!(log.end_offset_for_epoch(6), (6, 32));
    assert_eq!(log.end_offset_for_epoch(4), (4, 30));
    assert_eq!(log.end_offset_for_epoch(5), (4, 30));
    assert_eq!(log.end_offset_for_epoch(2), (1, 15));
    assert_eq!(log.end_offset_for_epoch(0), (0, 0));
    assert_eq!(
        log.end_offset_for_epoch(7),
        (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
    );
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(log.leader_epoch_entries(), vec![(1, 0), (4, 15), (6, 30)]);
    block_on(log.close()).unwrap();
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "0\n3\n1 0\n4 15\n6 30\n"
    );
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(log.leader_epoch_entries(), vec![(1, 0), (4, 15), (6, 30)]);
    // Truncation inside epoch 4 cuts epoch 6, on disk too.
    block_on(log.truncate_to(21)).unwrap();
    assert_eq!(log.leader_epoch_entries(), vec![(1, 0), (4, 15)]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "0\n2\n1 0\n4 15\n");
    assert_eq!(log.end_offset_for_epoch(4), (4, 21));
    // A truncation to an epoch's first offset removes it.
    block_on(log.truncate_to(15)).unwrap();
    assert_eq!(log.leader_epoch_entries(), vec![(1, 0)]);
    // The next leader's batches start a new entry where the log now ends.
    log.append_at(Bytes::copy_from_slice(&leader_batch(15, 8, 1, 0, 10)), 0)
        .unwrap();
    block_on(log.flush()).unwrap();
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(log.leader_epoch_entries(), vec![(1, 0), (8, 15)]);
    assert_eq!(log.end_offset_for_epoch(4), (1, 15));
    // DeleteRecords moves the history's start with the log's.
    assert_eq!(block_on(log.delete_records_before(5)).unwrap(), 5);
    assert_eq!(log.leader_epoch_entries(), vec![(1, 5), (8, 15)]);
    log.append_at(Bytes::copy_from_slice(&leader_batch(16, 8, 1, 0, 10)), 0)
        .unwrap();
    block_on(log.flush()).unwrap();
    // The new entry (assigned again at the open) and the moved start wait for a roll or the
    // close: until then the file holds what the truncation wrote, more history at the start.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "0\n1\n1 0\n");
    block_on(log.close()).unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "0\n2\n1 5\n8 15\n");
    // An entry past the recovered end (written before data that was lost) is cut.
    std::fs::write(&file, "0\n3\n1 5\n8 15\n9 400\n").unwrap();
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(log.leader_epoch_entries(), vec![(1, 5), (8, 15)]);
}

/// Opens a follower log whose storage models a power loss.
fn modelled(dir: &Path, n: usize) -> (PartitionLog<FaultyStorage>, FaultyStorage, Vec<Vec<u8>>) {
    let storage = FaultyStorage::default();
    storage.plan.model_durability();
    let (log, batches) = follower_with(storage.clone(), dir, n);
    (log, storage, batches)
}

/// The history a log's batches imply: where each epoch first appears.
fn implied_epochs(batches: &[Vec<u8>]) -> Vec<(i32, i64)> {
    let mut out: Vec<(i32, i64)> = Vec::new();
    for b in batches {
        let h = Header::parse(b).unwrap();
        if out.last().is_none_or(|&(e, _)| e != h.leader_epoch) {
            out.push((h.leader_epoch, h.base_offset));
        }
    }
    out
}

/// New epochs' entries reach the checkpoint only when a segment is sealed (or at close):
/// whatever a power loss keeps, the history recovered is the one the surviving batches
/// imply, across rolls, with and without flushes.
#[test]
fn after_a_power_loss_the_epoch_history_matches_the_batches_that_survive() {
    for (m, mid_flush, end_flush) in [
        (1, false, true),
        (1, false, false),
        (4, true, false),
        (20, true, false),
        (20, false, true),
        (20, true, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (log, storage, _) = modelled(dir.path(), 40);
        for k in 0..m {
            let epoch = if k < m / 2 { 6 } else { 7 };
            let b = leader_batch(120 + 3 * k as i64, epoch, 3, k as u8, 300);
            log.append_at(Bytes::copy_from_slice(&b), 0).unwrap();
            if mid_flush && k == m / 2 {
                block_on(log.flush()).unwrap();
            }
        }
        if end_flush {
            block_on(log.flush()).unwrap();
        }
        storage.plan.power_loss();
        drop(log);
        let log = open(StdStorage, dir.path(), small_segments());
        let case = format!("{m} batches, flushes {mid_flush} {end_flush}");
        assert_eq!(
            log.leader_epoch_entries(),
            implied_epochs(&read_raw(&log, 0)),
            "{case}"
        );
        if end_flush {
            assert_eq!(log.log_end_offset(), 120 + 3 * m as i64, "{case}");
        }
    }
}

#[test]
fn a_power_loss_after_truncation_does_not_bring_removed_batches_back() {
    for rewrite in [None, Some(false), Some(true)] {
        let dir = tempfile::tempdir().unwrap();
        let (log, storage, batches) = modelled(dir.path(), 40);
        block_on(log.truncate_to(3 * 12)).unwrap();
        // Then maybe new bytes at the same offsets, synced or not.
        let new = leader_batch(36, 6, 3, 0xee, 120);
        if let Some(flush) = rewrite {
            log.append_at(Bytes::copy_from_slice(&new), 0).unwrap();
            if flush {
                block_on(log.flush()).unwrap();
            }
        }
        storage.plan.power_loss();
        drop(log);
        let log = open(StdStorage, dir.path(), small_segments());
        let mut expect = batches[..12].to_vec();
        if rewrite == Some(true) {
            expect.push(new);
        }
        assert_eq!(read_raw(&log, 0), expect, "rewrite {rewrite:?}");
        assert!(log
            .leader_epoch_entries()
            .iter()
            .all(|&(_, s)| s < log.log_end_offset()));
    }
}

#[test]
fn a_crash_during_truncation_leaves_a_prefix_of_the_old_log() {
    crash_during_truncation(|plan, n| plan.fail_fsync_in.set(n));
    crash_during_truncation(|plan, n| plan.fail_sync_dir_in.set(n));
}

/// Fails the n-th sync of one kind (`arm`) during a truncation across several segments, for
/// every n until one completes, then loses power.
fn crash_during_truncation(arm: impl Fn(&crate::fault::FaultPlan, u32)) {
    for n in 1.. {
        let dir = tempfile::tempdir().unwrap();
        let (log, storage, batches) = modelled(dir.path(), 40);
        assert!(log.segment_count() > 4);
        arm(&storage.plan, n);
        let result = block_on(log.truncate_to(3 * 12));
        arm(&storage.plan, 0);
        if result.is_err() {
            assert!(log.failure().is_some(), "a failed truncation fails the log");
            assert!(log
                .append_at(Bytes::copy_from_slice(&leader_batch(36, 6, 1, 0, 1)), 0)
                .is_err());
        }
        storage.plan.power_loss();
        drop(log);
        let log = open(StdStorage, dir.path(), small_segments());
        let got = read_raw(&log, 0);
        assert!(got.len() >= 12, "n {n}: the kept part survives");
        assert_eq!(got, batches[..got.len()], "n {n}: a prefix of the old log");
        if result.is_ok() {
            assert_eq!(got.len(), 12, "a truncation that returned is durable");
            assert!(n > 2, "the truncation synced something");
            break;
        }
    }
}

/// A truncation under a running flusher, started at many points of its write/sync cycle:
/// the high watermark never passes the log end, and what is appended after the cut is
/// written where it belongs and survives a reopen.
#[test]
fn a_truncation_waits_for_the_flusher_and_is_not_undone_by_it() {
    for delay in 0..16 {
        truncate_under_the_flusher(delay);
    }
}

fn truncate_under_the_flusher(delay: usize) {
    use futures_lite::future::{or, yield_now};
    let dir = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::default();
    storage.plan.yield_each_io.set(true);
    let log = open(storage, dir.path(), small_segments());
    let stop = std::cell::Cell::new(false);
    let flusher = async { log.run_flusher(|| stop.get(), |_| {}).await };
    let driver = async {
        for i in 0..30 {
            log.append_at(
                Bytes::copy_from_slice(&leader_batch(3 * i, 1, 3, i as u8, 250)),
                0,
            )
            .unwrap();
            yield_now().await;
        }
        for _ in 0..delay {
            yield_now().await;
        }
        // Truncate while the flusher has writes and syncs in flight.
        log.truncate_to(3 * 10).await.unwrap();
        assert_eq!(log.high_watermark(), 30);
        for i in 10..20 {
            log.append_at(
                Bytes::copy_from_slice(&leader_batch(3 * i, 2, 3, 0xa0 + i as u8, 90)),
                0,
            )
            .unwrap();
            assert!(log.high_watermark() <= log.log_end_offset());
            yield_now().await;
        }
        log.wait_durable(59).await.unwrap();
        stop.set(true);
        log.append_at(Bytes::copy_from_slice(&leader_batch(60, 2, 1, 1, 1)), 0)
            .unwrap();
        log.wait_durable(60).await.unwrap();
    };
    // Which of the two is polled first decides who gets a free flush stage first.
    block_on(async {
        let flusher = async { flusher.await.unwrap() };
        if delay.is_multiple_of(2) {
            or(flusher, driver).await;
        } else {
            or(driver, flusher).await;
        }
    });
    assert_eq!(log.high_watermark(), 61, "delay {delay}");
    let got = read_raw(&log, 0);
    assert_eq!(got.len(), 21);
    for (i, b) in got.iter().enumerate().take(20).skip(10) {
        assert_eq!(b, &leader_batch(3 * i as i64, 2, 3, 0xa0 + i as u8, 90));
    }
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(read_raw(&log, 0), got, "delay {delay}");
}

/// A flush whose write stage ran before a truncation and whose sync stage runs after it
/// must not move the high watermark to its (now truncated) target.
#[test]
fn a_flush_straddling_a_truncation_does_not_resurrect_its_target() {
    use futures_lite::future::poll_once;
    let dir = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::default();
    storage.plan.yield_each_io.set(true);
    let plan = storage.plan.clone();
    let log = open(storage, dir.path(), small_segments());
    log.append_at(Bytes::copy_from_slice(&leader_batch(0, 1, 3, 0, 100)), 0)
        .unwrap();
    // Writes the epoch checkpoint, whose fdatasync would look like a sync stage below.
    block_on(log.flush()).unwrap();
    for i in 1..10 {
        log.append_at(
            Bytes::copy_from_slice(&leader_batch(3 * i, 1, 3, i as u8, 100)),
            0,
        )
        .unwrap();
    }
    block_on(async {
        // First flush: into its sync stage, where it stays for now.
        let mut first = Box::pin(log.flush());
        while plan.syncs_in_flight.get() == 0 {
            assert!(poll_once(&mut first).await.is_none());
        }
        for i in 10..20 {
            log.append_at(
                Bytes::copy_from_slice(&leader_batch(3 * i, 1, 3, i as u8, 100)),
                0,
            )
            .unwrap();
        }
        // Second flush: writes, then waits for the sync stage.
        let mut second = Box::pin(log.flush());
        for _ in 0..50 {
            assert!(poll_once(&mut second).await.is_none());
        }
        assert_eq!(plan.writes_in_flight.get(), 0, "its writes are done");
        // The truncation takes the write stage and queues for the sync stage.
        let mut truncation = Box::pin(log.truncate_to(15));
        assert!(poll_once(&mut truncation).await.is_none());
        first.await.unwrap();
        // The truncation runs before the second flush's sync.
        truncation.await.unwrap();
        assert_eq!(second.await.unwrap(), 15);
    });
    assert_eq!(log.high_watermark(), 15);
    assert_eq!(log.log_end_offset(), 15);
}

/// A truncation whose future is dropped: waiting for a flush stage, the log goes on as
/// before; midway through its IO, the log fails (its files may be half cut). Neither leaves
/// appends refused or the flusher stuck.
#[test]
fn an_abandoned_truncation_releases_the_log() {
    use futures_lite::future::poll_once;
    let dir = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::default();
    storage.plan.yield_each_io.set(true);
    let plan = storage.plan.clone();
    let (log, _) = follower_with(storage, dir.path(), 20);
    block_on(async {
        // Dropped while queued behind a flush's sync stage.
        log.append_at(Bytes::copy_from_slice(&leader_batch(60, 4, 1, 0, 10)), 0)
            .unwrap();
        let mut flush = Box::pin(log.flush());
        while plan.syncs_in_flight.get() == 0 {
            assert!(poll_once(&mut flush).await.is_none());
        }
        let mut truncation = Box::pin(log.truncate_to(30));
        assert!(poll_once(&mut truncation).await.is_none());
        drop(truncation);
        flush.await.unwrap();
        assert_eq!(log.log_end_offset(), 61);
        log.append_at(Bytes::copy_from_slice(&leader_batch(61, 4, 1, 0, 10)), 0)
            .unwrap();
        assert_eq!(log.flush().await.unwrap(), 62);

        // Dropped midway through its IO.
        let mut truncation = Box::pin(log.truncate_to(30));
        for _ in 0..3 {
            assert!(poll_once(&mut truncation).await.is_none());
        }
        drop(truncation);
        assert!(log.failure().is_some(), "the log failed");
        assert!(
            log.flush().await.is_err(),
            "and a flush says so instead of hanging"
        );
    });
}

#[test]
fn begin_epoch_stamps_later_appends_and_survives_reopen_once_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), small_segments());
    // A new log is at epoch 0, which already answers at the log end.
    assert_eq!(log.leader_epoch(), 0);
    assert_eq!(log.end_offset_for_epoch(0), (0, 0));
    log.append(&batch(2, b"zero", 5, -1, 0), 0).unwrap();
    // Epochs only grow; a refusal changes nothing.
    for stale in [-1, 0] {
        let e = log.begin_epoch(stale).unwrap_err();
        assert!(matches!(e, StorageError::ReplicaMismatch { .. }), "{e}");
    }
    assert_eq!(log.leader_epoch(), 0);
    log.begin_epoch(3).unwrap();
    assert_eq!(log.leader_epoch(), 3);
    // Begun, nothing written in it: no entry yet, but epoch 3 is current and ends at the
    // log end, and epoch 0 ends where 3 begins.
    assert_eq!(log.leader_epoch_entries(), vec![(0, 0)]);
    assert_eq!(log.end_offset_for_epoch(3), (3, 2));
    assert_eq!(log.end_offset_for_epoch(2), (0, 2));
    assert_eq!(log.end_offset_for_epoch(0), (0, 2));
    assert_eq!(
        log.end_offset_for_epoch(4),
        (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
    );
    log.append(&batch(1, b"three", 6, -1, 0), 0).unwrap();
    assert_eq!(log.leader_epoch_entries(), vec![(0, 0), (3, 2)]);
    block_on(log.flush()).unwrap();
    let stamped: Vec<i32> = read_raw(&log, 0)
        .iter()
        .map(|b| Header::parse(b).unwrap().leader_epoch)
        .collect();
    assert_eq!(stamped, vec![0, 3], "each batch carries its leader's epoch");
    // An epoch begun but never written in is not durable: the reopened log is at the
    // newest epoch it holds.
    log.begin_epoch(5).unwrap();
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(log.leader_epoch(), 3);
    assert_eq!(log.leader_epoch_entries(), vec![(0, 0), (3, 2)]);
    assert_eq!(log.end_offset_for_epoch(3), (3, 3));
}

#[test]
fn a_follower_append_of_a_newer_epoch_raises_the_current_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = follower_with(StdStorage, dir.path(), 4);
    assert_eq!(log.leader_epoch(), 4);
    // Becoming leader in an older term than the log holds is refused.
    assert!(log.begin_epoch(4).is_err());
    log.begin_epoch(5).unwrap();
    log.append(&batch(1, b"x", 7, -1, 0), 0).unwrap();
    assert_eq!(log.leader_epoch_entries(), vec![(1, 0), (4, 6), (5, 12)]);
}

/// A reset (a Raft snapshot: the log restarts empty at an offset) that fails at any sync
/// and loses power leaves either the finished reset or a prefix of the old log with its old
/// start; repeating it then finishes it, and appends continue at the new start.
#[test]
fn a_reset_is_crash_safe_and_repeatable() {
    for kind in 0..2 {
        for n in 1.. {
            let dir = tempfile::tempdir().unwrap();
            let (log, storage, batches) = modelled(dir.path(), 40);
            assert!(log.segment_count() > 4);
            block_on(log.close()).unwrap();
            drop(log);
            let arm = |n| match kind {
                0 => storage.plan.fail_fsync_in.set(n),
                _ => storage.plan.fail_sync_dir_in.set(n),
            };
            arm(n);
            let result = block_on(PartitionLog::reset_dir(&storage, dir.path(), 500));
            arm(0);
            storage.plan.power_loss();
            let log = open(StdStorage, dir.path(), small_segments());
            if log.log_start_offset() == 500 {
                assert_eq!(
                    log.log_end_offset(),
                    500,
                    "n {n}: a finished reset is empty"
                );
            } else {
                assert!(result.is_err(), "n {n}: a reset that returned is durable");
                assert_eq!(log.log_start_offset(), 0, "n {n}");
                let got = read_raw(&log, 0);
                assert_eq!(got, batches[..got.len()], "n {n}: a prefix of the old log");
                block_on(log.close()).unwrap();
                drop(log);
                block_on(PartitionLog::reset_dir(&StdStorage, dir.path(), 500)).unwrap();
            }
            let log = open(StdStorage, dir.path(), small_segments());
            assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
            assert!(log.leader_epoch_entries().is_empty());
            let b = leader_batch(500, 9, 3, 1, 100);
            log.append_at(Bytes::copy_from_slice(&b), 0).unwrap();
            block_on(log.flush()).unwrap();
            assert_eq!(read_raw(&log, 500), vec![b]);
            if result.is_ok() {
                break;
            }
        }
    }
}

#[test]
fn a_replicated_log_shows_readers_only_what_raft_committed() {
    use std::pin::pin;
    let dir = tempfile::tempdir().unwrap();
    let (log, batches) = follower_with(StdStorage, dir.path(), 10);
    assert_eq!(
        log.high_watermark(),
        30,
        "a single node's: the durable offset"
    );
    log.set_replicated();
    assert!(log.is_replicated());
    // Nothing committed yet: readers see nothing, replication sees every durable batch.
    assert_eq!(log.high_watermark(), 0);
    let r = block_on(log.read(0, 1 << 20)).unwrap();
    assert!(r.records.is_empty());
    assert_eq!(r.high_watermark, 0);
    let (bytes, next) = block_on(log.read_replica(0, 1 << 20)).unwrap();
    assert_eq!(next, 30);
    assert_eq!(bytes.to_vec(), batches.concat());
    assert_eq!(block_on(log.read_replica(30, 1 << 20)).unwrap().1, 30);
    assert!(block_on(log.read_replica(31, 1 << 20)).is_err());
    // Past the high watermark but within the log: nothing to read (as Kafka); past the log
    // end: out of range.
    assert!(block_on(log.read(20, 100)).unwrap().records.is_empty());
    let e = block_on(log.read(31, 100)).unwrap_err();
    assert!(
        matches!(
            e,
            StorageError::OffsetOutOfRange {
                high_watermark: 0,
                ..
            }
        ),
        "{e}"
    );

    // Raft commits up to offset 9: batches 0..=2 (offsets 0..9) are visible, not the one at 9.
    log.set_high_watermark(9);
    assert_eq!(log.high_watermark(), 9);
    assert_eq!(read_raw(&log, 0), batches[..3].to_vec());
    assert_eq!(block_on(log.read_next(0, 1 << 20)).unwrap().1, 9);
    let r = block_on(log.read(9, 1 << 20)).unwrap();
    assert!(r.records.is_empty());
    assert_eq!(r.high_watermark, 9);
    log.set_high_watermark(5);
    assert_eq!(log.high_watermark(), 9, "monotonic");
    // Timestamps (1000 + base offset here) above the high watermark are not exposed.
    assert_eq!(
        block_on(log.offset_for_timestamp(1_005)).unwrap(),
        Some((6, 1_006))
    );
    assert_eq!(block_on(log.offset_for_timestamp(1_009)).unwrap(), None);
    assert!(log.max_timestamp().is_none_or(|(o, _)| o < 9));
    // DeleteRecords stops at the high watermark.
    assert!(block_on(log.delete_records_before(10)).is_err());
    assert_eq!(block_on(log.delete_records_before(9)).unwrap(), 9);

    // A fetch long-poll wakes when Raft moves the high watermark.
    let mut waiting = pin!(log.wait_high_watermark_above(9));
    assert!(block_on(futures_lite::future::poll_once(&mut waiting)).is_none());
    log.set_high_watermark(12);
    assert!(block_on(futures_lite::future::poll_once(&mut waiting)).is_some());

    // Raft's high watermark past the durable offset: clamped to it, and a waiter wakes when
    // the sync moves the durable offset.
    log.set_high_watermark(1_000);
    assert_eq!(log.high_watermark(), 30);
    log.append_at(Bytes::copy_from_slice(&leader_batch(30, 4, 3, 7, 100)), 0)
        .unwrap();
    assert_eq!(log.high_watermark(), 30, "not durable yet");
    assert!(block_on(log.read_replica(30, 1 << 20))
        .unwrap()
        .0
        .is_empty());
    let mut waiting = pin!(log.wait_high_watermark_above(30));
    assert!(block_on(futures_lite::future::poll_once(&mut waiting)).is_none());
    block_on(log.flush()).unwrap();
    assert!(block_on(futures_lite::future::poll_once(&mut waiting)).is_some());
    assert_eq!(log.high_watermark(), 33);

    // Retention never passes the high watermark of a replicated log either.
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = follower_with(StdStorage, dir.path(), 40);
    log.set_replicated();
    log.set_high_watermark(45);
    let mut cfg = small_segments();
    cfg.retention_ms = 0;
    log.set_config(cfg).unwrap();
    let to = log.retention_offset(i64::MAX / 2).expect("old segments");
    assert!(to <= 45, "retention to {to} past the high watermark 45");
    block_on(log.enforce_retention(i64::MAX / 2)).unwrap();
    assert_eq!(log.log_start_offset(), to);
}

/// A replicated log's start may pass its first Raft entry (DeleteRecords through Raft):
/// readers see from the new start (inside a batch too), replication still reads from the
/// first segment kept, segments go only below both, and the start survives a reopen.
#[test]
fn a_replicated_log_start_moves_past_the_segments_it_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let (log, batches) = follower_with(StdStorage, dir.path(), 30);
    log.set_replicated();
    log.set_high_watermark(60);
    assert!(log.segment_count() > 3);
    // Raised in memory at once: a read below it is out of range.
    assert_eq!(log.raise_replica_start(40), 40);
    assert!(matches!(
        block_on(log.read(39, 1 << 20)),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    // Not past the high watermark.
    assert_eq!(log.raise_replica_start(61), 40);
    // Persisted; the segments below the Raft log start (30) go, those after it stay.
    assert_eq!(block_on(log.move_replica_start(40, 30)).unwrap(), 40);
    let kept = log.retained_start();
    assert!(kept > 0 && kept <= 30, "{kept}");
    let (bytes, _) = block_on(log.read_replica(30, 1 << 20)).unwrap();
    assert_eq!(&bytes[..batches[10].len()], &batches[10][..]);
    assert!(block_on(log.read_replica(kept - 1, 1 << 20)).is_err());
    // Inside a batch: the read returns the batch holding it.
    let r = block_on(log.read(40, 1 << 20)).unwrap();
    assert_eq!(r.log_start_offset, 40);
    assert_eq!(&r.records[..batches[13].len()], &batches[13][..]);
    // Past the high watermark: refused, nothing moves.
    assert!(block_on(log.move_replica_start(61, 30)).is_err());
    block_on(log.close()).unwrap();
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(log.log_start_offset(), 40);
    assert_eq!(log.retained_start(), kept);
}

/// Appends `n` more 3-record batches of epoch 4 after `batches` (payload bytes from
/// `fill`), not flushed.
fn append_epoch_4<S: Storage>(
    log: &PartitionLog<S>,
    batches: &mut Vec<Vec<u8>>,
    n: usize,
    fill: usize,
) {
    for i in 0..n {
        let base = 3 * batches.len() as i64;
        let b = leader_batch(base, 4, 3, (fill + i) as u8, 700);
        log.append_at(Bytes::copy_from_slice(&b), 0).unwrap();
        batches.push(b);
    }
}

#[test]
fn written_ahead_appends_are_durable_only_after_the_next_flush() {
    for truncate in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (log, storage, mut batches) = modelled(dir.path(), 10);
        let flushed = batches.len();
        // Appends across several (small) segments, written ahead in three passes.
        for pass in 0..3 {
            append_epoch_4(&log, &mut batches, 8, pass * 8);
            block_on(log.write_ahead()).unwrap();
            assert!(
                !log.needs_flush(),
                "pass {pass}: everything appended is written"
            );
            assert_eq!(log.high_watermark(), 3 * flushed as i64, "not durable yet");
        }
        if truncate {
            // A divergent suffix cut between the write-ahead and the flush: what the
            // write-ahead wrote past the cut must not count as durable.
            block_on(log.truncate_to(3 * 20)).unwrap();
            batches.truncate(20);
        }
        assert!(log.segment_count() > 2);
        let end = block_on(log.flush()).unwrap();
        assert_eq!(end, 3 * batches.len() as i64, "truncate {truncate}");
        assert_eq!(log.high_watermark(), end);
        storage.plan.power_loss();
        drop(log);
        let log = open(StdStorage, dir.path(), small_segments());
        assert_eq!(read_raw(&log, 0), batches, "truncate {truncate}");
    }
}

#[test]
fn a_power_loss_after_a_write_ahead_keeps_the_flushed_prefix_and_close_syncs_it() {
    let dir = tempfile::tempdir().unwrap();
    let (log, storage, mut batches) = modelled(dir.path(), 10);
    append_epoch_4(&log, &mut batches, 12, 0);
    block_on(log.write_ahead()).unwrap();
    storage.plan.power_loss();
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    let kept = read_raw(&log, 0);
    assert!(
        kept.len() >= 10 && batches.starts_with(&kept),
        "{}",
        kept.len()
    );
    drop(log);

    // With nothing left to write, a close still syncs what was written ahead.
    let dir = tempfile::tempdir().unwrap();
    let (log, storage, mut batches) = modelled(dir.path(), 10);
    append_epoch_4(&log, &mut batches, 12, 0);
    block_on(log.write_ahead()).unwrap();
    block_on(log.close()).unwrap();
    storage.plan.power_loss();
    drop(log);
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(read_raw(&log, 0), batches);
}
