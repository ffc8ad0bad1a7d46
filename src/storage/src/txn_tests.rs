//! Transactions in the partition log: the last stable offset, read_committed reads with
//! their aborted transactions, the checks on markers and on writes outside a transaction,
//! and all of it across a roll and a restart.

use futures_lite::future::block_on;

use crate::config::LogConfig;
use crate::hdr::testing::{batch, txn_batch};
use crate::hdr::Header;
use crate::io::Storage;
use crate::log::PartitionLog;
use crate::log_tests::{open, small_segments};
use crate::std_io::StdStorage;
use crate::txn::Marker;

fn commit(coordinator_epoch: i32) -> Marker {
    Marker {
        commit: true,
        coordinator_epoch,
    }
}

fn abort(coordinator_epoch: i32) -> Marker {
    Marker {
        commit: false,
        coordinator_epoch,
    }
}

/// (base offset, last offset) of each batch a read_committed read returned; the aborted
/// transactions (producer id, first offset) it named; the last stable offset.
type CommittedView = (Vec<(i64, i64)>, Vec<(i64, i64)>, i64);

/// What a read_committed read from `from` returns, as a [`CommittedView`].
fn read_committed<S: Storage>(log: &PartitionLog<S>, from: i64) -> CommittedView {
    let r = block_on(log.read_committed(from, 1 << 20)).expect("read_committed");
    let mut batches = Vec::new();
    let mut at = 0;
    let records = &r.outcome.records;
    while at < records.len() {
        let h = Header::parse(&records[at..]).expect("whole batch");
        batches.push((h.base_offset, h.last_offset()));
        at += h.size;
    }
    (batches, r.aborted, r.last_stable_offset)
}

#[test]
fn read_committed_stops_at_the_oldest_open_transaction_and_names_the_aborted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), LogConfig::default());
    log.append(&batch(3, b"plain", 1, -1, 0), 0).unwrap(); // 0-2
    log.append(&txn_batch(2, b"t7", 1, 7, 0), 0).unwrap(); // 3-4, producer 7 opens
    log.append(&txn_batch(1, b"t8", 1, 8, 0), 0).unwrap(); // 5, producer 8 opens
    log.append(&batch(1, b"plain", 1, -1, 0), 0).unwrap(); // 6
                                                           // A plain batch from a producer inside a transaction is refused, and writes nothing.
    let e = log.append(&batch(1, b"x", 1, 7, 2), 0).unwrap_err();
    assert_eq!(e.kafka_error_code(), 48, "INVALID_TXN_STATE");
    block_on(log.flush()).unwrap();
    assert_eq!(log.high_watermark(), 7);
    assert_eq!(log.last_stable_offset(), 3);
    assert_eq!(read_committed(&log, 0), (vec![(0, 2)], vec![], 3));
    assert_eq!(
        read_committed(&log, 3),
        (vec![], vec![], 3),
        "nothing at the LSO"
    );

    // Producer 7 aborts. Until the marker is durable (below the high watermark) nothing
    // changes for readers.
    let m = log.append_marker(7, 0, abort(4), 0).unwrap();
    assert_eq!(m.base_offset, 7);
    assert_eq!(log.last_stable_offset(), 3);
    block_on(log.flush()).unwrap();
    assert_eq!(log.last_stable_offset(), 5, "producer 8 is still open");
    assert_eq!(
        read_committed(&log, 0),
        (vec![(0, 2), (3, 4)], vec![(7, 3)], 5)
    );
    // A marker from an older coordinator than producer 7's last, or for an older epoch
    // of producer 7, is refused.
    let e = log.append_marker(7, 0, commit(3), 0).unwrap_err();
    assert_eq!(e.kafka_error_code(), 52, "TRANSACTION_COORDINATOR_FENCED");
    let e = log.append_marker(7, -1, commit(4), 0).unwrap_err();
    assert_eq!(e.kafka_error_code(), 47, "INVALID_PRODUCER_EPOCH");
    log.append(&txn_batch(1, b"t8", 1, 8, 1), 0).unwrap(); // 8
    log.append_marker(8, 0, commit(4), 0).unwrap(); // 9
    block_on(log.flush()).unwrap();
    assert_eq!(log.last_stable_offset(), 10);
    let (batches, aborted, lso) = read_committed(&log, 5);
    assert_eq!(batches, vec![(5, 5), (6, 6), (7, 7), (8, 8), (9, 9)]);
    assert_eq!(aborted, vec![(7, 3)], "its marker is in the range read");
    assert_eq!(lso, 10);
    assert_eq!(read_committed(&log, 8).1, vec![], "past producer 7's abort");
    // The read_uncommitted view is unchanged: everything below the high watermark.
    assert_eq!(block_on(log.read(0, 1 << 20)).unwrap().high_watermark, 10);
}

