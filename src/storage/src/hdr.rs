//! The few RecordBatch v2 header fields the log needs, read at fixed offsets.

use sluice_codec::batch::{self as codec_batch, offsets, BatchHeader};

/// Size of the RecordBatch v2 header (everything before the first record).
pub const HEADER_BYTES: usize = codec_batch::RECORD_BATCH_HEADER_LEN;
/// `baseOffset` + `batchLength`: the part not counted by `batchLength`.
pub const LOG_OVERHEAD: usize = codec_batch::BATCH_LOG_OVERHEAD;

// Field offsets: the codec's, under the names the log and its tools use.
pub const OFF_BASE_OFFSET: usize = offsets::BASE_OFFSET;
pub const OFF_LENGTH: usize = offsets::BATCH_LENGTH;
pub const OFF_LEADER_EPOCH: usize = offsets::PARTITION_LEADER_EPOCH;
pub const OFF_MAGIC: usize = offsets::MAGIC;
pub const OFF_CRC: usize = offsets::CRC;
pub const OFF_ATTRIBUTES: usize = offsets::ATTRIBUTES;
pub const OFF_LAST_OFFSET_DELTA: usize = offsets::LAST_OFFSET_DELTA;
pub const OFF_BASE_TIMESTAMP: usize = offsets::BASE_TIMESTAMP;
pub const OFF_MAX_TIMESTAMP: usize = offsets::MAX_TIMESTAMP;
pub const OFF_PRODUCER_ID: usize = offsets::PRODUCER_ID;
pub const OFF_PRODUCER_EPOCH: usize = offsets::PRODUCER_EPOCH;
pub const OFF_BASE_SEQUENCE: usize = offsets::BASE_SEQUENCE;
pub const OFF_RECORDS_COUNT: usize = offsets::RECORDS_COUNT;
const _: () = assert!(OFF_RECORDS_COUNT + 4 == HEADER_BYTES);

/// Header fields of one batch. Constructed only from at least `HEADER_BYTES` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub base_offset: i64,
    /// Whole batch size in bytes including the 12-byte log overhead.
    pub size: usize,
    pub leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl Header {
    /// Reads a header; `None` when fewer than `HEADER_BYTES` bytes or a nonsensical length.
    pub fn parse(b: &[u8]) -> Option<Header> {
        let h: BatchHeader = BatchHeader::parse(b).ok()?;
        if h.batch_length < (HEADER_BYTES - LOG_OVERHEAD) as i32 {
            return None;
        }
        Some(Header {
            base_offset: h.base_offset,
            size: h.batch_length as usize + LOG_OVERHEAD,
            leader_epoch: h.partition_leader_epoch,
            magic: h.magic,
            crc: h.crc,
            attributes: h.attributes,
            last_offset_delta: h.last_offset_delta,
            base_timestamp: h.base_timestamp,
            max_timestamp: h.max_timestamp,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
            records_count: h.records_count,
        })
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Control batches (transaction markers) carry no user records.
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Batches written inside a transaction (data, or its marker).
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    /// KIP-534: the time after which the cleaner may remove this batch's tombstones, set
    /// by the pass that first kept them (its baseTimestamp field holds it).
    pub fn delete_horizon(&self) -> Option<i64> {
        (self.attributes & sluice_codec::batch::DELETE_HORIZON_BIT != 0)
            .then_some(self.base_timestamp)
    }

    /// Full structural + CRC32C check of a whole batch in `b` (exactly `size` bytes).
    pub fn verify(&self, b: &[u8]) -> Result<(), String> {
        if self.magic != 2 {
            return Err(format!("magic {} (only v2 batches are stored)", self.magic));
        }
        if b.len() != self.size {
            return Err(format!(
                "batch of {} bytes, header says {}",
                b.len(),
                self.size
            ));
        }
        if self.last_offset_delta < 0 || self.records_count < 0 {
            return Err(format!(
                "lastOffsetDelta {} recordsCount {}",
                self.last_offset_delta, self.records_count
            ));
        }
        let crc = crc32c::crc32c(&b[OFF_ATTRIBUTES..]);
        if crc != self.crc {
            return Err(format!("crc32c {crc:#010x} != header {:#010x}", self.crc));
        }
        Ok(())
    }
}

/// Writes the broker-assigned base offset and leader epoch (neither is covered by the CRC).
/// `b` holds a whole batch that [`Header::parse`] accepted.
pub fn set_offset_and_epoch(b: &mut [u8], base_offset: i64, leader_epoch: i32) {
    codec_batch::set_base_offset(b, base_offset).expect("a parsed batch has a header");
    codec_batch::set_partition_leader_epoch(b, leader_epoch).expect("a parsed batch has a header");
}

/// Stamps LogAppendTime: timestamp-type bit, maxTimestamp = now, and a new CRC. Only for a
/// batch that [`Header::verify`] accepted (a new CRC must not bless a corrupt batch).
pub fn set_log_append_time(b: &mut [u8], now_ms: i64) {
    codec_batch::set_log_append_time(b, now_ms).expect("a verified batch is whole");
}

#[cfg(test)]
pub mod testing {
    //! Builds valid batches for tests.
    use super::*;

    /// A batch of `count` records with `payload` values (records are not meaningful
    /// beyond their count; the log never decodes them).
    pub fn batch(count: i32, payload: &[u8], timestamp: i64, pid: i64, seq: i32) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_BYTES];
        b.extend_from_slice(payload);
        let len = (b.len() - LOG_OVERHEAD) as i32;
        b[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
        b[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&(-1i32).to_be_bytes());
        b[OFF_MAGIC] = 2;
        b[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&(count - 1).to_be_bytes());
        b[OFF_BASE_TIMESTAMP..OFF_BASE_TIMESTAMP + 8].copy_from_slice(&timestamp.to_be_bytes());
        b[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&timestamp.to_be_bytes());
        b[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
        b[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2].copy_from_slice(&0i16.to_be_bytes());
        b[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
        b[OFF_RECORDS_COUNT..OFF_RECORDS_COUNT + 4].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&b[OFF_ATTRIBUTES..]);
        b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// [`batch`] written inside a transaction (the transactional attribute set).
    pub fn txn_batch(count: i32, payload: &[u8], timestamp: i64, pid: i64, seq: i32) -> Vec<u8> {
        let mut b = batch(count, payload, timestamp, pid, seq);
        b[OFF_ATTRIBUTES + 1] |= 0x10;
        let crc = crc32c::crc32c(&b[OFF_ATTRIBUTES..]);
        b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }
}
