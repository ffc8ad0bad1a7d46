//! Per-partition operations as they travel to the partition's owning shard: rkyv frames
//! read in place on arrival; record bytes ride beside the frame as `Bytes` (never copied).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rkyv::{Archive, Deserialize, Serialize};

/// Frame tags: what a frame's body is.
pub const TAG_PARTITION: u16 = 1;
/// Body: [`crate::topics::StateDelta`]; the shard applies it to its copy of the cluster state,
/// adopts the result and opens/closes its logs. Reply payload: why it could not, if it could not.
pub const TAG_TOPICS: u16 = 2;
/// Body: [`ForwardHeader`]; payload: a whole Kafka request frame to run on the target shard.
pub const TAG_FORWARD: u16 = 3;

/// Body: `Vec<String>` topic names to auto-create with defaults (to the controller).
pub const TAG_AUTO_CREATE: u16 = 4;
/// One-way, to a partition owner; body: [`WatchRequest`]. Registers a parked fetch's watch.
pub const TAG_WATCH: u16 = 5;
/// One-way, to a partition owner; body: [`WatchRef`]. The fetch is done: drop its watch.
pub const TAG_UNWATCH: u16 = 6;
/// One-way, from a partition owner to the fetch's shard; body: [`WatchRef`]. Some watched
/// partition has news (data, or an error a read will report).
pub const TAG_WATCH_FIRED: u16 = 7;
/// To shard 0, with `--voters`; empty body. Reply payload: a producer-id block the
/// controller gave this node, `first` and `end` as big-endian i64s (none: not now).
pub const TAG_PRODUCER_IDS: u16 = 8;
/// One-way, to shard 0; empty body; payload: a Raft envelope (`sluice_rpc::encode_envelope`)
/// of this shard's partition groups, for the node's transport (`crate::replication`).
pub const TAG_RAFT_OUT: u16 = 9;
/// One-way, from shard 0; empty body; payload: a Raft envelope another node sent, holding
/// only groups of the receiving shard.
pub const TAG_RAFT_IN: u16 = 10;
/// To shard 0; empty body; payload: the node to ask (i32), the extension method (u16), the
/// timeout in ms (u32), all big-endian, then the request body (`crate::node_rpc::call`).
/// Reply payload: the answer body (none: no OK answer).
pub const TAG_NODE_CALL: u16 = 11;
/// To any shard; empty body. Reply payload: the shard's metrics snapshot
/// (`sluice_metrics::ShardSnapshot::to_bytes`), for the admin API's `/metrics`.
pub const TAG_METRICS: u16 = 12;

/// What to do to a partition.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionOp {
    /// Append the payload (one batch, checked by `produce_rules`). `acks != 0` waits for
    /// the fsync; `timeout_ms` is the client's replication timeout: it bounds the wait for
    /// a replicated partition's quorum, and nothing on a single replica (the fsync is part
    /// of the local append). A transactional batch that would open its producer's
    /// transaction here needs the coordinator's word first (KIP-890): without a `guard`
    /// (-1) it is answered [`crate::kerr::VERIFY_TXN`] with the log's marker count in
    /// `size`; sent again with that count as `guard` once the coordinator confirmed, it is
    /// appended only if no marker came in between (else NOT_ENOUGH_REPLICAS, retriable).
    /// `refused_seq` (-1: none) is the first sequence of an earlier batch of the same
    /// producer that the client's connection saw refused before it was written
    /// (`sluice_replica::sequences::ConnRefusals`): the owner fences the producer with it
    /// as with a refusal of its own.
    Produce {
        acks: i16,
        timeout_ms: i32,
        guard: i64,
        refused_seq: i64,
    },
    /// Read from `offset` at most `max_bytes`; `read_committed` (isolation level 1) stops at
    /// the last stable offset, and the reply's payload then starts with the aborted
    /// transactions the records overlap (see [`PartitionReply::aborted_count`]).
    Fetch {
        offset: i64,
        max_bytes: i32,
        read_committed: bool,
    },
    /// ListOffsets: -1 latest (the last stable offset when `read_committed`), -2 earliest,
    /// -3 max timestamp, else by timestamp.
    ListOffset {
        timestamp: i64,
        read_committed: bool,
    },
    /// Advance the log start offset (-1: to the high watermark). `timeout_ms` bounds a
    /// replicated partition's wait for the move to commit through Raft.
    DeleteRecords { offset: i64, timeout_ms: i32 },
    /// Size and offsets, for DescribeLogDirs.
    Describe,
    /// OffsetForLeaderEpoch: the reply's `leader_epoch` and `size` are the epoch found and
    /// its end offset.
    EpochEndOffset { epoch: i32 },
    /// DescribeProducers, on the leader: the reply's `size` is how many producers the
    /// payload holds, [`PRODUCER_ENTRY_BYTES`] each (see [`encode_producers`]).
    DescribeProducers,
    /// ElectLeaders PREFERRED, on the leader: hand the leadership to the preferred replica
    /// and wait (at most `timeout_ms`) until it leads; only the reply's error code counts
    /// (`crate::replication::elect_preferred`).
    ElectPreferred { timeout_ms: i32 },
    /// AlterReplicaLogDirs: move this replica into log directory `dest` (an index into
    /// `Shared::log_dirs`), in the background; only the reply's error code counts
    /// (`crate::log_moves`).
    MoveLogDir { dest: u32 },
}

