//! A replica's Raft log as the group manager holds it: hard state, configuration, a bounded
//! window of entries in memory, and the map from Raft index to Kafka offsets for the whole
//! log in compact form. raft-rs reads it through [`raft::Storage`]; the group manager writes
//! it (and tells its driver to persist the same writes) and evicts applied entries from it
//! (they stay in the partition log, where the driver reads them back on request: see
//! [`FetchRequest`]). It is rebuilt from disk on restart.

use std::cell::RefCell;
use std::collections::VecDeque;

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

/// Below the in-memory window the offset map keeps a mark at least every this many entries
/// (besides one at every term change), so finding the
/// Kafka offset of an evicted index reads at most this many batches more than asked for,
/// and the map costs about `size_of::<Mark>() / MARK_EVERY` = 0.125 bytes per evicted entry.
pub const MARK_EVERY: u64 = 256;

/// The Kafka offsets one Raft entry occupies: `records` dense offsets from `base` (one for
/// Raft's own entries, the leader's no-op and configuration changes, which the partition log
/// holds as control batches of one record), written in `term`, which is the batch's
/// `partitionLeaderEpoch`. Every entry occupies at least one offset, so offsets grow strictly
/// with the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetSpan {
    pub base: i64,
    pub records: u32,
    pub term: u64,
}

impl OffsetSpan {
    /// The offset after this entry's last record (its Kafka "next offset").
    pub fn next(&self) -> i64 {
        self.base + i64::from(self.records)
    }

    /// The last record's offset.
    pub fn last(&self) -> i64 {
        self.next() - 1
    }
}

/// The record count of an entry that is a Kafka batch: a normal entry with non-empty data
/// whose 4-byte big-endian context is a non-zero record count (the batch header has it too,
/// but this crate treats the batch bytes as opaque). `None` for Raft's own entries.
pub fn batch_records(e: &Entry) -> Option<u32> {
    if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
        return None;
    }
    <[u8; 4]>::try_from(&e.context[..])
        .ok()
        .map(u32::from_be_bytes)
        .filter(|&n| n > 0)
}

/// How many Kafka offsets an entry occupies: a batch's record count, and one for Raft's own
/// entries (the partition log holds each as a control batch of one record, which consumers
/// skip, as KRaft's log does with its leader-change and voters records).
pub fn entry_records(e: &Entry) -> u32 {
    batch_records(e).unwrap_or(1)
}

/// The context bytes that mark an entry as a Kafka batch of `records` records.
pub fn records_context(records: u32) -> Bytes {
    Bytes::copy_from_slice(&records.to_be_bytes())
}

/// The data of a log-start entry (DeleteRecords through Raft): this tag, then the new Kafka
/// log start offset, 8 bytes big-endian. A normal entry of Raft's own (no records context),
/// so it takes one offset and is stored as a control batch consumers skip, as the election
/// no-op is; the no-op's data is empty, so the two never mix up.
pub const LOG_START_TAG: &[u8; 4] = b"SLLS";

/// The entry data that asks every replica to move its partition log's start offset up to
/// `offset` when it applies the entry ([`crate::GroupManager::propose_log_start`]).
pub fn log_start_data(offset: i64) -> Bytes {
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(LOG_START_TAG);
    b.extend_from_slice(&offset.to_be_bytes());
    Bytes::from(b)
}

/// The log start offset a log-start entry's data asks for (`data` as stored: an entry's, or a
/// control batch's value as the driver decodes it); `None` for any other data.
pub fn log_start_of_data(data: &[u8]) -> Option<i64> {
    let rest = data.strip_prefix(&LOG_START_TAG[..])?;
    <[u8; 8]>::try_from(rest)
        .ok()
        .map(i64::from_be_bytes)
        .filter(|&o| o >= 0)
}

/// The log start offset `e` asks for, if it is a log-start entry.
pub fn log_start_of(e: &Entry) -> Option<i64> {
    if e.get_entry_type() != EntryType::EntryNormal || batch_records(e).is_some() {
        return None;
    }
    log_start_of_data(&e.data)
}

