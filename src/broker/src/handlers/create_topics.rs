//! CreateTopics (runs on the controller shard): partitions and replication factor, or a
//! manual replica assignment, configs, validate_only; the controller checks them as Kafka's.

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use sluice_codec::kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use sluice_codec::RequestHeaderInfo;

use super::{str_bytes, topic_name, uuid};
use crate::controller::NewTopic;
use sluice_meta::acl::{AclOperation::Create, ResourceType::Topic};

use crate::authz;
use crate::conn::Client;
use crate::kerr;
use crate::shard::BrokerShard;
use crate::topic_config::{effective, TOPIC_CONFIGS};

pub async fn handle(
    shard: &Rc<BrokerShard>,
    client: &Client,
    h: &RequestHeaderInfo,
    r: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let Some(controller) = &shard.controller else {
        return CreateTopicsResponse::default();
    };
    // KIP-599: partitions created count against controller_mutation_rate (strict from v6);
    // a validation creates nothing.
    let mut quota = crate::quotas::mutation_quota(shard, client, h, 6);
    let mut drawn = std::collections::HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut results = Vec::new();
    let mut requests = Vec::new();
    for t in &r.topics {
        let name = t.name.0.to_string();
        if !seen.insert(name.clone()) {
            // Kafka answers a name given twice with INVALID_REQUEST for it.
            results.push(
                CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_error_code(kerr::INVALID_REQUEST)
                    .with_error_message(Some(str_bytes("Duplicate topic name."))),
            );
            continue;
        }
        if !authz::cluster_allowed(shard, client, Create)
            && !authz::allowed(shard, client, Create, Topic, &name)
        {
            results.push(
                CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_error_code(kerr::TOPIC_AUTHORIZATION_FAILED)
                    .with_error_message(Some(str_bytes("Authorization failed.")))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            );
            continue;
        }
        if !r.validate_only {
            let partitions = match (t.num_partitions, t.assignments.len()) {
                (n, _) if n > 0 => n as u32,
                (_, 0) => shard.config.num_partitions.max(1) as u32,
                (_, assigned) => assigned as u32,
            };
            if let Err(throttle_ms) = quota.draw(partitions) {
                log::debug!(
                    "CreateTopics {name}: over controller_mutation_rate ({throttle_ms} ms)"
                );
                results.push(
                    CreatableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(kerr::THROTTLING_QUOTA_EXCEEDED)
                        .with_error_message(Some(str_bytes(crate::quotas::THROTTLED_MESSAGE)))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1),
                );
                continue;
            }
            drawn.insert(name.clone(), partitions);
        }
        let mut configs = BTreeMap::new();
        for c in &t.configs {
            if let Some(v) = &c.value {
                configs.insert(c.name.to_string(), v.to_string());
            }
        }
        requests.push(NewTopic {
            name,
            partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t
                .assignments
                .iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|b| b.0).collect(),
                    )
                })
                .collect(),
            configs,
        });
    }
    let broker_cfgs = shard.topics().state.broker_configs.clone();
    for (name, outcome) in controller
        .create_topics(shard, requests, r.validate_only)
        .await
    {
        let result = match outcome {
            Ok(t) => {
                let configs = TOPIC_CONFIGS
                    .iter()
                    .map(|k| {
                        let (v, source) = effective(&t.configs, &broker_cfgs, k);
                        CreatableTopicConfigs::default()
                            .with_name(str_bytes(k.name))
                            .with_value(Some(str_bytes(v)))
                            .with_config_source(source as i8)
                    })
                    .collect();
                CreatableTopicResult::default()
                    .with_name(topic_name(&name))
                    .with_topic_id(uuid(&t.id))
                    .with_num_partitions(t.partitions)
                    .with_replication_factor(
                        t.replicas.first().map_or(1, |r| r.len().max(1) as i16),
                    )
                    .with_configs(Some(configs))
            }
            Err((code, msg)) => {
                // Nothing was created: the draw goes back.
                if let Some(p) = drawn.get(&name) {
                    quota.refund(*p);
                }
                CreatableTopicResult::default()
                    .with_name(topic_name(&name))
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(&msg)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
            }
        };
        results.push(result);
    }
    CreateTopicsResponse::default()
        .with_topics(results)
        .with_throttle_time_ms(quota.finish(client))
}
