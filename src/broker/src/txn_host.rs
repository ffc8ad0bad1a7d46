//! Drives the sans-IO transaction coordinator (`sluice-txn`) on the shard that owns each
//! `__transaction_state` partition: loads it from the log, turns its effects into log
//! writes, transaction markers, replies and timers, and runs the transaction requests
//! routed here (InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn, DescribeTransactions, ListTransactions).
//!
//! Like the group coordinators (`group_host`), one coordinator per partition, on the
//! replica that leads it, over a [`CoordLog`]: its records are Kafka's
//! `TransactionLogKey`/`TransactionLogValue`, durable (fsynced, or committed on a quorum)
//! before the coordinator applies them. Its coordinator epoch is the partition's leader
//! epoch when it loaded, so partitions refuse the markers of a deposed coordinator.
//!
//! Markers go to each partition's leader as a control batch appended with acks=all: on
//! this node through its owning shard (`PartitionOp::Produce`, the same path as a produce,
//! whose log checks the producer and coordinator epochs), on another node through one
//! WriteTxnMarkers call per node for all the partitions it leads, over the node-to-node
//! transport (`handlers::write_txn_markers`). A
//! marker the partition refuses for an older producer epoch means a later marker (a fence)
//! passed there already and counts as written; one refused for an older coordinator epoch
//! means this coordinator was deposed: it stops writing that transaction's markers (the
//! transaction stays in Prepare here until this replica unloads and the new leader's
//! coordinator, which replayed the same Prepare record, writes them). Anything else is
//! retried until it lands or the coordinator unloads.
//!
//! KIP-890 part 1: a partition leader asks the coordinator ([`verify`]) before it appends
//! a transactional batch, through AddPartitionsToTxn v5 with `verify_only` (to another
//! shard, or another node's coordinator over the transport, `node_rpc::VERIFY_TXN`). Part
//! 2 (transaction version 2): from Produce v12 and TxnOffsetCommit v5 the same call adds
//! the partition instead (`verify_only` false), and EndTxn v5 ends under a bumped epoch.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalSender};
use sluice_codec::kafka_protocol::messages::*;
use sluice_codec::kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use sluice_codec::RequestHeaderInfo;
use sluice_shard::{DmaStorage, PartitionKey, ShardId};
use sluice_storage::PartitionLog;
use sluice_txn::{
    fenced_code, Effect, FencedApi, Markers, Reply, ReplyToken, TxnConfig, TxnCoordinator, TxnState,
};

use crate::conn::Outcome;
use crate::coord_log::{CoordLog, Pending, State};
use crate::handlers::write_txn_markers::MARKER_TIMEOUT_MS;
use crate::handlers::{respond, str_bytes, topic_name};
use crate::kerr;
use crate::replication::Replication;
use crate::shard::{now_ms, BrokerShard};

/// The internal topic of transaction state (Kafka's `__transaction_state`).
pub const TXN_TOPIC: &str = "__transaction_state";
/// `transaction.state.log.segment.bytes` default (100 MiB).
pub const TXN_TOPIC_SEGMENT_BYTES: &str = "104857600";
/// First tick after loading.
const TICK_MAX: Duration = Duration::from_millis(1000);
/// How long past its own timeout a call to another node waits for the answer.
const RPC_MARGIN: Duration = Duration::from_secs(2);
/// Pause after a failed write before the coordinator hears of it (and may retry).
const WRITE_RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// Pause before a marker write that failed is tried again.
const MARKER_RETRY_BACKOFF: Duration = Duration::from_millis(100);

const OPERATION_NOT_ATTEMPTED: i16 = 55;
const TRANSACTION_COORDINATOR_FENCED: i16 = 52;

/// One transaction coordinator and its `__transaction_state` partition, on the shard owning
/// (a replica of) the partition.
pub struct TxnSlot {
    pub topic_id: [u8; 16],
    pub partition: i32,
    log: CoordLog,
    coord: RefCell<TxnCoordinator>,
    /// The shard, for marker writes (which go wherever their partitions live).
    shard: Weak<BrokerShard>,
    next_token: Cell<u64>,
    waiters: RefCell<HashMap<u64, LocalSender<Reply>>>,
}

impl TxnSlot {
    /// The coordinator of a single-replica partition: it serves once [`Self::reload`] is done.
    pub fn local(
        shard: &Rc<BrokerShard>,
        topic_id: [u8; 16],
        partition: i32,
        log: Rc<PartitionLog<DmaStorage>>,
    ) -> Rc<TxnSlot> {
        Self::new(shard, CoordLog::local(TXN_TOPIC, topic_id, partition, log))
    }

    /// The coordinator slot of a replicated partition's replica: it serves only while
    /// [`Self::set_leader`] says so.
    pub fn replicated(
        shard: &Rc<BrokerShard>,
        topic_id: [u8; 16],
        partition: i32,
        log: Rc<PartitionLog<DmaStorage>>,
        rep: Rc<Replication>,
        group: sluice_raft::GroupId,
    ) -> Rc<TxnSlot> {
        Self::new(
            shard,
            CoordLog::replicated(TXN_TOPIC, topic_id, partition, log, rep, group),
        )
    }

    fn new(shard: &Rc<BrokerShard>, log: CoordLog) -> Rc<TxnSlot> {
        Rc::new(TxnSlot {
            topic_id: log.topic_id,
            partition: log.partition,
            log,
            coord: RefCell::new(TxnCoordinator::new(config(shard), -1)),
            shard: Rc::downgrade(shard),
            next_token: Cell::new(1),
            waiters: RefCell::new(HashMap::new()),
        })
    }

    /// This replica started (`Some(term)`) or stopped (`None`) serving as the partition's
    /// leader (`Replication::watch_leadership`).
    pub fn set_leader(self: &Rc<Self>, term: Option<u64>) {
        if self.log.leadership(term, "transactions") {
            self.reload();
        } else {
            self.unload();
        }
    }

    /// Stops serving: requests waiting here get NOT_COORDINATOR (their reply channels
    /// close); marker writes and timers of the old generation stop.
    pub fn unload(&self) {
        self.log.next_generation();
        self.log.set_leading(false);
        self.waiters.borrow_mut().clear();
        // Its state goes until the next load (up to TRANSACTIONAL_IDS_MAX ids).
        if let Ok(mut c) = self.coord.try_borrow_mut() {
            *c = TxnCoordinator::new(TxnConfig::default(), -1);
        }
    }

    /// The partition's log was replaced (a snapshot reset this replica).
    pub fn replace_log(self: &Rc<Self>, log: Rc<PartitionLog<DmaStorage>>) {
        self.log.replace_log(log);
        if self.log.is_leading() {
            self.reload();
        }
    }

