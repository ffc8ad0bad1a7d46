//! `sluice topic …`: create, list, describe, delete, alter-config and add-partitions, over
//! CreateTopics, Metadata, ListOffsets, DescribeConfigs, DeleteTopics,
//! IncrementalAlterConfigs and CreatePartitions.

use std::collections::BTreeMap;

use serde_json::json;
use sluice_codec::kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use sluice_codec::kafka_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig,
};
use sluice_codec::kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use sluice_codec::kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use sluice_codec::kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use sluice_codec::kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, IncrementalAlterConfigsRequest, TopicName,
};
use sluice_codec::kafka_protocol::protocol::StrBytes;

use crate::client::Client;
use crate::output::{ids, json, table};
use crate::{kafka_error, CliError, Format, Global};

/// How long the broker may take over a topic operation (Kafka's tools default to 30 s too).
const ADMIN_TIMEOUT_MS: i32 = 30_000;
/// DescribeConfigs/IncrementalAlterConfigs resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;

#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Create topics.
    Create {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Partitions (default: the broker's num.partitions).
        #[arg(short = 'p', long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
        partitions: Option<i32>,
        /// Replication factor (default: the broker's default.replication.factor).
        #[arg(short = 'r', long, value_name = "N", value_parser = clap::value_parser!(i16).range(1..))]
        replicas: Option<i16>,
        /// A topic config, key=value (repeatable).
        #[arg(short = 'c', long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics: name, partitions, replicas.
    #[command(alias = "ls")]
    List {
        /// Include internal topics (__consumer_offsets, __transaction_state).
        #[arg(short = 'i', long)]
        internal: bool,
    },
    /// Describe a topic: its partitions (leader, replicas, ISR, log start and end offsets)
    /// and its configs with their source.
    Describe {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Delete topics.
    Delete {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Set or delete topic configs (deleted ones go back to the default).
    AlterConfig {
        #[arg(value_name = "NAME")]
        name: String,
        /// key=value to set (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
        set: Vec<(String, String)>,
        /// A key to delete (repeatable).
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Produce one record per stdin line.
    Produce {
        #[arg(value_name = "NAME")]
        name: String,
        /// Each line is KEY<tab>VALUE (a line without a tab has no key).
        #[arg(short = 'k', long = "keys")]
        keyed: bool,
        /// An empty value is sent as a null (a tombstone, for compacted topics).
        #[arg(long)]
        tombstone_empty: bool,
        /// Every record to this partition (default: keyed records by murmur2 of the key, as
        /// Kafka's clients, the others one partition per batch in turn).
        #[arg(short = 'p', long, value_name = "PARTITION")]
        partition: Option<i32>,
        /// Acknowledgement asked of the leader.
        #[arg(long, value_enum, default_value = "all")]
        acks: crate::produce::Acks,
    },
    /// Print records (until interrupted, or -n of them, or the end with -e).
    Consume {
        #[arg(value_name = "NAME")]
        name: String,
        /// Start: beginning, end, OFFSET, -N (N before the end) or @TIMESTAMP (ms). With -g,
        /// partitions with a committed offset start there.
        #[arg(short = 'o', long = "offset", value_name = "WHERE",
              allow_hyphen_values = true, value_parser = crate::consume::parse_start)]
        start: Option<crate::consume::Start>,
        /// Stop after this many records.
        #[arg(short = 'n', long = "num", value_name = "COUNT")]
        count: Option<u64>,
        /// Start from this group's committed offsets and commit what was printed.
        #[arg(short = 'g', long, value_name = "GROUP")]
        group: Option<String>,
        /// Only this partition.
        #[arg(short = 'p', long, value_name = "PARTITION")]
        partition: Option<i32>,
        /// Stop once every partition is read to its end.
        #[arg(short = 'e', long = "exit")]
        exit_at_end: bool,
    },
    /// Add partitions to a topic.
    AddPartitions {
        #[arg(value_name = "NAME")]
        name: String,
        /// How many partitions to add.
        #[arg(short = 'n', long = "num", value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
        num: i32,
    },
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s}: expected key=value")),
    }
}

