//! `GroupCoordinator`: the groups of one or more `__consumer_offsets` partitions, driven by
//! typed requests, `tick`s and replayed records; every call returns the `Effect`s to perform.

use std::collections::HashSet;

use uuid::Uuid;

use bytes::Bytes;
use indexmap::IndexMap;
use sluice_codec::kafka_protocol::messages::consumer_group_describe_response;
use sluice_codec::kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use sluice_codec::kafka_protocol::messages::describe_groups_response::{
    DescribedGroup, DescribedGroupMember,
};
use sluice_codec::kafka_protocol::messages::leave_group_response::MemberResponse;
use sluice_codec::kafka_protocol::messages::list_groups_response::ListedGroup;
use sluice_codec::kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use sluice_codec::kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use sluice_codec::kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use sluice_codec::kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use sluice_codec::kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, DeleteGroupsRequest, DeleteGroupsResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};

use crate::assignor::Assignor;
use crate::consumer::{
    compile_regex, release_parked, ClassicCall, ClassicJoin, ConsumerGroup, ConsumerGroupState,
    Heartbeat, TopicsView, CONSUMER_HEARTBEAT_INTERVAL_MS, CONSUMER_SESSION_TIMEOUT_MS,
    LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH, SUBSCRIBED_TOPICS_MAX,
};
use crate::consumer_records::{
    ConsumerGroupCurrentMemberAssignmentValue, ConsumerGroupMemberMetadataValue,
    ConsumerGroupMetadataValue, ConsumerGroupTargetAssignmentMemberValue,
    ConsumerGroupTargetAssignmentMetadataValue,
};
use crate::effect::{Effect, Record, ReplyToken, RequestCtx, Response};
use crate::error::{code, GroupError};
use crate::group::{
    join_error, sb, sync_response, ClassicGroup, ClassicState, Group, GroupKind, JoinArgs, Out,
    SyncArgs, CONSUMER_PROTOCOL_TYPE,
};
use crate::records::{
    decode_group_metadata_value, decode_key, decode_offset_commit_value, group_metadata_key,
    offset_commit_key, offset_commit_value, OffsetCommitValue, RecordKey,
};

/// Members per group (Kafka's `group.max.size` is unbounded by default; a bound keeps one
/// group from taking the shard's memory). Joins beyond it get GROUP_MAX_SIZE_REACHED.
pub const GROUP_MEMBERS_MAX: usize = 5_000;
/// Groups per coordinator. A new group beyond it is refused with COORDINATOR_NOT_AVAILABLE
/// (retriable: empty groups expire and free room).
pub const GROUPS_MAX: usize = 100_000;
/// Bytes of one member's join metadata (all protocols) or assignment. Kafka has no direct
/// limit but fails the group record append when it is too large and answers
/// UNKNOWN_SERVER_ERROR; we refuse such joins (and leader assignments) up front with that code.
pub const MEMBER_METADATA_BYTES_MAX: usize = 1 << 20;
/// Protocols one member may offer in a JoinGroup (clients send one per assignor).
pub const MEMBER_PROTOCOLS_MAX: usize = 64;
/// `offset.metadata.max.bytes`: longer commit metadata gets OFFSET_METADATA_TOO_LARGE.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Default `group.min.session.timeout.ms`.
pub const SESSION_TIMEOUT_MIN_MS: i32 = 6_000;
/// Default `group.max.session.timeout.ms`.
pub const SESSION_TIMEOUT_MAX_MS: i32 = 1_800_000;
/// Default `group.initial.rebalance.delay.ms`.
pub const INITIAL_REBALANCE_DELAY_MS: i32 = 3_000;
/// Kafka's fixed new-member join timeout (5 minutes).
pub const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 300_000;
/// Default `offsets.retention.minutes` (7 days), in ms.
pub const OFFSETS_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Default `offsets.retention.check.interval.ms`.
pub const OFFSETS_RETENTION_CHECK_INTERVAL_MS: i64 = 600_000;
/// Default `offsets.topic.num.partitions`.
pub const OFFSETS_TOPIC_PARTITIONS: i32 = 50;

/// Bytes of a member id a client chooses (KIP-848 v1 clients send a UUID's 22 or 36).
pub const MEMBER_ID_BYTES_MAX: usize = 255;

/// OffsetCommit v2-v4 `retention_time_ms` meaning "use the broker's retention".
const DEFAULT_RETENTION_TIME: i64 = -1;
/// DescribeGroups' `authorized_operations` when not requested.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// Coordinator settings (Kafka broker configs of the same meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub initial_rebalance_delay_ms: i32,
    pub new_member_join_timeout_ms: i64,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: i64,
    pub group_max_size: usize,
    /// KIP-848 consumer groups: `group.consumer.session.timeout.ms`.
    pub consumer_session_timeout_ms: i32,
    /// KIP-848 consumer groups: `group.consumer.heartbeat.interval.ms`.
    pub consumer_heartbeat_interval_ms: i32,
    /// `group.consumer.migration.policy`.
    pub consumer_migration_policy: MigrationPolicy,
    pub groups_max: usize,
    pub member_metadata_max_bytes: usize,
    pub offset_metadata_max_bytes: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: SESSION_TIMEOUT_MIN_MS,
            max_session_timeout_ms: SESSION_TIMEOUT_MAX_MS,
            initial_rebalance_delay_ms: INITIAL_REBALANCE_DELAY_MS,
            new_member_join_timeout_ms: NEW_MEMBER_JOIN_TIMEOUT_MS,
            offsets_retention_ms: OFFSETS_RETENTION_MS,
            offsets_retention_check_interval_ms: OFFSETS_RETENTION_CHECK_INTERVAL_MS,
            group_max_size: GROUP_MEMBERS_MAX,
            consumer_session_timeout_ms: CONSUMER_SESSION_TIMEOUT_MS,
            consumer_heartbeat_interval_ms: CONSUMER_HEARTBEAT_INTERVAL_MS,
            consumer_migration_policy: MigrationPolicy::Bidirectional,
            groups_max: GROUPS_MAX,
            member_metadata_max_bytes: MEMBER_METADATA_BYTES_MAX,
            offset_metadata_max_bytes: OFFSET_METADATA_BYTES_MAX,
        }
    }
}

/// `group.consumer.migration.policy`: which conversions of a group *with members* between
/// the classic and the consumer protocol happen online (empty groups always convert).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationPolicy {
    Disabled,
    Upgrade,
    Downgrade,
    Bidirectional,
}

impl MigrationPolicy {
    /// Kafka's names, case-insensitive.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "disabled" => Some(MigrationPolicy::Disabled),
            "upgrade" => Some(MigrationPolicy::Upgrade),
            "downgrade" => Some(MigrationPolicy::Downgrade),
            "bidirectional" => Some(MigrationPolicy::Bidirectional),
            _ => None,
        }
    }

    pub fn upgrades(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Upgrade | MigrationPolicy::Bidirectional
        )
    }

    pub fn downgrades(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Downgrade | MigrationPolicy::Bidirectional
        )
    }
}

/// The consumer-group coordinator for the groups of the `__consumer_offsets` partitions
/// this instance was given. Sans-IO: see the crate docs for how to drive it.
#[derive(Debug)]
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: IndexMap<String, Group>,
    /// Earliest tick the driver has been asked for and not yet run.
    tick_hint: Option<i64>,
    next_retention_check_ms: Option<i64>,
    /// Where new member ids come from: random (`None`), or a seeded sequence so that a
    /// simulation replays exactly ([`Self::seed_member_ids`]).
    id_seed: Option<u64>,
}

/// One group as [`GroupCoordinator::overview`] shows it.
#[derive(Debug)]
pub struct GroupOverview<'a> {
    pub id: &'a str,
    pub state: &'static str,
    pub members: usize,
    pub offsets: Vec<(&'a str, i32, i64)>,
}

