//! The log cleaner's IO: `PartitionLog::compact` maps and rewrites a compacted log's
//! cleanable segments ([`crate::compact`] decides which records stay) and swaps each
//! rewritten segment in.
//!
//! A segment is rewritten only when a record of it goes or a batch of it gets its tombstones'
//! delete horizon (KIP-534, [`crate::compact`]): the new file is written beside the
//! old one as `{base}.cleaned` with direct writes, cut to size and fdatasynced; the old
//! segment's indexes are removed (a crash then rebuilds them from whichever file holds the
//! name) and the directory synced; the new file is renamed over `{base}.log` and the
//! directory synced again; then its indexes are written and the segment swapped in memory.
//! A crash at any point leaves the old file or the new one under the name, both whole and
//! synced; a leftover `.cleaned` file is swept at open. Readers that looked up a position
//! before the swap hold the old file's handle and read it whole; the batch cache is dropped
//! for the log, as it may hold records the cleaner removed.
//!
//! The cleanable range: closed, durable segments wholly below the high watermark and the
//! last stable offset (no undecided transaction is cleaned, as its fate decides whether
//! its records hide older ones), whose newest record is older than `min.compaction.lag.ms`;
//! the first segment that is not ends the range.
//!
//! After the rewrites, the range's segments that together fit in `segment.bytes` are merged
//! into one (`merge.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;

use crate::compact::{clean_batch, map_batch, Clock, OffsetMap};
use crate::error::{Result, StorageError};
use crate::format::{self, Kind};
use crate::hdr::{Header, HEADER_BYTES};
use crate::io::{Storage, StorageFile, PAGE_SIZE};
use crate::txn::AbortedTxn;

use super::{segment_path, PartitionLog, Segment, SCAN_CHUNK_BYTES};

/// What the file name of a segment being rewritten ends with; swept at open.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";

/// Where the last pass's range ended and its tombstones' earliest delete horizon, so a
/// restart neither cleans the whole log again nor forgets when tombstones are due.
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

/// Bytes the rewritten segment collects before each direct write.
const CLEAN_WRITE_BYTES: usize = 1024 * 1024;

/// Paces the cleaner's IO (Kafka's `log.cleaner.io.max.bytes.per.second`): told the bytes
/// each read or write of a pass moved; the future it returns ends when the budget allows
/// more. The runtime implements it (the storage crate has no timers).
pub trait IoBudget {
    fn spend(&self, bytes: u64) -> Pin<Box<dyn Future<Output = ()> + '_>>;
}

/// Settings of one cleaning pass (the log's own config gives the rest).
#[derive(Clone)]
pub struct CompactOptions {
    pub now_ms: i64,
    /// Keys the offset map may hold (the cleaner's memory budget,
    /// [`crate::compact::OFFSET_MAP_ENTRY_BYTES`] each).
    pub map_keys_max: usize,
    /// The pass's reads and writes are paced by it; `None`: unlimited.
    pub io_budget: Option<Rc<dyn IoBudget>>,
}

impl CompactOptions {
    /// Waits until `bytes` more of IO fit in the budget.
    pub(super) async fn pace(&self, bytes: usize) {
        if let Some(b) = &self.io_budget {
            b.spend(bytes as u64).await;
        }
    }
}

impl std::fmt::Debug for CompactOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactOptions")
            .field("now_ms", &self.now_ms)
            .field("map_keys_max", &self.map_keys_max)
            .field("io_budget", &self.io_budget.is_some())
            .finish()
    }
}

/// What a cleaning pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Segments in the cleanable range, and the bytes they held before.
    pub segments_cleanable: usize,
    pub bytes_before: u64,
    /// Segments rewritten, and the cleanable range's bytes after.
    pub segments_rewritten: usize,
    pub bytes_after: u64,
    pub records_removed: u64,
    /// Segments merged into their predecessor after cleaning (`merge.rs`).
    pub segments_merged: usize,
    /// The range cleaned ended here (the next offset after it); `None` when the pass found
    /// nothing to do (no cleanable segment, or not dirty enough).
    pub cleaned_to: Option<i64>,
    /// Another operation that rewrites or deletes the log's files (DeleteRecords,
    /// retention, a truncation, a replicated log-start move) held it: the pass did nothing,
    /// and the cleaner tries again at its next interval.
    pub busy: bool,
}

