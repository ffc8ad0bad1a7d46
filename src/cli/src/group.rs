//! `sluice group …`: list (ListGroups of every broker), describe (DescribeGroups, or
//! ConsumerGroupDescribe for KIP-848 groups, with committed offsets, log end offsets and
//! lag), seek (committing new offsets while the group is empty, as
//! `kafka-consumer-groups.sh --reset-offsets` does) and delete (DeleteGroups).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Buf;
use serde_json::json;
use sluice_codec::kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use sluice_codec::kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerProtocolAssignment, DeleteGroupsRequest,
    DescribeGroupsRequest, GroupId, ListGroupsRequest,
};
use sluice_codec::kafka_protocol::protocol::{Decodable, StrBytes};

use crate::client::Client;
use crate::consume::Start;
use crate::offsets::{commit, committed, coordinator, list_offsets, Tp};
use crate::output::{json, table};
use crate::topic::topic_metadata;
use crate::{error_name, error_text, CliError, Format, Global};

#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// List the groups of every broker: name, state, type, protocol type.
    #[command(alias = "ls")]
    List,
    /// A group's state and members, and per partition its committed offset, the log end
    /// offset and the lag.
    Describe {
        #[arg(value_name = "GROUP")]
        group: String,
    },
    /// Move a group's committed offsets (the group must have no members).
    Seek {
        #[arg(value_name = "GROUP")]
        group: String,
        /// start, end, an OFFSET, or @TIMESTAMP (ms).
        #[arg(long = "to", value_name = "WHERE", value_parser = parse_to)]
        to: Start,
        /// Only these topics (default: every topic the group has offsets for).
        #[arg(long, value_name = "TOPIC", num_args = 1.., value_delimiter = ',')]
        topics: Vec<String>,
    },
    /// Delete groups (they must have no members).
    Delete {
        #[arg(required = true, value_name = "GROUP")]
        groups: Vec<String>,
    },
}

fn parse_to(s: &str) -> Result<Start, String> {
    match s {
        "start" => Ok(Start::Beginning),
        s if s.starts_with('-') => Err(format!("{s}: start, end, an offset or @TIMESTAMP")),
        s => crate::consume::parse_start(s),
    }
}

pub fn run(global: &Global, command: GroupCommand) -> Result<String, CliError> {
    let format = global.output()?;
    let mut client = global.connect()?;
    match command {
        GroupCommand::List => list(&mut client, format),
        GroupCommand::Describe { group } => describe(&mut client, format, &group),
        GroupCommand::Seek { group, to, topics } => seek(&mut client, format, &group, &to, &topics),
        GroupCommand::Delete { groups } => delete(&mut client, format, &groups),
    }
}

fn list(client: &mut Client, format: Format) -> Result<String, CliError> {
    let meta = client.metadata(Some(&[]))?;
    // Each broker lists the groups it coordinates (Kafka's tools ask every broker too).
    let mut groups: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for b in &meta.brokers {
        let resp = client.call_node(b.node_id.0, &ListGroupsRequest::default())?;
        if resp.error_code != 0 {
            return Err(CliError(format!(
                "listing the groups of broker {}: {}",
                b.node_id.0,
                error_name(resp.error_code)
            )));
        }
        for g in resp.groups {
            groups.insert(
                g.group_id.0.to_string(),
                (
                    g.group_state.to_string(),
                    g.group_type.to_string(),
                    g.protocol_type.to_string(),
                ),
            );
        }
    }
    Ok(match format {
        Format::Json => json(&serde_json::Value::Array(
            groups
                .iter()
                .map(|(g, (state, kind, protocol))| {
                    json!({"group": g, "state": state, "type": kind, "protocol_type": protocol})
                })
                .collect(),
        )),
        Format::Text => table(
            &["GROUP", "STATE", "TYPE", "PROTOCOL-TYPE"],
            &groups
                .iter()
                .map(|(g, (s, k, p))| vec![g.clone(), s.clone(), k.clone(), p.clone()])
                .collect::<Vec<_>>(),
        ),
    })
}

/// A member as both describe APIs report it.
struct Member {
    id: String,
    client_id: String,
    host: String,
    assigned: Vec<Tp>,
}

/// What a group's description holds besides its offsets.
struct Described {
    state: String,
    kind: &'static str,
    protocol: String,
    members: Vec<Member>,
}

