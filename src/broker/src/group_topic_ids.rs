//! OffsetCommit and OffsetFetch v10 name topics by id (KIP-848's clients): ids are turned
//! into names on the way in and names into ids on the way out, so the group coordinator,
//! its records in `__consumer_offsets` and the ACL checks keep working on names.
//!
//! It runs where a group request is served (`group_host::run_local`), after any hop
//! between shards or nodes: a forwarded v10 request carries only ids, and every node
//! resolves them against its own topic view. A topic id this node does not know is
//! answered UNKNOWN_TOPIC_ID for each of its partitions, as Kafka does, and never reaches
//! the coordinator. Below v10 nothing changes.

use sluice_codec::kafka_protocol::messages::{
    offset_commit_response, offset_fetch_response, OffsetCommitResponse, OffsetFetchResponse,
    RequestKind, TopicName,
};
use sluice_codec::kafka_protocol::protocol::StrBytes;
use sluice_group::Response;

use crate::kerr;
use crate::topics::TopicTable;

/// First version of OffsetCommit and OffsetFetch that names topics by id.
pub const TOPIC_IDS_VERSION: i16 = 10;

/// The answers for topic ids [`resolve`] did not know, added to the response by [`finish`].
#[derive(Debug, Default)]
pub struct Unresolved {
    commit: Vec<offset_commit_response::OffsetCommitResponseTopic>,
    /// Per group id (OffsetFetch v8+ is multi-group).
    fetch: Vec<(String, offset_fetch_response::OffsetFetchResponseTopics)>,
}

/// Fills in the names of the topics a v10 OffsetCommit or OffsetFetch names by id, and
/// takes out those whose id is unknown here (their answers come back in [`finish`]).
pub fn resolve(topics: &TopicTable, req: &mut RequestKind, version: i16) -> Unresolved {
    let mut out = Unresolved::default();
    if version < TOPIC_IDS_VERSION {
        return out;
    }
    let name_of = |id: &uuid::Uuid| topics.get_by_id(id.as_bytes()).map(|t| t.name.clone());
    match req {
        RequestKind::OffsetCommit(r) => {
            r.topics.retain_mut(|t| match name_of(&t.topic_id) {
                Some(name) => {
                    t.name = TopicName(StrBytes::from_string(name));
                    true
                }
                None => {
                    out.commit.push(
                        offset_commit_response::OffsetCommitResponseTopic::default()
                            .with_topic_id(t.topic_id)
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        offset_commit_response::OffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(kerr::UNKNOWN_TOPIC_ID)
                                    })
                                    .collect(),
                            ),
                    );
                    false
                }
            });
        }
        RequestKind::OffsetFetch(r) => {
            for g in r.groups.iter_mut() {
                let Some(ts) = g.topics.as_mut() else {
                    continue; // every topic: names come back from the coordinator
                };
                ts.retain_mut(|t| match name_of(&t.topic_id) {
                    Some(name) => {
                        t.name = TopicName(StrBytes::from_string(name));
                        true
                    }
                    None => {
                        out.fetch.push((
                            g.group_id.0.to_string(),
                            offset_fetch_response::OffsetFetchResponseTopics::default()
                                .with_topic_id(t.topic_id)
                                .with_partitions(
                                    t.partition_indexes
                                        .iter()
                                        .map(|&p| {
                                            offset_fetch_response::OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(-1)
                                                .with_committed_leader_epoch(-1)
                                                .with_error_code(kerr::UNKNOWN_TOPIC_ID)
                                        })
                                        .collect(),
                                ),
                        ));
                        false
                    }
                });
            }
        }
        _ => {}
    }
    out
}

/// Gives every topic of a v10 OffsetCommit or OffsetFetch answer its id, and adds the
/// answers for the ids [`resolve`] did not know. An OffsetFetch of all of a group's
/// topics may name a topic deleted since its offsets were committed: it has no id to be
/// named by, and is left out.
pub fn finish(topics: &TopicTable, resp: &mut Response, version: i16, unresolved: Unresolved) {
    if version < TOPIC_IDS_VERSION {
        return;
    }
    let id_of = |name: &TopicName| {
        topics
            .get(name.0.as_str())
            .map(|t| uuid::Uuid::from_bytes(t.id))
    };
    match resp {
        Response::OffsetCommit(r) => fill_commit(r, &id_of, unresolved.commit),
        Response::OffsetFetch(r) => fill_fetch(r, &id_of, unresolved.fetch),
        _ => {}
    }
}

fn fill_commit(
    r: &mut OffsetCommitResponse,
    id_of: &dyn Fn(&TopicName) -> Option<uuid::Uuid>,
    unknown: Vec<offset_commit_response::OffsetCommitResponseTopic>,
) {
    for t in r.topics.iter_mut() {
        if t.topic_id.is_nil() {
            t.topic_id = id_of(&t.name).unwrap_or_default();
        }
    }
    r.topics.extend(unknown);
}