/// What cleaning one segment did.
struct SegmentCleaned {
    /// The new size, when the segment was rewritten.
    rewritten: Option<u64>,
    records_removed: u64,
    /// The earliest delete horizon of the tombstones it still holds.
    delete_horizon: Option<i64>,
}

/// One cleanable segment as the pass found it.
struct Candidate<F> {
    base: i64,
    next_offset: i64,
    size: u64,
    max_timestamp: i64,
    file: Rc<F>,
}

/// Reads a segment's batches in order, a chunk at a time.
pub(super) struct BatchReader<'a, F: StorageFile> {
    file: &'a F,
    path: &'a std::path::Path,
    size: u64,
    pos: u64,
    chunk: Bytes,
    at: usize,
}

impl<'a, F: StorageFile> BatchReader<'a, F> {
    pub(super) fn new(file: &'a F, path: &'a std::path::Path, size: u64) -> Self {
        BatchReader {
            file,
            path,
            size,
            pos: 0,
            chunk: Bytes::new(),
            at: 0,
        }
    }

    /// The next batch with its position; `None` at the end. A batch that does not parse
    /// inside a closed segment is corruption.
    pub(super) async fn next(&mut self) -> Result<Option<(Header, u64, Bytes)>> {
        let here = self.pos + self.at as u64;
        if here >= self.size {
            return Ok(None);
        }
        if self.chunk.len() - self.at < HEADER_BYTES {
            self.refill(here, SCAN_CHUNK_BYTES).await?;
        }
        let h = Header::parse(&self.chunk[self.at..]).ok_or_else(|| self.corrupt(here))?;
        if self.chunk.len() - self.at < h.size {
            self.refill(here, h.size.max(SCAN_CHUNK_BYTES)).await?;
            if self.chunk.len() < h.size {
                return Err(self.corrupt(here));
            }
        }
        let bytes = self.chunk.slice(self.at..self.at + h.size);
        self.at += h.size;
        Ok(Some((h, here, bytes)))
    }

    async fn refill(&mut self, from: u64, len: usize) -> Result<()> {
        let len = len.min((self.size - from) as usize);
        self.chunk = self
            .file
            .read_at(from, len)
            .await
            .map_err(|e| StorageError::io("read", self.path, e))?;
        self.pos = from;
        self.at = 0;
        Ok(())
    }

    fn corrupt(&self, at: u64) -> StorageError {
        StorageError::CorruptBatch {
            reason: format!("{:?} at {at} (cleaning)", self.path),
        }
    }
}

/// The rewritten segment file, written through page-aligned buffers.
pub(super) struct CleanedFile<S: Storage> {
    path: PathBuf,
    file: S::File,
    buf: Vec<u8>,
    /// Bytes written to the file so far (page multiples until the last write).
    written: u64,
}

impl<S: Storage> CleanedFile<S> {
    pub(super) async fn create(storage: &S, path: PathBuf) -> Result<Self> {
        storage
            .remove(&path)
            .await
            .map_err(|e| StorageError::io("remove", &path, e))?;
        let file = storage
            .open_rw(&path)
            .await
            .map_err(|e| StorageError::io("create", &path, e))?;
        Ok(CleanedFile {
            path,
            file,
            buf: Vec::with_capacity(CLEAN_WRITE_BYTES),
            written: 0,
        })
    }

    pub(super) fn len(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    pub(super) async fn push(&mut self, storage: &S, bytes: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CLEAN_WRITE_BYTES {
            let whole = self.buf.len() / PAGE_SIZE * PAGE_SIZE;
            self.write(storage, whole).await?;
        }
        Ok(())
    }

    /// Writes the first `n` bytes of the buffer (`n` a page multiple, or everything at the
    /// end, padded with zeros).
    async fn write(&mut self, storage: &S, n: usize) -> Result<()> {
        let padded = n.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        if padded == 0 {
            return Ok(());
        }
        let mut out = storage.alloc_buf(padded);
        out.as_mut()[..n].copy_from_slice(&self.buf[..n]);
        out.as_mut()[n..].fill(0);
        self.file
            .write_at(out, self.written)
            .await
            .map_err(|e| StorageError::io("write", &self.path, e))?;
        self.buf.drain(..n);
        self.written += n as u64;
        Ok(())
    }

    /// Writes the rest, cuts the page padding and syncs; returns the file and its size.
    pub(super) async fn finish(mut self, storage: &S) -> Result<(S::File, u64)> {
        let n = self.buf.len();
        self.write(storage, n).await?;
        let size = self.written;
        self.file
            .truncate(size)
            .await
            .map_err(|e| StorageError::io("truncate", &self.path, e))?;
        self.file
            .fdatasync()
            .await
            .map_err(|e| StorageError::io("fdatasync", &self.path, e))?;
        Ok((self.file, size))
    }
}

/// The log's aborted transactions by producer, each producer's sorted by first offset.
struct Aborted(HashMap<i64, Vec<(i64, i64)>>);

impl Aborted {
    fn new(all: impl Iterator<Item = AbortedTxn>) -> Aborted {
        let mut by: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for t in all {
            by.entry(t.producer_id)
                .or_default()
                .push((t.first_offset, t.last_offset));
        }
        for v in by.values_mut() {
            v.sort_unstable();
        }
        Aborted(by)
    }

