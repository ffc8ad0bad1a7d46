//! A fault-injecting [`Storage`] for tests: short writes, failing fsyncs, torn tails and
//! simulated crashes, on top of [`StdStorage`].

use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use crate::io::{Storage, StorageFile};
use crate::std_io::{HeapBuf, StdFile, StdStorage};

/// What to break, shared by every file of one [`FaultyStorage`]. Counters count down;
/// when one reaches zero at an operation, that operation fails.
#[derive(Default, Debug)]
pub struct FaultPlan {
    /// Fail the n-th next `fdatasync` (1 = the next one).
    pub fail_fsync_in: Cell<u32>,
    /// Make the n-th next write short: only `short_write_bytes` of it reach the file, then error.
    pub short_write_in: Cell<u32>,
    pub short_write_bytes: Cell<usize>,
    /// Once set, every operation fails (the "machine" is gone).
    pub crashed: Cell<bool>,
}

impl FaultPlan {
    fn trip(counter: &Cell<u32>) -> bool {
        match counter.get() {
            0 => false,
            1 => {
                counter.set(0);
                true
            }
            n => {
                counter.set(n - 1);
                false
            }
        }
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what}"))
}

/// Storage whose operations fail as its [`FaultPlan`] says.
#[derive(Clone, Default)]
pub struct FaultyStorage {
    pub plan: Rc<FaultPlan>,
}

/// A file of a [`FaultyStorage`].
pub struct FaultyFile {
    inner: StdFile,
    plan: Rc<FaultPlan>,
}

impl FaultyStorage {
    fn check(&self) -> io::Result<()> {
        if self.plan.crashed.get() {
            return Err(injected("crashed"));
        }
        Ok(())
    }
}

impl Storage for FaultyStorage {
    type File = FaultyFile;
    type Buf = HeapBuf;

    fn alloc_buf(&self, len: usize) -> HeapBuf {
        StdStorage.alloc_buf(len)
    }
    async fn open_rw(&self, path: &Path) -> io::Result<FaultyFile> {
        self.check()?;
        Ok(FaultyFile {
            inner: StdStorage.open_rw(path).await?,
            plan: self.plan.clone(),
        })
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.check()?;
        StdStorage.remove(path).await
    }
    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.check()?;
        StdStorage.create_dir_all(path).await
    }
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        self.check()?;
        StdStorage.list_dir(path).await
    }
    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.check()?;
        StdStorage.sync_dir(path).await
    }
}

impl StorageFile for FaultyFile {
    type Buf = HeapBuf;

    async fn write_at(&self, mut buf: HeapBuf, pos: u64) -> io::Result<()> {
        if self.plan.crashed.get() {
            return Err(injected("crashed"));
        }
        if FaultPlan::trip(&self.plan.short_write_in) {
            // Write a page-aligned prefix of what was asked (a torn write), then fail.
            let keep = self.plan.short_write_bytes.get().min(buf.as_ref().len());
            let page = crate::io::PAGE_SIZE;
            let aligned = keep.div_ceil(page) * page;
            let mut partial = StdStorage.alloc_buf(aligned.max(page));
            let n = aligned.min(buf.as_ref().len());
            partial.as_mut()[..keep].copy_from_slice(&buf.as_mut()[..keep]);
            if n > 0 {
                self.inner.write_at(partial, pos).await?;
            }
            return Err(injected("short write"));
        }
        self.inner.write_at(buf, pos).await
    }
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        if self.plan.crashed.get() {
            return Err(injected("crashed"));
        }
        self.inner.read_at(pos, len).await
    }
    async fn fdatasync(&self) -> io::Result<()> {
        if self.plan.crashed.get() || FaultPlan::trip(&self.plan.fail_fsync_in) {
            return Err(injected("fdatasync"));
        }
        self.inner.fdatasync().await
    }
    async fn size(&self) -> io::Result<u64> {
        self.inner.size().await
    }
    async fn truncate(&self, len: u64) -> io::Result<()> {
        if self.plan.crashed.get() {
            return Err(injected("crashed"));
        }
        self.inner.truncate(len).await
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        self.inner.preallocate(len).await
    }
}
