//! Topic configuration: the Kafka config names sluice understands, their defaults, validation,
//! and the mapping onto the storage crate's [`LogConfig`].

use std::collections::BTreeMap;

use sluice_storage::LogConfig;

/// How a config value came to be (DescribeConfigs `config_source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    DynamicBroker = 2,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
}

/// A config's type and allowed values, as Kafka's `ConfigDef` declares them.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// BOOLEAN: `true` or `false`, any case (Java's `equalsIgnoreCase`).
    Bool,
    /// INT in `min..=max`.
    Int { min: i32, max: i32 },
    /// LONG in `min..=max`.
    Long { min: i64, max: i64 },
    /// DOUBLE in `min..=max`.
    Double { min: f64, max: f64 },
    /// INT that is either `sentinel` (the codec's default level) or in `min..=max`.
    IntOr { sentinel: i32, min: i32, max: i32 },
    /// STRING, one of these.
    OneOf(&'static [&'static str]),
    /// LIST whose every item is one of these; not empty.
    ListOf(&'static [&'static str]),
    /// STRING naming a Kafka release, as `message.format.version` takes (ignored since 3.0).
    MessageFormat,
    /// LIST of `partition:broker` pairs, or `*` (replication throttles).
    ThrottledReplicas,
}

impl Kind {
    /// DescribeConfigs `config_type`: 1 BOOLEAN, 2 STRING, 3 INT, 4 SHORT, 5 LONG, 6 DOUBLE,
    /// 7 LIST.
    pub fn config_type(self) -> i8 {
        match self {
            Kind::Bool => 1,
            Kind::OneOf(_) | Kind::MessageFormat => 2,
            Kind::Int { .. } | Kind::IntOr { .. } => 3,
            Kind::Long { .. } => 5,
            Kind::Double { .. } => 6,
            Kind::ListOf(_) | Kind::ThrottledReplicas => 7,
        }
    }

    /// Checks `value` the way Kafka's `ConfigDef` parses (trimmed) and validates it; the
    /// error is the reason Kafka gives after "Invalid value V for configuration N: ".
    pub fn check(self, value: &str) -> Result<(), String> {
        if value.len() > CONFIG_VALUE_BYTES_MAX {
            return Err(format!(
                "Value is {} bytes long, over the {CONFIG_VALUE_BYTES_MAX} bytes a config \
                 value may have",
                value.len()
            ));
        }
        let v = value.trim();
        let not_a = |t: &str| format!("Not a number of type {t}");
        match self {
            Kind::Bool => {
                if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") {
                    Ok(())
                } else {
                    Err("Expected value to be either true or false".into())
                }
            }
            Kind::Int { min, max } => {
                let n = v.parse::<i32>().map_err(|_| not_a("INT"))?;
                in_range(n as i64, min as i64, max as i64, i32::MAX as i64)
            }
            Kind::Long { min, max } => {
                let n = v.parse::<i64>().map_err(|_| not_a("LONG"))?;
                in_range(n, min, max, i64::MAX)
            }
            Kind::Double { min, max } => {
                let n = v.parse::<f64>().map_err(|_| not_a("DOUBLE"))?;
                if n.is_nan() || n < min {
                    Err(format!("Value must be no less than {min}"))
                } else if n > max {
                    Err(format!("Value must be no more than {max}"))
                } else {
                    Ok(())
                }
            }
            Kind::IntOr { sentinel, min, max } => {
                let n = v.parse::<i32>().map_err(|_| not_a("INT"))?;
                if n == sentinel || (min..=max).contains(&n) {
                    Ok(())
                } else {
                    Err(format!("Value must be {sentinel} or in [{min},...,{max}]"))
                }
            }
            Kind::OneOf(allowed) => {
                if allowed.contains(&v) {
                    Ok(())
                } else {
                    Err(format!("String must be one of: {}", allowed.join(", ")))
                }
            }
            Kind::ListOf(allowed) => {
                if v.is_empty() {
                    return Err("Empty list".into());
                }
                match v.split(',').map(str::trim).find(|i| !allowed.contains(i)) {
                    Some(bad) => Err(format!(
                        "{} is not one of: {}",
                        shown(bad),
                        allowed.join(", ")
                    )),
                    None => Ok(()),
                }
            }
            Kind::MessageFormat => {
                if is_release(v) {
                    Ok(())
                } else {
                    Err(format!("Version {} is not a valid version", shown(v)))
                }
            }
            Kind::ThrottledReplicas => {
                let pair = |s: &str| {
                    s.is_empty()
                        || s.split_once(':').is_some_and(|(p, b)| {
                            !p.is_empty()
                                && !b.is_empty()
                                && p.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
                        })
                };
                if v == "*" || v.split(',').all(|s| pair(s.trim())) {
                    Ok(())
                } else {
                    Err(
                        "must be the literal '*' or a list of replicas in the following \
                         format: [partitionId]:[brokerId],[partitionId]:[brokerId],..."
                            .into(),
                    )
                }
            }
        }
    }
}

