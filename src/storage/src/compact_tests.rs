//! Tests of the log cleaner against real files: the latest record per key stays at its
//! offset, batches keep their ranges, a restart reads the same, the dirty ratio gates a
//! pass, tombstones wait for their delete horizon, merged segments keep producer state,
//! and a power loss at any sync of a pass leaves the old segment set or the new one.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use futures_lite::future::block_on;
use sluice_codec::kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::config::LogConfig;
use crate::fault::FaultyStorage;
use crate::hdr::Header;
use crate::io::Storage;
use crate::log::{CompactOptions, PartitionLog};
use crate::log_tests::{open, small_segments};
use crate::std_io::StdStorage;

const NOW: i64 = 1_700_000_000_000;

fn compacted() -> LogConfig {
    LogConfig {
        compact: true,
        retention_ms: -1,
        ..small_segments()
    }
}

/// A batch at `base` of `(key, value)` records (`None` key: keyless; `None` value: a
/// tombstone), every record stamped `ts`. Shared with `compact.rs`'s tests.
pub(crate) fn records_batch(
    base: i64,
    kv: &[(Option<&str>, Option<&str>)],
    ts: i64,
    c: Compression,
) -> Vec<u8> {
    producer_batch(base, kv, ts, c, (-1, -1, 0))
}

/// [`records_batch`] of an idempotent producer: `(producer id, epoch, first sequence)`.
fn producer_batch(
    base: i64,
    kv: &[(Option<&str>, Option<&str>)],
    ts: i64,
    c: Compression,
    (producer_id, producer_epoch, first_seq): (i64, i16, i32),
) -> Vec<u8> {
    let records: Vec<Record> = kv
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: base + i as i64,
            // The encoder starts a new batch where offset - sequence changes.
            sequence: first_seq + i as i32,
            timestamp: ts,
            key: k.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: c,
        },
    )
    .unwrap();
    buf.to_vec()
}

/// [`records_batch`] of keyed records, for appending (the log assigns the offsets).
fn keyed(kv: &[(&str, Option<&str>)], ts: i64, c: Compression) -> Vec<u8> {
    let kv: Vec<(Option<&str>, Option<&str>)> = kv.iter().map(|(k, v)| (Some(*k), *v)).collect();
    records_batch(0, &kv, ts, c)
}

/// Every record readable from the log start: (offset, key, value).
type Records = Vec<(i64, String, Option<String>)>;

/// A consumer's view: every read holds a batch with records unless it reaches the end,
/// runs of emptied batches come as one, and the batches cover the log without gaps.
fn read_records<S: Storage>(log: &PartitionLog<S>) -> Records {
    let mut out = Vec::new();
    // The last offset of the batches read so far.
    let mut covered: Option<i64> = None;
    let mut from = log.log_start_offset();
    while from < log.high_watermark() {
        let r = block_on(log.read(from, 1 << 20)).expect("read");
        assert!(!r.records.is_empty(), "empty read at {from}");
        let (live, empties) = batch_kinds(&r.records);
        assert!(
            live > 0 || last_offset(&r.records) + 1 == log.high_watermark(),
            "a read at {from} of emptied batches only, short of the end"
        );
        assert!(empties <= live + 1, "runs of emptied batches come as one");
        let mut at = 0;
        while at < r.records.len() {
            let h = Header::parse(&r.records[at..]).expect("whole batch");
            h.verify(&r.records[at..at + h.size]).expect("crc");
            if let Some(last) = covered {
                assert_eq!(h.base_offset, last + 1, "batches cover the log");
            }
            covered = Some(h.last_offset());
            let mut one = r.records.slice(at..at + h.size);
            let set = RecordBatchDecoder::decode(&mut one).expect("decodes");
            for rec in set.records {
                let s = |b: &Bytes| String::from_utf8(b.to_vec()).unwrap();
                out.push((
                    rec.offset,
                    s(rec.key.as_ref().unwrap()),
                    rec.value.as_ref().map(s),
                ));
            }
            from = h.last_offset() + 1;
            at += h.size;
        }
    }
    out
}

