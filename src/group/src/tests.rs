//! Unit tests: rebalance edge cases, offsets, persistence and replay, driven by a fake clock.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use sluice_codec::kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use sluice_codec::kafka_protocol::messages::leave_group_request::MemberIdentity;
use sluice_codec::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use sluice_codec::kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use sluice_codec::kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use sluice_codec::kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use sluice_codec::kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use sluice_codec::kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, ProducerId, SyncGroupRequest, TopicName,
    TransactionalId, TxnOffsetCommitRequest,
};
use sluice_codec::kafka_protocol::protocol::StrBytes;

use crate::code;
use crate::records::{self, decode_group_metadata_value, decode_key, RecordKey};
use crate::{
    partition_for, persist_failed, persist_failed_with, ClassicState, Effect, GroupConfig,
    GroupCoordinator, Record, ReplyToken, RequestCtx, Response,
};

/// Classic groups never look topics up.
struct NoTopics;

impl crate::consumer::TopicsView for NoTopics {
    fn version(&self) -> u64 {
        0
    }
    fn by_name(&self, _: &str) -> Option<(uuid::Uuid, i32)> {
        None
    }
    fn by_id(&self, _: &uuid::Uuid) -> Option<(&str, i32)> {
        None
    }
    fn for_each_name(&self, _: &mut dyn FnMut(&str)) {}
}

const G: &str = "g1";
const SESSION: i32 = 10_000;
const REBALANCE: i32 = 20_000;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_owned())
}

/// ConsumerProtocolSubscription v1: topics, null user data, owned partitions.
fn subscription(topics: &[&str], owned: &[(&str, &[i32])]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(1);
    b.put_i32(topics.len() as i32);
    for t in topics {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1);
    b.put_i32(owned.len() as i32);
    for (t, ps) in owned {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
        b.put_i32(ps.len() as i32);
        for p in *ps {
            b.put_i32(*p);
        }
    }
    b.freeze()
}

/// A fake broker: a coordinator, a clock, tokens, and every effect seen.
struct H {
    c: GroupCoordinator,
    now: i64,
    next: u64,
    replies: HashMap<ReplyToken, Response>,
    log: Vec<Record>,
    /// Records of transactional batches, with their producer id.
    txn_log: Vec<(i64, Record)>,
    ticks: Vec<i64>,
}

impl H {
    fn new() -> Self {
        Self::with(GroupConfig::default())
    }

    fn with(cfg: GroupConfig) -> Self {
        H {
            c: GroupCoordinator::new(cfg),
            now: 0,
            next: 0,
            replies: HashMap::new(),
            log: Vec::new(),
            txn_log: Vec::new(),
            ticks: Vec::new(),
        }
    }

