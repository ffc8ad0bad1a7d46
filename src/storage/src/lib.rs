//! Partition log storage: segments of Kafka RecordBatch v2 bytes with sparse indexes, group
//! commit, crash recovery, retention and idempotent-producer state.
//!
//! Boundary invariants:
//! - The log does no IO of its own: everything goes through [`io::Storage`], which the
//!   shard runtime implements with glommio DMA files and tests implement with `std::fs`
//!   ([`std_io`]) or with injected faults ([`fault`]). The one exception is the offline
//!   verifier ([`verify`], `sluice verify`), a read-only tool that uses `std::fs` directly.
//! - A [`log::PartitionLog`] belongs to one shard and is `!Send`; it is never touched from
//!   another thread.
//! - Appends are memory-only; a batch is durable (and visible to readers) once a flush that
//!   started after its append has returned.

pub mod cache;
pub mod config;
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
pub mod verify;

pub use cache::{BatchCache, CachedBatch, RequestSharing};
pub use config::LogConfig;
pub use error::{Result, StorageError};
pub use log::{Appended, FlushTiming, PartitionLog, ReadOutcome};

#[cfg(test)]
mod log_tests;
#[cfg(test)]
mod replica_tests;
