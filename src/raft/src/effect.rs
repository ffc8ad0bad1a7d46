//! What the group manager asks its driver to do (send, persist, acknowledge, publish a high
//! watermark) and the node-to-node envelope that carries every group's Raft messages.

use raft::eraftpb::{Entry, HardState, Message, MessageType};

use crate::log::OffsetSpan;

/// A node (broker) id; a replica's Raft id is its node's id.
pub type NodeId = u64;
/// A Raft group: one partition's replica set.
pub type GroupId = u64;

/// Opaque handle of a proposal, chosen by the caller (e.g. the produce request waiting on it),
/// handed back exactly once in [`Effect::Committed`] or [`Effect::Failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProposalToken(pub u64);

/// A replica's role, as Raft names it (`PreCandidate` is pre-vote's probe before a campaign).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl From<raft::StateRole> for Role {
    fn from(r: raft::StateRole) -> Self {
        match r {
            raft::StateRole::Follower => Role::Follower,
            raft::StateRole::PreCandidate => Role::PreCandidate,
            raft::StateRole::Candidate => Role::Candidate,
            raft::StateRole::Leader => Role::Leader,
        }
    }
}

/// Why a proposal was refused or did not commit. The broker maps these to Kafka errors
/// (`NotLeader`/`NotReady`/`Superseded` to NOT_LEADER_OR_FOLLOWER with the leader hint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposeError {
    UnknownGroup,
    /// This replica is not the leader; `leader` is who it believes leads, if anyone.
    NotLeader {
        leader: Option<NodeId>,
    },
    /// This replica leads but no entry of its term has committed yet, so its view of the log
    /// may be stale: it accepts nothing until its election no-op commits.
    NotReady,
    /// Raft refused it: a leadership transfer is under way or the uncommitted bytes are over
    /// `max_uncommitted_size` (back-pressure; retry later).
    Dropped,
    /// A batch must carry at least one record and some bytes.
    InvalidBatch,
    /// The entry was appended but replaced by another leader's entry before it committed.
    Superseded,
    /// The replica's log was replaced by a leader's snapshot (its start moved past the
    /// entry) before it learnt whether the entry committed: it may or may not be in the log
    /// (Kafka's REQUEST_TIMED_OUT; an idempotent producer's retry is deduplicated).
    Indeterminate,
}

/// One write for the driver to persist, in order, in the shard's log of Raft state.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A replica was created with these voters.
    Create { group: GroupId, voters: Vec<NodeId> },
    /// The group's configuration is now `voters` and `learners` (a committed configuration
    /// change was applied, or a leader's snapshot carried it, or a replica was created as a
    /// learner). Replaces the voters of `Create`; written before the hard state whose
    /// commit covers the change, so a recovered configuration is never older than the
    /// recovered commit (it may be newer: re-applying a single-step change is a no-op).
    Conf {
        group: GroupId,
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
    },
    /// Entries with consecutive indexes; any stored entries at or after the first one's index
    /// are replaced (a divergent suffix dropped).
    Entries { group: GroupId, entries: Vec<Entry> },
    /// The group's log now starts after entry `index` of `term`, at Kafka offset `offset`
    /// (the partition log's start offset). With `reset` (a snapshot from the leader) every
    /// stored entry goes and the partition log restarts empty at `offset`, as a Kafka
    /// follower does on OFFSET_OUT_OF_RANGE; without it (retention moved the partition log's
    /// start) entries up to `index` go.
    LogStart {
        group: GroupId,
        index: u64,
        term: u64,
        offset: i64,
        reset: bool,
    },
    /// The group's term, vote and commit index.
    HardState {
        group: GroupId,
        hard_state: HardState,
    },
    /// The replica is gone from this node (`GroupManager::remove_group`: its partition was
    /// deleted or moved away): its state goes, and a later `Create` of the same group
    /// starts afresh. Its partition log may be deleted once this write is synced.
    Remove { group: GroupId },
}

