//! Drives the sans-IO group coordinators (`sluice-group`) on the shard that owns each
//! `__consumer_offsets` partition: loads them from the log, turns their effects into log
//! appends, replies and timers, and runs group requests routed here.
//!
//! A single-replica offsets partition is coordinated where it lives: records are appended
//! to its log and replies wait for the fsync. A replicated one (Raft, see `replication`) has
//! a slot on every replica, but only the replica serving as leader coordinates: it loads
//! the groups from its log once everything committed before its term is readable there
//! (`Replication::watch_leadership`), proposes records to the Raft group and answers once
//! they commit on a quorum (Kafka: OffsetCommit waits for the offsets topic's acks=all
//! append); when the leadership goes, the slot stops serving at once and its waiting
//! requests get NOT_COORDINATOR, so clients look the coordinator up again.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use glommio::channels::local_channel::{self, LocalSender};
use sluice_codec::kafka_protocol::messages::*;
use sluice_codec::kafka_protocol::protocol::{Decodable, Encodable};
use sluice_group::{
    persist_failed_with, Effect, GroupConfig, GroupCoordinator, ReplyToken, RequestCtx, Response,
    TopicsView,
};
use sluice_shard::DmaStorage;
use sluice_storage::PartitionLog;

use crate::coord_log::{CoordLog, Pending, State};
use crate::groups::{decode_loaded, partition_for, Loaded, OFFSETS_TOPIC};
use crate::kerr::{COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR, UNSUPPORTED_VERSION};
use crate::replication::Replication;
use crate::shard::{now_ms, BrokerShard};

/// First tick after loading.
const TICK_MAX: Duration = Duration::from_millis(1000);

/// One coordinator and its partition log, on the shard owning (a replica of) the partition.
pub struct GroupSlot {
    pub topic_id: [u8; 16],
    pub partition: i32,
    log: CoordLog,
    coord: RefCell<GroupCoordinator>,
    /// The settings every (re)loaded coordinator starts with.
    config: GroupConfig,
    next_token: Cell<u64>,
    waiters: RefCell<HashMap<u64, LocalSender<Response>>>,
    /// Transaction markers appended while the groups load: (offset, producer id, commit).
    held_markers: RefCell<Vec<(i64, i64, bool)>>,
    /// The shard, for its topic table on a timer (Weak: the shard owns this slot).
    shard: Weak<BrokerShard>,
}

/// Markers held during one load (see [`GroupSlot::complete_txn`]).
const HELD_MARKERS_MAX: usize = 100_000;

impl GroupSlot {
    /// This slot's groups and committed offsets, for `/metrics`.
    pub fn metrics(
        &self,
        groups: &mut Vec<sluice_metrics::snapshot::GroupSample>,
        committed: &mut Vec<sluice_metrics::snapshot::CommittedSample>,
    ) {
        for g in self.coord.borrow().overview() {
            groups.push(sluice_metrics::snapshot::GroupSample {
                group: g.id.to_string(),
                state: g.state.to_string(),
                members: g.members as u64,
            });
            committed.extend(g.offsets.iter().map(|&(topic, partition, offset)| {
                sluice_metrics::snapshot::CommittedSample {
                    group: g.id.to_string(),
                    topic: topic.to_string(),
                    partition,
                    offset,
                }
            }));
        }
    }

    /// The coordinator of a single-replica partition: it serves at once (call
    /// [`Self::reload`] to load it).
    pub fn local(
        topic_id: [u8; 16],
        partition: i32,
        log: Rc<PartitionLog<DmaStorage>>,
        config: GroupConfig,
        shard: Weak<BrokerShard>,
    ) -> Rc<GroupSlot> {
        Self::new(
            CoordLog::local(OFFSETS_TOPIC, topic_id, partition, log),
            config,
            shard,
        )
    }

    /// The coordinator slot of a replicated partition's replica: it serves only while
    /// [`Self::set_leader`] says so.
    pub fn replicated(
        topic_id: [u8; 16],
        partition: i32,
        log: Rc<PartitionLog<DmaStorage>>,
        rep: Rc<Replication>,
        group: sluice_raft::GroupId,
        config: GroupConfig,
        shard: Weak<BrokerShard>,
    ) -> Rc<GroupSlot> {
        Self::new(
            CoordLog::replicated(OFFSETS_TOPIC, topic_id, partition, log, rep, group),
            config,
            shard,
        )
    }

    fn new(log: CoordLog, config: GroupConfig, shard: Weak<BrokerShard>) -> Rc<GroupSlot> {
        Rc::new(GroupSlot {
            topic_id: log.topic_id,
            partition: log.partition,
            log,
            coord: RefCell::new(GroupCoordinator::new(config.clone())),
            config,
            next_token: Cell::new(1),
            waiters: RefCell::new(HashMap::new()),
            held_markers: RefCell::new(Vec::new()),
            shard,
        })
    }

    /// How this slot serves its groups now.
    fn serving(self: &Rc<Self>) -> Serving {
        match self.log.state() {
            State::Loaded => Serving::Loaded(self.clone()),
            State::Loading => Serving::Loading,
            State::Elsewhere => Serving::Elsewhere,
        }
    }

    /// This replica started (`Some(term)`) or stopped (`None`) serving as the partition's
    /// leader (`Replication::watch_leadership`).
    pub fn set_leader(self: &Rc<Self>, term: Option<u64>) {
        if self.log.leadership(term, "groups") {
            self.reload();
        } else {
            self.unload();
        }
    }

    /// Stops serving: requests waiting here get NOT_COORDINATOR (their reply channels
    /// close), and the groups' state goes until the next load.
    pub fn unload(&self) {
        self.log.next_generation();
        self.log.set_leading(false);
        self.waiters.borrow_mut().clear();
        self.held_markers.borrow_mut().clear();
        if let Ok(mut c) = self.coord.try_borrow_mut() {
            *c = GroupCoordinator::new(self.config.clone());
        }
    }

