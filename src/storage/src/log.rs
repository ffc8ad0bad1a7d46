//! One partition's log: a directory of segments holding RecordBatch v2 bytes.
//!
//! Owned by the partition's shard; `!Send`. Appends are synchronous and touch only memory
//! (they copy the batch into the active segment's page-aligned write buffer). A flush has
//! two stages: the write stage writes every pending chunk with direct IO, the sync stage
//! fdatasyncs it, so all appends since the last flush share writes and one sync (group
//! commit). The partition's flusher (`run_flusher`) runs the stages as two loops that
//! overlap: one sync covers every write finished before it, while later writes proceed.
//! Invariant: writes of the same page never run at once (write stages are serialized, and
//! the page shared by two chunks is written once per stage, by the later chunk). No
//! `RefCell` borrow is held across an await: a stage takes its work out, does the IO, then
//! records the result.
//!
//! Offsets: `log_start_offset` ≤ durable offset ≤ `log_end_offset` (asserted after every
//! sync). The high watermark is the durable offset on a single node; a Raft replica's log
//! ([`PartitionLog::set_replicated`]) clamps it to Raft's commit-and-synced offset
//! ([`PartitionLog::set_high_watermark`]). Reads, offset lookups, DeleteRecords and
//! retention never go past the high watermark; only replication's own reads
//! ([`PartitionLog::read_replica`]) see the durable entries above it, and below the log
//! start down to the first segment kept (a replicated log's start may lie past its first
//! Raft entry, whose segments stay: [`PartitionLog::move_replica_start`]). A truncation (`replica.rs`, with follower appends and the
//! leader-epoch history) holds both flush stages; a flush stage that began before it is
//! recognised by `Inner::truncations` and does not move the durable offset afterwards.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::{poll_fn, Future};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::cache::{BatchCache, CachedBatch};
use crate::config::{
    LogConfig, BATCH_BYTES_MAX, OFFSET_INDEX_ENTRY_BYTES, SEGMENTS_PER_PARTITION_MAX,
    TIME_INDEX_ENTRY_BYTES, WRITE_BUFFER_GROWN_BYTES_MAX,
};
use crate::error::{Result, StorageError};
use crate::format::{self, Kind};
use crate::hdr::{self, Header, HEADER_BYTES};
use crate::index::{OffsetIndex, TimeIndex};
use crate::io::{IoBuf, Storage, StorageFile, PAGE_SIZE};
use crate::leader_epoch::{LeaderEpochCache, CHECKPOINT_FILE};
use crate::notify::OffsetWaiters;
use crate::producer::{ProducerState, SeqCheck, SNAPSHOT_BODY_VERSION};

/// Bytes read per call when scanning a segment (recovery) and the read-ahead of fetches.
pub const SCAN_CHUNK_BYTES: usize = 1024 * 1024;
pub const READ_AHEAD_BYTES: usize = 64 * 1024;
/// Most disk blocks reserved ahead of the active segment's end (Redpanda's fallocation step).
pub const PREALLOCATE_STEP_BYTES: u64 = 32 * 1024 * 1024;
/// Fewest blocks reserved ahead. Between the two the reservation doubles the segment (see
/// [`preallocate_to`]), so a partition that holds little (thousands of replicated partitions
/// with an election no-op each) reserves little: a fixed 32 MiB step made 3,000 of them
/// reserve 94 GiB per node.
pub const PREALLOCATE_MIN_BYTES: u64 = 64 * 1024;
/// Batches up to this size are also kept in the shard's batch cache.
pub const CACHE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Largest single read a fetch makes; a larger `max_bytes` is served in several reads. Far
/// below what one storage read may be (the DMA layer refuses reads over 64 MiB, which a
/// 64 MiB fetch plus one batch header used to exceed).
pub const READ_CHUNK_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Writes of one flush in flight at once.
pub const WRITE_DEPTH_MAX: usize = 4;

/// The follower's side: appends at given offsets, truncation, leader-epoch history.
mod replica;
use replica::load_epochs;

static NEXT_LOG_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn round_up(n: usize) -> usize {
    n.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

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

fn segment_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    /// A retry of a batch already in the log; nothing was written.
    pub duplicate: bool,
    /// LogAppendTime stamped on the batch, or -1.
    pub log_append_time: i64,
}

/// One batch's place, as found by a scan.
#[derive(Clone, Copy, Debug)]
struct ScannedBatch {
    header: Header,
    position: u64,
}

/// A chunk of the write buffer waiting to be written.
struct Chunk<B> {
    buf: B,
    /// File position of `buf[0]`; page aligned.
    pos: u64,
    /// Bytes of `buf` that hold data.
    len: usize,
}

struct Segment<F: StorageFile> {
    base_offset: i64,
    /// Offset after the last batch appended (flushed or not).
    next_offset: i64,
    /// Logical bytes appended (flushed or not).
    size: u64,
    /// Bytes known to be on disk and synced.
    durable_size: u64,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    /// Wall-clock time of the first append, for `segment.ms`.
    first_append_ms: Option<i64>,
    /// `None` until the first flush creates the file.
    file: Option<Rc<F>>,
    index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index: u64,
    /// The buffer appends are copied into.
    open: Option<Chunk<F::Buf>>,
    /// Full buffers waiting for the next flush.
    sealed: Vec<Chunk<F::Buf>>,
    /// The partial last page of the file, carried in memory between flushes.
    tail: Vec<u8>,
    tail_pos: u64,
    /// Rolled: after its last flush it is truncated to size and its indexes written.
    rolled: bool,
    /// Producer snapshot to write when the roll is finalized (state as of the next segment).
    roll_snapshot: Option<(i64, Vec<u8>)>,
    /// Bytes of the file with blocks reserved (fallocate, size unchanged).
    allocated: u64,
}

impl<F: StorageFile> Segment<F> {
    fn new(base_offset: i64) -> Self {
        Segment {
            base_offset,
            next_offset: base_offset,
            size: 0,
            durable_size: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            first_append_ms: None,
            file: None,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
            open: None,
            sealed: Vec::new(),
            tail: Vec::new(),
            tail_pos: 0,
            rolled: false,
            roll_snapshot: None,
            allocated: 0,
        }
    }

