//! DescribeConfigs for topics (overrides over broker values over defaults), the broker, and
//! client-metrics subscriptions (KIP-714).

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use sluice_codec::kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use sluice_codec::RequestHeaderInfo;

use super::str_bytes;
use sluice_meta::acl::AclOperation;

use crate::authz;
use crate::conn::Client;
use crate::kerr;
use crate::shard::BrokerShard;
use crate::topic_config::{effective, ConfigSource, BROKER_ONLY_CONFIGS, TOPIC_CONFIGS};
use crate::topics::ClusterState;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
pub const RESOURCE_CLIENT_METRICS: i8 = 16;
/// DescribeConfigs' config source of a set client-metrics config.
const CLIENT_METRICS_CONFIG: i8 = 7;

/// Where a dynamic broker config in effect on this node comes from: the node's own
/// (DYNAMIC_BROKER_CONFIG) or the cluster-wide default (DYNAMIC_DEFAULT_BROKER_CONFIG).
fn dynamic_source(state: &ClusterState, name: &str) -> ConfigSource {
    let own = state.node_broker_configs.get(&state.node_id);
    if own.is_some_and(|c| c.contains_key(name)) {
        ConfigSource::DynamicBroker
    } else {
        ConfigSource::DynamicDefaultBroker
    }
}

/// Broker configs: (name, value, source, type).
pub fn broker_configs(shard: &BrokerShard) -> Vec<(String, String, ConfigSource, i8)> {
    let topics = shard.topics();
    let dynamic = &topics.state.broker_configs;
    let c = &shard.config;
    let mut out: Vec<(String, String, ConfigSource, i8)> = vec![
        (
            "node.id".into(),
            c.node_id.to_string(),
            ConfigSource::StaticBroker,
            3,
        ),
        (
            "broker.id".into(),
            c.node_id.to_string(),
            ConfigSource::StaticBroker,
            3,
        ),
        (
            "log.dirs".into(),
            c.data_dir.to_string_lossy().into_owned(),
            ConfigSource::StaticBroker,
            2,
        ),
        (
            "listeners".into(),
            c.listeners
                .iter()
                .map(|l| format!("{}://{}", l.protocol, l.addr))
                .collect::<Vec<_>>()
                .join(","),
            ConfigSource::StaticBroker,
            7,
        ),
        (
            "advertised.listeners".into(),
            c.listeners
                .iter()
                .map(|l| format!("{}://{}:{}", l.protocol, c.advertised_host, l.addr.port()))
                .collect::<Vec<_>>()
                .join(","),
            ConfigSource::StaticBroker,
            7,
        ),
        (
            "num.partitions".into(),
            c.num_partitions.to_string(),
            ConfigSource::StaticBroker,
            3,
        ),
        (
            "auto.create.topics.enable".into(),
            c.auto_create_topics.to_string(),
            ConfigSource::StaticBroker,
            1,
        ),
        (
            "default.replication.factor".into(),
            "1".into(),
            ConfigSource::Default,
            4,
        ),
        (
            "log.retention.check.interval.ms".into(),
            c.retention_check_interval.as_millis().to_string(),
            ConfigSource::StaticBroker,
            5,
        ),
        (
            "log.cleaner.backoff.ms".into(),
            c.log_cleaner_interval.as_millis().to_string(),
            ConfigSource::StaticBroker,
            5,
        ),
        (
            "log.cleaner.dedupe.buffer.size".into(),
            c.log_cleaner_dedupe_buffer_bytes.to_string(),
            ConfigSource::StaticBroker,
            5,
        ),
        (
            "log.cleaner.io.max.bytes.per.second".into(),
            // Kafka's default, unlimited, is Double.MAX_VALUE as Java prints it.
            c.log_cleaner_io_max_bytes_per_second
                .map_or("1.7976931348623157E308".to_string(), |r| r.to_string()),
            if c.log_cleaner_io_max_bytes_per_second.is_some() {
                ConfigSource::StaticBroker
            } else {
                ConfigSource::Default
            },
            6,
        ),
        (
            "producer.id.expiration.ms".into(),
            c.producer_id_expiration_ms.to_string(),
            ConfigSource::StaticBroker,
            3,
        ),
        (
            "socket.request.max.bytes".into(),
            crate::config::REQUEST_SIZE_MAX.to_string(),
            ConfigSource::Default,
            3,
        ),
    ];
    for k in TOPIC_CONFIGS {
        if k.broker_name.is_empty() || out.iter().any(|(n, ..)| n == k.broker_name) {
            continue;
        }
        let (v, source) = match dynamic.get(k.broker_name) {
            Some(v) => (v.clone(), dynamic_source(&topics.state, k.broker_name)),
            None => (k.default.to_string(), ConfigSource::Default),
        };
        out.push((k.broker_name.to_string(), v, source, k.config_type()));
    }
    for k in BROKER_ONLY_CONFIGS {
        let (v, source) = match dynamic.get(k.name) {
            Some(v) => (v.clone(), dynamic_source(&topics.state, k.name)),
            None => (k.default.to_string(), ConfigSource::Default),
        };
        out.push((k.name.to_string(), v, source, k.kind.config_type()));
    }
    out
}

