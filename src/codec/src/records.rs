//! The records inside a v2 batch, read and rewritten in place: what the log cleaner
//! (compaction) needs to keep some records of a batch and drop others without changing a
//! kept record's bytes.
//!
//! A v2 record is `length: varint`, then `attributes: i8`, `timestampDelta: varlong`,
//! `offsetDelta: varint`, `keyLength: varint` (-1: no key), key, `valueLength: varint`
//! (-1: null, a tombstone), value, `headerCount: varint` and the headers. Its offset and
//! timestamp are deltas from the batch header's baseOffset and baseTimestamp, so a record
//! copied unchanged into a batch with the same base keeps its offset and timestamp: a
//! rewritten batch keeps baseOffset, baseTimestamp and lastOffsetDelta (Kafka's cleaner
//! does the same, so consumers move past a batch whose last records were removed).
//!
//! The one exception is KIP-534's delete horizon: a batch that keeps a tombstone is given
//! attributes bit 6 and, in its baseTimestamp field, the time after which the cleaner may
//! remove its tombstones. Readers compute a record's timestamp as baseTimestamp plus its
//! delta, so the kept records' timestampDelta are written anew (relative to the horizon,
//! negative as a rule) and the rest of each record is copied unchanged.
//!
//! Compressed batches hold their records compressed as one payload: they are decompressed
//! under the vendored crate's cap (`DECOMPRESSED_BYTES_MAX`) and recompressed with the same
//! codec. Nothing here panics on hostile bytes: a record that does not parse is an error.

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::batch::{
    offsets, BatchHeader, Compression, DELETE_HORIZON_BIT, RECORD_BATCH_HEADER_LEN,
};
use crate::error::CodecError;

/// One record of a batch, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// The whole record, its length prefix included.
    pub bytes: &'a [u8],
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    /// `None`: the record has no key.
    pub key: Option<&'a [u8]>,
    /// A null value: a tombstone for its key.
    pub tombstone: bool,
    /// The record's attributes byte.
    pub attributes: u8,
    /// The record from its offsetDelta on (what follows attributes and timestampDelta).
    pub tail: &'a [u8],
}

fn invalid(why: &str) -> CodecError {
    CodecError::RecordsInvalid {
        reason: why.to_string(),
    }
}

/// Reads a zigzag varint of at most `max_bytes` bytes.
fn read_varint(buf: &[u8], pos: &mut usize, max_bytes: usize) -> Result<i64, CodecError> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        let b = *buf.get(*pos).ok_or_else(|| invalid("record truncated"))?;
        *pos += 1;
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err(invalid("varint too long"))
}

fn read_i32(buf: &[u8], pos: &mut usize) -> Result<i32, CodecError> {
    let v = read_varint(buf, pos, 5)?;
    i32::try_from(v).map_err(|_| invalid("varint out of i32 range"))
}

/// A length-prefixed field: `None` for -1, an error for other negatives or an overrun.
fn read_field<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, CodecError> {
    let len = read_i32(buf, pos)?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| invalid("negative field length"))?;
    let end = pos
        .checked_add(len)
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| invalid("field past the record"))?;
    let field = &buf[*pos..end];
    *pos = end;
    Ok(Some(field))
}

/// Parses the uncompressed records `raw` (a batch's records section, decompressed), all of
/// it: trailing bytes that are not a whole record are an error.
pub fn parse_records(raw: &[u8]) -> Result<Vec<RawRecord<'_>>, CodecError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let start = pos;
        let len = read_i32(raw, &mut pos)?;
        let len = usize::try_from(len).map_err(|_| invalid("negative record length"))?;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= raw.len())
            .ok_or_else(|| invalid("record past the batch"))?;
        let body = &raw[..end];
        let mut p = pos;
        if p >= end {
            return Err(invalid("empty record"));
        }
        let attributes = body[p];
        p += 1;
        let timestamp_delta = read_varint(body, &mut p, 10)?;
        let tail_at = p;
        let offset_delta = read_i32(body, &mut p)?;
        let key = read_field(body, &mut p)?;
        let value = read_field(body, &mut p)?;
        let headers = read_i32(body, &mut p)?;
        if headers < 0 {
            return Err(invalid("negative header count"));
        }
        for _ in 0..headers {
            read_field(body, &mut p)?.ok_or_else(|| invalid("null header key"))?;
            read_field(body, &mut p)?;
        }
        if p != end {
            return Err(invalid("record length does not match its fields"));
        }
        out.push(RawRecord {
            bytes: &raw[start..end],
            offset_delta,
            timestamp_delta,
            key,
            tombstone: value.is_none(),
            attributes,
            tail: &raw[tail_at..end],
        });
        pos = end;
    }
    Ok(out)
}

