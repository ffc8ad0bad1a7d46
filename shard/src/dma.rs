//! `DmaStorage`: the storage crate's `Storage` trait over glommio DMA files (O_DIRECT through io_uring).
//!
//! Files and buffers belong to the shard whose executor created them (glommio state is
//! thread-local), hence `DmaStorage` is only obtainable from a [`ShardCtx`] and is `!Send`.

use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use sluice_storage::io::{IoBuf, Storage, StorageFile, DISCARDED_SUFFIX, PAGE_SIZE};

use crate::runtime::ShardCtx;

/// Largest single `read_at`: a corrupt index must not make us allocate gigabytes.
pub const READ_LEN_MAX: usize = 64 << 20;

/// A page-aligned buffer from glommio's DMA pool (registered with io_uring when memlock allows).
/// Owned by the shard that allocated it; !Send.
pub struct DmaBuf(DmaBuffer);

impl AsRef<[u8]> for DmaBuf {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl AsMut<[u8]> for DmaBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self.0.as_bytes_mut()
    }
}

impl IoBuf for DmaBuf {
    /// A `len` that is not a page multiple is rounded up (the extra bytes are the buffer's own
    /// padding), and one beyond the current length is clamped: bad input never panics.
    fn shrink_to(&mut self, len: usize) {
        let len = len
            .div_ceil(PAGE_SIZE)
            .saturating_mul(PAGE_SIZE)
            .min(self.0.len());
        self.0.trim_to_size(len);
    }
}

/// File operations for one shard. Owned by the shard it was created on; !Send.
#[derive(Clone)]
pub struct DmaStorage {
    _shard_local: PhantomData<Rc<()>>,
}

impl DmaStorage {
    /// Storage for the shard `ctx` belongs to (requiring the context proves we run on a shard).
    pub fn new(_ctx: &ShardCtx) -> DmaStorage {
        DmaStorage {
            _shard_local: PhantomData,
        }
    }
}

// `u64::is_multiple_of` needs Rust 1.87; the workspace MSRV is 1.85.
#[allow(clippy::manual_is_multiple_of)]
fn page_aligned(v: u64) -> bool {
    v % PAGE_SIZE as u64 == 0
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn with_path(e: io::Error, op: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

impl Storage for DmaStorage {
    type File = DmaStorageFile;
    type Buf = DmaBuf;

    /// `len` is rounded up to a page multiple (the contract asks callers for one already).
    fn alloc_buf(&self, len: usize) -> DmaBuf {
        let rounded = len.div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE;
        // Not zeroed: the contract leaves contents unspecified and the log zeroes the padding
        // it writes (zero-filling every 1 MiB buffer cost ~9 % of a shard's CPU).
        let mut buf = glommio::allocate_dma_buffer(rounded);
        if len == 0 {
            buf.trim_to_size(0);
        }
        DmaBuf(buf)
    }

    async fn open_rw(&self, path: &Path) -> io::Result<DmaStorageFile> {
        prime_iopoll_probe(path).await?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(path)
            .await
            .map_err(|e| with_path(e.into(), "opening", path))?;
        Ok(DmaStorageFile {
            file,
            path: path.to_path_buf(),
        })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        match glommio::io::remove(path).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e: io::Error = e.into();
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(with_path(e, "removing", path))
                }
            }
        }
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        // Rare and possibly several syscalls deep: run it on glommio's blocking pool, not the reactor.
        let p = path.to_path_buf();
        glommio::executor()
            .spawn_blocking(move || std::fs::create_dir_all(&p))
            .await
            .map_err(|e| with_path(e, "creating directory", path))
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let p = path.to_path_buf();
        glommio::executor()
            .spawn_blocking(move || -> io::Result<Vec<PathBuf>> {
                let mut names = Vec::new();
                for entry in std::fs::read_dir(&p)? {
                    names.push(PathBuf::from(entry?.file_name()));
                }
                names.sort();
                Ok(names)
            })
            .await
            .map_err(|e| with_path(e, "listing", path))
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // glommio resolves relative directory paths wrongly (EBADF on sync): go absolute.
        let absolute = std::path::absolute(path)?;
        let path = absolute.as_path();
        let dir = glommio::io::Directory::open(path)
            .await
            .map_err(|e| with_path(e.into(), "opening directory", path))?;
        let synced = dir
            .sync()
            .await
            .map_err(|e| with_path(e.into(), "syncing directory", path));
        let closed = dir
            .close()
            .await
            .map_err(|e| with_path(e.into(), "closing directory", path));
        synced.and(closed)
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        glommio::io::rename(from, to)
            .await
            .map_err(|e| with_path(e.into(), "renaming", from))
    }

    /// Renames the file to end in [`DISCARDED_SUFFIX`] and queues it for this shard's
    /// discard task, which frees its blocks [`DISCARD_STEP_BYTES`] at a time.
    async fn discard(&self, path: &Path, file: Option<Rc<DmaStorageFile>>) -> io::Result<()> {
        let discarded = path.to_str().is_some_and(|p| p.ends_with(DISCARDED_SUFFIX));
        let target = if discarded {
            path.to_path_buf()
        } else {
            let mut t = path.as_os_str().to_owned();
            t.push(DISCARDED_SUFFIX);
            let t = PathBuf::from(t);
            match glommio::io::rename(path, &t).await {
                Ok(()) => t,
                Err(e) => {
                    let e: io::Error = e.into();
                    if e.kind() == io::ErrorKind::NotFound {
                        return Ok(());
                    }
                    return Err(with_path(e, "renaming", path));
                }
            }
        };
        let start = DISCARDS.with(|d| {
            let mut d = d.borrow_mut();
            if d.queue.len() >= DISCARDS_QUEUED_MAX {
                return None;
            }
            d.queue.push_back((target.clone(), file));
            Some(!std::mem::replace(&mut d.draining, true))
        });
        match start {
            Some(true) => {
                glommio::spawn_local(drain_discards()).detach();
            }
            Some(false) => {}
            // A backlog this long means the steps cannot keep up: free this one at once.
            None => return self.remove(&target).await,
        }
        Ok(())
    }
}

