//! DescribeLogDirs: each log directory (`--data-dir`, JBOD) with the size of each partition
//! replica it holds, an offline directory with KAFKA_STORAGE_ERROR and nothing else, as
//! Kafka's `ReplicaManager.describeLogDirs` reports them.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use sluice_codec::kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};
use sluice_codec::RequestHeaderInfo;

use super::{join_all, str_bytes, topic_name};
use crate::ops::{PartitionOp, PartitionRequest};
use crate::partition_dirs;
use crate::shard::BrokerShard;
use std::sync::atomic::Ordering;

pub async fn handle(
    shard: &Rc<BrokerShard>,
    _h: &RequestHeaderInfo,
    r: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let topics = shard.topics();
    let node = shard.config.node_id;
    // (topic name, partition, id) to describe: this node's replicas only.
    let mut wanted: Vec<(String, i32, [u8; 16])> = Vec::new();
    match &r.topics {
        None => {
            for t in topics.topics() {
                wanted.extend(
                    (0..t.partitions)
                        .filter(|&p| t.hosted_on(p, node))
                        .map(|p| (t.name.clone(), p, t.id)),
                );
            }
        }
        Some(list) => {
            // A partition named twice (or a topic listed twice) is described once.
            let mut named = HashSet::new();
            for lt in list {
                if let Some(t) = topics.get(&lt.topic.0) {
                    wanted.extend(
                        lt.partitions
                            .iter()
                            .filter(|&&p| {
                                p >= 0
                                    && p < t.partitions
                                    && t.hosted_on(p, node)
                                    && named.insert((t.id, p))
                            })
                            .map(|&p| (t.name.clone(), p, t.id)),
                    );
                }
            }
        }
    }
    let futs: Vec<_> = wanted
        .iter()
        .map(|(_, p, id)| {
            let shard = shard.clone();
            let req = PartitionRequest {
                topic_id: *id,
                partition: *p,
                current_leader_epoch: -1,
                op: PartitionOp::Describe,
            };
            async move { shard.partition_call(req, None).await.0 }
        })
        .collect();
    let replies = join_all(futs).await;
    let dirs = &shard.shared_handle.log_dirs;
    // Per log directory: its topics (see `add`).
    let mut per_dir: Vec<(Vec<DescribeLogDirsTopic>, HashMap<String, usize>)> =
        (0..dirs.len()).map(|_| Default::default()).collect();
    for ((name, p, _), reply) in wanted.into_iter().zip(replies) {
        let Some(i) = dirs.placed(&name, p) else {
            continue;
        };
        if reply.error_code != 0 || dirs.dir_offline(i) {
            // Not open here (yet), or in an offline directory: not described.
            continue;
        }
        let part = DescribeLogDirsPartition::default()
            .with_partition_index(p)
            .with_partition_size(reply.size)
            // Kafka's lag of a current replica: max(HW - LEO, 0), which is 0.
            .with_offset_lag(0);
        add(&mut per_dir[i], &name, part);
        // A move under way: its copy in the destination, as Kafka's future replica.
        if let Some(m) = dirs.move_of(&partition_dirs::dir_name(&name, p)) {
            if !dirs.dir_offline(m.dest) {
                let future = DescribeLogDirsPartition::default()
                    .with_partition_index(p)
                    .with_partition_size(m.copied_bytes.load(Ordering::Relaxed))
                    .with_offset_lag(m.offset_lag.load(Ordering::Relaxed))
                    .with_is_future_key(true);
                add(&mut per_dir[m.dest], &name, future);
            }
        }
    }
    // statvfs is a blocking system call: off the executor thread.
    let paths: Vec<(std::path::PathBuf, bool)> = dirs
        .iter()
        .map(|d| (d.path.clone(), d.is_offline()))
        .collect();
    let space: Vec<(i64, i64)> = glommio::executor()
        .spawn_blocking(move || {
            paths
                .iter()
                .map(|(p, offline)| if *offline { (-1, -1) } else { disk_space(p) })
                .collect()
        })
        .await;
    let results = per_dir
        .into_iter()
        .zip(space)
        .enumerate()
        .map(|(i, ((by_topic, _), (total, usable)))| {
            let d = dirs.dir(i);
            let result = DescribeLogDirsResult::default()
                .with_log_dir(str_bytes(&d.path.to_string_lossy()))
                .with_total_bytes(total)
                .with_usable_bytes(usable);
            if d.is_offline() {
                result.with_error_code(crate::kerr::KAFKA_STORAGE_ERROR)
            } else {
                result.with_topics(by_topic)
            }
        })
        .collect();
    DescribeLogDirsResponse::default().with_results(results)
}

/// Adds a partition to a directory's topics (topic name -> index among them: one lookup per
/// partition, not a scan of the topics).
fn add(
    (by_topic, topic_index): &mut (Vec<DescribeLogDirsTopic>, HashMap<String, usize>),
    name: &str,
    part: DescribeLogDirsPartition,
) {
    match topic_index.get(name) {
        Some(&t) => by_topic[t].partitions.push(part),
        None => {
            topic_index.insert(name.to_string(), by_topic.len());
            by_topic.push(
                DescribeLogDirsTopic::default()
                    .with_name(topic_name(name))
                    .with_partitions(vec![part]),
            );
        }
    }
}

fn disk_space(dir: &std::path::Path) -> (i64, i64) {
    match rustix::fs::statvfs(dir) {
        Ok(st) => {
            let frsize = st.f_frsize as i64;
            (st.f_blocks as i64 * frsize, st.f_bavail as i64 * frsize)
        }
        Err(_) => (-1, -1),
    }
}
