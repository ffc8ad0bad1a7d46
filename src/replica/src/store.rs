//! [`ReplicaStore`]: one shard's partition Raft groups on disk (their partition logs and the
//! shard's raft-state file), performing the group manager's `Persist` and `Fetch` effects
//! and recovering every group at start. See the crate header for the design.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::{poll_fn, Future};
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use raft::eraftpb::{Entry, HardState};
use sluice_raft::log::records_context;
use sluice_raft::{
    entry_records, log_start_of_data, Effect, FetchedBatch, GroupId, GroupManager, OffsetSpan,
    ReplicaLog, Write,
};
use sluice_storage::hdr::Header;
use sluice_storage::io::Storage;
use sluice_storage::log::SCAN_CHUNK_BYTES;
use sluice_storage::{BatchCache, LogConfig, PartitionLog};

use crate::control::{fetched, stored_bytes};
use crate::state::{GroupState, LogStart, StateAppend, StateAppended, StateFile};
use crate::Error;

/// Most bytes one `Fetch` reads (raft-rs asks for `max_size_per_msg`, 1 MiB; the partition
/// log always returns at least one whole batch).
pub const FETCH_BYTES_MAX: u64 = 16 << 20;

/// Most partition logs one sync flushes, or a close closes, at once (their writes and
/// fdatasyncs overlap).
pub const FLUSH_PARALLEL_MAX: usize = 32;

/// Most groups [`ReplicaStore::open`] recovers at once.
pub const RECOVER_PARALLEL_MAX: usize = 16;

/// Most bytes appended to the shard's partition logs while the state file's commit
/// indexes wait for a later sync (`StateFile::must_sync`): a restart reads the entries past
/// the durable commit back into memory (the uncommitted tail), so the deferral is bounded
/// by what that may cost, not only by the state file's own bytes.
pub const STATE_SYNC_LOG_BYTES_MAX: u64 = 8 << 20;

/// Runs `futs` together in this task; all run to the end, the first error is returned.
async fn join_all<T, F: Future<Output = sluice_storage::Result<T>>>(
    futs: Vec<F>,
) -> sluice_storage::Result<()> {
    join_outputs(futs)
        .await
        .into_iter()
        .find_map(|r| r.err())
        .map_or(Ok(()), Err)
}

/// Runs `futs` together in this task until all have ended; their outputs, in order.
async fn join_outputs<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futs.iter_mut().zip(outs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(r) => *out = Some(r),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outs.into_iter()
        .map(|o| o.expect("every future ended"))
        .collect()
}

/// Where and how a group's partition log is kept; the broker's mapping from Raft group to
/// partition (directory named by topic id and partition, the topic's log config).
#[derive(Debug, Clone)]
pub struct PartitionSpec {
    pub dir: PathBuf,
    pub config: LogConfig,
    /// For log messages and errors (`topic-partition`).
    pub name: String,
    /// Its log directory is offline (JBOD): at recovery the group is neither opened nor
    /// removed (its Raft state stays in the store until the directory is back).
    pub offline: bool,
}

/// The broker's mapping from group to partition, asked when a group is created or
/// recovered. `None` at recovery: the group's partition is gone (its topic was deleted, or
/// the partition moved off this node, while the node was down) and the store removes the
/// group, durably, before it returns; at creation it is an error.
pub type Layout = Rc<dyn Fn(GroupId) -> Option<PartitionSpec>>;

/// A one-replica log read for adoption ([`ReplicaStore::adoption_scan`]), not yet the
/// store's: [`ReplicaStore::finish_adoption`] takes it, or [`Scanned::discard`] closes it.
pub struct Scanned<S: Storage> {
    log: Rc<PartitionLog<S>>,
    rlog: ReplicaLog,
    group: Group<S>,
    start: LogStart,
    first: i64,
    records_start: i64,
    name: String,
}

impl<S: Storage> Scanned<S> {
    /// Closes the log without adopting it (the adoption was called off).
    pub async fn discard(self) -> Result<(), Error> {
        self.log.close().await?;
        Ok(())
    }
}

/// One group's partition log and the driver's view of it.
struct Group<S: Storage> {
    log: Rc<PartitionLog<S>>,
    /// The Raft index of the last entry written, and the offset after it (the log end).
    last_index: u64,
    end_offset: i64,
    /// Base offsets of entries `tail_first..=last_index`: those above the commit index this
    /// driver has seen, the only ones a later write may replace (Raft never replaces a
    /// committed entry), so its size is bounded by the uncommitted entries.
    tail_first: u64,
    tail: VecDeque<i64>,
    /// Commit index of the latest hard state written, and the one reported to the log as
    /// its truncation floor after the last sync.
    commit: u64,
    noted_commit: u64,
    /// Kafka offset of the Raft log's first entry (its `LogStart`), and the partition log's
    /// start offset as applied log-start entries asked for (DeleteRecords; at least the
    /// former once persisted, see [`ReplicaStore::log_start_offset`]).
    raft_start: i64,
    records_start: i64,
}

impl<S: Storage> Group<S> {
    fn new(log: Rc<PartitionLog<S>>, start: LogStart) -> Self {
        Group {
            log,
            last_index: start.index,
            end_offset: start.offset,
            tail_first: start.index + 1,
            tail: VecDeque::new(),
            commit: start.index,
            noted_commit: start.index,
            raft_start: start.offset,
            records_start: start.offset,
        }
    }

    /// The base offset of entry `index` (`last_index + 1`: the log end), if still known.
    fn base_of(&self, index: u64) -> Option<i64> {
        if index == self.last_index + 1 {
            return Some(self.end_offset);
        }
        let i = index.checked_sub(self.tail_first)?;
        self.tail.get(i as usize).copied()
    }