/// Kafka's range messages: `atLeast` when only a minimum binds, `between` otherwise.
fn in_range(n: i64, min: i64, max: i64, type_max: i64) -> Result<(), String> {
    if max == type_max {
        if n < min {
            return Err(format!("Value must be at least {min}"));
        }
    } else if n < min {
        return Err(format!("Value must be no less than {min}"));
    } else if n > max {
        return Err(format!("Value must be no more than {max}"));
    }
    Ok(())
}

/// Kafka releases `message.format.version` names (Kafka's `MetadataVersion` strings): three
/// parts for 0.x, two after, each optionally with an `-IVn` suffix; longer strings
/// (`0.10.0.1`, `2.8.1`) are cut to that many parts, as Kafka does.
fn is_release(v: &str) -> bool {
    const RELEASES: &[&str] = &[
        "0.8.0", "0.8.1", "0.8.2", "0.9.0", "0.10.0", "0.10.1", "0.10.2", "0.11.0", "1.0", "1.1",
        "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7", "2.8", "3.0", "3.1", "3.2", "3.3",
        "3.4", "3.5", "3.6", "3.7", "3.8", "3.9",
    ];
    let parts = if v.starts_with("0.") { 3 } else { 2 };
    let segments: Vec<&str> = v.split('.').collect();
    let key = if segments.len() > parts {
        segments[..parts].join(".")
    } else {
        v.to_string()
    };
    let (release, iv) = match key.split_once("-IV") {
        Some((r, n)) => (r, Some(n)),
        None => (key.as_str(), None),
    };
    RELEASES.contains(&release)
        && iv.is_none_or(|n| (1..=2).contains(&n.len()) && n.bytes().all(|c| c.is_ascii_digit()))
}

/// Longest config value accepted. Kafka has no such limit, but no valid value of any config
/// comes near it (the longest are replica throttle lists), and every value is stored in the
/// cluster state that each change rewrites and sends to every shard.
pub const CONFIG_VALUE_BYTES_MAX: usize = 64 * 1024;

/// At most this many characters of a refused value are echoed back in an error message: a
/// client that sent megabytes does not need them returned.
pub const SHOWN_VALUE_CHARS_MAX: usize = 64;

/// `v`, or its first [`SHOWN_VALUE_CHARS_MAX`] characters and "...".
pub fn shown(v: &str) -> String {
    match v.char_indices().nth(SHOWN_VALUE_CHARS_MAX) {
        Some((at, _)) => format!("{}...", &v[..at]),
        None => v.to_string(),
    }
}

/// One topic config key: name, broker-wide default key, default value and type.
pub struct TopicConfigKey {
    pub name: &'static str,
    /// The broker config that sets its default (Kafka's synonym); "" when there is none.
    pub broker_name: &'static str,
    pub default: &'static str,
    pub kind: Kind,
    pub doc: &'static str,
}

impl TopicConfigKey {
    /// DescribeConfigs config_type.
    pub fn config_type(&self) -> i8 {
        self.kind.config_type()
    }
}

const fn long_at_least(min: i64) -> Kind {
    Kind::Long { min, max: i64::MAX }
}
const fn int_at_least(min: i32) -> Kind {
    Kind::Int { min, max: i32::MAX }
}
const BOOL: Kind = Kind::Bool;
const LONG_MAX_STR: &str = "9223372036854775807";

