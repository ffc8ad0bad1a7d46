//! Classic-protocol members inside a consumer group, and converting a group with members
//! between the two protocols: Kafka 4's online upgrade and downgrade
//! (`group.consumer.migration.policy`, `bidirectional` by default).
//!
//! - **Upgrade.** A `ConsumerGroupHeartbeat` joining a classic group that uses the embedded
//!   consumer protocol turns it into a consumer group: every classic member becomes a
//!   *classic member* of the consumer group, at the classic generation as its epoch, with
//!   the partitions of its last classic assignment as both its current and its target
//!   assignment. The joining member then bumps the epoch and the server-side assignor takes
//!   over.
//! - **Classic members** keep speaking JoinGroup/SyncGroup/Heartbeat/LeaveGroup. A JoinGroup
//!   is the member's reconciliation step: the coordinator computes the target and moves the
//!   member towards it at once (its "owned partitions" tell what it gave up), answers with
//!   the member epoch as the generation and no leader (so the client never assigns), and
//!   SyncGroup hands out the assignment encoded as the client's protocol version expects.
//!   A Heartbeat answers REBALANCE_IN_PROGRESS whenever the member must rejoin to move on.
//! - **Downgrade.** When the last member using the consumer protocol leaves or is fenced and
//!   only classic members remain, the group becomes a classic group again, with the consumer
//!   group's epoch as generation, and a rebalance starts so the classic leader reassigns.
//!
//! The invariants of the parent module hold throughout: a classic member's partitions are in
//! `owners` like anyone's, so no partition is handed to two members across protocols.

use bytes::Bytes;
use indexmap::IndexMap;
use sluice_codec::kafka_protocol::messages::JoinGroupResponse;

use super::*;
use crate::consumer_records::ClassicProtocol;
use crate::effect::Response;
use crate::embedded::{decode_assignment, decode_subscription, encode_assignment, version_of};
use crate::group::{join_error, ClassicGroup, ClassicState, Member, Out, CONSUMER_PROTOCOL_TYPE};
use crate::records::group_metadata_key;

/// A JoinGroup to a consumer group, after the checks every JoinGroup gets.
pub(crate) struct ClassicJoin<'a> {
    /// Empty for a member without an id yet.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub version: i16,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: &'a str,
    pub protocols: Vec<(String, Bytes)>,
    pub client_id: &'a str,
    pub client_host: &'a str,
    pub now_ms: i64,
    pub group_max_size: usize,
    /// The member id for a member without one.
    pub fresh_uuid: Uuid,
}

/// The member a SyncGroup, Heartbeat or LeaveGroup names.
pub(crate) struct ClassicCall<'a> {
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
    pub generation: i32,
    pub now_ms: i64,
}

impl ConsumerMember {
    /// The protocol a classic member was answered with: its first (preferred) one.
    fn classic_protocol(&self) -> Option<&ClassicProtocol> {
        self.classic.as_ref()?.supported_protocols.first()
    }

    fn classic_session_ms(&self) -> i64 {
        i64::from(
            self.classic
                .as_ref()
                .map_or(0, |c| c.session_timeout_ms)
                .max(0),
        )
    }
}

