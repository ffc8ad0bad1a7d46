//! Moving a partition replica to another log directory while it serves (AlterReplicaLogDirs,
//! KIP-113): a copy, `<name>.<uuid>-future` in the destination, catches up with the live
//! directory in passes; then appends stop for a last, small pass and the switch.
//!
//! Invariants:
//! - The live directory is not changed by a move until its copy is complete and durable.
//! - The switch is, in order: the copy's files synced, [`MOVE_COMPLETE`] written into it;
//!   the placement file names the destination; the live directory is renamed
//!   `….<uuid>-delete`; the copy is renamed to the live name. A crash anywhere leaves the
//!   live directory (the copy is dropped at start) or only the complete copy (promoted at
//!   start; if the old directory is in an offline directory then, the start refuses the two
//!   copies once it is back, as Kafka's does): see `log_dirs`.
//! - One move per partition: a request for another directory cancels the one under way (its
//!   copy removed), one for the same directory changes nothing (Kafka's rules). A request
//!   that comes while a move is in its last pass is answered but has no effect.
//! - Appends are refused (NOT_LEADER_OR_FOLLOWER, which clients retry) only during the last
//!   pass and the switch: passes go on while the live log serves until what the last pass
//!   would copy is under [`FINAL_PASS_BYTES_MAX`] (the active segment is rolled so that it
//!   is small, and the rolled one copied again once its file times can be trusted), or
//!   [`PASSES_MAX`] passes were made. `perf/log-dir-move.py` measures the stop.
//! - A copy holds [`MOVE_COMPLETE`] only once it is whole and durable, and the placement
//!   names its directory only after that: the start promotes no other copy, and a failed
//!   move removes only a copy without it.
//! - A failed step takes the directory it failed in offline; the partition is reopened
//!   from wherever its live directory then is, or stays closed (KAFKA_STORAGE_ERROR).
//! - Plain (one-replica) partitions only for now: a replicated partition's log belongs to
//!   its Raft group's store, which has no way yet to reopen it elsewhere.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sluice_shard::table::PartitionKey;

use crate::log_dirs::MOVE_COMPLETE;
use crate::shard::{BrokerShard, Partition};
use crate::{kerr, partition_dirs};

/// What the last pass may copy with appends stopped.
pub const FINAL_PASS_BYTES_MAX: u64 = 8 << 20;
/// Passes made while the log serves before the last one, whatever is left (at
/// [`PASS_PAUSE`] apart, longer than a rolled segment takes to settle, [`MTIME_SLACK`]).
pub const PASSES_MAX: usize = 40;
/// Pause between passes (appends accumulate; a roll needs an append).
const PASS_PAUSE: Duration = Duration::from_millis(100);
/// A file whose length and modification time are unchanged is trusted as copied only if it
/// was modified this long before its copy began (file times are coarse: a write in the same
/// tick as the copy's read would not change them).
const MTIME_SLACK: Duration = Duration::from_secs(2);

/// A move under way (shared by every shard: DescribeLogDirs reports the copy).
pub struct MoveState {
    /// The destination log directory.
    pub dest: usize,
    /// The copy's directory.
    pub future: PathBuf,
    cancelled: AtomicBool,
    /// Bytes in the copy so far.
    pub copied_bytes: AtomicI64,
    /// Offsets the copy is behind the live log, as far as whole segments tell (Kafka's
    /// future-replica `offset_lag`: the live log end minus the copy's).
    pub offset_lag: AtomicI64,
}

