//! The per-shard persistence driver of the partition Raft groups (issue 12, "the Kafka log
//! is the Raft log"): [`ReplicaStore`] performs `sluice_raft::GroupManager`'s
//! `Effect::Persist` and `Effect::Fetch` against the real partition logs
//! (`sluice_storage::PartitionLog`) and a small per-shard raft-state file, and rebuilds
//! every group after a restart. The broker drives it on each shard (`replication.rs`).
//!
//! # Layout: a Kafka batch is written once
//!
//! - Raft `Entries` of a group go into that partition's log with `append_verified`, one
//!   batch per entry, so Raft index = log-start index + ordinal of the batch. **Every Kafka
//!   batch was CRC-checked once before it reached Raft**, so the store does not check it
//!   again: a leader's proposal by the produce path (`Header::verify`), a follower's entry by
//!   the rpc decoder, which checks each batch carried beside a `Raft` frame's envelope
//!   (`sluice_rpc::envelope`; partition entries always travel that way, and shard-to-shard
//!   hops within a node pass on what shard 0 checked). The leader stamps offset and epoch
//!   before proposing, so replicas store the bytes they are given, sharing their memory.
//!   A Kafka batch (a normal entry with a record count) is stored as the client's bytes
//!   with baseOffset and partitionLeaderEpoch (= the entry's Raft term) stamped in; neither
//!   is covered by the batch CRC, and every replica stamps the same values (restamping a
//!   copy if what arrived says otherwise), so all replicas hold identical bytes at
//!   identical offsets. Raft's own entries (the election no-op, configuration
//!   changes) are Kafka control batches of one record that consumers skip ([`control`]:
//!   KRaft's LEADER_CHANGE = 2 for normal entries, KRAFT_VOTERS = 6 for configuration
//!   changes, the record value holding the entry type and data so reads rebuild it).
//! - An `Entries` write starting at or below the last written index replaces a divergent
//!   suffix: the log is `truncate_to` the base offset of the first replaced entry (durable
//!   when it returns; batch cache, indexes, producer state and the leader-epoch checkpoint
//!   follow). The driver keeps the base offsets of the entries above the commit index it
//!   has seen (the only ones Raft may replace), so the lookup needs no read and the map is
//!   bounded by the uncommitted entries.
//! - The raft-state file ([`state`]) holds per group its voters (and learners, once a
//!   membership change applied: `Write::Conf`), hard state and log start,
//!   latest record wins (a removal drops the group), rewritten when it outgrows a few times
//!   its live size. Only a torn last record is cut at start; a bad record with valid ones
//!   after it, or a checksummed record that does not apply, is [`Error::Damaged`].
//!
//! # Driving it (the shard's side)
//!
//! At start, [`ReplicaStore::open`]`(storage, raft_dir, batch_cache, layout, raft_config)`
//! gives the store and the recovered `GroupManager`; `layout` maps a group to its
//! partition directory, log config and name. Then hand every manager call's effects to
//! [`ReplicaStore::drive`] (or, to batch several calls into one sync, perform
//! `Persist` with [`ReplicaStore::write`] in `seq` order, then [`ReplicaStore::sync`] and
//! `persisted(seq)`, `Fetch` with [`ReplicaStore::fetch`] and `entries_fetched`, and
//! `HighWatermark` with [`ReplicaStore::high_watermark`]; `drive` does all three and hands
//! `HighWatermark` on too). [`ReplicaStore::close`] at shutdown.
//!
//! A driver that keeps writing while the logs sync instead begins the sync with
//! [`ReplicaStore::begin_sync`], runs the [`LogSync`] it gets apart from the store (its own
//! task), writes what is [`ReplicaStore::quiet`] meanwhile (appends that replace nothing,
//! hard states) and hands the result to [`ReplicaStore::finish_sync`] for the `seq` to
//! report. A `LogSync` carries the state file's records when they are due, written after
//! the logs, and then moves the log starts whose records that made durable (retention's,
//! which are quiet writes too). Anything else waits for it, and when `begin_sync` declines
//! (the state file must be rewritten) it is a [`ReplicaStore::sync`].
//! The invariant is the same: `persisted(seq)` only after every write up to `seq` is
//! durable, and a durable commit index never exceeds the durable logs.
//!
//! Consumers read [`ReplicaStore::log`]`(group)`. Every log the store opens is marked
//! replicated (`PartitionLog::set_replicated`): its `high_watermark`, reads, long-polls,
//! offset lookups and DeleteRecords stop at min(its durable offset, the group's Raft high
//! watermark) as `HighWatermark` effects set it, and after a restart it resumes at the
//! recovered commit (never at the durable end, which may hold uncommitted entries). Only
//! [`ReplicaStore::fetch`] and the recovery scan read past it (`read_replica`, up to the
//! durable end: followers need the uncommitted entries too).
//!
//! A replicated partition's retention goes through Raft: the broker asks the log where
//! retention would start it (`PartitionLog::retention_offset`) and hands that to
//! `GroupManager::compact`; it never calls `enforce_retention` or `delete_records_before`
//! on such a log (see `LogStart { reset: false }` below). So does DeleteRecords
//! (`GroupManager::propose_log_start`): its `Effect::LogStartOffset` raises the log's start
//! for readers at once ([`ReplicaStore::log_start_offset`]) and the next sync persists it
//! (the log start checkpoint, `PartitionLog::move_replica_start`). The partition log's
//! start offset (what consumers see) may then lie past the Raft log start, which stays at
//! an entry boundary: the segments holding the Raft log from its start on are kept
//! (`PartitionLog::retained_start` is at or below the Raft log start), so followers can
//! still be sent those entries.
//!
//! A one-replica partition log becomes a group with [`ReplicaStore::adopt`] (a
//! reassignment gives the partition replicas): every batch in it becomes a committed entry,
//! and its partitionLeaderEpoch 0 (what a one-replica log stamps) is read as term 1
//! (`control::fetched`: raft-rs must never see an entry of term 0, and Raft writes none);
//! and every replica stores such a batch with its epoch 0 kept (`control::stored_bytes`),
//! so all replicas hold the same bytes and the same leader-epoch history (a consumer that
//! read epoch 0 on the old replica validates its position on a new one as on the old). The
//! Raft log starts at the log's first retained batch (after a
//! stand-in entry 1 of term 1 if that is not offset 0, so a new replica is reset to it
//! first); the hard state's term is the newest entry's, so the group's first election
//! starts a term past every stored epoch. The group exists once its state records are
//! synced, before `adopt` returns; the partition log is not written. A log start the
//! one-replica log had from a DeleteRecords (its checkpoint) is in no entry, so a replica
//! that joins would not learn it: the store reports such a start, at adoption and at open
//! while no committed log-start entry carries it ([`ReplicaStore::take_uncovered_starts`]),
//! and the driver proposes one on the leader before the group's membership changes.
//!
//! `Write::Create` over a partition directory that holds a non-empty log is refused
//! ([`Error::Damaged`] naming the group and directory): the store never empties data it does
//! not know. The broker clears a stale directory (`partition_dirs::clear_log_files`) before
//! it creates a group the store does not know. `Write::Remove` (`GroupManager::remove_group`: the partition was deleted
//! or moved off this node) records the removal in the state file, durable at the next sync,
//! and retires the group's partition log (appends and reads fail, nothing acts in its
//! directory once the write returns); the broker deletes the directory after that sync
//! (before it, a crash brings the group back with its log). Recovery skips removed
//! groups; a later `Create` of the group starts it afresh.
//!
//! # Durability order (group commit)
//!
//! `Persist { seq }` writes go to memory ([`ReplicaStore::write`]); [`ReplicaStore::sync`]
//! then fdatasyncs every partition log written to ([`FLUSH_PARALLEL_MAX`] at a time, their
//! IO overlapping), then the state file, and only then may
//! the caller report `GroupManager::persisted(seq)`. One sync per shard per round covers
//! every group. Because the logs are synced before the state file, a durable hard state's
//! commit index never exceeds the durable log. The state file is written and synced only
//! when it holds more than commit-index changes (a term, a vote, a membership, a log start,
//! a creation or removal: `StateFile::must_sync`), or when the deferred commits pass
//! `state::DEFERRED_BYTES_MAX` of records or [`store::STATE_SYNC_LOG_BYTES_MAX`] of log
//! appends, or at close: in steady replication most rounds change only commit indexes,
//! and skipping their write and fdatasync halves a round's serial IO. Raft does not need
//! the commit index durable: a restart may recover a lower one (never above the durable
//! log) and learns the rest from the leader, and a new leader serves nothing before an
//! entry of its own term commits. Two writes order themselves differently:
//! - `LogStart { reset: true }` (a leader's snapshot) syncs everything written before it
//!   and its own record first, then empties the partition log
//!   (`PartitionLog::reset_dir`, crash-safe); recovery repeats a reset that did not
//!   finish (the partition log still keeps segments below the recorded offset:
//!   `retained_start`).
//! - `LogStart { reset: false }` (retention or a DeleteRecords moved the log start through
//!   `GroupManager::compact`) removes segments (`move_replica_start`) only after the record
//!   is durable; recovery finishes a move that did not. The broker's retention for a
//!   replicated partition must therefore go through `compact` and this store, never delete
//!   segments itself: a partition log that no longer keeps the batches from the Raft log
//!   start on (`retained_start` past it) is a damaged store. Its Kafka log start offset may
//!   be past the Raft log start (a DeleteRecords inside the first entry kept).
//!
//! # Recovery
//!
//! [`ReplicaStore::open`] reads the state file, then opens and scans each group's partition
//! log (`RECOVER_PARALLEL_MAX` groups at a time, their small reads overlapping) from the
//! Raft log start: batch headers give offset, record count, partitionLeaderEpoch
//! (= term) and control or not; committed entries enter the `ReplicaLog` as offsets only
//! (marks, [`sluice_raft::ReplicaLog::push_applied`]), the uncommitted tail with its bytes.
//! Nothing is clamped: a commit index beyond the recovered log, a batch out of place or of
//! a term going backwards, a partition log starting past the Raft log start is an error
//! naming the group. One state is legitimate and resolved: entries of a term newer than the
//! durable hard state (a follower learnt the term from the leader's first append and
//! crashed between syncing the log and the state file); it never acknowledged them nor
//! voted in that term, so it resumes in that term with no vote. The partition log's high
//! watermark is set to the offset after the recovered commit, and its start offset to the
//! largest of the Raft log start and the offsets of the committed log-start entries
//! (DeleteRecords) the scan met: a crash may have come after the hard state covering such
//! an entry was durable but before the checkpoint was written, and raft-rs does not apply
//! an entry at or below the recovered commit again. Then `GroupManager::recover` builds the
//! manager.
//!
//! Cost: the scan reads every partition log whole (`read_replica`, 1 MiB at a time), so
//! start time grows with the data on the shard. To avoid it later, checkpoint the mark map (index,
//! offset, term every `MARK_EVERY` entries and at term changes, up to the durable commit)
//! beside the state file or per partition, and scan only the batches after the last
//! checkpointed mark; the partition log's own index already finds that offset.
//!
//! # Failures
//!
//! An IO error fails the partition log (as a failed flush does today) and comes back as
//! [`Error`]: the shard must stop its groups and restart, which recovers from what is
//! durable (Kafka halts on a failed log directory too). A `Fetch` read error answers
//! `None` (raft-rs asks again).
//!
//! # Tests
//!
//! `tests/cluster.rs`: three managers with their own stores on real files, wired by an
//! in-memory envelope queue, on a glommio executor, over the storage crate's fault model
//! (power loss keeps only synced data and directory-synced names): identical bytes at
//! identical offsets with the term as leader epoch and the no-op as a LEADER_CHANGE
//! control batch; restarts; a divergent suffix truncated; a lagging follower caught up from
//! the partition log; a snapshot resetting a follower's log; power losses at random points
//! (24 seeds) keeping every acknowledged batch; a failure at every fdatasync of a term
//! change; a commit beyond the log refused; readers held at the commit while the leader's
//! log holds more, also after a restart; a create over a non-empty directory refused; a
//! group removed (undone by a power loss before the sync, gone after a restart once synced,
//! created again empty and caught up). `state.rs`: a torn last record cut, damage before
//! valid records refused, removal and re-creation. `tests/dma.rs` runs single-voter groups on a
//! shard's glommio DMA files (the broker's IO: page-aligned direct writes), recovering
//! after a drop without close, and adopts a one-replica log as a group.
//!
//! # Not yet
//!
//! Recovered partition-log data is trusted as durable, as `PartitionLog::open` does on one
//! node (with direct IO a killed process's writes are on the device; a device write cache
//! lost at a later power loss is not covered: syncing every log at start would be). A
//! reset replaces the group's `PartitionLog`, so holders of the old one (readers) must ask
//! [`ReplicaStore::log`] again (the broker swaps its partition's log when the driver
//! reports it). Whole-log scans at start (see Recovery). A power loss that persisted a later
//! page of a multi-page state-file write but not an earlier one is refused as damage (see
//! `state::replay`). A partition directory left by a removal whose directory delete did not
//! happen (a crash after the sync) is cleared by the broker if the partition comes back.

pub mod control;
pub mod sequences;
pub mod state;
pub mod store;

pub use store::{
    write_ahead, Layout, LogSync, LogSynced, PartitionSpec, ReplicaStore, Scanned, StoreStats,
    FETCH_BYTES_MAX, FLUSH_PARALLEL_MAX,
};

/// What went wrong in the store.
#[derive(Debug)]
pub enum Error {
    /// IO on the state file.
    Io(String),
    /// A partition log operation failed.
    Storage(sluice_storage::StorageError),
    /// The store contradicts itself (names the group): not what this driver writes.
    Damaged(String),
    /// The recovered groups were refused by the group manager.
    Raft(sluice_raft::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "raft state: {e}"),
            Error::Storage(e) => write!(f, "partition log: {e}"),
            Error::Damaged(e) => write!(f, "damaged replica store: {e}"),
            Error::Raft(e) => write!(f, "recovering groups: {e:?}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<sluice_storage::StorageError> for Error {
    fn from(e: sluice_storage::StorageError) -> Self {
        Error::Storage(e)
    }
}