    /// Rebuilds the coordinator from the log in the background; requests get
    /// COORDINATOR_LOAD_IN_PROGRESS meanwhile.
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

    async fn load(self: &Rc<Self>, generation: u64) {
        let Some(shard) = self.shard.upgrade() else {
            return;
        };
        let mut coord = TxnCoordinator::new(config(&shard), self.log.leader_epoch());
        let name = self.log.name();
        let mut records = 0usize;
        let complete = self
            .log
            .replay(generation, |batches| {
                for (key, value) in crate::groups::decode_records(batches) {
                    records += 1;
                    if let Err(e) = coord.replay(&key, value.as_deref()) {
                        log::warn!("{name}: skipping record: {e}");
                    }
                }
            })
            .await;
        if complete.is_none() {
            return;
        }
        let effects = coord.finish_replay(now_ms());
        *self.coord.borrow_mut() = coord;
        if !self.log.finish_load(generation) {
            return;
        }
        if records > 0 {
            log::info!(
                "{name}: loaded {} transactional id(s) from {records} record(s), coordinator epoch {}",
                self.coord.borrow().len(),
                self.coord.borrow().coordinator_epoch()
            );
        }
        self.perform(effects);
        self.schedule_tick(now_ms() + TICK_MAX.as_millis() as i64);
    }

    fn schedule_tick(self: &Rc<Self>, at_ms: i64) {
        if !self.log.claim_tick(at_ms) {
            return;
        }
        let me = self.clone();
        glommio::spawn_local(async move {
            let wait = (at_ms - now_ms()).clamp(0, i64::MAX / 2) as u64;
            glommio::timer::sleep(Duration::from_millis(wait)).await;
            if !me.log.fire_tick(at_ms) {
                return;
            }
            let effects = me.coord.borrow_mut().tick(now_ms());
            me.perform(effects);
        })
        .detach();
    }

    fn deliver(&self, token: ReplyToken, reply: Reply) {
        if let Some(tx) = self.waiters.borrow_mut().remove(&token.0) {
            let _ = tx.try_send(reply);
        }
    }

    /// Carries out the coordinator's effects in order (writes start here, synchronously;
    /// their waits run in the background).
    fn perform(self: &Rc<Self>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Reply(token, reply) => self.deliver(token, reply),
                Effect::Persist { write, key, value } => {
                    let pending = self.log.write(&[(key, value)]);
                    self.settle_then_apply(write, pending);
                }
                Effect::WriteMarkers(markers) => self.write_markers(markers),
                Effect::ScheduleTick { at_ms } => self.schedule_tick(at_ms),
            }
        }
    }

    /// Tells the coordinator how a write ended, once it has.
    fn settle_then_apply(self: &Rc<Self>, write: sluice_txn::WriteId, pending: Pending) {
        let me = self.clone();
        let generation = self.log.generation();
        glommio::spawn_local(async move {
            let result = me.log.settle(pending).await.map_err(|e| {
                log::error!("{}: persisting transaction state: {}", me.log.name(), e.why);
                e.code
            });
            if result.is_err() {
                // A refusal may come back at once (a transfer under way, back-pressure, a
                // failed disk): the coordinator's retry (a due timeout, markers again)
                // waits, instead of spinning the shard.
                glommio::timer::sleep(WRITE_RETRY_BACKOFF).await;
            }
            if me.log.generation() != generation {
                return; // unloaded: its requests were answered NOT_COORDINATOR
            }
            let deposed = result == Err(kerr::NOT_COORDINATOR);
            let effects = me.coord.borrow_mut().persisted(write, result, now_ms());
            me.perform(effects);
            if deposed && me.log.is_leading() {
                // Still leading, yet the write could not be made (the leader was not ready,
                // or its storage failed): the state is rebuilt from the log, whose replay
                // writes the markers of any transaction left in Prepare again.
                me.reload();
            }
        })
        .detach();
    }

    /// Writes a transaction's markers to all its partitions at once, then tells the
    /// coordinator (unless it unloaded or was deposed meanwhile).
    fn write_markers(self: &Rc<Self>, markers: Markers) {
        let Some(shard) = self.shard.upgrade() else {
            return;
        };
        let me = self.clone();
        let generation = self.log.generation();
        glommio::spawn_local(async move {
            let markers = Rc::new(markers);
            if !write_all_markers(&shard, &me, &markers, generation).await
                || me.log.generation() != generation
            {
                return;
            }
            let effects = me.coord.borrow_mut().markers_written(
                &markers.transactional_id,
                markers.producer_id,
                markers.producer_epoch,
                now_ms(),
            );
            me.perform(effects);
        })
        .detach();
    }

    /// Runs one request against the coordinator and waits for its (possibly delayed) reply;
    /// `None` if the slot stops serving first.
    async fn call(
        self: &Rc<Self>,
        op: impl FnOnce(&mut TxnCoordinator, ReplyToken, i64) -> Vec<Effect>,
    ) -> Option<Reply> {
        if !self.log.is_serving() {
            return None;
        }
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let (tx, rx) = local_channel::new_bounded::<Reply>(1);
        self.waiters.borrow_mut().insert(token, tx);
        let effects = op(&mut self.coord.borrow_mut(), ReplyToken(token), now_ms());
        self.perform(effects);
        let r = rx.recv().await;
        self.waiters.borrow_mut().remove(&token);
        r
    }
}

/// The coordinator's settings. AddOffsetsToTxn places a group as the group coordinators
/// route it: by the offsets topic's partition count in the topic table (the configured
/// count until the topic exists).
fn config(shard: &BrokerShard) -> TxnConfig {
    let offsets = shard
        .topics()
        .get(crate::groups::OFFSETS_TOPIC)
        .map_or(shard.config.offsets_topic_partitions, |t| t.partitions);
    TxnConfig {
        offsets_partitions: offsets,
        max_timeout_ms: shard.config.transaction_max_timeout_ms,
        id_expiration_ms: shard.config.transactional_id_expiration_ms,
        ..TxnConfig::default()
    }
}

/// Where one partition's marker stands after an attempt.
enum MarkerAttempt {
    /// Written, or not needed any more (a later marker of a newer producer epoch passed
    /// there already).
    Done,
    /// The partition refused this coordinator's epoch: a newer coordinator took over.
    Fenced,
    /// Try again after a pause (no leader yet, leadership moved, a timeout, ...).
    Retry,
}

