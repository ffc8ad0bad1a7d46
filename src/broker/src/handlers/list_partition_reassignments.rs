//! ListPartitionReassignments (runs on the controller shard): the partitions with a move in
//! progress (all, or the named ones that have one), with their replicas (the target followed
//! by the leaving ones) and the joining and leaving replicas. Unknown topics and partitions
//! without a move are left out, as in Kafka.
//!
//! Kafka answers it from its controller. Here the node first asks the active controller
//! for the metadata index it has applied (a read barrier, `Command::MetadataIndex`: no
//! records, no log write), waits until its own copy of the metadata log has applied that
//! index, then answers from that copy. So the answer holds every move the controller had
//! accepted, and none it had completed or cancelled, when the request arrived, whichever
//! node accepted it (without the barrier a node other than the accepting one could miss a
//! move just accepted, or list one just completed, for the metadata log's propagation).
//! The request's `timeout_ms` bounds both waits (REQUEST_TIMED_OUT); with no controller
//! reachable the last NOT_CONTROLLER is the answer, as for the admin writes.

use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_codec::kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use sluice_codec::kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use sluice_codec::kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};
use sluice_codec::RequestHeaderInfo;
use sluice_meta::{Answer, MetadataImage, PartitionImage};

use super::str_bytes;
use crate::kerr;
use crate::shard::BrokerShard;

fn ongoing(partition: i32, p: &PartitionImage) -> Option<OngoingPartitionReassignment> {
    if !p.reassigning() {
        return None;
    }
    let ids = |v: &[i32]| v.iter().map(|n| BrokerId(*n)).collect::<Vec<_>>();
    Some(
        OngoingPartitionReassignment::default()
            .with_partition_index(partition)
            .with_replicas(ids(&p.replicas))
            .with_adding_replicas(ids(&p.adding))
            .with_removing_replicas(ids(&p.removing)),
    )
}

/// The answer from `image` (see the module header for which image).
fn listed(
    image: &MetadataImage,
    named: Option<Vec<ListPartitionReassignmentsTopics>>,
) -> Vec<OngoingTopicReassignment> {
    let mut out = Vec::new();
    match named {
        None => {
            let mut by_topic: Vec<(&str, Vec<OngoingPartitionReassignment>)> = Vec::new();
            for (t, i, p) in image.reassignments() {
                let Some(o) = ongoing(i, p) else { continue };
                match by_topic.last_mut() {
                    Some((name, ps)) if *name == t.name => ps.push(o),
                    _ => by_topic.push((&t.name, vec![o])),
                }
            }
            for (name, partitions) in by_topic {
                out.push(
                    OngoingTopicReassignment::default()
                        .with_name(str_bytes(name).into())
                        .with_partitions(partitions),
                );
            }
        }
        Some(named) => {
            for n in named {
                let Some(t) = image.topic_by_name(&n.name.0) else {
                    continue;
                };
                let mut seen = std::collections::BTreeSet::new();
                let partitions: Vec<_> = n
                    .partition_indexes
                    .iter()
                    .filter(|p| seen.insert(**p))
                    .filter_map(|&p| {
                        let part = t.partitions.get(usize::try_from(p).ok()?)?;
                        ongoing(p, part)
                    })
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
    out
}

pub async fn handle(
    shard: &Rc<BrokerShard>,
    _h: &RequestHeaderInfo,
    r: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let response = ListPartitionReassignmentsResponse::default();
    let fail = |code: i16, msg: &str| {
        ListPartitionReassignmentsResponse::default()
            .with_error_code(code)
            .with_error_message(Some(str_bytes(msg)))
    };
    let Some(node) = shard.controller.as_ref().and_then(|c| c.cluster()) else {
        return fail(kerr::NOT_CONTROLLER, "No controller runtime on this node.");
    };
    // A client that sets no useful timeout (0 or negative) gets the controller's own, as
    // other admin calls do, rather than an answer that always times out.
    let timeout = match u64::try_from(r.timeout_ms) {
        Ok(ms) if ms > 0 => Duration::from_millis(ms).min(sluice_cluster::COMMAND_TIMEOUT),
        _ => sluice_cluster::COMMAND_TIMEOUT,
    };
    let deadline = Instant::now() + timeout;
    let index = match node.metadata_index(timeout).await {
        Answer::MetadataIndex(Ok(i)) => i,
        Answer::MetadataIndex(Err(e)) => return fail(e.code, &e.message),
        other => {
            log::error!("list partition reassignments: unexpected answer {other:?}");
            return fail(kerr::UNKNOWN_SERVER_ERROR, "The controller gave no answer.");
        }
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if !node.wait_applied(index, left).await {
        return fail(
            kerr::REQUEST_TIMED_OUT,
            "This node's metadata did not catch up with the controller's in time.",
        );
    }
    response.with_topics(listed(&node.image(), r.topics))
}