/// Every topic config of Kafka 3.x, with Kafka's types, ranges and defaults. Values sluice
/// does not act on (compaction, replication, tiered storage, and those Kafka 3.x itself
/// ignores such as `message.format.version`) are validated, stored and reported, so clients
/// and tools that set them keep working.
pub static TOPIC_CONFIGS: &[TopicConfigKey] = &[
    TopicConfigKey {
        name: "cleanup.policy",
        broker_name: "log.cleanup.policy",
        default: "delete",
        kind: Kind::ListOf(&["compact", "delete"]),
        doc: "delete or compact",
    },
    TopicConfigKey {
        name: "compression.gzip.level",
        broker_name: "compression.gzip.level",
        default: "-1",
        kind: Kind::IntOr {
            sentinel: -1,
            min: 1,
            max: 9,
        },
        doc: "gzip level when compression.type is gzip",
    },
    TopicConfigKey {
        name: "compression.lz4.level",
        broker_name: "compression.lz4.level",
        default: "9",
        kind: Kind::Int { min: 1, max: 17 },
        doc: "lz4 level when compression.type is lz4",
    },
    TopicConfigKey {
        name: "compression.type",
        broker_name: "compression.type",
        default: "producer",
        kind: Kind::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        doc: "final compression",
    },
    TopicConfigKey {
        name: "compression.zstd.level",
        broker_name: "compression.zstd.level",
        default: "3",
        kind: Kind::Int {
            min: -131072,
            max: 22,
        },
        doc: "zstd level when compression.type is zstd",
    },
    TopicConfigKey {
        name: "delete.retention.ms",
        broker_name: "log.cleaner.delete.retention.ms",
        default: "86400000",
        kind: long_at_least(0),
        doc: "tombstone retention",
    },
    TopicConfigKey {
        name: "file.delete.delay.ms",
        broker_name: "log.segment.delete.delay.ms",
        default: "60000",
        kind: long_at_least(0),
        doc: "delay before deleting a file",
    },
    TopicConfigKey {
        name: "flush.messages",
        broker_name: "log.flush.interval.messages",
        default: LONG_MAX_STR,
        kind: long_at_least(1),
        doc: "sluice always fsyncs in groups",
    },
    TopicConfigKey {
        name: "flush.ms",
        broker_name: "log.flush.interval.ms",
        default: LONG_MAX_STR,
        kind: long_at_least(0),
        doc: "sluice always fsyncs in groups",
    },
    TopicConfigKey {
        name: "follower.replication.throttled.replicas",
        broker_name: "",
        default: "",
        kind: Kind::ThrottledReplicas,
        doc: "replicas caught up at follower.replication.throttled.rate",
    },
    TopicConfigKey {
        name: "index.interval.bytes",
        broker_name: "log.index.interval.bytes",
        default: "4096",
        kind: int_at_least(0),
        doc: "bytes between offset index entries",
    },
    TopicConfigKey {
        name: "leader.replication.throttled.replicas",
        broker_name: "",
        default: "",
        kind: Kind::ThrottledReplicas,
        doc: "leaders catching followers up at leader.replication.throttled.rate",
    },
    TopicConfigKey {
        name: "local.retention.bytes",
        broker_name: "log.local.retention.bytes",
        default: "-2",
        kind: long_at_least(-2),
        doc: "tiered storage (not supported): no-op",
    },
    TopicConfigKey {
        name: "local.retention.ms",
        broker_name: "log.local.retention.ms",
        default: "-2",
        kind: long_at_least(-2),
        doc: "tiered storage (not supported): no-op",
    },
    TopicConfigKey {
        name: "max.compaction.lag.ms",
        broker_name: "log.cleaner.max.compaction.lag.ms",
        default: LONG_MAX_STR,
        kind: long_at_least(1),
        doc: "",
    },
    TopicConfigKey {
        name: "max.message.bytes",
        broker_name: "message.max.bytes",
        default: "1048588",
        kind: int_at_least(0),
        doc: "largest record batch",
    },
    TopicConfigKey {
        name: "message.downconversion.enable",
        broker_name: "log.message.downconversion.enable",
        default: "true",
        kind: BOOL,
        doc: "no-op, as in Kafka 3.x for current clients",
    },
    TopicConfigKey {
        name: "message.format.version",
        broker_name: "log.message.format.version",
        default: "3.0-IV1",
        kind: Kind::MessageFormat,
        doc: "no-op, as in Kafka 3.x",
    },
    TopicConfigKey {
        name: "message.timestamp.after.max.ms",
        broker_name: "log.message.timestamp.after.max.ms",
        // Kafka 4.0's default (KIP-1030): one hour into the future; enforced on produce.
        default: "3600000",
        kind: long_at_least(0),
        doc: "",
    },
    TopicConfigKey {
        name: "message.timestamp.before.max.ms",
        broker_name: "log.message.timestamp.before.max.ms",
        default: LONG_MAX_STR,
        kind: long_at_least(0),
        doc: "",
    },
    TopicConfigKey {
        name: "message.timestamp.difference.max.ms",
        broker_name: "log.message.timestamp.difference.max.ms",
        default: LONG_MAX_STR,
        kind: long_at_least(0),
        doc: "",
    },
    TopicConfigKey {
        name: "message.timestamp.type",
        broker_name: "log.message.timestamp.type",
        default: "CreateTime",
        kind: Kind::OneOf(&["CreateTime", "LogAppendTime"]),
        doc: "CreateTime or LogAppendTime",
    },
    TopicConfigKey {
        name: "min.cleanable.dirty.ratio",
        broker_name: "log.cleaner.min.cleanable.ratio",
        default: "0.5",
        kind: Kind::Double { min: 0.0, max: 1.0 },
        doc: "",
    },
    TopicConfigKey {
        name: "min.compaction.lag.ms",
        broker_name: "log.cleaner.min.compaction.lag.ms",
        default: "0",
        kind: long_at_least(0),
        doc: "",
    },
    TopicConfigKey {
        name: "min.insync.replicas",
        broker_name: "min.insync.replicas",
        default: "1",
        kind: int_at_least(1),
        doc: "",
    },
    TopicConfigKey {
        name: "preallocate",
        broker_name: "log.preallocate",
        default: "false",
        kind: BOOL,
        doc: "",
    },
    TopicConfigKey {
        name: "remote.storage.enable",
        broker_name: "",
        default: "false",
        kind: BOOL,
        doc: "tiered storage (not supported): no-op",
    },
    TopicConfigKey {
        name: "retention.bytes",
        broker_name: "log.retention.bytes",
        default: "-1",
        // Kafka puts no bound on it: any negative value means no size limit.
        kind: long_at_least(i64::MIN),
        doc: "size retention per partition",
    },
    TopicConfigKey {
        name: "retention.ms",
        broker_name: "log.retention.ms",
        default: "604800000",
        kind: long_at_least(-1),
        doc: "time retention",
    },
    TopicConfigKey {
        name: "segment.bytes",
        broker_name: "log.segment.bytes",
        default: "1073741824",
        // Kafka's minimum (a legacy record's overhead); storage rounds small values up to a page.
        kind: int_at_least(14),
        doc: "segment size",
    },
    TopicConfigKey {
        name: "segment.index.bytes",
        broker_name: "log.index.size.max.bytes",
        default: "10485760",
        kind: int_at_least(4),
        doc: "index size of a segment: the segment rolls when its index is full",
    },
    TopicConfigKey {
        name: "segment.jitter.ms",
        broker_name: "log.roll.jitter.ms",
        default: "0",
        kind: long_at_least(0),
        doc: "",
    },
    TopicConfigKey {
        name: "segment.ms",
        broker_name: "log.roll.ms",
        default: "604800000",
        kind: long_at_least(1),
        doc: "segment age",
    },
    TopicConfigKey {
        name: "unclean.leader.election.enable",
        broker_name: "unclean.leader.election.enable",
        default: "false",
        kind: BOOL,
        doc: "",
    },
];

