//! InitProducerId: hands out producer ids for idempotent producers (unique across restarts:
//! ids come from blocks reserved durably before use).
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

use sluice_shard::{Frame, ShardId};

use crate::kerr;
use crate::ops::TAG_PRODUCER_IDS;
use crate::shard::BrokerShard;

pub async fn handle(
    shard: &Rc<BrokerShard>,
    _h: &RequestHeaderInfo,
    r: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let base = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
        .with_ongoing_txn_producer_id(ProducerId(-1))
        .with_ongoing_txn_producer_epoch(-1);
    if r.transactional_id.is_some() {
        // No transaction coordinator yet.
        return base.with_error_code(kerr::COORDINATOR_NOT_AVAILABLE);
    }
    if !shard.config.voters.is_empty() {
        return match cluster_producer_id(shard).await {
            Some(id) => base.with_producer_id(ProducerId(id)).with_producer_epoch(0),
            // Kafka's answer while the next block is not there yet: retriable.
            None => base.with_error_code(kerr::COORDINATOR_LOAD_IN_PROGRESS),
        };
    }
    match shard.shared().producer_ids.next().await {
        Ok(id) => base.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            log::error!("allocating a producer id: {e}");
            base.with_error_code(kerr::KAFKA_STORAGE_ERROR)
        }
    }
}

/// An id from the controller's blocks for this node (see `ClusterBlocks`).
async fn cluster_producer_id(shard: &Rc<BrokerShard>) -> Option<i64> {
    let blocks = &shard.shared_handle.cluster_producer_ids;
    if let Some(id) = blocks.take() {
        return Some(id);
    }
    let frame = Frame::empty(TAG_PRODUCER_IDS, None);
    let mut reply = match shard.ctx.mesh().call(ShardId(0), frame).await {
        Ok(r) => r,
        Err(e) => {
            log::warn!("asking shard 0 for producer ids: {e}");
            return None;
        }
    };
    let b = reply.take_payload()?;
    if b.len() != 16 {
        return None;
    }
    let first = i64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
    let end = i64::from_be_bytes(b[8..].try_into().expect("8 bytes"));
    blocks.adopt(first, end);
    blocks.take()
}