/// What a partition's answer to a marker means.
fn marker_attempt(code: i16) -> MarkerAttempt {
    match code {
        kerr::NONE | kerr::INVALID_PRODUCER_EPOCH => MarkerAttempt::Done,
        TRANSACTION_COORDINATOR_FENCED => MarkerAttempt::Fenced,
        _ => MarkerAttempt::Retry,
    }
}

/// Writes a transaction's markers to all its partitions until every one has landed: this
/// node's through their owning shards, and every other node's in one WriteTxnMarkers call
/// per node (as Kafka batches them per broker), all at once. What fails is retried, after
/// [`MARKER_RETRY_BACKOFF`], with fresh leaders. False if the coordinator unloaded or was
/// deposed (a partition refused its epoch) first.
async fn write_all_markers(
    shard: &Rc<BrokerShard>,
    slot: &Rc<TxnSlot>,
    m: &Rc<Markers>,
    generation: u64,
) -> bool {
    type Attempts = Vec<((String, i32), MarkerAttempt)>;
    let name = slot.log.name();
    let mut pending: Vec<(String, i32)> = m.partitions.clone();
    loop {
        if slot.log.generation() != generation {
            return false;
        }
        // Where each marker goes, by what this node knows of the leaders now.
        let topics = shard.topics();
        let mut local = Vec::new();
        let mut by_node: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        for (topic, p) in pending {
            let Some(t) = topics.get(&topic).filter(|t| p < t.partitions) else {
                continue; // the topic or partition is gone: nothing left to mark
            };
            let hint = crate::handlers::current_leader(shard, &t.id, p);
            if hint.leader >= 0 && hint.leader != shard.config.node_id {
                by_node.entry(hint.leader).or_default().push((topic, p));
            } else {
                local.push((t.id, topic, p));
            }
        }
        let mut work: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Attempts>>>> =
            Vec::new();
        for (topic_id, topic, p) in local {
            let (shard, m) = (shard.clone(), m.clone());
            work.push(Box::pin(async move {
                let attempt = local_marker(&shard, &m, topic_id, &topic, p).await;
                vec![((topic, p), attempt)]
            }));
        }
        // One call per node, in chunks the receiving node accepts.
        let max = crate::handlers::write_txn_markers::WRITE_TXN_MARKERS_PARTITIONS_MAX;
        for (node, parts) in by_node {
            for chunk in parts.chunks(max) {
                let (shard, m, chunk) = (shard.clone(), m.clone(), chunk.to_vec());
                work.push(Box::pin(async move {
                    let codes = remote_markers(&shard, node, &m, &chunk).await;
                    let codes =
                        codes.unwrap_or_else(|| vec![kerr::NOT_LEADER_OR_FOLLOWER; chunk.len()]);
                    chunk
                        .into_iter()
                        .zip(codes)
                        .map(|(tp, code)| {
                            let attempt = marker_attempt(code);
                            if matches!(attempt, MarkerAttempt::Retry) {
                                log::debug!(
                                    "marker for {}-{} failed on node {node} (error {code}); retrying",
                                    tp.0,
                                    tp.1
                                );
                            }
                            (tp, attempt)
                        })
                        .collect()
                }));
            }
        }
        let mut retry = Vec::new();
        for (tp, attempt) in crate::handlers::join_all(work).await.into_iter().flatten() {
            match attempt {
                MarkerAttempt::Done => {}
                MarkerAttempt::Fenced => {
                    log::warn!(
                        "{name}: marker for {}-{} refused: a newer coordinator wrote there; \
                         this one stops writing this transaction's markers",
                        tp.0,
                        tp.1
                    );
                    return false;
                }
                MarkerAttempt::Retry => retry.push(tp),
            }
        }
        if retry.is_empty() {
            return true;
        }
        pending = retry;
        glommio::timer::sleep(MARKER_RETRY_BACKOFF).await;
    }
}

/// One attempt at a partition's marker on this node (through the shard that owns it).
async fn local_marker(
    shard: &Rc<BrokerShard>,
    m: &Markers,
    topic_id: [u8; 16],
    topic: &str,
    partition: i32,
) -> MarkerAttempt {
    let marker = sluice_storage::txn::Marker {
        commit: m.commit,
        coordinator_epoch: m.coordinator_epoch,
    };
    let batch =
        sluice_storage::txn::marker_batch(m.producer_id, m.producer_epoch, marker, now_ms());
    let code =
        crate::handlers::write_txn_markers::append(shard, topic_id, partition, Bytes::from(batch))
            .await;
    // NOT_LEADER_OR_FOLLOWER: leadership moved since; the next round asks its new leader.
    let attempt = marker_attempt(code);
    if matches!(attempt, MarkerAttempt::Retry) {
        log::debug!("marker for {topic}-{partition} failed (error {code}); retrying");
    }
    attempt
}

/// Writes the markers of `parts` through node `leader` in one WriteTxnMarkers call (over the
/// node-to-node transport, which shard 0 holds): each partition's code in the order of
/// `parts`, `None` without a usable answer.
async fn remote_markers(
    shard: &Rc<BrokerShard>,
    leader: i32,
    m: &Markers,
    parts: &[(String, i32)],
) -> Option<Vec<i16>> {
    use crate::handlers::write_txn_markers::{WIRE_VERSION, WRITE_MARKERS};
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, p) in parts {
        topics.entry(topic.as_str()).or_default().push(*p);
    }
    let req = WriteTxnMarkersRequest::default().with_markers(vec![
        write_txn_markers_request::WritableTxnMarker::default()
            .with_producer_id(ProducerId(m.producer_id))
            .with_producer_epoch(m.producer_epoch)
            .with_transaction_result(m.commit)
            .with_coordinator_epoch(m.coordinator_epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        write_txn_markers_request::WritableTxnMarkerTopic::default()
                            .with_name(topic_name(topic))
                            .with_partition_indexes(partitions)
                    })
                    .collect(),
            ),
    ]);
    let mut body = bytes::BytesMut::new();
    req.encode(&mut body, WIRE_VERSION).ok()?;
    // The other node's appends (in parallel) wait for their partitions' quorums.
    let timeout = Duration::from_millis(MARKER_TIMEOUT_MS as u64) + RPC_MARGIN;
    let mut answer =
        crate::node_rpc::call(shard, leader, WRITE_MARKERS, body.freeze(), timeout).await?;
    let resp = WriteTxnMarkersResponse::decode(&mut answer, WIRE_VERSION).ok()?;
    let mut codes: HashMap<(&str, i32), i16> = HashMap::new();
    for t in resp.markers.first()?.topics.iter() {
        for p in &t.partitions {
            codes.insert((t.name.0.as_str(), p.partition_index), p.error_code);
        }
    }
    // A partition the answer leaves out is retried.
    Some(
        parts
            .iter()
            .map(|(topic, p)| {
                codes
                    .get(&(topic.as_str(), *p))
                    .copied()
                    .unwrap_or(kerr::UNKNOWN_SERVER_ERROR)
            })
            .collect(),
    )
}

