//! Per-group state: the classic protocol's rebalance state machine and committed offsets.
//!
//! Mirrors Kafka's classic `GroupCoordinator`/`GroupMetadata`: states Empty →
//! PreparingRebalance → CompletingRebalance → Stable, a join timer (initial delayed join or
//! the rebalance timeout), per-member session deadlines, KIP-394 pending members and the
//! pending-sync timer. Timers are deadlines in ms compared with the driver's `now_ms`.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use indexmap::IndexMap;
use sluice_codec::kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use sluice_codec::kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};
use sluice_codec::kafka_protocol::protocol::StrBytes;

use crate::consumer::ConsumerGroup;
use crate::coordinator::GroupConfig;
use crate::effect::{Effect, Record, ReplyToken, Response};
use crate::error::code;
use crate::records::{
    group_metadata_key, group_metadata_value, subscription_topics, GroupMetadataValue,
    MemberMetadataValue, OffsetCommitValue,
};

/// Protocol type of the Java consumer's classic protocol (the one whose metadata we parse).
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Classic group states, named as Kafka names them in DescribeGroups/ListGroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassicState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl ClassicState {
    pub fn name(self) -> &'static str {
        match self {
            ClassicState::Empty => "Empty",
            ClassicState::PreparingRebalance => "PreparingRebalance",
            ClassicState::CompletingRebalance => "CompletingRebalance",
            ClassicState::Stable => "Stable",
            ClassicState::Dead => "Dead",
        }
    }
}

/// A member of a classic group.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    /// `(name, metadata)` in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// A JoinGroup waiting for the rebalance to complete, with its API version.
    pub awaiting_join: Option<(ReplyToken, i16)>,
    /// A SyncGroup waiting for the leader's assignment, with its API version.
    pub awaiting_sync: Option<(ReplyToken, i16)>,
    /// Joined during the current rebalance; such members expire after the new-member join
    /// timeout even while awaiting join (a client that left mid-join must not stall it).
    pub is_new: bool,
    /// Session deadline (or new-member join deadline while `is_new` and awaiting join).
    pub heartbeat_deadline_ms: i64,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Whether a passed deadline should be ignored (Kafka's `MemberMetadata.shouldKeepAlive`):
    /// a member waiting in a join or sync is alive by definition, except a new member whose
    /// join has waited longer than the new-member join timeout.
    fn keep_alive(&self, now_ms: i64) -> bool {
        if self.awaiting_join.is_some() {
            !self.is_new || self.heartbeat_deadline_ms > now_ms
        } else {
            self.awaiting_sync.is_some() || self.heartbeat_deadline_ms > now_ms
        }
    }
}

/// The join-phase timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinTimer {
    /// `group.initial.rebalance.delay.ms` for a group leaving Empty: extended by the delay
    /// while new members keep arriving, at most until the rebalance timeout is used up.
    Initial { at_ms: i64, remaining_ms: i64 },
    /// The rebalance timeout: members that have not rejoined by then are dropped.
    Normal { at_ms: i64 },
}

impl JoinTimer {
    fn at_ms(self) -> i64 {
        match self {
            JoinTimer::Initial { at_ms, .. } | JoinTimer::Normal { at_ms } => at_ms,
        }
    }
}

/// Classic-protocol state of one group.
#[derive(Debug, Clone)]
pub(crate) struct ClassicGroup {
    pub state: ClassicState,
    /// When `state` last changed (Kafka's `currentStateTimestamp`); for an Empty group it is
    /// when the group became empty, the base of its offsets' retention.
    pub state_timestamp_ms: i64,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: IndexMap<String, Member>,
    /// `group.instance.id` → current member id (KIP-345).
    pub static_members: HashMap<String, String>,
    /// KIP-394: member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pub pending_members: IndexMap<String, i64>,
    /// Members that have not sent SyncGroup for the current generation.
    pub pending_sync: HashSet<String>,
    pub join_timer: Option<JoinTimer>,
    pub sync_deadline_ms: Option<i64>,
    /// A member joined during the initial delayed join (extends the delay once more).
    pub new_member_added: bool,
    /// Topics the members subscribe to (consumer protocol only); `None` = unknown, which
    /// protects every topic from OffsetDelete and subscription-aware expiry, as Kafka does.
    pub subscribed_topics: Option<HashSet<String>>,
    /// The last rebalance ended with no members; the coordinator persists the Empty group.
    pub emptied: bool,
}

