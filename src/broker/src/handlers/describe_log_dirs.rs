//! DescribeLogDirs: the data directory with each partition's size.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use sluice_codec::kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};
use sluice_codec::RequestHeaderInfo;

use super::{join_all, str_bytes, topic_name};
use crate::ops::{PartitionOp, PartitionRequest};
use crate::shard::BrokerShard;

pub async fn handle(
    shard: &Rc<BrokerShard>,
    _h: &RequestHeaderInfo,
    r: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let topics = shard.topics();
    // (topic name, partition, id) to describe.
    let mut wanted: Vec<(String, i32, [u8; 16])> = Vec::new();
    match &r.topics {
        None => {
            for t in topics.topics() {
                wanted.extend((0..t.partitions).map(|p| (t.name.clone(), p, t.id)));
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
                            .filter(|&&p| p >= 0 && p < t.partitions && named.insert((t.id, p)))
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
    let mut by_topic: Vec<DescribeLogDirsTopic> = Vec::new();
    // Topic name -> index in `by_topic`: one lookup per partition, not a scan of the topics.
    let mut topic_index: HashMap<String, usize> = HashMap::new();
    for ((name, p, _), reply) in wanted.into_iter().zip(replies) {
        let part = DescribeLogDirsPartition::default()
            .with_partition_index(p)
            .with_partition_size(reply.size)
            .with_offset_lag(0);
        match topic_index.get(&name) {
            Some(&i) => by_topic[i].partitions.push(part),
            None => {
                topic_index.insert(name.clone(), by_topic.len());
                by_topic.push(
                    DescribeLogDirsTopic::default()
                        .with_name(topic_name(&name))
                        .with_partitions(vec![part]),
                );
            }
        }
    }
    // canonicalize and statvfs are blocking system calls: off the executor thread.
    let data_dir = shard.config.data_dir.clone();
    let (dir, total, usable) = glommio::executor()
        .spawn_blocking(move || {
            let dir = std::fs::canonicalize(&data_dir).unwrap_or(data_dir);
            let (total, usable) = disk_space(&dir);
            (dir, total, usable)
        })
        .await;
    DescribeLogDirsResponse::default().with_results(vec![DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(&dir.to_string_lossy()))
        .with_topics(by_topic)
        .with_total_bytes(total)
        .with_usable_bytes(usable)])
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