    fn absorb(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Reply(t, r) => {
                    assert!(
                        self.replies.insert(t, r).is_none(),
                        "token {t:?} answered twice"
                    );
                }
                Effect::PersistThenReply { records, replies } => {
                    self.log.extend(records);
                    for (t, r) in replies {
                        assert!(
                            self.replies.insert(t, r).is_none(),
                            "token {t:?} answered twice"
                        );
                    }
                }
                Effect::Persist(records) => self.log.extend(records),
                Effect::PersistTxnThenReply {
                    producer_id,
                    records,
                    replies,
                    ..
                } => {
                    self.txn_log
                        .extend(records.into_iter().map(|r| (producer_id, r)));
                    for (t, r) in replies {
                        assert!(
                            self.replies.insert(t, r).is_none(),
                            "token {t:?} answered twice"
                        );
                    }
                }
                Effect::ScheduleTick { at_ms } => self.ticks.push(at_ms),
            }
        }
    }

    fn ctx(&mut self, v: i16) -> RequestCtx<'static> {
        self.next += 1;
        RequestCtx {
            token: ReplyToken(self.next),
            api_version: v,
            now_ms: self.now,
            client_id: "cli",
            client_host: "/127.0.0.1",
        }
    }

    fn at(&mut self, now: i64) {
        self.now = now;
        let e = self.c.tick(now, &NoTopics);
        self.absorb(e);
    }

    fn take(&mut self, t: ReplyToken) -> Option<Response> {
        self.replies.remove(&t)
    }

    fn join_resp(&mut self, t: ReplyToken) -> Option<JoinGroupResponse> {
        match self.take(t)? {
            Response::JoinGroup(r) => Some(r),
            other => panic!("expected JoinGroup, got {other:?}"),
        }
    }

    fn join_full(
        &mut self,
        v: i16,
        member: &str,
        instance: Option<&str>,
        ptype: &str,
        protocols: &[(&str, Bytes)],
    ) -> ReplyToken {
        let ctx = self.ctx(v);
        let mut req = JoinGroupRequest::default();
        req.group_id = GroupId(s(G));
        req.session_timeout_ms = SESSION;
        req.rebalance_timeout_ms = REBALANCE;
        req.member_id = s(member);
        req.group_instance_id = instance.map(s);
        req.protocol_type = s(ptype);
        req.protocols = protocols
            .iter()
            .map(|(n, m)| {
                let mut p = JoinGroupRequestProtocol::default();
                p.name = s(n);
                p.metadata = m.clone();
                p
            })
            .collect();
        let e = self.c.join_group(ctx, req, &NoTopics);
        self.absorb(e);
        ctx.token
    }

    /// Consumer-protocol join with a "range" assignor subscribed to `topics`.
    fn join(&mut self, v: i16, member: &str, instance: Option<&str>) -> ReplyToken {
        self.join_full(
            v,
            member,
            instance,
            "consumer",
            &[("range", subscription(&["t1"], &[]))],
        )
    }

    /// KIP-394 dance: returns the member id and the token of the real join.
    fn join_new(&mut self) -> (String, ReplyToken) {
        let t = self.join(5, "", None);
        let r = self.join_resp(t).expect("immediate MEMBER_ID_REQUIRED");
        assert_eq!(r.error_code, code::MEMBER_ID_REQUIRED);
        let id = r.member_id.as_str().to_owned();
        assert!(id.starts_with("cli-"));
        let t = self.join(5, &id, None);
        (id, t)
    }

    fn sync(&mut self, member: &str, generation: i32, assignments: &[(&str, &[u8])]) -> ReplyToken {
        let ctx = self.ctx(5);
        let mut req = SyncGroupRequest::default();
        req.group_id = GroupId(s(G));
        req.generation_id = generation;
        req.member_id = s(member);
        req.protocol_type = Some(s("consumer"));
        req.assignments = assignments
            .iter()
            .map(|(m, a)| {
                let mut x = SyncGroupRequestAssignment::default();
                x.member_id = s(m);
                x.assignment = Bytes::copy_from_slice(a);
                x
            })
            .collect();
        let e = self.c.sync_group(ctx, req, &NoTopics);
        self.absorb(e);
        ctx.token
    }

    fn sync_resp(&mut self, t: ReplyToken) -> Option<(i16, Bytes)> {
        match self.take(t)? {
            Response::SyncGroup(r) => Some((r.error_code, r.assignment)),
            other => panic!("expected SyncGroup, got {other:?}"),
        }
    }

    fn heartbeat_full(&mut self, member: &str, generation: i32, instance: Option<&str>) -> i16 {
        let ctx = self.ctx(4);
        let mut req = HeartbeatRequest::default();
        req.group_id = GroupId(s(G));
        req.generation_id = generation;
        req.member_id = s(member);
        req.group_instance_id = instance.map(s);
        let e = self.c.heartbeat(ctx, req);
        self.absorb(e);
        match self.take(ctx.token) {
            Some(Response::Heartbeat(r)) => r.error_code,
            other => panic!("heartbeat answered {other:?}"),
        }
    }

    fn heartbeat(&mut self, member: &str, generation: i32) -> i16 {
        self.heartbeat_full(member, generation, None)
    }

    fn commit_v(
        &mut self,
        v: i16,
        group: &str,
        member: &str,
        generation: i32,
        offsets: &[(&str, i32, i64, Option<&str>)],
    ) -> (ReplyToken, Vec<i16>, usize) {
        let ctx = self.ctx(v);
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(s(group));
        req.generation_id_or_member_epoch = generation;
        req.member_id = s(member);
        req.retention_time_ms = -1;
        for (topic, p, off, meta) in offsets {
            let mut tp = OffsetCommitRequestPartition::default();
            tp.partition_index = *p;
            tp.committed_offset = *off;
            tp.committed_leader_epoch = 3;
            tp.committed_metadata = meta.map(s);
            let mut t = OffsetCommitRequestTopic::default();
            t.name = TopicName(s(topic));
            t.partitions.push(tp);
            req.topics.push(t);
        }
        let before = self.log.len();
        let e = self.c.offset_commit(ctx, req);
        self.absorb(e);
        let written = self.log.len() - before;
        match self.take(ctx.token) {
            Some(Response::OffsetCommit(r)) => {
                let codes = r
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                    .collect();
                (ctx.token, codes, written)
            }
            other => panic!("commit answered {other:?}"),
        }
    }

    fn commit(
        &mut self,
        group: &str,
        member: &str,
        generation: i32,
        offsets: &[(&str, i32, i64)],
    ) -> Vec<i16> {
        let o: Vec<_> = offsets
            .iter()
            .map(|&(t, p, off)| (t, p, off, Some("m")))
            .collect();
        self.commit_v(8, group, member, generation, &o).1
    }

    fn fetch_v7(
        &mut self,
        group: &str,
        topics: Option<&[(&str, &[i32])]>,
    ) -> Vec<(String, i32, i64)> {
        let ctx = self.ctx(7);
        let mut req = OffsetFetchRequest::default();
        req.group_id = GroupId(s(group));
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|(t, ps)| {
                    let mut x = OffsetFetchRequestTopic::default();
                    x.name = TopicName(s(t));
                    x.partition_indexes = ps.to_vec();
                    x
                })
                .collect()
        });
        let e = self.c.offset_fetch(ctx, req);
        self.absorb(e);
        match self.take(ctx.token) {
            Some(Response::OffsetFetch(r)) => r
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(move |p| {
                        (
                            t.name.0.as_str().to_owned(),
                            p.partition_index,
                            p.committed_offset,
                        )
                    })
                })
                .collect(),
            other => panic!("fetch answered {other:?}"),
        }
    }

    fn leave(&mut self, v: i16, members: &[(&str, Option<&str>)]) -> (i16, Vec<i16>) {
        let ctx = self.ctx(v);
        let mut req = LeaveGroupRequest::default();
        req.group_id = GroupId(s(G));
        if v >= 3 {
            req.members = members
                .iter()
                .map(|(m, i)| {
                    let mut x = MemberIdentity::default();
                    x.member_id = s(m);
                    x.group_instance_id = i.map(s);
                    x
                })
                .collect();
        } else {
            req.member_id = s(members[0].0);
        }
        let e = self.c.leave_group(ctx, req);
        self.absorb(e);
        match self.take(ctx.token) {
            Some(Response::LeaveGroup(r)) => (
                r.error_code,
                r.members.iter().map(|m| m.error_code).collect(),
            ),
            other => panic!("leave answered {other:?}"),
        }
    }

    fn state(&self) -> Option<ClassicState> {
        self.c.group_state(G)
    }

    /// Two dynamic members through a full first rebalance; returns (leader, follower).
    /// TxnOffsetCommit at version `v`; the per-partition codes.
    #[allow(clippy::too_many_arguments)]
    fn txn_commit(
        &mut self,
        v: i16,
        group: &str,
        producer_id: i64,
        member: &str,
        generation: i32,
        offsets: &[(&str, i32, i64)],
    ) -> Vec<i16> {
        let ctx = self.ctx(v);
        let mut req = TxnOffsetCommitRequest::default();
        req.transactional_id = TransactionalId(s("tx"));
        req.group_id = GroupId(s(group));
        req.producer_id = ProducerId(producer_id);
        req.producer_epoch = 0;
        req.generation_id = generation;
        req.member_id = s(member);
        req.topics = offsets
            .iter()
            .map(|&(t, p, off)| {
                let mut tp = TxnOffsetCommitRequestPartition::default();
                tp.partition_index = p;
                tp.committed_offset = off;
                tp.committed_leader_epoch = -1;
                tp.committed_metadata = Some(s("txn"));
                let mut tt = TxnOffsetCommitRequestTopic::default();
                tt.name = TopicName(s(t));
                tt.partitions = vec![tp];
                tt
            })
            .collect();
        let e = self.c.txn_offset_commit(ctx, req);
        self.absorb(e);
        match self.take(ctx.token) {
            Some(Response::TxnOffsetCommit(r)) => r
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                .collect(),
            other => panic!("txn commit answered {other:?}"),
        }
    }

    /// OffsetFetch v7 with `require_stable`: (partition, code, offset).
    fn fetch_stable(&mut self, group: &str, topic: &str, ps: &[i32]) -> Vec<(i32, i16, i64)> {
        let ctx = self.ctx(7);
        let mut req = OffsetFetchRequest::default();
        req.group_id = GroupId(s(group));
        req.require_stable = true;
        let mut x = OffsetFetchRequestTopic::default();
        x.name = TopicName(s(topic));
        x.partition_indexes = ps.to_vec();
        req.topics = Some(vec![x]);
        let e = self.c.offset_fetch(ctx, req);
        self.absorb(e);
        match self.take(ctx.token) {
            Some(Response::OffsetFetch(r)) => r.topics[0]
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.error_code, p.committed_offset))
                .collect(),
            other => panic!("fetch answered {other:?}"),
        }
    }

    fn stable_pair(&mut self) -> (String, String) {
        let (a, ta) = self.join_new();
        let (b, tb) = self.join_new();
        self.at(self.now + 3_000);
        self.at(self.now + 3_000);
        let ra = self.join_resp(ta).expect("a joined");
        let rb = self.join_resp(tb).expect("b joined");
        assert_eq!(ra.generation_id, 1);
        assert_eq!(ra.leader, rb.leader);
        let (leader, follower) = if ra.leader.as_str() == a {
            (a, b)
        } else {
            (b, a)
        };
        let tf = self.sync(&follower, 1, &[]);
        let tl = self.sync(
            &leader,
            1,
            &[(leader.as_str(), b"L"), (follower.as_str(), b"F")],
        );
        assert_eq!(
            self.sync_resp(tl),
            Some((code::NONE, Bytes::from_static(b"L")))
        );
        assert_eq!(
            self.sync_resp(tf),
            Some((code::NONE, Bytes::from_static(b"F")))
        );
        assert_eq!(self.state(), Some(ClassicState::Stable));
        (leader, follower)
    }
}

#[test]
fn kip394_member_id_required_then_join() {
    let mut h = H::new();
    let (id, t) = h.join_new();
    assert_eq!(h.state(), Some(ClassicState::PreparingRebalance));
    assert!(h.join_resp(t).is_none(), "waits for the initial delay");
    h.at(2_999);
    assert!(h.join_resp(t).is_none());
    h.at(3_000);
    let r = h.join_resp(t).expect("joined after the delay");
    assert_eq!(r.error_code, code::NONE);
    assert_eq!(r.generation_id, 1);
    assert_eq!(r.member_id.as_str(), id);
    assert_eq!(r.leader.as_str(), id);
    assert_eq!(r.protocol_name.as_ref().map(|p| p.as_str()), Some("range"));
    assert_eq!(r.members.len(), 1);
    assert_eq!(h.state(), Some(ClassicState::CompletingRebalance));
}

#[test]
fn pending_member_expires_and_unknown_id_is_refused() {
    let mut h = H::new();
    let t = h.join(5, "", None);
    let id = h.join_resp(t).unwrap().member_id.as_str().to_owned();
    h.at(i64::from(SESSION) + 1);
    let t = h.join(5, &id, None);
    assert_eq!(h.join_resp(t).unwrap().error_code, code::UNKNOWN_MEMBER_ID);
    let t = h.join(5, "made-up", None);
    assert_eq!(h.join_resp(t).unwrap().error_code, code::UNKNOWN_MEMBER_ID);
}