/// The bytes an entry holds in memory (what the per-shard budget counts).
pub fn entry_bytes(e: &Entry) -> u64 {
    (e.data.len() + e.context.len()) as u64
}

/// One point of the compact offset map: the entry at `index` has exactly `span`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub index: u64,
    pub span: OffsetSpan,
}

/// A read raft-rs asked for below the in-memory window (entries `low..high`, at most
/// `max_bytes` of them, for sending to a follower). The manager turns it into
/// `Effect::Fetch` and hands the context back to raft-rs when the entries arrive.
#[derive(Debug)]
pub struct FetchRequest {
    pub low: u64,
    pub high: u64,
    pub max_bytes: u64,
    pub context: GetEntriesContext,
}

/// A batch read back from the partition log for a fetch: its base offset, leader epoch
/// (= Raft term), record count and bytes as stored; or, for a control batch holding one of
/// Raft's own entries, that entry's type (`raft_entry`) with `bytes` its data (the driver
/// decodes the control record) and `records` 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedBatch {
    pub base: i64,
    pub term: u64,
    pub records: u32,
    pub bytes: Bytes,
    pub raft_entry: Option<EntryType>,
}

/// The log starts after `start` (the last compacted entry's index, term and the Kafka
/// offset after it: the partition log's start offset), (0, 0, 0) until the first
/// compaction. Indexes `window_first..=last_index` are in memory (`entries[i]` and `spans[i]` belong to
/// index `window_first + i`); every index below the window is described by `marks` (see
/// [`MARK_EVERY`]): the term of an evicted entry is its last mark's term, and an evicted
/// entry without a mark has records (it is a batch in the partition log).
#[derive(Debug, Default)]
pub struct ReplicaLog {
    hard_state: HardState,
    conf_state: ConfState,
    start: (u64, u64, i64),
    marks: Vec<Mark>,
    window_first: u64,
    entries: VecDeque<Entry>,
    spans: VecDeque<OffsetSpan>,
    /// Bytes of `entries`.
    window_bytes: u64,
    /// Kafka offset after the last evicted entry (the window's first base).
    evicted_next: i64,
    /// Entries read back from the partition log, served to raft-rs only for the duration of
    /// the manager's `entries_fetched` call: index of the first one, and the entries.
    fetched: Option<(u64, Vec<Entry>)>,
    /// Reads raft-rs asked for below the window since the manager last took them.
    requests: RefCell<Vec<FetchRequest>>,
    /// The state as of the log start that a driver keeps outside the log (the controller's
    /// metadata image, see [`crate::GroupManager::compact_to_snapshot`]); empty for the
    /// partition groups, whose snapshots carry only the log start. Sent after the 8-byte
    /// offset in every snapshot this replica gives a follower.
    snapshot_payload: Bytes,
}

/// What rebuilding entries from fetched batches gave: the entries at and after the request's
/// `low` (possibly none yet), and where the walk stopped (the next index and its offset).
#[derive(Debug)]
pub struct Rebuilt {
    pub entries: Vec<Entry>,
    pub next_index: u64,
    pub next_offset: i64,
}

/// The Kafka offset a log-start snapshot carries (see `Storage::snapshot` below): its
/// first 8 bytes; `None` when it has fewer or they say a negative offset. Only the
/// manager's `payload_group` (the controller's) may have more after them: the manager
/// drops any other group's snapshot that is not exactly 8 bytes.
pub fn snapshot_offset(snap: &Snapshot) -> Option<i64> {
    snap.data
        .get(..8)
        .map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")))
        .filter(|&o| o >= 0)
}

/// The driver's state a snapshot carries after its offset (empty for a partition group's).
pub fn snapshot_payload(snap: &Snapshot) -> Bytes {
    if snap.data.len() <= 8 {
        return Bytes::new();
    }
    snap.data.slice(8..)
}