    /// The partition's log was replaced (a snapshot reset this replica): later loads read
    /// the new one.
    pub fn replace_log(self: &Rc<Self>, log: Rc<PartitionLog<DmaStorage>>) {
        self.log.replace_log(log);
        if self.log.is_leading() {
            self.reload();
        }
    }

    /// Rebuilds the coordinator from the log (in the background); until it is done,
    /// requests get COORDINATOR_LOAD_IN_PROGRESS, and requests waiting on the old state
    /// (a JoinGroup in a rebalance) get NOT_COORDINATOR, as at a Kafka coordinator's
    /// resignation. On a replicated partition the load first waits until everything this
    /// leader proposed so far has settled (`CoordLog::settle_before_load`).
    pub fn reload(self: &Rc<Self>) {
        let generation = self.log.next_generation();
        self.waiters.borrow_mut().clear();
        let me = self.clone();
        glommio::spawn_local(async move {
            if me.log.settle_before_load(generation).await {
                me.load(generation).await
            }
        })
        .detach();
    }

    /// Replays the partition into a fresh coordinator, then starts its ticker; dropped if
    /// the slot's generation moved on meanwhile.
    async fn load(self: &Rc<Self>, generation: u64) {
        let mut coord = GroupCoordinator::new(self.config.clone());
        let mut records = 0usize;
        let name = self.log.name();
        let complete = self
            .log
            .replay(generation, |batches| {
                for loaded in decode_loaded(batches) {
                    let replayed = match loaded {
                        Loaded::Record {
                            producer_id: None,
                            key,
                            value,
                        } => coord.replay(&key, value.as_deref()),
                        // TxnOffsetCommit's offsets: pending until the producer's marker.
                        Loaded::Record {
                            producer_id: Some(pid),
                            key,
                            value,
                        } => coord.replay_txn(pid, &key, value.as_deref()),
                        Loaded::Marker {
                            producer_id,
                            commit,
                        } => {
                            coord.complete_txn(producer_id, commit);
                            continue;
                        }
                    };
                    records += 1;
                    if let Err(e) = replayed {
                        log::warn!("{name}: skipping record: {e}");
                    }
                }
            })
            .await;
        let Some(replayed_to) = complete else {
            return;
        };
        // Markers appended while this load ran and past what it read: applied now, in
        // order (those it read are in `coord` already).
        for (offset, producer_id, commit) in std::mem::take(&mut *self.held_markers.borrow_mut()) {
            if offset >= replayed_to {
                coord.complete_txn(producer_id, commit);
            }
        }
        let effects = coord.finish_replay(now_ms());
        *self.coord.borrow_mut() = coord;
        if !self.log.finish_load(generation) {
            return;
        }
        if records > 0 {
            log::info!(
                "{name}: loaded {} group(s) from {records} record(s)",
                self.coord.borrow().group_count()
            );
        }
        self.perform(effects);
        // A first tick soon after loading expires sessions of members that did not return.
        self.schedule_tick(now_ms() + TICK_MAX.as_millis() as i64);
    }

    /// Runs `tick` at `at_ms` unless an earlier timer already covers it. One short-lived
    /// timer task per earlier hint; `tick` is idempotent, so a superseded timer is harmless.
    fn schedule_tick(self: &Rc<Self>, at_ms: i64) {
        if !self.log.claim_tick(at_ms) {
            return;
        }
        let me = self.clone();
        glommio::spawn_local(async move {
            let wait = (at_ms - now_ms()).clamp(0, i64::MAX / 2) as u64;
            glommio::timer::sleep(Duration::from_millis(wait)).await;
            if !me.log.fire_tick(at_ms) {
                return; // reloaded, or a later tick already ran past this one
            }
            // A shard that is gone is shutting down: no topics, and nothing left to serve.
            let Some(shard) = me.shard.upgrade() else {
                return;
            };
            let topics = TopicsImage(shard.topics());
            let effects = me.coord.borrow_mut().tick(now_ms(), &topics);
            me.perform(effects);
        })
        .detach();
    }

    fn deliver(&self, token: ReplyToken, response: Response) {
        if let Some(tx) = self.waiters.borrow_mut().remove(&token.0) {
            let _ = tx.try_send(response);
        }
    }

