//! Kafka protocol error codes the broker answers with, by their Kafka names; the numbers
//! come from kafka-protocol's `ResponseError` (the one table of them).

use sluice_codec::kafka_protocol::ResponseError;

pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = ResponseError::OffsetOutOfRange.code();
pub const CORRUPT_MESSAGE: i16 = ResponseError::CorruptMessage.code();
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = ResponseError::UnknownTopicOrPartition.code();
pub const LEADER_NOT_AVAILABLE: i16 = ResponseError::LeaderNotAvailable.code();
pub const NOT_LEADER_OR_FOLLOWER: i16 = ResponseError::NotLeaderOrFollower.code();
pub const NOT_ENOUGH_REPLICAS: i16 = ResponseError::NotEnoughReplicas.code();
pub const REQUEST_TIMED_OUT: i16 = ResponseError::RequestTimedOut.code();
pub const MESSAGE_TOO_LARGE: i16 = ResponseError::MessageTooLarge.code();
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = ResponseError::CoordinatorLoadInProgress.code();
pub const COORDINATOR_NOT_AVAILABLE: i16 = ResponseError::CoordinatorNotAvailable.code();
pub const NOT_COORDINATOR: i16 = ResponseError::NotCoordinator.code();
pub const INVALID_TOPIC_EXCEPTION: i16 = ResponseError::InvalidTopicException.code();
pub const RECORD_LIST_TOO_LARGE: i16 = ResponseError::RecordListTooLarge.code();
pub const INVALID_REQUIRED_ACKS: i16 = ResponseError::InvalidRequiredAcks.code();
pub const INVALID_TIMESTAMP: i16 = ResponseError::InvalidTimestamp.code();
pub const TOPIC_AUTHORIZATION_FAILED: i16 = ResponseError::TopicAuthorizationFailed.code();
pub const GROUP_AUTHORIZATION_FAILED: i16 = ResponseError::GroupAuthorizationFailed.code();
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = ResponseError::ClusterAuthorizationFailed.code();
pub const SECURITY_DISABLED: i16 = ResponseError::SecurityDisabled.code();
pub const UNSUPPORTED_VERSION: i16 = ResponseError::UnsupportedVersion.code();
pub const TOPIC_ALREADY_EXISTS: i16 = ResponseError::TopicAlreadyExists.code();
pub const INVALID_PARTITIONS: i16 = ResponseError::InvalidPartitions.code();
pub const INVALID_REPLICATION_FACTOR: i16 = ResponseError::InvalidReplicationFactor.code();
pub const INVALID_REPLICA_ASSIGNMENT: i16 = ResponseError::InvalidReplicaAssignment.code();
pub const NOT_CONTROLLER: i16 = ResponseError::NotController.code();
pub const INVALID_REQUEST: i16 = ResponseError::InvalidRequest.code();
pub const INVALID_UPDATE_VERSION: i16 = ResponseError::InvalidUpdateVersion.code();
pub const INVALID_CONFIG: i16 = ResponseError::InvalidConfig.code();
pub const POLICY_VIOLATION: i16 = ResponseError::PolicyViolation.code();
pub const UNKNOWN_SERVER_ERROR: i16 = ResponseError::UnknownServerError.code();
/// Not a Kafka code: between a produce handler and a partition's owner only ("verify this
/// transactional batch with its coordinator first", see `ops::PartitionOp::Produce`).
pub const VERIFY_TXN: i16 = i16::MIN;
pub const KAFKA_STORAGE_ERROR: i16 = ResponseError::KafkaStorageError.code();
pub const LOG_DIR_NOT_FOUND: i16 = ResponseError::LogDirNotFound.code();
pub const REPLICA_NOT_AVAILABLE: i16 = ResponseError::ReplicaNotAvailable.code();
pub const UNKNOWN_TOPIC_ID: i16 = ResponseError::UnknownTopicId.code();
pub const INCONSISTENT_TOPIC_ID: i16 = ResponseError::InconsistentTopicId.code();
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 =
    ResponseError::TransactionalIdAuthorizationFailed.code();
pub const INVALID_PRODUCER_EPOCH: i16 = ResponseError::InvalidProducerEpoch.code();
pub const RESOURCE_NOT_FOUND: i16 = ResponseError::ResourceNotFound.code();
pub const INVALID_RECORD: i16 = ResponseError::InvalidRecord.code();
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = ResponseError::FetchSessionIdNotFound.code();
pub const INVALID_FETCH_SESSION_EPOCH: i16 = ResponseError::InvalidFetchSessionEpoch.code();
pub const UNKNOWN_LEADER_EPOCH: i16 = ResponseError::UnknownLeaderEpoch.code();
pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = ResponseError::UnsupportedCompressionType.code();
pub const FENCED_LEADER_EPOCH: i16 = ResponseError::FencedLeaderEpoch.code();
pub const OFFSET_NOT_AVAILABLE: i16 = ResponseError::OffsetNotAvailable.code();
pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = ResponseError::PreferredLeaderNotAvailable.code();
pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = ResponseError::EligibleLeadersNotAvailable.code();
pub const ELECTION_NOT_NEEDED: i16 = ResponseError::ElectionNotNeeded.code();
pub const THROTTLING_QUOTA_EXCEEDED: i16 = ResponseError::ThrottlingQuotaExceeded.code();
pub const UNSUPPORTED_SASL_MECHANISM: i16 = ResponseError::UnsupportedSaslMechanism.code();
pub const ILLEGAL_SASL_STATE: i16 = ResponseError::IllegalSaslState.code();
pub const SASL_AUTHENTICATION_FAILED: i16 = ResponseError::SaslAuthenticationFailed.code();

/// Kafka's check of a request's `current_leader_epoch` against the partition's current
/// epoch: -1 (or any negative) skips it; a newer one is UNKNOWN_LEADER_EPOCH (this broker
/// has not caught up yet: the client retries), an older one FENCED_LEADER_EPOCH (the
/// client's metadata is stale: it refreshes).
pub fn check_leader_epoch(requested: i32, current: i32) -> i16 {
    if requested < 0 || requested == current {
        NONE
    } else if requested > current {
        UNKNOWN_LEADER_EPOCH
    } else {
        FENCED_LEADER_EPOCH
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_epoch_check_follows_kafka() {
        assert_eq!(check_leader_epoch(-1, 4), NONE, "no check");
        assert_eq!(check_leader_epoch(4, 4), NONE);
        assert_eq!(check_leader_epoch(5, 4), UNKNOWN_LEADER_EPOCH);
        assert_eq!(check_leader_epoch(3, 4), FENCED_LEADER_EPOCH);
        assert_eq!(check_leader_epoch(0, 0), NONE);
        assert_eq!(check_leader_epoch(1, 0), UNKNOWN_LEADER_EPOCH);
    }
}
