//! AlterReplicaLogDirs (v1–2): moves replicas of this node between its log directories
//! (`--data-dir`, JBOD). Answered once each move has begun, as Kafka does; the copy and
//! the switch run in the background on the partition's shard (`crate::log_moves`).

use std::collections::HashMap;
use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use sluice_codec::kafka_protocol::messages::{
    AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse,
};
use sluice_codec::RequestHeaderInfo;

use super::{join_all, topic_name};
use crate::kerr;
use crate::ops::{PartitionOp, PartitionRequest};
use crate::shard::BrokerShard;

/// The partitions a request names, each once in the order first named, with the
/// directory path its last mention asks for (Kafka reads the request into a map).
fn named(r: &AlterReplicaLogDirsRequest) -> Vec<((String, i32), &str)> {
    let mut order: Vec<((String, i32), &str)> = Vec::new();
    let mut at: HashMap<(String, i32), usize> = HashMap::new();
    for d in &r.dirs {
        for t in &d.topics {
            for &p in &t.partitions {
                let key = (t.name.0.to_string(), p);
                match at.get(&key) {
                    Some(&i) => order[i].1 = &d.path,
                    None => {
                        at.insert(key.clone(), order.len());
                        order.push((key, &d.path));
                    }
                }
            }
        }
    }
    order
}

/// The response: each partition's code, grouped by topic.
fn answer(parts: impl Iterator<Item = ((String, i32), i16)>) -> AlterReplicaLogDirsResponse {
    let mut results: Vec<AlterReplicaLogDirTopicResult> = Vec::new();
    let mut topic_index: HashMap<String, usize> = HashMap::new();
    for ((name, p), code) in parts {
        let part = AlterReplicaLogDirPartitionResult::default()
            .with_partition_index(p)
            .with_error_code(code);
        match topic_index.get(&name) {
            Some(&i) => results[i].partitions.push(part),
            None => {
                topic_index.insert(name.clone(), results.len());
                results.push(
                    AlterReplicaLogDirTopicResult::default()
                        .with_topic_name(topic_name(&name))
                        .with_partitions(vec![part]),
                );
            }
        }
    }
    AlterReplicaLogDirsResponse::default().with_results(results)
}

/// Every partition refused with `code` (CLUSTER_AUTHORIZATION_FAILED without ALTER on the
/// cluster).
pub fn refuse_all(r: &AlterReplicaLogDirsRequest, code: i16) -> AlterReplicaLogDirsResponse {
    answer(named(r).into_iter().map(|(key, _)| (key, code)))
}

pub async fn handle(
    shard: &Rc<BrokerShard>,
    _h: &RequestHeaderInfo,
    r: AlterReplicaLogDirsRequest,
) -> AlterReplicaLogDirsResponse {
    let dirs = &shard.shared_handle.log_dirs;
    let order = named(&r);
    let topics = shard.topics();
    let node = shard.config.node_id;
    let calls: Vec<_> = order
        .iter()
        .map(|(key, path)| {
            // Kafka compares the path as given with each configured directory's absolute
            // path; a trailing slash is forgiven here.
            let path = path.trim_end_matches('/');
            let dest = (0..dirs.len()).find(|&i| dirs.dir(i).path.as_os_str() == path);
            let topic = topics.get(&key.0).cloned();
            let shard = shard.clone();
            let partition = key.1;
            async move {
                let Some(dest) = dest else {
                    return kerr::LOG_DIR_NOT_FOUND;
                };
                if shard.shared_handle.log_dirs.dir_offline(dest) {
                    return kerr::KAFKA_STORAGE_ERROR;
                }
                let Some(t) = topic.filter(|t| partition >= 0 && partition < t.partitions) else {
                    return kerr::UNKNOWN_TOPIC_OR_PARTITION;
                };
                if !t.hosted_on(partition, node) {
                    return kerr::REPLICA_NOT_AVAILABLE;
                }
                let req = PartitionRequest {
                    topic_id: t.id,
                    partition,
                    current_leader_epoch: -1,
                    op: PartitionOp::MoveLogDir { dest: dest as u32 },
                };
                match shard.partition_call(req, None).await.0.error_code {
                    // Hosted here but not open (yet): Kafka's answer for a replica it has no
                    // log of.
                    kerr::UNKNOWN_TOPIC_OR_PARTITION | kerr::NOT_LEADER_OR_FOLLOWER => {
                        kerr::REPLICA_NOT_AVAILABLE
                    }
                    code => code,
                }
            }
        })
        .collect();
    let codes = join_all(calls).await;
    answer(order.into_iter().map(|(key, _)| key).zip(codes))
}
