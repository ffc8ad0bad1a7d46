//! Tests of online migration between the classic and the consumer protocol: a classic group
//! with members upgraded by a joining consumer-protocol member, classic members reconciled
//! through JoinGroup/SyncGroup/Heartbeat inside a consumer group, the downgrade when the
//! last consumer-protocol member leaves or times out, and the records replaying to the same
//! group.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use sluice_codec::kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use sluice_codec::kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use sluice_codec::kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, SyncGroupRequest,
};
use sluice_codec::kafka_protocol::protocol::Encodable;
use uuid::Uuid;

use crate::consumer::ConsumerGroupState;
use crate::consumer_tests::{apply, count, disjoint, join_req, owned, s, Client, Rng, G, H};
use crate::embedded::{decode_assignment, decode_subscription, encode_assignment};
use crate::group::ClassicState;
use crate::{code, Effect, GroupConfig, GroupCoordinator, Response};

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

    /// A new static classic member (`instance`, no member id yet) joins, owning nothing.
    fn classic_static_join(&mut self, instance: &str) -> JoinGroupResponse {
        let ctx = self.ctx(7);
        let mut req = JoinGroupRequest::default();
        req.group_id = GroupId(s(G));
        req.session_timeout_ms = SESSION;
        req.rebalance_timeout_ms = REBALANCE;
        req.member_id = s("");
        req.group_instance_id = Some(s(instance));
        req.protocol_type = s("consumer");
        let mut p = JoinGroupRequestProtocol::default();
        p.name = s("range");
        p.metadata = subscription(&["t"], &[]);
        req.protocols = vec![p];
        let effects = self.c.join_group(ctx, req, &self.topics);
        match self.absorb(ctx.token, effects) {
            Some(Response::JoinGroup(r)) => r,
            other => panic!("no JoinGroup answer: {other:?}"),
        }
    }

    /// A classic member (all of `t` first) and consumer member "b" sharing a consumer
    /// group after an online upgrade, both reconciled.
    fn classic_and_consumer(&mut self) -> (Classic, Client) {
        let mut a = self.classic_alone();
        let mut b = self.join("b", &["t"]);
        self.classic_heartbeat(&a);
        self.classic_rejoin(&mut a);
        self.beat(&mut b);
        (a, b)
    }

    /// Ticks 5 s at a time (at most `rounds` times) while `a` heartbeats, until the group
    /// is classic again.
    fn tick_until_classic(&mut self, a: &Classic, rounds: usize) {
        for _ in 0..rounds {
            self.now += 5_000;
            let effects = self.c.tick(self.now, &self.topics);
            self.absorb(crate::ReplyToken(u64::MAX), effects);
            if self.c.group_state(G).is_some() {
                return;
            }
            assert_eq!(self.classic_heartbeat(a), code::NONE);
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
    let fresh = h.replayed();
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
    let (mut a, _b) = h.classic_and_consumer();
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

    let fresh = h.replayed();
    assert_eq!(fresh.group_state(G), Some(ClassicState::Stable));
    assert_eq!(fresh.members(G), vec![a.id.clone()]);
}

#[test]
fn a_silent_consumer_member_downgrades_the_group_when_it_times_out() {
    let mut h = H::migrating();
    let (a, _b) = h.classic_and_consumer();
    // A keeps heartbeating; b goes quiet past the consumer session timeout.
    h.tick_until_classic(&a, 10);
    assert_eq!(h.c.group_state(G), Some(ClassicState::PreparingRebalance));
    assert_eq!(h.classic_heartbeat(&a), code::REBALANCE_IN_PROGRESS);
}

#[test]
fn a_classic_member_that_does_not_rejoin_in_its_rebalance_timeout_is_removed() {
    let mut h = H::migrating();
    let (a, mut b) = h.classic_and_consumer();
    // A third member makes A rejoin; A only heartbeats.
    let mut c = h.join("c", &["t"]);
    assert_eq!(h.classic_heartbeat(&a), code::REBALANCE_IN_PROGRESS);
    for _ in 0..5 {
        h.now += 5_000;
        h.classic_heartbeat(&a);
        h.beat(&mut b);
        h.beat(&mut c);
        let effects = h.c.tick(h.now, &h.topics);
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
    let (a, mut b) = h.classic_and_consumer();
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

#[test]
fn a_full_classic_group_refuses_a_consumer_member_and_stays_classic() {
    let mut h = H::new();
    h.c = GroupCoordinator::new(GroupConfig {
        initial_rebalance_delay_ms: 0,
        group_max_size: 1,
        ..GroupConfig::default()
    });
    h.topics.add("t", 4);
    let a = h.classic_alone();
    let logged = h.log.len();
    let r = h.heartbeat(join_req("b", &["t"], None));
    assert_eq!(r.error_code, code::GROUP_MAX_SIZE_REACHED);
    assert_eq!(h.c.group_state(G), Some(ClassicState::Stable));
    assert_eq!(h.log.len(), logged, "nothing converted, nothing stored");
    assert_eq!(h.classic_heartbeat(&a), code::NONE);
}

#[test]
fn a_classic_member_that_heartbeats_with_the_consumer_protocol_becomes_one() {
    let mut h = H::migrating();
    let (a, mut b) = h.classic_and_consumer();
    // The client restarts with the consumer protocol under the same member id.
    let mut a2 = h.join(&a.id, &["t"]);
    h.settle(&mut [&mut a2, &mut b]);
    disjoint(&[&a2, &b]);
    // b leaving no longer leaves only classic members: the group stays a consumer group.
    let mut leave = join_req("b", &["t"], None);
    leave.member_epoch = -1;
    assert_eq!(h.heartbeat(leave).error_code, code::NONE);
    assert!(h.c.consumer_group_state(G).is_some());
    h.settle(&mut [&mut a2]);
    assert_eq!(count(&a2), 4);
    // Nor is it a classic member to the classic requests.
    assert_eq!(h.classic_heartbeat(&a), code::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_downgrade_on_a_timer_after_a_reload_keeps_what_members_hold() {
    let mut h = H::migrating();
    let (a, _b) = h.classic_and_consumer();
    assert_eq!(a.owned.len(), 2);
    // The coordinator moves (a restart, a new leader) and b goes quiet.
    h.c = h.replayed();
    h.tick_until_classic(&a, 20);
    assert_eq!(h.c.group_state(G), Some(ClassicState::PreparingRebalance));
    // A consumer member upgrades the group again before a rejoins: a still consumes its
    // two partitions, and the records must say so (named from the topic table, which a
    // cache lost on reload would not), so the newcomer gets only the other two.
    let mut c = h.join("c", &["t"]);
    for _ in 0..3 {
        h.beat(&mut c);
    }
    let theirs: Vec<i32> = c.owned.values().flatten().copied().collect();
    assert_eq!(theirs.len(), 2, "{theirs:?}");
    assert!(
        theirs.iter().all(|p| !a.owned.contains(p)),
        "{theirs:?} / {:?}",
        a.owned
    );
}

#[test]
fn a_batched_leave_group_removes_classic_members_with_one_new_epoch() {
    let mut h = H::migrating();
    let (a, mut b) = h.classic_and_consumer();
    // A second classic member, static, joins the consumer group.
    let r = h.classic_static_join("inst-c");
    assert_eq!(r.error_code, code::NONE);
    let c_id = r.member_id.to_string();
    let epoch = h.c.generation(G).unwrap();
    // An admin removes both: a by member id, c by instance id alone; plus an unknown one.
    use sluice_codec::kafka_protocol::messages::leave_group_request::MemberIdentity;
    let ctx = h.ctx(5);
    let mut req = LeaveGroupRequest::default();
    req.group_id = GroupId(s(G));
    let mut by_id = MemberIdentity::default();
    by_id.member_id = s(&a.id);
    let mut by_instance = MemberIdentity::default();
    by_instance.group_instance_id = Some(s("inst-c"));
    let mut nobody = MemberIdentity::default();
    nobody.member_id = s("nobody");
    req.members = vec![by_id, by_instance, nobody];
    let effects = h.c.leave_group(ctx, req);
    let Some(Response::LeaveGroup(r)) = h.absorb(ctx.token, effects) else {
        panic!("no LeaveGroup answer");
    };
    let answers: Vec<(String, i16)> = r
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.error_code))
        .collect();
    assert_eq!(
        answers,
        vec![
            (a.id.clone(), code::NONE),
            (c_id, code::NONE),
            ("nobody".to_owned(), code::UNKNOWN_MEMBER_ID)
        ]
    );
    assert_eq!(
        h.c.generation(G),
        Some(epoch + 1),
        "one new epoch for the batch"
    );
    assert_eq!(h.c.members(G), vec!["b".to_owned()]);
    h.settle(&mut [&mut b]);
    assert_eq!(count(&b), 4);
}

// ---- a seeded simulation of mixed-protocol groups ------------------------------------------

/// Where a simulated classic client is in its protocol.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Must (re)join next.
    Out,
    /// Waiting for the JoinGroup answer with this token.
    Joining(u64),
    /// Waiting for the SyncGroup answer with this token.
    Syncing(u64),
    Stable,
}

/// A classic consumer of topic `t`. Eager (librdkafka's default `range`) gives up
/// everything before it rejoins; cooperative (`cooperative-sticky`) keeps its partitions,
/// reports them when it rejoins, gives up what a new assignment leaves out and then rejoins
/// at once. As leader of a classic group it assigns round-robin, in two phases for
/// cooperative members (a partition still owned elsewhere is left out this round).
struct SimClassic {
    id: String,
    generation: i32,
    owned: BTreeSet<i32>,
    phase: Phase,
    alive: bool,
    /// `group.instance.id` of a static member.
    instance: Option<String>,
}

/// A consumer-protocol client subscribed to `t` (and maybe `u`).
struct SimModern {
    c: Client,
    topics: Vec<&'static str>,
    alive: bool,
    instance: Option<String>,
}

impl SimClassic {
    fn new(instance: Option<String>) -> Self {
        SimClassic {
            id: String::new(),
            generation: -1,
            owned: BTreeSet::new(),
            phase: Phase::Out,
            alive: true,
            instance,
        }
    }
}

impl SimModern {
    fn new(n: u64, topics: Vec<&'static str>, instance: Option<String>) -> Self {
        SimModern {
            c: Client {
                id: format!("m{n}"),
                epoch: 0,
                owned: BTreeMap::new(),
            },
            topics,
            alive: true,
            instance,
        }
    }
}

/// The coordinator with every reply kept by token, whichever call produced it (a parked
/// JoinGroup or SyncGroup is answered by a later request, or by a conversion).
struct Sim {
    h: H,
    mail: HashMap<u64, Response>,
    classic: Vec<SimClassic>,
    modern: Vec<SimModern>,
    /// Whether this run's classic clients are cooperative (all alike: a group's classic
    /// members must share a protocol).
    cooperative: bool,
    /// `SLUICE_MIGRATION_SIM_TRACE=1`: print every step.
    trace: bool,
}

const SIM_SESSION: i32 = 30_000;
const SIM_REBALANCE: i32 = 60_000;

impl Sim {
    fn run(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Reply(t, r) => {
                    self.mail.insert(t.0, r);
                }
                Effect::PersistThenReply { records, replies } => {
                    self.h.log.extend(records);
                    for (t, r) in replies {
                        self.mail.insert(t.0, r);
                    }
                }
                Effect::Persist(records) => self.h.log.extend(records),
                _ => {}
            }
        }
    }

    /// Prints the coordinator's view of the consumer group (trace mode and failures).
    fn dump(&mut self) {
        let ctx = self.h.ctx(1);
        let mut req = ConsumerGroupDescribeRequest::default();
        req.group_ids = vec![GroupId(s(G))];
        let effects = self.h.c.consumer_group_describe(ctx, req, &self.h.topics);
        for e in effects {
            let Effect::Reply(_, Response::ConsumerGroupDescribe(d)) = e else {
                continue;
            };
            let g = &d.groups[0];
            eprintln!(
                "  coordinator: epoch {} target epoch {}",
                g.group_epoch, g.assignment_epoch
            );
            for m in &g.members {
                let parts = |a: &[sluice_codec::kafka_protocol::messages::consumer_group_describe_response::TopicPartitions]| {
                    a.iter().map(|t| t.partitions.clone()).collect::<Vec<_>>()
                };
                eprintln!(
                    "  coordinator: {} epoch {} assigned {:?} target {:?}",
                    m.member_id,
                    m.member_epoch,
                    parts(&m.assignment.topic_partitions),
                    parts(&m.target_assignment.topic_partitions),
                );
            }
        }
    }

    fn protocol(&self) -> &'static str {
        if self.cooperative {
            "cooperative-sticky"
        } else {
            "range"
        }
    }

    fn t_partitions(&self) -> i32 {
        self.h.topics.by_name["t"].1
    }

    /// One step of classic client `i`: act on an answer, or send the next request.
    fn classic_step(&mut self, i: usize) {
        self.classic_step_inner(i);
        if self.trace {
            let c = &self.classic[i];
            eprintln!(
                "t={} classic {} ({:?}) gen {} {:?} owns {:?} | group {:?}/{:?} epoch {:?}",
                self.h.now,
                c.id,
                c.instance,
                c.generation,
                c.phase,
                c.owned,
                self.h.c.group_state(G),
                self.h.c.consumer_group_state(G),
                self.h.c.generation(G)
            );
        }
    }

    fn classic_step_inner(&mut self, i: usize) {
        let phase = self.classic[i].phase;
        match phase {
            Phase::Out => {
                let ctx = self.h.ctx(7);
                let mut req = JoinGroupRequest::default();
                req.group_id = GroupId(s(G));
                req.session_timeout_ms = SIM_SESSION;
                req.rebalance_timeout_ms = SIM_REBALANCE;
                req.member_id = s(&self.classic[i].id);
                req.group_instance_id = self.classic[i].instance.as_deref().map(s);
                req.protocol_type = s("consumer");
                let mut p = JoinGroupRequestProtocol::default();
                p.name = s(self.protocol());
                let owned: Vec<i32> = self.classic[i].owned.iter().copied().collect();
                p.metadata = subscription(&["t"], &owned);
                req.protocols = vec![p];
                let effects = self.h.c.join_group(ctx, req, &self.h.topics);
                self.run(effects);
                self.classic[i].phase = Phase::Joining(ctx.token.0);
            }
            Phase::Joining(t) => {
                let Some(r) = self.mail.remove(&t) else {
                    return;
                };
                let Response::JoinGroup(r) = r else {
                    panic!("{r:?}")
                };
                let c = &mut self.classic[i];
                match r.error_code {
                    code::NONE => {
                        // A static member joining without an id learns it here.
                        c.id = r.member_id.to_string();
                        c.generation = r.generation_id;
                        let mut assignments = Vec::new();
                        if r.leader.as_str() == c.id && !r.members.is_empty() {
                            let ids: Vec<String> =
                                r.members.iter().map(|m| m.member_id.to_string()).collect();
                            // Who reports owning what (cooperative members only).
                            let mut owner: HashMap<i32, usize> = HashMap::new();
                            for (k, m) in r.members.iter().enumerate() {
                                let sub = decode_subscription(&m.metadata).expect("valid");
                                for (_, ps) in sub.owned {
                                    for p in ps {
                                        owner.insert(p, k);
                                    }
                                }
                            }
                            for (k, id) in ids.iter().enumerate() {
                                let mine: Vec<i32> = (0..self.h.topics.by_name["t"].1)
                                    .filter(|p| *p as usize % ids.len() == k)
                                    .filter(|p| owner.get(p).is_none_or(|o| *o == k))
                                    .collect();
                                let mut a = SyncGroupRequestAssignment::default();
                                a.member_id = s(id);
                                a.assignment = encode_assignment(1, &vec![("t".to_owned(), mine)]);
                                assignments.push(a);
                            }
                        }
                        let c = &self.classic[i];
                        let ctx = self.h.ctx(5);
                        let mut req = SyncGroupRequest::default();
                        req.group_id = GroupId(s(G));
                        req.generation_id = c.generation;
                        req.member_id = s(&c.id);
                        req.group_instance_id = c.instance.as_deref().map(s);
                        req.protocol_type = Some(s("consumer"));
                        req.protocol_name = Some(s(self.protocol()));
                        req.assignments = assignments;
                        let effects = self.h.c.sync_group(ctx, req, &self.h.topics);
                        self.run(effects);
                        self.classic[i].phase = Phase::Syncing(ctx.token.0);
                    }
                    code::MEMBER_ID_REQUIRED => {
                        c.id = r.member_id.to_string();
                        c.phase = Phase::Out;
                    }
                    code::UNKNOWN_MEMBER_ID => {
                        c.id.clear();
                        c.phase = Phase::Out;
                    }
                    code::REBALANCE_IN_PROGRESS | code::ILLEGAL_GENERATION => c.phase = Phase::Out,
                    other => panic!("JoinGroup error {other}"),
                }
            }
            Phase::Syncing(t) => {
                let Some(r) = self.mail.remove(&t) else {
                    return;
                };
                let Response::SyncGroup(r) = r else {
                    panic!("{r:?}")
                };
                let c = &mut self.classic[i];
                match r.error_code {
                    code::NONE => {
                        let assigned: BTreeSet<i32> = decode_assignment(&r.assignment)
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|(topic, _)| topic == "t")
                            .flat_map(|(_, ps)| ps)
                            .collect();
                        // A cooperative client that gave partitions up rejoins at once.
                        let gave_up = c.owned.iter().any(|p| !assigned.contains(p));
                        c.owned = assigned;
                        c.phase = if gave_up { Phase::Out } else { Phase::Stable };
                    }
                    code::UNKNOWN_MEMBER_ID => {
                        c.id.clear();
                        c.phase = Phase::Out;
                    }
                    code::REBALANCE_IN_PROGRESS | code::ILLEGAL_GENERATION => c.phase = Phase::Out,
                    other => panic!("SyncGroup error {other}"),
                }
            }
            Phase::Stable => {
                let ctx = self.h.ctx(4);
                let mut req = HeartbeatRequest::default();
                req.group_id = GroupId(s(G));
                req.generation_id = self.classic[i].generation;
                req.member_id = s(&self.classic[i].id);
                req.group_instance_id = self.classic[i].instance.as_deref().map(s);
                let effects = self.h.c.heartbeat(ctx, req);
                self.run(effects);
                let Some(Response::Heartbeat(r)) = self.mail.remove(&ctx.token.0) else {
                    panic!("no Heartbeat answer");
                };
                let cooperative = self.cooperative;
                let c = &mut self.classic[i];
                match r.error_code {
                    code::NONE => {}
                    // Eager: everything is given up before rejoining; cooperative: kept.
                    code::REBALANCE_IN_PROGRESS => {
                        if !cooperative {
                            c.owned.clear();
                        }
                        c.phase = Phase::Out;
                    }
                    // A lost generation loses the partitions in both.
                    code::ILLEGAL_GENERATION => {
                        c.owned.clear();
                        c.phase = Phase::Out;
                    }
                    code::UNKNOWN_MEMBER_ID => {
                        c.owned.clear();
                        c.id.clear();
                        c.phase = Phase::Out;
                    }
                    other => panic!("Heartbeat error {other}"),
                }
            }
        }
    }

    fn modern_step(&mut self, i: usize) {
        let sc = &self.modern[i];
        let mut req = join_req(&sc.c.id, &sc.topics, sc.instance.as_deref());
        req.member_epoch = sc.c.epoch;
        req.topic_partitions = Some(owned(&sc.c));
        let ctx = self.h.ctx(1);
        let effects = self.h.c.consumer_group_heartbeat(ctx, req, &self.h.topics);
        self.run(effects);
        let Some(Response::ConsumerGroupHeartbeat(r)) = self.mail.remove(&ctx.token.0) else {
            panic!("no heartbeat answer");
        };
        if self.trace {
            self.dump();
        }
        let sc = &mut self.modern[i];
        if self.trace {
            eprintln!(
                "t={} modern {} epoch {} -> err {} epoch {} assignment {:?} | group {:?}/{:?}",
                self.h.now,
                sc.c.id,
                sc.c.epoch,
                r.error_code,
                r.member_epoch,
                r.assignment.as_ref().map(|a| a
                    .topic_partitions
                    .iter()
                    .map(|t| t.partitions.clone())
                    .collect::<Vec<_>>()),
                self.h.c.group_state(G),
                self.h.c.consumer_group_state(G),
            );
        }
        match r.error_code {
            code::NONE => apply(&mut sc.c, &r),
            // Fenced, or its group became classic while it was away: start over.
            code::FENCED_MEMBER_EPOCH | code::UNKNOWN_MEMBER_ID | code::GROUP_ID_NOT_FOUND => {
                sc.c.owned.clear();
                sc.c.epoch = 0;
            }
            // Its instance is still held by a previous incarnation: try again later.
            code::UNRELEASED_INSTANCE_ID => assert_eq!(sc.c.epoch, 0),
            other => panic!("heartbeat error {other}: {:?}", r.error_message),
        }
    }

    /// Who believes they own what, among running clients.
    fn check_disjoint(&self, seed: u64) {
        let mut seen: HashMap<(String, i32), String> = HashMap::new();
        let names: HashMap<Uuid, String> = self
            .h
            .topics
            .by_name
            .iter()
            .map(|(n, (id, _))| (*id, n.clone()))
            .collect();
        let mut claim = |who: &str, topic: String, p: i32| {
            if let Some(other) = seen.insert((topic.clone(), p), who.to_owned()) {
                panic!("seed {seed}: {topic}/{p} owned by {other} and {who}");
            }
        };
        for c in self.classic.iter().filter(|c| c.alive) {
            for p in &c.owned {
                claim(&c.id, "t".to_owned(), *p);
            }
        }
        for m in self.modern.iter().filter(|m| m.alive) {
            for (t, ps) in &m.c.owned {
                for p in ps {
                    claim(&m.c.id, names[t].clone(), *p);
                }
            }
        }
    }

    fn act_all(&mut self) {
        for i in 0..self.classic.len() {
            if self.classic[i].alive {
                self.classic_step(i);
            }
        }
        for i in 0..self.modern.len() {
            if self.modern[i].alive {
                self.modern_step(i);
            }
        }
    }
}