/// Whether the transaction coordinator answers this request.
pub fn coordinated(req: &RequestKind) -> bool {
    match req {
        RequestKind::InitProducerId(r) => r.transactional_id.is_some(),
        RequestKind::AddPartitionsToTxn(_)
        | RequestKind::AddOffsetsToTxn(_)
        | RequestKind::EndTxn(_)
        | RequestKind::DescribeTransactions(_)
        | RequestKind::ListTransactions(_) => true,
        _ => false,
    }
}

/// The transactional id a single-id request names.
fn single_id(req: &RequestKind) -> Option<&str> {
    Some(match req {
        RequestKind::InitProducerId(r) => r.transactional_id.as_ref()?.0.as_str(),
        RequestKind::AddPartitionsToTxn(r) => r.v3_and_below_transactional_id.0.as_str(),
        RequestKind::AddOffsetsToTxn(r) => r.transactional_id.0.as_str(),
        RequestKind::EndTxn(r) => r.transactional_id.0.as_str(),
        _ => return None,
    })
}

/// The transaction state topic's id and partition count, if it exists.
fn txn_topic(shard: &BrokerShard) -> Option<([u8; 16], i32)> {
    shard.topics().get(TXN_TOPIC).map(|t| (t.id, t.partitions))
}

/// The slot coordinating `id` on this shard and how it serves.
fn slot_for(shard: &BrokerShard, id: &str) -> Result<Rc<TxnSlot>, i16> {
    let (topic_id, n) = txn_topic(shard).ok_or(kerr::NOT_COORDINATOR)?;
    let slot = shard
        .txn_slot(PartitionKey {
            topic_id,
            partition: sluice_txn::partition_for(id, n),
        })
        .ok_or(kerr::NOT_COORDINATOR)?;
    match slot.log.state() {
        State::Loaded => Ok(slot),
        State::Loading => Err(kerr::COORDINATOR_LOAD_IN_PROGRESS),
        State::Elsewhere => Err(kerr::NOT_COORDINATOR),
    }
}

/// The shard owning `id`'s partition on this node, if this node hosts it.
fn owner_of(shard: &BrokerShard, id: &str) -> Option<ShardId> {
    let (topic_id, n) = txn_topic(shard)?;
    shard.owner(&topic_id, sluice_txn::partition_for(id, n))
}

/// Entry point: routes to the shard(s) owning the transactional ids' partitions, runs the
/// request there, merges multi-id answers.
pub async fn handle(
    shard: &Rc<BrokerShard>,
    h: &RequestHeaderInfo,
    body: RequestKind,
    raw: Bytes,
    forwarded: bool,
    client: &crate::conn::Client,
) -> Outcome {
    if crate::authz::enabled(shard) {
        if let Some(refusal) = refused(shard, h, &body, client) {
            return refusal;
        }
    }
    let body = match body {
        RequestKind::AddPartitionsToTxn(r) if h.api_version >= 4 => {
            let resp = add_partitions_batched(shard, h, r, forwarded, client).await;
            return respond(h, &resp);
        }
        other => other,
    };
    let me = shard.shard_id();
    if let Some(id) = single_id(&body) {
        if !forwarded {
            if let Some(owner) = owner_of(shard, id).filter(|o| *o != me) {
                return crate::conn::forward(shard, owner, h.api_key as i16, raw, client).await;
            }
        }
        return run_single(shard, h, body).await;
    }
    match body {
        RequestKind::DescribeTransactions(r) => describe(shard, h, r, raw, forwarded, client).await,
        RequestKind::ListTransactions(r) => list(shard, h, r, raw, forwarded, client).await,
        _ => Outcome::Close,
    }
}

/// Under the authorizer, the answer to a request the client may not make (Kafka's checks:
/// WRITE on the transactional id for InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn
/// and EndTxn; WRITE on each topic added; READ on the group whose offsets join; the
/// broker-to-broker AddPartitionsToTxn needs CLUSTER_ACTION). DescribeTransactions and
/// ListTransactions check DESCRIBE per transactional id where they answer it.
fn refused(
    shard: &BrokerShard,
    h: &RequestHeaderInfo,
    body: &RequestKind,
    client: &crate::conn::Client,
) -> Option<Outcome> {
    use sluice_meta::acl::AclOperation::{ClusterAction, Read, Write};
    use sluice_meta::acl::ResourceType::{Group, Topic, TransactionalId};
    let may = |op, rt, name: &str| crate::authz::allowed(shard, client, op, rt, name);
    let txn_denied = kerr::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
    match body {
        RequestKind::InitProducerId(r) => {
            let id = r.transactional_id.as_ref()?;
            (!may(Write, TransactionalId, id)).then(|| {
                let resp = InitProducerIdResponse::default()
                    .with_error_code(txn_denied)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_ongoing_txn_producer_id(ProducerId(-1))
                    .with_ongoing_txn_producer_epoch(-1);
                respond(h, &resp)
            })
        }
        RequestKind::AddPartitionsToTxn(_) if h.api_version >= 4 => {
            (!crate::authz::cluster_allowed(shard, client, ClusterAction)).then(|| {
                let resp = AddPartitionsToTxnResponse::default()
                    .with_error_code(kerr::CLUSTER_AUTHORIZATION_FAILED);
                respond(h, &resp)
            })
        }
        RequestKind::AddPartitionsToTxn(r) => {
            let topics = &r.v3_and_below_topics;
            let code: Box<dyn Fn(&str) -> i16> =
                if !may(Write, TransactionalId, &r.v3_and_below_transactional_id) {
                    Box::new(move |_| txn_denied)
                } else if topics.iter().any(|t| !may(Write, Topic, &t.name)) {
                    Box::new(move |t| {
                        if may(Write, Topic, t) {
                            OPERATION_NOT_ATTEMPTED
                        } else {
                            kerr::TOPIC_AUTHORIZATION_FAILED
                        }
                    })
                } else {
                    return None;
                };
            let resp = AddPartitionsToTxnResponse::default()
                .with_results_by_topic_v3_and_below(topic_results(topics, &|_, t, _| code(t)));
            Some(respond(h, &resp))
        }
        RequestKind::AddOffsetsToTxn(r) => {
            let code = if !may(Write, TransactionalId, &r.transactional_id) {
                txn_denied
            } else if !may(Read, Group, &r.group_id) {
                kerr::GROUP_AUTHORIZATION_FAILED
            } else {
                return None;
            };
            Some(respond(
                h,
                &AddOffsetsToTxnResponse::default().with_error_code(code),
            ))
        }
        RequestKind::EndTxn(r) => (!may(Write, TransactionalId, &r.transactional_id)).then(|| {
            let resp = EndTxnResponse::default()
                .with_error_code(txn_denied)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            respond(h, &resp)
        }),
        _ => None,
    }
}

