//! Named limits of the cluster metadata (the same values the single-node broker enforces in
//! `src/broker/src/topics.rs`) and Kafka's topic-name rule.

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Partitions one topic may have.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;
/// Topics in the cluster.
pub const TOPICS_MAX: usize = 100_000;
/// Replicas one node may host, all topics together (every shard of it builds a shard table
/// of them; the broker keeps this within the table's capacity).
pub const PARTITIONS_PER_NODE_MAX: u64 = 100_000;
/// Partitions one CreateTopics or CreatePartitions request may create (Kafka's
/// `MAX_PARTITIONS_PER_BATCH`, topics and configs not counted, so one topic of
/// [`PARTITIONS_PER_TOPIC_MAX`] fits), and config records one AlterConfigs may write.
pub const RECORDS_PER_REQUEST_MAX: u64 = 10_000;
/// Kafka's producer-id block (`ProducerIdManager`'s 1000 ids per AllocateProducerIds).
pub const PRODUCER_ID_BLOCK_SIZE: u32 = 1_000;
/// Largest producer-id block a record may carry (a bootstrap may carry up to this).
pub const PRODUCER_ID_BLOCK_SIZE_MAX: u32 = 1 << 30;
/// Host names and rack names of a registration.
pub const HOST_BYTES_MAX: usize = 255;
/// Replication factor: every replica is in every commit quorum of its Raft group, so a
/// bound far above any real deployment (Kafka itself bounds it only by the broker count).
pub const REPLICATION_FACTOR_MAX: i16 = crate::codec::REPLICAS_MAX as i16;

/// Kafka's topic name rule: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!(
            "Topic name is longer than {TOPIC_NAME_BYTES_MAX} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "Topic name {name:?} is illegal, it contains a character other than ASCII \
             alphanumerics, '.', '_' and '-' ({c:?})"
        ));
    }
    Ok(())
}