pub fn topic_config_key(name: &str) -> Option<&'static TopicConfigKey> {
    TOPIC_CONFIGS.iter().find(|k| k.name == name)
}

/// A dynamic broker config that is no topic config's default.
#[derive(Debug)]
pub struct BrokerConfigKey {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: Kind,
}

/// Kafka's dynamic broker configs beyond the topic defaults that sluice takes (Kafka's
/// defaults, types and ranges), by name.
pub const BROKER_ONLY_CONFIGS: &[BrokerConfigKey] = &[
    // Bytes/s this node is sent to catch up throttled replicas (counted per leader node).
    BrokerConfigKey {
        name: crate::replication_throttle::FOLLOWER_RATE,
        default: LONG_MAX_STR,
        kind: long_at_least(0),
    },
    // Bytes/s this node sends to catch up throttled out-of-sync followers.
    BrokerConfigKey {
        name: crate::replication_throttle::LEADER_RATE,
        default: LONG_MAX_STR,
        kind: long_at_least(0),
    },
    // Accepted and ignored: one log directory per node.
    BrokerConfigKey {
        name: "replica.alter.log.dirs.io.max.bytes.per.second",
        default: LONG_MAX_STR,
        kind: long_at_least(0),
    },
];

/// The type and range of a dynamic broker config: the topic config's whose default it
/// sets (the `log.*` names), or its own (`BROKER_ONLY_CONFIGS`); `None` for a name sluice
/// does not take dynamically.
pub fn broker_config_kind(name: &str) -> Option<Kind> {
    broker_config_key(name).map(|k| k.kind).or_else(|| {
        BROKER_ONLY_CONFIGS
            .iter()
            .find(|k| k.name == name)
            .map(|k| k.kind)
    })
}