/// Bytes one step of freeing a discarded file gives back: each `ftruncate` step is one
/// journal transaction, and every fdatasync on the filesystem waits for it. Unlinking a
/// 64 MiB segment at once held concurrent syncs ~11 ms on this host's ext4; 4 MiB steps
/// hold them ~3 ms (perf/results/2026-12-04-paced-segment-deletion.md).
const DISCARD_STEP_BYTES: u64 = 4 << 20;
/// Pause after each step, so syncs and the blocking pool's other work (renames, the
/// truncation of a rolled segment) run between steps.
const DISCARD_PAUSE: Duration = Duration::from_millis(5);
/// Longest wait for readers to let go of a discarded segment's handle before its blocks
/// are freed anyway (Kafka's `file.delete.delay.ms` default): a reader still holding it
/// then gets short reads, as at the end of a log, rather than the disk filling up behind it.
const DISCARD_READERS_WAIT_MAX: Duration = Duration::from_secs(60);
/// Discards queued per shard at most; past it a discard removes its file at once.
const DISCARDS_QUEUED_MAX: usize = 4096;

#[derive(Default)]
struct Discards {
    queue: std::collections::VecDeque<(PathBuf, Option<Rc<DmaStorageFile>>)>,
    /// A [`drain_discards`] task runs (it clears this when it finds the queue empty).
    draining: bool,
}

thread_local! {
    /// This shard's discarded files whose blocks are still to be freed, oldest first.
    static DISCARDS: std::cell::RefCell<Discards> = Default::default();
}

/// Frees the queued discarded files one at a time, then ends.
async fn drain_discards() {
    loop {
        let next = DISCARDS.with(|d| {
            let mut d = d.borrow_mut();
            let next = d.queue.pop_front();
            d.draining = next.is_some();
            next
        });
        let Some((path, file)) = next else { return };
        if let Some(file) = file {
            // Readers that took the handle before the discard finish first: freeing the
            // blocks under them would make their reads short.
            let since = std::time::Instant::now();
            while Rc::strong_count(&file) > 1 && since.elapsed() < DISCARD_READERS_WAIT_MAX {
                glommio::timer::sleep(DISCARD_PAUSE).await;
            }
        }
        if let Err(e) = free_gradually(&path).await {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("freeing discarded file: {e}");
            }
        }
    }
}