/// Classic consumers (eager in odd seeds, cooperative in even ones) and consumer-protocol
/// members joining, leaving and dying at random, so the group is upgraded and downgraded
/// again and again: at every step no
/// partition is believed owned by two running clients; at the end the running clients own
/// every subscribed partition once and the log replays to the same group.
/// `SLUICE_MIGRATION_SIM_SEEDS=N` runs more seeds.
#[test]
fn mixed_protocol_groups_never_give_a_partition_to_two_members() {
    let seeds: u64 = std::env::var("SLUICE_MIGRATION_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let first: u64 = std::env::var("SLUICE_MIGRATION_SIM_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for seed in first..first + seeds {
        simulate_mixed(seed);
    }
    let conversions = CONVERSIONS.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{seeds} seeds, {conversions} conversions between the protocols");
    assert!(conversions >= seeds, "too few conversions: {conversions}");
}

/// Conversions between the protocols over all seeds (the simulation must exercise them).
static CONVERSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn simulate_mixed(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut h = H::migrating();
    h.c.seed_member_ids(seed);
    h.topics.by_name.get_mut("t").unwrap().1 = 1 + rng.below(8) as i32;
    h.topics.add("u", 1 + rng.below(4) as i32);
    let mut sim = Sim {
        h,
        mail: HashMap::new(),
        classic: Vec::new(),
        modern: Vec::new(),
        cooperative: seed.is_multiple_of(2),
        trace: std::env::var_os("SLUICE_MIGRATION_SIM_TRACE").is_some(),
    };
    if sim.trace {
        eprintln!("seed {seed}");
    }
    let mut next_id = 0;
    let mut conversions = 0;
    let mut was_classic = true;
    for _ in 0..400 {
        let is_classic = sim.h.c.consumer_group_state(G).is_none();
        if is_classic != was_classic {
            conversions += 1;
            was_classic = is_classic;
        }
        let live = sim.classic.iter().filter(|c| c.alive).count()
            + sim.modern.iter().filter(|m| m.alive).count();
        match rng.below(24) {
            0 if live < 6 => {
                next_id += 1;
                let instance = (rng.below(2) == 0).then(|| format!("i{next_id}"));
                sim.classic.push(SimClassic::new(instance));
            }
            1 if live < 6 => {
                next_id += 1;
                let instance = (rng.below(2) == 0).then(|| format!("i{next_id}"));
                let topics = if rng.below(2) == 0 {
                    vec!["t"]
                } else {
                    vec!["t", "u"]
                };
                sim.modern.push(SimModern::new(next_id, topics, instance));
            }
            7 | 8 => {
                // A static member's application restarts speaking the other protocol (a
                // rolling upgrade or downgrade): the old process stops (a KIP-848 one says
                // it leaves for now, epoch -2) and the new one joins with its instance id.
                let n = (sim.classic.len() + sim.modern.len()) as u64;
                let i = rng.below(n) as usize;
                if i < sim.classic.len() {
                    let c = &mut sim.classic[i];
                    if c.alive && c.instance.is_some() {
                        c.alive = false;
                        c.owned.clear();
                        next_id += 1;
                        let m = SimModern::new(next_id, vec!["t"], c.instance.clone());
                        sim.modern.push(m);
                    }
                } else if let Some(m) = sim.modern.get_mut(i - sim.classic.len()) {
                    if m.alive && m.instance.is_some() {
                        m.alive = false;
                        m.c.owned.clear();
                        let instance = m.instance.clone();
                        if m.c.epoch > 0 {
                            let mut req = join_req(&m.c.id, &[], instance.as_deref());
                            req.member_epoch = -2;
                            let ctx = sim.h.ctx(1);
                            let effects = sim.h.c.consumer_group_heartbeat(ctx, req, &sim.h.topics);
                            sim.run(effects);
                        }
                        sim.classic.push(SimClassic::new(instance));
                    }
                }
            }
            2 => {
                // A consumer-protocol member leaves gracefully.
                let n = sim.modern.len() as u64;
                let i = rng.below(n) as usize;
                if let Some(m) = sim.modern.get_mut(i).filter(|m| m.alive && m.c.epoch > 0) {
                    let mut req = join_req(&m.c.id, &[], m.instance.as_deref());
                    req.member_epoch = -1;
                    m.alive = false;
                    m.c.owned.clear();
                    let ctx = sim.h.ctx(1);
                    let effects = sim.h.c.consumer_group_heartbeat(ctx, req, &sim.h.topics);
                    sim.run(effects);
                }
            }
            3 => {
                // A classic member leaves gracefully.
                let n = sim.classic.len() as u64;
                let i = rng.below(n) as usize;
                if let Some(c) = sim
                    .classic
                    .get_mut(i)
                    .filter(|c| c.alive && !c.id.is_empty())
                {
                    c.alive = false;
                    c.owned.clear();
                    let ctx = sim.h.ctx(3);
                    let mut req = LeaveGroupRequest::default();
                    req.group_id = GroupId(s(G));
                    let mut m = sluice_codec::kafka_protocol::messages::leave_group_request::MemberIdentity::default();
                    m.member_id = s(&c.id);
                    m.group_instance_id = c.instance.as_deref().map(s);
                    req.members = vec![m];
                    let effects = sim.h.c.leave_group(ctx, req);
                    sim.run(effects);
                }
            }
            4 => {
                // Someone dies without a word.
                if rng.below(2) == 0 {
                    let n = sim.classic.len() as u64;
                    if let Some(c) = sim.classic.get_mut(rng.below(n) as usize) {
                        c.alive = false;
                    }
                } else {
                    let n = sim.modern.len() as u64;
                    if let Some(m) = sim.modern.get_mut(rng.below(n) as usize) {
                        m.alive = false;
                    }
                }
            }
            5 => {
                // Time passes; every running client acts within it (as real ones do).
                sim.act_all();
                sim.h.now += 1_000 + rng.below(4_000) as i64;
                let effects = sim.h.c.tick(sim.h.now, &sim.h.topics);
                sim.run(effects);
            }
            _ => {
                let n = (sim.classic.len() + sim.modern.len()) as u64;
                let i = rng.below(n) as usize;
                if i < sim.classic.len() {
                    if sim.classic[i].alive {
                        sim.classic_step(i);
                    }
                } else if let Some(m) = sim.modern.get(i - sim.classic.len()) {
                    if m.alive {
                        sim.modern_step(i - sim.classic.len());
                    }
                }
            }
        }
        sim.check_disjoint(seed);
    }
    // Running clients keep going while the dead time out: the group settles.
    for _ in 0..80 {
        sim.act_all();
        sim.act_all();
        sim.h.now += 2_000;
        let effects = sim.h.c.tick(sim.h.now, &sim.h.topics);
        sim.run(effects);
        sim.check_disjoint(seed);
    }
    if sim.trace {
        sim.dump();
    }
    let classic_live: Vec<&SimClassic> = sim.classic.iter().filter(|c| c.alive).collect();
    let modern_live: Vec<&SimModern> = sim.modern.iter().filter(|m| m.alive).collect();
    if !classic_live.is_empty() || !modern_live.is_empty() {
        let u = modern_live.iter().any(|m| m.topics.contains(&"u"));
        let want = sim.t_partitions() as usize
            + if u {
                sim.h.topics.by_name["u"].1 as usize
            } else {
                0
            };
        let have = classic_live.iter().map(|c| c.owned.len()).sum::<usize>()
            + modern_live.iter().map(|m| count(&m.c)).sum::<usize>();
        assert_eq!(
            have,
            want,
            "seed {seed}: not every partition is owned (classic {:?}, modern {:?}, group {:?}/{:?})",
            classic_live.iter().map(|c| (&c.id, c.phase, &c.owned)).collect::<Vec<_>>(),
            modern_live.iter().map(|m| (&m.c.id, m.c.epoch, count(&m.c))).collect::<Vec<_>>(),
            sim.h.c.group_state(G),
            sim.h.c.consumer_group_state(G),
        );
    }
    CONVERSIONS.fetch_add(conversions, std::sync::atomic::Ordering::Relaxed);
    let fresh = sim.h.replayed();
    assert_eq!(fresh.generation(G), sim.h.c.generation(G), "seed {seed}");
    assert_eq!(fresh.members(G), sim.h.c.members(G), "seed {seed}");
}

#[test]
fn a_classic_static_member_replacing_the_last_consumer_member_downgrades_in_place() {
    let mut h = H::migrating();
    let mut a = h.classic_alone();
    let r = h.heartbeat(join_req("s1", &["t"], Some("i1")));
    assert_eq!(r.error_code, code::NONE);
    let mut s1 = Client {
        id: "s1".to_owned(),
        epoch: 0,
        owned: BTreeMap::new(),
    };
    apply(&mut s1, &r);
    h.classic_heartbeat(&a);
    h.classic_rejoin(&mut a);
    h.beat(&mut s1);
    assert_split(&a, &s1);

    // The application behind "i1" is rolled back to the classic protocol: its JoinGroup
    // takes the instance over, only classic members are left, and the group turns classic
    // without a rebalance.
    let r = h.classic_static_join("i1");
    assert_eq!(r.error_code, code::NONE);
    assert_eq!(h.c.group_state(G), Some(ClassicState::Stable));
    assert_eq!(Some(r.generation_id), h.c.generation(G));
    let mut b = Classic {
        id: r.member_id.to_string(),
        generation: r.generation_id,
        owned: Vec::new(),
    };
    let (e, parts) = h.classic_sync(&b, &[]);
    assert_eq!(e, code::NONE);
    b.owned = parts;
    assert_eq!(b.owned.len(), 2, "the partitions \"i1\" had");
    assert!(b.owned.iter().all(|p| !a.owned.contains(p)));
    assert_eq!(h.classic_heartbeat(&a), code::NONE, "no rebalance");
    assert_eq!(h.classic_heartbeat(&b), code::NONE);
    let fresh = h.replayed();
    assert_eq!(fresh.group_state(G), Some(ClassicState::Stable));
    assert_eq!(fresh.members(G).len(), 2);
}
