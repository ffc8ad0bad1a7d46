//! DescribeProducers (`kafka-transactions.sh describe-producers`): the producers each
//! partition's leader remembers, with their epoch, last sequence, last timestamp,
//! coordinator epoch and open transaction's first offset.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use sluice_codec::kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, ProducerId,
};
use sluice_codec::RequestHeaderInfo;

use super::join_all;
use sluice_meta::acl::{AclOperation::Read, ResourceType::Topic};

use crate::authz;
use crate::conn::Client;
use crate::kerr;
use crate::ops::{decode_producers, PartitionOp, PartitionRequest};
use crate::shard::BrokerShard;

pub async fn handle(
    shard: &Rc<BrokerShard>,
    client: &Client,
    _h: &RequestHeaderInfo,
    r: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = shard.topics();
    let mut out = Vec::new();
    let mut slots = Vec::new();
    let mut futs = Vec::new();
    for (ti, t) in r.topics.iter().enumerate() {
        let record = topics.get(&t.name.0);
        let denied = !authz::allowed(shard, client, Read, Topic, &t.name.0);
        let mut parts = Vec::new();
        for (pi, &p) in t.partition_indexes.iter().enumerate() {
            let mut res = PartitionResponse::default().with_partition_index(p);
            match record {
                _ if denied => res.error_code = kerr::TOPIC_AUTHORIZATION_FAILED,
                Some(rec) if p >= 0 && p < rec.partitions => {
                    let req = PartitionRequest {
                        topic_id: rec.id,
                        partition: p,
                        current_leader_epoch: -1,
                        op: PartitionOp::DescribeProducers,
                    };
                    let shard = shard.clone();
                    slots.push((ti, pi));
                    futs.push(async move { shard.partition_call(req, None).await });
                }
                _ => res.error_code = kerr::UNKNOWN_TOPIC_OR_PARTITION,
            }
            parts.push(res);
        }
        out.push(
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(parts),
        );
    }
    for ((ti, pi), (reply, payload)) in slots.into_iter().zip(join_all(futs).await) {
        let p = &mut out[ti].partitions[pi];
        p.error_code = reply.error_code;
        if reply.error_code != kerr::NONE {
            continue;
        }
        let Some(producers) = payload.and_then(decode_producers) else {
            log::error!("DescribeProducers: a partition's owner sent no whole producer list");
            p.error_code = kerr::UNKNOWN_SERVER_ERROR;
            continue;
        };
        p.active_producers = producers
            .into_iter()
            .map(|s| {
                ProducerState::default()
                    .with_producer_id(ProducerId(s.producer_id))
                    .with_producer_epoch(i32::from(s.epoch))
                    .with_last_sequence(s.last_sequence)
                    .with_last_timestamp(s.last_timestamp)
                    .with_coordinator_epoch(s.coordinator_epoch)
                    .with_current_txn_start_offset(s.txn_start_offset)
            })
            .collect();
    }
    DescribeProducersResponse::default().with_topics(out)
}
