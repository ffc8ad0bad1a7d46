//! The shard's raft-state file: per partition group its voters, hard state (term, vote,
//! commit) and log start, as append-only CRC32C-checked records; the latest record of each
//! kind per group wins. Appends are buffered and written by [`StateFile::sync`], or by a
//! [`StateAppend`] run apart from the file while more are buffered (one write and one
//! fdatasync for every group of the shard); when the file grows past
//! [`REWRITE_FACTOR`] times its live size (and [`REWRITE_MIN_BYTES`]) it is rewritten with
//! only the live records (temp file, fsync, rename, directory fsync), so it stays small.
//!
//! Format: an 8-byte header (`SLRS`, version u32 BE), then records `[len u32][crc32c u32 of
//! body][body]`, body = kind u8, group u64, fields (all big-endian). Direct IO writes whole
//! pages: each sync rewrites the file's last partial page with the new records after it,
//! zero-padded, so a zero length ends the records. Recovery keeps the records up to the
//! first that does not check (a torn tail: never reported synced), cuts the file there and
//! syncs it, so bytes of an unsynced write beyond the cut can never come back as records.
//! A bad record followed by a valid one is not a torn tail but damage: the file is refused
//! ([`crate::Error::Damaged`]), as is a checksummed record that does not apply (see
//! `replay`). A group's `REMOVE` record (kind 4, no fields) drops what the file held of it;
//! its `CONF` record (kind 5: voter count u32, voters u64..., learner count u32, learners
//! u64...) replaces the voters of its `CREATE` (a membership change applied).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use raft::eraftpb::HardState;
use sluice_raft::{GroupId, NodeId};
use sluice_storage::io::{Storage, StorageFile, PAGE_SIZE};

use crate::Error;

pub const STATE_FILE: &str = "raft-state";
const MAGIC: &[u8; 4] = b"SLRS";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 8;
/// The file is rewritten when it is this many times its live size...
pub const REWRITE_FACTOR: u64 = 4;
/// ...and at least this large (a shard with few groups does not rewrite every few syncs).
pub const REWRITE_MIN_BYTES: u64 = 64 * 1024;
/// Largest state file read at start: 1 MiB of voters per group would not fit anyway.
pub const STATE_FILE_BYTES_MAX: u64 = 1 << 30;
/// Most voters one group may name.
pub const VOTERS_MAX: usize = 255;
/// Most bytes of commit-only hard-state records that may wait for a later sync (see
/// [`StateFile::must_sync`]): about 1,600 of them, a few seconds of a busy shard's rounds.
pub const DEFERRED_BYTES_MAX: usize = 64 * 1024;

const CREATE: u8 = 1;
const HARD_STATE: u8 = 2;
const LOG_START: u8 = 3;
/// Added after the first files were written (those hold none and read as before).
const REMOVE: u8 = 4;
/// Added with membership changes (older files hold none: the voters are the `CREATE`'s).
const CONF: u8 = 5;
/// Largest record body: a `CONF` naming [`VOTERS_MAX`] voters and learners together.
const BODY_BYTES_MAX: usize = 9 + 8 + 8 * VOTERS_MAX;

/// Where a group's Raft log starts: after entry `index` of `term`, at Kafka offset `offset`;
/// `reset` when a leader's snapshot restarted the partition log empty there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogStart {
    pub index: u64,
    pub term: u64,
    pub offset: i64,
    pub reset: bool,
}

/// What the file says of one group.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupState {
    pub voters: Vec<NodeId>,
    /// Replicas that receive the log without voting (a reassignment's joining ones).
    pub learners: Vec<NodeId>,
    pub hard_state: HardState,
    pub start: LogStart,
}

/// The state file of one shard, open for appending.
pub struct StateFile<S: Storage> {
    dir: PathBuf,
    /// Shared with a [`StateAppend`] while one is out.
    file: Rc<S::File>,
    groups: BTreeMap<GroupId, GroupState>,
    /// Logical length (records end here; zero padding may follow on disk).
    len: u64,
    /// Bytes from the last page boundary to `len` (rewritten with the next append).
    tail: Vec<u8>,
    /// Records appended since the last sync.
    pending: Vec<u8>,
    /// Whether `pending` holds a record other than a commit-only hard state.
    urgent: bool,
    /// A [`StateAppend`] is out: `tail` went with it (see [`StateFile::begin_append`]).
    append_out: bool,
    /// An append failed: what the file holds past `len` is unknown, so it takes no more.
    failed: Option<String>,
    rewrites: u64,
}

/// The state file's records appended up to [`StateFile::begin_append`], written and
/// fdatasynced apart from the file, so that records appended meanwhile wait for the next
/// one (the replica store runs it in its log sync's task, after the logs). Give what
/// [`Self::run`] returns to [`StateFile::finish_append`].
pub struct StateAppend<F> {
    file: Rc<F>,
    path: PathBuf,
    /// Page-aligned position of `content`: the last partial page is written again.
    page: u64,
    content: Vec<u8>,
}

