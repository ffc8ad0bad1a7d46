//! DescribeTopicPartitions (KIP-966, v0): topics and their partitions a page at a time, as
//! Kafka's admin tools (`kafka-topics.sh --describe` from 3.8) ask before falling back to
//! Metadata. Topics in name order (all of them when none is named), from the request's
//! cursor on, at most `response_partition_limit` partitions (and never more than
//! [`RESPONSE_PARTITIONS_MAX`]) per answer; `next_cursor` names where the next page starts.
//! Eligible leader replicas (KIP-966's ELR) are not kept: those lists are empty, as Kafka's
//! are with ELR off.

use sluice_codec::kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use sluice_codec::kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
};
use sluice_meta::acl::AclOperation::Describe;
use sluice_meta::acl::ResourceType::Topic;

use super::metadata::partition_views;
use super::{topic_name, uuid};
use crate::authz;
use crate::conn::Client;
use crate::kerr;
use crate::shard::BrokerShard;
use crate::topics::validate_topic_name;

/// Partitions one answer holds at most (Kafka's `max.request.partition.size.limit`).
pub const RESPONSE_PARTITIONS_MAX: i32 = 2000;

pub fn handle(
    shard: &BrokerShard,
    client: &Client,
    r: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let all = r.topics.is_empty();
    let cursor = r.cursor.as_ref();
    // Kafka refuses a cursor outside the named topics or before partition 0: every named
    // topic gets INVALID_REQUEST.
    let bad_cursor = cursor.is_some_and(|c| {
        c.partition_index < 0 || (!all && !r.topics.iter().any(|t| t.name == c.topic_name))
    });
    if bad_cursor {
        let topics = r
            .topics
            .iter()
            .map(|t| error_topic(t.name.as_str(), kerr::INVALID_REQUEST))
            .collect();
        return DescribeTopicPartitionsResponse::default().with_topics(topics);
    }
    let image = shard.topics();
    let from = cursor.map(|c| c.topic_name.as_str().to_string());
    let mut names: Vec<String> = if all {
        image.topics().iter().map(|t| t.name.clone()).collect()
    } else {
        r.topics.iter().map(|t| t.name.to_string()).collect()
    };
    names.sort();
    names.dedup();
    names.retain(|n| from.as_ref().is_none_or(|f| n >= f));
    // Under the authorizer: topics the client may not describe are left out of a listing
    // of all, and refused by name (whether or not they exist) when named.
    if all {
        names.retain(|n| authz::allowed(shard, client, Describe, Topic, n));
    }
    // At least one partition per page (as Kafka), so paging always moves on.
    let mut remaining = r.response_partition_limit.clamp(1, RESPONSE_PARTITIONS_MAX);
    let mut response = DescribeTopicPartitionsResponse::default();
    for name in &names {
        if remaining == 0 {
            // The page is full at a topic boundary: the next one starts here.
            response.next_cursor = Some(next(name, 0));
            break;
        }
        if !all && !authz::allowed(shard, client, Describe, Topic, name) {
            response
                .topics
                .push(error_topic(name, kerr::TOPIC_AUTHORIZATION_FAILED));
            continue;
        }
        let Some(t) = image.get(name) else {
            if !all {
                let code = if validate_topic_name(name).is_err() {
                    kerr::INVALID_TOPIC_EXCEPTION
                } else {
                    kerr::UNKNOWN_TOPIC_OR_PARTITION
                };
                response.topics.push(error_topic(name, code));
            }
            continue;
        };
        let start = match cursor {
            Some(c) if c.topic_name.as_str() == name => c.partition_index,
            _ => 0,
        };
        let end = start.saturating_add(remaining).min(t.partitions);
        let partitions: Vec<_> = partition_views(shard, t, start..end)
            .into_iter()
            .map(|p| {
                DescribeTopicPartitionsResponsePartition::default()
                    .with_error_code(p.code)
                    .with_partition_index(p.index)
                    .with_leader_id(BrokerId(p.leader))
                    .with_leader_epoch(p.epoch)
                    .with_replica_nodes(brokers(p.replicas))
                    .with_isr_nodes(brokers(p.isr))
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new()))
                    .with_offline_replicas(brokers(p.offline))
            })
            .collect();
        remaining -= partitions.len() as i32;
        response.topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(topic_name(&t.name)))
                .with_topic_id(uuid(&t.id))
                .with_is_internal(t.internal)
                .with_partitions(partitions)
                .with_topic_authorized_operations(authz::authorized_operations(
                    shard, client, Topic, &t.name,
                )),
        );
        if end < t.partitions {
            response.next_cursor = Some(next(name, end));
            break;
        }
    }
    response
}

fn next(topic: &str, partition: i32) -> Cursor {
    Cursor::default()
        .with_topic_name(topic_name(topic))
        .with_partition_index(partition)
}

fn brokers(ids: Vec<i32>) -> Vec<BrokerId> {
    ids.into_iter().map(BrokerId).collect()
}

fn error_topic(name: &str, code: i16) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic::default()
        .with_error_code(code)
        .with_name(Some(topic_name(name)))
        .with_is_internal(sluice_meta::image::is_internal_topic(name))
        .with_topic_authorized_operations(i32::MIN)
}
