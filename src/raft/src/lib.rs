//! Sans-IO partition replication for sluice: a per-shard [`GroupManager`] that owns one Raft
//! group per partition replica set, on raft-rs 0.7's `RawNode` (pre-vote and check-quorum on),
//! with the Kafka log as the Raft log. No sockets, no threads, no clock, no entropy: inputs
//! come in as calls, outputs go out as [`Effect`]s. The controller group runs on it
//! (`sluice-cluster`), and so does every replicated partition (the broker's
//! `replication.rs` drives one manager per shard; `sluice-replica` performs its
//! `Persist`/`Fetch` effects on the real partition logs).
//!
//! # Driving it (the shard's side)
//!
//! - Create each local replica with [`GroupManager::create_group`]`(group, voters)` (the
//!   same voters on every replica), or after a restart build the manager with
//!   [`GroupManager::recover`] from what the shard's disk holds, synced first. Remove one
//!   (its partition deleted or moved off this node) with [`GroupManager::remove_group`]:
//!   its proposals fail, and its `Write::Remove` must be synced before the driver deletes
//!   the partition log.
//! - Call [`GroupManager::tick`]`(now_ms)` regularly (every [`manager::TICK_MS`] or more
//!   often), [`GroupManager::set_node_alive`] whenever the transport's view of a node
//!   changes, [`GroupManager::step`] with every [`Envelope`] received from another node,
//!   [`GroupManager::propose`] with a Kafka batch, and [`GroupManager::persisted`]`(seq)` when
//!   a sync has covered the writes of every `Persist` up to `seq`.
//! - Perform the effects each call returns: `Send` (one envelope per destination node per
//!   call: every group's messages to that node, heartbeats in compact form); `Persist { seq,
//!   writes }` (append to the shard's Raft state in `seq` order, unsynced; then sync, once
//!   for all groups, and report it); `Fetch { id, offset, max_bytes }` (read Kafka batches
//!   from the group's partition log at `offset` and hand them to
//!   [`GroupManager::entries_fetched`]`(id, ..)`, `None` if the read failed);
//!   `Proposed`/`Committed`/`Failed` (the produce request waiting on the token);
//!   `HighWatermark` (what readers may see); `Role` (leadership, for metadata and routing).
//!
//! # The Kafka log is the Raft log
//!
//! An entry is a Kafka record batch (opaque bytes here, with its record count) or one of
//! Raft's own entries (the leader's election no-op, configuration changes), which occupy one
//! Kafka offset each: the driver (`sluice-replica`) writes them into the partition log as
//! control batches of one record, which consumers skip. Every replica derives the same dense
//! offsets from its log prefix ([`ReplicaLog`]: Raft index → base offset, record count,
//! term); the leader reports the offsets and term (the batch's `partitionLeaderEpoch`) of a
//! proposal in `Effect::Proposed`; every replica's driver stamps both into the batch bytes as it
//! writes them, so all replicas store identical bytes.
//!
//! Memory is bounded: a group keeps in memory only its entries not yet applied (committed and
//! synced here; raft-rs reads those synchronously) plus a recent tail, within one per-shard
//! budget of entry bytes ([`manager::ENTRY_CACHE_BYTES_MAX`]; applied entries are evicted
//! oldest first, groups in turn). Below the window the index → offset map is compact
//! ([`log::Mark`]s at term changes and every [`log::MARK_EVERY`]
//! entries), which gives every entry's term at once and any entry's offset after a short
//! read. When a leader must send a follower entries no longer in memory, its `Storage`
//! answers raft-rs `LogTemporarilyUnavailable` (raft-rs's asynchronous fetch), the manager
//! asks the driver for the batches from the nearest mark (`Effect::Fetch`, at most
//! [`manager::FETCHES_PER_GROUP_MAX`] per group, requests for the same entries joined),
//! rebuilds the entries (one batch each; Raft's own from their control batches, which the
//! driver decodes, see [`FetchedBatch`]), checks them against the map, and hands them to raft-rs (`RawNode::on_entries_fetched`).
//! A failed or mismatching read is dropped; raft-rs asks again on the follower's next
//! response.
//!
//! # Persisting
//!
//! [`wal`] is the on-disk format of the `Persist` writes (checksummed records in one
//! append-only file per shard, sans-IO encode and replay: replay stops at a torn tail and
//! refuses a damaged file). The simulator's disk and the real drivers use the same code.
//!
//! # Quiescing idle groups
//!
//! A leader whose group has been settled for [`manager::QUIESCE_TICKS`] (its election no-op
//! and everything after it committed, applied and synced, every voter matched to its last
//! index, nothing proposed or in flight) sends one last round of heartbeats carrying a
//! quiesce notice and stops ticking; a follower that gets the notice from its leader in its
//! term, and holds nothing uncommitted or unapplied itself, stops ticking too. A quiet
//! group sends nothing and costs nothing per tick (ticks walk only the awake groups). It
//! wakes on a proposal, on any message but a heartbeat (an append, a vote, a pre-vote), on
//! a heartbeat that changes its state, and, for a follower, when the owner reports its
//! leader's node dead ([`GroupManager::set_node_alive`], from the transport's node-level
//! liveness, as TiKV's hibernate regions and Redpanda do): check-quorum cannot notice a
//! dead leader when nobody ticks, so this report is what restarts elections. The report
//! also ends the dead leader's lease on every follower told (quiesced or not), so the first
//! of them to time out, within one election timeout, is elected instead of waiting one to
//! two timeouts from the last heartbeat (the kill -9 failover time). Safety never
//! depends on quiescing or on the reports: a woken follower's pre-vote is refused while
//! the others are in their leader's lease, and wakes the leader (a message), whose
//! heartbeats settle it again; a wrong "dead" report costs at most an election. A notice
//! that is lost leaves the follower ticking: it times out and its pre-vote wakes the group.
//!
//! # Membership changes (reassignment)
//!
//! [`GroupManager::reconfigure`]`(group, target)` moves a group towards a replica set one
//! step per call, on its ready leader: a target node not in the group joins as a learner
//! (its replica is created with [`GroupManager::create_learner`] from the original voters,
//! empty); a learner whose matched index reached the leader's commit index is promoted; a
//! learner outside the target leaves; once every target node is a voter holding everything
//! committed, the voters outside it leave one at a time, a leaving leader last, after Raft's
//! leadership transfer to a caught-up target voter. It answers `Done` when the voters are
//! the target, there are no learners and every voter holds everything committed.
//!
//! The changes are raft-rs `ConfChangeV2`s of one change each (simple, not joint
//! consensus): adding or removing one voter at a time keeps every two consecutive
//! majorities overlapping, raft-rs allows one change in flight (`pending_conf_index`, set
//! at election too, which covers the single-server-change bug Raft's author described),
//! and a learner needs no quorum change at all. Joint consensus would let a whole set be
//! swapped in one step but needs a second entry to leave the joint state and a driver that
//! recovers a half-done transition; reassignments move one or two replicas, where the
//! single steps cost the same number of entries. A single-step change also re-applies as a
//! no-op, which the persistence below relies on.
//!
//! Changes apply as they commit (raft-rs hands out committed entries once synced here) and
//! are persisted as [`Write::Conf`] before the hard state whose commit covers them: a
//! recovered configuration is never older than the recovered commit (raft-rs restarts with
//! `applied = commit` and would not apply them again); when it is newer (the hard state
//! write was lost), the change comes back as committed and re-applies as a no-op. A leader's
//! log-start snapshot carries its configuration, which the follower adopts and persists.
//! A replica removed from its group and created again (a node leaving and rejoining) starts
//! in the last term this manager knew for it, as having voted for itself, so it cannot vote
//! twice in a term it forgot (kept for [`manager::TOMBSTONES_MAX`] removed groups, in memory:
//! a restart between removal and re-creation within one term is not covered).
//!
//! # Log start (retention) and snapshots
//!
//! When Kafka retention moves a replica's partition-log start, the driver calls
//! [`GroupManager::compact`]`(group, offset)`: the Raft log then starts at the latest entry
//! at or below `offset` that is applied here and whose offsets are known without a read (a
//! mark or in memory, so up to [`log::MARK_EVERY`] entries early), persisted as
//! `Write::LogStart { reset: false }`; the driver keeps the batches from the returned offset
//! on. A follower that needs an entry before the leader's first index gets a raft-rs
//! snapshot that carries no state: its metadata (index, term, configuration) and the Kafka
//! offset the log restarts at. The follower drops its whole log and restarts it empty at
//! that offset (`Write::LogStart { reset: true }`, Kafka's follower on OFFSET_OUT_OF_RANGE),
//! its high watermark moves to that index at once (nothing below it is left to read), and
//! its own pending proposals fail as `Indeterminate`. A sans-IO transport cannot report
//! delivery, so the leader counts a snapshot delivered when it sends it (it is one message)
//! and probes from after it; a lost one is sent again after the follower's rejection.
//!
//! A group whose driver keeps state outside the log (the controller's metadata image,
//! `sluice-cluster`) compacts with [`GroupManager::compact_to_snapshot`]`(group, index,
//! payload)` instead: the log starts after the applied entry `index`, and `payload` (the
//! state as of it) travels in every snapshot after the 8-byte offset. The follower's
//! manager restarts its log as above and keeps the payload in it
//! ([`ReplicaLog::snapshot_payload`]), where its driver reads it when its high watermark
//! passes entries it never applied (and persists it before the restart's write: the
//! payload is not in this crate's WAL format). Only the group named in
//! `Config::payload_group` (the controller's) takes snapshots with a payload: for any other
//! group a snapshot is exactly its 8-byte offset, and one with more is dropped on receipt
//! (a peer cannot make a partition replica keep and pass on a payload).
//!
//! DeleteRecords moves the log start through the log itself:
//! [`GroupManager::propose_log_start`]`(group, token, offset)` on the ready leader appends an
//! entry of Raft's own ([`log::log_start_data`]: one offset, a control batch in the partition
//! log) naming a Kafka offset within the leader's high watermark. Every replica, as it
//! applies the entry, reports [`Effect::LogStartOffset`] (the partition log's start offset
//! for consumers, which may lie inside a batch) and compacts its Raft log as `compact` does
//! to the latest entry at or below that offset. The entry asking for the most stays in the
//! Raft log (every such compaction stops below the offset it asks for, which lies below the
//! entry) until retention moves the start past it, and then the start is past its offset
//! anyway: so the driver can always derive a replica's log start after a restart from its
//! Raft log start and the committed log-start entries it still holds. A leader
//! reports [`GroupStatus::serving`] only once its high watermark covers an entry of its own
//! term, i.e. every entry earlier leaders committed (their log-start entries included) is
//! applied here: reads must wait for it, or a new leader could serve records below an
//! acknowledged DeleteRecords.
//!
//! # Invariants (asserted here, checked by the simulator)
//!
//! - At most one leader per group and term (Raft election safety; pre-vote keeps a
//!   partitioned replica from inflating terms, check-quorum makes an isolated leader step
//!   down).
//! - High watermark = commit index over *synced* entries: a leader counts its own sync like a
//!   follower's (raft-rs is told a write is durable only by `persisted`), a follower
//!   acknowledges appends and votes only after the write (and hard state) behind them is
//!   synced, and a replica publishes entries only up to what it has synced itself. It only
//!   moves up within a run of the manager; after a restart it resumes from the recovered
//!   commit index, which is committed and within the recovered log.
//! - A proposal is acknowledged (`Committed`) only when the entry at its index *with its
//!   term* is committed; one replaced by another leader's entry fails (`Superseded`).
//! - A new leader accepts proposals only once an entry of its own term (the election no-op)
//!   has committed (`GroupStatus::ready`), so it never acknowledges on a stale log.
//! - Committed entries are never lost or changed, and every replica's committed prefix is
//!   the same entries at the same Kafka offsets.
//! - Only applied entries leave memory, and they are in the partition log (written before
//!   they were synced, synced before they were applied); an entry read back must match the
//!   term and offsets the map has (the simulator fails on any mismatch).
//! - A quiesced replica holds nothing uncommitted or unapplied (checked by the simulator).
//! - Determinism: the same inputs give the same outputs. Maps are ordered (`BTreeMap`;
//!   raft-rs uses a fixed-hasher map), and the only randomness, the election timeout, comes
//!   from [`Rng`] seeded by `Config::seed`. raft-rs 0.7 draws that timeout from `thread_rng`
//!   with no hook, but exposes `set_randomized_election_timeout` and `election_elapsed` and
//!   reads the timeout only in `tick`: the manager replaces the drawn value before any tick
//!   that starts from `election_elapsed == 0`, which follows every draw. So no patched copy
//!   of raft-rs is needed.
//!
//! # Building
//!
//! raft-rs is used with `protobuf-codec` and without its default logger (a discarding slog
//! logger is passed in). Its `raft-proto` build script generates code with `protoc`: the one
//! on `PATH` if it is 3.1 or newer, else the binary shipped inside the `protobuf-build`
//! crate, so a fresh machine needs nothing installed (`prost-codec` would need `protoc`).
//!
//! # Simulation
//!
//! `src/sim/` (tests only) runs 3- and 5-node clusters of managers under a seeded
//! discrete-event simulator: virtual time, a network that drops, delays, reorders, duplicates
//! and partitions (isolation, splits, one-way cuts, bridges), disks that lose unsynced writes
//! and tear or garble their tail on a crash (alone or a majority at once), restarts, a
//! client proposing batches, partition-log reads that take 1–30 ms and sometimes fail
//! (a third of the seeds keep no applied entry in memory, a third a few hundred bytes), and
//! retention moving a replica's log start (also on every replica but one that is down, which
//! must come back through a snapshot), membership changes (a quarter of the seeds: groups
//! of 3 replicas on 5 nodes moved to random replica sets, replaced and cancelled mid-way,
//! with learners created, promoted and removed, leaving replicas deleted once their group
//! is done; after healing every group must have reached its last target), client pauses long enough for groups to quiesce
//! mid-faults, and node-liveness reports: true ones after a detection delay when a node
//! crashes or comes back, and wrong ones (a live node reported dead, a dead one alive). Committed entries no longer in memory are checked
//! against the node's partition log; entries before a replica's log start are not checked
//! (retention removed them, as in Kafka), everything from it on is. After every event it checks the invariants above; after every
//! fault and at the end, that every acknowledged batch is at its offsets in the synced logs of
//! a quorum; after healing, that every group converges. A failing seed is printed with the
//! command that replays it:
//!
//! ```text
//! cargo test -p sluice-raft     # 200 seeds, plus the unit tests
//! SLUICE_SIM_SEEDS=3000 SLUICE_SIM_FIRST_SEED=200 cargo test -p sluice-raft simulate_seeds -- --nocapture
//! SLUICE_SIM_SEED=42 SLUICE_SIM_TRACE=1 cargo test -p sluice-raft simulate_seeds -- --nocapture
//! ```
//!
//! Deliberate bugs (`sim::Bug`: acknowledging on append, an fsync that lies) must make the
//! checkers fail, and tests assert that they do. `tests/footprint.rs` holds idle replicas to
//! issue 12's memory budget (64 KiB each) and times ticks of awake and quiesced groups
//! (`perf/results/2026-12-01-raft-quiesce.md`).
//!
//! # Not yet
//!
//! The simulator's recovery builds each group's log with every entry in memory before
//! evicting; the real driver (`sluice-replica`) builds the mark map from the partition log
//! ([`ReplicaLog::restored`], [`ReplicaLog::push_applied`]).
//! The mark map still grows with the log between log-start moves (0.125 B per entry).
//! Eviction walks the shard's groups while over budget, so a shard whose budget is spent on
//! unapplied entries pays a pass over its groups per call. A quiesced leader does not
//! notice a dead follower (nothing needs it to: it only matters once it wakes). Read
//! leases. A learner created from a guessed configuration counts the changes raft-rs
//! refuses while it replays older ones on top of it (`conf_change_errors`; none seen in the
//! simulator).

pub mod effect;
pub mod log;
pub mod manager;
pub mod rng;
#[cfg(test)]
mod sim;
pub mod wal;

pub use effect::{
    Effect, Envelope, GroupId, Heartbeat, NodeId, ProposalToken, ProposeError, Role, Write,
};
pub use log::{
    batch_records, entry_records, log_start_data, log_start_of, log_start_of_data, FetchedBatch,
    Mark, OffsetSpan, ReplicaLog, MARK_EVERY,
};
pub use manager::{Batch, Config, Error, GroupManager, GroupStatus, Membership, MembershipStep};
pub use rng::Rng;
