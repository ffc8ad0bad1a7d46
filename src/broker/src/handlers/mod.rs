//! Kafka API handlers, one file per API, and the dispatch from a decoded request to them.
//! Every API listed in [`api_table`] is advertised by ApiVersions and works; anything else
//! is not advertised.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::{ApiKey, RequestKind};
use sluice_codec::kafka_protocol::protocol::Encodable;
use sluice_codec::{frame_response, ApiTable, Request, RequestHeaderInfo};
use sluice_shard::ShardId;

use crate::authz;
use crate::conn::{Client, Outcome};
use crate::shard::BrokerShard;

pub mod acls;
pub mod alter_configs;
pub mod alter_partition_reassignments;
pub mod alter_replica_log_dirs;
pub mod api_versions;
pub mod client_quotas;
pub mod cluster_acl;
pub mod create_partitions;
pub mod create_topics;
pub mod delegation_tokens;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_topic_partitions;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod list_config_resources;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod telemetry;
pub mod update_features;
pub mod user_scram_credentials;
pub mod write_txn_markers;

/// The APIs and versions sluice serves: those of Apache Kafka 4.1 for the APIs it has.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (ApiKey::Fetch, 4, 18),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    // JBOD (`crate::log_dirs`, `crate::log_moves`); Kafka 4 removed version 0.
    (ApiKey::AlterReplicaLogDirs, 1, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 2, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    // v10 names topics by id (stable from Kafka 4.2; `crate::group_topic_ids`).
    (ApiKey::OffsetCommit, 2, 10),
    (ApiKey::OffsetFetch, 1, 10),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    // KIP-848, the consumer group protocol (`sluice_group::consumer`).
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::DescribeProducers, 0, 0),
    // Transactions (`crate::txn_host`). AddPartitionsToTxn v4+ is Kafka's broker-to-broker
    // form (several transactions, verify-only for KIP-890); clients send up to v3.
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    // v5 of both is transaction version 2 (KIP-890 part 2: the end bumps the epoch; the
    // offsets partition is added implicitly).
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::TxnOffsetCommit, 0, 5),
    (ApiKey::DescribeTransactions, 0, 0),
    // v2 adds a transactional-id regex filter (KIP-1152).
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::WriteTxnMarkers, 1, 1),
    // SASL (`crate::sasl_host`), before a client on a SASL listener has authenticated.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // ACLs (`acls`, `crate::authz`); Kafka 4 removed versions 0 and 1.
    (ApiKey::DescribeAcls, 2, 3),
    (ApiKey::CreateAcls, 2, 3),
    (ApiKey::DeleteAcls, 2, 3),
    // Client quotas (`client_quotas`, `crate::quotas`).
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    // Feature levels (`update_features`, `crate::feature_levels`; read through ApiVersions).
    (ApiKey::UpdateFeatures, 0, 2),
    // KIP-966: Metadata's topics a page at a time (`describe_topic_partitions`).
    (ApiKey::DescribeTopicPartitions, 0, 0),
    // KIP-1142 (v0: KIP-714's ListClientMetricsResources): config resource names
    // (`list_config_resources`).
    (ApiKey::ListConfigResources, 0, 1),
    // KIP-595/853: the controller quorum (`describe_quorum`).
    (ApiKey::DescribeQuorum, 0, 2),
    // KIP-714 client telemetry (`telemetry`). Kafka offers these only with a telemetry
    // receiver configured; sluice always has one (`/metrics`).
    (ApiKey::GetTelemetrySubscriptions, 0, 0),
    (ApiKey::PushTelemetry, 0, 0),
    // KIP-48 delegation tokens (`delegation_tokens`); Kafka 4 removed version 0.
    (ApiKey::CreateDelegationToken, 1, 3),
    (ApiKey::RenewDelegationToken, 1, 2),
    (ApiKey::ExpireDelegationToken, 1, 2),
    (ApiKey::DescribeDelegationToken, 1, 3),
];

pub fn api_table() -> ApiTable {
    ApiTable::new(SUPPORTED).expect("supported versions are within the codec's")
}

