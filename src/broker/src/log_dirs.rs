//! The node's log directories (Kafka's `log.dirs`, JBOD, KIP-858): which one holds each
//! partition, where new partitions go, and which are offline.
//!
//! Invariants:
//! - The first directory is the node's metadata directory (cluster state, Raft stores,
//!   credentials): the node does not start without it. Any other that cannot be created,
//!   locked, identified or listed at start is offline, and the node starts without it, as a
//!   Kafka broker starts with some of its `log.dirs` offline. So is one the node recorded
//!   that lost its `meta.properties` (a disk not mounted), holds another id, or is no longer
//!   among `--data-dir` (Kafka's lost directory): never given a new id, so its partitions are
//!   not re-created empty.
//! - A partition's live directory (`<topic>-<partition>`) is in exactly one log directory:
//!   two live copies stop the start (Kafka: "Duplicate log directories"). A second copy
//!   exists only as `<name>.<uuid>-future` while a move is under way (`log_moves`).
//! - With more than one directory, which one holds each partition is written to
//!   `cluster/log-dir-placement` in the metadata directory (by directory id) before the
//!   partition's directory is created there. So a directory that is offline at start still
//!   owns its partitions: they answer KAFKA_STORAGE_ERROR rather than start over, empty, in
//!   another directory. What is on disk in an online directory wins over the file (a move
//!   that crashed between writing the file and switching directories left the partition
//!   where it was). Placements of partitions the node no longer hosts are pruned at start.
//! - New partitions go to the online directory holding the fewest (Kafka's
//!   `LogManager.nextLogDirs`), the earlier one on a tie.
//! - A directory that fails while serving (a log's write or sync failed) goes offline for
//!   good (until a restart): every partition in it answers KAFKA_STORAGE_ERROR from then on,
//!   the others serve on. The metadata directory failing stops the node (as Kafka halts).
//!
//! Blocking `std::fs` calls: made at start before the shards exist, or on a blocking thread.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::BrokerError;
use crate::log_moves::MoveState;
use crate::partition_dirs::{self, is_renamed, parse_dir_name, FUTURE_SUFFIX};
use sluice_cluster::identity::uuid_from_base64;

/// Written into a move's copy once it is complete and durable (`log_moves`): only such a
/// copy may become the partition at start.
pub const MOVE_COMPLETE: &str = "move-complete";
/// The placement file's name, in the metadata directory's `cluster/`.
const PLACEMENT_FILE: &str = "log-dir-placement";

/// One log directory.
pub struct LogDir {
    /// Absolute (canonical when it could be resolved).
    pub path: PathBuf,
    /// Its `meta.properties` `directory.id` (zeros when it could not be read).
    pub id: [u8; 16],
    offline: AtomicBool,
    /// Why it is offline.
    cause: Mutex<Option<String>>,
}

impl LogDir {
    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Relaxed)
    }

    pub fn cause(&self) -> Option<String> {
        self.cause.lock().unwrap().clone()
    }
}

#[derive(Default)]
struct Placement {
    /// Partition directory name -> index of its log directory.
    by_name: HashMap<String, usize>,
    /// Partitions placed in each directory.
    counts: Vec<usize>,
    /// Changed since the file was last written.
    dirty: bool,
}

impl Placement {
    fn set(&mut self, name: String, dir: usize) {
        if let Some(old) = self.by_name.insert(name, dir) {
            self.counts[old] -= 1;
        }
        self.counts[dir] += 1;
        self.dirty = true;
    }
}

/// The placement file's directories (id, path) and partitions (directory id, name).
type Recorded = (Vec<([u8; 16], PathBuf)>, Vec<([u8; 16], String)>);

/// The node's log directories.
pub struct LogDirs {
    dirs: Vec<LogDir>,
    placement: Mutex<Placement>,
    /// Serialises writes of the placement file (each writes the latest placement).
    writing: Mutex<()>,
    /// Moves under way, by partition directory name (`log_moves`).
    moves: Mutex<HashMap<String, Arc<MoveState>>>,
    /// Held for the process lifetime: one broker per directory.
    _locks: Vec<fs::File>,
}

/// What [`LogDirs::open`] found to say.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// Directories offline from the start.
    pub offline: usize,
    /// Interrupted moves whose copy was dropped (the partition stayed where it was).
    pub moves_dropped: usize,
    /// Interrupted moves completed (the old copy was already set aside).
    pub moves_completed: usize,
}

