//! RecordBatch v2 (magic 2) headers: parse and validate a batch without decoding its records,
//! walk a blob of concatenated batches, and rewrite header fields in place.
//!
//! Layout (big-endian), from the Kafka protocol:
//!
//! ```text
//!  0 baseOffset i64          8 batchLength i32       12 partitionLeaderEpoch i32
//! 16 magic i8               17 crc u32               21 attributes i16
//! 23 lastOffsetDelta i32    27 baseTimestamp i64     35 maxTimestamp i64
//! 43 producerId i64         51 producerEpoch i16     53 baseSequence i32
//! 57 recordsCount i32       61 records...
//! ```
//!
//! batchLength counts the bytes after itself; the CRC32C covers attributes..end of batch, so
//! baseOffset and partitionLeaderEpoch can be rewritten without touching it.

use std::ops::Range;

use crate::error::CodecError;
use crate::frame::REQUEST_SIZE_MAX_DEFAULT;

/// Byte offsets of the v2 batch header fields.
pub mod offsets {
    /// baseOffset: i64.
    pub const BASE_OFFSET: usize = 0;
    /// batchLength: i32.
    pub const BATCH_LENGTH: usize = 8;
    /// partitionLeaderEpoch: i32.
    pub const PARTITION_LEADER_EPOCH: usize = 12;
    /// magic: i8.
    pub const MAGIC: usize = 16;
    /// crc: u32.
    pub const CRC: usize = 17;
    /// attributes: i16.
    pub const ATTRIBUTES: usize = 21;
    /// lastOffsetDelta: i32.
    pub const LAST_OFFSET_DELTA: usize = 23;
    /// baseTimestamp: i64.
    pub const BASE_TIMESTAMP: usize = 27;
    /// maxTimestamp: i64.
    pub const MAX_TIMESTAMP: usize = 35;
    /// producerId: i64.
    pub const PRODUCER_ID: usize = 43;
    /// producerEpoch: i16.
    pub const PRODUCER_EPOCH: usize = 51;
    /// baseSequence: i32.
    pub const BASE_SEQUENCE: usize = 53;
    /// recordsCount: i32.
    pub const RECORDS_COUNT: usize = 57;
    /// First record.
    pub const RECORDS: usize = 61;
}

/// Size of the fixed v2 batch header.
pub const RECORD_BATCH_HEADER_LEN: usize = 61;

/// baseOffset + batchLength: the bytes not counted by batchLength.
pub const BATCH_LOG_OVERHEAD: usize = 12;

/// Smallest valid batchLength: a header with no records.
pub const BATCH_LENGTH_MIN: usize = RECORD_BATCH_HEADER_LEN - BATCH_LOG_OVERHEAD;

/// The only batch format served.
pub const MAGIC_V2: i8 = 2;

/// Smallest encoded record: length, attributes, timestampDelta, offsetDelta, keyLength,
/// valueLength and header count, one byte each.
pub const RECORD_ENCODED_LEN_MIN: usize = 7;

/// Default cap on one batch's total size for [`BatchIter`]: a batch cannot be larger than the
/// request that carried it.
pub const BATCH_LENGTH_MAX_DEFAULT: usize = REQUEST_SIZE_MAX_DEFAULT;