/// The topic config whose default a broker config sets.
pub fn broker_config_key(name: &str) -> Option<&'static TopicConfigKey> {
    TOPIC_CONFIGS
        .iter()
        .find(|k| !k.broker_name.is_empty() && k.broker_name == name)
}

/// Why a config change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigProblem {
    Unknown(String),
    /// `reason` is Kafka's wording after "Invalid value V for configuration N: ".
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
}

impl ConfigProblem {
    pub fn message(&self) -> String {
        match self {
            ConfigProblem::Unknown(n) => format!("Unknown topic config name: {}", shown(n)),
            ConfigProblem::Invalid {
                name,
                value,
                reason,
            } => {
                let mut m = format!(
                    "Invalid value {} for configuration {}",
                    shown(value),
                    shown(name)
                );
                if !reason.is_empty() {
                    m.push_str(": ");
                    m.push_str(reason);
                }
                m
            }
        }
    }
}

/// Validates one topic override by Kafka's type and range.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), ConfigProblem> {
    let key = topic_config_key(name).ok_or_else(|| ConfigProblem::Unknown(name.to_string()))?;
    key.kind
        .check(value)
        .map_err(|reason| ConfigProblem::Invalid {
            name: name.into(),
            value: value.into(),
            reason,
        })
}

/// Validates a set of topic overrides.
pub fn validate_topic_configs<'a>(
    configs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), ConfigProblem> {
    for (name, value) in configs {
        validate_topic_config(name, value)?;
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
    } else if let Some(v) = (!key.broker_name.is_empty())
        .then(|| broker.get(key.broker_name))
        .flatten()
    {
        (v, ConfigSource::DynamicBroker)
    } else {
        (key.default, ConfigSource::Default)
    }
}

/// A topic's `min.insync.replicas` (its override, the broker's, or Kafka's default 1):
/// the in-sync replicas an `acks=all` produce needs.
pub fn min_insync_replicas(
    overrides: &BTreeMap<String, String>,
    broker: &BTreeMap<String, String>,
) -> usize {
    let key = TOPIC_CONFIGS
        .iter()
        .find(|k| k.name == "min.insync.replicas")
        .expect("a known topic config");
    effective(overrides, broker, key)
        .0
        .parse::<usize>()
        .unwrap_or(1)
        .max(1)
}

/// Whether a topic's `cleanup.policy` (its override, the broker's, or Kafka's `delete`)
/// includes `delete`: time and size retention, and DeleteRecords, apply only then.
pub fn cleanup_deletes(
    overrides: &BTreeMap<String, String>,
    broker: &BTreeMap<String, String>,
) -> bool {
    cleanup_policy_has(overrides, broker, "delete")
}

/// Whether the effective `cleanup.policy` lists `policy`.
fn cleanup_policy_has(
    overrides: &BTreeMap<String, String>,
    broker: &BTreeMap<String, String>,
    policy: &str,
) -> bool {
    let key = topic_config_key("cleanup.policy").expect("a known topic config");
    effective(overrides, broker, key)
        .0
        .split(',')
        .any(|p| p.trim() == policy)
}

/// Whether a topic's `cleanup.policy` includes `compact`: records need keys, and the log
/// cleaner keeps the latest record per key.
pub fn cleanup_compacts(
    overrides: &BTreeMap<String, String>,
    broker: &BTreeMap<String, String>,
) -> bool {
    cleanup_policy_has(overrides, broker, "compact")
}