    /// Carries out a coordinator's effects in order. Writes start here, in effect order
    /// (appends and proposals are synchronous); only their waits run in the background.
    fn perform(self: &Rc<Self>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Reply(token, response) => self.deliver(token, response),
                Effect::PersistThenReply { records, replies } => {
                    let pending = self.log.write(&records);
                    self.settle_then_reply(pending, replies)
                }
                Effect::Persist(records) => {
                    let pending = self.log.write(&records);
                    self.settle_then_reply(pending, Vec::new())
                }
                // TxnOffsetCommit's offsets: a transactional batch of the producer, which its
                // transaction's marker later commits or aborts here.
                Effect::PersistTxnThenReply {
                    producer_id,
                    producer_epoch,
                    records,
                    replies,
                } => {
                    let batch = crate::groups::encode_txn_records(
                        &records,
                        producer_id,
                        producer_epoch,
                        now_ms(),
                    );
                    let pending = self.log.write_batch(batch);
                    self.settle_then_reply(pending, replies)
                }
                Effect::ScheduleTick { at_ms } => self.schedule_tick(at_ms),
            }
        }
    }

    /// Sends `replies` once the write is durable (their failed versions if it fails).
    fn settle_then_reply(self: &Rc<Self>, pending: Pending, replies: Vec<(ReplyToken, Response)>) {
        let me = self.clone();
        let generation = self.log.generation();
        glommio::spawn_local(async move {
            let durable = me.log.settle(pending).await;
            if let Err(e) = &durable {
                log::error!("{}: persisting group state: {}", me.log.name(), e.why);
            }
            for (token, response) in replies {
                let response = match &durable {
                    Ok(()) => response,
                    Err(e) => persist_failed_with(response, e.code),
                };
                me.deliver(token, response);
            }
            // A failed write: the in-memory state may hold what the log does not, so
            // (unless the slot moved on, e.g. lost its leadership) it is rebuilt from the
            // log, the truth.
            if durable.is_err() && me.log.generation() == generation && me.log.is_leading() {
                me.reload();
            }
        })
        .detach();
    }

    /// A marker of a transaction with offsets in this partition was written here at
    /// `offset`: its producer's pending offsets are committed or dropped (Kafka's
    /// coordinator applies them when the marker is appended). While the groups load, it is
    /// held for the load to apply if its replay did not reach it.
    pub fn complete_txn(self: &Rc<Self>, offset: i64, producer_id: i64, commit: bool) {
        if self.log.is_serving() {
            self.coord.borrow_mut().complete_txn(producer_id, commit);
        } else if self.log.is_leading() {
            let mut held = self.held_markers.borrow_mut();
            if held.len() < HELD_MARKERS_MAX {
                held.push((offset, producer_id, commit));
                return;
            }
            // Too many for one load to hold: a new load reads them all from the log.
            held.clear();
            drop(held);
            log::warn!(
                "{}: {HELD_MARKERS_MAX} markers arrived during one load; loading again",
                self.log.name()
            );
            self.reload();
        }
    }

    /// Runs one request against the coordinator and waits for its (possibly delayed) reply.
    async fn call(
        self: &Rc<Self>,
        op: impl FnOnce(&mut GroupCoordinator, RequestCtx<'_>) -> Vec<Effect>,
        version: i16,
        client_id: &str,
        client_host: &str,
    ) -> Option<Response> {
        // The caller's routing may predate an await (a multi-group request's earlier
        // coordinator calls): a slot that stopped serving meanwhile runs nothing.
        if !self.log.is_serving() {
            return None;
        }
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let (tx, rx) = local_channel::new_bounded::<Response>(1);
        self.waiters.borrow_mut().insert(token, tx);
        let ctx = RequestCtx {
            token: ReplyToken(token),
            api_version: version,
            now_ms: now_ms(),
            client_id,
            client_host,
        };
        let effects = op(&mut self.coord.borrow_mut(), ctx);
        self.perform(effects);
        let r = rx.recv().await;
        self.waiters.borrow_mut().remove(&token);
        r
    }
}

/// The coordinator's view of the topics: this shard's metadata image.
struct TopicsImage(Rc<crate::topics::TopicTable>);

impl TopicsView for TopicsImage {
    fn version(&self) -> u64 {
        self.0.version()
    }

    fn by_name(&self, name: &str) -> Option<(uuid::Uuid, i32)> {
        self.0
            .get(name)
            .map(|t| (uuid::Uuid::from_bytes(t.id), t.partitions))
    }

    fn by_id(&self, id: &uuid::Uuid) -> Option<(&str, i32)> {
        self.0
            .get_by_id(id.as_bytes())
            .map(|t| (t.name.as_str(), t.partitions))
    }

    fn for_each_name(&self, f: &mut dyn FnMut(&str)) {
        for t in self.0.topics() {
            f(&t.name);
        }
    }
}

/// The group ids a request names (for routing); empty for ListGroups.
pub fn group_ids(req: &RequestKind, version: i16) -> Option<Vec<String>> {
    Some(match req {
        RequestKind::JoinGroup(r) => vec![r.group_id.0.to_string()],
        RequestKind::SyncGroup(r) => vec![r.group_id.0.to_string()],
        RequestKind::Heartbeat(r) => vec![r.group_id.0.to_string()],
        RequestKind::LeaveGroup(r) => vec![r.group_id.0.to_string()],
        RequestKind::OffsetCommit(r) => vec![r.group_id.0.to_string()],
        RequestKind::OffsetDelete(r) => vec![r.group_id.0.to_string()],
        RequestKind::TxnOffsetCommit(r) => vec![r.group_id.0.to_string()],
        RequestKind::OffsetFetch(r) if version >= 8 => {
            r.groups.iter().map(|g| g.group_id.0.to_string()).collect()
        }
        RequestKind::OffsetFetch(r) => vec![r.group_id.0.to_string()],
        RequestKind::DescribeGroups(r) => r.groups.iter().map(|g| g.0.to_string()).collect(),
        RequestKind::DeleteGroups(r) => r.groups_names.iter().map(|g| g.0.to_string()).collect(),
        RequestKind::ListGroups(_) => Vec::new(),
        RequestKind::ConsumerGroupHeartbeat(r) => vec![r.group_id.0.to_string()],
        RequestKind::ConsumerGroupDescribe(r) => {
            r.group_ids.iter().map(|g| g.0.to_string()).collect()
        }
        _ => return None,
    })
}

fn partitions(shard: &BrokerShard) -> Option<([u8; 16], i32)> {
    shard
        .topics()
        .get(OFFSETS_TOPIC)
        .map(|t| (t.id, t.partitions))
}

/// Runs a group request on this shard (which owns the groups' partitions), authorized
/// for `client` first under `--authorizer acl` (`crate::group_acl`).
pub async fn run_local(
    shard: &Rc<BrokerShard>,
    req: RequestKind,
    version: i16,
    client_id: &str,
    client: &crate::conn::Client,
) -> Option<Response> {
    let with_operations = match &req {
        RequestKind::DescribeGroups(r) => r.include_authorized_operations,
        RequestKind::ConsumerGroupDescribe(r) => r.include_authorized_operations,
        _ => false,
    };
    // v10 topic ids become names here, after any hop (see `crate::group_topic_ids`).
    let mut req = req;
    let unresolved = crate::group_topic_ids::resolve(&shard.topics(), &mut req, version);
    let mut response = if !crate::authz::enabled(shard) {
        run_unchecked(shard, req, version, client_id, &client.host).await?
    } else {
        match crate::group_acl::gate(shard, client, req, version) {
            crate::group_acl::Gate::Refuse(mut r) => {
                crate::group_topic_ids::finish(&shard.topics(), &mut r, version, unresolved);
                return Some(r);
            }
            crate::group_acl::Gate::Run(req, refused) => {
                let mut r = run_unchecked(shard, *req, version, client_id, &client.host).await?;
                crate::group_acl::finish(shard, client, &mut r, refused);
                r
            }
        }
    };
    if with_operations {
        crate::group_acl::authorized_operations(shard, client, &mut response);
    }
    crate::group_topic_ids::finish(&shard.topics(), &mut response, version, unresolved);
    Some(response)
}

