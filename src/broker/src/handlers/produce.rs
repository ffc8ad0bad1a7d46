//! Produce: each partition's batch is checked against Kafka's rules for client writes
//! ([`crate::produce_rules`]) on the connection's shard, then goes to the owning shard
//! (concurrently when a request spans shards); acks=all answers after the fsync that covers
//! the batch. A transactional batch that would open its producer's transaction in a
//! partition is first confirmed with the transaction coordinator ([`verify_batches`],
//! KIP-890 part 1), or from Produce v12 on added to the transaction by it (part 2: a
//! client on transaction version 2 sends no AddPartitionsToTxn).

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use sluice_codec::kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use sluice_codec::kafka_protocol::protocol::StrBytes;
use sluice_codec::RequestHeaderInfo;

use super::{current_leader, join_all, respond, str_bytes};
use sluice_meta::acl::{AclOperation::Write, ResourceType};

use sluice_replica::sequences::ConnRefusals;
use sluice_storage::hdr::Header;

use crate::authz;
use crate::conn::Outcome;
use crate::kerr;
use crate::ops::{PartitionOp, PartitionRequest};
use crate::produce_rules;
use crate::shard::BrokerShard;

pub async fn handle(
    shard: &Rc<BrokerShard>,
    h: &RequestHeaderInfo,
    r: ProduceRequest,
    frame_len: usize,
    client: &crate::conn::Client,
) -> Outcome {
    let listener = client.listener;
    let acks = r.acks;
    let topics = shard.topics();
    let now = crate::shard::now_ms();
    let client_id = h.client_id.as_deref();
    // Whether any batch is transactional.
    let has_transactional = r.topic_data.iter().any(|td| {
        td.partition_data.iter().any(|pd| {
            pd.records
                .as_deref()
                .and_then(|b| sluice_codec::batch::BatchHeader::parse(b).ok())
                .is_some_and(|h| h.is_transactional())
        })
    });
    // Kafka answers TRANSACTIONAL_ID_AUTHORIZATION_FAILED on every partition to
    // transactional batches without a transactional id (none to authorise) and, under the
    // authorizer, to a transactional id the client may not WRITE.
    let txn_refused = match &r.transactional_id {
        None => has_transactional,
        Some(id) => !authz::allowed(shard, client, Write, ResourceType::TransactionalId, id),
    };
    let early_error = if !matches!(acks, -1..=1) {
        Some(kerr::INVALID_REQUIRED_ACKS)
    } else if txn_refused {
        Some(kerr::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    } else {
        None
    };

    // (topic index, partition index) and what to send, for each partition that passed.
    let mut slots = Vec::new();
    let mut accepted = Vec::new();
    let mut responses = Vec::with_capacity(r.topic_data.len());
    for td in r.topic_data {
        // The topic with its rules, derived from its configs when the table last changed.
        let record = if h.api_version >= 13 {
            topics.get_by_id_with_rules(td.topic_id.as_bytes())
        } else {
            topics.get_with_rules(&td.name.0)
        };
        // Under the authorizer: WRITE on the topic, by the name it has or the client asks
        // for (an unknown topic id stays UNKNOWN_TOPIC_ID: there is no name to check).
        let name = record.map_or(td.name.0.as_str(), |(t, _)| t.name.as_str());
        let writable = (record.is_none() && h.api_version >= 13)
            || authz::allowed(shard, client, Write, ResourceType::Topic, name);
        let mut parts = Vec::with_capacity(td.partition_data.len());
        // The connection's refusals are keyed as the client names the topic (a name it
        // may not know yet has no id here).
        let topic_key = if h.api_version >= 13 {
            sluice_shard::fnv1a64(td.topic_id.as_bytes())
        } else {
            sluice_shard::fnv1a64(td.name.0.as_bytes())
        };
        for pd in td.partition_data {
            let batch_header = pd
                .records
                .as_deref()
                .and_then(sluice_storage::hdr::Header::parse);
            let mut resp = PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let code = match (early_error, record) {
                (Some(code), _) => Some(code),
                _ if !writable => Some(kerr::TOPIC_AUTHORIZATION_FAILED),
                (None, None) => Some(if h.api_version >= 13 {
                    kerr::UNKNOWN_TOPIC_ID
                } else {
                    kerr::UNKNOWN_TOPIC_OR_PARTITION
                }),
                (None, Some((t, _))) if pd.index < 0 || pd.index >= t.partitions => {
                    Some(kerr::UNKNOWN_TOPIC_OR_PARTITION)
                }
                (None, Some((t, rules))) => {
                    let checked = produce_rules::check(
                        h.api_version,
                        client_id,
                        &t.name,
                        rules,
                        pd.records.as_deref(),
                        now,
                    )
                    .and_then(|()| match &pd.records {
                        Some(records) if rules.compacted => {
                            produce_rules::check_keys(&t.name, pd.index, records)
                        }
                        _ => Ok(()),
                    });
                    match checked {
                        Err(refusal) => {
                            resp.error_message = Some(StrBytes::from_string(refusal.message));
                            resp.record_errors = refusal
                                .record_errors
                                .into_iter()
                                .map(|(i, m)| {
                                    BatchIndexAndErrorMessage::default()
                                        .with_batch_index(i)
                                        .with_batch_index_error_message(Some(
                                            StrBytes::from_string(m),
                                        ))
                                })
                                .collect();
                            Some(refusal.code)
                        }
                        Ok(()) => {
                            // Decided here, in request order: an earlier request's batch
                            // refused before reaching its owner is remembered by now.
                            let refused_seq = batch_header
                                .and_then(|bh| {
                                    client.refusals.borrow_mut().carried(
                                        (topic_key, pd.index),
                                        &bh,
                                        now as u64,
                                    )
                                })
                                .map_or(-1, i64::from);
                            let req = PartitionRequest {
                                topic_id: t.id,
                                partition: pd.index,
                                current_leader_epoch: -1,
                                op: PartitionOp::Produce {
                                    acks,
                                    timeout_ms: r.timeout_ms,
                                    guard: -1,
                                    refused_seq,
                                },
                            };
                            slots.push((responses.len(), parts.len()));
                            accepted.push(((topic_key, req), pd.records));
                            None
                        }
                    }
                }
            };
            if let Some(code) = code {
                resp.error_code = code;
                let key = (topic_key, pd.index);
                remember_refusal(&client.refusals, key, code, batch_header.as_ref(), now);
            }
            parts.push(resp);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(td.name)
                .with_topic_id(td.topic_id)
                .with_partition_responses(parts),
        );
    }
    // The batch cache may keep slices of this request only when the batches stored from it
    // are at least half of it; otherwise they are copied out, so a small batch cannot pin a
    // large request (refused batches count for nothing: they are not stored).
    let sharing = sluice_storage::RequestSharing::new(
        frame_len,
        accepted
            .iter()
            .filter_map(|(_, records)| records.as_ref().map(|b| b.len())),
    );
    // What the client's producer quota is charged: the record bytes the request carries.
    let quota_bytes: u64 = accepted
        .iter()
        .filter_map(|(_, records)| records.as_ref().map(|b| b.len() as u64))
        .sum();
    let targets: Vec<([u8; 16], i32)> = accepted
        .iter()
        .map(|((_, req), _)| (req.topic_id, req.partition))
        .collect();
    let transactional_id: Option<Rc<str>> =
        r.transactional_id.as_ref().map(|id| id.0.as_str().into());
    // Kafka's rule: Produce v12+ comes from a client that may rely on the partition being
    // added to its transaction implicitly.
    let add = h.api_version >= 12;
    let items: Vec<(u64, PartitionRequest, Option<bytes::Bytes>)> = accepted
        .into_iter()
        .map(|((topic_key, req), records)| (topic_key, req, records.map(|b| sharing.batch(b))))
        .collect();
    let futs: Vec<_> = items
        .iter()
        .map(|(topic_key, req, records)| {
            let (shard, req, records) = (shard.clone(), *req, records.clone());
            let refusals = client.refusals.clone();
            let key = (*topic_key, req.partition);
            async move {
                let (reply, _) = shard.partition_call(req, records.clone()).await;
                if reply.error_code != kerr::VERIFY_TXN {
                    // A refusal that came without waiting (this shard's view of the topic,
                    // or no owner here) is remembered before the next request is looked at.
                    remember(&refusals, key, &reply, records.as_deref(), now);
                }
                reply
            }
        })
        .collect();
    let mut replies = join_all(futs).await;
    // KIP-890: the batches that would open their producer's transaction in a partition,
    // confirmed (or, v12+, added) with the coordinator in one call for all of them, as
    // Kafka's leader does per request (added one by one, the adds would race).
    let waiting: Vec<usize> = (0..replies.len())
        .filter(|&i| replies[i].error_code == kerr::VERIFY_TXN)
        .collect();
    if !waiting.is_empty() {
        let verdicts =
            verify_batches(shard, transactional_id.as_deref(), &items, &waiting, add).await;
        let appends: Vec<_> = waiting
            .iter()
            .zip(verdicts)
            .map(|(&i, verdict)| {
                let (topic_key, req, records) = items[i].clone();
                let (shard, guard) = (shard.clone(), replies[i].size);
                let refusals = client.refusals.clone();
                async move {
                    let reply = match verdict {
                        Ok(()) => guarded_append(&shard, req, records.clone(), guard).await,
                        Err(code) => crate::ops::PartitionReply::error(code),
                    };
                    let key = (topic_key, req.partition);
                    remember(&refusals, key, &reply, records.as_deref(), now);
                    reply
                }
            })
            .collect();
        for (&i, reply) in waiting.iter().zip(join_all(appends).await) {
            replies[i] = reply;
        }
    }
    let mut endpoints = BTreeMap::new();
    for (((ti, pi), (topic_id, partition)), reply) in slots.into_iter().zip(targets).zip(replies) {
        let p = &mut responses[ti].partition_responses[pi];
        p.error_code = reply.error_code;
        p.base_offset = reply.base_offset;
        p.log_append_time_ms = reply.log_append_time;
        p.log_start_offset = reply.log_start_offset;
        if reply.error_code == kerr::NOT_LEADER_OR_FOLLOWER {
            // KIP-951 (tagged fields from v10; older encodings drop them).
            let hint = current_leader(shard, &topic_id, partition);
            let endpoint = shard
                .shared_handle
                .cluster_view
                .broker_on(hint.leader, listener);
            p.current_leader = LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(hint.leader))
                .with_leader_epoch(hint.epoch);
            if let Some(b) = endpoint {
                endpoints.insert(b.node, b);
            }
        }
    }
    let throttle_ms = crate::quotas::charge(
        shard,
        client,
        client_id,
        crate::quotas::PRODUCER_BYTE_RATE,
        quota_bytes,
    );
    if acks == 0 {
        return Outcome::NoResponse;
    }
    let node_endpoints = endpoints
        .into_values()
        .map(|b| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(b.node))
                .with_host(str_bytes(&b.host))
                .with_port(b.port)
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    respond(
        h,
        &ProduceResponse::default()
            .with_responses(responses)
            .with_throttle_time_ms(throttle_ms)
            .with_node_endpoints(node_endpoints),
    )
}

