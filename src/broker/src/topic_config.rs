//! Topic configuration: the Kafka config names sluice understands, their defaults, validation,
//! and the mapping onto the storage crate's [`LogConfig`].

use std::collections::BTreeMap;

use sluice_storage::LogConfig;

/// How a config value came to be (DescribeConfigs `config_source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    DynamicBroker = 2,
    StaticBroker = 4,
    Default = 5,
}

/// One topic config key: name, broker-wide default key, default value, type and check.
pub struct TopicConfigKey {
    pub name: &'static str,
    pub broker_name: &'static str,
    pub default: &'static str,
    /// DescribeConfigs config_type: 1 BOOLEAN, 2 STRING, 3 INT, 4 SHORT, 5 LONG, 6 DOUBLE, 7 LIST
    pub config_type: i8,
    pub check: fn(&str) -> bool,
    pub doc: &'static str,
}

fn long_at_least(min: i64) -> impl Fn(&str) -> bool {
    move |v| v.parse::<i64>().is_ok_and(|n| n >= min)
}

fn is_long_ge_minus1(v: &str) -> bool {
    long_at_least(-1)(v)
}
fn is_long_ge1(v: &str) -> bool {
    long_at_least(1)(v)
}
fn is_long_ge0(v: &str) -> bool {
    long_at_least(0)(v)
}
fn is_segment_bytes(v: &str) -> bool {
    v.parse::<i64>()
        .is_ok_and(|n| (14..=i32::MAX as i64).contains(&n))
}
fn is_int_ge0(v: &str) -> bool {
    v.parse::<i32>().is_ok_and(|n| n >= 0)
}
fn is_int_ge1(v: &str) -> bool {
    v.parse::<i32>().is_ok_and(|n| n >= 1)
}
fn is_cleanup_policy(v: &str) -> bool {
    !v.is_empty()
        && v.split(',')
            .all(|p| matches!(p.trim(), "delete" | "compact"))
}
fn is_timestamp_type(v: &str) -> bool {
    matches!(v, "CreateTime" | "LogAppendTime")
}
fn is_compression(v: &str) -> bool {
    matches!(
        v,
        "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd"
    )
}
fn is_bool(v: &str) -> bool {
    matches!(v, "true" | "false")
}
fn is_ratio(v: &str) -> bool {
    v.parse::<f64>().is_ok_and(|n| (0.0..=1.0).contains(&n))
}
fn any(_: &str) -> bool {
    true
}

