//! Kafka error codes the coordinator answers with, and `GroupError` for record decoding.

use std::fmt;

/// Kafka protocol error codes used by the group APIs (numbers from Kafka's `Errors` enum).
pub mod code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const INVALID_COMMIT_OFFSET_SIZE: i16 = 28;
    pub const INVALID_REQUEST: i16 = 42;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
    pub const UNSTABLE_OFFSET_COMMIT: i16 = 88;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const FENCED_MEMBER_EPOCH: i16 = 110;
    pub const UNRELEASED_INSTANCE_ID: i16 = 111;
    pub const UNSUPPORTED_ASSIGNOR: i16 = 112;
    pub const STALE_MEMBER_EPOCH: i16 = 113;
    pub const INVALID_REGULAR_EXPRESSION: i16 = 128;
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