    /// Whether the batch at `h` belongs to an aborted transaction.
    fn at(&self, h: &Header) -> bool {
        if !h.is_transactional() {
            return false;
        }
        let Some(txns) = self.0.get(&h.producer_id) else {
            return false;
        };
        // The last transaction that began at or before the batch (a producer's
        // transactions do not overlap).
        let i = txns.partition_point(|&(first, _)| first <= h.base_offset);
        i > 0 && h.base_offset <= txns[i - 1].1
    }
}

impl<S: Storage> PartitionLog<S> {
    /// One cleaning pass of a compacted log (`LogConfig::compact`; a log without it is left
    /// alone): maps the cleanable range, rewrites its segments that lose records, then
    /// merges its small segments (`merge.rs`). Runs
    /// only when the bytes written since the last pass's range are at least
    /// `min.cleanable.dirty.ratio` of the range, or the first of them has waited longer than
    /// `max.compaction.lag.ms` (by its segment's newest timestamp). Appends and reads go on
    /// meanwhile. A log busy with another file operation is skipped, not waited for
    /// ([`CompactStats::busy`]): one shard's cleaner passes over all its logs in turn, so
    /// waiting on one would hold up the others.
    pub async fn compact(&self, opts: CompactOptions) -> Result<CompactStats> {
        let mut stats = CompactStats::default();
        let Some(_one_at_a_time) = self.delete_records_lock.try_lock() else {
            log::debug!(
                "{}: not cleaning: busy with another file operation",
                self.name
            );
            stats.busy = true;
            return Ok(stats);
        };
        let _path_op = self.begin_path_op()?;
        // The last stable offset is at or below the high watermark.
        let end = self.last_stable_offset();
        let (candidates, aborted, config) = {
            let inner = self.inner.borrow();
            if !inner.config.compact {
                return Ok(stats);
            }
            let lag_cut = opts
                .now_ms
                .saturating_sub(inner.config.min_compaction_lag_ms);
            let active_base = inner.active().base_offset;
            let mut candidates = Vec::new();
            for seg in inner.segments.values() {
                let closed = seg.base_offset != active_base
                    && !seg.rolled
                    && seg.durable_size == seg.size
                    && seg.next_offset <= end
                    && seg.max_timestamp <= lag_cut;
                let Some(file) = seg.file.clone().filter(|_| closed) else {
                    break;
                };
                candidates.push(Candidate {
                    base: seg.base_offset,
                    next_offset: seg.next_offset,
                    size: seg.size,
                    max_timestamp: seg.max_timestamp,
                    file,
                });
            }
            let aborted = Aborted::new(
                inner
                    .segments
                    .values()
                    .flat_map(|s| s.aborted.iter().copied()),
            );
            (candidates, aborted, inner.config.clone())
        };
        if candidates.is_empty() {
            log::debug!("{}: not cleaning: no closed segment below {end}", self.name);
            return Ok(stats);
        }
        let cleaned_to = self.cleaned_to.get();
        let (dirty, total) = candidates.iter().fold((0u64, 0u64), |(d, t), c| {
            let d = if c.base >= cleaned_to { d + c.size } else { d };
            (d, t + c.size)
        });
        let overdue = candidates
            .iter()
            .find(|c| c.base >= cleaned_to)
            .is_some_and(|c| {
                c.max_timestamp >= 0
                    && opts.now_ms.saturating_sub(c.max_timestamp) > config.max_compaction_lag_ms
            });
        let dirty_enough = dirty as f64 >= config.min_cleanable_dirty_ratio * total as f64;
        // Tombstones a pass kept whose delete horizon has come: work even on a clean log.
        let horizon_due = self
            .tombstones_horizon
            .get()
            .is_some_and(|h| opts.now_ms >= h);
        if !(dirty > 0 && (dirty_enough || overdue) || horizon_due) {
            log::debug!(
                "{}: not cleaning: {dirty} of {total} bytes dirty above {cleaned_to} in {} \
                 closed segment(s) below {end}",
                self.name,
                candidates.len()
            );
            return Ok(stats);
        }

        // Map: each key's latest offset, up to where the map fills.
        let mut map = OffsetMap::with_capacity(opts.map_keys_max);
        let mut mapped = 0usize;
        'segments: for c in &candidates {
            let path = segment_path(&self.dir, c.base, "log");
            let mut reader = BatchReader::new(&*c.file, &path, c.size);
            while let Some((h, _, bytes)) = reader.next().await? {
                opts.pace(bytes.len()).await;
                match map_batch(&mut map, &h, &bytes, aborted.at(&h)) {
                    Ok(true) => {}
                    Ok(false) => break 'segments,
                    Err(e) => {
                        log::warn!(
                            "{}: not cleaning: batch at offset {} unreadable: {}",
                            self.name,
                            h.base_offset,
                            e.0
                        );
                        return Ok(stats);
                    }
                }
            }
            mapped += 1;
        }
        if mapped == 0 {
            log::warn!(
                "{}: not cleaning: the first segment holds more than {} keys (the cleaner's map)",
                self.name,
                opts.map_keys_max
            );
            return Ok(stats);
        }

