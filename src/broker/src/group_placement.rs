//! One-time move of consumer groups to Kafka's `__consumer_offsets` placement, run at start
//! before any shard serves. sluice up to a71e1e7 routed a group to `(hash & 0x7fffffff) % n`
//! while Kafka (and now sluice, via `sluice_group::partition_for`) uses `Utils.abs(hash) % n`:
//! every group with a negative Java `hashCode` was stored in a partition that is no longer
//! its own, where its coordinator would never look.
//!
//! Each offsets partition is read once (on this thread, through the storage crate's std-IO
//! backend, since no executor runs yet); the latest live record of every misplaced key is
//! appended to its group's own partition and made durable, and only then tombstoned where
//! it was. A crash in between repeats the move at the next start (copies are idempotent:
//! the last record per key wins). A marker file records that the data dir uses Kafka's
//! placement, so later starts skip the scan; a fresh data dir gets it at once.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use futures_lite::future::block_on;
use sluice_group::records::{PlacementMoves, PlacementScan};
use sluice_storage::std_io::StdStorage;
use sluice_storage::{BatchCache, PartitionLog};

use crate::error::BrokerError;
use crate::groups::{decode_records, encode_records, OFFSETS_TOPIC};
use crate::topics::ClusterState;

/// The marker's name under `<data dir>/cluster/`.
const MARKER: &str = "group-placement";
/// Bytes of keys and values per batch the move appends: well below the offsets topic's
/// `max.message.bytes` (1 MiB by default, 1 KiB at its smallest is refused by the record
/// sizes anyway: such a topic could not hold the records in the first place).
const MOVE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Records per batch the move appends.
const MOVE_BATCH_RECORDS_MAX: usize = 1000;
/// Bytes per read while scanning.
const SCAN_READ_BYTES: usize = 1 << 20;

fn marker_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster").join(MARKER)
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BrokerError {
    let path = path.to_path_buf();
    move |source| BrokerError::Io { op, path, source }
}

fn storage_err(what: &str) -> impl FnOnce(sluice_storage::StorageError) -> BrokerError + '_ {
    move |e| BrokerError::Config(format!("moving groups to Kafka's placement: {what}: {e}"))
}

/// Moves misplaced groups if this data dir has not been checked yet. `partition_dir` names
/// a partition's directory as the shards do.
pub fn migrate(
    data_dir: &Path,
    state: &ClusterState,
    partition_dir: impl Fn(&str, i32) -> PathBuf,
) -> Result<(), BrokerError> {
    let marker = marker_path(data_dir);
    if marker.exists() {
        return Ok(());
    }
    if let Some(topic) = state.topics.iter().find(|t| t.name == OFFSETS_TOPIC) {
        let config = crate::topic_config::log_config(&topic.configs, &state.broker_configs);
        let dirs: Vec<PathBuf> = (0..topic.partitions)
            .map(|p| partition_dir(OFFSETS_TOPIC, p))
            .collect();
        let moved = move_groups(&dirs, config)?;
        if moved > 0 {
            log::warn!(
                "moved {moved} consumer group(s) to their Kafka {OFFSETS_TOPIC} partition \
                 (placed by an older sluice)"
            );
        }
    }
    write_marker(&marker)
}

/// Scans every partition and moves what is misplaced; returns how many groups moved.
pub fn move_groups(
    dirs: &[PathBuf],
    config: sluice_storage::LogConfig,
) -> Result<usize, BrokerError> {
    let count = dirs.len() as i32;
    let cache = Rc::new(RefCell::new(BatchCache::new(1 << 20)));
    let open = |p: usize| -> Result<PartitionLog<StdStorage>, BrokerError> {
        block_on(PartitionLog::open(
            Rc::new(StdStorage),
            dirs[p].clone(),
            config.clone(),
            cache.clone(),
            format!("{OFFSETS_TOPIC}-{p}"),
        ))
        .map_err(storage_err("open"))
    };
    // Scan: which records of which partition go where.
    let mut plans: Vec<(usize, PlacementMoves)> = Vec::new();
    for (p, dir) in dirs.iter().enumerate() {
        if !dir.exists() {
            continue;
        }
        let log = open(p)?;
        let mut scan = PlacementScan::new(p as i32, count);
        let mut offset = log.log_start_offset();
        while offset < log.high_watermark() {
            let (records, next) =
                block_on(log.read_next(offset, SCAN_READ_BYTES)).map_err(storage_err("read"))?;
            if records.is_empty() {
                break;
            }
            offset = next;
            for (k, v) in decode_records(records) {
                scan.record(&k, v.as_ref());
            }
        }
        block_on(log.close()).map_err(storage_err("close"))?;
        let moves = scan.finish();
        if !moves.tombstones.is_empty() {
            plans.push((p, moves));
        }
    }
    let mut groups = std::collections::BTreeSet::new();
    for (from, moves) in plans {
        // Copies first, durable, then the tombstones: a crash between leaves both (the next
        // start moves them again), never neither.
        for (to, records) in &moves.copies {
            let log = open(*to as usize)?;
            append_all(
                &log,
                records.iter().map(|(k, v)| (k.clone(), Some(v.clone()))),
            )?;
            block_on(log.close()).map_err(storage_err("close"))?;
        }
        let log = open(from)?;
        append_all(&log, moves.tombstones.iter().map(|k| (k.clone(), None)))?;
        block_on(log.close()).map_err(storage_err("close"))?;
        for g in &moves.groups {
            log::info!(
                "group {g:?}: records moved from {OFFSETS_TOPIC}-{from} to {OFFSETS_TOPIC}-{}",
                sluice_group::partition_for(g, count)
            );
        }
        groups.extend(moves.groups);
    }
    Ok(groups.len())
}

