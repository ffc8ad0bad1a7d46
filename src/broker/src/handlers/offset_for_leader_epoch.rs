//! OffsetForLeaderEpoch: the end offset of a leader epoch, used by consumers to detect log
//! truncation after a leader change (KIP-320) and by followers to find where their log
//! diverges. Answered by the owning shard from the partition's epoch history, after the
//! `current_leader_epoch` check (v2+, the versions served).

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use sluice_codec::kafka_protocol::messages::{
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
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
    _h: &RequestHeaderInfo,
    r: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = shard.topics();
    let mut out = Vec::new();
    let mut slots = Vec::new();
    let mut futs = Vec::new();
    for (ti, t) in r.topics.iter().enumerate() {
        let record = topics.get(&t.topic.0);
        let denied = !authz::allowed(shard, client, Describe, Topic, &t.topic.0);
        let mut parts = Vec::new();
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut e = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            match record {
                _ if denied => e.error_code = kerr::TOPIC_AUTHORIZATION_FAILED,
                Some(rec) if p.partition >= 0 && p.partition < rec.partitions => {
                    let req = PartitionRequest {
                        topic_id: rec.id,
                        partition: p.partition,
                        current_leader_epoch: p.current_leader_epoch,
                        op: PartitionOp::EpochEndOffset {
                            epoch: p.leader_epoch,
                        },
                    };
                    let shard = shard.clone();
                    slots.push((ti, pi));
                    futs.push(async move { shard.partition_call(req, None).await.0 });
                }
                _ => e.error_code = kerr::UNKNOWN_TOPIC_OR_PARTITION,
            }
            parts.push(e);
        }
        out.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(parts),
        );
    }
    for ((ti, pi), reply) in slots.into_iter().zip(join_all(futs).await) {
        let e = &mut out[ti].partitions[pi];
        e.error_code = reply.error_code;
        // An error answer carries no epoch or offset (UNDEFINED, as Kafka's).
        if reply.error_code == kerr::NONE {
            e.leader_epoch = reply.leader_epoch;
            e.end_offset = reply.size;
        }
    }
    OffsetForLeaderEpochResponse::default().with_topics(out)
}
