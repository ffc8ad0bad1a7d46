//! AlterPartitionReassignments (runs on the controller shard): moves partitions to new
//! replica sets, or cancels a move in progress (KIP-455). The controller validates and
//! records the move; each partition's Raft group then adds the joining replicas as
//! learners, promotes them once caught up, drops the leaving ones, and its leader reports
//! the move done, which completes it (`replication.rs`). Answered once the controller's
//! records committed and this node adopted them, as Kafka answers once the move started.
//!
//! Every move Kafka makes is made, whatever the replica counts: a partition of one replica
//! (a plain log) becomes a Raft group over its existing log when the move starts (its only
//! replica adopts it: `ReplicaStore::adopt`), and a group left with one replica stays a
//! one-voter group (`shard::replicated`). Only Kafka's own checks refuse here
//! (allowReplicationFactorChange); the controller checks the replicas themselves.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use sluice_codec::kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
};
use sluice_codec::RequestHeaderInfo;

use super::str_bytes;
use crate::kerr;
use crate::shard::BrokerShard;

pub async fn handle(
    shard: &Rc<BrokerShard>,
    _h: &RequestHeaderInfo,
    r: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let allow_rf_change = r.allow_replication_factor_change;
    let response = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change);
    let Some(controller) = &shard.controller else {
        return response
            .with_error_code(kerr::NOT_CONTROLLER)
            .with_error_message(Some(str_bytes("No controller runtime on this node.")));
    };
    // Per request entry: refused here (code, message), or sent to the controller.
    let topics = shard.topics();
    let this_node = shard.config.node_id;
    let mut refused: Vec<Option<(i16, String)>> = Vec::new();
    let mut send = Vec::new();
    for t in &r.topics {
        for p in &t.partitions {
            let target: Option<Vec<i32>> =
                p.replicas.as_ref().map(|v| v.iter().map(|b| b.0).collect());
            let known = topics
                .get(&t.name.0)
                .filter(|k| p.partition_index >= 0 && p.partition_index < k.partitions);
            let refusal = known.and_then(|k| {
                let current = k.original_of(p.partition_index, this_node);
                match &target {
                    Some(tg) if !allow_rf_change && tg.len() != current.len() => Some((
                        kerr::INVALID_REPLICATION_FACTOR,
                        format!(
                            "The replication factor is changed from {} to {} but \
                             allowReplicationFactorChange is false.",
                            current.len(),
                            tg.len()
                        ),
                    )),
                    _ => None,
                }
            });
            if refusal.is_none() {
                send.push((t.name.0.to_string(), p.partition_index, target));
            }
            refused.push(refusal);
        }
    }
    let answers = if send.is_empty() {
        Vec::new()
    } else {
        controller
            .alter_partition_reassignments(shard, send.clone())
            .await
    };
    let mut answers = answers.into_iter();
    let mut refused = refused.into_iter();
    let mut responses = Vec::new();
    for t in r.topics {
        let mut partitions = Vec::new();
        for p in t.partitions {
            let outcome = match refused.next().flatten() {
                Some(e) => Err(e),
                None => answers.next().unwrap_or(Err((
                    kerr::UNKNOWN_SERVER_ERROR,
                    "The controller gave no answer for this partition.".into(),
                ))),
            };
            let mut res =
                ReassignablePartitionResponse::default().with_partition_index(p.partition_index);
            if let Err((code, msg)) = outcome {
                res.error_code = code;
                res.error_message = Some(str_bytes(&msg));
            }
            partitions.push(res);
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    response.with_responses(responses)
}
