//! Opening a partition log: recovery after an unclean stop (the tail segment scanned past
//! its recovery point and cut after its last valid batch, indexes checked or rebuilt,
//! producer state restored).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::cache::BatchCache;
use crate::config::{LogConfig, BATCH_BYTES_MAX, SEGMENTS_PER_PARTITION_MAX};
use crate::error::{Result, StorageError};
use crate::format::{self, Kind};
use crate::hdr::{Header, HEADER_BYTES};
use crate::index::{OffsetIndex, TimeIndex};
use crate::io::{Storage, StorageFile, PAGE_SIZE};
use crate::notify::OffsetWaiters;
use crate::producer::ProducerState;
use crate::txn::AbortedTxn;

use super::recovery_point;
use super::replica::load_epochs;
use super::{
    aborted_entry, segment_path, FlushTiming, Inner, PartitionLog, ScannedBatch, Segment,
    NEXT_LOG_ID, SCAN_CHUNK_BYTES,
};

impl<S: Storage> PartitionLog<S> {
    /// Opens (or creates) the log in `dir`, recovering from an unclean stop: the tail segment
    /// is scanned batch by batch from its recovery point (or its start) and cut after the
    /// last valid batch; missing or damaged indexes are rebuilt; producer state is restored
    /// from the recovery point or a snapshot, plus the batches after it.
    pub async fn open(
        storage: Rc<S>,
        dir: PathBuf,
        config: LogConfig,
        cache: Rc<RefCell<BatchCache>>,
        name: String,
    ) -> Result<PartitionLog<S>> {
        config.validate()?;
        storage
            .create_dir_all(&dir)
            .await
            .map_err(|e| StorageError::io("create", &dir, e))?;
        // The partition directory's own entry must survive a crash too.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            storage
                .sync_dir(parent)
                .await
                .map_err(|e| StorageError::io("fsync dir", parent, e))?;
        }
        let names = storage
            .list_dir(&dir)
            .await
            .map_err(|e| StorageError::io("list", &dir, e))?;
        let mut bases = Vec::new();
        let mut snapshots = Vec::new();
        let mut swaps = Vec::new();
        for n in &names {
            let Some(n) = n.to_str() else { continue };
            if n.ends_with(super::compact::CLEANED_SUFFIX) {
                // A segment the cleaner was rewriting when the node stopped: never renamed
                // over its segment, which holds all of it.
                let p = dir.join(n);
                storage
                    .remove(&p)
                    .await
                    .map_err(|e| StorageError::io("remove", &p, e))?;
            } else if n.ends_with(crate::io::DISCARDED_SUFFIX) {
                // A segment discarded before a crash: out of the log's names already.
                let p = dir.join(n);
                storage
                    .discard(&p, None)
                    .await
                    .map_err(|e| StorageError::io("discard", &p, e))?;
            } else if let Some(stem) = n.strip_suffix(".log.swap") {
                // A merge of segments committed before the stop (`merge.rs`).
                if let Ok(b) = stem.parse::<i64>() {
                    swaps.push(b);
                }
            } else if let Some(stem) = n.strip_suffix(".log") {
                if let Ok(b) = stem.parse::<i64>() {
                    bases.push(b);
                }
            } else if let Some(stem) = n.strip_suffix(".snapshot") {
                if let Ok(b) = stem.parse::<i64>() {
                    snapshots.push(b);
                }
            }
        }
        bases.sort_unstable();
        snapshots.sort_unstable();
        swaps.sort_unstable();
        super::merge::finish_swaps(&*storage, &dir, &swaps, &mut bases, &mut snapshots).await?;
        // The files read below are looked up in this listing: again if the swaps changed it.
        let names = if swaps.is_empty() {
            names
        } else {
            storage
                .list_dir(&dir)
                .await
                .map_err(|e| StorageError::io("list", &dir, e))?
        };
        if bases.len() > SEGMENTS_PER_PARTITION_MAX {
            return Err(StorageError::Limit {
                what: "segments in one partition",
                value: bases.len() as u64,
                max: SEGMENTS_PER_PARTITION_MAX as u64,
            });
        }
        let start_checkpoint = read_listed_sealed(
            &*storage,
            &dir.join("log-start-offset"),
            Kind::LogStartOffset,
            &names,
        )
        .await?
        .map(|(meta, _)| meta[0]);
        // Where the cleaner's last pass ended: a range it cleaned stays clean (retention and
        // truncation only remove data, never dirty what is left).
        let cleaner_checkpoint = read_listed_sealed(
            &*storage,
            &dir.join(super::compact::CLEANER_CHECKPOINT_FILE),
            Kind::CleanerCheckpoint,
            &names,
        )
        .await?
        .map(|(meta, _)| meta);