// Pin the layout: each field starts where the previous one ends, and the header is 61 bytes.
const _: () = assert!(offsets::BATCH_LENGTH == offsets::BASE_OFFSET + 8);
const _: () = assert!(offsets::PARTITION_LEADER_EPOCH == offsets::BATCH_LENGTH + 4);
const _: () = assert!(offsets::MAGIC == offsets::PARTITION_LEADER_EPOCH + 4);
const _: () = assert!(offsets::CRC == offsets::MAGIC + 1);
const _: () = assert!(offsets::ATTRIBUTES == offsets::CRC + 4);
const _: () = assert!(offsets::LAST_OFFSET_DELTA == offsets::ATTRIBUTES + 2);
const _: () = assert!(offsets::BASE_TIMESTAMP == offsets::LAST_OFFSET_DELTA + 4);
const _: () = assert!(offsets::MAX_TIMESTAMP == offsets::BASE_TIMESTAMP + 8);
const _: () = assert!(offsets::PRODUCER_ID == offsets::MAX_TIMESTAMP + 8);
const _: () = assert!(offsets::PRODUCER_EPOCH == offsets::PRODUCER_ID + 8);
const _: () = assert!(offsets::BASE_SEQUENCE == offsets::PRODUCER_EPOCH + 2);
const _: () = assert!(offsets::RECORDS_COUNT == offsets::BASE_SEQUENCE + 4);
const _: () = assert!(offsets::RECORDS == offsets::RECORDS_COUNT + 4);
const _: () = assert!(RECORD_BATCH_HEADER_LEN == 61 && offsets::RECORDS == RECORD_BATCH_HEADER_LEN);
const _: () = assert!(BATCH_LOG_OVERHEAD == offsets::PARTITION_LEADER_EPOCH);
const _: () = assert!(BATCH_LENGTH_MIN == 49);
// Magic sits at byte 16 in every message format, which is what lets us report old formats.
const _: () = assert!(offsets::MAGIC == 16);

/// Attribute bits.
const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;
/// KIP-534: baseTimestamp holds the time after which the cleaner may drop the tombstones.
pub const DELETE_HORIZON_BIT: i16 = 1 << 6;

/// Compression codec of a batch (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// 0
    None,
    /// 1
    Gzip,
    /// 2
    Snappy,
    /// 3
    Lz4,
    /// 4
    Zstd,
}

impl Compression {
    /// Map a codec id; `None` for ids Kafka does not define (5-7).
    pub fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => return None,
        })
    }
}

/// Timestamp type of a batch (attributes bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Timestamps were set by the producer.
    CreateTime,
    /// The broker stamped maxTimestamp at append time.
    LogAppendTime,
}

/// The fixed header fields of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the batchLength field (total batch size minus 12).
    pub batch_length: i32,
    /// Leader epoch stamped by the broker.
    pub partition_leader_epoch: i32,
    /// Format version (2).
    pub magic: i8,
    /// CRC32C of attributes..end.
    pub crc: u32,
    /// Compression, timestamp type, transactional, control and delete-horizon bits.
    pub attributes: i16,
    /// Offset of the last record relative to base_offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp (or the append time with LogAppendTime).
    pub max_timestamp: i64,
    /// Idempotent/transactional producer id, -1 if none.
    pub producer_id: i64,
    /// Producer epoch, -1 if none.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 if none.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

#[inline]
fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
#[inline]
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

impl BatchHeader {
    /// Read the 61 header bytes at the start of `bytes`. Only the length is checked here;
    /// use [`validate_batch`] or [`BatchIter`] for the rest.
    pub fn parse(bytes: &[u8]) -> Result<Self, CodecError> {
        Self::parse_at(bytes, 0)
    }

    fn parse_at(bytes: &[u8], position: usize) -> Result<Self, CodecError> {
        let Some(b) = bytes.get(..RECORD_BATCH_HEADER_LEN) else {
            return Err(CodecError::BatchTruncated {
                position,
                needed: RECORD_BATCH_HEADER_LEN,
                available: bytes.len(),
            });
        };
        // Indexing below stays inside the 61 bytes just checked.
        Ok(BatchHeader {
            base_offset: i64_at(b, offsets::BASE_OFFSET),
            batch_length: i32_at(b, offsets::BATCH_LENGTH),
            partition_leader_epoch: i32_at(b, offsets::PARTITION_LEADER_EPOCH),
            magic: b[offsets::MAGIC] as i8,
            crc: i32_at(b, offsets::CRC) as u32,
            attributes: i16_at(b, offsets::ATTRIBUTES),
            last_offset_delta: i32_at(b, offsets::LAST_OFFSET_DELTA),
            base_timestamp: i64_at(b, offsets::BASE_TIMESTAMP),
            max_timestamp: i64_at(b, offsets::MAX_TIMESTAMP),
            producer_id: i64_at(b, offsets::PRODUCER_ID),
            producer_epoch: i16_at(b, offsets::PRODUCER_EPOCH),
            base_sequence: i32_at(b, offsets::BASE_SEQUENCE),
            records_count: i32_at(b, offsets::RECORDS_COUNT),
        })
    }