    fn pending(&self) -> bool {
        self.open.is_some() || !self.sealed.is_empty() || (self.rolled && self.file.is_some())
    }

    /// Accounts a batch at `position` in the indexes.
    fn index_batch(&mut self, h: &Header, position: u64, interval: u32) {
        let rel = (h.base_offset - self.base_offset) as u32;
        if self.bytes_since_index >= interval as u64 {
            self.index.push(rel, position as u32);
            self.time_index
                .maybe_push(self.max_timestamp.max(h.max_timestamp), rel);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.size as u64;
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.offset_of_max_timestamp = h.last_offset();
        }
        self.next_offset = h.last_offset() + 1;
    }

    /// Moves the open buffer to `sealed`, carrying its partial last page into `tail`.
    fn seal_open(&mut self) {
        if let Some(chunk) = self.open.take() {
            let page_start = chunk.len / PAGE_SIZE * PAGE_SIZE;
            self.tail.clear();
            self.tail
                .extend_from_slice(&chunk.buf.as_ref()[page_start..chunk.len]);
            self.tail_pos = chunk.pos + page_start as u64;
            self.sealed.push(chunk);
        }
    }

    /// Copies `data` into the write buffer, sealing and starting a new one when it is full.
    fn push_bytes<S: Storage<Buf = F::Buf>>(&mut self, storage: &S, data: &[u8], buf_bytes: usize) {
        if let Some(open) = &self.open {
            if open.len + data.len() > open.buf.as_ref().len() {
                self.seal_open();
            }
        }
        if self.open.is_none() {
            let cap = round_up((self.tail.len() + data.len()).max(buf_bytes));
            let mut buf = storage.alloc_buf(cap);
            buf.as_mut()[..self.tail.len()].copy_from_slice(&self.tail);
            self.open = Some(Chunk {
                buf,
                pos: self.tail_pos,
                len: self.tail.len(),
            });
        }
        let open = self.open.as_mut().expect("open buffer");
        open.buf.as_mut()[open.len..open.len + data.len()].copy_from_slice(data);
        open.len += data.len();
        self.size += data.len() as u64;
        debug_assert_eq!(open.pos + open.len as u64, self.size);
    }

    /// The last `n` bytes pushed (they are always in the open buffer, never split).
    fn last_bytes_mut(&mut self, n: usize) -> &mut [u8] {
        let open = self.open.as_mut().expect("bytes were just pushed");
        &mut open.buf.as_mut()[open.len - n..open.len]
    }
}

/// Where one flush spent its time: writes of the buffered chunks (file extension and
/// preallocation included) and the fdatasync after them, summed over its segments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushTiming {
    pub write: Duration,
    pub sync: Duration,
    /// Bytes handed to the writes (a partial tail page rewritten by the next flush counts again).
    pub bytes: u64,
}

struct Inner<F: StorageFile> {
    config: LogConfig,
    segments: BTreeMap<i64, Segment<F>>,
    log_start_offset: i64,
    /// Offset after the last durable batch: the high watermark on a single node.
    durable_offset: i64,
    producers: ProducerState,
    /// Batches of new producer ids refused because `producers` was full.
    producers_refused: u64,
    /// Set after a failed write or sync; every later append fails with it.
    failed: Option<String>,
    /// Set by `destroy`: the segment files are closed and removed; reads fail with
    /// [`StorageError::Deleted`] (an operation that raced the deletion sees that, not a panic).
    deleted: bool,
    /// Set when `close` starts: appends fail with [`StorageError::Closed`], so nothing is
    /// acknowledged that the closing flush does not cover.
    closed: bool,
    /// The current leader epoch: leader appends stamp it into each batch's
    /// `partitionLeaderEpoch`. Never below the newest epoch of `epochs` (a follower append of
    /// a newer epoch raises it); above it when an epoch was begun and nothing written yet.
    leader_epoch: i32,
    /// Bytes appended since the last flush took its buffers.
    appended_since_flush: u64,
    /// Write buffer size for the next buffer: twice what the last flush took (bounded by
    /// `WRITE_BUFFER_GROWN_BYTES_MAX`), never below the configured `write_buffer_bytes`.
    grown_buffer_bytes: usize,
    /// Which leader epoch wrote from which offset (see [`crate::leader_epoch`]).
    epochs: LeaderEpochCache,
    /// `epochs` lost entries at its end since its checkpoint was last written (cut at open
    /// past the recovered end, or unreadable): the next write stage writes it before any
    /// data, so that no stale entry describes batches written after.
    epochs_dirty: bool,
    /// `epochs` gained entries (a new epoch's first batch, appended to the active segment)
    /// or lost some at its start since its checkpoint was last written. The checkpoint
    /// follows in the write stage that seals a rolled segment (or with a dirty one, or at
    /// close): until then every entry it lacks starts in the tail segment, whose batches
    /// recovery scans and assigns again. So a new epoch costs its partition no file
    /// replacement (two fsyncs and a rename) on the way to its first acknowledgement,
    /// which matters when thousands of partitions elect at once.
    epochs_deferred: bool,
    /// A `truncate_to` is under way: appends are refused until it ends (see `replica`).
    truncating: bool,
    /// Truncations so far: a flush's `Written` taken before one must not advance the
    /// durable offset or sizes afterwards.
    truncations: u64,
    /// Highest offset the replication layer reported committed (`note_committed`): a
    /// truncation never goes below it.
    committed: i64,
    /// `Some` for a Raft replica's log ([`PartitionLog::set_replicated`]): the offset below
    /// which entries are committed and synced (Raft's high watermark, only moving up).
    /// Readers then see below min(durable offset, it); `None` on a single node, where the
    /// durable offset alone is the high watermark.
    replica_hw: Option<i64>,
    /// The log start offset the checkpoint on disk holds (the segments' first base when
    /// there is none): a replicated log raises its start in memory first
    /// ([`PartitionLog::raise_replica_start`]) and persists it later.
    checkpointed_start: i64,
    /// A replicated log's first Raft entry ([`PartitionLog::move_replica_start`]): segments
    /// holding it or anything after it stay even below the log start, as followers may
    /// still be sent those entries. `None` on a single node.
    retain_from: Option<i64>,
}