/// Shrinks `path` to nothing in [`DISCARD_STEP_BYTES`] steps, then unlinks it.
async fn free_gradually(path: &Path) -> io::Result<()> {
    let ex = glommio::executor();
    let p = path.to_path_buf();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // The rename that took the file out of the log's names must be durable before any of
    // its blocks go, or a crash could bring back a shortened segment under its old name.
    let (mut file, mut len) = ex
        .spawn_blocking(move || -> io::Result<(std::fs::File, u64)> {
            std::fs::File::open(&dir)?.sync_all()?;
            let f = std::fs::OpenOptions::new().write(true).open(&p)?;
            let len = f.metadata()?.len();
            Ok((f, len))
        })
        .await
        .map_err(|e| with_path(e, "opening discarded file", path))?;
    while len > 0 {
        len = len.saturating_sub(DISCARD_STEP_BYTES);
        file = ex
            .spawn_blocking(move || file.set_len(len).map(|()| file))
            .await
            .map_err(|e| with_path(e, "shrinking discarded file", path))?;
        glommio::timer::sleep(DISCARD_PAUSE).await;
    }
    drop(file);
    let p = path.to_path_buf();
    ex.spawn_blocking(move || std::fs::remove_file(&p))
        .await
        .map_err(|e| with_path(e, "removing discarded file", path))
}

thread_local! {
    /// Devices (st_dev) this shard has already primed glommio's iopoll probe for.
    static PRIMED_DEVICES: std::cell::RefCell<std::collections::HashSet<u64>> = Default::default();
    /// One priming at a time per shard: concurrent opens (a start opens many partitions at
    /// once) would share the scratch file's name, and one's create or remove could cut the
    /// file under another's probe read, which then sees EOF and marks the device pollable.
    static PRIMING: std::rc::Rc<glommio::sync::Semaphore> =
        std::rc::Rc::new(glommio::sync::Semaphore::new(1));
}

/// Makes glommio's per-thread, per-device iopoll probe see real data.
///
/// glommio 0.9 decides on the first DMA open per device (cached per thread) whether to use its
/// IOPOLL ring by reading the opened file's first block. If that file is empty (a new segment)
/// the read returns EOF without reaching the device and the device is wrongly marked pollable;
/// later real reads then fail with EOPNOTSUPP on devices without poll queues (virtio here).
/// So before the first open on a device, we DMA-open a one-page scratch file in the same
/// directory, which makes the probe issue a real read and cache the right answer.
async fn prime_iopoll_probe(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dev = match std::fs::metadata(&dir) {
        Ok(m) => m.dev(),
        // Let the real open report the problem with its own context.
        Err(_) => return Ok(()),
    };
    if PRIMED_DEVICES.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    let priming = PRIMING.with(|p| p.clone());
    let _one_at_a_time = priming
        .acquire_permit(1)
        .await
        .map_err(|e| io::Error::other(format!("iopoll probe priming: {e}")))?;
    if PRIMED_DEVICES.with(|p| p.borrow().contains(&dev)) {
        // Another open primed it while this one waited.
        return Ok(());
    }
    // The thread id keeps shards sharing a directory apart.
    let tid = rustix::thread::gettid().as_raw_nonzero();
    let scratch = dir.join(format!(".sluice-iopoll-probe-{}-{tid}", std::process::id()));
    let s2 = scratch.clone();
    glommio::executor()
        .spawn_blocking(move || -> io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&s2)?;
            f.write_all(&[0u8; PAGE_SIZE])?;
            // On disk, so the probe's O_DIRECT read really goes to the device.
            f.sync_data()
        })
        .await
        .map_err(|e| with_path(e, "writing iopoll probe file", &scratch))?;
    let opened = OpenOptions::new().read(true).dma_open(&scratch).await;
    if let Ok(f) = opened {
        let _ = f.close().await;
    }
    let _ = glommio::io::remove(&scratch).await;
    PRIMED_DEVICES.with(|p| p.borrow_mut().insert(dev));
    Ok(())
}

/// One open DMA file. Owned by the shard that opened it; !Send.
pub struct DmaStorageFile {
    file: DmaFile,
    path: PathBuf,
}

impl DmaStorageFile {
    /// The device's O_DIRECT alignment (512 or 4096); writes are page multiples, which covers both.
    pub fn alignment(&self) -> u64 {
        self.file.alignment()
    }

    /// Closes the file now instead of on drop (drop closes it asynchronously on the next IO cycle).
    pub async fn close(self) -> io::Result<()> {
        let path = self.path;
        self.file
            .close()
            .await
            .map_err(|e| with_path(e.into(), "closing", &path))
    }
}

