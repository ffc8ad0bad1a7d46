//! DeleteTopics (runs on the controller shard), by name or (v6+) by topic id.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use sluice_codec::kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use sluice_codec::RequestHeaderInfo;

use super::{str_bytes, topic_name, uuid};
use sluice_meta::acl::{AclOperation::Delete, ResourceType::Topic};

use crate::authz;
use crate::conn::Client;
use crate::kerr;
use crate::shard::BrokerShard;

pub async fn handle(
    shard: &Rc<BrokerShard>,
    client: &Client,
    h: &RequestHeaderInfo,
    r: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let Some(controller) = &shard.controller else {
        return DeleteTopicsResponse::default();
    };
    let topics = shard.topics();
    let mut results = Vec::new();
    let mut names = Vec::new();
    if h.api_version >= 6 {
        for t in &r.topics {
            match (&t.name, topics.get_by_id(t.topic_id.as_bytes())) {
                (Some(n), _) => names.push(n.0.to_string()),
                (None, Some(rec)) => names.push(rec.name.clone()),
                (None, None) => results.push(
                    DeletableTopicResult::default()
                        .with_topic_id(t.topic_id)
                        .with_error_code(kerr::UNKNOWN_TOPIC_ID)
                        .with_error_message(Some(str_bytes("unknown topic id"))),
                ),
            }
        }
    } else {
        names.extend(r.topic_names.iter().map(|n| n.0.to_string()));
    }
    // Under the authorizer: DELETE on each topic.
    let (names, denied): (Vec<String>, Vec<String>) = names
        .into_iter()
        .partition(|n| authz::allowed(shard, client, Delete, Topic, n));
    for name in denied {
        results.push(
            DeletableTopicResult::default()
                .with_name(Some(topic_name(&name)))
                .with_error_code(kerr::TOPIC_AUTHORIZATION_FAILED)
                .with_error_message(Some(str_bytes("Authorization failed."))),
        );
    }
    // KIP-599: a deleted topic's partitions count against controller_mutation_rate (strict
    // from v5).
    let mut quota = crate::quotas::mutation_quota(shard, client, h, 5);
    let mut drawn = std::collections::HashMap::new();
    let mut admitted = Vec::with_capacity(names.len());
    for name in names {
        let partitions = topics.get(&name).map_or(0, |t| t.partitions.max(0) as u32);
        match quota.draw(partitions) {
            Ok(()) => {
                drawn.insert(name.clone(), partitions);
                admitted.push(name);
            }
            Err(_) => results.push(
                DeletableTopicResult::default()
                    .with_name(Some(topic_name(&name)))
                    .with_error_code(kerr::THROTTLING_QUOTA_EXCEEDED)
                    .with_error_message(Some(str_bytes(crate::quotas::THROTTLED_MESSAGE))),
            ),
        }
    }
    for (name, outcome) in controller.delete_topics(shard, admitted).await {
        results.push(match outcome {
            Ok(t) => DeletableTopicResult::default()
                .with_name(Some(topic_name(&name)))
                .with_topic_id(uuid(&t.id)),
            Err((code, msg)) => {
                if let Some(p) = drawn.get(&name) {
                    quota.refund(*p);
                }
                DeletableTopicResult::default()
                    .with_name(Some(topic_name(&name)))
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(&msg)))
            }
        });
    }
    DeleteTopicsResponse::default()
        .with_responses(results)
        .with_throttle_time_ms(quota.finish(client))
}