/// The protocol a group uses; both share `Group`'s offsets.
#[derive(Debug, Clone)]
pub(crate) enum GroupKind {
    Classic(ClassicGroup),
    /// KIP-848: ConsumerGroupHeartbeat (`consumer`), see [`crate::consumer`].
    Consumer(ConsumerGroup),
}

/// One group: its protocol state and its committed offsets.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub id: String,
    pub kind: GroupKind,
    pub offsets: IndexMap<(String, i32), OffsetCommitValue>,
    /// Offsets committed inside transactions not yet ended, per producer id: they become
    /// committed offsets when the producer's COMMIT marker reaches this partition and are
    /// dropped at its ABORT (Kafka's pending transactional offset commits).
    pub pending_txn: HashMap<i64, IndexMap<(String, i32), OffsetCommitValue>>,
}

impl Group {
    pub fn new(id: String, now_ms: i64) -> Self {
        Group {
            id,
            kind: GroupKind::Classic(ClassicGroup::new(now_ms)),
            offsets: IndexMap::new(),
            pending_txn: HashMap::new(),
        }
    }

    /// A plain commit of `tp` (live or replayed). Being later in the log than any pending
    /// transactional offset of `tp`, it wins over them when their transaction commits
    /// (Kafka keeps the newer by log position), so they are dropped here.
    pub fn commit(&mut self, tp: (String, i32), value: OffsetCommitValue) {
        for pending in self.pending_txn.values_mut() {
            pending.shift_remove(&tp);
        }
        self.pending_txn.retain(|_, p| !p.is_empty());
        self.offsets.insert(tp, value);
    }

    /// Whether a transaction not yet ended holds an offset of `tp` (OffsetFetch with
    /// `require_stable` answers UNSTABLE_OFFSET_COMMIT for it).
    pub fn has_pending(&self, tp: &(String, i32)) -> bool {
        self.pending_txn.values().any(|p| p.contains_key(tp))
    }
}

/// Effects being collected for one call, plus the earliest deadline it created.
#[derive(Debug, Default)]
pub(crate) struct Out {
    pub effects: Vec<Effect>,
    pub wake_at: Option<i64>,
}

impl Out {
    pub fn reply(&mut self, token: ReplyToken, response: Response) {
        self.effects.push(Effect::Reply(token, response));
    }

    pub fn wake(&mut self, at_ms: i64) {
        self.wake_at = Some(self.wake_at.map_or(at_ms, |w| w.min(at_ms)));
    }
}

pub(crate) fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// A JoinGroup answer carrying only an error (or MEMBER_ID_REQUIRED with the new member id).
pub(crate) fn join_error(error: i16, member_id: &str, version: i16) -> JoinGroupResponse {
    let mut r = JoinGroupResponse::default();
    r.error_code = error;
    r.generation_id = -1;
    r.member_id = sb(member_id);
    // ProtocolName is nullable only from v7; older versions get "" as Kafka sends.
    r.protocol_name = if version >= 7 {
        None
    } else {
        Some(StrBytes::default())
    };
    r
}

pub(crate) fn sync_response(error: i16, c: &ClassicGroup, assignment: Bytes) -> SyncGroupResponse {
    let mut r = SyncGroupResponse::default();
    r.error_code = error;
    if error == code::NONE {
        r.protocol_type = c.protocol_type.as_deref().map(sb);
        r.protocol_name = c.protocol_name.as_deref().map(sb);
    }
    r.assignment = assignment;
    r
}

fn saturating_deadline(now_ms: i64, timeout_ms: i64) -> i64 {
    now_ms.saturating_add(timeout_ms.max(0))
}

/// Inputs of a SyncGroup after validation.
pub(crate) struct SyncArgs {
    pub token: ReplyToken,
    pub version: i16,
    pub now_ms: i64,
    /// `(member id, assignment)` from the leader; empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

/// Inputs of a JoinGroup after validation.
pub(crate) struct JoinArgs<'a> {
    pub token: ReplyToken,
    pub version: i16,
    pub now_ms: i64,
    pub client_id: &'a str,
    pub client_host: &'a str,
    pub instance_id: Option<String>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// The UUID a member id handed out by this join is made from.
    pub fresh_uuid: uuid::Uuid,
}

impl ClassicGroup {
    pub fn new(now_ms: i64) -> Self {
        ClassicGroup {
            state: ClassicState::Empty,
            state_timestamp_ms: now_ms,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: IndexMap::new(),
            static_members: HashMap::new(),
            pending_members: IndexMap::new(),
            pending_sync: HashSet::new(),
            join_timer: None,
            sync_deadline_ms: None,
            new_member_added: false,
            subscribed_topics: None,
            emptied: false,
        }
    }

