//! The controller's Raft-state file, `<data dir>/cluster/controller.wal`: the group
//! manager's `Persist` writes as [`sluice_raft::wal`] records, appended in `seq` order and
//! made durable by `fdatasync` (one sync covers every write before it). On open the file is
//! replayed, a torn tail (a write a crash cut short) is cut off, and what is left is synced
//! before anything acts on it (a page-cache copy that survived a process kill is not yet
//! durable). A record that checksums but does not fit is a damaged file: opening fails.
//!
//! After a metadata snapshot ([`crate::snapshot`]) the log before it is dropped: the WAL
//! task writes the snapshot file durably (a temporary file, fdatasync, rename, directory
//! sync), then rewrites this file as the records of the log as it now stands, including
//! any writes queued meanwhile ([`WalFile::rewrite`], atomic in the same way), so the file
//! shrinks to the entries after the snapshot. (A follower installing a leader's snapshot
//! queues a reset `LogStart` with it; a pass that cannot encode the log appends the queued
//! records instead.) A crash leaves one of these pairs, and each replays:
//! - no new snapshot file, the old WAL: the state before the snapshot;
//! - the new snapshot, the old WAL holding the snapshot's entry: the start compacts the
//!   log to the snapshot;
//! - the new snapshot, an old WAL that ends below it or holds another term at its index
//!   (an install cut short): the start restarts the log at the snapshot;
//! - the new snapshot, the rewritten WAL: the log starts at the snapshot.
//!
//! In the two middle cases the start rewrites this file to the log it made, durably,
//! before anything can append to it (a record appended to a file ending below the
//! snapshot would never replay). A leftover temporary file is removed on open.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, Directory, OpenOptions};
use sluice_raft::wal;
use sluice_raft::{GroupId, ReplicaLog};

/// The directory under the data dir, shared with the broker's other cluster files.
pub const CLUSTER_DIR: &str = "cluster";
pub const WAL_FILE: &str = "controller.wal";
/// Bytes read per call while replaying.
const READ_CHUNK: usize = 1 << 20;

pub struct WalFile {
    file: BufferedFile,
    len: u64,
    path: PathBuf,
}

/// What opening found.
pub struct Opened {
    pub wal: WalFile,
    pub logs: BTreeMap<GroupId, ReplicaLog>,
    /// Bytes of torn tail cut off.
    pub cut: u64,
}

fn with_path(e: impl Into<io::Error>, what: &str, path: &Path) -> io::Error {
    let e: io::Error = e.into();
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

impl WalFile {
    /// Opens (or creates) the file under `data_dir`, replays it, cuts a torn tail and syncs.
    pub async fn open(data_dir: &Path) -> io::Result<Opened> {
        let dir = data_dir.join(CLUSTER_DIR);
        let dir_existed = dir.is_dir();
        std::fs::create_dir_all(&dir).map_err(|e| with_path(e, "create", &dir))?;
        if !dir_existed {
            sync_dir(data_dir).await?;
        }
        let path = dir.join(WAL_FILE);
        // A rewrite a crash interrupted (see `rewrite`): the file it was replacing stands.
        let tmp = dir.join(format!("{WAL_FILE}{TMP_SUFFIX}"));
        if tmp.exists() {
            std::fs::remove_file(&tmp).map_err(|e| with_path(e, "remove", &tmp))?;
        }
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .buffered_open(&path)
            .await
            .map_err(|e| with_path(e, "open", &path))?;
        let size = file
            .file_size()
            .await
            .map_err(|e| with_path(e, "stat", &path))?;
        let mut bytes = Vec::with_capacity(size as usize);
        while (bytes.len() as u64) < size {
            let want = READ_CHUNK.min((size - bytes.len() as u64) as usize);
            let got = file
                .read_at(bytes.len() as u64, want)
                .await
                .map_err(|e| with_path(e, "read", &path))?;
            if got.is_empty() {
                break;
            }
            bytes.extend_from_slice(&got);
        }
        let replayed = wal::replay(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e} (damaged or foreign file)", path.display()),
            )
        })?;
        let len = replayed.valid_len as u64;
        let cut = bytes.len() as u64 - len;
        if cut > 0 || (bytes.len() as u64) < size {
            log::warn!(
                "controller: {}: cutting {cut} byte(s) of torn tail after byte {len}",
                path.display()
            );
            file.truncate(len)
                .await
                .map_err(|e| with_path(e, "truncate", &path))?;
        }
        file.fdatasync()
            .await
            .map_err(|e| with_path(e, "fdatasync", &path))?;
        if !existed {
            sync_dir(&dir).await?;
        }
        Ok(Opened {
            wal: WalFile { file, len, path },
            logs: replayed.logs,
            cut,
        })
    }

    /// Replaces the file with `bytes` (records that replay to the current state, without
    /// the entries a snapshot covers: `sluice_raft::wal::encode_log`), durably and
    /// atomically ([`write_atomic`]), and returns it open for appending. A crash leaves the
    /// old file or the new one, and either replays to the same state.
    pub async fn rewrite(data_dir: &Path, bytes: Vec<u8>) -> io::Result<WalFile> {
        let dir = data_dir.join(CLUSTER_DIR);
        let len = bytes.len() as u64;
        write_atomic(&dir, WAL_FILE, bytes).await?;
        let path = dir.join(WAL_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .buffered_open(&path)
            .await
            .map_err(|e| with_path(e, "open", &path))?;
        Ok(WalFile { file, len, path })
    }

    /// Appends record bytes (not synced).
    pub async fn append(&mut self, mut buf: Vec<u8>) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self
                .file
                .write_at(buf.clone(), self.len)
                .await
                .map_err(|e| with_path(e, "write", &self.path))?;
            if n == 0 {
                return Err(with_path(
                    io::Error::new(io::ErrorKind::WriteZero, "wrote nothing"),
                    "write",
                    &self.path,
                ));
            }
            self.len += n as u64;
            buf.drain(..n);
        }
        Ok(())
    }

    /// Makes every append so far durable.
    pub async fn sync(&self) -> io::Result<()> {
        self.file
            .fdatasync()
            .await
            .map_err(|e| with_path(e, "fdatasync", &self.path))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What a file being replaced is first written as (see [`write_atomic`]).
pub const TMP_SUFFIX: &str = ".tmp";

/// Writes `bytes` as `dir/name` durably and atomically: a temporary file, fdatasync,
/// rename over `name`, directory sync. A crash leaves the old file or the new one, whole
/// (and maybe a temporary file, which the next open removes).
pub async fn write_atomic(dir: &Path, name: &str, bytes: Vec<u8>) -> io::Result<()> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let path = dir.join(name);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(&tmp)
        .await
        .map_err(|e| with_path(e, "create", &tmp))?;
    let mut w = WalFile {
        file,
        len: 0,
        path: tmp.clone(),
    };
    w.append(bytes).await?;
    w.sync().await?;
    let _ = w.file.close().await;
    std::fs::rename(&tmp, &path).map_err(|e| with_path(e, "rename", &tmp))?;
    sync_dir(dir).await
}

pub(crate) async fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = Directory::open(dir)
        .await
        .map_err(|e| with_path(e, "open", dir))?;
    d.sync().await.map_err(|e| with_path(e, "fsync", dir))?;
    let _ = d.close().await;
    Ok(())
}