/// The partitions a classic consumer member was given (`ConsumerProtocolAssignment`; a
/// member of another protocol type, or before the group is stable, has none to show).
fn classic_assignment(bytes: &[u8]) -> Vec<Tp> {
    let mut buf = bytes::Bytes::copy_from_slice(bytes);
    if buf.remaining() < 2 {
        return Vec::new();
    }
    let version = buf.get_i16();
    match ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3)) {
        Ok(a) => a
            .assigned_partitions
            .iter()
            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.0.to_string(), p)))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn describe_group(client: &mut Client, coord: i32, group: &str) -> Result<Described, CliError> {
    let gid = GroupId(StrBytes::from_string(group.to_string()));
    let resp = client.call_node(
        coord,
        &DescribeGroupsRequest::default().with_groups(vec![gid.clone()]),
    )?;
    let d = resp
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| CliError(format!("group {group}: DescribeGroups answered nothing")))?;
    // GROUP_ID_NOT_FOUND for a group of KIP-848's consumer protocol: Kafka describes those
    // through ConsumerGroupDescribe only.
    let kip848 = d.error_code == 69 && d.protocol_type.as_str() == "consumer";
    if d.error_code != 0 && !kip848 {
        return Err(CliError(format!(
            "group {group}: {}",
            error_text(d.error_code, d.error_message.as_ref().map(|m| m.as_str()))
        )));
    }
    if !kip848 {
        let consumer = d.protocol_type.as_str() == "consumer";
        return Ok(Described {
            state: d.group_state.to_string(),
            kind: "classic",
            protocol: d.protocol_data.to_string(),
            members: d
                .members
                .iter()
                .map(|m| Member {
                    id: m.member_id.to_string(),
                    client_id: m.client_id.to_string(),
                    host: m.client_host.to_string(),
                    assigned: if consumer {
                        classic_assignment(&m.member_assignment)
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
        });
    }
    let resp = client.call_node(
        coord,
        &ConsumerGroupDescribeRequest::default().with_group_ids(vec![gid]),
    )?;
    let g = resp.groups.into_iter().next().ok_or_else(|| {
        CliError(format!(
            "group {group}: ConsumerGroupDescribe answered nothing"
        ))
    })?;
    if g.error_code != 0 {
        return Err(CliError(format!(
            "group {group}: {}",
            error_text(g.error_code, g.error_message.as_ref().map(|m| m.as_str()))
        )));
    }
    Ok(Described {
        state: g.group_state.to_string(),
        kind: "consumer",
        protocol: g.assignor_name.to_string(),
        members: g
            .members
            .iter()
            .map(|m| Member {
                id: m.member_id.to_string(),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assigned: m
                    .assignment
                    .topic_partitions
                    .iter()
                    .flat_map(|t| {
                        t.partitions
                            .iter()
                            .map(|&p| (t.topic_name.0.to_string(), p))
                    })
                    .collect(),
            })
            .collect(),
    })
}

/// Log end offsets of the partitions in `tps`, by topic.
fn log_ends(
    client: &mut Client,
    tps: &BTreeSet<Tp>,
) -> Result<BTreeMap<Tp, Result<i64, String>>, CliError> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in tps {
        topics.entry(t.as_str()).or_default().push(*p);
    }
    let mut out = BTreeMap::new();
    for (topic, parts) in topics {
        let ends = topic_metadata(client, topic)
            .and_then(|meta| list_offsets(client, topic, &meta, &parts, -1));
        for p in parts {
            let end = match &ends {
                Ok(ends) => ends
                    .get(&p)
                    .copied()
                    .ok_or_else(|| "not answered".to_string()),
                Err(e) => Err(e.0.clone()),
            };
            out.insert((topic.to_string(), p), end);
        }
    }
    Ok(out)
}

fn describe(client: &mut Client, format: Format, group: &str) -> Result<String, CliError> {
    let coord = coordinator(client, group)?;
    let d = describe_group(client, coord, group)?;
    let offsets = committed(client, coord, group, None)?;
    let owner: BTreeMap<&Tp, &Member> = d
        .members
        .iter()
        .flat_map(|m| m.assigned.iter().map(move |tp| (tp, m)))
        .collect();
    let tps: BTreeSet<Tp> = offsets
        .keys()
        .cloned()
        .chain(owner.keys().map(|tp| (*tp).clone()))
        .collect();
    let ends = log_ends(client, &tps)?;
    // Per partition: committed offset, log end offset, the member it is assigned to.
    type Row<'a> = (Tp, Option<i64>, Result<i64, String>, Option<&'a Member>);
    let rows: Vec<Row> = tps
        .iter()
        .map(|tp| {
            (
                tp.clone(),
                offsets.get(tp).copied(),
                ends[tp].clone(),
                owner.get(tp).copied(),
            )
        })
        .collect();
    let lag = |c: Option<i64>, e: &Result<i64, String>| match (c, e) {
        (Some(c), Ok(e)) => Some((e - c).max(0)),
        _ => None,
    };
    Ok(match format {
        Format::Json => json(&json!({
            "group": group,
            "coordinator": coord,
            "state": d.state,
            "type": d.kind,
            "protocol": d.protocol,
            "members": d.members.iter().map(|m| json!({
                "member_id": m.id,
                "client_id": m.client_id,
                "host": m.host,
                "assignments": m.assigned.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "offsets": rows.iter().map(|((t, p), c, e, m)| json!({
                "topic": t,
                "partition": p,
                "committed_offset": c,
                "log_end_offset": e.as_ref().ok(),
                "lag": lag(*c, e),
                "member_id": m.map(|m| m.id.clone()),
            })).collect::<Vec<_>>(),
        })),
        Format::Text => {
            let mut out = table(
                &[
                    "GROUP",
                    "COORDINATOR",
                    "STATE",
                    "TYPE",
                    "PROTOCOL",
                    "MEMBERS",
                ],
                &[vec![
                    group.to_string(),
                    coord.to_string(),
                    d.state.clone(),
                    d.kind.to_string(),
                    d.protocol.clone(),
                    d.members.len().to_string(),
                ]],
            );
            out.push('\n');
            let dash = || "-".to_string();
            out.push_str(&table(
                &[
                    "TOPIC",
                    "PARTITION",
                    "CURRENT-OFFSET",
                    "LOG-END-OFFSET",
                    "LAG",
                    "MEMBER-ID",
                    "CLIENT-ID",
                    "HOST",
                ],
                &rows
                    .iter()
                    .map(|((t, p), c, e, m)| {
                        vec![
                            t.clone(),
                            p.to_string(),
                            c.map_or_else(dash, |c| c.to_string()),
                            e.as_ref().map_or_else(|e| e.clone(), |e| e.to_string()),
                            lag(*c, e).map_or_else(dash, |l| l.to_string()),
                            m.map_or_else(dash, |m| m.id.clone()),
                            m.map_or_else(dash, |m| m.client_id.clone()),
                            m.map_or_else(dash, |m| m.host.clone()),
                        ]
                    })
                    .collect::<Vec<_>>(),
            ));
            out
        }
    })
}

fn seek(
    client: &mut Client,
    format: Format,
    group: &str,
    to: &Start,
    topics: &[String],
) -> Result<String, CliError> {
    let coord = coordinator(client, group)?;
    let before = committed(client, coord, group, None)?;
    let names: BTreeSet<String> = if topics.is_empty() {
        before.keys().map(|(t, _)| t.clone()).collect()
    } else {
        topics.iter().cloned().collect()
    };
    if names.is_empty() {
        return Err(CliError(format!(
            "group {group} has no committed offsets; name the topics to seek with --topics"
        )));
    }
    let mut target: BTreeMap<Tp, i64> = BTreeMap::new();
    for topic in &names {
        let meta: MetadataResponseTopic = topic_metadata(client, topic)?;
        let parts: Vec<i32> = meta.partitions.iter().map(|p| p.partition_index).collect();
        let found = match to {
            Start::Beginning => list_offsets(client, topic, &meta, &parts, -2)?,
            Start::End => list_offsets(client, topic, &meta, &parts, -1)?,
            Start::At(o) => {
                // Kept within each partition's log, as Kafka's reset tool does.
                let begin = list_offsets(client, topic, &meta, &parts, -2)?;
                let end = list_offsets(client, topic, &meta, &parts, -1)?;
                parts
                    .iter()
                    .map(|p| (*p, (*o).clamp(begin[p], end[p].max(begin[p]))))
                    .collect()
            }
            Start::Time(ts) => {
                let end = list_offsets(client, topic, &meta, &parts, -1)?;
                list_offsets(client, topic, &meta, &parts, *ts)?
                    .into_iter()
                    .map(|(p, o)| (p, if o < 0 { end[&p] } else { o }))
                    .collect()
            }
            Start::FromEnd(_) => unreachable!("parse_to refuses -N"),
        };
        target.extend(found.into_iter().map(|(p, o)| ((topic.clone(), p), o)));
    }
    commit(client, coord, group, &target)?;
    Ok(match format {
        Format::Json => json(&serde_json::Value::Array(
            target
                .iter()
                .map(|((t, p), o)| {
                    json!({"topic": t, "partition": p, "prior_offset": before.get(&(t.clone(), *p)), "new_offset": o})
                })
                .collect(),
        )),
        Format::Text => table(
            &["TOPIC", "PARTITION", "PRIOR-OFFSET", "NEW-OFFSET"],
            &target
                .iter()
                .map(|(tp, o)| {
                    vec![
                        tp.0.clone(),
                        tp.1.to_string(),
                        before.get(tp).map_or("-".to_string(), |b| b.to_string()),
                        o.to_string(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    })
}

fn delete(client: &mut Client, format: Format, groups: &[String]) -> Result<String, CliError> {
    let mut results = Vec::new();
    for group in groups {
        let outcome = coordinator(client, group).and_then(|coord| {
            let resp = client.call_node(
                coord,
                &DeleteGroupsRequest::default()
                    .with_groups_names(vec![GroupId(StrBytes::from_string(group.clone()))]),
            )?;
            Ok(resp
                .results
                .first()
                .map_or(Some("not answered".to_string()), |r| {
                    (r.error_code != 0).then(|| error_name(r.error_code))
                }))
        });
        results.push((
            group.clone(),
            match outcome {
                Ok(e) => e,
                Err(e) => Some(e.0),
            },
        ));
    }
    crate::topic::outcome(format, "GROUP", results)
}
