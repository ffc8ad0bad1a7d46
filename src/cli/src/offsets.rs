//! Offsets through the Kafka API: a partition's offsets by time (ListOffsets, asked of its
//! leader), a group's coordinator (FindCoordinator), and its committed offsets (OffsetFetch,
//! OffsetCommit), shared by `topic consume` and the `group` commands.

use std::collections::{BTreeMap, HashMap};

use sluice_codec::kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsTopic,
};
use sluice_codec::kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use sluice_codec::kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, GroupId, ListOffsetsRequest, OffsetCommitRequest,
    OffsetFetchRequest,
};
use sluice_codec::kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::client::Client;
use crate::topic::name;
use crate::{error_name, error_text, CliError};

/// A topic and partition.
pub type Tp = (String, i32);

/// Offsets of `timestamp` (-2 earliest, -1 latest, else the first at or after it) for
/// `parts`, asked of their leader: each partition's offset or its error's name.
pub fn ask_leader(
    client: &mut Client,
    leader: i32,
    topic: &str,
    parts: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, Result<i64, String>>, CliError> {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(
                parts
                    .iter()
                    .map(|&p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )]);
    let resp = client.call_node(leader, &req)?;
    Ok(resp
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| {
            let r = if p.error_code == 0 {
                Ok(p.offset)
            } else {
                Err(error_name(p.error_code))
            };
            (p.partition_index, r)
        })
        .collect())
}