impl StorageFile for DmaStorageFile {
    type Buf = DmaBuf;

    async fn write_at(&self, buf: DmaBuf, pos: u64) -> io::Result<()> {
        let len = buf.0.len();
        if !page_aligned(pos) || !page_aligned(len as u64) {
            return Err(invalid(format!(
                "unaligned write to {}: pos {pos}, len {len} (must be multiples of {PAGE_SIZE})",
                self.path.display()
            )));
        }
        if len == 0 {
            return Ok(());
        }
        let written = self
            .file
            .write_at(buf.0, pos)
            .await
            .map_err(|e| with_path(e.into(), "writing", &self.path))?;
        // O_DIRECT writes to a regular file are all-or-error in practice (short only on ENOSPC);
        // the buffer is consumed, so report rather than retry a partial page run.
        if written != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "short write to {} at {pos}: {written} of {len} bytes",
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        if len > READ_LEN_MAX {
            return Err(invalid(format!(
                "read of {len} bytes from {} exceeds READ_LEN_MAX {READ_LEN_MAX}",
                self.path.display()
            )));
        }
        if len == 0 {
            return Ok(Bytes::new());
        }
        // We align by hand and use `read_at_aligned` because glommio 0.9's unaligned `read_at`
        // reports `min(bytes_read, len)` bytes from the in-page offset, which runs past EOF
        // (returning stale buffer bytes) when the file ends inside the requested range.
        let align = self.file.alignment().max(PAGE_SIZE as u64);
        let start = pos - pos % align;
        let skip = (pos - start) as usize;
        let end = pos
            .checked_add(len as u64)
            .ok_or_else(|| invalid(format!("read at {pos} + {len} overflows")))?;
        let span = (end.div_ceil(align) * align - start) as usize;
        let read = self
            .file
            .read_at_aligned(start, span)
            .await
            .map_err(|e| with_path(e.into(), "reading", &self.path))?;
        // A short O_DIRECT read of a regular file means end of file.
        let got = read.len();
        if got <= skip {
            return Ok(Bytes::new());
        }
        let stop = got.min(skip + len);
        // One copy: glommio's read buffer is shard-local (Rc-backed), and `Bytes` must be Send.
        Ok(Bytes::copy_from_slice(&read[skip..stop]))
    }

    async fn fdatasync(&self) -> io::Result<()> {
        self.file
            .fdatasync()
            .await
            .map_err(|e| with_path(e.into(), "fdatasync", &self.path))
    }

    async fn size(&self) -> io::Result<u64> {
        self.file
            .file_size()
            .await
            .map_err(|e| with_path(e.into(), "stat", &self.path))
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.file
            .truncate(len)
            .await
            .map_err(|e| with_path(e.into(), "truncating", &self.path))
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        // KEEP_SIZE: blocks are reserved but the file size (what recovery scans) is unchanged.
        self.file
            .pre_allocate(len, true)
            .await
            .map_err(|e| with_path(e.into(), "preallocating", &self.path))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::runtime::{start, ShardConfig};
    use crate::shutdown::Shutdown;

    fn cfg() -> ShardConfig {
        ShardConfig {
            shards: 1,
            io_memory: 1 << 20,
            ring_depth: 64,
            ..ShardConfig::default()
        }
    }

    /// Runs `body` on one shard with a fresh temporary directory, until it returns.
    fn on_shard<F, Fut>(body: F)
    where
        F: Fn(DmaStorage, PathBuf) -> Fut + Send + Clone + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let rt = start(cfg(), Shutdown::new(), move |ctx| {
            body.clone()(ctx.storage(), root.clone())
        })
        .unwrap();
        rt.join().unwrap();
    }