impl LogDirs {
    /// One directory, the metadata directory (already locked by the caller).
    pub fn single(path: PathBuf, id: [u8; 16]) -> LogDirs {
        LogDirs {
            dirs: vec![LogDir {
                path,
                id,
                offline: AtomicBool::new(false),
                cause: Mutex::new(None),
            }],
            placement: Mutex::new(Placement {
                counts: vec![0],
                ..Placement::default()
            }),
            writing: Mutex::new(()),
            moves: Mutex::default(),
            _locks: Vec::new(),
        }
    }

    /// Opens the directories: `first` is the metadata directory (created, resolved and
    /// locked by the caller, id `first_id`), `others` the rest as configured. Each other is
    /// created, resolved, locked and given a `directory.id`, or is offline; then every
    /// online one is scanned (interrupted moves settled, partitions found) and the placement
    /// file merged in.
    pub fn open(
        first: PathBuf,
        first_id: [u8; 16],
        others: &[PathBuf],
    ) -> Result<(LogDirs, Opened), BrokerError> {
        let mut all = LogDirs::single(first, first_id);
        let mut opened = Opened::default();
        // Where each directory was, as the node last recorded it.
        let (recorded, _) = all.read_placement()?;
        for path in others {
            let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            let known = recorded
                .iter()
                .find(|(_, p)| *p == absolute || Some(p) == fs::canonicalize(path).ok().as_ref())
                .map(|(id, _)| *id);
            let (path, id, failed) = match prepare_dir(path, known) {
                Ok((path, id, lock)) => {
                    all._locks.push(lock);
                    (path, id, None)
                }
                // Offline, and owning what the node recorded there.
                Err(e) => (absolute, known.unwrap_or([0; 16]), Some(e)),
            };
            if all
                .dirs
                .iter()
                .any(|d| d.path == path || (id != [0; 16] && d.id == id))
            {
                return Err(BrokerError::Config(format!(
                    "--data-dir names {} twice (or two directories with the same \
                     directory.id in meta.properties)",
                    path.display()
                )));
            }
            all.push(path, id, failed, &mut opened);
        }
        // A directory the node recorded that is no longer among --data-dir: its partitions
        // stay its own, offline (Kafka's lost directory), rather than start over empty
        // elsewhere; reassign or delete them to move on.
        for (id, path) in recorded {
            if !all.dirs.iter().any(|d| d.id == id) {
                let why = "not among --data-dir any more".to_string();
                all.push(path, id, Some(why), &mut opened);
            }
        }
        all.placement.lock().unwrap().counts = vec![0; all.dirs.len()];
        if all.dirs.len() > 1 {
            all.scan(&mut opened)?;
        }
        Ok((all, opened))
    }

    fn push(&mut self, path: PathBuf, id: [u8; 16], failed: Option<String>, o: &mut Opened) {
        if let Some(e) = &failed {
            log::error!(
                "log directory {} is offline: {e}; its partitions answer \
                 KAFKA_STORAGE_ERROR until it is repaired and the node restarted",
                path.display()
            );
            o.offline += 1;
        }
        self.dirs.push(LogDir {
            path,
            id,
            offline: AtomicBool::new(failed.is_some()),
            cause: Mutex::new(failed),
        });
    }

