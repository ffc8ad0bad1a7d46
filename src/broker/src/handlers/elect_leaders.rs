//! ElectLeaders (runs on shard 0): leader elections on request, as Kafka's
//! `kafka-leader-election.sh` and `Admin::electLeaders` ask for them.
//!
//! PREFERRED: a partition whose preferred replica (the first in replica order) leads gets
//! ELECTION_NOT_NEEDED; one whose preferred replica is not a live broker in its ISR gets
//! PREFERRED_LEADER_NOT_AVAILABLE; otherwise the leader of its Raft group hands the
//! leadership over (Raft's leadership transfer, `crate::replication::elect_preferred`),
//! and the answer is NONE once the preferred replica leads, REQUEST_TIMED_OUT if the
//! request's `timeout_ms` passes first. Kafka's controller decides elections itself; here
//! each partition's leader is the one that can hand its leadership over, so this node asks
//! the leader's node: itself through the mesh, another node through the controller
//! runtime's transport ([`ELECT_PREFERRED`], one call per leader node for all its
//! partitions, versioned bodies below). A leadership that moved meanwhile is looked up
//! again and asked again until the timeout.
//!
//! UNCLEAN: Raft elects a leader only with a quorum of a partition's replicas, so it can
//! never be asked to elect an out-of-sync one (that could lose committed records): a
//! partition with a leader gets ELECTION_NOT_NEEDED, one without gets
//! ELIGIBLE_LEADERS_NOT_AVAILABLE and says why (Redpanda's position too).
//!
//! `topic_partitions` null means every partition, and then, as Kafka, only partitions for
//! which an election was needed are in the answer. A partition named twice gets
//! INVALID_REQUEST and no election; a request may name at most
//! [`ELECT_LEADERS_PARTITIONS_MAX`] partitions (more: INVALID_REQUEST for the whole request,
//! or a closed connection at v0, whose answer has no top-level error).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sluice_codec::kafka_protocol::messages::elect_leaders_response::{
    PartitionResult, ReplicaElectionResult,
};
use sluice_codec::kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};
use sluice_codec::RequestHeaderInfo;
use sluice_rpc::{LocalBoxFuture, Request, Response};

use super::{str_bytes, topic_name};
use crate::conn::Outcome;
use crate::kerr;
use crate::ops::{PartitionOp, PartitionRequest};
use crate::shard::BrokerShard;

/// Partitions one ElectLeaders request may name (Kafka has no limit; a request of 100 MiB
/// could name 25 million, each of which costs a result here).
pub const ELECT_LEADERS_PARTITIONS_MAX: usize = 100_000;
/// The longest `timeout_ms` honoured (a larger one waits this long).
pub const ELECT_LEADERS_TIMEOUT_MAX: Duration = Duration::from_secs(300);
/// The node-to-node method: "hand these partitions you lead to their preferred replicas".
pub const ELECT_PREFERRED: u16 = sluice_cluster::wire::method::EXTENSION_MIN;
/// Partitions in one [`ELECT_PREFERRED`] call (32 bytes each on the wire).
pub const ELECT_PARTITIONS_PER_CALL_MAX: usize = 1024;
/// Version of the [`ELECT_PREFERRED`] bodies.
const ELECT_WIRE_VERSION: u8 = 1;
/// How long past the election's own timeout the caller waits for a node's answer.
const RPC_MARGIN: Duration = Duration::from_secs(2);
/// Pause before a partition whose leadership moved is looked up and asked again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// A partition by topic id and index.
type PartitionRef = ([u8; 16], i32);

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// One partition of the request and its outcome so far.
struct Entry {
    topic: usize,
    /// Its place among its topic's results.
    slot: usize,
    partition: i32,
    topic_id: [u8; 16],
    preferred: i32,
    code: Option<i16>,
}

pub async fn handle(
    shard: &Rc<BrokerShard>,
    h: &RequestHeaderInfo,
    r: ElectLeadersRequest,
) -> Outcome {
    match elect(shard, h, r).await {
        Some(resp) => super::respond(h, &resp),
        None => Outcome::Close,
    }
}

