//! Metadata: brokers, topics with partitions and ids, controller; auto-creates requested
//! topics when `auto.create.topics.enable` allows (as Kafka does on Metadata, not Produce).
//! Under the authorizer, only the topics the client may describe, auto-creation only with
//! CREATE, and the authorized operations when asked.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use sluice_codec::kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use sluice_codec::RequestHeaderInfo;

use super::{str_bytes, topic_name, uuid};
use crate::kerr;
use crate::shard::BrokerShard;
use crate::topics::{validate_topic_name, TopicRecord};

use sluice_meta::acl::AclOperation::{Create, Describe};
use sluice_meta::acl::ResourceType::{self, Topic};
use sluice_meta::acl::CLUSTER_NAME;

use crate::authz;
use crate::conn::Client;

/// "Authorized operations not requested" marker.
const OPS_NOT_REQUESTED: i32 = i32::MIN;

/// Every live broker with the client's `listener`, in id order (as the client reaches it).
pub fn broker_entries(
    shard: &BrokerShard,
    listener: crate::config::SecurityProtocol,
) -> Vec<MetadataResponseBroker> {
    shard
        .shared_handle
        .cluster_view
        .brokers_on(listener)
        .iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node))
                .with_host(str_bytes(&b.host))
                .with_port(b.port)
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect()
}

/// One partition as Metadata and DescribeTopicPartitions report it.
pub struct PartitionView {
    pub code: i16,
    pub index: i32,
    pub leader: i32,
    pub epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
}

/// Partitions `range` of `t` (indexes past its last are left out): leader and epoch as this
/// node knows them, replicas, ISR and the replicas on nodes not live.
pub fn partition_views(
    shard: &BrokerShard,
    t: &TopicRecord,
    range: std::ops::Range<i32>,
) -> Vec<PartitionView> {
    let this = shard.config.node_id;
    let view = &shard.shared_handle.cluster_view;
    let live = view.brokers();
    let epochs = shard
        .shared_handle
        .leader_epochs
        .of_topic(t.id, t.partitions);
    let range = range.start.max(0)..range.end.min(t.partitions);
    range
        .clone()
        .zip(epochs.into_iter().skip(range.start.max(0) as usize))
        .map(|(p, local_epoch)| {
            let replicas = t.replicas_of(p, this);
            let local = replicas.contains(&this).then_some(local_epoch);
            let hint = view.leader_hint(&t.id, p, &replicas, local);
            let isr = match view.leadership(&t.id, p) {
                Some(l) if !l.isr.is_empty() => l.isr,
                // No report: a single replica is its own ISR; else unknown until one comes.
                _ if hint.leader >= 0 => vec![hint.leader],
                _ => Vec::new(),
            };
            let offline = replicas
                .iter()
                .filter(|n| !live.iter().any(|b| b.node == **n))
                .copied()
                .collect();
            let code = if hint.leader < 0 {
                kerr::LEADER_NOT_AVAILABLE
            } else {
                kerr::NONE
            };
            PartitionView {
                code,
                index: p,
                leader: hint.leader,
                epoch: hint.epoch,
                replicas,
                isr,
                offline,
            }
        })
        .collect()
}

fn brokers(ids: Vec<i32>) -> Vec<BrokerId> {
    ids.into_iter().map(BrokerId).collect()
}

fn topic_entry(shard: &BrokerShard, t: &TopicRecord) -> MetadataResponseTopic {
    let partitions = partition_views(shard, t, 0..t.partitions)
        .into_iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_error_code(p.code)
                .with_partition_index(p.index)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.epoch)
                .with_replica_nodes(brokers(p.replicas))
                .with_isr_nodes(brokers(p.isr))
                .with_offline_replicas(brokers(p.offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&t.name)))
        .with_topic_id(uuid(&t.id))
        .with_is_internal(t.internal)
        .with_partitions(partitions)
        .with_topic_authorized_operations(OPS_NOT_REQUESTED)
}