    fn set_commit(&mut self, commit: u64) {
        self.commit = self.commit.max(commit);
        while self.tail_first <= self.commit && !self.tail.is_empty() {
            self.tail.pop_front();
            self.tail_first += 1;
        }
        if self.tail.is_empty() {
            self.tail_first = self.last_index + 1;
        }
    }
}

/// Counters for tests and stats.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub syncs: u64,
    pub fetches: u64,
    pub fetch_errors: u64,
    pub truncations: u64,
    pub resets: u64,
    /// Syncs that left the state file alone (it held only commit-only hard states).
    pub state_syncs_deferred: u64,
}

/// The partition Raft groups of one shard on disk. Not `Send` (glommio shard-local IO).
pub struct ReplicaStore<S: Storage> {
    storage: Rc<S>,
    cache: Rc<RefCell<BatchCache>>,
    layout: Layout,
    state: StateFile<S>,
    groups: BTreeMap<GroupId, Group<S>>,
    /// Groups whose partition log was appended to since the last sync.
    touched: BTreeSet<GroupId>,
    /// Groups whose partition log was appended to since [`Self::take_logs_to_write`] last
    /// took them.
    to_write: BTreeSet<GroupId>,
    /// Groups whose log start moved (retention's `LogStart`, or an applied DeleteRecords'
    /// `Effect::LogStartOffset`), applied to their partition logs at the next sync, once
    /// the `LogStart` is durable (segments go only after the state file says where the Raft
    /// log starts).
    deferred_starts: BTreeSet<GroupId>,
    /// Groups whose partition log starts past what their Raft log carries (its start, and
    /// the log-start entries it holds), with that offset: a one-replica log's DeleteRecords
    /// (its checkpoint) before it was adopted. A replica that joins learns its start only
    /// from the Raft log, so the driver writes a log-start entry for it ([`Self::take_uncovered_starts`]).
    uncovered_starts: BTreeMap<GroupId, i64>,
    /// Bytes appended to partition logs since the state file was last synced (see
    /// [`STATE_SYNC_LOG_BYTES_MAX`]).
    appended_since_state_sync: u64,
    written_seq: u64,
    synced_seq: u64,
    /// A [`LogSync`] is out (begun, not finished): only quiet writes until it is finished.
    log_sync_out: bool,
    stats: StoreStats,
}

/// A sync of the partition logs written since the last one ([`ReplicaStore::begin_sync`]),
/// and of the state file's records when they are due, run apart from the store so that
/// further writes go on beside it: raft-rs's next round is written while this one's
/// fdatasyncs run, as the one-replica flusher overlaps writing and syncing. Give what
/// [`Self::run`] returns to [`ReplicaStore::finish_sync`].
pub struct LogSync<S: Storage> {
    storage: Rc<S>,
    logs: Vec<Rc<PartitionLog<S>>>,
    /// Written after every log is durable: a durable commit index never exceeds the
    /// durable logs.
    state: Option<StateAppend<S::File>>,
    /// Log-start moves performed once the state file says where each Raft log starts
    /// (after `state`, or at once when the state file had nothing new).
    starts: Vec<StartMove<S>>,
    seq: u64,
}

/// A deferred log-start move: the partition log's start for readers and where its
/// segments may go (see [`ReplicaStore::sync`]).
struct StartMove<S: Storage> {
    log: Rc<PartitionLog<S>>,
    start: i64,
    retain_from: i64,
}

impl<S: Storage> StartMove<S> {
    async fn perform(&self) -> sluice_storage::Result<i64> {
        // Both offsets lie within entries applied here, so committed and synced: the high
        // watermark is there already if the caller applied every `HighWatermark` effect,
        // and may be raised to them if not.
        self.log.set_high_watermark(self.start);
        self.log
            .move_replica_start(self.start, self.retain_from)
            .await
    }
}

/// A finished [`LogSync`], for [`ReplicaStore::finish_sync`].
pub struct LogSynced {
    seq: u64,
    logs: Result<(), Error>,
    /// The state file's append, if the sync carried one (abandoned unwritten when a log
    /// failed).
    state: Option<Result<StateAppended, Error>>,
}

impl<S: Storage> LogSync<S> {
    /// Writes and fdatasyncs each log (a bounded number at a time, overlapping), then the
    /// state file's records, then moves the log starts those made durable.
    pub async fn run(self) -> LogSynced {
        let mut logs = flush_logs(&self.logs).await;
        let state = match self.state {
            Some(append) => Some(match &logs {
                Ok(()) => append.run(&*self.storage).await,
                Err(e) => Err(Error::Io(format!(
                    "state file append not written, a partition log failed: {e}"
                ))),
            }),
            None => None,
        };
        if logs.is_ok() && state.as_ref().is_none_or(|s| s.is_ok()) {
            for m in &self.starts {
                if let Err(e) = m.perform().await {
                    logs = Err(e.into());
                    break;
                }
            }
        }
        LogSynced {
            seq: self.seq,
            logs,
            state,
        }
    }
}

/// Writes what was appended to `logs` without syncing it (`PartitionLog::write_ahead`), a
/// bounded number at a time, so that the sync that follows finds it written. Errors are
/// left to that sync: a log that failed to write reports it to every later flush.
pub async fn write_ahead<S: Storage>(logs: &[Rc<PartitionLog<S>>]) {
    for chunk in logs.chunks(FLUSH_PARALLEL_MAX) {
        let _ = join_all(chunk.iter().map(|l| l.write_ahead()).collect()).await;
    }
}

/// Writes and fdatasyncs `logs`, a bounded number at a time (their writes and fdatasyncs
/// overlap); the first error is returned once all are done.
async fn flush_logs<S: Storage>(logs: &[Rc<PartitionLog<S>>]) -> Result<(), Error> {
    for chunk in logs.chunks(FLUSH_PARALLEL_MAX) {
        join_all(chunk.iter().map(|l| l.flush()).collect()).await?;
    }
    Ok(())
}