        // The tail segment's file, and how much of it a recovery point covers (`None`: all
        // of it is scanned, with CRC checks).
        let last = bases.last().copied();
        let mut tail_file = None;
        let mut recovered = None;
        if let Some(base) = last {
            let (file, size) = open_segment(&*storage, &segment_path(&dir, base, "log")).await?;
            recovered = recovery_point::load(&*storage, &dir, &names, base, &file, size).await?;
            tail_file = Some((file, size));
        }

        // Producer state: the recovery point's, else the newest readable snapshot; batches
        // after it are replayed below.
        let mut producers = ProducerState::default();
        let mut replay_from = i64::MIN;
        if let Some(rp) = &recovered {
            log::debug!(
                "{name}: recovery point at offset {} ({} bytes of the tail)",
                rp.next_offset,
                rp.size
            );
            replay_from = rp.next_offset;
        }
        for &snap in snapshots.iter().rev().filter(|_| recovered.is_none()) {
            let path = segment_path(&dir, snap, "snapshot");
            // Snapshots with timestamps are their own kind, so an older sluice ignores them
            // (and replays the log) instead of misreading them; the older kind is still read.
            let timed = Kind::ProducerSnapshotTimed;
            let sealed = match read_listed_sealed(&*storage, &path, timed, &names).await? {
                Some(s) => Some(s),
                None => {
                    read_listed_sealed(&*storage, &path, Kind::ProducerSnapshot, &names).await?
                }
            };
            if let Some((meta, body)) = sealed {
                if let Some(state) = ProducerState::decode(&body, meta[1]) {
                    if meta[0] == snap {
                        producers = state;
                        replay_from = snap;
                        break;
                    }
                }
            }
        }

