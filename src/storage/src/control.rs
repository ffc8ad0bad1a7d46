//! Control batches of one control record, as Kafka lays them out: a batch with the control
//! attribute whose one record has key `version: int16 = 0, type: int16` and a value of the
//! type's own format. Built and read here for transaction markers (`txn`) and for the
//! replication layer's own Raft entries (`sluice-replica`), so both share one layout and one
//! parser.

use std::ops::Range;

use crate::hdr::{self, Header, HEADER_BYTES, LOG_OVERHEAD};

/// The attributes bit of a control batch.
pub const ATTR_CONTROL: i16 = 0x20;
/// The attributes bit of a transactional batch.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;

/// Appends `v` as a zigzag varint (a record field).
pub fn put_varint(b: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        b.push((z as u8) | 0x80);
        z >>= 7;
    }
    b.push(z as u8);
}

/// Reads a zigzag varint at `*at`, advancing past it; `None` if it runs off the end.
pub fn get_varint(b: &[u8], at: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        z |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

/// Who writes a control batch and when: the header fields beyond the control record.
#[derive(Debug, Clone, Copy)]
pub struct ControlHeader {
    pub transactional: bool,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Base and max timestamp (-1: none).
    pub timestamp: i64,
}

/// The control batch of one record of type `kind` with `value`, at base offset 0 and leader
/// epoch 0 (neither is under the CRC: the append stamps them).
pub fn one_record_batch(kind: i16, value: &[u8], h: ControlHeader) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + value.len());
    body.push(0); // record attributes
    put_varint(&mut body, 0); // timestamp delta
    put_varint(&mut body, 0); // offset delta
    put_varint(&mut body, 4); // key length
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&kind.to_be_bytes());
    put_varint(&mut body, value.len() as i64);
    body.extend_from_slice(value);
    put_varint(&mut body, 0); // headers
    let mut b = vec![0u8; HEADER_BYTES];
    put_varint(&mut b, body.len() as i64);
    b.extend_from_slice(&body);
    let len = (b.len() - LOG_OVERHEAD) as i32;
    b[hdr::OFF_LENGTH..hdr::OFF_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
    b[hdr::OFF_MAGIC] = 2;
    let attributes = if h.transactional {
        ATTR_CONTROL | ATTR_TRANSACTIONAL
    } else {
        ATTR_CONTROL
    };
    b[hdr::OFF_ATTRIBUTES..hdr::OFF_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    b[hdr::OFF_LAST_OFFSET_DELTA..hdr::OFF_LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&0i32.to_be_bytes());
    for off in [hdr::OFF_BASE_TIMESTAMP, hdr::OFF_MAX_TIMESTAMP] {
        b[off..off + 8].copy_from_slice(&h.timestamp.to_be_bytes());
    }
    b[hdr::OFF_PRODUCER_ID..hdr::OFF_PRODUCER_ID + 8].copy_from_slice(&h.producer_id.to_be_bytes());
    b[hdr::OFF_PRODUCER_EPOCH..hdr::OFF_PRODUCER_EPOCH + 2]
        .copy_from_slice(&h.producer_epoch.to_be_bytes());
    b[hdr::OFF_BASE_SEQUENCE..hdr::OFF_BASE_SEQUENCE + 4].copy_from_slice(&(-1i32).to_be_bytes());
    b[hdr::OFF_RECORDS_COUNT..hdr::OFF_RECORDS_COUNT + 4].copy_from_slice(&1i32.to_be_bytes());
    let crc = crc32c::crc32c(&b[hdr::OFF_ATTRIBUTES..]);
    b[hdr::OFF_CRC..hdr::OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The type and the value's place in `batch` (a whole batch whose header is `h`) of a
/// control batch of one record; why not, if it is not one.
pub fn one_record(batch: &[u8], h: &Header) -> Result<(i16, Range<usize>), &'static str> {
    if h.records_count != 1 || h.last_offset_delta != 0 {
        return Err("not one record");
    }
    let b = batch;
    let mut at = HEADER_BYTES;
    let len = get_varint(b, &mut at).ok_or("record length")?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| at.checked_add(l))
        .filter(|&e| e == b.len())
        .ok_or("record length")?;
    at += 1; // record attributes
    get_varint(b, &mut at).ok_or("timestamp")?;
    get_varint(b, &mut at).ok_or("offset delta")?;
    let klen = get_varint(b, &mut at).ok_or("key length")?;
    if klen != 4 || at + 4 > end {
        return Err("key");
    }
    let kind = i16::from_be_bytes([b[at + 2], b[at + 3]]);
    at += 4;
    let vlen = get_varint(b, &mut at).ok_or("value length")?;
    let vend = usize::try_from(vlen)
        .ok()
        .and_then(|l| at.checked_add(l))
        .filter(|&e| e <= end)
        .ok_or("value")?;
    Ok((kind, at..vend))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips_and_every_truncation_is_refused() {
        let h = ControlHeader {
            transactional: true,
            producer_id: 9,
            producer_epoch: 2,
            timestamp: 77,
        };
        let b = one_record_batch(1, b"value", h);
        let header = Header::parse(&b).unwrap();
        header.verify(&b).unwrap();
        assert_eq!(header.size, b.len());
        let (kind, value) = one_record(&b, &header).unwrap();
        assert_eq!((kind, &b[value]), (1, &b"value"[..]));
        for n in HEADER_BYTES..b.len() {
            assert!(one_record(&b[..n], &header).is_err(), "prefix {n}");
        }
        for v in [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut at = 0;
            assert_eq!(get_varint(&out, &mut at), Some(v));
            assert_eq!(at, out.len());
        }
    }
}