async fn run_unchecked(
    shard: &Rc<BrokerShard>,
    req: RequestKind,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> Option<Response> {
    let ids = group_ids(&req, version)?;
    // Multi-group requests are split per coordinator and merged.
    match req {
        RequestKind::ListGroups(r) => {
            let mut out = ListGroupsResponse::default();
            for slot in shard.group_slots() {
                let slot = match slot.serving() {
                    Serving::Loaded(slot) => slot,
                    Serving::Loading => {
                        // Kafka's ListGroups says so while a coordinator loads.
                        out.error_code = COORDINATOR_LOAD_IN_PROGRESS;
                        continue;
                    }
                    Serving::Elsewhere => continue,
                };
                let r = r.clone();
                if let Some(Response::ListGroups(resp)) = slot
                    .call(
                        move |c, ctx| c.list_groups(ctx, r),
                        version,
                        client_id,
                        client_host,
                    )
                    .await
                {
                    if resp.error_code != 0 {
                        out.error_code = resp.error_code;
                    }
                    out.groups.extend(resp.groups);
                }
            }
            Some(Response::ListGroups(out))
        }
        RequestKind::DescribeGroups(r) => Some(
            per_coordinator(
                shard,
                &ids,
                r,
                (version, client_id, client_host),
                |r, ids| r.groups.retain(|g| ids.contains(&g.0.to_string())),
                &GroupCoordinator::describe_groups,
                |r, code| {
                    Response::DescribeGroups(
                        DescribeGroupsResponse::default().with_groups(
                            r.groups
                                .into_iter()
                                .map(|g| {
                                    describe_groups_response::DescribedGroup::default()
                                        .with_group_id(g)
                                        .with_error_code(code)
                                        .with_authorized_operations(i32::MIN)
                                })
                                .collect(),
                        ),
                    )
                },
                Response::DescribeGroups(DescribeGroupsResponse::default()),
            )
            .await,
        ),
        RequestKind::DeleteGroups(r) => Some(
            per_coordinator(
                shard,
                &ids,
                r,
                (version, client_id, client_host),
                |r, ids| r.groups_names.retain(|g| ids.contains(&g.0.to_string())),
                &GroupCoordinator::delete_groups,
                |r, code| {
                    Response::DeleteGroups(
                        DeleteGroupsResponse::default().with_results(
                            r.groups_names
                                .into_iter()
                                .map(|g| {
                                    delete_groups_response::DeletableGroupResult::default()
                                        .with_group_id(g)
                                        .with_error_code(code)
                                })
                                .collect(),
                        ),
                    )
                },
                Response::DeleteGroups(DeleteGroupsResponse::default()),
            )
            .await,
        ),
        RequestKind::ConsumerGroupDescribe(r) => Some(
            per_coordinator(
                shard,
                &ids,
                r,
                (version, client_id, client_host),
                |r, ids| r.group_ids.retain(|g| ids.contains(&g.0.to_string())),
                &|c, ctx, r| {
                    let topics = TopicsImage(shard.topics());
                    c.consumer_group_describe(ctx, r, &topics)
                },
                |r, code| {
                    Response::ConsumerGroupDescribe(
                        ConsumerGroupDescribeResponse::default().with_groups(
                            r.group_ids
                                .into_iter()
                                .map(|g| {
                                    consumer_group_describe_response::DescribedGroup::default()
                                        .with_group_id(g)
                                        .with_error_code(code)
                                        .with_authorized_operations(i32::MIN)
                                })
                                .collect(),
                        ),
                    )
                },
                Response::ConsumerGroupDescribe(ConsumerGroupDescribeResponse::default()),
            )
            .await,
        ),
        RequestKind::OffsetFetch(r) if version >= 8 => Some(
            per_coordinator(
                shard,
                &ids,
                r,
                (version, client_id, client_host),
                |r, ids| r.groups.retain(|g| ids.contains(&g.group_id.0.to_string())),
                &GroupCoordinator::offset_fetch,
                |r, code| {
                    Response::OffsetFetch(
                        OffsetFetchResponse::default().with_groups(
                            r.groups
                                .into_iter()
                                .map(|g| {
                                    offset_fetch_response::OffsetFetchResponseGroup::default()
                                        .with_group_id(g.group_id)
                                        .with_error_code(code)
                                })
                                .collect(),
                        ),
                    )
                },
                Response::OffsetFetch(OffsetFetchResponse::default()),
            )
            .await,
        ),
        req => {
            let slot = match ids
                .first()
                .and_then(|g| local_slot(shard, g))
                .map(|s| s.serving())
            {
                Some(Serving::Loaded(slot)) => slot,
                Some(Serving::Loading) => {
                    return Some(single_error(&req, COORDINATOR_LOAD_IN_PROGRESS))
                }
                _ => return Some(single_error(&req, NOT_COORDINATOR)),
            };
            // The answer if the slot stops serving while the request waits there.
            let unloaded = single_error(&req, NOT_COORDINATOR);
            // A TxnOffsetCommit of a producer epoch older than the partition has seen (a
            // fenced producer) is refused before the coordinator takes its offsets: its
            // append would fail, and a failed write costs a reload of every group here.
            if let RequestKind::TxnOffsetCommit(r) = &req {
                let log = slot.log.log();
                if log
                    .check_coordinator_epoch(r.producer_id.0, r.producer_epoch)
                    .is_err()
                {
                    let code =
                        sluice_txn::fenced_code(sluice_txn::FencedApi::TxnOffsetCommit, version);
                    return Some(single_error(&req, code));
                }
                // v5+ (transaction version 2, KIP-890 part 2): the client sent no
                // AddOffsetsToTxn, so the group's offsets partition joins the transaction
                // here, through its coordinator, before the offsets are taken.
                if version >= 5 {
                    if let Some(code) = add_offsets_partition(shard, r).await {
                        let code = if code == sluice_txn::code::PRODUCER_FENCED {
                            sluice_txn::fenced_code(sluice_txn::FencedApi::TxnOffsetCommit, version)
                        } else {
                            code
                        };
                        return Some(single_error(&req, code));
                    }
                }
            }
            // Commits to partitions that do not exist are answered here, as Kafka's request
            // handler does, and never stored; the coordinator gets the rest.
            let mut unknown = Vec::new();
            let req = match req {
                RequestKind::OffsetCommit(mut r) => {
                    unknown = take_unknown_partitions(shard, &mut r);
                    if r.topics.is_empty() && !unknown.is_empty() {
                        return Some(Response::OffsetCommit(
                            OffsetCommitResponse::default().with_topics(unknown),
                        ));
                    }
                    RequestKind::OffsetCommit(r)
                }
                other => other,
            };
            type Op = Box<dyn FnOnce(&mut GroupCoordinator, RequestCtx<'_>) -> Vec<Effect>>;
            let op: Op = match req {
                RequestKind::JoinGroup(r) => {
                    let topics = TopicsImage(shard.topics());
                    Box::new(move |c, ctx| c.join_group(ctx, r, &topics))
                }
                RequestKind::SyncGroup(r) => {
                    let topics = TopicsImage(shard.topics());
                    Box::new(move |c, ctx| c.sync_group(ctx, r, &topics))
                }
                RequestKind::Heartbeat(r) => Box::new(move |c, ctx| c.heartbeat(ctx, r)),
                RequestKind::LeaveGroup(r) => Box::new(move |c, ctx| c.leave_group(ctx, r)),
                RequestKind::OffsetCommit(r) => Box::new(move |c, ctx| c.offset_commit(ctx, r)),
                RequestKind::OffsetFetch(r) => Box::new(move |c, ctx| c.offset_fetch(ctx, r)),
                RequestKind::OffsetDelete(r) => Box::new(move |c, ctx| c.offset_delete(ctx, r)),
                RequestKind::TxnOffsetCommit(r) => {
                    Box::new(move |c, ctx| c.txn_offset_commit(ctx, r))
                }
                RequestKind::ConsumerGroupHeartbeat(r) => {
                    let topics = TopicsImage(shard.topics());
                    Box::new(move |c, ctx| c.consumer_group_heartbeat(ctx, r, &topics))
                }
                _ => return None,
            };
            let mut resp = slot
                .call(op, version, client_id, client_host)
                .await
                .unwrap_or(unloaded);
            if let Response::OffsetCommit(r) = &mut resp {
                r.topics.extend(unknown);
            }
            Some(resp)
        }
    }
}

/// Removes from an OffsetCommit the partitions of topics that do not exist (or indexes past
/// a topic's partition count) and returns their UNKNOWN_TOPIC_OR_PARTITION answers.
fn take_unknown_partitions(
    shard: &BrokerShard,
    req: &mut OffsetCommitRequest,
) -> Vec<offset_commit_response::OffsetCommitResponseTopic> {
    let topics = shard.topics();
    let mut unknown = Vec::new();
    for t in req.topics.iter_mut() {
        let count = topics.get(t.name.0.as_str()).map_or(0, |r| r.partitions);
        let (known, missing): (Vec<_>, Vec<_>) = std::mem::take(&mut t.partitions)
            .into_iter()
            .partition(|p| (0..count).contains(&p.partition_index));
        t.partitions = known;
        if !missing.is_empty() {
            unknown.push(
                offset_commit_response::OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_partitions(
                        missing
                            .iter()
                            .map(|p| {
                                offset_commit_response::OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(crate::kerr::UNKNOWN_TOPIC_OR_PARTITION)
                            })
                            .collect(),
                    ),
            );
        }
    }
    req.topics.retain(|t| !t.partitions.is_empty());
    unknown
}

/// Runs a multi-group request once per local coordinator holding some of its groups and
/// merges the answers; groups whose coordinator is still loading, or whose partition's
/// replica here does not lead, get `refused`'s answer with COORDINATOR_LOAD_IN_PROGRESS or
/// NOT_COORDINATOR.
#[allow(clippy::too_many_arguments)]
async fn per_coordinator<R: Clone + 'static>(
    shard: &BrokerShard,
    ids: &[String],
    req: R,
    (version, client_id, client_host): (i16, &str, &str),
    keep: fn(&mut R, &[String]),
    run: &dyn Fn(&mut GroupCoordinator, RequestCtx<'_>, R) -> Vec<Effect>,
    refused: fn(R, i16) -> Response,
    mut out: Response,
) -> Response {
    for (slot, ids) in split(shard, ids) {
        let mut sub = req.clone();
        keep(&mut sub, &ids);
        let part = match slot {
            Serving::Loaded(slot) => {
                let unloaded = refused(sub.clone(), NOT_COORDINATOR);
                let r = slot
                    .call(
                        move |c, ctx| run(c, ctx, sub),
                        version,
                        client_id,
                        client_host,
                    )
                    .await;
                Some(r.unwrap_or(unloaded))
            }
            Serving::Loading => Some(refused(sub, COORDINATOR_LOAD_IN_PROGRESS)),
            Serving::Elsewhere => Some(refused(sub, NOT_COORDINATOR)),
        };
        if let Some(p) = part {
            merge(&mut out, p);
        }
    }
    out
}

/// How this node's replica of a group's offsets partition serves it.
enum Serving {
    Loaded(Rc<GroupSlot>),
    /// Leading, still loading.
    Loading,
    /// Not leading (or no slot): another node coordinates.
    Elsewhere,
}

impl Serving {
    fn same(&self, other: &Serving) -> bool {
        match (self, other) {
            (Serving::Loaded(a), Serving::Loaded(b)) => Rc::ptr_eq(a, b),
            (Serving::Loading, Serving::Loading) | (Serving::Elsewhere, Serving::Elsewhere) => true,
            _ => false,
        }
    }
}

/// Groups by how the local slot owning them serves.
fn split(shard: &BrokerShard, ids: &[String]) -> Vec<(Serving, Vec<String>)> {
    let mut out: Vec<(Serving, Vec<String>)> = Vec::new();
    for id in ids {
        let serving = local_slot(shard, id).map_or(Serving::Elsewhere, |s| s.serving());
        match out.iter_mut().find(|(s, _)| s.same(&serving)) {
            Some((_, v)) => v.push(id.clone()),
            None => out.push((serving, vec![id.clone()])),
        }
    }
    out
}

fn local_slot(shard: &BrokerShard, group_id: &str) -> Option<Rc<GroupSlot>> {
    let (topic_id, n) = partitions(shard)?;
    shard.group_slot(sluice_shard::PartitionKey {
        topic_id,
        partition: partition_for(group_id, n),
    })
}

/// An error answer for a single-group request that could not reach its coordinator.
pub(crate) fn single_error(req: &RequestKind, code: i16) -> Response {
    match req {
        RequestKind::JoinGroup(_) => Response::JoinGroup(JoinGroupResponse::default().with_error_code(code).with_generation_id(-1)),
        RequestKind::SyncGroup(_) => Response::SyncGroup(SyncGroupResponse::default().with_error_code(code)),
        RequestKind::Heartbeat(_) => Response::Heartbeat(HeartbeatResponse::default().with_error_code(code)),
        RequestKind::LeaveGroup(_) => Response::LeaveGroup(LeaveGroupResponse::default().with_error_code(code)),
        RequestKind::OffsetCommit(r) => Response::OffsetCommit(OffsetCommitResponse::default().with_topics(
            r.topics
                .iter()
                .map(|t| {
                    offset_commit_response::OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_topic_id(t.topic_id).with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| offset_commit_response::OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(code))
                            .collect(),
                    )
                })
                .collect(),
        )),
        RequestKind::OffsetFetch(_) => Response::OffsetFetch(OffsetFetchResponse::default().with_error_code(code)),
        RequestKind::OffsetDelete(_) => Response::OffsetDelete(OffsetDeleteResponse::default().with_error_code(code)),
        RequestKind::TxnOffsetCommit(r) => Response::TxnOffsetCommit(TxnOffsetCommitResponse::default().with_topics(
            r.topics
                .iter()
                .map(|t| {
                    txn_offset_commit_response::TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| txn_offset_commit_response::TxnOffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(code))
                            .collect(),
                    )
                })
                .collect(),
        )),
        RequestKind::ConsumerGroupHeartbeat(_) => Response::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse::default().with_error_code(code)),
        _ => Response::ListGroups(ListGroupsResponse::default().with_error_code(code)),
    }
}

