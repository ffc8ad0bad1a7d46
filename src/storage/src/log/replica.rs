//! The follower's side of a partition log (issue 12: the Kafka log is the Raft log):
//! appending a leader's batches at the leader's offsets, truncating a divergent suffix, and
//! the leader-epoch history that OffsetForLeaderEpoch answers from.
//!
//! Guarantees of [`PartitionLog::truncate_to`]:
//! - It never goes below the committed offset the replication layer reported
//!   ([`PartitionLog::note_committed`]) nor below the log start offset (asserted: the caller
//!   guarantees it, as Kafka's replica fetcher truncates only above its high watermark).
//! - It does not race the flusher or DeleteRecords: it holds the DeleteRecords lock and both
//!   flush stages, and appends are refused ([`StorageError::Truncating`]) while it runs.
//! - Once it returns, the cut is durable: no batch at or past `offset` comes back after a
//!   crash, whatever is appended next (later segments' removals are directory-synced, the
//!   cut segment is truncated and fdatasynced, the epoch checkpoint replaced). This is
//!   Kafka's "truncate, then fsync, before fetching more".
//! - If it fails or the node crashes before it returns, recovery finds a prefix of the log
//!   as it was before the truncation that is at least the truncated log (later segments
//!   are removed newest first, each removal synced before the next, and the cut segment is
//!   cut last). Those extra batches were never committed (the cut is above the commit
//!   point): the replica truncates them again after its next epoch handshake. An IO error
//!   fails the log, as a failed flush does.
//! - Producer state afterwards is what recovery would build from the remaining log (the
//!   newest snapshot at or below `offset`, plus the batches after it): no state of a removed
//!   batch survives, and older batches the window had dropped come back. Expiry is the
//!   caller's, as after `open` ([`PartitionLog::expire_producers`]).
//! - Waiters on offsets at or past `offset` are not woken by the truncation; the
//!   replication layer fails the proposals it knows were superseded.

use std::ops::Bound;

use super::recovery::{read_sealed, scan_segment};
use super::*;
use crate::durable_file::{read_listed_file, replace_file};
use crate::format::{self, Kind};
use crate::leader_epoch::CHECKPOINT_FILE;

/// The largest leader-epoch checkpoint read (a full history of `EPOCH_ENTRIES_MAX` entries
/// is below 2 MiB).
const EPOCH_CHECKPOINT_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// Reads a partition's leader-epoch history and cuts it to the recovered log end; the flag
/// says the file must be rewritten. A missing file (a log written before replication) is an
/// empty history. A damaged one cannot be a torn write (it is replaced atomically): it is
/// logged and treated as empty, which makes OffsetForLeaderEpoch answer UNDEFINED and a
/// follower fall back to truncating to its high watermark, as Kafka does without a history.
pub(super) async fn load_epochs<S: Storage>(
    storage: &S,
    dir: &Path,
    names: &[PathBuf],
    log_end_offset: i64,
) -> Result<(LeaderEpochCache, bool)> {
    let path = dir.join(CHECKPOINT_FILE);
    let read = read_listed_file(storage, &path, EPOCH_CHECKPOINT_BYTES_MAX, names);
    let Some(bytes) = read.await? else {
        return Ok((LeaderEpochCache::default(), false));
    };
    let Some(mut epochs) = LeaderEpochCache::decode(&bytes) else {
        log::warn!(
            "{}: unreadable leader-epoch checkpoint, starting empty",
            path.display()
        );
        return Ok((LeaderEpochCache::default(), true));
    };
    // Written before the data it describes: entries past what survived are dropped.
    let cut = epochs.truncate_from_end(log_end_offset);
    Ok((epochs, cut))
}

/// Undoes a `truncate_to` whose future was dropped before it finished: appends are
/// allowed again and the flush stages it held are released; one dropped while holding both
/// (its IO may have cut files halfway) fails the log, as a failed IO would.
struct Abandoned<'a, S: Storage> {
    log: &'a PartitionLog<S>,
    writing: bool,
    syncing: bool,
}