/// The answer, or `None` when the request is refused and v0 has no way to say so.
async fn elect(
    shard: &Rc<BrokerShard>,
    h: &RequestHeaderInfo,
    r: ElectLeadersRequest,
) -> Option<ElectLeadersResponse> {
    let refuse = || {
        (h.api_version >= 1)
            .then(|| ElectLeadersResponse::default().with_error_code(kerr::INVALID_REQUEST))
    };
    // v0 knows only preferred elections.
    let election = if h.api_version == 0 {
        PREFERRED
    } else {
        r.election_type
    };
    if election != PREFERRED && election != UNCLEAN {
        return refuse();
    }
    let timeout = Duration::from_millis(r.timeout_ms.max(0) as u64).min(ELECT_LEADERS_TIMEOUT_MAX);
    let deadline = Instant::now() + timeout;
    let table = shard.topics();
    let this = shard.config.node_id;
    // Topic names in first-appearance order; entries in request order.
    let mut topics: Vec<String> = Vec::new();
    let mut results: Vec<Vec<(i32, i16)>> = Vec::new();
    // (Entries' results are filled in at the end, in their places.)
    let mut entries: Vec<Entry> = Vec::new();
    let all = r.topic_partitions.is_none();
    let named: Vec<(String, Vec<i32>)> = match r.topic_partitions {
        None => table
            .state
            .topics
            .iter()
            .map(|t| (t.name.clone(), (0..t.partitions).collect()))
            .collect(),
        Some(tps) => tps
            .into_iter()
            .map(|tp| (tp.topic.0.to_string(), tp.partitions))
            .collect(),
    };
    // (Every partition, with a null list, is what the cluster holds: no client can inflate it.)
    if !all && named.iter().map(|(_, ps)| ps.len()).sum::<usize>() > ELECT_LEADERS_PARTITIONS_MAX {
        return refuse();
    }
    // Each partition once, in order of first appearance; one named twice is answered once,
    // INVALID_REQUEST, without an election.
    let mut topic_index: HashMap<String, usize> = HashMap::new();
    let mut seen: HashSet<(usize, i32)> = HashSet::new();
    let mut duplicated: HashSet<(usize, i32)> = HashSet::new();
    let mut order: Vec<(usize, i32)> = Vec::new();
    for (name, partitions) in named {
        let ti = *topic_index.entry(name.clone()).or_insert_with(|| {
            topics.push(name);
            results.push(Vec::new());
            topics.len() - 1
        });
        for p in partitions {
            if seen.insert((ti, p)) {
                order.push((ti, p));
            } else {
                duplicated.insert((ti, p));
            }
        }
    }
    for (ti, p) in order {
        if duplicated.contains(&(ti, p)) {
            results[ti].push((p, kerr::INVALID_REQUEST));
            continue;
        }
        let Some(t) = table
            .get(&topics[ti])
            .filter(|t| p >= 0 && p < t.partitions)
        else {
            results[ti].push((p, kerr::UNKNOWN_TOPIC_OR_PARTITION));
            continue;
        };
        let replicas = t.replicas_of(p, this);
        let preferred = replicas.first().copied().unwrap_or(this);
        let hint = super::current_leader(shard, &t.id, p);
        let code = if election == UNCLEAN {
            Some(if hint.leader >= 0 {
                kerr::ELECTION_NOT_NEEDED
            } else {
                kerr::ELIGIBLE_LEADERS_NOT_AVAILABLE
            })
        } else {
            precheck(shard, &t.id, p, &replicas, hint.leader)
        };
        results[ti].push((p, kerr::REQUEST_TIMED_OUT));
        entries.push(Entry {
            topic: ti,
            slot: results[ti].len() - 1,
            partition: p,
            topic_id: t.id,
            preferred,
            code,
        });
    }
    drop(table);
    if election == PREFERRED {
        run_elections(shard, &mut entries, deadline).await;
        // Metadata through this node names the new leaders before the client is told.
        let view = &shard.shared_handle.cluster_view;
        let moved: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.code == Some(kerr::NONE))
            .collect();
        while Instant::now() < deadline
            && !moved.iter().all(|e| {
                view.leadership(&e.topic_id, e.partition)
                    .is_some_and(|l| l.leader == Some(e.preferred))
            })
        {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }
    for e in entries {
        results[e.topic][e.slot].1 = e.code.unwrap_or(kerr::REQUEST_TIMED_OUT);
    }
    let mut out = Vec::new();
    for (ti, name) in topics.into_iter().enumerate() {
        let partition_result: Vec<PartitionResult> = results[ti]
            .iter()
            .filter(|(_, code)| !(all && *code == kerr::ELECTION_NOT_NEEDED))
            .map(|&(p, code)| {
                PartitionResult::default()
                    .with_partition_id(p)
                    .with_error_code(code)
                    .with_error_message(message(code).map(str_bytes))
            })
            .collect();
        if all && partition_result.is_empty() {
            continue;
        }
        out.push(
            ReplicaElectionResult::default()
                .with_topic(topic_name(&name))
                .with_partition_result(partition_result),
        );
    }
    Some(ElectLeadersResponse::default().with_replica_election_results(out))
}