/// Batches with records and without, in `records`.
fn batch_kinds(records: &[u8]) -> (usize, usize) {
    let (mut live, mut empty, mut at) = (0, 0, 0);
    while let Some(h) = records.get(at..).and_then(Header::parse) {
        if h.records_count == 0 {
            empty += 1;
        } else {
            live += 1;
        }
        at += h.size;
    }
    (live, empty)
}

fn last_offset(records: &[u8]) -> i64 {
    let (mut last, mut at) = (-1, 0);
    while let Some(h) = records.get(at..).and_then(Header::parse) {
        last = h.last_offset();
        at += h.size;
    }
    last
}

/// The batches as stored (replication's view): (base, last) of each.
fn stored_ranges<S: Storage>(log: &PartitionLog<S>) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut from = log.log_start_offset();
    while from < log.high_watermark() {
        let (records, next) = block_on(log.read_replica(from, 1 << 20)).expect("read");
        let mut at = 0;
        while let Some(h) = records.get(at..).and_then(Header::parse) {
            out.push((h.base_offset, h.last_offset()));
            at += h.size;
        }
        from = next;
    }
    out
}

/// The latest value per key of `records` (what a compacted log must still hold).
fn latest(records: &Records) -> BTreeMap<String, (i64, Option<String>)> {
    let mut m = BTreeMap::new();
    for (o, k, v) in records {
        m.insert(k.clone(), (*o, v.clone()));
    }
    m
}

/// 60 batches over 8 keys (each tombstone superseded by a later value of its key), then
/// flushed: several closed segments and an active one.
fn fill<S: Storage>(log: &PartitionLog<S>, c: Compression) {
    for i in 0..60 {
        let k = |j: usize| format!("key-{}", (i * 3 + j) % 8);
        // Values that do not compress away, so compressed logs roll segments too.
        let noise: String = (0..6u64)
            .map(|j| {
                format!(
                    "{:016x}",
                    (i as u64 * 6 + j).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                )
            })
            .collect();
        let v = format!("value-{i}-{noise}");
        let (k0, k1, k2) = (k(0), k(1), k(2));
        let tomb = i % 11 == 10;
        let kv: Vec<(&str, Option<&str>)> = vec![
            (&k0, Some(&v)),
            (&k1, if tomb { None } else { Some(&v) }),
            (&k2, Some(&v)),
        ];
        log.append(&keyed(&kv, NOW - 100_000_000 + i as i64, c), NOW)
            .expect("append");
        if i % 10 == 9 {
            block_on(log.flush()).unwrap();
        }
    }
    block_on(log.flush()).unwrap();
}

fn opts() -> CompactOptions {
    CompactOptions {
        now_ms: NOW,
        map_keys_max: 10_000,
        io_budget: None,
    }
}

/// A budget that never waits and counts what it was told.
#[derive(Default)]
struct Counted(std::cell::Cell<u64>);

