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
//!
//! Transactions: every append, follower append and recovery replay goes through
//! `ProducerState::apply`, so a transactional batch opens its producer's transaction and a
//! marker closes it; a marker that aborts one lists it in its segment's `aborted` (written
//! as `.txnindex` when the segment is sealed, read back at open for segments recovery does
//! not replay). [`PartitionLog::last_stable_offset`] is the lower of the high watermark and
//! the first offset of the oldest undecided transaction; `read_committed` stops there.
//!
//! Files by job: this one holds the shared types, accessors, appends, producer state and
//! the end of a log (close, destroy, retire); `recovery.rs` opens a log and recovers it
//! (from the tail's recovery point, `recovery_point.rs`, which the flush stages capture and
//! write once the tail grew `recovery_point_interval_bytes` past the last one),
//! `flush.rs` runs the write and sync stages and the flusher (with preallocation), `read.rs`
//! serves reads and offset lookups, `retention.rs` moves the log start and deletes segments
//! (DeleteRecords, retention), `compact.rs` runs the cleaner's passes (compaction), and
//! `replica.rs` holds the follower's side.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use crate::cache::{BatchCache, CachedBatch};
use crate::config::{
    LogConfig, BATCH_BYTES_MAX, OFFSET_INDEX_ENTRY_BYTES, SEGMENTS_PER_PARTITION_MAX,
    TIME_INDEX_ENTRY_BYTES, WRITE_BUFFER_GROWN_BYTES_MAX,
};
use crate::error::{Result, StorageError};
use crate::hdr::{self, Header};
use crate::index::{OffsetIndex, TimeIndex};
use crate::io::{Storage, StorageFile, PAGE_SIZE};
use crate::leader_epoch::LeaderEpochCache;
use crate::notify::OffsetWaiters;
use crate::producer::{ProducerState, SeqCheck};
use crate::txn::{self, AbortedTxn, CompletedTxn, Marker, ABORTED_TXN_BYTES};

/// Bytes read per call when scanning a segment (recovery).
pub const SCAN_CHUNK_BYTES: usize = 1024 * 1024;
/// Fewest bytes a read takes straight from a segment file (not from a read-ahead window),
/// however little it asks for.
pub const DIRECT_READ_BYTES_MIN: usize = 64 * 1024;
/// Most disk blocks reserved ahead of the active segment's end (Redpanda's fallocation step).
pub const PREALLOCATE_STEP_BYTES: u64 = 32 * 1024 * 1024;
/// Fewest blocks reserved ahead. Between the two the reservation doubles the segment (see
/// [`preallocate_to`]), so a partition that holds little (thousands of replicated partitions
/// with an election no-op each) reserves little: a fixed 32 MiB step made 3,000 of them
/// reserve 94 GiB per node.
pub const PREALLOCATE_MIN_BYTES: u64 = 64 * 1024;
/// Aborted transactions one segment's `.txnindex` holds (34 bytes each): a segment rolls
/// when its list is full, so the list, and the file written at the seal, stay bounded.
pub const ABORTED_TXNS_PER_SEGMENT_MAX: usize = 65_536;
const _: () = assert!(
    ABORTED_TXNS_PER_SEGMENT_MAX * ABORTED_TXN_BYTES <= crate::format::SEALED_BODY_BYTES_MAX
);
/// Batches up to this size are also kept in the shard's batch cache.
pub const CACHE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Largest single read a fetch makes; a larger `max_bytes` is served in several reads. Far
/// below what one storage read may be (the DMA layer refuses reads over 64 MiB, which a
/// 64 MiB fetch plus one batch header used to exceed).
pub const READ_CHUNK_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Writes of one flush in flight at once.
pub const WRITE_DEPTH_MAX: usize = 4;

/// The log cleaner's passes over a compacted log.
mod compact;
/// The flush: write and sync stages, the flusher, preallocation.
mod flush;
/// Merging a compacted log's small segments after a cleaning pass.
mod merge;
/// Reads, replication's reads and offset lookups.
mod read;
/// Sequential read-ahead of segment files for readers that scan them.
mod read_ahead;
/// Opening a log and recovering it after an unclean stop.
mod recovery;
/// The recovery point: the tail's state at a durable size, so recovery scans only past it.
mod recovery_point;
/// The follower's side: appends at given offsets, truncation, leader-epoch history.
mod replica;
/// The log start offset and segment deletion: DeleteRecords, retention.
mod retention;