/// Runs a single-id request on this shard.
async fn run_single(shard: &Rc<BrokerShard>, h: &RequestHeaderInfo, body: RequestKind) -> Outcome {
    let v = h.api_version;
    match body {
        RequestKind::InitProducerId(r) => {
            let id = r
                .transactional_id
                .as_ref()
                .map(|s| s.0.to_string())
                .unwrap_or_default();
            let answer = |error: i16, pid: i64, epoch: i16| {
                let error = if error == sluice_txn::code::PRODUCER_FENCED {
                    fenced_code(FencedApi::InitProducerId, v)
                } else {
                    error
                };
                InitProducerIdResponse::default()
                    .with_error_code(error)
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch)
                    .with_ongoing_txn_producer_id(ProducerId(-1))
                    .with_ongoing_txn_producer_epoch(-1)
            };
            let slot = match slot_for(shard, &id) {
                Ok(s) => s,
                Err(code) => return respond(h, &answer(code, -1, -1)),
            };
            // A new producer id may be needed: make sure this node's block has one.
            crate::handlers::init_producer_id::refill(shard).await;
            let (pid, epoch) = if v >= 3 {
                (r.producer_id.0, r.producer_epoch)
            } else {
                (-1, -1)
            };
            let timeout = r.transaction_timeout_ms;
            let ids = shard.clone();
            let reply = slot
                .call(move |c, token, now| {
                    let mut fresh = || ids.shared_handle.cluster_producer_ids.take();
                    c.init_producer_id(token, now, &id, timeout, pid, epoch, &mut fresh)
                })
                .await;
            let resp = match reply {
                Some(Reply::InitProducerId {
                    error,
                    producer_id,
                    producer_epoch,
                }) => answer(error, producer_id, producer_epoch),
                _ => answer(kerr::NOT_COORDINATOR, -1, -1),
            };
            respond(h, &resp)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            let id = r.v3_and_below_transactional_id.0.to_string();
            let answer = |per: &dyn Fn(&str, i32) -> i16| {
                AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(
                    topic_results(&r.v3_and_below_topics, &|_, t, p| per(t, p)),
                )
            };
            if let Some(unknown) = unknown_partitions(shard, &r.v3_and_below_topics) {
                return respond(h, &answer(&unknown));
            }
            let slot = match slot_for(shard, &id) {
                Ok(s) => s,
                Err(code) => return respond(h, &answer(&|_, _| code)),
            };
            let partitions = pairs(&r.v3_and_below_topics);
            let (pid, epoch) = (r.v3_and_below_producer_id.0, r.v3_and_below_producer_epoch);
            let reply = slot
                .call(move |c, token, now| {
                    c.add_partitions(token, now, &id, pid, epoch, &partitions)
                })
                .await;
            let code = match reply {
                Some(Reply::AddPartitions { error }) => {
                    fenced(error, FencedApi::AddPartitionsToTxn, v)
                }
                _ => kerr::NOT_COORDINATOR,
            };
            respond(h, &answer(&|_, _| code))
        }
        RequestKind::AddOffsetsToTxn(r) => {
            let id = r.transactional_id.0.to_string();
            let code = match slot_for(shard, &id) {
                Err(code) => code,
                Ok(slot) => {
                    let group = r.group_id.0.to_string();
                    let (pid, epoch) = (r.producer_id.0, r.producer_epoch);
                    match slot
                        .call(move |c, token, now| {
                            c.add_offsets(token, now, &id, pid, epoch, &group)
                        })
                        .await
                    {
                        Some(Reply::AddPartitions { error }) => {
                            fenced(error, FencedApi::AddOffsetsToTxn, v)
                        }
                        _ => kerr::NOT_COORDINATOR,
                    }
                }
            };
            respond(h, &AddOffsetsToTxnResponse::default().with_error_code(code))
        }
        RequestKind::EndTxn(r) => {
            let id = r.transactional_id.0.to_string();
            // v5 is transaction version 2 (KIP-890 part 2): the end bumps the epoch and
            // may rotate the producer id.
            let tv2 = v >= 5;
            let (code, pid, epoch) = match slot_for(shard, &id) {
                Err(code) => (code, -1, -1),
                Ok(slot) => {
                    // Only an end at an exhausted epoch rotates to a new id (then this node's
                    // block must have one); others never wait for the controller.
                    let exhausted =
                        slot.coord.borrow().describe(&id).is_ok_and(|t| {
                            t.producer_epoch >= sluice_txn::PRODUCER_EPOCH_EXHAUSTED
                        });
                    if tv2 && exhausted {
                        crate::handlers::init_producer_id::refill(shard).await;
                    }
                    let (pid, epoch, commit) = (r.producer_id.0, r.producer_epoch, r.committed);
                    let ids = shard.clone();
                    match slot
                        .call(move |c, token, now| {
                            let mut fresh = || ids.shared_handle.cluster_producer_ids.take();
                            c.end_txn(token, now, &id, pid, epoch, commit, tv2, &mut fresh)
                        })
                        .await
                    {
                        Some(Reply::EndTxn {
                            error,
                            producer_id,
                            producer_epoch,
                        }) => (
                            fenced(error, FencedApi::EndTxn, v),
                            producer_id,
                            producer_epoch,
                        ),
                        _ => (kerr::NOT_COORDINATOR, -1, -1),
                    }
                }
            };
            respond(
                h,
                &EndTxnResponse::default()
                    .with_error_code(code)
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch),
            )
        }
        _ => Outcome::Close,
    }
}