/// The shard a request must run on when it is not the one the connection landed on:
/// cluster-state changes run on the controller (shard 0).
pub fn route(_shard: &BrokerShard, api_key: i16) -> Option<ShardId> {
    match ApiKey::try_from(api_key).ok()? {
        ApiKey::CreateTopics
        | ApiKey::DeleteTopics
        | ApiKey::CreatePartitions
        | ApiKey::AlterConfigs
        | ApiKey::IncrementalAlterConfigs
        | ApiKey::AlterPartitionReassignments
        // Reach other nodes through the controller runtime's transport (shard 0's).
        | ApiKey::ListPartitionReassignments
        | ApiKey::ElectLeaders
        | ApiKey::AlterUserScramCredentials
        | ApiKey::CreateAcls
        | ApiKey::DeleteAcls
        | ApiKey::AlterClientQuotas
        | ApiKey::UpdateFeatures
        | ApiKey::DescribeQuorum
        | ApiKey::CreateDelegationToken
        | ApiKey::RenewDelegationToken
        | ApiKey::ExpireDelegationToken => Some(ShardId(0)),
        _ => None,
    }
}

/// Encodes a response for `header`'s API version.
pub fn respond<T: Encodable + crate::metrics_host::ErrorCodes>(
    header: &RequestHeaderInfo,
    body: &T,
) -> Outcome {
    crate::metrics_host::count_errors(header.api_key as i16, body);
    match frame_response(
        header.correlation_id,
        header.response_header_version(),
        body,
        header.api_version,
    ) {
        Ok(b) => Outcome::Respond(b),
        Err(e) => {
            log::error!(
                "encoding {:?} v{} response: {e}",
                header.api_key,
                header.api_version
            );
            Outcome::Close
        }
    }
}