pub async fn handle(
    shard: &Rc<BrokerShard>,
    h: &RequestHeaderInfo,
    r: MetadataRequest,
    client: &Client,
) -> MetadataResponse {
    let listener = client.listener;
    let topics = shard.topics();
    let mut entries = Vec::new();
    // Under the authorizer a client sees only the topics it may describe (Kafka's rule).
    let describe = |name: &str| authz::allowed(shard, client, Describe, Topic, name);
    let create = |name: &str| {
        authz::cluster_allowed(shard, client, Create)
            || authz::allowed(shard, client, Create, Topic, name)
    };
    match &r.topics {
        // Null (v1+) or empty (v0) list: every topic.
        None => entries.extend(
            topics
                .topics()
                .iter()
                .filter(|t| describe(&t.name))
                .map(|t| topic_entry(shard, t)),
        ),
        Some(list) if list.is_empty() && h.api_version == 0 => entries.extend(
            topics
                .topics()
                .iter()
                .filter(|t| describe(&t.name))
                .map(|t| topic_entry(shard, t)),
        ),
        Some(list) => {
            // Auto-create first (one controller round trip for all missing names), of the
            // names the client may create.
            let allow = shard.config.auto_create_topics
                && (h.api_version < 4 || r.allow_auto_topic_creation);
            if allow {
                let missing: Vec<String> = list
                    .iter()
                    .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                    .filter(|n| topics.get(n).is_none() && validate_topic_name(n).is_ok())
                    .filter(|n| create(n))
                    .collect();
                if !missing.is_empty() {
                    shard.auto_create(missing).await;
                }
            }
            let topics = shard.topics();
            for req in list {
                let found = match &req.name {
                    Some(n) => topics.get(n),
                    None => topics.get_by_id(req.topic_id.as_bytes()),
                };
                let named = req.name.as_ref().map(|n| n.as_str());
                let visible = match (found, named) {
                    (Some(t), _) => describe(&t.name),
                    (None, Some(n)) => describe(n),
                    (None, None) => true,
                };
                let entry = match found {
                    // Kafka says the same whether or not the topic exists: existence is
                    // not leaked to a client that may not describe it.
                    _ if !visible => MetadataResponseTopic::default()
                        .with_error_code(kerr::TOPIC_AUTHORIZATION_FAILED)
                        .with_name(req.name.clone())
                        .with_topic_authorized_operations(OPS_NOT_REQUESTED),
                    Some(t) => topic_entry(shard, t),
                    None => {
                        let code = match &req.name {
                            Some(n) if validate_topic_name(n).is_err() => {
                                kerr::INVALID_TOPIC_EXCEPTION
                            }
                            Some(_) => kerr::UNKNOWN_TOPIC_OR_PARTITION,
                            None => kerr::UNKNOWN_TOPIC_ID,
                        };
                        MetadataResponseTopic::default()
                            .with_error_code(code)
                            .with_name(req.name.clone())
                            .with_topic_id(req.topic_id)
                            .with_topic_authorized_operations(OPS_NOT_REQUESTED)
                    }
                };
                entries.push(entry);
            }
        }
    }
    // Authorized operations (v8+) when asked for, of the topics found.
    if r.include_topic_authorized_operations {
        for e in entries.iter_mut().filter(|e| e.error_code == kerr::NONE) {
            let name = e.name.as_ref().map_or("", |n| n.as_str());
            e.topic_authorized_operations =
                authz::authorized_operations(shard, client, Topic, name);
        }
    }
    let cluster_ops = if r.include_cluster_authorized_operations {
        authz::authorized_operations(shard, client, ResourceType::Cluster, CLUSTER_NAME)
    } else {
        OPS_NOT_REQUESTED
    };
    let topics = shard.topics();
    MetadataResponse::default()
        .with_brokers(broker_entries(shard, listener))
        .with_cluster_id(Some(str_bytes(&topics.state.cluster_id)))
        .with_controller_id(BrokerId(shard.shared_handle.cluster_view.controller()))
        .with_topics(entries)
        .with_cluster_authorized_operations(cluster_ops)
}