/// Encodes a coordinator response body at `version`.
pub fn encode_body(response: &Response, version: i16) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    let r = match response {
        Response::JoinGroup(r) => r.encode(&mut buf, version),
        Response::SyncGroup(r) => r.encode(&mut buf, version),
        Response::Heartbeat(r) => r.encode(&mut buf, version),
        Response::LeaveGroup(r) => r.encode(&mut buf, version),
        Response::OffsetCommit(r) => r.encode(&mut buf, version),
        Response::OffsetFetch(r) => r.encode(&mut buf, version),
        Response::OffsetDelete(r) => r.encode(&mut buf, version),
        Response::DescribeGroups(r) => r.encode(&mut buf, version),
        Response::ListGroups(r) => r.encode(&mut buf, version),
        Response::DeleteGroups(r) => r.encode(&mut buf, version),
        Response::TxnOffsetCommit(r) => r.encode(&mut buf, version),
        Response::ConsumerGroupHeartbeat(r) => r.encode(&mut buf, version),
        Response::ConsumerGroupDescribe(r) => r.encode(&mut buf, version),
    };
    match r {
        Ok(()) => Some(buf.freeze()),
        Err(e) => {
            log::error!("encoding group response v{version}: {e:#}");
            None
        }
    }
}

/// Decodes a response body produced by [`encode_body`] on another shard (for merging).
pub fn decode_body(api_key: ApiKey, mut body: Bytes, version: i16) -> Option<Response> {
    Some(match api_key {
        ApiKey::DescribeGroups => {
            Response::DescribeGroups(DescribeGroupsResponse::decode(&mut body, version).ok()?)
        }
        ApiKey::ListGroups => {
            Response::ListGroups(ListGroupsResponse::decode(&mut body, version).ok()?)
        }
        ApiKey::DeleteGroups => {
            Response::DeleteGroups(DeleteGroupsResponse::decode(&mut body, version).ok()?)
        }
        ApiKey::OffsetFetch => {
            Response::OffsetFetch(OffsetFetchResponse::decode(&mut body, version).ok()?)
        }
        ApiKey::ConsumerGroupDescribe => Response::ConsumerGroupDescribe(
            ConsumerGroupDescribeResponse::decode(&mut body, version).ok()?,
        ),
        _ => return None,
    })
}