#[test]
fn transactions_survive_a_roll_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let payload = vec![1u8; 900];
    let (aborted_first, open_first) = {
        let log = open(StdStorage, dir.path(), small_segments());
        let first = log
            .append(&txn_batch(1, &payload, 1, 1, 0), 0)
            .unwrap()
            .base_offset;
        for seq in 1..4 {
            log.append(&txn_batch(1, &payload, 1, 1, seq), 0).unwrap();
        }
        log.append_marker(1, 0, abort(0), 0).unwrap();
        let open_first = log
            .append(&txn_batch(1, &payload, 1, 2, 0), 0)
            .unwrap()
            .base_offset;
        // Enough to roll the segments holding both past the marker's.
        for seq in 0..12 {
            log.append(&batch(1, &payload, 1, -1, seq), 0).unwrap();
        }
        block_on(log.flush()).unwrap();
        assert!(log.segment_count() >= 3);
        block_on(log.close()).unwrap();
        (first, open_first)
    };
    let txnindex: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".txnindex"))
        .collect();
    assert_eq!(
        txnindex.len(),
        1,
        "the sealed segment with the abort has an index"
    );

    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(
        log.last_stable_offset(),
        open_first,
        "producer 2 is still open"
    );
    let (_, aborted, _) = read_committed(&log, 0);
    assert_eq!(aborted, vec![(1, aborted_first)]);
    // Producer 2 may still end its transaction; then everything is stable.
    log.append_marker(2, 0, commit(0), 0).unwrap();
    block_on(log.flush()).unwrap();
    assert_eq!(log.last_stable_offset(), log.high_watermark());
}

#[test]
fn a_truncation_that_removes_a_marker_reopens_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), small_segments());
    let payload = vec![3u8; 700];
    let first = log
        .append(&txn_batch(1, &payload, 1, 1, 0), 0)
        .unwrap()
        .base_offset;
    for seq in 1..6 {
        log.append(&txn_batch(1, &payload, 1, 1, seq), 0).unwrap();
    }
    let marker = log.append_marker(1, 0, abort(0), 0).unwrap().base_offset;
    log.append(&batch(1, &payload, 1, -1, 0), 0).unwrap();
    block_on(log.flush()).unwrap();
    assert!(
        log.segment_count() >= 2,
        "the rebuild starts from a roll's snapshot"
    );
    assert_eq!(log.last_stable_offset(), log.high_watermark());
    assert_eq!(read_committed(&log, 0).1, vec![(1, first)]);

    block_on(log.truncate_to(marker)).unwrap();
    assert_eq!(log.last_stable_offset(), first, "open again");
    assert_eq!(read_committed(&log, 0).1, vec![], "no longer aborted");
    // The new leader's marker decides it again.
    log.append_marker(1, 0, commit(0), 0).unwrap();
    block_on(log.flush()).unwrap();
    assert_eq!(log.last_stable_offset(), log.high_watermark());
    assert_eq!(read_committed(&log, 0).1, vec![]);
}

#[test]
fn a_truncation_into_a_sealed_segment_drops_its_stale_aborted_index() {
    let dir = tempfile::tempdir().unwrap();
    let payload = vec![5u8; 900];
    let txnindex_files = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".txnindex"))
            .count()
    };
    {
        let log = open(StdStorage, dir.path(), small_segments());
        log.append(&txn_batch(1, &payload, 1, 1, 0), 0).unwrap();
        let marker = log.append_marker(1, 0, abort(0), 0).unwrap().base_offset;
        for seq in 0..8 {
            log.append(&batch(1, &payload, 1, -1, seq), 0).unwrap();
        }
        block_on(log.flush()).unwrap();
        assert_eq!(txnindex_files(dir.path()), 1, "sealed with its abort");
        block_on(log.truncate_to(marker)).unwrap();
        assert_eq!(
            txnindex_files(dir.path()),
            0,
            "it described the cut-off marker"
        );
        // This time the transaction commits, and the segment is sealed again.
        log.append_marker(1, 0, commit(0), 0).unwrap();
        for seq in 0..8 {
            log.append(&batch(1, &payload, 1, -1, seq), 0).unwrap();
        }
        block_on(log.flush()).unwrap();
        assert_eq!(txnindex_files(dir.path()), 0);
        block_on(log.close()).unwrap();
    }
    let log = open(StdStorage, dir.path(), small_segments());
    assert_eq!(
        read_committed(&log, 0).1,
        vec![],
        "nothing aborted any more"
    );
    assert_eq!(log.last_stable_offset(), log.high_watermark());
}

#[test]
fn verify_checks_the_aborted_transaction_index() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("t-0");
    let payload = vec![7u8; 900];
    {
        let log = open(StdStorage, &dir, small_segments());
        log.append(&txn_batch(1, &payload, 1, 1, 0), 0).unwrap();
        log.append_marker(1, 0, abort(0), 0).unwrap();
        for seq in 0..8 {
            log.append(&batch(1, &payload, 1, -1, seq), 0).unwrap();
        }
        block_on(log.flush()).unwrap();
        block_on(log.close()).unwrap();
    }
    let r = crate::verify::verify_data_dir(root.path()).unwrap();
    assert!(r.is_clean(), "{:?}", r.problems);
    let index = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".txnindex"))
        .expect("a .txnindex")
        .path();
    let mut bytes = std::fs::read(&index).unwrap();
    let last = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[last] ^= 0xff;
    std::fs::write(&index, bytes).unwrap();
    let r = crate::verify::verify_data_dir(root.path()).unwrap();
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
}