    /// Finds where each partition lives (see the module header).
    fn scan(&self, opened: &mut Opened) -> Result<(), BrokerError> {
        let mut found: HashMap<String, usize> = HashMap::new();
        let mut futures: Vec<(usize, String, String)> = Vec::new();
        for (i, d) in self.dirs.iter().enumerate() {
            if d.is_offline() {
                continue;
            }
            let entries = match fs::read_dir(&d.path) {
                Ok(e) => e,
                Err(e) if i == 0 => {
                    return Err(BrokerError::Io {
                        op: "list",
                        path: d.path.clone(),
                        source: e,
                    })
                }
                Err(e) => {
                    self.fail(i, format!("cannot list it: {e}"));
                    continue;
                }
            };
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let Some(name) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if is_renamed(&name, FUTURE_SUFFIX) {
                    if let Some(live) = partition_dirs::original_name(&name) {
                        futures.push((i, name.clone(), live));
                    }
                    continue;
                }
                if parse_dir_name(&name).is_none() {
                    continue;
                }
                if let Some(other) = found.insert(name.clone(), i) {
                    return Err(BrokerError::Config(format!(
                        "partition directory {name} is in two log directories ({} and {}): \
                         remove the copy that should not be served",
                        self.dirs[other].path.display(),
                        d.path.display()
                    )));
                }
            }
        }
        let (_, recorded) = self.read_placement()?;
        // Partition -> its recorded directory (one still configured, online or not).
        let recorded: HashMap<String, usize> = recorded
            .into_iter()
            .filter_map(|(id, name)| Some((name, self.dirs.iter().position(|d| d.id == id)?)))
            .collect();
        // Moves' copies: see `log_moves` for the order of a switch these undo or finish.
        for (i, future, live) in futures {
            let path = self.dirs[i].path.join(&future);
            let io_err = |op, source| BrokerError::Io {
                op,
                path: path.clone(),
                source,
            };
            let complete = path.join(MOVE_COMPLETE).is_file();
            let placed = recorded.get(&live).copied();
            if found.contains_key(&live)
                || !(complete || placed.is_some_and(|j| self.dirs[j].is_offline()))
            {
                // The partition is live elsewhere, or the copy never finished (and nothing
                // says the partition's data is in an offline directory): the move stopped
                // before its switch.
                log::info!("dropping {future}: its move did not finish");
                fs::remove_dir_all(&path).map_err(|e| io_err("remove", e))?;
                opened.moves_dropped += 1;
            } else if complete && placed == Some(i) {
                // Complete, recorded here, and no live copy online: the switch had set the
                // old directory aside (or it is in a directory offline now; if that one
                // comes back, the start refuses the two copies, as Kafka's does).
                log::info!("{future}: completing its move into {live}");
                fs::remove_file(path.join(MOVE_COMPLETE)).map_err(|e| io_err("remove", e))?;
                fs::rename(&path, self.dirs[i].path.join(&live))
                    .map_err(|e| io_err("rename", e))?;
                fs::File::open(&self.dirs[i].path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io_err("sync", e))?;
                found.insert(live, i);
                opened.moves_completed += 1;
            } else {
                // The live copy may be in an offline directory: kept for a start that can
                // tell.
                log::warn!("{future}: left as it is while the partition's directory is offline");
            }
        }
        let mut p = self.placement.lock().unwrap();
        for (name, i) in recorded {
            // On disk wins; the file places the rest (not created yet, or offline).
            if !found.contains_key(&name) {
                p.set(name, i);
            }
        }
        for (name, i) in found {
            p.set(name, i);
        }
        p.dirty = true;
        Ok(())
    }

    fn placement_path(&self) -> PathBuf {
        self.dirs[0].path.join("cluster").join(PLACEMENT_FILE)
    }

    /// The placement file: `dir <id> <path>` lines (where each directory was) and
    /// `<id> <name>` lines (which directory holds each partition).
    fn read_placement(&self) -> Result<Recorded, BrokerError> {
        let path = self.placement_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Default::default()),
            Err(e) => {
                return Err(BrokerError::Io {
                    op: "read",
                    path,
                    source: e,
                })
            }
        };
        let (mut dirs, mut parts) = (Vec::new(), Vec::new());
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (dir_line, line) = match line.strip_prefix("dir ") {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let Some((id, rest)) = line.split_once(' ') else {
                continue;
            };
            let Some(id) = uuid_from_base64(id) else {
                continue;
            };
            if dir_line {
                dirs.push((id, PathBuf::from(rest)));
            } else {
                parts.push((id, rest.to_string()));
            }
        }
        Ok((dirs, parts))
    }

    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    pub fn dir(&self, i: usize) -> &LogDir {
        &self.dirs[i]
    }

    pub fn iter(&self) -> impl Iterator<Item = &LogDir> {
        self.dirs.iter()
    }

    /// The index of the directory whose path is `path` (after resolving it).
    pub fn index_of(&self, path: &Path) -> Option<usize> {
        let resolved = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.dirs
            .iter()
            .position(|d| d.path == resolved || d.path == path)
    }

    /// The log directory of a partition: where it is, or, for one not placed yet, the online
    /// directory with the fewest partitions (recorded; [`Self::persist`] makes it durable).
    pub fn place(&self, topic: &str, partition: i32) -> usize {
        if self.dirs.len() == 1 {
            return 0;
        }
        let name = partition_dirs::dir_name(topic, partition);
        let mut p = self.placement.lock().unwrap();
        if let Some(&i) = p.by_name.get(&name) {
            return i;
        }
        let i = (0..self.dirs.len())
            .filter(|&i| !self.dirs[i].is_offline())
            .min_by_key(|&i| p.counts[i])
            // Every directory but the metadata one is offline, and the metadata one too:
            // the partition's opening fails on it with the directory's error.
            .unwrap_or(0);
        p.set(name, i);
        i
    }

    /// Where a partition lives, if placed.
    pub fn placed(&self, topic: &str, partition: i32) -> Option<usize> {
        if self.dirs.len() == 1 {
            return Some(0);
        }
        let name = partition_dirs::dir_name(topic, partition);
        self.placement.lock().unwrap().by_name.get(&name).copied()
    }

    /// The partition's directory path (placing it if it is new).
    pub fn partition_path(&self, topic: &str, partition: i32) -> PathBuf {
        let i = self.place(topic, partition);
        self.dirs[i]
            .path
            .join(partition_dirs::dir_name(topic, partition))
    }

    /// Records that a partition now lives in directory `dir` (a move switched).
    pub fn relocate(&self, topic: &str, partition: i32, dir: usize) {
        if self.dirs.len() > 1 {
            let name = partition_dirs::dir_name(topic, partition);
            self.placement.lock().unwrap().set(name, dir);
        }
    }

    /// Forgets a removed partition (its slot counts no more for placement).
    pub fn forget(&self, topic: &str, partition: i32) {
        if self.dirs.len() == 1 {
            return;
        }
        let name = partition_dirs::dir_name(topic, partition);
        let mut p = self.placement.lock().unwrap();
        if let Some(i) = p.by_name.remove(&name) {
            p.counts[i] -= 1;
            p.dirty = true;
        }
    }

    /// Forgets the placement of every partition `keep` refuses (at start, after the sweep:
    /// partitions this node no longer hosts). Not while shards run: one may have placed a
    /// partition of a topic another has not heard of yet.
    pub fn retain(&self, keep: impl Fn(&str, i32) -> bool) {
        if self.dirs.len() == 1 {
            return;
        }
        let mut p = self.placement.lock().unwrap();
        let gone: Vec<String> = p
            .by_name
            .keys()
            .filter(|n| parse_dir_name(n).is_none_or(|(t, i)| !keep(t, i)))
            .cloned()
            .collect();
        for name in gone {
            if let Some(i) = p.by_name.remove(&name) {
                p.counts[i] -= 1;
                p.dirty = true;
            }
        }
    }

    /// Whether a partition lives in an offline directory.
    pub fn partition_offline(&self, topic: &str, partition: i32) -> bool {
        self.placed(topic, partition)
            .is_some_and(|i| self.dirs[i].is_offline())
    }

    /// Takes directory `i` offline (a failed write or sync in it): logged once.
    pub fn fail(&self, i: usize, cause: String) {
        let d = &self.dirs[i];
        if !d.offline.swap(true, Ordering::Relaxed) {
            log::error!(
                "log directory {} is offline: {cause}; its partitions answer \
                 KAFKA_STORAGE_ERROR until it is repaired and the node restarted",
                d.path.display()
            );
            *d.cause.lock().unwrap() = Some(cause);
        }
    }

    /// The directory holding `path` (a partition's directory or a file in one): the
    /// innermost, should one directory be configured inside another.
    pub fn holding(&self, path: &Path) -> usize {
        (0..self.dirs.len())
            .filter(|&i| path.starts_with(&self.dirs[i].path))
            .max_by_key(|&i| self.dirs[i].path.as_os_str().len())
            .unwrap_or(0)
    }

    /// Whether directory `i` is offline (one atomic load: asked on every partition request).
    pub fn dir_offline(&self, i: usize) -> bool {
        self.dirs[i].is_offline()
    }

    /// The move under way of partition directory `name`, if any.
    pub fn move_of(&self, name: &str) -> Option<Arc<MoveState>> {
        self.moves.lock().unwrap().get(name).cloned()
    }

    /// Records a new move of `name`, cancelling the one it replaces.
    pub fn begin_move(&self, name: String, state: Arc<MoveState>) {
        if let Some(old) = self.moves.lock().unwrap().insert(name, state) {
            old.cancel();
        }
    }

    /// Cancels the move of `name` under way, if any.
    pub fn cancel_move(&self, name: &str) {
        if let Some(old) = self.moves.lock().unwrap().remove(name) {
            old.cancel();
        }
    }

    /// Forgets a move that ended (unless another replaced it meanwhile).
    pub fn end_move(&self, name: &str, state: &Arc<MoveState>) {
        let mut moves = self.moves.lock().unwrap();
        if moves.get(name).is_some_and(|m| Arc::ptr_eq(m, state)) {
            moves.remove(name);
        }
    }

    /// Makes the placement durable (blocking: call off the executor). Nothing to do with one
    /// directory, or when nothing changed since the last write.
    pub fn persist(&self) -> io::Result<()> {
        if self.dirs.len() == 1 {
            return Ok(());
        }
        let _one_writer = self.writing.lock().unwrap();
        let text = {
            let mut p = self.placement.lock().unwrap();
            if !p.dirty {
                return Ok(());
            }
            p.dirty = false;
            let mut lines: Vec<(&String, &usize)> = p.by_name.iter().collect();
            lines.sort();
            let mut text = String::from(
                "# sluice: the log directory (by directory.id) of each partition; written \
                 before a partition's directory is created\n",
            );
            for d in self.dirs.iter().filter(|d| d.id != [0; 16]) {
                // (Lines for directories no longer configured go.)
                let id = crate::topics::base64_url(&d.id);
                text.push_str(&format!("dir {id} {}\n", d.path.display()));
            }
            for (name, &i) in lines {
                if self.dirs[i].id != [0; 16] {
                    text.push_str(&crate::topics::base64_url(&self.dirs[i].id));
                    text.push(' ');
                    text.push_str(name);
                    text.push('\n');
                }
            }
            text
        };
        let path = self.placement_path();
        let result = write_atomically(&path, text.as_bytes());
        if result.is_err() {
            // Written again with the next change (or at the next start).
            self.placement.lock().unwrap().dirty = true;
        }
        result
    }
}

