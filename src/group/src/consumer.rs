//! KIP-848 consumer groups: the state of a group that uses the consumer group protocol
//! (`ConsumerGroupHeartbeat`), its target assignment and the per-member reconciliation.
//!
//! The model, as in Kafka's group coordinator:
//! - The **group epoch** is bumped whenever what the assignor sees changes: a member joins
//!   or leaves, a subscription changes, or a subscribed topic is created, deleted or grows
//!   (the subscribed topics' metadata hash changes).
//! - The **target assignment** is recomputed by the server-side assignor (`uniform`,
//!   `range`) whenever the group epoch is ahead of the target's epoch; it is computed on a
//!   heartbeat, never on a timer, so a burst of joins costs one computation per heartbeat.
//! - Each member converges on its target on its own heartbeats (**reconciliation**):
//!   partitions it must give up are revoked first (state `UNREVOKED_PARTITIONS`, its epoch
//!   held back) and only after the member reports them gone does it move to the target
//!   epoch; partitions still held by another member are assigned only once released
//!   (`UNRELEASED_PARTITIONS`). So no partition is ever owned by two members at once.
//! - Every change is a record in `__consumer_offsets` (Kafka's formats, key versions 3, 5,
//!   6, 7, 8) written before the heartbeat is answered, and replayed on load.
//!
//! Invariants (asserted in debug builds by [`ConsumerGroup::check`]):
//! - `owners` maps each partition to at most one member, and is exactly the union of every
//!   member's assigned and pending-revocation partitions.
//! - A member's epoch never exceeds the target epoch, which never exceeds the group epoch.
//! - `static_members` maps each instance id to the member that holds it, and back.

use std::collections::{BTreeMap, BTreeSet, HashMap};

mod classic;
pub(crate) use classic::{release_parked, ClassicCall, ClassicJoin};

use sluice_codec::kafka_protocol::messages::consumer_group_describe_response::{
    self as cgd, DescribedGroup,
};
use sluice_codec::kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as OwnedPartitions;
use sluice_codec::kafka_protocol::messages::consumer_group_heartbeat_response::{
    self as cgh, ConsumerGroupHeartbeatResponse,
};
use sluice_codec::kafka_protocol::messages::{GroupId, TopicName};
use uuid::Uuid;

use crate::assignor::{Assignment, Assignor, MemberSpec, TopicSpec};
use crate::consumer_records::{
    ClassicMemberMetadata, ConsumerGroupCurrentMemberAssignmentValue,
    ConsumerGroupMemberMetadataValue, ConsumerGroupMetadataValue,
    ConsumerGroupTargetAssignmentMemberValue, ConsumerGroupTargetAssignmentMetadataValue,
    TopicPartitions,
};
use crate::effect::Record;
use crate::error::code;
use crate::group::sb;
use crate::records::{
    consumer_group_current_assignment_key, consumer_group_member_key, consumer_group_metadata_key,
    consumer_group_target_member_key, consumer_group_target_metadata_key,
};

/// Default `group.consumer.heartbeat.interval.ms`.
pub const CONSUMER_HEARTBEAT_INTERVAL_MS: i32 = 5_000;
/// Default `group.consumer.session.timeout.ms`.
pub const CONSUMER_SESSION_TIMEOUT_MS: i32 = 45_000;
/// Topic names one member may subscribe to by name. Kafka has no such limit; one keeps a
/// single heartbeat from costing unbounded memory and assignor time.
pub const SUBSCRIBED_TOPICS_MAX: usize = 10_000;
/// Bytes of a subscription regular expression (and of the compiled program, times 1,024).
pub const SUBSCRIPTION_REGEX_BYTES_MAX: usize = 1_024;
/// Member epoch a leaving member sends (and is answered with).
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;
/// Member epoch a static member sends when it leaves for a while (a restart): it keeps its
/// assignment until its session times out.
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;

/// The cluster's topics as the coordinator needs them (the broker implements it over its
/// metadata image).
pub trait TopicsView {
    /// Changes whenever any topic is created, deleted or changes its partition count.
    fn version(&self) -> u64;
    fn by_name(&self, name: &str) -> Option<(Uuid, i32)>;
    fn by_id(&self, id: &Uuid) -> Option<(&str, i32)>;
    /// Every topic name (regular expression subscriptions are matched against them).
    fn for_each_name(&self, f: &mut dyn FnMut(&str));
}

/// Where a member stands in its reconciliation (Kafka's `MemberState`, stored as its byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Holds exactly its target (at the target epoch).
    Stable,
    /// Must give up `revoking` before it can move to the next epoch.
    UnrevokedPartitions,
    /// At the target epoch, but some target partitions are still held by others.
    UnreleasedPartitions,
    /// A state a newer version wrote: the member is fenced on its next heartbeat.
    Unknown,
}

impl MemberState {
    pub fn value(self) -> i8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
            MemberState::Unknown => 127,
        }
    }

    pub fn from_value(v: i8) -> MemberState {
        match v {
            0 => MemberState::Stable,
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => MemberState::Unknown,
        }
    }
}

/// One member of a consumer group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Sorted, without duplicates.
    pub subscribed_names: Vec<String>,
    pub regex: Option<String>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub revoking: Assignment,
    /// Not stored: a loaded member gets a full session from the load.
    pub session_deadline_ms: i64,
    /// While revoking: the member is removed if it has not revoked by then.
    pub revoke_deadline_ms: Option<i64>,
    /// Set for a member that joined with the classic protocol (JoinGroup/SyncGroup), see
    /// [`classic`]; such a member heartbeats on its own session timeout.
    pub classic: Option<ClassicMemberMetadata>,
    /// Classic member told to rejoin: it is removed if no JoinGroup comes by then.
    pub join_deadline_ms: Option<i64>,
    /// Classic member that joined: it is removed if no SyncGroup comes by then.
    pub sync_deadline_ms: Option<i64>,
}

