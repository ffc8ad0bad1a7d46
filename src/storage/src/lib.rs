//! Partition log storage: segments of Kafka RecordBatch v2 bytes with sparse indexes, group
//! commit, crash recovery, retention, idempotent-producer state, and the follower's side of
//! replication (appends at the leader's offsets, truncation, the leader-epoch history).
//! Transactions, the partition's side: each producer's open transaction, markers that end
//! them (`append_marker`), the aborted ones per segment, the last stable offset and
//! read_committed reads (`txn`, `producer`, `log`). Log compaction: which records of a
//! compacted log stay ([`compact`]) and the cleaner's passes (`PartitionLog::compact`).
//!
//! Boundary invariants:
//! - The log does no IO of its own: everything goes through [`io::Storage`], which the
//!   shard runtime implements with glommio DMA files and tests implement with `std::fs`
//!   ([`std_io`]) or with injected faults ([`fault`]). The one exception is the offline
//!   verifier ([`verify`], `sluice verify`), a read-only tool that uses `std::fs` directly.
//! - A [`log::PartitionLog`] belongs to one shard and is `!Send`; it is never touched from
//!   another thread.
//! - Appends are memory-only; a batch is durable (and visible to readers) once a flush that
//!   started after its append has returned. A Raft replica's log (`set_replicated`) shows
//!   readers only what is also below Raft's high watermark (`set_high_watermark`): reads,
//!   long-polls, offset lookups, DeleteRecords and retention stop there, and only
//!   replication's own reads (`read_replica`) go on to the durable end. Its retention is
//!   decided by Raft: `retention_offset` says where retention would start the log without
//!   deleting anything.
//! - Offsets in a log are dense and its segments contiguous. A leader's append assigns the
//!   next offset and stamps the current leader epoch (the newest in the log's history, or
//!   one begun since with `begin_epoch`; epochs never go back); a follower's (`append_at`) must be at the log
//!   end and keeps the leader's bytes. A truncation (`truncate_to`) cuts at a batch boundary,
//!   never below the committed offset, and is durable when it returns: nothing it removed
//!   comes back after a crash (see `log::replica`).
//! - A segment leaves a log through [`io::Storage::discard`]: out of the log's names when the
//!   call returns (removed, or renamed to end in [`io::DISCARDED_SUFFIX`], which `open`
//!   sweeps), its blocks freed later and in steps by the implementation, never under a
//!   reader that still holds the segment's handle.
//! - The leader-epoch history ([`leader_epoch`]) holds an entry for each epoch's first
//!   batch; its checkpoint is written before that batch can be durable, and cut on
//!   truncation and to the recovered end on open.
//! - Compaction never removes a batch, only records in it: offsets, Raft indexes, producer
//!   state and the leader-epoch history survive a pass, and a rewritten segment replaces
//!   its original whole (rename) or not at all.

pub mod cache;
pub mod compact;
pub mod config;
pub mod control;
mod durable_file;
pub mod error;
pub mod fault;
pub mod format;
pub mod hdr;
pub mod index;
pub mod io;
pub mod leader_epoch;
pub mod log;
pub mod notify;
pub mod producer;
pub mod std_io;
pub mod txn;
pub mod verify;

pub use cache::{BatchCache, CachedBatch, RequestSharing};
pub use config::LogConfig;
pub use error::{Result, StorageError};
pub use log::{Appended, CommittedRead, FlushTiming, PartitionLog, ReadOutcome};

#[cfg(test)]
mod compact_tests;
#[cfg(test)]
mod log_tests;
#[cfg(test)]
mod read_ahead_tests;
#[cfg(test)]
mod recovery_point_tests;
#[cfg(test)]
mod replica_tests;
#[cfg(test)]
mod txn_tests;