impl crate::log::IoBudget for Counted {
    fn spend(&self, bytes: u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>> {
        self.0.set(self.0.get() + bytes);
        Box::pin(std::future::ready(()))
    }
}

#[test]
fn the_latest_record_per_key_stays_at_its_offset_across_a_restart() {
    for c in [Compression::None, Compression::Zstd] {
        let dir = tempfile::tempdir().unwrap();
        let log = open(StdStorage, dir.path(), compacted());
        fill(&log, c);
        let before = read_records(&log);
        let ranges_before = stored_ranges(&log);
        let segments = log.segment_count();
        assert!(segments >= 3, "{segments} segments");
        let budget = std::rc::Rc::new(Counted::default());
        let stats = block_on(log.compact(CompactOptions {
            io_budget: Some(budget.clone()),
            ..opts()
        }))
        .unwrap();
        assert!(stats.segments_rewritten > 0, "{stats:?}");
        assert!(stats.bytes_after < stats.bytes_before, "{stats:?}");
        // Every byte the pass read (mapping, cleaning) and wrote went through the budget.
        let spent = budget.0.get();
        assert!(
            spent >= 2 * stats.bytes_before + stats.bytes_after,
            "{spent} bytes paced: {stats:?}"
        );
        // The cleaned segments, small now, were merged: fewer files, the same batches.
        assert!(stats.segments_merged > 0, "{stats:?}");
        assert_eq!(log.segment_count(), segments - stats.segments_merged);
        let after = read_records(&log);
        let ranges_after = stored_ranges(&log);
        assert_eq!(
            ranges_after, ranges_before,
            "every batch keeps its range ({c:?})"
        );
        assert!(after.len() < before.len());
        // What the cleaned range held, every key's latest record is still there, at its
        // offset; everything above the range is untouched.
        let to = stats.cleaned_to.unwrap();
        let want = latest(&before);
        let got = latest(&after);
        assert_eq!(got, want, "latest per key ({c:?})");
        // Below it, only the range's own latest per key (records newer than the range
        // were not mapped, so what they supersede may stay until a later pass).
        let in_range: Records = before.iter().filter(|r| r.0 < to).cloned().collect();
        let range_latest = latest(&in_range);
        let superseded: Vec<_> = after
            .iter()
            .filter(|(o, k, _)| *o < to && range_latest[k].0 != *o)
            .collect();
        assert!(superseded.is_empty(), "{superseded:?}");
        assert_eq!(
            after.iter().filter(|r| r.0 >= to).collect::<Vec<_>>(),
            before.iter().filter(|r| r.0 >= to).collect::<Vec<_>>()
        );
        // Tombstones below the range went (each has a later value in the range).
        assert!(after.iter().all(|(o, _, v)| *o >= to || v.is_some()));
        // A second pass finds nothing dirty.
        let again = block_on(log.compact(opts())).unwrap();
        assert_eq!(again.segments_rewritten, 0, "{again:?}");
        // Appends go on; a restart reads the same log.
        log.append(&keyed(&[("key-0", Some("new"))], NOW, c), NOW)
            .unwrap();
        block_on(log.flush()).unwrap();
        let live = read_records(&log);
        block_on(log.close()).unwrap();
        drop(log);
        let log = open(StdStorage, dir.path(), compacted());
        assert_eq!(read_records(&log), live, "after a restart ({c:?})");
        // The cleaner's checkpoint: what it cleaned is not cleaned again after a restart.
        let after = block_on(log.compact(opts())).unwrap();
        assert_eq!(after.segments_cleanable, 0, "{after:?}");
        assert_eq!(
            latest(&live)["key-0"].1.as_deref(),
            Some("new"),
            "the newest append"
        );
    }
}

/// KIP-534: a tombstone that is its key's latest stays for `delete.retention.ms` from the
/// pass that first kept it, not from its own (old) timestamp; the horizon is in the batch
/// and in the cleaner's checkpoint, so a restart keeps it; the pass at the horizon removes
/// it even though nothing is dirty.
#[test]
fn a_tombstone_stays_until_its_delete_horizon_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let retention = 3_600_000;
    let cfg = LogConfig {
        delete_retention_ms: retention,
        ..compacted()
    };
    let log = open(StdStorage, dir.path(), cfg.clone());
    // A tombstone a day older than NOW, below everything `fill` writes.
    let old = NOW - 86_400_000;
    log.append(&keyed(&[("gone", None)], old, Compression::None), NOW)
        .unwrap();
    fill(&log, Compression::None);
    let tombstone = |log: &PartitionLog<StdStorage>| {
        read_records(log)
            .into_iter()
            .find(|(_, k, _)| k == "gone")
            .map(|(o, _, v)| (o, v))
    };
    assert_eq!(tombstone(&log), Some((0, None)));
    let first = block_on(log.compact(opts())).unwrap();
    assert!(first.segments_rewritten > 0, "{first:?}");
    assert_eq!(tombstone(&log), Some((0, None)), "kept by the first pass");
    let h = Header::parse(&block_on(log.read_replica(0, 1 << 20)).unwrap().0).unwrap();
    assert_eq!(
        h.delete_horizon(),
        Some(NOW + retention),
        "the horizon is stored"
    );
    let at = |now_ms| CompactOptions { now_ms, ..opts() };
    // Not dirty and before the horizon: no pass.
    let before = block_on(log.compact(at(NOW + retention - 1))).unwrap();
    assert_eq!(before.cleaned_to, None, "{before:?}");
    // After a restart the checkpoint says the log is clean and when the tombstone is due;
    // the batch says it too (a pass without the checkpoint finds it, below).
    block_on(log.close()).unwrap();
    drop(log);
    let log = open(StdStorage, dir.path(), cfg.clone());
    let after_restart = block_on(log.compact(at(NOW + retention - 1))).unwrap();
    assert_eq!(after_restart.cleaned_to, None, "clean after a restart");
    assert_eq!(tombstone(&log), Some((0, None)), "still before the horizon");
    block_on(log.close()).unwrap();
    drop(log);
    std::fs::remove_file(dir.path().join(crate::log::CLEANER_CHECKPOINT_FILE)).unwrap();
    let log = open(StdStorage, dir.path(), cfg);
    let unchecked = block_on(log.compact(at(NOW + retention - 1))).unwrap();
    assert!(
        unchecked.cleaned_to.is_some(),
        "no checkpoint: all of it is dirty"
    );
    assert_eq!(
        tombstone(&log),
        Some((0, None)),
        "the batch's horizon holds it"
    );
    // At the horizon: a pass runs although nothing is dirty, and the tombstone goes.
    let due = block_on(log.compact(at(NOW + retention))).unwrap();
    assert!(due.records_removed >= 1, "{due:?}");
    assert_eq!(tombstone(&log), None);
    assert_eq!(log.log_start_offset(), 0, "its batch stays, emptied");
}

