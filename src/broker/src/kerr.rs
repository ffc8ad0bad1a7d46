//! Kafka protocol error codes the broker answers with.

pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const RECORD_LIST_TOO_LARGE: i16 = 18;
pub const INVALID_REQUIRED_ACKS: i16 = 21;
pub const INVALID_TIMESTAMP: i16 = 32;
pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub const SECURITY_DISABLED: i16 = 54;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
pub const NOT_CONTROLLER: i16 = 41;
pub const INVALID_REQUEST: i16 = 42;
pub const INVALID_CONFIG: i16 = 40;
pub const POLICY_VIOLATION: i16 = 44;
pub const UNKNOWN_SERVER_ERROR: i16 = -1;
/// Not a Kafka code: between a produce handler and a partition's owner only ("verify this
/// transactional batch with its coordinator first", see `ops::PartitionOp::Produce`).
pub const VERIFY_TXN: i16 = i16::MIN;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const UNKNOWN_TOPIC_ID: i16 = 100;
pub const INCONSISTENT_TOPIC_ID: i16 = 103;
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const RESOURCE_NOT_FOUND: i16 = 91;
pub const INVALID_RECORD: i16 = 87;
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
pub const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
pub const FENCED_LEADER_EPOCH: i16 = 74;
pub const OFFSET_NOT_AVAILABLE: i16 = 78;
pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
pub const ELECTION_NOT_NEEDED: i16 = 84;
pub const THROTTLING_QUOTA_EXCEEDED: i16 = 89;
pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
pub const ILLEGAL_SASL_STATE: i16 = 34;
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;

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