impl ConsumerMember {
    fn new(id: String, now_ms: i64) -> Self {
        ConsumerMember {
            id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            subscribed_names: Vec::new(),
            regex: None,
            server_assignor: None,
            rebalance_timeout_ms: 0,
            epoch: 0,
            previous_epoch: 0,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            revoking: Assignment::new(),
            // Set by whoever adds the member (a heartbeat, or the end of a load).
            session_deadline_ms: now_ms,
            revoke_deadline_ms: None,
            classic: None,
            join_deadline_ms: None,
            sync_deadline_ms: None,
        }
    }

    fn metadata_value(&self) -> ConsumerGroupMemberMetadataValue {
        ConsumerGroupMemberMetadataValue {
            instance_id: self.instance_id.clone(),
            rack_id: self.rack_id.clone(),
            client_id: self.client_id.clone(),
            client_host: self.client_host.clone(),
            subscribed_topic_names: self.subscribed_names.clone(),
            subscribed_topic_regex: self.regex.clone(),
            server_assignor: self.server_assignor.clone(),
            rebalance_timeout_ms: self.rebalance_timeout_ms,
            classic_member_metadata: self.classic.clone(),
        }
    }

    fn load_metadata(&mut self, v: ConsumerGroupMemberMetadataValue) {
        self.instance_id = v.instance_id;
        self.rack_id = v.rack_id;
        self.client_id = v.client_id;
        self.client_host = v.client_host;
        let mut names = v.subscribed_topic_names;
        names.sort();
        names.dedup();
        self.subscribed_names = names;
        self.regex = v.subscribed_topic_regex.filter(|r| !r.is_empty());
        self.server_assignor = v.server_assignor;
        self.rebalance_timeout_ms = v.rebalance_timeout_ms;
        self.classic = v.classic_member_metadata;
    }

    fn assignment_value(&self) -> ConsumerGroupCurrentMemberAssignmentValue {
        ConsumerGroupCurrentMemberAssignmentValue {
            member_epoch: self.epoch,
            previous_member_epoch: self.previous_epoch,
            state: self.state.value(),
            assigned_partitions: to_topic_partitions(&self.assigned),
            partitions_pending_revocation: to_topic_partitions(&self.revoking),
        }
    }
}

/// Kafka's group states for the consumer protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

/// A consumer group's protocol state (its offsets live in `Group` beside it).
#[derive(Debug, Clone, Default)]
pub(crate) struct ConsumerGroup {
    pub epoch: i32,
    pub metadata_hash: i64,
    pub members: BTreeMap<String, ConsumerMember>,
    /// Instance id -> member id.
    pub static_members: HashMap<String, String>,
    pub target_epoch: i32,
    /// Member id -> its target assignment (members with an empty target may be absent).
    pub target: BTreeMap<String, Assignment>,
    /// Partition -> the member holding it (assigned, or not yet revoked).
    owners: HashMap<(Uuid, i32), String>,
    /// Subscribed topic names and regular expressions with how many members use them.
    names: BTreeMap<String, usize>,
    regexes: BTreeMap<String, usize>,
    /// Regex -> matching topic names, valid for `regex_version` of the topics.
    regex_cache: HashMap<String, BTreeSet<String>>,
    regex_version: Option<u64>,
}

/// What one heartbeat asks of the group, after validation.
pub(crate) struct Heartbeat<'a> {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_names: Option<Vec<String>>,
    pub regex: Option<String>,
    pub server_assignor: Option<String>,
    pub owned: Option<&'a [OwnedPartitions]>,
    pub client_id: &'a str,
    pub client_host: &'a str,
    pub now_ms: i64,
    pub group_max_size: usize,
    /// `group.consumer.session.timeout.ms` and `group.consumer.heartbeat.interval.ms`.
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
}

/// A heartbeat's error: code and message.
pub(crate) type HbError = (i16, String);

impl ConsumerGroup {
    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.target_epoch != self.epoch {
            ConsumerGroupState::Assigning
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.target_epoch || m.state != MemberState::Stable)
        {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// The assignor the group uses: the one most members ask for, else the default.
    fn assignor(&self) -> Assignor {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.server_assignor.as_deref() {
                *votes.entry(a).or_default() += 1;
            }
        }
        votes
            .iter()
            .max_by_key(|(name, n)| (**n, std::cmp::Reverse(**name)))
            .and_then(|(name, _)| Assignor::from_name(name))
            .unwrap_or(Assignor::DEFAULT)
    }

    pub fn next_deadline(&self) -> Option<i64> {
        self.members
            .values()
            .flat_map(|m| {
                std::iter::once(m.session_deadline_ms)
                    .chain(m.revoke_deadline_ms)
                    .chain(m.join_deadline_ms)
                    .chain(m.sync_deadline_ms)
            })
            .min()
    }

    /// Resolves every regex members subscribe to (after a load, the cache is empty), so
    /// [`Self::protects_topic`] sees what they match.
    pub fn resolve_regexes(&mut self, topics: &dyn TopicsView) {
        let regexes: Vec<String> = self.regexes.keys().cloned().collect();
        for r in regexes {
            self.resolve_regex(&r, topics);
        }
    }