pub(crate) fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub fn run(global: &Global, command: TopicCommand) -> Result<String, CliError> {
    if let TopicCommand::Consume {
        name,
        start,
        count,
        group,
        partition,
        exit_at_end,
    } = command
    {
        let output = match global.format.as_str() {
            "json" => crate::consume::Output::JsonLines,
            "text" => crate::consume::Output::Pattern(crate::consume::parse_pattern("%v\\n")),
            pattern => crate::consume::Output::Pattern(crate::consume::parse_pattern(pattern)),
        };
        let opts = crate::consume::ConsumeOptions {
            start,
            count,
            group,
            partition,
            exit_at_end,
            output,
        };
        let mut client = global.connect()?;
        let stdout = std::io::stdout();
        crate::consume::run(&mut client, &name, &opts, &mut stdout.lock())?;
        return Ok(String::new());
    }
    let format = global.output()?;
    let mut client = global.connect()?;
    match command {
        TopicCommand::Consume { .. } => unreachable!("handled above"),
        TopicCommand::Produce {
            name,
            keyed,
            tombstone_empty,
            partition,
            acks,
        } => {
            let opts = crate::produce::ProduceOptions {
                keyed,
                tombstone_empty,
                partition,
                acks,
            };
            let stdin = std::io::stdin();
            let interactive = crate::produce::stdin_is_interactive();
            crate::produce::run(
                &mut client,
                format,
                &name,
                &opts,
                &mut stdin.lock(),
                interactive,
            )
        }
        TopicCommand::Create {
            names,
            partitions,
            replicas,
            configs,
        } => create(&mut client, format, &names, partitions, replicas, &configs),
        TopicCommand::List { internal } => list(&mut client, format, internal),
        TopicCommand::Describe { name } => describe(&mut client, format, &name),
        TopicCommand::Delete { names } => delete(&mut client, format, &names),
        TopicCommand::AlterConfig { name, set, delete } => {
            alter_config(&mut client, format, &name, &set, &delete)
        }
        TopicCommand::AddPartitions { name, num } => {
            add_partitions(&mut client, format, &name, num)
        }
    }
}

/// One line per topic (or group) with OK or its error; the command fails if any did.
pub(crate) fn outcome(
    format: Format,
    what: &str,
    results: Vec<(String, Option<String>)>,
) -> Result<String, CliError> {
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(t, e)| e.as_ref().map(|e| format!("{t}: {e}")))
        .collect();
    let out = match format {
        Format::Json => json(&serde_json::Value::Array(
            results
                .iter()
                .map(|(t, e)| json!({"name": t, "error": e}))
                .collect(),
        )),
        Format::Text => table(
            &[what, "STATUS"],
            &results
                .iter()
                .map(|(t, e)| vec![t.clone(), e.clone().unwrap_or_else(|| "OK".into())])
                .collect::<Vec<_>>(),
        ),
    };
    if failed.is_empty() {
        Ok(out)
    } else {
        print!("{out}");
        Err(CliError(failed.join("; ")))
    }
}

/// A topic's error, if it has one.
fn failure(code: i16, message: Option<&StrBytes>) -> Option<String> {
    (code != 0).then(|| crate::error_text(code, message.map(|m| m.as_str())))
}

fn create(
    client: &mut Client,
    format: Format,
    names: &[String],
    partitions: Option<i32>,
    replicas: Option<i16>,
    configs: &[(String, String)],
) -> Result<String, CliError> {
    let topics = names
        .iter()
        .map(|n| {
            CreatableTopic::default()
                .with_name(name(n))
                .with_num_partitions(partitions.unwrap_or(-1))
                .with_replication_factor(replicas.unwrap_or(-1))
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(k.clone()))
                                .with_value(Some(StrBytes::from_string(v.clone())))
                        })
                        .collect(),
                )
        })
        .collect();
    let resp = client.call(
        &CreateTopicsRequest::default()
            .with_topics(topics)
            .with_timeout_ms(ADMIN_TIMEOUT_MS),
    )?;
    outcome(
        format,
        "TOPIC",
        resp.topics
            .iter()
            .map(|t| {
                (
                    t.name.0.to_string(),
                    failure(t.error_code, t.error_message.as_ref()),
                )
            })
            .collect(),
    )
}

fn delete(client: &mut Client, format: Format, names: &[String]) -> Result<String, CliError> {
    use sluice_codec::kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    let resp = client.call_with(|version| {
        // v6+ names topics in `topics` (by name or id), earlier versions in `topic_names`.
        let req = DeleteTopicsRequest::default().with_timeout_ms(ADMIN_TIMEOUT_MS);
        if version >= 6 {
            req.with_topics(
                names
                    .iter()
                    .map(|n| DeleteTopicState::default().with_name(Some(name(n))))
                    .collect(),
            )
        } else {
            req.with_topic_names(names.iter().map(|n| name(n)).collect())
        }
    })?;
    outcome(
        format,
        "TOPIC",
        resp.responses
            .iter()
            .map(|t| {
                (
                    t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                    failure(t.error_code, t.error_message.as_ref()),
                )
            })
            .collect(),
    )
}

