//! DescribeCluster: the live brokers, the cluster id, the controller, and (when asked) the
//! client's authorized operations on the cluster.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use sluice_codec::kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse,
};
use sluice_codec::RequestHeaderInfo;

use super::str_bytes;
use crate::shard::BrokerShard;

pub fn handle(
    shard: &Rc<BrokerShard>,
    _h: &RequestHeaderInfo,
    r: DescribeClusterRequest,
    client: &crate::conn::Client,
) -> DescribeClusterResponse {
    let listener = client.listener;
    let view = &shard.shared_handle.cluster_view;
    let brokers = view
        .brokers_on(listener)
        .iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node))
                .with_host(str_bytes(&b.host))
                .with_port(b.port)
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_endpoint_type(r.endpoint_type)
        .with_cluster_id(str_bytes(&shard.topics().state.cluster_id))
        .with_controller_id(BrokerId(view.controller()))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(if r.include_cluster_authorized_operations {
            use sluice_meta::acl::{ResourceType, CLUSTER_NAME};
            crate::authz::authorized_operations(shard, client, ResourceType::Cluster, CLUSTER_NAME)
        } else {
            i32::MIN
        })
}