impl<S: Storage> Drop for Abandoned<'_, S> {
    fn drop(&mut self) {
        let log = self.log;
        log.inner.borrow_mut().truncating = false;
        let halfway: Result<()> = if self.syncing {
            Err(StorageError::Failed {
                partition: log.name.clone(),
                cause: "a truncation was abandoned midway".into(),
            })
        } else {
            Ok(())
        };
        if self.syncing {
            let _ = log.leave_stage(&log.syncing, halfway);
        }
        if self.writing {
            let _ = log.leave_stage(&log.writing, Ok(()));
        }
    }
}

impl<S: Storage> PartitionLog<S> {
    /// Restarts the partition log in `dir` empty at `offset` (a Raft snapshot from the
    /// leader: Kafka's follower on OFFSET_OUT_OF_RANGE, `truncateFullyAndStartAt`). The log
    /// must not be open (close or retire it first, then [`Self::open`] it again): every
    /// file of the directory goes and only a log-start checkpoint of `offset` stays, from
    /// which `open` starts an empty log there (producer state and epoch history start empty
    /// too, as Kafka's do).
    ///
    /// Crash-safe: segments are removed newest first, each removal directory-synced before
    /// the next, then the other files, then the checkpoint is written atomically. So after a
    /// crash the directory opens as either the finished reset (start = end = `offset`) or a
    /// prefix of the old log with its old start, which is below `offset` whenever the reset
    /// moves the log forward: the caller recorded the reset durably first and repeats it
    /// while the log starts below `offset`.
    pub async fn reset_dir(storage: &S, dir: &Path, offset: i64) -> Result<()> {
        assert!(offset >= 0, "reset to a negative offset {offset}");
        storage
            .create_dir_all(dir)
            .await
            .map_err(|e| StorageError::io("create", dir, e))?;
        let names = storage
            .list_dir(dir)
            .await
            .map_err(|e| StorageError::io("list", dir, e))?;
        let mut segments: Vec<i64> = names
            .iter()
            .filter_map(|n| n.to_str()?.strip_suffix(".log")?.parse().ok())
            .collect();
        segments.sort_unstable();
        let sync_dir = || async {
            storage
                .sync_dir(dir)
                .await
                .map_err(|e| StorageError::io("fsync dir", dir, e))
        };
        for base in segments.into_iter().rev() {
            let path = segment_path(dir, base, "log");
            storage
                .discard(&path, None)
                .await
                .map_err(|e| StorageError::io("discard", &path, e))?;
            sync_dir().await?;
        }
        for n in &names {
            let path = dir.join(n);
            // Segments went above; a discarded one's blocks are being freed already.
            let discarded = n
                .to_str()
                .is_some_and(|n| n.ends_with(crate::io::DISCARDED_SUFFIX));
            if discarded || n.extension().is_some_and(|e| e == "log") {
                continue;
            }
            storage
                .remove(&path)
                .await
                .map_err(|e| StorageError::io("remove", &path, e))?;
        }
        sync_dir().await?;
        let sealed = format::seal(Kind::LogStartOffset, [offset, 0, 0, 0], &[]);
        replace_file(storage, dir, &dir.join("log-start-offset"), &sealed).await
    }

    /// The leader-epoch history, (epoch, start offset) in order.
    pub fn leader_epoch_entries(&self) -> Vec<(i32, i64)> {
        self.inner.borrow().epochs.entries().to_vec()
    }