/// Runs one decoded request; `frame_len` is the size of the frame it came in (what a slice
/// of it keeps alive), `client` who sent it.
pub async fn dispatch(
    shard: &Rc<BrokerShard>,
    request: Request,
    frame_len: usize,
    client: &Client,
) -> Outcome {
    let h = &request.header;
    if authz::enabled(shard) {
        if let Some(refusal) = cluster_acl::refused(shard, client, h, &request.body) {
            return refusal;
        }
    }
    match request.body {
        RequestKind::ApiVersions(r) => {
            api_versions::note_software(client, &r);
            respond(h, &api_versions::handle(shard, h, r))
        }
        RequestKind::Metadata(r) => respond(h, &metadata::handle(shard, h, r, client).await),
        RequestKind::Produce(r) => produce::handle(shard, h, r, frame_len, client).await,
        RequestKind::Fetch(r) => fetch::respond(h, &fetch::handle(shard, h, r, client).await),
        RequestKind::ListOffsets(r) => respond(h, &list_offsets::handle(shard, client, h, r).await),
        RequestKind::CreateTopics(r) => {
            respond(h, &create_topics::handle(shard, client, h, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            respond(h, &delete_topics::handle(shard, client, h, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            respond(h, &create_partitions::handle(shard, client, h, r).await)
        }
        RequestKind::DeleteRecords(r) => {
            respond(h, &delete_records::handle(shard, client, h, r).await)
        }
        RequestKind::InitProducerId(r) => {
            respond(h, &init_producer_id::handle(shard, client, h, r).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => respond(
            h,
            &offset_for_leader_epoch::handle(shard, client, h, r).await,
        ),
        RequestKind::DescribeConfigs(r) => {
            respond(h, &describe_configs::handle(shard, client, h, r))
        }
        RequestKind::AlterConfigs(r) => {
            respond(h, &alter_configs::handle(shard, client, h, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => respond(
            h,
            &incremental_alter_configs::handle(shard, client, h, r).await,
        ),
        RequestKind::DescribeLogDirs(r) => {
            respond(h, &describe_log_dirs::handle(shard, h, r).await)
        }
        RequestKind::AlterReplicaLogDirs(r) => {
            respond(h, &alter_replica_log_dirs::handle(shard, h, r).await)
        }
        RequestKind::DescribeCluster(r) => {
            respond(h, &describe_cluster::handle(shard, h, r, client))
        }
        RequestKind::AlterPartitionReassignments(r) => {
            respond(h, &alter_partition_reassignments::handle(shard, h, r).await)
        }
        RequestKind::ListPartitionReassignments(r) => {
            respond(h, &list_partition_reassignments::handle(shard, h, r).await)
        }
        RequestKind::FindCoordinator(r) => {
            respond(h, &find_coordinator::handle(shard, h, r, client).await)
        }
        RequestKind::ElectLeaders(r) => elect_leaders::handle(shard, h, r).await,
        RequestKind::WriteTxnMarkers(r) => write_txn_markers::handle(shard, h, r).await,
        RequestKind::DescribeProducers(r) => {
            respond(h, &describe_producers::handle(shard, client, h, r).await)
        }
        RequestKind::DescribeUserScramCredentials(r) => {
            respond(h, &user_scram_credentials::describe(shard, h, r))
        }
        RequestKind::AlterUserScramCredentials(r) => {
            respond(h, &user_scram_credentials::alter(shard, h, r).await)
        }
        RequestKind::DescribeAcls(r) => respond(h, &acls::describe(shard, client, r)),
        RequestKind::CreateAcls(r) => respond(h, &acls::create(shard, client, r).await),
        RequestKind::DeleteAcls(r) => respond(h, &acls::delete(shard, client, r).await),
        RequestKind::DescribeClientQuotas(r) => respond(h, &client_quotas::describe(shard, r)),
        RequestKind::AlterClientQuotas(r) => respond(h, &client_quotas::alter(shard, r).await),
        RequestKind::UpdateFeatures(r) => respond(h, &update_features::handle(shard, h, r).await),
        RequestKind::DescribeQuorum(r) => respond(h, &describe_quorum::handle(shard, r).await),
        RequestKind::DescribeTopicPartitions(r) => {
            respond(h, &describe_topic_partitions::handle(shard, client, r))
        }
        RequestKind::ListConfigResources(r) => {
            respond(h, &list_config_resources::handle(shard, client, h, r))
        }
        RequestKind::GetTelemetrySubscriptions(r) => {
            respond(h, &telemetry::get(shard, client, h, r))
        }
        RequestKind::PushTelemetry(r) => respond(h, &telemetry::push(shard, client, h, r)),
        RequestKind::CreateDelegationToken(r) => {
            respond(h, &delegation_tokens::create(shard, client, r).await)
        }
        RequestKind::RenewDelegationToken(r) => {
            respond(h, &delegation_tokens::renew(shard, client, r).await)
        }
        RequestKind::ExpireDelegationToken(r) => {
            respond(h, &delegation_tokens::expire(shard, client, r).await)
        }
        RequestKind::DescribeDelegationToken(r) => {
            respond(h, &delegation_tokens::describe(shard, client, r))
        }
        other @ (RequestKind::SaslHandshake(_) | RequestKind::SaslAuthenticate(_)) => {
            crate::sasl_host::out_of_place(h, &other).unwrap_or(Outcome::Close)
        }
        other => {
            // The API table only admits the keys above; anything else is a table/dispatch mismatch.
            log::error!("no handler for {:?}", std::mem::discriminant(&other));
            Outcome::Close
        }
    }
}

/// Runs `f` for each item concurrently on this shard and returns the results in order.
pub async fn join_all<T: 'static, F>(futs: Vec<F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + 'static,
{
    if futs.len() == 1 {
        let mut futs = futs;
        return vec![futs.pop().expect("one").await];
    }
    let handles: Vec<_> = futs.into_iter().map(glommio::spawn_local).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await);
    }
    out
}

pub fn str_bytes(s: &str) -> sluice_codec::kafka_protocol::protocol::StrBytes {
    sluice_codec::kafka_protocol::protocol::StrBytes::from_string(s.to_string())
}

pub fn topic_name(s: &str) -> sluice_codec::kafka_protocol::messages::TopicName {
    sluice_codec::kafka_protocol::messages::TopicName(str_bytes(s))
}

pub fn uuid(id: &[u8; 16]) -> uuid::Uuid {
    uuid::Uuid::from_bytes(*id)
}

/// KIP-951: where the leader of a partition this broker cannot serve is, for the
/// `CurrentLeader` of a NOT_LEADER_OR_FOLLOWER answer (the response's `NodeEndpoints` then
/// name that leader as the client's listener reaches it, [`ClusterView::broker_on`]), so a
/// client moves to it without a Metadata round trip.
///
/// [`ClusterView::broker_on`]: crate::cluster_view::ClusterView::broker_on
pub(crate) fn current_leader(
    shard: &BrokerShard,
    topic_id: &[u8; 16],
    partition: i32,
) -> crate::cluster_view::LeaderHint {
    let this = shard.config.node_id;
    let replicas = shard
        .topics()
        .get_by_id(topic_id)
        .map(|t| t.replicas_of(partition, this))
        .unwrap_or_default();
    let local = replicas.contains(&this).then(|| {
        shard
            .shared_handle
            .leader_epochs
            .of_partition(*topic_id, partition)
    });
    let view = &shard.shared_handle.cluster_view;
    view.leader_hint(topic_id, partition, &replicas, local)
}
