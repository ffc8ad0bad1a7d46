//! Fetch: reads every requested partition on its owning shard, then, if fewer than
//! `min_bytes` came back, long-polls until an append makes data visible or `max_wait_ms`
//! passes. Whole batches only; `max_bytes` is honoured across partitions, except that the
//! first batch found is always returned (KIP-74), so a large batch cannot stall a consumer.
//!
//! Fetch sessions (KIP-227): sluice answers every request as a full fetch and returns
//! session id 0 ("no session created"), which clients handle by sending full requests.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::channels::local_channel;
use sluice_codec::kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use sluice_codec::kafka_protocol::messages::{FetchRequest, FetchResponse};
use sluice_codec::RequestHeaderInfo;

use super::join_all;
use crate::config::{FETCH_RESPONSE_BYTES_MAX, FETCH_WAIT_MAX};
use crate::kerr;
use crate::ops::{PartitionOp, PartitionReply, PartitionRequest};
use crate::shard::BrokerShard;

struct Slot {
    topic: usize,
    partition: usize,
    req: Option<PartitionRequest>,
    partition_max_bytes: i32,
}

/// Cuts `records` to whole batches totalling at most `budget` bytes (at least one batch when
/// `at_least_one`).
fn cut_to_budget(records: Bytes, budget: usize, at_least_one: bool) -> Bytes {
    if records.len() <= budget {
        return records;
    }
    let mut end = 0usize;
    for item in sluice_codec::BatchIter::new(&records) {
        match item {
            Ok(sluice_codec::BatchItem::Batch(b)) => {
                if b.range.end > budget && !(at_least_one && end == 0) {
                    break;
                }
                end = b.range.end;
            }
            _ => break,
        }
    }
    records.slice(..end)
}

pub async fn handle(shard: &Rc<BrokerShard>, h: &RequestHeaderInfo, r: FetchRequest) -> FetchResponse {
    let topics = shard.topics();
    if h.api_version >= 7 && r.session_id != 0 {
        // We never hand out sessions, so an incremental fetch names one we do not know.
        return FetchResponse::default().with_error_code(kerr::FETCH_SESSION_ID_NOT_FOUND);
    }
    let deadline = Instant::now() + Duration::from_millis(r.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX);
    let max_bytes = (r.max_bytes.max(0) as usize).min(FETCH_RESPONSE_BYTES_MAX);
    let read_committed = r.isolation_level == 1;

    let mut responses = Vec::with_capacity(r.topics.len());
    let mut slots = Vec::new();
    for (ti, ft) in r.topics.iter().enumerate() {
        let record = if h.api_version >= 13 { topics.get_by_id(ft.topic_id.as_bytes()) } else { topics.get(&ft.topic.0) };
        let mut parts = Vec::with_capacity(ft.partitions.len());
        for (pi, fp) in ft.partitions.iter().enumerate() {
            let mut pd = PartitionData::default()
                .with_partition_index(fp.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_preferred_read_replica(sluice_codec::kafka_protocol::messages::BrokerId(-1))
                .with_records(Some(Bytes::new()));
            let req = match record {
                None => {
                    pd.error_code = if h.api_version >= 13 { kerr::UNKNOWN_TOPIC_ID } else { kerr::UNKNOWN_TOPIC_OR_PARTITION };
                    None
                }
                Some(t) if fp.partition < 0 || fp.partition >= t.partitions => {
                    pd.error_code = kerr::UNKNOWN_TOPIC_OR_PARTITION;
                    None
                }
                Some(t) if fp.current_leader_epoch > 0 => {
                    // Single node: the only leader epoch is 0; a newer one is from the future.
                    pd.error_code = kerr::UNKNOWN_LEADER_EPOCH;
                    let _ = t;
                    None
                }
                Some(t) => Some(PartitionRequest {
                    topic_id: t.id,
                    partition: fp.partition,
                    op: PartitionOp::Fetch { offset: fp.fetch_offset, max_bytes: fp.partition_max_bytes },
                }),
            };
            parts.push(pd);
            slots.push(Slot { topic: ti, partition: pi, req, partition_max_bytes: fp.partition_max_bytes });
        }
        responses.push(FetchableTopicResponse::default().with_topic(ft.topic.clone()).with_topic_id(ft.topic_id).with_partitions(parts));
    }

    loop {
        let futs: Vec<_> = slots
            .iter()
            .filter_map(|s| s.req)
            .map(|req| {
                let shard = shard.clone();
                async move { shard.partition_call(req, None).await }
            })
            .collect();
        let mut results = join_all(futs).await.into_iter();
        let mut total = 0usize;
        let mut waits = Vec::new();
        for s in &slots {
            let Some(req) = s.req else { continue };
            let (reply, records): (PartitionReply, Option<Bytes>) = results.next().expect("one result per request");
            let pd = &mut responses[s.topic].partitions[s.partition];
            pd.error_code = reply.error_code;
            pd.high_watermark = reply.high_watermark;
            pd.last_stable_offset = reply.high_watermark;
            pd.log_start_offset = reply.log_start_offset;
            pd.aborted_transactions = if read_committed { Some(Vec::new()) } else { None };
            let records = records.unwrap_or_default();
            let budget = max_bytes.saturating_sub(total).min(s.partition_max_bytes.max(0) as usize);
            let records = cut_to_budget(records, budget, total == 0);
            total += records.len();
            if records.is_empty() && reply.error_code == kerr::NONE {
                if let PartitionOp::Fetch { offset, .. } = req.op {
                    waits.push((req, offset));
                }
            }
            pd.records = Some(records);
        }
        let now = Instant::now();
        if total >= r.min_bytes.max(1) as usize || now >= deadline || waits.is_empty() {
            break;
        }
        // Long-poll: wake on the first partition whose high watermark passes its fetch offset.
        let remaining = deadline - now;
        let (tx, rx) = local_channel::new_bounded::<()>(1);
        let tx = Rc::new(tx);
        for (req, offset) in waits {
            let shard = shard.clone();
            let tx = tx.clone();
            let wait = PartitionRequest {
                op: PartitionOp::WaitForData { offset, max_wait_ms: remaining.as_millis() as u32 },
                ..req
            };
            glommio::spawn_local(async move {
                shard.partition_call(wait, None).await;
                let _ = tx.try_send(());
            })
            .detach();
        }
        drop(tx);
        let _ = glommio::timer::timeout(remaining, async {
            rx.recv().await;
            Ok(())
        })
        .await;
    }
    FetchResponse::default().with_responses(responses)
}