/// Creates, resolves, locks and identifies a log directory other than the metadata one.
/// `known`: the id the node recorded for it. A directory that was recorded but has lost its
/// `meta.properties`, or now holds another id, is not the one the node placed partitions
/// in (a disk not mounted, another disk): offline, rather than given a new id and its
/// partitions re-created empty.
fn prepare_dir(
    path: &Path,
    known: Option<[u8; 16]>,
) -> Result<(PathBuf, [u8; 16], fs::File), String> {
    if let Some(known) = known {
        let props = path.join(sluice_cluster::identity::META_PROPERTIES);
        if !props.is_file() {
            return Err(format!(
                "it had directory.id {} but has no {} now (not mounted?)",
                crate::topics::base64_url(&known),
                props.display()
            ));
        }
    }
    fs::create_dir_all(path).map_err(|e| format!("cannot create it: {e}"))?;
    let path = fs::canonicalize(path).map_err(|e| format!("cannot resolve it: {e}"))?;
    let lock = crate::lock_data_dir(&path).map_err(|e| e.to_string())?;
    let id = sluice_cluster::identity::directory_id(&path).map_err(|e| e.to_string())?;
    if known.is_some_and(|k| k != id) {
        return Err(format!(
            "its directory.id is {}, not the {} the node recorded (another disk?)",
            crate::topics::base64_url(&id),
            crate::topics::base64_url(&known.unwrap_or_default())
        ));
    }
    fs::read_dir(&path).map_err(|e| format!("cannot list it: {e}"))?;
    Ok((path, id, lock))
}