#[test]
fn three_members_with_delayed_initial_rebalance() {
    let mut h = H::new();
    // v3: no KIP-394 round trip, members are added directly.
    let t1 = h.join(3, "", None);
    h.now = 1_000;
    let t2 = h.join(3, "", None);
    h.now = 2_000;
    let t3 = h.join(3, "", None);
    // First delay ends at 3000 but members arrived: extended by another delay.
    h.at(3_000);
    assert!(h.replies.is_empty());
    assert!(h.ticks.contains(&6_000));
    h.at(6_000);
    let r1 = h.join_resp(t1).unwrap();
    let r2 = h.join_resp(t2).unwrap();
    let r3 = h.join_resp(t3).unwrap();
    for r in [&r1, &r2, &r3] {
        assert_eq!(r.error_code, code::NONE);
        assert_eq!(r.generation_id, 1);
        assert_eq!(r.leader, r1.leader);
    }
    let leader_resp = [&r1, &r2, &r3]
        .into_iter()
        .find(|r| r.member_id == r.leader)
        .unwrap();
    assert_eq!(
        leader_resp.members.len(),
        3,
        "leader gets every member's metadata"
    );
    assert_eq!(leader_resp.members[0].metadata, subscription(&["t1"], &[]));
    let followers = [&r1, &r2, &r3]
        .into_iter()
        .filter(|r| r.member_id != r.leader)
        .count();
    assert_eq!(followers, 2);
    assert!([&r1, &r2, &r3]
        .iter()
        .filter(|r| r.member_id != r.leader)
        .all(|r| r.members.is_empty()));
}

#[test]
fn followers_wait_for_leader_sync_and_group_record_is_persisted() {
    let mut h = H::new();
    let (a, ta) = h.join_new();
    let (b, tb) = h.join_new();
    h.at(3_000);
    h.at(6_000);
    let leader = h.join_resp(ta).unwrap().leader.as_str().to_owned();
    h.join_resp(tb).unwrap();
    let follower = if leader == a { b.clone() } else { a.clone() };
    let tf = h.sync(&follower, 1, &[]);
    assert!(h.sync_resp(tf).is_none(), "follower waits for the leader");
    assert_eq!(
        h.heartbeat(&follower, 1),
        code::NONE,
        "heartbeat during CompletingRebalance"
    );
    let before = h.log.len();
    let tl = h.sync(
        &leader,
        1,
        &[
            (follower.as_str(), b"F"),
            (leader.as_str(), b"L"),
            ("stranger", b"X"),
        ],
    );
    assert_eq!(
        h.sync_resp(tf),
        Some((code::NONE, Bytes::from_static(b"F")))
    );
    assert_eq!(
        h.sync_resp(tl),
        Some((code::NONE, Bytes::from_static(b"L")))
    );
    assert_eq!(h.log.len(), before + 1);
    let (k, v) = h.log.last().unwrap().clone();
    assert_eq!(
        decode_key(&k).unwrap(),
        RecordKey::GroupMetadata { group: G.into() }
    );
    let gm = decode_group_metadata_value(&v.unwrap()).unwrap();
    assert_eq!(gm.generation, 1);
    assert_eq!(gm.protocol_type, "consumer");
    assert_eq!(gm.leader.as_deref(), Some(leader.as_str()));
    assert_eq!(gm.members.len(), 2);
    assert_eq!(h.state(), Some(ClassicState::Stable));
}

#[test]
fn join_during_stable_rebalances_and_heartbeat_says_so() {
    let mut h = H::new();
    let (l, f) = h.stable_pair();
    let (c, tc) = h.join_new();
    assert_eq!(h.state(), Some(ClassicState::PreparingRebalance));
    assert_eq!(h.heartbeat(&l, 1), code::REBALANCE_IN_PROGRESS);
    assert_eq!(h.heartbeat(&f, 1), code::REBALANCE_IN_PROGRESS);
    let tl = h.join(5, &l, None);
    assert!(h.join_resp(tl).is_none());
    let tf = h.join(5, &f, None);
    // Everyone rejoined: completes without waiting for the timeout.
    let rl = h.join_resp(tl).unwrap();
    assert_eq!(rl.generation_id, 2);
    assert_eq!(rl.members.len(), 3);
    assert_eq!(h.join_resp(tf).unwrap().generation_id, 2);
    assert_eq!(h.join_resp(tc).unwrap().member_id.as_str(), c);
    assert_eq!(h.heartbeat(&f, 1), code::ILLEGAL_GENERATION);
}

#[test]
fn dead_member_is_dropped_after_session_timeout() {
    let mut h = H::new();
    let (l, f) = h.stable_pair();
    let start = h.now;
    // The leader keeps heartbeating, the follower is silent.
    let mut t = start;
    while t < start + i64::from(SESSION) + 1_000 {
        t += 3_000;
        h.at(t);
        if h.state() == Some(ClassicState::Stable) {
            assert_eq!(h.heartbeat(&l, 1), code::NONE);
        }
    }
    assert_eq!(h.state(), Some(ClassicState::PreparingRebalance));
    assert_eq!(h.heartbeat(&f, 1), code::UNKNOWN_MEMBER_ID);
    let tl = h.join(5, &l, None);
    let r = h
        .join_resp(tl)
        .expect("only live member rejoined: completes");
    assert_eq!(r.generation_id, 2);
    assert_eq!(r.members.len(), 1);
    assert_eq!(h.c.members(G), vec![l]);
}

#[test]
fn member_that_does_not_rejoin_is_dropped_at_rebalance_timeout() {
    let mut h = H::new();
    let (l, f) = h.stable_pair();
    let tl = h.join(5, &l, None); // leader forces a rebalance
    assert_eq!(h.state(), Some(ClassicState::PreparingRebalance));
    // The follower heartbeats but never rejoins.
    let start = h.now;
    h.now = start + 5_000;
    assert_eq!(h.heartbeat(&f, 1), code::REBALANCE_IN_PROGRESS);
    h.at(start + i64::from(REBALANCE));
    let r = h.join_resp(tl).unwrap();
    assert_eq!((r.generation_id, r.members.len()), (2, 1));
    assert_eq!(h.heartbeat(&f, 1), code::UNKNOWN_MEMBER_ID);
}

#[test]
fn leader_that_never_syncs_is_dropped_after_rebalance_timeout() {
    let mut h = H::new();
    let (a, ta) = h.join_new();
    let (b, tb) = h.join_new();
    h.at(3_000);
    h.at(6_000);
    let leader = h.join_resp(ta).unwrap().leader.as_str().to_owned();
    h.join_resp(tb).unwrap();
    let follower = if leader == a { b } else { a };
    let tf = h.sync(&follower, 1, &[]);
    // Both stay alive (the leader heartbeats but never sends its SyncGroup).
    for k in 1..=7 {
        h.at(6_000 + 3_000 * k);
        h.heartbeat(&follower, 1);
        h.heartbeat(&leader, 1);
    }
    assert_eq!(
        h.sync_resp(tf).map(|r| r.0),
        Some(code::REBALANCE_IN_PROGRESS)
    );
    assert_eq!(h.c.members(G), vec![follower]);
}