/// Replicas of a topic: its first partition's replica count.
fn replication_factor(t: &MetadataResponseTopic) -> usize {
    t.partitions
        .iter()
        .min_by_key(|p| p.partition_index)
        .map_or(0, |p| p.replica_nodes.len())
}

fn list(client: &mut Client, format: Format, internal: bool) -> Result<String, CliError> {
    let meta = client.metadata(None)?;
    let mut topics: Vec<&MetadataResponseTopic> = meta
        .topics
        .iter()
        .filter(|t| internal || !t.is_internal)
        .filter(|t| t.name.is_some())
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let name_of = |t: &MetadataResponseTopic| t.name.as_ref().map(|n| n.0.to_string());
    Ok(match format {
        Format::Json => json(&serde_json::Value::Array(
            topics
                .iter()
                .map(|t| {
                    json!({
                        "name": name_of(t),
                        "partitions": t.partitions.len(),
                        "replicas": replication_factor(t),
                        "internal": t.is_internal,
                    })
                })
                .collect(),
        )),
        Format::Text => table(
            &["NAME", "PARTITIONS", "REPLICAS"],
            &topics
                .iter()
                .map(|t| {
                    vec![
                        name_of(t).unwrap_or_default(),
                        t.partitions.len().to_string(),
                        replication_factor(t).to_string(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    })
}

/// One topic's metadata, or the error that it is not there.
pub(crate) fn topic_metadata(
    client: &mut Client,
    topic: &str,
) -> Result<MetadataResponseTopic, CliError> {
    let meta = client.metadata(Some(&[topic.to_string()]))?;
    let t = meta
        .topics
        .into_iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .ok_or_else(|| CliError(format!("topic {topic}: not in the broker's answer")))?;
    if t.error_code != 0 {
        return Err(kafka_error(&format!("topic {topic}"), t.error_code, None));
    }
    Ok(t)
}

/// Log start and end offsets of each partition of `topic`, asked of each leader. A
/// partition whose leader cannot say gets its error instead.
pub(crate) fn offsets(
    client: &mut Client,
    topic: &str,
    t: &MetadataResponseTopic,
) -> BTreeMap<i32, Result<(i64, i64), String>> {
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for p in &t.partitions {
        if p.leader_id.0 < 0 {
            out.insert(p.partition_index, Err("LEADER_NOT_AVAILABLE".to_string()));
        } else {
            by_leader
                .entry(p.leader_id.0)
                .or_default()
                .push(p.partition_index);
        }
    }
    for (leader, parts) in by_leader {
        let mut ask =
            |timestamp: i64| crate::offsets::ask_leader(client, leader, topic, &parts, timestamp);
        // Earliest (-2) and latest (-1) in two requests: Kafka refuses a partition named
        // twice in one.
        let both = ask(-2).and_then(|start| Ok((start, ask(-1)?)));
        for p in parts {
            let r = match &both {
                Err(e) => Err(e.0.clone()),
                Ok((start, end)) => match (start.get(&p), end.get(&p)) {
                    (Some(Ok(s)), Some(Ok(e))) => Ok((*s, *e)),
                    (Some(Err(e)), _) | (_, Some(Err(e))) => Err(e.clone()),
                    _ => Err("not answered".to_string()),
                },
            };
            out.insert(p, r);
        }
    }
    out
}

/// Kafka's names of DescribeConfigs' config sources.
fn source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

fn describe(client: &mut Client, format: Format, topic: &str) -> Result<String, CliError> {
    let t = topic_metadata(client, topic)?;
    let offsets = offsets(client, topic, &t);
    let resp = client.call(&DescribeConfigsRequest::default().with_resources(
        vec![DescribeConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(None)],
    ))?;
    let result = resp
        .results
        .first()
        .ok_or_else(|| CliError(format!("topic {topic}: DescribeConfigs answered nothing")))?;
    if result.error_code != 0 {
        return Err(kafka_error(
            &format!("topic {topic}: configs"),
            result.error_code,
            result.error_message.as_ref().map(|m| m.as_str()),
        ));
    }
    let mut configs: Vec<(String, Option<String>, &'static str, bool)> = result
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_ref().map(|v| v.to_string()),
                source_name(c.config_source),
                c.is_sensitive,
            )
        })
        .collect();
    configs.sort();
    let mut partitions: Vec<_> = t.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition_index);
    let offset = |p: i32, end: bool| match offsets.get(&p) {
        Some(Ok((s, e))) => Ok(if end { *e } else { *s }),
        Some(Err(e)) => Err(e.clone()),
        None => Err("not answered".to_string()),
    };
    Ok(match format {
        Format::Json => json(&json!({
            "name": topic,
            "id": t.topic_id.to_string(),
            "internal": t.is_internal,
            "partitions": partitions.iter().map(|p| {
                let n = |r: Result<i64, String>| r.map_or(serde_json::Value::Null, |o| json!(o));
                json!({
                    "partition": p.partition_index,
                    "leader": p.leader_id.0,
                    "leader_epoch": p.leader_epoch,
                    "replicas": p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                    "isr": p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                    "log_start_offset": n(offset(p.partition_index, false)),
                    "log_end_offset": n(offset(p.partition_index, true)),
                    "error": (p.error_code != 0).then(|| crate::error_name(p.error_code)),
                })
            }).collect::<Vec<_>>(),
            "configs": configs.iter().map(|(k, v, _, _)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "config_sources": configs.iter().map(|(k, _, s, _)| (k.clone(), json!(s))).collect::<serde_json::Map<_, _>>(),
        })),
        Format::Text => {
            let mut out = table(
                &["NAME", "ID", "PARTITIONS", "REPLICAS"],
                &[vec![
                    topic.to_string(),
                    t.topic_id.to_string(),
                    partitions.len().to_string(),
                    replication_factor(&t).to_string(),
                ]],
            );
            out.push('\n');
            let text = |r: Result<i64, String>| r.map_or_else(|e| e, |o| o.to_string());
            out.push_str(&table(
                &[
                    "PARTITION",
                    "LEADER",
                    "EPOCH",
                    "REPLICAS",
                    "ISR",
                    "LOG-START-OFFSET",
                    "LOG-END-OFFSET",
                ],
                &partitions
                    .iter()
                    .map(|p| {
                        let ids_of =
                            |v: &[BrokerId]| ids(&v.iter().map(|b| b.0).collect::<Vec<_>>());
                        vec![
                            p.partition_index.to_string(),
                            p.leader_id.0.to_string(),
                            p.leader_epoch.to_string(),
                            ids_of(&p.replica_nodes),
                            ids_of(&p.isr_nodes),
                            text(offset(p.partition_index, false)),
                            text(offset(p.partition_index, true)),
                        ]
                    })
                    .collect::<Vec<_>>(),
            ));
            out.push('\n');
            out.push_str(&table(
                &["KEY", "VALUE", "SOURCE"],
                &configs
                    .iter()
                    .map(|(k, v, s, sensitive)| {
                        let v = match (v, sensitive) {
                            (_, true) => "(sensitive)".to_string(),
                            (Some(v), _) => v.clone(),
                            (None, _) => "(null)".to_string(),
                        };
                        vec![k.clone(), v, s.to_string()]
                    })
                    .collect::<Vec<_>>(),
            ));
            out
        }
    })
}

fn alter_config(
    client: &mut Client,
    format: Format,
    topic: &str,
    set: &[(String, String)],
    delete: &[String],
) -> Result<String, CliError> {
    if set.is_empty() && delete.is_empty() {
        return Err(CliError("alter-config needs --set or --delete".into()));
    }
    // Kafka's IncrementalAlterConfigs operations: 0 SET, 1 DELETE.
    let configs = set
        .iter()
        .map(|(k, v)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_string(v.clone())))
        })
        .chain(delete.iter().map(|k| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(1)
                .with_value(None)
        }))
        .collect();
    let resp = client.call(
        &IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(StrBytes::from_string(topic.to_string()))
                .with_configs(configs),
        ]),
    )?;
    outcome(
        format,
        "TOPIC",
        resp.responses
            .iter()
            .map(|r| {
                (
                    r.resource_name.to_string(),
                    failure(r.error_code, r.error_message.as_ref()),
                )
            })
            .collect(),
    )
}

fn add_partitions(
    client: &mut Client,
    format: Format,
    topic: &str,
    num: i32,
) -> Result<String, CliError> {
    let current = topic_metadata(client, topic)?.partitions.len() as i32;
    let total = current.checked_add(num).ok_or_else(|| {
        CliError(format!(
            "topic {topic}: {current} + {num} partitions overflow"
        ))
    })?;
    let resp = client.call(
        &CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name(topic))
                .with_count(total)
                .with_assignments(None)])
            .with_timeout_ms(ADMIN_TIMEOUT_MS),
    )?;
    outcome(
        format,
        "TOPIC",
        resp.results
            .iter()
            .map(|r| {
                (
                    r.name.0.to_string(),
                    failure(r.error_code, r.error_message.as_ref()),
                )
            })
            .collect(),
    )
}
