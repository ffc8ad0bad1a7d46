//! Builds valid, uncompressed RecordBatch v2 bytes of an exact total size.
//!
//! Exact sizes matter to the storage benchmark: a 1 MiB batch fills the log's 1 MiB write
//! buffer to the byte, so the log issues the same 1 MiB aligned writes as the raw phase.
//! Records are real (varint-framed, no key, no headers) so the batches also pass the codec's
//! stricter validation, not just the log's CRC check.

use sluice_storage::hdr::{
    HEADER_BYTES, LOG_OVERHEAD, OFF_ATTRIBUTES, OFF_BASE_SEQUENCE, OFF_BASE_TIMESTAMP, OFF_CRC,
    OFF_LAST_OFFSET_DELTA, OFF_LEADER_EPOCH, OFF_LENGTH, OFF_MAGIC, OFF_MAX_TIMESTAMP,
    OFF_PRODUCER_EPOCH, OFF_PRODUCER_ID, OFF_RECORDS_COUNT,
};

/// Smallest batch [`record_batch`] can build: the header plus one record with an empty value.
pub const BATCH_BYTES_MIN: usize = HEADER_BYTES + 8;

/// Bytes of `v` as a Kafka (zigzag) varint.
pub fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// Appends `v` as a Kafka (zigzag) varint.
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Reads a Kafka (zigzag) varint at `*at` and moves `*at` past it; `None` when the bytes
/// end first or the varint runs past 10 bytes (not a 64-bit value).
#[inline]
pub fn get_varint(b: &[u8], at: &mut usize) -> Option<i64> {
    let mut z = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        z |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some((z >> 1) as i64 ^ -((z & 1) as i64));
        }
    }
    None
}

/// Encoded size of one record: attributes, timestampDelta 0, offsetDelta, key (null or
/// `key` bytes), value, zero headers, all behind the record's own length varint.
fn record_len(offset_delta: i64, key: Option<usize>, value: usize) -> usize {
    let body = body_len(offset_delta, key, value);
    varint_len(body as i64) + body
}

fn body_len(offset_delta: i64, key: Option<usize>, value: usize) -> usize {
    let key_bytes = match key {
        None => 1,
        Some(k) => varint_len(k as i64) + k,
    };
    1 + 1 + varint_len(offset_delta) + key_bytes + varint_len(value as i64) + value + 1
}

fn put_record(
    out: &mut Vec<u8>,
    offset_delta: i64,
    key: Option<usize>,
    value: usize,
    fill: &mut XorShift,
) {
    let body = body_len(offset_delta, key, value);
    let start = out.len();
    put_varint(out, body as i64);
    out.push(0); // attributes
    put_varint(out, 0); // timestampDelta
    put_varint(out, offset_delta);
    match key {
        None => put_varint(out, -1),
        Some(k) => {
            put_varint(out, k as i64);
            fill.extend(out, k);
        }
    }
    put_varint(out, value as i64);
    fill.extend(out, value);
    put_varint(out, 0); // headers
    debug_assert_eq!(out.len() - start, record_len(offset_delta, key, value));
}

/// Picks (key, value) sizes so one record at `offset_delta` is exactly `bytes` long.
/// Varint widths make some lengths unreachable with a null key; a short key covers the gap.
fn fit_record(offset_delta: i64, bytes: usize) -> Option<(Option<usize>, usize)> {
    let guess = bytes.saturating_sub(16);
    for value in (guess.saturating_sub(8)..=bytes).rev() {
        for key in [None, Some(0), Some(1), Some(2), Some(3)] {
            if record_len(offset_delta, key, value) == bytes {
                return Some((key, value));
            }
        }
    }
    None
}

/// A cheap deterministic byte source: payloads must not be all zeros, or a virtual disk
/// that detects zero writes (QEMU `detect-zeroes`) would measure something else.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Appends `n` pseudo-random bytes.
    pub fn extend(&mut self, out: &mut Vec<u8>, n: usize) {
        out.reserve(n);
        let mut left = n;
        while left > 0 {
            let w = self.next_u64().to_le_bytes();
            let take = left.min(8);
            out.extend_from_slice(&w[..take]);
            left -= take;
        }
    }

    /// Fills `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let w = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }
}

