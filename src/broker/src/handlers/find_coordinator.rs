//! FindCoordinator: a group is coordinated by the leader of its `__consumer_offsets`
//! partition (created on first use as in Kafka), on the shard owning that partition there.
//! Transaction coordinators arrive with transactions.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::find_coordinator_response::Coordinator;
use sluice_codec::kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse,
};
use sluice_codec::RequestHeaderInfo;

use super::str_bytes;
use crate::cluster_view::BrokerEndpoint;
use crate::groups::{partition_for, OFFSETS_TOPIC};
use crate::kerr;
use crate::shard::BrokerShard;

const KEY_TYPE_GROUP: i8 = 0;

pub async fn handle(
    shard: &Rc<BrokerShard>,
    h: &RequestHeaderInfo,
    r: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    if r.key_type == KEY_TYPE_GROUP && shard.topics().get(OFFSETS_TOPIC).is_none() {
        shard.auto_create(vec![OFFSETS_TOPIC.to_string()]).await;
    }
    let topics = shard.topics();
    let offsets = topics.get(OFFSETS_TOPIC);
    let view = &shard.shared_handle.cluster_view;
    let this = shard.config.node_id;
    // The coordinator of `key`: the broker leading its offsets partition, if one is known.
    let coordinator = |key: &str| {
        let t = offsets?;
        let p = partition_for(key, t.partitions);
        let replicas = t.replicas_of(p, this);
        let local = replicas
            .contains(&this)
            .then(|| shard.shared_handle.leader_epochs.of_partition(t.id, p));
        let hint = view.leader_hint(&t.id, p, &replicas, local);
        view.broker(hint.leader)
    };
    let answer = |key: &str| -> (i16, Option<&'static str>, Option<BrokerEndpoint>) {
        if r.key_type != KEY_TYPE_GROUP {
            (
                kerr::COORDINATOR_NOT_AVAILABLE,
                Some("transactions are not supported yet"),
                None,
            )
        } else if offsets.is_none() {
            (
                kerr::COORDINATOR_NOT_AVAILABLE,
                Some("the offsets topic is not available"),
                None,
            )
        } else if key.is_empty() && h.api_version < 4 {
            (kerr::INVALID_REQUEST, Some("empty group id"), None)
        } else {
            match coordinator(key) {
                Some(b) => (kerr::NONE, None, Some(b)),
                None => (
                    kerr::COORDINATOR_NOT_AVAILABLE,
                    Some("the group's offsets partition has no leader"),
                    None,
                ),
            }
        }
    };
    if h.api_version >= 4 {
        let coordinators = r
            .coordinator_keys
            .iter()
            .map(|k| {
                let (code, msg, at) = answer(k);
                let c = Coordinator::default()
                    .with_key(k.clone())
                    .with_error_code(code)
                    .with_error_message(msg.map(str_bytes));
                match at {
                    Some(b) => c
                        .with_node_id(BrokerId(b.node))
                        .with_host(str_bytes(&b.host))
                        .with_port(b.port),
                    None => c.with_node_id(BrokerId(-1)).with_port(-1),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (code, msg, at) = answer(&r.key);
    let resp = FindCoordinatorResponse::default().with_error_code(code);
    let resp = if h.api_version >= 1 {
        resp.with_error_message(msg.map(str_bytes))
    } else {
        resp
    };
    match at {
        Some(b) => resp
            .with_node_id(BrokerId(b.node))
            .with_host(str_bytes(&b.host))
            .with_port(b.port),
        None => resp.with_node_id(BrokerId(-1)).with_port(-1),
    }
}