type Partitions = Vec<(String, Vec<i32>)>;
/// Per topic: each requested partition and its committed offset, if any.
type Fetched<'a> = Vec<(String, Vec<(i32, Option<&'a OffsetCommitValue>)>)>;

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> Self {
        GroupCoordinator {
            config,
            groups: IndexMap::new(),
            tick_hint: None,
            next_retention_check_ms: None,
            id_seed: None,
        }
    }

    /// Makes member ids a function of `seed` (for seeded simulations; clients cannot tell).
    pub fn seed_member_ids(&mut self, seed: u64) {
        self.id_seed = Some(seed | 1);
    }

    /// A UUID for a new member id.
    fn fresh_uuid(&mut self) -> Uuid {
        match &mut self.id_seed {
            None => Uuid::new_v4(),
            Some(x) => {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                Uuid::from_u64_pair(*x, x.rotate_left(32))
            }
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Finish a call: turn the earliest new deadline into a `ScheduleTick` if the driver does
    /// not already hold an earlier one.
    fn finish(&mut self, mut out: Out, now_ms: i64) -> Vec<Effect> {
        if self.next_retention_check_ms.is_none() {
            let at = now_ms.saturating_add(self.config.offsets_retention_check_interval_ms.max(1));
            self.next_retention_check_ms = Some(at);
            out.wake(at);
        }
        if let Some(at) = out.wake_at {
            if self.tick_hint.is_none_or(|h| at < h) {
                self.tick_hint = Some(at);
                out.effects.push(Effect::ScheduleTick { at_ms: at });
            }
        }
        out.effects
    }

    /// Earliest deadline any group or the retention check waits for.
    pub fn next_deadline(&self) -> Option<i64> {
        let groups = self.groups.values().filter_map(|g| match &g.kind {
            GroupKind::Classic(c) => c.next_deadline(),
            GroupKind::Consumer(cg) => cg.next_deadline(),
        });
        groups.chain(self.next_retention_check_ms).min()
    }

    // ---- introspection (for the driver's metrics and tests) -------------------------------

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// A classic group's state (`None` for a missing or consumer-protocol group).
    pub fn group_state(&self, group_id: &str) -> Option<ClassicState> {
        self.groups.get(group_id).and_then(|g| match &g.kind {
            GroupKind::Classic(c) => Some(c.state),
            GroupKind::Consumer(_) => None,
        })
    }

    /// A consumer-protocol group's state (`None` for a missing or classic group).
    pub fn consumer_group_state(&self, group_id: &str) -> Option<ConsumerGroupState> {
        self.groups.get(group_id).and_then(|g| match &g.kind {
            GroupKind::Consumer(cg) => Some(cg.state()),
            GroupKind::Classic(_) => None,
        })
    }

    /// A classic group's generation, or a consumer-protocol group's epoch.
    pub fn generation(&self, group_id: &str) -> Option<i32> {
        self.groups.get(group_id).map(|g| match &g.kind {
            GroupKind::Classic(c) => c.generation,
            GroupKind::Consumer(cg) => cg.epoch,
        })
    }

    /// Every group for metrics: its id, Kafka's state name, member count, and its
    /// committed offsets as (topic, partition, offset).
    pub fn overview(&self) -> impl Iterator<Item = GroupOverview<'_>> {
        self.groups.values().map(|g| {
            let (state, members) = match &g.kind {
                GroupKind::Classic(c) => (c.state.name(), c.members.len()),
                GroupKind::Consumer(cg) => (cg.state().name(), cg.members.len()),
            };
            GroupOverview {
                id: &g.id,
                state,
                members,
                offsets: g
                    .offsets
                    .iter()
                    .map(|((t, p), v)| (t.as_str(), *p, v.offset))
                    .collect(),
            }
        })
    }

    /// Member ids of a group (classic: in join order; consumer: sorted).
    pub fn members(&self, group_id: &str) -> Vec<String> {
        match self.groups.get(group_id).map(|g| &g.kind) {
            Some(GroupKind::Classic(c)) => c.members.keys().cloned().collect(),
            Some(GroupKind::Consumer(cg)) => cg.members.keys().cloned().collect(),
            None => Vec::new(),
        }
    }

    // ---- ConsumerGroupHeartbeat / ConsumerGroupDescribe (KIP-848) -------------------------

    /// ConsumerGroupHeartbeat v0-v1: joins, heartbeats, subscription changes and leaves of
    /// consumer-protocol members. Answered once the records it writes are durable.
    pub fn consumer_group_heartbeat(
        &mut self,
        ctx: RequestCtx<'_>,
        req: ConsumerGroupHeartbeatRequest,
        topics: &dyn TopicsView,
    ) -> Vec<Effect> {
        let mut out = Out::default();
        let mut records = Vec::new();
        let response = match self.heartbeat_inner(&ctx, &req, topics, &mut records, &mut out) {
            Ok(r) => r,
            Err((error, message)) => {
                let mut r = ConsumerGroupHeartbeatResponse::default();
                r.error_code = error;
                r.error_message = Some(sb(&message));
                r
            }
        };
        // An error may follow records already produced (a conversion): they are kept.
        let response = Response::ConsumerGroupHeartbeat(response);
        persist_then_reply(&mut out, records, ctx.token, response);
        if let Some(at) = self
            .groups
            .get(req.group_id.0.as_str())
            .and_then(|g| match &g.kind {
                GroupKind::Consumer(cg) => cg.next_deadline(),
                GroupKind::Classic(_) => None,
            })
        {
            out.wake(at);
        }
        self.finish(out, ctx.now_ms)
    }

    fn heartbeat_inner(
        &mut self,
        ctx: &RequestCtx<'_>,
        req: &ConsumerGroupHeartbeatRequest,
        topics: &dyn TopicsView,
        records: &mut Vec<Record>,
        out: &mut Out,
    ) -> Result<ConsumerGroupHeartbeatResponse, (i16, String)> {
        let fresh = (ctx.api_version == 0 && req.member_id.is_empty()).then(|| self.fresh_uuid());
        let hb = validate_heartbeat(ctx, req, &self.config, fresh)?;
        let gid = req.group_id.0.as_str();
        let joining = hb.member_epoch == 0;
        match self.groups.get(gid).map(|g| &g.kind) {
            // Kafka answers GROUP_ID_NOT_FOUND, which the Java consumer takes as fatal; a
            // member whose group is gone (emptied and expired) rejoins on this instead.
            None if !joining => {
                return Err((
                    code::UNKNOWN_MEMBER_ID,
                    format!("Group {gid} has no member {}.", hb.member_id),
                ))
            }
            None => {
                if self.groups.len() >= self.config.groups_max {
                    return Err((code::COORDINATOR_NOT_AVAILABLE, String::new()));
                }
                let mut g = Group::new(gid.to_owned(), ctx.now_ms);
                g.kind = GroupKind::Consumer(ConsumerGroup::default());
                self.groups.insert(gid.to_owned(), g);
            }
            // Kafka's offline upgrade: an empty classic group becomes a consumer group (a
            // client that was handed a member id and has not joined yet joins it as a
            // classic member).
            Some(GroupKind::Classic(c))
                if joining
                    && c.members.is_empty()
                    && matches!(c.state, ClassicState::Empty | ClassicState::Dead) =>
            {
                if let Some(g) = self.groups.get_mut(gid) {
                    g.kind = GroupKind::Consumer(ConsumerGroup::default());
                }
                records.push((group_metadata_key(gid), None));
            }
            // Kafka's online upgrade: a classic group of consumers with members becomes a
            // consumer group whose members keep the classic protocol.
            Some(GroupKind::Classic(c))
                if joining
                    && self.config.consumer_migration_policy.upgrades()
                    && c.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE)
                    && c.members.len() <= self.config.group_max_size
                    && c.state != ClassicState::Dead =>
            {
                // Refused before converting, so a full group stays classic (the joining
                // member would be refused after the conversion anyway).
                let takes_a_slot = !c.members.contains_key(&hb.member_id)
                    && hb
                        .instance_id
                        .as_ref()
                        .is_none_or(|i| !c.static_members.contains_key(i));
                if takes_a_slot && c.members.len() >= self.config.group_max_size {
                    return Err((
                        code::GROUP_MAX_SIZE_REACHED,
                        format!(
                            "The consumer group has reached its maximum capacity of {} members.",
                            self.config.group_max_size
                        ),
                    ));
                }
                let Some(cg) = ConsumerGroup::from_classic(c, topics, ctx.now_ms) else {
                    return Err((
                        code::GROUP_ID_NOT_FOUND,
                        format!("Cannot upgrade classic group {gid}: its embedded consumer protocol is malformed."),
                    ));
                };
                cg.conversion_records(gid, records);
                if let Some(g) = self.groups.get_mut(gid) {
                    if let GroupKind::Classic(c) = &mut g.kind {
                        release_parked(c, out);
                    }
                    g.kind = GroupKind::Consumer(cg);
                }
            }
            Some(GroupKind::Classic(_)) => {
                return Err((
                    code::GROUP_ID_NOT_FOUND,
                    format!("Group {gid} is not a consumer group."),
                ))
            }
            Some(GroupKind::Consumer(_)) => {}
        }
        let cfg = &self.config;
        let Some(group) = self.groups.get_mut(gid) else {
            return Err((code::COORDINATOR_NOT_AVAILABLE, String::new()));
        };
        let GroupKind::Consumer(cg) = &mut group.kind else {
            return Err((code::COORDINATOR_NOT_AVAILABLE, String::new()));
        };
        // Kafka's online downgrade: the last member using the consumer protocol leaves.
        if hb.member_epoch == LEAVE_GROUP_MEMBER_EPOCH && cfg.consumer_migration_policy.downgrades()
        {
            cg.known_member(gid, &hb.member_id, hb.instance_id.as_deref())?;
            if cg.fence_downgrades(&hb.member_id, cfg.group_max_size) {
                let mut c = cg.to_classic(gid, &hb.member_id, topics, ctx.now_ms, records);
                c.prepare_rebalance(cfg, ctx.now_ms, out);
                group.kind = GroupKind::Classic(c);
                let mut r = ConsumerGroupHeartbeatResponse::default();
                r.member_id = Some(sb(&hb.member_id));
                r.member_epoch = LEAVE_GROUP_MEMBER_EPOCH;
                return Ok(r);
            }
        }
        cg.heartbeat(gid, hb, topics, records)
    }

    /// ConsumerGroupDescribe v0-v1 for the groups this coordinator owns.
    pub fn consumer_group_describe(
        &mut self,
        ctx: RequestCtx<'_>,
        req: ConsumerGroupDescribeRequest,
        topics: &dyn TopicsView,
    ) -> Vec<Effect> {
        let mut out = Out::default();
        let mut r = ConsumerGroupDescribeResponse::default();
        for gid in &req.group_ids {
            let id = gid.0.as_str();
            let d = match self.groups.get_mut(id).map(|g| &mut g.kind) {
                Some(GroupKind::Consumer(cg)) => cg.describe(id, topics),
                found => {
                    let mut d = consumer_group_describe_response::DescribedGroup::default();
                    d.group_id = gid.clone();
                    d.error_code = code::GROUP_ID_NOT_FOUND;
                    d.error_message = Some(sb(&match found {
                        Some(_) => format!("Group {id} is not a consumer group."),
                        None => format!("Group {id} not found."),
                    }));
                    d
                }
            };
            r.groups.push(d);
        }
        out.reply(ctx.token, Response::ConsumerGroupDescribe(r));
        self.finish(out, ctx.now_ms)
    }

    pub fn committed(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Option<&OffsetCommitValue> {
        self.groups
            .get(group_id)?
            .offsets
            .get(&(topic.to_owned(), partition))
    }

    // ---- JoinGroup ------------------------------------------------------------------------

    /// JoinGroup: to a classic group, or as a classic member of a consumer group (whose
    /// assignment needs `topics`).
    pub fn join_group(
        &mut self,
        ctx: RequestCtx<'_>,
        req: JoinGroupRequest,
        topics: &dyn TopicsView,
    ) -> Vec<Effect> {
        let mut out = Out::default();
        let gid = req.group_id.0.as_str().to_owned();
        self.join_inner(ctx, req, topics, &mut out);
        self.persist_if_emptied(&gid, &mut out);
        self.finish(out, ctx.now_ms)
    }

    fn join_inner(
        &mut self,
        ctx: RequestCtx<'_>,
        req: JoinGroupRequest,
        topics: &dyn TopicsView,
        out: &mut Out,
    ) {
        let v = ctx.api_version;
        let member_id = req.member_id.as_str().to_owned();
        let fail = |out: &mut Out, c: i16| {
            out.reply(ctx.token, Response::JoinGroup(join_error(c, &member_id, v)));
        };
        let gid = req.group_id.0.as_str();
        if gid.is_empty() {
            return fail(out, code::INVALID_GROUP_ID);
        }
        let cfg = &self.config;
        if req.session_timeout_ms < cfg.min_session_timeout_ms
            || req.session_timeout_ms > cfg.max_session_timeout_ms
        {
            return fail(out, code::INVALID_SESSION_TIMEOUT);
        }
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        let rebalance_timeout_ms = if v == 0 {
            req.session_timeout_ms
        } else {
            req.rebalance_timeout_ms.max(0)
        };
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return fail(out, code::INCONSISTENT_GROUP_PROTOCOL);
        }
        let metadata_bytes: usize = req
            .protocols
            .iter()
            .map(|p| p.name.len() + p.metadata.len())
            .sum();
        if req.protocols.len() > MEMBER_PROTOCOLS_MAX
            || metadata_bytes > cfg.member_metadata_max_bytes
        {
            return fail(out, code::UNKNOWN_SERVER_ERROR);
        }
        if !self.groups.contains_key(gid) {
            if !member_id.is_empty() {
                return fail(out, code::UNKNOWN_MEMBER_ID);
            }
            if self.groups.len() >= self.config.groups_max {
                return fail(out, code::COORDINATOR_NOT_AVAILABLE);
            }
            self.groups
                .insert(gid.to_owned(), Group::new(gid.to_owned(), ctx.now_ms));
        }
        let fresh_uuid = self.fresh_uuid();
        let cfg = &self.config;
        let Some(group) = self.groups.get_mut(gid) else {
            return;
        };
        // Duplicate protocol names: keep the first, as Kafka's LinkedHashMap-free list would
        // make the second unreachable anyway. The metadata is copied out: a slice would keep
        // the whole request buffer alive for as long as the member lives, while
        // `member_metadata_max_bytes` bounds only the slice.
        let mut seen = HashSet::new();
        let protocols: Vec<(String, Bytes)> = req
            .protocols
            .iter()
            .filter(|p| seen.insert(p.name.as_str().to_owned()))
            .map(|p| {
                (
                    p.name.as_str().to_owned(),
                    Bytes::copy_from_slice(&p.metadata),
                )
            })
            .collect();
        let instance_id = req
            .group_instance_id
            .as_ref()
            .map(|s| s.as_str().to_owned());
        if let GroupKind::Consumer(cg) = &mut group.kind {
            // A consumer group with members takes classic members (online migration).
            if !cg.members.is_empty() {
                let j = ClassicJoin {
                    member_id: member_id.clone(),
                    instance_id,
                    version: v,
                    session_timeout_ms: req.session_timeout_ms,
                    rebalance_timeout_ms,
                    protocol_type: req.protocol_type.as_str(),
                    protocols,
                    client_id: ctx.client_id,
                    client_host: ctx.client_host,
                    now_ms: ctx.now_ms,
                    group_max_size: cfg.group_max_size,
                    fresh_uuid,
                };
                let mut records = Vec::new();
                let (mut r, replaced_consumer) = cg
                    .classic_join(gid, j, topics, &mut records)
                    .unwrap_or_else(|e| (join_error(e, &member_id, v), false));
                // Kafka's downgrade when a classic static member takes over the last member
                // that used the consumer protocol (a rolling downgrade of a static group):
                // the joiner keeps what it was just given. The classic group records what
                // members hold, not their targets (Kafka's choice), so no partition is
                // handed out twice; if that is not everything (members were still
                // reconciling), a rebalance assigns the rest.
                let downgrade = replaced_consumer
                    && cfg.consumer_migration_policy.downgrades()
                    && cg.members.len() <= cfg.group_max_size
                    && cg.members.values().all(|m| m.classic.is_some());
                let settled = cg.state() == ConsumerGroupState::Stable;
                let classic = downgrade.then(|| {
                    let mut c = cg.to_classic(gid, "", topics, ctx.now_ms, &mut records);
                    if !settled {
                        c.prepare_rebalance(cfg, ctx.now_ms, out);
                    }
                    c
                });
                match &classic {
                    Some(c) => {
                        r.generation_id = c.generation;
                        if let Some(at) = c.next_deadline() {
                            out.wake(at);
                        }
                    }
                    None => {
                        if let Some(at) = cg.next_deadline() {
                            out.wake(at);
                        }
                    }
                }
                if let Some(c) = classic {
                    group.kind = GroupKind::Classic(c);
                }
                persist_then_reply(out, records, ctx.token, Response::JoinGroup(r));
                return;
            }
            // An empty one turns classic again (Kafka's offline downgrade).
            out.effects
                .push(Effect::Persist(ConsumerGroup::deletion_records(gid)));
            group.kind = GroupKind::Classic(ClassicGroup::new(ctx.now_ms));
        }
        let GroupKind::Classic(c) = &mut group.kind else {
            return;
        };
        if c.state == ClassicState::Dead {
            return fail(out, code::COORDINATOR_NOT_AVAILABLE);
        }
        if !c.supports_protocols(req.protocol_type.as_str(), &protocols) {
            return fail(out, code::INCONSISTENT_GROUP_PROTOCOL);
        }
        let args = JoinArgs {
            token: ctx.token,
            version: v,
            now_ms: ctx.now_ms,
            client_id: ctx.client_id,
            client_host: ctx.client_host,
            instance_id,
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms,
            protocol_type: req.protocol_type.as_str().to_owned(),
            protocols,
            fresh_uuid,
        };
        if member_id.is_empty() {
            c.join_unknown_member(&group.id, cfg, args, out);
        } else {
            c.join_known_member(&group.id, cfg, &member_id, args, out);
        }
    }

    fn persist_if_emptied(&mut self, gid: &str, out: &mut Out) {
        if let Some(record) = self.groups.get_mut(gid).and_then(take_emptied_record) {
            out.effects.push(Effect::Persist(vec![record]));
        }
    }

    // ---- SyncGroup ------------------------------------------------------------------------

    /// SyncGroup: to a classic group, or from a classic member of a consumer group (whose
    /// assignment is encoded with the names in `topics`).
    pub fn sync_group(
        &mut self,
        ctx: RequestCtx<'_>,
        req: SyncGroupRequest,
        topics: &dyn TopicsView,
    ) -> Vec<Effect> {
        let mut out = Out::default();
        let cfg = &self.config;
        let member_id = req.member_id.as_str();
        match self.groups.get_mut(req.group_id.0.as_str()) {
            Some(Group {
                kind: GroupKind::Consumer(cg),
                ..
            }) => {
                let call = ClassicCall {
                    member_id,
                    instance_id: req.group_instance_id.as_ref().map(|s| s.as_str()),
                    generation: req.generation_id,
                    now_ms: ctx.now_ms,
                };
                let mut r = SyncGroupResponse::default();
                match cg.classic_sync(
                    call,
                    req.protocol_type.as_ref().map(|s| s.as_str()),
                    req.protocol_name.as_ref().map(|s| s.as_str()),
                    topics,
                ) {
                    Ok((assignment, protocol)) => {
                        r.protocol_type = Some(sb(CONSUMER_PROTOCOL_TYPE));
                        r.protocol_name = Some(sb(&protocol));
                        r.assignment = assignment;
                    }
                    Err(e) => r.error_code = e,
                }
                out.reply(ctx.token, Response::SyncGroup(r));
                if let Some(at) = cg.next_deadline() {
                    out.wake(at);
                }
            }
            None => {
                let r = sync_response(
                    code::UNKNOWN_MEMBER_ID,
                    &ClassicGroup::new(ctx.now_ms),
                    Bytes::new(),
                );
                out.reply(ctx.token, Response::SyncGroup(r));
            }
            Some(Group {
                id,
                kind: GroupKind::Classic(c),
                ..
            }) => {
                let instance = req.group_instance_id.as_ref().map(|s| s.as_str());
                let error = if c.state == ClassicState::Dead {
                    code::COORDINATOR_NOT_AVAILABLE
                } else if c.is_static_fenced(instance, member_id) {
                    code::FENCED_INSTANCE_ID
                } else if !c.members.contains_key(member_id) {
                    code::UNKNOWN_MEMBER_ID
                } else if req.generation_id != c.generation {
                    code::ILLEGAL_GENERATION
                } else if req
                    .protocol_type
                    .as_ref()
                    .is_some_and(|t| Some(t.as_str()) != c.protocol_type.as_deref())
                    || req
                        .protocol_name
                        .as_ref()
                        .is_some_and(|n| Some(n.as_str()) != c.protocol_name.as_deref())
                {
                    code::INCONSISTENT_GROUP_PROTOCOL
                } else {
                    code::NONE
                };
                if error != code::NONE {
                    out.reply(
                        ctx.token,
                        Response::SyncGroup(sync_response(error, c, Bytes::new())),
                    );
                } else {
                    // Copied out, as join metadata is: members keep their assignment.
                    let assignments = req
                        .assignments
                        .into_iter()
                        .map(|a| {
                            (
                                a.member_id.as_str().to_owned(),
                                Bytes::copy_from_slice(&a.assignment),
                            )
                        })
                        .collect();
                    let a = SyncArgs {
                        token: ctx.token,
                        version: ctx.api_version,
                        now_ms: ctx.now_ms,
                        assignments,
                    };
                    c.sync(id, cfg, member_id, a, &mut out);
                }
            }
        }
        self.persist_if_emptied(req.group_id.0.as_str(), &mut out);
        self.finish(out, ctx.now_ms)
    }

    // ---- Heartbeat ------------------------------------------------------------------------

    pub fn heartbeat(&mut self, ctx: RequestCtx<'_>, req: HeartbeatRequest) -> Vec<Effect> {
        let mut out = Out::default();
        let member_id = req.member_id.as_str();
        let error = match self.groups.get_mut(req.group_id.0.as_str()) {
            None => code::UNKNOWN_MEMBER_ID,
            Some(Group {
                kind: GroupKind::Consumer(cg),
                ..
            }) => {
                let e = cg.classic_heartbeat(ClassicCall {
                    member_id,
                    instance_id: req.group_instance_id.as_ref().map(|s| s.as_str()),
                    generation: req.generation_id,
                    now_ms: ctx.now_ms,
                });
                if let Some(at) = cg.next_deadline() {
                    out.wake(at);
                }
                e
            }
            Some(Group {
                kind: GroupKind::Classic(c),
                ..
            }) => {
                let instance = req.group_instance_id.as_ref().map(|s| s.as_str());
                if c.state == ClassicState::Dead {
                    code::COORDINATOR_NOT_AVAILABLE
                } else if c.is_static_fenced(instance, member_id) {
                    code::FENCED_INSTANCE_ID
                } else if !c.members.contains_key(member_id) {
                    code::UNKNOWN_MEMBER_ID
                } else if req.generation_id != c.generation {
                    code::ILLEGAL_GENERATION
                } else {
                    let state = c.state;
                    if let Some(m) = c.members.get_mut(member_id) {
                        m.heartbeat_deadline_ms = ctx
                            .now_ms
                            .saturating_add(i64::from(m.session_timeout_ms.max(0)));
                    }
                    match state {
                        ClassicState::Empty => code::UNKNOWN_MEMBER_ID,
                        ClassicState::PreparingRebalance => code::REBALANCE_IN_PROGRESS,
                        ClassicState::CompletingRebalance | ClassicState::Stable => code::NONE,
                        ClassicState::Dead => code::COORDINATOR_NOT_AVAILABLE,
                    }
                }
            }
        };
        let mut r = HeartbeatResponse::default();
        r.error_code = error;
        out.reply(ctx.token, Response::Heartbeat(r));
        self.finish(out, ctx.now_ms)
    }

    // ---- LeaveGroup -----------------------------------------------------------------------

    pub fn leave_group(&mut self, ctx: RequestCtx<'_>, req: LeaveGroupRequest) -> Vec<Effect> {
        let mut out = Out::default();
        let batched = ctx.api_version >= 3;
        let leaving: Vec<(String, Option<String>)> = if batched {
            req.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.as_str().to_owned(),
                        m.group_instance_id.as_ref().map(|s| s.as_str().to_owned()),
                    )
                })
                .collect()
        } else {
            vec![(req.member_id.as_str().to_owned(), None)]
        };
        let cfg = &self.config;
        let mut results = Vec::with_capacity(leaving.len());
        // The member id each answer names, where it differs from the request's (an
        // administrative removal by instance id learns whom it removed).
        let mut removed_ids: Vec<Option<String>> = Vec::new();
        let mut top = code::NONE;
        let mut records = Vec::new();
        match self.groups.get_mut(req.group_id.0.as_str()) {
            None => results.extend(leaving.iter().map(|_| code::UNKNOWN_MEMBER_ID)),
            Some(Group {
                id,
                kind: GroupKind::Consumer(cg),
                ..
            }) => {
                for (member_id, instance) in &leaving {
                    match cg.classic_leave(id, member_id, instance.as_deref(), &mut records) {
                        Ok(removed) => {
                            results.push(code::NONE);
                            removed_ids.push(Some(removed));
                        }
                        Err(e) => {
                            results.push(e);
                            removed_ids.push(None);
                        }
                    }
                }
                // One new group epoch for the whole batch, as Kafka does.
                if removed_ids.iter().any(Option::is_some) {
                    cg.bump_epoch(id, &mut records);
                }
            }
            Some(Group {
                kind: GroupKind::Classic(c),
                ..
            }) => {
                if c.state == ClassicState::Dead {
                    top = code::COORDINATOR_NOT_AVAILABLE;
                }
                for (member_id, instance) in &leaving {
                    if top != code::NONE {
                        break;
                    }
                    let err = if member_id.is_empty() {
                        // Admin removal of a static member by instance id (KIP-345).
                        match instance
                            .as_ref()
                            .and_then(|i| c.static_members.get(i))
                            .cloned()
                        {
                            Some(current) => {
                                c.remove_member_and_update(cfg, &current, ctx.now_ms, &mut out);
                                code::NONE
                            }
                            None => code::UNKNOWN_MEMBER_ID,
                        }
                    } else if c.pending_members.contains_key(member_id) {
                        c.remove_pending_member(member_id, ctx.now_ms, &mut out);
                        code::NONE
                    } else if c.is_static_fenced(instance.as_deref(), member_id) {
                        code::FENCED_INSTANCE_ID
                    } else if !c.members.contains_key(member_id) {
                        code::UNKNOWN_MEMBER_ID
                    } else {
                        c.remove_member_and_update(cfg, member_id, ctx.now_ms, &mut out);
                        code::NONE
                    };
                    results.push(err);
                }
            }
        }
        let mut r = LeaveGroupResponse::default();
        if batched {
            r.error_code = top;
            r.members = leaving
                .iter()
                .zip(results.iter().copied().chain(std::iter::repeat(top)))
                .enumerate()
                .map(|(i, ((asked, inst), err))| {
                    let mut m = MemberResponse::default();
                    let named = removed_ids.get(i).and_then(|r| r.as_deref());
                    m.member_id = sb(named.unwrap_or(asked));
                    m.group_instance_id = inst.as_deref().map(sb);
                    m.error_code = err;
                    m
                })
                .collect();
        } else {
            r.error_code = if top != code::NONE {
                top
            } else {
                results.first().copied().unwrap_or(code::NONE)
            };
        }
        persist_then_reply(&mut out, records, ctx.token, Response::LeaveGroup(r));
        self.persist_if_emptied(req.group_id.0.as_str(), &mut out);
        self.finish(out, ctx.now_ms)
    }

    // ---- OffsetCommit ---------------------------------------------------------------------

    /// The group-level error of an OffsetCommit or (`transactional`) TxnOffsetCommit, in the
    /// order of Kafka's `ClassicGroup.validateOffsetCommit`; creates an offsets-only group
    /// for a commit without a generation to a group that does not exist.
    fn validate_commit(
        &mut self,
        ctx: &RequestCtx<'_>,
        gid: &str,
        generation: i32,
        member_id: &str,
        instance: Option<&str>,
        transactional: bool,
    ) -> i16 {
        if gid.is_empty() {
            return code::INVALID_GROUP_ID;
        }
        if !self.groups.contains_key(gid) {
            if generation >= 0 {
                // Kafka 4: OffsetCommit v9+ names the problem; older clients (and
                // TxnOffsetCommit's) expect ILLEGAL_GENERATION.
                return if ctx.api_version >= 9 && !transactional {
                    code::GROUP_ID_NOT_FOUND
                } else {
                    code::ILLEGAL_GENERATION
                };
            }
            if self.groups.len() >= self.config.groups_max {
                return code::COORDINATOR_NOT_AVAILABLE;
            }
            // A group used only to store offsets (`assign()` consumers, admin tools).
            self.groups
                .insert(gid.to_owned(), Group::new(gid.to_owned(), ctx.now_ms));
            return code::NONE;
        }
        let Some(group) = self.groups.get_mut(gid) else {
            return code::COORDINATOR_NOT_AVAILABLE;
        };
        let c = match &mut group.kind {
            GroupKind::Consumer(cg) => {
                return validate_consumer_commit(
                    cg,
                    ctx,
                    generation,
                    member_id,
                    instance,
                    transactional,
                )
            }
            GroupKind::Classic(c) => c,
        };
        if c.state == ClassicState::Dead {
            return code::COORDINATOR_NOT_AVAILABLE;
        }
        if generation < 0 && c.state == ClassicState::Empty {
            return code::NONE;
        }
        if generation >= 0 || !member_id.is_empty() || instance.is_some() {
            if let Some(inst) = instance {
                match c.static_members.get(inst) {
                    None => return code::UNKNOWN_MEMBER_ID,
                    Some(current) if current != member_id => return code::FENCED_INSTANCE_ID,
                    Some(_) => {}
                }
            }
            let Some(m) = c.members.get_mut(member_id) else {
                return code::UNKNOWN_MEMBER_ID;
            };
            if generation != c.generation {
                return code::ILLEGAL_GENERATION;
            }
            // A commit from a live member proves it alive, as a heartbeat does.
            m.heartbeat_deadline_ms = ctx
                .now_ms
                .saturating_add(i64::from(m.session_timeout_ms.max(0)));
        } else if transactional {
            // TxnOffsetCommit before v3 names no member: accepted in any state (Kafka).
            return code::NONE;
        } else {
            return code::UNKNOWN_MEMBER_ID;
        }
        if !transactional && c.state == ClassicState::CompletingRebalance {
            return code::REBALANCE_IN_PROGRESS;
        }
        code::NONE
    }

    pub fn offset_commit(&mut self, ctx: RequestCtx<'_>, req: OffsetCommitRequest) -> Vec<Effect> {
        let mut out = Out::default();
        let gid = req.group_id.0.as_str();
        let group_error = self.validate_commit(
            &ctx,
            gid,
            req.generation_id_or_member_epoch,
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|s| s.as_str()),
            false,
        );
        let expire_timestamp = if (2..=4).contains(&ctx.api_version)
            && req.retention_time_ms != DEFAULT_RETENTION_TIME
        {
            Some(ctx.now_ms.saturating_add(req.retention_time_ms.max(0)))
        } else {
            None
        };
        let metadata_max = self.config.offset_metadata_max_bytes;
        let mut records: Vec<Record> = Vec::new();
        let mut topics = Vec::with_capacity(req.topics.len());
        let mut group = if group_error == code::NONE {
            self.groups.get_mut(gid)
        } else {
            None
        };
        for t in &req.topics {
            let topic = t.name.0.as_str();
            let mut rt = OffsetCommitResponseTopic::default();
            rt.name = t.name.clone();
            rt.topic_id = t.topic_id;
            for p in &t.partitions {
                let mut rp = OffsetCommitResponsePartition::default();
                rp.partition_index = p.partition_index;
                let metadata = p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.as_str())
                    .unwrap_or("");
                rp.error_code = match group.as_deref_mut() {
                    None => {
                        if group_error == code::NONE {
                            code::COORDINATOR_NOT_AVAILABLE
                        } else {
                            group_error
                        }
                    }
                    Some(_) if metadata.len() > metadata_max => code::OFFSET_METADATA_TOO_LARGE,
                    Some(g) => {
                        let value = OffsetCommitValue {
                            offset: p.committed_offset,
                            leader_epoch: if ctx.api_version >= 6 {
                                p.committed_leader_epoch
                            } else {
                                -1
                            },
                            metadata: metadata.to_owned(),
                            commit_timestamp: ctx.now_ms,
                            expire_timestamp,
                        };
                        records.push((
                            offset_commit_key(gid, topic, p.partition_index),
                            Some(offset_commit_value(&value)),
                        ));
                        g.commit((topic.to_owned(), p.partition_index), value);
                        code::NONE
                    }
                };
                rt.partitions.push(rp);
            }
            topics.push(rt);
        }
        let mut r = OffsetCommitResponse::default();
        r.topics = topics;
        if records.is_empty() {
            out.reply(ctx.token, Response::OffsetCommit(r));
        } else {
            out.effects.push(Effect::PersistThenReply {
                records,
                replies: vec![(ctx.token, Response::OffsetCommit(r))],
            });
        }
        self.finish(out, ctx.now_ms)
    }

    // ---- TxnOffsetCommit (KIP-98, KIP-447) -------------------------------------------------

    /// TxnOffsetCommit: offsets committed inside the producer's transaction. They are held
    /// as pending (invisible to OffsetFetch) until [`complete_txn`](Self::complete_txn) sees
    /// the transaction's marker. The records go to the log as one transactional batch of
    /// the producer ([`Effect::PersistTxnThenReply`]). The transaction coordinator has
    /// checked the producer's id and epoch (AddOffsetsToTxn) before the client sends this;
    /// the partition's producer state fences an older epoch when the batch is appended.
    pub fn txn_offset_commit(
        &mut self,
        ctx: RequestCtx<'_>,
        req: TxnOffsetCommitRequest,
    ) -> Vec<Effect> {
        let mut out = Out::default();
        let gid = req.group_id.0.as_str();
        // Before v3 (KIP-447) the request names no member: only the group is checked.
        let (generation, member_id, instance) = if ctx.api_version >= 3 {
            (
                req.generation_id,
                req.member_id.as_str(),
                req.group_instance_id.as_ref().map(|s| s.as_str()),
            )
        } else {
            (-1, "", None)
        };
        let group_error = self.validate_commit(&ctx, gid, generation, member_id, instance, true);
        let metadata_max = self.config.offset_metadata_max_bytes;
        let producer_id = req.producer_id.0;
        let mut records: Vec<Record> = Vec::new();
        let mut staged = Vec::new();
        let mut r = TxnOffsetCommitResponse::default();
        for t in &req.topics {
            let topic = t.name.0.as_str();
            let mut rt = TxnOffsetCommitResponseTopic::default();
            rt.name = t.name.clone();
            for p in &t.partitions {
                let metadata = p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.as_str())
                    .unwrap_or("");
                let error = if group_error != code::NONE {
                    group_error
                } else if metadata.len() > metadata_max {
                    code::OFFSET_METADATA_TOO_LARGE
                } else {
                    let value = OffsetCommitValue {
                        offset: p.committed_offset,
                        leader_epoch: if ctx.api_version >= 2 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata: metadata.to_owned(),
                        commit_timestamp: ctx.now_ms,
                        expire_timestamp: None,
                    };
                    records.push((
                        offset_commit_key(gid, topic, p.partition_index),
                        Some(offset_commit_value(&value)),
                    ));
                    staged.push(((topic.to_owned(), p.partition_index), value));
                    code::NONE
                };
                let mut rp = TxnOffsetCommitResponsePartition::default();
                rp.partition_index = p.partition_index;
                rp.error_code = error;
                rt.partitions.push(rp);
            }
            r.topics.push(rt);
        }
        if records.is_empty() {
            out.reply(ctx.token, Response::TxnOffsetCommit(r));
        } else {
            let g = self.groups.get_mut(gid).expect("validated above");
            g.pending_txn.entry(producer_id).or_default().extend(staged);
            out.effects.push(Effect::PersistTxnThenReply {
                producer_id,
                producer_epoch: req.producer_epoch,
                records,
                replies: vec![(ctx.token, Response::TxnOffsetCommit(r))],
            });
        }
        self.finish(out, ctx.now_ms)
    }

    /// A record of a transactional batch of `producer_id`, read while loading: a pending
    /// offset until the producer's marker (call [`complete_txn`](Self::complete_txn) for
    /// it). Records other than offset commits are applied as [`replay`](Self::replay) does.
    pub fn replay_txn(
        &mut self,
        producer_id: i64,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), GroupError> {
        match (decode_key(key)?, value) {
            (
                RecordKey::OffsetCommit {
                    group,
                    topic,
                    partition,
                },
                Some(v),
            ) => {
                let v = decode_offset_commit_value(v)?;
                let g = self
                    .groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(group, -1));
                g.pending_txn
                    .entry(producer_id)
                    .or_default()
                    .insert((topic, partition), v);
                Ok(())
            }
            _ => self.replay(key, value),
        }
    }

    /// The transaction of `producer_id` ended in this partition (its marker was appended,
    /// or read while loading): its pending offsets become committed offsets on a commit and
    /// are dropped on an abort. Returns how many offsets it held.
    pub fn complete_txn(&mut self, producer_id: i64, commit: bool) -> usize {
        let mut n = 0;
        for g in self.groups.values_mut() {
            let Some(pending) = g.pending_txn.remove(&producer_id) else {
                continue;
            };
            n += pending.len();
            if commit {
                for (tp, value) in pending {
                    g.offsets.insert(tp, value);
                }
            }
        }
        n
    }

    // ---- OffsetFetch ----------------------------------------------------------------------

    /// Committed offsets of `gid` for `topics` (`None` = every committed partition).
    fn fetch_offsets(&self, gid: &str, topics: Option<Partitions>) -> Fetched<'_> {
        let group = self.groups.get(gid);
        match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, parts)| {
                    let found = parts
                        .into_iter()
                        .map(|p| (p, group.and_then(|g| g.offsets.get(&(topic.clone(), p)))))
                        .collect();
                    (topic, found)
                })
                .collect(),
            None => {
                let mut by_topic: IndexMap<&str, Vec<(i32, Option<&OffsetCommitValue>)>> =
                    IndexMap::new();
                if let Some(g) = group {
                    for ((topic, p), v) in &g.offsets {
                        by_topic
                            .entry(topic.as_str())
                            .or_default()
                            .push((*p, Some(v)));
                    }
                }
                by_topic
                    .into_iter()
                    .map(|(t, ps)| (t.to_owned(), ps))
                    .collect()
            }
        }
    }

    pub fn offset_fetch(&mut self, ctx: RequestCtx<'_>, req: OffsetFetchRequest) -> Vec<Effect> {
        let mut out = Out::default();
        let v = ctx.api_version;
        // v7+: a partition whose offset a transaction not yet ended holds is unstable.
        let require_stable = v >= 7 && req.require_stable;
        let unstable = |gid: &str, topic: &str, p: i32| {
            require_stable
                && self
                    .groups
                    .get(gid)
                    .is_some_and(|g| g.has_pending(&(topic.to_owned(), p)))
        };
        let mut r = OffsetFetchResponse::default();
        let no_metadata = || Some(sb(""));
        if v >= 8 {
            for g in &req.groups {
                let gid = g.group_id.0.as_str();
                let topics = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.as_str().to_owned(), t.partition_indexes.clone()))
                        .collect()
                });
                let mut rg = OffsetFetchResponseGroup::default();
                rg.group_id = g.group_id.clone();
                // v9: a consumer-protocol member names itself and its epoch (Kafka's
                // `ConsumerGroup.validateOffsetFetch`); admin tools send neither.
                if let Some(Group {
                    kind: GroupKind::Consumer(cg),
                    ..
                }) = self.groups.get(gid)
                {
                    let member = g.member_id.as_ref().map(|m| m.as_str());
                    if v >= 9 && !(member.is_none() && g.member_epoch < 0) {
                        rg.error_code = match cg.members.get(member.unwrap_or("")) {
                            None => code::UNKNOWN_MEMBER_ID,
                            Some(m) if g.member_epoch == m.epoch => code::NONE,
                            Some(m) if m.classic.is_some() => code::ILLEGAL_GENERATION,
                            Some(_) => code::STALE_MEMBER_EPOCH,
                        };
                        if rg.error_code != code::NONE {
                            r.groups.push(rg);
                            continue;
                        }
                    }
                }
                for (topic, parts) in self.fetch_offsets(gid, topics) {
                    let mut rt = OffsetFetchResponseTopics::default();
                    rt.name = TopicName(sb(&topic));
                    for (p, value) in parts {
                        let mut rp = OffsetFetchResponsePartitions::default();
                        rp.partition_index = p;
                        if unstable(gid, &topic, p) {
                            rp.error_code = code::UNSTABLE_OFFSET_COMMIT;
                            rp.committed_offset = -1;
                            rp.committed_leader_epoch = -1;
                            rp.metadata = no_metadata();
                            rt.partitions.push(rp);
                            continue;
                        }
                        rp.committed_offset = value.map_or(-1, |v| v.offset);
                        rp.committed_leader_epoch = value.map_or(-1, |v| v.leader_epoch);
                        rp.metadata = value.map_or_else(no_metadata, |v| Some(sb(&v.metadata)));
                        rt.partitions.push(rp);
                    }
                    rg.topics.push(rt);
                }
                r.groups.push(rg);
            }
        } else {
            let gid = req.group_id.0.as_str();
            let topics = req.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.0.as_str().to_owned(), t.partition_indexes.clone()))
                    .collect()
            });
            for (topic, parts) in self.fetch_offsets(gid, topics) {
                let mut rt = OffsetFetchResponseTopic::default();
                rt.name = TopicName(sb(&topic));
                for (p, value) in parts {
                    let mut rp = OffsetFetchResponsePartition::default();
                    rp.partition_index = p;
                    if unstable(gid, &topic, p) {
                        rp.error_code = code::UNSTABLE_OFFSET_COMMIT;
                        rp.committed_offset = -1;
                        rp.committed_leader_epoch = -1;
                        rp.metadata = no_metadata();
                        rt.partitions.push(rp);
                        continue;
                    }
                    rp.committed_offset = value.map_or(-1, |v| v.offset);
                    rp.committed_leader_epoch = value.map_or(-1, |v| v.leader_epoch);
                    rp.metadata = value.map_or_else(no_metadata, |v| Some(sb(&v.metadata)));
                    rt.partitions.push(rp);
                }
                r.topics.push(rt);
            }
        }
        out.reply(ctx.token, Response::OffsetFetch(r));
        self.finish(out, ctx.now_ms)
    }

    // ---- OffsetDelete ---------------------------------------------------------------------

    pub fn offset_delete(&mut self, ctx: RequestCtx<'_>, req: OffsetDeleteRequest) -> Vec<Effect> {
        let mut out = Out::default();
        let gid = req.group_id.0.as_str();
        let mut r = OffsetDeleteResponse::default();
        let mut records = Vec::new();
        match self.groups.get_mut(gid) {
            None => r.error_code = code::GROUP_ID_NOT_FOUND,
            Some(group) => {
                // Kafka: a non-empty "consumer" group protects the topics its members subscribe
                // to (all of them when a subscription did not parse); any other non-empty
                // group refuses outright.
                let (check, subscribed): (Result<bool, i16>, Option<HashSet<String>>) = match &group
                    .kind
                {
                    GroupKind::Consumer(cg) => {
                        let topics = req.topics.iter().map(|t| t.name.0.as_str());
                        let protected = topics.filter(|t| cg.protects_topic(t)).map(str::to_owned);
                        (Ok(!cg.members.is_empty()), Some(protected.collect()))
                    }
                    GroupKind::Classic(c) => (
                        match c.state {
                            ClassicState::Dead => Err(code::GROUP_ID_NOT_FOUND),
                            ClassicState::Empty => Ok(false),
                            _ if c.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE) => {
                                Ok(true)
                            }
                            _ => Err(code::NON_EMPTY_GROUP),
                        },
                        c.subscribed_topics.clone(),
                    ),
                };
                match check {
                    Err(e) => r.error_code = e,
                    Ok(protect) => {
                        for t in &req.topics {
                            let topic = t.name.0.as_str();
                            let is_protected = protect
                                && subscribed.as_ref().is_none_or(|set| set.contains(topic));
                            let mut rt = OffsetDeleteResponseTopic::default();
                            rt.name = t.name.clone();
                            for p in &t.partitions {
                                let mut rp = OffsetDeleteResponsePartition::default();
                                rp.partition_index = p.partition_index;
                                if is_protected {
                                    rp.error_code = code::GROUP_SUBSCRIBED_TO_TOPIC;
                                } else if group
                                    .offsets
                                    .shift_remove(&(topic.to_owned(), p.partition_index))
                                    .is_some()
                                {
                                    records.push((
                                        offset_commit_key(gid, topic, p.partition_index),
                                        None,
                                    ));
                                }
                                rt.partitions.push(rp);
                            }
                            r.topics.push(rt);
                        }
                    }
                }
            }
        }
        if records.is_empty() {
            out.reply(ctx.token, Response::OffsetDelete(r));
        } else {
            out.effects.push(Effect::PersistThenReply {
                records,
                replies: vec![(ctx.token, Response::OffsetDelete(r))],
            });
        }
        self.finish(out, ctx.now_ms)
    }

    // ---- DescribeGroups / ListGroups / DeleteGroups ---------------------------------------

    /// Describe the requested groups this coordinator owns. The driver splits a request by
    /// coordinator and concatenates the `groups` of the answers.
    pub fn describe_groups(
        &mut self,
        ctx: RequestCtx<'_>,
        req: DescribeGroupsRequest,
    ) -> Vec<Effect> {
        let mut out = Out::default();
        let mut r = DescribeGroupsResponse::default();
        for gid in &req.groups {
            let mut d = DescribedGroup::default();
            d.group_id = gid.clone();
            d.authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
            match self.groups.get(gid.0.as_str()) {
                None => {
                    d.group_state = sb(ClassicState::Dead.name());
                    // KIP-1043: v6 reports a missing group as an error, older versions as Dead.
                    if ctx.api_version >= 6 {
                        d.error_code = code::GROUP_ID_NOT_FOUND;
                        d.error_message = Some(sb(&format!("Group {} not found.", gid.0.as_str())));
                    }
                }
                Some(Group {
                    kind: GroupKind::Consumer(cg),
                    ..
                }) => {
                    // Kafka 4: DescribeGroups describes classic groups only.
                    d.group_state = sb(cg.state().name());
                    d.protocol_type = sb(CONSUMER_PROTOCOL_TYPE);
                    if ctx.api_version >= 6 {
                        d.error_code = code::GROUP_ID_NOT_FOUND;
                        d.error_message = Some(sb(&format!(
                            "Group {} is not a classic group.",
                            gid.0.as_str()
                        )));
                    }
                }
                Some(Group {
                    kind: GroupKind::Classic(c),
                    ..
                }) => {
                    d.group_state = sb(c.state.name());
                    d.protocol_type = sb(c.protocol_type.as_deref().unwrap_or(""));
                    let stable = c.state == ClassicState::Stable;
                    // Metadata and assignments are only meaningful once the generation is
                    // synced; Kafka shows them in Stable only.
                    let protocol = c.protocol_name.as_deref().unwrap_or("");
                    d.protocol_data = sb(if stable { protocol } else { "" });
                    d.members = c
                        .members
                        .values()
                        .map(|m| {
                            let mut dm = DescribedGroupMember::default();
                            dm.member_id = sb(&m.id);
                            dm.group_instance_id = m.instance_id.as_deref().map(sb);
                            dm.client_id = sb(&m.client_id);
                            dm.client_host = sb(&m.client_host);
                            if stable {
                                dm.member_metadata = m.metadata_for(protocol);
                                dm.member_assignment = m.assignment.clone();
                            }
                            dm
                        })
                        .collect();
                }
            }
            r.groups.push(d);
        }
        out.reply(ctx.token, Response::DescribeGroups(r));
        self.finish(out, ctx.now_ms)
    }

    /// List this coordinator's groups; the driver concatenates the answers of all of them.
    /// States (v4+) and types (v5+) filters match case-insensitively, as Kafka's do.
    pub fn list_groups(&mut self, ctx: RequestCtx<'_>, req: ListGroupsRequest) -> Vec<Effect> {
        let mut out = Out::default();
        let mut r = ListGroupsResponse::default();
        let states: Vec<&str> = if ctx.api_version >= 4 {
            req.states_filter.iter().map(|s| s.as_str()).collect()
        } else {
            Vec::new()
        };
        let types: Vec<&str> = if ctx.api_version >= 5 {
            req.types_filter.iter().map(|s| s.as_str()).collect()
        } else {
            Vec::new()
        };
        for group in self.groups.values() {
            let (state, group_type, protocol_type) = match &group.kind {
                GroupKind::Classic(c) => (
                    c.state.name(),
                    "classic",
                    c.protocol_type.as_deref().unwrap_or(""),
                ),
                GroupKind::Consumer(cg) => (cg.state().name(), "consumer", CONSUMER_PROTOCOL_TYPE),
            };
            if !states.is_empty() && !states.iter().any(|s| s.eq_ignore_ascii_case(state)) {
                continue;
            }
            if !types.is_empty() && !types.iter().any(|t| t.eq_ignore_ascii_case(group_type)) {
                continue;
            }
            let mut l = ListedGroup::default();
            l.group_id = GroupId(sb(&group.id));
            l.protocol_type = sb(protocol_type);
            l.group_state = sb(state);
            l.group_type = sb(group_type);
            r.groups.push(l);
        }
        out.reply(ctx.token, Response::ListGroups(r));
        self.finish(out, ctx.now_ms)
    }

    /// Delete empty groups with their offsets (tombstones); answered once those are durable.
    pub fn delete_groups(&mut self, ctx: RequestCtx<'_>, req: DeleteGroupsRequest) -> Vec<Effect> {
        let mut out = Out::default();
        let mut r = DeleteGroupsResponse::default();
        let mut records = Vec::new();
        for gid in &req.groups_names {
            let mut d = DeletableGroupResult::default();
            d.group_id = gid.clone();
            let id = gid.0.as_str();
            d.error_code = match self.groups.get(id).map(|g| &g.kind) {
                None
                | Some(GroupKind::Classic(ClassicGroup {
                    state: ClassicState::Dead,
                    ..
                })) => code::GROUP_ID_NOT_FOUND,
                Some(GroupKind::Classic(c)) if c.state != ClassicState::Empty => {
                    code::NON_EMPTY_GROUP
                }
                Some(GroupKind::Consumer(cg)) if !cg.members.is_empty() => code::NON_EMPTY_GROUP,
                Some(_) => {
                    if let Some(g) = self.groups.shift_remove(id) {
                        records.extend(tombstones(&g));
                    }
                    code::NONE
                }
            };
            r.results.push(d);
        }
        if records.is_empty() {
            out.reply(ctx.token, Response::DeleteGroups(r));
        } else {
            out.effects.push(Effect::PersistThenReply {
                records,
                replies: vec![(ctx.token, Response::DeleteGroups(r))],
            });
        }
        self.finish(out, ctx.now_ms)
    }

    // ---- time -----------------------------------------------------------------------------

    /// Fire every deadline at or before `now_ms`: KIP-394 pending members, session timeouts,
    /// the join timer (initial delay / rebalance timeout), the pending-sync timer and, every
    /// `offsets_retention_check_interval_ms`, offset expiry and removal of empty groups.
    /// Idempotent: ticking early or twice does nothing extra. `topics` names the partitions
    /// members hold when a consumer group turns classic, and resolves regex subscriptions
    /// for offset expiry.
    pub fn tick(&mut self, now_ms: i64, topics: &dyn TopicsView) -> Vec<Effect> {
        let mut out = Out::default();
        let cfg = &self.config;
        let mut records = Vec::new();
        for group in self.groups.values_mut() {
            match &mut group.kind {
                GroupKind::Classic(c) => c.tick(cfg, now_ms, &mut out),
                GroupKind::Consumer(cg) => {
                    let max = if cfg.consumer_migration_policy.downgrades() {
                        cfg.group_max_size
                    } else {
                        0
                    };
                    if let Some(fenced) = cg.tick(&group.id, now_ms, max, &mut records) {
                        // The last consumer-protocol member timed out: the group turns
                        // classic, and its members rejoin to be reassigned.
                        let mut c = cg.to_classic(&group.id, &fenced, topics, now_ms, &mut records);
                        c.prepare_rebalance(cfg, now_ms, &mut out);
                        group.kind = GroupKind::Classic(c);
                    }
                }
            }
        }
        if !records.is_empty() {
            out.effects.push(Effect::Persist(records));
        }
        let emptied: Vec<Record> = self
            .groups
            .values_mut()
            .filter_map(take_emptied_record)
            .collect();
        if !emptied.is_empty() {
            out.effects.push(Effect::Persist(emptied));
        }
        if self.next_retention_check_ms.is_some_and(|at| at <= now_ms) {
            self.next_retention_check_ms = None;
            self.expire(now_ms, topics, &mut out);
        }
        // Everything the driver asked for up to now has run; schedule the next deadline.
        self.tick_hint = None;
        if let Some(next) = self.next_deadline() {
            out.wake(next.max(now_ms.saturating_add(1)));
        }
        self.finish(out, now_ms)
    }

    /// Kafka's offset expiry (KIP-211) and removal of empty groups without offsets.
    fn expire(&mut self, now_ms: i64, topics: &dyn TopicsView, out: &mut Out) {
        let retention = self.config.offsets_retention_ms;
        let mut records = Vec::new();
        let mut dead = Vec::new();
        for group in self.groups.values_mut() {
            if let GroupKind::Consumer(cg) = &mut group.kind {
                cg.resolve_regexes(topics);
            }
            // Base of the retention clock per offset, or no expiry at all.
            enum Base {
                StateChange(i64),
                Commit,
            }
            type Protected<'a> = &'a dyn Fn(&str) -> bool;
            let (base, protected): (Option<Base>, Protected<'_>) = match &group.kind {
                // Kafka: a consumer-protocol group's offsets age per commit, except those of
                // topics its members subscribe to.
                GroupKind::Consumer(cg) => (Some(Base::Commit), &|t| cg.protects_topic(t)),
                GroupKind::Classic(c) => match (c.protocol_type.as_deref(), c.state) {
                    // An empty group's offsets age from when it became empty.
                    (Some(_), ClassicState::Empty) if c.state_timestamp_ms >= 0 => {
                        (Some(Base::StateChange(c.state_timestamp_ms)), &|_| false)
                    }
                    (Some(_), ClassicState::Empty) => (Some(Base::Commit), &|_| false),
                    // A stable consumer group keeps offsets of topics it subscribes to.
                    (Some(CONSUMER_PROTOCOL_TYPE), ClassicState::Stable)
                        if c.subscribed_topics.is_some() =>
                    {
                        (Some(Base::Commit), &|t| {
                            c.subscribed_topics.as_ref().is_some_and(|p| p.contains(t))
                        })
                    }
                    // Offsets-only groups age per commit.
                    (None, _) => (Some(Base::Commit), &|_| false),
                    _ => (None, &|_| false),
                },
            };
            let expired: Vec<(String, i32)> = match base {
                None => Vec::new(),
                Some(base) => group
                    .offsets
                    .iter()
                    .filter(|((topic, _), _)| !protected(topic))
                    .filter(|(_, v)| match v.expire_timestamp {
                        Some(at) => now_ms >= at,
                        None => {
                            let from = match base {
                                Base::StateChange(t) => t,
                                Base::Commit => v.commit_timestamp,
                            };
                            now_ms.saturating_sub(from) >= retention
                        }
                    })
                    .map(|(k, _)| k.clone())
                    .collect(),
            };
            for (topic, p) in expired {
                group.offsets.shift_remove(&(topic.clone(), p));
                records.push((offset_commit_key(&group.id, &topic, p), None));
            }
            let gone = match &group.kind {
                GroupKind::Classic(c) => {
                    c.state == ClassicState::Empty && c.pending_members.is_empty()
                }
                GroupKind::Consumer(cg) => cg.members.is_empty(),
            };
            if gone && group.offsets.is_empty() {
                dead.push(group.id.clone());
            }
        }
        for id in dead {
            if let Some(g) = self.groups.shift_remove(&id) {
                records.extend(tombstones(&g));
            }
        }
        if !records.is_empty() {
            out.effects.push(Effect::Persist(records));
        }
        let at = now_ms.saturating_add(self.config.offsets_retention_check_interval_ms.max(1));
        self.next_retention_check_ms = Some(at);
        out.wake(at);
    }

    // ---- recovery -------------------------------------------------------------------------

    /// Apply one `__consumer_offsets` record (in log order) while loading. Records of kinds
    /// this coordinator does not serve yet (KIP-848/share groups) are skipped with `Ok`;
    /// undecodable ones return an error and change nothing. Call `finish_replay` after the
    /// last record.
    pub fn replay(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), GroupError> {
        match decode_key(key)? {
            RecordKey::OffsetCommit {
                group,
                topic,
                partition,
            } => match value {
                Some(v) => {
                    let v = decode_offset_commit_value(v)?;
                    let g = self
                        .groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(group, -1));
                    g.commit((topic, partition), v);
                }
                None => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.offsets.shift_remove(&(topic, partition));
                    }
                }
            },
            RecordKey::ConsumerGroupMetadata { group } => match value {
                Some(v) => {
                    let v = ConsumerGroupMetadataValue::decode(v)?;
                    let cg = self.consumer_entry(group);
                    cg.epoch = v.epoch;
                    cg.metadata_hash = v.metadata_hash;
                }
                None => {
                    let consumer = self
                        .groups
                        .get(&group)
                        .is_some_and(|g| matches!(g.kind, GroupKind::Consumer(_)));
                    if consumer {
                        self.drop_group_metadata(group);
                    }
                }
            },
            RecordKey::ConsumerGroupMember { group, member } => {
                let v = value
                    .map(ConsumerGroupMemberMetadataValue::decode)
                    .transpose()?;
                self.consumer_entry(group).load_member(&member, v);
            }
            RecordKey::ConsumerGroupTargetMetadata { group } => {
                if let Some(v) = value {
                    let v = ConsumerGroupTargetAssignmentMetadataValue::decode(v)?;
                    self.consumer_entry(group).target_epoch = v.assignment_epoch;
                }
            }
            RecordKey::ConsumerGroupTargetMember { group, member } => {
                let v = value
                    .map(ConsumerGroupTargetAssignmentMemberValue::decode)
                    .transpose()?;
                self.consumer_entry(group).load_target(&member, v);
            }
            RecordKey::ConsumerGroupCurrentAssignment { group, member } => {
                let v = value
                    .map(ConsumerGroupCurrentMemberAssignmentValue::decode)
                    .transpose()?;
                self.consumer_entry(group).load_current(&member, v);
            }
            // Resolved on demand from the current topics instead.
            RecordKey::ConsumerGroupRegex { .. } => {}
            RecordKey::GroupMetadata { group } => match value {
                Some(v) => {
                    let v = decode_group_metadata_value(v)?;
                    let c = ClassicGroup::load(v);
                    let g = self
                        .groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(group, -1));
                    g.kind = GroupKind::Classic(c);
                }
                None => self.drop_group_metadata(group),
            },
            RecordKey::Other { .. } => {}
        }
        Ok(())
    }

    /// The group's metadata is gone; offsets without a tombstone yet still belong to an
    /// (offsets-only) group, as in Kafka's loader.
    fn drop_group_metadata(&mut self, group: String) {
        let keep = self
            .groups
            .get(&group)
            .is_some_and(|g| !g.offsets.is_empty());
        if keep {
            if let Some(g) = self.groups.get_mut(&group) {
                g.kind = GroupKind::Classic(ClassicGroup::new(-1));
            }
        } else {
            self.groups.shift_remove(&group);
        }
    }

    /// The consumer-protocol state of `group` while loading (a consumer record after a
    /// classic one means the group was converted).
    fn consumer_entry(&mut self, group: String) -> &mut ConsumerGroup {
        let g = self
            .groups
            .entry(group.clone())
            .or_insert_with(|| Group::new(group, -1));
        if !matches!(g.kind, GroupKind::Consumer(_)) {
            g.kind = GroupKind::Consumer(ConsumerGroup::default());
        }
        match &mut g.kind {
            GroupKind::Consumer(cg) => cg,
            GroupKind::Classic(_) => unreachable!("converted above"),
        }
    }

    /// End of loading: loaded members get a full session timeout from now (they must
    /// heartbeat or rejoin, as after a Kafka coordinator failover), and ticks are scheduled.
    pub fn finish_replay(&mut self, now_ms: i64) -> Vec<Effect> {
        for group in self.groups.values_mut() {
            let c = match &mut group.kind {
                GroupKind::Classic(c) => c,
                GroupKind::Consumer(cg) => {
                    cg.rebuild(now_ms, self.config.consumer_session_timeout_ms);
                    continue;
                }
            };
            if c.state_timestamp_ms < 0 {
                // Offsets-only group or a v0/v1 record: age from load time.
                c.state_timestamp_ms = now_ms;
            }
            for m in c.members.values_mut() {
                m.heartbeat_deadline_ms =
                    now_ms.saturating_add(i64::from(m.session_timeout_ms.max(0)));
            }
        }
        let mut out = Out::default();
        if let Some(next) = self.next_deadline() {
            out.wake(next);
        }
        self.finish(out, now_ms)
    }
}

