//! The broker's side of `sluice-metrics`: a shard's snapshot of its counters, partitions,
//! groups and executor, gathered from every shard for a scrape (one mesh round trip each),
//! the error codes of responses counted by API, and the high watermarks other nodes lead
//! for this node's groups' lag.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use sluice_codec::kafka_protocol::messages::ApiKey;
use sluice_metrics::snapshot::{PartitionSample, QueueSample};
use sluice_metrics::ShardSnapshot;
use sluice_shard::{CallClass, Frame, ShardId};

use crate::ops::TAG_METRICS;
use crate::shard::BrokerShard;

/// Kafka's name of an API key (`Produce`, `Fetch`, ...), or its number.
pub fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => key.to_string(),
    }
}

/// This shard's snapshot (runs on the shard).
pub fn snapshot(shard: &BrokerShard) -> ShardSnapshot {
    let mut snap = ShardSnapshot {
        shard: shard.shard_id().0 as u32,
        ..ShardSnapshot::default()
    };
    {
        let mut t = shard.telemetry.borrow_mut();
        let now = crate::shard::now_ms().max(0) as u64;
        snap.client_series = t.series.samples(now);
        snap.client_instances = t.instances.len() as u64;
        snap.client_pushes = t.series.pushes;
        snap.client_points_dropped = t.series.dropped;
    }
    let parts = shard.keyed_partitions();
    let owned: HashSet<([u8; 16], i32)> = parts
        .iter()
        .map(|(k, _)| (k.topic_id, k.partition))
        .collect();
    let counters = sluice_metrics::recorder::fill(
        &mut snap,
        api_name,
        sluice_codec::error::error_name,
        |id, p| owned.contains(&(*id, p)),
    );
    let replication = shard.replication();
    for (key, part) in parts {
        let c = counters
            .get(&(key.topic_id, key.partition))
            .copied()
            .unwrap_or_default();
        let leader = match (part.group, &replication) {
            (None, _) => true,
            (Some(group), Some(rep)) => rep
                .status(group)
                .is_some_and(|s| s.role == sluice_raft::Role::Leader),
            (Some(_), None) => false,
        };
        let log = &part.log;
        snap.partitions.push(PartitionSample {
            topic: part.topic.clone(),
            partition: part.index,
            leader,
            produced_records: c.produced_records,
            produced_bytes: c.produced_bytes,
            fetched_records: c.fetched_records,
            fetched_bytes: c.fetched_bytes,
            log_start_offset: log.log_start_offset(),
            high_watermark: log.high_watermark(),
            log_end_offset: log.log_end_offset(),
            size_bytes: log.size_bytes(),
        });
    }
    snap.partitions
        .sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    [
        snap.cache_hits,
        snap.cache_misses,
        snap.cache_bytes,
        snap.read_ahead_windows,
        snap.read_ahead_served,
        snap.read_ahead_bytes,
    ] = shard.cache_counts();
    snap.inflight_request_bytes = shard.request_memory.used() as u64;
    let run = shard.ctx.executor_totals();
    snap.executor_runtime_us = run.runtime.as_micros() as u64;
    snap.executor_tasks = run.tasks;
    let io = &run.io;
    snap.io = sluice_metrics::snapshot::IoSample {
        files_opened: io.files_opened,
        files_closed: io.files_closed,
        direct_reads: io.direct_reads,
        direct_bytes_read: io.direct_bytes_read,
        buffered_reads: io.buffered_reads,
        buffered_bytes_read: io.buffered_bytes_read,
        direct_writes: io.direct_writes,
        direct_bytes_written: io.direct_bytes_written,
        buffered_writes: io.buffered_writes,
        buffered_bytes_written: io.buffered_bytes_written,
    };
    snap.queues = run
        .queues
        .iter()
        .map(|q| QueueSample {
            queue: q.name.to_string(),
            shares: q.shares,
            runtime_us: q.runtime.as_micros() as u64,
            selected: q.selected,
        })
        .collect();
    for slot in shard.group_slots() {
        slot.metrics(&mut snap.groups, &mut snap.committed);
    }
    snap
}

/// The reply payload of a [`TAG_METRICS`] frame: this shard's snapshot.
pub fn snapshot_frame(shard: &BrokerShard) -> Frame {
    Frame::empty(TAG_METRICS, Some(Bytes::from(snapshot(shard).to_bytes())))
}

