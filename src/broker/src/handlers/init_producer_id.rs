//! InitProducerId: hands out producer ids for idempotent producers, unique in the cluster
//! and across restarts: ids come from blocks the controller allocated to this node in the
//! metadata log (Kafka's AllocateProducerIds). This file answers producers without a
//! transactional id; `crate::txn_host` answers the others.
//!
//! Without a transactional id every call gets a fresh producer id at epoch 0, whatever
//! producer id and epoch the request names, as Kafka's TransactionCoordinator answers: for a
//! non-transactional producer, KIP-360's recovery is simply a new id. So no request can bump
//! the epoch of (and thereby fence) a producer id it does not own.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProducerId,
};
use sluice_codec::RequestHeaderInfo;

use sluice_shard::{CallClass, Frame, ShardId};

use crate::kerr;
use crate::ops::TAG_PRODUCER_IDS;
use crate::shard::BrokerShard;

pub async fn handle(
    shard: &Rc<BrokerShard>,
    client: &crate::conn::Client,
    _h: &RequestHeaderInfo,
    _r: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let base = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
        .with_ongoing_txn_producer_id(ProducerId(-1))
        .with_ongoing_txn_producer_epoch(-1);
    // (With a transactional id the transaction coordinator answers: `crate::txn_host`.)
    // Under the authorizer an idempotent producer needs IDEMPOTENT_WRITE on the cluster or
    // WRITE on some topic (KIP-679), as in Kafka.
    use sluice_meta::acl::{AclOperation, ResourceType};
    if !crate::authz::cluster_allowed(shard, client, AclOperation::IdempotentWrite)
        && !crate::authz::allowed_any(shard, client, AclOperation::Write, ResourceType::Topic)
    {
        return base.with_error_code(kerr::CLUSTER_AUTHORIZATION_FAILED);
    }
    match cluster_producer_id(shard).await {
        Some(id) => base.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        // Kafka's answer while the next block is not there yet: retriable.
        None => base.with_error_code(kerr::COORDINATOR_LOAD_IN_PROGRESS),
    }
}

/// An id from the controller's blocks for this node (see `ClusterBlocks`).
async fn cluster_producer_id(shard: &Rc<BrokerShard>) -> Option<i64> {
    refill(shard).await;
    shard.shared_handle.cluster_producer_ids.take()
}

/// Makes sure this node's current block has an id left, asking shard 0 (which asks the
/// controller) for a new block when it has none; false if none came.
pub async fn refill(shard: &Rc<BrokerShard>) -> bool {
    let blocks = &shard.shared_handle.cluster_producer_ids;
    if blocks.has_ids() {
        return true;
    }
    // Parked: shard 0 may wait for the controller (its whole command timeout).
    let frame = Frame::empty(TAG_PRODUCER_IDS, None);
    let mut reply = match shard
        .ctx
        .mesh()
        .call_in(CallClass::Parked, ShardId(0), frame)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            log::warn!("asking shard 0 for producer ids: {e}");
            return false;
        }
    };
    // No block in the reply: another request brought one meanwhile (or none came).
    if let Some(b) = reply.take_payload().filter(|b| b.len() == 16) {
        let first = i64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
        let end = i64::from_be_bytes(b[8..].try_into().expect("8 bytes"));
        blocks.adopt(first, end);
    }
    blocks.has_ids()
}