/// The request checks Kafka's `throwIfConsumerGroupHeartbeatRequestIsInvalid` makes, as a
/// [`Heartbeat`] carrying the limits and timeouts of `cfg`.
fn validate_heartbeat<'a>(
    ctx: &RequestCtx<'a>,
    req: &'a ConsumerGroupHeartbeatRequest,
    cfg: &GroupConfig,
    // The id for a v0 member that lets the coordinator name it.
    fresh: Option<Uuid>,
) -> Result<Heartbeat<'a>, (i16, String)> {
    let invalid = |m: &str| Err((code::INVALID_REQUEST, m.to_owned()));
    // Kafka: blank (empty or only whitespace) ids are invalid requests.
    let blank = |s: &str| s.trim().is_empty();
    if blank(&req.group_id.0) {
        return invalid("GroupId can't be empty.");
    }
    if req.instance_id.as_ref().is_some_and(|i| blank(i)) {
        return invalid("InstanceId can't be empty.");
    }
    if req.rack_id.as_ref().is_some_and(|r| blank(r)) {
        return invalid("RackId can't be empty.");
    }
    let epoch = req.member_epoch;
    let mut member_id = req.member_id.as_str().to_owned();
    if blank(&member_id) {
        // v0 lets the coordinator name a joining member; v1 clients name themselves.
        if ctx.api_version == 0 && epoch == 0 {
            member_id = fresh.unwrap_or_else(Uuid::new_v4).simple().to_string();
        } else {
            return invalid("MemberId can't be empty.");
        }
    }
    if member_id.len() > MEMBER_ID_BYTES_MAX {
        return invalid("MemberId is too long.");
    }
    let names = req.subscribed_topic_names.as_ref();
    let regex = req.subscribed_topic_regex.as_ref().map(|r| r.as_str());
    if epoch == 0 {
        if req.rebalance_timeout_ms == -1 {
            return invalid("RebalanceTimeoutMs must be provided in first request.");
        }
        if req.topic_partitions.as_ref().is_none_or(|t| !t.is_empty()) {
            return invalid("TopicPartitions must be empty when (re-)joining.");
        }
        if names.is_none() && regex.is_none() {
            return invalid(
                "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
            );
        }
    } else if epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
        if req.instance_id.is_none() {
            return invalid("InstanceId can't be null.");
        }
    } else if epoch < LEAVE_GROUP_STATIC_MEMBER_EPOCH {
        return invalid(&format!(
            "MemberEpoch is {epoch}, but must be greater than or equal to -2."
        ));
    }
    if names.is_some_and(|n| n.len() > SUBSCRIBED_TOPICS_MAX) {
        return invalid("SubscribedTopicNames has too many topics.");
    }
    if let Some(a) = req.server_assignor.as_ref() {
        if Assignor::from_name(a.as_str()).is_none() {
            return Err((
                code::UNSUPPORTED_ASSIGNOR,
                format!(
                    "ServerAssignor {} is not supported. Supported assignors: uniform, range.",
                    a.as_str()
                ),
            ));
        }
    }
    if let Some(r) = regex.filter(|r| !r.is_empty()) {
        compile_regex(r).map_err(|m| (code::INVALID_REGULAR_EXPRESSION, m))?;
    }
    let mut subscribed_names: Option<Vec<String>> =
        names.map(|n| n.iter().map(|t| t.0.as_str().to_owned()).collect());
    if let Some(n) = subscribed_names.as_mut() {
        n.sort();
        n.dedup();
    }
    Ok(Heartbeat {
        member_id,
        member_epoch: epoch,
        instance_id: req.instance_id.as_ref().map(|s| s.as_str().to_owned()),
        rack_id: req.rack_id.as_ref().map(|s| s.as_str().to_owned()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_names,
        regex: regex.map(str::to_owned),
        server_assignor: req.server_assignor.as_ref().map(|s| s.as_str().to_owned()),
        owned: req.topic_partitions.as_deref(),
        client_id: ctx.client_id,
        client_host: ctx.client_host,
        now_ms: ctx.now_ms,
        group_max_size: cfg.group_max_size,
        session_timeout_ms: cfg.consumer_session_timeout_ms,
        heartbeat_interval_ms: cfg.consumer_heartbeat_interval_ms,
    })
}

