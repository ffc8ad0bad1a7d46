//! Provides compression utilities for encoding records.
//!
//! This module has implementations of gzip, Snappy, as well as a noop compression format that
//! allows encoding and decoding records into a [`Record`](crate::records::Record).

use crate::protocol::buf::{ByteBuf, ByteBufMut};
use anyhow::Result;

#[cfg(feature = "gzip")]
mod gzip;
#[cfg(feature = "lz4")]
mod lz4;
mod none;
#[cfg(feature = "snappy")]
mod snappy;
#[cfg(feature = "zstd")]
mod zstd;

#[cfg(feature = "gzip")]
pub use gzip::Gzip;
#[cfg(feature = "lz4")]
pub use lz4::Lz4;
pub use none::None;
#[cfg(feature = "snappy")]
pub use snappy::Snappy;
#[cfg(feature = "zstd")]
pub use zstd::Zstd;

/// sluice patch: largest decompressed record data of one batch. Batches are untrusted (a
/// producer's compressed payload is stored as sent): without a cap, a few KiB of zstd or a
/// raw-snappy length header can ask for gigabytes. Decompression beyond it is an error.
pub const DECOMPRESSED_BYTES_MAX: usize = 256 << 20;

/// sluice patch: reads all of `r`, failing once more than [`DECOMPRESSED_BYTES_MAX`] bytes
/// come out.
#[allow(dead_code)]
pub(crate) fn read_capped(r: impl std::io::Read, what: &str) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    r.take(DECOMPRESSED_BYTES_MAX as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| anyhow::anyhow!("Failed to decompress {what}: {e}"))?;
    if out.len() > DECOMPRESSED_BYTES_MAX {
        anyhow::bail!("{what} batch decompresses to more than {DECOMPRESSED_BYTES_MAX} bytes");
    }
    Ok(out)
}

/// A trait for record compression algorithms.
pub trait Compressor<B: ByteBufMut> {
    /// Target buffer type for compression.
    type BufMut: ByteBufMut;
    /// Compresses into provided [`ByteBufMut`], with records encoded by `F` into `R`.
    fn compress<R, F>(buf: &mut B, f: F) -> Result<R>
    where
        F: FnOnce(&mut Self::BufMut) -> Result<R>;
}

/// A trait for record decompression algorithms.
pub trait Decompressor<B: ByteBuf> {
    /// Target buffer type for decompression.
    type Buf: ByteBuf;
    /// Decompress records from `B` mapped using `F` into `R`.
    fn decompress<R, F>(buf: &mut B, f: F) -> Result<R>
    where
        F: FnOnce(&mut Self::Buf) -> Result<R>;
}