/// Every topic config sluice accepts. Values sluice does not act on yet (compaction) are
/// stored and reported so clients and tools that set them keep working.
pub static TOPIC_CONFIGS: &[TopicConfigKey] = &[
    TopicConfigKey {
        name: "cleanup.policy",
        broker_name: "log.cleanup.policy",
        default: "delete",
        config_type: 7,
        check: is_cleanup_policy,
        doc: "delete or compact",
    },
    TopicConfigKey {
        name: "compression.type",
        broker_name: "compression.type",
        default: "producer",
        config_type: 2,
        check: is_compression,
        doc: "final compression",
    },
    TopicConfigKey {
        name: "delete.retention.ms",
        broker_name: "log.cleaner.delete.retention.ms",
        default: "86400000",
        config_type: 5,
        check: is_long_ge0,
        doc: "tombstone retention",
    },
    TopicConfigKey {
        name: "file.delete.delay.ms",
        broker_name: "log.segment.delete.delay.ms",
        default: "60000",
        config_type: 5,
        check: is_long_ge0,
        doc: "delay before deleting a file",
    },
    TopicConfigKey {
        name: "flush.messages",
        broker_name: "log.flush.interval.messages",
        default: "9223372036854775807",
        config_type: 5,
        check: is_long_ge1,
        doc: "sluice always fsyncs in groups",
    },
    TopicConfigKey {
        name: "flush.ms",
        broker_name: "log.flush.interval.ms",
        default: "9223372036854775807",
        config_type: 5,
        check: is_long_ge0,
        doc: "sluice always fsyncs in groups",
    },
    TopicConfigKey {
        name: "index.interval.bytes",
        broker_name: "log.index.interval.bytes",
        default: "4096",
        config_type: 3,
        check: is_int_ge0,
        doc: "bytes between offset index entries",
    },
    TopicConfigKey {
        name: "max.compaction.lag.ms",
        broker_name: "log.cleaner.max.compaction.lag.ms",
        default: "9223372036854775807",
        config_type: 5,
        check: is_long_ge1,
        doc: "",
    },
    TopicConfigKey {
        name: "max.message.bytes",
        broker_name: "message.max.bytes",
        default: "1048588",
        config_type: 3,
        check: is_int_ge0,
        doc: "largest record batch",
    },
    TopicConfigKey {
        name: "message.timestamp.type",
        broker_name: "log.message.timestamp.type",
        default: "CreateTime",
        config_type: 2,
        check: is_timestamp_type,
        doc: "CreateTime or LogAppendTime",
    },
    TopicConfigKey {
        name: "min.cleanable.dirty.ratio",
        broker_name: "log.cleaner.min.cleanable.ratio",
        default: "0.5",
        config_type: 6,
        check: is_ratio,
        doc: "",
    },
    TopicConfigKey {
        name: "min.compaction.lag.ms",
        broker_name: "log.cleaner.min.compaction.lag.ms",
        default: "0",
        config_type: 5,
        check: is_long_ge0,
        doc: "",
    },
    TopicConfigKey {
        name: "min.insync.replicas",
        broker_name: "min.insync.replicas",
        default: "1",
        config_type: 3,
        check: is_int_ge1,
        doc: "",
    },
    TopicConfigKey {
        name: "preallocate",
        broker_name: "log.preallocate",
        default: "false",
        config_type: 1,
        check: is_bool,
        doc: "",
    },
    TopicConfigKey {
        name: "retention.bytes",
        broker_name: "log.retention.bytes",
        default: "-1",
        config_type: 5,
        check: is_long_ge_minus1,
        doc: "size retention per partition",
    },
    TopicConfigKey {
        name: "retention.ms",
        broker_name: "log.retention.ms",
        default: "604800000",
        config_type: 5,
        check: is_long_ge_minus1,
        doc: "time retention",
    },
    TopicConfigKey {
        name: "segment.bytes",
        broker_name: "log.segment.bytes",
        default: "1073741824",
        config_type: 3,
        check: is_segment_bytes,
        doc: "segment size",
    },
    TopicConfigKey {
        name: "segment.index.bytes",
        broker_name: "log.index.size.max.bytes",
        default: "10485760",
        config_type: 3,
        check: is_int_ge0,
        doc: "",
    },
    TopicConfigKey {
        name: "segment.jitter.ms",
        broker_name: "log.roll.jitter.ms",
        default: "0",
        config_type: 5,
        check: is_long_ge0,
        doc: "",
    },
    TopicConfigKey {
        name: "segment.ms",
        broker_name: "log.roll.ms",
        default: "604800000",
        config_type: 5,
        check: is_long_ge1,
        doc: "segment age",
    },
    TopicConfigKey {
        name: "unclean.leader.election.enable",
        broker_name: "unclean.leader.election.enable",
        default: "false",
        config_type: 1,
        check: is_bool,
        doc: "",
    },
    TopicConfigKey {
        name: "message.downconversion.enable",
        broker_name: "log.message.downconversion.enable",
        default: "true",
        config_type: 1,
        check: is_bool,
        doc: "",
    },
    TopicConfigKey {
        name: "local.retention.ms",
        broker_name: "log.local.retention.ms",
        default: "-2",
        config_type: 5,
        check: any,
        doc: "",
    },
    TopicConfigKey {
        name: "local.retention.bytes",
        broker_name: "log.local.retention.bytes",
        default: "-2",
        config_type: 5,
        check: any,
        doc: "",
    },
];