/// Builds the storage settings of a topic's partitions.
pub fn log_config(
    overrides: &BTreeMap<String, String>,
    broker: &BTreeMap<String, String>,
) -> LogConfig {
    // Values were validated by Kafka's rules when set; Kafka parses them trimmed.
    let get = |name: &str| {
        let key = topic_config_key(name).expect("known key");
        effective(overrides, broker, key).0.trim().to_string()
    };
    let mut c = LogConfig::default();
    c.segment_bytes = get("segment.bytes")
        .parse::<u64>()
        .unwrap_or(c.segment_bytes)
        .clamp(
            sluice_storage::config::SEGMENT_BYTES_MIN,
            sluice_storage::config::SEGMENT_BYTES_MAX,
        );
    c.segment_ms = get("segment.ms").parse().unwrap_or(c.segment_ms);
    c.retention_ms = get("retention.ms").parse().unwrap_or(c.retention_ms);
    // Kafka reads any negative retention.bytes as "no size limit".
    c.retention_bytes = get("retention.bytes")
        .parse::<i64>()
        .unwrap_or(c.retention_bytes)
        .max(-1);
    c.max_message_bytes = get("max.message.bytes")
        .parse::<usize>()
        .unwrap_or(c.max_message_bytes)
        .clamp(1, sluice_storage::config::BATCH_BYTES_MAX);
    c.index_interval_bytes = get("index.interval.bytes")
        .parse()
        .unwrap_or(c.index_interval_bytes);
    c.segment_index_bytes = get("segment.index.bytes")
        .parse::<u32>()
        .unwrap_or(c.segment_index_bytes)
        .clamp(
            sluice_storage::config::SEGMENT_INDEX_BYTES_MIN,
            sluice_storage::config::SEGMENT_INDEX_BYTES_MAX,
        );
    c.log_append_time = get("message.timestamp.type") == "LogAppendTime";
    c.compact = cleanup_compacts(overrides, broker);
    c.delete_retention_ms = get("delete.retention.ms")
        .parse::<i64>()
        .unwrap_or(c.delete_retention_ms)
        .max(0);
    c.min_compaction_lag_ms = get("min.compaction.lag.ms")
        .parse::<i64>()
        .unwrap_or(c.min_compaction_lag_ms)
        .max(0);
    c.max_compaction_lag_ms = get("max.compaction.lag.ms")
        .parse::<i64>()
        .unwrap_or(c.max_compaction_lag_ms)
        .max(1);
    c.min_cleanable_dirty_ratio = get("min.cleanable.dirty.ratio")
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .unwrap_or(c.min_cleanable_dirty_ratio);
    // Time and size retention belong to cleanup.policy=delete; a compact-only topic (like
    // __consumer_offsets) loses only what the cleaner removes.
    if !cleanup_deletes(overrides, broker) {
        c.retention_ms = -1;
        c.retention_bytes = -1;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, value, accepted?) as Kafka 3.x decides.
    const CASES: &[(&str, &str, bool)] = &[
        ("retention.ms", "1000", true),
        ("retention.ms", "-1", true),
        ("retention.ms", " 1000 ", true),
        ("retention.ms", "-2", false),
        ("retention.ms", "x", false),
        ("retention.ms", "1.5", false),
        ("retention.ms", "", false),
        ("retention.ms", "9223372036854775808", false),
        ("retention.bytes", "-5", true),
        ("retention.bytes", "1e3", false),
        ("local.retention.ms", "-2", true),
        ("local.retention.ms", "-3", false),
        ("local.retention.ms", "forever", false),
        ("local.retention.bytes", "100", true),
        ("segment.bytes", "14", true),
        ("segment.bytes", "13", false),
        ("segment.bytes", "2147483647", true),
        ("segment.bytes", "2147483648", false),
        ("segment.index.bytes", "4", true),
        ("segment.index.bytes", "3", false),
        ("segment.index.bytes", "0", false),
        ("index.interval.bytes", "0", true),
        ("index.interval.bytes", "-1", false),
        ("segment.ms", "0", false),
        ("segment.ms", "1", true),
        ("flush.messages", "0", false),
        ("max.message.bytes", "0", true),
        ("max.message.bytes", "-1", false),
        ("min.insync.replicas", "0", false),
        ("min.cleanable.dirty.ratio", "0.25", true),
        ("min.cleanable.dirty.ratio", "1.5", false),
        ("min.cleanable.dirty.ratio", "NaN", false),
        ("cleanup.policy", "compact,delete", true),
        ("cleanup.policy", "delete, compact", true),
        ("cleanup.policy", "", false),
        ("cleanup.policy", "remove", false),
        ("compression.type", "zstd", true),
        ("compression.type", "brotli", false),
        ("compression.gzip.level", "-1", true),
        ("compression.gzip.level", "9", true),
        ("compression.gzip.level", "0", false),
        ("compression.zstd.level", "-131072", true),
        ("compression.zstd.level", "23", false),
        ("message.timestamp.type", "LogAppendTime", true),
        ("message.timestamp.type", "logappendtime", false),
        ("preallocate", "TRUE", true),
        ("preallocate", "yes", false),
        ("message.downconversion.enable", "false", true),
        ("message.format.version", "0.10.0", true),
        ("message.format.version", "0.10.0.1", true),
        ("message.format.version", "0.10.0-IV1", true),
        ("message.format.version", "2.8", true),
        ("message.format.version", "3.0-IV1", true),
        ("message.format.version", "0.7.0", false),
        ("message.format.version", "banana", false),
        ("leader.replication.throttled.replicas", "*", true),
        ("leader.replication.throttled.replicas", "0:1,1:1", true),
        ("leader.replication.throttled.replicas", "", true),
        ("leader.replication.throttled.replicas", "0-1", false),
        ("remote.storage.enable", "false", true),
        ("unknown.config", "1", false),
    ];

    #[test]
    fn values_are_checked_by_type_and_range_as_kafka_does() {
        for &(name, value, ok) in CASES {
            let r = validate_topic_config(name, value);
            assert_eq!(r.is_ok(), ok, "{name}={value:?}: {r:?}");
        }
    }

    #[test]
    fn messages_use_kafka_wording_and_stay_short() {
        fn m(n: &str, v: &str) -> String {
            validate_topic_config(n, v).unwrap_err().message()
        }
        assert_eq!(
            m("retention.ms", "x"),
            "Invalid value x for configuration retention.ms: Not a number of type LONG"
        );
        assert_eq!(
            m("segment.index.bytes", "3"),
            "Invalid value 3 for configuration segment.index.bytes: Value must be at least 4"
        );
        assert_eq!(m("nope", "1"), "Unknown topic config name: nope");
        let huge = "1".repeat(2 << 20);
        let msg = m("local.retention.ms", &huge);
        assert!(msg.len() < 300, "{} bytes", msg.len());
        // Within the length cap, a long numeric string is still not a LONG.
        assert!(m("local.retention.ms", &"9".repeat(100)).contains("Not a number of type LONG"));
        assert!(m(
            "leader.replication.throttled.replicas",
            &"0:0,".repeat(20_000)
        )
        .contains("over the 65536 bytes"));
    }

    #[test]
    fn defaults_pass_their_own_checks() {
        for k in TOPIC_CONFIGS {
            assert!(k.kind.check(k.default).is_ok(), "{}", k.name);
            assert_eq!(topic_config_key(k.name).map(|f| f.name), Some(k.name));
        }
        assert_eq!(
            broker_config_key("log.retention.ms").unwrap().name,
            "retention.ms"
        );
        assert!(broker_config_key("").is_none());
        // Every broker config sluice takes has one kind (checks, DescribeConfigs' types).
        for k in BROKER_ONLY_CONFIGS {
            assert!(k.kind.check(k.default).is_ok(), "{}", k.name);
        }
        let rate = broker_config_kind("leader.replication.throttled.rate").unwrap();
        assert_eq!(rate.config_type(), 5, "LONG");
        assert!(rate.check("-1").is_err());
        assert_eq!(
            broker_config_kind("log.retention.ms")
                .unwrap()
                .config_type(),
            5
        );
        assert!(broker_config_kind("num.io.threads").is_none());
    }

    #[test]
    fn mapping_to_storage() {
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "5".to_string());
        o.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        o.insert("retention.bytes".to_string(), "-7".to_string());
        o.insert("segment.index.bytes".to_string(), "2147483647".to_string());
        o.insert("message.format.version".to_string(), "0.10.0".to_string());
        let c = log_config(&o, &BTreeMap::new());
        assert_eq!(c.retention_ms, 5);
        assert_eq!(c.retention_bytes, -1);
        assert!(c.log_append_time);
        assert_eq!(c.segment_bytes, 1 << 30);
        assert_eq!(
            c.segment_index_bytes,
            sluice_storage::config::SEGMENT_INDEX_BYTES_MAX
        );
        assert!(c.validate().is_ok());
        let mut o = BTreeMap::new();
        o.insert("segment.bytes".to_string(), "14".to_string());
        o.insert("segment.index.bytes".to_string(), "4".to_string());
        let c = log_config(&o, &BTreeMap::new());
        assert!(c.validate().is_ok(), "{c:?}");
    }
}
