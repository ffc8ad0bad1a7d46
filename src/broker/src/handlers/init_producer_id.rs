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

use crate::kerr;
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
    match shard.shared().producer_ids.next().await {
        Ok(id) => base.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            log::error!("allocating a producer id: {e}");
            base.with_error_code(kerr::KAFKA_STORAGE_ERROR)
        }
    }
}