/// A valid uncompressed v2 batch of exactly `total_bytes` bytes (header included), made of
/// records of about `record_value_bytes` each (the last one sized to fit). `None` when
/// `total_bytes` is below [`BATCH_BYTES_MIN`] or above `i32::MAX`.
pub fn record_batch(
    total_bytes: usize,
    record_value_bytes: usize,
    timestamp: i64,
) -> Option<Vec<u8>> {
    if total_bytes < BATCH_BYTES_MIN || total_bytes > i32::MAX as usize {
        return None;
    }
    let mut fill = XorShift::new(total_bytes as u64 ^ 0x9e37_79b9_7f4a_7c15);
    let mut b = vec![0u8; HEADER_BYTES];
    b.reserve(total_bytes - HEADER_BYTES);
    let mut delta: i64 = 0;
    loop {
        let left = total_bytes - b.len();
        let full = record_len(delta, None, record_value_bytes);
        // Keep a full-size record only if what remains after it can still hold a record
        // (a generous 64 bytes covers the smallest record at any offset delta).
        if left >= full + 64 {
            put_record(&mut b, delta, None, record_value_bytes, &mut fill);
        } else {
            if let Some((key, value)) = fit_record(delta, left) {
                put_record(&mut b, delta, key, value, &mut fill);
                break;
            }
            // Some totals fit no single record (e.g. 65: the record's own length varint grows
            // a byte from body 63 to 64), so split the rest into two records.
            let (first, second) = (8..left).find_map(|tail| {
                Some((
                    fit_record(delta, left - tail)?,
                    fit_record(delta + 1, tail)?,
                ))
            })?;
            put_record(&mut b, delta, first.0, first.1, &mut fill);
            delta += 1;
            put_record(&mut b, delta, second.0, second.1, &mut fill);
            break;
        }
        delta += 1;
    }
    debug_assert_eq!(b.len(), total_bytes);
    let count = (delta + 1) as i32;
    let len = (b.len() - LOG_OVERHEAD) as i32;
    b[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
    b[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&(-1i32).to_be_bytes());
    b[OFF_MAGIC] = 2;
    b[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4].copy_from_slice(&(count - 1).to_be_bytes());
    b[OFF_BASE_TIMESTAMP..OFF_BASE_TIMESTAMP + 8].copy_from_slice(&timestamp.to_be_bytes());
    b[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&timestamp.to_be_bytes());
    // No producer id: the benchmark measures IO, not idempotence bookkeeping.
    b[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&(-1i64).to_be_bytes());
    b[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2].copy_from_slice(&(-1i16).to_be_bytes());
    b[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&(-1i32).to_be_bytes());
    b[OFF_RECORDS_COUNT..OFF_RECORDS_COUNT + 4].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&b[OFF_ATTRIBUTES..]);
    b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_storage::hdr::Header;

    #[test]
    fn varints_round_trip() {
        let values = [
            0,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ];
        let mut b = Vec::new();
        for v in values {
            put_varint(&mut b, v);
        }
        let mut at = 0;
        for v in values {
            let start = at;
            assert_eq!(get_varint(&b, &mut at), Some(v));
            assert_eq!(at - start, varint_len(v));
        }
        assert_eq!(get_varint(&b, &mut at), None, "past the end");
        // Truncated, and too long for 64 bits.
        assert_eq!(get_varint(&[0x80], &mut 0), None);
        assert_eq!(get_varint(&[0xff; 11], &mut 0), None);
    }

    #[test]
    fn exact_sizes_validate_in_log_and_codec() {
        let sizes = [
            BATCH_BYTES_MIN,
            100,
            127,
            128,
            129,
            200,
            1024,
            4096,
            16 * 1024,
            16 * 1024 + 1,
            1 << 20,
        ];
        // Every size up to past the 2→3-byte varint boundary of record lengths (8192).
        for &size in sizes.iter().chain((60..9000).collect::<Vec<_>>().iter()) {
            let Some(b) = record_batch(size, 1000, 1_700_000_000_000) else {
                assert!(size < BATCH_BYTES_MIN, "no batch of {size} bytes");
                continue;
            };
            assert_eq!(b.len(), size);
            let h = Header::parse(&b).expect("header");
            h.verify(&b).unwrap_or_else(|e| panic!("{size}: {e}"));
            sluice_codec::batch::validate_batch(&b).unwrap_or_else(|e| panic!("{size}: {e:?}"));
        }
        // Record count follows the value size.
        let b = record_batch(1 << 20, 1000, 0).unwrap();
        assert!(Header::parse(&b).unwrap().records_count > 1000);
    }
}