#[test]
fn a_pass_waits_for_the_dirty_ratio_and_the_compaction_lag() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        min_compaction_lag_ms: 200_000_000,
        ..compacted()
    };
    let log = open(StdStorage, dir.path(), cfg);
    fill(&log, Compression::None);
    let stats = block_on(log.compact(opts())).unwrap();
    assert_eq!(
        stats.cleaned_to, None,
        "every record is within the lag: {stats:?}"
    );
    let lagless = LogConfig {
        min_cleanable_dirty_ratio: 0.99,
        ..compacted()
    };
    log.set_config(lagless).unwrap();
    let first = block_on(log.compact(opts())).unwrap();
    assert!(first.segments_rewritten > 0, "all of it is dirty at first");
    // A little more written: below 99 % dirty, no pass.
    let segments = log.segment_count();
    for i in 0..12 {
        let v = format!("more-{i}-{}", "m".repeat(400));
        log.append(&keyed(&[("key-1", Some(&v))], NOW, Compression::None), NOW)
            .unwrap();
    }
    block_on(log.flush()).unwrap();
    assert!(log.segment_count() > segments, "a dirty segment closed");
    let second = block_on(log.compact(opts())).unwrap();
    assert_eq!(second.cleaned_to, None, "{second:?}");
    // Unless the dirty part has waited past max.compaction.lag.ms.
    log.set_config(LogConfig {
        max_compaction_lag_ms: 1_000,
        ..log.config()
    })
    .unwrap();
    let overdue = block_on(log.compact(CompactOptions {
        now_ms: NOW + 10_000,
        ..opts()
    }))
    .unwrap();
    assert!(overdue.cleaned_to.is_some(), "{overdue:?}");
    // A log without compaction is never cleaned.
    let plain = tempfile::tempdir().unwrap();
    let log = open(StdStorage, plain.path(), small_segments());
    fill(&log, Compression::None);
    assert_eq!(block_on(log.compact(opts())).unwrap().cleaned_to, None);
}