/// A finished [`StateAppend`]: its records are durable.
#[derive(Debug)]
pub struct StateAppended {
    page: u64,
    content: Vec<u8>,
}

impl<F: StorageFile> StateAppend<F> {
    pub async fn run<S: Storage<File = F>>(self, storage: &S) -> Result<StateAppended, Error> {
        write_padded(storage, &self.file, &self.path, self.page, &self.content).await?;
        self.file
            .fdatasync()
            .await
            .map_err(|e| io_err("fdatasync", &self.path, e))?;
        Ok(StateAppended {
            page: self.page,
            content: self.content,
        })
    }
}

fn record(kind: u8, group: GroupId, fields: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(9 + fields.len());
    body.push(kind);
    body.extend_from_slice(&group.to_be_bytes());
    body.extend_from_slice(fields);
    let mut r = Vec::with_capacity(8 + body.len());
    r.extend_from_slice(&(body.len() as u32).to_be_bytes());
    r.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    r.extend_from_slice(&body);
    r
}

fn create_record(group: GroupId, voters: &[NodeId]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + 8 * voters.len());
    f.extend_from_slice(&(voters.len() as u32).to_be_bytes());
    for v in voters {
        f.extend_from_slice(&v.to_be_bytes());
    }
    record(CREATE, group, &f)
}

fn hard_state_record(group: GroupId, hs: &HardState) -> Vec<u8> {
    let mut f = Vec::with_capacity(24);
    for v in [hs.term, hs.vote, hs.commit] {
        f.extend_from_slice(&v.to_be_bytes());
    }
    record(HARD_STATE, group, &f)
}

fn log_start_record(group: GroupId, s: &LogStart) -> Vec<u8> {
    let mut f = Vec::with_capacity(25);
    f.extend_from_slice(&s.index.to_be_bytes());
    f.extend_from_slice(&s.term.to_be_bytes());
    f.extend_from_slice(&s.offset.to_be_bytes());
    f.push(u8::from(s.reset));
    record(LOG_START, group, &f)
}

fn conf_record(group: GroupId, voters: &[NodeId], learners: &[NodeId]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + 8 * (voters.len() + learners.len()));
    for set in [voters, learners] {
        f.extend_from_slice(&(set.len() as u32).to_be_bytes());
        for v in set {
            f.extend_from_slice(&v.to_be_bytes());
        }
    }
    record(CONF, group, &f)
}

/// `n` node ids at `at` of `f`.
fn ids_at(f: &[u8], at: usize, n: usize) -> Option<Vec<NodeId>> {
    (0..n).map(|i| u64_at(f, at + 8 * i)).collect()
}

