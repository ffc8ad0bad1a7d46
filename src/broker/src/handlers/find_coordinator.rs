//! FindCoordinator: groups are coordinated by this broker (on the shard owning the group's
//! `__consumer_offsets` partition, which is created on first use as in Kafka). Transaction
//! coordinators arrive with transactions.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::find_coordinator_response::Coordinator;
use sluice_codec::kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse,
};
use sluice_codec::RequestHeaderInfo;

use super::str_bytes;
use crate::groups::OFFSETS_TOPIC;
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
    let ready = shard.topics().get(OFFSETS_TOPIC).is_some();
    let answer = |key: &str| -> (i16, Option<&'static str>) {
        if r.key_type != KEY_TYPE_GROUP {
            (
                kerr::COORDINATOR_NOT_AVAILABLE,
                Some("transactions are not supported yet"),
            )
        } else if !ready {
            (
                kerr::COORDINATOR_NOT_AVAILABLE,
                Some("the offsets topic is not available"),
            )
        } else if key.is_empty() && h.api_version < 4 {
            (kerr::INVALID_REQUEST, Some("empty group id"))
        } else {
            (kerr::NONE, None)
        }
    };
    let node = BrokerId(shard.config.node_id);
    let host = str_bytes(&shard.config.advertised_host);
    let port = shard.config.listen.port() as i32;
    if h.api_version >= 4 {
        let coordinators = r
            .coordinator_keys
            .iter()
            .map(|k| {
                let (code, msg) = answer(k);
                let c = Coordinator::default()
                    .with_key(k.clone())
                    .with_error_code(code)
                    .with_error_message(msg.map(str_bytes));
                if code == kerr::NONE {
                    c.with_node_id(node).with_host(host.clone()).with_port(port)
                } else {
                    c.with_node_id(BrokerId(-1)).with_port(-1)
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (code, msg) = answer(&r.key);
    let resp = FindCoordinatorResponse::default().with_error_code(code);
    let resp = if h.api_version >= 1 {
        resp.with_error_message(msg.map(str_bytes))
    } else {
        resp
    };
    if code == kerr::NONE {
        resp.with_node_id(node).with_host(host).with_port(port)
    } else {
        resp.with_node_id(BrokerId(-1)).with_port(-1)
    }
}