    #[test]
    fn write_sync_read_truncate() {
        on_shard(|st, root| async move {
            let seg_dir = root.join("topic-0").join("p-3");
            st.create_dir_all(&seg_dir).await.unwrap();
            let path = seg_dir.join("00000000000000000000.log");
            let f = st.open_rw(&path).await.unwrap();
            assert_eq!(f.size().await.unwrap(), 0);

            // Contents are unspecified (not zeroed): the test fills every byte.
            let mut b = st.alloc_buf(2 * PAGE_SIZE);
            for (i, x) in b.as_mut().iter_mut().enumerate() {
                *x = (i % 251) as u8;
            }
            f.write_at(b, 0).await.unwrap();
            let mut b2 = st.alloc_buf(PAGE_SIZE);
            b2.as_mut().fill(0xAB);
            f.write_at(b2, 2 * PAGE_SIZE as u64).await.unwrap();
            f.fdatasync().await.unwrap();
            st.sync_dir(&seg_dir).await.unwrap();
            assert_eq!(f.size().await.unwrap(), 3 * PAGE_SIZE as u64);

            // Unaligned read spanning the page boundary.
            let r = f.read_at(4000, 200).await.unwrap();
            let want: Vec<u8> = (4000..4200).map(|i| (i % 251) as u8).collect();
            assert_eq!(&r[..], &want[..]);
            let r = f.read_at(2 * PAGE_SIZE as u64 - 10, 20).await.unwrap();
            assert_eq!(&r[10..], &[0xAB; 10]);

            // Truncate inside a page: reads stop exactly at the new end.
            f.truncate(5000).await.unwrap();
            assert_eq!(f.size().await.unwrap(), 5000);
            let r = f.read_at(4990, 100).await.unwrap();
            assert_eq!(r.len(), 10);
            assert_eq!(f.read_at(6000, 10).await.unwrap().len(), 0);

            // Bad input is an error, not a panic.
            let odd = st.alloc_buf(PAGE_SIZE);
            assert_eq!(
                f.write_at(odd, 100).await.unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            assert!(f.read_at(0, READ_LEN_MAX + 1).await.is_err());

            // A second handle sees the durable data.
            f.close().await.unwrap();
            let g = st.open_rw(&path).await.unwrap();
            assert_eq!(g.read_at(0, 3).await.unwrap().as_ref(), &[0, 1, 2]);
            drop(g);

            assert_eq!(
                st.list_dir(&seg_dir).await.unwrap(),
                vec![PathBuf::from("00000000000000000000.log")]
            );
            st.remove(&path).await.unwrap();
            st.remove(&path).await.unwrap(); // missing is fine
            assert!(st.list_dir(&seg_dir).await.unwrap().is_empty());
            assert!(st.list_dir(&root.join("nope")).await.is_err());
        });
    }

    /// Waits (10 s at most) until the discard task has removed `path`.
    async fn freed(path: &Path) {
        let since = std::time::Instant::now();
        while std::fs::metadata(path).is_ok() {
            assert!(since.elapsed() < Duration::from_secs(10), "not freed");
            glommio::timer::sleep(DISCARD_PAUSE).await;
        }
    }

    /// A discarded file leaves the log's names at once, keeps its blocks while a reader
    /// holds its handle, and is gone once freed; a discarded name is discarded once.
    #[test]
    fn discard_renames_then_frees_once_readers_let_go() {
        on_shard(|st, root| async move {
            let path = root.join("00000000000000000000.log");
            let f = Rc::new(st.open_rw(&path).await.unwrap());
            let len = 3 * DISCARD_STEP_BYTES as usize + PAGE_SIZE;
            let mut b = st.alloc_buf(len);
            b.as_mut().fill(7);
            f.write_at(b, 0).await.unwrap();
            f.fdatasync().await.unwrap();
            let reader = f.clone();
            st.discard(&path, Some(f)).await.unwrap();
            let gone = root.join(format!("00000000000000000000.log{DISCARDED_SUFFIX}"));
            assert_eq!(
                st.list_dir(&root).await.unwrap(),
                vec![PathBuf::from(gone.file_name().unwrap())]
            );
            // The reader still reads every byte while it holds the handle.
            glommio::timer::sleep(DISCARD_PAUSE * 4).await;
            assert_eq!(reader.read_at(len as u64 - 10, 10).await.unwrap().len(), 10);
            assert_eq!(std::fs::metadata(&gone).unwrap().len(), len as u64);
            drop(reader);
            freed(&gone).await;
            // Missing files, and names discarded already (swept at open), are fine.
            st.discard(&path, None).await.unwrap();
            std::fs::write(&gone, b"left by a crash").unwrap();
            st.discard(&gone, None).await.unwrap();
            freed(&gone).await;
            assert!(st.list_dir(&root).await.unwrap().is_empty());
        });
    }
}

/// How a segment file's blocks are reserved changes what an O_DIRECT append costs: a write
/// past the file size (blocks reserved with KEEP_SIZE, what the log does today) cannot be
/// issued without blocking, so io_uring hands it to a worker thread, and its fdatasync commits
/// the extent conversion to the journal; a write inside the file size into unwritten blocks
/// is issued inline but still converts; an overwrite of zeroed blocks does neither. A
/// benchmark, not a check (ignored; run it by hand, results in perf/results):
///
///     SLUICE_WRITE_MODES_DIR=/some/dir cargo test -p sluice-shard --release --lib write_modes -- --ignored --nocapture
#[cfg(test)]
mod write_modes {
    use super::*;
    use crate::runtime::{start, ShardConfig};
    use crate::shutdown::Shutdown;
    use std::time::Instant;