/// A partition operation addressed by topic id.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionRequest {
    pub topic_id: [u8; 16],
    pub partition: i32,
    /// The client's `current_leader_epoch` (Fetch, ListOffsets, OffsetForLeaderEpoch), or -1
    /// for no check. Checked on the owning shard, against the epoch the op then runs in.
    pub current_leader_epoch: i32,
    pub op: PartitionOp,
}

/// The answer; fields that do not apply to an op stay at their defaults.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionReply {
    pub error_code: i16,
    pub base_offset: i64,
    pub log_append_time: i64,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// ListOffsets timestamp; OffsetForLeaderEpoch: unused.
    pub timestamp: i64,
    /// DescribeLogDirs size; OffsetForLeaderEpoch end offset; DescribeProducers count;
    /// Produce answered [`crate::kerr::VERIFY_TXN`]: the log's marker count (the guard).
    pub size: i64,
    pub leader_epoch: i32,
    /// Fetch: the partition's last stable offset.
    pub last_stable_offset: i64,
    /// A read_committed Fetch: how many aborted transactions the payload starts with, 16
    /// bytes each (producer id, first offset; big-endian), before the records. Rarely
    /// non-zero, so the records are copied behind them only then.
    pub aborted_count: i32,
}

impl Default for PartitionReply {
    fn default() -> Self {
        PartitionReply {
            error_code: 0,
            base_offset: -1,
            log_append_time: -1,
            log_start_offset: -1,
            high_watermark: -1,
            timestamp: -1,
            size: 0,
            leader_epoch: -1,
            last_stable_offset: -1,
            aborted_count: 0,
        }
    }
}

/// Bytes of one producer in a DescribeProducers reply's payload.
pub const PRODUCER_ENTRY_BYTES: usize = 34;

/// A DescribeProducers reply's payload: per producer, id i64, epoch i16, last sequence i32,
/// last timestamp i64, coordinator epoch i32, open transaction's first offset i64.
pub fn encode_producers(producers: &[sluice_storage::producer::ActiveProducer]) -> Bytes {
    let mut b = BytesMut::with_capacity(producers.len() * PRODUCER_ENTRY_BYTES);
    for p in producers {
        b.put_i64(p.producer_id);
        b.put_i16(p.epoch);
        b.put_i32(p.last_sequence);
        b.put_i64(p.last_timestamp);
        b.put_i32(p.coordinator_epoch);
        b.put_i64(p.txn_start_offset);
    }
    b.freeze()
}

/// Reads what [`encode_producers`] wrote; `None` if it is not whole entries.
pub fn decode_producers(mut b: Bytes) -> Option<Vec<sluice_storage::producer::ActiveProducer>> {
    if !b.len().is_multiple_of(PRODUCER_ENTRY_BYTES) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / PRODUCER_ENTRY_BYTES);
    while b.has_remaining() {
        out.push(sluice_storage::producer::ActiveProducer {
            producer_id: b.get_i64(),
            epoch: b.get_i16(),
            last_sequence: b.get_i32(),
            last_timestamp: b.get_i64(),
            coordinator_epoch: b.get_i32(),
            txn_start_offset: b.get_i64(),
        });
    }
    Some(out)
}