/// Kafka's `ConsumerGroup.validateOffsetCommit`: the member epoch stands in for the
/// generation, and a commit of any other epoch is STALE_MEMBER_EPOCH (the member retries
/// once its heartbeat brings the current one).
fn validate_consumer_commit(
    cg: &mut ConsumerGroup,
    ctx: &RequestCtx<'_>,
    epoch: i32,
    member_id: &str,
    instance: Option<&str>,
    transactional: bool,
) -> i16 {
    if epoch < 0 && cg.members.is_empty() {
        return code::NONE;
    }
    if transactional && epoch < 0 && member_id.is_empty() && instance.is_none() {
        return code::NONE;
    }
    let Some(m) = cg.members.get(member_id) else {
        return code::UNKNOWN_MEMBER_ID;
    };
    // A classic member (online migration) commits as it would to a classic group: any
    // version, its epoch as the generation.
    if m.classic.is_some() {
        return if epoch == m.epoch {
            code::NONE
        } else {
            code::ILLEGAL_GENERATION
        };
    }
    if !transactional && ctx.api_version < 9 {
        return code::UNSUPPORTED_VERSION;
    }
    if epoch != m.epoch {
        // TxnOffsetCommit has no STALE_MEMBER_EPOCH: Kafka answers ILLEGAL_GENERATION.
        return if transactional {
            code::ILLEGAL_GENERATION
        } else {
            code::STALE_MEMBER_EPOCH
        };
    }
    code::NONE
}

/// Answers `token` once `records` (if any) are durable.
fn persist_then_reply(out: &mut Out, records: Vec<Record>, token: ReplyToken, response: Response) {
    if records.is_empty() {
        out.reply(token, response);
    } else {
        out.effects.push(Effect::PersistThenReply {
            records,
            replies: vec![(token, response)],
        });
    }
}

/// The metadata record of a group whose rebalance just ended with no members, so a restart
/// does not resurrect the members of its last stored generation (Kafka stores it too).
fn take_emptied_record(g: &mut Group) -> Option<Record> {
    let GroupKind::Classic(c) = &mut g.kind else {
        return None;
    };
    if std::mem::take(&mut c.emptied) {
        Some(c.metadata_record(&g.id))
    } else {
        None
    }
}

/// Tombstones for everything a group has stored.
fn tombstones(g: &Group) -> Vec<Record> {
    let mut records: Vec<Record> = g
        .offsets
        .keys()
        .map(|(topic, p)| (offset_commit_key(&g.id, topic, *p), None))
        .collect();
    match &g.kind {
        GroupKind::Classic(_) => records.push((group_metadata_key(&g.id), None)),
        GroupKind::Consumer(_) => records.extend(ConsumerGroup::deletion_records(&g.id)),
    }
    records
}