#[test]
fn cooperative_two_phase_rebalance_keeps_state() {
    let mut h = H::new();
    let coop = |owned: &[(&str, &[i32])]| {
        vec![
            ("cooperative-sticky", subscription(&["t1"], owned)),
            ("range", subscription(&["t1"], &[])),
        ]
    };
    // Phase 0: two members, gen 1.
    let ta = h.join_full(3, "", None, "consumer", &coop(&[]));
    let tb = h.join_full(3, "", None, "consumer", &coop(&[]));
    h.at(3_000);
    h.at(6_000);
    let ra = h.join_resp(ta).unwrap();
    let rb = h.join_resp(tb).unwrap();
    assert_eq!(
        ra.protocol_name.as_ref().unwrap().as_str(),
        "cooperative-sticky"
    );
    let (a, b) = (
        ra.member_id.as_str().to_owned(),
        rb.member_id.as_str().to_owned(),
    );
    let leader = ra.leader.as_str().to_owned();
    h.sync(&a, 1, &[]);
    h.sync(&b, 1, &[]);
    let t = h.sync(
        &leader,
        1,
        &[(a.as_str(), b"a:0,1,2"), (b.as_str(), b"b:3,4,5")],
    );
    h.take(t);
    h.replies.clear();
    assert_eq!(h.state(), Some(ClassicState::Stable));
    // A third member joins: first rebalance (members keep owned partitions).
    let tc = h.join_full(3, "", None, "consumer", &coop(&[]));
    let ta = h.join_full(3, &a, None, "consumer", &coop(&[("t1", &[0, 1, 2])]));
    let tb = h.join_full(3, &b, None, "consumer", &coop(&[("t1", &[3, 4, 5])]));
    let rc = h.join_resp(tc).unwrap();
    assert_eq!(rc.generation_id, 2);
    let c = rc.member_id.as_str().to_owned();
    assert!(h.join_resp(ta).is_some() && h.join_resp(tb).is_some());
    // Phase 1 assignment revokes 2 from a and 5 from b; nothing is given to c yet.
    for m in [&a, &b, &c] {
        if *m != leader {
            h.sync(m, 2, &[]);
        }
    }
    let t = h.sync(
        &leader,
        2,
        &[
            (a.as_str(), b"a:0,1"),
            (b.as_str(), b"b:3,4"),
            (c.as_str(), b""),
        ],
    );
    h.take(t);
    h.replies.clear();
    assert_eq!(h.state(), Some(ClassicState::Stable));
    // Commits at gen 2 work, also while the second rebalance is being prepared.
    assert_eq!(h.commit(G, &a, 2, &[("t1", 2, 42)]), vec![code::NONE]);
    // Phase 2: a member that revoked partitions rejoins at once with its smaller ownership.
    let ta = h.join_full(3, &a, None, "consumer", &coop(&[("t1", &[0, 1])]));
    assert_eq!(h.state(), Some(ClassicState::PreparingRebalance));
    assert_eq!(h.commit(G, &b, 2, &[("t1", 5, 77)]), vec![code::NONE]);
    assert_eq!(h.heartbeat(&c, 2), code::REBALANCE_IN_PROGRESS);
    let tb = h.join_full(3, &b, None, "consumer", &coop(&[("t1", &[3, 4])]));
    let tc = h.join_full(3, &c, None, "consumer", &coop(&[]));
    for t in [ta, tb, tc] {
        let r = h.join_resp(t).unwrap();
        assert_eq!((r.error_code, r.generation_id), (code::NONE, 3));
    }
    assert_eq!(h.c.members(G).len(), 3);
    assert_eq!(h.c.committed(G, "t1", 2).unwrap().offset, 42);
    assert_eq!(h.c.committed(G, "t1", 5).unwrap().offset, 77);
}

#[test]
fn static_member_restart_within_session_does_not_rebalance() {
    let mut h = H::new();
    let ta = h.join(5, "", Some("inst-a"));
    let tb = h.join(5, "", Some("inst-b"));
    h.at(3_000);
    h.at(6_000);
    let ra = h.join_resp(ta).unwrap();
    let rb = h.join_resp(tb).unwrap();
    assert!(
        ra.member_id.as_str().starts_with("inst-a-"),
        "static members skip KIP-394"
    );
    let (a, b) = (
        ra.member_id.as_str().to_owned(),
        rb.member_id.as_str().to_owned(),
    );
    let leader = ra.leader.as_str().to_owned();
    let follower = if leader == a { b.clone() } else { a.clone() };
    h.sync(&follower, 1, &[]);
    h.sync(&leader, 1, &[(a.as_str(), b"A"), (b.as_str(), b"B")]);
    h.replies.clear();
    // Restart of inst-a: new process, no member id.
    h.now += 2_000;
    let before = h.log.len();
    let t = h.join(5, "", Some("inst-a"));
    let r = h.join_resp(t).expect("answered after the group record");
    assert_eq!(h.log.len(), before + 1, "new member id persisted");
    assert_eq!(r.error_code, code::NONE);
    assert_eq!(r.generation_id, 1, "no rebalance");
    let a2 = r.member_id.as_str().to_owned();
    assert_ne!(a2, a);
    assert_eq!(h.state(), Some(ClassicState::Stable));
    // The old incarnation is fenced everywhere.
    assert_eq!(
        h.heartbeat_full(&a, 1, Some("inst-a")),
        code::FENCED_INSTANCE_ID
    );
    let t = h.join(5, &a, Some("inst-a"));
    assert_eq!(h.join_resp(t).unwrap().error_code, code::FENCED_INSTANCE_ID);
    // The new one gets the old assignment.
    let t = h.sync(&a2, 1, &[]);
    assert_eq!(h.sync_resp(t), Some((code::NONE, Bytes::from_static(b"A"))));
    assert_eq!(h.heartbeat_full(&a2, 1, Some("inst-a")), code::NONE);
    // Admin removal by instance id (LeaveGroup v3+, empty member id).
    let (top, per) = h.leave(4, &[("", Some("inst-b")), ("", Some("nobody"))]);
    assert_eq!(
        (top, per),
        (code::NONE, vec![code::NONE, code::UNKNOWN_MEMBER_ID])
    );
    assert_eq!(h.state(), Some(ClassicState::PreparingRebalance));
}

#[test]
fn static_leader_rejoin_gets_skip_assignment() {
    let mut h = H::new();
    let ta = h.join(9, "", Some("inst-a"));
    h.at(3_000);
    let ra = h.join_resp(ta).unwrap();
    let a = ra.member_id.as_str().to_owned();
    h.sync(&a, 1, &[(a.as_str(), b"A")]);
    h.replies.clear();
    let t = h.join(9, "", Some("inst-a"));
    let r = h.join_resp(t).unwrap();
    assert!(r.skip_assignment);
    assert_eq!(r.leader, r.member_id);
    assert_eq!(r.members.len(), 1);
}

#[test]
fn leave_group_batched_and_single() {
    let mut h = H::new();
    let (l, f) = h.stable_pair();
    let (c, tc) = h.join_new();
    let _ = (h.join(5, &l, None), h.join(5, &f, None));
    assert!(h.join_resp(tc).is_some());
    h.replies.clear();
    let (top, per) = h.leave(3, &[(&l, None), (&c, None), ("ghost", None)]);
    assert_eq!(top, code::NONE);
    assert_eq!(per, vec![code::NONE, code::NONE, code::UNKNOWN_MEMBER_ID]);
    assert_eq!(h.c.members(G), vec![f.clone()]);
    assert_eq!(h.state(), Some(ClassicState::PreparingRebalance));
    // v0-2: single member, error at the top.
    let (top, _) = h.leave(1, &[("ghost", None)]);
    assert_eq!(top, code::UNKNOWN_MEMBER_ID);
    let before = h.log.len();
    let (top, _) = h.leave(1, &[(&f, None)]);
    assert_eq!(top, code::NONE);
    assert_eq!(h.state(), Some(ClassicState::Empty));
    // The group turned Empty: that is recorded so a restart does not bring members back.
    let gm = decode_group_metadata_value(h.log[before].1.as_ref().unwrap()).unwrap();
    assert!(gm.members.is_empty());
}

#[test]
fn stale_generation_and_unknown_member() {
    let mut h = H::new();
    let (l, f) = h.stable_pair();
    assert_eq!(h.heartbeat(&l, 0), code::ILLEGAL_GENERATION);
    assert_eq!(h.heartbeat(&l, i32::MAX), code::ILLEGAL_GENERATION);
    assert_eq!(h.heartbeat("nobody", 1), code::UNKNOWN_MEMBER_ID);
    let t = h.sync(&f, 7, &[]);
    assert_eq!(h.sync_resp(t).unwrap().0, code::ILLEGAL_GENERATION);
    let t = h.sync("nobody", 1, &[]);
    assert_eq!(h.sync_resp(t).unwrap().0, code::UNKNOWN_MEMBER_ID);
    assert_eq!(
        h.commit(G, &f, 0, &[("t1", 0, 1)]),
        vec![code::ILLEGAL_GENERATION]
    );
    assert_eq!(
        h.commit(G, "nobody", 1, &[("t1", 0, 1)]),
        vec![code::UNKNOWN_MEMBER_ID]
    );
    assert_eq!(
        h.commit(G, "", -1, &[("t1", 0, 1)]),
        vec![code::UNKNOWN_MEMBER_ID],
        "generation -1 on a live group"
    );
    // Requests for groups that do not exist.
    let ctx = h.ctx(4);
    let mut req = HeartbeatRequest::default();
    req.group_id = GroupId(s("none"));
    req.member_id = s(&l);
    let e = h.c.heartbeat(ctx, req);
    h.absorb(e);
    assert!(
        matches!(h.take(ctx.token), Some(Response::Heartbeat(r)) if r.error_code == code::UNKNOWN_MEMBER_ID)
    );
}

