//! Where a partition log starts and which segments go: DeleteRecords, a replicated log's
//! start, retention by time and size, and the removal of segment files.

use std::path::Path;
use std::rc::Rc;

use crate::error::{Result, StorageError};
use crate::format::{self, Kind};
use crate::io::{Storage, StorageFile};

use super::{segment_path, Inner, PartitionLog};

impl<S: Storage> PartitionLog<S> {
    /// Replaces a sealed file that already holds an acknowledged value (the log start
    /// checkpoint) atomically ([`crate::durable_file::replace_file`]): overwriting in place
    /// could tear both values at a power loss and so undo a DeleteRecords that was
    /// acknowledged before.
    async fn replace_sealed(&self, path: &Path, sealed: &[u8]) -> Result<()> {
        crate::durable_file::replace_file(&*self.storage, &self.dir, path, sealed).await
    }

    /// Moves the log start offset forward (DeleteRecords); `offset` may be at most the high
    /// watermark. Whole segments below it are deleted.
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64> {
        // One at a time: two interleaved replaces of the checkpoint could leave the lower
        // offset on disk after the higher one was acknowledged.
        let _one_at_a_time = self.delete_records_lock.lock().await;
        let _path_op = self.begin_path_op()?;
        let (hw, start) = {
            let inner = self.inner.borrow();
            (inner.visible_hw(), inner.log_start_offset)
        };
        if offset > hw || offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: start,
                high_watermark: hw,
            });
        }
        if offset > start {
            let sealed = format::seal(Kind::LogStartOffset, [offset, 0, 0, 0], &[]);
            self.replace_sealed(&self.dir.join("log-start-offset"), &sealed)
                .await?;
            {
                let mut inner = self.inner.borrow_mut();
                inner.log_start_offset = inner.log_start_offset.max(offset);
                inner.checkpointed_start = inner.checkpointed_start.max(offset);
            }
            self.forget_cached(i64::MIN);
            self.delete_segments(|_, _| false).await?;
        }
        Ok(self.log_start_offset())
    }

    /// The base offset of the first segment kept: where replication may still read from
    /// ([`Self::read_replica`]), at or below the log start offset.
    pub fn retained_start(&self) -> i64 {
        *self
            .inner
            .borrow()
            .segments
            .keys()
            .next()
            .expect("a log always has a segment")
    }

    /// A replicated log's start offset moves up to `offset` in memory at once (Raft applied
    /// a DeleteRecords here: its readers must not see below it from now on, not only once
    /// [`Self::move_replica_start`] has persisted it). Lower values and values past the high
    /// watermark change nothing. Returns the log start offset.
    pub fn raise_replica_start(&self, offset: i64) -> i64 {
        let mut inner = self.inner.borrow_mut();
        debug_assert!(inner.replica_hw.is_some(), "{}: not replicated", self.name);
        if inner.replica_hw.is_some() && offset <= inner.visible_hw() {
            inner.log_start_offset = inner.log_start_offset.max(offset);
        }
        inner.log_start_offset
    }

    /// A replicated log's start moves (sluice-replica, as Raft applies it): consumers see
    /// from `log_start` on (Kafka's log start offset: any offset up to the high watermark;
    /// a lower one than now changes nothing), persisted in the log start checkpoint as
    /// [`Self::delete_records_before`] persists it, and whole segments below both it and
    /// `retain_from` (the Raft log's first entry, which followers may still be sent; it only
    /// moves up) are deleted. Returns the log start offset.
    pub async fn move_replica_start(&self, log_start: i64, retain_from: i64) -> Result<i64> {
        let _one_at_a_time = self.delete_records_lock.lock().await;
        let _path_op = self.begin_path_op()?;
        let (hw, start, checkpointed) = {
            let mut inner = self.inner.borrow_mut();
            debug_assert!(inner.replica_hw.is_some(), "{}: not replicated", self.name);
            let keep = inner.retain_from.unwrap_or(i64::MIN).max(retain_from);
            inner.retain_from = Some(keep);
            (
                inner.visible_hw(),
                inner.log_start_offset,
                inner.checkpointed_start,
            )
        };
        if log_start > hw || log_start < 0 {
            return Err(StorageError::OffsetOutOfRange {
                requested: log_start,
                log_start_offset: start,
                high_watermark: hw,
            });
        }
        let target = start.max(log_start);
        if target > checkpointed {
            let sealed = format::seal(Kind::LogStartOffset, [target, 0, 0, 0], &[]);
            self.replace_sealed(&self.dir.join("log-start-offset"), &sealed)
                .await?;
            let mut inner = self.inner.borrow_mut();
            inner.checkpointed_start = inner.checkpointed_start.max(target);
        }
        {
            let mut inner = self.inner.borrow_mut();
            inner.log_start_offset = inner.log_start_offset.max(target);
        }
        self.delete_segments(|_, _| false).await?;
        Ok(self.log_start_offset())
    }

    /// Applies `retention.ms` and `retention.bytes` at segment granularity; the active
    /// segment is never deleted, nor one holding offsets at or past the high watermark.
    /// Returns how many segments were removed.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        // Not while a cleaning pass rewrites segments (`compact`): its rename must not bring
        // back the name of a segment deleted meanwhile.
        let _one_at_a_time = self.delete_records_lock.lock().await;
        let doomed = retention_rule(&self.inner.borrow(), now_ms);
        self.delete_segments(doomed).await
    }

    /// The log start offset [`Self::enforce_retention`] would move to at `now_ms` (the base
    /// offset of the first segment it would keep), `None` if it would not move the start.
    /// Deletes nothing: a replicated log's retention goes through Raft
    /// (`GroupManager::compact`), which decides where the log starts.
    pub fn retention_offset(&self, now_ms: i64) -> Option<i64> {
        let inner = self.inner.borrow();
        let victims = doomed_segments(&inner, retention_rule(&inner, now_ms));
        let last = *victims.last()?;
        let (&keep, _) = inner
            .segments
            .range(last + 1..)
            .next()
            .expect("the active segment is never doomed");
        (keep > inner.log_start_offset).then_some(keep)
    }

    /// Deletes the oldest closed, durable segments while `doomed(size, max_timestamp)` says
    /// so or they lie wholly below the log start offset.
    async fn delete_segments(&self, doomed: impl FnMut(u64, i64) -> bool) -> Result<usize> {
        let _path_op = self.begin_path_op()?;
        let victims: Vec<(i64, Option<Rc<S::File>>)> = {
            let mut inner = self.inner.borrow_mut();
            let victims: Vec<_> = doomed_segments(&inner, doomed)
                .into_iter()
                .map(|v| {
                    let seg = inner.segments.remove(&v).expect("a doomed segment exists");
                    (v, seg.file)
                })
                .collect();
            let first = *inner
                .segments
                .keys()
                .next()
                .expect("active segment remains");
            // (A replicated log deletes only below its log start: `first` is at most it.)
            inner.log_start_offset = inner.log_start_offset.max(first);
            // Entries below the new start describe nothing left; the checkpoint follows
            // later (until then the old one only holds more history, which is safe).
            let start = inner.log_start_offset;
            if inner.epochs.truncate_from_start(start) {
                inner.epochs_deferred = true;
            }
            victims
        };
        if !victims.is_empty() {
            // Windows of a deleted segment would keep its file open (and its blocks held).
            self.drop_read_ahead();
        }
        let deleted = victims.len();
        for (base, file) in victims {
            self.remove_segment_files(base, file).await?;
        }
        if deleted > 0 {
            log::info!(
                "{}: deleted {} segment(s), log start {}",
                self.name,
                deleted,
                self.log_start_offset()
            );
        }
        Ok(deleted)
    }

    /// Removes a segment's files, the segment first (its blocks freed gradually, see
    /// `Storage::discard`; `file` is its open handle): indexes without their segment are
    /// ignored at open.
    pub(super) async fn remove_segment_files(
        &self,
        base: i64,
        file: Option<Rc<S::File>>,
    ) -> Result<()> {
        let p = segment_path(&self.dir, base, "log");
        self.storage
            .discard(&p, file)
            .await
            .map_err(|e| StorageError::io("discard", &p, e))?;
        for ext in ["index", "timeindex", "txnindex"] {
            let p = segment_path(&self.dir, base, ext);
            self.storage
                .remove(&p)
                .await
                .map_err(|e| StorageError::io("remove", &p, e))?;
        }
        Ok(())
    }
}