/// Remembers on the connection an idempotent batch refused with an error its client
/// retries (`sluice_replica::sequences::ConnRefusals`), or forgets its producer's entry once
/// a batch of it was written.
fn remember_refusal(
    refusals: &std::cell::RefCell<ConnRefusals<(u64, i32)>>,
    key: (u64, i32),
    code: i16,
    header: Option<&Header>,
    now: i64,
) {
    let Some(h) = header.filter(|h| h.producer_id >= 0) else {
        return;
    };
    let mut refusals = refusals.borrow_mut();
    if code == kerr::NONE {
        refusals.written(key, h.producer_id);
    } else if retriable(code) {
        refusals.refused(key, h, now as u64);
    }
}

/// Errors Kafka's protocol calls retriable: the client sends the batch again, in order.
fn retriable(code: i16) -> bool {
    use sluice_codec::kafka_protocol::error::ParseResponseErrorCode;
    code.err().is_some_and(|e| e.is_retriable())
}

/// Remembers a refused batch of its producer (see [`remember_refusal`]).
fn remember(
    refusals: &std::cell::RefCell<ConnRefusals<(u64, i32)>>,
    key: (u64, i32),
    reply: &crate::ops::PartitionReply,
    records: Option<&[u8]>,
    now: i64,
) {
    let header = records.and_then(sluice_storage::hdr::Header::parse);
    remember_refusal(refusals, key, reply.error_code, header.as_ref(), now);
}