fn entry(
    name: &str,
    value: &str,
    source: ConfigSource,
    config_type: i8,
    doc: Option<&str>,
    synonyms: bool,
) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_config_source(source as i8)
        .with_read_only(matches!(source, ConfigSource::StaticBroker))
        .with_config_type(config_type)
        .with_documentation(doc.map(str_bytes));
    if synonyms {
        e.synonyms = vec![DescribeConfigsSynonym::default()
            .with_name(str_bytes(name))
            .with_value(Some(str_bytes(value)))
            .with_source(source as i8)];
    }
    e
}

pub fn handle(
    shard: &Rc<BrokerShard>,
    client: &Client,
    _h: &RequestHeaderInfo,
    r: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let topics = shard.topics();
    let mut results = Vec::new();
    for res in r.resources {
        let wanted = |name: &str| {
            res.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
        };
        let mut out = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        if let Some((code, message)) = authz::config_refusal(
            shard,
            client,
            AclOperation::DescribeConfigs,
            res.resource_type,
            &res.resource_name,
        ) {
            out.error_code = code;
            out.error_message = Some(str_bytes(&message));
            results.push(out);
            continue;
        }
        match res.resource_type {
            RESOURCE_TOPIC => match topics.get(&res.resource_name) {
                Some(t) => {
                    let broker = &topics.state.broker_configs;
                    out.configs = TOPIC_CONFIGS
                        .iter()
                        .filter(|k| wanted(k.name))
                        .map(|k| {
                            let (v, mut source) = effective(&t.configs, broker, k);
                            if source == ConfigSource::DynamicBroker {
                                source = dynamic_source(&topics.state, k.broker_name);
                            }
                            let doc = r.include_documentation.then_some(k.doc);
                            entry(k.name, v, source, k.config_type(), doc, r.include_synonyms)
                        })
                        .collect();
                }
                None => {
                    out.error_code = kerr::UNKNOWN_TOPIC_OR_PARTITION;
                    out.error_message = Some(str_bytes(&format!(
                        "Topic {} does not exist",
                        res.resource_name.as_str()
                    )));
                }
            },
            RESOURCE_BROKER => {
                let name = res.resource_name.as_str();
                if name.is_empty() {
                    // The cluster-wide dynamic defaults alone, as Kafka lists them.
                    out.configs = topics
                        .state
                        .default_broker_configs
                        .iter()
                        .filter(|(n, _)| wanted(n))
                        .map(|(n, v)| {
                            let kind = crate::topic_config::broker_config_kind(n)
                                .map_or(2, |k| k.config_type());
                            let source = ConfigSource::DynamicDefaultBroker;
                            entry(n, v, source, kind, None, r.include_synonyms)
                        })
                        .collect();
                } else if name != shard.config.node_id.to_string() {
                    // Kafka's admin clients send a broker's own resource to that broker.
                    out.error_code = kerr::INVALID_REQUEST;
                    out.error_message = Some(str_bytes(&format!(
                        "Unexpected broker id, expected {} or empty string, but received {name}",
                        shard.config.node_id
                    )));
                } else {
                    out.configs = broker_configs(shard)
                        .into_iter()
                        .filter(|(n, ..)| wanted(n))
                        .map(|(n, v, s, t)| entry(&n, &v, s, t, None, r.include_synonyms))
                        .collect();
                }
            }
            RESOURCE_CLIENT_METRICS => {
                let name = res.resource_name.as_str();
                if name.is_empty() {
                    out.error_code = kerr::INVALID_REQUEST;
                    out.error_message = Some(str_bytes(
                        "Client metrics subscription name must not be empty",
                    ));
                } else {
                    // Every config, set or not; a subscription that does not exist shows
                    // the defaults (Kafka's answer too).
                    let subscriptions = shard.shared_handle.client_metrics.get();
                    let set = subscriptions.get(name);
                    out.configs = sluice_meta::client_metrics::CONFIGS
                        .iter()
                        .filter(|(k, _)| wanted(k))
                        .map(|&(k, default)| {
                            let config_type = if k == sluice_meta::client_metrics::INTERVAL_MS {
                                3 // INT
                            } else {
                                7 // LIST
                            };
                            let value = set.and_then(|s| s.get(k));
                            let mut e = entry(
                                k,
                                value.map_or(default, String::as_str),
                                ConfigSource::Default,
                                config_type,
                                None,
                                false,
                            );
                            if let Some(v) = value {
                                e.config_source = CLIENT_METRICS_CONFIG;
                                if r.include_synonyms {
                                    e.synonyms = vec![DescribeConfigsSynonym::default()
                                        .with_name(str_bytes(k))
                                        .with_value(Some(str_bytes(v)))
                                        .with_source(CLIENT_METRICS_CONFIG)];
                                }
                            }
                            e
                        })
                        .collect();
                }
            }
            other => {
                out.error_code = kerr::INVALID_REQUEST;
                out.error_message = Some(str_bytes(&format!("unsupported resource type {other}")));
            }
        }
        results.push(out);
    }
    DescribeConfigsResponse::default().with_results(results)
}
