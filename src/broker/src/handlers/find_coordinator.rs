//! FindCoordinator: a group is coordinated by the leader of its `__consumer_offsets`
//! partition, a transactional id by the leader of its `__transaction_state` partition (each
//! topic created on first use as in Kafka), on the shard owning that partition there.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::find_coordinator_response::Coordinator;
use sluice_codec::kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse,
};
use sluice_codec::RequestHeaderInfo;

use super::str_bytes;
use crate::cluster_view::NodeAddress;
use crate::groups::{partition_for, OFFSETS_TOPIC};
use crate::kerr;
use crate::shard::BrokerShard;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(
    shard: &Rc<BrokerShard>,
    h: &RequestHeaderInfo,
    r: FindCoordinatorRequest,
    client: &crate::conn::Client,
) -> FindCoordinatorResponse {
    let listener = client.listener;
    let (internal, what) = match r.key_type {
        KEY_TYPE_GROUP => (OFFSETS_TOPIC, "group"),
        KEY_TYPE_TRANSACTION => (crate::txn_host::TXN_TOPIC, "transactional"),
        _ => ("", ""),
    };
    if !internal.is_empty() && shard.topics().get(internal).is_none() {
        shard.auto_create(vec![internal.to_string()]).await;
    }
    let topics = shard.topics();
    let topic = topics.get(internal);
    let view = &shard.shared_handle.cluster_view;
    let this = shard.config.node_id;
    // The coordinator of `key`: the broker leading its partition, if one is known (both
    // topics place keys alike: Kafka's `Utils.abs(hashCode) % partitions`).
    let coordinator = |key: &str| {
        let t = topic?;
        let p = partition_for(key, t.partitions);
        let replicas = t.replicas_of(p, this);
        let local = replicas
            .contains(&this)
            .then(|| shard.shared_handle.leader_epochs.of_partition(t.id, p));
        let hint = view.leader_hint(&t.id, p, &replicas, local);
        view.broker_on(hint.leader, listener)
    };
    // Under the authorizer: DESCRIBE on the group or transactional id (Kafka's check).
    let describable = |key: &str| {
        use sluice_meta::acl::{AclOperation::Describe, ResourceType};
        let rt = if r.key_type == KEY_TYPE_GROUP {
            ResourceType::Group
        } else {
            ResourceType::TransactionalId
        };
        crate::authz::allowed(shard, client, Describe, rt, key)
    };
    let answer = |key: &str| -> (i16, Option<String>, Option<NodeAddress>) {
        if !internal.is_empty() && !describable(key) {
            let code = if r.key_type == KEY_TYPE_GROUP {
                kerr::GROUP_AUTHORIZATION_FAILED
            } else {
                kerr::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            };
            (code, Some("Authorization failed.".to_string()), None)
        } else if internal.is_empty() {
            (
                kerr::INVALID_REQUEST,
                Some(format!("unknown coordinator key type {}", r.key_type)),
                None,
            )
        } else if topic.is_none() {
            (
                kerr::COORDINATOR_NOT_AVAILABLE,
                Some(format!("{internal} is not available")),
                None,
            )
        } else if key.is_empty() && (h.api_version < 4 || r.key_type == KEY_TYPE_TRANSACTION) {
            (
                kerr::INVALID_REQUEST,
                Some(format!("empty {what} id")),
                None,
            )
        } else {
            match coordinator(key) {
                Some(b) => (kerr::NONE, None, Some(b)),
                None => (
                    kerr::COORDINATOR_NOT_AVAILABLE,
                    Some(format!(
                        "the {what} id's {internal} partition has no leader"
                    )),
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
                    .with_error_message(msg.as_deref().map(str_bytes));
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
        resp.with_error_message(msg.as_deref().map(str_bytes))
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