impl ReplicaLog {
    /// A new replica of a group whose voters are `voters` (every replica starts with the same
    /// set, as raft-rs requires of a group created without a snapshot).
    pub fn new(voters: &[u64]) -> Self {
        ReplicaLog {
            conf_state: ConfState {
                voters: voters.to_vec(),
                ..Default::default()
            },
            window_first: 1,
            ..Default::default()
        }
    }

    /// A replica read back from disk after a restart (the driver's recovery): voters, and
    /// a log that starts after entry `start.0` of term `start.1` at Kafka offset `start.2`
    /// ((0, 0, 0) for a log never compacted), still empty. The driver then adds the entries
    /// in index order: the applied ones by their offsets alone ([`Self::push_applied`]),
    /// the rest with their data ([`Self::append`]), and sets the hard state.
    pub fn restored(voters: &[u64], start: (u64, u64, i64)) -> Self {
        ReplicaLog {
            conf_state: ConfState {
                voters: voters.to_vec(),
                ..Default::default()
            },
            start,
            window_first: start.0 + 1,
            evicted_next: start.2,
            ..Default::default()
        }
    }

    /// Adds the next entry of a restored log by its offsets only, as if it had been appended
    /// and evicted: it must be committed (raft-rs never reads an applied entry synchronously;
    /// a fetch reads it back from the partition log). Only before any entry is in memory.
    pub fn push_applied(&mut self, span: OffsetSpan) {
        assert!(self.entries.is_empty(), "push_applied after an append");
        assert!(span.records > 0, "an entry occupies at least one offset");
        assert_eq!(
            span.base, self.evicted_next,
            "restored offsets are not dense"
        );
        let last = self.marks.last();
        if last
            .is_none_or(|m| m.span.term != span.term || self.window_first - m.index >= MARK_EVERY)
        {
            self.marks.push(Mark {
                index: self.window_first,
                span,
            });
        }
        self.evicted_next = span.next();
        self.window_first += 1;
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The last compacted entry's index and term ((0, 0) until the first compaction).
    pub fn start(&self) -> (u64, u64) {
        (self.start.0, self.start.1)
    }

    /// The driver's state as of the log start (see the field); empty unless set.
    pub fn snapshot_payload(&self) -> &Bytes {
        &self.snapshot_payload
    }

    /// Sets the driver's state as of the log start (it travels in every snapshot this
    /// replica sends). Compacting or restarting the log clears it.
    pub fn set_snapshot_payload(&mut self, payload: Bytes) {
        self.snapshot_payload = payload;
    }

    pub fn voters(&self) -> &[u64] {
        &self.conf_state.voters
    }

    /// Replicas that receive the log but do not vote (a reassignment's joining replicas
    /// until they have caught up).
    pub fn learners(&self) -> &[u64] {
        &self.conf_state.learners
    }

    /// Sets the configuration (a configuration change applied, a snapshot's, or a
    /// recovered one): single-step changes only, so never a joint one. Refuses a node
    /// twice; an empty set of voters is allowed (raft-rs refuses nothing else here either,
    /// and a replica removed from its group may be recovered before it is deleted).
    pub fn set_conf(&mut self, voters: &[u64], learners: &[u64]) -> Result<(), String> {
        let mut all: Vec<u64> = voters.iter().chain(learners).copied().collect();
        all.sort_unstable();
        if all.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!(
                "a node twice in voters {voters:?} and learners {learners:?}"
            ));
        }
        self.conf_state = ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            ..Default::default()
        };
        Ok(())
    }

    /// Sets the hard state; its commit index is at least the log start (a compacted or
    /// snapshot entry is committed, even if a crash kept the log start but not the hard
    /// state written after it).
    pub fn set_hard_state(&mut self, mut hs: HardState) {
        hs.commit = hs.commit.max(self.start.0);
        self.hard_state = hs;
    }

    pub fn last_index(&self) -> u64 {
        self.window_first - 1 + self.entries.len() as u64
    }

    /// The first index of the log (1 until compacted).
    pub fn first_index(&self) -> u64 {
        self.start.0 + 1
    }

    /// The partition log's start offset: the offset of the first entry's first record.
    pub fn start_offset(&self) -> i64 {
        self.start.2
    }

    /// The first index held in memory (`last_index() + 1` when none is).
    pub fn window_first(&self) -> u64 {
        self.window_first
    }

    /// Bytes of the entries held in memory.
    pub fn window_bytes(&self) -> u64 {
        self.window_bytes
    }

    /// Marks of the compact offset map below the window (for tests and footprint checks).
    pub fn marks(&self) -> &[Mark] {
        &self.marks
    }

    /// The entry at `index` if it is in memory.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        index
            .checked_sub(self.window_first)
            .and_then(|i| self.entries.get(i as usize))
    }

    /// The exact offsets of entry `index`, if known without reading the partition log: in the
    /// window, or at a mark.
    pub fn span(&self, index: u64) -> Option<OffsetSpan> {
        if index >= self.window_first {
            return self
                .spans
                .get((index - self.window_first) as usize)
                .copied();
        }
        let m = self.mark_at_or_before(index)?;
        (m.index == index).then_some(m.span)
    }

    /// The last mark at or before `index` (below the window).
    pub fn mark_at_or_before(&self, index: u64) -> Option<Mark> {
        let n = self.marks.partition_point(|m| m.index <= index);
        n.checked_sub(1).map(|i| self.marks[i])
    }

    /// The term of entry `index` (0 for index 0), in memory or not.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.start.0 {
            return Some(self.start.1);
        }
        if index < self.start.0 {
            return None;
        }
        if index >= self.window_first {
            return self.span(index).map(|s| s.term);
        }
        self.mark_at_or_before(index).map(|m| m.span.term)
    }

    /// The Kafka offset after entry `index` (0 for index 0): the high watermark when `index`
    /// is the commit index, the log end offset when it is the last index. Known for indexes
    /// from just below the window to its end (the manager never evicts past what it applied,
    /// so the high watermark's index is always one of them).
    pub fn next_offset_after(&self, index: u64) -> i64 {
        if index == self.start.0 {
            return self.start.2;
        }
        if index + 1 == self.window_first {
            return self.evicted_next;
        }
        self.span(index)
            .expect("offset after an index at or just below the in-memory window")
            .next()
    }

    /// The log end offset: the offset the next batch gets.
    pub fn next_offset(&self) -> i64 {
        self.next_offset_after(self.last_index())
    }

    /// The Raft index of the in-memory entry holding Kafka offset `offset`, if any.
    pub fn index_of_offset(&self, offset: i64) -> Option<u64> {
        // Spans are sorted by base and every entry has at least one offset: the holder is
        // the last span with base <= offset.
        let n = self.spans.partition_point(|s| s.base <= offset);
        n.checked_sub(1)
            .filter(|&i| self.spans[i].last() >= offset)
            .map(|i| self.window_first + i as u64)
    }

    /// Appends `ents` (consecutive indexes), first replacing any entries at or after the first
    /// one's index (a follower dropping a divergent suffix; never an evicted entry, which is
    /// applied, so committed). Returns the first replaced index.
    pub fn append(&mut self, ents: &[Entry]) -> Option<u64> {
        let first = ents.first()?.index;
        assert!(
            first >= self.window_first && first <= self.last_index() + 1,
            "append at {first} outside the window {}..={}",
            self.window_first,
            self.last_index()
        );
        let replaced = (first <= self.last_index()).then_some(first);
        let keep = (first - self.window_first) as usize;
        for e in self.entries.drain(keep..) {
            self.window_bytes -= entry_bytes(&e);
        }
        self.spans.truncate(keep);
        for e in ents {
            assert_eq!(
                e.index,
                self.last_index() + 1,
                "entries are not consecutive"
            );
            let base = self.next_offset();
            self.spans.push_back(OffsetSpan {
                base,
                records: entry_records(e),
                term: e.term,
            });
            self.window_bytes += entry_bytes(e);
            self.entries.push_back(e.clone());
        }
        replaced
    }

    /// Drops the in-memory entries up to `index` (they must be in the partition log: the
    /// manager evicts only applied ones), keeping their offsets in compact form. Returns the
    /// bytes freed.
    pub fn evict_through(&mut self, index: u64) -> u64 {
        let mut freed = 0;
        while self.window_first <= index.min(self.last_index()) {
            let e = self.entries.pop_front().expect("window entry");
            let span = self.spans.pop_front().expect("window span");
            let last = self.marks.last();
            if last.is_none_or(|m| {
                m.span.term != span.term || self.window_first - m.index >= MARK_EVERY
            }) {
                self.marks.push(Mark {
                    index: self.window_first,
                    span,
                });
            }
            self.evicted_next = span.next();
            self.window_first += 1;
            let b = entry_bytes(&e);
            self.window_bytes -= b;
            freed += b;
        }
        freed
    }

    /// The first index at or after `first_index()` whose offsets are known without a read
    /// (at a mark, or in memory) and at or below `max_index`, with the largest base offset
    /// at or below `offset`: where the log may start when the partition log's start moves
    /// to `offset` (the caller keeps the batches from the returned base on).
    pub fn start_candidate(&self, offset: i64, max_index: u64) -> Option<(u64, i64)> {
        let max_index = max_index.min(self.last_index());
        let in_window = (self.window_first..=max_index)
            .rev()
            .map(|i| (i, self.spans[(i - self.window_first) as usize].base))
            .find(|&(_, b)| b <= offset);
        in_window.or_else(|| {
            self.marks
                .iter()
                .rev()
                .filter(|m| m.index <= max_index && m.span.base <= offset)
                .map(|m| (m.index, m.span.base))
                .next()
        })
    }

    /// Compacts the log so that it starts at entry `first` (a mark or in memory, as
    /// [`Self::start_candidate`] gives): every entry before it leaves, its offsets too.
    /// Returns the bytes freed.
    pub fn compact_before(&mut self, first: u64) -> u64 {
        assert!(first > self.first_index() && first <= self.last_index() + 1);
        let prev = first - 1;
        let term = self.term_of(prev).expect("term of an entry in the log");
        let offset = if first <= self.last_index() {
            self.span(first)
                .expect("a compaction point has known offsets")
                .base
        } else {
            self.next_offset()
        };
        let freed = self.evict_through(prev);
        self.marks.retain(|m| m.index >= first);
        self.start = (prev, term, offset);
        self.snapshot_payload = Bytes::new();
        if self.window_first == first {
            self.evicted_next = offset;
        }
        freed
    }

    /// Restarts the log after a snapshot from the leader: it now starts after entry `index`
    /// of `term`, at Kafka offset `offset`, with no entries. Returns the bytes freed.
    pub fn restart_at(&mut self, index: u64, term: u64, offset: i64) -> u64 {
        let freed = self.window_bytes;
        self.entries.clear();
        self.spans.clear();
        self.marks.clear();
        self.window_bytes = 0;
        self.window_first = index + 1;
        self.evicted_next = offset;
        self.start = (index, term, offset);
        self.snapshot_payload = Bytes::new();
        if self.hard_state.commit < index {
            self.hard_state.commit = index;
        }
        freed
    }

    /// Where to start reading the partition log for entry `low` (below the window): the last
    /// mark at or before it, as (index, Kafka offset of the first batch at or after it).
    pub fn fetch_cursor(&self, low: u64) -> (u64, i64) {
        let m = self
            .mark_at_or_before(low)
            .expect("an evicted index has a mark at or before it");
        (m.index, m.span.base)
    }

    /// Rebuilds the entries from index `from` on (whose first batch starts at Kafka offset
    /// `offset`) out of `batches` read from the partition log there, keeping those in
    /// `low..high` and stopping at the window: one batch per entry, Raft's own entries from
    /// their control batches (`FetchedBatch::raft_entry`). A batch that does not match the
    /// map (offset, term, record count) is an error: the partition log is not the log this
    /// replica wrote.
    pub fn rebuild(
        &self,
        from: u64,
        offset: i64,
        batches: Vec<FetchedBatch>,
        low: u64,
        high: u64,
    ) -> Result<Rebuilt, String> {
        let stop = high.min(self.window_first);
        let (mut index, mut offset) = (from, offset);
        let mut out = Vec::new();
        let mut batches = batches.into_iter().peekable();
        let mut m = self.marks.partition_point(|m| m.index < from);
        while index < stop {
            let mark = self.marks.get(m).filter(|mk| mk.index == index).copied();
            let term = self.term_of(index).expect("evicted index has a term");
            let Some(b) = batches.next() else { break };
            if b.base != offset || b.term != term || b.records == 0 {
                return Err(format!(
                    "entry {index}: expected a batch at offset {offset} of term {term}, read one at {} of term {} with {} records",
                    b.base, b.term, b.records
                ));
            }
            if let Some(mk) = mark {
                if mk.span.records != b.records {
                    return Err(format!(
                        "entry {index}: {} records, the map says {}",
                        b.records, mk.span.records
                    ));
                }
            }
            let e = match b.raft_entry {
                Some(t) if b.records == 1 => {
                    let mut e = Entry {
                        index,
                        term,
                        data: b.bytes,
                        ..Default::default()
                    };
                    e.set_entry_type(t);
                    e
                }
                None if !b.bytes.is_empty() => Entry {
                    index,
                    term,
                    data: b.bytes,
                    context: records_context(b.records),
                    ..Default::default()
                },
                _ => {
                    return Err(format!(
                        "entry {index}: a {} with {} records and {} bytes",
                        if b.raft_entry.is_some() {
                            "control batch"
                        } else {
                            "batch"
                        },
                        b.records,
                        b.bytes.len()
                    ))
                }
            };
            offset += i64::from(b.records);
            if mark.is_some() {
                m += 1;
            }
            if index >= low {
                out.push(e);
            }
            index += 1;
        }
        if index == self.window_first && offset != self.evicted_next {
            return Err(format!(
                "entries up to the window end at offset {offset}, the map says {}",
                self.evicted_next
            ));
        }
        Ok(Rebuilt {
            entries: out,
            next_index: index,
            next_offset: offset,
        })
    }

    /// Serves `entries` (consecutive, below the window) to raft-rs until [`Self::clear_fetched`].
    pub fn set_fetched(&mut self, entries: Vec<Entry>) {
        if let Some(first) = entries.first().map(|e| e.index) {
            self.fetched = Some((first, entries));
        }
    }

    pub fn clear_fetched(&mut self) {
        self.fetched = None;
    }

    /// Whether raft-rs asked for reads below the window since the last `take_requests`.
    pub fn has_requests(&self) -> bool {
        !self.requests.borrow().is_empty()
    }

    /// The reads raft-rs asked for below the window since the last call.
    pub fn take_requests(&self) -> Vec<FetchRequest> {
        std::mem::take(&mut *self.requests.borrow_mut())
    }
}