/// An action for the driver. Perform `Persist` writes in `seq` order (a later write may
/// replace an earlier one's entries); the others in any order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send to `envelope.to`. At most one per destination per manager call.
    Send(Envelope),
    /// Write these (unsynced is fine), then once a sync covers them call
    /// `GroupManager::persisted(seq)`. At most one per manager call; `seq` increases by one.
    Persist { seq: u64, writes: Vec<Write> },
    /// The proposal is in the leader's log at `index` in `term` and will hold Kafka offsets
    /// `span`; its outcome follows as `Committed` or `Failed`.
    Proposed {
        group: GroupId,
        token: ProposalToken,
        index: u64,
        span: OffsetSpan,
    },
    /// The proposal committed (on a quorum's synced logs) at these offsets: acknowledge it.
    Committed {
        group: GroupId,
        token: ProposalToken,
        span: OffsetSpan,
    },
    /// The proposal did not and will not commit.
    Failed {
        group: GroupId,
        token: ProposalToken,
        error: ProposeError,
    },
    /// The group's high watermark on this replica moved up to Kafka offset `offset` (the
    /// entries up to Raft index `index` are committed and synced here).
    HighWatermark {
        group: GroupId,
        index: u64,
        offset: i64,
    },
    /// A committed log-start entry (DeleteRecords, `GroupManager::propose_log_start`) at
    /// Raft index `index` was applied here: the partition log's start offset (Kafka's log
    /// start offset, the first offset consumers may read; any offset, not only a batch
    /// boundary) moves up to `offset`, never down (retention may have moved it further).
    /// The Raft log's own start follows in the same call, at an entry at or below `offset`
    /// (`Write::LogStart { reset: false }`, as `GroupManager::compact` writes it). Comes
    /// before the `Persist` of that call. The driver persists the offset with the partition
    /// log; after a restart it derives it again from the committed log-start entries the
    /// Raft log still holds, so its durability needs no ordering against the hard state.
    LogStartOffset {
        group: GroupId,
        index: u64,
        offset: i64,
    },
    /// Read Kafka batches from the group's partition log starting at the batch at `offset`,
    /// in order, about `max_bytes` of them (at least one, as Kafka's fetch; none when the
    /// log ends at `offset`), and hand them
    /// to `GroupManager::entries_fetched(id, ..)` (or `None` there if the read failed).
    /// Every `Fetch` gets exactly one answer; one for a group no longer here is ignored.
    /// `to`: the followers the read is for (those whose next entry is its first; empty
    /// when none is), so that the driver can throttle catch-up traffic by follower.
    Fetch {
        group: GroupId,
        id: u64,
        offset: i64,
        max_bytes: u64,
        to: Vec<NodeId>,
    },
    /// The read [`GroupManager::read_index`](crate::GroupManager::read_index) asked for with
    /// `token` is safe: a quorum acknowledged this replica as leader, in the term it led when
    /// asked, after it was asked (Raft's ReadIndex, thesis 6.4), so no other replica had
    /// become leader by then, and `index` is the commit index at the time of asking. A read
    /// that cannot be confirmed (the leadership ends first) gets no answer: its caller gives
    /// up on a `Role` change or on its own timeout.
    ReadIndex {
        group: GroupId,
        token: u64,
        index: u64,
    },
    /// The replica's role, term or known leader changed.
    Role {
        group: GroupId,
        role: Role,
        term: u64,
        leader: Option<NodeId>,
    },
}

/// Heartbeats in compact form: all a raft-rs heartbeat carries besides its group and ends,
/// plus the leader's notice that the group goes quiet (see the crate header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub group: GroupId,
    pub response: bool,
    pub term: u64,
    pub commit: u64,
    /// From a leader: it stops ticking and heartbeating until something happens; a
    /// follower as caught up as the leader may stop ticking too.
    pub quiesce: bool,
}

/// Everything one manager call sends to one node: compact heartbeats of every group (one
/// message per node pair rather than one per group) and the other Raft messages in full.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Envelope {
    pub from: NodeId,
    pub to: NodeId,
    pub heartbeats: Vec<Heartbeat>,
    pub messages: Vec<(GroupId, Message)>,
}

impl Heartbeat {
    /// The compact form of `m`, if it is a heartbeat (or its response) that loses nothing in
    /// it; heartbeats carrying a read-index context stay full messages.
    pub fn compact(group: GroupId, m: &Message) -> Option<Heartbeat> {
        let response = match m.get_msg_type() {
            MessageType::MsgHeartbeat => false,
            MessageType::MsgHeartbeatResponse => true,
            _ => return None,
        };
        let hb = Heartbeat {
            group,
            response,
            term: m.term,
            commit: m.commit,
            quiesce: false,
        };
        (hb.expand(m.from, m.to) == *m).then_some(hb)
    }

    /// The raft-rs message this heartbeat stands for.
    pub fn expand(&self, from: NodeId, to: NodeId) -> Message {
        let mut m = Message::default();
        m.set_msg_type(if self.response {
            MessageType::MsgHeartbeatResponse
        } else {
            MessageType::MsgHeartbeat
        });
        m.from = from;
        m.to = to;
        m.term = self.term;
        m.commit = self.commit;
        m
    }
}