impl ConsumerGroup {
    /// Kafka's `supportsClassicProtocols`: the embedded consumer protocol, and (in a group
    /// with members) one protocol name every classic member also supports.
    fn supports_classic_protocols(
        &self,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
    ) -> bool {
        if protocol_type != CONSUMER_PROTOCOL_TYPE || protocols.is_empty() {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .filter_map(|m| m.classic.as_ref())
                .all(|c| c.supported_protocols.iter().any(|p| p.name == *name))
        })
    }

    /// Whether removing `member_id` leaves only classic members, so the group should turn
    /// classic instead (Kafka's `validateOnlineDowngradeWithFencedMember`).
    pub fn fence_downgrades(&self, member_id: &str, classic_max_size: usize) -> bool {
        let Some(m) = self.members.get(member_id) else {
            return false;
        };
        m.classic.is_none()
            && self.members.len() > 1
            && self.members.len() - 1 <= classic_max_size
            && self
                .members
                .values()
                .all(|x| x.id == member_id || x.classic.is_some())
    }

    /// The member a classic request names: UNKNOWN_MEMBER_ID or FENCED_INSTANCE_ID as
    /// Kafka's `validateConsumerGroupMember`, and UNKNOWN_MEMBER_ID for a member that uses
    /// the consumer protocol.
    fn classic_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<&ConsumerMember, i16> {
        let m = match instance_id {
            None => self.members.get(member_id).ok_or(code::UNKNOWN_MEMBER_ID)?,
            Some(inst) => {
                let holder = self
                    .static_members
                    .get(inst)
                    .ok_or(code::UNKNOWN_MEMBER_ID)?;
                if holder != member_id {
                    return Err(code::FENCED_INSTANCE_ID);
                }
                self.members.get(holder).ok_or(code::UNKNOWN_MEMBER_ID)?
            }
        };
        if m.classic.is_none() {
            return Err(code::UNKNOWN_MEMBER_ID);
        }
        Ok(m)
    }

    /// Whether a partition of the member's target is still held by another member.
    fn waiting_on_unreleased(&self, m: &ConsumerMember) -> bool {
        self.target.get(&m.id).is_some_and(|target| {
            target.iter().any(|(t, ps)| {
                ps.iter().any(|p| {
                    !m.assigned.get(t).is_some_and(|a| a.contains(p))
                        && !self.free_for(&m.id, t, *p)
                })
            })
        })
    }

    /// JoinGroup from a classic member: joins or rejoins, and reconciles at once. Also
    /// says whether the member took over a static member that used the consumer protocol
    /// (which may leave only classic members: the caller's cue for a downgrade).
    pub fn classic_join(
        &mut self,
        gid: &str,
        j: ClassicJoin<'_>,
        topics: &dyn TopicsView,
        records: &mut Vec<Record>,
    ) -> Result<(JoinGroupResponse, bool), i16> {
        let now = j.now_ms;
        let unknown = j.member_id.is_empty();
        let member_id = if unknown {
            j.fresh_uuid.to_string()
        } else {
            j.member_id.clone()
        };
        let replaces = j
            .instance_id
            .as_ref()
            .and_then(|i| self.static_members.get(i))
            .is_some();
        if !self.members.contains_key(&member_id)
            && !replaces
            && self.members.len() >= j.group_max_size
        {
            return Err(code::GROUP_MAX_SIZE_REACHED);
        }
        if !self.supports_classic_protocols(j.protocol_type, &j.protocols) {
            return Err(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        if unknown && j.instance_id.is_none() && j.version >= 4 {
            // KIP-394, as for classic groups: come back with this id.
            return Ok((
                join_error(code::MEMBER_ID_REQUIRED, &member_id, j.version),
                false,
            ));
        }
        let sub = j
            .protocols
            .first()
            .and_then(|(_, meta)| decode_subscription(meta))
            .ok_or(code::INCONSISTENT_GROUP_PROTOCOL)?;

        let mut is_new = false;
        let mut replaced = false;
        let mut replaced_consumer = false;
        if unknown {
            match j
                .instance_id
                .as_ref()
                .and_then(|i| self.static_members.get(i))
                .cloned()
            {
                Some(old) => {
                    replaced_consumer = self.members.get(&old).is_some_and(|m| m.classic.is_none());
                    replaced = true;
                    self.replace_static(gid, &old, &member_id, now, records);
                }
                None => self.add_member(&member_id, j.instance_id.as_deref(), now),
            }
            is_new = true;
        } else {
            match j.instance_id.as_deref() {
                // The id MEMBER_ID_REQUIRED handed out (consumer groups keep no pending ids;
                // Kafka creates a dynamic member under the id it comes back with).
                None if !self.members.contains_key(&member_id) => {
                    // An id no coordinator would hand out: start over with a real one.
                    if member_id.len() > crate::coordinator::MEMBER_ID_BYTES_MAX {
                        return Err(code::UNKNOWN_MEMBER_ID);
                    }
                    self.add_member(&member_id, None, now);
                    is_new = true;
                }
                None => {}
                Some(inst) => match self.static_members.get(inst) {
                    None => return Err(code::UNKNOWN_MEMBER_ID),
                    Some(holder) if *holder != member_id => return Err(code::FENCED_INSTANCE_ID),
                    Some(_) => {}
                },
            }
        }

        let Some(old) = self.members.get(&member_id).cloned() else {
            return Err(code::UNKNOWN_MEMBER_ID);
        };
        let mut m = old.clone();
        let mut names = sub.topics.clone();
        names.sort();
        names.dedup();
        m.subscribed_names = names;
        m.regex = None;
        if sub.rack_id.is_some() {
            m.rack_id = sub.rack_id.clone();
        }
        m.rebalance_timeout_ms = j.rebalance_timeout_ms;
        m.client_id = j.client_id.to_owned();
        m.client_host = j.client_host.to_owned();
        m.classic = Some(classic_metadata(j.session_timeout_ms, &j.protocols));
        let subscription_changed =
            m.subscribed_names != old.subscribed_names || m.regex != old.regex;
        if subscription_changed {
            self.count_subscription(&old, false);
            self.count_subscription(&m, true);
        }
        // A static member taking over its instance changes nothing the assignor sees.
        let bump = subscription_changed || (is_new && !replaced);
        if m.metadata_value() != old.metadata_value() || is_new {
            records.push((
                consumer_group_member_key(gid, &member_id),
                Some(m.metadata_value().encode()),
            ));
        }
        m.session_deadline_ms = now.saturating_add(m.classic_session_ms());
        self.members.insert(member_id.clone(), m);
        self.advance(gid, bump, topics, records);

        // What the client still owns is what it did not give up before rejoining: all of it
        // for a cooperative client, nothing for an eager one.
        let owned: Vec<OwnedPartitions> = sub
            .owned
            .iter()
            .filter_map(|(name, ps)| {
                let (id, _) = topics.by_name(name)?;
                let mut tp = OwnedPartitions::default();
                tp.topic_id = id;
                tp.partitions = ps.clone();
                Some(tp)
            })
            .collect();
        // A member of unknown state that still owns partitions must start over; the
        // classic protocol says so with UNKNOWN_MEMBER_ID.
        self.reconcile(&member_id, Some(&owned), now)
            .map_err(|_| code::UNKNOWN_MEMBER_ID)?;
        let Some(m) = self.members.get_mut(&member_id) else {
            return Err(code::UNKNOWN_MEMBER_ID);
        };
        m.join_deadline_ms = None;
        m.sync_deadline_ms = Some(now.saturating_add(i64::from(m.rebalance_timeout_ms.max(0))));
        let m = m.clone();
        Self::record_reconciled(gid, &old, &m, is_new, records);
        #[cfg(debug_assertions)]
        self.check();

        let protocol = m.classic_protocol().map(|p| p.name.as_str()).unwrap_or("");
        let mut r = JoinGroupResponse::default();
        r.member_id = sb(&member_id);
        r.generation_id = m.epoch;
        r.protocol_type = Some(sb(CONSUMER_PROTOCOL_TYPE));
        r.protocol_name = Some(sb(protocol));
        // No leader: the coordinator assigns, the client never does.
        r.leader = sb("");
        Ok((r, replaced_consumer))
    }

    /// SyncGroup from a classic member: its current assignment, in its protocol's version.
    /// Returns the assignment and the protocol name.
    pub fn classic_sync(
        &mut self,
        call: ClassicCall<'_>,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        topics: &dyn TopicsView,
    ) -> Result<(Bytes, String), i16> {
        let m = self.classic_member(call.member_id, call.instance_id)?;
        if call.generation != m.epoch {
            return Err(code::ILLEGAL_GENERATION);
        }
        let protocol = m.classic_protocol().cloned().unwrap_or_default();
        if protocol_type.is_some_and(|t| t != CONSUMER_PROTOCOL_TYPE)
            || protocol_name.is_some_and(|n| n != protocol.name)
        {
            return Err(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        let id = m.id.clone();
        // A newer rebalance started since the join: rejoin first (unless the member is
        // still revoking, which its next join completes).
        let rejoin = self.epoch > m.epoch && m.state != MemberState::UnrevokedPartitions;
        let assigned: NamedAssignment = m
            .assigned
            .iter()
            .filter_map(|(t, ps)| {
                let (name, _) = topics.by_id(t)?;
                Some((name.to_owned(), ps.iter().copied().collect()))
            })
            .collect();
        let Some(m) = self.members.get_mut(&id) else {
            return Err(code::UNKNOWN_MEMBER_ID);
        };
        if rejoin {
            let deadline = call
                .now_ms
                .saturating_add(i64::from(m.rebalance_timeout_ms.max(0)));
            m.join_deadline_ms.get_or_insert(deadline);
            return Err(code::REBALANCE_IN_PROGRESS);
        }
        m.sync_deadline_ms = None;
        m.session_deadline_ms = call.now_ms.saturating_add(m.classic_session_ms());
        let version = version_of(&protocol.metadata).unwrap_or(0);
        Ok((encode_assignment(version, &assigned), protocol.name))
    }

    /// Heartbeat from a classic member: REBALANCE_IN_PROGRESS when it must rejoin to move
    /// towards its target (Kafka's `classicGroupHeartbeatToConsumerGroup`).
    pub fn classic_heartbeat(&mut self, call: ClassicCall<'_>) -> i16 {
        let m = match self.classic_member(call.member_id, call.instance_id) {
            Ok(m) => m,
            Err(e) => return e,
        };
        if call.generation != m.epoch {
            return code::ILLEGAL_GENERATION;
        }
        let rejoin = m.epoch < self.epoch
            || m.state == MemberState::UnrevokedPartitions
            || (m.state == MemberState::UnreleasedPartitions && !self.waiting_on_unreleased(m));
        let id = m.id.clone();
        let Some(m) = self.members.get_mut(&id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        m.session_deadline_ms = call.now_ms.saturating_add(m.classic_session_ms());
        if rejoin {
            let deadline = call
                .now_ms
                .saturating_add(i64::from(m.rebalance_timeout_ms.max(0)));
            m.join_deadline_ms.get_or_insert(deadline);
            code::REBALANCE_IN_PROGRESS
        } else {
            code::NONE
        }
    }

    /// One member of a LeaveGroup: a classic member by id, or a static one by instance id
    /// (an empty member id is the admin's removal by instance). Returns the id removed; the
    /// caller bumps the group epoch once for the whole request ([`Self::bump_epoch`]).
    pub fn classic_leave(
        &mut self,
        gid: &str,
        member_id: &str,
        instance_id: Option<&str>,
        records: &mut Vec<Record>,
    ) -> Result<String, i16> {
        let id = match instance_id {
            Some(inst) if member_id.is_empty() => match self.static_members.get(inst) {
                Some(holder)
                    if self
                        .members
                        .get(holder)
                        .is_some_and(|m| m.classic.is_some()) =>
                {
                    holder.clone()
                }
                _ => return Err(code::UNKNOWN_MEMBER_ID),
            },
            _ => self.classic_member(member_id, instance_id)?.id.clone(),
        };
        self.drop_member(gid, &id, records);
        Ok(id)
    }

    /// Kafka's `ConsumerGroup.fromClassicGroup`: the consumer group a classic group with
    /// members becomes (online upgrade), at the classic generation. Each member's current
    /// (and target) assignment is what it may hold: its last classic assignment, plus the
    /// partitions its latest JoinGroup said it still owns (Kafka takes the assignment alone,
    /// which a rebalance in progress has already cleared while cooperative members still
    /// consume). A partition claimed twice goes to the assignment's holder, else the first
    /// claim; one of a topic that is gone is dropped. `None` if a member's embedded protocol
    /// is malformed.
    pub fn from_classic(
        c: &ClassicGroup,
        topics: &dyn TopicsView,
        now_ms: i64,
    ) -> Option<ConsumerGroup> {
        let protocol = c.protocol_name.clone()?;
        let mut cg = ConsumerGroup {
            epoch: c.generation,
            target_epoch: c.generation,
            ..Default::default()
        };
        let mut subs = Vec::with_capacity(c.members.len());
        for cm in c.members.values() {
            let sub = decode_subscription(&cm.metadata_for(&protocol))?;
            let named = if cm.assignment.is_empty() {
                Vec::new()
            } else {
                decode_assignment(&cm.assignment)?
            };
            subs.push((sub, named));
        }
        let mut taken: BTreeSet<(Uuid, i32)> = BTreeSet::new();
        let mut held: Vec<Assignment> = vec![Assignment::new(); subs.len()];
        let mut claim = |held: &mut Assignment, named: &crate::embedded::NamedPartitions| {
            for (name, ps) in named {
                let Some((id, count)) = topics.by_name(name) else {
                    continue;
                };
                for p in ps {
                    if (0..count).contains(p) && taken.insert((id, *p)) {
                        held.entry(id).or_default().insert(*p);
                    }
                }
            }
        };
        for ((_, named), h) in subs.iter().zip(held.iter_mut()) {
            claim(h, named);
        }
        for ((sub, _), h) in subs.iter().zip(held.iter_mut()) {
            claim(h, &sub.owned);
        }
        for ((cm, (sub, _)), assigned) in c.members.values().zip(subs).zip(held) {
            let mut m = ConsumerMember::new(cm.id.clone(), now_ms);
            m.instance_id = cm.instance_id.clone();
            m.rack_id = sub.rack_id;
            m.client_id = cm.client_id.clone();
            m.client_host = cm.client_host.clone();
            let mut names = sub.topics;
            names.sort();
            names.dedup();
            m.subscribed_names = names;
            m.rebalance_timeout_ms = cm.rebalance_timeout_ms;
            m.epoch = c.generation;
            m.previous_epoch = c.generation;
            m.state = MemberState::Stable;
            m.assigned = assigned.clone();
            m.classic = Some(classic_metadata(cm.session_timeout_ms, &cm.protocols));
            m.session_deadline_ms = now_ms.saturating_add(m.classic_session_ms());
            cg.target.insert(m.id.clone(), assigned);
            cg.members.insert(m.id.clone(), m);
        }
        cg.rebuild_derived();
        let subscribed = cg.subscribed_topics(topics);
        cg.metadata_hash = Self::metadata_hash(&subscribed);
        // What members hold is the target only if it is all of what they subscribe to. A
        // classic group caught mid-rebalance (or between a cooperative rebalance's two
        // rounds) holds less: the group epoch moves past the target's, so the next
        // heartbeat computes a full one even if it is a static member's takeover, which
        // would not bump the epoch itself.
        let held = taken
            .iter()
            .filter(|(t, _)| subscribed.contains_key(t))
            .count();
        let wanted: usize = subscribed
            .values()
            .map(|t| usize::try_from(t.partitions).unwrap_or(0))
            .sum();
        if held < wanted {
            cg.epoch = cg.epoch.saturating_add(1);
        }
        Some(cg)
    }

    /// The records that store a converted group from scratch: the classic group's
    /// tombstone, then, as Kafka orders them, members, epoch, targets, target epoch and
    /// current assignments.
    pub fn conversion_records(&self, gid: &str, records: &mut Vec<Record>) {
        records.push((group_metadata_key(gid), None));
        for m in self.members.values() {
            records.push((
                consumer_group_member_key(gid, &m.id),
                Some(m.metadata_value().encode()),
            ));
        }
        records.push(self.epoch_record(gid));
        for (id, t) in &self.target {
            let v = ConsumerGroupTargetAssignmentMemberValue {
                topic_partitions: to_topic_partitions(t),
            };
            records.push((consumer_group_target_member_key(gid, id), Some(v.encode())));
        }
        let v = ConsumerGroupTargetAssignmentMetadataValue {
            assignment_epoch: self.target_epoch,
            ..Default::default()
        };
        records.push((consumer_group_target_metadata_key(gid), Some(v.encode())));
        for m in self.members.values() {
            records.push((
                consumer_group_current_assignment_key(gid, &m.id),
                Some(m.assignment_value().encode()),
            ));
        }
    }

    /// Kafka's `ClassicGroup.fromConsumerGroup`: the classic group this one becomes without
    /// `leaving` (online downgrade), Stable at the group epoch with each member's current
    /// partitions as its assignment, plus the records that replace the consumer group's. The
    /// caller starts the rebalance.
    pub fn to_classic(
        &self,
        gid: &str,
        leaving: &str,
        topics: &dyn TopicsView,
        now_ms: i64,
        records: &mut Vec<Record>,
    ) -> ClassicGroup {
        for m in self.members.values() {
            Self::member_records_removed(gid, &m.id, records);
        }
        records.extend(Self::deletion_records(gid));
        let mut c = ClassicGroup::new(now_ms);
        c.generation = self.epoch;
        c.protocol_type = Some(CONSUMER_PROTOCOL_TYPE.to_owned());
        let mut members = IndexMap::new();
        for m in self.members.values().filter(|m| m.id != leaving) {
            let Some(meta) = &m.classic else { continue };
            if let Some(inst) = &m.instance_id {
                c.static_members.insert(inst.clone(), m.id.clone());
            }
            members.insert(
                m.id.clone(),
                Member {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: meta.session_timeout_ms,
                    protocol_type: CONSUMER_PROTOCOL_TYPE.to_owned(),
                    protocols: meta
                        .supported_protocols
                        .iter()
                        .map(|p| (p.name.clone(), p.metadata.clone()))
                        .collect(),
                    assignment: Bytes::new(),
                    awaiting_join: None,
                    awaiting_sync: None,
                    is_new: false,
                    heartbeat_deadline_ms: now_ms
                        .saturating_add(i64::from(meta.session_timeout_ms.max(0))),
                },
            );
        }
        c.members = members;
        c.protocol_name = c.select_protocol();
        c.leader = c.members.keys().next().cloned();
        c.state = if c.members.is_empty() {
            ClassicState::Empty
        } else {
            ClassicState::Stable
        };
        let protocol = c.protocol_name.clone().unwrap_or_default();
        for member in c.members.values_mut() {
            let Some(m) = self.members.get(&member.id) else {
                continue;
            };
            // What the member may still hold (Kafka writes the target here): a group
            // upgraded again before its members rejoin must not hand out partitions a member
            // that has not reconciled yet still consumes.
            let mut held = m.assigned.clone();
            for (t, ps) in &m.revoking {
                held.entry(*t).or_default().extend(ps.iter().copied());
            }
            let named: NamedAssignment = held
                .iter()
                .filter_map(|(t, ps)| {
                    let (name, _) = topics.by_id(t)?;
                    Some((name.to_owned(), ps.iter().copied().collect()))
                })
                .collect();
            let version = version_of(&member.metadata_for(&protocol)).unwrap_or(0);
            member.assignment = encode_assignment(version, &named);
        }
        c.subscribed_topics = c.compute_subscribed_topics();
        records.push(c.metadata_record(gid));
        c
    }
}

/// What a consumer group keeps of a classic member's JoinGroup.
fn classic_metadata(
    session_timeout_ms: i32,
    protocols: &[(String, Bytes)],
) -> ClassicMemberMetadata {
    ClassicMemberMetadata {
        session_timeout_ms,
        supported_protocols: protocols
            .iter()
            .map(|(name, metadata)| ClassicProtocol {
                name: name.clone(),
                metadata: metadata.clone(),
            })
            .collect(),
    }
}

/// Answers the JoinGroups and SyncGroups a classic group had parked, as Kafka does when the
/// group is converted: rejoin (REBALANCE_IN_PROGRESS).
pub(crate) fn release_parked(c: &mut ClassicGroup, out: &mut Out) {
    for m in c.members.values_mut() {
        if let Some((token, version)) = m.awaiting_join.take() {
            let r = join_error(code::REBALANCE_IN_PROGRESS, &m.id, version);
            out.reply(token, Response::JoinGroup(r));
        }
        if let Some((token, _)) = m.awaiting_sync.take() {
            let mut r = sluice_codec::kafka_protocol::messages::SyncGroupResponse::default();
            r.error_code = code::REBALANCE_IN_PROGRESS;
            out.reply(token, Response::SyncGroup(r));
        }
    }
}

type NamedAssignment = crate::embedded::NamedPartitions;
