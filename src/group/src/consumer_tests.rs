//! Tests of the KIP-848 consumer group protocol (ConsumerGroupHeartbeat) driven through the
//! coordinator with a fake clock and a fake topic table: joins, reconciliation (revoke before
//! assign), fencing, static members, timeouts, offsets by member epoch, bad requests, and
//! replaying the records into a fresh coordinator.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice_codec::kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use sluice_codec::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use sluice_codec::kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
    GroupId, ListGroupsRequest, OffsetCommitRequest, TopicName,
};
use sluice_codec::kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::consumer::{
    ConsumerGroupState, TopicsView, CONSUMER_HEARTBEAT_INTERVAL_MS, CONSUMER_SESSION_TIMEOUT_MS,
};
use crate::{
    code, Effect, GroupConfig, GroupCoordinator, Record, ReplyToken, RequestCtx, Response,
};

pub(crate) const G: &str = "cg";

pub(crate) fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_owned())
}

/// A topic table: name -> (id, partitions).
#[derive(Default)]
pub(crate) struct Topics {
    pub(crate) version: u64,
    pub(crate) by_name: BTreeMap<String, (Uuid, i32)>,
}

impl Topics {
    pub(crate) fn add(&mut self, name: &str, partitions: i32) -> Uuid {
        let id = Uuid::from_u128(0x5100_0000 + self.by_name.len() as u128 + 1);
        self.by_name.insert(name.to_owned(), (id, partitions));
        self.version += 1;
        id
    }
}

impl TopicsView for Topics {
    fn version(&self) -> u64 {
        self.version
    }
    fn by_name(&self, name: &str) -> Option<(Uuid, i32)> {
        self.by_name.get(name).copied()
    }
    fn by_id(&self, id: &Uuid) -> Option<(&str, i32)> {
        self.by_name
            .iter()
            .find(|(_, (i, _))| i == id)
            .map(|(n, (_, p))| (n.as_str(), *p))
    }
    fn for_each_name(&self, f: &mut dyn FnMut(&str)) {
        for n in self.by_name.keys() {
            f(n);
        }
    }
}

pub(crate) struct H {
    pub(crate) c: GroupCoordinator,
    pub(crate) topics: Topics,
    pub(crate) now: i64,
    next: u64,
    pub(crate) log: Vec<Record>,
}

/// What a member believes: its id, epoch and owned partitions.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    pub(crate) id: String,
    pub(crate) epoch: i32,
    pub(crate) owned: BTreeMap<Uuid, BTreeSet<i32>>,
}

impl H {
    pub(crate) fn new() -> H {
        H {
            c: GroupCoordinator::new(GroupConfig::default()),
            topics: Topics::default(),
            now: 1_000,
            next: 0,
            log: Vec::new(),
        }
    }

    /// A fresh coordinator loaded from everything written so far.
    pub(crate) fn replayed(&self) -> GroupCoordinator {
        let mut fresh = GroupCoordinator::new(GroupConfig::default());
        for (k, v) in &self.log {
            fresh.replay(k, v.as_deref()).expect("replay");
        }
        fresh.finish_replay(self.now);
        fresh
    }

