//! Kafka error codes the transaction coordinator answers with, and `TxnError` for records
//! that do not decode.

use std::fmt;

/// Kafka protocol error codes used by the transaction APIs (numbers from kafka-protocol's
/// `ResponseError`, which mirrors Kafka's `Errors`).
pub mod code {
    use sluice_codec::kafka_protocol::ResponseError;

    pub const NONE: i16 = 0;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = ResponseError::CoordinatorLoadInProgress.code();
    pub const COORDINATOR_NOT_AVAILABLE: i16 = ResponseError::CoordinatorNotAvailable.code();
    pub const NOT_COORDINATOR: i16 = ResponseError::NotCoordinator.code();
    pub const INVALID_REQUEST: i16 = ResponseError::InvalidRequest.code();
    pub const INVALID_PRODUCER_EPOCH: i16 = ResponseError::InvalidProducerEpoch.code();
    pub const INVALID_TXN_STATE: i16 = ResponseError::InvalidTxnState.code();
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = ResponseError::InvalidProducerIdMapping.code();
    pub const INVALID_TRANSACTION_TIMEOUT: i16 = ResponseError::InvalidTransactionTimeout.code();
    pub const CONCURRENT_TRANSACTIONS: i16 = ResponseError::ConcurrentTransactions.code();
    pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = ResponseError::TransactionalIdNotFound.code();
    pub const PRODUCER_FENCED: i16 = ResponseError::ProducerFenced.code();
}

/// The APIs whose fencing error depends on the request version (KIP-588).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FencedApi {
    InitProducerId,
    AddPartitionsToTxn,
    AddOffsetsToTxn,
    EndTxn,
    TxnOffsetCommit,
}

/// The code a fenced producer gets at `version`: PRODUCER_FENCED where the request version
/// knows it, INVALID_PRODUCER_EPOCH (which older clients treat the same way) before
/// (InitProducerId v4, AddPartitionsToTxn v2, AddOffsetsToTxn v2, EndTxn v2, TxnOffsetCommit
/// v3 introduced it, as Kafka's KafkaApis maps it).
pub fn fenced_code(api: FencedApi, version: i16) -> i16 {
    let first = match api {
        FencedApi::InitProducerId => 4,
        FencedApi::AddPartitionsToTxn | FencedApi::AddOffsetsToTxn | FencedApi::EndTxn => 2,
        FencedApi::TxnOffsetCommit => 3,
    };
    if version < first {
        code::INVALID_PRODUCER_EPOCH
    } else {
        code::PRODUCER_FENCED
    }
}

/// Why a `__transaction_state` record could not be decoded during replay. Replay skips such
/// records (the caller decides whether to log); they never panic or abort loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnError {
    /// The record ended before the field `field` was complete.
    Truncated { field: &'static str },
    /// A string field was not UTF-8.
    NotUtf8 { field: &'static str },
    /// A length or count was negative where that is not allowed, or larger than the record.
    BadLength { field: &'static str, len: i64 },
    /// A key or value schema version this coordinator does not know.
    UnknownVersion { what: &'static str, version: i16 },
    /// A transaction status byte outside Kafka's `TransactionState` ids.
    UnknownState(i8),
}

impl fmt::Display for TxnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxnError::Truncated { field } => write!(f, "truncated at field {field}"),
            TxnError::NotUtf8 { field } => write!(f, "field {field} is not UTF-8"),
            TxnError::BadLength { field, len } => {
                write!(f, "field {field} has invalid length {len}")
            }
            TxnError::UnknownVersion { what, version } => {
                write!(f, "unknown {what} version {version}")
            }
            TxnError::UnknownState(s) => write!(f, "unknown transaction state {s}"),
        }
    }
}

impl std::error::Error for TxnError {}