/// After a power loss, a transaction is open exactly when its marker did not survive, and
/// an abort's entry survives with its marker, across rolls (snapshots) and without.
#[test]
fn after_a_power_loss_open_transactions_match_the_markers_that_survive() {
    for (rolls, flush_marker) in [(false, false), (false, true), (true, false), (true, true)] {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::fault::FaultyStorage::default();
        storage.plan.model_durability();
        let log = open(storage.clone(), dir.path(), small_segments());
        let payload = vec![9u8; if rolls { 900 } else { 50 }];
        let first = log
            .append(&txn_batch(1, &payload, 1, 1, 0), 0)
            .unwrap()
            .base_offset;
        for seq in 1..5 {
            log.append(&txn_batch(1, &payload, 1, 1, seq), 0).unwrap();
        }
        block_on(log.flush()).unwrap();
        log.append_marker(1, 0, abort(0), 0).unwrap();
        if flush_marker {
            block_on(log.flush()).unwrap();
        }
        storage.plan.power_loss();
        drop(log);
        let log = open(StdStorage, dir.path(), small_segments());
        let case = format!("rolls {rolls}, marker flushed {flush_marker}");
        if flush_marker {
            assert_eq!(log.last_stable_offset(), log.high_watermark(), "{case}");
            assert_eq!(read_committed(&log, 0).1, vec![(1, first)], "{case}");
        } else {
            assert_eq!(log.last_stable_offset(), first, "{case}: open again");
            assert_eq!(read_committed(&log, 0).1, vec![], "{case}");
        }
    }
}

#[test]
fn active_producers_show_sequences_and_open_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), LogConfig::default());
    log.append(&batch(3, b"idem", 1_000, 4, 0), 0).unwrap(); // 0-2, sequences 0-2
    log.append(&txn_batch(2, b"txn", 2_000, 9, 0), 0).unwrap(); // 3-4
    let p = log.active_producers();
    assert_eq!(p.len(), 2);
    assert_eq!(
        (
            p[0].producer_id,
            p[0].epoch,
            p[0].last_sequence,
            p[0].last_timestamp
        ),
        (4, 0, 2, 1_000)
    );
    assert_eq!((p[0].coordinator_epoch, p[0].txn_start_offset), (-1, -1));
    assert_eq!((p[1].producer_id, p[1].txn_start_offset), (9, 3));
    log.append_marker(9, 0, commit(6), 0).unwrap();
    let p = log.active_producers();
    assert_eq!((p[1].coordinator_epoch, p[1].txn_start_offset), (6, -1));
}

#[test]
fn coordinator_batches_have_no_sequence_to_check_and_open_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), LogConfig::default());
    // Two TxnOffsetCommit batches of producer 9 alike in shape: as client batches the second
    // would be a duplicate of the first; as the coordinator's (no sequence) both are stored.
    let a = log
        .append_coordinator(&txn_batch(1, b"o1", 1, 9, -1), 0)
        .unwrap();
    let b = log
        .append_coordinator(&txn_batch(1, b"o2", 1, 9, -1), 0)
        .unwrap();
    assert!(!a.duplicate && !b.duplicate);
    assert_eq!((a.base_offset, b.base_offset), (0, 1));
    block_on(log.flush()).unwrap();
    assert_eq!(log.last_stable_offset(), 0, "the transaction is open");
    log.append_marker(9, 0, commit(0), 0).unwrap();
    block_on(log.flush()).unwrap();
    assert_eq!(log.last_stable_offset(), 3);
    // An older epoch than the producer's is refused, as for a client's batch.
    log.append_marker(9, 1, abort(0), 0).unwrap();
    let e = log
        .append_coordinator(&txn_batch(1, b"o3", 1, 9, -1), 0)
        .unwrap_err();
    assert_eq!(e.kafka_error_code(), 47, "INVALID_PRODUCER_EPOCH");
}

#[test]
fn the_marker_count_and_open_transactions_guard_a_verified_produce() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), LogConfig::default());
    assert_eq!((log.markers_seen(), log.has_open_txn(7)), (0, false));
    log.append(&txn_batch(1, b"t7", 1, 7, 0), 0).unwrap();
    assert!(log.has_open_txn(7), "its first batch opened it");
    // A marker (here, or proposed by a replicated partition's leader) moves the count a
    // verification took before it: that verification no longer holds.
    log.append_marker(7, 0, commit(0), 0).unwrap();
    assert_eq!((log.markers_seen(), log.has_open_txn(7)), (1, false));
    log.note_marker_proposed();
    assert_eq!(log.markers_seen(), 2);
    // A refused marker counts for nothing.
    assert!(log.append_marker(7, 0, abort(-5), 0).is_err());
    assert_eq!(log.markers_seen(), 2);
}
