//! Errors of the storage crate, each with the context needed to act on it and a Kafka error code.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Every way a partition log operation can fail.
#[derive(Debug)]
pub enum StorageError {
    /// A file operation failed.
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A batch failed validation on append; nothing was written.
    CorruptBatch { reason: String },
    /// A batch is larger than `max.message.bytes` (or the hard limit).
    BatchTooLarge { size: usize, max: usize },
    /// A fetch or seek asked for an offset outside `[log_start_offset, high_watermark]`.
    OffsetOutOfRange {
        requested: i64,
        log_start_offset: i64,
        high_watermark: i64,
    },
    /// An earlier write or fsync failed: the partition refuses writes rather than pretend.
    Failed { partition: String, cause: String },
    /// Idempotence: the producer epoch is older than the one we know.
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// Idempotence: a gap or reorder in sequence numbers.
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    /// Idempotence: the partition's producer table is full ([`crate::producer::PRODUCERS_PER_PARTITION_MAX`])
    /// and this producer id is not in it; nothing was written.
    ProducersFull { producer_id: i64, max: usize },
    /// Transactions: a producer with a transaction open in this partition wrote a batch
    /// outside it (Kafka: INVALID_TXN_STATE).
    InvalidTxnState { producer_id: i64 },
    /// Transactions: a marker from a coordinator older than one whose marker this partition
    /// already took (Kafka: TRANSACTION_COORDINATOR_FENCED).
    CoordinatorFenced {
        producer_id: i64,
        coordinator_epoch: i32,
        current: i32,
    },
    /// A named limit was hit.
    Limit {
        what: &'static str,
        value: u64,
        max: u64,
    },
    /// A configuration value is out of its allowed range.
    InvalidConfig { name: &'static str, value: String },
    /// The partition was deleted (its topic is gone) while the operation was under way.
    Deleted { partition: String },
    /// The log was closed (the broker is shutting down): nothing more is appended, because
    /// nothing would flush it.
    Closed { partition: String },
    /// A truncation of the log's suffix is under way (the replica is a follower catching
    /// up): nothing is appended until it ends.
    Truncating { partition: String },
    /// A follower append or truncation that does not fit the log (a batch not at the log
    /// end, an older leader epoch, a cut inside a batch): the replication layer is out of
    /// step with the log; nothing was changed.
    ReplicaMismatch { partition: String, reason: String },
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The Kafka protocol error code a client should see for this error.
    pub fn kafka_error_code(&self) -> i16 {
        use sluice_codec::kafka_protocol::ResponseError as R;
        match self {
            StorageError::Io { .. } | StorageError::Failed { .. } => R::KafkaStorageError.code(),
            StorageError::CorruptBatch { .. } => R::CorruptMessage.code(),
            StorageError::BatchTooLarge { .. } => R::MessageTooLarge.code(),
            StorageError::OffsetOutOfRange { .. } => R::OffsetOutOfRange.code(),
            StorageError::InvalidProducerEpoch { .. } => R::InvalidProducerEpoch.code(),
            StorageError::OutOfOrderSequence { .. } => R::OutOfOrderSequenceNumber.code(),
            // Kafka has no such limit, so no code of its own. NOT_ENOUGH_REPLICAS is one every
            // client retries and knows was not written (librdkafka: RETRY|MSG_NOT_PERSISTED;
            // Java: a RetriableException): the producer retries the same batch, same
            // sequence, until room frees up or its delivery.timeout.ms ends. KAFKA_STORAGE_ERROR
            // would also be retried but tells operators the disk failed; REQUEST_TIMED_OUT
            // means "possibly written"; THROTTLING_QUOTA_EXCEEDED is a permanent (not retried)
            // produce error to librdkafka.
            StorageError::ProducersFull { .. } => R::NotEnoughReplicas.code(),
            StorageError::InvalidTxnState { .. } => R::InvalidTxnState.code(),
            StorageError::CoordinatorFenced { .. } => R::TransactionCoordinatorFenced.code(),
            StorageError::Limit { .. } => R::KafkaStorageError.code(),
            StorageError::InvalidConfig { .. } => R::InvalidConfig.code(),
            StorageError::Deleted { .. } => R::UnknownTopicOrPartition.code(),
            // What Kafka answers once a stopping broker no longer leads the partition: the
            // client refreshes its metadata and retries.
            StorageError::Closed { .. } => R::NotLeaderOrFollower.code(),
            // A replica that is truncating is a follower: a client is sent to the leader.
            StorageError::Truncating { .. } => R::NotLeaderOrFollower.code(),
            // Internal to replication; never a client's fault.
            StorageError::ReplicaMismatch { .. } => R::UnknownServerError.code(),
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { op, path, source } => {
                write!(f, "{op} {}: {source}", path.display())
            }
            StorageError::CorruptBatch { reason } => write!(f, "corrupt record batch: {reason}"),
            StorageError::BatchTooLarge { size, max } => {
                write!(f, "record batch of {size} bytes exceeds the limit of {max}")
            }
            StorageError::OffsetOutOfRange {
                requested,
                log_start_offset,
                high_watermark,
            } => {
                write!(
                    f,
                    "offset {requested} outside [{log_start_offset}, {high_watermark}]"
                )
            }
            StorageError::Failed { partition, cause } => {
                write!(
                    f,
                    "partition {partition} refuses writes after a failed write: {cause}"
                )
            }
            StorageError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current,
            } => write!(
                f,
                "producer {producer_id} epoch {epoch} is older than current epoch {current}"
            ),
            StorageError::OutOfOrderSequence {
                producer_id,
                expected,
                got,
            } => write!(
                f,
                "producer {producer_id}: expected sequence {expected}, got {got}"
            ),
            StorageError::ProducersFull { producer_id, max } => write!(
                f,
                "producer {producer_id} refused: the partition already holds the state of \
                 {max} producers (they expire after producer.id.expiration.ms)"
            ),
            StorageError::InvalidTxnState { producer_id } => write!(
                f,
                "producer {producer_id} has a transaction open here and wrote outside it"
            ),
            StorageError::CoordinatorFenced {
                producer_id,
                coordinator_epoch,
                current,
            } => write!(
                f,
                "producer {producer_id}: marker from coordinator epoch {coordinator_epoch}, \
                 older than {current}"
            ),
            StorageError::Limit { what, value, max } => {
                write!(f, "{what} is {value}, over the limit of {max}")
            }
            StorageError::InvalidConfig { name, value } => {
                write!(f, "invalid value {value:?} for {name}")
            }
            StorageError::Deleted { partition } => write!(f, "partition {partition} was deleted"),
            StorageError::Closed { partition } => {
                write!(
                    f,
                    "partition {partition} is closed (the broker is stopping)"
                )
            }
            StorageError::Truncating { partition } => {
                write!(f, "partition {partition} is truncating its log")
            }
            StorageError::ReplicaMismatch { partition, reason } => {
                write!(f, "partition {partition}: replica append refused: {reason}")
            }
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