/// The records section of `batch` (one whole v2 batch), decompressed.
pub fn records_section(batch: &[u8]) -> Result<Bytes, CodecError> {
    let h = BatchHeader::parse(batch)?;
    let total = h.total_len();
    if batch.len() < total || total < RECORD_BATCH_HEADER_LEN {
        return Err(invalid("batch shorter than its length"));
    }
    let mut payload = Bytes::copy_from_slice(&batch[RECORD_BATCH_HEADER_LEN..total]);
    let compression = h
        .compression()
        .ok_or_else(|| invalid("unknown compression"))?;
    let out = match compression {
        Compression::None => Ok(payload),
        Compression::Gzip => Gzip::decompress(&mut payload, |b| Ok(std::mem::take(b))),
        Compression::Snappy => Snappy::decompress(&mut payload, |b| Ok(std::mem::take(b))),
        Compression::Lz4 => Lz4::decompress(&mut payload, |b| Ok(std::mem::take(b))),
        Compression::Zstd => Zstd::decompress(&mut payload, |b| Ok(std::mem::take(b))),
    };
    out.map_err(|e| invalid(&format!("{e:#}")))
}

/// Appends `v` as a zigzag varint.
fn put_varint(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.extend_from_slice(&[(z as u8) | 0x80]);
        z >>= 7;
    }
    out.extend_from_slice(&[z as u8]);
}