#[test]
fn protocol_mismatch_is_inconsistent() {
    let mut h = H::new();
    let _ = h.stable_pair();
    let t = h.join_full(5, "", None, "connect", &[("range", Bytes::new())]);
    assert_eq!(
        h.join_resp(t).unwrap().error_code,
        code::INCONSISTENT_GROUP_PROTOCOL
    );
    let t = h.join_full(5, "", None, "consumer", &[("roundrobin", Bytes::new())]);
    assert_eq!(
        h.join_resp(t).unwrap().error_code,
        code::INCONSISTENT_GROUP_PROTOCOL
    );
    let t = h.join_full(5, "", None, "consumer", &[]);
    assert_eq!(
        h.join_resp(t).unwrap().error_code,
        code::INCONSISTENT_GROUP_PROTOCOL
    );
    // SyncGroup v5+ names the protocol; a wrong one is refused.
    let members = h.c.members(G);
    let ctx = h.ctx(5);
    let mut req = SyncGroupRequest::default();
    req.group_id = GroupId(s(G));
    req.generation_id = 1;
    req.member_id = s(&members[0]);
    req.protocol_type = Some(s("consumer"));
    req.protocol_name = Some(s("roundrobin"));
    let e = h.c.sync_group(ctx, req, &NoTopics);
    h.absorb(e);
    assert_eq!(
        h.sync_resp(ctx.token).unwrap().0,
        code::INCONSISTENT_GROUP_PROTOCOL
    );
}

#[test]
fn bad_join_inputs() {
    let mut h = H::new();
    let ctx = h.ctx(5);
    let mut req = JoinGroupRequest::default();
    req.group_id = GroupId(s(G));
    req.session_timeout_ms = 1;
    req.protocol_type = s("consumer");
    let e = h.c.join_group(ctx, req.clone(), &NoTopics);
    h.absorb(e);
    assert_eq!(
        h.join_resp(ctx.token).unwrap().error_code,
        code::INVALID_SESSION_TIMEOUT
    );
    req.group_id = GroupId(s(""));
    let ctx = h.ctx(5);
    let e = h.c.join_group(ctx, req, &NoTopics);
    h.absorb(e);
    assert_eq!(
        h.join_resp(ctx.token).unwrap().error_code,
        code::INVALID_GROUP_ID
    );
    let big = Bytes::from(vec![0u8; crate::MEMBER_METADATA_BYTES_MAX + 1]);
    let t = h.join_full(5, "", None, "consumer", &[("range", big)]);
    assert_eq!(
        h.join_resp(t).unwrap().error_code,
        code::UNKNOWN_SERVER_ERROR
    );
    // Group size limit.
    let mut h = H::with(GroupConfig {
        group_max_size: 1,
        ..GroupConfig::default()
    });
    let _ = h.join_new();
    let t = h.join(5, "", None);
    assert_eq!(
        h.join_resp(t).unwrap().error_code,
        code::GROUP_MAX_SIZE_REACHED
    );
    // Absurd rebalance timeouts and clocks do not panic.
    let mut h = H::new();
    let ctx = h.ctx(5);
    let mut req = JoinGroupRequest::default();
    req.group_id = GroupId(s(G));
    req.session_timeout_ms = SESSION;
    req.rebalance_timeout_ms = i32::MIN;
    req.member_id = s("");
    req.protocol_type = s("consumer");
    let mut p = JoinGroupRequestProtocol::default();
    p.name = s("range");
    req.protocols.push(p);
    let e = h.c.join_group(ctx, req, &NoTopics);
    h.absorb(e);
    h.at(i64::MAX - 1);
    h.at(i64::MAX);
}

#[test]
fn simple_group_commits_with_generation_minus_one() {
    let mut h = H::new();
    assert_eq!(
        h.commit("simple", "", -1, &[("t1", 0, 10), ("t1", 1, 11)]),
        vec![code::NONE, code::NONE]
    );
    assert_eq!(h.c.group_state("simple"), Some(ClassicState::Empty));
    assert_eq!(h.c.committed("simple", "t1", 1).unwrap().offset, 11);
    assert_eq!(
        h.commit("simple", "x", 5, &[("t1", 0, 12)]),
        vec![code::UNKNOWN_MEMBER_ID]
    );
    assert_eq!(
        h.commit("other", "x", 5, &[("t1", 0, 12)]),
        vec![code::ILLEGAL_GENERATION]
    );
    assert_eq!(
        h.commit_v(9, "other2", "x", 5, &[("t1", 0, 1, None)]).1,
        vec![code::GROUP_ID_NOT_FOUND]
    );
    assert_eq!(h.c.committed("simple", "t1", 0).unwrap().offset, 10);
    // Oversized metadata: refused per partition, nothing written.
    let big = "x".repeat(crate::OFFSET_METADATA_BYTES_MAX + 1);
    let (_, codes, written) = h.commit_v(
        8,
        "simple",
        "",
        -1,
        &[("t1", 0, 99, Some(big.as_str())), ("t1", 2, 5, None)],
    );
    assert_eq!(codes, vec![code::OFFSET_METADATA_TOO_LARGE, code::NONE]);
    assert_eq!(written, 1);
    // persist_failed turns successes into a retriable error.
    let ctx = h.ctx(8);
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(s("simple"));
    req.generation_id_or_member_epoch = -1;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s("t1"));
    t.partitions.push(OffsetCommitRequestPartition::default());
    req.topics.push(t);
    let e = h.c.offset_commit(ctx, req);
    let Some(Effect::PersistThenReply { replies, .. }) = e.into_iter().next() else {
        panic!("commit must persist")
    };
    let Response::OffsetCommit(r) = persist_failed(replies[0].1.clone()) else {
        panic!()
    };
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        code::COORDINATOR_NOT_AVAILABLE
    );
    // Or the error the driver chose (a write lost with the leadership: NOT_COORDINATOR).
    let Response::OffsetCommit(r) =
        persist_failed_with(replies[0].1.clone(), code::NOT_COORDINATOR)
    else {
        panic!()
    };
    assert_eq!(r.topics[0].partitions[0].error_code, code::NOT_COORDINATOR);
}

#[test]
fn offset_fetch_single_and_multi_group() {
    let mut h = H::new();
    h.commit("a", "", -1, &[("t1", 0, 5), ("t2", 3, 7)]);
    h.commit("b", "", -1, &[("t1", 0, 9)]);
    let got = h.fetch_v7("a", Some(&[("t1", &[0, 1])]));
    assert_eq!(got, vec![("t1".into(), 0, 5), ("t1".into(), 1, -1)]);
    let mut all = h.fetch_v7("a", None);
    all.sort();
    assert_eq!(all, vec![("t1".into(), 0, 5), ("t2".into(), 3, 7)]);
    assert_eq!(
        h.fetch_v7("missing", Some(&[("t1", &[0])])),
        vec![("t1".into(), 0, -1)]
    );
    // v8: several groups at once, one of them unknown, one asking for everything.
    let ctx = h.ctx(8);
    let mut req = OffsetFetchRequest::default();
    for (g, topics) in [
        ("a", Some(("t2", vec![3]))),
        ("b", None),
        ("zzz", Some(("t1", vec![0]))),
    ] {
        let mut rg = OffsetFetchRequestGroup::default();
        rg.group_id = GroupId(s(g));
        rg.topics = topics.map(|(t, ps)| {
            let mut x = OffsetFetchRequestTopics::default();
            x.name = TopicName(s(t));
            x.partition_indexes = ps;
            vec![x]
        });
        req.groups.push(rg);
    }
    let e = h.c.offset_fetch(ctx, req);
    h.absorb(e);
    let Some(Response::OffsetFetch(r)) = h.take(ctx.token) else {
        panic!()
    };
    let flat: Vec<(String, String, i32, i64, i32)> = r
        .groups
        .iter()
        .flat_map(|g| {
            g.topics.iter().flat_map(move |t| {
                t.partitions.iter().map(move |p| {
                    (
                        g.group_id.0.as_str().to_owned(),
                        t.name.0.as_str().to_owned(),
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                    )
                })
            })
        })
        .collect();
    assert_eq!(
        flat,
        vec![
            ("a".into(), "t2".into(), 3, 7, 3),
            ("b".into(), "t1".into(), 0, 9, 3),
            ("zzz".into(), "t1".into(), 0, -1, -1),
        ]
    );
    // Commits before v6 carry no leader epoch.
    h.commit_v(5, "c", "", -1, &[("t1", 0, 1, None)]);
    assert_eq!(h.c.committed("c", "t1", 0).unwrap().leader_epoch, -1);
}