fn fill_fetch(
    r: &mut OffsetFetchResponse,
    id_of: &dyn Fn(&TopicName) -> Option<uuid::Uuid>,
    unknown: Vec<(String, offset_fetch_response::OffsetFetchResponseTopics)>,
) {
    for g in r.groups.iter_mut() {
        g.topics.retain_mut(|t| {
            if t.topic_id.is_nil() {
                match id_of(&t.name) {
                    Some(id) => t.topic_id = id,
                    None => return false,
                }
            }
            true
        });
    }
    for (group, topic) in unknown {
        if let Some(g) = r.groups.iter_mut().find(|g| g.group_id.0.as_str() == group) {
            g.topics.push(topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_codec::kafka_protocol::messages::{
        offset_commit_request, offset_fetch_request, GroupId, OffsetCommitRequest,
        OffsetFetchRequest,
    };

    fn topics() -> TopicTable {
        let mut t = TopicTable::default();
        t.insert(crate::topics::TopicRecord {
            name: "orders".into(),
            id: [7; 16],
            partitions: 3,
            configs: Default::default(),
            internal: false,
            replicas: Vec::new(),
            moves: Vec::new(),
        })
        .unwrap();
        t
    }

    #[test]
    fn commit_ids_become_names_and_unknown_ids_are_answered() {
        let known = uuid::Uuid::from_bytes([7; 16]);
        let unknown = uuid::Uuid::from_bytes([9; 16]);
        let topic = |id| {
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_topic_id(id)
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(1),
                ])
        };
        let mut req = RequestKind::OffsetCommit(
            OffsetCommitRequest::default().with_topics(vec![topic(known), topic(unknown)]),
        );
        let left = resolve(&topics(), &mut req, 10);
        let RequestKind::OffsetCommit(r) = &req else {
            unreachable!()
        };
        assert_eq!(r.topics.len(), 1);
        assert_eq!(r.topics[0].name.0.as_str(), "orders");
        // The coordinator answers by name; the answer goes out by id.
        let mut resp = Response::OffsetCommit(OffsetCommitResponse::default().with_topics(vec![
            offset_commit_response::OffsetCommitResponseTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("orders"))),
        ]));
        finish(&topics(), &mut resp, 10, left);
        let Response::OffsetCommit(r) = resp else {
            unreachable!()
        };
        assert_eq!(r.topics[0].topic_id, known);
        assert_eq!(r.topics[1].topic_id, unknown);
        assert_eq!(r.topics[1].partitions[0].error_code, kerr::UNKNOWN_TOPIC_ID);
    }

    #[test]
    fn fetch_ids_resolve_per_group_and_below_v10_nothing_changes() {
        let known = uuid::Uuid::from_bytes([7; 16]);
        let unknown = uuid::Uuid::from_bytes([9; 16]);
        let group = |name: &'static str| {
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_static_str(name)))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopics::default()
                        .with_topic_id(known)
                        .with_partition_indexes(vec![0]),
                    offset_fetch_request::OffsetFetchRequestTopics::default()
                        .with_topic_id(unknown)
                        .with_partition_indexes(vec![0, 1]),
                ]))
        };
        let req = OffsetFetchRequest::default().with_groups(vec![group("a"), group("b")]);
        let mut v9 = RequestKind::OffsetFetch(req.clone());
        let left = resolve(&topics(), &mut v9, 9);
        assert!(left.commit.is_empty() && left.fetch.is_empty());
        let mut v10 = RequestKind::OffsetFetch(req);
        let left = resolve(&topics(), &mut v10, 10);
        let RequestKind::OffsetFetch(r) = &v10 else {
            unreachable!()
        };
        for g in &r.groups {
            let ts = g.topics.as_ref().unwrap();
            assert_eq!(ts.len(), 1);
            assert_eq!(ts[0].name.0.as_str(), "orders");
        }
        let answer = |name: &'static str| {
            offset_fetch_response::OffsetFetchResponseGroup::default()
                .with_group_id(GroupId(StrBytes::from_static_str(name)))
                .with_topics(vec![
                    offset_fetch_response::OffsetFetchResponseTopics::default()
                        .with_name(TopicName(StrBytes::from_static_str("orders"))),
                    // Committed before its topic was deleted: no id to name it by.
                    offset_fetch_response::OffsetFetchResponseTopics::default()
                        .with_name(TopicName(StrBytes::from_static_str("gone"))),
                ])
        };
        let mut resp = Response::OffsetFetch(
            OffsetFetchResponse::default().with_groups(vec![answer("a"), answer("b")]),
        );
        finish(&topics(), &mut resp, 10, left);
        let Response::OffsetFetch(r) = resp else {
            unreachable!()
        };
        for g in &r.groups {
            let ids: Vec<_> = g.topics.iter().map(|t| t.topic_id).collect();
            assert_eq!(ids, vec![known, unknown], "group {:?}", g.group_id);
            let codes: Vec<_> = g.topics[1]
                .partitions
                .iter()
                .map(|p| p.error_code)
                .collect();
            assert_eq!(codes, vec![kerr::UNKNOWN_TOPIC_ID; 2]);
        }
    }
}