/// Builds a batch from `batch`'s header and the records `kept` (a subset, in order, of its
/// records): baseOffset, lastOffsetDelta, baseTimestamp, maxTimestamp, producer fields and
/// partitionLeaderEpoch stay; recordsCount, batchLength and the CRC follow the records. The
/// records are compressed with the batch's codec; a batch left with no records carries no
/// payload and no codec bit (a consumer never decompresses an empty payload).
///
/// `delete_horizon`: set KIP-534's delete horizon (bit 6, baseTimestamp = the horizon) on a
/// batch that has none; kept records' timestamps stay what they were.
pub fn rebuild_batch(
    batch: &[u8],
    kept: &[RawRecord<'_>],
    delete_horizon: Option<i64>,
) -> Result<Vec<u8>, CodecError> {
    let h = BatchHeader::parse(batch)?;
    let compression = h
        .compression()
        .ok_or_else(|| invalid("unknown compression"))?;
    let horizon = delete_horizon.filter(|_| !h.has_delete_horizon());
    let mut raw = BytesMut::new();
    for r in kept {
        let Some(horizon) = horizon else {
            raw.extend_from_slice(r.bytes);
            continue;
        };
        let timestamp = h.base_timestamp.wrapping_add(r.timestamp_delta);
        let mut body = BytesMut::with_capacity(r.tail.len() + 11);
        body.extend_from_slice(&[r.attributes]);
        put_varint(&mut body, timestamp.wrapping_sub(horizon));
        body.extend_from_slice(r.tail);
        put_varint(&mut raw, body.len() as i64);
        raw.extend_from_slice(&body);
    }
    let mut payload = BytesMut::new();
    let compressed = match (compression, kept.is_empty()) {
        (_, true) => Ok(()),
        (Compression::None, false) => {
            payload = raw;
            Ok(())
        }
        (Compression::Gzip, false) => Gzip::compress(&mut payload, |b| {
            b.extend_from_slice(&raw);
            Ok(())
        }),
        (Compression::Snappy, false) => Snappy::compress(&mut payload, |b| {
            b.extend_from_slice(&raw);
            Ok(())
        }),
        (Compression::Lz4, false) => Lz4::compress(&mut payload, |b| {
            b.extend_from_slice(&raw);
            Ok(())
        }),
        (Compression::Zstd, false) => Zstd::compress(&mut payload, |b| {
            b.extend_from_slice(&raw);
            Ok(())
        }),
    };
    compressed.map_err(|e| invalid(&format!("{e:#}")))?;
    let mut out = Vec::with_capacity(RECORD_BATCH_HEADER_LEN + payload.len());
    out.extend_from_slice(&batch[..RECORD_BATCH_HEADER_LEN]);
    out.extend_from_slice(&payload);
    let batch_length = i32::try_from(out.len() - offsets::PARTITION_LEADER_EPOCH)
        .map_err(|_| invalid("batch too large"))?;
    out[offsets::BATCH_LENGTH..offsets::BATCH_LENGTH + 4]
        .copy_from_slice(&batch_length.to_be_bytes());
    let count = i32::try_from(kept.len()).map_err(|_| invalid("too many records"))?;
    out[offsets::RECORDS_COUNT..offsets::RECORDS_COUNT + 4].copy_from_slice(&count.to_be_bytes());
    let mut attributes = h.attributes;
    if kept.is_empty() {
        attributes &= !0x07;
    }
    if let Some(horizon) = horizon {
        attributes |= DELETE_HORIZON_BIT;
        out[offsets::BASE_TIMESTAMP..offsets::BASE_TIMESTAMP + 8]
            .copy_from_slice(&horizon.to_be_bytes());
    }
    out[offsets::ATTRIBUTES..offsets::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[offsets::ATTRIBUTES..]);
    out[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// A batch of no records spanning `base_offset..=last_offset`: what a reader is given in
/// place of a run of batches compaction emptied, so a consumer moves past the run in one
/// step. Not transactional, no producer; `epoch` is the run's newest partitionLeaderEpoch.
pub fn empty_batch(
    base_offset: i64,
    last_offset: i64,
    epoch: i32,
    base_timestamp: i64,
    max_timestamp: i64,
) -> [u8; RECORD_BATCH_HEADER_LEN] {
    let mut b = [0u8; RECORD_BATCH_HEADER_LEN];
    let delta = i32::try_from(last_offset - base_offset).unwrap_or(i32::MAX);
    b[offsets::BASE_OFFSET..offsets::BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    let batch_length = (RECORD_BATCH_HEADER_LEN - offsets::PARTITION_LEADER_EPOCH) as i32;
    b[offsets::BATCH_LENGTH..offsets::BATCH_LENGTH + 4]
        .copy_from_slice(&batch_length.to_be_bytes());
    b[offsets::PARTITION_LEADER_EPOCH..offsets::PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&epoch.to_be_bytes());
    b[offsets::MAGIC] = crate::batch::MAGIC_V2 as u8;
    b[offsets::LAST_OFFSET_DELTA..offsets::LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&delta.to_be_bytes());
    b[offsets::BASE_TIMESTAMP..offsets::BASE_TIMESTAMP + 8]
        .copy_from_slice(&base_timestamp.to_be_bytes());
    b[offsets::MAX_TIMESTAMP..offsets::MAX_TIMESTAMP + 8]
        .copy_from_slice(&max_timestamp.to_be_bytes());
    b[offsets::PRODUCER_ID..offsets::PRODUCER_ID + 8].copy_from_slice(&(-1i64).to_be_bytes());
    b[offsets::PRODUCER_EPOCH..offsets::PRODUCER_EPOCH + 2].copy_from_slice(&(-1i16).to_be_bytes());
    b[offsets::BASE_SEQUENCE..offsets::BASE_SEQUENCE + 4].copy_from_slice(&(-1i32).to_be_bytes());
    let crc = crc32c::crc32c(&b[offsets::ATTRIBUTES..]);
    b[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression as KpCompression, Record, RecordBatchDecoder, RecordBatchEncoder,
        RecordEncodeOptions, TimestampType,
    };

    fn batch(compression: KpCompression) -> Vec<u8> {
        let records: Vec<Record> = (0..5)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 3,
                producer_id: 7,
                producer_epoch: 1,
                timestamp_type: TimestampType::Creation,
                offset: 100 + i,
                sequence: i as i32,
                timestamp: 1_700_000_000_000 + i,
                key: (i != 2).then(|| Bytes::from(format!("k{}", i % 2))),
                value: (i != 3).then(|| Bytes::from(vec![b'v'; 50 + i as usize])),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    #[test]
    fn records_are_read_and_a_subset_rebuilt_with_offsets_and_timestamps_kept() {
        for c in [
            KpCompression::None,
            KpCompression::Gzip,
            KpCompression::Snappy,
            KpCompression::Lz4,
            KpCompression::Zstd,
        ] {
            let b = batch(c);
            let raw = records_section(&b).unwrap();
            let recs = parse_records(&raw).unwrap();
            assert_eq!(recs.len(), 5, "{c:?}");
            assert_eq!(recs[1].key, Some(&b"k1"[..]));
            assert_eq!(recs[2].key, None);
            assert!(recs[3].tombstone && !recs[4].tombstone);
            assert_eq!(recs[4].offset_delta, 4);
            assert_eq!(recs[4].timestamp_delta, 4);
            // Keep records 1 and 3: the first and last go, the batch's range stays.
            let kept = [recs[1], recs[3]];
            let rebuilt = rebuild_batch(&b, &kept, None).unwrap();
            let h = crate::batch::validate_batch(&rebuilt).unwrap();
            assert_eq!((h.base_offset, h.last_offset_delta), (100, 4), "{c:?}");
            assert_eq!((h.records_count, h.producer_id, h.base_sequence), (2, 7, 0));
            assert_eq!(h.partition_leader_epoch, 3);
            let decoded = RecordBatchDecoder::decode(&mut Bytes::from(rebuilt)).unwrap();
            let got: Vec<(i64, i64)> = decoded
                .records
                .iter()
                .map(|r| (r.offset, r.timestamp))
                .collect();
            assert_eq!(
                got,
                vec![(101, 1_700_000_000_001), (103, 1_700_000_000_003)],
                "{c:?}"
            );
            assert!(decoded.records[1].value.is_none());
            // Emptied: a header only, no codec, the offset range kept.
            let empty = rebuild_batch(&b, &[], None).unwrap();
            let h = crate::batch::validate_batch(&empty).unwrap();
            assert_eq!(empty.len(), RECORD_BATCH_HEADER_LEN);
            assert_eq!((h.records_count, h.last_offset_delta), (0, 4));
            assert_eq!(h.compression(), Some(Compression::None));
        }
    }

    #[test]
    fn a_delete_horizon_moves_the_base_timestamp_and_keeps_record_timestamps() {
        for c in [KpCompression::None, KpCompression::Zstd] {
            let b = batch(c);
            let raw = records_section(&b).unwrap();
            let recs = parse_records(&raw).unwrap();
            let horizon = 1_700_086_400_000;
            let rebuilt = rebuild_batch(&b, &[recs[0], recs[3]], Some(horizon)).unwrap();
            let h = crate::batch::validate_batch(&rebuilt).unwrap();
            assert!(h.has_delete_horizon(), "{c:?}");
            assert_eq!(h.base_timestamp, horizon);
            assert_eq!(h.max_timestamp, 1_700_000_000_004, "maxTimestamp stays");
            let decoded = RecordBatchDecoder::decode(&mut Bytes::from(rebuilt.clone())).unwrap();
            let got: Vec<(i64, i64, bool)> = decoded
                .records
                .iter()
                .map(|r| (r.offset, r.timestamp, r.value.is_none()))
                .collect();
            assert_eq!(
                got,
                vec![
                    (100, 1_700_000_000_000, false),
                    (103, 1_700_000_000_003, true)
                ]
            );
            assert!(decoded.records.iter().all(|r| r.delete_horizon));
            // A horizon already set stays: a later pass does not move it.
            let raw = records_section(&rebuilt).unwrap();
            let again = parse_records(&raw).unwrap();
            let kept = rebuild_batch(&rebuilt, &again[1..], Some(horizon + 5)).unwrap();
            let h = crate::batch::validate_batch(&kept).unwrap();
            assert_eq!(h.base_timestamp, horizon);
            let decoded = RecordBatchDecoder::decode(&mut Bytes::from(kept)).unwrap();
            assert_eq!(decoded.records[0].timestamp, 1_700_000_000_003);
        }
    }

    #[test]
    fn an_empty_batch_spans_its_range_and_validates() {
        let b = empty_batch(10, 25, 4, 1_000, 2_000);
        let h = crate::batch::validate_batch(&b).unwrap();
        assert_eq!(
            (h.base_offset, h.last_offset(), h.records_count),
            (10, 25, 0)
        );
        assert_eq!((h.partition_leader_epoch, h.producer_id), (4, -1));
        assert!(!h.is_transactional() && !h.is_control());
        let decoded = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(&b)).unwrap();
        assert!(decoded.records.is_empty());
    }

    #[test]
    fn damaged_records_are_errors() {
        let b = batch(KpCompression::None);
        let raw = records_section(&b).unwrap();
        for cut in 1..raw.len() {
            // Every proper prefix ends inside a record, or between records.
            let r = parse_records(&raw[..cut]);
            let whole = parse_records(&raw).unwrap();
            let boundary = whole
                .iter()
                .scan(0, |end, r| {
                    *end += r.bytes.len();
                    Some(*end)
                })
                .any(|e| e == cut);
            assert_eq!(r.is_ok(), boundary, "cut at {cut}");
        }
        assert!(parse_records(&[0x01]).is_err(), "negative length");
        assert!(parse_records(&[0xff; 12]).is_err(), "runaway varint");
    }
}
