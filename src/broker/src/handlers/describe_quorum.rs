//! DescribeQuorum (KIP-595, v0–v2): the controller quorum as its leader sees it, for
//! `kafka-metadata-quorum.sh describe --status --replication` and the admin clients'
//! `describeMetadataQuorum`. The controller log answers as Kafka's `__cluster_metadata`
//! partition 0: leader, epoch (the Raft term), high watermark (the commit index), voters with
//! the index each has matched and when the leader last heard from it and last saw it caught
//! up (sampled every Raft tick, wall-clock ms), and the registered nodes that are not voters
//! as observers (which pull the committed log: their position is not known there, -1). The
//! offsets are controller-log (Raft) indexes. v2's `nodes` name each voter's node-to-node
//! listener as `CONTROLLER`, and each replica its data directory id.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use sluice_codec::kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse,
};
use sluice_codec::kafka_protocol::protocol::StrBytes;
use sluice_meta::controller::{Answer, QuorumReplica};

use super::{str_bytes, topic_name, uuid};
use crate::kerr;
use crate::shard::BrokerShard;

/// The topic Kafka's tools name the metadata log by.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

pub async fn handle(shard: &Rc<BrokerShard>, r: DescribeQuorumRequest) -> DescribeQuorumResponse {
    let metadata_log = r.topics.len() == 1
        && r.topics[0].topic_name.as_str() == METADATA_TOPIC
        && r.topics[0].partitions.len() == 1
        && r.topics[0].partitions[0].partition_index == 0;
    if !metadata_log {
        // Kafka's answer: each named partition UNKNOWN_TOPIC_OR_PARTITION.
        let topics = r
            .topics
            .iter()
            .map(|t| {
                TopicData::default()
                    .with_topic_name(t.topic_name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                PartitionData::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(kerr::UNKNOWN_TOPIC_OR_PARTITION)
                            })
                            .collect(),
                    )
            })
            .collect();
        return DescribeQuorumResponse::default().with_topics(topics);
    }
    let Some(node) = shard.controller.as_ref().and_then(|c| c.cluster()) else {
        return whole(kerr::NOT_CONTROLLER, "The controller is not available.");
    };
    let view = match node.describe_quorum().await {
        Answer::DescribeQuorum(Ok(v)) => v,
        Answer::DescribeQuorum(Err(e)) => return whole(e.code, &e.message),
        other => {
            log::error!("describe quorum: unexpected answer {other:?}");
            return whole(kerr::UNKNOWN_SERVER_ERROR, "no answer");
        }
    };
    let image = node.image();
    let directory = |n: i32| {
        image
            .broker(n)
            .map_or_else(|| uuid(&[0; 16]), |b| uuid(&b.directory))
    };
    let replica = |q: &QuorumReplica| {
        ReplicaState::default()
            .with_replica_id(BrokerId(q.node))
            .with_replica_directory_id(directory(q.node))
            .with_log_end_offset(q.log_end_offset)
            .with_last_fetch_timestamp(q.last_fetch_ms)
            .with_last_caught_up_timestamp(q.last_caught_up_ms)
    };
    let nodes = view
        .voters
        .iter()
        .filter_map(|v| image.broker(v.node))
        .map(|b| {
            Node::default()
                .with_node_id(BrokerId(b.node))
                .with_listeners(vec![Listener::default()
                    .with_name(StrBytes::from_static_str("CONTROLLER"))
                    .with_host(str_bytes(&b.rpc.host))
                    .with_port(b.rpc.port)])
        })
        .collect();
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_error_message(None)
        .with_leader_id(BrokerId(view.leader))
        .with_leader_epoch(view.epoch)
        .with_high_watermark(view.high_watermark)
        .with_current_voters(view.voters.iter().map(replica).collect())
        .with_observers(view.observers.iter().map(replica).collect());
    DescribeQuorumResponse::default()
        .with_error_message(None)
        .with_topics(vec![TopicData::default()
            .with_topic_name(topic_name(METADATA_TOPIC))
            .with_partitions(vec![partition])])
        .with_nodes(nodes)
}

/// The whole request failed (a top-level error, as Kafka answers what it cannot serve).
pub fn whole(code: i16, message: &str) -> DescribeQuorumResponse {
    DescribeQuorumResponse::default()
        .with_error_code(code)
        .with_error_message(Some(str_bytes(message)))
}
