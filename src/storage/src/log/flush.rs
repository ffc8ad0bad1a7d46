//! Flushing a partition log: the write stage, the sync stage, the flusher that runs them
//! as two overlapping loops (and writes recovery points beside them), and block
//! preallocation ahead of the active segment.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use crate::error::{Result, StorageError};
use crate::format::{self, Kind};
use crate::io::{IoBuf, Storage, StorageFile, PAGE_SIZE};
use crate::notify::OffsetWaiters;
use crate::producer::SNAPSHOT_BODY_VERSION;
use crate::txn::ABORTED_TXN_BYTES;

use super::recovery_point::RecoveryPoint;
use super::{
    round_up, segment_path, Chunk, FlushTiming, FlusherRunning, PartitionLog,
    PREALLOCATE_MIN_BYTES, PREALLOCATE_STEP_BYTES, WRITE_DEPTH_MAX,
};

/// Runs `futs` with at most `depth` of them in flight; the first error wins. After an error
/// no new one is started, and those already running still run to completion, so no buffer
/// is dropped under the kernel's feet.
async fn bounded<F, T>(futs: impl Iterator<Item = F>, depth: usize) -> std::io::Result<()>
where
    F: Future<Output = std::io::Result<T>>,
{
    let mut futs = futs;
    let mut running: Vec<Pin<Box<F>>> = Vec::with_capacity(depth);
    let mut first_err = None;
    poll_fn(|cx| loop {
        while running.len() < depth.max(1) && first_err.is_none() {
            match futs.next() {
                Some(f) => running.push(Box::pin(f)),
                None => break,
            }
        }
        if running.is_empty() {
            return Poll::Ready(());
        }
        let before = running.len();
        running.retain_mut(|f| match f.as_mut().poll(cx) {
            Poll::Ready(r) => {
                if let Err(e) = r {
                    first_err.get_or_insert(e);
                }
                false
            }
            Poll::Pending => true,
        });
        if running.len() == before {
            return Poll::Pending;
        }
    })
    .await;
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A flush's work for one segment, taken out of `Inner` so no borrow spans the IO.
struct FlushJob<F: StorageFile> {
    base_offset: i64,
    file: Option<Rc<F>>,
    chunks: Vec<Chunk<F::Buf>>,
    /// Size the file must have after the job (rolled segments are truncated to it).
    size: u64,
    /// For rolled segments: index files and producer snapshot to write.
    finalize: Option<Finalize>,
    /// Bytes of the file already preallocated, and the segment size limit.
    allocated: u64,
    segment_bytes: u64,
}

/// What a flush's write stage wrote, for its sync stage.
pub(super) struct Written<F: StorageFile> {
    /// Log end offset when the stage took the buffers: durable once the sync is done.
    target: i64,
    /// `Inner::truncations` when the stage took the buffers.
    generation: u64,
    /// Files written and not yet synced (rolled segments were synced by the write stage).
    to_sync: Vec<(PathBuf, Rc<F>)>,
    /// Size of each segment written, by base offset.
    sizes: Vec<(i64, u64)>,
    /// A file was created: the directory needs an fsync too.
    created: bool,
    timing: FlushTiming,
    /// A recovery point of the tail as the stage took its buffers: ready to write once the
    /// sync covering this stage is done. Boxed, as every flusher's state holds several
    /// `Written`s.
    recovery_point: Option<Box<RecoveryPoint>>,
}

impl<F: StorageFile> Written<F> {
    /// Adds a later write stage's work (its sync then covers both).
    fn absorb(&mut self, later: Written<F>) {
        if later.generation != self.generation {
            // A truncation ran between the two: the earlier target and sizes describe data
            // that may be gone (the truncation synced what it kept itself).
            self.target = later.target;
            self.sizes.clear();
            self.generation = later.generation;
            self.recovery_point = None;
        }
        if later.recovery_point.is_some() {
            self.recovery_point = later.recovery_point;
        }
        self.target = self.target.max(later.target);
        for (path, file) in later.to_sync {
            if !self.to_sync.iter().any(|(p, _)| *p == path) {
                self.to_sync.push((path, file));
            }
        }
        self.sizes.extend(later.sizes);
        self.created |= later.created;
        self.timing.write += later.timing.write;
        self.timing.sync += later.timing.sync;
        self.timing.bytes += later.timing.bytes;
    }
}

struct Finalize {
    index: Vec<u8>,
    time_index: Vec<u8>,
    snapshot: Option<(i64, Vec<u8>)>,
    /// The sealed `.txnindex`, when transactions were aborted in the segment.
    txn_index: Option<Vec<u8>>,
}

impl<S: Storage> PartitionLog<S> {
    /// Waits until some append is buffered (for the partition's flusher task).
    pub async fn wait_dirty(&self) {
        poll_fn(|cx| {
            if self.needs_flush() || self.failure().is_some() || self.inner.borrow().closed {
                Poll::Ready(())
            } else {
                self.dirty_waiters.register(i64::MAX, cx.waker());
                Poll::Pending
            }
        })
        .await
    }

    /// Waits until `offset` is durable (acks=all), or the log failed.
    pub async fn wait_durable(&self, offset: i64) -> Result<()> {
        poll_fn(|cx| {
            let inner = self.inner.borrow();
            if inner.durable_offset > offset {
                return Poll::Ready(Ok(()));
            }
            if let Some(cause) = &inner.failed {
                return Poll::Ready(Err(StorageError::Failed {
                    partition: self.name.clone(),
                    cause: cause.clone(),
                }));
            }
            self.durable_waiters.register(offset, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Waits until the high watermark is above `offset` (fetch long-poll); callers race it
    /// against their own timeout.
    pub async fn wait_high_watermark_above(&self, offset: i64) {
        poll_fn(|cx| {
            let inner = self.inner.borrow();
            if inner.visible_hw() > offset || inner.failed.is_some() {
                return Poll::Ready(());
            }
            let waiters = if inner.replica_hw.is_some() {
                &self.hw_waiters
            } else {
                &self.durable_waiters
            };
            waiters.register(offset, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Writes everything appended so far and makes it durable, with whatever
    /// [`Self::write_ahead`] wrote before; returns the new durable offset. Writes the
    /// recovery point the sync made ready, if any, before returning.
    pub async fn flush(&self) -> Result<i64> {
        let mut written = self.write_pending().await?;
        // Taken once this flush's write stage is done: a write-ahead that held the stage
        // before it has stored its part by then.
        if let Some(mut ahead) = self.written_ahead.take() {
            ahead.absorb(written);
            written = ahead;
        }
        let durable = self.sync_written(written).await?;
        self.write_recovery_point().await;
        Ok(durable)
    }

    /// Writes the appends buffered so far without syncing them (the next [`Self::flush`]
    /// syncs them), so that a flush that follows has only its fdatasync left, or little
    /// more: the replica store's writer calls this as appends arrive, as the one-replica
    /// flusher writes them. Nothing happens to a failed or retired log (its next flush
    /// reports the failure); an error writing fails the log as a flush would.
    pub async fn write_ahead(&self) -> Result<()> {
        self.enter_stage(&self.writing).await;
        if self.failure().is_some() || !self.needs_flush() {
            return self.leave_stage(&self.writing, Ok(()));
        }
        let result = self.write_pending_inner().await;
        let result = self.leave_stage(&self.writing, result);
        let written = result?;
        let mut slot = self.written_ahead.borrow_mut();
        match slot.as_mut() {
            Some(earlier) => earlier.absorb(written),
            None => *slot = Some(written),
        }
        Ok(())
    }

    /// The partition's flusher: writes appends as they arrive and fdatasyncs what was
    /// written, until `stop()` holds with nothing left to flush, or the log fails.
    ///
    /// Writing and syncing are two loops that overlap: while one fdatasync runs, the appends
    /// that arrived meanwhile are already being written, and the next sync covers every
    /// write finished before it starts. The disk is never idle waiting for a sync to finish
    /// (which cost about a tenth of the throughput with 1 MiB batches, 8 in flight). A
    /// third loop writes the recovery points the syncs made ready (`recovery_point`).
    /// `on_flush` gets the timing of each completed sync stage and the writes it covered.
    /// It also ends once the log is closed and flushed ([`Self::close`] waits for that).
    pub async fn run_flusher(
        &self,
        stop: impl Fn() -> bool,
        mut on_flush: impl FnMut(FlushTiming),
    ) -> Result<()> {
        assert!(
            !self.flusher_running.replace(true),
            "{}: one flusher per log",
            self.name
        );
        // Cleared however the flusher ends (error, stop, or its future dropped).
        let _running = FlusherRunning(self);
        let stop = || stop() || self.inner.borrow().closed;
        let unsynced: RefCell<Option<Written<S::File>>> = RefCell::new(None);
        let writer_done = Cell::new(false);
        let wake = OffsetWaiters::default();
        let writer = async {
            let result = async {
                loop {
                    self.wait_dirty().await;
                    if let Some(cause) = self.failure() {
                        return Err(StorageError::Failed {
                            partition: self.name.clone(),
                            cause,
                        });
                    }
                    let written = self.write_pending().await?;
                    let mut slot = unsynced.borrow_mut();
                    match slot.as_mut() {
                        Some(earlier) => earlier.absorb(written),
                        None => *slot = Some(written),
                    }
                    drop(slot);
                    wake.wake_all();
                    if stop() && !self.needs_flush() {
                        return Ok(());
                    }
                }
            }
            .await;
            writer_done.set(true);
            wake.wake_all();
            result
        };
        let syncer_done = Cell::new(false);
        let ready = OffsetWaiters::default();
        let syncer = async {
            let result = async {
                loop {
                    let next = poll_fn(|cx| {
                        if let Some(w) = unsynced.borrow_mut().take() {
                            Poll::Ready(Some(w))
                        } else if writer_done.get() {
                            Poll::Ready(None)
                        } else {
                            wake.register(0, cx.waker());
                            Poll::Pending
                        }
                    })
                    .await;
                    let Some(written) = next else {
                        return Ok(());
                    };
                    self.sync_written(written).await?;
                    on_flush(self.last_flush_timing());
                    if self.recovery_point_ready.borrow().is_some() {
                        ready.wake_all();
                    }
                }
            }
            .await;
            syncer_done.set(true);
            ready.wake_all();
            result
        };
        // Recovery points are written beside the syncs, not between them: an append waiting
        // for the flusher's next sync never waits for one (a caller of `flush`, the replica
        // store's sync, waits for the one its flush made ready: one file replacement per
        // `recovery_point_interval_bytes` of the partition).
        let checkpointer = async {
            loop {
                let more = poll_fn(|cx| {
                    if self.recovery_point_ready.borrow().is_some() {
                        Poll::Ready(true)
                    } else if syncer_done.get() {
                        Poll::Ready(false)
                    } else {
                        ready.register(0, cx.waker());
                        Poll::Pending
                    }
                })
                .await;
                if !more {
                    return;
                }
                // Boxed: the write's state (a file replacement) lives only while it runs,
                // not in every idle partition's flusher (3.3 KiB each when inline).
                Box::pin(self.write_recovery_point()).await;
            }
        };
        let ((wrote, synced), ()) =
            futures_lite::future::zip(futures_lite::future::zip(writer, syncer), checkpointer)
                .await;
        wrote.and(synced)
    }

    /// Waits until `flag` is clear, then sets it (the write and sync stages are each run by
    /// one caller at a time; a flush racing the flusher task, at shutdown, waits its turn).
    pub(super) async fn enter_stage(&self, flag: &Cell<bool>) {
        self.wait_flush_state(|| !flag.get()).await;
        flag.set(true);
    }

    /// Waits until `ready()` holds; it is checked again whenever a flush stage, the flusher
    /// or a path operation ends (they wake `flush_waiters`).
    pub(super) async fn wait_flush_state(&self, ready: impl Fn() -> bool) {
        poll_fn(|cx| {
            if ready() {
                Poll::Ready(())
            } else {
                self.flush_waiters.register(i64::MIN, cx.waker());
                Poll::Pending
            }
        })
        .await
    }

    pub(super) fn leave_stage<T>(&self, flag: &Cell<bool>, result: Result<T>) -> Result<T> {
        flag.set(false);
        self.flush_waiters.wake_all();
        if let Err(e) = &result {
            self.inner
                .borrow_mut()
                .failed
                .get_or_insert_with(|| e.to_string());
            log::error!("{}: refusing further writes: {e}", self.name);
            self.durable_waiters.wake_all();
            self.hw_waiters.wake_all();
            // A flusher parked for appends sees the failure and ends.
            self.dirty_waiters.wake_all();
        }
        result
    }

    /// Flush stage 1: writes every buffered chunk (not synced). Rolled segments are finished
    /// here (synced, cut to size, indexes written), since nothing is appended to them again.
    async fn write_pending(&self) -> Result<Written<S::File>> {
        self.enter_stage(&self.writing).await;
        let result = self.write_pending_inner().await;
        self.leave_stage(&self.writing, result)
    }

    /// Flush stage 2: fdatasyncs what stage 1 wrote, then advances the durable offset
    /// (the high watermark) and wakes the appends it covers.
    async fn sync_written(&self, written: Written<S::File>) -> Result<i64> {
        self.enter_stage(&self.syncing).await;
        let result = self.sync_written_inner(written).await;
        let result = self.leave_stage(&self.syncing, result);
        if let Ok(durable) = &result {
            self.durable_waiters.wake_below(*durable);
            let replica_hw = self.inner.borrow().replica_hw;
            if let Some(hw) = replica_hw {
                self.hw_waiters.wake_below(hw.min(*durable));
            }
        }
        result
    }

    pub(super) async fn write_pending_inner(&self) -> Result<Written<S::File>> {
        let (jobs, target, generation, epochs, recovery_point) = {
            let mut inner = self.inner.borrow_mut();
            if let Some(cause) = &inner.failed {
                return Err(StorageError::Failed {
                    partition: self.name.clone(),
                    cause: cause.clone(),
                });
            }
            let target = inner.log_end_offset();
            let generation = inner.truncations;
            let segment_bytes = inner.config.segment_bytes;
            inner.note_flush_taken();
            let mut jobs = Vec::new();
            for seg in inner.segments.values_mut() {
                if !seg.pending() && seg.file.is_some() {
                    continue;
                }
                if seg.file.is_none() && seg.size == 0 && !seg.rolled {
                    // An empty active segment: nothing to create yet.
                    continue;
                }
                seg.seal_open();
                let finalize = if seg.rolled {
                    Some(Finalize {
                        index: format::seal(
                            Kind::OffsetIndex,
                            [
                                seg.size as i64,
                                seg.next_offset,
                                seg.max_timestamp,
                                seg.offset_of_max_timestamp,
                            ],
                            &seg.index.encode(),
                        ),
                        time_index: format::seal(
                            Kind::TimeIndex,
                            [seg.size as i64, 0, 0, 0],
                            &seg.time_index.encode(),
                        ),
                        snapshot: seg.roll_snapshot.take(),
                        txn_index: (!seg.aborted.is_empty()).then(|| {
                            let mut body =
                                Vec::with_capacity(seg.aborted.len() * ABORTED_TXN_BYTES);
                            for t in &seg.aborted {
                                t.encode(&mut body);
                            }
                            format::seal(Kind::TxnIndex, [seg.next_offset, 0, 0, 0], &body)
                        }),
                    })
                } else {
                    None
                };
                jobs.push(FlushJob {
                    base_offset: seg.base_offset,
                    file: seg.file.clone(),
                    chunks: std::mem::take(&mut seg.sealed),
                    size: seg.size,
                    finalize,
                    allocated: seg.allocated,
                    segment_bytes,
                });
            }
            let recovery_point = inner
                .capture_recovery_point(
                    self.recovery_point_at.get(),
                    inner.config.recovery_point_interval_bytes,
                )
                .map(Box::new);
            if let Some(rp) = &recovery_point {
                self.recovery_point_at.set((rp.base, rp.size));
            }
            // With a rolled segment sealed here, the entries that start in it must be in
            // the checkpoint first: recovery only scans the tail segment for them, and a
            // recovery point captured here spares it the tail's prefix too.
            let seals = jobs.iter().any(|j| j.finalize.is_some()) || recovery_point.is_some();
            let epochs = (inner.epochs_dirty || (inner.epochs_deferred && seals)).then(|| {
                inner.epochs_dirty = false;
                inner.epochs_deferred = false;
                inner.epochs.encode()
            });
            (jobs, target, generation, epochs, recovery_point)
        };
        if let Some(text) = epochs {
            // Before the data: no stale entry describes the batches after, and no batch of a
            // sealed segment is durable without its entry (recovery cuts entries past the
            // recovered end, and assigns the tail segment's again).
            if let Err(e) = self.write_epoch_checkpoint(&text).await {
                self.inner.borrow_mut().epochs_dirty = true;
                return Err(e);
            }
        }
        let mut out = Written {
            target,
            generation,
            to_sync: Vec::with_capacity(jobs.len()),
            sizes: Vec::with_capacity(jobs.len()),
            created: false,
            timing: FlushTiming::default(),
            recovery_point,
        };
        let mut done = Vec::with_capacity(jobs.len());
        for job in jobs {
            let path = segment_path(&self.dir, job.base_offset, "log");
            let file = match job.file {
                Some(f) => f,
                None => {
                    let f = Rc::new(
                        self.storage
                            .open_rw(&path)
                            .await
                            .map_err(|e| StorageError::io("create", &path, e))?,
                    );
                    out.created = true;
                    f
                }
            };
            let preallocate = job.finalize.is_none();
            let started = Instant::now();
            out.timing.bytes += job.chunks.iter().map(|c| c.len as u64).sum::<u64>();
            let allocated = self
                .write_chunks(
                    &file,
                    &path,
                    job.chunks,
                    job.allocated,
                    job.segment_bytes,
                    preallocate,
                )
                .await?;
            out.timing.write += started.elapsed();
            if let Some(fin) = &job.finalize {
                let started = Instant::now();
                file.fdatasync()
                    .await
                    .map_err(|e| StorageError::io("fdatasync", &path, e))?;
                out.timing.sync += started.elapsed();
                file.truncate(job.size)
                    .await
                    .map_err(|e| StorageError::io("truncate", &path, e))?;
                file.fdatasync()
                    .await
                    .map_err(|e| StorageError::io("fdatasync", &path, e))?;
                self.write_sealed(
                    &segment_path(&self.dir, job.base_offset, "index"),
                    &fin.index,
                )
                .await?;
                self.write_sealed(
                    &segment_path(&self.dir, job.base_offset, "timeindex"),
                    &fin.time_index,
                )
                .await?;
                if let Some(txn_index) = &fin.txn_index {
                    self.write_sealed(
                        &segment_path(&self.dir, job.base_offset, "txnindex"),
                        txn_index,
                    )
                    .await?;
                }
                if let Some((at, body)) = &fin.snapshot {
                    let sealed = format::seal(
                        Kind::ProducerSnapshotTimed,
                        [*at, SNAPSHOT_BODY_VERSION, 0, 0],
                        body,
                    );
                    self.write_sealed(&segment_path(&self.dir, *at, "snapshot"), &sealed)
                        .await?;
                    out.created = true;
                }
            } else {
                out.to_sync.push((path, file.clone()));
            }
            out.sizes.push((job.base_offset, job.size));
            done.push((job.base_offset, file, job.finalize.is_some(), allocated));
        }
        // The next write stage may start before this one's sync: it must find the files
        // created and the rolled segments finished, so that state is recorded now; what is
        // durable is recorded by the sync stage.
        let mut inner = self.inner.borrow_mut();
        for (base, file, finalized, allocated) in done {
            if let Some(seg) = inner.segments.get_mut(&base) {
                seg.allocated = seg.allocated.max(allocated);
                seg.file.get_or_insert(file);
                if finalized {
                    seg.rolled = false;
                    seg.tail = Vec::new();
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn sync_written_inner(&self, written: Written<S::File>) -> Result<i64> {
        let Written {
            target,
            generation,
            to_sync,
            sizes,
            created,
            mut timing,
            recovery_point,
        } = written;
        let started = Instant::now();
        for (path, file) in &to_sync {
            file.fdatasync()
                .await
                .map_err(|e| StorageError::io("fdatasync", path, e))?;
        }
        if created {
            self.storage
                .sync_dir(&self.dir)
                .await
                .map_err(|e| StorageError::io("fsync dir", &self.dir, e))?;
        }
        timing.sync += started.elapsed();
        let mut inner = self.inner.borrow_mut();
        // Written before a truncation: what it covered that survived was synced by the
        // truncation itself, and its target may lie past the truncated end.
        if generation == inner.truncations {
            for (base, size) in sizes {
                if let Some(seg) = inner.segments.get_mut(&base) {
                    seg.durable_size = seg.durable_size.max(size);
                }
            }
            inner.durable_offset = inner.durable_offset.max(target);
            if let Some(rp) = recovery_point {
                let covered = inner
                    .segments
                    .get(&rp.base)
                    .is_some_and(|s| s.durable_size >= rp.size);
                debug_assert!(covered, "{}: a sync covers its stage's tail", self.name);
                if covered {
                    *self.recovery_point_ready.borrow_mut() = Some(rp);
                }
            }
        }
        assert!(
            inner.durable_offset <= inner.log_end_offset(),
            "{}: durable offset {} past the log end {}",
            self.name,
            inner.durable_offset,
            inner.log_end_offset()
        );
        self.last_flush.set(timing);
        Ok(inner.durable_offset)
    }

    /// Writes a segment's chunks in order (not synced); returns the bytes of the file now
    /// reserved. Blocks are reserved ahead in large steps when `preallocate`: an append that
    /// has to allocate as it extends the file is a synchronous, threaded write in the kernel.
    async fn write_chunks(
        &self,
        file: &S::File,
        path: &Path,
        chunks: Vec<Chunk<<S::File as StorageFile>::Buf>>,
        mut allocated: u64,
        segment_bytes: u64,
        preallocate: bool,
    ) -> Result<u64> {
        let end = chunks.last().map_or(0, |c| c.pos + round_up(c.len) as u64);
        if end > allocated && preallocate {
            let want = preallocate_to(end, segment_bytes);
            match file.preallocate(want).await {
                Ok(()) => {
                    allocated = want;
                    if self.preallocation_refused.replace(false) {
                        log::info!("{}: reserving blocks ahead again", self.name);
                    }
                }
                // A disk too full to reserve the step ahead may still hold the write itself:
                // going on without the reservation costs speed, refusing would cost the
                // partition. If the write does not fit either, it fails below.
                Err(e) if no_room_to_reserve(&e) => {
                    if !self.preallocation_refused.replace(true) {
                        log::warn!(
                            "{}: writing without reserving blocks ahead ({} bytes refused: {e})",
                            self.name,
                            want
                        );
                    }
                }
                Err(e) => return Err(StorageError::io("fallocate", path, e)),
            }
        }
        // Up to WRITE_DEPTH_MAX chunks are written at once: the disk here takes 1 MiB writes
        // at ~1.2 GiB/s one at a time and ~1.5 GiB/s four at a time. (Overlapping the
        // fdatasync with the next writes was tried and lost: the sync then waited behind the
        // writes, 0.76 of raw; perf/results/2026-11-22-vm-storage.md.)
        // Consecutive chunks share a page (the next one starts with a copy of the partial
        // last page): an earlier chunk stops where the next begins, so that page is written
        // once, by the chunk holding its newest bytes.
        let next_pos: Vec<Option<u64>> = chunks
            .iter()
            .skip(1)
            .map(|c| Some(c.pos))
            .chain([None])
            .collect();
        let writes = chunks
            .into_iter()
            .zip(next_pos)
            .filter_map(|(mut chunk, next)| {
                let mut write_len = round_up(chunk.len);
                if let Some(next) = next {
                    assert!(
                        next >= chunk.pos && next % PAGE_SIZE as u64 == 0,
                        "chunks are ordered and aligned"
                    );
                    write_len = write_len.min((next - chunk.pos) as usize);
                }
                if write_len == 0 {
                    return None;
                }
                // Padding past the data is zeroed: old buffer contents never reach the disk.
                let data_end = chunk.len.min(write_len);
                chunk.buf.as_mut()[data_end..write_len].fill(0);
                chunk.buf.shrink_to(write_len);
                Some(file.write_at(chunk.buf, chunk.pos))
            });
        bounded(writes, WRITE_DEPTH_MAX)
            .await
            .map_err(|e| StorageError::io("write", path, e))?;
        Ok(allocated)
    }

    async fn write_sealed(&self, path: &Path, sealed: &[u8]) -> Result<()> {
        crate::durable_file::write_file(&*self.storage, path, sealed).await
    }
}

/// A reservation refused for want of room (or unsupported by the filesystem), which the
/// write itself may not need.
fn no_room_to_reserve(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{QuotaExceeded, StorageFull, Unsupported};
    matches!(e.kind(), StorageFull | QuotaExceeded | Unsupported)
}

/// How far to reserve a segment's blocks once a write reaches `end`: ahead by as much as it
/// holds, within [`PREALLOCATE_MIN_BYTES`] and [`PREALLOCATE_STEP_BYTES`] (so a growing
/// segment takes a few reservations while it is small and one per step after), never past
/// the segment size limit (unless the write itself is), in whole pages.
pub fn preallocate_to(end: u64, segment_bytes: u64) -> u64 {
    let ahead = end.clamp(PREALLOCATE_MIN_BYTES, PREALLOCATE_STEP_BYTES);
    let want = (end + ahead).min(segment_bytes.max(end));
    want.div_ceil(PAGE_SIZE as u64) * PAGE_SIZE as u64
}

#[cfg(test)]
mod preallocate_tests {
    use super::*;

    #[test]
    fn reservations_grow_with_the_segment_within_the_step_and_limit() {
        const GIB: u64 = 1 << 30;
        // A segment holding one page (an idle replicated partition's election no-op)
        // reserves the minimum, not a whole step.
        assert_eq!(preallocate_to(4096, GIB), 4096 + PREALLOCATE_MIN_BYTES);
        // Doubling while small, one step at a time once large.
        assert_eq!(preallocate_to(1 << 20, GIB), 2 << 20);
        assert_eq!(
            preallocate_to(100 << 20, GIB),
            (100 << 20) + PREALLOCATE_STEP_BYTES
        );
        // Never past the segment limit, unless the write already is (an oversized batch).
        assert_eq!(preallocate_to(GIB - 4096, GIB), GIB);
        assert_eq!(preallocate_to(GIB + 4096, GIB), GIB + 4096);
        // Whole pages.
        assert_eq!(preallocate_to(4096, 5000 + 4096) % PAGE_SIZE as u64, 0);
        // Reservations from an empty segment to the limit, each ahead of the end.
        let (mut allocated, mut steps) = (0u64, 0);
        while allocated < GIB {
            let next = preallocate_to(allocated + 4096, GIB);
            assert!(next > allocated + 4096 || next == GIB);
            allocated = next;
            steps += 1;
        }
        // A fixed step takes GIB / step; doubling from the minimum adds log2(step / min).
        assert!(
            steps <= GIB / PREALLOCATE_STEP_BYTES + 10,
            "{steps} reservations for one segment"
        );
    }
}

#[cfg(test)]
mod bounded_tests {
    use super::bounded;
    use std::cell::Cell;
    use std::future::poll_fn;
    use std::io;
    use std::task::Poll;

    /// A future that is pending `polls` times, then yields `result`; counts how many run.
    async fn job(
        polls: usize,
        running: &Cell<usize>,
        peak: &Cell<usize>,
        fail: bool,
    ) -> io::Result<()> {
        running.set(running.get() + 1);
        peak.set(peak.get().max(running.get()));
        let mut left = polls;
        poll_fn(|cx| {
            if left == 0 {
                Poll::Ready(())
            } else {
                left -= 1;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await;
        running.set(running.get() - 1);
        if fail {
            Err(io::Error::other("injected"))
        } else {
            Ok(())
        }
    }

    #[test]
    fn runs_everything_at_most_depth_at_once() {
        let (running, peak, done) = (Cell::new(0), Cell::new(0), Cell::new(0));
        let futs = (0..10).map(|i| {
            let (running, peak, done) = (&running, &peak, &done);
            async move {
                let r = job(10 - i, running, peak, false).await;
                done.set(done.get() + 1);
                r
            }
        });
        futures_lite::future::block_on(bounded(futs, 3)).unwrap();
        assert_eq!(done.get(), 10);
        assert_eq!(peak.get(), 3);
        assert_eq!(running.get(), 0);
    }

    #[test]
    fn first_error_is_returned_after_all_finish() {
        let (running, peak, started) = (Cell::new(0), Cell::new(0), Cell::new(0));
        let futs = (0..8).map(|i| {
            started.set(started.get() + 1);
            job(i, &running, &peak, i == 1 || i == 3)
        });
        let err = futures_lite::future::block_on(bounded(futs, 4)).unwrap_err();
        assert_eq!(err.to_string(), "injected");
        assert_eq!(running.get(), 0, "every started write ran to completion");
        assert!(started.get() < 8, "nothing new starts after the error");
    }
}
