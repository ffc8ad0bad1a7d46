//! DescribeCluster: this broker, the cluster id, the controller.

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
) -> DescribeClusterResponse {
    let node = BrokerId(shard.config.node_id);
    DescribeClusterResponse::default()
        .with_endpoint_type(r.endpoint_type)
        .with_cluster_id(str_bytes(&shard.topics().state.cluster_id))
        .with_controller_id(node)
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(node)
            .with_host(str_bytes(&shard.config.advertised_host))
            .with_port(shard.config.listen.port() as i32)])
        .with_cluster_authorized_operations(i32::MIN)
}
