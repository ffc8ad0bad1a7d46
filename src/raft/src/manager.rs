//! The group manager: one per shard, it owns every Raft group (partition replica) on the
//! shard, drives raft-rs's `RawNode`s and turns their `Ready`s into effects: one envelope per
//! destination node per call, one persist batch per call, commits and acknowledgements.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, EntryType, HardState,
    Message, MessageType,
};
use raft::{GetEntriesContext, RawNode, SnapshotStatus, StateRole};

use crate::effect::{
    Effect, Envelope, GroupId, Heartbeat, NodeId, ProposalToken, ProposeError, Role, Write,
};
use crate::log::{records_context, snapshot_offset, FetchedBatch, OffsetSpan, ReplicaLog};
use crate::rng::Rng;

/// Raft tick length. With the tick counts below: heartbeats every 150 ms and elections after
/// 1.5–3 s without a leader, Redpanda's defaults (`raft_heartbeat_interval_ms`,
/// `election_timeout_ms`): ten missed heartbeats before a follower campaigns, so a short
/// stall (a slow fsync, a busy shard) does not cost an election. A leader whose node is
/// reported dead is replaced faster than that (`set_node_alive` ends its lease), which is
/// what brings a kill -9 failover to about a second at the median (`perf/controller-failover.py`).
pub const TICK_MS: u64 = 50;
pub const HEARTBEAT_TICKS: usize = 3;
pub const ELECTION_TICKS: usize = 30;
/// Most bytes of entries in one append message (raft-rs sends at least one entry anyway).
pub const MAX_SIZE_PER_MSG: u64 = 1 << 20;
/// Most append messages in flight to one follower before the leader waits for acks.
pub const MAX_INFLIGHT_MSGS: usize = 256;
/// Most bytes of entries a leader holds uncommitted before it refuses proposals (raft-rs's
/// back-pressure; the producer sees a retriable error).
pub const MAX_UNCOMMITTED_BYTES: u64 = 64 << 20;
/// Most Raft ticks one `tick` call replays after a stall: a shard stalled for longer does not
/// burn CPU catching up, it just behaves as if the stall had been this long.
pub const TICKS_PER_CALL_MAX: u64 = 2 * ELECTION_TICKS as u64;
/// Most bytes of applied entries a shard keeps in memory across all its groups (the recent
/// tail, so that a follower a little behind is caught up without reading the partition
/// log). Entries not yet applied are always kept (raft-rs reads them synchronously) and
/// count too: they are bounded by `MAX_UNCOMMITTED_BYTES` per group on the leader's side.
pub const ENTRY_CACHE_BYTES_MAX: u64 = 32 << 20;
/// Evictions that go straight to evicting any applied entry after one found too few that
/// every replica holds (see `GroupManager::evict`).
const EVICT_HELD_SKIPS: u32 = 64;
/// A leader whose group has been settled this many ticks (everything committed, applied
/// and on every voter, nothing in flight) quiesces: it stops ticking and heartbeating and
/// tells its followers, which stop ticking too (1.5 s, an election timeout).
pub const QUIESCE_TICKS: u64 = ELECTION_TICKS as u64;
/// Most partition-log reads one group has outstanding (one per lagging follower at a time
/// is the usual need); raft-rs asks again on the follower's next response.
pub const FETCHES_PER_GROUP_MAX: usize = 4;
/// Most removed groups whose last term the manager remembers (see
/// [`GroupManager::remove_group`]); past it the oldest are forgotten.
pub const TOMBSTONES_MAX: usize = 65_536;
/// Most raft-rs requests one read answers (requests for the same entries while a read is
/// outstanding join it; the rest are dropped and asked again later).
const CONTEXTS_PER_FETCH_MAX: usize = 4;

/// Per-shard settings. `Default` has the production values except `node_id` and `seed`.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: NodeId,
    pub tick_ms: u64,
    pub heartbeat_ticks: usize,
    pub election_ticks: usize,
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: usize,
    pub max_uncommitted_bytes: u64,
    /// [`ENTRY_CACHE_BYTES_MAX`] for this shard.
    pub entry_cache_bytes_max: u64,
    /// [`QUIESCE_TICKS`]; 0 never quiesces.
    pub quiesce_ticks: u64,
    /// Seeds the election-timeout randomisation (see the crate header): production passes
    /// real entropy, the simulator its seed.
    pub seed: u64,
    /// The one group whose snapshots may carry the driver's state after their 8-byte offset
    /// (the controller's metadata image, see [`GroupManager::compact_to_snapshot`]); `None`
    /// for the partition shards. A snapshot for any other group is exactly its offset: one
    /// with more data is dropped, so a peer cannot make a partition replica keep (and pass
    /// on) a payload.
    pub payload_group: Option<GroupId>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 0,
            tick_ms: TICK_MS,
            heartbeat_ticks: HEARTBEAT_TICKS,
            election_ticks: ELECTION_TICKS,
            max_size_per_msg: MAX_SIZE_PER_MSG,
            max_inflight_msgs: MAX_INFLIGHT_MSGS,
            max_uncommitted_bytes: MAX_UNCOMMITTED_BYTES,
            entry_cache_bytes_max: ENTRY_CACHE_BYTES_MAX,
            quiesce_ticks: QUIESCE_TICKS,
            seed: 0,
            payload_group: None,
        }
    }
}

/// A Kafka record batch to replicate: opaque bytes holding `records` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub records: u32,
    pub bytes: Bytes,
}

/// What a replica looks like from outside (for routing, metadata and the checkers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStatus {
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
    /// True on a leader once an entry of its own term committed: only then does it accept
    /// proposals.
    pub ready: bool,
    /// A ready leader whose high watermark covers an entry of its own term: everything
    /// earlier leaders committed is applied here (their DeleteRecords' log starts included),
    /// so its log start and high watermark are at least what any earlier leader answered:
    /// only then may it serve reads.
    pub serving: bool,
    /// Raft's commit index as this replica knows it (may be ahead of what it has synced).
    pub commit_index: u64,
    /// Highest index committed *and* synced here; `high_watermark` is its Kafka offset.
    pub hw_index: u64,
    pub high_watermark: i64,
    pub last_index: u64,
    /// Not ticking: the group is idle (see the crate header).
    pub quiesced: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    GroupExists,
    /// A replica set must name this node (as a voter, or as a learner when created as one)
    /// and have no duplicates.
    InvalidVoters,
    Raft,
}

/// One step of a membership change (see [`GroupManager::reconfigure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipStep {
    /// A target replica joins as a learner: it receives the log, counts for nothing.
    AddLearner(NodeId),
    /// A learner that has caught up becomes a voter.
    Promote(NodeId),
    /// A replica outside the target leaves (a learner, or a voter once every target voter
    /// holds everything committed).
    Remove(NodeId),
    /// This leader leaves the replica set: it hands its leadership to a caught-up target
    /// voter first, which carries on from there.
    TransferLeader(NodeId),
}

/// Where a group stands against a target replica set ([`GroupManager::reconfigure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// This replica is not a ready leader (or there is no such group): ask the leader.
    NotLeader,
    /// A change is in flight (proposed and not yet applied, or a leadership transfer), or
    /// a joining learner is still catching up: ask again later.
    Pending,
    /// This step was proposed (or, for `TransferLeader`, started) by this call.
    Stepped(MembershipStep),
    /// The voters are exactly the target, there are no learners, and every voter holds
    /// everything committed (all in sync): the reassignment may complete.
    Done,
}

/// A `Ready` handed to storage whose messages wait until the sync `need_seq` is reported.
struct PendingReady {
    need_seq: u64,
    number: u64,
    messages: Vec<Message>,
}

struct Replica {
    node: RawNode<ReplicaLog>,
    pending: VecDeque<PendingReady>,
    /// Seq of this group's latest write that must be synced before its messages go out.
    last_sync_seq: u64,
    /// Our proposals not yet resolved, by Raft index: (term, token).
    proposals: BTreeMap<u64, (u64, ProposalToken)>,
    hw_index: u64,
    role: (Role, u64, Option<NodeId>),
    quiesced: bool,
    /// Ticks a leader has been settled (see [`QUIESCE_TICKS`]).
    settled_ticks: u64,
    /// Heartbeats sent in this call carry the quiesce notice.
    notice: bool,
    /// Where recent partition-log reads ended, as (entry index, Kafka offset of its first
    /// batch), newest last, at most `FETCHES_PER_GROUP_MAX`: a lagging follower's next read
    /// starts there rather than at the mark before it (up to `MARK_EVERY` entries earlier,
    /// which would read again what the last read just sent). Only applied entries are ever
    /// evicted, so nothing below the window is rewritten; a read that does not match
    /// clears them all (see `entries_fetched`).
    read_cursors: Vec<(u64, i64)>,
}

impl Replica {
    fn status(&self) -> GroupStatus {
        let r = &self.node.raft;
        let log = r.raft_log.store();
        let ready = r.state == StateRole::Leader && r.commit_to_current_term();
        GroupStatus {
            role: r.state.into(),
            term: r.term,
            leader: (r.leader_id != raft::INVALID_ID).then_some(r.leader_id),
            ready,
            serving: ready && log.term_of(self.hw_index) == Some(r.term),
            commit_index: r.raft_log.committed,
            hw_index: self.hw_index,
            high_watermark: log.next_offset_after(self.hw_index),
            last_index: r.raft_log.last_index(),
            quiesced: self.quiesced,
        }
    }

    /// Everything this replica holds is committed, applied and synced, and nothing waits.
    fn caught_up(&self) -> bool {
        let log = &self.node.raft.raft_log;
        log.committed == log.last_index()
            && self.hw_index == log.last_index()
            && self.pending.is_empty()
            && self.proposals.is_empty()
    }

    /// A ready leader with every voter caught up to its whole log.
    fn settled_leader(&self, dead: &BTreeSet<NodeId>) -> bool {
        let r = &self.node.raft;
        let last = r.raft_log.last_index();
        r.state == StateRole::Leader
            && r.commit_to_current_term()
            && self.caught_up()
            // A leader with a replica on a node reported dead stays awake: check-quorum
            // then finds out whether it still leads a quorum.
            && r
                .prs()
                .iter()
                .all(|(id, pr)| pr.matched == last && !dead.contains(id))
    }

    /// May stay quiet as a follower of `leader`.
    fn quiet_follower(&self, dead: &BTreeSet<NodeId>) -> bool {
        let r = &self.node.raft;
        r.state == StateRole::Follower
            && r.leader_id != raft::INVALID_ID
            && !dead.contains(&r.leader_id)
            && self.caught_up()
    }
}

/// Effects accumulated during one call.
#[derive(Default)]
struct Out {
    effects: Vec<Effect>,
    writes: Vec<Write>,
    seq: Option<u64>,
    envelopes: BTreeMap<NodeId, Envelope>,
}

/// A partition-log read handed to the driver as `Effect::Fetch` and not yet answered.
struct PendingFetch {
    group: GroupId,
    low: u64,
    high: u64,
    max_bytes: u64,
    /// The read starts at this entry, whose first batch is at this Kafka offset.
    from: (u64, i64),
    contexts: Vec<GetEntriesContext>,
    /// The followers it is for (see `Effect::Fetch`).
    to: Vec<NodeId>,
}

/// Owns the Raft groups of one shard. Sans-IO: every input returns the effects to perform;
/// no clock (time comes in `tick`), no threads, no entropy but the seeded [`Rng`].
pub struct GroupManager {
    cfg: Config,
    groups: BTreeMap<GroupId, Replica>,
    rng: Rng,
    last_tick_ms: Option<u64>,
    /// Last `Persist` seq handed out, and the highest reported synced.
    write_seq: u64,
    persisted_seq: u64,
    /// Bytes of entries held in memory by every group's log, and the group where the next
    /// eviction looks first (round robin).
    cached_bytes: u64,
    evict_from: GroupId,
    /// Evictions left that skip the first pass (entries every replica holds): set when a
    /// pass found too few such entries, so a shard of many groups whose cache is full of
    /// entries a lagging follower needs does not scan every group on every call for them.
    evict_held_skips: u32,
    fetches: BTreeMap<u64, PendingFetch>,
    next_fetch: u64,
    /// Reads whose batches did not match the log this replica wrote (a driver bug).
    fetch_mismatches: u64,
    /// Groups that tick (not quiesced).
    awake: BTreeSet<GroupId>,
    /// Nodes the owner reported dead (see [`GroupManager::set_node_alive`]).
    dead: BTreeSet<NodeId>,
    /// Removed groups: the last term this node knew in each (see `remove_group`), oldest
    /// first in `tombstone_order`.
    tombstones: BTreeMap<GroupId, u64>,
    tombstone_order: VecDeque<GroupId>,
    /// Committed configuration changes raft-rs refused to apply here (a replica created as
    /// a learner replays changes made before it joined on top of the configuration it was
    /// given; see `create_learner`).
    conf_change_errors: u64,
    /// Heartbeats dropped because they named a commit index past the end of this replica's
    /// log (see `step`).
    heartbeats_past_log: u64,
    /// Set by [`GroupManager::stop_campaigning`]: this node takes no leadership from now on.
    fenced: bool,
    logger: slog::Logger,
}

impl GroupManager {
    pub fn new(cfg: Config) -> Self {
        let rng = Rng::new(cfg.seed ^ cfg.node_id.wrapping_mul(0x2545_F491_4F6C_DD1D));
        GroupManager {
            cfg,
            groups: BTreeMap::new(),
            rng,
            last_tick_ms: None,
            write_seq: 0,
            persisted_seq: 0,
            cached_bytes: 0,
            evict_from: 0,
            evict_held_skips: 0,
            fetches: BTreeMap::new(),
            next_fetch: 0,
            fetch_mismatches: 0,
            awake: BTreeSet::new(),
            dead: BTreeSet::new(),
            tombstones: BTreeMap::new(),
            tombstone_order: VecDeque::new(),
            conf_change_errors: 0,
            heartbeats_past_log: 0,
            fenced: false,
            logger: slog::Logger::root(slog::Discard, slog::o!()),
        }
    }

