//! Merging a compacted log's small segments after a cleaning pass: consecutive segments of
//! the cleaned range whose bytes together fit in `segment.bytes` become one, as Kafka's
//! cleaner groups segments, so a compacted log's segment count (and its open files) follows
//! its live data rather than its history.
//!
//! The merge copies the members' batches unchanged and in order into one file, so every
//! batch keeps its offsets and its place in the log (the Raft ordinal rule of
//! [`crate::compact`]). It is crash-safe with the `.swap` file as the commit point:
//!
//! 1. the batches are written to `{first}.log.cleaned` (direct writes, cut to size,
//!    fdatasynced); a crash here leaves a `.cleaned` file that open sweeps;
//! 2. the members' offset and time indexes are removed (a crash rebuilds them by scanning),
//!    and the producer snapshots at the later members' bases (open replays producer state
//!    from the newest snapshot by whole segments, so none may lie inside a segment; an
//!    older snapshot only means a longer replay);
//! 3. the file is renamed `{first}.log.swap` and the directory synced: from here the merge
//!    is decided, and open finishes it if this pass does not;
//! 4. the other members' segments are discarded, the swap renamed over `{first}.log` and
//!    the directory synced; then the new indexes are written and memory swapped.
//!
//! At open ([`finish_swaps`]) a `{b}.log.swap` is whole (it was synced before its rename):
//! the offsets its batches span name the segments it replaces, which are removed before it
//! is renamed over `{b}.log`.
//!
//! Members after the first hold no aborted transactions (no `.txnindex`): the merged segment
//! keeps the first member's. A segment with one ends a group (the cleaner emptied those
//! transactions' records, so such segments are few and small).

use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::config::{OFFSET_INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES};
use crate::error::{Result, StorageError};
use crate::io::Storage;

use super::compact::{BatchReader, CleanedFile, CompactOptions, CLEANED_SUFFIX};
use super::recovery::scan_segment;
use super::{segment_path, PartitionLog, Segment};

/// What the name of a merged segment ends with between its commit and its rename.
pub(crate) const SWAP_SUFFIX: &str = ".swap";

/// One member of a group to merge, as the pass found it.
struct Member<F> {
    base: i64,
    size: u64,
    file: Rc<F>,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

impl<S: Storage> PartitionLog<S> {
    /// Merges the closed segments below `end` (the cleaned range's end) in groups that fit
    /// in `segment.bytes`; returns how many segments were merged away. The caller holds
    /// `delete_records_lock` (nothing else removes or rewrites closed segments meanwhile).
    pub(super) async fn merge_segments(&self, end: i64, opts: &CompactOptions) -> Result<usize> {
        let groups = self.merge_groups(end);
        let mut merged = 0;
        for g in &groups {
            self.merge_group(g, opts).await?;
            merged += g.len() - 1;
        }
        if merged > 0 {
            log::info!(
                "{}: merged {} segment(s) into {} below offset {end}",
                self.name,
                merged + groups.len(),
                groups.len()
            );
        }
        Ok(merged)
    }

    /// Runs of two or more consecutive closed segments below `end` that together stay
    /// within the limits a rolled segment has: `segment.bytes`, both indexes'
    /// `segment.index.bytes`, and an offset span the indexes' relative offsets hold.
    fn merge_groups(&self, end: i64) -> Vec<Vec<Member<S::File>>> {
        let inner = self.inner.borrow();
        let cfg = &inner.config;
        let index_entries_max = (cfg.segment_index_bytes / OFFSET_INDEX_ENTRY_BYTES) as usize;
        let time_entries_max = (cfg.segment_index_bytes / TIME_INDEX_ENTRY_BYTES) as usize;
        let active_base = inner.active().base_offset;
        let mut groups = Vec::new();
        let mut run: Vec<Member<S::File>> = Vec::new();
        // The run's first base, bytes, index and time-index entries.
        let (mut first, mut bytes, mut entries, mut times) = (0i64, 0u64, 0usize, 0usize);
        for seg in inner.segments.values() {
            let closed = seg.base_offset != active_base
                && !seg.rolled
                && seg.durable_size == seg.size
                && seg.next_offset <= end;
            let Some(file) = seg.file.clone().filter(|_| closed) else {
                break;
            };
            // Each member may add an entry to each index where it starts.
            let joins = !run.is_empty()
                && seg.aborted.is_empty()
                && bytes + seg.size <= cfg.segment_bytes
                && entries + seg.index.len() < index_entries_max
                && times + seg.time_index.len() < time_entries_max
                && seg.next_offset - first <= (u32::MAX / 2) as i64;
            if !joins {
                if run.len() >= 2 {
                    groups.push(std::mem::take(&mut run));
                }
                run.clear();
                (first, bytes, entries, times) = (seg.base_offset, 0, 0, 0);
            }
            bytes += seg.size;
            entries += seg.index.len() + 1;
            times += seg.time_index.len() + 1;
            run.push(Member {
                base: seg.base_offset,
                size: seg.size,
                file,
            });
        }
        if run.len() >= 2 {
            groups.push(run);
        }
        groups
    }

