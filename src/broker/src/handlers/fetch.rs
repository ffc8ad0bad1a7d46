//! Fetch: reads every requested partition on its owning shard, then, if fewer than
//! `min_bytes` came back, long-polls until an append makes data visible or `max_wait_ms`
//! passes (one parked waiter per fetch, see [`crate::watch`]). Whole batches only; `max_bytes` is honoured across partitions, except that the
//! first batch found is always returned (KIP-74), so a large batch cannot stall a consumer.
//!
//! Fetch sessions (KIP-227): a full fetch with epoch 0 creates a session on the shard the
//! connection lives on; incremental fetches then name only changed partitions and get back
//! only partitions with news (data, an error, a moved high watermark or log start).
//! A session belongs to the connection that created it: to any other connection its id is
//! unknown (FETCH_SESSION_ID_NOT_FOUND, Kafka's answer for an unknown id), and such a
//! connection cannot close or replace it either. Ids are random (a CSPRNG, non-zero,
//! positive), so they cannot be guessed; a session ends with its connection.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use sluice_codec::kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use sluice_codec::kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName,
};
use sluice_codec::kafka_protocol::protocol::StrBytes;
use sluice_codec::{frame_response_spliced, RequestHeaderInfo, SPLICE_BYTES_MIN};
use sluice_shard::ShardId;

use super::{current_leader, join_all};
use sluice_meta::acl::{AclOperation, ResourceType};

use crate::authz;
use crate::config::{FETCH_RESPONSE_BYTES_MAX, FETCH_WAIT_MAX};
use crate::conn::{Client, ConnId, Outcome};
use crate::kerr;
use crate::ops::{PartitionOp, PartitionReply, PartitionRequest, WatchEntry};
use crate::shard::{now_ms, BrokerShard};
use crate::watch::ParkedFetch;

/// Sessions one shard keeps (Kafka's `max.incremental.fetch.session.cache.slots`).
pub const FETCH_SESSIONS_MAX: usize = 1000;
/// Sessions one connection may hold: clients keep one per broker connection; creating one
/// more ends that connection's least recently used session (a client starting afresh has
/// abandoned it), so one connection cannot take the shard's whole cache.
pub const FETCH_SESSIONS_PER_CONNECTION_MAX: usize = 4;
/// Partitions one session may track.
pub const FETCH_SESSION_PARTITIONS_MAX: usize = 100_000;
/// A session unused this long may be evicted to make room.
pub const FETCH_SESSION_IDLE: Duration = Duration::from_secs(120);

/// Session ids and epochs per KIP-227.
const INITIAL_EPOCH: i32 = 0;
const FINAL_EPOCH: i32 = -1;

/// One partition as a session remembers it.
#[derive(Clone, Debug)]
struct Wanted {
    topic: TopicName,
    topic_id: uuid::Uuid,
    partition: i32,
    fetch_offset: i64,
    partition_max_bytes: i32,
    current_leader_epoch: i32,
    /// What the client last heard (incremental responses report only changes).
    last_high_watermark: i64,
    last_log_start: i64,
}

type Key = (uuid::Uuid, TopicName, i32);

struct Session {
    /// The connection that created it; no other may use or close it.
    conn: ConnId,
    epoch: i32,
    partitions: IndexMap<Key, Wanted>,
    last_used: Instant,
}

/// Fetch sessions of one shard. Owned by that shard.
#[derive(Default)]
pub struct FetchSessions {
    sessions: HashMap<i32, Session>,
}

/// A random session id: non-zero and positive (0 means "no session" and clients treat ids
/// as opaque positive numbers), from `rand`'s thread-local CSPRNG (OS-seeded ChaCha).
fn random_session_id() -> i32 {
    loop {
        let id = (rand::random::<u32>() >> 1) as i32;
        if id != 0 {
            return id;
        }
    }
}