/// Every shard's snapshot (a shard that does not answer is left out, and logged).
pub async fn gather(shard: &Rc<BrokerShard>) -> Vec<ShardSnapshot> {
    let me = shard.shard_id();
    let asks: Vec<_> = (0..shard.ctx.shard_count())
        .map(|i| ShardId(i as u16))
        .filter(|&id| id != me)
        .map(|id| {
            let shard = shard.clone();
            async move {
                let reply = shard
                    .ctx
                    .mesh()
                    .call_in(CallClass::General, id, Frame::empty(TAG_METRICS, None))
                    .await;
                match reply.map(|mut f| f.take_payload()) {
                    Ok(Some(b)) => ShardSnapshot::from_bytes(&b)
                        .map_err(|e| log::error!("metrics of {id}: {e}"))
                        .ok(),
                    Ok(None) => None,
                    // A shard that stopped (shutdown) has nothing to report.
                    Err(e) => {
                        log::debug!("metrics of {id}: {e}");
                        None
                    }
                }
            }
        })
        .collect();
    let mut all = vec![snapshot(shard)];
    all.extend(crate::handlers::join_all(asks).await.into_iter().flatten());
    all.sort_by_key(|s| s.shard);
    all
}

/// How long a scrape waits for another node's high watermarks.
const REMOTE_HIGH_WATERMARKS_TIMEOUT: Duration = Duration::from_secs(1);

/// High watermarks of the partitions this node's groups committed offsets for but holds no
/// replica of, from the nodes that lead them (`node_rpc::HIGH_WATERMARKS`), so their lag
/// can be told. Empty when every such partition has a replica here; a node that does not
/// answer within [`REMOTE_HIGH_WATERMARKS_TIMEOUT`] leaves its partitions out.
pub async fn remote_high_watermarks(
    shard: &Rc<BrokerShard>,
    snapshots: &[ShardSnapshot],
) -> HashMap<(String, i32), i64> {
    let local: HashSet<(&str, i32)> = snapshots
        .iter()
        .flat_map(|s| &s.partitions)
        .map(|p| (p.topic.as_str(), p.partition))
        .collect();
    let wanted: HashSet<(String, i32)> = snapshots
        .iter()
        .flat_map(|s| &s.committed)
        .filter(|c| !local.contains(&(c.topic.as_str(), c.partition)))
        .map(|c| (c.topic.clone(), c.partition))
        .collect();
    if wanted.is_empty() {
        return HashMap::new();
    }
    let view = &shard.shared_handle.cluster_view;
    let this = view.this_node();
    let asks: Vec<_> = view
        .brokers()
        .iter()
        .map(|b| b.node)
        .filter(|&n| n != this)
        .map(|n| {
            let shard = shard.clone();
            async move {
                let body = crate::node_rpc::call(
                    &shard,
                    n,
                    crate::node_rpc::HIGH_WATERMARKS,
                    Bytes::new(),
                    REMOTE_HIGH_WATERMARKS_TIMEOUT,
                )
                .await?;
                crate::node_rpc::decode_high_watermarks(&body)
            }
        })
        .collect();
    let mut out = HashMap::new();
    for (topic, partition, hw) in crate::handlers::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .flatten()
    {
        let key = (topic, partition);
        if wanted.contains(&key) {
            out.insert(key, hw);
        }
    }
    out
}

/// Records and bytes of the record batches in `records` (whole batches; a partial one at
/// the end is not counted).
pub fn batch_totals(records: &[u8]) -> (u64, u64) {
    let (mut count, mut at) = (0u64, 0usize);
    while let Some(h) = records
        .get(at..)
        .and_then(sluice_storage::hdr::Header::parse)
    {
        if h.size == 0 || at + h.size > records.len() {
            break;
        }
        count += h.records_count.max(0) as u64;
        at += h.size;
    }
    (count, at as u64)
}

/// The error codes in a response, for `sluice_request_errors_total` (Kafka's broker counts
/// the same: every error code in the response, top-level and per topic or partition).
pub trait ErrorCodes {
    /// Calls `f` with each error code (NONE too; it is not counted).
    fn error_codes(&self, f: &mut dyn FnMut(i16));
}

/// Counts `body`'s error codes against `api`.
pub fn count_errors(api: i16, body: &impl ErrorCodes) {
    body.error_codes(&mut |code| sluice_metrics::recorder::error(api, code));
}

/// Responses whose only error code is the top-level one.
macro_rules! top_level {
    ($($t:ident),* $(,)?) => {$(
        impl ErrorCodes for m::$t {
            fn error_codes(&self, f: &mut dyn FnMut(i16)) {
                f(self.error_code)
            }
        }
    )*};
}