/// `retention.ms` and `retention.bytes` as a rule over the oldest segments in order:
/// `doomed(size, max_timestamp)` says whether the next one goes.
fn retention_rule<F: StorageFile>(inner: &Inner<F>, now_ms: i64) -> impl FnMut(u64, i64) -> bool {
    let retention_ms = inner.config.retention_ms;
    let retention_bytes = inner.config.retention_bytes;
    let mut remaining = inner.size_bytes() as i64;
    move |seg_size, max_ts| {
        let too_old = retention_ms >= 0 && max_ts >= 0 && now_ms - max_ts > retention_ms;
        let too_big = retention_bytes >= 0 && remaining - seg_size as i64 >= retention_bytes;
        if too_old || too_big {
            remaining -= seg_size as i64;
            true
        } else {
            false
        }
    }
}

/// Base offsets of the oldest segments that may go: closed (not the active one, finished
/// and durable), wholly below the high watermark (Kafka's retention never passes it either;
/// on a single node this holds for every durable segment), and below the log start offset
/// or `doomed(size, max_timestamp)`; the first that is not ends the run.
fn doomed_segments<F: StorageFile>(
    inner: &Inner<F>,
    mut doomed: impl FnMut(u64, i64) -> bool,
) -> Vec<i64> {
    let active_base = inner.active().base_offset;
    let hw = inner.visible_hw();
    let mut victims = Vec::new();
    for seg in inner.segments.values() {
        let closed = seg.base_offset != active_base
            && !seg.rolled
            && seg.durable_size == seg.size
            && seg.next_offset <= hw;
        if !closed {
            break;
        }
        if seg.next_offset <= inner.deletable_below() || doomed(seg.size, seg.max_timestamp) {
            victims.push(seg.base_offset);
        } else {
            break;
        }
    }
    victims
}
