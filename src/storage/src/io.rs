//! The IO boundary of the log: the few file operations a partition needs, as a trait.
//!
//! The storage crate never names glommio. The shard runtime implements [`Storage`] with
//! glommio DMA files (O_DIRECT through io_uring); tests use [`crate::std_io::StdStorage`]
//! and [`crate::fault::FaultyStorage`]. Futures are not `Send`: every file belongs to the
//! shard that opened it and is only touched from that shard's executor.
//!
//! Contract for writers (checked by the log before every call, and by implementations):
//! `write_at` positions and buffer lengths are multiples of [`PAGE_SIZE`].

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// What [`Storage::discard`] may append to a file's name to take it out of the log's
/// names before its blocks are freed (Kafka's suffix for the same state). A log sweeps
/// files with it when it opens: they are garbage a crash left behind.
pub const DISCARDED_SUFFIX: &str = ".deleted";

/// Alignment unit of every direct write: file offsets and lengths are multiples of it.
pub const PAGE_SIZE: usize = 4096;

/// A buffer that direct IO can write from. Its length is a multiple of [`PAGE_SIZE`].
pub trait IoBuf: AsRef<[u8]> + AsMut<[u8]> + 'static {
    /// Shortens the buffer to `len` bytes (a page multiple, at most the current length) so
    /// that a write covers only the filled pages.
    fn shrink_to(&mut self, len: usize);
}

/// A bundle of file operations for one shard.
#[allow(async_fn_in_trait)]
pub trait Storage: 'static {
    /// An open segment (or index) file.
    type File: StorageFile<Buf = Self::Buf>;
    /// Page-aligned buffer type handed to `write_at`.
    type Buf: IoBuf;

    /// Allocates a page-aligned buffer of `len` bytes (`len % PAGE_SIZE == 0`). Its contents
    /// are unspecified: writers fill or zero every byte they write.
    fn alloc_buf(&self, len: usize) -> Self::Buf;
    /// Opens `path` for reading and writing, creating it if missing.
    async fn open_rw(&self, path: &Path) -> io::Result<Self::File>;
    /// Removes a file. Missing files are not an error.
    async fn remove(&self, path: &Path) -> io::Result<()>;
    /// Deletes a file the log is done with (a segment below the log start or past a
    /// truncation). `file` is the log's handle to it, if open; readers may still hold
    /// clones of it. When this returns the file is gone from the log's names (removed, or
    /// renamed to end in [`DISCARDED_SUFFIX`]); its blocks may be freed later and in steps,
    /// once no reader holds the handle, because freeing a large file at once stalls every
    /// sync on the filesystem while the journal commits it. Missing files are not an error.
    async fn discard(&self, path: &Path, file: Option<Rc<Self::File>>) -> io::Result<()> {
        drop(file);
        self.remove(path).await
    }
    /// Creates a directory and its parents.
    async fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Lists the entries (file names, not paths) of a directory.
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
    /// Makes a directory's entries durable (after creating or removing files).
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to` (same directory), replacing `to` atomically if it exists.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
}

/// One open file. Reads may be unaligned (implementations align internally).
#[allow(async_fn_in_trait)]
pub trait StorageFile: 'static {
    type Buf: IoBuf;
    /// Writes the whole buffer at `pos`. `pos` and `buf.len()` are page multiples.
    async fn write_at(&self, buf: Self::Buf, pos: u64) -> io::Result<()>;
    /// Reads up to `len` bytes at `pos`; shorter only at end of file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<bytes::Bytes>;
    /// Makes written data durable.
    async fn fdatasync(&self) -> io::Result<()>;
    /// Current size of the file in bytes.
    async fn size(&self) -> io::Result<u64>;
    /// Truncates (or extends with zeros) to `len` bytes.
    async fn truncate(&self, len: u64) -> io::Result<()>;
    /// Reserves disk blocks up to `len` bytes without changing the file size, so later
    /// appends do not allocate as they go. Implementations may do nothing.
    async fn preallocate(&self, len: u64) -> io::Result<()>;
}
