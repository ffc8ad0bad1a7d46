//! Authorization of the APIs Kafka checks on the cluster resource as a whole
//! (DescribeLogDirs, AlterReplicaLogDirs, ElectLeaders, partition reassignments, SCRAM users, client quotas,
//! feature levels, the controller quorum, WriteTxnMarkers):
//! under `--authorizer acl`, a client without the operation gets Kafka's
//! CLUSTER_AUTHORIZATION_FAILED in the shape each response has, and the handler never runs.

use sluice_codec::kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use sluice_codec::kafka_protocol::messages::elect_leaders_response::{
    PartitionResult, ReplicaElectionResult,
};
use sluice_codec::kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use sluice_codec::kafka_protocol::messages::{
    alter_client_quotas_response, AlterClientQuotasResponse, AlterPartitionReassignmentsResponse,
    AlterUserScramCredentialsResponse, DescribeClientQuotasResponse, DescribeLogDirsResponse,
    DescribeUserScramCredentialsResponse, ElectLeadersResponse, ListPartitionReassignmentsResponse,
    RequestKind, WriteTxnMarkersResponse,
};
use sluice_codec::RequestHeaderInfo;
use sluice_meta::acl::AclOperation;

use super::{respond, str_bytes};
use crate::authz;
use crate::conn::{Client, Outcome};
use crate::kerr::CLUSTER_AUTHORIZATION_FAILED as DENIED;
use crate::shard::BrokerShard;

const MESSAGE: &str = "Cluster authorization failed.";

/// The operation on the cluster the request needs, for the APIs checked only so.
fn operation(body: &RequestKind) -> Option<AclOperation> {
    Some(match body {
        RequestKind::DescribeLogDirs(_)
        | RequestKind::DescribeQuorum(_)
        | RequestKind::ListPartitionReassignments(_)
        | RequestKind::DescribeUserScramCredentials(_) => AclOperation::Describe,
        RequestKind::ElectLeaders(_)
        | RequestKind::AlterReplicaLogDirs(_)
        | RequestKind::AlterPartitionReassignments(_)
        | RequestKind::AlterUserScramCredentials(_)
        | RequestKind::UpdateFeatures(_) => AclOperation::Alter,
        RequestKind::WriteTxnMarkers(_) => AclOperation::ClusterAction,
        RequestKind::DescribeClientQuotas(_) => AclOperation::DescribeConfigs,
        RequestKind::AlterClientQuotas(_) => AclOperation::AlterConfigs,
        _ => return None,
    })
}

/// The refusal to send instead of running the request, if the client may not.
pub fn refused(
    shard: &BrokerShard,
    client: &Client,
    h: &RequestHeaderInfo,
    body: &RequestKind,
) -> Option<Outcome> {
    let op = operation(body)?;
    if authz::cluster_allowed(shard, client, op) {
        return None;
    }
    Some(match body {
        RequestKind::DescribeLogDirs(_) => respond(
            h,
            &DescribeLogDirsResponse::default().with_error_code(DENIED),
        ),
        RequestKind::ListPartitionReassignments(_) => respond(
            h,
            &ListPartitionReassignmentsResponse::default()
                .with_error_code(DENIED)
                .with_error_message(Some(str_bytes(MESSAGE))),
        ),
        RequestKind::DescribeUserScramCredentials(_) => respond(
            h,
            &DescribeUserScramCredentialsResponse::default()
                .with_error_code(DENIED)
                .with_error_message(Some(str_bytes(MESSAGE))),
        ),
        RequestKind::DescribeClientQuotas(_) => respond(
            h,
            &DescribeClientQuotasResponse::default()
                .with_error_code(DENIED)
                .with_error_message(Some(str_bytes(MESSAGE))),
        ),
        RequestKind::AlterClientQuotas(r) => {
            let entries = r
                .entries
                .iter()
                .map(|e| {
                    alter_client_quotas_response::EntryData::default()
                        .with_error_code(DENIED)
                        .with_error_message(Some(str_bytes(MESSAGE)))
                        .with_entity(
                            e.entity
                                .iter()
                                .map(|d| {
                                    alter_client_quotas_response::EntityData::default()
                                        .with_entity_type(d.entity_type.clone())
                                        .with_entity_name(d.entity_name.clone())
                                })
                                .collect(),
                        )
                })
                .collect();
            respond(
                h,
                &AlterClientQuotasResponse::default().with_entries(entries),
            )
        }
        RequestKind::DescribeQuorum(_) => {
            respond(h, &super::describe_quorum::whole(DENIED, MESSAGE))
        }
        RequestKind::AlterReplicaLogDirs(r) => {
            respond(h, &super::alter_replica_log_dirs::refuse_all(r, DENIED))
        }
        RequestKind::UpdateFeatures(_) => {
            respond(h, &super::update_features::whole(DENIED, MESSAGE))
        }
        RequestKind::AlterPartitionReassignments(_) => respond(
            h,
            &AlterPartitionReassignmentsResponse::default()
                .with_error_code(DENIED)
                .with_error_message(Some(str_bytes(MESSAGE))),
        ),
        RequestKind::AlterUserScramCredentials(r) => {
            let users = r
                .deletions
                .iter()
                .map(|d| &d.name)
                .chain(r.upsertions.iter().map(|u| &u.name));
            let results = users
                .map(|u| {
                    AlterUserScramCredentialsResult::default()
                        .with_user(u.clone())
                        .with_error_code(DENIED)
                        .with_error_message(Some(str_bytes(MESSAGE)))
                })
                .collect();
            respond(
                h,
                &AlterUserScramCredentialsResponse::default().with_results(results),
            )
        }
        RequestKind::ElectLeaders(r) => {
            let results = r
                .topic_partitions
                .iter()
                .flatten()
                .map(|t| {
                    ReplicaElectionResult::default()
                        .with_topic(t.topic.clone())
                        .with_partition_result(
                            t.partitions
                                .iter()
                                .map(|&p| {
                                    PartitionResult::default()
                                        .with_partition_id(p)
                                        .with_error_code(DENIED)
                                        .with_error_message(Some(str_bytes(MESSAGE)))
                                })
                                .collect(),
                        )
                })
                .collect();
            respond(
                h,
                &ElectLeadersResponse::default()
                    .with_error_code(DENIED)
                    .with_replica_election_results(results),
            )
        }
        RequestKind::WriteTxnMarkers(r) => {
            let markers = r
                .markers
                .iter()
                .map(|m| {
                    WritableTxnMarkerResult::default()
                        .with_producer_id(m.producer_id)
                        .with_topics(
                            m.topics
                                .iter()
                                .map(|t| {
                                    WritableTxnMarkerTopicResult::default()
                                        .with_name(t.name.clone())
                                        .with_partitions(
                                            t.partition_indexes
                                                .iter()
                                                .map(|&p| {
                                                    WritableTxnMarkerPartitionResult::default()
                                                        .with_partition_index(p)
                                                        .with_error_code(DENIED)
                                                })
                                                .collect(),
                                        )
                                })
                                .collect(),
                        )
                })
                .collect();
            respond(h, &WriteTxnMarkersResponse::default().with_markers(markers))
        }
        _ => unreachable!("operation() lists only the APIs above"),
    })
}