impl FetchSessions {
    fn create(&mut self, conn: ConnId, partitions: IndexMap<Key, Wanted>, now: Instant) -> i32 {
        if partitions.len() > FETCH_SESSION_PARTITIONS_MAX {
            return 0;
        }
        let own = self.sessions.iter().filter(|(_, s)| s.conn == conn);
        if own.clone().count() >= FETCH_SESSIONS_PER_CONNECTION_MAX {
            let oldest = own
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| *id)
                .expect("at least one");
            self.sessions.remove(&oldest);
        }
        if self.sessions.len() >= FETCH_SESSIONS_MAX {
            let stale = self
                .sessions
                .iter()
                .filter(|(_, s)| now - s.last_used > FETCH_SESSION_IDLE)
                .map(|(id, _)| *id)
                .next();
            match stale {
                Some(id) => {
                    self.sessions.remove(&id);
                }
                None => return 0, // full: the client just does full fetches
            }
        }
        // At most FETCH_SESSIONS_MAX of 2^31 - 1 ids are taken: a collision is rare, retried.
        let id = loop {
            let id = random_session_id();
            if !self.sessions.contains_key(&id) {
                break id;
            }
        };
        self.sessions.insert(
            id,
            Session {
                conn,
                epoch: 1,
                partitions,
                last_used: now,
            },
        );
        id
    }

    /// The session `id` if `conn` owns it (to any other connection it does not exist).
    fn owned_mut(&mut self, conn: ConnId, id: i32) -> Option<&mut Session> {
        self.sessions.get_mut(&id).filter(|s| s.conn == conn)
    }

    /// Closes session `id` if `conn` owns it.
    fn close(&mut self, conn: ConnId, id: i32) {
        if self.owned_mut(conn, id).is_some() {
            self.sessions.remove(&id);
        }
    }

    /// Drops every session of a connection that closed.
    pub fn close_connection(&mut self, conn: ConnId) {
        self.sessions.retain(|_, s| s.conn != conn);
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// Cuts `records` to whole batches totalling at most `budget` bytes (at least one batch when
/// `at_least_one`).
fn cut_to_budget(records: Bytes, budget: usize, at_least_one: bool) -> Bytes {
    if records.len() <= budget {
        return records;
    }
    // Batch lengths only: the log verified these batches' CRCs when it stored them.
    let mut end = 0usize;
    while let Some(h) = sluice_storage::hdr::Header::parse(&records[end..]) {
        let next = end + h.size;
        if next > records.len() || (next > budget && !(at_least_one && end == 0)) {
            break;
        }
        end = next;
    }
    records.slice(..end)
}

fn key_of(topic: &TopicName, topic_id: uuid::Uuid, partition: i32, by_id: bool) -> Key {
    // v13+ names topics by id only; older versions by name only.
    if by_id {
        (topic_id, TopicName::default(), partition)
    } else {
        (uuid::Uuid::nil(), topic.clone(), partition)
    }
}

fn wanted_from_request(r: &FetchRequest, by_id: bool) -> IndexMap<Key, Wanted> {
    let mut out = IndexMap::new();
    for ft in &r.topics {
        // A session keeps these names: a copy, once per topic, because the decoded name is a
        // slice that would keep the whole (up to 100 MiB) request alive with it.
        let topic = TopicName(StrBytes::from_string(ft.topic.as_str().to_owned()));
        for fp in &ft.partitions {
            out.insert(
                key_of(&topic, ft.topic_id, fp.partition, by_id),
                Wanted {
                    topic: topic.clone(),
                    topic_id: ft.topic_id,
                    partition: fp.partition,
                    fetch_offset: fp.fetch_offset,
                    partition_max_bytes: fp.partition_max_bytes,
                    current_leader_epoch: fp.current_leader_epoch,
                    last_high_watermark: -2,
                    last_log_start: -2,
                },
            );
        }
    }
    out
}

pub async fn handle(
    shard: &Rc<BrokerShard>,
    h: &RequestHeaderInfo,
    r: FetchRequest,
    client: &Client,
) -> FetchResponse {
    let (conn, listener) = (client.conn, client.listener);
    let by_id = h.api_version >= 13;
    let now = Instant::now();
    // Which partitions to read, and the session (if any) the answer belongs to.
    let (wanted, session_id, incremental) =
        if h.api_version < 7 || (r.session_id == 0 && r.session_epoch == FINAL_EPOCH) {
            (wanted_from_request(&r, by_id), 0, false)
        } else if r.session_epoch == INITIAL_EPOCH || r.session_epoch == FINAL_EPOCH {
            // A new full session (an old one of this connection named here is replaced), or a
            // full sessionless fetch that closes the named session of this connection.
            let mut sessions = shard.fetch_sessions.borrow_mut();
            if r.session_id != 0 {
                sessions.close(conn, r.session_id);
            }
            let wanted = wanted_from_request(&r, by_id);
            let id = if r.session_epoch == INITIAL_EPOCH {
                sessions.create(conn, wanted.clone(), now)
            } else {
                0
            };
            (wanted, id, false)
        } else {
            let mut sessions = shard.fetch_sessions.borrow_mut();
            let Some(session) = sessions.owned_mut(conn, r.session_id) else {
                return FetchResponse::default().with_error_code(kerr::FETCH_SESSION_ID_NOT_FOUND);
            };
            if session.epoch != r.session_epoch {
                return FetchResponse::default().with_error_code(kerr::INVALID_FETCH_SESSION_EPOCH);
            }
            for (key, w) in wanted_from_request(&r, by_id) {
                match session.partitions.get_mut(&key) {
                    Some(existing) => {
                        existing.fetch_offset = w.fetch_offset;
                        existing.partition_max_bytes = w.partition_max_bytes;
                        existing.current_leader_epoch = w.current_leader_epoch;
                    }
                    None => {
                        session.partitions.insert(key, w);
                    }
                }
            }
            for ft in &r.forgotten_topics_data {
                for &p in &ft.partitions {
                    session
                        .partitions
                        .shift_remove(&key_of(&ft.topic, ft.topic_id, p, by_id));
                }
            }
            if session.partitions.len() > FETCH_SESSION_PARTITIONS_MAX {
                sessions.sessions.remove(&r.session_id);
                return FetchResponse::default().with_error_code(kerr::INVALID_REQUEST);
            }
            session.epoch = session.epoch.wrapping_add(1).max(1);
            session.last_used = now;
            (session.partitions.clone(), r.session_id, true)
        };

    let results = fetch_partitions(shard, h, &r, &wanted, now, client).await;

    // Assemble, per topic in request order; incremental answers carry only news.
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    let mut updates = Vec::new();
    for ((key, w), pd) in wanted.iter().zip(results) {
        if incremental
            && pd.error_code == kerr::NONE
            && pd.records.as_ref().is_none_or(|b| b.is_empty())
            && pd.high_watermark == w.last_high_watermark
            && pd.log_start_offset == w.last_log_start
        {
            continue;
        }
        updates.push((key.clone(), pd.high_watermark, pd.log_start_offset));
        match responses.last_mut() {
            Some(t) if t.topic == w.topic && t.topic_id == w.topic_id => t.partitions.push(pd),
            _ => responses.push(
                FetchableTopicResponse::default()
                    .with_topic(w.topic.clone())
                    .with_topic_id(w.topic_id)
                    .with_partitions(vec![pd]),
            ),
        }
    }
    if session_id != 0 {
        if let Some(s) = shard
            .fetch_sessions
            .borrow_mut()
            .owned_mut(conn, session_id)
        {
            for (key, hw, start) in updates {
                if let Some(p) = s.partitions.get_mut(&key) {
                    p.last_high_watermark = hw;
                    p.last_log_start = start;
                }
            }
        }
    }
    // KIP-951: the endpoints of the leaders named in NOT_LEADER_OR_FOLLOWER answers (a
    // tagged field from v16).
    let mut leaders: Vec<i32> = responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter(|p| p.error_code == kerr::NOT_LEADER_OR_FOLLOWER)
        .map(|p| p.current_leader.leader_id.0)
        .filter(|n| *n >= 0)
        .collect();
    leaders.sort_unstable();
    leaders.dedup();
    let view = &shard.shared_handle.cluster_view;
    let node_endpoints = leaders
        .into_iter()
        .filter_map(|n| view.broker_on(n, listener))
        .map(|b| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(b.node))
                .with_host(StrBytes::from_string(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(StrBytes::from_string))
        })
        .collect();
    // The client's consumer quota is charged what it is sent; over it, the response says
    // how long to wait and the connection is muted for that long (the records still go:
    // they were read, and a consumer waits before its next fetch).
    let sent: u64 = responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.as_ref().map(|b| b.len() as u64))
        .sum();
    let throttle_ms = crate::quotas::charge(
        shard,
        client,
        h.client_id.as_deref(),
        crate::quotas::CONSUMER_BYTE_RATE,
        sent,
    );
    FetchResponse::default()
        .with_throttle_time_ms(throttle_ms)
        .with_session_id(session_id)
        .with_responses(responses)
        .with_node_endpoints(node_endpoints)
}