#[test]
fn offset_delete_refuses_subscribed_topics() {
    let mut h = H::new();
    let (l, _f) = h.stable_pair();
    assert_eq!(
        h.commit(G, &l, 1, &[("t1", 0, 1), ("old", 0, 2)]),
        vec![code::NONE, code::NONE]
    );
    let del = |h: &mut H, group: &str, topics: &[(&str, i32)]| {
        let ctx = h.ctx(0);
        let mut req = OffsetDeleteRequest::default();
        req.group_id = GroupId(s(group));
        for (t, p) in topics {
            let mut x = OffsetDeleteRequestTopic::default();
            x.name = TopicName(s(t));
            let mut pp = OffsetDeleteRequestPartition::default();
            pp.partition_index = *p;
            x.partitions.push(pp);
            req.topics.push(x);
        }
        let e = h.c.offset_delete(ctx, req);
        h.absorb(e);
        match h.take(ctx.token) {
            Some(Response::OffsetDelete(r)) => (
                r.error_code,
                r.topics
                    .iter()
                    .map(|t| t.partitions[0].error_code)
                    .collect::<Vec<_>>(),
            ),
            other => panic!("{other:?}"),
        }
    };
    let before = h.log.len();
    assert_eq!(
        del(&mut h, G, &[("t1", 0), ("old", 0)]),
        (
            code::NONE,
            vec![code::GROUP_SUBSCRIBED_TO_TOPIC, code::NONE]
        )
    );
    assert_eq!(h.log.len(), before + 1);
    assert!(h.log.last().unwrap().1.is_none(), "tombstone");
    assert!(h.c.committed(G, "old", 0).is_none());
    assert!(h.c.committed(G, "t1", 0).is_some());
    assert_eq!(
        del(&mut h, "nope", &[("t1", 0)]).0,
        code::GROUP_ID_NOT_FOUND
    );
    // Empty group: anything goes.
    h.commit("simple", "", -1, &[("t1", 0, 1)]);
    assert_eq!(
        del(&mut h, "simple", &[("t1", 0)]),
        (code::NONE, vec![code::NONE])
    );
}

#[test]
fn replay_round_trip() {
    let mut h = H::new();
    let (l, f) = h.stable_pair();
    h.commit(G, &l, 1, &[("t1", 0, 100), ("t1", 1, 200)]);
    h.commit(G, &f, 1, &[("t1", 1, 250)]);
    h.commit("simple", "", -1, &[("t9", 4, 44)]);
    h.commit("gone", "", -1, &[("t9", 0, 1)]);
    let ctx = h.ctx(2);
    let mut req = DeleteGroupsRequest::default();
    req.groups_names.push(GroupId(s("gone")));
    let e = h.c.delete_groups(ctx, req);
    h.absorb(e);
    let log = h.log.clone();

    let mut r = GroupCoordinator::new(GroupConfig::default());
    for (k, v) in &log {
        r.replay(k, v.as_deref()).unwrap();
    }
    let now = h.now + 1_000;
    let e = r.finish_replay(now);
    assert!(e.iter().any(|e| matches!(e, Effect::ScheduleTick { .. })));
    assert_eq!(r.group_state(G), Some(ClassicState::Stable));
    assert_eq!(r.generation(G), Some(1));
    let mut members = r.members(G);
    members.sort();
    let mut want = vec![l.clone(), f.clone()];
    want.sort();
    assert_eq!(members, want);
    assert_eq!(r.committed(G, "t1", 0).unwrap().offset, 100);
    assert_eq!(r.committed(G, "t1", 1).unwrap().offset, 250);
    assert_eq!(r.committed(G, "t1", 1).unwrap().metadata, "m");
    assert_eq!(r.committed("simple", "t9", 4).unwrap().offset, 44);
    assert_eq!(r.group_state("gone"), None);

    // Loaded members carry on (heartbeat at the same generation, sync gets the assignment)…
    let mut h2 = H {
        c: r,
        now,
        next: 1_000,
        replies: HashMap::new(),
        log: Vec::new(),
        txn_log: Vec::new(),
        ticks: Vec::new(),
    };
    assert_eq!(h2.heartbeat(&l, 1), code::NONE);
    let t = h2.sync(&f, 1, &[]);
    assert_eq!(
        h2.sync_resp(t),
        Some((code::NONE, Bytes::from_static(b"F")))
    );
    // …and silent ones expire: only the leader heartbeats from here on.
    for k in 1..=5 {
        h2.at(now + 3_000 * k);
        if h2.state() == Some(ClassicState::Stable) {
            h2.heartbeat(&l, 1);
        }
    }
    assert_eq!(h2.state(), Some(ClassicState::PreparingRebalance));
    assert_eq!(h2.c.members(G), vec![l]);
}

#[test]
fn replay_skips_garbage_and_foreign_records() {
    let mut c = GroupCoordinator::new(GroupConfig::default());
    assert!(c.replay(&[], Some(&[1, 2, 3])).is_err());
    assert!(c.replay(&[0, 1, 0xff], None).is_err());
    let key = records::offset_commit_key("g", "t", 0);
    assert!(c.replay(&key, Some(&[0, 3, 1])).is_err());
    assert!(c.replay(&key, Some(&[0, 9, 0, 0])).is_err());
    let gkey = records::group_metadata_key("g");
    let mut evil = vec![
        0u8, 3, 0, 1, b'x', 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    evil.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff]); // member count 2^31-1
    assert!(c.replay(&gkey, Some(&evil)).is_err());
    // Kinds not served (key 4, the deprecated consumer-group partition metadata; share
    // groups) are skipped; a served kind with a bad value is an error.
    assert!(c.replay(&[0, 4, 0, 1, b'g'], Some(&[0, 0])).is_ok());
    assert!(c.replay(&[0, 3, 0, 1, b'g'], Some(&[0, 0])).is_err());
    assert_eq!(c.group_count(), 0);
}

#[test]
fn offsets_expire_and_empty_groups_are_deleted() {
    let day = 24 * 60 * 60 * 1000;
    let mut h = H::new();
    h.commit("simple", "", -1, &[("t1", 0, 1)]);
    h.now = 3 * day;
    h.commit("simple", "", -1, &[("t1", 1, 2)]);
    h.at(7 * day + 1);
    assert!(
        h.c.committed("simple", "t1", 0).is_none(),
        "7 days after its commit"
    );
    assert!(h.c.committed("simple", "t1", 1).is_some());
    let tomb = h.log.iter().filter(|(_, v)| v.is_none()).count();
    assert_eq!(tomb, 1);
    h.at(10 * day + 1);
    assert_eq!(
        h.c.group_state("simple"),
        None,
        "empty group without offsets is removed"
    );
    assert!(h.log.iter().any(|(k, v)| v.is_none()
        && decode_key(k).unwrap()
            == RecordKey::GroupMetadata {
                group: "simple".into()
            }));

    // Explicit retention (OffsetCommit v2-v4) wins over the default.
    let mut h = H::new();
    let ctx = h.ctx(2);
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(s("r"));
    req.generation_id_or_member_epoch = -1;
    req.retention_time_ms = 60_000;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s("t1"));
    t.partitions.push(OffsetCommitRequestPartition::default());
    req.topics.push(t);
    let e = h.c.offset_commit(ctx, req);
    h.absorb(e);
    assert_eq!(
        h.c.committed("r", "t1", 0).unwrap().expire_timestamp,
        Some(60_000)
    );
    h.at(600_000);
    assert!(h.c.committed("r", "t1", 0).is_none());

    // A consumer group: offsets of subscribed topics never expire while Stable; once Empty,
    // retention counts from when it became empty.
    let mut h = H::new();
    let (l, f) = h.stable_pair();
    h.commit(G, &l, 1, &[("t1", 0, 1), ("other", 0, 1)]);
    let mut t = h.now;
    while t < 8 * day {
        t += 5_000;
        h.now = t;
        h.heartbeat(&l, 1);
        h.heartbeat(&f, 1);
        if t % 600_000 < 5_000 {
            h.at(t);
        }
    }
    h.at(t);
    assert!(h.c.committed(G, "t1", 0).is_some(), "subscribed topic kept");
    assert!(
        h.c.committed(G, "other", 0).is_none(),
        "unsubscribed topic expired"
    );
    h.leave(3, &[(&l, None), (&f, None)]);
    assert_eq!(h.state(), Some(ClassicState::Empty));
    h.at(t + 6 * day);
    assert!(h.c.committed(G, "t1", 0).is_some(), "6 days since empty");
    h.at(t + 7 * day + 600_000);
    assert!(h.c.committed(G, "t1", 0).is_none());
    assert_eq!(h.state(), None);
}

