//! ListPartitionReassignments: the partitions with a move in progress (all, or the named
//! ones that have one), with their replicas (the target followed by the leaving ones) and
//! the joining and leaving replicas, from the metadata this node adopted. Unknown topics
//! and partitions without a move are left out, as in Kafka.
//!
//! Kafka answers from its controller; this node's copy trails the controller's committed
//! log by at most its propagation (milliseconds). What a client can observe of that lag is
//! bounded so that no tool is misled: a move accepted through this node is listed by it at
//! once (read-your-writes: AlterPartitionReassignments answers only once every shard of the
//! accepting node adopted the change, `metadata_sync::alter_partition_reassignments`), and
//! a move completed at the controller may still be listed for that lag, which
//! `kafka-reassign-partitions.sh --verify` and the admin clients, polling until the list
//! empties, treat as "still in progress". Forwarding the read to the controller would need
//! a new command in the controller runtime's wire protocol for no change a client acts on.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use sluice_codec::kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};
use sluice_codec::RequestHeaderInfo;

use crate::shard::BrokerShard;
use crate::topics::TopicRecord;

fn ongoing(
    t: &TopicRecord,
    partition: i32,
    this_node: i32,
) -> Option<OngoingPartitionReassignment> {
    let m = t.move_of(partition)?;
    let ids = |v: &[i32]| v.iter().map(|n| BrokerId(*n)).collect::<Vec<_>>();
    Some(
        OngoingPartitionReassignment::default()
            .with_partition_index(partition)
            .with_replicas(ids(&t.replicas_of(partition, this_node)))
            .with_adding_replicas(ids(&m.adding))
            .with_removing_replicas(ids(&m.removing)),
    )
}

pub fn handle(
    shard: &Rc<BrokerShard>,
    _h: &RequestHeaderInfo,
    r: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let topics = shard.topics();
    let this_node = shard.config.node_id;
    let mut out = Vec::new();
    match r.topics {
        None => {
            for t in topics.topics().iter().filter(|t| !t.moves.is_empty()) {
                let partitions: Vec<_> = t
                    .moves
                    .iter()
                    .filter_map(|m| ongoing(t, m.partition, this_node))
                    .collect();
                out.push(
                    OngoingTopicReassignment::default()
                        .with_name(super::str_bytes(&t.name).into())
                        .with_partitions(partitions),
                );
            }
        }
        Some(named) => {
            for n in named {
                let Some(t) = topics.get(&n.name.0) else {
                    continue;
                };
                let mut seen = std::collections::BTreeSet::new();
                let partitions: Vec<_> = n
                    .partition_indexes
                    .iter()
                    .filter(|p| seen.insert(**p))
                    .filter_map(|p| ongoing(t, *p, this_node))
                    .collect();
                if !partitions.is_empty() {
                    out.push(
                        OngoingTopicReassignment::default()
                            .with_name(n.name)
                            .with_partitions(partitions),
                    );
                }
            }
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(out)
}