    /// OffsetForLeaderEpoch: (the largest known epoch ≤ `epoch`, the offset where it ended),
    /// with Kafka's semantics ([`LeaderEpochCache::end_offset_for_current`]); the current
    /// epoch ends at the log end offset, even before anything was written in it.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let inner = self.inner.borrow();
        inner
            .epochs
            .end_offset_for_current(epoch, inner.leader_epoch, inner.log_end_offset())
    }

    /// Begins leader epoch `epoch` at the log end (this replica became leader in that Raft
    /// term): later leader appends are stamped with it, and the first of them starts its
    /// entry in the epoch history (an epoch nobody wrote in leaves no entry, so every entry
    /// starts below the log end; OffsetForLeaderEpoch still answers the current epoch with
    /// the log end). Epochs only grow: an epoch not above the current one is refused with
    /// [`StorageError::ReplicaMismatch`] and nothing changes.
    pub fn begin_epoch(&self, epoch: i32) -> Result<()> {
        let mut inner = self.inner.borrow_mut();
        if epoch <= inner.leader_epoch {
            return Err(StorageError::ReplicaMismatch {
                partition: self.name.clone(),
                reason: format!(
                    "leader epoch {epoch} is not above the current epoch {}",
                    inner.leader_epoch
                ),
            });
        }
        inner.leader_epoch = epoch;
        Ok(())
    }

    /// Records that everything below `offset` is committed (the Raft commit index): no
    /// truncation may go below it afterwards. Monotonic; at most the log end offset.
    pub fn note_committed(&self, offset: i64) {
        let mut inner = self.inner.borrow_mut();
        assert!(
            offset <= inner.log_end_offset(),
            "{}: committed offset {offset} past the log end {}",
            self.name,
            inner.log_end_offset()
        );
        inner.committed = inner.committed.max(offset);
    }

    pub(super) async fn write_epoch_checkpoint(&self, text: &[u8]) -> Result<()> {
        replace_file(
            &*self.storage,
            &self.dir,
            &self.dir.join(CHECKPOINT_FILE),
            text,
        )
        .await
    }

    /// Appends a batch the leader wrote, as it is: its base offset must be the log end
    /// offset and its bytes stay identical (offsets, leader epoch and timestamps are the
    /// leader's). CRC-checked like a produced batch; idempotent-producer state records it
    /// without sequence checks (the leader checked them); a batch of a newer leader epoch
    /// starts a new entry of the epoch history. Memory only, like [`Self::append`]. Takes
    /// the bytes by value so the batch cache keeps them without another copy.
    pub fn append_at(&self, batch: Bytes, now_ms: i64) -> Result<Appended> {
        self.append_replicated(batch, now_ms, true)
    }

    /// [`Self::append_at`] for a batch whose CRC the caller already checked: the replica
    /// store's entries, each checked once on its way into the Raft log (a leader's by the
    /// produce path, a follower's by the rpc decoder as it arrived), so not again here (it
    /// is a full pass over the bytes). Only the offset and leader epoch were stamped since,
    /// and neither is covered by the CRC; everything else is checked as in `append_at`.
    pub fn append_verified(&self, batch: Bytes, now_ms: i64) -> Result<Appended> {
        self.append_replicated(batch, now_ms, false)
    }

    fn append_replicated(&self, batch: Bytes, now_ms: i64, verify_crc: bool) -> Result<Appended> {
        let mut inner = self.inner.borrow_mut();
        self.check_appendable(&inner)?;
        // The leader enforced max.message.bytes when it accepted the batch (the topic's
        // value then, which may have been larger): only the hard limit applies here.
        if batch.len() > BATCH_BYTES_MAX {
            return Err(StorageError::BatchTooLarge {
                size: batch.len(),
                max: BATCH_BYTES_MAX,
            });
        }
        let header = Header::parse(&batch).ok_or_else(|| StorageError::CorruptBatch {
            reason: format!("{} bytes is no batch header", batch.len()),
        })?;
        if verify_crc {
            header
                .verify(&batch)
                .map_err(|reason| StorageError::CorruptBatch { reason })?;
        } else {
            debug_assert!(
                header.verify(&batch).is_ok(),
                "a verified batch fails its CRC"
            );
        }
        let base_offset = inner.log_end_offset();
        let mismatch = |reason: String| StorageError::ReplicaMismatch {
            partition: self.name.clone(),
            reason,
        };
        if header.base_offset != base_offset {
            return Err(mismatch(format!(
                "batch at offset {}, but the log ends at {base_offset}",
                header.base_offset
            )));
        }
        if let Some(latest) = inner.epochs.latest_epoch() {
            if header.leader_epoch >= 0 && header.leader_epoch < latest {
                return Err(mismatch(format!(
                    "batch of leader epoch {} after epoch {latest}",
                    header.leader_epoch
                )));
            }
        }
        self.maybe_roll(&mut inner, batch.len() as u64, now_ms)?;
        let interval = inner.config.index_interval_bytes;
        let buf_bytes = inner
            .config
            .write_buffer_bytes
            .max(inner.grown_buffer_bytes);
        inner.appended_since_flush += batch.len() as u64;
        let seg = inner.active_mut();
        let position = seg.size;
        seg.push_bytes(&*self.storage, &batch, buf_bytes);
        seg.index_batch(&header, position, interval);
        seg.first_append_ms.get_or_insert(now_ms);
        if inner.epochs.assign(header.leader_epoch, base_offset) {
            inner.epochs_deferred = true;
        }
        // The log holds a newer epoch than this replica knew: that is now its current one
        // (a leader's appends are never stamped below an epoch already in the log).
        inner.leader_epoch = inner.leader_epoch.max(header.leader_epoch);
        // The leader checked its markers before appending them; a follower keeps whatever
        // the leader's log holds, so a marker that does not parse (damage only) is skipped.
        if let Some(done) = inner.producers.apply_stored(&header, &batch) {
            note_completed(&mut inner, done);
        }
        drop(inner);
        if batch.len() <= CACHE_BATCH_BYTES_MAX {
            self.cache.borrow_mut().insert(
                self.id,
                base_offset,
                header.last_offset(),
                CachedBatch::stored(batch),
            );
        }
        self.dirty_waiters.wake_all();
        Ok(Appended {
            base_offset,
            last_offset: header.last_offset(),
            duplicate: false,
            log_append_time: -1,
        })
    }

    /// Removes every batch at and after `offset` (a divergent suffix): whole later
    /// segments, the tail of the segment holding it (`offset` must start a batch, else
    /// [`StorageError::ReplicaMismatch`] and nothing changes), index entries, cached
    /// batches, epoch entries and producer state past it. An `offset` at or past the log end
    /// changes nothing. See the module header for what holds across a crash.
    pub async fn truncate_to(&self, offset: i64) -> Result<()> {
        let _serial = self.delete_records_lock.lock().await;
        {
            let mut inner = self.inner.borrow_mut();
            if inner.deleted || inner.failed.is_some() || inner.closed {
                // Same refusal an append would get.
                self.check_appendable(&inner)?;
            }
            if offset >= inner.log_end_offset() {
                return Ok(());
            }
            assert!(
                offset >= inner.committed && offset >= inner.log_start_offset,
                "{}: truncation to {offset} below the committed offset {} or log start {}",
                self.name,
                inner.committed,
                inner.log_start_offset
            );
            inner.truncating = true;
        }
        let mut guard = Abandoned {
            log: self,
            writing: false,
            syncing: false,
        };
        self.enter_stage(&self.writing).await;
        guard.writing = true;
        self.enter_stage(&self.syncing).await;
        guard.syncing = true;
        let result = self.truncate_holding_stages(offset).await;
        std::mem::forget(guard);
        self.inner.borrow_mut().truncating = false;
        let _ = self.leave_stage(&self.writing, Ok(()));
        match result {
            // A refusal found before anything changed: the log goes on.
            Err(e @ StorageError::ReplicaMismatch { .. }) => {
                let _ = self.leave_stage(&self.syncing, Ok(()));
                Err(e)
            }
            other => self.leave_stage(&self.syncing, other),
        }
    }

    async fn truncate_holding_stages(&self, offset: i64) -> Result<()> {
        // 1. Everything appended becomes durable, so the cut works on files alone and what
        //    stays is synced whatever the flusher had pending (its own unsynced stage is
        //    ignored afterwards: `truncations` changes).
        let written = self.write_pending_inner().await?;
        self.sync_written_inner(written).await?;
        let unsynced: Vec<(i64, Rc<S::File>)> = {
            let inner = self.inner.borrow();
            inner
                .segments
                .values()
                .filter(|s| s.durable_size < s.size)
                .filter_map(|s| s.file.clone().map(|f| (s.base_offset, f)))
                .collect()
        };
        for (base, file) in unsynced {
            let path = segment_path(&self.dir, base, "log");
            file.fdatasync()
                .await
                .map_err(|e| StorageError::io("fdatasync", &path, e))?;
            let mut inner = self.inner.borrow_mut();
            if let Some(seg) = inner.segments.get_mut(&base) {
                seg.durable_size = seg.size;
            }
        }

        // 2. The cut: the segment holding `offset`, rescanned up to the batch starting
        //    there (which rebuilds its indexes and max timestamp as recovery would).
        let (cut_base, file, size, first_append_ms, interval, aborted_before_cut) = {
            let inner = self.inner.borrow();
            let (&base, seg) = inner
                .segments
                .range(..=offset)
                .next_back()
                .expect("offset >= log start >= first segment");
            // The cut segment's aborted transactions whose markers stay.
            let aborted_before_cut: Vec<AbortedTxn> = seg
                .aborted
                .iter()
                .filter(|t| t.last_offset < offset)
                .copied()
                .collect();
            let file = seg
                .file
                .clone()
                .expect("a flushed, non-empty segment has a file");
            (
                base,
                file,
                seg.size,
                seg.first_append_ms,
                inner.config.index_interval_bytes,
                aborted_before_cut,
            )
        };
        let path = segment_path(&self.dir, cut_base, "log");
        let mut kept = Segment::<S::File>::new(cut_base);
        let mut cut_pos = None;
        scan_segment(&*file, &path, size, true, (0, cut_base), |b| {
            if b.header.base_offset < offset {
                kept.index_batch(&b.header, b.position, interval);
            } else if b.header.base_offset == offset {
                cut_pos = Some(b.position);
            }
        })
        .await?;
        let Some(cut_pos) = cut_pos else {
            return Err(StorageError::ReplicaMismatch {
                partition: self.name.clone(),
                reason: format!("offset {offset} does not start a batch"),
            });
        };
        assert_eq!(kept.next_offset, offset, "the kept batches end at the cut");
        kept.aborted = aborted_before_cut;

        // 3. Producer state as recovery would build it for a log ending at `offset`.
        let producers = self.producers_as_of(offset).await?;
        let page_start = cut_pos / PAGE_SIZE as u64 * PAGE_SIZE as u64;
        let tail = file
            .read_at(page_start, (cut_pos - page_start) as usize)
            .await
            .map_err(|e| StorageError::io("read", &path, e))?;
        assert_eq!(
            tail.len() as u64,
            cut_pos - page_start,
            "tail page read short"
        );

        // 4. The in-memory cut, in one step (appends are refused meanwhile anyway).
        let (removed, epochs) = {
            let mut inner = self.inner.borrow_mut();
            let later: Vec<i64> = inner
                .segments
                .range((Bound::Excluded(cut_base), Bound::Unbounded))
                .map(|(&b, _)| b)
                .collect();
            let removed: Vec<_> = later
                .into_iter()
                .map(|b| (b, inner.segments.remove(&b).and_then(|s| s.file)))
                .collect();
            kept.size = cut_pos;
            kept.durable_size = cut_pos;
            kept.allocated = cut_pos;
            kept.file = Some(file.clone());
            kept.tail = tail.to_vec();
            kept.tail_pos = page_start;
            kept.first_append_ms = first_append_ms.filter(|_| cut_pos > 0);
            inner.segments.insert(cut_base, kept);
            inner.producers = producers;
            inner.durable_offset = inner.durable_offset.min(offset);
            inner.epochs.truncate_from_end(offset);
            inner.epochs_dirty = false;
            inner.epochs_deferred = false;
            inner.truncations += 1;
            (removed, inner.epochs.encode())
        };
        self.forget_cached(offset);
        // Captured before the cut: never written now (`truncations` changed), and the next
        // one is measured from the kept size.
        self.recovery_point_ready.take();
        self.recovery_point_at.set((i64::MIN, 0));

        // 5. Files. Later segments go newest first, each removal synced before the next,
        //    so a crash leaves a prefix of the old log; then the cut segment is cut and
        //    synced; then the epoch history replaced (its directory sync also covers the
        //    stale index files removed). Producer snapshots at a removed segment's base
        //    describe removed batches and go with it. The recovery point goes first: it may
        //    describe bytes the cut removes, and the epoch entries it relies on are cut
        //    from the checkpoint below (a writer that began before the truncation is waited
        //    for, and none begins during it).
        self.remove_recovery_point().await?;
        let removed_count = removed.len();
        for (base, file) in removed.into_iter().rev() {
            let p = segment_path(&self.dir, base, "snapshot");
            self.storage
                .remove(&p)
                .await
                .map_err(|e| StorageError::io("remove", &p, e))?;
            self.remove_segment_files(base, file).await?;
            self.storage
                .sync_dir(&self.dir)
                .await
                .map_err(|e| StorageError::io("fsync dir", &self.dir, e))?;
        }
        file.truncate(cut_pos)
            .await
            .map_err(|e| StorageError::io("truncate", &path, e))?;
        file.fdatasync()
            .await
            .map_err(|e| StorageError::io("fdatasync", &path, e))?;
        // Its indexes (written when it was rolled) describe the longer segment, and so may
        // its aborted transactions (the kept ones are in memory, written at its next seal).
        for ext in ["index", "timeindex", "txnindex"] {
            let p = segment_path(&self.dir, cut_base, ext);
            self.storage
                .remove(&p)
                .await
                .map_err(|e| StorageError::io("remove", &p, e))?;
        }
        self.write_epoch_checkpoint(&epochs).await?;
        log::info!(
            "{}: truncated to offset {offset} ({} later segment(s) removed)",
            self.name,
            removed_count
        );
        Ok(())
    }

    /// Producer state for the log's batches below `offset`: the newest readable snapshot
    /// at or below it, plus the batches from there to `offset` (all durable: the caller
    /// flushed). The same rule as recovery in `open`.
    async fn producers_as_of(&self, offset: i64) -> Result<ProducerState> {
        let names = self
            .storage
            .list_dir(&self.dir)
            .await
            .map_err(|e| StorageError::io("list", &self.dir, e))?;
        let mut snapshots: Vec<i64> = names
            .iter()
            .filter_map(|n| n.to_str()?.strip_suffix(".snapshot")?.parse().ok())
            .filter(|&s| s <= offset)
            .collect();
        snapshots.sort_unstable();
        let mut producers = ProducerState::default();
        let mut replay_from = i64::MIN;
        for &snap in snapshots.iter().rev() {
            let path = segment_path(&self.dir, snap, "snapshot");
            let sealed =
                match read_sealed(&*self.storage, &path, Kind::ProducerSnapshotTimed).await? {
                    Some(s) => Some(s),
                    None => read_sealed(&*self.storage, &path, Kind::ProducerSnapshot).await?,
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
        let replay: Vec<(i64, Rc<S::File>, u64)> = {
            let inner = self.inner.borrow();
            inner
                .segments
                .values()
                .filter(|s| s.next_offset > replay_from && s.base_offset < offset)
                .filter_map(|s| s.file.clone().map(|f| (s.base_offset, f, s.size)))
                .collect()
        };
        for (base, file, size) in replay {
            let path = segment_path(&self.dir, base, "log");
            scan_segment(&*file, &path, size, false, (0, base), |b| {
                let h = &b.header;
                // Closed transactions need nothing more here: the segments that stay keep
                // their aborted lists.
                if h.base_offset >= replay_from && h.base_offset < offset {
                    producers.apply_stored(h, b.bytes);
                }
            })
            .await?;
        }
        // As after recovery's replay: back within the table's limit, newest kept.
        producers.trim_to_limit();
        Ok(producers)
    }
}
