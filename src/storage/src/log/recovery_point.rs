//! The recovery point of a partition log: how far its tail segment was known durable, with
//! what a scan of that prefix would rebuild (its indexes and max timestamp, its aborted
//! transactions, the producer state at its end), so that an open after an unclean stop reads
//! and CRC-checks only the bytes written after it (Kafka's `recovery-point-offset-checkpoint`,
//! one small file per partition here, as the tail's index lives in memory until its roll).
//!
//! Invariants:
//! - It is captured by a write stage, from the log as that stage took its buffers (the tail
//!   ends at a batch boundary then, and the producer state is as of that end), and written
//!   only after the sync of that stage made those bytes durable, and after the leader-epoch
//!   checkpoint holding every epoch that starts before it (the capturing stage writes a
//!   deferred one first, as a stage that seals a segment does).
//! - Open uses it only if it names the tail segment, lies within the tail's file, and the
//!   batch that ends at it is still there, field for field (offsets, leader epoch, length,
//!   CRC). A truncation removes the file first; one written while a truncation ran, or left
//!   by a crash between the two, describes bytes that may have changed, which that check
//!   catches: a replicated log's batches with the same offsets and leader epoch are the same
//!   batches, prefix included (Raft's log matching), and nothing else rewrites the active
//!   segment's bytes (the cleaner and merges take closed segments only).
//! - The bytes before it are trusted as Kafka trusts those before its recovery point: they
//!   were fdatasynced, and a rewrite of the shared tail page carries them unchanged.
//! - It only saves time: a missing, damaged or stale file means a full scan of the tail, as
//!   without one; failing to write one is logged, never a failure of the log.

use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::format::{self, Kind, SEALED_BODY_BYTES_MAX};
use crate::hdr::{Header, HEADER_BYTES};
use crate::index::{OffsetIndex, TimeIndex};
use crate::io::{Storage, StorageFile};
use crate::producer::{ProducerState, SNAPSHOT_BODY_VERSION};
use crate::txn::{AbortedTxn, ABORTED_TXN_BYTES};

use super::recovery::read_listed_sealed;
use super::{Inner, PartitionLog, Segment};

/// The file, in the partition's directory.
pub const RECOVERY_POINT_FILE: &str = "recovery-point";
/// A close writes a recovery point when the tail grew at least this much past the last one
/// (a smaller tail is scanned about as fast as the file is read).
pub const RECOVERY_POINT_AT_CLOSE_BYTES_MIN: u64 = 1024 * 1024;

/// A captured recovery point, sealed and ready to write once its bytes are durable.
pub(super) struct RecoveryPoint {
    /// `Inner::truncations` at the capture: after a truncation it is not written.
    pub(super) generation: u64,
    pub(super) base: i64,
    pub(super) size: u64,
    pub(super) sealed: Vec<u8>,
}

/// What a recovery point gives the open of the tail segment: its state at `size` bytes.
pub(super) struct Loaded {
    pub(super) size: u64,
    pub(super) next_offset: i64,
    pub(super) max_timestamp: i64,
    pub(super) offset_of_max_timestamp: i64,
    pub(super) bytes_since_index: u64,
    /// The batch that ends the prefix, as found in the file.
    pub(super) last_batch: Option<(u64, Header)>,
    pub(super) index: OffsetIndex,
    pub(super) time_index: TimeIndex,
    pub(super) aborted: Vec<AbortedTxn>,
    pub(super) producers: ProducerState,
}

/// The batch a recovery point says ends its prefix: where it starts, and the header fields
/// the open compares with the file's.
struct LastBatch {
    pos: u64,
    base_offset: i64,
    size: usize,
    leader_epoch: i32,
    crc: u32,
    last_offset_delta: i32,
}

impl Loaded {
    /// Puts the prefix's state into the tail segment (its file and tail page are the open's).
    pub(super) fn fill<F: StorageFile>(self, seg: &mut Segment<F>) -> ProducerState {
        seg.size = self.size;
        seg.next_offset = self.next_offset;
        seg.max_timestamp = self.max_timestamp;
        seg.offset_of_max_timestamp = self.offset_of_max_timestamp;
        seg.bytes_since_index = self.bytes_since_index;
        seg.last_batch = self.last_batch;
        seg.index = self.index;
        seg.time_index = self.time_index;
        seg.aborted = self.aborted;
        self.producers
    }
}