/// What this node can answer for a PREFERRED election without asking the leader: `None`
/// when the leader's node must decide.
fn precheck(
    shard: &BrokerShard,
    topic: &[u8; 16],
    partition: i32,
    replicas: &[i32],
    leader: i32,
) -> Option<i16> {
    let preferred = *replicas.first()?;
    if leader == preferred {
        return Some(kerr::ELECTION_NOT_NEEDED);
    }
    let view = &shard.shared_handle.cluster_view;
    let in_isr = view
        .leadership(topic, partition)
        .is_some_and(|l| l.isr.contains(&preferred));
    // One replica not leading is down; without a leader there is nobody to hand over
    // (Raft elects one once a quorum is up).
    if replicas.len() < 2 || leader < 0 || !in_isr || !view.is_live(preferred) {
        return Some(kerr::PREFERRED_LEADER_NOT_AVAILABLE);
    }
    None
}

/// Asks the leader of each undecided partition to hand it over, again after a move, until
/// every one has an answer or the deadline passed.
async fn run_elections(shard: &Rc<BrokerShard>, entries: &mut [Entry], deadline: Instant) {
    loop {
        // Per leader node: the undecided entries it leads.
        let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (i, e) in entries.iter_mut().enumerate() {
            if e.code.is_some() {
                continue;
            }
            let hint = super::current_leader(shard, &e.topic_id, e.partition);
            if hint.leader == e.preferred {
                // Moved there meanwhile (a rebalance, or an earlier round's answer lost).
                e.code = Some(kerr::ELECTION_NOT_NEEDED);
            } else if hint.leader < 0 {
                e.code = Some(kerr::PREFERRED_LEADER_NOT_AVAILABLE);
            } else {
                by_leader.entry(hint.leader).or_default().push(i);
            }
        }
        if by_leader.is_empty() {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let calls: Vec<_> = by_leader
            .into_iter()
            .map(|(leader, idx)| {
                let parts: Vec<PartitionRef> = idx
                    .iter()
                    .map(|&i| (entries[i].topic_id, entries[i].partition))
                    .collect();
                let shard = shard.clone();
                async move { (idx, ask(&shard, leader, parts, left).await) }
            })
            .collect();
        let mut retry = false;
        for (idx, codes) in super::join_all(calls).await {
            for (i, code) in idx.into_iter().zip(codes) {
                match code {
                    // The leadership moved (or the node could not be reached): look again.
                    Some(kerr::NOT_LEADER_OR_FOLLOWER) | None => retry = true,
                    Some(c) => entries[i].code = Some(c),
                }
            }
        }
        if !retry || Instant::now() + RETRY_BACKOFF >= deadline {
            return;
        }
        glommio::timer::sleep(RETRY_BACKOFF).await;
    }
}

/// Asks node `leader` to hand `parts` to their preferred replicas within `timeout`: one
/// code per partition, `None` where no answer came.
async fn ask(
    shard: &Rc<BrokerShard>,
    leader: i32,
    parts: Vec<PartitionRef>,
    timeout: Duration,
) -> Vec<Option<i16>> {
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    if leader == shard.config.node_id {
        return elect_local(shard, &parts, timeout_ms)
            .await
            .into_iter()
            .map(Some)
            .collect();
    }
    let mut out = Vec::with_capacity(parts.len());
    for chunk in parts.chunks(ELECT_PARTITIONS_PER_CALL_MAX) {
        let body = encode_call(chunk, timeout_ms);
        let answer =
            crate::node_rpc::call(shard, leader, ELECT_PREFERRED, body, timeout + RPC_MARGIN).await;
        let codes = answer
            .and_then(|b| decode_answer(&b))
            .filter(|c| c.len() == chunk.len())
            .map(|c| c.into_iter().map(Some).collect());
        out.extend(codes.unwrap_or_else(|| vec![None; chunk.len()]));
    }
    out
}

/// Hands the partitions this node leads to their preferred replicas (each on its shard).
async fn elect_local(shard: &Rc<BrokerShard>, parts: &[PartitionRef], timeout_ms: i32) -> Vec<i16> {
    let calls: Vec<_> = parts
        .iter()
        .map(|&(topic_id, partition)| {
            let shard = shard.clone();
            async move {
                let req = PartitionRequest {
                    topic_id,
                    partition,
                    current_leader_epoch: -1,
                    op: PartitionOp::ElectPreferred { timeout_ms },
                };
                shard.partition_call(req, None).await.0.error_code
            }
        })
        .collect();
    super::join_all(calls).await
}

/// The body of an [`ELECT_PREFERRED`] call: version, timeout, count, then each partition's
/// topic id and index.
fn encode_call(parts: &[PartitionRef], timeout_ms: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(9 + parts.len() * 20);
    b.put_u8(ELECT_WIRE_VERSION);
    b.put_i32(timeout_ms);
    b.put_u32(parts.len() as u32);
    for (id, p) in parts {
        b.put_slice(id);
        b.put_i32(*p);
    }
    b.freeze()
}

/// `None` for a body that is not a well-formed call of a known version.
fn decode_call(mut body: &[u8]) -> Option<(Vec<PartitionRef>, i32)> {
    if body.remaining() < 9 || body.get_u8() != ELECT_WIRE_VERSION {
        return None;
    }
    let timeout_ms = body.get_i32();
    let n = body.get_u32() as usize;
    if n > ELECT_PARTITIONS_PER_CALL_MAX || body.remaining() != n * 20 {
        return None;
    }
    let mut parts = Vec::with_capacity(n);
    for _ in 0..n {
        let mut id = [0u8; 16];
        body.copy_to_slice(&mut id);
        parts.push((id, body.get_i32()));
    }
    Some((parts, timeout_ms))
}

/// The answer to a call: version, count, one error code per partition in call order.
fn encode_answer(codes: &[i16]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + codes.len() * 2);
    b.put_u8(ELECT_WIRE_VERSION);
    b.put_u32(codes.len() as u32);
    for c in codes {
        b.put_i16(*c);
    }
    b.freeze()
}

