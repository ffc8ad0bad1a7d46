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
    _h: &RequestHeaderInfo,
    r: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let Some(controller) = &shard.controller else {
        return CreatePartitionsResponse::default();
    };
    let mut results = Vec::new();
    for t in r.topics {
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
        } else {
            controller
                .create_partitions(shard, t.name.0.to_string(), t.count, r.validate_only)
                .await
        };
        let mut res = CreatePartitionsTopicResult::default().with_name(t.name);
        if let Err((code, msg)) = outcome {
            res.error_code = code;
            res.error_message = Some(str_bytes(&msg));
        }
        results.push(res);
    }
    CreatePartitionsResponse::default().with_results(results)
}
