//! Tests of online migration between the classic and the consumer protocol: a classic group
//! with members upgraded by a joining consumer-protocol member, classic members reconciled
//! through JoinGroup/SyncGroup/Heartbeat inside a consumer group, the downgrade when the
//! last consumer-protocol member leaves or times out, and the records replaying to the same
//! group.

use bytes::Bytes;
use sluice_codec::kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use sluice_codec::kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use sluice_codec::kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, SyncGroupRequest,
};
use sluice_codec::kafka_protocol::protocol::Encodable;

use crate::consumer::ConsumerGroupState;
use crate::consumer_tests::{count, disjoint, join_req, s, Client, G, H};
use crate::embedded::{decode_assignment, encode_assignment};
use crate::group::ClassicState;
use crate::{code, GroupConfig, GroupCoordinator, Response};

const SESSION: i32 = 10_000;
const REBALANCE: i32 = 20_000;

/// A v1 `ConsumerProtocolSubscription` of `topics`, owning `owned` of topic `t`.
fn subscription(topics: &[&str], owned: &[i32]) -> Bytes {
    use sluice_codec::kafka_protocol::messages::consumer_protocol_subscription::TopicPartition;
    use sluice_codec::kafka_protocol::messages::{ConsumerProtocolSubscription, TopicName};
    let mut sub = ConsumerProtocolSubscription::default();
    sub.topics = topics.iter().map(|t| s(t)).collect();
    if !owned.is_empty() {
        let mut tp = TopicPartition::default();
        tp.topic = TopicName(s("t"));
        tp.partitions = owned.to_vec();
        sub.owned_partitions = vec![tp];
    }
    let mut b = bytes::BytesMut::new();
    b.extend_from_slice(&1i16.to_be_bytes());
    sub.encode(&mut b, 1).unwrap();
    b.freeze()
}

/// A classic client: its member id, generation and partitions of topic `t`.
struct Classic {
    id: String,
    generation: i32,
    owned: Vec<i32>,
}

impl H {
    fn migrating() -> H {
        let mut h = H::new();
        h.c = GroupCoordinator::new(GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..GroupConfig::default()
        });
        h.topics.add("t", 4);
        h
    }

    /// A JoinGroup answered in this call (`None` if it is parked).
    fn classic_join(&mut self, member: &str, owned: &[i32]) -> Option<JoinGroupResponse> {
        let ctx = self.ctx(7);
        let mut req = JoinGroupRequest::default();
        req.group_id = GroupId(s(G));
        req.session_timeout_ms = SESSION;
        req.rebalance_timeout_ms = REBALANCE;
        req.member_id = s(member);
        req.protocol_type = s("consumer");
        let mut p = JoinGroupRequestProtocol::default();
        p.name = s("range");
        p.metadata = subscription(&["t"], owned);
        req.protocols = vec![p];
        let effects = self.c.join_group(ctx, req, &self.topics);
        match self.absorb(ctx.token, effects)? {
            Response::JoinGroup(r) => Some(r),
            other => panic!("expected JoinGroup, got {other:?}"),
        }
    }

    /// SyncGroup; returns the error and the partitions of `t` assigned.
    fn classic_sync(&mut self, c: &Classic, assignments: &[(&str, Vec<i32>)]) -> (i16, Vec<i32>) {
        let ctx = self.ctx(5);
        let mut req = SyncGroupRequest::default();
        req.group_id = GroupId(s(G));
        req.generation_id = c.generation;
        req.member_id = s(&c.id);
        req.protocol_type = Some(s("consumer"));
        req.protocol_name = Some(s("range"));
        req.assignments = assignments
            .iter()
            .map(|(m, ps)| {
                let mut a = SyncGroupRequestAssignment::default();
                a.member_id = s(m);
                a.assignment = encode_assignment(1, &vec![("t".to_owned(), ps.clone())]);
                a
            })
            .collect();
        let effects = self.c.sync_group(ctx, req, &self.topics);
        let Some(Response::SyncGroup(r)) = self.absorb(ctx.token, effects) else {
            panic!("no SyncGroup answer");
        };
        let mut parts: Vec<i32> = decode_assignment(&r.assignment)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(_, ps)| ps)
            .collect();
        parts.sort();
        (r.error_code, parts)
    }

    fn classic_heartbeat(&mut self, c: &Classic) -> i16 {
        let ctx = self.ctx(4);
        let mut req = HeartbeatRequest::default();
        req.group_id = GroupId(s(G));
        req.generation_id = c.generation;
        req.member_id = s(&c.id);
        let effects = self.c.heartbeat(ctx, req);
        let Some(Response::Heartbeat(r)) = self.absorb(ctx.token, effects) else {
            panic!("no Heartbeat answer");
        };
        r.error_code
    }

    /// A classic consumer alone in a classic group, owning all of `t` at generation 1.
    fn classic_alone(&mut self) -> Classic {
        let r = self.classic_join("", &[]).expect("MEMBER_ID_REQUIRED");
        assert_eq!(r.error_code, code::MEMBER_ID_REQUIRED);
        let id = r.member_id.to_string();
        let r = self
            .classic_join(&id, &[])
            .expect("a lone member's join completes");
        assert_eq!((r.error_code, r.leader.as_str()), (code::NONE, id.as_str()));
        let mut c = Classic {
            id: id.clone(),
            generation: r.generation_id,
            owned: Vec::new(),
        };
        let (e, parts) = self.classic_sync(&c, &[(&id, vec![0, 1, 2, 3])]);
        assert_eq!(e, code::NONE);
        c.owned = parts;
        assert_eq!(self.c.group_state(G), Some(ClassicState::Stable));
        c
    }

    /// What an eager classic client does on REBALANCE_IN_PROGRESS: give everything up,
    /// rejoin, sync.
    fn classic_rejoin(&mut self, c: &mut Classic) {
        c.owned.clear();
        let r = self
            .classic_join(&c.id, &[])
            .expect("answered at once in a consumer group");
        assert_eq!(r.error_code, code::NONE);
        assert_eq!(
            r.leader.as_str(),
            "",
            "the coordinator assigns, not a leader"
        );
        c.generation = r.generation_id;
        let (e, parts) = self.classic_sync(c, &[]);
        assert_eq!(e, code::NONE);
        c.owned = parts;
    }
}

