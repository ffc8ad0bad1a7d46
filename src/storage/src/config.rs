//! Per-partition log settings (Kafka topic config names and defaults) and the hard limits.

use crate::error::{Result, StorageError};

/// Hard cap on one record batch whatever `max.message.bytes` says (guards allocations).
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Segment positions are stored as `u32` in the offset index.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Smallest segment Kafka accepts (`segment.bytes` has at least 14 bytes; we want a page).
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest configured write buffer (`write_buffer_bytes`).
pub const WRITE_CHUNK_BYTES_MAX: usize = 1024 * 1024;
/// A busy partition's write buffer grows to hold what arrives between two flushes, up to
/// this, so one flush is one large write rather than many 1 MiB ones (larger direct writes
/// run faster on every disk we measured). A single batch larger than this still gets a
/// buffer of its own size.
pub const WRITE_BUFFER_GROWN_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Smallest `segment.index.bytes` (Kafka's minimum: one 4-byte slot; such an index is
/// always full, so every batch starts a segment).
pub const SEGMENT_INDEX_BYTES_MIN: u32 = 4;
/// Largest `segment.index.bytes` honoured: an index is written in one sealed file, whose
/// body is capped (Kafka accepts up to `i32::MAX`; larger values act as this).
pub const SEGMENT_INDEX_BYTES_MAX: u32 = crate::format::SEALED_BODY_BYTES_MAX as u32;
/// Bytes of one offset index entry (relative offset, position), as in Kafka.
pub const OFFSET_INDEX_ENTRY_BYTES: u32 = 8;
/// Bytes of one time index entry (timestamp, relative offset), as in Kafka.
pub const TIME_INDEX_ENTRY_BYTES: u32 = 12;
/// Segments one partition may hold open before retention must catch up.
pub const SEGMENTS_PER_PARTITION_MAX: usize = 65_536;

/// Default `recovery_point_interval_bytes`: at most ~64 MiB of each partition's tail to
/// read and CRC-check after a kill -9 (0.05–0.15 s at the 0.45–1.4 GiB/s a tail scan ran
/// at here: perf/results/2026-12-07-recovery-point.md), for rewriting the
/// tail's indexes once per 64 MiB (a 1 GiB tail's are ~5 MiB at 4 KiB batches, ~1.3 MiB at
/// 16 KiB ones: over a segment's life about 4 % and 1 % more bytes written).
pub const RECOVERY_POINT_INTERVAL_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// Settings of one partition's log. Names follow Apache Kafka's topic configs.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment when it would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment once it is this old (and not empty).
    pub segment_ms: i64,
    /// `retention.ms`: delete closed segments whose newest record is older (-1: keep).
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest closed segments while the log is larger (-1: keep).
    pub retention_bytes: i64,
    /// `max.message.bytes`: largest record batch accepted.
    pub max_message_bytes: usize,
    /// `index.interval.bytes`: bytes between sparse offset index entries.
    pub index_interval_bytes: u32,
    /// `segment.index.bytes`: the active segment rolls when its offset or time index would
    /// outgrow this (Kafka's rule), which also bounds the index files written at roll.
    pub segment_index_bytes: u32,
    /// `message.timestamp.type` = LogAppendTime.
    pub log_append_time: bool,
    /// Size of the aligned buffer that collects appends between flushes.
    pub write_buffer_bytes: usize,
    /// `cleanup.policy` includes `compact`: the log cleaner keeps the latest record per key
    /// ([`crate::compact`], `PartitionLog::compact`).
    pub compact: bool,
    /// `delete.retention.ms`: how long a tombstone stays readable once written (its batch's
    /// newest timestamp is older than this) before the cleaner may remove it.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: segments holding a record younger than this are not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`: the cleaner rewrites a log only when this share of its
    /// cleanable bytes was written since its last cleaning.
    pub min_cleanable_dirty_ratio: f64,
    /// `max.compaction.lag.ms`: a log whose oldest dirty segment's newest record is older
    /// than this is cleaned whatever its dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// Bytes the tail segment grows past its last recovery point before a flush records a
    /// new one (not a Kafka config: Kafka checkpoints every
    /// `log.flush.offset.checkpoint.interval.ms` and keeps its indexes in files). Recovery
    /// after an unclean stop scans at most about this much per partition; each recovery
    /// point rewrites the tail's indexes, so smaller values write more.
    pub recovery_point_interval_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 * 1024 * 1024,
            log_append_time: false,
            write_buffer_bytes: 256 * 1024,
            compact: false,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_compaction_lag_ms: 0,
            min_cleanable_dirty_ratio: 0.5,
            max_compaction_lag_ms: i64::MAX,
            recovery_point_interval_bytes: RECOVERY_POINT_INTERVAL_BYTES_DEFAULT,
        }
    }
}

impl LogConfig {
    /// Checks every value against its allowed range.
    pub fn validate(&self) -> Result<()> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(StorageError::InvalidConfig {
                name: "segment.bytes",
                value: self.segment_bytes.to_string(),
            });
        }
        if self.segment_ms < 1 {
            return Err(StorageError::InvalidConfig {
                name: "segment.ms",
                value: self.segment_ms.to_string(),
            });
        }
        if self.retention_ms < -1 {
            return Err(StorageError::InvalidConfig {
                name: "retention.ms",
                value: self.retention_ms.to_string(),
            });
        }
        if self.retention_bytes < -1 {
            return Err(StorageError::InvalidConfig {
                name: "retention.bytes",
                value: self.retention_bytes.to_string(),
            });
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > BATCH_BYTES_MAX {
            return Err(StorageError::InvalidConfig {
                name: "max.message.bytes",
                value: self.max_message_bytes.to_string(),
            });
        }
        if !(SEGMENT_INDEX_BYTES_MIN..=SEGMENT_INDEX_BYTES_MAX).contains(&self.segment_index_bytes)
        {
            return Err(StorageError::InvalidConfig {
                name: "segment.index.bytes",
                value: self.segment_index_bytes.to_string(),
            });
        }
        if self.write_buffer_bytes < crate::io::PAGE_SIZE
            || self.write_buffer_bytes > WRITE_CHUNK_BYTES_MAX
        {
            return Err(StorageError::InvalidConfig {
                name: "write_buffer_bytes",
                value: self.write_buffer_bytes.to_string(),
            });
        }
        Ok(())
    }
}