impl<F: StorageFile> Inner<F> {
    /// A recovery point of the tail as it is now, if it grew at least `min_gap` bytes past
    /// `last` (the base and size of the last one captured). The caller makes it durable
    /// before it is written.
    pub(super) fn capture_recovery_point(
        &self,
        last: (i64, u64),
        min_gap: u64,
    ) -> Option<RecoveryPoint> {
        let seg = self.active();
        let (last_pos, last_header) = seg.last_batch?;
        let gap = if seg.base_offset == last.0 {
            seg.size.saturating_sub(last.1)
        } else {
            seg.size
        };
        if seg.rolled || seg.size == 0 || gap < min_gap.max(1) {
            return None;
        }
        assert_eq!(
            last_pos + last_header.size as u64,
            seg.size,
            "the tail's last batch ends it"
        );
        let index = seg.index.encode();
        let time_index = seg.time_index.encode();
        let mut body = Vec::with_capacity(
            80 + index.len() + time_index.len() + seg.aborted.len() * ABORTED_TXN_BYTES,
        );
        body.extend_from_slice(&last_pos.to_be_bytes());
        body.extend_from_slice(&last_header.base_offset.to_be_bytes());
        body.extend_from_slice(&(last_header.size as u32).to_be_bytes());
        body.extend_from_slice(&last_header.leader_epoch.to_be_bytes());
        body.extend_from_slice(&last_header.crc.to_be_bytes());
        body.extend_from_slice(&last_header.last_offset_delta.to_be_bytes());
        body.extend_from_slice(&seg.max_timestamp.to_be_bytes());
        body.extend_from_slice(&seg.offset_of_max_timestamp.to_be_bytes());
        body.extend_from_slice(&seg.bytes_since_index.to_be_bytes());
        for section in [&index, &time_index] {
            body.extend_from_slice(&(section.len() as u32).to_be_bytes());
            body.extend_from_slice(section);
        }
        body.extend_from_slice(&((seg.aborted.len() * ABORTED_TXN_BYTES) as u32).to_be_bytes());
        for t in &seg.aborted {
            t.encode(&mut body);
        }
        self.producers.encode(&mut body);
        if body.len() > SEALED_BODY_BYTES_MAX {
            return None; // the open scans the tail, as without one
        }
        let sealed = format::seal(
            Kind::RecoveryPoint,
            [
                seg.base_offset,
                seg.size as i64,
                seg.next_offset,
                SNAPSHOT_BODY_VERSION,
            ],
            &body,
        );
        Some(RecoveryPoint {
            generation: self.truncations,
            base: seg.base_offset,
            size: seg.size,
            sealed,
        })
    }
}

impl<S: Storage> PartitionLog<S> {
    /// Writes the recovery point a sync made ready, if any and if no truncation came since
    /// its capture. Called by the flusher beside its syncs, after [`Self::flush`], at close.
    pub(super) async fn write_recovery_point(&self) {
        let Some(rp) = self.recovery_point_ready.take() else {
            return;
        };
        {
            // A truncation under way waits for a writer that started before it (its removal
            // of the file must come after any replacement); none starts during it.
            let inner = self.inner.borrow();
            if rp.generation != inner.truncations || inner.truncating {
                return;
            }
        }
        // One writer at a time (they share the file's temporary name). Two meet only when a
        // flush races the flusher: this one is skipped (the next comes an interval on, or at
        // close).
        if self.recovery_point_writing.replace(true) {
            return;
        }
        struct Writing<'a, S: Storage>(&'a PartitionLog<S>);
        impl<S: Storage> Drop for Writing<'_, S> {
            fn drop(&mut self) {
                self.0.recovery_point_writing.set(false);
                self.0.flush_waiters.wake_all();
            }
        }
        let _writing = Writing(self);
        // Not into a directory being removed (`retire_and_fence` waits for this).
        let Ok(_op) = self.begin_path_op() else {
            return;
        };
        // Replaced atomically: a crash mid-write leaves the previous one, still valid.
        let path = self.dir.join(RECOVERY_POINT_FILE);
        match crate::durable_file::replace_file(&*self.storage, &self.dir, &path, &rp.sealed).await
        {
            Ok(()) => log::trace!(
                "{}: recovery point at segment {} byte {}",
                self.name,
                rp.base,
                rp.size
            ),
            Err(e) => log::warn!("{}: recovery point not written: {e}", self.name),
        }
    }

    /// Removes the recovery point (a truncation, before it cuts the bytes it describes),
    /// once a writer that started before the truncation is done.
    pub(super) async fn remove_recovery_point(&self) -> Result<()> {
        self.wait_flush_state(|| !self.recovery_point_writing.get())
            .await;
        let path = self.dir.join(RECOVERY_POINT_FILE);
        self.storage
            .remove(&path)
            .await
            .map_err(|e| StorageError::io("remove", &path, e))
    }
}