fn assert_split(classic: &Classic, consumer: &Client) {
    let theirs: Vec<i32> = consumer.owned.values().flatten().copied().collect();
    for p in &classic.owned {
        assert!(!theirs.contains(p), "partition {p} owned twice");
    }
    assert_eq!(
        classic.owned.len() + theirs.len(),
        4,
        "{:?} / {theirs:?}",
        classic.owned
    );
}

#[test]
fn a_consumer_member_upgrades_a_running_classic_group_and_shares_it() {
    let mut h = H::migrating();
    let mut a = h.classic_alone();
    assert_eq!(a.owned, vec![0, 1, 2, 3]);

    // A consumer-protocol member joins: the group is converted, A keeps its partitions
    // until it gives them up.
    let mut b = h.join("b", &["t"]);
    assert!(
        h.c.consumer_group_state(G).is_some(),
        "converted to a consumer group"
    );
    assert_eq!(count(&b), 0, "nothing is free yet");
    assert_eq!(h.classic_heartbeat(&a), code::REBALANCE_IN_PROGRESS);
    h.classic_rejoin(&mut a);
    assert_eq!(a.owned.len(), 2);
    h.beat(&mut b);
    assert_split(&a, &b);
    assert_eq!(h.classic_heartbeat(&a), code::NONE);
    assert_eq!(
        h.c.consumer_group_state(G),
        Some(ConsumerGroupState::Stable)
    );

    // Describe tells the two kinds of member apart.
    let ctx = h.ctx(1);
    let mut req = ConsumerGroupDescribeRequest::default();
    req.group_ids = vec![GroupId(s(G))];
    let effects = h.c.consumer_group_describe(ctx, req, &h.topics);
    let Some(Response::ConsumerGroupDescribe(d)) = h.absorb(ctx.token, effects) else {
        panic!("no describe answer");
    };
    let mut types: Vec<(String, i8)> = d.groups[0]
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.member_type))
        .collect();
    types.sort();
    assert_eq!(types, vec![("b".to_owned(), 1), (a.id.clone(), 0)]);

    // Replaying the records gives the same group.
    let mut fresh = GroupCoordinator::new(GroupConfig::default());
    for (k, v) in &h.log {
        fresh.replay(k, v.as_deref()).expect("replay");
    }
    fresh.finish_replay(h.now);
    assert_eq!(fresh.members(G), h.c.members(G));
    assert_eq!(fresh.generation(G), h.c.generation(G));
    assert_eq!(
        fresh.consumer_group_state(G),
        Some(ConsumerGroupState::Stable)
    );
}

#[test]
fn the_last_consumer_member_leaving_downgrades_to_a_classic_rebalance() {
    let mut h = H::migrating();
    let mut a = h.classic_alone();
    let mut b = h.join("b", &["t"]);
    h.classic_heartbeat(&a);
    h.classic_rejoin(&mut a);
    h.beat(&mut b);
    let epoch = h.c.generation(G).unwrap();

    let mut leave = join_req("b", &["t"], None);
    leave.member_epoch = -1;
    let r = h.heartbeat(leave);
    assert_eq!((r.error_code, r.member_epoch), (code::NONE, -1));
    assert_eq!(h.c.group_state(G), Some(ClassicState::PreparingRebalance));
    assert_eq!(h.c.generation(G), Some(epoch));

    // The classic member rejoins and, alone, leads the new generation.
    assert_eq!(h.classic_heartbeat(&a), code::REBALANCE_IN_PROGRESS);
    let r = h
        .classic_join(&a.id, &[])
        .expect("the only member rejoined");
    assert_eq!(
        (r.error_code, r.leader.to_string()),
        (code::NONE, a.id.clone())
    );
    assert_eq!(r.generation_id, epoch + 1);
    a.generation = r.generation_id;
    let (e, parts) = h.classic_sync(&a, &[(&a.id.clone(), vec![0, 1, 2, 3])]);
    assert_eq!((e, parts), (code::NONE, vec![0, 1, 2, 3]));

    let mut fresh = GroupCoordinator::new(GroupConfig::default());
    for (k, v) in &h.log {
        fresh.replay(k, v.as_deref()).expect("replay");
    }
    fresh.finish_replay(h.now);
    assert_eq!(fresh.group_state(G), Some(ClassicState::Stable));
    assert_eq!(fresh.members(G), vec![a.id.clone()]);
}