    fn transition(&mut self, state: ClassicState, now_ms: i64) {
        self.state = state;
        self.state_timestamp_ms = now_ms;
    }

    pub fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    /// KIP-345: a request naming `instance_id` with a member id other than the instance's
    /// current one comes from a fenced (older) incarnation.
    pub fn is_static_fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        match instance_id.and_then(|i| self.static_members.get(i)) {
            Some(current) => current != member_id,
            None => false,
        }
    }

    /// The earliest deadline this group is waiting for.
    pub fn next_deadline(&self) -> Option<i64> {
        let members = self.members.values().map(|m| m.heartbeat_deadline_ms);
        let pending = self.pending_members.values().copied();
        let timers = self
            .join_timer
            .map(JoinTimer::at_ms)
            .into_iter()
            .chain(self.sync_deadline_ms);
        members.chain(pending).chain(timers).min()
    }

    /// Kafka's `supportsProtocols`: an empty group accepts any non-empty protocol list; else
    /// the type must match and one protocol must be supported by every current member.
    pub fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.state == ClassicState::Empty || self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
    }

    /// Protocol chosen for the next generation: among protocols every member supports, the
    /// one most members list first (ties to the earliest in the first member's order).
    pub fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
            .collect();
        let mut best: Option<(&str, usize)> = None;
        for cand in &candidates {
            let votes = self
                .members
                .values()
                .filter(|m| {
                    m.protocols
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .find(|n| candidates.contains(n))
                        == Some(cand)
                })
                .count();
            if best.is_none_or(|(_, v)| votes > v) {
                best = Some((cand, votes));
            }
        }
        best.map(|(n, _)| n.to_owned())
    }

    pub(crate) fn compute_subscribed_topics(&self) -> Option<HashSet<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = HashSet::new();
        for m in self.members.values() {
            topics.extend(subscription_topics(&m.metadata_for(protocol))?);
        }
        Some(topics)
    }

    /// The group metadata record for the current generation (Kafka's `storeGroup`).
    pub fn metadata_record(&self, group_id: &str) -> Record {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        let value = GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol_name.clone(),
            leader: self.leader.clone(),
            current_state_timestamp: self.state_timestamp_ms,
            members: self
                .members
                .values()
                .map(|m| MemberMetadataValue {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        };
        (
            group_metadata_key(group_id),
            Some(group_metadata_value(&value)),
        )
    }

    /// Rebuild from a replayed metadata record. Members come back as Kafka loads them: in a
    /// Stable group with their assignment, alive until their session timeout runs out from
    /// `finish_replay` on, unless they heartbeat.
    pub fn load(v: GroupMetadataValue) -> Self {
        let mut c = ClassicGroup::new(v.current_state_timestamp);
        c.generation = v.generation;
        c.protocol_type = Some(v.protocol_type).filter(|t| !t.is_empty());
        c.protocol_name = v.protocol;
        c.leader = v.leader;
        let protocol = c.protocol_name.clone().unwrap_or_default();
        for m in v.members {
            if let Some(inst) = &m.group_instance_id {
                c.static_members.insert(inst.clone(), m.member_id.clone());
            }
            let member = Member {
                id: m.member_id.clone(),
                instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                protocol_type: c.protocol_type.clone().unwrap_or_default(),
                protocols: vec![(protocol.clone(), m.subscription)],
                assignment: m.assignment,
                awaiting_join: None,
                awaiting_sync: None,
                is_new: false,
                // Set for real by `finish_replay`.
                heartbeat_deadline_ms: i64::MAX,
            };
            c.members.insert(m.member_id, member);
        }
        if c.leader
            .as_ref()
            .is_some_and(|l| !c.members.contains_key(l))
        {
            c.leader = c.members.keys().next().cloned();
        }
        c.state = if c.members.is_empty() {
            ClassicState::Empty
        } else {
            ClassicState::Stable
        };
        c.subscribed_topics = c.compute_subscribed_topics();
        c
    }

    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms.max(0)))
            .max()
            .unwrap_or(0)
    }

    /// The JoinGroup answer for `member_id` at the current generation. The leader gets every
    /// member's metadata for the selected protocol.
    fn join_success(
        &self,
        member_id: &str,
        version: i16,
        skip_assignment: bool,
    ) -> JoinGroupResponse {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        let mut r = JoinGroupResponse::default();
        r.generation_id = self.generation;
        r.protocol_type = self.protocol_type.as_deref().map(sb);
        r.protocol_name = if version >= 7 {
            self.protocol_name.as_deref().map(sb)
        } else {
            Some(sb(protocol))
        };
        r.leader = sb(self.leader.as_deref().unwrap_or(""));
        r.member_id = sb(member_id);
        r.skip_assignment = skip_assignment && version >= 9;
        // Before v9 a static leader that rejoins without a rebalance must not reassign; Kafka
        // then sends it no members (KIP-814 added skip_assignment to do better).
        let send_members = self.is_leader(member_id) && (!skip_assignment || version >= 9);
        if send_members {
            r.members = self
                .members
                .values()
                .map(|m| {
                    let mut jm = JoinGroupResponseMember::default();
                    jm.member_id = sb(&m.id);
                    jm.group_instance_id = m.instance_id.as_deref().map(sb);
                    jm.metadata = m.metadata_for(protocol);
                    jm
                })
                .collect();
        }
        r
    }

    // ---- JoinGroup ------------------------------------------------------------------------

    /// JoinGroup without a member id.
    pub fn join_unknown_member(
        &mut self,
        gid: &str,
        cfg: &GroupConfig,
        a: JoinArgs<'_>,
        out: &mut Out,
    ) {
        if self.members.len() + self.pending_members.len() >= cfg.group_max_size {
            let r = join_error(code::GROUP_MAX_SIZE_REACHED, "", a.version);
            return out.reply(a.token, Response::JoinGroup(r));
        }
        let prefix = a.instance_id.as_deref().unwrap_or(a.client_id);
        let new_id = format!("{prefix}-{}", a.fresh_uuid);
        if let Some(inst) = a.instance_id.clone() {
            match self.static_members.get(&inst).cloned() {
                Some(old_id) => self.update_static_member(gid, cfg, &old_id, new_id, a, out),
                None => self.add_member_and_rebalance(cfg, new_id, a, out),
            }
        } else if a.version >= 4 {
            // KIP-394: hand out the id and make the client come back with it, so a client
            // that times out on its first JoinGroup does not leave a ghost member behind.
            let deadline = saturating_deadline(a.now_ms, i64::from(a.session_timeout_ms));
            self.pending_members.insert(new_id.clone(), deadline);
            out.wake(deadline);
            let r = join_error(code::MEMBER_ID_REQUIRED, &new_id, a.version);
            out.reply(a.token, Response::JoinGroup(r));
        } else {
            self.add_member_and_rebalance(cfg, new_id, a, out);
        }
    }

    /// JoinGroup with a member id.
    pub fn join_known_member(
        &mut self,
        gid: &str,
        cfg: &GroupConfig,
        member_id: &str,
        a: JoinArgs<'_>,
        out: &mut Out,
    ) {
        let fail = |out: &mut Out, code: i16, a: &JoinArgs<'_>| {
            out.reply(
                a.token,
                Response::JoinGroup(join_error(code, member_id, a.version)),
            );
        };
        if self.is_static_fenced(a.instance_id.as_deref(), member_id) {
            return fail(out, code::FENCED_INSTANCE_ID, &a);
        }
        if self.pending_members.shift_remove(member_id).is_some() {
            return self.add_member_and_rebalance(cfg, member_id.to_owned(), a, out);
        }
        let Some(member) = self.members.get(member_id) else {
            return fail(out, code::UNKNOWN_MEMBER_ID, &a);
        };
        let same_protocols = member.protocols == a.protocols;
        match self.state {
            ClassicState::PreparingRebalance => {
                self.update_member_and_rebalance(gid, cfg, member_id, a, out)
            }
            ClassicState::CompletingRebalance if same_protocols => {
                // A retransmitted JoinGroup (its answer was lost): answer it again.
                let r = self.join_success(member_id, a.version, false);
                out.reply(a.token, Response::JoinGroup(r));
            }
            ClassicState::Stable if same_protocols && !self.is_leader(member_id) => {
                // A follower rejoining with unchanged metadata does not need a rebalance.
                if let Some(m) = self.members.get_mut(member_id) {
                    m.heartbeat_deadline_ms =
                        saturating_deadline(a.now_ms, i64::from(m.session_timeout_ms));
                }
                let r = self.join_success(member_id, a.version, false);
                out.reply(a.token, Response::JoinGroup(r));
            }
            ClassicState::CompletingRebalance | ClassicState::Stable => {
                // The leader rejoining (it saw metadata change) or changed metadata: rebalance.
                self.update_member_and_rebalance(gid, cfg, member_id, a, out)
            }
            ClassicState::Empty | ClassicState::Dead => fail(out, code::UNKNOWN_MEMBER_ID, &a),
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        cfg: &GroupConfig,
        member_id: String,
        a: JoinArgs<'_>,
        out: &mut Out,
    ) {
        let deadline = saturating_deadline(a.now_ms, cfg.new_member_join_timeout_ms);
        if self.members.is_empty() {
            self.protocol_type = Some(a.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member_id.clone());
        }
        if let Some(inst) = &a.instance_id {
            self.static_members.insert(inst.clone(), member_id.clone());
        }
        let member = Member {
            id: member_id.clone(),
            instance_id: a.instance_id,
            client_id: a.client_id.to_owned(),
            client_host: a.client_host.to_owned(),
            rebalance_timeout_ms: a.rebalance_timeout_ms,
            session_timeout_ms: a.session_timeout_ms,
            protocol_type: a.protocol_type,
            protocols: a.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some((a.token, a.version)),
            awaiting_sync: None,
            is_new: true,
            heartbeat_deadline_ms: deadline,
        };
        self.members.insert(member_id, member);
        out.wake(deadline);
        if self.state == ClassicState::PreparingRebalance && self.generation == 0 {
            self.new_member_added = true;
        }
        self.maybe_prepare_rebalance(cfg, a.now_ms, out);
        self.try_complete_join(a.now_ms, out);
    }

    fn update_member_and_rebalance(
        &mut self,
        _gid: &str,
        cfg: &GroupConfig,
        member_id: &str,
        a: JoinArgs<'_>,
        out: &mut Out,
    ) {
        if let Some(m) = self.members.get_mut(member_id) {
            if let Some((old, v)) = m.awaiting_join.take() {
                // Superseded by this newer JoinGroup for the same member; the client retries.
                let r = join_error(code::REBALANCE_IN_PROGRESS, member_id, v);
                out.reply(old, Response::JoinGroup(r));
            }
            m.protocols = a.protocols;
            m.protocol_type = a.protocol_type;
            m.rebalance_timeout_ms = a.rebalance_timeout_ms;
            m.session_timeout_ms = a.session_timeout_ms;
            m.client_id = a.client_id.to_owned();
            m.client_host = a.client_host.to_owned();
            m.awaiting_join = Some((a.token, a.version));
            m.heartbeat_deadline_ms =
                saturating_deadline(a.now_ms, i64::from(m.session_timeout_ms));
            out.wake(m.heartbeat_deadline_ms);
        }
        self.maybe_prepare_rebalance(cfg, a.now_ms, out);
        self.try_complete_join(a.now_ms, out);
    }

    /// KIP-345: a static member rejoined with an empty member id (a restarted client). The
    /// old member id is fenced; the member keeps its place and assignment.
    fn update_static_member(
        &mut self,
        gid: &str,
        cfg: &GroupConfig,
        old_id: &str,
        new_id: String,
        a: JoinArgs<'_>,
        out: &mut Out,
    ) {
        let Some(mut member) = self.members.shift_remove(old_id) else {
            // The mapping pointed at a vanished member; treat the join as a new member.
            return self.add_member_and_rebalance(cfg, new_id, a, out);
        };
        if let Some((t, v)) = member.awaiting_join.take() {
            out.reply(
                t,
                Response::JoinGroup(join_error(code::FENCED_INSTANCE_ID, old_id, v)),
            );
        }
        if let Some((t, _)) = member.awaiting_sync.take() {
            out.reply(
                t,
                Response::SyncGroup(sync_response(code::FENCED_INSTANCE_ID, self, Bytes::new())),
            );
        }
        member.id = new_id.clone();
        member.protocols = a.protocols;
        member.protocol_type = a.protocol_type;
        member.rebalance_timeout_ms = a.rebalance_timeout_ms;
        member.session_timeout_ms = a.session_timeout_ms;
        member.client_id = a.client_id.to_owned();
        member.client_host = a.client_host.to_owned();
        member.heartbeat_deadline_ms =
            saturating_deadline(a.now_ms, i64::from(a.session_timeout_ms));
        out.wake(member.heartbeat_deadline_ms);
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        if self.is_leader(old_id) {
            self.leader = Some(new_id.clone());
        }
        if let Some(inst) = &a.instance_id {
            self.static_members.insert(inst.clone(), new_id.clone());
        }
        self.members.insert(new_id.clone(), member);
        match self.state {
            ClassicState::Stable if self.select_protocol() == self.protocol_name => {
                // Same protocol for the next generation: no rebalance. Persist the new member
                // id (the old one stays fenced after a restart) and answer after it is durable.
                let is_leader = self.is_leader(&new_id);
                let r = self.join_success(&new_id, a.version, is_leader);
                out.effects.push(Effect::PersistThenReply {
                    records: vec![self.metadata_record(gid)],
                    replies: vec![(a.token, Response::JoinGroup(r))],
                });
            }
            _ => {
                // Protocol would change, or the leader may be assigning to the old id, or a
                // rebalance is already running: join it.
                if let Some(m) = self.members.get_mut(&new_id) {
                    m.awaiting_join = Some((a.token, a.version));
                }
                self.maybe_prepare_rebalance(cfg, a.now_ms, out);
                self.try_complete_join(a.now_ms, out);
            }
        }
    }

    fn maybe_prepare_rebalance(&mut self, cfg: &GroupConfig, now_ms: i64, out: &mut Out) {
        if matches!(
            self.state,
            ClassicState::Stable | ClassicState::CompletingRebalance | ClassicState::Empty
        ) {
            self.prepare_rebalance(cfg, now_ms, out);
        }
    }

    pub(crate) fn prepare_rebalance(&mut self, cfg: &GroupConfig, now_ms: i64, out: &mut Out) {
        if self.state == ClassicState::CompletingRebalance {
            // The leader's assignment for this generation will never be used: tell every member
            // waiting in SyncGroup to rejoin.
            let tokens: Vec<_> = self
                .members
                .values_mut()
                .filter_map(|m| {
                    m.assignment = Bytes::new();
                    m.awaiting_sync.take()
                })
                .collect();
            for (t, _) in tokens {
                let r = sync_response(code::REBALANCE_IN_PROGRESS, self, Bytes::new());
                out.reply(t, Response::SyncGroup(r));
            }
        }
        self.pending_sync.clear();
        self.sync_deadline_ms = None;
        let rebalance_timeout = self.max_rebalance_timeout_ms();
        let delay = i64::from(cfg.initial_rebalance_delay_ms.max(0));
        let timer = if self.state == ClassicState::Empty && delay > 0 {
            JoinTimer::Initial {
                at_ms: saturating_deadline(now_ms, delay),
                remaining_ms: (rebalance_timeout - delay).max(0),
            }
        } else {
            JoinTimer::Normal {
                at_ms: saturating_deadline(now_ms, rebalance_timeout),
            }
        };
        self.join_timer = Some(timer);
        out.wake(timer.at_ms());
        self.transition(ClassicState::PreparingRebalance, now_ms);
    }

    /// Complete the join phase early once every member and no pending member is waiting
    /// (never during the initial delay: its point is to wait for more members).
    fn try_complete_join(&mut self, now_ms: i64, out: &mut Out) {
        if self.state != ClassicState::PreparingRebalance {
            return;
        }
        if !matches!(self.join_timer, Some(JoinTimer::Normal { .. })) {
            return;
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join.is_some());
        if all_joined && self.pending_members.is_empty() {
            self.complete_join(now_ms, out);
        }
    }

    /// The join timer fired.
    fn expire_join(&mut self, cfg: &GroupConfig, now_ms: i64, out: &mut Out) {
        match self.join_timer {
            Some(JoinTimer::Initial { remaining_ms, .. })
                if self.new_member_added && remaining_ms > 0 =>
            {
                self.new_member_added = false;
                let delay = i64::from(cfg.initial_rebalance_delay_ms.max(0)).min(remaining_ms);
                let timer = JoinTimer::Initial {
                    at_ms: saturating_deadline(now_ms, delay),
                    remaining_ms: (remaining_ms - delay).max(0),
                };
                self.join_timer = Some(timer);
                out.wake(timer.at_ms());
            }
            _ => self.complete_join(now_ms, out),
        }
    }

    fn complete_join(&mut self, now_ms: i64, out: &mut Out) {
        // Dynamic members that did not rejoin in time are gone; static ones stay until their
        // session expires (KIP-345: a bouncing static member must not cause a rebalance).
        let dropped: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in &dropped {
            self.remove_member(id, out);
        }
        if !self.members.is_empty() && !self.elect_joined_leader() {
            // Nobody rejoined (only absent static members): wait another rebalance timeout for
            // their sessions to expire.
            let at = saturating_deadline(now_ms, self.max_rebalance_timeout_ms());
            self.join_timer = Some(JoinTimer::Normal { at_ms: at });
            out.wake(at);
            return;
        }
        self.join_timer = None;
        self.new_member_added = false;
        // Generation ids only grow; at i32::MAX restart at 1 rather than go negative (negative
        // generations mean "not a group member" in OffsetCommit).
        self.generation = self
            .generation
            .checked_add(1)
            .filter(|g| *g > 0)
            .unwrap_or(1);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader = None;
            self.subscribed_topics = None;
            self.transition(ClassicState::Empty, now_ms);
            self.emptied = true;
            return;
        }
        self.protocol_name = self.select_protocol();
        self.subscribed_topics = self.compute_subscribed_topics();
        self.transition(ClassicState::CompletingRebalance, now_ms);
        let mut replies = Vec::new();
        for id in self.members.keys().cloned().collect::<Vec<_>>() {
            let Some(m) = self.members.get_mut(&id) else {
                continue;
            };
            m.is_new = false;
            m.heartbeat_deadline_ms = saturating_deadline(now_ms, i64::from(m.session_timeout_ms));
            if let Some((token, version)) = m.awaiting_join.take() {
                replies.push((token, id.clone(), version));
            }
        }
        for (token, id, version) in replies {
            let r = self.join_success(&id, version, false);
            out.reply(token, Response::JoinGroup(r));
        }
        self.pending_sync = self.members.keys().cloned().collect();
        let at = saturating_deadline(now_ms, self.max_rebalance_timeout_ms());
        self.sync_deadline_ms = Some(at);
        out.wake(at);
        if let Some(d) = self.next_deadline() {
            out.wake(d);
        }
    }

    /// Keep the leader if it rejoined, else pick a member that did. False if none did.
    fn elect_joined_leader(&mut self) -> bool {
        if let Some(l) = &self.leader {
            if self
                .members
                .get(l)
                .is_some_and(|m| m.awaiting_join.is_some())
            {
                return true;
            }
        }
        match self.members.values().find(|m| m.awaiting_join.is_some()) {
            Some(m) => {
                self.leader = Some(m.id.clone());
                true
            }
            None => false,
        }
    }

    /// Drop a member, failing its parked requests with UNKNOWN_MEMBER_ID. No state change.
    fn remove_member(&mut self, member_id: &str, out: &mut Out) {
        let Some(m) = self.members.shift_remove(member_id) else {
            return;
        };
        if let Some((t, v)) = m.awaiting_join {
            out.reply(
                t,
                Response::JoinGroup(join_error(code::UNKNOWN_MEMBER_ID, member_id, v)),
            );
        }
        if let Some((t, _)) = m.awaiting_sync {
            let r = sync_response(code::UNKNOWN_MEMBER_ID, self, Bytes::new());
            out.reply(t, Response::SyncGroup(r));
        }
        if let Some(inst) = &m.instance_id {
            if self
                .static_members
                .get(inst)
                .is_some_and(|id| id == member_id)
            {
                self.static_members.remove(inst);
            }
        }
        self.pending_sync.remove(member_id);
        if self.pending_sync.is_empty() {
            self.sync_deadline_ms = None;
        }
        if self.is_leader(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
    }

    /// A member left or expired: remove it and rebalance (or finish the running join).
    pub fn remove_member_and_update(
        &mut self,
        cfg: &GroupConfig,
        member_id: &str,
        now_ms: i64,
        out: &mut Out,
    ) {
        self.remove_member(member_id, out);
        match self.state {
            ClassicState::Stable | ClassicState::CompletingRebalance => {
                self.prepare_rebalance(cfg, now_ms, out);
                self.try_complete_join(now_ms, out);
            }
            ClassicState::PreparingRebalance => self.try_complete_join(now_ms, out),
            ClassicState::Empty | ClassicState::Dead => {}
        }
    }

    pub fn remove_pending_member(&mut self, member_id: &str, now_ms: i64, out: &mut Out) {
        if self.pending_members.shift_remove(member_id).is_some() {
            self.try_complete_join(now_ms, out);
        }
    }

    // ---- SyncGroup ------------------------------------------------------------------------

    /// SyncGroup for a validated member of the current generation.
    pub fn sync(
        &mut self,
        gid: &str,
        cfg: &GroupConfig,
        member_id: &str,
        a: SyncArgs,
        out: &mut Out,
    ) {
        let SyncArgs {
            token,
            version,
            now_ms,
            assignments,
        } = a;
        match self.state {
            ClassicState::Empty => {
                let r = sync_response(code::UNKNOWN_MEMBER_ID, self, Bytes::new());
                out.reply(token, Response::SyncGroup(r));
            }
            ClassicState::PreparingRebalance => {
                let r = sync_response(code::REBALANCE_IN_PROGRESS, self, Bytes::new());
                out.reply(token, Response::SyncGroup(r));
            }
            ClassicState::Dead => {
                let r = sync_response(code::COORDINATOR_NOT_AVAILABLE, self, Bytes::new());
                out.reply(token, Response::SyncGroup(r));
            }
            ClassicState::CompletingRebalance => {
                let mut superseded = None;
                if let Some(m) = self.members.get_mut(member_id) {
                    superseded = m.awaiting_sync.replace((token, version));
                    m.heartbeat_deadline_ms =
                        saturating_deadline(now_ms, i64::from(m.session_timeout_ms));
                }
                if let Some((old, _)) = superseded {
                    // A newer SyncGroup from the same member replaces this one.
                    let r = sync_response(code::REBALANCE_IN_PROGRESS, self, Bytes::new());
                    out.reply(old, Response::SyncGroup(r));
                }
                self.pending_sync.remove(member_id);
                if !self.is_leader(member_id) {
                    return;
                }
                if assignments
                    .iter()
                    .any(|(_, a)| a.len() > cfg.member_metadata_max_bytes)
                {
                    // Kafka answers a group record too large to append with
                    // UNKNOWN_SERVER_ERROR and rebalances; refuse before writing it.
                    let tokens: Vec<_> = self
                        .members
                        .values_mut()
                        .filter_map(|m| m.awaiting_sync.take())
                        .collect();
                    for (t, _) in tokens {
                        let r = sync_response(code::UNKNOWN_SERVER_ERROR, self, Bytes::new());
                        out.reply(t, Response::SyncGroup(r));
                    }
                    self.prepare_rebalance(cfg, now_ms, out);
                    return;
                }
                let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
                for m in self.members.values_mut() {
                    m.assignment = by_member.remove(&m.id).unwrap_or_default();
                }
                self.transition(ClassicState::Stable, now_ms);
                let record = self.metadata_record(gid);
                let mut replies = Vec::new();
                let tokens: Vec<_> = self
                    .members
                    .values_mut()
                    .filter_map(|m| m.awaiting_sync.take().map(|t| (t, m.assignment.clone())))
                    .collect();
                for ((t, _), assignment) in tokens {
                    replies.push((
                        t,
                        Response::SyncGroup(sync_response(code::NONE, self, assignment)),
                    ));
                }
                out.effects.push(Effect::PersistThenReply {
                    records: vec![record],
                    replies,
                });
            }
            ClassicState::Stable => {
                self.pending_sync.remove(member_id);
                if self.pending_sync.is_empty() {
                    self.sync_deadline_ms = None;
                }
                let assignment = match self.members.get_mut(member_id) {
                    Some(m) => {
                        m.heartbeat_deadline_ms =
                            saturating_deadline(now_ms, i64::from(m.session_timeout_ms));
                        m.assignment.clone()
                    }
                    None => Bytes::new(),
                };
                out.reply(
                    token,
                    Response::SyncGroup(sync_response(code::NONE, self, assignment)),
                );
            }
        }
    }

    // ---- timers ---------------------------------------------------------------------------

    /// Fire every deadline at or before `now_ms`.
    pub fn tick(&mut self, cfg: &GroupConfig, now_ms: i64, out: &mut Out) {
        let expired_pending: Vec<String> = self
            .pending_members
            .iter()
            .filter(|(_, &d)| d <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired_pending {
            self.remove_pending_member(&id, now_ms, out);
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.heartbeat_deadline_ms <= now_ms && !m.keep_alive(now_ms))
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            self.remove_member_and_update(cfg, &id, now_ms, out);
        }
        if self.state == ClassicState::PreparingRebalance
            && self.join_timer.is_some_and(|t| t.at_ms() <= now_ms)
        {
            self.expire_join(cfg, now_ms, out);
        }
        if let Some(at) = self.sync_deadline_ms {
            if at <= now_ms {
                self.sync_deadline_ms = None;
                let lagging: Vec<String> = self.pending_sync.drain().collect();
                if matches!(
                    self.state,
                    ClassicState::CompletingRebalance | ClassicState::Stable
                ) && !lagging.is_empty()
                {
                    // Members that never sent SyncGroup for this generation are gone.
                    for id in &lagging {
                        self.remove_member(id, out);
                    }
                    self.prepare_rebalance(cfg, now_ms, out);
                    self.try_complete_join(now_ms, out);
                }
            }
        }
        // A member whose deadline passed while parked in a join/sync must be re-checked later.
        for m in self.members.values_mut() {
            if m.heartbeat_deadline_ms <= now_ms {
                m.heartbeat_deadline_ms =
                    saturating_deadline(now_ms, i64::from(m.session_timeout_ms));
            }
        }
    }
}
