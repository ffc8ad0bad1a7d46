//! CreatePartitions (runs on the controller shard): grows a topic's partition count.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use sluice_codec::kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use sluice_codec::RequestHeaderInfo;

use super::str_bytes;
use sluice_meta::acl::{AclOperation::Alter, ResourceType::Topic};

use crate::authz;
use crate::conn::Client;
use crate::kerr;
use crate::shard::BrokerShard;

pub async fn handle(
    shard: &Rc<BrokerShard>,
    client: &Client,
    h: &RequestHeaderInfo,
    r: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let Some(controller) = &shard.controller else {
        return CreatePartitionsResponse::default();
    };
    // KIP-599: partitions added count against controller_mutation_rate (strict from v3); a
    // validation adds nothing.
    let mut quota = crate::quotas::mutation_quota(shard, client, h, 3);
    let topics = shard.topics();
    let mut results = Vec::new();
    for t in r.topics {
        let added = topics
            .get(&t.name.0)
            .map_or(0, |cur| (t.count - cur.partitions).max(0) as u32);
        let mut drawn = 0;
        let outcome = if !authz::allowed(shard, client, Alter, Topic, &t.name.0) {
            Err((
                kerr::TOPIC_AUTHORIZATION_FAILED,
                "Authorization failed.".to_string(),
            ))
        } else if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
            Err((
                kerr::INVALID_REQUEST,
                "Manual replica assignment is not supported.".to_string(),
            ))
        } else if !r.validate_only && quota.draw(added).is_err() {
            Err((
                kerr::THROTTLING_QUOTA_EXCEEDED,
                crate::quotas::THROTTLED_MESSAGE.to_string(),
            ))
        } else {
            drawn = if r.validate_only { 0 } else { added };
            controller
                .create_partitions(shard, t.name.0.to_string(), t.count, r.validate_only)
                .await
        };
        let mut res = CreatePartitionsTopicResult::default().with_name(t.name);
        if let Err((code, msg)) = outcome {
            // Nothing was added: the draw (if any) goes back.
            quota.refund(drawn);
            res.error_code = code;
            res.error_message = Some(str_bytes(&msg));
        }
        results.push(res);
    }
    CreatePartitionsResponse::default()
        .with_results(results)
        .with_throttle_time_ms(quota.finish(client))
}
