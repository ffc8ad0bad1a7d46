//! WriteTxnMarkers: COMMIT/ABORT control batches written to partitions this node leads, as
//! a transaction coordinator on another node asks (through the node-to-node transport,
//! [`WRITE_MARKERS`]) and as `kafka-transactions.sh abort` asks (the Kafka API, to abort a
//! hanging transaction by hand).
//!
//! Each marker goes to its partition's owning shard as an acks=all append of the control
//! batch (`PartitionOp::Produce`), whose log refuses a marker of an older producer epoch
//! (INVALID_PRODUCER_EPOCH) or an older coordinator epoch (TRANSACTION_COORDINATOR_FENCED).
//! A partition this node does not lead gets NOT_LEADER_OR_FOLLOWER, an unknown one
//! UNKNOWN_TOPIC_OR_PARTITION, as in Kafka. A request may name at most
//! [`WRITE_TXN_MARKERS_PARTITIONS_MAX`] partitions in all (more: the connection closes, as
//! v1 has no top-level error).

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use sluice_codec::kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use sluice_codec::kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use sluice_codec::kafka_protocol::protocol::{Decodable, Encodable};
use sluice_codec::RequestHeaderInfo;
use sluice_rpc::{LocalBoxFuture, Request, Response};

use crate::conn::Outcome;
use crate::kerr;
use crate::ops::{PartitionOp, PartitionRequest};
use crate::shard::{now_ms, BrokerShard};

/// The node-to-node method: "write these markers to partitions you lead". Body: a
/// WriteTxnMarkers v1 request body; answer: a WriteTxnMarkers v1 response body.
pub const WRITE_MARKERS: u16 = sluice_cluster::wire::method::EXTENSION_MIN + 1;
/// The WriteTxnMarkers version of [`WRITE_MARKERS`] bodies.
pub const WIRE_VERSION: i16 = 1;
/// Partitions one request may name in all (sluice's coordinators send a transaction's
/// partitions on one node per call, split into requests of at most this many;
/// `kafka-transactions.sh abort` names one).
pub const WRITE_TXN_MARKERS_PARTITIONS_MAX: usize = 100_000;
/// How long one marker's append may wait for its partition's quorum.
pub const MARKER_TIMEOUT_MS: i32 = 30_000;

pub async fn handle(
    shard: &Rc<BrokerShard>,
    h: &RequestHeaderInfo,
    r: WriteTxnMarkersRequest,
) -> Outcome {
    match write(shard, r).await {
        Some(resp) => super::respond(h, &resp),
        None => Outcome::Close,
    }
}

/// Writes every marker of the request here; `None` if it names too many partitions.
pub async fn write(
    shard: &Rc<BrokerShard>,
    r: WriteTxnMarkersRequest,
) -> Option<WriteTxnMarkersResponse> {
    let named: usize = r
        .markers
        .iter()
        .flat_map(|m| m.topics.iter())
        .map(|t| t.partition_indexes.len())
        .sum();
    if named > WRITE_TXN_MARKERS_PARTITIONS_MAX {
        return None;
    }
    let topics = shard.topics();
    let mut results = Vec::with_capacity(r.markers.len());
    for m in r.markers {
        let marker = sluice_storage::txn::Marker {
            commit: m.transaction_result,
            coordinator_epoch: m.coordinator_epoch,
        };
        let batch = Bytes::from(sluice_storage::txn::marker_batch(
            m.producer_id.0,
            m.producer_epoch,
            marker,
            now_ms(),
        ));
        let mut topic_results = Vec::with_capacity(m.topics.len());
        for t in m.topics {
            let id = topics.get(&t.name.0).map(|r| r.id);
            let writes: Vec<_> = t
                .partition_indexes
                .iter()
                .map(|&partition| {
                    let shard = shard.clone();
                    let batch = batch.clone();
                    async move {
                        match id {
                            Some(topic_id) => append(&shard, topic_id, partition, batch).await,
                            None => kerr::UNKNOWN_TOPIC_OR_PARTITION,
                        }
                    }
                })
                .collect();
            let codes = super::join_all(writes).await;
            topic_results.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partition_indexes
                            .iter()
                            .zip(codes)
                            .map(|(p, code)| {
                                WritableTxnMarkerPartitionResult::default()
                                    .with_partition_index(*p)
                                    .with_error_code(code)
                            })
                            .collect(),
                    ),
            );
        }
        results.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topic_results),
        );
    }
    Some(WriteTxnMarkersResponse::default().with_markers(results))
}

/// Appends one marker batch to a partition through its owning shard on this node, acks=all:
/// the partition's code (NOT_LEADER_OR_FOLLOWER where this node does not lead it).
pub async fn append(
    shard: &Rc<BrokerShard>,
    topic_id: [u8; 16],
    partition: i32,
    batch: Bytes,
) -> i16 {
    let req = PartitionRequest {
        topic_id,
        partition,
        current_leader_epoch: -1,
        op: PartitionOp::Produce {
            acks: -1,
            timeout_ms: MARKER_TIMEOUT_MS,
            guard: -1,
            refused_seq: -1,
        },
    };
    shard.partition_call(req, Some(batch)).await.0.error_code
}

/// Serves [`WRITE_MARKERS`] calls from other nodes' transaction coordinators.
pub fn serve(shard: Option<Rc<BrokerShard>>, request: Request) -> LocalBoxFuture<Response> {
    Box::pin(async move {
        let Some(shard) = shard else {
            return Response {
                status: sluice_rpc::status::SHUTTING_DOWN,
                body: Bytes::new(),
            };
        };
        let mut body = request.body;
        let resp = match WriteTxnMarkersRequest::decode(&mut body, WIRE_VERSION) {
            Ok(r) => write(&shard, r).await,
            Err(_) => None,
        };
        let mut out = BytesMut::new();
        match resp.map(|r| r.encode(&mut out, WIRE_VERSION)) {
            Some(Ok(())) => Response {
                status: sluice_rpc::status::OK,
                body: out.freeze(),
            },
            _ => Response {
                status: sluice_cluster::wire::status::MALFORMED,
                body: Bytes::new(),
            },
        }
    })
}