impl raft::Storage for ReplicaLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::new();
        let mut next = low;
        if low < self.window_first {
            match &self.fetched {
                Some((first, ents)) if *first <= low && low < *first + ents.len() as u64 => {
                    let from = (low - first) as usize;
                    let to = ((high - first) as usize).min(ents.len());
                    out.extend_from_slice(&ents[from..to]);
                    next = first + to as u64;
                }
                _ if context.can_async() => {
                    self.requests.borrow_mut().push(FetchRequest {
                        low,
                        high,
                        max_bytes: max_size.unwrap_or(u64::MAX),
                        context,
                    });
                    return Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable));
                }
                // raft-rs reads synchronously only unapplied entries (to apply them, or to
                // look for configuration changes before a campaign), and the manager never
                // evicts those.
                _ => panic!(
                    "synchronous read of entries {low}..{high} below the in-memory window {}",
                    self.window_first
                ),
            }
        }
        if next >= self.window_first && next < high {
            let from = (next - self.window_first) as usize;
            let to = (high - self.window_first) as usize;
            out.extend(self.entries.range(from..to).cloned());
        }
        raft::util::limit_size(&mut out, max_size);
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx > self.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if idx < self.start.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index())
    }

    /// A follower that needs entries before the log start gets a snapshot: "your log
    /// restarts after entry `index` of `term`, at Kafka offset" (the first 8 bytes of the
    /// data, big-endian). As Kafka's follower on OFFSET_OUT_OF_RANGE, it drops its whole log
    /// and starts again at the leader's log start. The partition groups' snapshots carry
    /// nothing else; a group whose driver set a snapshot payload (the controller's metadata
    /// image) sends it after the offset.
    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.start.0 == 0 {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut data = Vec::with_capacity(8 + self.snapshot_payload.len());
        data.extend_from_slice(&self.start.2.to_be_bytes());
        data.extend_from_slice(&self.snapshot_payload);
        let mut snap = Snapshot {
            data: Bytes::from(data),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = self.start.0;
        meta.term = self.start.1;
        meta.set_conf_state(self.conf_state.clone());
        Ok(snap)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn batch(index: u64, term: u64, records: u32) -> Entry {
        let mut e = Entry {
            index,
            term,
            ..Default::default()
        };
        if records > 0 {
            e.data = Bytes::from(vec![index as u8; 3]);
            e.context = records_context(records);
        }
        e
    }

    #[test]
    fn offsets_are_dense_and_follow_truncation() {
        let mut log = ReplicaLog::new(&[1, 2, 3]);
        // The no-op occupies one offset (a control batch in the partition log).
        log.append(&[batch(1, 1, 0), batch(2, 1, 3), batch(3, 1, 2)]);
        assert_eq!(log.span(1).unwrap().records, 1);
        assert_eq!(log.span(2).unwrap().base, 1);
        assert_eq!(log.span(3).unwrap().base, 4);
        assert_eq!(log.next_offset(), 6);
        assert_eq!(log.index_of_offset(0), Some(1));
        assert_eq!(log.index_of_offset(1), Some(2));
        assert_eq!(log.index_of_offset(5), Some(3));
        assert_eq!(log.index_of_offset(6), None);
        // A new leader replaces index 3 with a no-op and a batch of one record.
        assert_eq!(log.append(&[batch(3, 2, 0), batch(4, 2, 1)]), Some(3));
        assert_eq!(log.next_offset(), 6);
        assert_eq!(log.index_of_offset(4), Some(3));
        assert_eq!(log.index_of_offset(5), Some(4));
        assert_eq!(log.span(4).unwrap().term, 2);
        assert_eq!(log.append(&[batch(5, 2, 1)]), None);
    }

    #[test]
    fn a_restored_log_matches_the_log_it_was_written_as() {
        let mut ents = vec![batch(11, 2, 0)];
        ents.extend((12..=400).map(|i| batch(i, 2, 2)));
        ents.push(batch(401, 5, 0));
        ents.extend((402..=410).map(|i| batch(i, 5, 3)));
        let mut written = ReplicaLog::restored(&[1, 2, 3], (10, 2, 100));
        written.append(&ents);
        written.evict_through(405);
        // What a driver's recovery builds: committed entries by offsets, the rest in memory.
        let mut restored = ReplicaLog::restored(&[1, 2, 3], (10, 2, 100));
        for e in &ents[..395] {
            restored.push_applied(written_span(&written, e.index));
        }
        restored.append(&ents[395..]);
        use raft::Storage;
        for i in 10..=410 {
            assert_eq!(restored.term(i).unwrap(), written.term(i).unwrap(), "{i}");
        }
        assert_eq!(restored.first_index(), 11);
        assert_eq!(restored.last_index(), 410);
        assert_eq!(restored.window_first(), 406);
        assert_eq!(restored.next_offset(), written.next_offset());
        assert_eq!(restored.start_offset(), 100);
        for low in [11, 200, 401, 405] {
            assert!(restored.fetch_cursor(low).0 <= low);
        }
    }

    /// The span of entry `index` of `log` (in memory or recomputed from its neighbours).
    fn written_span(log: &ReplicaLog, index: u64) -> OffsetSpan {
        if let Some(s) = log.span(index) {
            return s;
        }
        let records = |i: u64| match i {
            11 | 401 => 1,
            402.. => 3,
            _ => 2,
        };
        let m = log.mark_at_or_before(index).unwrap();
        let base = m.span.base + (m.index..index).map(|i| i64::from(records(i))).sum::<i64>();
        OffsetSpan {
            base,
            records: records(index),
            term: log.term_of(index).unwrap(),
        }
    }

    #[test]
    fn evicted_entries_keep_terms_and_offsets_and_rebuild_from_batches() {
        let mut log = ReplicaLog::new(&[1, 2, 3]);
        let mut ents = vec![batch(1, 1, 0)];
        ents.extend((2..=600).map(|i| batch(i, 1, 2)));
        ents.push(batch(601, 3, 0));
        ents.extend((602..=610).map(|i| batch(i, 3, 1)));
        log.append(&ents);
        let end = log.next_offset();
        let freed = log.evict_through(605);
        assert_eq!(freed, 599 * 7 + 4 * 7);
        assert_eq!(log.window_first(), 606);
        assert_eq!(log.window_bytes(), 5 * 7);
        // Marks: the term changes and one every MARK_EVERY entries; not one each.
        assert!(log.marks().len() <= 6, "{:?}", log.marks());
        assert_eq!(log.next_offset(), end);
        assert_eq!(log.next_offset_after(605), log.span(606).unwrap().base);
        use raft::Storage;
        for i in [1, 2, 300, 600, 601, 602, 605, 606] {
            assert_eq!(log.term(i).unwrap(), if i <= 600 { 1 } else { 3 }, "{i}");
        }
        // The partition log holds the batches and the no-ops (as control batches).
        let batches = |from: i64| -> Vec<FetchedBatch> {
            ents.iter()
                .scan(0i64, |off, e| {
                    let own = batch_records(e).is_none();
                    let b = FetchedBatch {
                        base: *off,
                        term: e.term,
                        records: entry_records(e),
                        bytes: e.data.clone(),
                        raft_entry: own.then_some(EntryType::EntryNormal),
                    };
                    *off += i64::from(b.records);
                    Some(b)
                })
                .filter(|b| b.base >= from)
                .collect()
        };
        for low in [1, 2, 257, 300, 600, 601, 603] {
            let (from, offset) = log.fetch_cursor(low);
            assert!(from <= low && low - from < MARK_EVERY);
            let r = log
                .rebuild(from, offset, batches(offset), low, 700)
                .unwrap();
            assert_eq!(r.next_index, 606);
            assert_eq!(r.entries[..], ents[(low - 1) as usize..605], "low {low}");
        }
        // A read that stops early says where to go on; a wrong batch is refused.
        let (from, offset) = log.fetch_cursor(300);
        let r = log
            .rebuild(from, offset, batches(offset)[..3].to_vec(), 300, 700)
            .unwrap();
        assert!(r.entries.is_empty());
        assert_eq!(r.next_index, from + 3);
        let mut wrong = batches(offset);
        wrong[1].term = 2;
        assert!(log.rebuild(from, offset, wrong, 300, 700).is_err());
        // Entries above the window cannot be replaced below it.
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut l = ReplicaLog::new(&[1]);
            l.append(&ents[..5]);
            l.evict_through(3);
            l.append(&[batch(3, 2, 1)]);
        }))
        .is_err());
    }
}