/// Writes `path` whole or not at all: beside it, synced, renamed over it, the directory
/// synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dirs: &[&Path]) -> (LogDirs, Opened) {
        let first = dirs[0].to_path_buf();
        fs::create_dir_all(first.join("cluster")).unwrap();
        let id = sluice_cluster::identity::directory_id(&first).unwrap();
        let others: Vec<PathBuf> = dirs[1..].iter().map(|d| d.to_path_buf()).collect();
        LogDirs::open(fs::canonicalize(&first).unwrap(), id, &others).unwrap()
    }

    #[test]
    fn new_partitions_go_to_the_directory_with_fewest() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::create_dir(a.path().join("t-0")).unwrap();
        fs::create_dir(a.path().join("t-1")).unwrap();
        let (dirs, _) = open(&[a.path(), b.path()]);
        assert_eq!(dirs.place("t", 0), 0);
        assert_eq!(dirs.place("u", 0), 1);
        assert_eq!(dirs.place("u", 1), 1);
        // Tied at two each: the earlier directory.
        assert_eq!(dirs.place("u", 2), 0);
        assert_eq!(dirs.place("u", 1), 1, "placed once");
        dirs.forget("u", 1);
        assert_eq!(dirs.place("v", 0), 1);
    }

    #[test]
    fn an_offline_directory_keeps_its_partitions() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let bad = b.path().join("gone");
        let (dirs, _) = open(&[a.path(), &bad]);
        assert_eq!(dirs.place("t", 0), 0);
        assert_eq!(dirs.place("t", 1), 1);
        dirs.persist().unwrap();
        drop(dirs);
        // The second directory is now a file: offline, and t-1 still belongs to it.
        fs::remove_dir_all(&bad).unwrap();
        fs::write(&bad, b"not a directory").unwrap();
        let (dirs, opened) = open(&[a.path(), &bad]);
        assert_eq!(opened.offline, 1);
        assert!(dirs.dir(1).is_offline());
        assert!(dirs.partition_offline("t", 1));
        assert!(!dirs.partition_offline("t", 0));
        // New partitions avoid it.
        assert_eq!(dirs.place("t", 2), 0);
    }

    #[test]
    fn a_partition_in_two_directories_stops_the_start() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::create_dir(a.path().join("t-0")).unwrap();
        fs::create_dir(b.path().join("t-0")).unwrap();
        fs::create_dir_all(a.path().join("cluster")).unwrap();
        let id = sluice_cluster::identity::directory_id(a.path()).unwrap();
        let r = LogDirs::open(
            fs::canonicalize(a.path()).unwrap(),
            id,
            &[b.path().to_path_buf()],
        );
        assert!(matches!(r, Err(BrokerError::Config(m)) if m.contains("two log directories")));
    }

    #[test]
    fn interrupted_moves_are_dropped_or_completed() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // Placed: t-1 and t-2 in b (a switch had written the placement).
        let (dirs, _) = open(&[a.path(), b.path()]);
        dirs.relocate("t", 1, 1);
        dirs.relocate("t", 2, 1);
        dirs.persist().unwrap();
        drop(dirs);
        // t-0: live in a, a copy in b: dropped. t-1: only a complete copy, placed in b:
        // completed. t-2: only an incomplete copy: dropped.
        fs::create_dir(a.path().join("t-0")).unwrap();
        let f0 = partition_dirs::future_name("t-0").unwrap();
        let f1 = partition_dirs::future_name("t-1").unwrap();
        let f2 = partition_dirs::future_name("t-2").unwrap();
        for f in [&f0, &f1, &f2] {
            fs::create_dir(b.path().join(f)).unwrap();
        }
        fs::write(b.path().join(&f0).join(MOVE_COMPLETE), b"").unwrap();
        fs::write(b.path().join(&f1).join(MOVE_COMPLETE), b"").unwrap();
        let (dirs, opened) = open(&[a.path(), b.path()]);
        assert_eq!(opened.moves_dropped, 2);
        assert_eq!(opened.moves_completed, 1);
        assert!(!b.path().join(&f0).exists());
        assert!(!b.path().join(&f2).exists());
        assert!(b.path().join("t-1").is_dir());
        assert!(!b.path().join("t-1").join(MOVE_COMPLETE).exists());
        assert_eq!(dirs.placed("t", 0), Some(0));
        assert_eq!(dirs.placed("t", 1), Some(1));
    }

    #[test]
    fn a_recorded_directory_without_its_id_is_offline_not_new() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (dirs, _) = open(&[a.path(), b.path()]);
        assert_eq!(dirs.place("t", 0), 0);
        assert_eq!(dirs.place("t", 1), 1);
        dirs.persist().unwrap();
        drop(dirs);
        // The disk is not mounted: the mount point is there, empty.
        fs::remove_file(b.path().join(sluice_cluster::identity::META_PROPERTIES)).unwrap();
        let (dirs, opened) = open(&[a.path(), b.path()]);
        assert_eq!(opened.offline, 1);
        assert!(dirs.partition_offline("t", 1));
        assert!(!b
            .path()
            .join(sluice_cluster::identity::META_PROPERTIES)
            .exists());
        drop(dirs);
        // Dropped from --data-dir: still its partitions' directory, offline.
        let (dirs, opened) = open(&[a.path()]);
        assert_eq!(opened.offline, 1);
        assert_eq!(dirs.len(), 2);
        assert!(dirs.partition_offline("t", 1));
    }
}