        let mut segments = BTreeMap::new();
        let mut loaded_point = (i64::MIN, 0);
        // Where each epoch of the tail segment's batches begins (see `epochs_deferred`).
        let mut tail_epochs: Vec<(i32, i64)> = Vec::new();
        for &base in &bases {
            let path = segment_path(&dir, base, "log");
            let is_tail = Some(base) == last;
            let opened = if is_tail { tail_file.take() } else { None };
            let (file, file_size) = match opened {
                Some(opened) => opened,
                None => open_segment(&*storage, &path).await?,
            };
            let mut seg = Segment::new(base);
            seg.file = Some(file.clone());
            // Where the scan starts: the tail's recovery point, if it has one.
            let mut start = (0, base);
            if is_tail {
                if let Some(rp) = recovered.take() {
                    start = (rp.size, rp.next_offset);
                    loaded_point = (base, rp.size);
                    producers = rp.fill(&mut seg);
                }
            }
            let loaded = if is_tail {
                false
            } else {
                load_indexes(
                    &*storage,
                    &dir,
                    &names,
                    &mut seg,
                    file_size,
                    config.index_interval_bytes,
                )
                .await?
            };
            // Aborted transactions: rebuilt by the replay below where it reaches, else from
            // the `.txnindex` written when the segment was sealed (none: none aborted; the
            // tail has one only if a crash came after its seal and before its successor's
            // first write), or for the tail's prefix from its recovery point.
            if base < replay_from && start.0 == 0 {
                let txn_path = segment_path(&dir, base, "txnindex");
                let txn_index = read_listed_sealed(&*storage, &txn_path, Kind::TxnIndex, &names);
                if let Some((_, body)) = txn_index.await? {
                    seg.aborted = AbortedTxn::decode_all(body.as_ref()).unwrap_or_else(|kept| {
                        log::warn!(
                            "{name}: {} has an unreadable entry; using the {} before it",
                            txn_path.display(),
                            kept.len()
                        );
                        kept
                    });
                }
            }
            if !loaded || base >= replay_from {
                // Scan: with CRC checks on the tail, headers only elsewhere.
                let scanned_end = scan_segment(&*file, &path, file_size, is_tail, start, |b| {
                    if is_tail
                        && tail_epochs
                            .last()
                            .is_none_or(|&(e, _)| e != b.header.leader_epoch)
                    {
                        tail_epochs.push((b.header.leader_epoch, b.header.base_offset));
                    }
                    if !loaded {
                        seg.index_batch(&b.header, b.position, config.index_interval_bytes);
                        seg.size = b.position + b.header.size as u64;
                    }
                    if b.header.base_offset >= replay_from {
                        let done = producers.apply_stored(&b.header, b.bytes);
                        if let Some(entry) = done.and_then(|d| aborted_entry(&producers, &d)) {
                            seg.aborted.push(entry);
                        }
                    }
                })
                .await?;
                if !loaded {
                    seg.size = scanned_end;
                }
            }
            if is_tail {
                let page_start = seg.size / PAGE_SIZE as u64 * PAGE_SIZE as u64;
                let padded_end = seg.size.next_multiple_of(PAGE_SIZE as u64);
                // The tail page, with whatever follows the last batch in it.
                let page = file
                    .read_at(
                        page_start,
                        (file_size.min(padded_end) - page_start) as usize,
                    )
                    .await
                    .map_err(|e| StorageError::io("read", &path, e))?;
                let tail_len = (seg.size - page_start) as usize;
                assert!(page.len() >= tail_len, "tail page read back short");
                if file_size != seg.size {
                    // Cut what follows the last batch, so the next write starts at a clean
                    // end. Zeros to the end of the last page are what an O_DIRECT write of
                    // a partial page leaves (every unclean stop shows them): the cut need
                    // not be durable, as a crash that undoes it leaves the same zeros for
                    // the next scan. Anything else is a torn or unacknowledged write, which
                    // must never be read back, so its cut is synced before any append.
                    let padding = file_size <= padded_end
                        && page.len() as u64 == file_size - page_start
                        && page[tail_len..].iter().all(|&b| b == 0);
                    if padding {
                        log::debug!(
                            "{name}: segment {base} ends in {} bytes of page padding",
                            file_size - seg.size
                        );
                    } else {
                        log::warn!(
                            "{name}: truncating segment {base} from {file_size} to {} bytes",
                            seg.size
                        );
                    }
                    file.truncate(seg.size)
                        .await
                        .map_err(|e| StorageError::io("truncate", &path, e))?;
                    if !padding {
                        file.fdatasync()
                            .await
                            .map_err(|e| StorageError::io("fdatasync", &path, e))?;
                    }
                }
                seg.tail = page[..tail_len].to_vec();
                seg.tail_pos = page_start;
            }
            seg.durable_size = seg.size;
            segments.insert(base, seg);
        }
        // Drop empty segments in the middle (a roll that crashed before any data): only the
        // tail may be empty.
        let log_end = segments
            .values()
            .next_back()
            .map_or(0, |s: &Segment<S::File>| s.next_offset);
        if segments.is_empty() {
            let base = start_checkpoint.unwrap_or(0).max(0);
            segments.insert(base, Segment::new(base));
        }
        let first_base = *segments.keys().next().expect("one segment");
        let log_end_offset = log_end.max(segments.values().next_back().expect("one").next_offset);
        let log_start_offset = start_checkpoint
            .unwrap_or(first_base)
            .clamp(first_base, log_end_offset);
        // Snapshots beyond the recovered end describe data that is gone.
        for &snap in &snapshots {
            if snap > log_end_offset {
                let p = segment_path(&dir, snap, "snapshot");
                storage
                    .remove(&p)
                    .await
                    .map_err(|e| StorageError::io("remove", &p, e))?;
            }
        }
        producers.truncate_from(log_end_offset);
        producers.trim_to_limit();
        let (mut epochs, epochs_dirty) =
            load_epochs(&*storage, &dir, &names, log_end_offset).await?;
        // Entries the checkpoint did not hold yet when the process stopped.
        let mut epochs_deferred = false;
        for (epoch, start) in tail_epochs {
            epochs_deferred |= epochs.assign(epoch, start);
        }
        // The current epoch is the newest one that wrote to the log (0 for a new log): an
        // epoch begun but not yet written in is not durable, and the replication layer
        // begins its own again after a restart.
        let leader_epoch = epochs.latest_epoch().unwrap_or(0);
        let compacted = config.compact;
        let read_ahead_budget = cache.borrow().read_ahead_budget().clone();
        let log = PartitionLog {
            id: NEXT_LOG_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            name,
            dir,
            storage,
            read_ahead: RefCell::new(None),
            read_ahead_generation: Cell::new(0),
            last_read_end: Cell::new(None),
            read_ahead_budget,
            cache,
            inner: RefCell::new(Inner {
                config,
                segments,
                log_start_offset,
                durable_offset: log_end_offset,
                producers,
                producers_refused: 0,
                markers_seen: 0,
                failed: None,
                deleted: false,
                roll_requested: false,
                closed: false,
                leader_epoch,
                appended_since_flush: 0,
                grown_buffer_bytes: 0,
                epochs,
                epochs_dirty,
                epochs_deferred,
                truncating: false,
                truncations: 0,
                committed: log_start_offset,
                replica_hw: None,
                checkpointed_start: log_start_offset,
                retain_from: None,
            }),
            writing: Cell::new(false),
            syncing: Cell::new(false),
            flusher_running: Cell::new(false),
            preallocation_refused: Cell::new(false),
            path_ops: Cell::new(0),
            last_flush: Cell::new(FlushTiming::default()),
            written_ahead: RefCell::new(None),
            durable_waiters: OffsetWaiters::default(),
            hw_waiters: OffsetWaiters::default(),
            dirty_waiters: OffsetWaiters::default(),
            delete_records_lock: Default::default(),
            // Never past the recovered end: what is appended there again is dirty.
            cleaned_to: Cell::new(
                cleaner_checkpoint.map_or(i64::MIN, |m| m[0].min(log_end_offset)),
            ),
            tombstones_horizon: Cell::new(
                cleaner_checkpoint.map(|m| m[1]).filter(|&h| h != i64::MIN),
            ),
            cleaned: Cell::new(compacted),
            flush_waiters: OffsetWaiters::default(),
            // The next one is captured an interval past the one loaded.
            recovery_point_at: Cell::new(loaded_point),
            recovery_point_ready: RefCell::new(None),
            recovery_point_writing: Cell::new(false),
        };
        Ok(log)
    }
}