/// Writes size prefix + response header + an already-encoded body.
pub fn frame_raw(correlation_id: i32, header_version: i16, body: &[u8]) -> Bytes {
    let header_len = if header_version >= 1 { 5 } else { 4 };
    let mut out = BytesMut::with_capacity(4 + header_len + body.len());
    out.extend_from_slice(&((header_len + body.len()) as i32).to_be_bytes());
    out.extend_from_slice(&correlation_id.to_be_bytes());
    if header_version >= 1 {
        out.extend_from_slice(&[0]); // no tagged fields
    }
    out.extend_from_slice(body);
    out.freeze()
}

/// The body of a response frame made by [`frame_raw`] (or the codec's framing).
pub(crate) fn unframe(frame: &Bytes, header_version: i16) -> Bytes {
    let skip = 4 + if header_version >= 1 { 5 } else { 4 };
    frame.slice(skip.min(frame.len())..)
}

/// Which groups a response covers, and keeps only those in `keep`.
fn retain_groups(response: &mut Response, keep: &dyn Fn(&str) -> bool) {
    match response {
        Response::DescribeGroups(r) => r.groups.retain(|g| keep(&g.group_id.0)),
        Response::DeleteGroups(r) => r.results.retain(|g| keep(&g.group_id.0)),
        Response::OffsetFetch(r) => r.groups.retain(|g| keep(&g.group_id.0)),
        Response::ConsumerGroupDescribe(r) => r.groups.retain(|g| keep(&g.group_id.0)),
        _ => {}
    }
}

