//! What the coordinator asks its driver to do: reply, persist a state record, write
//! transaction markers, wake it later.

use bytes::Bytes;

/// Opaque handle for a request awaiting its answer, chosen by the driver (e.g. connection id
/// and correlation id packed together). Every token given to the coordinator is answered
/// exactly once, possibly by a later call than the one that brought it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyToken(pub u64);

/// Names one `Persist` effect in [`crate::TxnCoordinator::persisted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteId(pub u64);

/// An answer for the driver to encode at the request's version. A fenced producer's error is
/// PRODUCER_FENCED; map it with [`crate::fenced_code`] for requests older than KIP-588.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// InitProducerId. `producer_id`/`producer_epoch` are -1 with an error.
    InitProducerId {
        error: i16,
        producer_id: i64,
        producer_epoch: i16,
    },
    /// AddPartitionsToTxn (the same code for every partition of the request) or
    /// AddOffsetsToTxn.
    AddPartitions { error: i16 },
    /// EndTxn, with the producer id and epoch to use next (EndTxn v5, transaction version
    /// 2: the epoch was bumped, or the id rotated; -1/-1 otherwise and with an error).
    EndTxn {
        error: i16,
        producer_id: i64,
        producer_epoch: i16,
    },
}

/// COMMIT or ABORT control batches to write, one per partition, with the producer's id and
/// epoch and this coordinator's epoch (WriteTxnMarkers' fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
    pub partitions: Vec<(String, i32)>,
}

/// An action for the driver. The effects of one call are ordered; perform them in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send the reply for the token now.
    Reply(ReplyToken, Reply),
    /// Append the record (`value: None` is a tombstone) to this coordinator's
    /// `__transaction_state` partition, wait until it is durable (on a replicated partition:
    /// committed on a quorum), then call `persisted(write, Ok(()))`. On failure call
    /// `persisted(write, Err(code))` with NOT_COORDINATOR when this replica no longer leads
    /// the partition (then drop this coordinator and build a new one from the log when it
    /// leads again), COORDINATOR_NOT_AVAILABLE when a retry may succeed here. A failed
    /// write changes nothing in memory; if it became durable after all, the id's next write
    /// supersedes it, and no marker is ever written for a Prepare record not confirmed.
    Persist {
        write: WriteId,
        key: Bytes,
        value: Option<Bytes>,
    },
    /// Write the markers to every partition (through each partition's leader), retrying
    /// each until its leader accepts it or the partition no longer exists, then call
    /// `markers_written` with the same id and epoch. Until then the transaction stays in
    /// PrepareCommit/PrepareAbort and its producer gets CONCURRENT_TRANSACTIONS.
    WriteMarkers(Markers),
    /// Call `tick(now)` at (or after) `at_ms`. Earlier ticks are harmless; keep one timer at
    /// the earliest hint held.
    ScheduleTick { at_ms: i64 },
}
