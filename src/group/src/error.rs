//! Kafka error codes the coordinator answers with, and `GroupError` for record decoding.

use std::fmt;

/// Kafka protocol error codes used by the group APIs (numbers from kafka-protocol's
/// `ResponseError`, which mirrors Kafka's `Errors` enum).
pub mod code {
    use sluice_codec::kafka_protocol::ResponseError;

    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = ResponseError::UnknownServerError.code();
    pub const COORDINATOR_NOT_AVAILABLE: i16 = ResponseError::CoordinatorNotAvailable.code();
    pub const NOT_COORDINATOR: i16 = ResponseError::NotCoordinator.code();
    pub const ILLEGAL_GENERATION: i16 = ResponseError::IllegalGeneration.code();
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = ResponseError::InconsistentGroupProtocol.code();
    pub const INVALID_GROUP_ID: i16 = ResponseError::InvalidGroupId.code();
    pub const UNKNOWN_MEMBER_ID: i16 = ResponseError::UnknownMemberId.code();
    pub const INVALID_SESSION_TIMEOUT: i16 = ResponseError::InvalidSessionTimeout.code();
    pub const REBALANCE_IN_PROGRESS: i16 = ResponseError::RebalanceInProgress.code();
    pub const OFFSET_METADATA_TOO_LARGE: i16 = ResponseError::OffsetMetadataTooLarge.code();
    pub const INVALID_COMMIT_OFFSET_SIZE: i16 = ResponseError::InvalidCommitOffsetSize.code();
    pub const INVALID_REQUEST: i16 = ResponseError::InvalidRequest.code();
    pub const NON_EMPTY_GROUP: i16 = ResponseError::NonEmptyGroup.code();
    pub const GROUP_ID_NOT_FOUND: i16 = ResponseError::GroupIdNotFound.code();
    pub const MEMBER_ID_REQUIRED: i16 = ResponseError::MemberIdRequired.code();
    pub const GROUP_MAX_SIZE_REACHED: i16 = ResponseError::GroupMaxSizeReached.code();
    pub const FENCED_INSTANCE_ID: i16 = ResponseError::FencedInstanceId.code();
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = ResponseError::GroupSubscribedToTopic.code();
    pub const UNSTABLE_OFFSET_COMMIT: i16 = ResponseError::UnstableOffsetCommit.code();
    pub const UNSUPPORTED_VERSION: i16 = ResponseError::UnsupportedVersion.code();
    pub const FENCED_MEMBER_EPOCH: i16 = ResponseError::FencedMemberEpoch.code();
    pub const UNRELEASED_INSTANCE_ID: i16 = ResponseError::UnreleasedInstanceId.code();
    pub const UNSUPPORTED_ASSIGNOR: i16 = ResponseError::UnsupportedAssignor.code();
    pub const STALE_MEMBER_EPOCH: i16 = ResponseError::StaleMemberEpoch.code();
    pub const INVALID_REGULAR_EXPRESSION: i16 = ResponseError::InvalidRegularExpression.code();
}

/// Why a `__consumer_offsets` record could not be decoded during replay. Replay skips such
/// records (the caller decides whether to log); they never panic or abort loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupError {
    /// The record ended before the field `field` of `what` was complete.
    Truncated {
        what: &'static str,
        field: &'static str,
    },
    /// A string field was not UTF-8.
    NotUtf8 {
        what: &'static str,
        field: &'static str,
    },
    /// A length or count was negative where that is not allowed, or absurdly large.
    BadLength {
        what: &'static str,
        field: &'static str,
        len: i64,
    },
    /// A value record's schema version this coordinator does not know.
    UnknownValueVersion { what: &'static str, version: i16 },
    /// A value record arrived for a key version whose value we never write or read.
    UnsupportedKeyVersion { version: i16 },
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupError::Truncated { what, field } => {
                write!(f, "{what}: truncated at field {field}")
            }
            GroupError::NotUtf8 { what, field } => write!(f, "{what}: field {field} is not UTF-8"),
            GroupError::BadLength { what, field, len } => {
                write!(f, "{what}: field {field} has invalid length {len}")
            }
            GroupError::UnknownValueVersion { what, version } => {
                write!(f, "{what}: unknown value version {version}")
            }
            GroupError::UnsupportedKeyVersion { version } => {
                write!(
                    f,
                    "__consumer_offsets key version {version} is not supported"
                )
            }
        }
    }
}

impl std::error::Error for GroupError {}