    /// Whether a stored offset of `topic` is kept from expiry: the group has members and
    /// one of them subscribes to it (regexes as last resolved).
    pub fn protects_topic(&self, topic: &str) -> bool {
        !self.members.is_empty()
            && (self.names.contains_key(topic)
                || self.regex_cache.values().any(|set| set.contains(topic)))
    }

    // ---- subscriptions --------------------------------------------------------------------

    fn count_subscription(&mut self, m: &ConsumerMember, add: bool) {
        fn bump(map: &mut BTreeMap<String, usize>, key: &str, add: bool) {
            if add {
                *map.entry(key.to_owned()).or_default() += 1;
            } else if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        for n in &m.subscribed_names {
            bump(&mut self.names, n, add);
        }
        if let Some(r) = &m.regex {
            bump(&mut self.regexes, r, add);
        }
    }

    /// The topic names a regex subscription matches now (cached per topics version).
    fn resolve_regex(&mut self, regex: &str, topics: &dyn TopicsView) -> &BTreeSet<String> {
        if self.regex_version != Some(topics.version()) {
            self.regex_cache.clear();
            self.regex_version = Some(topics.version());
        } else if self.regex_cache.len() > self.regexes.len()
            && !self.regex_cache.contains_key(regex)
        {
            // Only regexes members use now stay cached (members may churn through many).
            let used = &self.regexes;
            self.regex_cache.retain(|r, _| used.contains_key(r));
        }
        self.regex_cache
            .entry(regex.to_owned())
            .or_insert_with(|| match compile_regex(regex) {
                Ok(re) => {
                    let mut out = BTreeSet::new();
                    topics.for_each_name(&mut |name| {
                        // Kafka's internal topics are never matched by a pattern.
                        if !is_internal_topic(name) && re.is_match(name) {
                            out.insert(name.to_owned());
                        }
                    });
                    out
                }
                Err(_) => BTreeSet::new(),
            })
    }

    /// Topic ids a member subscribes to, restricted to topics that exist.
    fn subscribed_ids(&mut self, member_id: &str, topics: &dyn TopicsView) -> BTreeSet<Uuid> {
        let Some(m) = self.members.get(member_id) else {
            return BTreeSet::new();
        };
        let mut names: Vec<String> = m.subscribed_names.clone();
        if let Some(r) = m.regex.clone() {
            names.extend(self.resolve_regex(&r, topics).iter().cloned());
        }
        names
            .iter()
            .filter_map(|n| topics.by_name(n).map(|(id, _)| id))
            .collect()
    }

    /// Every subscribed topic that exists, by id, with its name and partition count.
    fn subscribed_topics(&mut self, topics: &dyn TopicsView) -> BTreeMap<Uuid, TopicSpec> {
        let mut names: BTreeSet<String> = self.names.keys().cloned().collect();
        let regexes: Vec<String> = self.regexes.keys().cloned().collect();
        for r in regexes {
            names.extend(self.resolve_regex(&r, topics).iter().cloned());
        }
        let subscribed: BTreeMap<Uuid, TopicSpec> = names
            .into_iter()
            .filter_map(|n| {
                let (id, partitions) = topics.by_name(&n)?;
                Some((
                    id,
                    TopicSpec {
                        name: n,
                        partitions,
                    },
                ))
            })
            .collect();
        subscribed
    }

    /// A hash of the subscribed topics' identity and size: the group epoch is bumped when it
    /// changes (a topic created, deleted, recreated or grown). FNV-1a: only equality matters.
    fn metadata_hash(subscribed: &BTreeMap<Uuid, TopicSpec>) -> i64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for (id, t) in subscribed {
            eat(id.as_bytes());
            eat(t.name.as_bytes());
            eat(&t.partitions.to_be_bytes());
        }
        h as i64
    }

    // ---- ownership ------------------------------------------------------------------------

    fn release_all(&mut self, member_id: &str) {
        self.owners.retain(|_, owner| owner != member_id);
    }

    fn claim(&mut self, member_id: &str, a: &Assignment) {
        for (t, ps) in a {
            for p in ps {
                self.owners.insert((*t, *p), member_id.to_owned());
            }
        }
    }

    fn free_for(&self, member_id: &str, t: &Uuid, p: i32) -> bool {
        self.owners
            .get(&(*t, p))
            .is_none_or(|owner| owner == member_id)
    }

    /// Rebuilds the derived maps after a load; every member gets a full session from now
    /// (its classic session timeout for a classic member).
    pub fn rebuild(&mut self, now_ms: i64, session_timeout_ms: i32) {
        self.rebuild_derived();
        for m in self.members.values_mut() {
            let session = m
                .classic
                .as_ref()
                .map_or(session_timeout_ms, |c| c.session_timeout_ms);
            m.session_deadline_ms = now_ms.saturating_add(i64::from(session.max(0)));
            m.revoke_deadline_ms = (m.state == MemberState::UnrevokedPartitions
                && m.classic.is_none())
            .then(|| now_ms.saturating_add(i64::from(m.rebalance_timeout_ms.max(0))));
        }
    }

    /// Rebuilds `owners`, the subscription counts and `static_members` from the members.
    fn rebuild_derived(&mut self) {
        self.owners.clear();
        self.names.clear();
        self.regexes.clear();
        self.static_members.clear();
        let members: Vec<ConsumerMember> = self.members.values().cloned().collect();
        for m in &members {
            self.claim(&m.id, &m.assigned);
            self.claim(&m.id, &m.revoking);
            self.count_subscription(m, true);
            if let Some(i) = &m.instance_id {
                self.static_members.insert(i.clone(), m.id.clone());
            }
        }
    }