/// The payload of a read_committed Fetch reply: `aborted` (producer id, first offset), then
/// `records`; `records` unchanged (no copy) when there are none.
pub fn committed_payload(aborted: &[(i64, i64)], records: Bytes) -> Bytes {
    if aborted.is_empty() {
        return records;
    }
    let mut b = BytesMut::with_capacity(aborted.len() * 16 + records.len());
    for &(pid, first) in aborted {
        b.put_i64(pid);
        b.put_i64(first);
    }
    b.put_slice(&records);
    b.freeze()
}

/// Splits what [`committed_payload`] built, given the reply's `aborted_count`; `None` if the
/// payload is too short for it.
pub fn split_committed_payload(count: i32, mut payload: Bytes) -> Option<(Vec<(i64, i64)>, Bytes)> {
    let n = usize::try_from(count).ok()?;
    if payload.len() < n.checked_mul(16)? {
        return None;
    }
    let mut aborted = Vec::with_capacity(n);
    for _ in 0..n {
        aborted.push((payload.get_i64(), payload.get_i64()));
    }
    Some((aborted, payload))
}

impl PartitionReply {
    pub fn error(code: i16) -> PartitionReply {
        PartitionReply {
            error_code: code,
            ..PartitionReply::default()
        }
    }

    /// An error that tells the client the partition's current leader epoch.
    pub fn error_at(code: i16, leader_epoch: i32) -> PartitionReply {
        PartitionReply {
            error_code: code,
            leader_epoch,
            ..PartitionReply::default()
        }
    }
}

/// One partition a parked fetch waits on: news once its high watermark (its last stable
/// offset when `committed`, a read_committed fetch) passes `offset`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchEntry {
    pub topic_id: [u8; 16],
    pub partition: i32,
    pub offset: i64,
    pub committed: bool,
}

/// A parked fetch's watch on the partitions one shard owns (possibly split over several
/// frames with the same `id`).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WatchRequest {
    /// Unique on the sending shard.
    pub id: u64,
    /// Wall-clock ms after which the watch is stale even if never cancelled.
    pub deadline_ms: i64,
    pub entries: Vec<WatchEntry>,
}

/// Names a watch of the sending (or, for `TAG_WATCH_FIRED`, receiving) shard.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchRef {
    pub id: u64,
}

/// Routing header of a forwarded Kafka request.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ForwardHeader {
    pub api_key: i16,
    /// The client's address, for group membership (DescribeGroups shows it).
    pub client_host: String,
    /// The client's listener (its security protocol's Kafka id).
    pub listener: i16,
    /// The client's principal (`User:alice`), which the target shard authorizes.
    pub principal: String,
    /// Whether the node itself asks (`Client::internal`).
    pub internal: bool,
    /// Whether the client authenticated with a delegation token.
    pub token_authenticated: bool,
}

// The fixed-size frames keep their size: a change here is a wire change between shards.
const _: () = assert!(std::mem::size_of::<ArchivedPartitionRequest>() == 48);
const _: () = assert!(std::mem::size_of::<ArchivedPartitionReply>() == 80);
const _: () = assert!(std::mem::size_of::<ArchivedWatchEntry>() == 40);

/// Converts an archived request (read in place) into the native form without allocating.
pub fn request_from_archived(a: &ArchivedPartitionRequest) -> PartitionRequest {
    rkyv::deserialize::<PartitionRequest, rkyv::rancor::Error>(a).expect("plain data deserializes")
}

pub fn reply_from_archived(a: &ArchivedPartitionReply) -> PartitionReply {
    rkyv::deserialize::<PartitionReply, rkyv::rancor::Error>(a).expect("plain data deserializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_payload_splits_into_its_aborted_transactions_and_records() {
        let records = Bytes::from_static(b"batches");
        let same = committed_payload(&[], records.clone());
        assert_eq!(
            same.as_ptr(),
            records.as_ptr(),
            "no copy without aborted ones"
        );
        assert_eq!(
            split_committed_payload(0, same),
            Some((vec![], records.clone()))
        );
        let aborted = [(7, 3), (9, -1)];
        let p = committed_payload(&aborted, records.clone());
        assert_eq!(
            split_committed_payload(2, p.clone()),
            Some((aborted.to_vec(), records))
        );
        assert_eq!(split_committed_payload(3, p.clone()), None, "too short");
        assert_eq!(split_committed_payload(-1, p), None);
    }
}