fn remove_record(group: GroupId) -> Vec<u8> {
    record(REMOVE, group, &[])
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Applies one record body; `None` if it does not parse (damage a CRC missed, or a record of
/// a group never created: the file is not what this code wrote).
fn apply(groups: &mut BTreeMap<GroupId, GroupState>, body: &[u8]) -> Option<()> {
    let kind = *body.first()?;
    let group = u64_at(body, 1)?;
    let f = &body[9..];
    match kind {
        CREATE => {
            let n = u32::from_be_bytes(f.get(..4)?.try_into().ok()?) as usize;
            if n > VOTERS_MAX || f.len() != 4 + 8 * n {
                return None;
            }
            let voters = (0..n)
                .map(|i| u64_at(f, 4 + 8 * i))
                .collect::<Option<_>>()?;
            // A group created again (a new replica of a re-created partition) starts afresh.
            groups.insert(
                group,
                GroupState {
                    voters,
                    ..Default::default()
                },
            );
        }
        HARD_STATE if f.len() == 24 => {
            let g = groups.get_mut(&group)?;
            g.hard_state = HardState {
                term: u64_at(f, 0)?,
                vote: u64_at(f, 8)?,
                commit: u64_at(f, 16)?,
                ..Default::default()
            };
        }
        LOG_START if f.len() == 25 => {
            let g = groups.get_mut(&group)?;
            g.start = LogStart {
                index: u64_at(f, 0)?,
                term: u64_at(f, 8)?,
                offset: u64_at(f, 16)? as i64,
                reset: f[24] != 0,
            };
        }
        REMOVE if f.is_empty() => {
            groups.remove(&group)?;
        }
        CONF => {
            let v = u32::from_be_bytes(f.get(..4)?.try_into().ok()?) as usize;
            let at = 4 + 8 * v.min(VOTERS_MAX + 1);
            let l = u32::from_be_bytes(f.get(at..at + 4)?.try_into().ok()?) as usize;
            if v + l > VOTERS_MAX || f.len() != 8 + 8 * (v + l) {
                return None;
            }
            let voters = ids_at(f, 4, v)?;
            let learners = ids_at(f, at + 4, l)?;
            let mut all: Vec<NodeId> = voters.iter().chain(&learners).copied().collect();
            all.sort_unstable();
            if all.windows(2).any(|w| w[0] == w[1]) {
                return None;
            }
            let g = groups.get_mut(&group)?;
            g.voters = voters;
            g.learners = learners;
        }
        _ => return None,
    }
    Some(())
}

/// The body of the record at `at`, if one is there whole with its checksum right.
fn record_at(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let h = bytes.get(at..at + 8)?;
    let len = u32::from_be_bytes(h[..4].try_into().unwrap()) as usize;
    let crc = u32::from_be_bytes(h[4..].try_into().unwrap());
    if len == 0 || len > BODY_BYTES_MAX {
        return None;
    }
    let body = bytes.get(at + 8..at + 8 + len)?;
    (crc32c::crc32c(body) == crc).then_some(body)
}

/// Whether `body` has the kind and size of a record this file holds (a cheap test before
/// the checksum when looking for records at arbitrary positions).
fn plausible(body_len: usize, kind: u8) -> bool {
    match kind {
        CREATE => body_len >= 13 && (body_len - 13).is_multiple_of(8),
        HARD_STATE => body_len == 9 + 24,
        LOG_START => body_len == 9 + 25,
        REMOVE => body_len == 9,
        CONF => body_len >= 17 && (body_len - 17).is_multiple_of(8),
        _ => false,
    }
}

/// The position of the first checksummed record starting after `from`, at any byte.
fn valid_record_after(bytes: &[u8], from: usize) -> Option<usize> {
    (from + 1..bytes.len().saturating_sub(8)).find(|&p| {
        let len = u32::from_be_bytes(bytes[p..p + 4].try_into().unwrap()) as usize;
        bytes.get(p + 8).is_some_and(|&kind| plausible(len, kind)) && record_at(bytes, p).is_some()
    })
}

/// The records of `bytes` applied in order, and the length they end at. Reading stops at
/// the first record that is cut short, fails its checksum, or has zero length (the zero
/// padding after the last record): that is where the records end, or the torn tail of a
/// write a crash interrupted (never reported synced, as each sync writes after everything
/// synced before it). A torn tail is the end of the file: if a checksummed record follows
/// anywhere after it, the bad record sits among synced ones, and cutting there would drop
/// synced state (a vote, a commit), so the file is refused. So is a checksummed record that
/// does not apply (a record of a group never created, or of a size its kind never has):
/// damage a CRC missed, or a file this code did not write.
///
/// One crash is refused too although nothing synced is lost: a write of several pages
/// that reached the disk out of order, a later page whole and an earlier one not (a device
/// without atomic page writes losing power mid-write). Telling it from damage would need
/// to know where that write began; refusing sends the operator to the file rather than
/// risk forgetting a vote.
fn replay(bytes: &[u8]) -> Result<(BTreeMap<GroupId, GroupState>, usize), String> {
    let mut groups = BTreeMap::new();
    let mut at = HEADER_LEN;
    while let Some(body) = record_at(bytes, at) {
        if apply(&mut groups, body).is_none() {
            return Err(format!(
                "record at byte {at} (kind {}, {} bytes) does not fit the records before it",
                body[0],
                body.len()
            ));
        }
        at += 8 + body.len();
    }
    if let Some(next) = valid_record_after(bytes, at) {
        return Err(format!(
            "bad record at byte {at} followed by a valid one at byte {next}: damage, not a torn tail"
        ));
    }
    Ok((groups, at))
}

fn io_err(op: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Io(format!("{op} {}: {e}", path.display()))
}

impl<S: Storage> StateFile<S> {
    /// Opens (or creates) the shard's state file in `dir`: the valid records are replayed, a
    /// torn tail is cut off and the cut synced. A file with a foreign header is an error
    /// (never overwritten).
    pub async fn open(storage: &S, dir: &Path) -> Result<StateFile<S>, Error> {
        storage
            .create_dir_all(dir)
            .await
            .map_err(|e| io_err("create", dir, e))?;
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        // A rewrite that crashed before its rename: the old file is intact.
        storage
            .remove(&tmp)
            .await
            .map_err(|e| io_err("remove", &tmp, e))?;
        let file = storage
            .open_rw(&path)
            .await
            .map_err(|e| io_err("open", &path, e))?;
        let size = file.size().await.map_err(|e| io_err("stat", &path, e))?;
        if size > STATE_FILE_BYTES_MAX {
            return Err(Error::Damaged(format!(
                "{}: {size} bytes (at most {STATE_FILE_BYTES_MAX})",
                path.display()
            )));
        }
        let bytes = if size == 0 {
            Vec::new()
        } else {
            file.read_at(0, size as usize)
                .await
                .map_err(|e| io_err("read", &path, e))?
                .to_vec()
        };
        let mut sf: StateFile<S> = StateFile {
            dir: dir.to_path_buf(),
            file: Rc::new(file),
            groups: BTreeMap::new(),
            len: 0,
            tail: Vec::new(),
            pending: Vec::new(),
            urgent: false,
            append_out: false,
            failed: None,
            rewrites: 0,
        };
        if bytes.len() < HEADER_LEN {
            // New (or a crash before the first header write was synced: it held nothing).
            sf.pending = header();
            sf.urgent = true;
        } else {
            if &bytes[..4] != MAGIC || bytes[4..8] != VERSION.to_be_bytes() {
                return Err(Error::Damaged(format!(
                    "{}: not a version {VERSION} raft-state file",
                    path.display()
                )));
            }
            let (groups, valid) =
                replay(&bytes).map_err(|e| Error::Damaged(format!("{}: {e}", path.display())))?;
            sf.groups = groups;
            sf.len = valid as u64;
            let page = valid / PAGE_SIZE * PAGE_SIZE;
            sf.tail = bytes[page..valid].to_vec();
        }
        if size != sf.len {
            sf.file
                .truncate(sf.len)
                .await
                .map_err(|e| io_err("truncate", &path, e))?;
        }
        // What a killed process left may be only in the page cache: make it durable before
        // acting on it, the file's name (and the directory's own) included.
        sf.file
            .fdatasync()
            .await
            .map_err(|e| io_err("fdatasync", &path, e))?;
        storage
            .sync_dir(dir)
            .await
            .map_err(|e| io_err("fsync dir", dir, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            storage
                .sync_dir(parent)
                .await
                .map_err(|e| io_err("fsync dir", parent, e))?;
        }
        Ok(sf)
    }

    /// Every group the file holds.
    pub fn groups(&self) -> &BTreeMap<GroupId, GroupState> {
        &self.groups
    }

    pub fn group(&self, group: GroupId) -> Option<&GroupState> {
        self.groups.get(&group)
    }

    /// Bytes the file holds (synced or not).
    pub fn len(&self) -> u64 {
        self.len + self.pending.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How often the file was rewritten since it was opened.
    pub fn rewrites(&self) -> u64 {
        self.rewrites
    }

    /// Whether appends wait for the next [`Self::sync`].
    pub fn dirty(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether the appends must be made durable now, before the writes they came with are
    /// reported persisted: not when all they change is commit indexes (and fewer than
    /// [`DEFERRED_BYTES_MAX`] bytes of them wait). Raft needs a term, a vote, a membership
    /// or a log start durable before anything acts on it, but not the commit index: a
    /// commit recovered lower than it was is learnt again from the leader (and a new leader
    /// serves nothing before an entry of its own term commits), while a commit that stays
    /// in memory saves every round's state-file write and fdatasync.
    pub fn must_sync(&self) -> bool {
        self.urgent || self.pending.len() >= DEFERRED_BYTES_MAX
    }

    fn push(&mut self, r: Vec<u8>) {
        let applied = apply(&mut self.groups, &r[8..]);
        debug_assert!(applied.is_some(), "a record this file cannot read back");
        self.pending.extend_from_slice(&r);
    }

    pub fn create(&mut self, group: GroupId, voters: &[NodeId]) -> Result<(), Error> {
        if voters.len() > VOTERS_MAX {
            return Err(Error::Damaged(format!(
                "group {group}: {} voters (at most {VOTERS_MAX})",
                voters.len()
            )));
        }
        self.urgent = true;
        self.push(create_record(group, voters));
        Ok(())
    }

    pub fn hard_state(&mut self, group: GroupId, hs: &HardState) {
        let Some(was) = self.groups.get(&group).map(|s| &s.hard_state) else {
            panic!("hard state of an unknown group");
        };
        // (What the file holds of the group's term and vote is durable: a change of either
        // makes the next sync write everything.)
        if was.term != hs.term || was.vote != hs.vote || hs.commit < was.commit {
            self.urgent = true;
        }
        self.push(hard_state_record(group, hs));
    }

    pub fn log_start(&mut self, group: GroupId, start: LogStart) {
        assert!(
            self.groups.contains_key(&group),
            "log start of an unknown group"
        );
        self.urgent = true;
        self.push(log_start_record(group, &start));
    }

    /// The group's configuration changed (see `sluice_raft::Write::Conf`).
    pub fn conf(
        &mut self,
        group: GroupId,
        voters: &[NodeId],
        learners: &[NodeId],
    ) -> Result<(), Error> {
        assert!(
            self.groups.contains_key(&group),
            "configuration of an unknown group"
        );
        if voters.len() + learners.len() > VOTERS_MAX {
            return Err(Error::Damaged(format!(
                "group {group}: {} replicas (at most {VOTERS_MAX})",
                voters.len() + learners.len()
            )));
        }
        self.urgent = true;
        self.push(conf_record(group, voters, learners));
        Ok(())
    }

    /// The group is gone from this shard: its records no longer count (a later
    /// [`Self::create`] starts it afresh), and a rewrite leaves it out.
    pub fn remove(&mut self, group: GroupId) {
        assert!(
            self.groups.contains_key(&group),
            "removal of an unknown group"
        );
        self.urgent = true;
        self.push(remove_record(group));
    }

    /// Bytes the live records alone take.
    fn live_len(&self) -> u64 {
        HEADER_LEN as u64
            + self
                .groups
                .iter()
                .map(|(g, s)| {
                    let conf = if s.learners.is_empty() {
                        0
                    } else {
                        conf_record(*g, &s.voters, &s.learners).len()
                    };
                    (create_record(*g, &s.voters).len() + conf + 41 + 42) as u64
                })
                .sum::<u64>()
    }

    /// Whether the next sync rewrites the file (it grew past its bound): a rewrite is
    /// never a [`StateAppend`].
    pub fn rewrite_due(&self) -> bool {
        self.len() > REWRITE_MIN_BYTES && self.len() > REWRITE_FACTOR * self.live_len()
    }

    /// Makes every append durable: rewrites the file if it grew past its bound, else writes
    /// the new records after the last one, and fdatasyncs.
    pub async fn sync(&mut self, storage: &S) -> Result<(), Error> {
        assert!(!self.append_out, "a sync while an append is out");
        if let Some(cause) = &self.failed {
            return Err(Error::Io(format!(
                "an earlier state file append failed: {cause}"
            )));
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.rewrite_due() {
            return self.rewrite(storage).await;
        }
        let append = self
            .begin_append()
            .expect("records pending, no rewrite due");
        let done = append.run(storage).await;
        self.finish_append(done)
    }

    /// Takes the records appended so far into a [`StateAppend`] that writes them after the
    /// last one; `None` when none are pending, a rewrite is due or an append failed (then
    /// [`Self::sync`], which rewrites or reports the failure).
    /// Until [`Self::finish_append`] takes its result, call no [`Self::sync`] and begin no
    /// other; appending goes on (those records wait for the next one).
    pub fn begin_append(&mut self) -> Option<StateAppend<S::File>> {
        assert!(!self.append_out, "one append at a time");
        if self.pending.is_empty() || self.rewrite_due() || self.failed.is_some() {
            return None;
        }
        let page = self.len - self.tail.len() as u64;
        let mut content = std::mem::take(&mut self.tail);
        content.append(&mut self.pending);
        self.urgent = false;
        self.append_out = true;
        Some(StateAppend {
            file: self.file.clone(),
            path: self.dir.join(STATE_FILE),
            page,
            content,
        })
    }

    /// Takes a finished [`StateAppend`]'s result: the file ends after its records now, or,
    /// if it failed, the file takes nothing more (every later sync reports the failure).
    pub fn finish_append(&mut self, done: Result<StateAppended, Error>) -> Result<(), Error> {
        assert!(self.append_out, "no append is out");
        self.append_out = false;
        let mut done = match done {
            Ok(done) => done,
            Err(e) => {
                self.failed = Some(e.to_string());
                return Err(e);
            }
        };
        self.len = done.page + done.content.len() as u64;
        let keep = done.content.len() / PAGE_SIZE * PAGE_SIZE;
        self.tail = done.content.split_off(keep);
        Ok(())
    }

    /// Replaces the file with one holding only the live records: written and synced beside
    /// it, renamed over it, the directory synced. A crash before the rename leaves the old
    /// file (with everything synced before this call, and this call's records unsynced).
    async fn rewrite(&mut self, storage: &S) -> Result<(), Error> {
        let mut content = header();
        for (g, s) in &self.groups {
            content.extend_from_slice(&create_record(*g, &s.voters));
            if !s.learners.is_empty() {
                content.extend_from_slice(&conf_record(*g, &s.voters, &s.learners));
            }
            content.extend_from_slice(&hard_state_record(*g, &s.hard_state));
            content.extend_from_slice(&log_start_record(*g, &s.start));
        }
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        storage
            .remove(&tmp)
            .await
            .map_err(|e| io_err("remove", &tmp, e))?;
        let file = storage
            .open_rw(&tmp)
            .await
            .map_err(|e| io_err("create", &tmp, e))?;
        write_padded(storage, &file, &tmp, 0, &content).await?;
        file.truncate(content.len() as u64)
            .await
            .map_err(|e| io_err("truncate", &tmp, e))?;
        file.fdatasync()
            .await
            .map_err(|e| io_err("fdatasync", &tmp, e))?;
        storage
            .rename(&tmp, &path)
            .await
            .map_err(|e| io_err("rename", &tmp, e))?;
        storage
            .sync_dir(&self.dir)
            .await
            .map_err(|e| io_err("fsync dir", &self.dir, e))?;
        self.file = Rc::new(file);
        self.len = content.len() as u64;
        let keep = content.len() / PAGE_SIZE * PAGE_SIZE;
        self.tail = content.split_off(keep);
        self.pending.clear();
        self.urgent = false;
        self.rewrites += 1;
        Ok(())
    }
}

fn header() -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&VERSION.to_be_bytes());
    h
}

/// Writes `content` at page-aligned `pos`, zero-padded to whole pages (direct IO).
async fn write_padded<S: Storage>(
    storage: &S,
    file: &S::File,
    path: &Path,
    pos: u64,
    content: &[u8],
) -> Result<(), Error> {
    debug_assert_eq!(pos % PAGE_SIZE as u64, 0);
    let padded = content.len().div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE;
    let mut buf = storage.alloc_buf(padded);
    buf.as_mut()[..content.len()].copy_from_slice(content);
    buf.as_mut()[content.len()..].fill(0);
    file.write_at(buf, pos)
        .await
        .map_err(|e| io_err("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_storage::std_io::StdStorage;

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        glommio::LocalExecutor::default().run(f)
    }

    #[test]
    fn only_commit_only_hard_states_may_wait_for_a_later_sync() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let s = StdStorage;
            let mut f = StateFile::open(&s, dir.path()).await.unwrap();
            assert!(f.must_sync(), "a new file's header");
            f.create(1, &[1, 2, 3]).unwrap();
            assert!(f.must_sync());
            f.sync(&s).await.unwrap();
            assert!(!f.must_sync() && !f.dirty());
            let hs = |term, vote, commit| HardState {
                term,
                vote,
                commit,
                ..Default::default()
            };
            f.hard_state(1, &hs(1, 2, 0));
            assert!(f.must_sync(), "a new term and vote");
            f.sync(&s).await.unwrap();
            f.hard_state(1, &hs(1, 2, 5));
            f.hard_state(1, &hs(1, 2, 9));
            assert!(f.dirty() && !f.must_sync(), "commits only");
            f.hard_state(1, &hs(1, 3, 9));
            assert!(f.must_sync(), "another vote");
            f.sync(&s).await.unwrap();
            f.hard_state(1, &hs(2, 0, 9));
            assert!(f.must_sync(), "another term");
            f.sync(&s).await.unwrap();
            for (kind, urgent) in [
                ("log start", {
                    f.log_start(1, LogStart::default());
                    f.must_sync()
                }),
                ("conf", {
                    f.sync(&s).await.unwrap();
                    f.conf(1, &[1, 2], &[3]).unwrap();
                    f.must_sync()
                }),
                ("remove", {
                    f.sync(&s).await.unwrap();
                    f.remove(1);
                    f.must_sync()
                }),
            ] {
                assert!(urgent, "{kind}");
            }
            f.sync(&s).await.unwrap();
            // Deferred commits are bounded: past the limit they must be written.
            f.create(2, &[1]).unwrap();
            f.hard_state(2, &hs(1, 1, 0));
            f.sync(&s).await.unwrap();
            let mut commit = 0;
            while !f.must_sync() {
                commit += 1;
                f.hard_state(2, &hs(1, 1, commit));
            }
            assert!(commit as usize * 41 >= DEFERRED_BYTES_MAX - 41, "{commit}");
            f.sync(&s).await.unwrap();
            // What a sync wrote reads back: the latest commit included.
            drop(f);
            let f = StateFile::open(&s, dir.path()).await.unwrap();
            assert_eq!(f.group(2).unwrap().hard_state.commit, commit);
            assert!(f.group(1).is_none());
        });
    }

    #[test]
    fn an_append_out_leaves_later_records_for_the_next_and_a_failed_one_fails_the_file() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let s = StdStorage;
            let mut f = StateFile::open(&s, dir.path()).await.unwrap();
            f.create(1, &[1, 2, 3]).unwrap();
            f.sync(&s).await.unwrap();
            let hs = |term, commit| HardState {
                term,
                vote: 2,
                commit,
                ..Default::default()
            };
            // Enough records to cross page boundaries between appends.
            for round in 1..=300u64 {
                f.hard_state(1, &hs(round, round));
                let append = f.begin_append().expect("records pending");
                assert!(
                    !f.dirty() && !f.must_sync(),
                    "the records went with the append"
                );
                // Appended while the first is out: left for the next one.
                f.hard_state(1, &hs(round, round + 1));
                assert!(f.must_sync() || f.dirty());
                let done = append.run(&s).await;
                f.finish_append(done).unwrap();
                assert!(f.dirty(), "the later record is still pending");
                let append = f.begin_append().unwrap();
                f.finish_append(append.run(&s).await).unwrap();
            }
            assert!(!f.dirty());
            drop(f);
            let mut f = StateFile::open(&s, dir.path()).await.unwrap();
            assert_eq!(f.group(1).unwrap().hard_state, hs(300, 301));
            // A failed append: the file takes nothing more.
            f.hard_state(1, &hs(301, 301));
            let append = f.begin_append().unwrap();
            drop(append);
            f.finish_append(Err(Error::Io("disk gone".into())))
                .unwrap_err();
            f.hard_state(1, &hs(302, 302));
            assert!(f.begin_append().is_none());
            let e = f.sync(&s).await.unwrap_err();
            assert!(e.to_string().contains("disk gone"), "{e}");
        });
    }

    #[test]
    fn latest_record_wins_a_torn_tail_is_cut_and_the_file_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let s = StdStorage;
            let mut f = StateFile::open(&s, dir.path()).await.unwrap();
            for g in 1..=20u64 {
                f.create(g, &[1, 2, 3]).unwrap();
            }
            f.sync(&s).await.unwrap();
            // Many hard-state updates: the file stays within its bound by rewriting.
            for term in 1..=2000u64 {
                for g in 1..=20u64 {
                    let hs = HardState {
                        term,
                        vote: g % 3 + 1,
                        commit: term * 2,
                        ..Default::default()
                    };
                    f.hard_state(g, &hs);
                }
                if term % 10 == 0 {
                    f.log_start(
                        5,
                        LogStart {
                            index: term,
                            term,
                            offset: term as i64 * 3,
                            reset: term % 20 == 0,
                        },
                    );
                }
                f.sync(&s).await.unwrap();
                assert!(f.len() <= REWRITE_MIN_BYTES.max(REWRITE_FACTOR * f.live_len()) + 2000);
            }
            assert!(f.rewrites() > 0, "never rewritten");
            let want = f.groups().clone();
            drop(f);
            let f = StateFile::<StdStorage>::open(&s, dir.path()).await.unwrap();
            assert_eq!(f.groups(), &want);
            assert_eq!(f.group(7).unwrap().hard_state.term, 2000);
            assert_eq!(f.group(5).unwrap().start.offset, 6000);
            assert!(f.group(5).unwrap().start.reset);
            let len = f.len();
            drop(f);
            // A torn last record (garbage after the synced end) is cut off on open.
            let path = dir.path().join(STATE_FILE);
            let mut bytes = std::fs::read(&path).unwrap();
            let mut g = StateFile::<StdStorage>::open(&s, dir.path()).await.unwrap();
            g.hard_state(
                3,
                &HardState {
                    term: 9999,
                    ..Default::default()
                },
            );
            g.sync(&s).await.unwrap();
            let end = g.len() as usize;
            drop(g);
            // On disk the records are followed by page padding.
            let full = std::fs::read(&path).unwrap();
            assert!(full.len() > end);
            for cut in [len as usize + 3, end - 1] {
                bytes.clear();
                bytes.extend_from_slice(&full[..cut]);
                std::fs::write(&path, &bytes).unwrap();
                let f = StateFile::<StdStorage>::open(&s, dir.path()).await.unwrap();
                assert_eq!(f.groups(), &want, "cut at {cut}");
                assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
            }
        });
    }

    /// A file of groups 1..=3 (created, hard states, a log start), synced; returns its
    /// bytes and the position where each record starts.
    async fn sample(dir: &Path) -> (Vec<u8>, Vec<usize>) {
        let s = StdStorage;
        let mut f = StateFile::open(&s, dir).await.unwrap();
        for g in 1..=3u64 {
            f.create(g, &[1, 2, 3]).unwrap();
            f.hard_state(
                g,
                &HardState {
                    term: g,
                    vote: 1,
                    commit: 10 * g,
                    ..Default::default()
                },
            );
        }
        f.log_start(
            2,
            LogStart {
                index: 5,
                term: 1,
                offset: 7,
                reset: false,
            },
        );
        f.sync(&s).await.unwrap();
        let len = f.len() as usize;
        drop(f);
        let bytes = std::fs::read(dir.join(STATE_FILE)).unwrap()[..len].to_vec();
        let mut starts = Vec::new();
        let mut at = HEADER_LEN;
        while at < len {
            starts.push(at);
            at += 8 + u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        }
        assert_eq!(at, len);
        (bytes, starts)
    }

    #[test]
    fn only_a_torn_last_record_is_cut_damage_before_valid_records_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let s = StdStorage;
            let (bytes, starts) = sample(dir.path()).await;
            let path = dir.path().join(STATE_FILE);
            let last = *starts.last().unwrap();
            let (storage, dir_path, file) = (&s, dir.path(), path.clone());
            let open = move |b: Vec<u8>| {
                std::fs::write(&file, b).unwrap();
                StateFile::<StdStorage>::open(storage, dir_path)
            };
            // The last record garbled, cut short, or followed by zero padding: a torn tail.
            let mut b = bytes.clone();
            b[last + 12] ^= 1;
            b.extend_from_slice(&[0; 100]);
            let f = open(b).await.unwrap();
            assert_eq!(f.len(), last as u64);
            assert_eq!(f.group(2).unwrap().start, LogStart::default());
            let f = open(bytes[..bytes.len() - 3].to_vec()).await.unwrap();
            assert_eq!(f.len(), last as u64);
            // A record in the middle garbled (body, length, or zeroed): the records after
            // it were synced, so the file is refused rather than cut there.
            for (at, how) in [(12, "body"), (0, "length"), (4, "checksum")] {
                let mut b = bytes.clone();
                b[starts[2] + at] ^= 0x40;
                let e = open(b).await.err().expect(how);
                assert!(
                    matches!(&e, Error::Damaged(m) if m.contains("not a torn tail")),
                    "{how}: {e}"
                );
            }
            let mut b = bytes.clone();
            b[starts[1]..starts[2]].fill(0);
            let e = open(b).await.err().expect("zeroed");
            assert!(matches!(e, Error::Damaged(_)), "{e}");
            // A checksummed record that does not apply (a group never created) is damage too.
            let mut b = bytes.clone();
            b.extend_from_slice(&hard_state_record(9, &HardState::default()));
            let e = open(b).await.err().expect("unknown group");
            assert!(
                matches!(&e, Error::Damaged(m) if m.contains("does not fit")),
                "{e}"
            );
            // Nothing was cut by the refusals: the intact file still opens whole.
            let f = open(bytes.clone()).await.unwrap();
            assert_eq!(f.len(), bytes.len() as u64);
            assert_eq!(f.group(3).unwrap().hard_state.commit, 30);
        });
    }

    #[test]
    fn a_removed_group_is_forgotten_and_may_be_created_afresh() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let s = StdStorage;
            sample(dir.path()).await;
            let mut f = StateFile::open(&s, dir.path()).await.unwrap();
            f.remove(2);
            assert!(f.group(2).is_none());
            f.sync(&s).await.unwrap();
            drop(f);
            let mut f = StateFile::<StdStorage>::open(&s, dir.path()).await.unwrap();
            assert_eq!(f.groups().keys().copied().collect::<Vec<_>>(), vec![1, 3]);
            f.create(2, &[4, 5]).unwrap();
            f.sync(&s).await.unwrap();
            drop(f);
            let mut f = StateFile::<StdStorage>::open(&s, dir.path()).await.unwrap();
            let g = f.group(2).unwrap();
            assert_eq!(g.voters, vec![4, 5]);
            assert_eq!(g.start, LogStart::default());
            assert_eq!(g.hard_state, HardState::default());
            // A rewrite leaves removed groups out.
            f.remove(1);
            f.rewrite(&s).await.unwrap();
            drop(f);
            let f = StateFile::<StdStorage>::open(&s, dir.path()).await.unwrap();
            assert_eq!(f.groups().keys().copied().collect::<Vec<_>>(), vec![2, 3]);
            assert_eq!(f.group(3).unwrap().hard_state.commit, 30);
        });
    }

    /// A configuration record replaces the voters of `CREATE`, survives a reopen and a
    /// rewrite; one naming a node twice does not apply (damage).
    #[test]
    fn a_configuration_change_replaces_the_voters_and_survives_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let s = StdStorage;
            sample(dir.path()).await;
            let mut f = StateFile::open(&s, dir.path()).await.unwrap();
            f.conf(1, &[1, 2, 3], &[4]).unwrap();
            f.conf(3, &[2, 3, 4], &[]).unwrap();
            f.sync(&s).await.unwrap();
            drop(f);
            let mut f = StateFile::<StdStorage>::open(&s, dir.path()).await.unwrap();
            let conf = |f: &StateFile<StdStorage>, g| {
                let g = f.group(g).unwrap();
                (g.voters.clone(), g.learners.clone())
            };
            assert_eq!(conf(&f, 1), (vec![1, 2, 3], vec![4]));
            assert_eq!(conf(&f, 3), (vec![2, 3, 4], vec![]));
            assert_eq!(f.group(3).unwrap().hard_state.commit, 30, "the rest kept");
            f.rewrite(&s).await.unwrap();
            drop(f);
            let f = StateFile::<StdStorage>::open(&s, dir.path()).await.unwrap();
            assert_eq!(conf(&f, 1), (vec![1, 2, 3], vec![4]));
            assert_eq!(conf(&f, 3), (vec![2, 3, 4], vec![]));
            let mut groups = BTreeMap::new();
            assert!(apply(&mut groups, &create_record(1, &[1, 2])[8..]).is_some());
            assert!(apply(&mut groups, &conf_record(1, &[1, 2], &[2])[8..]).is_none());
            assert!(apply(&mut groups, &conf_record(7, &[1], &[])[8..]).is_none());
            let body = conf_record(1, &[1], &[3]);
            assert!(plausible(body.len() - 8, CONF));
        });
    }
}