    /// The invariants of the module header.
    #[cfg(debug_assertions)]
    pub fn check(&self) {
        let mut held: HashMap<(Uuid, i32), &str> = HashMap::new();
        for m in self.members.values() {
            assert!(m.epoch <= self.target_epoch.max(0) || m.epoch < 0);
            for (t, ps) in m.assigned.iter().chain(m.revoking.iter()) {
                for p in ps {
                    let prev = held.insert((*t, *p), &m.id);
                    assert!(prev.is_none(), "partition {t}/{p} held twice");
                }
            }
            if let Some(i) = &m.instance_id {
                assert_eq!(self.static_members.get(i), Some(&m.id));
            }
        }
        assert!(self.target_epoch <= self.epoch);
        assert_eq!(held.len(), self.owners.len());
        for (k, owner) in &self.owners {
            assert_eq!(held.get(k).copied(), Some(owner.as_str()));
        }
    }

    // ---- records --------------------------------------------------------------------------

    fn epoch_record(&self, gid: &str) -> Record {
        let v = ConsumerGroupMetadataValue {
            epoch: self.epoch,
            metadata_hash: self.metadata_hash,
        };
        (consumer_group_metadata_key(gid), Some(v.encode()))
    }

    fn member_records_removed(gid: &str, member_id: &str, out: &mut Vec<Record>) {
        out.push((consumer_group_current_assignment_key(gid, member_id), None));
        out.push((consumer_group_target_member_key(gid, member_id), None));
        out.push((consumer_group_member_key(gid, member_id), None));
    }

    /// Records that delete the group itself (after its members are gone).
    pub fn deletion_records(gid: &str) -> Vec<Record> {
        vec![
            (consumer_group_target_metadata_key(gid), None),
            (consumer_group_metadata_key(gid), None),
        ]
    }

    /// Removes a member (left, fenced or timed out) and bumps the group epoch.
    pub fn remove_member(&mut self, gid: &str, member_id: &str, records: &mut Vec<Record>) {
        if self.drop_member(gid, member_id, records) {
            self.bump_epoch(gid, records);
        }
    }

    /// Removes a member without bumping the group epoch (the caller bumps it once for a
    /// batch); false if there was no such member.
    fn drop_member(&mut self, gid: &str, member_id: &str, records: &mut Vec<Record>) -> bool {
        let Some(m) = self.members.remove(member_id) else {
            return false;
        };
        self.count_subscription(&m, false);
        if let Some(i) = &m.instance_id {
            self.static_members.remove(i);
        }
        self.release_all(member_id);
        self.target.remove(member_id);
        Self::member_records_removed(gid, member_id, records);
        true
    }

    /// A new group epoch: the next heartbeat computes a new target.
    pub fn bump_epoch(&mut self, gid: &str, records: &mut Vec<Record>) {
        self.epoch += 1;
        records.push(self.epoch_record(gid));
    }

