//! `TimedStorage`: wraps any [`Storage`] and times each write and fdatasync, so a log
//! benchmark can split a flush into its IO parts without touching the storage crate.
//! Cost: two `Instant::now()` calls per IO (tens of ns against IOs of tens of µs or more).

use std::cell::{Cell, RefCell};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use sluice_storage::io::{Storage, StorageFile};

/// Counters shared by a storage and every file it opened. Owned by one shard.
#[derive(Default, Debug)]
pub struct IoTimes {
    pub writes: Cell<u64>,
    pub write_bytes: Cell<u64>,
    /// Sum of every write's duration (overlapping writes each count).
    pub write_ns: Cell<u64>,
    /// Wall time with at least one write in flight.
    pub write_busy_ns: Cell<u64>,
    writes_in_flight: Cell<u32>,
    busy_since: Cell<Option<Instant>>,
    pub syncs: Cell<u64>,
    pub sync_ns: Cell<u64>,
    /// Wall time with at least one write or fdatasync in flight (writes and syncs overlap).
    pub io_busy_ns: Cell<u64>,
    io_in_flight: Cell<u32>,
    io_busy_since: Cell<Option<Instant>>,
    /// Every write's and fdatasync's duration, to compare the log's IO with the raw IO.
    pub write_samples: RefCell<Vec<u64>>,
    pub sync_samples: RefCell<Vec<u64>>,
}

impl IoTimes {
    pub fn reset(&self) {
        self.writes.set(0);
        self.write_bytes.set(0);
        self.write_ns.set(0);
        self.write_busy_ns.set(0);
        if self.writes_in_flight.get() > 0 {
            self.busy_since.set(Some(Instant::now()));
        }
        self.syncs.set(0);
        self.sync_ns.set(0);
        self.io_busy_ns.set(0);
        if self.io_in_flight.get() > 0 {
            self.io_busy_since.set(Some(Instant::now()));
        }
        self.write_samples.borrow_mut().clear();
        self.sync_samples.borrow_mut().clear();
    }
}

fn since(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

impl IoTimes {
    fn io_begin(&self, at: Instant) {
        self.io_in_flight.set(self.io_in_flight.get() + 1);
        if self.io_in_flight.get() == 1 {
            self.io_busy_since.set(Some(at));
        }
    }

    fn io_end(&self) {
        self.io_in_flight.set(self.io_in_flight.get() - 1);
        if self.io_in_flight.get() == 0 {
            if let Some(b) = self.io_busy_since.take() {
                self.io_busy_ns.set(self.io_busy_ns.get() + since(b));
            }
        }
    }
}

/// A [`Storage`] that records IO times in [`IoTimes`].
pub struct TimedStorage<S> {
    inner: S,
    times: Rc<IoTimes>,
}

impl<S: Storage> TimedStorage<S> {
    pub fn new(inner: S) -> TimedStorage<S> {
        TimedStorage {
            inner,
            times: Rc::new(IoTimes::default()),
        }
    }

    pub fn times(&self) -> &Rc<IoTimes> {
        &self.times
    }
}

impl<S: Storage> Storage for TimedStorage<S> {
    type File = TimedFile<S::File>;
    type Buf = S::Buf;

    fn alloc_buf(&self, len: usize) -> S::Buf {
        self.inner.alloc_buf(len)
    }

    async fn open_rw(&self, path: &Path) -> io::Result<Self::File> {
        let inner = self.inner.open_rw(path).await?;
        Ok(TimedFile {
            inner,
            times: self.times.clone(),
        })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path).await
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path).await
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        self.inner.list_dir(path).await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to).await
    }
}

/// A file of a [`TimedStorage`].
pub struct TimedFile<F> {
    inner: F,
    times: Rc<IoTimes>,
}

impl<F: StorageFile> StorageFile for TimedFile<F> {
    type Buf = F::Buf;

    async fn write_at(&self, buf: F::Buf, pos: u64) -> io::Result<()> {
        let len = buf.as_ref().len() as u64;
        let t0 = Instant::now();
        let t = &self.times;
        t.writes_in_flight.set(t.writes_in_flight.get() + 1);
        if t.writes_in_flight.get() == 1 {
            t.busy_since.set(Some(t0));
        }
        t.io_begin(t0);
        let r = self.inner.write_at(buf, pos).await;
        t.io_end();
        let ns = since(t0);
        t.writes_in_flight.set(t.writes_in_flight.get() - 1);
        if t.writes_in_flight.get() == 0 {
            if let Some(b) = t.busy_since.take() {
                t.write_busy_ns.set(t.write_busy_ns.get() + since(b));
            }
        }
        t.writes.set(t.writes.get() + 1);
        t.write_bytes.set(t.write_bytes.get() + len);
        t.write_ns.set(t.write_ns.get() + ns);
        t.write_samples.borrow_mut().push(ns);
        r
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        self.inner.read_at(pos, len).await
    }

    async fn fdatasync(&self) -> io::Result<()> {
        let t0 = Instant::now();
        let t = &self.times;
        t.io_begin(t0);
        let r = self.inner.fdatasync().await;
        t.io_end();
        let ns = since(t0);
        t.syncs.set(t.syncs.get() + 1);
        t.sync_ns.set(t.sync_ns.get() + ns);
        t.sync_samples.borrow_mut().push(ns);
        r
    }

    async fn size(&self) -> io::Result<u64> {
        self.inner.size().await
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len).await
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        self.inner.preallocate(len).await
    }
}