    async fn merge_group(&self, group: &[Member<S::File>], opts: &CompactOptions) -> Result<()> {
        let first = group[0].base;
        let path = segment_path(&self.dir, first, "log");
        let cleaned_path = with_suffix(&path, CLEANED_SUFFIX);
        let swap_path = with_suffix(&path, SWAP_SUFFIX);
        let interval = self.inner.borrow().config.index_interval_bytes;
        // 1. The batches, unchanged, into one file.
        let mut out = CleanedFile::create(&*self.storage, cleaned_path.clone()).await?;
        let mut fresh: Segment<S::File> = Segment::new(first);
        for m in group {
            let mpath = segment_path(&self.dir, m.base, "log");
            let mut reader = BatchReader::new(&*m.file, &mpath, m.size);
            while let Some((h, _, bytes)) = reader.next().await? {
                assert_eq!(
                    h.base_offset, fresh.next_offset,
                    "{}: merged batches follow each other",
                    self.name
                );
                fresh.index_batch(&h, out.len(), interval);
                // Read once, written once.
                opts.pace(2 * bytes.len()).await;
                out.push(&self.storage, &bytes).await?;
            }
        }
        let (file, size) = out.finish(&self.storage).await?;
        // 2. The old indexes describe the old files; producer snapshots at the later
        //    members' bases would sit inside the merged segment, where open's replay (from
        //    the newest snapshot, by whole segments) would skip the batches after them.
        for m in group {
            for ext in ["index", "timeindex"] {
                let p = segment_path(&self.dir, m.base, ext);
                self.storage
                    .remove(&p)
                    .await
                    .map_err(|e| StorageError::io("remove", &p, e))?;
            }
        }
        for m in &group[1..] {
            let p = segment_path(&self.dir, m.base, "snapshot");
            self.storage
                .remove(&p)
                .await
                .map_err(|e| StorageError::io("remove", &p, e))?;
        }
        // 3. The commit point.
        self.storage
            .rename(&cleaned_path, &swap_path)
            .await
            .map_err(|e| StorageError::io("rename", &cleaned_path, e))?;
        self.sync_dir().await?;
        // 4. The members it replaces go; it takes the first one's name.
        for m in &group[1..] {
            self.remove_segment_files(m.base, Some(m.file.clone()))
                .await?;
        }
        self.storage
            .rename(&swap_path, &path)
            .await
            .map_err(|e| StorageError::io("rename", &swap_path, e))?;
        self.sync_dir().await?;
        self.write_segment_indexes(first, &fresh, size).await?;
        {
            let mut inner = self.inner.borrow_mut();
            for m in group {
                let seg = inner.segments.get(&m.base);
                assert!(
                    seg.and_then(|s| s.file.as_ref())
                        .is_some_and(|f| Rc::ptr_eq(f, &m.file)),
                    "{}: a merged segment changed during the pass",
                    self.name
                );
            }
            for m in &group[1..] {
                inner.segments.remove(&m.base);
            }
            let seg = inner
                .segments
                .get_mut(&first)
                .expect("the first member stays");
            seg.swap_in(Rc::new(file), size, fresh);
        }
        self.forget_cached(i64::MIN);
        Ok(())
    }
}

/// Finishes the merges a stop interrupted after their commit point: each `{b}.log.swap`
/// in `dir` (`swaps` holds their bases) replaces the segments whose bases lie in the
/// offsets it spans and is renamed over `{b}.log`. `bases` (the `.log` files found) and
/// `snapshots` (the producer snapshots) are updated to match. Runs at open, before the
/// segments are read.
pub(super) async fn finish_swaps<S: Storage>(
    storage: &S,
    dir: &Path,
    swaps: &[i64],
    bases: &mut Vec<i64>,
    snapshots: &mut Vec<i64>,
) -> Result<()> {
    for &b in swaps {
        let path = segment_path(dir, b, "log");
        let swap_path = with_suffix(&path, SWAP_SUFFIX);
        let (file, size) = crate::durable_file::open_sized(storage, &swap_path).await?;
        let mut next = b;
        let scanned = scan_segment(&file, &swap_path, size, true, (0, b), |batch| {
            next = batch.header.last_offset() + 1;
        })
        .await?;
        if scanned != size {
            // Synced whole before its rename: a short one is damage, not a torn merge.
            return Err(StorageError::CorruptBatch {
                reason: format!(
                    "{swap_path:?}: a merged segment reads whole to {scanned} of {size} bytes"
                ),
            });
        }
        drop(file);
        let inside = |o: i64| o > b && o < next;
        for &other in bases.iter().chain(snapshots.iter()).filter(|&&o| inside(o)) {
            let p = segment_path(dir, other, "log");
            storage
                .remove(&p)
                .await
                .map_err(|e| StorageError::io("remove", &p, e))?;
            for ext in ["index", "timeindex", "txnindex", "snapshot"] {
                let p = segment_path(dir, other, ext);
                storage
                    .remove(&p)
                    .await
                    .map_err(|e| StorageError::io("remove", &p, e))?;
            }
        }
        for ext in ["index", "timeindex"] {
            let p = segment_path(dir, b, ext);
            storage
                .remove(&p)
                .await
                .map_err(|e| StorageError::io("remove", &p, e))?;
        }
        storage
            .sync_dir(dir)
            .await
            .map_err(|e| StorageError::io("fsync dir", dir, e))?;
        storage
            .rename(&swap_path, &path)
            .await
            .map_err(|e| StorageError::io("rename", &swap_path, e))?;
        storage
            .sync_dir(dir)
            .await
            .map_err(|e| StorageError::io("fsync dir", dir, e))?;
        bases.retain(|&o| !inside(o));
        snapshots.retain(|&o| !inside(o));
        if !bases.contains(&b) {
            bases.push(b);
        }
        bases.sort_unstable();
        log::info!(
            "{}: finished merging the segments of offsets {b}..{next}",
            dir.display()
        );
    }
    Ok(())
}
