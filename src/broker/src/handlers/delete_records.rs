//! DeleteRecords: advances partitions' log start offsets; whole segments below it go.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use sluice_codec::kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use sluice_codec::RequestHeaderInfo;

use super::join_all;
use sluice_meta::acl::{AclOperation::Delete, ResourceType::Topic};

use crate::authz;
use crate::conn::Client;
use crate::kerr;
use crate::ops::{PartitionOp, PartitionRequest};
use crate::shard::BrokerShard;

pub async fn handle(
    shard: &Rc<BrokerShard>,
    client: &Client,
    _h: &RequestHeaderInfo,
    r: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let topics = shard.topics();
    let mut out = Vec::new();
    let mut slots = Vec::new();
    let mut futs = Vec::new();
    for (ti, t) in r.topics.iter().enumerate() {
        let record = topics.get(&t.name.0);
        let denied = !authz::allowed(shard, client, Delete, Topic, &t.name.0);
        let mut parts = Vec::new();
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut res = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            match record {
                _ if denied => res.error_code = kerr::TOPIC_AUTHORIZATION_FAILED,
                // Kafka: "Cannot delete records of internal topic"; the group coordinator's
                // state lives there and would be lost.
                Some(rec) if rec.internal => res.error_code = kerr::INVALID_TOPIC_EXCEPTION,
                // Kafka refuses it on a topic whose cleanup policy lacks `delete` (a
                // compacted topic's start moves only by compaction).
                Some(rec)
                    if p.partition_index >= 0
                        && p.partition_index < rec.partitions
                        && !crate::topic_config::cleanup_deletes(
                            &rec.configs,
                            &topics.state.broker_configs,
                        ) =>
                {
                    res.error_code = kerr::POLICY_VIOLATION
                }
                Some(rec) if p.partition_index >= 0 && p.partition_index < rec.partitions => {
                    let req = PartitionRequest {
                        topic_id: rec.id,
                        partition: p.partition_index,
                        current_leader_epoch: -1,
                        op: PartitionOp::DeleteRecords {
                            offset: p.offset,
                            timeout_ms: r.timeout_ms,
                        },
                    };
                    let shard = shard.clone();
                    slots.push((ti, pi));
                    futs.push(async move { shard.partition_call(req, None).await.0 });
                }
                _ => res.error_code = kerr::UNKNOWN_TOPIC_OR_PARTITION,
            }
            parts.push(res);
        }
        out.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(parts),
        );
    }
    for ((ti, pi), reply) in slots.into_iter().zip(join_all(futs).await) {
        let p = &mut out[ti].partitions[pi];
        p.error_code = reply.error_code;
        p.low_watermark = reply.log_start_offset;
    }
    DeleteRecordsResponse::default().with_topics(out)
}