        // Clean: rewrite each mapped segment that loses a record.
        let clock = Clock {
            now_ms: opts.now_ms,
            delete_retention_ms: config.delete_retention_ms,
        };
        let mut horizon: Option<i64> = None;
        for c in &candidates[..mapped] {
            stats.segments_cleanable += 1;
            stats.bytes_before += c.size;
            let seg = self.clean_segment(c, &map, &aborted, clock, &opts).await?;
            horizon = horizon.into_iter().chain(seg.delete_horizon).min();
            match seg.rewritten {
                None => stats.bytes_after += c.size,
                Some(size) => {
                    stats.segments_rewritten += 1;
                    stats.bytes_after += size;
                    stats.records_removed += seg.records_removed;
                }
            }
        }
        let to = candidates[mapped - 1].next_offset;
        self.cleaned_to.set(to);
        self.tombstones_horizon.set(horizon);
        let sealed = format::seal(
            Kind::CleanerCheckpoint,
            [to, horizon.unwrap_or(i64::MIN), 0, 0],
            &[],
        );
        crate::durable_file::replace_file(
            &*self.storage,
            &self.dir,
            &self.dir.join(CLEANER_CHECKPOINT_FILE),
            &sealed,
        )
        .await?;
        stats.segments_merged = self.merge_segments(to, &opts).await?;
        stats.cleaned_to = Some(to);
        if stats.segments_rewritten > 0 {
            log::info!(
                "{}: cleaned {} segment(s) below offset {to}: {} records removed, {} -> {} bytes",
                self.name,
                stats.segments_rewritten,
                stats.records_removed,
                stats.bytes_before,
                stats.bytes_after
            );
        }
        Ok(stats)
    }

