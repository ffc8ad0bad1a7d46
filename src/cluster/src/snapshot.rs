//! Controller metadata snapshots: the applied `MetadataImage` as of a Raft index, which lets
//! a voter drop the controller log (memory and WAL) up to that index, restart from it, and
//! hand it to a voter or broker-only node that needs entries the log no longer has.
//!
//! # Formats
//!
//! The *payload* (what travels in raft-rs's `MsgSnapshot` after the 8-byte log-start offset,
//! and in a pull answer): `MetadataImage::snapshot()` records in `sluice_meta::codec` batches
//! of at most `codec::BATCH_BYTES_MAX`, each as `len: u32` then the batch; at most
//! [`METADATA_SNAPSHOT_BYTES_MAX`] in all (one rpc frame holds it whole). An image larger
//! than that is not snapshotted: the log then keeps growing, as before snapshots existed
//! (logged once per attempt; a named limit, not a silent one).
//!
//! The *file*, `<data dir>/cluster/controller.snapshot`: `magic "SLMS"`, `version u8` (1),
//! `index u64`, `term u64`, `offset i64` (the controller log's Kafka-offset count after
//! `index`, as the Raft log's start records it), `payload length u64`, the payload, then
//! `crc: u32` (CRC32C of everything before it); integers big-endian. It is written to
//! `controller.snapshot.tmp`, fdatasynced, renamed over the file, and the directory synced,
//! so a crash leaves either the old snapshot or the new one, whole. Decoding checks every
//! length against the bytes present before it allocates and never panics.
//!
//! # Invariants
//!
//! - The file is durable before any WAL write that drops entries it covers (the WAL task
//!   writes it first), so a restart always finds state for every entry the WAL lacks.
//! - Its index is at most the node's applied index when written, so it holds committed
//!   state only; `replay(payload) == image` (sluice-meta's snapshot test).

use std::io;
use std::path::Path;

use bytes::Bytes;
use sluice_meta::{codec, decode_batch, MetadataImage, Record};

/// The snapshot file under `<data dir>/cluster`.
pub const SNAPSHOT_FILE: &str = "controller.snapshot";
const MAGIC: &[u8; 4] = b"SLMS";
const VERSION: u8 = 1;
/// Bytes of the file besides the payload: magic, version, index, term, offset, length, crc.
const FILE_FIXED_BYTES: usize = 4 + 1 + 8 + 8 + 8 + 8 + 4;

/// Largest payload: one Raft message must carry it whole, and the rpc transport carries a
/// message up to `sluice_rpc::RAFT_ENTRY_BYTES_MAX` plus framing (64 MiB: very roughly a
/// million partitions). Larger images are not snapshotted (see the module header).
pub const METADATA_SNAPSHOT_BYTES_MAX: usize = sluice_rpc::RAFT_ENTRY_BYTES_MAX;
/// Kafka's `metadata.log.max.record.bytes.between.snapshots` default: a voter snapshots once
/// this many bytes of entries were applied since its last snapshot.
pub const METADATA_LOG_MAX_RECORD_BYTES_BETWEEN_SNAPSHOTS: u64 = 20 << 20;
/// Kafka's `metadata.log.max.snapshot.interval.ms` default: a voter that applied anything
/// since its last snapshot snapshots at least this often.
pub const METADATA_LOG_MAX_SNAPSHOT_INTERVAL: std::time::Duration =
    std::time::Duration::from_secs(3600);

/// The image as a payload; `Err` when it does not encode or exceeds
/// [`METADATA_SNAPSHOT_BYTES_MAX`].
pub fn encode_payload(image: &MetadataImage) -> Result<Bytes, String> {
    let records = image.snapshot();
    let batches = codec::encode_batches(&records, codec::BATCH_BYTES_MAX)
        .map_err(|e| format!("the metadata image does not encode: {e}"))?;
    let total: usize = batches.iter().map(|b| 4 + b.len()).sum();
    if total > METADATA_SNAPSHOT_BYTES_MAX {
        return Err(format!(
            "the metadata image is {total} bytes, over METADATA_SNAPSHOT_BYTES_MAX \
             ({METADATA_SNAPSHOT_BYTES_MAX})"
        ));
    }
    let mut out = Vec::with_capacity(total);
    for b in batches {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(&b);
    }
    Ok(Bytes::from(out))
}

/// The image a payload rebuilds; `Err` for anything but a whole, valid payload.
pub fn decode_payload(mut payload: &[u8]) -> Result<MetadataImage, String> {
    if payload.len() > METADATA_SNAPSHOT_BYTES_MAX {
        return Err(format!("snapshot payload of {} bytes", payload.len()));
    }
    let mut records: Vec<Record> = Vec::new();
    while !payload.is_empty() {
        let Some(len) = payload.get(..4) else {
            return Err("snapshot payload: a batch length cut short".into());
        };
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        let Some(batch) = payload.get(4..4 + len) else {
            return Err(format!(
                "snapshot payload: a batch of {len} bytes cut short"
            ));
        };
        records.extend(decode_batch(batch).map_err(|e| format!("snapshot payload: {e}"))?);
        payload = &payload[4 + len..];
    }
    if records.is_empty() {
        return Err("snapshot payload: no records".into());
    }
    MetadataImage::replay(&records).map_err(|e| format!("snapshot payload: {e}"))
}

