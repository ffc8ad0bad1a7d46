//! Small whole files written durably through [`Storage`]: written and fdatasynced in place
//! (index files, producer snapshots: rebuilt or ignored when damaged), or replaced
//! atomically (checkpoints holding a value already acted on: the log start offset, the
//! leader-epoch history), so a power loss leaves either the old or the new content.

use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::io::{Storage, StorageFile, PAGE_SIZE};

/// Opens (or creates) `path` and reads its size.
pub(crate) async fn open_sized<S: Storage>(storage: &S, path: &Path) -> Result<(S::File, u64)> {
    let file = storage
        .open_rw(path)
        .await
        .map_err(|e| StorageError::io("open", path, e))?;
    let size = file
        .size()
        .await
        .map_err(|e| StorageError::io("stat", path, e))?;
    Ok((file, size))
}

/// Writes `bytes` as the whole content of `path` (any length: the direct write is padded to
/// pages with zeros, then the file is cut to `bytes.len()`), and fdatasyncs it.
pub(crate) async fn write_file<S: Storage>(storage: &S, path: &Path, bytes: &[u8]) -> Result<()> {
    let file = storage
        .open_rw(path)
        .await
        .map_err(|e| StorageError::io("create", path, e))?;
    let padded = bytes.len().div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE;
    let mut buf = storage.alloc_buf(padded);
    buf.as_mut()[..bytes.len()].copy_from_slice(bytes);
    buf.as_mut()[bytes.len()..].fill(0);
    file.write_at(buf, 0)
        .await
        .map_err(|e| StorageError::io("write", path, e))?;
    file.truncate(bytes.len() as u64)
        .await
        .map_err(|e| StorageError::io("truncate", path, e))?;
    file.fdatasync()
        .await
        .map_err(|e| StorageError::io("fdatasync", path, e))
}

/// Replaces `path` (in directory `dir`) atomically: the new content is written and synced
/// beside it, renamed over it, and the directory synced. Overwriting in place could tear
/// both values at a power loss.
pub(crate) async fn replace_file<S: Storage>(
    storage: &S,
    dir: &Path,
    path: &Path,
    bytes: &[u8],
) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash mid-replace holds a value never acknowledged.
    storage
        .remove(&tmp)
        .await
        .map_err(|e| StorageError::io("remove", &tmp, e))?;
    write_file(storage, &tmp, bytes).await?;
    storage
        .rename(&tmp, path)
        .await
        .map_err(|e| StorageError::io("rename", &tmp, e))?;
    storage
        .sync_dir(dir)
        .await
        .map_err(|e| StorageError::io("sync", dir, e))
}

/// The whole content of `path`, or `None` when it does not exist or is larger than
/// `max_bytes` (the caller treats both as "no usable file").
pub(crate) async fn read_file<S: Storage>(
    storage: &S,
    path: &Path,
    max_bytes: u64,
) -> Result<Option<Vec<u8>>> {
    let Some(dir) = path.parent() else {
        return Ok(None);
    };
    let names = storage
        .list_dir(dir)
        .await
        .map_err(|e| StorageError::io("list", dir, e))?;
    read_listed_file(storage, path, max_bytes, &names).await
}

/// [`read_file`] in a directory whose `names` the caller listed (opening a log lists its
/// directory once for all the files it reads: a listing per file cost 10,000 partitions'
/// start a directory read each, on the blocking-thread pool).
pub(crate) async fn read_listed_file<S: Storage>(
    storage: &S,
    path: &Path,
    max_bytes: u64,
    names: &[PathBuf],
) -> Result<Option<Vec<u8>>> {
    if !names
        .iter()
        .any(|n| Some(n.as_os_str()) == path.file_name())
    {
        return Ok(None);
    }
    let (file, size) = open_sized(storage, path).await?;
    if size > max_bytes {
        return Ok(None);
    }
    let bytes = file
        .read_at(0, size as usize)
        .await
        .map_err(|e| StorageError::io("read", path, e))?;
    Ok(Some(bytes.to_vec()))
}