/// Responses with error codes in nested lists (and maybe one at the top): `$r` is the
/// response, `$f` the callback.
macro_rules! nested {
    ($t:ident, |$r:ident, $f:ident| $body:expr) => {
        impl ErrorCodes for m::$t {
            fn error_codes(&self, $f: &mut dyn FnMut(i16)) {
                let $r = self;
                $body
            }
        }
    };
}

use sluice_codec::kafka_protocol::messages as m;

top_level!(
    ApiVersionsResponse,
    SaslHandshakeResponse,
    SaslAuthenticateResponse,
    InitProducerIdResponse,
    DescribeClusterResponse,
    AddOffsetsToTxnResponse,
    EndTxnResponse,
    DescribeClientQuotasResponse,
    ListTransactionsResponse,
    ListConfigResourcesResponse,
    GetTelemetrySubscriptionsResponse,
    PushTelemetryResponse,
    CreateDelegationTokenResponse,
    RenewDelegationTokenResponse,
    ExpireDelegationTokenResponse,
    DescribeDelegationTokenResponse,
);

/// Each `$f(item.error_code)` over a list of items.
fn each<T>(items: &[T], f: &mut dyn FnMut(i16), code: impl Fn(&T) -> i16) {
    for i in items {
        f(code(i));
    }
}

nested!(DescribeQuorumResponse, |r, f| {
    f(r.error_code);
    for t in &r.topics {
        each(&t.partitions, f, |p| p.error_code)
    }
});
nested!(DescribeTopicPartitionsResponse, |r, f| for t in &r.topics {
    f(t.error_code);
    each(&t.partitions, f, |p| p.error_code)
});
nested!(UpdateFeaturesResponse, |r, f| {
    f(r.error_code);
    each(&r.results, f, |x| x.error_code)
});
nested!(ProduceResponse, |r, f| for t in &r.responses {
    each(&t.partition_responses, f, |p| p.error_code)
});
nested!(FetchResponse, |r, f| {
    f(r.error_code);
    for t in &r.responses {
        each(&t.partitions, f, |p| p.error_code)
    }
});
nested!(MetadataResponse, |r, f| {
    f(r.error_code);
    for t in &r.topics {
        f(t.error_code);
        each(&t.partitions, f, |p| p.error_code)
    }
});
nested!(ListOffsetsResponse, |r, f| for t in &r.topics {
    each(&t.partitions, f, |p| p.error_code)
});
nested!(OffsetForLeaderEpochResponse, |r, f| for t in &r.topics {
    each(&t.partitions, f, |p| p.error_code)
});
nested!(DeleteRecordsResponse, |r, f| for t in &r.topics {
    each(&t.partitions, f, |p| p.error_code)
});
nested!(DescribeProducersResponse, |r, f| for t in &r.topics {
    each(&t.partitions, f, |p| p.error_code)
});
nested!(WriteTxnMarkersResponse, |r, f| for m in &r.markers {
    for t in &m.topics {
        each(&t.partitions, f, |p| p.error_code)
    }
});
nested!(CreateTopicsResponse, |r, f| each(&r.topics, f, |t| t
    .error_code));
nested!(DeleteTopicsResponse, |r, f| each(&r.responses, f, |t| t
    .error_code));
nested!(CreatePartitionsResponse, |r, f| each(&r.results, f, |t| t
    .error_code));
nested!(AlterConfigsResponse, |r, f| each(&r.responses, f, |t| t
    .error_code));
nested!(IncrementalAlterConfigsResponse, |r, f| each(
    &r.responses,
    f,
    |t| t.error_code
));
nested!(DescribeConfigsResponse, |r, f| each(&r.results, f, |t| t
    .error_code));
nested!(AlterClientQuotasResponse, |r, f| each(&r.entries, f, |e| e
    .error_code));
nested!(CreateAclsResponse, |r, f| each(&r.results, f, |e| e
    .error_code));
nested!(DeleteAclsResponse, |r, f| each(&r.filter_results, f, |e| e
    .error_code));