/// The recovery point in `dir`, if it describes a prefix of the tail segment `base` (whose
/// file holds `file_size` bytes) that is still there; `None` means: scan the whole tail.
pub(super) async fn load<S: Storage>(
    storage: &S,
    dir: &Path,
    names: &[PathBuf],
    base: i64,
    file: &S::File,
    file_size: u64,
) -> Result<Option<Loaded>> {
    let path = dir.join(RECOVERY_POINT_FILE);
    let Some((meta, body)) = read_listed_sealed(storage, &path, Kind::RecoveryPoint, names).await?
    else {
        return Ok(None);
    };
    let [at_base, size, next_offset, version] = meta;
    if at_base != base || size <= 0 || size as u64 > file_size {
        return Ok(None);
    }
    let size = size as u64;
    let Some((expected, mut loaded)) = decode(&body, base, size, next_offset, version) else {
        return Ok(None);
    };
    let path = super::segment_path(dir, base, "log");
    let bytes = file
        .read_at(expected.pos, HEADER_BYTES)
        .await
        .map_err(|e| StorageError::io("read", &path, e))?;
    let Some(found) = Header::parse(&bytes) else {
        return Ok(None);
    };
    let same = found.base_offset == expected.base_offset
        && found.size == expected.size
        && found.leader_epoch == expected.leader_epoch
        && found.crc == expected.crc
        && found.last_offset_delta == expected.last_offset_delta
        && found.magic == 2;
    if !same {
        return Ok(None);
    }
    loaded.last_batch = Some((expected.pos, found));
    Ok(Some(loaded))
}

/// Parses a recovery point's body; `None` if anything is malformed or inconsistent.
fn decode(
    body: &[u8],
    base: i64,
    size: u64,
    next_offset: i64,
    version: i64,
) -> Option<(LastBatch, Loaded)> {
    let mut r = body;
    fn take<const N: usize>(r: &mut &[u8]) -> Option<[u8; N]> {
        let (head, rest) = r.split_first_chunk::<N>()?;
        *r = rest;
        Some(*head)
    }
    fn section<'a>(r: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(take(r)?) as usize;
        if len > r.len() {
            return None;
        }
        let (s, rest) = r.split_at(len);
        *r = rest;
        Some(s)
    }
    let pos = u64::from_be_bytes(take(&mut r)?);
    let base_offset = i64::from_be_bytes(take(&mut r)?);
    let batch_size = u32::from_be_bytes(take(&mut r)?) as usize;
    let leader_epoch = i32::from_be_bytes(take(&mut r)?);
    let crc = u32::from_be_bytes(take(&mut r)?);
    let last_offset_delta = i32::from_be_bytes(take(&mut r)?);
    let max_timestamp = i64::from_be_bytes(take(&mut r)?);
    let offset_of_max_timestamp = i64::from_be_bytes(take(&mut r)?);
    let bytes_since_index = u64::from_be_bytes(take(&mut r)?);
    let index = OffsetIndex::decode(section(&mut r)?, size)?;
    let time_index = TimeIndex::decode(section(&mut r)?)?;
    let aborted = AbortedTxn::decode_all(section(&mut r)?).ok()?;
    let producers = ProducerState::decode(r, version)?;
    // Every offset it names lies in the prefix (the open appends after these).
    let span = next_offset.checked_sub(base).unwrap_or(-1);
    let consistent = batch_size >= HEADER_BYTES
        && pos.checked_add(batch_size as u64) == Some(size)
        && base_offset >= base
        && last_offset_delta >= 0
        && base_offset.checked_add(last_offset_delta as i64 + 1) == Some(next_offset)
        && span > 0
        && span <= u32::MAX as i64
        && index.entries().last().is_none_or(|e| (e.0 as i64) < span)
        && time_index
            .entries()
            .last()
            .is_none_or(|e| (e.1 as i64) < span)
        && (offset_of_max_timestamp == -1
            || (base..next_offset).contains(&offset_of_max_timestamp))
        && aborted.last().is_none_or(|t| t.last_offset < next_offset);
    if !consistent {
        return None;
    }
    let expected = LastBatch {
        pos,
        base_offset,
        size: batch_size,
        leader_epoch,
        crc,
        last_offset_delta,
    };
    Some((
        expected,
        Loaded {
            size,
            next_offset,
            max_timestamp,
            offset_of_max_timestamp,
            bytes_since_index,
            last_batch: None,
            index,
            time_index,
            aborted,
            producers,
        },
    ))
}