    /// Removes members whose session ran out, that did not revoke in their rebalance
    /// timeout, or (classic members) did not rejoin or sync in it: Kafka fences all alike.
    /// Stops at a member whose removal would leave only classic members and returns it: the
    /// caller turns the group back into a classic group instead (online downgrade).
    pub fn tick(
        &mut self,
        gid: &str,
        now_ms: i64,
        classic_max_size: usize,
        records: &mut Vec<Record>,
    ) -> Option<String> {
        let due = |d: Option<i64>| d.is_some_and(|d| d <= now_ms);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.session_deadline_ms <= now_ms
                    || due(m.revoke_deadline_ms)
                    || due(m.join_deadline_ms)
                    || due(m.sync_deadline_ms)
            })
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            if self.fence_downgrades(&id, classic_max_size) {
                return Some(id);
            }
            self.remove_member(gid, &id, records);
        }
        None
    }

    /// A new member, empty and at epoch 0 (static if `instance_id`).
    fn add_member(&mut self, member_id: &str, instance_id: Option<&str>, now_ms: i64) {
        let mut m = ConsumerMember::new(member_id.to_owned(), now_ms);
        if let Some(inst) = instance_id {
            m.instance_id = Some(inst.to_owned());
            self.static_members
                .insert(inst.to_owned(), member_id.to_owned());
        }
        self.members.insert(member_id.to_owned(), m);
    }

    /// A restarted static member (`new_id`) takes over its previous incarnation's (`old`)
    /// target, so nobody else's assignment moves (KIP-345 for KIP-848). The old member's
    /// partitions are released (it stopped); the new one reconciles to the same target
    /// without a new group epoch. The protocol-specific fields are the caller's to set.
    fn replace_static(
        &mut self,
        gid: &str,
        old: &str,
        new_id: &str,
        now_ms: i64,
        records: &mut Vec<Record>,
    ) {
        let target = self.target.remove(old);
        let prev = self.members.remove(old);
        self.release_all(old);
        Self::member_records_removed(gid, old, records);
        // Same subscription, so its counts stay as they are.
        let mut m = ConsumerMember::new(new_id.to_owned(), now_ms);
        if let Some(p) = prev {
            m.subscribed_names = p.subscribed_names;
            m.regex = p.regex;
            m.server_assignor = p.server_assignor;
            m.rack_id = p.rack_id;
            m.rebalance_timeout_ms = p.rebalance_timeout_ms;
            m.instance_id = p.instance_id;
        }
        if let Some(inst) = &m.instance_id {
            self.static_members.insert(inst.clone(), new_id.to_owned());
        }
        self.members.insert(new_id.to_owned(), m);
        if let Some(t) = target {
            let v = ConsumerGroupTargetAssignmentMemberValue {
                topic_partitions: to_topic_partitions(&t),
            };
            records.push((
                consumer_group_target_member_key(gid, new_id),
                Some(v.encode()),
            ));
            self.target.insert(new_id.to_owned(), t);
        }
    }

    // ---- the heartbeat --------------------------------------------------------------------

    /// Runs one heartbeat; the records to persist go to `records`. Returns the response.
    pub fn heartbeat(
        &mut self,
        gid: &str,
        hb: Heartbeat<'_>,
        topics: &dyn TopicsView,
        records: &mut Vec<Record>,
    ) -> Result<ConsumerGroupHeartbeatResponse, HbError> {
        let now = hb.now_ms;
        if hb.member_epoch == LEAVE_GROUP_MEMBER_EPOCH
            || hb.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH
        {
            return self.leave(gid, &hb, records);
        }
        let full_request = hb.member_epoch == 0
            || (hb.rebalance_timeout_ms != -1
                && hb.subscribed_names.is_some()
                && hb.owned.is_some());
        let mut bump = false;
        let mut is_new = false;
        let member_id = hb.member_id.clone();
        if hb.member_epoch == 0 {
            if let Some(inst) = &hb.instance_id {
                match self.static_members.get(inst).cloned() {
                    Some(old) if old != member_id => {
                        // A classic member's instance is taken over at once (its protocol
                        // has no "leaving for now"), as Kafka does.
                        let releasable = self.members.get(&old).is_none_or(|m| {
                            m.epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH || m.classic.is_some()
                        });
                        if !releasable {
                            return Err((
                                code::UNRELEASED_INSTANCE_ID,
                                format!("Static member {inst} is still in use by {old}."),
                            ));
                        }
                        self.replace_static(gid, &old, &member_id, now, records);
                        is_new = true;
                    }
                    _ => {}
                }
            }
            if !self.members.contains_key(&member_id) {
                if self.members.len() >= hb.group_max_size {
                    return Err((
                        code::GROUP_MAX_SIZE_REACHED,
                        format!(
                            "The consumer group has reached its maximum capacity of {} members.",
                            hb.group_max_size
                        ),
                    ));
                }
                self.add_member(&member_id, hb.instance_id.as_deref(), now);
                is_new = true;
                bump = true;
            }
        } else {
            let m = self.known_member(gid, &member_id, hb.instance_id.as_deref())?;
            // Kafka's epoch rule: a newer epoch than the member has is impossible; an older
            // one is accepted only as the previous epoch from a member that lost our
            // answer and still owns nothing beyond its assignment.
            if hb.member_epoch > m.epoch
                || (hb.member_epoch < m.epoch
                    && (hb.member_epoch != m.previous_epoch
                        || !hb.owned.is_some_and(|o| is_subset(o, &m.assigned))))
            {
                return Err((
                    code::FENCED_MEMBER_EPOCH,
                    format!(
                        "The consumer group member's epoch ({}) is neither the one known by the group coordinator ({}) nor, with its partitions, the previous one. The member must abandon all its partitions and rejoin.",
                        hb.member_epoch, m.epoch
                    ),
                ));
            }
        }

        // Apply what the request changes (absent fields mean "unchanged").
        let Some(old) = self.members.get(&member_id).cloned() else {
            return Err((code::UNKNOWN_MEMBER_ID, String::new()));
        };
        let mut m = old.clone();
        m.client_id = hb.client_id.to_owned();
        m.client_host = hb.client_host.to_owned();
        if hb.rack_id.is_some() {
            m.rack_id = hb.rack_id.clone();
        }
        if hb.rebalance_timeout_ms != -1 {
            m.rebalance_timeout_ms = hb.rebalance_timeout_ms;
        }
        if let Some(names) = hb.subscribed_names.clone() {
            m.subscribed_names = names;
        }
        if let Some(r) = hb.regex.clone() {
            m.regex = (!r.is_empty()).then_some(r);
        }
        if hb.server_assignor.is_some() {
            m.server_assignor = hb.server_assignor.clone();
        }
        // A change of server assignor alone does not bump the group epoch (Kafka): the
        // group's assignor applies from the next assignment on.
        let subscription_changed =
            m.subscribed_names != old.subscribed_names || m.regex != old.regex;
        if subscription_changed {
            self.count_subscription(&old, false);
            self.count_subscription(&m, true);
            bump = true;
        }
        // Heartbeating with this protocol makes a classic member a consumer-protocol one.
        if m.classic.take().is_some() {
            m.join_deadline_ms = None;
            m.sync_deadline_ms = None;
        }
        let metadata_changed = subscription_changed
            || m.server_assignor != old.server_assignor
            || m.classic != old.classic
            || m.rack_id != old.rack_id
            || m.rebalance_timeout_ms != old.rebalance_timeout_ms
            || m.client_id != old.client_id
            || m.client_host != old.client_host
            || is_new;
        m.session_deadline_ms = now.saturating_add(i64::from(hb.session_timeout_ms.max(0)));
        if metadata_changed {
            records.push((
                consumer_group_member_key(gid, &member_id),
                Some(m.metadata_value().encode()),
            ));
        }
        self.members.insert(member_id.clone(), m);

        self.advance(gid, bump, topics, records);

        // Reconcile this member towards its target.
        self.reconcile(&member_id, hb.owned, now)?;
        let m = self.members.get(&member_id).cloned().unwrap_or(old.clone());
        let changed = Self::record_reconciled(gid, &old, &m, is_new, records);
        #[cfg(debug_assertions)]
        self.check();

        let mut r = ConsumerGroupHeartbeatResponse::default();
        r.member_id = Some(sb(&member_id));
        r.member_epoch = m.epoch;
        r.heartbeat_interval_ms = hb.heartbeat_interval_ms;
        if full_request || changed {
            let mut a = cgh::Assignment::default();
            a.topic_partitions = m
                .assigned
                .iter()
                .map(|(t, ps)| {
                    let mut tp = cgh::TopicPartitions::default();
                    tp.topic_id = *t;
                    tp.partitions = ps.iter().copied().collect();
                    tp
                })
                .collect();
            r.assignment = Some(a);
        }
        Ok(r)
    }

    /// Checks that a heartbeat of a joined member (epoch other than 0) names one: in Kafka's
    /// order, a static member's instance first (unknown: UNKNOWN_MEMBER_ID; held under
    /// another member id, so this is a zombie of a restarted instance: FENCED_INSTANCE_ID),
    /// then the member id.
    pub(crate) fn known_member(
        &self,
        gid: &str,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<&ConsumerMember, HbError> {
        if let Some(inst) = instance_id {
            match self.static_members.get(inst) {
                None => {
                    return Err((
                        code::UNKNOWN_MEMBER_ID,
                        format!("Instance id {inst} is unknown."),
                    ))
                }
                Some(holder) if holder != member_id => {
                    return Err((
                        code::FENCED_INSTANCE_ID,
                        format!(
                            "Static member {member_id} with instance id {inst} was fenced by member {holder}."
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        self.members.get(member_id).ok_or_else(|| {
            (
                code::UNKNOWN_MEMBER_ID,
                format!("Member {member_id} is not a member of group {gid}."),
            )
        })
    }

    fn leave(
        &mut self,
        gid: &str,
        hb: &Heartbeat<'_>,
        records: &mut Vec<Record>,
    ) -> Result<ConsumerGroupHeartbeatResponse, HbError> {
        let member_id = hb.member_id.clone();
        self.known_member(gid, &member_id, hb.instance_id.as_deref())?;
        let mut r = ConsumerGroupHeartbeatResponse::default();
        r.member_id = Some(sb(&member_id));
        r.member_epoch = hb.member_epoch;
        r.heartbeat_interval_ms = 0;
        if hb.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH && hb.instance_id.is_some() {
            self.leave_for_now(gid, &member_id, records);
        } else {
            self.remove_member(gid, &member_id, records);
        }
        #[cfg(debug_assertions)]
        self.check();
        Ok(r)
    }

    /// A static member leaving for now (epoch -2): it keeps its target and its assigned
    /// partitions until its session runs out, so a restart within the session moves
    /// nothing. What it was still revoking is released (it stopped consuming), so other
    /// members need not wait for it; its previous epoch stays as it was (Kafka).
    fn leave_for_now(&mut self, gid: &str, member_id: &str, records: &mut Vec<Record>) {
        let Some(m) = self.members.get_mut(member_id) else {
            return;
        };
        m.epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
        m.revoking.clear();
        m.revoke_deadline_ms = None;
        let assigned = m.assigned.clone();
        let v = m.assignment_value();
        records.push((
            consumer_group_current_assignment_key(gid, member_id),
            Some(v.encode()),
        ));
        self.release_all(member_id);
        self.claim(member_id, &assigned);
    }

    /// After a member's update: bumps the group epoch if `bump` or the subscribed topics
    /// changed (their hash), then computes the target if the epoch is ahead of it.
    fn advance(
        &mut self,
        gid: &str,
        mut bump: bool,
        topics: &dyn TopicsView,
        records: &mut Vec<Record>,
    ) {
        let subscribed = self.subscribed_topics(topics);
        let hash = Self::metadata_hash(&subscribed);
        if hash != self.metadata_hash {
            self.metadata_hash = hash;
            bump = true;
        }
        if bump {
            self.bump_epoch(gid, records);
        }
        if self.epoch > self.target_epoch {
            self.compute_target(gid, &subscribed, topics, records);
        }
    }

    /// Records a member's current assignment if reconciling changed it (or it is new);
    /// returns whether it changed.
    fn record_reconciled(
        gid: &str,
        old: &ConsumerMember,
        m: &ConsumerMember,
        is_new: bool,
        records: &mut Vec<Record>,
    ) -> bool {
        let changed = m.epoch != old.epoch
            || m.previous_epoch != old.previous_epoch
            || m.state != old.state
            || m.assigned != old.assigned
            || m.revoking != old.revoking;
        if changed || is_new {
            records.push((
                consumer_group_current_assignment_key(gid, &m.id),
                Some(m.assignment_value().encode()),
            ));
        }
        changed
    }

    /// Computes the target assignment at the group epoch and records what changed.
    fn compute_target(
        &mut self,
        gid: &str,
        subscribed: &BTreeMap<Uuid, TopicSpec>,
        topics: &dyn TopicsView,
        records: &mut Vec<Record>,
    ) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        let subs: Vec<BTreeSet<Uuid>> = ids
            .iter()
            .map(|id| self.subscribed_ids(id, topics))
            .collect();
        let empty = Assignment::new();
        let specs: Vec<MemberSpec<'_>> = ids
            .iter()
            .zip(&subs)
            .map(|(id, sub)| {
                let m = &self.members[id];
                MemberSpec {
                    member_id: id,
                    instance_id: m.instance_id.as_deref(),
                    rack: m.rack_id.as_deref(),
                    subscribed: sub,
                    current: self.target.get(id).unwrap_or(&empty),
                }
            })
            .collect();
        let new_target = self.assignor().assign(&specs, subscribed);
        drop(specs);
        for id in &ids {
            let new = new_target.get(id).cloned().unwrap_or_default();
            let old = self.target.get(id);
            if old.map_or(!new.is_empty(), |o| *o != new) {
                let v = ConsumerGroupTargetAssignmentMemberValue {
                    topic_partitions: to_topic_partitions(&new),
                };
                records.push((consumer_group_target_member_key(gid, id), Some(v.encode())));
            }
            self.target.insert(id.clone(), new);
        }
        self.target.retain(|id, _| self.members.contains_key(id));
        self.target_epoch = self.epoch;
        let v = ConsumerGroupTargetAssignmentMetadataValue {
            assignment_epoch: self.target_epoch,
            ..Default::default()
        };
        records.push((consumer_group_target_metadata_key(gid), Some(v.encode())));
    }

    /// Moves a member one step towards its target (Kafka's `CurrentAssignmentBuilder`).
    fn reconcile(
        &mut self,
        member_id: &str,
        owned: Option<&[OwnedPartitions]>,
        now_ms: i64,
    ) -> Result<(), HbError> {
        let Some(m) = self.members.get(member_id).cloned() else {
            return Ok(());
        };
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let next = match m.state {
            MemberState::Stable if m.epoch == self.target_epoch => None,
            MemberState::Stable | MemberState::UnreleasedPartitions => {
                Some(self.next_assignment(&m, &target, owned))
            }
            MemberState::UnrevokedPartitions => {
                if owns_any(owned, &m.revoking) {
                    None
                } else {
                    // Kafka: a completed revocation moves the member one epoch on, even if
                    // the target now asks it to revoke more (it is behind the target, so
                    // this never passes it).
                    let mut stepped = m.clone();
                    stepped.epoch = m.epoch.saturating_add(1).min(self.target_epoch);
                    Some(self.next_assignment(&stepped, &target, owned))
                }
            }
            MemberState::Unknown => {
                if !owned.is_some_and(|o| o.iter().all(|t| t.partitions.is_empty())) {
                    return Err((
                        code::FENCED_MEMBER_EPOCH,
                        "The consumer group member is in an unknown state. The member must abandon all its partitions and rejoin.".to_owned(),
                    ));
                }
                let mut reset = m.clone();
                reset.assigned.clear();
                reset.revoking.clear();
                Some(self.next_assignment(&reset, &target, owned))
            }
        };
        if let Some((state, epoch, assigned, revoking)) = next {
            self.release_all(member_id);
            self.claim(member_id, &assigned);
            self.claim(member_id, &revoking);
            if let Some(mm) = self.members.get_mut(member_id) {
                let changed = epoch != mm.epoch
                    || state != mm.state
                    || assigned != mm.assigned
                    || revoking != mm.revoking;
                if epoch != mm.epoch {
                    mm.previous_epoch = mm.epoch;
                    mm.epoch = epoch;
                }
                mm.state = state;
                mm.assigned = assigned;
                mm.revoking = revoking;
                // Kafka: every step of a revocation grants a full rebalance timeout for the
                // next. A classic member has its join and sync timers instead.
                if changed {
                    mm.revoke_deadline_ms = match state {
                        MemberState::UnrevokedPartitions if mm.classic.is_none() => {
                            Some(now_ms.saturating_add(i64::from(mm.rebalance_timeout_ms.max(0))))
                        }
                        _ => None,
                    };
                }
            }
        }
        Ok(())
    }

    /// The member's next (state, epoch, assigned, revoking) given its target and what it
    /// reports to own (`None`: not reported, so it may own everything it was given).
    fn next_assignment(
        &self,
        m: &ConsumerMember,
        target: &Assignment,
        owned: Option<&[OwnedPartitions]>,
    ) -> (MemberState, i32, Assignment, Assignment) {
        let mut kept = Assignment::new();
        let mut revoke = Assignment::new();
        let mut add = Assignment::new();
        let mut unreleased = false;
        for (t, ps) in &m.assigned {
            let want = target.get(t);
            for p in ps {
                if want.is_some_and(|w| w.contains(p)) {
                    kept.entry(*t).or_default().insert(*p);
                } else {
                    revoke.entry(*t).or_default().insert(*p);
                }
            }
        }
        for (t, ps) in target {
            let have = m.assigned.get(t);
            for p in ps {
                if have.is_some_and(|h| h.contains(p)) {
                    continue;
                }
                if self.free_for(&m.id, t, *p) {
                    add.entry(*t).or_default().insert(*p);
                } else {
                    unreleased = true;
                }
            }
        }
        if !revoke.is_empty() && owns_any(owned, &revoke) {
            // Revoke first; the epoch moves only once the member has let go. A member that
            // already gave them up (an eager classic member rejoining) moves on at once.
            return (MemberState::UnrevokedPartitions, m.epoch, kept, revoke);
        }
        for (t, ps) in add {
            kept.entry(t).or_default().extend(ps);
        }
        let state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
        (state, self.target_epoch, kept, Assignment::new())
    }

    // ---- loading --------------------------------------------------------------------------

    pub fn load_member(&mut self, member_id: &str, v: Option<ConsumerGroupMemberMetadataValue>) {
        match v {
            Some(v) => self
                .members
                .entry(member_id.to_owned())
                .or_insert_with(|| ConsumerMember::new(member_id.to_owned(), 0))
                .load_metadata(v),
            None => {
                self.members.remove(member_id);
            }
        }
    }

    pub fn load_current(
        &mut self,
        member_id: &str,
        v: Option<ConsumerGroupCurrentMemberAssignmentValue>,
    ) {
        let Some(v) = v else {
            return;
        };
        let m = self
            .members
            .entry(member_id.to_owned())
            .or_insert_with(|| ConsumerMember::new(member_id.to_owned(), 0));
        m.epoch = v.member_epoch;
        m.previous_epoch = v.previous_member_epoch;
        m.state = MemberState::from_value(v.state);
        m.assigned = from_topic_partitions(&v.assigned_partitions);
        m.revoking = from_topic_partitions(&v.partitions_pending_revocation);
    }

    pub fn load_target(
        &mut self,
        member_id: &str,
        v: Option<ConsumerGroupTargetAssignmentMemberValue>,
    ) {
        match v {
            Some(v) => {
                self.target.insert(
                    member_id.to_owned(),
                    from_topic_partitions(&v.topic_partitions),
                );
            }
            None => {
                self.target.remove(member_id);
            }
        }
    }

    // ---- ConsumerGroupDescribe -------------------------------------------------------------

    pub fn describe(&mut self, gid: &str, topics: &dyn TopicsView) -> DescribedGroup {
        let mut d = DescribedGroup::default();
        d.group_id = GroupId(sb(gid));
        d.group_state = sb(self.state().name());
        d.group_epoch = self.epoch;
        d.assignment_epoch = self.target_epoch;
        d.assignor_name = sb(self.assignor().name());
        d.authorized_operations = i32::MIN;
        let describe = |a: &Assignment| {
            let mut out = cgd::Assignment::default();
            out.topic_partitions = a
                .iter()
                .map(|(t, ps)| {
                    let mut tp = cgd::TopicPartitions::default();
                    tp.topic_id = *t;
                    tp.topic_name = TopicName(sb(topics.by_id(t).map_or("", |(n, _)| n)));
                    tp.partitions = ps.iter().copied().collect();
                    tp
                })
                .collect();
            out
        };
        d.members = self
            .members
            .values()
            .map(|m| {
                let mut dm = cgd::Member::default();
                dm.member_id = sb(&m.id);
                dm.instance_id = m.instance_id.as_deref().map(sb);
                dm.rack_id = m.rack_id.as_deref().map(sb);
                dm.member_epoch = m.epoch;
                dm.client_id = sb(&m.client_id);
                dm.client_host = sb(&m.client_host);
                dm.subscribed_topic_names = m
                    .subscribed_names
                    .iter()
                    .map(|n| TopicName(sb(n)))
                    .collect();
                dm.subscribed_topic_regex = m.regex.as_deref().map(sb);
                dm.assignment = describe(&m.assigned);
                dm.target_assignment =
                    describe(self.target.get(&m.id).unwrap_or(&Assignment::new()));
                // v1: 0 = a classic member (online migration), 1 = the consumer protocol.
                dm.member_type = if m.classic.is_some() { 0 } else { 1 };
                dm
            })
            .collect();
        d
    }
}

/// Kafka's internal topics, which pattern subscriptions never match.
pub fn is_internal_topic(name: &str) -> bool {
    name == "__consumer_offsets" || name == "__transaction_state"
}

/// Compiles a subscription regex as Kafka matches it: against the whole topic name.
pub(crate) fn compile_regex(regex: &str) -> Result<regex::Regex, String> {
    if regex.len() > SUBSCRIPTION_REGEX_BYTES_MAX {
        return Err(format!(
            "The regular expression is longer than {SUBSCRIPTION_REGEX_BYTES_MAX} bytes."
        ));
    }
    regex::RegexBuilder::new(&format!("^(?:{regex})$"))
        .size_limit(SUBSCRIPTION_REGEX_BYTES_MAX * 1024)
        .build()
        .map_err(|e| format!("Invalid regular expression {regex}: {e}"))
}

fn to_topic_partitions(a: &Assignment) -> TopicPartitions {
    a.iter()
        .filter(|(_, ps)| !ps.is_empty())
        .map(|(t, ps)| (*t, ps.iter().copied().collect()))
        .collect()
}

fn from_topic_partitions(tp: &TopicPartitions) -> Assignment {
    let mut a = Assignment::new();
    for (t, ps) in tp {
        if !ps.is_empty() {
            a.entry(*t).or_default().extend(ps.iter().copied());
        }
    }
    a
}

fn is_subset(owned: &[OwnedPartitions], assigned: &Assignment) -> bool {
    owned.iter().all(|t| {
        t.partitions.is_empty()
            || assigned
                .get(&t.topic_id)
                .is_some_and(|a| t.partitions.iter().all(|p| a.contains(p)))
    })
}

/// Whether the member still reports owning any of `revoking` (an absent list means it did
/// not say, so it may).
fn owns_any(owned: Option<&[OwnedPartitions]>, revoking: &Assignment) -> bool {
    let Some(owned) = owned else {
        return true;
    };
    owned.iter().any(|t| {
        revoking
            .get(&t.topic_id)
            .is_some_and(|r| t.partitions.iter().any(|p| r.contains(p)))
    })
}