/// A segment file, opened, and its size.
async fn open_segment<S: Storage>(storage: &S, path: &Path) -> Result<(Rc<S::File>, u64)> {
    let (file, size) = crate::durable_file::open_sized(storage, path).await?;
    Ok((Rc::new(file), size))
}

/// A sealed file's header fields and body; `None` if it is missing, too large or damaged.
pub(super) async fn read_sealed<S: Storage>(
    storage: &S,
    path: &Path,
    kind: Kind,
) -> Result<Option<([i64; 4], Vec<u8>)>> {
    let bytes =
        crate::durable_file::read_file(storage, path, format::SEALED_BODY_BYTES_MAX as u64).await?;
    Ok(bytes.and_then(|b| format::unseal(kind, &b).map(|(meta, body)| (meta, body.to_vec()))))
}

/// [`read_sealed`] in a directory whose `names` the caller listed.
pub(super) async fn read_listed_sealed<S: Storage>(
    storage: &S,
    path: &Path,
    kind: Kind,
    names: &[PathBuf],
) -> Result<Option<([i64; 4], Vec<u8>)>> {
    let max = format::SEALED_BODY_BYTES_MAX as u64;
    let bytes = crate::durable_file::read_listed_file(storage, path, max, names).await?;
    Ok(bytes.and_then(|b| format::unseal(kind, &b).map(|(meta, body)| (meta, body.to_vec()))))
}