    /// Rewrites one segment without the records the map supersedes (and with its kept
    /// tombstones' delete horizon); nothing is written when no batch changes.
    async fn clean_segment(
        &self,
        c: &Candidate<S::File>,
        map: &OffsetMap,
        aborted: &Aborted,
        clock: Clock,
        opts: &CompactOptions,
    ) -> Result<SegmentCleaned> {
        let path = segment_path(&self.dir, c.base, "log");
        let mut reader = BatchReader::new(&*c.file, &path, c.size);
        let cleaned_path = {
            let mut p = path.as_os_str().to_owned();
            p.push(CLEANED_SUFFIX);
            PathBuf::from(p)
        };
        let mut out: Option<CleanedFile<S>> = None;
        let mut removed = 0u64;
        let mut horizon: Option<i64> = None;
        let interval = self.inner.borrow().config.index_interval_bytes;
        let mut fresh: Segment<S::File> = Segment::new(c.base);
        while let Some((h, pos, bytes)) = reader.next().await? {
            opts.pace(bytes.len()).await;
            let cleaned = clean_batch(map, &h, &bytes, aborted.at(&h), clock).map_err(|e| {
                StorageError::CorruptBatch {
                    reason: format!("{path:?} at {pos} (cleaning): {}", e.0),
                }
            })?;
            horizon = horizon.into_iter().chain(cleaned.delete_horizon).min();
            if cleaned.batch.is_some() && out.is_none() {
                // The first change: the batches before it go over unchanged.
                let mut f = CleanedFile::create(&*self.storage, cleaned_path.clone()).await?;
                let mut copy = BatchReader::new(&*c.file, &path, pos);
                while let Some((_, _, b)) = copy.next().await? {
                    opts.pace(2 * b.len()).await;
                    f.push(&self.storage, &b).await?;
                }
                out = Some(f);
            }
            let Some(f) = out.as_mut() else {
                fresh.index_batch(&h, pos, interval);
                continue;
            };
            removed += cleaned.records_removed as u64;
            let new = cleaned.batch.as_deref().unwrap_or(&bytes);
            let new_h = Header::parse(new).expect("a cleaned batch has a header");
            fresh.index_batch(&new_h, f.len(), interval);
            opts.pace(new.len()).await;
            f.push(&self.storage, new).await?;
        }
        let Some(f) = out else {
            return Ok(SegmentCleaned {
                rewritten: None,
                records_removed: 0,
                delete_horizon: horizon,
            });
        };
        let (file, size) = f.finish(&self.storage).await?;
        debug_assert_eq!(
            fresh.next_offset, c.next_offset,
            "{}: batches kept",
            self.name
        );
        // The old indexes describe the old file: gone before the new file takes the name.
        for ext in ["index", "timeindex"] {
            let p = segment_path(&self.dir, c.base, ext);
            self.storage
                .remove(&p)
                .await
                .map_err(|e| StorageError::io("remove", &p, e))?;
        }
        self.sync_dir().await?;
        self.storage
            .rename(&cleaned_path, &path)
            .await
            .map_err(|e| StorageError::io("rename", &cleaned_path, e))?;
        self.sync_dir().await?;
        self.write_segment_indexes(c.base, &fresh, size).await?;
        {
            let mut inner = self.inner.borrow_mut();
            match inner.segments.get_mut(&c.base) {
                // Still the segment this pass read. (Nothing else deletes segments while a
                // pass runs: retention, DeleteRecords and the replicated start's moves wait
                // for `delete_records_lock`; a truncation never reaches below the high
                // watermark, where the pass works.)
                Some(seg) if seg.file.as_ref().is_some_and(|f| Rc::ptr_eq(f, &c.file)) => {
                    seg.swap_in(Rc::new(file), size, fresh);
                }
                _ => {}
            }
        }
        self.forget_cached(i64::MIN);
        self.cleaned.set(true);
        Ok(SegmentCleaned {
            rewritten: Some(size),
            records_removed: removed,
            delete_horizon: horizon,
        })
    }

    /// Writes the offset and time indexes of a rewritten segment (`fresh` indexed its
    /// batches at their positions in the new file of `size` bytes).
    pub(super) async fn write_segment_indexes(
        &self,
        base: i64,
        fresh: &Segment<S::File>,
        size: u64,
    ) -> Result<()> {
        let index = format::seal(
            Kind::OffsetIndex,
            [
                size as i64,
                fresh.next_offset,
                fresh.max_timestamp,
                fresh.offset_of_max_timestamp,
            ],
            &fresh.index.encode(),
        );
        let time_index = format::seal(
            Kind::TimeIndex,
            [size as i64, 0, 0, 0],
            &fresh.time_index.encode(),
        );
        crate::durable_file::write_file(
            &*self.storage,
            &segment_path(&self.dir, base, "index"),
            &index,
        )
        .await?;
        crate::durable_file::write_file(
            &*self.storage,
            &segment_path(&self.dir, base, "timeindex"),
            &time_index,
        )
        .await?;
        Ok(())
    }

    pub(super) async fn sync_dir(&self) -> Result<()> {
        self.storage
            .sync_dir(&self.dir)
            .await
            .map_err(|e| StorageError::io("fsync dir", &self.dir, e))
    }
}