impl MoveState {
    pub fn new(dest: usize, future: PathBuf) -> MoveState {
        MoveState {
            dest,
            future,
            cancelled: AtomicBool::new(false),
            copied_bytes: AtomicI64::new(0),
            offset_lag: AtomicI64::new(-1),
        }
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// What a finished move did, for its log line (and perf/log-dir-move.py, which reads it).
#[derive(Default)]
struct Moved {
    passes: usize,
    bytes: u64,
    last_pass_bytes: u64,
    /// From the log's close to its reopening in the destination.
    stopped: Duration,
    total: Duration,
}

/// Files of the copy and the source state they were copied from.
#[derive(Default)]
struct Copied {
    /// File name -> (length, modification time) of the source when copied, and when the
    /// copy began.
    files: HashMap<OsString, (u64, SystemTime, SystemTime)>,
}

/// A segment file's base offset (`<20 digits>.log`).
fn segment_base(name: &std::ffi::OsStr) -> Option<i64> {
    name.to_str()?.strip_suffix(".log")?.parse().ok()
}

/// Whether a source file must be copied (again). On the last pass: everything but sealed
/// segments known unchanged (settled: modified well before their copy began). Before it:
/// what changed since it was copied, but a sealed segment only once it has settled (a
/// segment just rolled is copied once, not again to be sure of it), and one whose copy is
/// not known to be settled once it is, so that the last pass finds it settled.
fn needs_copy(
    name: &std::ffi::OsStr,
    meta: &fs::Metadata,
    copied: &Copied,
    last: bool,
    active_base: Option<i64>,
) -> bool {
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let sealed = segment_base(name).is_some_and(|b| Some(b) != active_base);
    let settled = |at: SystemTime| at.duration_since(mtime).is_ok_and(|age| age >= MTIME_SLACK);
    match copied.files.get(name) {
        Some(&(len, was, began)) if len == meta.len() && was == mtime => {
            if last {
                !(sealed && settled(began))
            } else {
                sealed && !settled(began) && settled(SystemTime::now())
            }
        }
        _ => last || !sealed || settled(SystemTime::now()),
    }
}

/// One pass: copies what [`needs_copy`] says from `src` into `dst` and removes from `dst`
/// what `src` no longer has (retention removed a segment meanwhile). Returns the bytes
/// copied, the bytes the last pass would copy now, and the active segment's size.
fn copy_pass(
    src: &Path,
    dst: &Path,
    copied: &mut Copied,
    last: bool,
) -> io::Result<(u64, u64, u64)> {
    fs::create_dir_all(dst)?;
    let mut entries = Vec::new();
    for e in fs::read_dir(src)? {
        let e = e?;
        // (A marker left in a live directory by a crash after its switch is no part of it:
        // a copy must never hold one before it is complete.)
        if e.file_type()?.is_file() && e.file_name() != MOVE_COMPLETE {
            entries.push(e.file_name());
        }
    }
    let active_base = entries.iter().filter_map(|n| segment_base(n)).max();
    let mut bytes = 0;
    for name in &entries {
        let from = src.join(name);
        let meta = match fs::metadata(&from) {
            Ok(m) => m,
            // Removed since the listing (retention): not in the copy either.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !needs_copy(name, &meta, copied, last, active_base) {
            continue;
        }
        let began = SystemTime::now();
        match fs::copy(&from, dst.join(name)) {
            Ok(n) => bytes += n,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        // Durable now, while appends go on: the last pass, appends stopped, then has only
        // its own few bytes to sync (syncing a whole partition's copy there took seconds).
        fs::File::open(dst.join(name))?.sync_data()?;
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        copied
            .files
            .insert(name.clone(), (meta.len(), mtime, began));
    }
    for e in fs::read_dir(dst)? {
        let name = e?.file_name();
        if !entries.contains(&name) {
            fs::remove_file(dst.join(&name))?;
            copied.files.remove(&name);
        }
    }
    // What the last pass would copy, were it now.
    let mut pending = 0;
    for name in &entries {
        if let Ok(meta) = fs::metadata(src.join(name)) {
            if needs_copy(name, &meta, copied, true, active_base) {
                pending += meta.len();
            }
        }
    }
    let active_bytes = active_base
        .and_then(|b| fs::metadata(src.join(format!("{b:020}.log"))).ok())
        .map_or(0, |m| m.len());
    Ok((bytes, pending, active_bytes))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// The live log's end minus the first offset the copy does not hold whole (segments are
/// copied whole, so the copy is at least at the base of the first segment not yet copied).
fn lag_estimate(src: &Path, copied: &Copied, log_end: i64) -> i64 {
    let Ok(entries) = fs::read_dir(src) else {
        return -1;
    };
    let mut bases: Vec<(i64, OsString)> = entries
        .flatten()
        .filter_map(|e| Some((segment_base(&e.file_name())?, e.file_name())))
        .collect();
    bases.sort();
    let behind = bases
        .iter()
        .find(|(_, name)| {
            let current = fs::metadata(src.join(name)).ok();
            match (copied.files.get(name), current) {
                (Some(&(len, was, _)), Some(m)) => {
                    len != m.len() || was != m.modified().unwrap_or(SystemTime::UNIX_EPOCH)
                }
                _ => true,
            }
        })
        .map_or(log_end, |(base, _)| *base);
    (log_end - behind).max(0)
}

/// A failed switch: the directory it failed in, and where the partition is live now (None:
/// nowhere whole).
struct Failed {
    dir: usize,
    error: io::Error,
    live: Option<PathBuf>,
}

/// The last pass and the switch, appends stopped (blocking; see the module header for the
/// order). Returns the last pass's bytes and the partition's live directory.
#[allow(clippy::too_many_arguments)]
fn switch(
    shared: &crate::Shared,
    src: &Path,
    future: &Path,
    dest_root: &Path,
    name: &str,
    mut copied: Copied,
    (topic, index): (String, i32),
    (src_dir, dest): (usize, usize),
) -> Result<(u64, PathBuf), Failed> {
    let in_dest = |error| Failed {
        dir: dest,
        error,
        live: Some(src.to_path_buf()),
    };
    let (bytes, _, _) = copy_pass(src, future, &mut copied, true).map_err(in_dest)?;
    // (Each file was synced as it was copied.)
    sync_dir(future).map_err(in_dest)?;
    fs::write(future.join(MOVE_COMPLETE), b"")
        .and_then(|()| fs::File::open(future.join(MOVE_COMPLETE))?.sync_all())
        .and_then(|()| sync_dir(future))
        .map_err(in_dest)?;
    let dirs = &shared.log_dirs;
    dirs.relocate(&topic, index, dest);
    if let Err(e) = dirs.persist() {
        dirs.relocate(&topic, index, src_dir);
        return Err(Failed {
            dir: 0,
            error: e,
            live: Some(src.to_path_buf()),
        });
    }
    let src_root = src.parent().unwrap_or(Path::new("/"));
    let doomed = src_root.join(partition_dirs::renamed(name, partition_dirs::DELETE_SUFFIX));
    let back = |error| {
        // Still live in the source: the placement goes back to it.
        dirs.relocate(&topic, index, src_dir);
        let _ = dirs.persist();
        Failed {
            dir: src_dir,
            error,
            live: Some(src.to_path_buf()),
        }
    };
    fs::rename(src, &doomed).map_err(back)?;
    // From here the complete copy is the partition (a start promotes it).
    let live = dest_root.join(name);
    sync_dir(src_root).map_err(|error| Failed {
        dir: src_dir,
        error,
        live: None,
    })?;
    fs::rename(future, &live)
        .and_then(|()| fs::remove_file(live.join(MOVE_COMPLETE)))
        .and_then(|()| sync_dir(dest_root))
        .map_err(|error| Failed {
            dir: dest,
            error,
            live: None,
        })?;
    if let Err(e) = fs::remove_dir_all(&doomed) {
        log::warn!(
            "cannot remove {} (removed at the next start): {e}",
            doomed.display()
        );
    }
    Ok((bytes, live))
}

impl BrokerShard {
    /// Starts moving this shard's partition into log directory `dest` (or cancels a move,
    /// when `dest` is where it is), as AlterReplicaLogDirs asks; returns the partition's
    /// error code (Kafka's `ReplicaManager.alterReplicaLogDirs`).
    pub(crate) async fn begin_move(
        self: &Rc<Self>,
        key: PartitionKey,
        part: &Rc<Partition>,
        dest: usize,
    ) -> i16 {
        let dirs = &self.shared_handle.log_dirs;
        if dest >= dirs.len() {
            return kerr::LOG_DIR_NOT_FOUND;
        }
        if dirs.dir_offline(dest) {
            return kerr::KAFKA_STORAGE_ERROR;
        }
        let name = partition_dirs::dir_name(&part.topic, part.index);
        if dest == part.dir {
            // Already there: a move elsewhere under way stops.
            dirs.cancel_move(&name);
            return kerr::NONE;
        }
        if dirs.move_of(&name).is_some_and(|m| m.dest == dest) {
            return kerr::NONE;
        }
        if part.group.is_some() {
            // See the module header. (Kafka has no such refusal: the request is valid, this
            // node cannot do it yet.)
            log::warn!(
                "{name}: not moved to {}: moving a replicated partition between log \
                 directories is not supported yet",
                dirs.dir(dest).path.display()
            );
            return kerr::INVALID_REQUEST;
        }
        let Some(future_name) = partition_dirs::future_name(&name) else {
            // Kafka's answer when the copy's name would be too long.
            return kerr::INVALID_TOPIC_EXCEPTION;
        };
        let future = dirs.dir(dest).path.join(future_name);
        let made = future.clone();
        let created = glommio::executor()
            .spawn_blocking(move || {
                fs::create_dir(&made)?;
                sync_dir(made.parent().unwrap_or(Path::new("/")))
            })
            .await;
        if let Err(e) = created {
            log::error!("{name}: cannot create {}: {e}", future.display());
            return kerr::KAFKA_STORAGE_ERROR;
        }
        let state = Arc::new(MoveState::new(dest, future.clone()));
        dirs.begin_move(name.clone(), state.clone());
        let task = self
            .ctx
            .spawn_background(self.clone().run_move(key, state.clone()));
        match task {
            Ok(t) => {
                t.detach();
                kerr::NONE
            }
            Err(e) => {
                log::error!("cannot spawn a log directory move: {e}");
                dirs.end_move(&name, &state);
                glommio::executor()
                    .spawn_blocking(move || {
                        let _ = fs::remove_dir_all(&future);
                    })
                    .await;
                kerr::KAFKA_STORAGE_ERROR
            }
        }
    }

    /// Moves this shard's plain partition `key` into log directory `dest` (spawned by
    /// [`Self::begin_move`] once the copy's directory exists; see the module header).
    pub(crate) async fn run_move(self: Rc<Self>, key: PartitionKey, state: Arc<MoveState>) {
        let Some(part) = self.local_partition(&key.topic_id, key.partition) else {
            return;
        };
        let name = partition_dirs::dir_name(&part.topic, part.index);
        let dirs = &self.shared_handle.log_dirs;
        let result = self.copy_and_switch(&key, &part, &state).await;
        dirs.end_move(&name, &state);
        match result {
            Ok(Some(m)) => log::info!(
                "{name}: moved to log directory {} in {} ms: {} passes, {} bytes copied; \
                 appends stopped for {} ms (the last pass: {} bytes)",
                dirs.dir(state.dest).path.display(),
                m.total.as_millis(),
                m.passes,
                m.bytes,
                m.stopped.as_millis(),
                m.last_pass_bytes
            ),
            Ok(None) => log::info!(
                "{name}: move to {} cancelled",
                dirs.dir(state.dest).path.display()
            ),
            Err(e) => log::error!(
                "{name}: move to {} failed: {e}",
                dirs.dir(state.dest).path.display()
            ),
        }
        // The copy goes unless it is complete: then it may be the partition's only whole
        // directory (a switch that failed after setting the old one aside), which the next
        // start promotes (`log_dirs`). After a switch it is no longer there.
        let future = state.future.clone();
        glommio::executor()
            .spawn_blocking(move || {
                if future.is_dir() && !future.join(MOVE_COMPLETE).exists() {
                    let _ = fs::remove_dir_all(&future);
                }
            })
            .await;
    }

    /// The passes, then the switch; None when cancelled (or the partition went) first.
    async fn copy_and_switch(
        self: &Rc<Self>,
        key: &PartitionKey,
        part: &Rc<Partition>,
        state: &Arc<MoveState>,
    ) -> Result<Option<Moved>, String> {
        let started = Instant::now();
        let mut moved = Moved::default();
        let src = part.log.dir().to_path_buf();
        let future = state.future.clone();
        let still_here = |me: &Rc<Self>| {
            !state.is_cancelled()
                && me
                    .local_partition(&key.topic_id, key.partition)
                    .is_some_and(|p| Rc::ptr_eq(&p, part))
        };
        let mut copied = Copied::default();
        // The active segment becomes a sealed one the passes copy while appends go on; the
        // new one stays small for the last pass.
        part.log.request_roll();
        // (Under load the roll comes with the next append: the first pass then finds the old
        // active segment sealed, and copies it once settled, not before and again after.)
        glommio::timer::sleep(PASS_PAUSE).await;
        for pass in 0.. {
            let (s, f) = (src.clone(), future.clone());
            let (c, result) = glommio::executor()
                .spawn_blocking(move || {
                    let r = copy_pass(&s, &f, &mut copied, false);
                    (copied, r)
                })
                .await;
            copied = c;
            moved.passes += 1;
            let (bytes, pending, active_bytes) =
                result.map_err(|e| format!("copying into {}: {e}", future.display()))?;
            moved.bytes += bytes;
            state.copied_bytes.store(
                copied.files.values().map(|f| f.0 as i64).sum(),
                Ordering::Relaxed,
            );
            let end = part.log.log_end_offset();
            let (s, c) = (src.clone(), copied);
            let (c, lag) = glommio::executor()
                .spawn_blocking(move || {
                    let lag = lag_estimate(&s, &c, end);
                    (c, lag)
                })
                .await;
            copied = c;
            state.offset_lag.store(lag, Ordering::Relaxed);
            if !still_here(self) {
                return Ok(None);
            }
            if pending <= FINAL_PASS_BYTES_MAX || pass + 1 >= PASSES_MAX {
                break;
            }
            // The active segment grew past what the last pass should copy: another roll.
            if active_bytes > FINAL_PASS_BYTES_MAX / 2 {
                part.log.request_roll();
            }
            glommio::timer::sleep(PASS_PAUSE).await;
        }
        // The last pass: no topic change meanwhile (a deletion would remove the directory
        // under the copy), and no append.
        let _one_at_a_time = self.apply_lock.lock().await;
        if !still_here(self) {
            return Ok(None);
        }
        let stopped = Instant::now();
        let dirs = &self.shared_handle.log_dirs;
        if let Err(e) = part.log.close().await {
            // The flush before the switch failed: the directory's disk did.
            self.dir_failed(part.dir, format!("{}-{}: {e}", part.topic, part.index));
            return Err(format!("closing the log: {e}"));
        }
        // Nothing acts on the directory's paths from here on (retention, DeleteRecords).
        part.log.retire_and_fence().await;
        let (src_dir, dest) = (part.dir, state.dest);
        let shared = self.shared_handle.clone();
        let (topic, index) = (part.topic.clone(), part.index);
        let name = partition_dirs::dir_name(&part.topic, part.index);
        let (s, f) = (src.clone(), future.clone());
        let dest_root = dirs.dir(dest).path.clone();
        let switched = glommio::executor()
            .spawn_blocking(move || {
                switch(
                    &shared,
                    &s,
                    &f,
                    &dest_root,
                    &name,
                    copied,
                    (topic, index),
                    (src_dir, dest),
                )
            })
            .await;
        let at = match switched {
            Ok((bytes, live)) => {
                moved.last_pass_bytes = bytes;
                moved.bytes += bytes;
                live
            }
            Err(Failed { dir, error, live }) => {
                self.dir_failed(
                    dir,
                    format!("{}-{}: moving: {error}", part.topic, part.index),
                );
                match live {
                    // Reopened where it is live (offline if that is the failed directory).
                    Some(live) if dir != dirs.holding(&live) => live,
                    _ => {
                        // Closed until a restart sorts out the directories (`log_dirs`).
                        self.forget_closed(key);
                        return Err(error.to_string());
                    }
                }
            }
        };
        if let Err(e) = self.reopen_plain(*key, part, at.clone()).await {
            self.dir_failed(
                dirs.holding(&at),
                format!("{}-{}: reopening: {e}", part.topic, part.index),
            );
            self.forget_closed(key);
            return Err(format!("reopening the log: {e}"));
        }
        moved.stopped = stopped.elapsed();
        moved.total = started.elapsed();
        Ok(Some(moved))
    }
}