/// Kafka's request handler: when some partitions of an AddPartitionsToTxn do not exist,
/// those get UNKNOWN_TOPIC_OR_PARTITION and the others OPERATION_NOT_ATTEMPTED, with no
/// change to the transaction. `None` when all exist.
fn unknown_partitions(
    shard: &BrokerShard,
    topics: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic],
) -> Option<impl Fn(&str, i32) -> i16> {
    let table = shard.topics();
    let exists = move |t: &str, p: i32| table.get(t).is_some_and(|t| p >= 0 && p < t.partitions);
    let unknown = topics
        .iter()
        .any(|t| t.partitions.iter().any(|p| !exists(&t.name.0, *p)));
    unknown.then_some(move |t: &str, p: i32| {
        if exists(t, p) {
            OPERATION_NOT_ATTEMPTED
        } else {
            kerr::UNKNOWN_TOPIC_OR_PARTITION
        }
    })
}

/// One transaction's partitions as (topic, partition) pairs.
fn pairs(topics: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic]) -> Vec<(String, i32)> {
    topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect()
}

/// The per-partition results of AddPartitionsToTxn for `topics`: `code(i, topic,
/// partition)` for the i-th partition named.
fn topic_results(
    topics: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic],
    code: &dyn Fn(usize, &str, i32) -> i16,
) -> Vec<add_partitions_to_txn_response::AddPartitionsToTxnTopicResult> {
    let mut at = 0;
    topics
        .iter()
        .map(|tp| {
            add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                .with_name(tp.name.clone())
                .with_results_by_partition(
                    tp.partitions
                        .iter()
                        .map(|p| {
                            let c = code(at, &tp.name.0, *p);
                            at += 1;
                            add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(c)
                        })
                        .collect(),
                )
        })
        .collect()
}

/// The results of one transaction of AddPartitionsToTxn v4+.
fn txn_result(
    t: &add_partitions_to_txn_request::AddPartitionsToTxnTransaction,
    code: &dyn Fn(usize, &str, i32) -> i16,
) -> add_partitions_to_txn_response::AddPartitionsToTxnResult {
    add_partitions_to_txn_response::AddPartitionsToTxnResult::default()
        .with_transactional_id(t.transactional_id.clone())
        .with_topic_results(topic_results(&t.topics, code))
}

/// AddPartitionsToTxn v4+ (Kafka's broker-to-broker form, KIP-890): several transactions,
/// each added or (`verify_only`) checked by the shard coordinating it.
async fn add_partitions_batched(
    shard: &Rc<BrokerShard>,
    h: &RequestHeaderInfo,
    r: AddPartitionsToTxnRequest,
    forwarded: bool,
    client: &crate::conn::Client,
) -> AddPartitionsToTxnResponse {
    let me = shard.shard_id();
    let v = h.api_version;
    let mut results = Vec::with_capacity(r.transactions.len());
    for t in r.transactions {
        let id = t.transactional_id.0.to_string();
        if let (false, Some(o)) = (forwarded, owner_of(shard, &id).filter(|o| *o != me)) {
            // That shard answers this transaction (a request of just it).
            let one = AddPartitionsToTxnRequest::default().with_transactions(vec![t.clone()]);
            let answer = match request_frame(ApiKey::AddPartitionsToTxn, v, &one) {
                Some(frame) => {
                    crate::conn::forward(shard, o, ApiKey::AddPartitionsToTxn as i16, frame, client)
                        .await
                }
                None => Outcome::Close,
            };
            let got = decode_forwarded(h, answer, |b, v| {
                AddPartitionsToTxnResponse::decode(b, v).ok()
            })
            .and_then(|mut r| r.results_by_transaction.pop());
            results.push(
                got.unwrap_or_else(|| txn_result(&t, &|_, _, _| kerr::COORDINATOR_NOT_AVAILABLE)),
            );
            continue;
        }
        if let Some(unknown) = unknown_partitions(shard, &t.topics) {
            results.push(txn_result(&t, &|_, topic, p| unknown(topic, p)));
            continue;
        }
        let partitions = pairs(&t.topics);
        let (pid, epoch) = (t.producer_id.0, t.producer_epoch);
        let codes = if t.verify_only {
            verify_local(shard, &id, pid, epoch, &partitions)
        } else {
            add_local(shard, &id, pid, epoch, &partitions).await
        };
        results.push(txn_result(&t, &|i, _, _| {
            fenced(
                codes.get(i).copied().unwrap_or(kerr::UNKNOWN_SERVER_ERROR),
                FencedApi::AddPartitionsToTxn,
                v,
            )
        }));
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

/// KIP-890 part 1 on this shard: the coordinator's verdict for each partition.
fn verify_local(
    shard: &BrokerShard,
    id: &str,
    pid: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> Vec<i16> {
    match slot_for(shard, id) {
        Err(code) => vec![code; partitions.len()],
        Ok(slot) => slot.coord.borrow().verify(id, pid, epoch, partitions),
    }
}

/// KIP-890 part 2 on this shard: the partitions added to the producer's transaction (one
/// code for all, as AddPartitionsToTxn answers).
async fn add_local(
    shard: &BrokerShard,
    id: &str,
    pid: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> Vec<i16> {
    let n = partitions.len();
    let slot = match slot_for(shard, id) {
        Err(code) => return vec![code; n],
        Ok(slot) => slot,
    };
    let (id, partitions) = (id.to_string(), partitions.to_vec());
    let code = match slot
        .call(move |c, token, now| c.add_partitions(token, now, &id, pid, epoch, &partitions))
        .await
    {
        Some(Reply::AddPartitions { error }) => error,
        _ => kerr::NOT_COORDINATOR,
    };
    vec![code; n]
}

/// The version of the AddPartitionsToTxn requests KIP-890 verification sends.
const VERIFY_VERSION: i16 = 5;

/// KIP-890 for a transactional produce: asks the transaction's coordinator whether the
/// partitions belong to the producer's ongoing transaction (part 1), or with `add` (part 2,
/// transaction version 2: Produce v12+, TxnOffsetCommit v5+) adds them to it, one code per
/// partition as the coordinator answers. The coordinator is on the node leading the id's
/// `__transaction_state` partition: this one (on some shard) or another (NOT_COORDINATOR
/// when no leader is known, COORDINATOR_NOT_AVAILABLE when it did not answer).
pub async fn verify(
    shard: &Rc<BrokerShard>,
    id: &str,
    pid: i64,
    epoch: i16,
    partitions: &[(String, i32)],
    add: bool,
) -> Vec<i16> {
    let n = partitions.len();
    let Some((topic_id, count)) = txn_topic(shard) else {
        return vec![kerr::NOT_COORDINATOR; n];
    };
    // The coordinator is the leader of the id's partition: this node, or another (a
    // replica here that does not lead it does not coordinate).
    let hint =
        crate::handlers::current_leader(shard, &topic_id, sluice_txn::partition_for(id, count));
    if hint.leader == shard.config.node_id || (hint.leader < 0 && owner_of(shard, id).is_some()) {
        return verify_on_node(shard, id, pid, epoch, partitions, add).await;
    }
    if hint.leader < 0 {
        return vec![kerr::NOT_COORDINATOR; n];
    }
    let mut body = bytes::BytesMut::new();
    if verify_request(id, pid, epoch, partitions, add)
        .encode(&mut body, VERIFY_VERSION)
        .is_err()
    {
        return vec![kerr::UNKNOWN_SERVER_ERROR; n];
    }
    let timeout = Duration::from_millis(MARKER_TIMEOUT_MS as u64);
    let answer = crate::node_rpc::call(
        shard,
        hint.leader,
        crate::node_rpc::VERIFY_TXN,
        body.freeze(),
        timeout,
    )
    .await;
    answer
        .and_then(|mut b| AddPartitionsToTxnResponse::decode(&mut b, VERIFY_VERSION).ok())
        .and_then(|r| codes_of(&r, n))
        .unwrap_or_else(|| vec![kerr::COORDINATOR_NOT_AVAILABLE; n])
}

/// An AddPartitionsToTxn v4+ request verifying (or, `add`, adding) one transaction's
/// partitions.
fn verify_request(
    id: &str,
    pid: i64,
    epoch: i16,
    partitions: &[(String, i32)],
    add: bool,
) -> AddPartitionsToTxnRequest {
    let mut topics: Vec<add_partitions_to_txn_request::AddPartitionsToTxnTopic> = Vec::new();
    for (t, p) in partitions {
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == t => last.partitions.push(*p),
            _ => topics.push(
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(topic_name(t))
                    .with_partitions(vec![*p]),
            ),
        }
    }
    let txn = add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_string())))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_verify_only(!add)
        .with_topics(topics);
    AddPartitionsToTxnRequest::default().with_transactions(vec![txn])
}

