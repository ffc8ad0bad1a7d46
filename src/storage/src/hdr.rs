//! The few RecordBatch v2 header fields the log needs, read at fixed offsets.

/// Size of the RecordBatch v2 header (everything before the first record).
pub const HEADER_BYTES: usize = 61;
/// `baseOffset` + `batchLength`: the part not counted by `batchLength`.
pub const LOG_OVERHEAD: usize = 12;

pub const OFF_BASE_OFFSET: usize = 0;
pub const OFF_LENGTH: usize = 8;
pub const OFF_LEADER_EPOCH: usize = 12;
pub const OFF_MAGIC: usize = 16;
pub const OFF_CRC: usize = 17;
pub const OFF_ATTRIBUTES: usize = 21;
pub const OFF_LAST_OFFSET_DELTA: usize = 23;
pub const OFF_BASE_TIMESTAMP: usize = 27;
pub const OFF_MAX_TIMESTAMP: usize = 35;
pub const OFF_PRODUCER_ID: usize = 43;
pub const OFF_PRODUCER_EPOCH: usize = 51;
pub const OFF_BASE_SEQUENCE: usize = 53;
pub const OFF_RECORDS_COUNT: usize = 57;
const _: () = assert!(OFF_RECORDS_COUNT + 4 == HEADER_BYTES);

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

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
        if b.len() < HEADER_BYTES {
            return None;
        }
        let length = i32_at(b, OFF_LENGTH);
        if length < (HEADER_BYTES - LOG_OVERHEAD) as i32 {
            return None;
        }
        Some(Header {
            base_offset: i64_at(b, OFF_BASE_OFFSET),
            size: length as usize + LOG_OVERHEAD,
            leader_epoch: i32_at(b, OFF_LEADER_EPOCH),
            magic: b[OFF_MAGIC] as i8,
            crc: u32::from_be_bytes(b[OFF_CRC..OFF_CRC + 4].try_into().expect("4 bytes")),
            attributes: i16_at(b, OFF_ATTRIBUTES),
            last_offset_delta: i32_at(b, OFF_LAST_OFFSET_DELTA),
            base_timestamp: i64_at(b, OFF_BASE_TIMESTAMP),
            max_timestamp: i64_at(b, OFF_MAX_TIMESTAMP),
            producer_id: i64_at(b, OFF_PRODUCER_ID),
            producer_epoch: i16_at(b, OFF_PRODUCER_EPOCH),
            base_sequence: i32_at(b, OFF_BASE_SEQUENCE),
            records_count: i32_at(b, OFF_RECORDS_COUNT),
        })
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Control batches (transaction markers) carry no user records.
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
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
pub fn set_offset_and_epoch(b: &mut [u8], base_offset: i64, leader_epoch: i32) {
    b[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    b[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Stamps LogAppendTime: timestamp-type bit, maxTimestamp = now, and a new CRC.
pub fn set_log_append_time(b: &mut [u8], now_ms: i64) {
    let attrs = i16_at(b, OFF_ATTRIBUTES) | 0x08;
    b[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
    b[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&b[OFF_ATTRIBUTES..]);
    b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
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
}
