//! IncrementalAlterConfigs (runs on the controller shard): SET, DELETE, APPEND, SUBTRACT on
//! individual config keys.

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use sluice_codec::kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use sluice_codec::kafka_protocol::messages::{
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use sluice_codec::RequestHeaderInfo;

use super::alter_configs::{broker_target, check_broker_config};
use super::describe_configs::{RESOURCE_BROKER, RESOURCE_CLIENT_METRICS, RESOURCE_TOPIC};
use super::str_bytes;
use sluice_meta::acl::AclOperation;

use crate::authz;
use crate::conn::Client;
use crate::kerr;
use crate::shard::BrokerShard;
use crate::topic_config::{topic_config_key, ConfigProblem};

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;
/// DescribeConfigs config_type of a LIST.
const LIST: i8 = 7;

/// Applies the operations to a copy of `current`.
fn apply(
    current: &BTreeMap<String, String>,
    ops: &[AlterableConfig],
    default_of: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, ConfigProblem> {
    let mut next = current.clone();
    for op in ops {
        let name = op.name.to_string();
        let value = op.value.as_ref().map(|v| v.to_string());
        match op.config_operation {
            OP_SET => {
                let v = value.ok_or_else(|| ConfigProblem::Invalid {
                    name: name.clone(),
                    value: "null".into(),
                    reason: String::new(),
                })?;
                next.insert(name, v);
            }
            OP_DELETE => {
                next.remove(&name);
            }
            OP_APPEND | OP_SUBTRACT => {
                // Kafka allows these on LIST configs only.
                if topic_config_key(&name).is_some_and(|k| k.config_type() != LIST) {
                    let verb = if op.config_operation == OP_APPEND {
                        "append"
                    } else {
                        "subtract"
                    };
                    return Err(ConfigProblem::Invalid {
                        name: name.clone(),
                        value: value.unwrap_or_default(),
                        reason: format!(
                            "Config value {verb} is not allowed for config key: {name}"
                        ),
                    });
                }
                let base = next
                    .get(&name)
                    .cloned()
                    .or_else(|| default_of(&name))
                    .unwrap_or_default();
                let mut items: Vec<String> = base
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                for v in value
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                {
                    if op.config_operation == OP_APPEND {
                        if !items.iter().any(|i| i == v) {
                            items.push(v.to_string());
                        }
                    } else {
                        items.retain(|i| i != v);
                    }
                }
                next.insert(name, items.join(","));
            }
            other => {
                return Err(ConfigProblem::Invalid {
                    name,
                    value: format!("operation {other}"),
                    reason: String::new(),
                })
            }
        }
    }
    Ok(next)
}

pub async fn handle(
    shard: &Rc<BrokerShard>,
    client: &Client,
    _h: &RequestHeaderInfo,
    r: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let Some(controller) = &shard.controller else {
        return IncrementalAlterConfigsResponse::default();
    };
    let mut out = Vec::new();
    for res in r.resources {
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
                        |cur| {
                            apply(cur, &res.configs, |n| {
                                topic_config_key(n).map(|k| k.default.to_string())
                            })
                        },
                    )
                    .await
            }
            RESOURCE_BROKER => match broker_target(&res.resource_name) {
                Ok(target) => {
                    controller
                        .alter_broker_configs(shard, target, r.validate_only, |cur| {
                            let next =
                                apply(cur, &res.configs, |_| None).map_err(|p| p.message())?;
                            for (k, v) in &next {
                                check_broker_config(k, v)?;
                            }
                            Ok(next)
                        })
                        .await
                }
                Err(e) => Err(e),
            },
            RESOURCE_CLIENT_METRICS => {
                let listed = res
                    .configs
                    .iter()
                    .find(|c| matches!(c.config_operation, OP_APPEND | OP_SUBTRACT));
                match listed {
                    // Kafka's controller knows no config types of this resource, so it
                    // refuses list operations on it.
                    Some(c) => Err((
                        kerr::INVALID_CONFIG,
                        format!(
                            "Can't {} to key {} because its type is not LIST.",
                            if c.config_operation == OP_APPEND {
                                "APPEND"
                            } else {
                                "SUBTRACT"
                            },
                            c.name.as_str()
                        ),
                    )),
                    None => {
                        controller
                            .alter_client_metrics(
                                shard,
                                res.resource_name.to_string(),
                                r.validate_only,
                                |cur| {
                                    apply(cur, &res.configs, |_| None)
                                        .map_err(|p| (kerr::INVALID_CONFIG, p.message()))
                                },
                            )
                            .await
                    }
                }
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
    IncrementalAlterConfigsResponse::default().with_responses(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: &str, operation: i8, value: &str) -> AlterableConfig {
        AlterableConfig::default()
            .with_name(str_bytes(name))
            .with_config_operation(operation)
            .with_value(Some(str_bytes(value)))
    }

    #[test]
    fn append_and_subtract_only_on_lists() {
        let default = |n: &str| topic_config_key(n).map(|k| k.default.to_string());
        let cur = BTreeMap::new();
        let next = apply(&cur, &[op("cleanup.policy", OP_APPEND, "compact")], default).unwrap();
        assert_eq!(next["cleanup.policy"], "delete,compact");
        let next = apply(
            &next,
            &[op("cleanup.policy", OP_SUBTRACT, "delete")],
            default,
        )
        .unwrap();
        assert_eq!(next["cleanup.policy"], "compact");
        let err = apply(&cur, &[op("retention.ms", OP_APPEND, "5")], default).unwrap_err();
        assert!(err.message().contains("append is not allowed"), "{err:?}");
    }
}