/// The per-group NOT_COORDINATOR answers of a multi-group request for `groups` (none if
/// the list is empty).
fn not_coordinated_here(req: &RequestKind, groups: &[String]) -> Option<Response> {
    per_group_error(req, groups, NOT_COORDINATOR)
}

/// The per-group `code` answers of a multi-group request for `groups` (none if the list is
/// empty).
pub(crate) fn per_group_error(req: &RequestKind, groups: &[String], code: i16) -> Option<Response> {
    if groups.is_empty() {
        return None;
    }
    let named = |g: &String| {
        GroupId(sluice_codec::kafka_protocol::protocol::StrBytes::from_string(g.clone()))
    };
    Some(match req {
        RequestKind::DescribeGroups(_) => Response::DescribeGroups(
            DescribeGroupsResponse::default().with_groups(
                groups
                    .iter()
                    .map(|g| {
                        describe_groups_response::DescribedGroup::default()
                            .with_group_id(named(g))
                            .with_error_code(code)
                            .with_authorized_operations(i32::MIN)
                    })
                    .collect(),
            ),
        ),
        RequestKind::DeleteGroups(_) => Response::DeleteGroups(
            DeleteGroupsResponse::default().with_results(
                groups
                    .iter()
                    .map(|g| {
                        delete_groups_response::DeletableGroupResult::default()
                            .with_group_id(named(g))
                            .with_error_code(code)
                    })
                    .collect(),
            ),
        ),
        RequestKind::OffsetFetch(_) => Response::OffsetFetch(
            OffsetFetchResponse::default().with_groups(
                groups
                    .iter()
                    .map(|g| {
                        offset_fetch_response::OffsetFetchResponseGroup::default()
                            .with_group_id(named(g))
                            .with_error_code(code)
                    })
                    .collect(),
            ),
        ),
        RequestKind::ConsumerGroupDescribe(_) => Response::ConsumerGroupDescribe(
            ConsumerGroupDescribeResponse::default().with_groups(
                groups
                    .iter()
                    .map(|g| {
                        consumer_group_describe_response::DescribedGroup::default()
                            .with_group_id(named(g))
                            .with_error_code(code)
                            .with_authorized_operations(i32::MIN)
                    })
                    .collect(),
            ),
        ),
        _ => return None,
    })
}

pub(crate) fn merge(into: &mut Response, from: Response) {
    match (into, from) {
        (Response::DescribeGroups(a), Response::DescribeGroups(b)) => a.groups.extend(b.groups),
        (Response::DeleteGroups(a), Response::DeleteGroups(b)) => a.results.extend(b.results),
        (Response::OffsetFetch(a), Response::OffsetFetch(b)) => a.groups.extend(b.groups),
        (Response::ConsumerGroupDescribe(a), Response::ConsumerGroupDescribe(b)) => {
            a.groups.extend(b.groups)
        }
        (Response::ListGroups(a), Response::ListGroups(b)) => {
            if b.error_code != 0 {
                a.error_code = b.error_code;
            }
            a.groups.extend(b.groups)
        }
        _ => {}
    }
}

/// KIP-890 part 2 for a TxnOffsetCommit v5+: adds the group's `__consumer_offsets`
/// partition to the producer's transaction. The refusal code, if any.
async fn add_offsets_partition(
    shard: &Rc<BrokerShard>,
    r: &sluice_codec::kafka_protocol::messages::TxnOffsetCommitRequest,
) -> Option<i16> {
    // (No offsets topic: nothing coordinates the group here; the offsets must not be taken
    // outside the transaction.)
    let Some((_, n)) = partitions(shard) else {
        return Some(NOT_COORDINATOR);
    };
    let group = r.group_id.0.as_str();
    let partition = (OFFSETS_TOPIC.to_string(), partition_for(group, n));
    let codes = crate::txn_host::verify(
        shard,
        r.transactional_id.0.as_str(),
        r.producer_id.0,
        r.producer_epoch,
        &[partition],
        true,
    )
    .await;
    match codes.first().copied() {
        Some(0) => None,
        // The transaction is changing (another add, or its end): retriable for every
        // TxnOffsetCommit version, as a produce's is.
        Some(sluice_txn::code::CONCURRENT_TRANSACTIONS) => Some(COORDINATOR_LOAD_IN_PROGRESS),
        Some(code) => Some(code),
        None => Some(crate::kerr::UNKNOWN_SERVER_ERROR),
    }
}