/// The partition codes of a one-transaction AddPartitionsToTxn v4+ answer, if it has `n`.
fn codes_of(resp: &AddPartitionsToTxnResponse, n: usize) -> Option<Vec<i16>> {
    let codes: Vec<i16> = resp
        .results_by_transaction
        .iter()
        .flat_map(|t| t.topic_results.iter())
        .flat_map(|t| t.results_by_partition.iter())
        .map(|p| p.partition_error_code)
        .collect();
    (codes.len() == n).then_some(codes)
}

/// [`verify`] by this node's coordinator of `id`, on whichever shard holds it.
async fn verify_on_node(
    shard: &Rc<BrokerShard>,
    id: &str,
    pid: i64,
    epoch: i16,
    partitions: &[(String, i32)],
    add: bool,
) -> Vec<i16> {
    let n = partitions.len();
    match owner_of(shard, id) {
        None => vec![kerr::NOT_COORDINATOR; n],
        Some(o) if o == shard.shard_id() && !add => verify_local(shard, id, pid, epoch, partitions),
        Some(o) if o == shard.shard_id() => add_local(shard, id, pid, epoch, partitions).await,
        Some(o) => {
            let req = verify_request(id, pid, epoch, partitions, add);
            let Some(frame) = request_frame(ApiKey::AddPartitionsToTxn, VERIFY_VERSION, &req)
            else {
                return vec![kerr::UNKNOWN_SERVER_ERROR; n];
            };
            let answer = crate::conn::forward(
                shard,
                o,
                ApiKey::AddPartitionsToTxn as i16,
                frame,
                &crate::conn::Client::internal(shard),
            )
            .await;
            let Outcome::Respond(frame) = answer else {
                return vec![kerr::COORDINATOR_NOT_AVAILABLE; n];
            };
            let header_version = AddPartitionsToTxnResponse::header_version(VERIFY_VERSION);
            let mut body = crate::group_host::unframe(&frame, header_version);
            AddPartitionsToTxnResponse::decode(&mut body, VERIFY_VERSION)
                .ok()
                .and_then(|r| codes_of(&r, n))
                .unwrap_or_else(|| vec![kerr::COORDINATOR_NOT_AVAILABLE; n])
        }
    }
}

/// Serves [`crate::node_rpc::VERIFY_TXN`] calls: another node's partition leader asking
/// this node's coordinator (never passed on to a third node).
pub fn serve_verify(
    shard: Option<Rc<BrokerShard>>,
    request: sluice_rpc::Request,
) -> sluice_rpc::LocalBoxFuture<sluice_rpc::Response> {
    Box::pin(async move {
        let answer = |status: u16, body: Bytes| sluice_rpc::Response { status, body };
        let Some(shard) = shard else {
            return answer(sluice_rpc::status::SHUTTING_DOWN, Bytes::new());
        };
        let mut body = request.body;
        let Ok(req) = AddPartitionsToTxnRequest::decode(&mut body, VERIFY_VERSION) else {
            return answer(sluice_cluster::wire::status::MALFORMED, Bytes::new());
        };
        let mut results = Vec::with_capacity(req.transactions.len());
        for t in &req.transactions {
            let partitions = pairs(&t.topics);
            let codes = verify_on_node(
                &shard,
                &t.transactional_id.0,
                t.producer_id.0,
                t.producer_epoch,
                &partitions,
                !t.verify_only,
            )
            .await;
            results.push(txn_result(t, &|i, _, _| {
                codes.get(i).copied().unwrap_or(kerr::UNKNOWN_SERVER_ERROR)
            }));
        }
        let mut out = bytes::BytesMut::new();
        match AddPartitionsToTxnResponse::default()
            .with_results_by_transaction(results)
            .encode(&mut out, VERIFY_VERSION)
        {
            Ok(()) => answer(sluice_rpc::status::OK, out.freeze()),
            Err(_) => answer(sluice_cluster::wire::status::MALFORMED, Bytes::new()),
        }
    })
}

/// A request frame as a client sends it (without the size prefix), for another shard.
fn request_frame<T: Encodable + HeaderVersion>(
    api: ApiKey,
    version: i16,
    body: &T,
) -> Option<Bytes> {
    let mut buf = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_client_id(Some(str_bytes("sluice-txn")))
        .encode(&mut buf, T::header_version(version))
        .ok()?;
    body.encode(&mut buf, version).ok()?;
    Some(buf.freeze())
}

fn fenced(error: i16, api: FencedApi, version: i16) -> i16 {
    if error == sluice_txn::code::PRODUCER_FENCED {
        fenced_code(api, version)
    } else {
        error
    }
}