fn decode_answer(mut body: &[u8]) -> Option<Vec<i16>> {
    if body.remaining() < 5 || body.get_u8() != ELECT_WIRE_VERSION {
        return None;
    }
    let n = body.get_u32() as usize;
    if n > ELECT_PARTITIONS_PER_CALL_MAX || body.remaining() != n * 2 {
        return None;
    }
    Some((0..n).map(|_| body.get_i16()).collect())
}

/// Serves [`ELECT_PREFERRED`] calls from other nodes (on shard 0: `crate::node_rpc`).
pub fn serve(shard: Option<Rc<BrokerShard>>, request: Request) -> LocalBoxFuture<Response> {
    Box::pin(async move {
        let malformed = Response {
            status: sluice_cluster::wire::status::MALFORMED,
            body: Bytes::new(),
        };
        let Some(shard) = shard else {
            return Response {
                status: sluice_rpc::status::SHUTTING_DOWN,
                body: Bytes::new(),
            };
        };
        let Some((parts, timeout_ms)) = decode_call(&request.body) else {
            return malformed;
        };
        let timeout_ms = timeout_ms.clamp(0, ELECT_LEADERS_TIMEOUT_MAX.as_millis() as i32);
        let codes = elect_local(&shard, &parts, timeout_ms).await;
        Response {
            status: sluice_rpc::status::OK,
            body: encode_answer(&codes),
        }
    })
}

/// Kafka's message for each code an election answers with (none for success).
fn message(code: i16) -> Option<&'static str> {
    Some(match code {
        kerr::NONE => return None,
        kerr::UNKNOWN_TOPIC_OR_PARTITION => "This server does not host this topic-partition.",
        kerr::ELECTION_NOT_NEEDED => "Leader election not needed for topic partition.",
        kerr::PREFERRED_LEADER_NOT_AVAILABLE => {
            "The preferred leader was not available: it is not a live, in-sync replica that \
             holds everything committed, or the partition has no leader to hand over from."
        }
        kerr::ELIGIBLE_LEADERS_NOT_AVAILABLE => {
            "sluice partitions are Raft groups: a leader is elected only by a quorum of the \
             replicas, never an out-of-sync one (that could lose committed records). This \
             partition gets a leader once a quorum of its replicas is up."
        }
        kerr::INVALID_REQUEST => "Duplicate partition in the request.",
        kerr::REQUEST_TIMED_OUT => "The request timed out.",
        _ => "The election failed.",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_answers_round_trip_and_bad_bodies_are_refused() {
        let parts = vec![([7u8; 16], 3), ([9u8; 16], 0)];
        let b = encode_call(&parts, 1500);
        assert_eq!(decode_call(&b), Some((parts.clone(), 1500)));
        for cut in 0..b.len() {
            assert_eq!(decode_call(&b[..cut]), None, "cut at {cut}");
        }
        let mut other = b.to_vec();
        other[0] = 2;
        assert_eq!(decode_call(&other), None, "unknown version");
        let mut huge = b.to_vec();
        huge[5..9].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode_call(&huge), None, "count past the body");
        let a = encode_answer(&[0, 84, -1]);
        assert_eq!(decode_answer(&a), Some(vec![0, 84, -1]));
        assert_eq!(decode_answer(&a[..a.len() - 1]), None);
    }
}
