//! A fault-injecting [`Storage`] for tests: short writes, failing fsyncs, torn tails and
//! simulated crashes, on top of [`StdStorage`]; optionally a model of what a power loss
//! keeps ([`Durability`]: only fdatasynced contents and directory-synced names).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
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
    /// Fail the n-th next directory fsync (`sync_dir`); nothing of it is made durable.
    pub fail_sync_dir_in: Cell<u32>,
    /// Make the n-th next write short: only `short_write_bytes` of it reach the file, then error.
    pub short_write_in: Cell<u32>,
    pub short_write_bytes: Cell<usize>,
    /// Once set, every operation fails (the "machine" is gone).
    pub crashed: Cell<bool>,
    /// While set, `preallocate` fails with ENOSPC (a nearly full disk: too little room to
    /// reserve ahead, though writes themselves still fit).
    pub preallocate_no_space: Cell<bool>,
    /// Preallocations refused by `preallocate_no_space`.
    pub preallocations_refused: Cell<u32>,
    /// Every write and fdatasync yields once before it runs, as real IO does, so other
    /// tasks (appends, a concurrent sync) interleave with it.
    pub yield_each_io: Cell<bool>,
    /// Writes and fdatasyncs in flight now, and whether a write was ever in flight during
    /// an fdatasync (the flusher's overlap).
    pub writes_in_flight: Cell<u32>,
    pub syncs_in_flight: Cell<u32>,
    pub write_during_sync: Cell<bool>,
    /// When `Some`, what a power loss would keep is tracked, and [`FaultPlan::power_loss`]
    /// puts the files back to it. Enable it before the storage opens anything.
    pub durability: RefCell<Option<Durability>>,
}

/// What survives a power loss, modelled at the strictest the POSIX rules allow: a file's
/// content (size included) is what its last fdatasync saw, and a directory holds the names
/// it had at its last fsync (creations, removals and renames since are lost). Files are
/// told apart by an identity that follows renames, like an inode. Files that existed before
/// the model saw them count as durable as they were.
#[derive(Default, Debug)]
pub struct Durability {
    next_id: u64,
    /// Current name → identity.
    names: HashMap<PathBuf, u64>,
    /// Names as of their directory's last fsync.
    durable_names: HashMap<PathBuf, u64>,
    /// Content as of each identity's last fdatasync.
    synced: HashMap<u64, Vec<u8>>,
}

impl FaultPlan {
    /// Starts tracking durability (see [`Durability`]).
    pub fn model_durability(&self) {
        *self.durability.borrow_mut() = Some(Durability::default());
    }

    /// The machine loses power: every file the model saw is put back to its durable
    /// content and names, and every later operation fails (`crashed`). Reopen the
    /// directory with a fresh storage afterwards.
    pub fn power_loss(&self) {
        self.crashed.set(true);
        let model = self
            .durability
            .borrow_mut()
            .take()
            .expect("durability modelled");
        let mut touched: Vec<&PathBuf> = model.names.keys().collect();
        touched.extend(model.durable_names.keys());
        for p in touched {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => panic!("{p:?}: {e}"),
                _ => {}
            }
        }
        for (p, id) in &model.durable_names {
            let content = model.synced.get(id).map_or(&[][..], |c| &c[..]);
            std::fs::write(p, content).expect("restore durable content");
        }
    }

    fn with_model<T>(&self, f: impl FnOnce(&mut Durability) -> T) -> Option<T> {
        self.durability.borrow_mut().as_mut().map(f)
    }

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
    /// Identity in the durability model, when modelled.
    id: Option<u64>,
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
        let existed = path.exists();
        let inner = StdStorage.open_rw(path).await?;
        let id = match self.plan.with_model(|m| m.names.get(path).copied()) {
            None => None,
            Some(Some(id)) => Some(id),
            Some(None) => {
                let before = if existed {
                    Some(read_whole(&inner).await?)
                } else {
                    None
                };
                self.plan.with_model(|m| {
                    m.next_id += 1;
                    let id = m.next_id;
                    m.names.insert(path.to_path_buf(), id);
                    if let Some(content) = before {
                        m.durable_names.insert(path.to_path_buf(), id);
                        m.synced.insert(id, content);
                    }
                    id
                })
            }
        };
        Ok(FaultyFile {
            inner,
            plan: self.plan.clone(),
            id,
        })
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.check()?;
        self.plan.with_model(|m| m.names.remove(path));
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
        if FaultPlan::trip(&self.plan.fail_sync_dir_in) {
            return Err(injected("fsync dir"));
        }
        self.plan.with_model(|m| {
            m.durable_names.retain(|p, _| p.parent() != Some(path));
            for (p, id) in &m.names {
                if p.parent() == Some(path) {
                    m.durable_names.insert(p.clone(), *id);
                }
            }
        });
        StdStorage.sync_dir(path).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check()?;
        StdStorage.rename(from, to).await?;
        self.plan.with_model(|m| {
            if let Some(id) = m.names.remove(from) {
                m.names.insert(to.to_path_buf(), id);
            }
        });
        Ok(())
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
            match self.inner.fdatasync().await {
                Ok(()) => match self.id {
                    Some(id) => read_whole(&self.inner).await.map(|content| {
                        plan.with_model(|m| m.synced.insert(id, content));
                    }),
                    None => Ok(()),
                },
                e => e,
            }
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
        if self.plan.crashed.get() {
            return Err(injected("crashed"));
        }
        if self.plan.preallocate_no_space.get() {
            let refused = &self.plan.preallocations_refused;
            refused.set(refused.get() + 1);
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        self.inner.preallocate(len).await
    }
}

async fn read_whole(file: &StdFile) -> io::Result<Vec<u8>> {
    let size = file.size().await?;
    Ok(file.read_at(0, size as usize).await?.to_vec())
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
