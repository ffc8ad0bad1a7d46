//! One shard's metrics at one moment, as plain data: built on the shard, sent to the shard
//! serving the scrape as bytes (rkyv), merged there with the other shards' snapshots.

use rkyv::{Archive, Deserialize, Serialize};

use crate::histogram::Histogram;

#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ShardSnapshot {
    pub shard: u32,
    pub apis: Vec<ApiSample>,
    pub errors: Vec<ErrorSample>,
    pub partitions: Vec<PartitionSample>,
    pub flush_write: Histogram,
    pub flush_sync: Histogram,
    pub flushed_bytes: u64,
    pub timer_lag: Histogram,
    pub connections: u64,
    pub connections_accepted: u64,
    pub inflight_request_bytes: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_bytes: u64,
    /// Read-ahead of logs read from disk: windows issued, reads served from them, bytes
    /// held or in flight.
    pub read_ahead_windows: u64,
    pub read_ahead_served: u64,
    pub read_ahead_bytes: u64,
    pub executor_runtime_us: u64,
    pub executor_tasks: u64,
    pub io: IoSample,
    pub queues: Vec<QueueSample>,
    pub groups: Vec<GroupSample>,
    pub committed: Vec<CommittedSample>,
    /// The log cleaner's passes (those that ran), records removed, bytes reclaimed,
    /// segments merged into others.
    pub cleaner_pass: Histogram,
    pub cleaner_records_removed: u64,
    pub cleaner_bytes_reclaimed: u64,
    pub cleaner_segments_merged: u64,
    /// Client telemetry (KIP-714): instances this shard knows, the series their pushes
    /// made, pushes accepted, and points dropped at a bound.
    pub client_instances: u64,
    pub client_series: Vec<ClientSample>,
    pub client_pushes: u64,
    pub client_points_dropped: u64,
}

/// A series a client pushed (KIP-714): its family (already a Prometheus name), whether it
/// is a counter, its labels (Prometheus names, values as pushed) and its value.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClientSample {
    pub family: String,
    pub counter: bool,
    pub labels: Vec<Label>,
    pub value: f64,
    /// When the client last pushed it (the broker's clock, milliseconds).
    pub updated_ms: u64,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    pub name: String,
    pub value: String,
}

/// Requests of one API this shard answered, and how long they took.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ApiSample {
    pub api: String,
    pub requests: u64,
    pub latency: Histogram,
}

/// Error codes (Kafka's names) in responses of one API.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ErrorSample {
    pub api: String,
    pub error: String,
    pub count: u64,
}

/// A partition replica this shard owns.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct PartitionSample {
    pub topic: String,
    pub partition: i32,
    /// Whether this replica leads (a single replica always does).
    pub leader: bool,
    pub produced_records: u64,
    pub produced_bytes: u64,
    pub fetched_records: u64,
    pub fetched_bytes: u64,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub log_end_offset: i64,
    pub size_bytes: u64,
}

/// The shard's file IO through io_uring since it started: operations submitted and bytes,
/// direct (O_DIRECT) and buffered.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct IoSample {
    pub files_opened: u64,
    pub files_closed: u64,
    pub direct_reads: u64,
    pub direct_bytes_read: u64,
    pub buffered_reads: u64,
    pub buffered_bytes_read: u64,
    pub direct_writes: u64,
    pub direct_bytes_written: u64,
    pub buffered_writes: u64,
    pub buffered_bytes_written: u64,
}

/// One of the shard executor's task queues.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct QueueSample {
    pub queue: String,
    pub shares: u64,
    pub runtime_us: u64,
    pub selected: u64,
}

/// A consumer group whose coordinator is on this shard.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GroupSample {
    pub group: String,
    /// Kafka's state name (`Stable`, `Empty`, ...).
    pub state: String,
    pub members: u64,
}

/// An offset committed by a group whose coordinator is on this shard.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CommittedSample {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl ShardSnapshot {
    pub fn to_bytes(&self) -> Vec<u8> {
        rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .map(|b| b.into_vec())
            .expect("plain data serializes")
    }

    /// Reads what [`ShardSnapshot::to_bytes`] wrote (checked: a bad buffer is an error).
    pub fn from_bytes(bytes: &[u8]) -> Result<ShardSnapshot, String> {
        // rkyv reads from an aligned buffer; a received payload may not be.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<ShardSnapshot, rkyv::rancor::Error>(&aligned).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_survives_the_trip_between_shards() {
        let mut s = ShardSnapshot {
            shard: 3,
            connections: 7,
            ..ShardSnapshot::default()
        };
        s.partitions.push(PartitionSample {
            topic: "t".into(),
            partition: 2,
            high_watermark: 10,
            ..PartitionSample::default()
        });
        s.flush_sync.record_us(300);
        let back = ShardSnapshot::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back, s);
        assert!(ShardSnapshot::from_bytes(&[1, 2, 3]).is_err());
    }
}