fn damaged(group: GroupId, what: impl std::fmt::Display) -> Error {
    Error::Damaged(format!("group {group}: {what}"))
}

/// Opens a group's partition log, marked replicated: readers see it only up to the
/// group's high watermark, which starts at the log start (the caller raises it).
async fn open_log<S: Storage>(
    storage: &Rc<S>,
    cache: &Rc<RefCell<BatchCache>>,
    spec: &PartitionSpec,
) -> Result<Rc<PartitionLog<S>>, Error> {
    let log = PartitionLog::open(
        storage.clone(),
        spec.dir.clone(),
        spec.config.clone(),
        cache.clone(),
        spec.name.clone(),
    )
    .await?;
    log.set_replicated();
    Ok(Rc::new(log))
}

/// The entry a stored batch holds, as raft-rs wrote it (a Kafka batch's bytes now carry
/// their offset and epoch).
fn entry_of(b: FetchedBatch, index: u64) -> Entry {
    let mut e = Entry {
        index,
        term: b.term,
        data: b.bytes,
        ..Default::default()
    };
    match b.raft_entry {
        Some(t) => e.set_entry_type(t),
        None => e.context = records_context(b.records),
    }
    e
}

/// Splits a read's bytes into whole batches.
fn batches_of(bytes: bytes::Bytes) -> Result<Vec<FetchedBatch>, crate::control::Malformed> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let size = Header::parse(&bytes[at..])
            .map(|h| h.size)
            .filter(|&s| at + s <= bytes.len())
            .ok_or_else(|| crate::control::Malformed(format!("no whole batch at byte {at}")))?;
        out.push(fetched(bytes.slice(at..at + size))?);
        at += size;
    }
    Ok(out)
}

impl<S: Storage> ReplicaStore<S> {
    /// Opens the shard's store in `dir` (its raft-state file) and recovers every group it
    /// holds: the partition log of each (through `layout`) is opened and scanned from the
    /// Raft log start to rebuild the index → offset map (applied entries as marks, the
    /// rest in memory), a reset or retention move that a crash interrupted is finished, and
    /// the manager is built over the result. A store that contradicts itself (a commit
    /// index beyond the recovered log, a partition log starting past the Raft log start,
    /// batches that are not what the driver writes) is an error naming the group: nothing
    /// is clamped or dropped silently.
    pub async fn open(
        storage: Rc<S>,
        dir: PathBuf,
        cache: Rc<RefCell<BatchCache>>,
        layout: Layout,
        cfg: sluice_raft::Config,
    ) -> Result<(ReplicaStore<S>, GroupManager), Error> {
        let mut state = StateFile::open(&*storage, &dir).await?;
        let mut groups = BTreeMap::new();
        let mut logs = Vec::new();
        let mut gone = Vec::new();
        let mut uncovered_starts = BTreeMap::new();
        let mut wanted = Vec::new();
        for (&g, st) in state.groups() {
            match layout(g) {
                Some(spec) if spec.offline => {
                    log::warn!("{}: its log directory is offline: not opened", spec.name)
                }
                Some(spec) => wanted.push((g, st, spec)),
                None => gone.push(g),
            }
        }
        // A few at a time: each recovery mostly waits for small reads (and, after an
        // unclean stop, a truncation), so a shard of thousands of groups opens in a
        // fraction of the time one at a time would take.
        for chunk in wanted.chunks(RECOVER_PARALLEL_MAX) {
            let recovering = chunk
                .iter()
                .map(|(g, st, spec)| Self::recover_group(&storage, &cache, *g, st, spec))
                .collect();
            for recovered in join_outputs(recovering).await {
                let (g, rlog, group, uncovered) = recovered?;
                if let Some(start) = uncovered {
                    uncovered_starts.insert(g, start);
                }
                logs.push((g, rlog));
                groups.insert(g, group);
            }
        }
        if !gone.is_empty() {
            for g in gone {
                state.remove(g);
            }
            state.sync(&*storage).await?;
        }
        let mgr = GroupManager::recover(cfg, logs).map_err(Error::Raft)?;
        let store = ReplicaStore {
            storage,
            cache,
            layout,
            state,
            groups,
            touched: BTreeSet::new(),
            to_write: BTreeSet::new(),
            deferred_starts: BTreeSet::new(),
            uncovered_starts,
            appended_since_state_sync: 0,
            written_seq: 0,
            synced_seq: 0,
            log_sync_out: false,
            stats: StoreStats::default(),
        };
        Ok((store, mgr))
    }

    /// Opens and recovers one group of the state file (see [`Self::open`]): its Raft log,
    /// its store entry, and the log start only its partition log's checkpoint knows, if any.
    async fn recover_group(
        storage: &Rc<S>,
        cache: &Rc<RefCell<BatchCache>>,
        g: GroupId,
        st: &GroupState,
        spec: &PartitionSpec,
    ) -> Result<(GroupId, ReplicaLog, Group<S>, Option<i64>), Error> {
        let mut log = open_log(storage, cache, spec).await?;
        let start = st.start;
        if start.reset && log.retained_start() < start.offset {
            // The reset was recorded (durably, before it began) but not finished.
            log.close().await?;
            drop(log);
            PartitionLog::reset_dir(&**storage, &spec.dir, start.offset).await?;
            log = open_log(storage, cache, spec).await?;
        }
        // (Its log start offset may be past the Raft log start, after a DeleteRecords;
        // the batches from the Raft log start on must still be there.)
        if log.retained_start() > start.offset {
            return Err(damaged(
                g,
                format!(
                    "partition log {} keeps batches from {}, after the Raft log start {}",
                    spec.name,
                    log.retained_start(),
                    start.offset
                ),
            ));
        }
        if log.log_end_offset() < start.offset {
            return Err(damaged(
                g,
                format!(
                    "partition log {} ends at {}, before the Raft log start {}",
                    spec.name,
                    log.log_end_offset(),
                    start.offset
                ),
            ));
        }
        let (mut rlog, mut group) =
            Self::scan(g, &log, &st.voters, start, &st.hard_state, false).await?;
        rlog.set_conf(&st.voters, &st.learners)
            .map_err(|m| damaged(g, m))?;
        // The log starts at the Raft log start, or past it where a committed
        // DeleteRecords the log still holds asked for more: either move may have been
        // recorded (the `LogStart`, or the entry and a hard state covering it) without
        // reaching the partition log (its checkpoint, its segments) before a crash. The
        // high watermark is past both: the scan set it to the commit.
        group.records_start = group.records_start.max(start.offset);
        log.move_replica_start(group.records_start, start.offset)
            .await?;
        // A start only the partition log's checkpoint knows (an adoption whose log-start
        // entry did not commit before a crash): the driver writes it again.
        let uncovered =
            (log.log_start_offset() > group.records_start).then(|| log.log_start_offset());
        Ok((g, rlog, group, uncovered))
    }

