//! ListOffsets: earliest, latest, max timestamp, or the first offset at a timestamp, each
//! answered by the partition's owning shard. A partition named more than once in one request
//! gets `INVALID_REQUEST` in every entry and no lookup, as Kafka answers: a lookup by
//! timestamp may decompress a whole batch, and duplicates would repeat that work per entry.

use std::collections::HashMap;
use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use sluice_codec::kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use sluice_codec::RequestHeaderInfo;

use super::join_all;
use sluice_meta::acl::{AclOperation::Describe, ResourceType::Topic};

use crate::authz;
use crate::conn::Client;
use crate::kerr;
use crate::ops::{PartitionOp, PartitionRequest};
use crate::shard::BrokerShard;

pub async fn handle(
    shard: &Rc<BrokerShard>,
    client: &Client,
    h: &RequestHeaderInfo,
    r: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let topics = shard.topics();
    let mut out = Vec::with_capacity(r.topics.len());
    let mut slots = Vec::new();
    let mut futs = Vec::new();
    // Kafka's ListOffsetsRequest.duplicatePartitions: counted over the whole request
    // (a topic may also be listed twice).
    let mut seen: HashMap<(&str, i32), u32> = HashMap::new();
    for t in &r.topics {
        for p in &t.partitions {
            *seen
                .entry((t.name.0.as_str(), p.partition_index))
                .or_default() += 1;
        }
    }
    for (ti, t) in r.topics.iter().enumerate() {
        let record = topics.get(&t.name.0);
        let denied = !authz::allowed(shard, client, Describe, Topic, &t.name.0);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut resp = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(-1);
            if seen[&(t.name.0.as_str(), p.partition_index)] > 1 {
                resp.error_code = kerr::INVALID_REQUEST;
                parts.push(resp);
                continue;
            }
            if denied {
                resp.error_code = kerr::TOPIC_AUTHORIZATION_FAILED;
                parts.push(resp);
                continue;
            }
            match record {
                Some(rec) if p.partition_index >= 0 && p.partition_index < rec.partitions => {
                    let req = PartitionRequest {
                        topic_id: rec.id,
                        partition: p.partition_index,
                        // -1 below v4 (the field's default): no check.
                        current_leader_epoch: p.current_leader_epoch,
                        op: PartitionOp::ListOffset {
                            timestamp: p.timestamp,
                            // v2+: read_committed's latest offset is the last stable one.
                            read_committed: r.isolation_level == 1,
                        },
                    };
                    let shard = shard.clone();
                    slots.push((ti, pi));
                    futs.push(async move { shard.partition_call(req, None).await.0 });
                }
                _ => resp.error_code = kerr::UNKNOWN_TOPIC_OR_PARTITION,
            }
            parts.push(resp);
        }
        out.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(parts),
        );
    }
    for ((ti, pi), reply) in slots.into_iter().zip(join_all(futs).await) {
        let p = &mut out[ti].partitions[pi];
        p.error_code = reply.error_code;
        if reply.error_code != kerr::NONE {
            // An error answer carries no offset, timestamp or epoch (-1), as Kafka's.
            continue;
        }
        p.offset = reply.base_offset;
        p.timestamp = reply.timestamp;
        // leader_epoch exists from v4; older versions must leave it unset.
        p.leader_epoch = if h.api_version >= 4 {
            reply.leader_epoch
        } else {
            -1
        };
    }
    ListOffsetsResponse::default().with_topics(out)
}