impl<F: StorageFile> Inner<F> {
    /// Segments wholly below this may be deleted: the log start, and for a replicated log
    /// not past its first Raft entry.
    fn deletable_below(&self) -> i64 {
        self.log_start_offset
            .min(self.retain_from.unwrap_or(i64::MAX))
    }
    fn active(&self) -> &Segment<F> {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }
    fn active_mut(&mut self) -> &mut Segment<F> {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }
    fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }
    /// What readers may see below: the durable offset, clamped for a replicated log to
    /// Raft's high watermark.
    fn visible_hw(&self) -> i64 {
        match self.replica_hw {
            None => self.durable_offset,
            Some(hw) => hw.min(self.durable_offset),
        }
    }
    fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }
    /// A flush took the buffers: size the next ones for the load just seen. A partition
    /// taking 4 MiB per flush gets 8 MiB buffers and writes each flush in one call; the size
    /// shrinks by half a flush at a time, so one small flush amid large ones does not undo it.
    fn note_flush_taken(&mut self) {
        let grown = self
            .appended_since_flush
            .saturating_mul(2)
            .max(self.grown_buffer_bytes as u64 / 2)
            .min(WRITE_BUFFER_GROWN_BYTES_MAX as u64);
        self.grown_buffer_bytes = round_up(grown as usize);
        self.appended_since_flush = 0;
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
struct Written<F: StorageFile> {
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
}

/// Result of a read: whole batches, possibly empty.
#[derive(Debug, Clone)]
pub struct ReadOutcome {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// A partition log. Owned by one shard.
pub struct PartitionLog<S: Storage> {
    id: u64,
    name: String,
    dir: PathBuf,
    storage: Rc<S>,
    cache: Rc<RefCell<BatchCache>>,
    inner: RefCell<Inner<S::File>>,
    /// A flush is in its write stage (see `write_pending`).
    writing: Cell<bool>,
    /// A flush is in its sync stage (see `sync_written`).
    syncing: Cell<bool>,
    /// `run_flusher` is running (at most one per log): `close` waits for it to end, so the
    /// writes it made are synced before the log is released.
    flusher_running: Cell<bool>,
    /// Operations outside the flush stages that act on paths in the log's directory
    /// (retention and DeleteRecords removing segments, replacing the log start checkpoint)
    /// now running; `retire_and_fence` waits for them (see [`PathOp`]).
    path_ops: Cell<u32>,
    /// How the last completed flush spent its time (per-stage timers read it).
    last_flush: Cell<FlushTiming>,
    /// What [`Self::write_ahead`] wrote and no sync has covered yet: the next
    /// [`Self::flush`] syncs it with its own writes.
    written_ahead: RefCell<Option<Written<S::File>>>,
    durable_waiters: OffsetWaiters,
    /// Fetch long-polls of a replicated log (woken as the visible high watermark moves;
    /// a single node's wait on `durable_waiters`).
    hw_waiters: OffsetWaiters,
    dirty_waiters: OffsetWaiters,
    /// Serialises `delete_records_before` (its checkpoint replace awaits).
    delete_records_lock: crate::notify::LocalLock,
    flush_waiters: OffsetWaiters,
}

impl<S: Storage> PartitionLog<S> {
    /// Opens (or creates) the log in `dir`, recovering from an unclean stop: the tail segment
    /// is scanned batch by batch and cut after the last valid one; missing or damaged
    /// indexes are rebuilt; producer state is restored from a snapshot plus the batches after it.
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
        for n in &names {
            let Some(n) = n.to_str() else { continue };
            if n.ends_with(crate::io::DISCARDED_SUFFIX) {
                // A segment discarded before a crash: out of the log's names already.
                let p = dir.join(n);
                storage
                    .discard(&p, None)
                    .await
                    .map_err(|e| StorageError::io("discard", &p, e))?;
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
        if bases.len() > SEGMENTS_PER_PARTITION_MAX {
            return Err(StorageError::Limit {
                what: "segments in one partition",
                value: bases.len() as u64,
                max: SEGMENTS_PER_PARTITION_MAX as u64,
            });
        }
        let start_checkpoint = read_sealed(
            &*storage,
            &dir.join("log-start-offset"),
            Kind::LogStartOffset,
        )
        .await?
        .map(|(meta, _)| meta[0]);

        // Producer state: newest readable snapshot; batches after it are replayed below.
        let mut producers = ProducerState::default();
        let mut replay_from = i64::MIN;
        for &snap in snapshots.iter().rev() {
            let path = segment_path(&dir, snap, "snapshot");
            // Snapshots with timestamps are their own kind, so an older sluice ignores them
            // (and replays the log) instead of misreading them; the older kind is still read.
            let sealed = match read_sealed(&*storage, &path, Kind::ProducerSnapshotTimed).await? {
                Some(s) => Some(s),
                None => read_sealed(&*storage, &path, Kind::ProducerSnapshot).await?,
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
        let last = bases.last().copied();
        // Where each epoch of the tail segment's batches begins (see `epochs_deferred`).
        let mut tail_epochs: Vec<(i32, i64)> = Vec::new();
        for &base in &bases {
            let path = segment_path(&dir, base, "log");
            let file = Rc::new(
                storage
                    .open_rw(&path)
                    .await
                    .map_err(|e| StorageError::io("open", &path, e))?,
            );
            let file_size = file
                .size()
                .await
                .map_err(|e| StorageError::io("stat", &path, e))?;
            let mut seg = Segment::new(base);
            seg.file = Some(file.clone());
            let is_tail = Some(base) == last;
            let loaded = if is_tail {
                false
            } else {
                load_indexes(
                    &*storage,
                    &dir,
                    &mut seg,
                    file_size,
                    config.index_interval_bytes,
                )
                .await?
            };
            if !loaded || base >= replay_from {
                // Scan: with CRC checks on the tail, headers only elsewhere.
                let scanned_end = scan_segment(&*file, &path, file_size, is_tail, base, |b| {
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
                    if base >= replay_from && b.header.producer_id >= 0 && !b.header.is_control() {
                        producers.record(
                            b.header.producer_id,
                            b.header.producer_epoch,
                            b.header.base_sequence,
                            b.header.base_offset,
                            b.header.last_offset(),
                            b.header.max_timestamp,
                        );
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
        let (mut epochs, epochs_dirty) = load_epochs(&*storage, &dir, log_end_offset).await?;
        // Entries the checkpoint did not hold yet when the process stopped.
        let mut epochs_deferred = false;
        for (epoch, start) in tail_epochs {
            epochs_deferred |= epochs.assign(epoch, start);
        }
        // The current epoch is the newest one that wrote to the log (0 for a new log): an
        // epoch begun but not yet written in is not durable, and the replication layer
        // begins its own again after a restart.
        let leader_epoch = epochs.latest_epoch().unwrap_or(0);
        let log = PartitionLog {
            id: NEXT_LOG_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            name,
            dir,
            storage,
            cache,
            inner: RefCell::new(Inner {
                config,
                segments,
                log_start_offset,
                durable_offset: log_end_offset,
                producers,
                producers_refused: 0,
                failed: None,
                deleted: false,
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
            path_ops: Cell::new(0),
            last_flush: Cell::new(FlushTiming::default()),
            written_ahead: RefCell::new(None),
            durable_waiters: OffsetWaiters::default(),
            hw_waiters: OffsetWaiters::default(),
            dirty_waiters: OffsetWaiters::default(),
            delete_records_lock: Default::default(),
            flush_waiters: OffsetWaiters::default(),
        };
        Ok(log)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn log_start_offset(&self) -> i64 {
        self.inner.borrow().log_start_offset
    }
    pub fn log_end_offset(&self) -> i64 {
        self.inner.borrow().log_end_offset()
    }
    /// Offsets below this are durable and visible to consumers (for a replicated log, also
    /// committed: see [`Self::set_replicated`]).
    pub fn high_watermark(&self) -> i64 {
        self.inner.borrow().visible_hw()
    }
    /// Marks this log as a Raft replica's (call once, right after open): from now on
    /// readers see only below min(durable offset, the high watermark given to
    /// [`Self::set_high_watermark`]), which starts at the log start offset. Reads for
    /// replication itself go up to the durable offset ([`Self::read_replica`]).
    pub fn set_replicated(&self) {
        let mut inner = self.inner.borrow_mut();
        let start = inner.log_start_offset;
        inner.replica_hw.get_or_insert(start);
    }
    /// Whether [`Self::set_replicated`] was called.
    pub fn is_replicated(&self) -> bool {
        self.inner.borrow().replica_hw.is_some()
    }
    /// Raft's high watermark of a replicated log moved up to `offset` (entries below it are
    /// committed and synced here, `Effect::HighWatermark`); lower values are ignored. Wakes
    /// the fetches waiting for it. Ignored on a log not marked replicated.
    pub fn set_high_watermark(&self, offset: i64) {
        let visible = {
            let mut inner = self.inner.borrow_mut();
            let Some(hw) = inner.replica_hw.as_mut() else {
                debug_assert!(
                    false,
                    "{}: high watermark of an unreplicated log",
                    self.name
                );
                return;
            };
            if offset <= *hw {
                return;
            }
            *hw = offset;
            inner.visible_hw()
        };
        self.hw_waiters.wake_below(visible);
    }
    pub fn size_bytes(&self) -> u64 {
        self.inner.borrow().size_bytes()
    }
    pub fn segment_count(&self) -> usize {
        self.inner.borrow().segments.len()
    }
    pub fn config(&self) -> LogConfig {
        self.inner.borrow().config.clone()
    }
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        self.inner.borrow_mut().config = config;
        Ok(())
    }
    /// The current leader epoch (see [`Self::begin_epoch`]).
    pub fn leader_epoch(&self) -> i32 {
        self.inner.borrow().leader_epoch
    }
    /// Time the last completed flush spent writing and syncing its segments.
    pub fn last_flush_timing(&self) -> FlushTiming {
        self.last_flush.get()
    }
    /// The error that stopped writes, if any.
    pub fn failure(&self) -> Option<String> {
        self.inner.borrow().failed.clone()
    }
    /// Whether appends are waiting for a flush.
    pub fn needs_flush(&self) -> bool {
        self.inner.borrow().segments.values().any(|s| s.pending())
    }

    /// Refuses an append to a closed, failed or truncating log.
    fn check_appendable(&self, inner: &Inner<S::File>) -> Result<()> {
        if inner.closed {
            return Err(StorageError::Closed {
                partition: self.name.clone(),
            });
        }
        if let Some(cause) = &inner.failed {
            return Err(StorageError::Failed {
                partition: self.name.clone(),
                cause: cause.clone(),
            });
        }
        if inner.truncating {
            return Err(StorageError::Truncating {
                partition: self.name.clone(),
            });
        }
        Ok(())
    }

    /// Appends one record batch as the producer sent it: validates it (CRC32C, magic,
    /// size), checks idempotent-producer sequences, assigns offsets, and buffers it for the
    /// next flush. Memory only; durable after the flush that follows.
    pub fn append(&self, batch: &[u8], now_ms: i64) -> Result<Appended> {
        self.append_inner(batch, None, now_ms)
    }

    /// [`Self::append`] of a batch the caller holds as `Bytes` (a slice of the produce
    /// request): the batch cache keeps those bytes instead of a copy of the stored batch.
    pub fn append_shared(&self, batch: Bytes, now_ms: i64) -> Result<Appended> {
        self.append_inner(&batch, Some(&batch), now_ms)
    }

    fn append_inner(&self, batch: &[u8], shared: Option<&Bytes>, now_ms: i64) -> Result<Appended> {
        let mut inner = self.inner.borrow_mut();
        self.check_appendable(&inner)?;
        let max = inner.config.max_message_bytes.min(BATCH_BYTES_MAX);
        if batch.len() > max {
            return Err(StorageError::BatchTooLarge {
                size: batch.len(),
                max,
            });
        }
        let header = Header::parse(batch).ok_or_else(|| StorageError::CorruptBatch {
            reason: format!("{} bytes is no batch header", batch.len()),
        })?;
        header
            .verify(batch)
            .map_err(|reason| StorageError::CorruptBatch { reason })?;
        if header.producer_id >= 0 && !header.is_control() {
            if let SeqCheck::Duplicate {
                first_offset,
                last_offset,
            } = inner
                .producers
                .check(
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence,
                    header.last_offset_delta,
                )
                .inspect_err(|e| self.note_refused(&mut inner.producers_refused, e))?
            {
                return Ok(Appended {
                    base_offset: first_offset,
                    last_offset,
                    duplicate: true,
                    log_append_time: -1,
                });
            }
        }
        let base_offset = inner.log_end_offset();
        let leader_epoch = inner.leader_epoch;
        // Otherwise the history would silently skip this batch's epoch.
        assert!(
            inner.epochs.latest_epoch() <= Some(leader_epoch),
            "{}: leader epoch {leader_epoch} below the log's newest epoch",
            self.name
        );
        self.maybe_roll(&mut inner, batch.len() as u64, now_ms)?;

        // One copy: the batch goes straight into the page-aligned write buffer, and the
        // broker-assigned offset (and LogAppendTime) is written there in place.
        let log_append_time = if inner.config.log_append_time {
            now_ms
        } else {
            -1
        };
        let interval = inner.config.index_interval_bytes;
        let buf_bytes = inner
            .config
            .write_buffer_bytes
            .max(inner.grown_buffer_bytes);
        inner.appended_since_flush += batch.len() as u64;
        let seg = inner.active_mut();
        let position = seg.size;
        seg.push_bytes(&*self.storage, batch, buf_bytes);
        let stored = seg.last_bytes_mut(batch.len());
        hdr::set_offset_and_epoch(stored, base_offset, leader_epoch);
        if log_append_time >= 0 {
            hdr::set_log_append_time(stored, now_ms);
        }
        let stored_header = Header::parse(stored).expect("rewritten header parses");
        // Pair of the recovery check: what goes to disk verifies.
        debug_assert!(stored_header.verify(stored).is_ok());
        // Small batches are also kept in memory for tailing consumers; a large one would
        // evict many small ones, so it is read from disk instead. The producer's own bytes
        // are kept when the caller shares them and only offset and epoch were rewritten
        // (LogAppendTime also rewrites timestamps and the CRC: then the stored form is copied).
        let cached = (batch.len() <= CACHE_BATCH_BYTES_MAX).then(|| match shared {
            Some(b) if log_append_time < 0 => {
                CachedBatch::shared(b.clone(), base_offset, leader_epoch)
            }
            _ => CachedBatch::stored(Bytes::copy_from_slice(stored)),
        });
        seg.index_batch(&stored_header, position, interval);
        seg.first_append_ms.get_or_insert(now_ms);
        let last_offset = stored_header.last_offset();
        if inner.epochs.assign(leader_epoch, base_offset) {
            inner.epochs_deferred = true;
        }
        if header.producer_id >= 0 && !header.is_control() {
            inner.producers.record(
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                base_offset,
                last_offset,
                stored_header.max_timestamp,
            );
        }
        drop(inner);
        if let Some(bytes) = cached {
            self.cache
                .borrow_mut()
                .insert(self.id, base_offset, last_offset, bytes);
        }
        self.dirty_waiters.wake_all();
        Ok(Appended {
            base_offset,
            last_offset,
            duplicate: false,
            log_append_time,
        })
    }

    fn maybe_roll(&self, inner: &mut Inner<S::File>, incoming: u64, now_ms: i64) -> Result<()> {
        let cfg = &inner.config;
        let active = inner.active();
        let too_big = active.size + incoming > cfg.segment_bytes;
        let too_old = active
            .first_append_ms
            .is_some_and(|t| now_ms - t >= cfg.segment_ms);
        let rel_overflow = inner.log_end_offset() - active.base_offset > (u32::MAX / 2) as i64;
        // Kafka rolls when either index is full; this also keeps the index files written at
        // roll within their sealed-body limit whatever index.interval.bytes says.
        let index_full = active.index.len() as u64
            >= (cfg.segment_index_bytes / OFFSET_INDEX_ENTRY_BYTES) as u64
            || active.time_index.len() as u64
                >= (cfg.segment_index_bytes / TIME_INDEX_ENTRY_BYTES) as u64;
        if active.size == 0 || !(too_big || too_old || rel_overflow || index_full) {
            return Ok(());
        }
        if inner.segments.len() >= SEGMENTS_PER_PARTITION_MAX {
            return Err(StorageError::Limit {
                what: "segments in one partition",
                value: inner.segments.len() as u64,
                max: SEGMENTS_PER_PARTITION_MAX as u64,
            });
        }
        let next_base = inner.log_end_offset();
        let mut snapshot = Vec::new();
        inner.producers.encode(&mut snapshot);
        let active = inner.active_mut();
        active.seal_open();
        active.rolled = true;
        active.roll_snapshot = Some((next_base, snapshot));
        inner.segments.insert(next_base, Segment::new(next_base));
        Ok(())
    }

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
    /// [`Self::write_ahead`] wrote before; returns the new durable offset.
    pub async fn flush(&self) -> Result<i64> {
        let mut written = self.write_pending().await?;
        // Taken once this flush's write stage is done: a write-ahead that held the stage
        // before it has stored its part by then.
        if let Some(mut ahead) = self.written_ahead.take() {
            ahead.absorb(written);
            written = ahead;
        }
        self.sync_written(written).await
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
    /// (which cost about a tenth of the throughput with 1 MiB batches, 8 in flight).
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
        let syncer = async {
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
            }
        };
        let (wrote, synced) = futures_lite::future::zip(writer, syncer).await;
        wrote.and(synced)
    }

    /// Waits until `flag` is clear, then sets it (the write and sync stages are each run by
    /// one caller at a time; a flush racing the flusher task, at shutdown, waits its turn).
    async fn enter_stage(&self, flag: &Cell<bool>) {
        self.wait_flush_state(|| !flag.get()).await;
        flag.set(true);
    }

    /// Waits until `ready()` holds; it is checked again whenever a flush stage, the flusher
    /// or a path operation ends (they wake `flush_waiters`).
    async fn wait_flush_state(&self, ready: impl Fn() -> bool) {
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

    /// Begins an operation on paths in the log's directory outside the flush stages; refused
    /// once the log is retired, and waited for by [`Self::retire_and_fence`] while it runs.
    fn begin_path_op(&self) -> Result<PathOp<'_, S>> {
        if self.inner.borrow().deleted {
            return Err(StorageError::Deleted {
                partition: self.name.clone(),
            });
        }
        self.path_ops.set(self.path_ops.get() + 1);
        Ok(PathOp(self))
    }

    fn leave_stage<T>(&self, flag: &Cell<bool>, result: Result<T>) -> Result<T> {
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

    async fn write_pending_inner(&self) -> Result<Written<S::File>> {
        let (jobs, target, generation, epochs) = {
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
            // With a rolled segment sealed here, the entries that start in it must be in
            // the checkpoint first: recovery only scans the tail segment for them.
            let seals = jobs.iter().any(|j| j.finalize.is_some());
            let epochs = (inner.epochs_dirty || (inner.epochs_deferred && seals)).then(|| {
                inner.epochs_dirty = false;
                inner.epochs_deferred = false;
                inner.epochs.encode()
            });
            (jobs, target, generation, epochs)
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

    async fn sync_written_inner(&self, written: Written<S::File>) -> Result<i64> {
        let Written {
            target,
            generation,
            to_sync,
            sizes,
            created,
            mut timing,
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
            file.preallocate(want)
                .await
                .map_err(|e| StorageError::io("fallocate", path, e))?;
            allocated = want;
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

    /// Replaces a sealed file that already holds an acknowledged value (the log start
    /// checkpoint) atomically ([`crate::durable_file::replace_file`]): overwriting in place
    /// could tear both values at a power loss and so undo a DeleteRecords that was
    /// acknowledged before.
    async fn replace_sealed(&self, path: &Path, sealed: &[u8]) -> Result<()> {
        crate::durable_file::replace_file(&*self.storage, &self.dir, path, sealed).await
    }

    /// [`Self::read`] for a scan from `offset` towards the high watermark: the batches read
    /// (empty at the end) and the offset after the last of them, where the next read starts.
    pub async fn read_next(&self, offset: i64, max_bytes: usize) -> Result<(Bytes, i64)> {
        let records = self.read(offset, max_bytes).await?.records;
        Ok(Self::after_batches(records, offset))
    }

    /// [`Self::read_next`] up to the durable offset, past the high watermark of a replicated
    /// log: for replication only (a leader feeding followers uncommitted entries, recovery
    /// scanning its log), never for consumers.
    pub async fn read_replica(&self, offset: i64, max_bytes: usize) -> Result<(Bytes, i64)> {
        // From the first segment kept, which may be below the log start: a replicated log's
        // start can lie past its first Raft entry (see `move_replica_start`).
        let (end, start) = {
            let inner = self.inner.borrow();
            let first = *inner.segments.keys().next().expect("a log has a segment");
            (inner.durable_offset, first.min(inner.log_start_offset))
        };
        if offset < start || offset > end {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: start,
                high_watermark: end,
            });
        }
        let records = self
            .read_below(offset, max_bytes, end, start)
            .await?
            .records;
        Ok(Self::after_batches(records, offset))
    }

    /// The batches of `records` (whole ones) and the offset after the last, `offset` if none.
    fn after_batches(records: Bytes, offset: i64) -> (Bytes, i64) {
        let mut next = offset;
        let mut at = 0;
        while let Some(h) = records.get(at..).and_then(Header::parse) {
            if at + h.size > records.len() {
                break;
            }
            next = h.last_offset() + 1;
            at += h.size;
        }
        (records, next)
    }

    /// Reads whole batches starting with the one that holds `offset`, at most `max_bytes`
    /// (but always the first batch, as Kafka does, so a large batch cannot stall a consumer),
    /// below the high watermark. An offset past it is out of range, except on a replicated
    /// log up to its log end offset: that reads nothing, as in Kafka (a consumer that read
    /// up to an old leader's high watermark may be ahead of a new leader's for a while).
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadOutcome> {
        let (hw, start, end) = {
            let inner = self.inner.borrow();
            let hw = inner.visible_hw();
            let end = match inner.replica_hw {
                None => hw,
                Some(_) => inner.log_end_offset(),
            };
            (hw, inner.log_start_offset, end)
        };
        if offset < start || offset > end {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: start,
                high_watermark: hw,
            });
        }
        if offset >= hw {
            return Ok(ReadOutcome {
                records: Bytes::new(),
                high_watermark: hw,
                log_start_offset: start,
            });
        }
        self.read_below(offset, max_bytes, hw, start).await
    }

    /// [`Self::read`] of the batches below `hw` (`start <= offset <= hw`).
    async fn read_below(
        &self,
        offset: i64,
        max_bytes: usize,
        hw: i64,
        start: i64,
    ) -> Result<ReadOutcome> {
        let outcome = |records| ReadOutcome {
            records,
            high_watermark: hw,
            log_start_offset: start,
        };
        if offset == hw {
            return Ok(outcome(Bytes::new()));
        }
        if let Some(b) = self.cache.borrow().read(self.id, offset, hw, max_bytes) {
            return Ok(outcome(b));
        }
        let (file, base, mut pos, end) = {
            let inner = self.inner.borrow();
            let (&base, seg) = inner
                .segments
                .range(..=offset)
                .next_back()
                .expect("offset >= log start");
            // Durable data has a file unless the log was destroyed under this read (a
            // ListOffsets or Fetch racing DeleteTopics).
            let Some(file) = seg.file.clone() else {
                return Err(if inner.deleted {
                    StorageError::Deleted {
                        partition: self.name.clone(),
                    }
                } else {
                    StorageError::Failed {
                        partition: self.name.clone(),
                        cause: "segment file closed".into(),
                    }
                });
            };
            let rel = (offset - base) as u32;
            (file, base, seg.index.lookup(rel) as u64, seg.durable_size)
        };
        let path = segment_path(&self.dir, base, "log");
        let mut out = BytesMut::new();
        let want = max_bytes.max(1);
        'chunks: while pos < end {
            let len = ((end - pos) as usize)
                .min(want.max(READ_AHEAD_BYTES) + HEADER_BYTES)
                .min(READ_CHUNK_BYTES_MAX);
            let chunk = file
                .read_at(pos, len)
                .await
                .map_err(|e| StorageError::io("read", &path, e))?;
            if out.capacity() == 0 {
                // What this read returns mostly comes from its first chunk: room for it at
                // once, rather than growing (and copying) by doubling as batches arrive.
                out.reserve(want.min(chunk.len()));
            }
            let mut at = 0usize;
            while at + HEADER_BYTES <= chunk.len() {
                let Some(h) = Header::parse(&chunk[at..]) else {
                    return Err(StorageError::CorruptBatch {
                        reason: format!("{path:?} at {}", pos + at as u64),
                    });
                };
                if h.base_offset >= hw {
                    break 'chunks;
                }
                if h.last_offset() < offset {
                    at += h.size;
                    continue;
                }
                if !out.is_empty() && out.len() + h.size > want {
                    break 'chunks;
                }
                if at + h.size > chunk.len() {
                    if out.is_empty() {
                        // The first batch is bigger than the chunk: read it whole.
                        let whole = file
                            .read_at(pos + at as u64, h.size)
                            .await
                            .map_err(|e| StorageError::io("read", &path, e))?;
                        out.extend_from_slice(&whole);
                        break 'chunks;
                    }
                    break;
                }
                out.extend_from_slice(&chunk[at..at + h.size]);
                at += h.size;
            }
            if at == 0 {
                break;
            }
            pos += at as u64;
            if out.len() >= want {
                break;
            }
        }
        Ok(outcome(out.freeze()))
    }

    /// The first offset whose batch has a timestamp at or after `timestamp`, with that
    /// batch's max timestamp; `None` if every batch is older.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        let plan = {
            let inner = self.inner.borrow();
            let hw = inner.visible_hw();
            inner
                .segments
                .values()
                .find(|s| s.max_timestamp >= timestamp && s.base_offset < hw)
                .map(|s| {
                    (
                        s.base_offset + s.time_index.lookup(timestamp) as i64,
                        inner.log_start_offset,
                        hw,
                    )
                })
        };
        let Some((mut from, start, hw)) = plan else {
            return Ok(None);
        };
        from = from.max(start);
        while from < hw {
            let read = self.read(from, SCAN_CHUNK_BYTES).await?;
            if read.records.is_empty() {
                break;
            }
            let mut at = 0;
            while let Some(h) = Header::parse(&read.records[at..]) {
                if h.max_timestamp >= timestamp {
                    return Ok(Some((h.base_offset.max(start), h.max_timestamp)));
                }
                from = h.last_offset() + 1;
                at += h.size;
                if at >= read.records.len() {
                    break;
                }
            }
        }
        Ok(None)
    }

    /// Offset and value of the largest timestamp in the log (ListOffsets MAX_TIMESTAMP).
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let inner = self.inner.borrow();
        let hw = inner.visible_hw();
        inner
            .segments
            .values()
            .filter(|s| s.max_timestamp >= 0 && s.offset_of_max_timestamp < hw)
            .max_by_key(|s| s.max_timestamp)
            .map(|s| (s.offset_of_max_timestamp, s.max_timestamp))
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
            self.cache.borrow_mut().forget(self.id, i64::MIN);
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

    /// Forgets the state of producers whose last batch is `expiration_ms` or more older than
    /// `now_ms` (Kafka's `producer.id.expiration.ms`); returns how many. The broker calls it
    /// right after [`Self::open`] (so expired state does not come back from a snapshot or
    /// the replayed log) and from its periodic retention check.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.inner
            .borrow_mut()
            .producers
            .expire(now_ms, expiration_ms)
    }

    /// Producer ids whose state this partition holds.
    pub fn producer_count(&self) -> usize {
        self.inner.borrow().producers.len()
    }

    /// Whether this partition holds state of `producer_id` (any epoch).
    pub fn knows_producer(&self, producer_id: i64) -> bool {
        self.inner
            .borrow()
            .producers
            .epoch_of(producer_id)
            .is_some()
    }

    /// Batches of new producer ids refused since open because the producer table was full.
    pub fn producers_refused(&self) -> u64 {
        self.inner.borrow().producers_refused
    }

    /// The idempotent-producer check [`Self::append`] makes, without appending: whether a
    /// batch of `producer_id` with this epoch, first sequence and lastOffsetDelta is new and
    /// in order (`Append`), a retry of a batch the log holds (`Duplicate` with its offsets),
    /// or refused (`OutOfOrderSequence`, `InvalidProducerEpoch`, or `ProducersFull`, which
    /// counts in [`Self::producers_refused`] as on append). A replicated partition's leader
    /// asks it before proposing a batch, because `append_at` records producer state without
    /// checking. Only the sequence rules: whether the log accepts appends is not asked. A
    /// negative `producer_id` (no idempotence) is `Append`.
    pub fn check_producer(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_offset_delta: i32,
    ) -> Result<SeqCheck> {
        if producer_id < 0 {
            return Ok(SeqCheck::Append);
        }
        let mut inner = self.inner.borrow_mut();
        let checked = inner
            .producers
            .check(producer_id, epoch, first_seq, last_offset_delta);
        if let Err(e) = &checked {
            self.note_refused(&mut inner.producers_refused, e);
        }
        checked
    }

    /// Counts a batch refused because the producer table is full (other errors pass), and
    /// logs the first refusal, then one line per 1,024, so a flood cannot flood the log too.
    fn note_refused(&self, refused: &mut u64, e: &StorageError) {
        if let StorageError::ProducersFull { .. } = e {
            *refused += 1;
            if *refused % 1024 == 1 {
                log::warn!(
                    "{}: {e} ({} batches of new producers refused so far)",
                    self.name,
                    *refused
                );
            }
        }
    }

    /// Applies `retention.ms` and `retention.bytes` at segment granularity; the active
    /// segment is never deleted, nor one holding offsets at or past the high watermark.
    /// Returns how many segments were removed.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
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
    async fn remove_segment_files(&self, base: i64, file: Option<Rc<S::File>>) -> Result<()> {
        let p = segment_path(&self.dir, base, "log");
        self.storage
            .discard(&p, file)
            .await
            .map_err(|e| StorageError::io("discard", &p, e))?;
        for ext in ["index", "timeindex"] {
            let p = segment_path(&self.dir, base, ext);
            self.storage
                .remove(&p)
                .await
                .map_err(|e| StorageError::io("remove", &p, e))?;
        }
        Ok(())
    }

    /// Flushes and releases the log (clean shutdown). Appends fail from its start on
    /// ([`StorageError::Closed`]), so every acknowledged batch is in the flush. A running
    /// flusher is woken and waited for first: a write stage of it that finished before the
    /// close may not be synced yet (an acks=1 batch, or a segment file whose directory entry
    /// its sync stage makes durable), and its sync stage covers it before the flusher ends.
    /// The active segment is cut to its logical size so a clean restart finds no page
    /// padding to trim.
    pub async fn close(&self) -> Result<()> {
        self.inner.borrow_mut().closed = true;
        self.dirty_waiters.wake_all();
        self.wait_flush_state(|| !self.flusher_running.get()).await;
        if self.failure().is_none() && (self.needs_flush() || self.written_ahead.borrow().is_some())
        {
            self.flush().await?;
        }
        let deferred = {
            let mut inner = self.inner.borrow_mut();
            let write = inner.failed.is_none() && inner.epochs_deferred;
            inner.epochs_deferred &= !write;
            write.then(|| inner.epochs.encode())
        };
        if let Some(text) = deferred {
            // At rest the checkpoint is whole, for the tools that read it.
            self.write_epoch_checkpoint(&text).await?;
        }
        let active = {
            let inner = self.inner.borrow();
            let seg = inner.active();
            seg.file
                .clone()
                .filter(|_| inner.failed.is_none())
                .map(|f| (f, seg.size, seg.base_offset))
        };
        if let Some((file, size, base)) = active {
            let path = segment_path(&self.dir, base, "log");
            file.truncate(size)
                .await
                .map_err(|e| StorageError::io("truncate", &path, e))?;
            file.fdatasync()
                .await
                .map_err(|e| StorageError::io("fdatasync", &path, e))?;
        }
        self.cache.borrow_mut().forget(self.id, i64::MIN);
        Ok(())
    }

    /// Removes the whole log directory's files (topic deletion): [`Self::retire_and_fence`],
    /// then every file of the directory.
    pub async fn destroy(&self) -> Result<()> {
        self.retire_and_fence().await;
        let names = self
            .storage
            .list_dir(&self.dir)
            .await
            .map_err(|e| StorageError::io("list", &self.dir, e))?;
        for n in names {
            let p = self.dir.join(n);
            self.storage
                .remove(&p)
                .await
                .map_err(|e| StorageError::io("remove", &p, e))?;
        }
        Ok(())
    }

    /// Retires the log of a deleted partition without touching its directory (the caller
    /// removes that, see the broker's `partition_dirs`): appends fail, waiters wake, and
    /// the segment files close.
    pub fn retire(&self) {
        self.cache.borrow_mut().forget(self.id, i64::MIN);
        {
            // Retire the log: appends fail, the flusher task sees the failure and ends, and
            // the segment files close now (a flush in flight keeps its own handle until it
            // ends). Otherwise the removed files stay open and their disk space is held
            // until the process exits.
            let mut inner = self.inner.borrow_mut();
            inner
                .failed
                .get_or_insert_with(|| "partition deleted".to_string());
            inner.deleted = true;
            for seg in inner.segments.values_mut() {
                seg.file = None;
            }
        }
        self.dirty_waiters.wake_all();
        self.durable_waiters.wake_all();
        self.hw_waiters.wake_all();
    }

    /// [`Self::retire`], then waits until nothing that acts on paths in the log's directory
    /// is running: a write stage that began before the retirement may still open a new
    /// segment file or write an index, snapshot or checkpoint; retention or DeleteRecords may
    /// be removing segments or replacing the log start checkpoint. None of them starts again
    /// on a retired log (the write stage refuses a failed log, path operations a deleted
    /// one; the sync stage only fsyncs what it holds), so the caller may then remove or
    /// rename the directory without a late change landing in it, or in a directory
    /// re-created under the same name for a new topic.
    pub async fn retire_and_fence(&self) {
        self.retire();
        self.wait_flush_state(|| {
            !self.writing.get() && !self.syncing.get() && self.path_ops.get() == 0
        })
        .await;
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

/// One running path operation (see [`PartitionLog::begin_path_op`]); ends when dropped.
struct PathOp<'a, S: Storage>(&'a PartitionLog<S>);

impl<S: Storage> Drop for PathOp<'_, S> {
    fn drop(&mut self) {
        self.0.path_ops.set(self.0.path_ops.get() - 1);
        self.0.flush_waiters.wake_all();
    }
}

/// Marks a log's flusher as ended when dropped, and wakes a `close` waiting for that.
struct FlusherRunning<'a, S: Storage>(&'a PartitionLog<S>);

impl<S: Storage> Drop for FlusherRunning<'_, S> {
    fn drop(&mut self) {
        self.0.flusher_running.set(false);
        self.0.flush_waiters.wake_all();
    }
}

/// A sealed file's header fields and body; `None` if it is missing, too large or damaged.
async fn read_sealed<S: Storage>(
    storage: &S,
    path: &Path,
    kind: Kind,
) -> Result<Option<([i64; 4], Vec<u8>)>> {
    let bytes =
        crate::durable_file::read_file(storage, path, format::SEALED_BODY_BYTES_MAX as u64).await?;
    Ok(bytes.and_then(|b| format::unseal(kind, &b).map(|(meta, body)| (meta, body.to_vec()))))
}

/// Loads a closed segment's indexes when they are intact and match the segment file.
async fn load_indexes<S: Storage>(
    storage: &S,
    dir: &Path,
    seg: &mut Segment<S::File>,
    file_size: u64,
    _interval: u32,
) -> Result<bool> {
    let base = seg.base_offset;
    let Some((meta, body)) = read_sealed(
        storage,
        &segment_path(dir, base, "index"),
        Kind::OffsetIndex,
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
    let Some((tmeta, tbody)) = read_sealed(
        storage,
        &segment_path(dir, base, "timeindex"),
        Kind::TimeIndex,
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

/// Walks the batches of a segment file from the start; stops at the first batch that is
/// torn, corrupt (CRC checked when `verify`), or out of offset order. Returns the byte
/// length of the valid prefix.
async fn scan_segment<F: StorageFile>(
    file: &F,
    path: &Path,
    file_size: u64,
    verify: bool,
    base: i64,
    mut on_batch: impl FnMut(ScannedBatch),
) -> Result<u64> {
    let mut pos = 0u64;
    let mut valid_end = 0u64;
    let mut expected = base;
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