/// DescribeTransactions: each id answered by the shard owning it (ids of partitions this
/// node does not host: NOT_COORDINATOR).
async fn describe(
    shard: &Rc<BrokerShard>,
    h: &RequestHeaderInfo,
    r: DescribeTransactionsRequest,
    raw: Bytes,
    forwarded: bool,
    client: &crate::conn::Client,
) -> Outcome {
    let me = shard.shard_id();
    let mut states = Vec::with_capacity(r.transactional_ids.len());
    // Answers from other shards, by shard (each forwarded the whole request once).
    let mut remote: HashMap<ShardId, Vec<describe_transactions_response::TransactionState>> =
        HashMap::new();
    for tid in &r.transactional_ids {
        let id = tid.0.as_str();
        let owner = owner_of(shard, id);
        if let (false, Some(o)) = (forwarded, owner.filter(|o| *o != me)) {
            if let std::collections::hash_map::Entry::Vacant(slot) = remote.entry(o) {
                let answer =
                    crate::conn::forward(shard, o, h.api_key as i16, raw.clone(), client).await;
                slot.insert(
                    decode_forwarded(h, answer, |b, v| {
                        DescribeTransactionsResponse::decode(b, v)
                            .ok()
                            .map(|r| r.transaction_states)
                    })
                    .unwrap_or_default(),
                );
            }
            let found = remote[&o].iter().find(|s| s.transactional_id.0 == tid.0);
            states.push(found.cloned().unwrap_or_else(|| {
                describe_transactions_response::TransactionState::default()
                    .with_transactional_id(tid.clone())
                    .with_error_code(kerr::COORDINATOR_NOT_AVAILABLE)
            }));
            continue;
        }
        let base = describe_transactions_response::TransactionState::default()
            .with_transactional_id(tid.clone())
            .with_transaction_state(str_bytes(""))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        let describable = crate::authz::allowed(
            shard,
            client,
            sluice_meta::acl::AclOperation::Describe,
            sluice_meta::acl::ResourceType::TransactionalId,
            id,
        );
        let view = if describable {
            slot_for(shard, id).and_then(|slot| slot.coord.borrow().describe(id))
        } else {
            Err(kerr::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        };
        states.push(match view {
            Err(code) => base.with_error_code(code),
            Ok(v) => {
                let mut topics: Vec<describe_transactions_response::TopicData> = Vec::new();
                for (t, p) in v.partitions {
                    match topics.last_mut() {
                        Some(last) if last.topic.0.as_str() == t => last.partitions.push(p),
                        _ => topics.push(
                            describe_transactions_response::TopicData::default()
                                .with_topic(topic_name(&t))
                                .with_partitions(vec![p]),
                        ),
                    }
                }
                base.with_transaction_state(str_bytes(v.state.name()))
                    .with_transaction_timeout_ms(v.timeout_ms)
                    .with_transaction_start_time_ms(v.start_ms)
                    .with_producer_id(ProducerId(v.producer_id))
                    .with_producer_epoch(v.producer_epoch)
                    .with_topics(topics)
            }
        });
    }
    respond(
        h,
        &DescribeTransactionsResponse::default().with_transaction_states(states),
    )
}

/// ListTransactions: every coordinator on this node (each shard's, merged here).
async fn list(
    shard: &Rc<BrokerShard>,
    h: &RequestHeaderInfo,
    r: ListTransactionsRequest,
    raw: Bytes,
    forwarded: bool,
    client: &crate::conn::Client,
) -> Outcome {
    let mut states = Vec::new();
    let mut unknown = Vec::new();
    for s in &r.state_filters {
        match TxnState::from_name(s.as_str()) {
            Some(st) => states.push(st),
            None => unknown.push(s.clone()),
        }
    }
    let mut out = ListTransactionsResponse::default().with_unknown_state_filters(unknown.clone());
    // Filters that all name unknown states match nothing (Kafka).
    if !unknown.is_empty() && states.is_empty() {
        return respond(h, &out);
    }
    let pids: Vec<i64> = r.producer_id_filters.iter().map(|p| p.0).collect();
    let duration = if h.api_version >= 1 {
        r.duration_filter
    } else {
        -1
    };
    for slot in shard.txn_slots() {
        match slot.log.state() {
            State::Loaded => {}
            // Kafka answers a loading coordinator with the error and no list.
            State::Loading => {
                return respond(
                    h,
                    &ListTransactionsResponse::default()
                        .with_error_code(kerr::COORDINATOR_LOAD_IN_PROGRESS),
                );
            }
            State::Elsewhere => continue,
        }
        let listed = slot.coord.borrow().list(&states, &pids, duration, now_ms());
        match listed {
            Ok(l) => out.transaction_states.extend(
                l.into_iter()
                    .filter(|t| {
                        crate::authz::allowed(
                            shard,
                            client,
                            sluice_meta::acl::AclOperation::Describe,
                            sluice_meta::acl::ResourceType::TransactionalId,
                            &t.transactional_id,
                        )
                    })
                    .map(|t| {
                        list_transactions_response::TransactionState::default()
                            .with_transactional_id(TransactionalId(StrBytes::from_string(
                                t.transactional_id,
                            )))
                            .with_producer_id(ProducerId(t.producer_id))
                            .with_transaction_state(str_bytes(t.state.name()))
                    }),
            ),
            Err(code) => {
                return respond(
                    h,
                    &ListTransactionsResponse::default().with_error_code(code),
                )
            }
        }
    }
    if !forwarded {
        let me = shard.shard_id();
        for i in 0..shard.ctx.shard_count() {
            let o = ShardId(i as u16);
            if o == me {
                continue;
            }
            let answer =
                crate::conn::forward(shard, o, h.api_key as i16, raw.clone(), client).await;
            let code = match decode_forwarded(h, answer, |b, v| {
                ListTransactionsResponse::decode(b, v).ok()
            }) {
                Some(part) if part.error_code == kerr::NONE => {
                    out.transaction_states.extend(part.transaction_states);
                    continue;
                }
                Some(part) => part.error_code,
                None => kerr::COORDINATOR_NOT_AVAILABLE,
            };
            // As for a loading coordinator here: the error, no partial list.
            return respond(
                h,
                &ListTransactionsResponse::default().with_error_code(code),
            );
        }
    }
    respond(h, &out)
}

/// The body of another shard's answer to a forwarded request.
fn decode_forwarded<T>(
    h: &RequestHeaderInfo,
    answer: Outcome,
    decode: impl FnOnce(&mut Bytes, i16) -> Option<T>,
) -> Option<T> {
    let Outcome::Respond(frame) = answer else {
        return None;
    };
    let mut body = crate::group_host::unframe(&frame, h.response_header_version());
    decode(&mut body, h.api_version)
}