/// Appends records in batches within the move's limits and makes them durable.
fn append_all(
    log: &PartitionLog<StdStorage>,
    records: impl Iterator<Item = (Bytes, Option<Bytes>)>,
) -> Result<(), BrokerError> {
    let now = crate::shard::now_ms();
    let mut batch: Vec<(Bytes, Option<Bytes>)> = Vec::new();
    let mut bytes = 0usize;
    let flush = |batch: &mut Vec<(Bytes, Option<Bytes>)>| -> Result<(), BrokerError> {
        if batch.is_empty() {
            return Ok(());
        }
        log.append(&encode_records(batch, now), now)
            .map_err(storage_err("append"))?;
        batch.clear();
        Ok(())
    };
    for (k, v) in records {
        let size = k.len() + v.as_ref().map_or(0, |v| v.len());
        if !batch.is_empty()
            && (bytes + size > MOVE_BATCH_BYTES_MAX || batch.len() >= MOVE_BATCH_RECORDS_MAX)
        {
            flush(&mut batch)?;
            bytes = 0;
        }
        bytes += size;
        batch.push((k, v));
    }
    flush(&mut batch)?;
    block_on(log.flush()).map_err(storage_err("flush"))?;
    Ok(())
}

fn write_marker(path: &Path) -> Result<(), BrokerError> {
    use std::io::Write;
    let dir = path.parent().expect("marker has a parent");
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(b"kafka\n").map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename", path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_group::records::{offset_commit_key, offset_commit_value, OffsetCommitValue};

    fn commit(group: &str, offset: i64) -> (Bytes, Option<Bytes>) {
        (
            offset_commit_key(group, "t", 0),
            Some(offset_commit_value(&OffsetCommitValue {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 1,
                expire_timestamp: None,
            })),
        )
    }

    fn records_of(dir: &Path, p: usize) -> Vec<(Bytes, Option<Bytes>)> {
        let log = block_on(PartitionLog::open(
            Rc::new(StdStorage),
            dir.to_path_buf(),
            Default::default(),
            Rc::new(RefCell::new(BatchCache::new(1 << 20))),
            format!("p{p}"),
        ))
        .unwrap();
        let read = block_on(log.read(log.log_start_offset(), 1 << 20)).unwrap();
        decode_records(read.records)
    }

    #[test]
    fn misplaced_groups_move_to_kafkas_partition_once() {
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..50)
            .map(|p| root.path().join(format!("p-{p}")))
            .collect();
        // The layout an older sluice left: "legacy-group-0" (Kafka: 44) at 4, beside a
        // group whose home is 4.
        let at_home_in_4 = (0..1000)
            .map(|i| format!("g{i}"))
            .find(|g| sluice_group::partition_for(g, 50) == 4)
            .unwrap();
        let old = [commit("legacy-group-0", 7), commit(&at_home_in_4, 9)];
        {
            let log = block_on(PartitionLog::open(
                Rc::new(StdStorage),
                dirs[4].clone(),
                Default::default(),
                Rc::new(RefCell::new(BatchCache::new(1 << 20))),
                "p4".into(),
            ))
            .unwrap();
            append_all(&log, old.iter().cloned()).unwrap();
            block_on(log.close()).unwrap();
        }
        assert_eq!(move_groups(&dirs, Default::default()).unwrap(), 1);
        assert_eq!(records_of(&dirs[44], 44), vec![old[0].clone()]);
        let in_4 = records_of(&dirs[4], 4);
        assert_eq!(in_4.len(), 3);
        assert_eq!(in_4[2], (old[0].0.clone(), None), "tombstoned where it was");
        // Nothing left to move.
        assert_eq!(move_groups(&dirs, Default::default()).unwrap(), 0);
        assert_eq!(records_of(&dirs[44], 44).len(), 1);
    }
}