#[test]
fn describe_list_delete() {
    let mut h = H::new();
    let (l, _f) = h.stable_pair();
    h.commit("simple", "", -1, &[("t1", 0, 1)]);
    let describe = |h: &mut H, v: i16, groups: &[&str]| {
        let ctx = h.ctx(v);
        let mut req = DescribeGroupsRequest::default();
        req.groups = groups.iter().map(|g| GroupId(s(g))).collect();
        let e = h.c.describe_groups(ctx, req);
        h.absorb(e);
        match h.take(ctx.token) {
            Some(Response::DescribeGroups(r)) => r,
            other => panic!("{other:?}"),
        }
    };
    let r = describe(&mut h, 5, &[G, "nope"]);
    assert_eq!(r.groups[0].group_state.as_str(), "Stable");
    assert_eq!(r.groups[0].protocol_type.as_str(), "consumer");
    assert_eq!(r.groups[0].protocol_data.as_str(), "range");
    assert_eq!(r.groups[0].members.len(), 2);
    let lm = r.groups[0]
        .members
        .iter()
        .find(|m| m.member_id.as_str() == l)
        .unwrap();
    assert_eq!(lm.member_assignment, Bytes::from_static(b"L"));
    assert_eq!(lm.client_id.as_str(), "cli");
    assert_eq!(
        (r.groups[1].error_code, r.groups[1].group_state.as_str()),
        (code::NONE, "Dead")
    );
    let r = describe(&mut h, 6, &["nope"]);
    assert_eq!(r.groups[0].error_code, code::GROUP_ID_NOT_FOUND);

    let list = |h: &mut H, states: &[&str]| {
        let ctx = h.ctx(5);
        let mut req = ListGroupsRequest::default();
        req.states_filter = states.iter().map(|x| s(x)).collect();
        let e = h.c.list_groups(ctx, req);
        h.absorb(e);
        match h.take(ctx.token) {
            Some(Response::ListGroups(r)) => {
                let mut v: Vec<String> = r
                    .groups
                    .iter()
                    .map(|g| g.group_id.0.as_str().to_owned())
                    .collect();
                v.sort();
                v
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(list(&mut h, &[]), vec![G.to_owned(), "simple".to_owned()]);
    assert_eq!(list(&mut h, &["stable"]), vec![G.to_owned()]);
    assert_eq!(list(&mut h, &["Empty"]), vec!["simple".to_owned()]);
    assert!(list(&mut h, &["Dead"]).is_empty());

    let ctx = h.ctx(2);
    let mut req = DeleteGroupsRequest::default();
    req.groups_names = vec![GroupId(s(G)), GroupId(s("simple")), GroupId(s("nope"))];
    let e = h.c.delete_groups(ctx, req);
    h.absorb(e);
    let Some(Response::DeleteGroups(r)) = h.take(ctx.token) else {
        panic!()
    };
    let codes: Vec<i16> = r.results.iter().map(|x| x.error_code).collect();
    assert_eq!(
        codes,
        vec![code::NON_EMPTY_GROUP, code::NONE, code::GROUP_ID_NOT_FOUND]
    );
    assert_eq!(h.c.group_state("simple"), None);
    let n = h.log.len();
    assert!(
        h.log[n - 2].1.is_none() && h.log[n - 1].1.is_none(),
        "offset and group tombstones"
    );
}

#[test]
fn ticks_are_idempotent_and_scheduled() {
    let mut h = H::new();
    let (_, t) = h.join_new();
    assert!(
        h.ticks.contains(&3_000),
        "initial delay scheduled: {:?}",
        h.ticks
    );
    h.at(100);
    h.at(100);
    assert!(h.join_resp(t).is_none());
    h.at(3_000);
    h.at(3_000);
    assert!(h.join_resp(t).is_some());
    assert!(h.c.next_deadline().is_some());
}

#[test]
fn record_formats_round_trip() {
    let v = records::OffsetCommitValue {
        offset: 5,
        leader_epoch: 2,
        metadata: "meta".into(),
        commit_timestamp: 77,
        expire_timestamp: None,
    };
    assert_eq!(
        records::decode_offset_commit_value(&records::offset_commit_value(&v)).unwrap(),
        v
    );
    let v1 = records::OffsetCommitValue {
        leader_epoch: -1,
        expire_timestamp: Some(99),
        ..v.clone()
    };
    let enc = records::offset_commit_value(&v1);
    assert_eq!(&enc[..2], &[0, 1]);
    assert_eq!(records::decode_offset_commit_value(&enc).unwrap(), v1);
    // Byte layout of OffsetCommitKey v1 (what Kafka tools decode).
    let k = records::offset_commit_key("g", "t", 7);
    assert_eq!(&k[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7]);
    assert_eq!(&records::group_metadata_key("g")[..], &[0, 2, 0, 1, b'g']);
}

#[test]
fn partition_placement_matches_kafka() {
    // "hello".hashCode() == 99162322; "polygenelubricants".hashCode() == Integer.MIN_VALUE.
    assert_eq!(records::java_string_hash("hello"), 99_162_322);
    assert_eq!(partition_for("hello", 50), 22);
    assert_eq!(records::java_string_hash("polygenelubricants"), i32::MIN);
    assert_eq!(partition_for("polygenelubricants", 50), 0);
    assert_eq!(partition_for("", 50), 0);
    assert_eq!(partition_for("x", 0), 0);
    assert!((0..50).contains(&partition_for("some-group-ü", 50)));
}

/// Join metadata and SyncGroup assignments are copied out of the request: a member must not
/// keep a whole (possibly 100 MiB) request buffer alive through a small slice of it.
#[test]
fn members_keep_copies_not_slices_of_the_request() {
    let sub = subscription(&["t1"], &[]);
    let mut request = BytesMut::from(&sub[..]);
    request.put_slice(b"LF");
    request.resize(1 << 20, 0); // the rest of a large request
    let request = request.freeze();
    let inside = |b: &Bytes| {
        let range = request.as_ptr_range();
        !b.is_empty() && range.contains(&b.as_ptr())
    };
    let mut h = H::new();
    let t = h.join_full(
        5,
        "",
        None,
        "consumer",
        &[("range", request.slice(..sub.len()))],
    );
    let id = h.join_resp(t).unwrap().member_id.as_str().to_owned();
    let t = h.join_full(
        5,
        &id,
        None,
        "consumer",
        &[("range", request.slice(..sub.len()))],
    );
    h.at(h.now + 3_000);
    h.at(h.now + 3_000);
    assert_eq!(h.join_resp(t).unwrap().generation_id, 1);
    let ctx = h.ctx(5);
    let mut req = SyncGroupRequest::default();
    req.group_id = GroupId(s(G));
    req.generation_id = 1;
    req.member_id = s(&id);
    req.protocol_type = Some(s("consumer"));
    let mut a = SyncGroupRequestAssignment::default();
    a.member_id = s(&id);
    a.assignment = request.slice(sub.len()..sub.len() + 2);
    req.assignments = vec![a];
    let e = h.c.sync_group(ctx, req, &NoTopics);
    h.absorb(e);
    assert_eq!(
        h.sync_resp(ctx.token),
        Some((code::NONE, Bytes::from_static(b"LF")))
    );
    let ctx = h.ctx(5);
    let mut req = DescribeGroupsRequest::default();
    req.groups = vec![GroupId(s(G))];
    let e = h.c.describe_groups(ctx, req);
    h.absorb(e);
    let Some(Response::DescribeGroups(r)) = h.take(ctx.token) else {
        panic!("no DescribeGroups answer");
    };
    let m = &r.groups[0].members[0];
    assert_eq!(m.member_metadata, sub);
    assert_eq!(m.member_assignment, Bytes::from_static(b"LF"));
    assert!(!inside(&m.member_metadata), "metadata is a copy");
    assert!(!inside(&m.member_assignment), "assignment is a copy");
}

#[test]
fn placement_scan_moves_misplaced_groups_latest_records() {
    // "legacy-group-0".hashCode() is -952805794: Kafka places it at |h| % 50 = 44, the
    // masked placement sluice used before at (h & 0x7fffffff) % 50 = 4.
    assert_eq!(records::java_string_hash("legacy-group-0"), -952_805_794);
    assert_eq!(partition_for("legacy-group-0", 50), 44);
    let home_here = (0..1000)
        .map(|i| format!("g{i}"))
        .find(|g| partition_for(g, 50) == 4)
        .unwrap();
    let k1 = records::offset_commit_key("legacy-group-0", "t", 0);
    let k2 = records::offset_commit_key("legacy-group-0", "t", 1);
    let km = records::group_metadata_key("legacy-group-0");
    let k_home = records::offset_commit_key(&home_here, "t", 0);
    let v = |s: &'static str| Bytes::from_static(s.as_bytes());
    let mut scan = records::PlacementScan::new(4, 50);
    scan.record(&k1, Some(&v("old")));
    scan.record(&km, Some(&v("meta")));
    scan.record(&k2, Some(&v("gone")));
    scan.record(&k_home, Some(&v("stays")));
    scan.record(&k1, Some(&v("new")));
    scan.record(&k2, None);
    scan.record(&Bytes::from_static(&[0, 9, 1]), Some(&v("other type")));
    let moves = scan.finish();
    assert_eq!(
        moves.copies.get(&44).unwrap(),
        &vec![(k1.clone(), v("new")), (km.clone(), v("meta"))]
    );
    assert_eq!(moves.copies.len(), 1);
    assert_eq!(moves.tombstones, vec![k1, km]);
    assert_eq!(
        moves.groups.into_iter().collect::<Vec<_>>(),
        vec!["legacy-group-0".to_string()]
    );
    // Nothing misplaced, nothing to do.
    let mut scan = records::PlacementScan::new(4, 50);
    scan.record(&k_home, Some(&v("stays")));
    assert_eq!(scan.finish(), records::PlacementMoves::default());
}

#[test]
fn transactional_offsets_appear_only_when_their_transaction_commits() {
    let mut h = H::new();
    // An offsets-only group (generation -1), as a transactional copier without a group uses.
    assert_eq!(h.commit(G, "", -1, &[("t", 0, 5)]), vec![code::NONE]);
    assert_eq!(
        h.txn_commit(3, G, 77, "", -1, &[("t", 0, 10), ("t", 1, 20)]),
        vec![code::NONE, code::NONE]
    );
    assert_eq!(
        h.txn_log.len(),
        2,
        "written as the producer's transactional batch"
    );
    assert!(h.txn_log.iter().all(|(pid, _)| *pid == 77));
    // Invisible until the marker; unstable to a reader that asks for stable offsets.
    let fetched = h.fetch_v7(G, Some(&[("t", &[0, 1])]));
    assert_eq!(fetched, vec![("t".into(), 0, 5), ("t".into(), 1, -1)]);
    assert_eq!(
        h.fetch_stable(G, "t", &[0, 1]),
        vec![
            (0, code::UNSTABLE_OFFSET_COMMIT, -1),
            (1, code::UNSTABLE_OFFSET_COMMIT, -1)
        ]
    );
    assert_eq!(h.c.complete_txn(77, true), 2);
    let fetched = h.fetch_v7(G, Some(&[("t", &[0, 1])]));
    assert_eq!(fetched, vec![("t".into(), 0, 10), ("t".into(), 1, 20)]);
    assert_eq!(
        h.fetch_stable(G, "t", &[0]),
        vec![(0, code::NONE, 10)],
        "stable once committed"
    );
    // An aborted transaction's offsets never appear.
    assert_eq!(
        h.txn_commit(3, G, 78, "", -1, &[("t", 0, 99)]),
        vec![code::NONE]
    );
    assert_eq!(h.c.complete_txn(78, false), 1);
    assert_eq!(
        h.fetch_v7(G, Some(&[("t", &[0])])),
        vec![("t".into(), 0, 10)]
    );
    assert_eq!(h.c.complete_txn(78, true), 0, "nothing left to apply");
}

#[test]
fn a_plain_commit_after_a_transactional_one_wins() {
    let mut h = H::new();
    assert_eq!(
        h.txn_commit(3, G, 7, "", -1, &[("t", 0, 10)]),
        vec![code::NONE]
    );
    assert_eq!(h.commit(G, "", -1, &[("t", 0, 50)]), vec![code::NONE]);
    h.c.complete_txn(7, true);
    assert_eq!(
        h.fetch_v7(G, Some(&[("t", &[0])])),
        vec![("t".into(), 0, 50)]
    );
}

#[test]
fn transactional_offsets_replay_from_the_log() {
    let mut h = H::new();
    assert_eq!(h.commit(G, "", -1, &[("t", 0, 5)]), vec![code::NONE]);
    assert_eq!(
        h.txn_commit(3, G, 1, "", -1, &[("t", 0, 10)]),
        vec![code::NONE]
    );
    assert_eq!(
        h.txn_commit(3, G, 2, "", -1, &[("t", 1, 30)]),
        vec![code::NONE]
    );
    // Log order: the plain commit, both transactional batches, then only producer 1's
    // COMMIT marker (producer 2 is still open).
    let mut c = GroupCoordinator::new(GroupConfig::default());
    for (k, v) in &h.log {
        c.replay(k, v.as_deref()).unwrap();
    }
    for (pid, (k, v)) in &h.txn_log {
        c.replay_txn(*pid, k, v.as_deref()).unwrap();
    }
    assert_eq!(c.complete_txn(1, true), 1);
    let _ = c.finish_replay(h.now);
    h.c = c;
    assert_eq!(
        h.fetch_stable(G, "t", &[0, 1]),
        vec![(0, code::NONE, 10), (1, code::UNSTABLE_OFFSET_COMMIT, -1)]
    );
    h.c.complete_txn(2, false);
    assert_eq!(h.fetch_stable(G, "t", &[1]), vec![(1, code::NONE, -1)]);
}

#[test]
fn txn_offset_commit_checks_the_member_as_kafka_does() {
    let mut h = H::new();
    let (leader, _) = h.stable_pair();
    // KIP-447 (v3+): generation and member are checked.
    assert_eq!(
        h.txn_commit(3, G, 1, &leader, 1, &[("t", 0, 1)]),
        vec![code::NONE]
    );
    assert_eq!(
        h.txn_commit(3, G, 1, &leader, 0, &[("t", 0, 1)]),
        vec![code::ILLEGAL_GENERATION]
    );
    assert_eq!(
        h.txn_commit(3, G, 1, "stranger", 1, &[("t", 0, 1)]),
        vec![code::UNKNOWN_MEMBER_ID]
    );
    // Before v3 the request names no member: accepted in a running group.
    assert_eq!(
        h.txn_commit(2, G, 1, "ignored", 42, &[("t", 0, 1)]),
        vec![code::NONE]
    );
    // An unknown group with a generation, and a bad group id.
    assert_eq!(
        h.txn_commit(3, "nobody", 1, "m", 3, &[("t", 0, 1)]),
        vec![code::ILLEGAL_GENERATION]
    );
    assert_eq!(
        h.txn_commit(3, "", 1, "", -1, &[("t", 0, 1)]),
        vec![code::INVALID_GROUP_ID]
    );
    assert_eq!(h.txn_log.len(), 2, "only the accepted commits were written");
}

#[test]
fn a_failed_txn_offset_commit_reports_every_partition() {
    let mut r = sluice_codec::kafka_protocol::messages::TxnOffsetCommitResponse::default();
    let mut t = sluice_codec::kafka_protocol::messages::txn_offset_commit_response::TxnOffsetCommitResponseTopic::default();
    t.partitions.push(Default::default());
    r.topics.push(t);
    match persist_failed(Response::TxnOffsetCommit(r)) {
        Response::TxnOffsetCommit(r) => assert_eq!(
            r.topics[0].partitions[0].error_code,
            code::COORDINATOR_NOT_AVAILABLE
        ),
        other => panic!("{other:?}"),
    }
}