    /// Rebuilds one group's Raft log from its partition log: one batch per entry from the
    /// log start, raft index = start index + ordinal, term = partitionLeaderEpoch. With
    /// `adopt` every batch is committed (the hard state's commit is ignored and becomes the
    /// last index): see [`Self::adopt`].
    async fn scan(
        g: GroupId,
        log: &Rc<PartitionLog<S>>,
        voters: &[u64],
        start: LogStart,
        hs: &HardState,
        adopt: bool,
    ) -> Result<(ReplicaLog, Group<S>), Error> {
        let mut rlog = ReplicaLog::restored(voters, (start.index, start.term, start.offset));
        let mut group = Group::new(log.clone(), start);
        let (mut index, mut offset, mut term) = (start.index, start.offset, start.term);
        loop {
            let (bytes, _) = log.read_replica(offset, SCAN_CHUNK_BYTES).await?;
            if bytes.is_empty() {
                break;
            }
            for b in batches_of(bytes).map_err(|m| damaged(g, m.0))? {
                if b.base != offset || b.term < term {
                    return Err(damaged(
                        g,
                        format!(
                            "entry {}: batch at {} of term {} after offset {offset} of term {term}",
                            index + 1,
                            b.base,
                            b.term,
                        ),
                    ));
                }
                index += 1;
                term = b.term;
                let span = OffsetSpan {
                    base: b.base,
                    records: b.records,
                    term: b.term,
                };
                if adopt || index <= hs.commit {
                    if b.raft_entry == Some(raft::eraftpb::EntryType::EntryNormal) {
                        if let Some(x) = log_start_of_data(&b.bytes) {
                            group.records_start = group.records_start.max(x.min(b.base));
                        }
                    }
                    rlog.push_applied(span);
                } else {
                    rlog.append(&[entry_of(b, index)]);
                    group.tail.push_back(span.base);
                }
                offset = span.next();
            }
        }
        let mut hs = hs.clone();
        if adopt {
            // Everything is committed, and the term at least the newest entry's (term 1
            // for a log of no entries: a term 0 leader is not Raft's).
            hs.commit = index;
            hs.term = term.max(1);
            hs.vote = 0;
        }
        if hs.commit > index {
            return Err(damaged(
                g,
                format!(
                    "commit index {} beyond the recovered log, which ends at index {index} (offset {offset})",
                    hs.commit
                ),
            ));
        }
        if term > hs.term {
            // Entries of a newer term than the durable hard state: a follower that learnt
            // the term from the leader's first append crashed between syncing the log and
            // the state file. It never acknowledged them nor voted in that term (both
            // wait for the whole sync), so it resumes in that term with no vote.
            log::info!(
                "group {g}: log holds term {term}, hard state term {}: resuming in term {term}",
                hs.term
            );
            hs.term = term;
            hs.vote = 0;
        }
        group.last_index = index;
        group.end_offset = offset;
        group.tail_first = index + 1 - group.tail.len() as u64;
        group.commit = hs.commit.max(start.index);
        group.noted_commit = group.commit;
        rlog.set_hard_state(hs);
        let committed = group
            .base_of(group.commit + 1)
            .expect("offset after the commit");
        log.note_committed(committed);
        // Readers resume at the recovered commit (durable: the logs were synced before the
        // state file that holds it), not at the durable end, which may hold uncommitted
        // entries.
        log.set_high_watermark(committed);
        Ok((rlog, group))
    }

    /// Makes `group` of `voters` out of the one-replica partition log in its directory (a
    /// reassignment gives the partition more replicas, or moves it): the log, closed by its
    /// owner (everything it acknowledged synced), is opened as this group's and every batch
    /// in it becomes a committed entry, in order, with its partitionLeaderEpoch as term
    /// (epoch 0, what a one-replica log stamps, read as term 1: see `control::fetched`).
    /// The Raft log starts at the log's first retained batch: at entry 0 if that is
    /// offset 0, else after an entry 1 of term 1 that lies before it (as if retention had
    /// compacted it), so a new replica is first reset to that offset, as a new Kafka
    /// follower of a log that does not start at 0 is. The hard state's term is the last
    /// entry's (at least 1), with no vote, so the group's first election starts a term
    /// past every stored epoch. Nothing in the partition log is written: the group exists
    /// once its records in the state file are synced, before this returns, and a crash
    /// before leaves the plain log as it was (the broker adopts it again).
    ///
    /// Under kill -9 the records of one state-file sync arrive whole (one write); a power
    /// loss tearing them after the creation record recovers a group with commit 0 (its
    /// single voter commits the entries again) or, for a log not starting at 0, refuses to
    /// start (the partition log keeps batches before the Raft log start): never data lost.
    ///
    /// [`Self::adoption_scan`] then [`Self::finish_adoption`], for callers with nothing
    /// else to do meanwhile.
    pub async fn adopt(&mut self, group: GroupId, voters: &[u64]) -> Result<ReplicaLog, Error> {
        let scanned = self.adoption_scan(group, voters.to_vec())?.await?;
        self.finish_adoption(group, voters, scanned).await
    }