    pub(crate) fn ctx(&mut self, v: i16) -> RequestCtx<'static> {
        self.next += 1;
        RequestCtx {
            token: ReplyToken(self.next),
            api_version: v,
            now_ms: self.now,
            client_id: "cli",
            client_host: "/127.0.0.1",
        }
    }

    /// Performs effects: records go to the log; returns the reply of `token`.
    pub(crate) fn absorb(&mut self, token: ReplyToken, effects: Vec<Effect>) -> Option<Response> {
        let mut out = None;
        for e in effects {
            match e {
                Effect::Reply(t, r) if t == token => out = Some(r),
                Effect::PersistThenReply { records, replies } => {
                    self.log.extend(records);
                    for (t, r) in replies {
                        if t == token {
                            out = Some(r);
                        }
                    }
                }
                Effect::Persist(records) => self.log.extend(records),
                // Transactional offsets are not replayed here (they wait for a marker).
                Effect::PersistTxnThenReply { replies, .. } => {
                    for (t, r) in replies {
                        if t == token {
                            out = Some(r);
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    pub(crate) fn heartbeat(
        &mut self,
        req: ConsumerGroupHeartbeatRequest,
    ) -> ConsumerGroupHeartbeatResponse {
        let ctx = self.ctx(1);
        let effects = self.c.consumer_group_heartbeat(ctx, req, &self.topics);
        match self.absorb(ctx.token, effects) {
            Some(Response::ConsumerGroupHeartbeat(r)) => r,
            other => panic!("no heartbeat answer: {other:?}"),
        }
    }

    pub(crate) fn join(&mut self, id: &str, topics: &[&str]) -> Client {
        let mut c = Client {
            id: id.to_owned(),
            epoch: 0,
            owned: BTreeMap::new(),
        };
        let r = self.heartbeat(join_req(id, topics, None));
        assert_eq!(r.error_code, code::NONE, "{:?}", r.error_message);
        apply(&mut c, &r);
        c
    }

    /// One heartbeat of `c` reporting what it owns; applies the answer as a client does
    /// (revoking what is no longer assigned, then taking what is).
    pub(crate) fn beat(&mut self, c: &mut Client) -> ConsumerGroupHeartbeatResponse {
        let mut req = ConsumerGroupHeartbeatRequest::default();
        req.group_id = GroupId(s(G));
        req.member_id = s(&c.id);
        req.member_epoch = c.epoch;
        req.rebalance_timeout_ms = -1;
        req.topic_partitions = Some(owned(c));
        let r = self.heartbeat(req);
        if r.error_code == code::NONE {
            apply(c, &r);
        }
        r
    }

    /// Heartbeats every client until the group is stable (bounded).
    pub(crate) fn settle(&mut self, clients: &mut [&mut Client]) {
        for _ in 0..10 {
            for c in clients.iter_mut() {
                let r = self.beat(c);
                assert_eq!(r.error_code, code::NONE, "{:?}", r.error_message);
            }
            if self.c.consumer_group_state(G) == Some(ConsumerGroupState::Stable) {
                return;
            }
        }
        panic!("group never became stable");
    }
}

pub(crate) fn join_req(
    id: &str,
    topics: &[&str],
    instance: Option<&str>,
) -> ConsumerGroupHeartbeatRequest {
    let mut req = ConsumerGroupHeartbeatRequest::default();
    req.group_id = GroupId(s(G));
    req.member_id = s(id);
    req.member_epoch = 0;
    req.instance_id = instance.map(s);
    req.rebalance_timeout_ms = 30_000;
    req.subscribed_topic_names = Some(topics.iter().map(|t| TopicName(s(t))).collect());
    req.topic_partitions = Some(Vec::new());
    req
}

pub(crate) fn owned(c: &Client) -> Vec<TopicPartitions> {
    c.owned
        .iter()
        .map(|(t, ps)| {
            let mut tp = TopicPartitions::default();
            tp.topic_id = *t;
            tp.partitions = ps.iter().copied().collect();
            tp
        })
        .collect()
}

pub(crate) fn apply(c: &mut Client, r: &ConsumerGroupHeartbeatResponse) {
    c.epoch = r.member_epoch;
    if let Some(a) = &r.assignment {
        c.owned = a
            .topic_partitions
            .iter()
            .map(|t| (t.topic_id, t.partitions.iter().copied().collect()))
            .collect();
    }
}

pub(crate) fn count(c: &Client) -> usize {
    c.owned.values().map(|p| p.len()).sum()
}

/// No partition owned by two clients at once.
pub(crate) fn disjoint(clients: &[&Client]) {
    let mut seen = BTreeSet::new();
    for c in clients {
        for (t, ps) in &c.owned {
            for p in ps {
                assert!(seen.insert((*t, *p)), "{t}/{p} owned twice: {clients:?}");
            }
        }
    }
}

#[test]
fn three_members_split_six_partitions() {
    let mut h = H::new();
    h.topics.add("t", 6);
    let mut a = h.join("a", &["t"]);
    let mut b = h.join("b", &["t"]);
    let mut c = h.join("c", &["t"]);
    disjoint(&[&a, &b, &c]);
    h.settle(&mut [&mut a, &mut b, &mut c]);
    disjoint(&[&a, &b, &c]);
    assert_eq!((count(&a), count(&b), count(&c)), (2, 2, 2));
    assert_eq!(a.epoch, h.c.generation(G).unwrap());
    assert_eq!(
        h.heartbeat(join_req("d", &["t"], None))
            .heartbeat_interval_ms,
        CONSUMER_HEARTBEAT_INTERVAL_MS
    );
}

#[test]
fn a_joining_member_waits_for_partitions_to_be_revoked() {
    let mut h = H::new();
    h.topics.add("t", 4);
    let mut a = h.join("a", &["t"]);
    h.settle(&mut [&mut a]);
    assert_eq!(count(&a), 4);
    let a_epoch = a.epoch;
    let mut b = h.join("b", &["t"]);
    // b's target is held by a: b moves to the new epoch with nothing yet.
    assert_eq!(count(&b), 0);
    // a is told to give two up, and keeps its epoch until it has.
    let r = h.beat(&mut a);
    assert_eq!(r.member_epoch, a_epoch);
    assert_eq!(count(&a), 2);
    disjoint(&[&a, &b]);
    // b still gets nothing: a has not confirmed the revocation (its next heartbeat does).
    h.beat(&mut b);
    assert_eq!(count(&b), 0);
    let r = h.beat(&mut a);
    assert!(r.member_epoch > a_epoch);
    h.beat(&mut b);
    assert_eq!((count(&a), count(&b)), (2, 2));
    disjoint(&[&a, &b]);
    assert_eq!(
        h.c.consumer_group_state(G),
        Some(ConsumerGroupState::Stable)
    );
}

#[test]
fn epochs_are_fenced_as_kafka_fences_them() {
    let mut h = H::new();
    h.topics.add("t", 2);
    let mut a = h.join("a", &["t"]);
    h.settle(&mut [&mut a]);
    // A newer epoch than the member has.
    let mut bad = a.clone();
    bad.epoch += 5;
    assert_eq!(h.beat(&mut bad).error_code, code::FENCED_MEMBER_EPOCH);
    // The previous epoch with owned partitions inside the assignment: a lost answer.
    let mut b = h.join("b", &["t"]);
    h.settle(&mut [&mut a, &mut b]);
    let mut stale = a.clone();
    stale.epoch -= 1;
    stale.owned.clear();
    assert_eq!(h.beat(&mut stale).error_code, code::NONE);
    // An older epoch that is not the previous one.
    // A third member moves a to a third epoch: two behind is neither current nor previous.
    let mut c = h.join("c", &["t"]);
    h.settle(&mut [&mut a, &mut b, &mut c]);
    assert!(a.epoch >= 3, "three joins: {a:?}");
    let mut old = a.clone();
    old.epoch = a.epoch - 2;
    old.owned.clear();
    assert_eq!(h.beat(&mut old).error_code, code::FENCED_MEMBER_EPOCH);
    // Unknown members.
    let mut ghost = Client {
        id: "ghost".into(),
        epoch: 3,
        owned: BTreeMap::new(),
    };
    assert_eq!(h.beat(&mut ghost).error_code, code::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_silent_member_is_removed_after_its_session_and_others_take_over() {
    let mut h = H::new();
    h.topics.add("t", 4);
    let mut a = h.join("a", &["t"]);
    let mut b = h.join("b", &["t"]);
    h.settle(&mut [&mut a, &mut b]);
    let epoch = h.c.generation(G).unwrap();
    // a keeps heartbeating, b goes silent.
    for _ in 0..10 {
        h.now += i64::from(CONSUMER_HEARTBEAT_INTERVAL_MS);
        h.beat(&mut a);
        let effects = h.c.tick(h.now, &h.topics);
        h.absorb(ReplyToken(0), effects);
    }
    assert!(h.now - 1_000 > i64::from(CONSUMER_SESSION_TIMEOUT_MS));
    assert_eq!(h.c.members(G), vec!["a".to_string()]);
    assert!(h.c.generation(G).unwrap() > epoch);
    h.settle(&mut [&mut a]);
    assert_eq!(count(&a), 4);
}

#[test]
fn a_leaving_member_is_answered_with_epoch_minus_one() {
    let mut h = H::new();
    h.topics.add("t", 2);
    let mut a = h.join("a", &["t"]);
    h.settle(&mut [&mut a]);
    let mut req = ConsumerGroupHeartbeatRequest::default();
    req.group_id = GroupId(s(G));
    req.member_id = s("a");
    req.member_epoch = -1;
    let r = h.heartbeat(req);
    assert_eq!((r.error_code, r.member_epoch), (code::NONE, -1));
    assert!(h.c.members(G).is_empty());
    assert_eq!(h.c.consumer_group_state(G), Some(ConsumerGroupState::Empty));
}

#[test]
fn a_static_member_that_left_for_a_while_gets_its_partitions_back() {
    let mut h = H::new();
    h.topics.add("t", 4);
    let mut a = h.join_static("a1", "inst-a");
    let mut b = h.join("b", &["t"]);
    h.settle(&mut [&mut a, &mut b]);
    let a_parts = a.owned.clone();
    let epoch = h.c.generation(G).unwrap();
    // Another client with the same instance while a1 is active: refused.
    let r = h.heartbeat(join_req("a2", &["t"], Some("inst-a")));
    assert_eq!(r.error_code, code::UNRELEASED_INSTANCE_ID);
    // a1 leaves "for now" (-2), a2 takes its place: same partitions, no new group epoch.
    let mut req = ConsumerGroupHeartbeatRequest::default();
    req.group_id = GroupId(s(G));
    req.member_id = s("a1");
    req.instance_id = Some(s("inst-a"));
    req.member_epoch = -2;
    assert_eq!(h.heartbeat(req).member_epoch, -2);
    let a2 = h.join_static("a2", "inst-a");
    assert_eq!(a2.owned, a_parts);
    assert_eq!(h.c.generation(G).unwrap(), epoch);
    let mut members = h.c.members(G);
    members.sort();
    assert_eq!(members, vec!["a2".to_string(), "b".to_string()]);
}

impl H {
    fn join_static(&mut self, id: &str, instance: &str) -> Client {
        let mut c = Client {
            id: id.to_owned(),
            epoch: 0,
            owned: BTreeMap::new(),
        };
        let r = self.heartbeat(join_req(id, &["t"], Some(instance)));
        assert_eq!(r.error_code, code::NONE, "{:?}", r.error_message);
        apply(&mut c, &r);
        c
    }
}

#[test]
fn a_new_topic_matching_a_regex_is_assigned() {
    let mut h = H::new();
    h.topics.add("rx-1", 2);
    h.topics.add("other", 2);
    let mut req = join_req("a", &[], None);
    req.subscribed_topic_names = None;
    req.subscribed_topic_regex = Some(s("rx-.*"));
    let r = h.heartbeat(req);
    assert_eq!(r.error_code, code::NONE);
    let mut a = Client {
        id: "a".into(),
        epoch: 0,
        owned: BTreeMap::new(),
    };
    apply(&mut a, &r);
    h.settle(&mut [&mut a]);
    assert_eq!(count(&a), 2);
    let epoch = h.c.generation(G).unwrap();
    h.topics.add("rx-2", 3);
    h.settle(&mut [&mut a]);
    assert_eq!(count(&a), 5);
    assert!(h.c.generation(G).unwrap() > epoch);
}

#[test]
fn bad_heartbeats_get_kafkas_errors() {
    let mut h = H::new();
    h.topics.add("t", 2);
    let mut no_timeout = join_req("a", &["t"], None);
    no_timeout.rebalance_timeout_ms = -1;
    assert_eq!(h.heartbeat(no_timeout).error_code, code::INVALID_REQUEST);
    let mut no_sub = join_req("a", &["t"], None);
    no_sub.subscribed_topic_names = None;
    assert_eq!(h.heartbeat(no_sub).error_code, code::INVALID_REQUEST);
    let mut owned_on_join = join_req("a", &["t"], None);
    owned_on_join.topic_partitions = None;
    assert_eq!(h.heartbeat(owned_on_join).error_code, code::INVALID_REQUEST);
    let mut no_id = join_req("", &["t"], None);
    no_id.member_epoch = 0;
    assert_eq!(h.heartbeat(no_id).error_code, code::INVALID_REQUEST);
    let mut assignor = join_req("a", &["t"], None);
    assignor.server_assignor = Some(s("sticky-ish"));
    assert_eq!(h.heartbeat(assignor).error_code, code::UNSUPPORTED_ASSIGNOR);
    let mut regex = join_req("a", &[], None);
    regex.subscribed_topic_regex = Some(s("(unclosed"));
    assert_eq!(
        h.heartbeat(regex).error_code,
        code::INVALID_REGULAR_EXPRESSION
    );
    let mut epoch = join_req("a", &["t"], None);
    epoch.member_epoch = -3;
    assert_eq!(h.heartbeat(epoch).error_code, code::INVALID_REQUEST);
    let mut group = join_req("a", &["t"], None);
    group.group_id = GroupId(s(""));
    assert_eq!(h.heartbeat(group).error_code, code::INVALID_REQUEST);
    let mut blank = join_req("  ", &["t"], None);
    blank.member_epoch = 0;
    assert_eq!(h.heartbeat(blank).error_code, code::INVALID_REQUEST);
    let mut blank = join_req("a", &["t"], Some(" "));
    blank.member_epoch = 0;
    assert_eq!(h.heartbeat(blank).error_code, code::INVALID_REQUEST);
    // Nothing was stored by any of them.
    assert!(h.log.is_empty(), "{:?}", h.log);
    assert_eq!(h.c.group_count(), 0);
}

#[test]
fn offset_commits_check_the_member_epoch() {
    let mut h = H::new();
    h.topics.add("t", 2);
    let mut a = h.join("a", &["t"]);
    h.settle(&mut [&mut a]);
    let commit = |h: &mut H, member: &str, epoch: i32, v: i16| -> i16 {
        let mut p = OffsetCommitRequestPartition::default();
        p.partition_index = 0;
        p.committed_offset = 5;
        let mut t = OffsetCommitRequestTopic::default();
        t.name = TopicName(s("t"));
        t.partitions = vec![p];
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(s(G));
        req.member_id = s(member);
        req.generation_id_or_member_epoch = epoch;
        req.topics = vec![t];
        let ctx = h.ctx(v);
        let effects = h.c.offset_commit(ctx, req);
        match h.absorb(ctx.token, effects) {
            Some(Response::OffsetCommit(r)) => r.topics[0].partitions[0].error_code,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(commit(&mut h, "a", a.epoch, 9), code::NONE);
    assert_eq!(
        commit(&mut h, "a", a.epoch - 1, 9),
        code::STALE_MEMBER_EPOCH
    );
    assert_eq!(
        commit(&mut h, "a", a.epoch + 1, 9),
        code::STALE_MEMBER_EPOCH
    );
    assert_eq!(commit(&mut h, "zz", a.epoch, 9), code::UNKNOWN_MEMBER_ID);
    assert_eq!(commit(&mut h, "a", a.epoch, 8), code::UNSUPPORTED_VERSION);
    // An admin commit (no member, epoch -1) into a group with members is refused.
    assert_eq!(commit(&mut h, "", -1, 9), code::UNKNOWN_MEMBER_ID);
}

#[test]
fn replaying_the_records_rebuilds_the_group() {
    let mut h = H::new();
    h.topics.add("t", 6);
    let mut a = h.join("a", &["t"]);
    let mut b = h.join("b", &["t"]);
    h.settle(&mut [&mut a, &mut b]);
    let mut c = h.join("c", &["t"]);
    h.beat(&mut a);
    h.beat(&mut b);
    h.beat(&mut c);
    let fresh = h.replayed();
    assert_eq!(fresh.generation(G), h.c.generation(G));
    assert_eq!(fresh.members(G), h.c.members(G));
    assert_eq!(fresh.consumer_group_state(G), h.c.consumer_group_state(G));
    // The loaded coordinator keeps reconciling where the old one stopped.
    let old = std::mem::replace(&mut h.c, fresh);
    drop(old);
    h.settle(&mut [&mut a, &mut b, &mut c]);
    disjoint(&[&a, &b, &c]);
    assert_eq!((count(&a), count(&b), count(&c)), (2, 2, 2));
    // Describe and list see a consumer group.
    let ctx = h.ctx(0);
    let mut req = ConsumerGroupDescribeRequest::default();
    req.group_ids = vec![GroupId(s(G)), GroupId(s("missing"))];
    let effects = h.c.consumer_group_describe(ctx, req, &h.topics);
    let Some(Response::ConsumerGroupDescribe(d)) = h.absorb(ctx.token, effects) else {
        panic!("no describe answer");
    };
    assert_eq!(d.groups[0].group_state.as_str(), "Stable");
    assert_eq!(d.groups[0].members.len(), 3);
    assert_eq!(d.groups[1].error_code, code::GROUP_ID_NOT_FOUND);
    let names: HashMap<_, _> = d.groups[0]
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.assignment.topic_partitions.len()))
        .collect();
    assert_eq!(names.len(), 3);
    let ctx = h.ctx(5);
    let effects = h.c.list_groups(ctx, ListGroupsRequest::default());
    let Some(Response::ListGroups(l)) = h.absorb(ctx.token, effects) else {
        panic!("no list answer");
    };
    assert_eq!(l.groups[0].group_type.as_str(), "consumer");
}

/// A small seeded generator (xorshift), so a failing seed replays exactly.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// A simulated client: what it believes, whether it still runs, and whether its next
/// heartbeat must be a full one (after a lost answer, as the Java client and librdkafka do).
struct SimClient {
    c: Client,
    topics: Vec<&'static str>,
    alive: bool,
    full_next: bool,
    /// `group.instance.id` of a static member.
    instance: Option<String>,
}

impl SimClient {
    /// A running client that has not joined yet.
    fn new(id: String, topics: Vec<&'static str>, instance: Option<String>) -> Self {
        SimClient {
            c: Client {
                id,
                epoch: 0,
                owned: BTreeMap::new(),
            },
            topics,
            alive: true,
            full_next: true,
            instance,
        }
    }
}

impl H {
    fn sim_beat(&mut self, sc: &mut SimClient, lose_answer: bool) {
        let mut req = ConsumerGroupHeartbeatRequest::default();
        req.group_id = GroupId(s(G));
        req.member_id = s(&sc.c.id);
        req.member_epoch = sc.c.epoch;
        req.instance_id = sc.instance.as_deref().map(s);
        req.topic_partitions = Some(owned(&sc.c));
        if sc.full_next || sc.c.epoch == 0 {
            req.rebalance_timeout_ms = 30_000;
            req.subscribed_topic_names = Some(sc.topics.iter().map(|t| TopicName(s(t))).collect());
        } else {
            req.rebalance_timeout_ms = -1;
        }
        if sc.c.epoch == 0 {
            req.topic_partitions = Some(Vec::new());
        }
        let r = self.heartbeat(req);
        if lose_answer {
            sc.full_next = true;
            return;
        }
        sc.full_next = false;
        match r.error_code {
            code::NONE => apply(&mut sc.c, &r),
            code::FENCED_MEMBER_EPOCH | code::UNKNOWN_MEMBER_ID => {
                // The client gives everything up and joins again under the same id.
                sc.c.owned.clear();
                sc.c.epoch = 0;
            }
            // A restarted static member whose previous incarnation died without leaving:
            // it tries again until that one's session runs out.
            code::UNRELEASED_INSTANCE_ID if sc.c.epoch == 0 => {}
            other => panic!("unexpected error {other}: {:?}", r.error_message),
        }
    }
}

/// Random joins, leaves, deaths, lost answers, subscription changes, topic growth and time
/// passing: at every step no partition is believed owned by two running clients, and at the
/// end the running clients own every subscribed partition once and the log replays to the
/// same group. `SLUICE_CONSUMER_SIM_SEEDS=N` runs more seeds.
#[test]
fn random_heartbeats_never_give_a_partition_to_two_members() {
    let seeds: u64 = std::env::var("SLUICE_CONSUMER_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    for seed in 1..=seeds {
        simulate(seed);
    }
    eprintln!(
        "{seeds} seeds: {} static restarts after leaving for now, {} zombie heartbeats fenced",
        RESTARTS.load(Ordering::Relaxed),
        ZOMBIES.load(Ordering::Relaxed)
    );
}

static RESTARTS: AtomicUsize = AtomicUsize::new(0);
static ZOMBIES: AtomicUsize = AtomicUsize::new(0);

fn simulate(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut h = H::new();
    h.topics.add("t", 1 + rng.below(8) as i32);
    h.topics.add("u", 1 + rng.below(4) as i32);
    let mut clients: Vec<SimClient> = Vec::new();
    let mut next_id = 0;
    for _step in 0..300 {
        match rng.below(20) {
            0..=1 if clients.iter().filter(|c| c.alive).count() < 6 => {
                next_id += 1;
                let topics = if rng.below(2) == 0 {
                    vec!["t"]
                } else {
                    vec!["t", "u"]
                };
                let instance = (rng.below(3) == 0).then(|| format!("i{next_id}"));
                clients.push(SimClient::new(format!("m{next_id}"), topics, instance));
            }
            2 => {
                // A graceful leave; a static member may leave "for now" (-2) and restart
                // under a new member id with the same instance.
                let for_now = rng.below(2) == 0;
                let mut restarted = None;
                if let Some(sc) = clients.iter_mut().find(|c| c.alive && c.c.epoch > 0) {
                    let mut req = ConsumerGroupHeartbeatRequest::default();
                    req.group_id = GroupId(s(G));
                    req.member_id = s(&sc.c.id);
                    req.instance_id = sc.instance.as_deref().map(s);
                    req.member_epoch = if for_now && sc.instance.is_some() {
                        -2
                    } else {
                        -1
                    };
                    let r = h.heartbeat(req);
                    // Unknown: its session ran out while it was slow.
                    assert!(
                        matches!(r.error_code, code::NONE | code::UNKNOWN_MEMBER_ID),
                        "seed {seed}: {:?}",
                        r.error_message
                    );
                    sc.alive = false;
                    sc.c.owned.clear();
                    if r.error_code == code::NONE && r.member_epoch == -2 {
                        restarted = Some((sc.topics.clone(), sc.instance.clone()));
                    }
                }
                if let Some((topics, instance)) = restarted {
                    RESTARTS.fetch_add(1, Ordering::Relaxed);
                    next_id += 1;
                    clients.push(SimClient::new(format!("m{next_id}"), topics, instance));
                }
            }
            7 => {
                // A zombie of a static member whose instance another incarnation now holds:
                // fenced, whatever it says.
                let holders: BTreeMap<String, String> = clients
                    .iter()
                    .filter(|c| c.alive && c.c.epoch > 0)
                    .filter_map(|c| Some((c.instance.clone()?, c.c.id.clone())))
                    .collect();
                let zombie = clients.iter().find(|c| {
                    !c.alive
                        && c.instance
                            .as_ref()
                            .and_then(|i| holders.get(i))
                            .is_some_and(|holder| *holder != c.c.id)
                });
                if let Some(z) = zombie {
                    let mut req = ConsumerGroupHeartbeatRequest::default();
                    req.group_id = GroupId(s(G));
                    req.member_id = s(&z.c.id);
                    req.instance_id = z.instance.as_deref().map(s);
                    req.member_epoch = [z.c.epoch.max(1), -1, -2][rng.below(3) as usize];
                    req.topic_partitions = Some(owned(&z.c));
                    let r = h.heartbeat(req);
                    assert_eq!(r.error_code, code::FENCED_INSTANCE_ID, "seed {seed}");
                    ZOMBIES.fetch_add(1, Ordering::Relaxed);
                }
            }
            3 => {
                // Dies without a word: a zombie until its session runs out.
                let n = clients.len() as u64;
                if let Some(sc) = clients.get_mut(rng.below(n) as usize) {
                    sc.alive = false;
                }
            }
            4 => {
                let n = clients.len() as u64;
                if let Some(sc) = clients.get_mut(rng.below(n) as usize) {
                    if sc.alive {
                        sc.topics = if sc.topics.len() == 1 {
                            vec!["t", "u"]
                        } else {
                            vec!["t"]
                        };
                        sc.full_next = true;
                    }
                }
            }
            5 => {
                let name = if rng.below(2) == 0 { "t" } else { "u" };
                let (_, p) = h.topics.by_name[name];
                if p < 12 {
                    h.topics.by_name.get_mut(name).unwrap().1 = p + 1;
                    h.topics.version += 1;
                }
            }
            6 => {
                // Time passes; every running client has heartbeated within it.
                h.now += 1_000 + rng.below(4_000) as i64;
                let effects = h.c.tick(h.now, &h.topics);
                h.absorb(ReplyToken(0), effects);
            }
            _ => {
                let n = clients.len() as u64;
                let i = rng.below(n) as usize;
                let lose = rng.below(10) == 0;
                if let Some(sc) = clients.get_mut(i) {
                    if sc.alive {
                        let mut sc2 =
                            std::mem::replace(sc, SimClient::new(String::new(), Vec::new(), None));
                        h.sim_beat(&mut sc2, lose);
                        clients[i] = sc2;
                    }
                }
            }
        }
        let live: Vec<&Client> = clients.iter().filter(|c| c.alive).map(|c| &c.c).collect();
        disjoint(&live);
    }
    // Everyone still running heartbeats while the dead time out: the group converges.
    for _ in 0..40 {
        h.now += 3_000;
        let effects = h.c.tick(h.now, &h.topics);
        h.absorb(ReplyToken(0), effects);
        for sc in clients.iter_mut().filter(|c| c.alive) {
            h.sim_beat(sc, false);
        }
        let live: Vec<&Client> = clients.iter().filter(|c| c.alive).map(|c| &c.c).collect();
        disjoint(&live);
    }
    let live: Vec<&Client> = clients.iter().filter(|c| c.alive).map(|c| &c.c).collect();
    if !live.is_empty() {
        assert_eq!(
            h.c.consumer_group_state(G),
            Some(ConsumerGroupState::Stable),
            "seed {seed}"
        );
        let mut want = 0;
        let subscribed_u = clients.iter().any(|c| c.alive && c.topics.contains(&"u"));
        for (name, (_, p)) in &h.topics.by_name {
            if name == "t" || subscribed_u {
                want += *p as usize;
            }
        }
        let have: usize = live.iter().map(|c| count(c)).sum();
        assert_eq!(have, want, "seed {seed}: not every partition is owned");
    }
    let fresh = h.replayed();
    assert_eq!(fresh.generation(G), h.c.generation(G), "seed {seed}");
    assert_eq!(fresh.members(G), h.c.members(G), "seed {seed}");
    assert_eq!(
        fresh.consumer_group_state(G),
        h.c.consumer_group_state(G),
        "seed {seed}"
    );
}

#[test]
fn offset_fetch_v9_checks_the_member_epoch() {
    use sluice_codec::kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
    use sluice_codec::kafka_protocol::messages::OffsetFetchRequest;
    let mut h = H::new();
    h.topics.add("t", 2);
    let mut a = h.join("a", &["t"]);
    h.settle(&mut [&mut a]);
    let fetch = |h: &mut H, member: Option<&str>, epoch: i32| -> i16 {
        let mut g = OffsetFetchRequestGroup::default();
        g.group_id = GroupId(s(G));
        g.member_id = member.map(s);
        g.member_epoch = epoch;
        let mut req = OffsetFetchRequest::default();
        req.groups = vec![g];
        let ctx = h.ctx(9);
        let effects = h.c.offset_fetch(ctx, req);
        match h.absorb(ctx.token, effects) {
            Some(Response::OffsetFetch(r)) => r.groups[0].error_code,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(fetch(&mut h, Some("a"), a.epoch), code::NONE);
    assert_eq!(fetch(&mut h, None, -1), code::NONE, "an admin fetch");
    assert_eq!(
        fetch(&mut h, Some("a"), a.epoch - 1),
        code::STALE_MEMBER_EPOCH
    );
    assert_eq!(
        fetch(&mut h, Some("a"), a.epoch + 1),
        code::STALE_MEMBER_EPOCH
    );
    assert_eq!(fetch(&mut h, Some("b"), a.epoch), code::UNKNOWN_MEMBER_ID);
}

/// A heartbeat from `id` at `epoch` as static member `instance` (leave: -1 or -2).
fn static_beat(h: &mut H, id: &str, instance: &str, epoch: i32) -> ConsumerGroupHeartbeatResponse {
    let mut req = ConsumerGroupHeartbeatRequest::default();
    req.group_id = GroupId(s(G));
    req.member_id = s(id);
    req.instance_id = Some(s(instance));
    req.member_epoch = epoch;
    h.heartbeat(req)
}

#[test]
fn static_leaves_are_checked_and_release_what_was_being_revoked() {
    let mut h = H::new();
    h.topics.add("t", 4);
    let mut a = h.join_static("a1", "inst-a");
    h.settle(&mut [&mut a]);
    let mut b = h.join("b", &["t"]);
    // a is told to give up two partitions and stops before confirming.
    h.beat(&mut a);
    assert_eq!(count(&a), 2);
    assert_eq!(count(&b), 0);
    let logged = h.log.len();
    // Zombies of the instance (another member id) are fenced, leaving or not; an unknown
    // instance is an unknown member. Instance checks come before the member id's.
    for epoch in [-2, -1, a.epoch] {
        let r = static_beat(&mut h, "zombie", "inst-a", epoch);
        assert_eq!(r.error_code, code::FENCED_INSTANCE_ID, "epoch {epoch}");
    }
    assert_eq!(
        static_beat(&mut h, "a1", "inst-nobody", -2).error_code,
        code::UNKNOWN_MEMBER_ID
    );
    assert_eq!(h.log.len(), logged, "refused leaves store nothing");
    // a1 leaves for now: it keeps its two partitions, and the two it was revoking are
    // free for b at once.
    let r = static_beat(&mut h, "a1", "inst-a", -2);
    assert_eq!((r.error_code, r.member_epoch), (code::NONE, -2));
    h.beat(&mut b);
    assert_eq!(count(&b), 2);
    disjoint(&[&a, &b]);
    // The instance comes back under a new id with the partitions it kept.
    let a2 = h.join_static("a2", "inst-a");
    assert_eq!(a2.owned, a.owned);
    disjoint(&[&a2, &b]);
    let fresh = h.replayed();
    let mut members = fresh.members(G);
    members.sort();
    assert_eq!(members, vec!["a2".to_string(), "b".to_string()]);
}

#[test]
fn every_revocation_step_gets_a_full_rebalance_timeout() {
    let mut h = H::new();
    h.topics.add("t", 6);
    let mut a = h.join("a", &["t"]);
    h.settle(&mut [&mut a]);
    assert_eq!(count(&a), 6);
    // b joins: a must give up three; it answers, but keeps them a while.
    let _b = h.join("b", &["t"]);
    let mut still = a.clone();
    h.beat(&mut a);
    assert_eq!(count(&a), 3);
    h.now += 25_000;
    let _c = h.join("c", &["t"]);
    still.epoch = a.epoch;
    h.beat(&mut still);
    // 25 s into its 30 s rebalance timeout a reports the three gone; the group has moved
    // on meanwhile, so it must now give up one more: a new step, with a new 30 s, one
    // epoch on (Kafka moves a member that completed a revocation to its next epoch).
    let before = a.epoch;
    let r = h.beat(&mut a);
    assert_eq!(r.error_code, code::NONE);
    assert_eq!(count(&a), 2);
    assert_eq!(r.member_epoch, before + 1);
    assert!(r.member_epoch < h.c.generation(G).unwrap());
    h.now += 20_000;
    let effects = h.c.tick(h.now, &h.topics);
    h.absorb(ReplyToken(0), effects);
    assert!(
        h.c.members(G).contains(&"a".to_string()),
        "a is within the timeout of its second step"
    );
    h.now += 15_000;
    let effects = h.c.tick(h.now, &h.topics);
    h.absorb(ReplyToken(0), effects);
    assert!(!h.c.members(G).contains(&"a".to_string()));
}

#[test]
fn txn_offset_commits_of_consumer_members_check_the_member_epoch() {
    use sluice_codec::kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use sluice_codec::kafka_protocol::messages::{
        ProducerId, TransactionalId, TxnOffsetCommitRequest,
    };
    let mut h = H::new();
    h.topics.add("t", 2);
    let mut a = h.join("a", &["t"]);
    h.settle(&mut [&mut a]);
    let commit = |h: &mut H, member: &str, epoch: i32| -> i16 {
        let mut p = TxnOffsetCommitRequestPartition::default();
        p.partition_index = 0;
        p.committed_offset = 5;
        let mut t = TxnOffsetCommitRequestTopic::default();
        t.name = TopicName(s("t"));
        t.partitions = vec![p];
        let mut req = TxnOffsetCommitRequest::default();
        req.transactional_id = TransactionalId(s("tx"));
        req.group_id = GroupId(s(G));
        req.producer_id = ProducerId(7);
        req.member_id = s(member);
        req.generation_id = epoch;
        req.topics = vec![t];
        let ctx = h.ctx(4);
        let effects = h.c.txn_offset_commit(ctx, req);
        match h.absorb(ctx.token, effects) {
            Some(Response::TxnOffsetCommit(r)) => r.topics[0].partitions[0].error_code,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(commit(&mut h, "a", a.epoch), code::NONE);
    // TxnOffsetCommit has no STALE_MEMBER_EPOCH: any other epoch is ILLEGAL_GENERATION.
    for epoch in [a.epoch - 1, a.epoch + 1] {
        assert_eq!(commit(&mut h, "a", epoch), code::ILLEGAL_GENERATION);
    }
    assert_eq!(commit(&mut h, "zz", a.epoch), code::UNKNOWN_MEMBER_ID);
}

#[test]
fn an_assignor_change_alone_does_not_bump_the_group_epoch() {
    let mut h = H::new();
    h.topics.add("t", 2);
    let mut a = h.join("a", &["t"]);
    h.settle(&mut [&mut a]);
    let epoch = h.c.generation(G).unwrap();
    let mut req = ConsumerGroupHeartbeatRequest::default();
    req.group_id = GroupId(s(G));
    req.member_id = s("a");
    req.member_epoch = a.epoch;
    req.rebalance_timeout_ms = -1;
    req.server_assignor = Some(s("range"));
    let r = h.heartbeat(req);
    assert_eq!(r.error_code, code::NONE);
    assert_eq!(h.c.generation(G), Some(epoch));
}