    /// CPU ticks of this process's threads: (io_uring workers excluded, io_uring workers,
    /// workers alive).
    fn task_cpu() -> (u64, u64, usize) {
        let mut main = 0;
        let mut wq = 0;
        let mut n = 0;
        for e in std::fs::read_dir("/proc/self/task").unwrap() {
            let p = e.unwrap().path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
            let after = stat.rsplit(')').next().unwrap_or("");
            let f: Vec<&str> = after.split_whitespace().collect();
            if f.len() < 13 {
                continue;
            }
            let t: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
            if comm.starts_with("iou-wrk") {
                wq += t;
                n += 1;
            } else {
                main += t;
            }
        }
        (main, wq, n)
    }

    #[test]
    #[ignore]
    fn write_modes() {
        let tmp =
            tempfile::tempdir_in(std::env::var("SLUICE_WRITE_MODES_DIR").unwrap_or(".".into()))
                .unwrap();
        let root = tmp.path().to_path_buf();
        let cfg = ShardConfig {
            shards: 1,
            io_memory: 4 << 20,
            ring_depth: 64,
            ..ShardConfig::default()
        };
        let rt = start(cfg, Shutdown::new(), move |ctx| {
            let st = ctx.storage();
            let root = root.clone();
            async move {
                for write_kib in [4usize, 64] {
                    for mode in ["keep_size", "sized", "zeroed", "keep_size", "sized", "zeroed"] {
                        let path = root.join(format!("f-{mode}"));
                        let _ = std::fs::remove_file(&path);
                        let f = st.open_rw(&path).await.unwrap();
                        // One preallocation step of the log (PREALLOCATE_STEP_BYTES).
                        let total: u64 = 32 << 20;
                        match mode {
                            "keep_size" => f.file.pre_allocate(total, true).await.unwrap(),
                            "sized" => f.file.pre_allocate(total, false).await.unwrap(),
                            _ => {
                                let mut pos = 0;
                                while pos < total {
                                    let mut b = st.alloc_buf(1 << 20);
                                    b.as_mut().fill(0);
                                    f.write_at(b, pos).await.unwrap();
                                    pos += 1 << 20;
                                }
                                f.fdatasync().await.unwrap();
                            }
                        }
                        let n = 2000usize;
                        let len = write_kib * 1024;
                        let c0 = task_cpu();
                        let t0 = Instant::now();
                        let mut lat = Vec::with_capacity(n);
                        let mut wlat = Vec::with_capacity(n);
                        for i in 0..n {
                            let mut b = st.alloc_buf(len);
                            b.as_mut().fill(i as u8 | 1);
                            let t = Instant::now();
                            f.write_at(b, (i * len) as u64).await.unwrap();
                            wlat.push(t.elapsed().as_micros() as u64);
                            f.fdatasync().await.unwrap();
                            lat.push(t.elapsed().as_micros() as u64);
                        }
                        let el = t0.elapsed();
                        let c1 = task_cpu();
                        lat.sort();
                        wlat.sort();
                        println!(
                            "{write_kib:>3} KiB {mode:>9}: {:.1} us/op, write p50 {} us, write+fdatasync p50 {} p99 {} us; CPU ticks: shard {}, io_uring workers {} ({} alive)",
                            el.as_micros() as f64 / n as f64,
                            wlat[n / 2],
                            lat[n / 2],
                            lat[n * 99 / 100],
                            c1.0 - c0.0,
                            c1.1.saturating_sub(c0.1),
                            c1.2
                        );
                        drop(f);
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        })
        .unwrap();
        rt.join().unwrap();
    }
}