    /// A manager over replicas read back from disk after a restart. Everything recovered
    /// counts as synced; the high watermark restarts at the recovered commit index.
    pub fn recover(
        cfg: Config,
        logs: impl IntoIterator<Item = (GroupId, ReplicaLog)>,
    ) -> Result<Self, Error> {
        let mut m = GroupManager::new(cfg);
        for (group, log) in logs {
            m.add_replica(group, log)?;
        }
        m.evict();
        Ok(m)
    }

    fn raft_config(&self, applied: u64) -> raft::Config {
        raft::Config {
            id: self.cfg.node_id,
            election_tick: self.cfg.election_ticks,
            heartbeat_tick: self.cfg.heartbeat_ticks,
            applied,
            max_size_per_msg: self.cfg.max_size_per_msg,
            max_inflight_msgs: self.cfg.max_inflight_msgs,
            max_uncommitted_size: self.cfg.max_uncommitted_bytes,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        }
    }

    fn add_replica(&mut self, group: GroupId, log: ReplicaLog) -> Result<(), Error> {
        if self.groups.contains_key(&group) {
            return Err(Error::GroupExists);
        }
        // Recovered configurations may leave this node out: a replica removed from its group
        // is recovered until the owner deletes it.
        let members = log.voters().len() + log.learners().len();
        let distinct: BTreeSet<_> = log.voters().iter().chain(log.learners()).collect();
        if distinct.len() != members {
            return Err(Error::InvalidVoters);
        }
        // A recovered commit index only ever covers entries written before it (one ordered
        // log per shard), so it is within the log and committed: serve it as the high mark.
        let commit = log.hard_state().commit;
        assert!(
            commit <= log.last_index(),
            "recovered commit beyond the log"
        );
        let node =
            RawNode::new(&self.raft_config(commit), log, &self.logger).map_err(|_| Error::Raft)?;
        let role = (Role::Follower, node.raft.term, None);
        self.cached_bytes += node.store().window_bytes();
        self.awake.insert(group);
        self.groups.insert(
            group,
            Replica {
                node,
                pending: VecDeque::new(),
                last_sync_seq: 0,
                proposals: BTreeMap::new(),
                hw_index: commit,
                role,
                quiesced: false,
                settled_ticks: 0,
                notice: false,
                read_cursors: Vec::new(),
            },
        );
        Ok(())
    }

    /// Creates this node's replica of `group` with the given voters (this node among them);
    /// every replica of a group must be created with the same voters, in the partition's
    /// replica order.
    ///
    /// The first voter (Kafka's preferred replica) campaigns at once: Kafka gives a new
    /// partition a leader at creation, while a fresh Raft group would stay leaderless for a
    /// whole randomized election timeout (clients get LEADER_NOT_AVAILABLE meanwhile), and
    /// would end up led by whichever replica's timer fired first rather than leaders spread
    /// as placement spread the first replicas. A campaign is always safe in Raft (pre-vote
    /// first); one that gets no quorum (a peer has not created its replica yet) is simply
    /// retried by the election timeout, as before.
    pub fn create_group(
        &mut self,
        group: GroupId,
        voters: &[NodeId],
    ) -> Result<Vec<Effect>, Error> {
        if !voters.contains(&self.cfg.node_id) {
            return Err(Error::InvalidVoters);
        }
        let (log, hs) = self.fresh_log(group, voters, &[])?;
        self.add_replica(group, log)?;
        if voters.len() > 1 && voters[0] == self.cfg.node_id && !self.fenced {
            let r = self.groups.get_mut(&group).expect("replica just added");
            r.node.campaign().map_err(|_| Error::Raft)?;
        }
        let mut out = Out::default();
        self.write(
            &mut out,
            Write::Create {
                group,
                voters: voters.to_vec(),
            },
        );
        if let Some(hard_state) = hs {
            self.write(&mut out, Write::HardState { group, hard_state });
        }
        Ok(self.finish(out, [group]))
    }

    /// Adds this node's replica of `group` over a log that already holds committed entries
    /// (a one-replica partition log its store made into a group, with this node its only
    /// voter: `ReplicaStore::adopt`, which also persisted it, so no `Write::Create`). It
    /// campaigns at once (unless fenced), as the partition's only replica led it already:
    /// its hard state's term is at least every entry's, so it leads in a newer one.
    pub fn adopt_group(&mut self, group: GroupId, log: ReplicaLog) -> Result<Vec<Effect>, Error> {
        if !log.voters().contains(&self.cfg.node_id) {
            return Err(Error::InvalidVoters);
        }
        if self.groups.contains_key(&group) {
            return Err(Error::GroupExists);
        }
        assert!(
            log.hard_state().term >= log.term_of(log.last_index()).unwrap_or(0),
            "an adopted log's hard state term is below its entries'"
        );
        self.add_replica(group, log)?;
        if !self.fenced {
            let r = self.groups.get_mut(&group).expect("replica just added");
            r.node.campaign().map_err(|_| Error::Raft)?;
        }
        Ok(self.finish(Out::default(), [group]))
    }

    /// Creates this node's replica of `group` as a learner joining a running group (a
    /// reassignment's new replica): empty, it catches up from the leader (or, if the
    /// leader's log no longer starts at its beginning, restarts at the leader's log start,
    /// as a new Kafka follower does) and votes only once the leader promotes it.
    ///
    /// `voters` is the configuration to start from, as the owner knows it: the replicas
    /// the partition had before the reassignment (Kafka's original replicas), with this
    /// node as the only learner. It need not be the group's configuration now: the learner
    /// applies every configuration change in the log as it commits, and each single-step
    /// change sets one node's role, so once it has applied the log its configuration is
    /// the group's for every node some change names; the nodes none names are the original
    /// voters, given right here (naming other joining nodes as learners would not be: one
    /// whose addition never happened would stay a learner here).
    pub fn create_learner(
        &mut self,
        group: GroupId,
        voters: &[NodeId],
    ) -> Result<Vec<Effect>, Error> {
        let me = self.cfg.node_id;
        let learners = [me];
        if voters.contains(&me) {
            return Err(Error::InvalidVoters);
        }
        let (log, hs) = self.fresh_log(group, voters, &learners)?;
        self.add_replica(group, log)?;
        let mut out = Out::default();
        self.write(
            &mut out,
            Write::Create {
                group,
                voters: voters.to_vec(),
            },
        );
        self.write(
            &mut out,
            Write::Conf {
                group,
                voters: voters.to_vec(),
                learners: learners.to_vec(),
            },
        );
        if let Some(hard_state) = hs {
            self.write(&mut out, Write::HardState { group, hard_state });
        }
        Ok(self.finish(out, [group]))
    }

    /// The empty log of a new replica, and the hard state it starts with if this node held
    /// a replica of the group before: a replica removed and created again has forgotten
    /// its vote, and a vote given twice in one term could elect two leaders in it (the
    /// old replica's vote and the new one's). So it starts in the last term it knew, as
    /// having voted for itself (it never campaigned, so it gives no vote in that term):
    /// nothing else changes, as every later term is new to it anyway.
    fn fresh_log(
        &self,
        group: GroupId,
        voters: &[NodeId],
        learners: &[NodeId],
    ) -> Result<(ReplicaLog, Option<HardState>), Error> {
        if self.groups.contains_key(&group) {
            return Err(Error::GroupExists);
        }
        let mut log = ReplicaLog::new(voters);
        log.set_conf(voters, learners)
            .map_err(|_| Error::InvalidVoters)?;
        let hs = self.tombstones.get(&group).map(|&term| HardState {
            term,
            vote: self.cfg.node_id,
            commit: 0,
            ..Default::default()
        });
        if let Some(hs) = &hs {
            log.set_hard_state(hs.clone());
        }
        Ok((log, hs))
    }

    /// Removes this node's replica of `group` (its partition was deleted, or moved off this
    /// node): the replica and its entries in memory go, its unanswered proposals fail with
    /// `NotLeader` (no leader known here any more), reads in flight for it are dropped (their
    /// answers are ignored), and a `Persist` with [`Write::Remove`] is returned. The driver
    /// deletes the partition log only once that write is synced. Nothing is sent to the
    /// other replicas: the caller changes the replica set first (a removed voter that is
    /// still a member looks dead to the others). No effects for a group not here.
    pub fn remove_group(&mut self, group: GroupId) -> Vec<Effect> {
        let Some(r) = self.groups.remove(&group) else {
            return Vec::new();
        };
        if self.tombstones.insert(group, r.node.raft.term).is_none() {
            self.tombstone_order.push_back(group);
            if self.tombstone_order.len() > TOMBSTONES_MAX {
                let old = self.tombstone_order.pop_front().expect("over the limit");
                self.tombstones.remove(&old);
            }
        }
        self.awake.remove(&group);
        self.cached_bytes -= r.node.store().window_bytes();
        self.fetches.retain(|_, f| f.group != group);
        let mut out = Out::default();
        for (_, (_, token)) in r.proposals {
            out.effects.push(Effect::Failed {
                group,
                token,
                error: ProposeError::NotLeader { leader: None },
            });
        }
        self.write(&mut out, Write::Remove { group });
        self.finish(out, [])
    }

    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    pub fn status(&self, group: GroupId) -> Option<GroupStatus> {
        self.groups.get(&group).map(Replica::status)
    }

    /// On a leader: each voter's replication progress as `(node, matched index, heard from
    /// since the last check-quorum round)` (this node with its own last synced index), for
    /// the owner's in-sync-replica report. `None` on a follower or for an unknown group.
    pub fn progress(&self, group: GroupId) -> Option<Vec<(NodeId, u64, bool)>> {
        let r = self.groups.get(&group)?;
        let raft = &r.node.raft;
        if raft.state != StateRole::Leader {
            return None;
        }
        let mut out: Vec<(NodeId, u64, bool)> = raft
            .prs()
            .iter()
            .map(|(id, pr)| (*id, pr.matched, pr.recent_active))
            .collect();
        out.sort_unstable();
        Some(out)
    }

    /// The group's configuration as this replica has applied it: (voters, learners), each
    /// sorted.
    pub fn conf(&self, group: GroupId) -> Option<(Vec<NodeId>, Vec<NodeId>)> {
        let r = self.groups.get(&group)?;
        let conf = r.node.raft.prs().conf();
        let mut voters: Vec<NodeId> = conf.voters().ids().iter().collect();
        voters.sort_unstable();
        let mut learners: Vec<NodeId> = conf.learners().iter().copied().collect();
        learners.sort_unstable();
        Some((voters, learners))
    }

    /// Committed configuration changes raft-rs refused to apply on this shard (see
    /// [`Self::create_learner`]).
    pub fn conf_change_errors(&self) -> u64 {
        self.conf_change_errors
    }

    /// Heartbeats dropped for naming a commit index past the end of the replica's log: each
    /// one means this replica lost entries it had acknowledged (see `step`).
    pub fn heartbeats_past_log(&self) -> u64 {
        self.heartbeats_past_log
    }