/// Whether the KIP-848 consumer group protocol is on: group.version finalized at 1 or more,
/// or no metadata.version finalized yet (nothing adopted, or a log from before features
/// whose levels the controller has not written yet: it served the protocol).
fn consumer_protocol_enabled(shard: &BrokerShard) -> bool {
    use sluice_meta::features::{GROUP_VERSION, METADATA_VERSION};
    let finalized = shard.shared_handle.features.get();
    finalized.level(METADATA_VERSION) == 0 || finalized.level(GROUP_VERSION) >= 1
}

/// Entry point for group APIs: routes to the shard(s) owning the groups' offsets
/// partitions, runs them there, and merges multi-group answers.
pub async fn handle(
    shard: &Rc<BrokerShard>,
    header: &sluice_codec::RequestHeaderInfo,
    body: RequestKind,
    raw: Bytes,
    forwarded: bool,
    client: &crate::conn::Client,
) -> crate::conn::Outcome {
    use crate::conn::Outcome;
    let version = header.api_version;
    let client_id = header.client_id.as_deref().unwrap_or("").to_string();
    // Error codes are counted where the client's answer is made: a part of a multi-group
    // answer run here for another shard is counted in that shard's merged answer.
    let multi_part = forwarded
        && (matches!(
            body,
            RequestKind::ListGroups(_)
                | RequestKind::DescribeGroups(_)
                | RequestKind::DeleteGroups(_)
                | RequestKind::ConsumerGroupDescribe(_)
        ) || matches!(body, RequestKind::OffsetFetch(_) if version >= 8));
    let api = header.api_key as i16;
    let respond_encoded = |r: Option<Response>| match r.and_then(|r| encode_body(&r, version)) {
        Some(b) => Outcome::Respond(frame_raw(
            header.correlation_id,
            header.response_header_version(),
            &b,
        )),
        None => Outcome::Close,
    };
    let respond = |r: Option<Response>| {
        if let Some(r) = r.as_ref().filter(|_| !multi_part) {
            crate::metrics_host::count_errors(api, r);
        }
        respond_encoded(r)
    };
    let Some(ids) = group_ids(&body, version) else {
        return Outcome::Close;
    };
    let kip848 = matches!(
        body,
        RequestKind::ConsumerGroupHeartbeat(_) | RequestKind::ConsumerGroupDescribe(_)
    );
    if kip848 && !forwarded && !consumer_protocol_enabled(shard) {
        // Kafka's answer while group.version is below 1: UNSUPPORTED_VERSION in the body
        // (the APIs stay listed in ApiVersions), so clients fall back to the classic
        // protocol or report it.
        return match body {
            RequestKind::ConsumerGroupDescribe(_) => {
                respond(per_group_error(&body, &ids, UNSUPPORTED_VERSION))
            }
            req => respond(Some(single_error(&req, UNSUPPORTED_VERSION))),
        };
    }
    let Some((topic_id, n)) = partitions(shard) else {
        // No offsets topic yet: nothing is coordinated anywhere (FindCoordinator creates it).
        // Multi-group requests answer per group (OffsetFetch v8+ has no top-level error:
        // a bare one is a body clients cannot read).
        return match body {
            RequestKind::ListGroups(_) => {
                respond(Some(Response::ListGroups(ListGroupsResponse::default())))
            }
            RequestKind::DescribeGroups(_)
            | RequestKind::DeleteGroups(_)
            | RequestKind::ConsumerGroupDescribe(_) => respond(not_coordinated_here(&body, &ids)),
            RequestKind::OffsetFetch(_) if version >= 8 => {
                respond(not_coordinated_here(&body, &ids))
            }
            req => respond(Some(single_error(&req, NOT_COORDINATOR))),
        };
    };
    let owner_of = |g: &str| shard.owner(&topic_id, partition_for(g, n));
    let me = shard.shard_id();
    let multi = matches!(
        body,
        RequestKind::ListGroups(_)
            | RequestKind::DescribeGroups(_)
            | RequestKind::DeleteGroups(_)
            | RequestKind::ConsumerGroupDescribe(_)
    ) || matches!(body, RequestKind::OffsetFetch(_) if version >= 8);
    if forwarded {
        return respond(run_local(shard, body, version, &client_id, client).await);
    }
    if !multi {
        let owner = ids.first().and_then(|g| owner_of(g));
        return match owner {
            Some(o) if o != me => {
                crate::conn::forward(shard, o, header.api_key as i16, raw, client).await
            }
            _ => respond(run_local(shard, body, version, &client_id, client).await),
        };
    }
    // Multi-group: every shard that owns one of the groups (ListGroups: every shard).
    let mut owners: Vec<sluice_shard::ShardId> = if matches!(body, RequestKind::ListGroups(_)) {
        (0..shard.ctx.shard_count())
            .map(|i| sluice_shard::ShardId(i as u16))
            .collect()
    } else {
        ids.iter().filter_map(|g| owner_of(g)).collect()
    };
    owners.sort();
    owners.dedup();
    // Groups whose offsets partition this node does not host: another node coordinates
    // them, and Kafka answers NOT_COORDINATOR for each (the client asks FindCoordinator).
    let remote: Vec<String> = if matches!(body, RequestKind::ListGroups(_)) {
        Vec::new()
    } else {
        ids.iter()
            .filter(|g| owner_of(g).is_none())
            .cloned()
            .collect()
    };
    let mut merged: Option<Response> = not_coordinated_here(&body, &remote);
    for o in owners {
        let mut part = if o == me {
            run_local(shard, body.clone(), version, &client_id, client).await
        } else {
            match crate::conn::forward(shard, o, header.api_key as i16, raw.clone(), client).await {
                Outcome::Respond(frame) => decode_body(
                    header.api_key,
                    unframe(&frame, header.response_header_version()),
                    version,
                ),
                _ => None,
            }
        };
        if let Some(p) = part.as_mut() {
            retain_groups(p, &|g| owner_of(g) == Some(o));
        }
        match (&mut merged, part) {
            (None, Some(p)) => merged = Some(p),
            (Some(m), Some(p)) => merge(m, p),
            _ => {}
        }
    }
    respond(merged)
}
