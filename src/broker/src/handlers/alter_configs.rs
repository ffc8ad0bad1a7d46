//! AlterConfigs (runs on the controller shard): replaces a resource's whole set of overrides.

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use sluice_codec::kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use sluice_codec::RequestHeaderInfo;

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_CLIENT_METRICS, RESOURCE_TOPIC};
use super::str_bytes;
use sluice_meta::acl::AclOperation;

use crate::authz;
use crate::conn::Client;
use crate::kerr;
use crate::shard::BrokerShard;
use crate::topic_config::{broker_config_kind, shown, ConfigProblem};

/// Checks a broker-level config name and value by its type and range
/// (`topic_config::broker_config_kind`).
pub fn check_broker_config(name: &str, value: &str) -> Result<(), String> {
    let Some(kind) = broker_config_kind(name) else {
        return Err(format!("Cannot update config {} dynamically", shown(name)));
    };
    kind.check(value).map_err(|reason| {
        ConfigProblem::Invalid {
            name: name.into(),
            value: value.into(),
            reason,
        }
        .message()
    })
}

/// The broker resource a config change names: `None` for "" (the cluster-wide defaults),
/// else the node id it parses as; a name that is not one is refused as Kafka's controller
/// refuses it.
pub fn broker_target(name: &str) -> Result<Option<i32>, (i16, String)> {
    if name.is_empty() {
        return Ok(None);
    }
    match name.parse::<i32>() {
        Ok(id) if id >= 0 => Ok(Some(id)),
        Ok(_) => Err((kerr::INVALID_REQUEST, "Invalid negative broker ID.".into())),
        Err(_) => Err((
            kerr::INVALID_REQUEST,
            "Unable to parse broker name as a base 10 number.".into(),
        )),
    }
}

pub async fn handle(
    shard: &Rc<BrokerShard>,
    client: &Client,
    _h: &RequestHeaderInfo,
    r: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let Some(controller) = &shard.controller else {
        return AlterConfigsResponse::default();
    };
    let mut out = Vec::new();
    for res in r.resources {
        let new: BTreeMap<String, String> = res
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.to_string(), v.to_string()))
            })
            .collect();
        let refusal = authz::config_refusal(
            shard,
            client,
            AclOperation::AlterConfigs,
            res.resource_type,
            &res.resource_name,
        );
        let outcome = match res.resource_type {
            _ if refusal.is_some() => Err(refusal.expect("checked")),
            RESOURCE_TOPIC => {
                controller
                    .alter_topic_configs(
                        shard,
                        res.resource_name.to_string(),
                        r.validate_only,
                        |_| Ok(new),
                    )
                    .await
            }
            RESOURCE_BROKER => match broker_target(&res.resource_name) {
                Ok(target) => {
                    controller
                        .alter_broker_configs(shard, target, r.validate_only, |_| {
                            for (k, v) in &new {
                                check_broker_config(k, v)?;
                            }
                            Ok(new)
                        })
                        .await
                }
                Err(e) => Err(e),
            },
            // The given settings replace the subscription's (none given: it goes).
            RESOURCE_CLIENT_METRICS => {
                controller
                    .alter_client_metrics(
                        shard,
                        res.resource_name.to_string(),
                        r.validate_only,
                        |_| Ok(new),
                    )
                    .await
            }
            other => Err((
                kerr::INVALID_REQUEST,
                format!("unsupported resource type {other}"),
            )),
        };
        let mut resp = AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name);
        if let Err((code, msg)) = outcome {
            resp.error_code = code;
            resp.error_message = Some(str_bytes(&msg));
        }
        out.push(resp);
    }
    AlterConfigsResponse::default().with_responses(out)
}
