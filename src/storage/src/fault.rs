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
    /// Every write and fdatasync yields once before it runs, as real IO does, so other
    /// tasks (appends, a concurrent sync) interleave with it.
    pub yield_each_io: Cell<bool>,
    /// Writes and fdatasyncs in flight now, and whether a write was ever in flight during
    /// an fdatasync (the flusher's overlap).
    pub writes_in_flight: Cell<u32>,
    pub syncs_in_flight: Cell<u32>,
    pub write_during_sync: Cell<bool>,
}

impl FaultPlan {
    /// Counts an IO of one kind (`mine`: writes or syncs) as in flight, yields if asked, and
    /// notes whether one of the other kind (`other`) is in flight meanwhile.
    async fn begin_io(&self, mine: &Cell<u32>, other: &Cell<u32>) {
        mine.set(mine.get() + 1);
        if self.yield_each_io.get() {
            futures_lite::future::yield_now().await;
        }
        if other.get() > 0 {
            self.write_during_sync.set(true);
        }
    }

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
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check()?;
        StdStorage.rename(from, to).await
    }
}

impl StorageFile for FaultyFile {
    type Buf = HeapBuf;

    async fn write_at(&self, buf: HeapBuf, pos: u64) -> io::Result<()> {
        let plan = &self.plan;
        plan.begin_io(&plan.writes_in_flight, &plan.syncs_in_flight)
            .await;
        let r = self.write_now(buf, pos).await;
        plan.writes_in_flight.set(plan.writes_in_flight.get() - 1);
        r
    }
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        if self.plan.crashed.get() {
            return Err(injected("crashed"));
        }
        self.inner.read_at(pos, len).await
    }
    async fn fdatasync(&self) -> io::Result<()> {
        let plan = &self.plan;
        plan.begin_io(&plan.syncs_in_flight, &plan.writes_in_flight)
            .await;
        let r = if plan.crashed.get() || FaultPlan::trip(&plan.fail_fsync_in) {
            Err(injected("fdatasync"))
        } else {
            self.inner.fdatasync().await
        };
        plan.syncs_in_flight.set(plan.syncs_in_flight.get() - 1);
        r
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

impl FaultyFile {
    async fn write_now(&self, mut buf: HeapBuf, pos: u64) -> io::Result<()> {
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
}