    /// Moves `group` one step towards the replica set `target` (a reassignment), if this
    /// replica is its ready leader. Single-step changes, one at a time: first every target
    /// replica not in the group joins as a learner; a learner whose matched index has
    /// reached the leader's commit index (it holds everything committed, as Kafka's ISR
    /// rule) is promoted; learners outside the target leave; once every target replica is
    /// a voter holding everything committed, the voters outside it leave one by one, this
    /// leader last, after handing its leadership to a caught-up target voter. The group so
    /// never has fewer voters than the smaller of the old and new sets, and a leaving
    /// voter goes only when the staying ones hold every committed entry.
    ///
    /// Call it again whenever the group's state may have moved on (ticks, commits): each
    /// call does at most one step, and only when nothing is pending; it is idempotent.
    /// `target` must be non-empty, without duplicates (else `NotLeader` is not the answer:
    /// it panics, as the caller validated it against the controller's rules).
    pub fn reconfigure(&mut self, group: GroupId, target: &[NodeId]) -> (Membership, Vec<Effect>) {
        assert!(!target.is_empty(), "an empty target replica set");
        let distinct: BTreeSet<_> = target.iter().collect();
        assert_eq!(distinct.len(), target.len(), "a node twice in {target:?}");
        let me = self.cfg.node_id;
        let Some(r) = self.groups.get(&group) else {
            return (Membership::NotLeader, Vec::new());
        };
        let raft = &r.node.raft;
        if raft.state != StateRole::Leader || !raft.commit_to_current_term() {
            return (Membership::NotLeader, Vec::new());
        }
        if raft.has_pending_conf() || raft.lead_transferee.is_some() {
            return (Membership::Pending, Vec::new());
        }
        let (voters, learners) = self.conf(group).expect("group");
        let commit = raft.raft_log.committed;
        let caught_up = |n: NodeId| {
            raft.prs()
                .get(n)
                .is_some_and(|pr| pr.matched >= commit && !self.dead.contains(&n))
        };
        let step = if !voters.contains(&me) {
            // This leader applied its own removal, proposed by an earlier leader before it
            // won its term: raft-rs drops every proposal of a leader outside the
            // configuration, so it hands the leadership to a caught-up voter first (a
            // target one if it can).
            voters
                .iter()
                .find(|n| target.contains(n) && caught_up(**n))
                .or_else(|| voters.iter().find(|n| caught_up(**n)))
                .map(|&n| MembershipStep::TransferLeader(n))
        } else if let Some(&n) = target
            .iter()
            .find(|n| !voters.contains(n) && !learners.contains(n))
        {
            Some(MembershipStep::AddLearner(n))
        } else if let Some(&n) = target
            .iter()
            .find(|n| learners.contains(n) && caught_up(**n))
        {
            Some(MembershipStep::Promote(n))
        } else if let Some(&n) = learners.iter().find(|n| !target.contains(n)) {
            Some(MembershipStep::Remove(n))
        } else if target
            .iter()
            .any(|n| learners.contains(n) || !caught_up(*n))
        {
            // Joining learners still catching up, or a target voter behind: wait.
            None
        } else if let Some(n) = leaving_voter(&voters, target, me, caught_up) {
            Some(MembershipStep::Remove(n))
        } else if !target.contains(&me) {
            // Every target voter is caught up (checked above); the preferred one first.
            Some(MembershipStep::TransferLeader(target[0]))
        } else {
            return (Membership::Done, Vec::new());
        };
        let Some(step) = step else {
            return (Membership::Pending, Vec::new());
        };
        self.wake(group);
        let r = self.groups.get_mut(&group).expect("group");
        let (node, change) = match step {
            MembershipStep::TransferLeader(to) => {
                r.node.transfer_leader(to);
                return (
                    Membership::Stepped(step),
                    self.finish(Out::default(), [group]),
                );
            }
            MembershipStep::AddLearner(n) => (n, ConfChangeType::AddLearnerNode),
            MembershipStep::Promote(n) => (n, ConfChangeType::AddNode),
            MembershipStep::Remove(n) => (n, ConfChangeType::RemoveNode),
        };
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change);
        single.node_id = node;
        let mut cc = ConfChangeV2::default();
        cc.mut_changes().push(single);
        let last = r.node.raft.raft_log.last_index();
        if r.node.propose_conf_change(Vec::new(), cc).is_err()
            || r.node.raft.raft_log.last_index() != last + 1
        {
            // Refused (the uncommitted bytes are over the limit): try again later.
            return (Membership::Pending, self.finish(Out::default(), [group]));
        }
        (
            Membership::Stepped(step),
            self.finish(Out::default(), [group]),
        )
    }

    /// Hands `group`'s leadership from this replica to voter `to` (preferred-leader
    /// election): Raft's leadership transfer, in which the leader brings `to` up to date
    /// and then has it campaign at once, refusing proposals (`Dropped`) meanwhile; raft-rs
    /// abandons a transfer that has not completed within an election timeout. Nothing
    /// happens unless this replica leads and `to` is another voter.
    pub fn transfer_leader(&mut self, group: GroupId, to: NodeId) -> Vec<Effect> {
        let me = self.cfg.node_id;
        let eligible = self.groups.get(&group).is_some_and(|r| {
            let raft = &r.node.raft;
            raft.state == StateRole::Leader && to != me && raft.prs().conf().voters().contains(to)
        });
        if !eligible {
            return Vec::new();
        }
        // The leader must tick (the transfer's timeout, heartbeats to catch `to` up).
        self.wake(group);
        let r = self.groups.get_mut(&group).expect("group");
        r.node.transfer_leader(to);
        self.finish(Out::default(), [group])
    }

    /// Asks a quorum to confirm that this replica still leads `group` (Raft's ReadIndex: a
    /// round of heartbeats carrying `token`); [`Effect::ReadIndex`] with the same token
    /// comes back once a quorum answered, at once for a group of one voter. Only a leader
    /// with an entry of its own term committed asks (`false` otherwise, nothing comes back);
    /// a leadership that ends before the quorum answers drops the request silently. Tokens
    /// must differ from every earlier one still unanswered (raft-rs joins equal ones).
    /// A quiesced leader wakes (its followers do too: the heartbeats are not the compact
    /// kind), so that check-quorum runs while a confirmation is pending.
    pub fn read_index(&mut self, group: GroupId, token: u64) -> (bool, Vec<Effect>) {
        let asks = self.groups.get(&group).is_some_and(|r| {
            r.node.raft.state == StateRole::Leader && r.node.raft.commit_to_current_term()
        });
        if !asks {
            return (false, Vec::new());
        }
        self.wake(group);
        let r = self.groups.get_mut(&group).expect("group");
        r.node.read_index(token.to_le_bytes().to_vec());
        (true, self.finish(Out::default(), [group]))
    }

    /// Fences this node off leadership for good (its node is shutting down and hands its
    /// leaderships to other voters first, Kafka's controlled shutdown): from now on the
    /// election timer of a replica that does not lead never fires (it still runs up to just
    /// before, so the lease of a leader it no longer hears from expires and it grants votes
    /// as usual), so it never campaigns; a leader's `MsgTimeoutNow` (another leader handing its leadership
    /// here) is dropped; a new group's first voter does not campaign. Leaders still tick
    /// (heartbeats, check-quorum, the timeout of a transfer away from them), and every
    /// replica still appends, acknowledges and votes, so the groups keep their quorums
    /// while the node lives. Safe in any state: Raft never needs a given node to campaign.
    pub fn stop_campaigning(&mut self) {
        self.fenced = true;
    }

    /// Whether [`Self::stop_campaigning`] was called.
    pub fn campaigning_stopped(&self) -> bool {
        self.fenced
    }

    /// Whether this replica leads `group` and has quiesced: every voter held its whole log
    /// when it did, on a node not reported dead, and nothing is appended until it wakes (a
    /// proposal, a message other than a heartbeat, a report of a voter's node dead), so its
    /// followers stay caught up. A cheap check for the owner's per-group walks (no
    /// allocation, unlike [`Self::progress`]).
    pub fn quiesced_leader(&self, group: GroupId) -> bool {
        self.groups
            .get(&group)
            .is_some_and(|r| r.quiesced && r.node.raft.state == StateRole::Leader)
    }

    /// The replica's log (entries, hard state, offsets) as raft-rs sees it: includes entries
    /// not yet synced, which readers must not see past `status().hw_index`.
    pub fn log(&self, group: GroupId) -> Option<&ReplicaLog> {
        self.groups
            .get(&group)
            .map(|r| r.node.raft.raft_log.store())
    }

    /// Advances every group's Raft clock to `now_ms` (monotonic; earlier values are ignored).
    pub fn tick(&mut self, now_ms: u64) -> Vec<Effect> {
        let last = *self.last_tick_ms.get_or_insert(now_ms);
        let ticks = now_ms.saturating_sub(last) / self.cfg.tick_ms;
        if ticks == 0 {
            return Vec::new();
        }
        self.last_tick_ms = Some(last + ticks * self.cfg.tick_ms);
        let (min, max) = (
            self.cfg.election_ticks as u64,
            2 * self.cfg.election_ticks as u64,
        );
        let awake: Vec<GroupId> = self.awake.iter().copied().collect();
        let mut quiescing = Vec::new();
        let (rng, cfg, dead, fenced) = (&mut self.rng, &self.cfg, &self.dead, self.fenced);
        let mut tick_one = |g: GroupId, r: &mut Replica| {
            for _ in 0..ticks.min(TICKS_PER_CALL_MAX) {
                // Fenced and not leading: the election clock runs, so that the lease of the
                // leader it last heard from expires and it votes for others as usual, but it
                // stops one tick short of firing (raft-rs campaigns only from that tick).
                if fenced && r.node.raft.state != StateRole::Leader {
                    let raft = &mut r.node.raft;
                    let last = max as usize - 1;
                    raft.set_randomized_election_timeout(last);
                    raft.election_elapsed = (raft.election_elapsed + 1).min(last - 1);
                    continue;
                }
                // raft-rs draws each randomized election timeout from `thread_rng` when it
                // resets the election clock, and reads it only in `tick`. Every reset leaves
                // `election_elapsed` at 0, so replacing the timeout whenever a tick is about
                // to run from 0 overrides every draw (and some heartbeat resets too, which is
                // harmless) with one from our seeded stream, before it is ever used.
                if r.node.raft.election_elapsed == 0 {
                    let t = rng.range(min, max - 1) as usize;
                    r.node.raft.set_randomized_election_timeout(t);
                }
                r.node.tick();
            }
            if cfg.quiesce_ticks > 0 && r.settled_leader(dead) {
                r.settled_ticks += ticks;
                if r.settled_ticks >= cfg.quiesce_ticks {
                    // One last round of heartbeats carries the notice to the followers.
                    r.node.ping();
                    r.notice = true;
                    r.quiesced = true;
                    quiescing.push(g);
                }
            } else {
                r.settled_ticks = 0;
            }
        };
        // Walking the map in order is cheaper than a lookup per group once many are awake;
        // with most quiesced, the lookups win.
        if awake.len() * 4 > self.groups.len() {
            for (g, r) in self.groups.iter_mut().filter(|(_, r)| !r.quiesced) {
                tick_one(*g, r);
            }
        } else {
            for g in &awake {
                tick_one(*g, self.groups.get_mut(g).expect("awake group"));
            }
        }
        let fx = self.finish(Out::default(), awake);
        for g in quiescing {
            let r = self.groups.get_mut(&g).expect("group");
            r.notice = false;
            if r.quiesced {
                self.awake.remove(&g);
            }
        }
        fx
    }

    /// Reports whether `node` is alive, as the owner's transport sees it (connection state,
    /// node-level heartbeats). A quiesced follower sends nothing and expects nothing, so
    /// this is how it learns that its leader's node died: it wakes up, and campaigns after
    /// an election timeout without heartbeats. A wrong report costs at most an election
    /// (the woken follower's pre-vote wakes the leader, whose heartbeats settle it again);
    /// safety never depends on it. Reports about this node itself are ignored, and a message
    /// from a node reported dead counts as a report that it is alive.
    pub fn set_node_alive(&mut self, node: NodeId, alive: bool) {
        if node == self.cfg.node_id {
            return;
        }
        if alive {
            self.dead.remove(&node);
            return;
        }
        if !self.dead.insert(node) {
            return;
        }
        // Followers whose leader is there give up its lease now rather than an election
        // timeout after its last heartbeat: what is left of their randomized timeout
        // (0 to `election_ticks`) still spreads their campaigns, and the other followers,
        // told the same, no longer refuse their pre-votes as in-lease. This is what takes a
        // killed leader's failover from 1.5–3 s to a fraction of that. A wrong report costs
        // no safety: a follower that still hears its leader refuses the pre-vote, and the
        // next heartbeat restarts the lease.
        // The timeout is drawn again from the seeded stream (see `tick`), so a simulation
        // replays exactly.
        let (min, max) = (
            self.cfg.election_ticks as u64,
            2 * self.cfg.election_ticks as u64,
        );
        for r in self.groups.values_mut() {
            let raft = &mut r.node.raft;
            if raft.state == StateRole::Follower && raft.leader_id == node {
                let t = self.rng.range(min, max - 1) as usize;
                raft.set_randomized_election_timeout(t);
                raft.election_elapsed = raft.election_elapsed.max(raft.election_timeout());
            }
        }
        // Followers whose leader is there, and leaders with a replica there (a leader cut
        // off from its quorum must tick for check-quorum to depose it).
        let orphans: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, r)| {
                let raft = &r.node.raft;
                r.quiesced
                    && (raft.leader_id == node
                        || (raft.state == StateRole::Leader && raft.prs().get(node).is_some()))
            })
            .map(|(g, _)| *g)
            .collect();
        for g in orphans {
            self.wake(g);
        }
    }

    /// Groups not ticking.
    pub fn quiesced_groups(&self) -> usize {
        self.groups.len() - self.awake.len()
    }

    fn wake(&mut self, group: GroupId) {
        if let Some(r) = self.groups.get_mut(&group) {
            r.quiesced = false;
            r.settled_ticks = 0;
            self.awake.insert(group);
        }
    }

    /// Steps every message of an envelope addressed to this node. Messages for groups this
    /// node has no replica of are dropped (the sender retries; the replica may be on its way).
    pub fn step(&mut self, env: Envelope) -> Vec<Effect> {
        if env.to != self.cfg.node_id {
            return Vec::new();
        }
        // Hearing from a node proves it is alive, whatever an older report said (a report
        // and the node's restart may cross). But a quiesce notice in the first envelope
        // after a "dead" report is not followed: it may have been sent just before the
        // node died and delivered after its connection was seen to close; a live leader
        // sends another once the group settles again.
        let was_dead = self.dead.remove(&env.from);
        let mut touched = BTreeSet::new();
        let mut notices = Vec::new();
        let msgs = env
            .heartbeats
            .iter()
            .map(|hb| (hb.group, hb.expand(env.from, env.to), Some(*hb)))
            .chain(env.messages.into_iter().map(|(g, m)| (g, m, None)));
        for (group, m, hb) in msgs {
            if m.from != env.from || m.to != env.to {
                continue;
            }
            // A snapshot here means "the log restarts at this Kafka offset" (its first 8
            // bytes), then the driver's state if its group keeps one (the controller's
            // metadata image, `payload_group`): one without the offset, or with data after
            // it for another group, is malformed, dropped before Raft accepts it.
            if m.get_msg_type() == MessageType::MsgSnapshot {
                let snap = m.get_snapshot();
                if crate::log::snapshot_offset(snap).is_none()
                    || (self.cfg.payload_group != Some(group) && snap.data.len() != 8)
                {
                    continue;
                }
            }
            // Fenced: a transfer to this node would make it campaign (stop_campaigning).
            if self.fenced && m.get_msg_type() == MessageType::MsgTimeoutNow {
                continue;
            }
            let Some(r) = self.groups.get_mut(&group) else {
                continue;
            };
            // Anything but a heartbeat (a quiesce notice, or the answers to one) wakes a
            // quiet group; a heartbeat that changes its state does too (checked below).
            if r.quiesced && hb.is_none() {
                self.wake(group);
            }
            if hb.is_some_and(|hb| hb.quiesce) && !was_dead {
                notices.push((group, m.term));
            }
            let r = self.groups.get_mut(&group).expect("group");
            // A leader's heartbeat names at most the index this replica acknowledged
            // (raft-rs sends min(match, commit)), so one past the end of the log means the
            // replica lost acknowledged entries: a directory restored from an old copy, a
            // disk that lied about a sync (a wiped one is refused by the transport before
            // this). raft-rs would panic on it; dropped and counted instead, the replica
            // takes no part in the group rather than take the shard down, and the leader
            // goes on with the others.
            if m.get_msg_type() == MessageType::MsgHeartbeat
                && m.commit > r.node.raft.raft_log.last_index()
            {
                self.heartbeats_past_log += 1;
                continue;
            }
            // Errors are stale or foreign messages (a removed peer's response); Raft
            // already ignored them.
            let _ = r.node.step(m);
            touched.insert(group);
        }
        let fx = self.finish(Out::default(), touched.iter().copied());
        for g in touched {
            let r = &self.groups[&g];
            if r.quiesced && !r.settled_leader(&self.dead) && !r.quiet_follower(&self.dead) {
                self.wake(g);
            }
        }
        for (g, term) in notices {
            let r = self.groups.get_mut(&g).expect("group");
            if !r.quiesced
                && r.node.raft.term == term
                && r.node.raft.leader_id == env.from
                && r.quiet_follower(&self.dead)
            {
                r.quiesced = true;
                self.awake.remove(&g);
            }
        }
        fx
    }

    /// Where a batch proposed to `group` now would go: its base offset and term (the
    /// leader epoch its replicas stamp it with), on a leader that accepts proposals; `None`
    /// otherwise. A caller may stamp both into the batch before [`Self::propose`] so that
    /// every replica stores the bytes it receives without restamping a copy; stamping is an
    /// optimisation only (the store restamps a batch that says otherwise).
    pub fn proposal_position(&self, group: GroupId) -> Option<(i64, u64)> {
        let r = self.groups.get(&group)?;
        let status = r.status();
        (status.role == Role::Leader && status.ready)
            .then(|| (r.node.raft.raft_log.store().next_offset(), r.node.raft.term))
    }

    /// Proposes `batch` on `group`. On a ready leader it is appended at once and reported as
    /// [`Effect::Proposed`] (with the offsets it will get), then later `Committed` or
    /// `Failed`; otherwise `Failed` comes back from this call.
    pub fn propose(&mut self, group: GroupId, token: ProposalToken, batch: Batch) -> Vec<Effect> {
        if batch.records == 0 || batch.bytes.is_empty() {
            return self.propose_entry(group, token, None);
        }
        let e = Entry {
            data: batch.bytes,
            context: records_context(batch.records),
            ..Default::default()
        };
        self.propose_entry(group, token, Some((e, batch.records)))
    }

    /// Proposes moving the group's log start to Kafka offset `offset` (DeleteRecords): an
    /// entry of Raft's own (one offset, a control batch in the partition log) that every
    /// replica applies as it commits, reporting [`Effect::LogStartOffset`] and compacting its
    /// Raft log to the latest entry at or below `offset` it can (see [`Self::compact`]). As
    /// [`Self::propose`]: `Proposed`, then `Committed` (the leader applied it: its log
    /// start is `offset` or more) or `Failed`. `offset` must lie within what the leader has
    /// committed (its high watermark), else the proposal fails as `InvalidBatch` (Kafka's
    /// DeleteRecords refuses an offset past the high watermark).
    pub fn propose_log_start(
        &mut self,
        group: GroupId,
        token: ProposalToken,
        offset: i64,
    ) -> Vec<Effect> {
        let within = self
            .groups
            .get(&group)
            .is_none_or(|r| offset >= 0 && offset <= r.status().high_watermark);
        let e = Entry {
            data: crate::log::log_start_data(offset),
            ..Default::default()
        };
        self.propose_entry(group, token, within.then_some((e, 1)))
    }

    /// Proposes `entry` (occupying `records` offsets; `None`: an invalid proposal).
    fn propose_entry(
        &mut self,
        group: GroupId,
        token: ProposalToken,
        entry: Option<(Entry, u32)>,
    ) -> Vec<Effect> {
        let mut out = Out::default();
        let fail = |error| {
            vec![Effect::Failed {
                group,
                token,
                error,
            }]
        };
        if self.groups.get(&group).is_some_and(|r| r.quiesced) {
            self.wake(group);
        }
        let Some(r) = self.groups.get_mut(&group) else {
            return fail(ProposeError::UnknownGroup);
        };
        let status = r.status();
        if status.role != Role::Leader {
            return fail(ProposeError::NotLeader {
                leader: status.leader,
            });
        }
        if !status.ready {
            return fail(ProposeError::NotReady);
        }
        let Some((e, records)) = entry else {
            return fail(ProposeError::InvalidBatch);
        };
        // Between calls the store holds every entry raft-rs has (each call hands the whole
        // Ready to storage), so its next offset is the offset this entry will get.
        let last = r.node.raft.raft_log.last_index();
        assert_eq!(last, r.node.raft.raft_log.store().last_index());
        let base = r.node.raft.raft_log.store().next_offset();
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.cfg.node_id;
        m.set_entries(vec![e].into());
        if r.node.step(m).is_err() || r.node.raft.raft_log.last_index() != last + 1 {
            return fail(ProposeError::Dropped);
        }
        let index = last + 1;
        let term = r.node.raft.term;
        r.proposals.insert(index, (term, token));
        out.effects.push(Effect::Proposed {
            group,
            token,
            index,
            span: OffsetSpan {
                base,
                records,
                term,
            },
        });
        self.finish(out, [group])
    }

    /// Reports that every `Persist` with `seq <= up_to` is synced.
    pub fn persisted(&mut self, up_to: u64) -> Vec<Effect> {
        assert!(
            up_to <= self.write_seq,
            "persisted({up_to}) was never written"
        );
        if up_to <= self.persisted_seq {
            return Vec::new();
        }
        self.persisted_seq = up_to;
        let waiting: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, r)| r.pending.front().is_some_and(|p| p.need_seq <= up_to))
            .map(|(g, _)| *g)
            .collect();
        self.finish(Out::default(), waiting)
    }

    /// The partition log's start offset moved up to `offset` (Kafka retention deleted the
    /// segments below it): the Raft log drops the entries before it. The new start is the
    /// latest entry at or below `offset` whose offsets are known without a read (at most
    /// [`crate::log::MARK_EVERY`] entries back) and that is applied here (retention never
    /// passes the high watermark in Kafka either); the caller keeps the batches from the
    /// returned offset on. Followers that need an entry before the start get a snapshot:
    /// "restart your log here" (see `ReplicaLog`'s `Storage::snapshot`).
    pub fn compact(&mut self, group: GroupId, offset: i64) -> (i64, Vec<Effect>) {
        if !self.groups.contains_key(&group) {
            return (offset, Vec::new());
        }
        let mut out = Out::default();
        let (start, freed) = self.compact_log(group, offset, &mut out);
        self.cached_bytes -= freed;
        (start, self.finish(out, []))
    }

    /// Compacts the log of `group` to start after entry `index`, whose state the driver
    /// keeps as `payload` (the controller's metadata snapshot): every entry up to `index`
    /// leaves memory (`Write::LogStart { reset: false }`), and a follower that needs one of
    /// them gets a snapshot carrying `payload` (see `ReplicaLog`'s `Storage::snapshot`),
    /// which its manager installs as its own log start and payload (the driver finds it
    /// through [`Self::log`] once its high watermark passes entries it never saw). `index`
    /// must be applied here (at most the high watermark) and after the current log start;
    /// otherwise nothing changes and this returns no effects. The driver makes `payload`
    /// durable before this call's writes (a restart must find the state of the entries the
    /// WAL no longer holds).
    pub fn compact_to_snapshot(
        &mut self,
        group: GroupId,
        index: u64,
        payload: Bytes,
    ) -> Vec<Effect> {
        let Some(r) = self.groups.get_mut(&group) else {
            return Vec::new();
        };
        let log = r.node.mut_store();
        if index > r.hw_index || index < log.first_index() || index > log.last_index() {
            return Vec::new();
        }
        let freed = log.compact_before(index + 1);
        log.set_snapshot_payload(payload);
        let term = log.term_of(index).expect("start term");
        let offset = log.start_offset();
        self.cached_bytes -= freed;
        let mut out = Out::default();
        self.write(
            &mut out,
            Write::LogStart {
                group,
                index,
                term,
                offset,
                reset: false,
            },
        );
        self.finish(out, [])
    }

    /// [`Self::compact`]'s work: moves the Raft log start (if it can move) and writes it.
    /// Returns the log's start offset afterwards and the bytes freed (the caller accounts
    /// for them: inside `drive`, `finish` counts the group's bytes before and after).
    fn compact_log(&mut self, group: GroupId, offset: i64, out: &mut Out) -> (i64, u64) {
        let r = self.groups.get_mut(&group).expect("group");
        let log = r.node.mut_store();
        let keep_from = log.start_candidate(offset, r.hw_index);
        let Some((first, _)) = keep_from.filter(|&(i, _)| i > log.first_index()) else {
            return (log.start_offset(), 0);
        };
        let freed = log.compact_before(first);
        let (index, term, offset) = (
            log.first_index() - 1,
            log.term_of(log.first_index() - 1).expect("start term"),
            log.start_offset(),
        );
        self.write(
            out,
            Write::LogStart {
                group,
                index,
                term,
                offset,
                reset: false,
            },
        );
        (offset, freed)
    }

    /// A committed log-start entry (index `index`, asking for Kafka offset `offset`) was
    /// applied on `group`: reports the partition log's new start and compacts the Raft log
    /// up to the latest entry at or below it whose offsets are known without a read (as
    /// retention does: the partition log keeps its batches from there, see
    /// [`Effect::LogStartOffset`]). Called once the entry is applied (so raft-rs never
    /// reads an entry this drops).
    fn apply_log_start(&mut self, group: GroupId, index: u64, offset: i64, out: &mut Out) {
        let r = &self.groups[&group];
        assert!(
            index <= r.hw_index,
            "a log-start entry applied before it is"
        );
        // The entry was proposed within the leader's high watermark, which lies below the
        // entry itself; an offset past the entry is not what `propose_log_start` writes.
        let entry_base = r
            .node
            .store()
            .span(index)
            .map(|s| s.base)
            .unwrap_or(i64::MAX);
        let offset = offset.min(entry_base);
        out.effects.push(Effect::LogStartOffset {
            group,
            index,
            offset,
        });
        self.compact_log(group, offset, out);
    }

    /// Answers `Effect::Fetch { id, .. }`: the batches read from the partition log at its
    /// offset (in order, Raft's own entries decoded from their control batches; none when the
    /// log ends there), or `None` if the read failed.
    /// A failed or refused read is dropped: raft-rs asks again on the follower's next
    /// response.
    pub fn entries_fetched(&mut self, id: u64, batches: Option<Vec<FetchedBatch>>) -> Vec<Effect> {
        let Some(f) = self.fetches.remove(&id) else {
            return Vec::new();
        };
        let Some(r) = self.groups.get_mut(&f.group) else {
            return Vec::new();
        };
        let Some(batches) = batches else {
            return Vec::new();
        };
        let log = r.node.store();
        if f.from.0 < log.first_index() || f.low >= log.window_first() {
            // The log start moved past the read meanwhile, or the entries are in memory
            // again (raft-rs asks again in either case).
            return Vec::new();
        }
        let rebuilt = match log.rebuild(f.from.0, f.from.1, batches, f.low, f.high) {
            Ok(rebuilt) => rebuilt,
            Err(_) => {
                self.fetch_mismatches += 1;
                r.read_cursors.clear();
                return Vec::new();
            }
        };
        if rebuilt.next_index < log.window_first() {
            let cursor = (rebuilt.next_index, rebuilt.next_offset);
            r.read_cursors.retain(|c| *c != cursor);
            if r.read_cursors.len() == FETCHES_PER_GROUP_MAX {
                r.read_cursors.remove(0);
            }
            r.read_cursors.push(cursor);
        }
        let mut out = Out::default();
        if rebuilt.entries.is_empty() {
            // The read ended before `low` (it starts at a mark up to `MARK_EVERY` entries
            // earlier): read on from where it stopped.
            if rebuilt.next_index > f.from.0 && rebuilt.next_index < log.window_first() {
                let from = (rebuilt.next_index, rebuilt.next_offset);
                self.start_fetch(PendingFetch { from, ..f }, &mut out);
            }
            return self.finish(out, []);
        }
        r.node.mut_store().set_fetched(rebuilt.entries);
        for ctx in f.contexts {
            r.node.on_entries_fetched(ctx);
        }
        r.node.mut_store().clear_fetched();
        self.finish(out, [f.group])
    }

    /// Partition-log reads whose batches did not match what this replica wrote.
    pub fn fetch_mismatches(&self) -> u64 {
        self.fetch_mismatches
    }

    /// Bytes of entries this shard holds in memory.
    pub fn cached_bytes(&self) -> u64 {
        self.cached_bytes
    }

    fn start_fetch(&mut self, f: PendingFetch, out: &mut Out) {
        self.next_fetch += 1;
        let id = self.next_fetch;
        out.effects.push(Effect::Fetch {
            group: f.group,
            id,
            offset: f.from.1,
            max_bytes: f.max_bytes,
            to: f.to.clone(),
        });
        self.fetches.insert(id, f);
    }

    /// Turns raft-rs's reads below a group's in-memory window into `Effect::Fetch`es (a
    /// request for entries a read is already bringing joins it).
    fn fetch_requests(&mut self, group: GroupId, out: &mut Out) {
        let requests = self.groups[&group].node.store().take_requests();
        for req in requests {
            let outstanding = self.fetches.values().filter(|f| f.group == group).count();
            let same = self
                .fetches
                .values_mut()
                .find(|f| f.group == group && f.low == req.low);
            if let Some(f) = same {
                if f.contexts.len() < CONTEXTS_PER_FETCH_MAX {
                    f.contexts.push(req.context);
                }
                continue;
            }
            if outstanding >= FETCHES_PER_GROUP_MAX {
                continue;
            }
            let r = &self.groups[&group];
            let log = r.node.store();
            if req.low < log.first_index() || req.low >= log.window_first() {
                // Asked before this call compacted the log past it (raft-rs sends a
                // snapshot when it asks again) or before the entries were back in memory.
                continue;
            }
            let mark = log.fetch_cursor(req.low);
            let from = r
                .read_cursors
                .iter()
                .filter(|c| {
                    c.0 <= req.low
                        && c.0 > mark.0
                        && c.0 >= log.first_index()
                        && c.0 < log.window_first()
                })
                .max_by_key(|c| c.0)
                .copied()
                .unwrap_or(mark);
            // raft-rs reads a follower's entries from its `next_idx` (the `GetEntriesContext`
            // naming the follower is opaque outside raft-rs).
            let me = self.cfg.node_id;
            let to = r
                .node
                .raft
                .prs()
                .iter()
                .filter(|(id, pr)| **id != me && pr.next_idx == req.low)
                .map(|(id, _)| *id)
                .collect();
            self.start_fetch(
                PendingFetch {
                    group,
                    low: req.low,
                    high: req.high,
                    max_bytes: req.max_bytes,
                    from,
                    contexts: vec![req.context],
                    to,
                },
                out,
            );
        }
    }

    /// Keeps the shard's entries in memory within `entry_cache_bytes_max`: evicts applied
    /// entries, oldest first within a group, groups in turn; first only those every
    /// replica of a led group holds (a follower still behind them would otherwise be sent
    /// them from a read of the partition log, a disk read and a copy per entry), then, if
    /// that is not enough, any applied entry.
    fn evict(&mut self) {
        for replicated_only in [true, false] {
            if self.cached_bytes <= self.cfg.entry_cache_bytes_max {
                return;
            }
            if replicated_only && self.evict_held_skips > 0 {
                self.evict_held_skips -= 1;
                continue;
            }
            let order: Vec<GroupId> = self
                .groups
                .range(self.evict_from..)
                .chain(self.groups.range(..self.evict_from))
                .map(|(g, _)| *g)
                .collect();
            for g in order {
                let r = self.groups.get_mut(&g).expect("group");
                let mut through = r.hw_index;
                if replicated_only && r.node.raft.state == StateRole::Leader {
                    let held = r.node.raft.prs().iter().map(|(_, pr)| pr.matched).min();
                    through = through.min(held.unwrap_or(0));
                }
                let log = r.node.mut_store();
                while self.cached_bytes > self.cfg.entry_cache_bytes_max
                    && log.window_first() <= through
                {
                    let first = log.window_first();
                    self.cached_bytes -= log.evict_through(first);
                }
                if self.cached_bytes <= self.cfg.entry_cache_bytes_max {
                    self.evict_from = g + 1;
                    return;
                }
            }
            if replicated_only {
                self.evict_held_skips = EVICT_HELD_SKIPS;
            }
        }
    }

    fn write(&mut self, out: &mut Out, w: Write) {
        if out.seq.is_none() {
            self.write_seq += 1;
            out.seq = Some(self.write_seq);
        }
        out.writes.push(w);
    }

    /// Drives the given groups' Readies to quiescence and assembles the call's effects.
    fn finish(&mut self, mut out: Out, groups: impl IntoIterator<Item = GroupId>) -> Vec<Effect> {
        for g in groups {
            let before = self.groups[&g].node.store().window_bytes();
            let (after, requests) = self.drive(g, &mut out);
            if requests {
                self.fetch_requests(g, &mut out);
            }
            self.cached_bytes = self.cached_bytes + after - before;
        }
        self.evict();
        let mut effects = out.effects;
        if let Some(seq) = out.seq {
            effects.push(Effect::Persist {
                seq,
                writes: out.writes,
            });
        }
        effects.extend(out.envelopes.into_values().map(Effect::Send));
        effects
    }

    fn send(&self, out: &mut Out, group: GroupId, msgs: Vec<Message>) {
        for m in msgs {
            let env = out.envelopes.entry(m.to).or_insert_with(|| Envelope {
                from: self.cfg.node_id,
                to: m.to,
                ..Default::default()
            });
            match Heartbeat::compact(group, &m) {
                Some(mut hb) => {
                    hb.quiesce = !hb.response && self.groups[&group].notice;
                    env.heartbeats.push(hb)
                }
                None => env.messages.push((group, m)),
            }
        }
    }

    /// Releases the group's Readies whose writes are synced: tells raft-rs (which may advance
    /// the leader's commit) and sends the messages that had to wait for the sync.
    fn release(&mut self, group: GroupId, out: &mut Out) {
        let persisted = self.persisted_seq;
        let r = self.groups.get_mut(&group).expect("group");
        let mut number = None;
        let mut msgs = Vec::new();
        while let Some(p) = r.pending.front() {
            if p.need_seq > persisted {
                break;
            }
            let p = r.pending.pop_front().expect("front");
            number = Some(p.number);
            msgs.extend(p.messages);
        }
        if let Some(n) = number {
            r.node.on_persist_ready(n);
        }
        self.send(out, group, msgs);
    }

    /// Returns the group's bytes in memory afterwards, and whether raft-rs asked for entries
    /// below the window.
    fn drive(&mut self, group: GroupId, out: &mut Out) -> (u64, bool) {
        loop {
            self.release(group, out);
            let r = self.groups.get_mut(&group).expect("group");
            if !r.node.has_ready() {
                break;
            }
            let mut rd = r.node.ready();
            let snapshot = (!rd.snapshot().is_empty()).then(|| {
                let meta = rd.snapshot().get_metadata();
                let offset = snapshot_offset(rd.snapshot())
                    .expect("a log-start snapshot carries its offset (`step` drops others)");
                (meta.index, meta.term, offset)
            });
            let must_sync = rd.must_sync() || snapshot.is_some();
            // A leader's messages may go before its own write (Raft thesis 10.2.1: the
            // leader's sync counts like a follower's, only once it is done).
            let now_msgs = rd.take_messages();
            let entries = rd.take_entries();
            let hard_state = rd.hs().cloned();
            let committed = rd.take_committed_entries();
            let later_msgs = rd.take_persisted_messages();
            let number = rd.number();
            // Confirmed reads (see `read_index`; the context is always our 8-byte token).
            for rs in rd.take_read_states() {
                if let Ok(token) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) {
                    out.effects.push(Effect::ReadIndex {
                        group,
                        token: u64::from_le_bytes(token),
                        index: rs.index,
                    });
                }
            }

            let snapshot_payload = crate::log::snapshot_payload(rd.snapshot());
            let snapshot_conf = snapshot.map(|_| {
                let cs = rd.snapshot().get_metadata().get_conf_state();
                (cs.voters.clone(), cs.learners.clone())
            });
            let r = self.groups.get_mut(&group).expect("group");
            if let Some((index, term, offset)) = snapshot {
                // (`finish` counts the bytes this frees.)
                r.node.mut_store().restart_at(index, term, offset);
                // The driver's state as of the restart point, if the group has one (the
                // controller's image): the driver takes it from the log, as the high
                // watermark passes entries it never saw.
                r.node.mut_store().set_snapshot_payload(snapshot_payload);
                // The snapshot holds no state, so it is applied as soon as the log restarts.
                // raft-rs 0.7 would leave `applied` below the new first index until told
                // otherwise, and `advance_apply_to` may not pass the persisted index; but a
                // campaign meanwhile reads entries from `applied + 1`, which the store no
                // longer has (raft-rs panics on `Compacted` there).
                r.node.raft.raft_log.applied = r.node.raft.raft_log.applied.max(index);
                // Our proposals up to the snapshot may or may not have committed; later ones
                // are gone with the log.
                for (_, (_, token)) in std::mem::take(&mut r.proposals) {
                    out.effects.push(Effect::Failed {
                        group,
                        token,
                        error: ProposeError::Indeterminate,
                    });
                }
                // The high watermark moves to the restart point at once: it is committed,
                // and no entry below it is left here for a reader to see (the partition log
                // restarts empty at `offset`). A crash before the restart is synced brings
                // the old log back, with its own commit index, as any restart does.
                if index > r.hw_index {
                    r.hw_index = index;
                    out.effects.push(Effect::HighWatermark {
                        group,
                        index,
                        offset,
                    });
                }
            }
            if !entries.is_empty() {
                let first = entries[0].index;
                r.node.mut_store().append(&entries);
                // Our proposals at replaced indexes lost to another leader's entries.
                let log = r.node.store();
                let lost: Vec<u64> = r
                    .proposals
                    .range(first..)
                    .filter(|(i, (t, _))| log.entry(**i).is_none_or(|e| e.term != *t))
                    .map(|(i, _)| *i)
                    .collect();
                for i in lost {
                    let (_, token) = r.proposals.remove(&i).expect("proposal");
                    out.effects.push(Effect::Failed {
                        group,
                        token,
                        error: ProposeError::Superseded,
                    });
                }
            }
            if let Some(hs) = &hard_state {
                r.node.mut_store().set_hard_state(hs.clone());
            }
            // Configuration changes apply as they commit (raft-rs hands out committed
            // entries only once they are synced here). Their result is written before the
            // hard state whose commit covers them: see `Write::Conf`.
            let mut conf = snapshot_conf;
            // The log-start entry among them (DeleteRecords) asking for the most: starts
            // only move up, so the others change nothing.
            let mut log_start: Option<(u64, i64)> = None;
            for e in &committed {
                if let Some(offset) = crate::log::log_start_of(e) {
                    if log_start.is_none_or(|(_, o)| offset > o) {
                        log_start = Some((e.index, offset));
                    }
                }
                if let Some(cc) = conf_change_of(e) {
                    match r.node.apply_conf_change(&cc) {
                        Ok(cs) => conf = Some((cs.voters, cs.learners)),
                        Err(_) => self.conf_change_errors += 1,
                    }
                }
            }
            if let Some((voters, learners)) = &conf {
                r.node
                    .mut_store()
                    .set_conf(voters, learners)
                    .expect("raft-rs keeps configurations without duplicates");
            }
            r.node.advance_append_async(rd);
            if let Some((index, term, offset)) = snapshot {
                self.write(
                    out,
                    Write::LogStart {
                        group,
                        index,
                        term,
                        offset,
                        reset: true,
                    },
                );
            }
            if !entries.is_empty() {
                self.write(out, Write::Entries { group, entries });
            }
            if let Some((voters, learners)) = conf {
                self.write(
                    out,
                    Write::Conf {
                        group,
                        voters,
                        learners,
                    },
                );
            }
            if let Some(hard_state) = hard_state {
                self.write(out, Write::HardState { group, hard_state });
            }
            let r = self.groups.get_mut(&group).expect("group");
            if must_sync {
                r.last_sync_seq = out.seq.expect("a must-sync Ready writes");
            }
            r.pending.push_back(PendingReady {
                need_seq: r.last_sync_seq,
                number,
                messages: later_msgs,
            });
            if let Some(last) = committed.last().map(|e| e.index) {
                Self::apply(group, r, last, out);
                r.node.advance_apply_to(last);
            }
            if let Some((index, offset)) = log_start {
                self.apply_log_start(group, index, offset, out);
            }
            // A snapshot is one message here (a log start, and at most the controller's
            // image, which its driver bounds to one frame): the leader counts it delivered at
            // once and probes from after it; if it was lost the follower's rejection sends
            // the leader back to a snapshot (raft-rs would otherwise wait for a report that
            // a sans-IO transport cannot give).
            let snap_to: Vec<u64> = now_msgs
                .iter()
                .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
                .map(|m| m.to)
                .collect();
            self.send(out, group, now_msgs);
            let r = self.groups.get_mut(&group).expect("group");
            for to in snap_to {
                r.node.report_snapshot(to, SnapshotStatus::Finish);
            }
        }
        let r = self.groups.get_mut(&group).expect("group");
        let s = r.status();
        let role = (s.role, s.term, s.leader);
        if role != r.role {
            r.role = role;
            out.effects.push(Effect::Role {
                group,
                role: s.role,
                term: s.term,
                leader: s.leader,
            });
        }
        let log = r.node.store();
        (log.window_bytes(), log.has_requests())
    }

    /// Entries up to `last` are committed and synced here: move the high watermark and settle
    /// our proposals at or below it.
    fn apply(group: GroupId, r: &mut Replica, last: u64, out: &mut Out) {
        assert!(last > r.hw_index, "high watermark must only move up");
        r.hw_index = last;
        let log = r.node.raft.raft_log.store();
        let settled: Vec<u64> = r.proposals.range(..=last).map(|(i, _)| *i).collect();
        for i in settled {
            let (term, token) = r.proposals.remove(&i).expect("proposal");
            let span = log.span(i).expect("committed entry in the log");
            out.effects.push(if span.term == term {
                Effect::Committed { group, token, span }
            } else {
                Effect::Failed {
                    group,
                    token,
                    error: ProposeError::Superseded,
                }
            });
        }
        out.effects.push(Effect::HighWatermark {
            group,
            index: last,
            offset: log.next_offset_after(last),
        });
    }
}