/// A merge takes the producer snapshots at the merged-away segments' bases with them: open
/// replays producer state from the newest snapshot by whole segments, so a snapshot left
/// inside a merged segment would skip the batches after it. Shown with the snapshots above
/// the producer's batches lost (as a crash before a roll's snapshot is written may lose
/// the newest): the producer's last sequence is still known after a restart.
#[test]
fn producer_state_is_whole_after_a_merge_and_a_restart() {
    use crate::producer::SeqCheck;
    let dir = tempfile::tempdir().unwrap();
    let log = open(StdStorage, dir.path(), compacted());
    // Producer 100 (epoch 0): 30 batches of 3 records over 4 keys, sequences 0..90, over
    // several segments that cleaning empties down to the 4 keys' latest and merges.
    for i in 0..30 {
        let keys: Vec<String> = (0..3).map(|j| format!("p-{}", (i * 3 + j) % 4)).collect();
        let value = format!("{i:0200}");
        let kv: Vec<(Option<&str>, Option<&str>)> = keys
            .iter()
            .map(|k| (Some(k.as_str()), Some(value.as_str())))
            .collect();
        let b = producer_batch(
            0,
            &kv,
            NOW - 100_000_000,
            Compression::None,
            (100, 0, i * 3),
        );
        log.append(&b, NOW).unwrap();
        if i % 5 == 4 {
            block_on(log.flush()).unwrap();
        }
    }
    let producer_end = log.log_end_offset();
    // Then others' records, so the producer's batches all lie in cleanable segments.
    fill(&log, Compression::None);
    let snapshots = |dir: &std::path::Path| -> Vec<i64> {
        let mut v: Vec<i64> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                n.strip_suffix(".snapshot")?.parse().ok()
            })
            .collect();
        v.sort_unstable();
        v
    };
    let before = snapshots(dir.path());
    assert!(
        before.iter().any(|&s| s > 0 && s < producer_end),
        "snapshots among the producer's batches: {before:?}"
    );
    let stats = block_on(log.compact(opts())).unwrap();
    assert!(stats.segments_merged > 0, "{stats:?}");
    block_on(log.close()).unwrap();
    drop(log);
    for s in snapshots(dir.path())
        .into_iter()
        .filter(|&s| s > producer_end)
    {
        std::fs::remove_file(dir.path().join(format!("{s:020}.snapshot"))).unwrap();
    }
    let log = open(StdStorage, dir.path(), compacted());
    assert_eq!(
        log.check_producer(100, 0, 90, 0).unwrap(),
        SeqCheck::Append,
        "the next sequence is 90 (snapshots before the merge: {before:?})"
    );
    assert!(matches!(
        log.check_producer(100, 0, 87, 2).unwrap(),
        SeqCheck::Duplicate { .. }
    ));
}

/// A power loss at each fdatasync or directory sync of a pass (the sync fails, then the
/// machine stops): the log opens with every key's latest record at its offset, and a pass
/// after the restart finishes the job.
#[test]
fn a_power_loss_anywhere_in_a_pass_leaves_a_whole_log() {
    let (mut failed, mut finished, mut swaps) = (0, 0, 0);
    for (fsync, k) in (1..60).flat_map(|k| [(true, k), (false, k)]) {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::default();
        let plan = storage.plan.clone();
        plan.model_durability();
        let log = open(storage, dir.path(), compacted());
        fill(&log, Compression::None);
        let before = read_records(&log);
        let ranges = stored_ranges(&log);
        if fsync {
            plan.fail_fsync_in.set(k);
        } else {
            plan.fail_sync_dir_in.set(k);
        }
        let result = block_on(log.compact(opts()));
        match &result {
            Err(_) => failed += 1,
            Ok(s) if s.segments_rewritten > 0 && s.segments_merged > 0 => finished += 1,
            Ok(s) => panic!("a pass that rewrote nothing: {s:?}"),
        }
        plan.power_loss();
        drop(log);
        let has = |suffix: &str| {
            std::fs::read_dir(dir.path())
                .unwrap()
                .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(suffix))
        };
        // A merge stopped past its commit point: open finishes it.
        swaps += usize::from(has(".swap"));
        let log = open(StdStorage, dir.path(), compacted());
        let what = format!("sync {k} failed (fsync: {fsync}), pass {result:?}");
        let after = read_records(&log);
        let after_ranges = stored_ranges(&log);
        assert_eq!(after_ranges, ranges, "{what}");
        assert_eq!(latest(&after), latest(&before), "{what}");
        assert!(!has(".cleaned") && !has(".swap"), "{what}: leftovers swept");
        let log_files = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                n.to_string_lossy().ends_with(".log")
            })
            .count();
        assert_eq!(
            log_files,
            log.segment_count(),
            "{what}: no stray segment files"
        );
        let again = block_on(log.compact(opts())).unwrap();
        let done = read_records(&log);
        assert_eq!(latest(&done), latest(&before), "{what}: {again:?}");
    }
    // Both kinds of sync failed passes at several points (merges past their commit point
    // among them), and some passes got past them all.
    assert!(
        failed >= 10 && finished > 0 && swaps > 0,
        "{failed} failed, {finished} finished, {swaps} merges finished at open"
    );
}
