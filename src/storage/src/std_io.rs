//! Blocking `std::fs` implementation of the IO traits, for tests, tools and benchmarks
//! that run without the shard runtime. Futures complete immediately.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::io::{IoBuf, Storage, StorageFile, PAGE_SIZE};

/// A page-multiple heap buffer (buffered IO needs no memory alignment).
pub struct HeapBuf(Vec<u8>);

impl AsRef<[u8]> for HeapBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}
impl AsMut<[u8]> for HeapBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}
impl IoBuf for HeapBuf {
    fn shrink_to(&mut self, len: usize) {
        assert!(
            len.is_multiple_of(PAGE_SIZE) && len <= self.0.len(),
            "shrink to a page multiple"
        );
        self.0.truncate(len);
    }
}

/// `std::fs` storage.
#[derive(Default, Clone, Copy, Debug)]
pub struct StdStorage;

/// A `std::fs::File` behind the [`StorageFile`] trait.
pub struct StdFile(File);

impl Storage for StdStorage {
    type File = StdFile;
    type Buf = HeapBuf;

    fn alloc_buf(&self, len: usize) -> HeapBuf {
        assert_eq!(len % PAGE_SIZE, 0, "direct buffers are page multiples");
        HeapBuf(vec![0; len])
    }

    async fn open_rw(&self, path: &Path) -> io::Result<StdFile> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(StdFile)
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(PathBuf::from(entry?.file_name()));
        }
        Ok(names)
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
}

impl StorageFile for StdFile {
    type Buf = HeapBuf;

    async fn write_at(&self, buf: HeapBuf, pos: u64) -> io::Result<()> {
        assert_eq!(pos % PAGE_SIZE as u64, 0, "direct writes are page aligned");
        assert_eq!(
            buf.0.len() % PAGE_SIZE,
            0,
            "direct writes are page multiples"
        );
        self.0.write_all_at(&buf.0, pos)
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let mut out = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            let n = self.0.read_at(&mut out[filled..], pos + filled as u64)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        out.truncate(filled);
        Ok(Bytes::from(out))
    }

    async fn fdatasync(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    async fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    async fn preallocate(&self, _len: u64) -> io::Result<()> {
        // Buffered test IO gains nothing from it.
        Ok(())
    }
}