/// The response frame with every partition's records (of at least `SPLICE_BYTES_MIN`) as
/// the buffers the log returned, not copies: the connection writes them with one vectored
/// send. (Copying them into the frame was 8 % of a shard's CPU at 600 MiB/s.)
pub fn respond(h: &RequestHeaderInfo, body: &FetchResponse) -> Outcome {
    crate::metrics_host::count_errors(h.api_key as i16, body);
    let records: Vec<Bytes> = body
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.clone())
        .filter(|r| r.len() >= SPLICE_BYTES_MIN)
        .collect();
    match frame_response_spliced(
        h.correlation_id,
        h.response_header_version(),
        body,
        h.api_version,
        &records,
    ) {
        Ok(parts) => Outcome::RespondParts(parts),
        Err(e) => {
            log::error!("encoding Fetch v{} response: {e}", h.api_version);
            Outcome::Close
        }
    }
}

/// Reads the partitions (long-polling as the request allows) and returns one
/// `PartitionData` per wanted partition, in order.
async fn fetch_partitions(
    shard: &Rc<BrokerShard>,
    h: &RequestHeaderInfo,
    r: &FetchRequest,
    wanted: &IndexMap<Key, Wanted>,
    now: Instant,
    client: &Client,
) -> Vec<PartitionData> {
    let topics = shard.topics();
    let by_id = h.api_version >= 13;
    let deadline = now + Duration::from_millis(r.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX);
    let max_bytes = (r.max_bytes.max(0) as usize).min(FETCH_RESPONSE_BYTES_MAX);
    let read_committed = r.isolation_level == 1;
    // A fetch naming a replica (id >= 0) is a follower's in Kafka. sluice's followers
    // replicate over the rpc listener, never through Kafka's Fetch: such a request gets
    // Kafka's answers for a follower fetch of a replica the partition does not have
    // (NOT_LEADER_OR_FOLLOWER), or, under the authorizer without CLUSTER_ACTION on the
    // cluster, TOPIC_AUTHORIZATION_FAILED for every partition, as Kafka does. Never data: a
    // follower's fetch would read past the high watermark.
    let replica_id = if h.api_version >= 15 {
        r.replica_state.replica_id.0
    } else {
        r.replica_id.0
    };
    let follower_refusal = (replica_id >= 0).then(|| {
        if authz::cluster_allowed(shard, client, AclOperation::ClusterAction) {
            kerr::NOT_LEADER_OR_FOLLOWER
        } else {
            kerr::TOPIC_AUTHORIZATION_FAILED
        }
    });

    let mut out = Vec::with_capacity(wanted.len());
    let mut reqs: Vec<Option<PartitionRequest>> = Vec::with_capacity(wanted.len());
    for w in wanted.values() {
        let mut pd = PartitionData::default()
            .with_partition_index(w.partition)
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1)
            .with_preferred_read_replica(BrokerId(-1))
            .with_records(Some(Bytes::new()));
        let record = if by_id {
            topics.get_by_id(w.topic_id.as_bytes())
        } else {
            topics.get(&w.topic.0)
        };
        if let Some(code) = follower_refusal {
            pd.error_code = code;
            out.push(pd);
            reqs.push(None);
            continue;
        }
        let req = match record {
            // Under the authorizer: READ on the topic.
            Some(t)
                if !authz::allowed(
                    shard,
                    client,
                    AclOperation::Read,
                    ResourceType::Topic,
                    &t.name,
                ) =>
            {
                pd.error_code = kerr::TOPIC_AUTHORIZATION_FAILED;
                None
            }
            None if !by_id
                && !authz::allowed(
                    shard,
                    client,
                    AclOperation::Read,
                    ResourceType::Topic,
                    &w.topic.0,
                ) =>
            {
                pd.error_code = kerr::TOPIC_AUTHORIZATION_FAILED;
                None
            }
            None => {
                pd.error_code = if by_id {
                    kerr::UNKNOWN_TOPIC_ID
                } else {
                    kerr::UNKNOWN_TOPIC_OR_PARTITION
                };
                None
            }
            Some(t) if w.partition < 0 || w.partition >= t.partitions => {
                pd.error_code = kerr::UNKNOWN_TOPIC_OR_PARTITION;
                None
            }
            Some(t) => Some(PartitionRequest {
                topic_id: t.id,
                partition: w.partition,
                // -1 below v9 (the field's default): no check.
                current_leader_epoch: w.current_leader_epoch,
                op: PartitionOp::Fetch {
                    read_committed,
                    offset: w.fetch_offset,
                    // The response cap applies before reading, as in Kafka: no partition
                    // read asks for more than the whole response may carry (at most
                    // FETCH_RESPONSE_BYTES_MAX; a larger ask failed the read).
                    max_bytes: w.partition_max_bytes.clamp(0, max_bytes as i32),
                },
            }),
        };
        out.push(pd);
        reqs.push(req);
    }

    loop {
        let futs: Vec<_> = reqs
            .iter()
            .flatten()
            .map(|&req| {
                let shard = shard.clone();
                async move { shard.partition_call(req, None).await }
            })
            .collect();
        let mut results = join_all(futs).await.into_iter();
        let mut total = 0usize;
        let mut waits = Vec::new();
        // Data that did not fit the response's byte budget: waiting cannot help (a watch on
        // it would fire at once, over and over), so the fetch answers with what fits.
        let mut budget_spent = false;
        for ((pd, req), w) in out.iter_mut().zip(&reqs).zip(wanted.values()) {
            let Some(req) = req else { continue };
            let (reply, records): (PartitionReply, Option<Bytes>) =
                results.next().expect("one result per request");
            pd.error_code = reply.error_code;
            if reply.error_code == kerr::NOT_LEADER_OR_FOLLOWER {
                // KIP-951: where the leader is (the response's node endpoints say how to
                // reach it; see `handle`).
                let hint = current_leader(shard, &req.topic_id, req.partition);
                pd.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(hint.leader))
                    .with_leader_epoch(hint.epoch);
            }
            if reply.error_code == kerr::FENCED_LEADER_EPOCH {
                // KIP-951: the current leader and epoch ride with the error (a tagged field
                // from v12, dropped by older encodings), so a client moves on without a
                // Metadata round trip.
                pd.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(shard.config.node_id))
                    .with_leader_epoch(reply.leader_epoch);
            }
            pd.high_watermark = reply.high_watermark;
            pd.last_stable_offset = reply.last_stable_offset;
            pd.log_start_offset = reply.log_start_offset;
            let mut records = records;
            pd.aborted_transactions = if read_committed {
                let (aborted, rest) = match records.take() {
                    Some(p) => crate::ops::split_committed_payload(reply.aborted_count, p)
                        .expect("the owner wrote its aborted transactions ahead of the records"),
                    None => (Vec::new(), Bytes::new()),
                };
                records = Some(rest);
                Some(
                    aborted
                        .into_iter()
                        .map(|(pid, first)| {
                            AbortedTransaction::default()
                                .with_producer_id(ProducerId(pid))
                                .with_first_offset(first)
                        })
                        .collect(),
                )
            } else {
                None
            };
            // A read_committed fetch waits for the last stable offset to pass its offset.
            let visible_end = if read_committed {
                reply.last_stable_offset
            } else {
                reply.high_watermark
            };
            let budget = max_bytes
                .saturating_sub(total)
                .min(w.partition_max_bytes.max(0) as usize);
            let records = records.unwrap_or_default();
            let had_data = !records.is_empty();
            let records = cut_to_budget(records, budget, total == 0);
            total += records.len();
            budget_spent |= had_data && records.is_empty();
            if records.is_empty() && reply.error_code == kerr::NONE && visible_end <= w.fetch_offset
            {
                waits.push((*req, w.fetch_offset));
            }
            pd.records = Some(records);
        }
        let now = Instant::now();
        if total >= r.min_bytes.max(1) as usize
            || now >= deadline
            || waits.is_empty()
            || budget_spent
        {
            break;
        }
        // Long-poll: park ONE waiter for the whole fetch, woken by the first partition whose
        // high watermark passes its fetch offset. Each owner keeps a watch (no task, mesh
        // permit or pending slot per partition); dropping `parked` cancels them.
        let remaining = deadline - now;
        let mut by_owner: Vec<(ShardId, Vec<WatchEntry>)> = Vec::new();
        for (req, offset) in waits {
            let Some(owner) = shard.owner(&req.topic_id, req.partition) else {
                continue;
            };
            let entry = WatchEntry {
                topic_id: req.topic_id,
                partition: req.partition,
                offset,
                committed: read_committed,
            };
            match by_owner.iter_mut().find(|(o, _)| *o == owner) {
                Some((_, v)) => v.push(entry),
                None => by_owner.push((owner, vec![entry])),
            }
        }
        let deadline_ms = now_ms().saturating_add(remaining.as_millis() as i64);
        let parked = ParkedFetch::park(shard, by_owner, deadline_ms).await;
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = glommio::timer::timeout(left, async {
            parked.fired().await;
            Ok(())
        })
        .await;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_codec::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};

    /// Sessions keep copies of topic names, not slices of the request they came in.
    #[test]
    fn session_topic_names_do_not_keep_the_request_alive() {
        let mut request = b"orders".to_vec();
        request.resize(1 << 20, 0);
        let request = Bytes::from(request);
        let name = TopicName(StrBytes::from_utf8(request.slice(..6)).unwrap());
        let r = FetchRequest::default().with_topics(vec![FetchTopic::default()
            .with_topic(name)
            .with_partitions(vec![
                FetchPartition::default().with_partition(0),
                FetchPartition::default().with_partition(1),
            ])]);
        let wanted = wanted_from_request(&r, false);
        assert_eq!(wanted.len(), 2);
        let range = request.as_ptr_range();
        for ((_, key_name, _), w) in &wanted {
            assert_eq!(w.topic.as_str(), "orders");
            assert!(!range.contains(&w.topic.as_ptr()), "a copy of the name");
            assert!(!range.contains(&key_name.as_ptr()), "a copy in the key too");
        }
    }

    #[test]
    fn sessions_belong_to_their_connection_and_ids_are_random() {
        let mut s = FetchSessions::default();
        let (a, b) = (ConnId(1), ConnId(2));
        let now = Instant::now();
        let ids: Vec<i32> = (0..100)
            .map(|i| s.create(a, IndexMap::new(), now + Duration::from_millis(i)))
            .collect();
        assert!(ids.iter().all(|&id| id > 0));
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "unique");
        assert!(
            ids.windows(2).filter(|w| w[1] == w[0] + 1).count() < 5,
            "not sequential"
        );
        assert_eq!(
            s.len(),
            FETCH_SESSIONS_PER_CONNECTION_MAX,
            "one connection keeps at most its cap, the newest"
        );
        assert!(s.owned_mut(a, ids[0]).is_none(), "the oldest made room");
        let id = *ids.last().unwrap();
        assert!(
            s.owned_mut(b, id).is_none(),
            "unknown to another connection"
        );
        s.close(b, id);
        assert!(
            s.owned_mut(a, id).is_some(),
            "another connection cannot close it"
        );
        s.create(b, IndexMap::new(), now);
        s.close_connection(a);
        assert_eq!(s.len(), 1, "a's sessions ended with it; b's stays");
    }
}