/// As [`ask_leader`], for `parts` of `topic` over their leaders; any partition's error is
/// the call's.
pub fn list_offsets(
    client: &mut Client,
    topic: &str,
    meta: &MetadataResponseTopic,
    parts: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>, CliError> {
    let mut out = BTreeMap::new();
    for (leader, parts) in by_leader(meta, parts)? {
        for (p, r) in ask_leader(client, leader, topic, &parts, timestamp)? {
            let offset =
                r.map_err(|e| CliError(format!("offsets of {topic} partition {p}: {e}")))?;
            out.insert(p, offset);
        }
    }
    Ok(out)
}

/// `parts` by their leader's id; an error if one has none.
pub fn by_leader(
    meta: &MetadataResponseTopic,
    parts: &[i32],
) -> Result<BTreeMap<i32, Vec<i32>>, CliError> {
    match leaders(meta, parts) {
        (out, leaderless) if leaderless.is_empty() => Ok(out),
        (_, leaderless) => Err(CliError(format!(
            "partition {} has no leader",
            leaderless[0]
        ))),
    }
}

/// `parts` by their leader's id, and those without a leader (an election under way).
pub fn leaders(meta: &MetadataResponseTopic, parts: &[i32]) -> (BTreeMap<i32, Vec<i32>>, Vec<i32>) {
    let mut out: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    let mut leaderless = Vec::new();
    for &p in parts {
        let leader = meta
            .partitions
            .iter()
            .find(|m| m.partition_index == p)
            .map_or(-1, |m| m.leader_id.0);
        if leader < 0 {
            leaderless.push(p);
        } else {
            out.entry(leader).or_default().push(p);
        }
    }
    (out, leaderless)
}

/// The group coordinator's node id.
pub fn coordinator(client: &mut Client, group: &str) -> Result<i32, CliError> {
    let key = StrBytes::from_string(group.to_string());
    let resp = client.call_with(|version| {
        // v4+ asks for a batch of keys, earlier versions for one.
        let req = FindCoordinatorRequest::default().with_key_type(0);
        if version >= 4 {
            req.with_coordinator_keys(vec![key])
        } else {
            req.with_key(key)
        }
    })?;
    let (code, node, message) = match resp.coordinators.first() {
        Some(c) => (c.error_code, c.node_id.0, c.error_message.clone()),
        None => (resp.error_code, resp.node_id.0, resp.error_message.clone()),
    };
    if code != 0 {
        return Err(CliError(format!(
            "the coordinator of group {group}: {}",
            error_text(code, message.as_ref().map(|m| m.as_str()))
        )));
    }
    // The coordinator's address comes with the metadata the client already holds.
    client.metadata(Some(&[]))?;
    Ok(node)
}

/// The group's committed offsets: of `topics` (and every partition of them), or of every
/// topic it has offsets for when `None`. Partitions without a commit are left out.
pub fn committed(
    client: &mut Client,
    coordinator: i32,
    group: &str,
    topics: Option<&[&MetadataResponseTopic]>,
) -> Result<BTreeMap<Tp, i64>, CliError> {
    use sluice_codec::kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    let gid = GroupId(StrBytes::from_string(group.to_string()));
    let parts = |t: &MetadataResponseTopic| -> Vec<i32> {
        t.partitions.iter().map(|p| p.partition_index).collect()
    };
    let topic_name = |t: &MetadataResponseTopic| t.name.clone().unwrap_or_default();
    // v10 names topics by id only: the request carries both, and the answer's ids are
    // named from `topics` or, for every topic of the group, from the cluster's metadata.
    let mut names: HashMap<Uuid, String> = topics
        .unwrap_or_default()
        .iter()
        .map(|t| (t.topic_id, topic_name(t).0.to_string()))
        .collect();
    let resp = client.call_node_with(coordinator, |version| {
        // Versions 0-7 name one group at the top, 8+ a list of groups.
        if version < 8 {
            return OffsetFetchRequest::default()
                .with_group_id(gid)
                .with_topics(topics.map(|ts| {
                    ts.iter()
                        .map(|t| {
                            OffsetFetchRequestTopic::default()
                                .with_name(topic_name(t))
                                .with_partition_indexes(parts(t))
                        })
                        .collect()
                }));
        }
        OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(gid)
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        OffsetFetchRequestTopics::default()
                            .with_name(topic_name(t))
                            .with_topic_id(t.topic_id)
                            .with_partition_indexes(parts(t))
                    })
                    .collect()
            }))])
    })?;
    let mut out = BTreeMap::new();
    let fail = |code: i16, what: &str| -> Result<(), CliError> {
        if code != 0 {
            return Err(CliError(format!(
                "committed offsets of group {group}{what}: {}",
                error_name(code)
            )));
        }
        Ok(())
    };
    let mut add = |topic: &str, p: i32, code: i16, offset: i64| -> Result<(), CliError> {
        fail(code, &format!(" {topic} partition {p}"))?;
        if offset >= 0 {
            out.insert((topic.to_string(), p), offset);
        }
        Ok(())
    };
    if let Some(g) = resp.groups.first() {
        fail(g.error_code, "")?;
        if g.topics
            .iter()
            .any(|t| t.name.0.is_empty() && !names.contains_key(&t.topic_id))
        {
            names.extend(topic_ids(client, None)?.into_iter().map(|(n, id)| (id, n)));
        }
        for t in &g.topics {
            let topic = match t.name.0.as_str() {
                "" => names.get(&t.topic_id).map_or("", String::as_str),
                named => named,
            };
            for p in &t.partitions {
                add(topic, p.partition_index, p.error_code, p.committed_offset)?;
            }
        }
    } else {
        fail(resp.error_code, "")?;
        for t in &resp.topics {
            for p in &t.partitions {
                add(
                    t.name.0.as_str(),
                    p.partition_index,
                    p.error_code,
                    p.committed_offset,
                )?;
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` for the group as a client outside its membership (generation -1), as
/// Kafka's tools reset a group's offsets: the coordinator refuses it while the group has
/// members.
pub fn commit(
    client: &mut Client,
    coordinator: i32,
    group: &str,
    offsets: &BTreeMap<Tp, i64>,
) -> Result<(), CliError> {
    if offsets.is_empty() {
        return Ok(());
    }
    // v10 names topics by id: the request carries both names and ids.
    let mut wanted: Vec<String> = offsets.keys().map(|(t, _)| t.clone()).collect();
    wanted.dedup(); // sorted by topic, then partition
    let ids = topic_ids(client, Some(&wanted))?;
    commit_with_ids(client, coordinator, group, offsets, &ids)
}

/// [`commit`] with the topics' ids already known (a consumer committing after every fetch
/// round looks them up once, not with a Metadata request per commit).
pub fn commit_with_ids(
    client: &mut Client,
    coordinator: i32,
    group: &str,
    offsets: &BTreeMap<Tp, i64>,
    ids: &HashMap<String, Uuid>,
) -> Result<(), CliError> {
    use sluice_codec::kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    if offsets.is_empty() {
        return Ok(());
    }
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((t, p), &o) in offsets {
        topics.entry(t.as_str()).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(o)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(StrBytes::from_static_str(""))),
        );
    }
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::from_static_str(""))
        .with_retention_time_ms(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, partitions)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(name(t))
                        .with_topic_id(ids.get(t).copied().unwrap_or_default())
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let resp = client.call_node(coordinator, &req)?;
    for t in &resp.topics {
        let topic = match t.name.0.as_str() {
            "" => ids
                .iter()
                .find(|(_, &id)| id == t.topic_id)
                .map_or("", |(n, _)| n.as_str()),
            named => named,
        };
        for p in &t.partitions {
            if p.error_code != 0 {
                return Err(CliError(format!(
                    "committing group {group}'s offset of {topic} partition {}: {}",
                    p.partition_index,
                    error_name(p.error_code)
                )));
            }
        }
    }
    Ok(())
}

/// Topic ids by name, of `topics` (`None`: every topic), from the cluster's metadata.
pub fn topic_ids(
    client: &mut Client,
    topics: Option<&[String]>,
) -> Result<HashMap<String, Uuid>, CliError> {
    Ok(client
        .metadata(topics)?
        .topics
        .into_iter()
        .filter_map(|t| Some((t.name?.0.to_string(), t.topic_id)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_codec::kafka_protocol::messages::metadata_response::MetadataResponsePartition;

    #[test]
    fn partitions_are_grouped_by_leader_and_leaderless_ones_named() {
        let part = |p: i32, leader: i32| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(BrokerId(leader))
        };
        let meta = MetadataResponseTopic::default().with_partitions(vec![
            part(0, 2),
            part(1, -1),
            part(2, 2),
            part(3, 1),
        ]);
        let (by, leaderless) = leaders(&meta, &[0, 1, 2, 3, 9]);
        assert_eq!(by, BTreeMap::from([(1, vec![3]), (2, vec![0, 2])]));
        assert_eq!(
            leaderless,
            [1, 9],
            "an election under way, or unknown to metadata"
        );
        let e = by_leader(&meta, &[0, 1]).unwrap_err();
        assert!(e.0.contains("partition 1 has no leader"), "{}", e.0);
    }
}