pub fn topic_config_key(name: &str) -> Option<&'static TopicConfigKey> {
    TOPIC_CONFIGS.iter().find(|k| k.name == name)
}

/// Why a config change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigProblem {
    Unknown(String),
    Invalid { name: String, value: String },
}

impl ConfigProblem {
    pub fn message(&self) -> String {
        match self {
            ConfigProblem::Unknown(n) => format!("Unknown topic config name: {n}"),
            ConfigProblem::Invalid { name, value } => {
                format!("Invalid value {value} for configuration {name}")
            }
        }
    }
}

/// Validates a set of topic overrides.
pub fn validate_topic_configs<'a>(
    configs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), ConfigProblem> {
    for (name, value) in configs {
        let key = topic_config_key(name).ok_or_else(|| ConfigProblem::Unknown(name.to_string()))?;
        if !(key.check)(value) {
            return Err(ConfigProblem::Invalid {
                name: name.into(),
                value: value.into(),
            });
        }
    }
    Ok(())
}

/// The effective value of `name` for a topic: its override, the broker's, or the default.
pub fn effective<'a>(
    overrides: &'a BTreeMap<String, String>,
    broker: &'a BTreeMap<String, String>,
    key: &'static TopicConfigKey,
) -> (&'a str, ConfigSource) {
    if let Some(v) = overrides.get(key.name) {
        (v, ConfigSource::DynamicTopic)
    } else if let Some(v) = broker.get(key.broker_name) {
        (v, ConfigSource::DynamicBroker)
    } else {
        (key.default, ConfigSource::Default)
    }
}

/// Builds the storage settings of a topic's partitions.
pub fn log_config(
    overrides: &BTreeMap<String, String>,
    broker: &BTreeMap<String, String>,
) -> LogConfig {
    let get = |name: &str| {
        let key = topic_config_key(name).expect("known key");
        effective(overrides, broker, key).0.to_string()
    };
    let mut c = LogConfig::default();
    c.segment_bytes = get("segment.bytes")
        .parse::<u64>()
        .unwrap_or(c.segment_bytes)
        .max(4096);
    c.segment_ms = get("segment.ms").parse().unwrap_or(c.segment_ms);
    c.retention_ms = get("retention.ms").parse().unwrap_or(c.retention_ms);
    c.retention_bytes = get("retention.bytes").parse().unwrap_or(c.retention_bytes);
    c.max_message_bytes = get("max.message.bytes")
        .parse::<usize>()
        .unwrap_or(c.max_message_bytes)
        .clamp(1, sluice_storage::config::BATCH_BYTES_MAX);
    c.index_interval_bytes = get("index.interval.bytes")
        .parse()
        .unwrap_or(c.index_interval_bytes);
    c.log_append_time = get("message.timestamp.type") == "LogAppendTime";
    // Time and size retention belong to cleanup.policy=delete; a compact-only topic (like
    // __consumer_offsets) keeps its data until compaction, which comes later.
    if !get("cleanup.policy")
        .split(',')
        .any(|p| p.trim() == "delete")
    {
        c.retention_ms = -1;
        c.retention_bytes = -1;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_and_mapping() {
        assert!(validate_topic_configs([("retention.ms", "1000")]).is_ok());
        assert!(validate_topic_configs([("retention.ms", "x")]).is_err());
        assert!(matches!(
            validate_topic_configs([("nope", "1")]),
            Err(ConfigProblem::Unknown(_))
        ));
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "5".to_string());
        o.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        let c = log_config(&o, &BTreeMap::new());
        assert_eq!(c.retention_ms, 5);
        assert!(c.log_append_time);
        assert_eq!(c.segment_bytes, 1 << 30);
        assert!(c.validate().is_ok());
    }
}