pub use compact::{CompactOptions, CompactStats, IoBudget, CLEANER_CHECKPOINT_FILE};
pub use flush::preallocate_to;
use flush::Written;
pub use read_ahead::{
    ReadAheadBudget, READ_AHEAD_DEPTH, READ_AHEAD_OVERLAP_BYTES, READ_AHEAD_WINDOW_BYTES,
};
pub use recovery_point::{RECOVERY_POINT_AT_CLOSE_BYTES_MIN, RECOVERY_POINT_FILE};

static NEXT_LOG_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn round_up(n: usize) -> usize {
    n.div_ceil(PAGE_SIZE) * PAGE_SIZE
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

/// One batch's place, as found by a scan, and its bytes.
#[derive(Clone, Copy, Debug)]
struct ScannedBatch<'a> {
    header: Header,
    position: u64,
    bytes: &'a [u8],
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
    /// Transactions aborted by a marker in this segment, in marker order (its `.txnindex`,
    /// written when the segment is sealed).
    aborted: Vec<AbortedTxn>,
    /// Position and header of the last batch appended (what a recovery point checks).
    last_batch: Option<(u64, Header)>,
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
            aborted: Vec::new(),
            last_batch: None,
        }
    }

    fn pending(&self) -> bool {
        self.open.is_some() || !self.sealed.is_empty() || (self.rolled && self.file.is_some())
    }

    /// Takes `file` (`size` bytes, durable) in place of its own: a segment the cleaner
    /// rewrote or merged, whose batches `fresh` indexed at their new positions.
    fn swap_in(&mut self, file: Rc<F>, size: u64, fresh: Segment<F>) {
        self.file = Some(file);
        self.size = size;
        self.durable_size = size;
        self.next_offset = fresh.next_offset;
        self.max_timestamp = fresh.max_timestamp;
        self.offset_of_max_timestamp = fresh.offset_of_max_timestamp;
        self.index = fresh.index;
        self.time_index = fresh.time_index;
        self.bytes_since_index = fresh.bytes_since_index;
        self.last_batch = fresh.last_batch;
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
        self.last_batch = Some((position, *h));
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
    /// Transaction markers appended (or, on a replicated partition's leader, proposed)
    /// since the log opened: KIP-890's guard between a verification and its append.
    markers_seen: u64,
    /// Set after a failed write or sync; every later append fails with it.
    failed: Option<String>,
    /// Set by `destroy`: the segment files are closed and removed; reads fail with
    /// [`StorageError::Deleted`] (an operation that raced the deletion sees that, not a panic).
    deleted: bool,
    /// Set when `close` starts: appends fail with [`StorageError::Closed`], so nothing is
    /// acknowledged that the closing flush does not cover.
    closed: bool,
    /// The next append rolls a new segment whatever the active one's size or age
    /// ([`PartitionLog::request_roll`]).
    roll_requested: bool,
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
    /// follows in the write stage that seals a rolled segment or captures a recovery point
    /// (or with a dirty one, or at close): until then every entry it lacks starts in the
    /// tail segment past its recovery point, whose batches recovery scans and assigns
    /// again. So a new epoch costs its partition no file replacement (two fsyncs and a
    /// rename) on the way to its first acknowledgement, which matters when thousands of
    /// partitions elect at once.
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

/// Result of a read: whole batches, possibly empty.
#[derive(Debug, Clone)]
pub struct ReadOutcome {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// What a read_committed read returns (see [`PartitionLog::read_committed`]).
#[derive(Debug)]
pub struct CommittedRead {
    pub outcome: ReadOutcome,
    pub last_stable_offset: i64,
    /// (producer id, first offset) of each aborted transaction the records overlap, for
    /// Fetch's `aborted_transactions`.
    pub aborted: Vec<(i64, i64)>,
}

/// A partition log. Owned by one shard.
pub struct PartitionLog<S: Storage> {
    id: u64,
    name: String,
    dir: PathBuf,
    storage: Rc<S>,
    cache: Rc<RefCell<BatchCache>>,
    /// The window of the reader scanning this log from disk (see [`read_ahead`]), and where
    /// the last disk read ended (segment base, the offset after its last batch, the file
    /// position there): a read from that offset is sequential.
    read_ahead: RefCell<Option<read_ahead::ReadAhead<S::File>>>,
    /// Bumped whenever the windows are dropped: a read that took them out before keeps its
    /// window to itself rather than putting back bytes the log no longer has.
    read_ahead_generation: Cell<u64>,
    last_read_end: Cell<Option<(i64, i64, u64)>>,
    read_ahead_budget: Rc<ReadAheadBudget>,
    inner: RefCell<Inner<S::File>>,
    /// A flush is in its write stage (see `write_pending`).
    writing: Cell<bool>,
    /// A flush is in its sync stage (see `sync_written`).
    syncing: Cell<bool>,
    /// `run_flusher` is running (at most one per log): `close` waits for it to end, so the
    /// writes it made are synced before the log is released.
    flusher_running: Cell<bool>,
    /// The disk refused the last reservation ahead of the active segment (nearly full):
    /// writes go on without it, and the warning is logged once until one succeeds again.
    preallocation_refused: Cell<bool>,
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
    /// Serialises `delete_records_before` (its checkpoint replace awaits), the replicated
    /// start's moves, truncations, retention and cleaning passes (`compact`, which skips a
    /// held log instead of waiting): a pass's rename must not bring back the name of a
    /// segment deleted meanwhile.
    delete_records_lock: crate::notify::LocalLock,
    /// Where the last cleaning pass's range ended (`compact`): the bytes above it are the
    /// dirty ones. Kept in `cleaner-offset-checkpoint` across restarts.
    cleaned_to: Cell<i64>,
    /// The earliest delete horizon (KIP-534) of the tombstones the last pass kept: a pass
    /// at or after it runs even when the log is not dirty. In the checkpoint too.
    tombstones_horizon: Cell<Option<i64>>,
    /// The log may hold batches compaction emptied (it is compacted, or a pass rewrote a
    /// segment): consumers' reads coalesce them (`read_for_consumer`).
    cleaned: Cell<bool>,
    flush_waiters: OffsetWaiters,
    /// Segment base and size of the last recovery point captured (see `recovery_point`).
    recovery_point_at: Cell<(i64, u64)>,
    /// A recovery point whose bytes a sync made durable, for `write_recovery_point`.
    recovery_point_ready: RefCell<Option<Box<recovery_point::RecoveryPoint>>>,
    /// A `write_recovery_point` is writing one.
    recovery_point_writing: Cell<bool>,
}

impl<S: Storage> PartitionLog<S> {
    /// Drops what is kept in memory of the log's bytes from `from` on: the batch cache's
    /// batches, and every read-ahead window (they hold file positions, not offsets). Called
    /// whenever bytes the log held change (truncation, cleaning, a merge) and when it closes;
    /// segment deletion drops only the windows ([`Self::drop_read_ahead`]).
    fn forget_cached(&self, from: i64) {
        self.cache.borrow_mut().forget(self.id, from);
        self.drop_read_ahead();
    }

    /// Drops the read-ahead windows (and with them their segment file handles, so a deleted
    /// segment's blocks can be freed) and forgets where the last disk read ended.
    fn drop_read_ahead(&self) {
        self.read_ahead.borrow_mut().take();
        self.read_ahead_generation
            .set(self.read_ahead_generation.get().wrapping_add(1));
        self.last_read_end.set(None);
    }

    /// A read at `offset` did not go to the disk (the batch cache had it, or it is at the
    /// high watermark): if it continues the last disk read, that reader has left the disk
    /// and its windows would only hold the shard's budget.
    fn left_disk(&self, offset: i64) {
        if self
            .last_read_end
            .get()
            .is_some_and(|(_, next, _)| next == offset)
        {
            self.drop_read_ahead();
        }
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
        if config.compact {
            self.cleaned.set(true);
        }
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
    /// Rolls a new segment at the next append (unless the active one is empty): a move to
    /// another log directory copies the sealed segment while it serves, and only the small
    /// new one after it stops appends.
    pub fn request_roll(&self) {
        self.inner.borrow_mut().roll_requested = true;
    }
    /// The storage error that stopped writes, if any: [`Self::failure`] but for a retired
    /// log's (whose failure is its deletion, not its disk's).
    pub fn io_failure(&self) -> Option<String> {
        let inner = self.inner.borrow();
        inner.failed.clone().filter(|_| !inner.deleted)
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
        self.append_inner(batch, None, now_ms, false)
    }

    /// Appends a batch a coordinator wrote itself (Kafka's `AppendOrigin.COORDINATOR`): a
    /// transaction's offsets (TxnOffsetCommit) carry the producer's id and epoch but no
    /// sequence, so no sequence is checked or remembered for them; the producer's
    /// transaction here opens all the same, and its marker decides the records.
    pub fn append_coordinator(&self, batch: &[u8], now_ms: i64) -> Result<Appended> {
        self.append_inner(batch, None, now_ms, true)
    }

    /// [`Self::append`] of a batch the caller holds as `Bytes` (a slice of the produce
    /// request): the batch cache keeps those bytes instead of a copy of the stored batch.
    pub fn append_shared(&self, batch: Bytes, now_ms: i64) -> Result<Appended> {
        self.append_inner(&batch, Some(&batch), now_ms, false)
    }

    /// Appends a transaction marker (a transaction coordinator ending the producer's
    /// transaction here, WriteTxnMarkers). Refused with INVALID_PRODUCER_EPOCH for an older
    /// producer epoch and TRANSACTION_COORDINATOR_FENCED for an older coordinator epoch than
    /// this partition has taken a marker from.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
        now_ms: i64,
    ) -> Result<Appended> {
        let batch = txn::marker_batch(producer_id, producer_epoch, marker, now_ms);
        self.append_inner(&batch, None, now_ms, false)
    }

    /// Every producer the partition remembers (DescribeProducers), by producer id.
    pub fn active_producers(&self) -> Vec<crate::producer::ActiveProducer> {
        self.inner.borrow().producers.active()
    }

    /// The last stable offset: below it every transaction is decided (its marker is below
    /// the high watermark); read_committed readers stop here. The high watermark when no
    /// transaction is open.
    pub fn last_stable_offset(&self) -> i64 {
        let inner = self.inner.borrow();
        let hw = inner.visible_hw();
        inner
            .producers
            .first_unstable_offset(hw)
            .map_or(hw, |f| f.min(hw))
    }

    fn append_inner(
        &self,
        batch: &[u8],
        shared: Option<&Bytes>,
        now_ms: i64,
        coordinator: bool,
    ) -> Result<Appended> {
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
        let marker = if txn::is_marker_header(&header) {
            let m = txn::parse_marker(&header, batch)?.expect("a marker's header");
            inner
                .producers
                .check_marker(header.producer_id, header.producer_epoch, m)?;
            inner.markers_seen += 1;
            Some(m)
        } else {
            None
        };
        if coordinator && header.producer_id >= 0 {
            inner
                .producers
                .check_coordinator(header.producer_id, header.producer_epoch)?;
        } else if header.producer_id >= 0 && !header.is_control() {
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
            inner
                .producers
                .check_txn(header.producer_id, header.is_transactional())?;
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
        if let Some(done) = inner.producers.apply(&stored_header, marker) {
            note_completed(&mut inner, done);
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
                >= (cfg.segment_index_bytes / TIME_INDEX_ENTRY_BYTES) as u64
            || active.aborted.len() >= ABORTED_TXNS_PER_SEGMENT_MAX;
        let requested = inner.roll_requested;
        if active.size == 0 || !(too_big || too_old || rel_overflow || index_full || requested) {
            return Ok(());
        }
        let only_requested = !(too_big || too_old || rel_overflow || index_full);
        if inner.segments.len() >= SEGMENTS_PER_PARTITION_MAX && only_requested {
            // Only asked for (a move's): not worth refusing appends over.
            inner.roll_requested = false;
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
        inner.roll_requested = false;
        let active = inner.active_mut();
        active.seal_open();
        active.rolled = true;
        active.roll_snapshot = Some((next_base, snapshot));
        inner.segments.insert(next_base, Segment::new(next_base));
        Ok(())
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

    /// How many transaction markers this log took since it opened (appended, or proposed
    /// by a replicated partition's leader, [`Self::note_marker_proposed`]). A produce
    /// verified with the transaction coordinator (KIP-890) is appended only if no marker
    /// came in between: the transaction it was verified in may have ended.
    pub fn markers_seen(&self) -> u64 {
        self.inner.borrow().markers_seen
    }

    /// A replicated partition's leader proposed a marker (it is appended once committed).
    pub fn note_marker_proposed(&self) {
        self.inner.borrow_mut().markers_seen += 1;
    }

    /// Whether `producer_id` has a transaction open in this partition (its batches were
    /// verified when the first one opened it).
    pub fn has_open_txn(&self, producer_id: i64) -> bool {
        self.inner.borrow().producers.has_open_txn(producer_id)
    }

    /// Whether a coordinator's batch of `producer_id` at `epoch` would be refused for an
    /// older producer epoch than this partition has seen (INVALID_PRODUCER_EPOCH): the
    /// group coordinator checks a TxnOffsetCommit with it before taking its offsets.
    pub fn check_coordinator_epoch(&self, producer_id: i64, epoch: i16) -> Result<()> {
        self.inner
            .borrow()
            .producers
            .check_coordinator(producer_id, epoch)
    }

    /// The transaction rules of [`Self::append`] (and of [`Self::append_coordinator`] when
    /// `coordinator`), checked without appending: for a replicated partition's leader,
    /// which checks a batch before proposing it and appends it only once committed. A
    /// marker must not come from an older producer or coordinator epoch; a plain batch of a
    /// producer with a transaction open here is INVALID_TXN_STATE; a coordinator's batch
    /// must not come from an older producer epoch. Sequences are checked elsewhere
    /// (`check_producer`).
    pub fn check_txn_rules(&self, header: &Header, batch: &[u8], coordinator: bool) -> Result<()> {
        let inner = self.inner.borrow();
        if txn::is_marker_header(header) {
            let m = txn::parse_marker(header, batch)?.expect("a marker's header");
            return inner
                .producers
                .check_marker(header.producer_id, header.producer_epoch, m);
        }
        if header.producer_id < 0 || header.is_control() {
            return Ok(());
        }
        if coordinator {
            return inner
                .producers
                .check_coordinator(header.producer_id, header.producer_epoch);
        }
        inner
            .producers
            .check_txn(header.producer_id, header.is_transactional())
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
        // A clean restart then reads only what a recovery point does not cover.
        let recovery_point = {
            let inner = self.inner.borrow();
            let active = inner.active();
            (inner.failed.is_none() && active.durable_size == active.size)
                .then(|| {
                    inner.capture_recovery_point(
                        self.recovery_point_at.get(),
                        RECOVERY_POINT_AT_CLOSE_BYTES_MIN,
                    )
                })
                .flatten()
        };
        if let Some(rp) = recovery_point {
            self.recovery_point_at.set((rp.base, rp.size));
            *self.recovery_point_ready.borrow_mut() = Some(Box::new(rp));
            self.write_recovery_point().await;
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
        self.forget_cached(i64::MIN);
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
        self.forget_cached(i64::MIN);
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

/// A transaction closed by the marker just appended to the active segment (leader or
/// follower): an aborted one goes into the segment's aborted list. Decided transactions
/// below the high watermark are forgotten.
fn note_completed<F: StorageFile>(inner: &mut Inner<F>, done: CompletedTxn) {
    if let Some(entry) = aborted_entry(&inner.producers, &done) {
        inner.active_mut().aborted.push(entry);
    }
    let hw = inner.visible_hw();
    inner.producers.advance_stable(hw);
}

/// The aborted-transaction entry for `done` if it was aborted, with the stable offset as of
/// its marker (the oldest transaction still open, or the marker's next offset).
fn aborted_entry(producers: &ProducerState, done: &CompletedTxn) -> Option<AbortedTxn> {
    done.aborted.then(|| AbortedTxn {
        producer_id: done.producer_id,
        first_offset: done.first_offset,
        last_offset: done.last_offset,
        last_stable_offset: producers
            .first_open_offset()
            .unwrap_or(done.last_offset + 1),
    })
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