    /// Total size of the batch in bytes (12 + batchLength); 0 if batchLength is negative.
    pub fn total_len(&self) -> usize {
        usize::try_from(self.batch_length)
            .map(|n| n.saturating_add(BATCH_LOG_OVERHEAD))
            .unwrap_or(0)
    }

    /// Raw compression codec id (attributes & 7).
    pub fn compression_codec(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }

    /// Compression codec, `None` for an undefined id.
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_id(self.compression_codec())
    }

    /// Timestamp type (attributes bit 3).
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Part of a transaction (attributes bit 4).
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Control batch, i.e. a transaction marker (attributes bit 5).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// baseTimestamp holds the compaction delete horizon (attributes bit 6).
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & DELETE_HORIZON_BIT != 0
    }

    /// Offset of the last record (base_offset + last_offset_delta, saturating).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// Offset following this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }
}

/// Check the header of a batch starting at `bytes[0]` and return the total batch size.
/// `bytes` may extend past the batch. Checks length bounds and overrun only.
fn check_length(
    bytes: &[u8],
    position: usize,
    batch_length_max: usize,
) -> Result<Option<usize>, CodecError> {
    let Some(len_bytes) = bytes.get(offsets::BATCH_LENGTH..offsets::BATCH_LENGTH + 4) else {
        return Ok(None);
    };
    let batch_length = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    let len = usize::try_from(batch_length).unwrap_or(0);
    if len < BATCH_LENGTH_MIN || len.saturating_add(BATCH_LOG_OVERHEAD) > batch_length_max {
        return Err(CodecError::BatchLengthInvalid {
            position,
            batch_length,
            batch_length_max,
        });
    }
    Ok(Some(len + BATCH_LOG_OVERHEAD))
}