/// KIP-890 part 1: the partitions' owners asked for the coordinator's word on transactional
/// batches that would open their producer's transaction there (so a batch arriving after
/// its transaction ended, a late retry or a fenced producer's, cannot open one that nothing
/// would ever end). Asks the coordinator once per producer (id and epoch) for all of its
/// partitions in `waiting` (indexes into `items`); with `add` (part 2) asks it to add them
/// to the transaction (a late write of an ended transaction carries the epoch its end
/// bumped past, and is fenced). Per waiting batch: append it, or the produce code that
/// refuses it.
async fn verify_batches(
    shard: &Rc<BrokerShard>,
    transactional_id: Option<&str>,
    items: &[(u64, PartitionRequest, Option<bytes::Bytes>)],
    waiting: &[usize],
    add: bool,
) -> Vec<Result<(), i16>> {
    let mut verdicts = vec![Err(kerr::UNKNOWN_SERVER_ERROR); waiting.len()];
    // (producer id, epoch) -> (slots in `waiting`, their partitions)
    type Waiting = (Vec<usize>, Vec<(String, i32)>);
    let mut producers: BTreeMap<(i64, i16), Waiting> = BTreeMap::new();
    let topics = shard.topics();
    for (slot, &i) in waiting.iter().enumerate() {
        let (_, req, records) = &items[i];
        let header = records
            .as_deref()
            .and_then(|b| sluice_codec::batch::BatchHeader::parse(b).ok());
        let (Some(h), Some(_)) = (header, transactional_id) else {
            // (The handler refuses transactional batches without a transactional id.)
            verdicts[slot] = Err(kerr::INVALID_REQUEST);
            continue;
        };
        let Some(topic) = topics.get_by_id(&req.topic_id).map(|t| t.name.clone()) else {
            verdicts[slot] = Err(kerr::UNKNOWN_TOPIC_OR_PARTITION);
            continue;
        };
        let entry = producers
            .entry((h.producer_id, h.producer_epoch))
            .or_default();
        entry.0.push(slot);
        entry.1.push((topic, req.partition));
    }
    let id = transactional_id.unwrap_or_default();
    for ((pid, epoch), (slots, partitions)) in producers {
        let codes = crate::txn_host::verify(shard, id, pid, epoch, &partitions, add).await;
        for (k, slot) in slots.into_iter().enumerate() {
            let code = codes.get(k).copied().unwrap_or(kerr::UNKNOWN_SERVER_ERROR);
            verdicts[slot] = match code {
                kerr::NONE => Ok(()),
                // The coordinator cannot answer now, or the transaction is changing:
                // retriable for every client version.
                kerr::COORDINATOR_NOT_AVAILABLE
                | kerr::NOT_COORDINATOR
                | kerr::COORDINATOR_LOAD_IN_PROGRESS
                | CONCURRENT_TRANSACTIONS => Err(kerr::NOT_ENOUGH_REPLICAS),
                // Produce has no PRODUCER_FENCED; the epoch error says the same.
                PRODUCER_FENCED => Err(kerr::INVALID_PRODUCER_EPOCH),
                other => Err(other),
            };
        }
    }
    verdicts
}

/// Sends a confirmed batch again with the owner's marker count as its guard (appended only
/// if no marker reached the partition since the owner asked, as Kafka's verification guard).
async fn guarded_append(
    shard: &Rc<BrokerShard>,
    mut req: PartitionRequest,
    records: Option<bytes::Bytes>,
    guard: i64,
) -> crate::ops::PartitionReply {
    if let PartitionOp::Produce {
        acks, timeout_ms, ..
    } = req.op
    {
        req.op = PartitionOp::Produce {
            acks,
            timeout_ms,
            guard,
            refused_seq: -1,
        };
    }
    let (reply, _) = shard.partition_call(req, records).await;
    if reply.error_code == kerr::VERIFY_TXN {
        // Never twice for one batch (the owner answers it only without a guard).
        return crate::ops::PartitionReply::error(kerr::NOT_ENOUGH_REPLICAS);
    }
    reply
}

const CONCURRENT_TRANSACTIONS: i16 = 51;
const PRODUCER_FENCED: i16 = 90;