/// Loads a closed segment's indexes when they are intact and match the segment file.
async fn load_indexes<S: Storage>(
    storage: &S,
    dir: &Path,
    names: &[PathBuf],
    seg: &mut Segment<S::File>,
    file_size: u64,
    _interval: u32,
) -> Result<bool> {
    let base = seg.base_offset;
    let Some((meta, body)) = read_listed_sealed(
        storage,
        &segment_path(dir, base, "index"),
        Kind::OffsetIndex,
        names,
    )
    .await?
    else {
        return Ok(false);
    };
    let size = meta[0] as u64;
    if size != file_size || meta[1] < base {
        return Ok(false);
    }
    let Some(index) = OffsetIndex::decode(&body, size) else {
        return Ok(false);
    };
    let Some((tmeta, tbody)) = read_listed_sealed(
        storage,
        &segment_path(dir, base, "timeindex"),
        Kind::TimeIndex,
        names,
    )
    .await?
    else {
        return Ok(false);
    };
    let Some(time_index) = TimeIndex::decode(&tbody) else {
        return Ok(false);
    };
    if tmeta[0] as u64 != size {
        return Ok(false);
    }
    seg.index = index;
    seg.time_index = time_index;
    seg.size = size;
    seg.next_offset = meta[1];
    seg.max_timestamp = meta[2];
    seg.offset_of_max_timestamp = meta[3];
    Ok(true)
}

/// Walks the batches of a segment file from `start` (a file position where a batch with
/// that offset begins: the start and base offset, or a recovery point); stops at the first
/// batch that is torn, corrupt (CRC checked when `verify`), or out of offset order. Returns
/// the byte length of the valid prefix (at least `start.0`).
pub(super) async fn scan_segment<F: StorageFile>(
    file: &F,
    path: &Path,
    file_size: u64,
    verify: bool,
    start: (u64, i64),
    mut on_batch: impl FnMut(ScannedBatch<'_>),
) -> Result<u64> {
    let mut pos = start.0;
    let mut valid_end = start.0;
    let mut expected = start.1;
    'outer: while pos < file_size {
        let len = ((file_size - pos) as usize).min(SCAN_CHUNK_BYTES);
        let chunk = file
            .read_at(pos, len)
            .await
            .map_err(|e| StorageError::io("read", path, e))?;
        let mut at = 0usize;
        loop {
            let Some(h) = Header::parse(&chunk[at..]) else {
                if chunk.len() - at >= HEADER_BYTES || pos + (chunk.len() as u64) >= file_size {
                    break 'outer;
                }
                break; // header straddles the chunk end: read on from here
            };
            if h.magic != 2 || h.base_offset != expected || h.size > BATCH_BYTES_MAX {
                break 'outer;
            }
            if at + h.size > chunk.len() {
                if pos + (at + h.size) as u64 > file_size {
                    break 'outer; // torn: the batch runs past the end of the file
                }
                if h.size > chunk.len() {
                    // Bigger than a scan chunk: read it alone.
                    let whole = file
                        .read_at(pos + at as u64, h.size)
                        .await
                        .map_err(|e| StorageError::io("read", path, e))?;
                    if whole.len() != h.size || (verify && h.verify(&whole).is_err()) {
                        break 'outer;
                    }
                    on_batch(ScannedBatch {
                        header: h,
                        position: pos + at as u64,
                        bytes: &whole,
                    });
                    expected = h.last_offset() + 1;
                    at += h.size;
                    valid_end = pos + at as u64;
                }
                break;
            }
            if verify && h.verify(&chunk[at..at + h.size]).is_err() {
                break 'outer;
            }
            on_batch(ScannedBatch {
                header: h,
                position: pos + at as u64,
                bytes: &chunk[at..at + h.size],
            });
            expected = h.last_offset() + 1;
            at += h.size;
            valid_end = pos + at as u64;
        }
        if at == 0 {
            break;
        }
        pos += at as u64;
    }
    Ok(valid_end)
}
