//! ListConfigResources (KIP-1142; v0 was ListClientMetricsResources of KIP-714): the names
//! of config resources, for `kafka-client-metrics.sh --list` and `kafka-configs.sh`. v0
//! lists client-metrics subscriptions only; v1 takes the resource types wanted (none: every
//! type Kafka lists: topics, brokers, broker loggers, client metrics, groups). Authorized as
//! Kafka does, by DESCRIBE_CONFIGS on the cluster. Answered from this node's adopted state.
//! sluice has no broker-logger or group configs, so those types are accepted and list none.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::list_config_resources_response::ConfigResource;
use sluice_codec::kafka_protocol::messages::{
    ListConfigResourcesRequest, ListConfigResourcesResponse,
};
use sluice_codec::RequestHeaderInfo;
use sluice_meta::acl::AclOperation;

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_CLIENT_METRICS, RESOURCE_TOPIC};
use super::str_bytes;
use crate::authz;
use crate::conn::Client;
use crate::kerr;
use crate::shard::BrokerShard;

const RESOURCE_BROKER_LOGGER: i8 = 8;
const RESOURCE_GROUP: i8 = 32;

pub fn handle(
    shard: &Rc<BrokerShard>,
    client: &Client,
    h: &RequestHeaderInfo,
    r: ListConfigResourcesRequest,
) -> ListConfigResourcesResponse {
    let resp = ListConfigResourcesResponse::default();
    if !authz::cluster_allowed(shard, client, AclOperation::DescribeConfigs) {
        return resp.with_error_code(kerr::CLUSTER_AUTHORIZATION_FAILED);
    }
    let supported: &[i8] = if h.api_version == 0 {
        &[RESOURCE_CLIENT_METRICS]
    } else {
        &[
            RESOURCE_TOPIC,
            RESOURCE_BROKER,
            RESOURCE_BROKER_LOGGER,
            RESOURCE_CLIENT_METRICS,
            RESOURCE_GROUP,
        ]
    };
    let types = if r.resource_types.is_empty() {
        supported.to_vec()
    } else {
        r.resource_types
    };
    if types.iter().any(|t| !supported.contains(t)) {
        return resp.with_error_code(kerr::UNSUPPORTED_VERSION);
    }
    let mut out = Vec::new();
    let mut push = |resource_type: i8, name: &str| {
        out.push(
            ConfigResource::default()
                .with_resource_name(str_bytes(name))
                .with_resource_type(resource_type),
        )
    };
    // Kafka's order: groups, client metrics, broker loggers, brokers, topics.
    if types.contains(&RESOURCE_CLIENT_METRICS) {
        for name in shard.shared_handle.client_metrics.get().keys() {
            push(RESOURCE_CLIENT_METRICS, name);
        }
    }
    if types.contains(&RESOURCE_BROKER) {
        let view = &shard.shared_handle.cluster_view;
        for b in view.brokers_on(client.listener) {
            push(RESOURCE_BROKER, &b.node.to_string());
        }
    }
    if types.contains(&RESOURCE_TOPIC) {
        for t in &shard.topics().state.topics {
            push(RESOURCE_TOPIC, &t.name);
        }
    }
    resp.with_config_resources(out)
}