/// The configuration change an entry holds, if it is one (raft-rs's own proposals are
/// V2; V1 is decoded too, as raft-rs would accept one). One that does not decode is
/// ignored, as raft-rs ignored it when it was proposed.
fn conf_change_of(e: &Entry) -> Option<ConfChangeV2> {
    match e.get_entry_type() {
        EntryType::EntryConfChangeV2 => {
            let mut cc = ConfChangeV2::default();
            cc.merge_from_bytes(&e.data).ok()?;
            Some(cc)
        }
        EntryType::EntryConfChange => {
            let mut cc = ConfChange::default();
            cc.merge_from_bytes(&e.data).ok()?;
            Some(raft::prelude::ConfChangeV2 {
                changes: vec![{
                    let mut s = ConfChangeSingle::default();
                    s.set_change_type(cc.get_change_type());
                    s.node_id = cc.node_id;
                    s
                }]
                .into(),
                ..Default::default()
            })
        }
        EntryType::EntryNormal => None,
    }
}

/// The voter a reconfiguration towards `target` removes next (never `me`, the leader, which
/// hands over its leadership last), or `None`: one that is down or behind first. Removing a
/// live voter first could leave a configuration whose quorum needs a dead one: three voters
/// with one dead, shrinking to the leader, lose the live follower first, and the next
/// removal then needs the dead voter's acknowledgement and never commits. Removing the dead
/// one first keeps every step's quorum live as long as the current one is.
fn leaving_voter(
    voters: &[NodeId],
    target: &[NodeId],
    me: NodeId,
    caught_up: impl Fn(NodeId) -> bool,
) -> Option<NodeId> {
    let mut leaving = voters
        .iter()
        .copied()
        .filter(|n| !target.contains(n) && *n != me);
    let first = leaving.clone().next()?;
    Some(leaving.find(|&n| !caught_up(n)).unwrap_or(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(t: MessageType, from: u64, to: u64, term: u64, commit: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = from;
        m.to = to;
        m.term = term;
        m.commit = commit;
        m
    }

    #[test]
    fn heartbeats_compact_losslessly_and_others_do_not() {
        let hb = msg(MessageType::MsgHeartbeat, 1, 2, 5, 9);
        let c = Heartbeat::compact(7, &hb).expect("plain heartbeat compacts");
        assert_eq!(c.expand(1, 2), hb);
        let mut ctx = hb.clone();
        ctx.context = Bytes::from_static(b"read-index");
        assert_eq!(Heartbeat::compact(7, &ctx), None);
        assert_eq!(
            Heartbeat::compact(7, &msg(MessageType::MsgAppend, 1, 2, 5, 9)),
            None
        );
    }

    /// A snapshot message from a peer whose data does not start with a log-start offset (a
    /// hostile or broken peer: too short, or negative) is dropped; one with the offset is
    /// taken (what follows it is the driver's payload). Either way nothing panics.
    #[test]
    fn a_snapshot_without_a_log_start_offset_is_dropped() {
        let mut m = GroupManager::new(Config {
            node_id: 2,
            seed: 1,
            ..Default::default()
        });
        m.create_group(1, &[1, 2, 3]).unwrap();
        let before = m.status(1).unwrap().term;
        assert!(before < 7);
        for data in [&b""[..], b"1234567", &[0xff; 64]] {
            let mut snap = msg(MessageType::MsgSnapshot, 1, 2, 7, 0);
            let meta = snap.mut_snapshot().mut_metadata();
            meta.index = 50;
            meta.term = 7;
            meta.mut_conf_state().voters = vec![1, 2, 3];
            snap.mut_snapshot().data = Bytes::copy_from_slice(data);
            m.step(Envelope {
                from: 1,
                to: 2,
                heartbeats: Vec::new(),
                messages: vec![(1, snap)],
            });
            assert_eq!(m.status(1).unwrap().term, before, "dropped, term unchanged");
        }
    }

    /// Three managers with hand-delivered envelopes and hand-reported syncs.
    struct Trio {
        m: Vec<GroupManager>,
        /// Envelopes sent and not yet delivered.
        net: Vec<Envelope>,
        /// Per node: last persist seq written.
        written: Vec<u64>,
        /// Per node: every write, in the on-disk format (`wal`).
        disk: Vec<Vec<u8>>,
        /// Per node: every other effect, in order.
        seen: Vec<Vec<Effect>>,
        now: u64,
    }

    impl Trio {
        fn new() -> Self {
            let mut t = Trio {
                m: (1..=3)
                    .map(|id| {
                        GroupManager::new(Config {
                            node_id: id,
                            seed: 9,
                            ..Default::default()
                        })
                    })
                    .collect(),
                net: Vec::new(),
                written: vec![0; 3],
                disk: vec![Vec::new(); 3],
                seen: vec![Vec::new(); 3],
                now: 0,
            };
            for i in 0..3 {
                let fx = t.m[i].create_group(1, &[1, 2, 3]).unwrap();
                t.take(i, fx);
                t.sync(i);
            }
            t
        }
        fn take(&mut self, i: usize, fx: Vec<Effect>) -> Vec<Effect> {
            let mut rest = Vec::new();
            for e in fx {
                match e {
                    Effect::Send(env) => self.net.push(env),
                    Effect::Persist { seq, writes } => {
                        self.written[i] = seq;
                        for w in &writes {
                            crate::wal::encode_record(w, &mut self.disk[i]);
                        }
                    }
                    other => {
                        self.seen[i].push(other.clone());
                        rest.push(other)
                    }
                }
            }
            rest
        }
        fn sync(&mut self, i: usize) -> Vec<Effect> {
            let fx = self.m[i].persisted(self.written[i]);
            self.take(i, fx)
        }
        /// Delivers everything in flight (and what that sends) to nodes in `to`.
        fn deliver(&mut self, to: &[u64]) {
            let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.net)
                .into_iter()
                .partition(|e| to.contains(&e.to));
            self.net = later;
            for env in now {
                let i = env.to as usize - 1;
                let fx = self.m[i].step(env);
                self.take(i, fx);
            }
        }
        fn tick(&mut self, i: usize) {
            self.now += TICK_MS;
            let fx = self.m[i].tick(self.now);
            self.take(i, fx);
        }
        /// Runs everyone until the group has quiesced on all three replicas; returns the
        /// leader's index.
        fn quiesce_all(&mut self) -> usize {
            let up = [1, 2, 3];
            let mut rounds = 0;
            while !(0..3).all(|i| self.status(i).quiesced) {
                for i in 0..3 {
                    self.tick(i);
                    self.deliver(&up);
                    self.sync(i);
                    self.deliver(&up);
                }
                rounds += 1;
                assert!(
                    rounds < 2_000,
                    "never quiesced: {:?}",
                    (0..3).map(|i| self.status(i)).collect::<Vec<_>>()
                );
            }
            (0..3)
                .find(|&i| self.status(i).role == Role::Leader)
                .expect("leader")
        }
        fn status(&self, i: usize) -> GroupStatus {
            self.m[i].status(1).unwrap()
        }
        fn propose(&mut self, i: usize, token: u64) -> Vec<Effect> {
            let batch = Batch {
                records: 2,
                bytes: Bytes::from_static(b"xy"),
            };
            let fx = self.m[i].propose(1, ProposalToken(token), batch);
            self.take(i, fx)
        }
    }

    #[test]
    fn a_removed_group_fails_its_proposals_persists_its_removal_and_may_come_back() {
        let mut t = Trio::new();
        let l = t.quiesce_all();
        // Two proposals in flight on the leader (not delivered, not synced).
        assert!(matches!(&t.propose(l, 7)[..], [Effect::Proposed { .. }]));
        assert!(matches!(&t.propose(l, 8)[..], [Effect::Proposed { .. }]));
        assert!(t.m[l].cached_bytes() > 0);
        let fx = t.m[l].remove_group(1);
        let failed: Vec<u64> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Failed {
                    group: 1,
                    token,
                    error: ProposeError::NotLeader { leader: None },
                } => Some(token.0),
                _ => None,
            })
            .collect();
        assert_eq!(failed, vec![7, 8]);
        let writes: Vec<&Write> = fx
            .iter()
            .flat_map(|e| match e {
                Effect::Persist { writes, .. } => writes.iter().collect(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(writes, vec![&Write::Remove { group: 1 }]);
        t.take(l, fx);
        t.sync(l);
        assert!(t.m[l].status(1).is_none());
        assert_eq!(t.m[l].groups().count(), 0);
        assert_eq!(t.m[l].cached_bytes(), 0);
        assert!(t.m[l].remove_group(1).is_empty(), "already gone");
        let fx = t.m[l].propose(
            1,
            ProposalToken(9),
            Batch {
                records: 1,
                bytes: Bytes::from_static(b"z"),
            },
        );
        assert!(matches!(
            &fx[..],
            [Effect::Failed {
                error: ProposeError::UnknownGroup,
                ..
            }]
        ));
        // Ticks and messages for the group are ignored meanwhile.
        t.tick(l);
        t.deliver(&[1, 2, 3]);
        // Created again: a fresh replica with an empty log, in the term it last knew.
        let term = t.status((l + 1) % 3).term;
        let fx = t.m[l].create_group(1, &[1, 2, 3]).unwrap();
        t.take(l, fx);
        t.sync(l);
        let s = t.status(l);
        assert_eq!((s.last_index, s.commit_index, s.term), (0, 0, term));
    }

    /// The first voter of a new group campaigns at creation: with messages and syncs
    /// delivered but no clock running anywhere, it becomes the leader and commits its
    /// no-op. A later voter does not campaign by itself.
    #[test]
    fn the_preferred_replica_leads_a_new_group_without_waiting_for_a_timeout() {
        let mut t = Trio::new();
        for _ in 0..10 {
            for i in 0..3 {
                t.sync(i);
            }
            t.deliver(&[1, 2, 3]);
        }
        let s = t.status(0);
        assert_eq!((s.role, s.leader), (Role::Leader, Some(1)), "{s:?}");
        assert!(s.ready, "its no-op committed: {s:?}");
        for i in 1..3 {
            assert_eq!(t.status(i).leader, Some(1));
        }

        // Voters [2, 1, 3] created on node 1 only: node 1 is not first, so no campaign
        // and nothing to send.
        let fx = t.m[0].create_group(2, &[2, 1, 3]).unwrap();
        assert!(!fx.iter().any(|e| matches!(e, Effect::Send(_))), "{fx:?}");
        assert_eq!(t.m[0].status(2).unwrap().role, Role::Follower);
    }

    #[test]
    fn leadership_moves_to_the_voter_it_is_transferred_to() {
        let mut t = Trio::new();
        let leader = t.quiesce_all();
        let to = ((leader + 1) % 3) as u64 + 1;
        let term = t.status(leader).term;
        // Not a voter, or this node itself, or asked of a follower: nothing happens.
        assert!(t.m[leader].transfer_leader(1, 9).is_empty());
        assert!(t.m[leader].transfer_leader(1, leader as u64 + 1).is_empty());
        assert!(t.m[to as usize - 1].transfer_leader(1, to).is_empty());
        let fx = t.m[leader].transfer_leader(1, to);
        t.take(leader, fx);
        let up = [1, 2, 3];
        let mut rounds = 0;
        while t.status(to as usize - 1).role != Role::Leader || !t.status(to as usize - 1).ready {
            for i in 0..3 {
                t.deliver(&up);
                t.sync(i);
            }
            t.tick(leader);
            rounds += 1;
            assert!(rounds < 200, "leadership never moved to {to}");
        }
        assert_ne!(t.status(leader).role, Role::Leader);
        assert!(
            t.status(to as usize - 1).term > term,
            "a new term, as any election"
        );
    }

    /// ReadIndex: a quiesced leader's confirmation needs a quorum's answers to heartbeats
    /// sent after the request (none while its followers are cut off, so a deposed leader
    /// cannot confirm), and followers are never asked.
    #[test]
    fn a_leader_confirms_reads_only_with_a_quorums_answers_after_the_request() {
        let confirmed = |fx: &[Effect], want: u64| {
            fx.iter()
                .any(|e| matches!(e, Effect::ReadIndex { group: 1, token, .. } if *token == want))
        };
        let mut t = Trio::new();
        let l = t.quiesce_all();
        let f = (l + 1) % 3;
        assert_eq!(t.m[f].read_index(1, 5), (false, Vec::new()), "a follower");
        let (asked, fx) = t.m[l].read_index(1, 6);
        assert!(asked);
        assert!(!t.status(l).quiesced, "a pending read wakes the leader");
        let fx = t.take(l, fx);
        assert!(!confirmed(&fx, 6), "not before anyone answered");
        // The heartbeats reach nobody: nothing is confirmed, however long.
        t.net.clear();
        for _ in 0..5 {
            t.sync(l);
            assert!(!t.seen[l]
                .iter()
                .any(|e| matches!(e, Effect::ReadIndex { .. })));
        }
        // A second request, delivered: one follower's answer is a quorum with the leader.
        let (_, fx) = t.m[l].read_index(1, 7);
        t.take(l, fx);
        let index = t.status(l).commit_index;
        t.deliver(&[f as u64 + 1]);
        t.deliver(&[l as u64 + 1]);
        assert!(
            t.seen[l].iter().any(|e| matches!(
                e,
                Effect::ReadIndex { group: 1, token: 7, index: i } if *i == index
            )),
            "{:?}",
            t.seen[l]
        );
    }

    /// A fenced node (controlled shutdown) hands its leadership away and never takes one:
    /// it ignores a transfer to itself, and when the leader it follows dies it does not
    /// campaign, while the unfenced follower does and wins with the fenced node's vote.
    #[test]
    fn a_fenced_node_hands_leadership_away_and_never_campaigns() {
        let mut t = Trio::new();
        let leader = t.quiesce_all();
        let up = [1, 2, 3];
        t.m[leader].stop_campaigning();
        assert!(t.m[leader].campaigning_stopped());
        let to = (leader + 1) % 3;
        let fx = t.m[leader].transfer_leader(1, to as u64 + 1);
        t.take(leader, fx);
        let mut rounds = 0;
        while t.status(to).role != Role::Leader || !t.status(to).ready {
            for i in 0..3 {
                t.deliver(&up);
                t.sync(i);
            }
            t.tick(leader);
            rounds += 1;
            assert!(rounds < 200, "leadership never moved to {}", to + 1);
        }
        let fenced = leader;
        // The new leader hands it back: the fenced node drops the MsgTimeoutNow.
        let term = t.status(to).term;
        let fx = t.m[to].transfer_leader(1, fenced as u64 + 1);
        t.take(to, fx);
        for _ in 0..50 {
            for i in 0..3 {
                t.deliver(&up);
                t.sync(i);
                t.tick(i);
            }
        }
        assert_ne!(t.status(fenced).role, Role::Leader);
        assert_eq!(t.status(fenced).term, term, "no election at all");
        // The new leader dies: the fenced node never campaigns, the other follower does.
        let other = 3 - fenced - to;
        let alive = [fenced as u64 + 1, other as u64 + 1];
        t.net.clear();
        for &i in &[fenced, other] {
            t.m[i].set_node_alive(to as u64 + 1, false);
        }
        // Only the fenced node's clock runs, for many election timeouts: nothing happens.
        let term = t.status(fenced).term;
        for _ in 0..10 * ELECTION_TICKS {
            t.tick(fenced);
        }
        assert!(t.net.is_empty(), "the fenced node campaigned: {:?}", t.net);
        assert_eq!(t.status(fenced).term, term);
        for _ in 0..400 {
            for &i in &[fenced, other] {
                t.tick(i);
                t.deliver(&alive);
                t.sync(i);
                t.deliver(&alive);
            }
            t.net.retain(|e| alive.contains(&e.to));
            if t.status(other).role == Role::Leader {
                break;
            }
        }
        assert_eq!(
            t.status(other).role,
            Role::Leader,
            "elected with the fenced vote"
        );
        assert_ne!(t.status(fenced).role, Role::Leader);
        assert_eq!(t.status(fenced).leader, Some(other as u64 + 1));
    }

    #[test]
    fn followers_ack_after_their_sync_and_a_new_leader_waits_for_its_noop() {
        let mut t = Trio::new();
        // Only node 1's clock runs: it campaigns; every write is synced at once until it
        // leads.
        while t.status(0).role != Role::Leader {
            t.tick(0);
            for _ in 0..4 {
                t.deliver(&[1, 2, 3]);
                for i in 0..3 {
                    t.sync(i);
                }
            }
            assert!(t.now < 60_000, "no leader");
        }
        // Leader, but its no-op has not committed: it refuses proposals.
        assert!(!t.status(0).ready);
        assert!(matches!(
            &t.propose(0, 1)[..],
            [Effect::Failed {
                error: ProposeError::NotReady,
                ..
            }]
        ));
        // Followers get the no-op but do not sync it: they send nothing back.
        t.deliver(&[2, 3]);
        assert!(t.net.iter().all(|e| e.from == 1), "acked before the sync");
        t.sync(0);
        assert!(!t.status(0).ready);
        // One follower syncs: its ack goes out and makes a quorum with the leader.
        t.sync(1);
        assert!(t.net.iter().any(|e| e.from == 2));
        t.deliver(&[1]);
        assert!(t.status(0).ready);
        // A batch commits once the leader and one follower have synced it (after the no-op,
        // which occupies offset 0).
        let fx = t.propose(0, 2);
        assert!(
            matches!(&fx[..], [Effect::Proposed { span, .. }] if span.base == 1 && span.term == t.status(0).term)
        );
        t.deliver(&[2, 3]);
        t.sync(0);
        t.deliver(&[1]);
        assert_eq!(
            t.status(0).high_watermark,
            1,
            "committed without a follower's sync"
        );
        // Node 3 never acked the no-op, so the leader probes it one append at a time; node 2
        // stays unsynced throughout, so the commit below is the leader's and node 3's.
        for _ in 0..4 {
            t.sync(2);
            t.deliver(&[1, 3]);
        }
        assert_eq!(t.status(0).high_watermark, 3);
        assert_eq!(t.status(2).high_watermark, 3);
    }

    #[test]
    fn idle_group_quiesces_and_a_dead_leaders_followers_elect_on_the_liveness_report() {
        let mut t = Trio::new();
        let leader = t.quiesce_all();
        let term = t.status(leader).term;
        // Quiet: ticks send nothing at all.
        t.net.clear();
        for _ in 0..100 {
            for i in 0..3 {
                t.tick(i);
            }
        }
        assert!(t.net.is_empty(), "a quiesced group sent {:?}", t.net);
        // The leader's node dies; without a report its followers would wait forever. Told,
        // they wake, campaign and elect one of themselves.
        let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
        let alive: Vec<u64> = rest.iter().map(|&i| i as u64 + 1).collect();
        for &i in &rest {
            t.m[i].set_node_alive(leader as u64 + 1, false);
            assert!(!t.status(i).quiesced);
        }
        let mut rounds = 0;
        while !rest
            .iter()
            .any(|&i| t.status(i).role == Role::Leader && t.status(i).ready)
        {
            for &i in &rest {
                t.tick(i);
                t.deliver(&alive);
                t.sync(i);
                t.deliver(&alive);
            }
            t.net.retain(|e| e.to != leader as u64 + 1);
            rounds += 1;
            assert!(rounds < 2_000, "no new leader");
        }
        let new = rest
            .iter()
            .find(|&&i| t.status(i).role == Role::Leader)
            .unwrap();
        assert!(t.status(*new).term > term);
    }

    /// Followers told that their leader's node died end its lease at once: each is past the
    /// (unrandomized) election timeout, so the first pre-vote is granted, and a new leader
    /// is in place within one election timeout's worth of ticks instead of one to two
    /// timeouts after the last heartbeat.
    #[test]
    fn a_dead_leader_report_ends_its_lease() {
        let mut t = Trio::new();
        let leader = t.quiesce_all();
        let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
        let alive: Vec<u64> = rest.iter().map(|&i| i as u64 + 1).collect();
        for &i in &rest {
            t.m[i].set_node_alive(leader as u64 + 1, false);
            let raft = &t.m[i].groups[&1].node.raft;
            assert!(
                raft.election_elapsed >= raft.election_timeout(),
                "replica {i}"
            );
        }
        let mut ticks = 0;
        while !rest.iter().any(|&i| t.status(i).role == Role::Leader) {
            for &i in &rest {
                t.tick(i);
                t.deliver(&alive);
                t.sync(i);
                t.deliver(&alive);
            }
            t.net.retain(|e| e.to != leader as u64 + 1);
            ticks += 1;
            assert!(
                ticks <= ELECTION_TICKS + 2,
                "no new leader after {ticks} ticks"
            );
        }
    }

    #[test]
    fn only_a_quiesced_leader_is_a_quiesced_leader_until_it_wakes() {
        let mut t = Trio::new();
        assert!((0..3).all(|i| !t.m[i].quiesced_leader(1)));
        let leader = t.quiesce_all();
        for i in 0..3 {
            assert_eq!(t.m[i].quiesced_leader(1), i == leader, "replica {i}");
        }
        assert!(!t.m[leader].quiesced_leader(2), "no such group");
        // A proposal wakes it.
        t.propose(leader, 1);
        assert!(!t.m[leader].quiesced_leader(1));
        t.quiesce_all();
        // So does a report that a follower's node died.
        let f = (leader + 1) % 3;
        assert!(t.m[leader].quiesced_leader(1));
        t.m[leader].set_node_alive(f as u64 + 1, false);
        assert!(!t.m[leader].quiesced_leader(1));
    }

    /// Replica `from`'s compact heartbeat for group 1 to replica `to` (node ids are index + 1).
    fn heartbeat_envelope(
        from: usize,
        to: usize,
        term: u64,
        commit: u64,
        quiesce: bool,
    ) -> Envelope {
        Envelope {
            from: from as u64 + 1,
            to: to as u64 + 1,
            heartbeats: vec![Heartbeat {
                group: 1,
                response: false,
                term,
                commit,
                quiesce,
            }],
            messages: Vec::new(),
        }
    }

    /// A heartbeat naming a commit index past the end of a follower's log (the follower lost
    /// entries it acknowledged) is dropped and counted; raft-rs would panic on it.
    #[test]
    fn a_heartbeat_past_the_log_is_dropped_not_a_panic() {
        let mut t = Trio::new();
        let leader = t.quiesce_all();
        let st = t.status(leader);
        let f = (0..3).find(|&i| i != leader).unwrap();
        let last = t.m[f].log(1).unwrap().last_index();
        let hb = |commit| heartbeat_envelope(leader, f, st.term, commit, false);
        let fx = t.m[f].step(hb(last + 5));
        t.take(f, fx);
        assert_eq!(t.m[f].heartbeats_past_log(), 1);
        assert_eq!(t.status(f).commit_index, st.commit_index);
        let fx = t.m[f].step(hb(last));
        t.take(f, fx);
        assert_eq!(
            t.m[f].heartbeats_past_log(),
            1,
            "one within the log is stepped"
        );
    }

    /// The leader's quiesce notice, sent just before its node died, arrives after the
    /// follower was told the node is dead: the follower stays awake (else, every follower
    /// racing the same way, the group would wait for ever for a dead leader). And a quiesced
    /// leader told that a follower's node is dead wakes, so check-quorum can depose it if it
    /// has lost its quorum.
    #[test]
    fn a_late_quiesce_notice_from_a_dead_leader_is_not_followed() {
        let mut t = Trio::new();
        let leader = t.quiesce_all();
        let st = t.status(leader);
        let f = (0..3).find(|&i| i != leader).unwrap();
        t.m[f].set_node_alive(leader as u64 + 1, false);
        assert!(!t.status(f).quiesced, "woken by the report");
        let late = heartbeat_envelope(leader, f, st.term, st.commit_index, true);
        let fx = t.m[f].step(late);
        t.take(f, fx);
        assert!(
            !t.status(f).quiesced,
            "a notice after a dead report is not followed"
        );

        let other = (0..3).find(|&i| i != leader && i != f).unwrap();
        assert!(t.status(leader).quiesced);
        t.m[leader].set_node_alive(other as u64 + 1, false);
        assert!(
            !t.status(leader).quiesced,
            "the leader wakes to check its quorum"
        );
        for _ in 0..200 {
            t.tick(leader);
        }
        assert!(
            !t.status(leader).quiesced,
            "it does not settle again while a replica's node is reported dead"
        );
    }

    /// Runs every node (ticks, deliveries, syncs) until `done`, at most `rounds` rounds.
    fn run_until(t: &mut Trio, rounds: usize, mut done: impl FnMut(&mut Trio) -> bool) {
        for _ in 0..rounds {
            if done(t) {
                return;
            }
            for i in 0..3 {
                t.tick(i);
                t.deliver(&[1, 2, 3]);
                t.sync(i);
                t.deliver(&[1, 2, 3]);
            }
        }
        panic!("never done");
    }

    #[test]
    fn a_log_start_entry_moves_every_replicas_start_as_it_commits() {
        let mut t = Trio::new();
        let l = t.quiesce_all();
        assert!(t.status(l).serving);
        assert!((0..3).filter(|&i| i != l).all(|i| !t.status(i).serving));
        // The no-op holds offset 0, then five batches of two records: 1..=10.
        for token in 1..=5 {
            t.propose(l, token);
        }
        run_until(&mut t, 200, |t| {
            (0..3).all(|i| t.status(i).high_watermark == 11)
        });
        // Past the high watermark, or negative: refused (Kafka's OFFSET_OUT_OF_RANGE).
        for bad in [12, -1] {
            let fx = t.m[l].propose_log_start(1, ProposalToken(50), bad);
            assert!(matches!(
                &fx[..],
                [Effect::Failed {
                    error: ProposeError::InvalidBatch,
                    ..
                }]
            ));
        }
        // On a follower: not the leader.
        let f = (l + 1) % 3;
        let fx = t.m[f].propose_log_start(1, ProposalToken(51), 6);
        assert!(matches!(
            &fx[..],
            [Effect::Failed {
                error: ProposeError::NotLeader { .. },
                ..
            }]
        ));
        // Inside the batch at 5..=6: every replica's start becomes 6 as the entry commits
        // there, and its Raft log starts at that batch's entry (index 4, offset 5).
        let fx = t.m[l].propose_log_start(1, ProposalToken(52), 6);
        assert!(fx.iter().any(|e| matches!(
            e,
            Effect::Proposed { span, .. } if span.base == 11 && span.records == 1
        )));
        t.take(l, fx);
        let moved = |t: &Trio, i: usize| {
            t.seen[i].iter().any(|e| {
                matches!(
                    e,
                    Effect::LogStartOffset {
                        index: 7,
                        offset: 6,
                        ..
                    }
                )
            })
        };
        run_until(&mut t, 200, |t| (0..3).all(|i| moved(t, i)));
        assert!(t.seen[l]
            .iter()
            .any(|e| matches!(e, Effect::Committed { token: ProposalToken(52), span, .. } if span.base == 11)));
        for i in 0..3 {
            let log = t.m[i].log(1).unwrap();
            assert_eq!((log.first_index(), log.start_offset()), (4, 5), "node {i}");
            assert_eq!(t.status(i).high_watermark, 12);
            // Once only, and what it asks for never passes the entry itself.
            let n = t.seen[i]
                .iter()
                .filter(|e| matches!(e, Effect::LogStartOffset { .. }))
                .count();
            assert_eq!(n, 1);
            // The Raft log start is persisted (replayed from what was written).
            let replayed = crate::wal::replay(&t.disk[i]).unwrap();
            let rlog = &replayed.logs[&1];
            assert_eq!(rlog.start_offset(), 5, "node {i}");
        }
        // A lower start later changes nothing on the Raft log (the driver keeps the max).
        let fx = t.m[l].propose_log_start(1, ProposalToken(53), 2);
        t.take(l, fx);
        run_until(&mut t, 200, |t| {
            (0..3).all(|i| t.status(i).high_watermark == 13)
        });
        for i in 0..3 {
            let log = t.m[i].log(1).unwrap();
            assert_eq!((log.first_index(), log.start_offset()), (4, 5), "node {i}");
        }
        // A follower that is behind the Raft log start gets a snapshot and then the rest,
        // the next log-start entry included.
        let lagging = (l + 2) % 3;
        let up: Vec<u64> = (0..3)
            .filter(|&i| i != lagging)
            .map(|i| i as u64 + 1)
            .collect();
        // 50 rounds among the two up nodes; whatever is sent to the lagging one is lost.
        let without_lagging = |t: &mut Trio| {
            for _ in 0..50 {
                for i in 0..3 {
                    if i != lagging {
                        t.tick(i);
                        t.sync(i);
                    }
                }
                t.deliver(&up);
                t.net.retain(|e| e.to != lagging as u64 + 1);
            }
        };
        for token in 60..63 {
            t.propose(l, token);
        }
        without_lagging(&mut t);
        assert_eq!(t.status(l).high_watermark, 19);
        let fx = t.m[l].propose_log_start(1, ProposalToken(64), 17);
        t.take(l, fx);
        without_lagging(&mut t);
        assert_eq!(t.m[l].log(1).unwrap().first_index(), 11);
        run_until(&mut t, 400, |t| t.status(lagging).high_watermark == 20);
        // (It was restarted by a snapshot at the leader's Raft log start.)
        assert_eq!(t.m[lagging].log(1).unwrap().first_index(), 11);
        assert!(t.seen[lagging]
            .iter()
            .any(|e| matches!(e, Effect::LogStartOffset { offset: 17, .. })));
    }

    /// The controller's compaction: the leader drops its log up to an applied index and
    /// keeps the driver's state; a follower behind that start gets the state in the
    /// snapshot, restarts its log there (written as a reset log start) and keeps the state
    /// to send on if it leads.
    #[test]
    fn a_snapshot_payload_reaches_a_lagging_follower() {
        let mut t = Trio::new();
        for m in &mut t.m {
            m.cfg.payload_group = Some(1);
        }
        let l = t.quiesce_all();
        let lagging = (l + 1) % 3;
        let up: Vec<u64> = (0..3)
            .filter(|&i| i != lagging)
            .map(|i| i as u64 + 1)
            .collect();
        for token in 1..=4 {
            t.propose(l, token);
        }
        for _ in 0..50 {
            for i in 0..3 {
                if i != lagging {
                    t.tick(i);
                    t.sync(i);
                }
            }
            t.deliver(&up);
            t.net.retain(|e| e.to != lagging as u64 + 1);
        }
        let hw = t.status(l).hw_index;
        assert_eq!(hw, 5);
        // Past the high watermark: refused.
        assert!(t.m[l]
            .compact_to_snapshot(1, hw + 1, Bytes::from_static(b"x"))
            .is_empty());
        let fx = t.m[l].compact_to_snapshot(1, 4, Bytes::from_static(b"image@4"));
        t.take(l, fx);
        let log = t.m[l].log(1).unwrap();
        assert_eq!(
            (log.first_index(), &log.snapshot_payload()[..]),
            (5, &b"image@4"[..])
        );
        // Not again at or below the start.
        assert!(t.m[l]
            .compact_to_snapshot(1, 4, Bytes::from_static(b"y"))
            .is_empty());
        run_until(&mut t, 400, |t| t.status(lagging).hw_index == 5);
        let log = t.m[lagging].log(1).unwrap();
        assert_eq!(log.start().0, 4);
        assert_eq!(&log.snapshot_payload()[..], b"image@4");
        // Its disk says the log restarts at 4 (the driver keeps the payload).
        let replayed = crate::wal::replay(&t.disk[lagging]).unwrap();
        assert_eq!(replayed.logs[&1].first_index(), 5);
    }

    /// A partition group's snapshot is exactly its offset: one carrying a payload (which
    /// only the controller's group may) is dropped by the follower, not installed or kept.
    #[test]
    fn a_partition_group_drops_a_snapshot_with_a_payload() {
        let mut t = Trio::new();
        let l = t.quiesce_all();
        let lagging = (l + 1) % 3;
        let up: Vec<u64> = (0..3)
            .filter(|&i| i != lagging)
            .map(|i| i as u64 + 1)
            .collect();
        for token in 1..=4 {
            t.propose(l, token);
        }
        for _ in 0..50 {
            for i in 0..3 {
                if i != lagging {
                    t.tick(i);
                    t.sync(i);
                }
            }
            t.deliver(&up);
            t.net.retain(|e| e.to != lagging as u64 + 1);
        }
        assert_eq!(t.status(l).hw_index, 5);
        // A peer that keeps a payload for group 1 (as a misbehaving node could).
        let fx = t.m[l].compact_to_snapshot(1, 4, Bytes::from_static(b"big"));
        t.take(l, fx);
        for _ in 0..200 {
            for i in 0..3 {
                t.tick(i);
                t.sync(i);
            }
            t.deliver(&[1, 2, 3]);
        }
        let log = t.m[lagging].log(1).unwrap();
        assert_eq!(log.start().0, 0, "the snapshot was not installed");
        assert!(log.snapshot_payload().is_empty());
    }

    /// The leader of `group` among the three, if one is ready.
    fn leader_of(t: &Trio, group: GroupId) -> Option<usize> {
        (0..3).find(|&i| {
            t.m[i]
                .status(group)
                .is_some_and(|s| s.role == Role::Leader && s.ready)
        })
    }

    /// Three voters, the higher-numbered follower dead, shrink to the leader: the dead
    /// voter is removed first (removing the live one first would leave two voters, one of
    /// them dead, and the second removal could never commit).
    #[test]
    fn a_shrink_removes_a_dead_voter_before_a_live_one() {
        let mut t = Trio::new();
        run_until(&mut t, 500, |t| leader_of(t, 1).is_some());
        let l = leader_of(&t, 1).unwrap();
        let others: Vec<usize> = (0..3).filter(|&i| i != l).collect();
        let (live, dead) = (others[0], others[1]);
        let ids = |i: usize| i as NodeId + 1;
        for i in [l, live] {
            t.m[i].set_node_alive(ids(dead), false);
        }
        let up = [ids(l), ids(live)];
        let mut steps = Vec::new();
        for _ in 0..2_000 {
            for i in [l, live] {
                t.tick(i);
                t.deliver(&up);
                t.sync(i);
                t.deliver(&up);
            }
            let (m, fx) = t.m[l].reconfigure(1, &[ids(l)]);
            t.take(l, fx);
            match m {
                Membership::Stepped(s) => steps.push(s),
                Membership::Done => break,
                _ => {}
            }
        }
        assert_eq!(
            steps,
            [
                MembershipStep::Remove(ids(dead)),
                MembershipStep::Remove(ids(live))
            ]
        );
        assert_eq!(t.m[l].conf(1), Some((vec![ids(l)], vec![])));
    }

    /// A group on nodes {1, 2} moves to {2, 3}: 3 joins as a learner, is promoted once
    /// caught up, 1 leaves (after handing over its leadership if it led). Batches
    /// committed before, during and after stay committed at their offsets on the new set,
    /// and the configuration survives a restart from the written state.
    #[test]
    fn a_group_moves_to_a_new_replica_set_one_step_at_a_time() {
        let mut t = Trio::new();
        for i in 0..2 {
            let fx = t.m[i].create_group(2, &[1, 2]).unwrap();
            t.take(i, fx);
        }
        run_until(&mut t, 500, |t| leader_of(t, 2).is_some());
        let l = leader_of(&t, 2).unwrap();
        let (m, fx) = t.m[l].reconfigure(2, &[2, 3]);
        assert_eq!(m, Membership::Stepped(MembershipStep::AddLearner(3)));
        t.take(l, fx);
        // One change at a time.
        assert_eq!(t.m[l].reconfigure(2, &[2, 3]).0, Membership::Pending);
        let batch = |n: u8| Batch {
            records: 1,
            bytes: Bytes::from(vec![n; 3]),
        };
        let mut committed = Vec::new();
        let fx = t.m[l].propose(2, ProposalToken(1), batch(1));
        t.take(l, fx);
        // The learner is created from the configuration before the change.
        let fx = t.m[2].create_learner(2, &[1, 2]).unwrap();
        t.take(2, fx);
        assert_eq!(t.m[2].conf(2), Some((vec![1, 2], vec![3])));
        assert_eq!(t.m[2].create_learner(2, &[1, 2]), Err(Error::GroupExists));
        let mut steps = Vec::new();
        let mut token = 1;
        run_until(&mut t, 3_000, |t| {
            let Some(l) = leader_of(t, 2) else {
                return false;
            };
            token += 1;
            let fx = t.m[l].propose(2, ProposalToken(token), batch(token as u8));
            for e in t.take(l, fx) {
                if let Effect::Committed { span, .. } = e {
                    committed.push(span);
                }
            }
            let (m, fx) = t.m[l].reconfigure(2, &[2, 3]);
            t.take(l, fx);
            match m {
                Membership::Stepped(s) => {
                    steps.push(s);
                    false
                }
                Membership::Done => true,
                _ => false,
            }
        });
        assert_eq!(
            steps.first(),
            Some(&MembershipStep::Promote(3)),
            "{steps:?}"
        );
        assert!(steps.contains(&MembershipStep::Remove(1)), "{steps:?}");
        let l = leader_of(&t, 2).unwrap();
        assert_ne!(l, 0, "node 1 handed over its leadership");
        for i in [1, 2] {
            assert_eq!(t.m[i].conf(2), Some((vec![2, 3], vec![])), "node {}", i + 1);
        }
        // Node 1 is out: the others no longer send to it, and it may be removed.
        let fx = t.m[0].remove_group(2);
        t.take(0, fx);
        // The new set still commits; the learner-turned-voter holds the same log.
        run_until(&mut t, 500, |t| {
            let (a, b) = (t.m[1].status(2).unwrap(), t.m[2].status(2).unwrap());
            a.hw_index == b.hw_index && a.hw_index == a.last_index && b.hw_index == b.last_index
        });
        let (a, b) = (t.m[1].log(2).unwrap(), t.m[2].log(2).unwrap());
        for i in 1..=a.last_index() {
            assert_eq!(
                a.entry(i).map(|e| &e.data),
                b.entry(i).map(|e| &e.data),
                "{i}"
            );
            assert_eq!(a.span(i), b.span(i));
        }
        assert!(t.m[1].conf_change_errors() + t.m[2].conf_change_errors() == 0);
        // Restarted from what it wrote, node 3 is a voter of {2, 3}.
        let replayed = crate::wal::replay(&t.disk[2]).unwrap();
        let m = GroupManager::recover(
            Config {
                node_id: 3,
                ..Default::default()
            },
            replayed.logs,
        )
        .unwrap();
        assert_eq!(m.conf(2), Some((vec![2, 3], vec![])));
        // Node 1's state says the group is gone; created again, it starts in the term it
        // last knew, having "voted" for itself, so it votes for nobody else in that term.
        let replayed = crate::wal::replay(&t.disk[0]).unwrap();
        assert!(!replayed.logs.contains_key(&2));
        let fx = t.m[0].create_learner(2, &[2, 3]).unwrap();
        let hs = t.m[0].log(2).unwrap().hard_state().clone();
        assert!(hs.term > 0 && hs.vote == 1, "{hs:?}");
        assert!(fx.iter().any(|e| matches!(e, Effect::Persist { writes, .. }
            if writes.iter().any(|w| matches!(w, Write::HardState { .. })))));
    }

    /// A replica created as a learner cannot be given a configuration that makes it a
    /// voter or names a node twice; a voter must be among its voters.
    #[test]
    fn a_learner_must_be_created_as_a_learner() {
        let mut m = GroupManager::new(Config {
            node_id: 3,
            ..Default::default()
        });
        assert_eq!(m.create_learner(1, &[1, 3]), Err(Error::InvalidVoters));
        assert_eq!(m.create_learner(1, &[1, 2, 2]), Err(Error::InvalidVoters));
        assert_eq!(m.create_group(1, &[1, 2]), Err(Error::InvalidVoters));
        assert!(m.create_learner(1, &[1, 2]).is_ok());
        assert_eq!(m.conf(1), Some((vec![1, 2], vec![3])));
        assert_eq!(m.reconfigure(1, &[3]).0, Membership::NotLeader);
    }

    #[test]
    fn single_voter_group_commits_only_after_the_sync() {
        let mut m = GroupManager::new(Config {
            node_id: 1,
            ..Default::default()
        });
        let fx = m.create_group(10, &[1]).unwrap();
        let seq = match &fx[..] {
            [Effect::Persist { seq, .. }] => *seq,
            other => panic!("{other:?}"),
        };
        m.persisted(seq);
        // Elect itself (a one-voter group needs nobody's vote) and sync each step.
        let mut now = 0;
        while m.status(10).unwrap().role != Role::Leader || !m.status(10).unwrap().ready {
            now += TICK_MS;
            for e in m.tick(now) {
                if let Effect::Persist { seq, .. } = e {
                    m.persisted(seq);
                }
            }
            assert!(now < 10_000, "no leader");
        }
        let batch = Batch {
            records: 3,
            bytes: Bytes::from_static(b"abc"),
        };
        let fx = m.propose(10, ProposalToken(1), batch);
        assert!(fx
            .iter()
            .any(|e| matches!(e, Effect::Proposed { span, .. } if span.base == 1)));
        assert!(!fx.iter().any(|e| matches!(e, Effect::Committed { .. })));
        // The committed no-op occupies offset 0.
        assert_eq!(m.status(10).unwrap().high_watermark, 1);
        let seq = fx
            .iter()
            .find_map(|e| match e {
                Effect::Persist { seq, .. } => Some(*seq),
                _ => None,
            })
            .expect("the entry is written");
        let fx = m.persisted(seq);
        assert!(fx
            .iter()
            .any(|e| matches!(e, Effect::Committed { span, .. } if span.next() == 4)));
        assert_eq!(m.status(10).unwrap().high_watermark, 4);
    }

    /// A log of committed entries (a one-replica partition log the store adopted) becomes
    /// a single-voter group: only with this node its voter, once; it leads at once in a
    /// term past its entries', and its no-op and new batches follow the adopted offsets.
    #[test]
    fn an_adopted_log_leads_in_a_newer_term_after_its_entries() {
        let adopted = |voters: &[u64]| {
            let mut log = ReplicaLog::restored(voters, (0, 0, 0));
            for i in 0..5 {
                log.push_applied(OffsetSpan {
                    base: i * 2,
                    records: 2,
                    term: 1,
                });
            }
            log.set_hard_state(HardState {
                term: 1,
                commit: 5,
                ..Default::default()
            });
            log
        };
        let mut m = GroupManager::new(Config {
            node_id: 1,
            ..Default::default()
        });
        assert_eq!(m.adopt_group(4, adopted(&[2])), Err(Error::InvalidVoters));
        let fx = m.adopt_group(4, adopted(&[1])).unwrap();
        assert_eq!(m.adopt_group(4, adopted(&[1])), Err(Error::GroupExists));
        let st = m.status(4).unwrap();
        assert_eq!((st.role, st.term), (Role::Leader, 2));
        let mut pending: Vec<Effect> = fx;
        let mut now = 0;
        while !m.status(4).unwrap().ready {
            for e in std::mem::take(&mut pending) {
                if let Effect::Persist { seq, .. } = e {
                    pending.extend(m.persisted(seq));
                }
            }
            now += TICK_MS;
            pending.extend(m.tick(now));
            assert!(now < 10_000, "never ready");
        }
        // The no-op is entry 6 at offset 10.
        assert_eq!(m.status(4).unwrap().high_watermark, 11);
        let fx = m.propose(
            4,
            ProposalToken(1),
            Batch {
                records: 1,
                bytes: Bytes::from_static(b"x"),
            },
        );
        assert!(fx.iter().any(
            |e| matches!(e, Effect::Proposed { span, .. } if span.base == 11 && span.term == 2)
        ));
    }
}