#[test]
fn a_silent_consumer_member_downgrades_the_group_when_it_times_out() {
    let mut h = H::migrating();
    let mut a = h.classic_alone();
    let mut b = h.join("b", &["t"]);
    h.classic_heartbeat(&a);
    h.classic_rejoin(&mut a);
    h.beat(&mut b);
    // A keeps heartbeating; b goes quiet past the consumer session timeout.
    for _ in 0..10 {
        h.now += 5_000;
        let effects = h.c.tick(h.now);
        h.absorb(crate::ReplyToken(u64::MAX), effects);
        if h.c.group_state(G).is_some() {
            break;
        }
        assert_eq!(h.classic_heartbeat(&a), code::NONE);
    }
    assert_eq!(h.c.group_state(G), Some(ClassicState::PreparingRebalance));
    assert_eq!(h.classic_heartbeat(&a), code::REBALANCE_IN_PROGRESS);
}

#[test]
fn a_classic_member_that_does_not_rejoin_in_its_rebalance_timeout_is_removed() {
    let mut h = H::migrating();
    let mut a = h.classic_alone();
    let mut b = h.join("b", &["t"]);
    h.classic_heartbeat(&a);
    h.classic_rejoin(&mut a);
    h.beat(&mut b);
    // A third member makes A rejoin; A only heartbeats.
    let mut c = h.join("c", &["t"]);
    assert_eq!(h.classic_heartbeat(&a), code::REBALANCE_IN_PROGRESS);
    for _ in 0..5 {
        h.now += 5_000;
        h.classic_heartbeat(&a);
        h.beat(&mut b);
        h.beat(&mut c);
        let effects = h.c.tick(h.now);
        h.absorb(crate::ReplyToken(u64::MAX), effects);
    }
    assert!(
        !h.c.members(G).contains(&a.id),
        "fenced after the rebalance timeout"
    );
    assert_eq!(h.classic_heartbeat(&a), code::UNKNOWN_MEMBER_ID);
    h.settle(&mut [&mut b, &mut c]);
    disjoint(&[&b, &c]);
    assert_eq!(count(&b) + count(&c), 4);
}

#[test]
fn classic_requests_to_a_consumer_group_get_kafkas_errors() {
    let mut h = H::migrating();
    let mut a = h.classic_alone();
    let mut b = h.join("b", &["t"]);
    h.classic_heartbeat(&a);
    h.classic_rejoin(&mut a);
    h.beat(&mut b);
    // A wrong generation.
    let stale = Classic {
        id: a.id.clone(),
        generation: a.generation - 1,
        owned: Vec::new(),
    };
    assert_eq!(h.classic_heartbeat(&stale), code::ILLEGAL_GENERATION);
    assert_eq!(h.classic_sync(&stale, &[]).0, code::ILLEGAL_GENERATION);
    // A consumer-protocol member cannot use the classic requests.
    let as_b = Classic {
        id: "b".to_owned(),
        generation: b.epoch,
        owned: Vec::new(),
    };
    assert_eq!(h.classic_heartbeat(&as_b), code::UNKNOWN_MEMBER_ID);
    // Another protocol type is inconsistent with the group.
    let ctx = h.ctx(7);
    let mut req = JoinGroupRequest::default();
    req.group_id = GroupId(s(G));
    req.session_timeout_ms = SESSION;
    req.rebalance_timeout_ms = REBALANCE;
    req.member_id = s("");
    req.group_instance_id = Some(s("i"));
    req.protocol_type = s("connect");
    let mut p = JoinGroupRequestProtocol::default();
    p.name = s("default");
    p.metadata = Bytes::from_static(b"\0\0");
    req.protocols = vec![p];
    let effects = h.c.join_group(ctx, req, &h.topics);
    let Some(Response::JoinGroup(r)) = h.absorb(ctx.token, effects) else {
        panic!("no JoinGroup answer");
    };
    assert_eq!(r.error_code, code::INCONSISTENT_GROUP_PROTOCOL);
    // A classic member leaves with LeaveGroup; the consumer member takes everything.
    let ctx = h.ctx(3);
    let mut req = LeaveGroupRequest::default();
    req.group_id = GroupId(s(G));
    let mut m =
        sluice_codec::kafka_protocol::messages::leave_group_request::MemberIdentity::default();
    m.member_id = s(&a.id);
    req.members = vec![m];
    let effects = h.c.leave_group(ctx, req);
    let Some(Response::LeaveGroup(r)) = h.absorb(ctx.token, effects) else {
        panic!("no LeaveGroup answer");
    };
    assert_eq!(r.members[0].error_code, code::NONE);
    h.settle(&mut [&mut b]);
    assert_eq!(count(&b), 4);
}