    /// The reading half of [`Self::adopt`]: a future, holding nothing of the store, that
    /// opens the one-replica log and scans it into the group's Raft log (the whole log is
    /// read: the driver runs it beside its rounds, so that the shard's other groups go on
    /// meanwhile). On an error it has closed the log.
    pub fn adoption_scan(
        &self,
        group: GroupId,
        voters: Vec<u64>,
    ) -> Result<impl std::future::Future<Output = Result<Scanned<S>, Error>> + 'static, Error> {
        if self.groups.contains_key(&group) {
            return Err(damaged(group, "adopted, but the store holds it already"));
        }
        let spec = (self.layout)(group)
            .ok_or_else(|| damaged(group, "adopted, but the broker knows no partition for it"))?;
        let (storage, cache) = (self.storage.clone(), self.cache.clone());
        Ok(async move {
            let log = open_log(&storage, &cache, &spec).await?;
            let first = log.retained_start();
            let start = if first == 0 {
                LogStart::default()
            } else {
                LogStart {
                    index: 1,
                    term: 1,
                    offset: first,
                    reset: false,
                }
            };
            let records_start = log.log_start_offset();
            match Self::scan(group, &log, &voters, start, &HardState::default(), true).await {
                Ok((rlog, g)) => Ok(Scanned {
                    log,
                    rlog,
                    group: g,
                    start,
                    first,
                    records_start,
                    name: spec.name,
                }),
                Err(e) => {
                    log.close().await?;
                    Err(e)
                }
            }
        })
    }

    /// The writing half of [`Self::adopt`]: makes the scanned log the group's (durable in
    /// the state file before this returns). Not with a log sync out.
    pub async fn finish_adoption(
        &mut self,
        group: GroupId,
        voters: &[u64],
        scanned: Scanned<S>,
    ) -> Result<ReplicaLog, Error> {
        assert!(!self.log_sync_out, "an adoption while a log sync is out");
        let Scanned {
            log,
            mut rlog,
            group: mut g,
            start,
            first,
            records_start,
            name,
        } = scanned;
        if self.groups.contains_key(&group) {
            log.close().await?;
            return Err(damaged(group, "adopted, but the store holds it already"));
        }
        let hs = rlog.hard_state().clone();
        rlog.set_conf(voters, &[]).map_err(|m| damaged(group, m))?;
        self.state.create(group, voters)?;
        if start != LogStart::default() {
            self.state.log_start(group, start);
        }
        self.state.hard_state(group, &hs);
        self.state.sync(&*self.storage).await?;
        // The Kafka log start stays where the one-replica log had it (its checkpoint; the
        // store's own view starts there too).
        g.records_start = records_start.max(start.offset);
        if records_start > start.offset {
            self.uncovered_starts.insert(group, records_start);
        }
        self.groups.insert(group, g);
        log::info!(
            "group {group}: adopted partition log {name} (offsets {first}..{}, {} entries, term {})",
            log.log_end_offset(),
            rlog.last_index() - start.index,
            hs.term
        );
        Ok(rlog)
    }

    /// The groups (with the offset) whose partition log starts past what their Raft log
    /// carries, found at open or adoption since the last call: the driver proposes a
    /// log-start entry at that offset for each (`GroupManager::propose_log_start`, on the
    /// leader) before any other replica may lead, so that the records deleted from this
    /// log are deleted from every replica's.
    pub fn take_uncovered_starts(&mut self) -> BTreeMap<GroupId, i64> {
        std::mem::take(&mut self.uncovered_starts)
    }

    /// The partition log of `group` (for reads: the broker serves consumers from it; its
    /// `high_watermark`, reads and long-polls stop at the group's high watermark, see
    /// [`Self::high_watermark`]). It is replaced when a snapshot resets the log.
    pub fn log(&self, group: GroupId) -> Option<Rc<PartitionLog<S>>> {
        self.groups.get(&group).map(|g| g.log.clone())
    }

    /// Performs `Effect::HighWatermark { group, offset, .. }`: readers of the group's
    /// partition log may now see below `offset` (monotonic; ignored for a group not here).
    /// [`Self::drive`] does it for the effects it handles.
    pub fn high_watermark(&mut self, group: GroupId, offset: i64) {
        if let Some(g) = self.groups.get(&group) {
            g.log.set_high_watermark(offset);
        }
    }

    /// Performs `Effect::LogStartOffset { group, offset, .. }` (a DeleteRecords applied
    /// here): readers of the partition log see from `offset` on at once, and the next
    /// [`Self::sync`] persists it (its checkpoint) and deletes the segments below it and
    /// below the Raft log start. A crash before that loses nothing: recovery derives the
    /// start again from the committed entry. [`Self::drive`] does it for the effects it
    /// handles.
    pub fn log_start_offset(&mut self, group: GroupId, offset: i64) {
        if let Some(g) = self.groups.get_mut(&group) {
            g.log.set_high_watermark(offset);
            g.log.raise_replica_start(offset);
            g.records_start = g.records_start.max(offset);
            self.deferred_starts.insert(group);
        }
    }

    /// Whether log-start moves wait for the next sync ([`Self::begin_sync`] or
    /// [`Self::sync`], which perform them even when nothing else was written).
    pub fn starts_pending(&self) -> bool {
        !self.deferred_starts.is_empty()
    }

    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// Bytes of the raft-state file, and how often it was rewritten since the store opened.
    pub fn state_file_len(&self) -> (u64, u64) {
        (self.state.len(), self.state.rewrites())
    }

    /// Performs `Effect::Persist { seq, writes }`: the writes in order, unsynced, except a
    /// reset (which syncs everything before it, see [`Write::LogStart`]). Call it in `seq`
    /// order, then [`Self::sync`]. `now_ms` is the wall clock (segment roll time only).
    pub async fn write(&mut self, seq: u64, writes: Vec<Write>, now_ms: i64) -> Result<(), Error> {
        assert!(
            seq > self.written_seq,
            "persist {seq} after {}",
            self.written_seq
        );
        assert!(
            !self.log_sync_out || self.quiet(&writes),
            "a write that needs the store to itself while a log sync is out"
        );
        for w in writes {
            match w {
                Write::Create { group, voters } => self.create(group, &voters).await?,
                Write::Entries { group, entries } => self.entries(group, &entries, now_ms).await?,
                Write::HardState { group, hard_state } => {
                    let g = self
                        .groups
                        .get_mut(&group)
                        .ok_or_else(|| damaged(group, "hard state of an unknown group"))?;
                    g.set_commit(hard_state.commit);
                    self.state.hard_state(group, &hard_state);
                }
                Write::LogStart {
                    group,
                    index,
                    term,
                    offset,
                    reset,
                } => {
                    let start = LogStart {
                        index,
                        term,
                        offset,
                        reset,
                    };
                    self.log_start(group, start).await?;
                }
                Write::Remove { group } => self.remove(group).await?,
                Write::Conf {
                    group,
                    voters,
                    learners,
                } => {
                    if !self.groups.contains_key(&group) {
                        return Err(damaged(group, "configuration of an unknown group"));
                    }
                    self.state.conf(group, &voters, &learners)?;
                }
            }
        }
        self.written_seq = seq;
        Ok(())
    }

    async fn create(&mut self, group: GroupId, voters: &[u64]) -> Result<(), Error> {
        if self.groups.contains_key(&group) {
            return Err(damaged(group, "created twice"));
        }
        let spec = (self.layout)(group)
            .ok_or_else(|| damaged(group, "created, but the broker knows no partition for it"))?;
        let log = open_log(&self.storage, &self.cache, &spec).await?;
        if log.log_start_offset() != 0 || log.log_end_offset() != 0 {
            // Not this store's (the state file has no such group): another partition's data,
            // a replica whose creation or removal never became durable, or a directory the
            // broker has not cleaned up. Emptying it could destroy data nobody meant to
            // give up, so it is refused: the broker discards a stale directory itself
            // (`partition_dirs::discard`) before it creates a group.
            let (start, end) = (log.log_start_offset(), log.log_end_offset());
            log.close().await?;
            return Err(damaged(
                group,
                format!(
                    "new replica over a non-empty partition log {} ({}: offsets {start}..{end})",
                    spec.name,
                    spec.dir.display()
                ),
            ));
        }
        self.state.create(group, voters)?;
        self.groups
            .insert(group, Group::new(log, LogStart::default()));
        Ok(())
    }

    async fn entries(
        &mut self,
        group: GroupId,
        entries: &[Entry],
        now_ms: i64,
    ) -> Result<(), Error> {
        let g = self
            .groups
            .get_mut(&group)
            .ok_or_else(|| damaged(group, "entries of an unknown group"))?;
        let Some(first) = entries.first().map(|e| e.index) else {
            return Ok(());
        };
        if first > g.last_index + 1
            || first <= g.commit.max(g.tail_first - 1) && first <= g.last_index
        {
            return Err(damaged(
                group,
                format!(
                    "entries from {first}: the log ends at {}, committed to {}",
                    g.last_index, g.commit
                ),
            ));
        }
        if first <= g.last_index {
            // A divergent suffix: cut the partition log at the first replaced entry (its
            // batch cache, indexes, producer state and epoch history follow; the cut is
            // durable when this returns).
            let base = g
                .base_of(first)
                .expect("an uncommitted entry's offset is known");
            g.log.truncate_to(base).await?;
            g.tail.truncate((first - g.tail_first) as usize);
            g.last_index = first - 1;
            g.end_offset = base;
            self.stats.truncations += 1;
        }
        for e in entries {
            assert_eq!(e.index, g.last_index + 1, "entries are not consecutive");
            let base = g.end_offset;
            let epoch = i32::try_from(e.term)
                .map_err(|_| damaged(group, format!("term {} is no leader epoch", e.term)))?;
            let bytes = stored_bytes(e, base, epoch).map_err(|m| damaged(group, m.0))?;
            self.appended_since_state_sync += bytes.len() as u64;
            // Checked once already: see the crate header.
            let a = g.log.append_verified(bytes, now_ms)?;
            let next = base + i64::from(entry_records(e));
            if a.base_offset != base || a.last_offset + 1 != next {
                return Err(damaged(
                    group,
                    format!(
                        "entry {} stored at {}..={}, expected {base}..{next}",
                        e.index, a.base_offset, a.last_offset
                    ),
                ));
            }
            if g.tail.is_empty() {
                g.tail_first = e.index;
            }
            g.tail.push_back(base);
            g.last_index = e.index;
            g.end_offset = next;
        }
        self.touched.insert(group);
        self.to_write.insert(group);
        Ok(())
    }

    async fn log_start(&mut self, group: GroupId, start: LogStart) -> Result<(), Error> {
        if !self.groups.contains_key(&group) {
            return Err(damaged(group, "log start of an unknown group"));
        }
        self.state.log_start(group, start);
        if !start.reset {
            // Retention or a DeleteRecords: the entries up to `index` are applied, so
            // committed; the segments below `offset` go once this record is durable (see
            // `sync`).
            let g = self.groups.get_mut(&group).expect("known group");
            g.set_commit(start.index);
            g.raft_start = g.raft_start.max(start.offset);
            self.deferred_starts.insert(group);
            return Ok(());
        }
        // A snapshot from the leader: the record must be durable before the partition log
        // is emptied (recovery repeats an unfinished reset), and so must everything written
        // before it (a durable hard state never runs ahead of the durable logs).
        self.sync_all(true).await?;
        let spec = (self.layout)(group)
            .ok_or_else(|| damaged(group, "reset, but the broker knows no partition for it"))?;
        let old = self.groups.remove(&group).expect("known group");
        old.log.close().await?;
        drop(old);
        PartitionLog::reset_dir(&*self.storage, &spec.dir, start.offset).await?;
        let log = open_log(&self.storage, &self.cache, &spec).await?;
        self.groups.insert(group, Group::new(log, start));
        self.touched.remove(&group);
        self.deferred_starts.remove(&group);
        self.stats.resets += 1;
        Ok(())
    }

    /// `Write::Remove`: the group's removal goes into the state file (durable at the next
    /// [`Self::sync`]; until then a crash brings the group back whole), and its partition
    /// log is retired and forgotten: appends and reads fail from now on, and once this
    /// returns nothing of the log acts in its directory any more, so the broker may delete
    /// the directory, but only after that sync (before it, recovery would find the group's
    /// state without its log).
    async fn remove(&mut self, group: GroupId) -> Result<(), Error> {
        let g = self
            .groups
            .remove(&group)
            .ok_or_else(|| damaged(group, "removal of an unknown group"))?;
        self.state.remove(group);
        self.touched.remove(&group);
        self.deferred_starts.remove(&group);
        g.log.retire_and_fence().await;
        Ok(())
    }

    /// Whether `writes` may be written while a [`LogSync`] is out: appends that replace
    /// nothing, hard states and retention's log starts (a record, and a move the next sync
    /// performs once the record is durable). The rest (creations, removals, a snapshot's
    /// reset, configurations, a divergent suffix's truncation) act on files or the state
    /// file's durability and wait for the sync to finish.
    pub fn quiet(&self, writes: &[Write]) -> bool {
        writes.iter().all(|w| match w {
            Write::HardState { .. } => true,
            Write::LogStart { reset: false, .. } => true,
            Write::Entries { group, entries } => match (self.groups.get(group), entries.first()) {
                (Some(g), Some(e)) => e.index > g.last_index,
                (_, None) => true,
                // An unknown group's entries are an error `write` reports.
                (None, Some(_)) => false,
            },
            _ => false,
        })
    }

    /// Whether anything written waits for a sync ([`Self::begin_sync`] or [`Self::sync`]).
    pub fn unsynced(&self) -> bool {
        self.written_seq > self.synced_seq || self.starts_pending()
    }

    /// Starts a sync of the partition logs written so far that runs beside further quiet
    /// writes ([`Self::quiet`]), with the state file's records when they are due (as
    /// [`Self::sync`] would write them) and the log-start moves waiting for them; `None`
    /// when this one must be a [`Self::sync`] instead (the state file must be rewritten) or
    /// nothing waits. Until [`Self::finish_sync`] takes its result, call no [`Self::sync`],
    /// [`Self::close`] or [`Self::adopt`], and [`Self::write`] only quiet writes.
    pub fn begin_sync(&mut self) -> Option<LogSync<S>> {
        assert!(!self.log_sync_out, "one log sync at a time");
        // A log start moves only once its record is durable: with moves waiting, whatever
        // the state file holds goes with this sync.
        let state_due = (self.state_due() || self.starts_pending()) && self.state.dirty();
        if (self.written_seq == self.synced_seq && !state_due && !self.starts_pending())
            || (state_due && self.state.rewrite_due())
        {
            return None;
        }
        let state = if state_due {
            // `None` after a failed append: the blocking sync reports it.
            let append = self.state.begin_append()?;
            // Appends from here on count towards the next state sync.
            self.appended_since_state_sync = 0;
            Some(append)
        } else {
            None
        };
        self.log_sync_out = true;
        Some(LogSync {
            storage: self.storage.clone(),
            logs: self.take_touched_logs(),
            state,
            starts: self.take_start_moves(),
            seq: self.written_seq,
        })
    }

    /// The deferred log-start moves, as they stand now (no longer deferred).
    fn take_start_moves(&mut self) -> Vec<StartMove<S>> {
        std::mem::take(&mut self.deferred_starts)
            .into_iter()
            .filter_map(|group| {
                let g = self.groups.get(&group)?;
                Some(StartMove {
                    log: g.log.clone(),
                    start: g.records_start.max(g.raft_start),
                    retain_from: g.raft_start,
                })
            })
            .collect()
    }

    /// Whether the state file's records must be synced with the next sync (not only
    /// commit indexes, or too many of those, or too much appended since).
    fn state_due(&self) -> bool {
        self.state.must_sync() || self.appended_since_state_sync >= STATE_SYNC_LOG_BYTES_MAX
    }

    /// Takes a [`LogSync`]'s result (`Ok` or not, the store can begin another); returns the
    /// `seq` it covers: call `GroupManager::persisted` with it.
    pub fn finish_sync(&mut self, synced: LogSynced) -> Result<u64, Error> {
        assert!(self.log_sync_out, "no log sync is out");
        self.log_sync_out = false;
        let state = synced.state.map(|done| self.state.finish_append(done));
        synced.logs?;
        self.stats.syncs += 1;
        match state {
            Some(done) => done?,
            None => self.stats.state_syncs_deferred += 1,
        }
        self.note_commits();
        self.synced_seq = synced.seq;
        Ok(self.synced_seq)
    }

    /// Makes every write so far durable: fdatasyncs each partition log written to, then the
    /// state file (so a durable commit index never exceeds the durable logs); then finishes
    /// deferred retention moves. Returns the highest `seq` it covers: call
    /// `GroupManager::persisted` with it. One call covers every group of the shard.
    pub async fn sync(&mut self) -> Result<u64, Error> {
        assert!(!self.log_sync_out, "a sync while a log sync is out");
        self.sync_all(false).await?;
        for m in self.take_start_moves() {
            m.perform().await?;
        }
        self.synced_seq = self.written_seq;
        Ok(self.synced_seq)
    }

    /// Syncs the touched logs, then the state file if it must be (`StateFile::must_sync`)
    /// or `all`.
    async fn sync_all(&mut self, all: bool) -> Result<(), Error> {
        // The state file waits for every log.
        flush_logs(&self.take_touched_logs()).await?;
        if all || self.state_due() {
            self.state.sync(&*self.storage).await?;
            self.appended_since_state_sync = 0;
        } else {
            self.stats.state_syncs_deferred += 1;
        }
        self.stats.syncs += 1;
        self.note_commits();
        Ok(())
    }

    /// The logs appended to since the last call, for [`write_ahead`] (no longer marked
    /// for it; still for the next sync).
    pub fn take_logs_to_write(&mut self) -> Vec<Rc<PartitionLog<S>>> {
        let groups = std::mem::take(&mut self.to_write);
        self.logs_of(groups)
    }

    /// The logs appended to since the last sync began (no longer marked).
    fn take_touched_logs(&mut self) -> Vec<Rc<PartitionLog<S>>> {
        let groups = std::mem::take(&mut self.touched);
        self.logs_of(groups)
    }

    /// The partition logs of those of `groups` still here.
    fn logs_of(&self, groups: BTreeSet<GroupId>) -> Vec<Rc<PartitionLog<S>>> {
        groups
            .into_iter()
            .filter_map(|g| self.groups.get(&g).map(|g| g.log.clone()))
            .collect()
    }

    /// Tells each log the commit index written since the last sync, as its truncation
    /// floor (an entry committed on a quorum is never replaced, synced here or not).
    fn note_commits(&mut self) {
        for g in self.groups.values_mut() {
            if g.commit > g.noted_commit && g.commit <= g.last_index {
                let offset = g.base_of(g.commit + 1).expect("offset after the commit");
                g.log.note_committed(offset);
                g.noted_commit = g.commit;
            }
        }
    }

    /// Performs `Effect::Fetch`: the batches of `group`'s partition log from the one at
    /// `offset`, about `max_bytes` of them (at least one; capped at [`FETCH_BYTES_MAX`]),
    /// Raft's own entries decoded from their control batches. `None` when the read fails
    /// (raft-rs asks again later) or the group is not here.
    pub async fn fetch(
        &mut self,
        group: GroupId,
        offset: i64,
        max_bytes: u64,
    ) -> Option<Vec<FetchedBatch>> {
        let log = self.groups.get(&group)?.log.clone();
        self.stats.fetches += 1;
        let max = max_bytes.min(FETCH_BYTES_MAX) as usize;
        // Up to the durable end: followers need the uncommitted entries too.
        let read = log.read_replica(offset, max).await;
        let batches = read.ok().and_then(|(bytes, _)| batches_of(bytes).ok());
        if batches.is_none() {
            self.stats.fetch_errors += 1;
        }
        batches
    }

    /// Performs the `Persist` and `Fetch` effects among `effects` and feeds their results
    /// back to `mgr` until none is left (every `Persist` written in order, then one sync for
    /// all of them; fetches after it), applies each `HighWatermark` to its partition log
    /// ([`Self::high_watermark`]), and returns every effect but `Persist` and `Fetch` in
    /// order (`HighWatermark` included, for whoever waits on it).
    pub async fn drive(
        &mut self,
        mgr: &mut GroupManager,
        mut effects: Vec<Effect>,
        now_ms: i64,
    ) -> Result<Vec<Effect>, Error> {
        let mut out = Vec::new();
        loop {
            let mut persisted = None;
            let mut fetches = Vec::new();
            for e in effects.drain(..) {
                match e {
                    Effect::Persist { seq, writes } => {
                        self.write(seq, writes, now_ms).await?;
                        persisted = Some(seq);
                    }
                    Effect::Fetch {
                        group,
                        id,
                        offset,
                        max_bytes,
                        ..
                    } => fetches.push((group, id, offset, max_bytes)),
                    Effect::HighWatermark { group, offset, .. } => {
                        self.high_watermark(group, offset);
                        out.push(e);
                    }
                    Effect::LogStartOffset { group, offset, .. } => {
                        self.log_start_offset(group, offset);
                        out.push(e);
                    }
                    other => out.push(other),
                }
            }
            if persisted.is_none() && fetches.is_empty() && !self.starts_pending() {
                return Ok(out);
            }
            if persisted.is_some() || self.starts_pending() {
                let seq = self.sync().await?;
                effects.extend(mgr.persisted(seq));
            }
            for (group, id, offset, max_bytes) in fetches {
                let batches = self.fetch(group, offset, max_bytes).await;
                effects.extend(mgr.entries_fetched(id, batches));
            }
        }
    }

    /// Closes every partition log (flushed and synced) and syncs the state file.
    pub async fn close(&mut self) -> Result<(), Error> {
        assert!(!self.log_sync_out, "a close while a log sync is out");
        self.sync_all(true).await?;
        // The logs' closes (a truncate and an fdatasync each) overlap, a bounded number at
        // a time: one after another, 3,000 idle logs took ~10 s, the whole shutdown budget.
        let logs: Vec<Rc<PartitionLog<S>>> = self.groups.values().map(|g| g.log.clone()).collect();
        for chunk in logs.chunks(FLUSH_PARALLEL_MAX) {
            join_all(chunk.iter().map(|l| l.close()).collect()).await?;
        }
        Ok(())
    }
}