nested!(DescribeAclsResponse, |r, f| f(r.error_code));
nested!(AlterUserScramCredentialsResponse, |r, f| each(
    &r.results,
    f,
    |e| e.error_code
));
nested!(DescribeUserScramCredentialsResponse, |r, f| {
    f(r.error_code);
    each(&r.results, f, |e| e.error_code)
});
nested!(DescribeLogDirsResponse, |r, f| {
    f(r.error_code);
    each(&r.results, f, |e| e.error_code)
});
nested!(AlterReplicaLogDirsResponse, |r, f| {
    for t in &r.results {
        each(&t.partitions, f, |p| p.error_code)
    }
});
nested!(AlterPartitionReassignmentsResponse, |r, f| {
    f(r.error_code);
    for t in &r.responses {
        each(&t.partitions, f, |p| p.error_code)
    }
});
nested!(ListPartitionReassignmentsResponse, |r, f| f(r.error_code));
nested!(ElectLeadersResponse, |r, f| {
    f(r.error_code);
    for t in &r.replica_election_results {
        each(&t.partition_result, f, |p| p.error_code)
    }
});
nested!(FindCoordinatorResponse, |r, f| {
    f(r.error_code);
    each(&r.coordinators, f, |c| c.error_code)
});
nested!(AddPartitionsToTxnResponse, |r, f| {
    f(r.error_code);
    let v3 = r.results_by_topic_v3_and_below.iter();
    let v4 = r
        .results_by_transaction
        .iter()
        .flat_map(|t| &t.topic_results);
    for t in v3.chain(v4) {
        each(&t.results_by_partition, f, |p| p.partition_error_code)
    }
});
nested!(DescribeTransactionsResponse, |r, f| each(
    &r.transaction_states,
    f,
    |t| t.error_code
));

top_level!(
    JoinGroupResponse,
    SyncGroupResponse,
    HeartbeatResponse,
    ConsumerGroupHeartbeatResponse,
);
nested!(LeaveGroupResponse, |r, f| {
    f(r.error_code);
    each(&r.members, f, |m| m.error_code)
});
nested!(OffsetCommitResponse, |r, f| for t in &r.topics {
    each(&t.partitions, f, |p| p.error_code)
});
nested!(TxnOffsetCommitResponse, |r, f| for t in &r.topics {
    each(&t.partitions, f, |p| p.error_code)
});
nested!(OffsetFetchResponse, |r, f| {
    f(r.error_code);
    for t in &r.topics {
        each(&t.partitions, f, |p| p.error_code)
    }
    for g in &r.groups {
        f(g.error_code);
        for t in &g.topics {
            each(&t.partitions, f, |p| p.error_code)
        }
    }
});
nested!(OffsetDeleteResponse, |r, f| {
    f(r.error_code);
    for t in &r.topics {
        each(&t.partitions, f, |p| p.error_code)
    }
});
nested!(ListGroupsResponse, |r, f| f(r.error_code));
nested!(DescribeGroupsResponse, |r, f| each(&r.groups, f, |g| g
    .error_code));
nested!(DeleteGroupsResponse, |r, f| each(&r.results, f, |g| g
    .error_code));
nested!(ConsumerGroupDescribeResponse, |r, f| each(
    &r.groups,
    f,
    |g| g.error_code
));

impl ErrorCodes for sluice_group::Response {
    fn error_codes(&self, f: &mut dyn FnMut(i16)) {
        use sluice_group::Response as R;
        match self {
            R::JoinGroup(r) => r.error_codes(f),
            R::SyncGroup(r) => r.error_codes(f),
            R::Heartbeat(r) => r.error_codes(f),
            R::LeaveGroup(r) => r.error_codes(f),
            R::OffsetCommit(r) => r.error_codes(f),
            R::OffsetFetch(r) => r.error_codes(f),
            R::OffsetDelete(r) => r.error_codes(f),
            R::DescribeGroups(r) => r.error_codes(f),
            R::ListGroups(r) => r.error_codes(f),
            R::DeleteGroups(r) => r.error_codes(f),
            R::TxnOffsetCommit(r) => r.error_codes(f),
            R::ConsumerGroupHeartbeat(r) => r.error_codes(f),
            R::ConsumerGroupDescribe(r) => r.error_codes(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names_are_kafkas() {
        assert_eq!(api_name(0), "Produce");
        assert_eq!(api_name(18), "ApiVersions");
        assert_eq!(api_name(999), "999");
    }

    #[test]
    fn batch_totals_count_whole_batches() {
        // A v2 batch header (61 bytes) and three bytes of records: length and count set.
        let mut one = vec![0u8; 64];
        one[8..12].copy_from_slice(&52i32.to_be_bytes());
        one[16] = 2;
        one[57..61].copy_from_slice(&3i32.to_be_bytes());
        let mut two = one.clone();
        two.extend_from_slice(&one);
        assert_eq!(batch_totals(&two), (6, two.len() as u64));
        assert_eq!(batch_totals(&two[..two.len() - 1]), (3, one.len() as u64));
        assert_eq!(batch_totals(&[]), (0, 0));
    }
}