/// A snapshot as the file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub index: u64,
    pub term: u64,
    pub offset: i64,
    pub payload: Bytes,
}

impl SnapshotFile {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(FILE_FIXED_BYTES + self.payload.len());
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.extend_from_slice(&self.index.to_be_bytes());
        b.extend_from_slice(&self.term.to_be_bytes());
        b.extend_from_slice(&self.offset.to_be_bytes());
        b.extend_from_slice(&(self.payload.len() as u64).to_be_bytes());
        b.extend_from_slice(&self.payload);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// The file's contents back; `Err` for a torn, damaged or foreign file (the payload is
    /// not decoded here: [`decode_payload`]).
    pub fn decode(b: &[u8]) -> Result<SnapshotFile, String> {
        if b.len() < FILE_FIXED_BYTES {
            return Err(format!("{} bytes, shorter than a header", b.len()));
        }
        if &b[..4] != MAGIC {
            return Err("not a controller snapshot (magic)".into());
        }
        if b[4] != VERSION {
            return Err(format!("unknown snapshot version {}", b[4]));
        }
        let u64_at = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let len = u64_at(29);
        if len != (b.len() - FILE_FIXED_BYTES) as u64 {
            return Err(format!(
                "payload length {len}, the file holds {}",
                b.len() - FILE_FIXED_BYTES
            ));
        }
        let body = &b[..b.len() - 4];
        let crc = u32::from_be_bytes(b[b.len() - 4..].try_into().expect("4 bytes"));
        if crc32c::crc32c(body) != crc {
            return Err("checksum mismatch (torn or damaged)".into());
        }
        Ok(SnapshotFile {
            index: u64_at(5),
            term: u64_at(13),
            offset: u64_at(21) as i64,
            payload: Bytes::copy_from_slice(&b[37..b.len() - 4]),
        })
    }
}

fn with_path(e: impl Into<io::Error>, what: &str, path: &Path) -> io::Error {
    let e: io::Error = e.into();
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Reads the snapshot file in `dir` (`<data dir>/cluster`), if there is one, and removes a
/// temporary file a crash left. A file that does not decode fails the start: it was
/// renamed into place whole, so it is damage, not a torn write.
pub fn read(dir: &Path) -> io::Result<Option<SnapshotFile>> {
    let tmp = dir.join(format!("{SNAPSHOT_FILE}{}", crate::wal::TMP_SUFFIX));
    if tmp.exists() {
        std::fs::remove_file(&tmp).map_err(|e| with_path(e, "remove", &tmp))?;
    }
    let path = dir.join(SNAPSHOT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(with_path(e, "read", &path)),
    };
    SnapshotFile::decode(&bytes).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_meta::Record;

    fn image() -> MetadataImage {
        MetadataImage::replay(&[
            Record::ClusterId {
                cluster_id: "abc".into(),
            },
            Record::Revision { revision: 7 },
        ])
        .unwrap()
    }

    #[test]
    fn payload_and_file_round_trip() {
        let img = image();
        let payload = encode_payload(&img).unwrap();
        assert_eq!(decode_payload(&payload).unwrap(), img);
        let f = SnapshotFile {
            index: 42,
            term: 3,
            offset: 42,
            payload,
        };
        let b = f.encode();
        assert_eq!(SnapshotFile::decode(&b).unwrap(), f);
    }

    #[test]
    fn torn_and_hostile_files_are_refused_without_panicking() {
        let f = SnapshotFile {
            index: 9,
            term: 2,
            offset: 9,
            payload: encode_payload(&image()).unwrap(),
        };
        let b = f.encode();
        // Every prefix (a torn write) and every single-byte change is refused.
        for n in 0..b.len() {
            assert!(SnapshotFile::decode(&b[..n]).is_err(), "prefix {n}");
        }
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x40;
            assert!(SnapshotFile::decode(&d).is_err(), "flip at {i}");
        }
        // A huge claimed length allocates nothing.
        let mut d = b.clone();
        d[29..37].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(SnapshotFile::decode(&d).is_err());
        // Payloads: cut short, garbage, empty.
        let p = &f.payload;
        for n in 1..p.len() {
            assert!(decode_payload(&p[..n]).is_err(), "payload prefix {n}");
        }
        assert!(decode_payload(&[0xff; 16]).is_err());
        assert!(decode_payload(&[]).is_err());
        let mut rng = 0x1234_5678_u64;
        for _ in 0..2000 {
            let n = (rng % 64) as usize;
            let junk: Vec<u8> = (0..n)
                .map(|_| {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (rng >> 33) as u8
                })
                .collect();
            let _ = decode_payload(&junk);
            let _ = SnapshotFile::decode(&junk);
        }
    }
}
