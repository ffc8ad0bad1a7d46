//! The small sealed-file format shared by index files, producer snapshots and checkpoints:
//! a header with magic, kind, a caller-defined meta block and a CRC32C over everything, padded
//! to whole pages so it can be written with direct IO. A file that fails any check is
//! treated as missing and rebuilt from the segments.

use crate::io::PAGE_SIZE;

const MAGIC: u32 = 0x534c_5546; // "SLUF"
const VERSION: u16 = 1;
/// magic u32, version u16, kind u16, meta [i64; 4], body_len u32, crc u32
pub const SEALED_HEADER_BYTES: usize = 4 + 2 + 2 + 32 + 4 + 4;
const _: () = assert!(SEALED_HEADER_BYTES == 48);
/// Bodies larger than this are refused (an index of a 2 GiB segment stays well below).
pub const SEALED_BODY_BYTES_MAX: usize = 256 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    OffsetIndex = 1,
    TimeIndex = 2,
    ProducerSnapshot = 3,
    LogStartOffset = 4,
    /// Producer snapshot whose body carries each producer's last timestamp (`meta[1]` is the
    /// body version, see `producer::SNAPSHOT_BODY_VERSION`).
    ProducerSnapshotTimed = 5,
    /// A segment's aborted transactions (`.txnindex`): Kafka's 34-byte entries, in marker
    /// order (`txn::AbortedTxn`).
    TxnIndex = 6,
    /// Where the log cleaner's last pass ended (`meta[0]`) and the earliest delete horizon
    /// of the tombstones it kept (`meta[1]`, `i64::MIN` for none): `cleaner-offset-checkpoint`.
    CleanerCheckpoint = 7,
    /// The tail segment's state at a durable size (`recovery-point`): `meta` is the segment
    /// base, the size, the offset after its last batch, and the producer-state body version.
    RecoveryPoint = 8,
}

/// Encodes `meta` and `body` into a page-multiple byte vector.
pub fn seal(kind: Kind, meta: [i64; 4], body: &[u8]) -> Vec<u8> {
    assert!(
        body.len() <= SEALED_BODY_BYTES_MAX,
        "sealed body over its limit"
    );
    let total = (SEALED_HEADER_BYTES + body.len()).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&(kind as u16).to_be_bytes());
    for m in meta {
        out.extend_from_slice(&m.to_be_bytes());
    }
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(body);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[..SEALED_HEADER_BYTES - 4]), body);
    out[SEALED_HEADER_BYTES - 4..SEALED_HEADER_BYTES].copy_from_slice(&crc.to_be_bytes());
    out.resize(total, 0);
    out
}

/// Decodes what [`seal`] wrote; `None` when anything is off.
pub fn unseal(kind: Kind, bytes: &[u8]) -> Option<([i64; 4], &[u8])> {
    if bytes.len() < SEALED_HEADER_BYTES {
        return None;
    }
    let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4"));
    let u16_at = |at: usize| u16::from_be_bytes(bytes[at..at + 2].try_into().expect("2"));
    if u32_at(0) != MAGIC || u16_at(4) != VERSION || u16_at(6) != kind as u16 {
        return None;
    }
    let mut meta = [0i64; 4];
    for (i, m) in meta.iter_mut().enumerate() {
        let at = 8 + i * 8;
        *m = i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8"));
    }
    let body_len = u32_at(40) as usize;
    if body_len > SEALED_BODY_BYTES_MAX || SEALED_HEADER_BYTES + body_len > bytes.len() {
        return None;
    }
    let body = &bytes[SEALED_HEADER_BYTES..SEALED_HEADER_BYTES + body_len];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[..SEALED_HEADER_BYTES - 4]), body);
    if crc != u32_at(44) {
        return None;
    }
    Some((meta, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let sealed = seal(Kind::OffsetIndex, [1, 2, 3, 4], b"hello");
        assert_eq!(sealed.len(), PAGE_SIZE);
        assert_eq!(
            unseal(Kind::OffsetIndex, &sealed),
            Some(([1, 2, 3, 4], &b"hello"[..]))
        );
        assert_eq!(unseal(Kind::TimeIndex, &sealed), None);
        let mut bad = sealed.clone();
        bad[SEALED_HEADER_BYTES + 1] ^= 1;
        assert_eq!(unseal(Kind::OffsetIndex, &bad), None);
        assert_eq!(unseal(Kind::OffsetIndex, &sealed[..10]), None);
    }
}