/// Validate one complete batch occupying exactly `batch` (`total` bytes, already length-checked).
fn validate_complete(batch: &[u8], position: usize) -> Result<BatchHeader, CodecError> {
    // Magic first: for other formats the remaining fields mean something else.
    let magic = batch.get(offsets::MAGIC).map(|&m| m as i8);
    if let Some(magic) = magic.filter(|&m| m != MAGIC_V2) {
        return Err(CodecError::UnsupportedMagic { position, magic });
    }
    let header = BatchHeader::parse_at(batch, position)?;
    let codec = header.compression_codec();
    let compression =
        Compression::from_id(codec).ok_or(CodecError::UnknownCompression { position, codec })?;
    let counts_ok = header.records_count >= 0
        && header.last_offset_delta >= 0
        // Offset deltas are strictly increasing from 0, so the last one is at least count-1
        // (more after compaction removed records; an emptied batch keeps its delta).
        && (header.records_count == 0 || header.last_offset_delta >= header.records_count - 1);
    if !counts_ok {
        return Err(CodecError::BatchCountsInvalid {
            position,
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    let records_bytes = batch.len() - RECORD_BATCH_HEADER_LEN;
    // Only checkable without decompressing: compressed records can be far smaller than 7 bytes.
    if compression == Compression::None
        && (header.records_count as usize).saturating_mul(RECORD_ENCODED_LEN_MIN) > records_bytes
    {
        return Err(CodecError::BatchRecordsOverflow {
            position,
            records_count: header.records_count,
            records_bytes,
        });
    }
    let computed = crc32c::crc32c(&batch[offsets::ATTRIBUTES..]);
    if computed != header.crc {
        return Err(CodecError::CrcMismatch {
            position,
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Validate a records blob holding exactly one v2 batch (what Produce v3+ must carry per
/// partition): length bounds with no overrun and no trailing bytes, magic, counts, codec id
/// and CRC32C.
pub fn validate_batch(batch: &[u8]) -> Result<BatchHeader, CodecError> {
    let total = match check_length(batch, 0, batch.len().max(RECORD_BATCH_HEADER_LEN))? {
        Some(total) => total,
        None => {
            return Err(CodecError::BatchTruncated {
                position: 0,
                needed: RECORD_BATCH_HEADER_LEN,
                available: batch.len(),
            })
        }
    };
    if total != batch.len() {
        return Err(CodecError::BatchTruncated {
            position: 0,
            needed: total,
            available: batch.len(),
        });
    }
    validate_complete(batch, 0)
}

/// A complete batch found by [`BatchIter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRef<'a> {
    /// Its parsed header.
    pub header: BatchHeader,
    /// Its byte range within the iterated blob (use with `Bytes::slice` for zero-copy).
    pub range: Range<usize>,
    /// Its bytes.
    pub bytes: &'a [u8],
}

/// Trailing bytes that start a batch but do not complete it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialBatch {
    /// Where the partial batch starts in the blob.
    pub position: usize,
    /// Bytes present from `position`.
    pub available: usize,
    /// Total size of the batch, if its length field was present (and plausible).
    pub needed: Option<usize>,
}

/// What [`BatchIter`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchItem<'a> {
    /// A complete, validated batch.
    Batch(BatchRef<'a>),
    /// The blob ends inside a batch. Normal at the end of a fetch response (Kafka may cut
    /// the last batch); a torn write when recovering a log segment. Always the last item.
    Partial(PartialBatch),
}

/// Iterator over a blob of concatenated v2 batches (a fetch payload, a log segment).
///
/// Each complete batch is validated; the first error ends the iteration, since the bytes
/// after a corrupt batch cannot be trusted to start at a batch boundary. Allocates nothing.
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    records: &'a [u8],
    pos: usize,
    batch_length_max: usize,
    done: bool,
}

impl<'a> BatchIter<'a> {
    /// Iterate over `records` with [`BATCH_LENGTH_MAX_DEFAULT`].
    pub fn new(records: &'a [u8]) -> Self {
        Self {
            records,
            pos: 0,
            batch_length_max: BATCH_LENGTH_MAX_DEFAULT,
            done: false,
        }
    }

    /// Reject batches whose total size exceeds `batch_length_max` (e.g. a topic's
    /// max.message.bytes plus log overhead), before looking at their contents.
    pub fn with_batch_length_max(mut self, batch_length_max: usize) -> Self {
        self.batch_length_max = batch_length_max;
        self
    }

    /// Byte position of the next batch: after iteration ends cleanly or on a partial batch,
    /// the length of the valid prefix (where a recovering log should truncate).
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<BatchItem<'a>, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.records.get(self.pos..).unwrap_or_default();
        if rest.is_empty() {
            self.done = true;
            return None;
        }
        let position = self.pos;
        let total = match check_length(rest, position, self.batch_length_max) {
            Ok(total) => total,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let Some(batch) = total.and_then(|t| rest.get(..t)) else {
            self.done = true;
            return Some(Ok(BatchItem::Partial(PartialBatch {
                position,
                available: rest.len(),
                needed: total,
            })));
        };
        match validate_complete(batch, position) {
            Ok(header) => {
                self.pos = position + batch.len();
                Some(Ok(BatchItem::Batch(BatchRef {
                    header,
                    range: position..self.pos,
                    bytes: batch,
                })))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn header_mut(batch: &mut [u8]) -> Result<&mut [u8], CodecError> {
    let available = batch.len();
    batch
        .get_mut(..RECORD_BATCH_HEADER_LEN)
        .ok_or(CodecError::BatchTruncated {
            position: 0,
            needed: RECORD_BATCH_HEADER_LEN,
            available,
        })
}

/// Overwrite baseOffset in place (outside the CRC: no recompute).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) -> Result<(), CodecError> {
    let h = header_mut(batch)?;
    h[offsets::BASE_OFFSET..offsets::BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    Ok(())
}

/// Overwrite partitionLeaderEpoch in place (outside the CRC: no recompute).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) -> Result<(), CodecError> {
    let h = header_mut(batch)?;
    h[offsets::PARTITION_LEADER_EPOCH..offsets::PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&epoch.to_be_bytes());
    Ok(())
}

/// Stamp a batch for `message.timestamp.type=LogAppendTime`: set the timestamp-type bit and
/// maxTimestamp to `append_time_ms`, then recompute the CRC (both fields are covered by it).
///
/// Call only on a batch that passed validation: the CRC is recomputed from the bytes, so
/// earlier corruption would otherwise be laundered. `batch` must hold the whole batch
/// (its batchLength must fit). Skips the CRC pass when nothing changes, as Kafka does.
pub fn set_log_append_time(batch: &mut [u8], append_time_ms: i64) -> Result<(), CodecError> {
    let header = BatchHeader::parse(batch)?;
    let total = check_length(batch, 0, batch.len().max(RECORD_BATCH_HEADER_LEN))?
        .filter(|&t| t <= batch.len())
        .ok_or(CodecError::BatchTruncated {
            position: 0,
            needed: header.total_len().max(RECORD_BATCH_HEADER_LEN),
            available: batch.len(),
        })?;
    if header.timestamp_type() == TimestampType::LogAppendTime
        && header.max_timestamp == append_time_ms
    {
        return Ok(());
    }
    let attributes = header.attributes | TIMESTAMP_TYPE_BIT;
    batch[offsets::ATTRIBUTES..offsets::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[offsets::MAX_TIMESTAMP..offsets::MAX_TIMESTAMP + 8]
        .copy_from_slice(&append_time_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[offsets::ATTRIBUTES..total]);
    batch[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Test helpers for building batches by hand (shared with the crate's other tests).
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// zigzag varint as used by records.
    pub fn put_varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }

    /// One record: no key, the given value, no headers.
    pub fn record(offset_delta: i64, value: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.push(0); // attributes
        put_varint(&mut body, 0); // timestampDelta
        put_varint(&mut body, offset_delta);
        put_varint(&mut body, -1); // null key
        put_varint(&mut body, value.len() as i64);
        body.extend_from_slice(value);
        put_varint(&mut body, 0); // headers
        let mut rec = Vec::new();
        put_varint(&mut rec, body.len() as i64);
        rec.extend(body);
        rec
    }

    /// A valid uncompressed batch of `values.len()` records.
    pub fn build_batch(base_offset: i64, values: &[&[u8]]) -> Vec<u8> {
        let mut records = Vec::new();
        for (i, v) in values.iter().enumerate() {
            records.extend(record(i as i64, v));
        }
        let mut b = Vec::new();
        b.extend_from_slice(&base_offset.to_be_bytes());
        let batch_length = (RECORD_BATCH_HEADER_LEN - BATCH_LOG_OVERHEAD + records.len()) as i32;
        b.extend_from_slice(&batch_length.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // partitionLeaderEpoch
        b.push(MAGIC_V2 as u8);
        b.extend_from_slice(&[0; 4]); // crc, filled below
        b.extend_from_slice(&0i16.to_be_bytes()); // attributes
        let last_delta = values.len().saturating_sub(1) as i32;
        b.extend_from_slice(&last_delta.to_be_bytes());
        b.extend_from_slice(&1_000i64.to_be_bytes()); // baseTimestamp
        b.extend_from_slice(&1_000i64.to_be_bytes()); // maxTimestamp
        b.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
        b.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
        b.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
        b.extend_from_slice(&(values.len() as i32).to_be_bytes());
        assert_eq!(b.len(), RECORD_BATCH_HEADER_LEN);
        b.extend(records);
        fix_crc(&mut b);
        b
    }

    /// Recompute the CRC after a test edits covered bytes.
    pub fn fix_crc(b: &mut [u8]) {
        let crc = crc32c::crc32c(&b[offsets::ATTRIBUTES..]);
        b[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn hand_built_batch_validates() {
        let b = build_batch(100, &[b"hello"]);
        assert_eq!(b.len(), 61 + 12);
        let h = validate_batch(&b).unwrap();
        assert_eq!(h.base_offset, 100);
        assert_eq!(h.batch_length as usize, b.len() - 12);
        assert_eq!(h.total_len(), b.len());
        assert_eq!(h.magic, 2);
        assert_eq!(h.records_count, 1);
        assert_eq!(h.last_offset(), 100);
        assert_eq!(h.next_offset(), 101);
        assert_eq!(h.compression(), Some(Compression::None));
        assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
        assert!(!h.is_transactional() && !h.is_control() && !h.has_delete_horizon());
        assert_eq!(h.producer_id, -1);
        assert_eq!(h.max_timestamp, 1_000);
    }

    #[test]
    fn attribute_bits() {
        let mut b = build_batch(0, &[b"x"]);
        let attrs: i16 = 4 | (1 << 3) | (1 << 4) | (1 << 5);
        b[offsets::ATTRIBUTES..offsets::ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.compression(), Some(Compression::Zstd));
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert!(h.is_transactional() && h.is_control());
        b[offsets::ATTRIBUTES + 1] = 6;
        fix_crc(&mut b);
        assert!(matches!(
            validate_batch(&b),
            Err(CodecError::UnknownCompression { codec: 6, .. })
        ));
    }

    #[test]
    fn corrupted_variants_are_rejected_with_codes() {
        let good = build_batch(0, &[b"hello", b"world"]);

        let mut b = good.clone();
        b[offsets::MAGIC] = 1;
        let e = validate_batch(&b).unwrap_err();
        assert!(matches!(e, CodecError::UnsupportedMagic { magic: 1, .. }));
        assert_eq!(e.kafka_error_code(), 43);
        b[offsets::MAGIC] = 7;
        assert_eq!(validate_batch(&b).unwrap_err().kafka_error_code(), 2);

        let mut b = good.clone();
        *b.last_mut().unwrap() ^= 0xff;
        let e = validate_batch(&b).unwrap_err();
        assert!(matches!(e, CodecError::CrcMismatch { .. }));
        assert_eq!(e.kafka_error_code(), 2);

        // batchLength too small, negative, and larger than the bytes.
        for len in [48i32, -1, i32::MAX, good.len() as i32 - 11] {
            let mut b = good.clone();
            b[8..12].copy_from_slice(&len.to_be_bytes());
            let e = validate_batch(&b).unwrap_err();
            assert_eq!(e.kafka_error_code(), 2, "{e}");
        }
        // trailing garbage after the single batch
        let mut b = good.clone();
        b.push(0);
        assert!(matches!(
            validate_batch(&b),
            Err(CodecError::BatchTruncated { .. })
        ));
        // truncated
        assert!(validate_batch(&good[..good.len() - 1]).is_err());
        assert!(validate_batch(&good[..10]).is_err());
        assert!(validate_batch(&[]).is_err());

        // counts
        for (count, delta) in [(-1i32, 0i32), (2, -1), (3, 1), (1000, 999)] {
            let mut b = good.clone();
            b[offsets::RECORDS_COUNT..offsets::RECORDS_COUNT + 4]
                .copy_from_slice(&count.to_be_bytes());
            b[offsets::LAST_OFFSET_DELTA..offsets::LAST_OFFSET_DELTA + 4]
                .copy_from_slice(&delta.to_be_bytes());
            fix_crc(&mut b);
            let e = validate_batch(&b).unwrap_err();
            assert!(
                matches!(
                    e,
                    CodecError::BatchCountsInvalid { .. } | CodecError::BatchRecordsOverflow { .. }
                ),
                "{e}"
            );
        }
        // unchanged copy still fine
        assert!(validate_batch(&good).is_ok());
    }

    #[test]
    fn iterates_batches_and_reports_partial_tail() {
        let a = build_batch(0, &[b"a"]);
        let b = build_batch(1, &[b"b", b"bb"]);
        let mut blob = a.clone();
        blob.extend(&b);
        let full_len = blob.len();
        blob.extend(&a[..20]);

        let mut it = BatchIter::new(&blob);
        let items: Vec<_> = it.by_ref().collect::<Result<_, _>>().unwrap();
        assert_eq!(items.len(), 3);
        let BatchItem::Batch(first) = &items[0] else {
            panic!()
        };
        assert_eq!(first.range, 0..a.len());
        let BatchItem::Batch(second) = &items[1] else {
            panic!()
        };
        assert_eq!(second.header.base_offset, 1);
        assert_eq!(second.header.records_count, 2);
        assert_eq!(second.bytes, &b[..]);
        assert_eq!(
            items[2],
            BatchItem::Partial(PartialBatch {
                position: full_len,
                available: 20,
                needed: Some(a.len())
            })
        );
        assert_eq!(it.position(), full_len);

        // A tail too short to carry the length field.
        let mut it = BatchIter::new(&blob[..a.len() + 5]);
        assert!(matches!(it.next(), Some(Ok(BatchItem::Batch(_)))));
        assert!(matches!(
            it.next(),
            Some(Ok(BatchItem::Partial(PartialBatch {
                needed: None,
                available: 5,
                ..
            })))
        ));
        assert!(it.next().is_none());
        assert!(BatchIter::new(&[]).next().is_none());
    }

    #[test]
    fn iteration_stops_at_first_corrupt_batch_and_honours_max() {
        let a = build_batch(0, &[b"a"]);
        let mut blob = a.clone();
        blob.extend(&a);
        let n = blob.len();
        blob[n - 1] ^= 1;
        let mut it = BatchIter::new(&blob);
        assert!(matches!(it.next(), Some(Ok(BatchItem::Batch(_)))));
        assert!(
            matches!(it.next(), Some(Err(CodecError::CrcMismatch { position, .. })) if position == a.len())
        );
        assert!(it.next().is_none());
        assert_eq!(it.position(), a.len());

        let mut it = BatchIter::new(&blob).with_batch_length_max(a.len() - 1);
        assert!(matches!(
            it.next(),
            Some(Err(CodecError::BatchLengthInvalid { .. }))
        ));
        assert!(it.next().is_none());
    }

    #[test]
    fn in_place_rewrites() {
        let mut b = build_batch(0, &[b"hello"]);
        set_base_offset(&mut b, 12_345).unwrap();
        set_partition_leader_epoch(&mut b, 7).unwrap();
        let h = validate_batch(&b).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch), (12_345, 7));

        set_log_append_time(&mut b, 99_999).unwrap();
        let h = validate_batch(&b).unwrap();
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(h.max_timestamp, 99_999);
        assert_eq!(h.base_timestamp, 1_000);
        // idempotent
        let before = b.clone();
        set_log_append_time(&mut b, 99_999).unwrap();
        assert_eq!(b, before);

        assert!(set_base_offset(&mut [0u8; 60], 1).is_err());
        assert!(set_partition_leader_epoch(&mut [0u8; 3], 1).is_err());
        let n = b.len();
        assert!(set_log_append_time(&mut b[..n - 1], 1).is_err());
        assert!(set_log_append_time(&mut [0u8; 61], 1).is_err());
    }
}
