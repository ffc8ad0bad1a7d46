//! Partition directories under the data directory and the topic id each one holds (KIP-516).
//!
//! Each partition directory `<topic>-<partition>` holds a `partition.metadata` file in
//! Kafka's format (`version: 0`, `topic_id: <base64 uuid>`), written atomically when the
//! directory is created. The directory then belongs to that one incarnation of the topic:
//! a directory whose topic is gone from the cluster state, or whose id is not the topic's
//! current id, is an orphan (left by a broker that died between the state write and the
//! file removal of a deletion) and is removed at start, before any partition is opened, so a
//! topic re-created under the same name never adopts its predecessor's data. Removal first
//! renames the directory to `<topic>-<partition>.<uuid>-delete` (as Kafka does), so that a
//! crash in the middle of it leaves an obvious orphan, never a half-emptied partition under
//! its live name. A directory without the file (written before topic ids were stored) is
//! adopted by the topic of its name and gets the file; one without the file and without a
//! topic of its name is not known to be ours, so it is set aside (renamed to
//! `….<uuid>-stray`, as Kafka does), never deleted. Names are capped at 255 bytes the way
//! Kafka caps them (the topic part is shortened), so a long topic name can always be
//! deleted. A data directory with partition data but no cluster state is refused at start:
//! without the state every partition would look orphaned.
//!
//! Blocking `std::fs` calls: run at start before the shards exist, or on a blocking thread.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::BrokerError;
use crate::topics::ClusterState;

/// Removes everything but `partition.metadata` from a partition directory; returns how many
/// entries went. For a replicated partition whose Raft group the store does not know: any
/// log data there belongs to no durable replica (nothing of it was ever acknowledged: a
/// group's creation is durable before its first entry can commit), and the store refuses to
/// create a group over it.
pub fn clear_log_files(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if e.file_name() == METADATA_FILE {
            continue;
        }
        let path = e.path();
        let gone = if e.file_type()?.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match gone {
            Ok(()) => removed += 1,
            // A discarded segment the shard's discard task freed meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if removed > 0 {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(removed)
}

/// The file in each partition directory that names its topic id (Kafka's name).
pub const METADATA_FILE: &str = "partition.metadata";
const METADATA_TMP: &str = "partition.metadata.tmp";
/// The only `partition.metadata` version Kafka writes.
const METADATA_VERSION: u32 = 0;
/// Ends the name of a directory being removed (Kafka's `-delete`).
pub const DELETE_SUFFIX: &str = "-delete";
/// Ends the name of a directory set aside because nothing says whose it is (Kafka's `-stray`).
pub const STRAY_SUFFIX: &str = "-stray";
/// Ends the name of a partition's copy being made in another log directory (Kafka's
/// `-future`, see `log_dirs` and `log_moves`).
pub const FUTURE_SUFFIX: &str = "-future";
/// Longest file name Linux accepts.
const FILE_NAME_BYTES_MAX: usize = 255;
/// A `partition.metadata` file is a few dozen bytes; anything far larger is not one.
const METADATA_BYTES_MAX: u64 = 4096;

/// `<topic>-<partition>`, the directory name of a partition.
pub fn dir_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

/// The topic and partition a directory name stands for, if it is a partition directory's.
pub fn parse_dir_name(name: &str) -> Option<(&str, i32)> {
    let (topic, p) = name.rsplit_once('-')?;
    if topic.is_empty() || p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // "-0" is the only spelling of 0 and no partition index has leading zeros.
    if p.len() > 1 && p.starts_with('0') {
        return None;
    }
    let p: i32 = p.parse().ok()?;
    Some((topic, p))
}

/// The file's content in Kafka's format.
pub fn encode_metadata(topic_id: &[u8; 16]) -> String {
    format!(
        "version: {METADATA_VERSION}\ntopic_id: {}\n",
        crate::topics::base64_url(topic_id)
    )
}

/// The topic id a `partition.metadata` file names.
pub fn decode_metadata(text: &str) -> Result<[u8; 16], String> {
    let mut version = None;
    let mut id = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("malformed line {line:?}"))?;
        match k.trim() {
            "version" => version = Some(v.trim().to_string()),
            "topic_id" => id = Some(v.trim().to_string()),
            other => return Err(format!("unknown key {other:?}")),
        }
    }
    match version.as_deref() {
        Some("0") => {}
        Some(v) => return Err(format!("unsupported version {v}")),
        None => return Err("no version".into()),
    }
    let id = id.ok_or("no topic_id")?;
    decode_uuid(&id).ok_or_else(|| format!("topic_id {id:?} is not a base64 UUID"))
}

/// A UUID from its 22-character URL-safe base64 form (Kafka's `Uuid.toString`).
fn decode_uuid(s: &str) -> Option<[u8; 16]> {
    if s.len() != 22 {
        return None;
    }
    let mut out = [0u8; 16];
    let (mut acc, mut bits, mut n) = (0u32, 0, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out[n] = (acc >> bits) as u8;
            n += 1;
        }
    }
    // 22 characters carry 132 bits: the 4 left over must be zero in a canonical encoding.
    (n == 16 && acc & ((1 << bits) - 1) == 0).then_some(out)
}

/// The topic id in `dir`'s `partition.metadata`: `None` if the file does not exist, an
/// `InvalidData` error if it is not a readable one.
pub fn read_topic_id(dir: &Path) -> io::Result<Option<[u8; 16]>> {
    let path = dir.join(METADATA_FILE);
    match fs::metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
        Ok(m) if m.len() > METADATA_BYTES_MAX => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is {} bytes long", path.display(), m.len()),
            ))
        }
        Ok(_) => {}
    }
    let text = fs::read_to_string(&path)?;
    decode_metadata(&text).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Writes `dir`'s `partition.metadata` atomically: beside it, synced, renamed over it, and
/// the directory synced, so that a crash leaves the old file or the new one, never a torn one.
pub fn write_metadata(dir: &Path, topic_id: &[u8; 16]) -> io::Result<()> {
    let tmp = dir.join(METADATA_TMP);
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(encode_metadata(topic_id).as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(METADATA_FILE))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Removes the directory `name` of `data_dir`: renamed to `<name>.<uuid>-delete` (and the
/// rename made durable) first, then removed. Returns the renamed path. A failure after the
/// rename is only logged: the directory no longer has a partition's name, and the next
/// start removes it.
pub fn discard(data_dir: &Path, name: &str) -> io::Result<PathBuf> {
    let doomed = data_dir.join(renamed(name, DELETE_SUFFIX));
    fs::rename(data_dir.join(name), &doomed)?;
    sync_dir(data_dir)?;
    if let Err(e) = fs::remove_dir_all(&doomed) {
        log::warn!(
            "cannot remove {} (removed at the next start): {e}",
            doomed.display()
        );
    }
    Ok(doomed)
}

/// `<name>.<uuid><suffix>`, the topic part of `name` shortened so that the whole fits in a
/// file name (Kafka's `logDirNameWithSuffixCappedLength`): a 249-byte topic name plus the
/// suffix is over 255 bytes, and a rename that fails would leave the partition undeletable.
pub fn renamed(name: &str, suffix: &str) -> String {
    let (topic, rest) = match parse_dir_name(name) {
        Some((topic, p)) => (topic, format!("-{p}")),
        None => (name, String::new()),
    };
    let tail = format!("{rest}.{}{suffix}", uuid::Uuid::new_v4().simple());
    let mut keep = topic
        .len()
        .min(FILE_NAME_BYTES_MAX.saturating_sub(tail.len()));
    while !topic.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{tail}", &topic[..keep])
}

/// The name of a move's copy of partition directory `name`: `<name>.<uuid>-future`, whole
/// (unlike [`renamed`], which may shorten the topic part: the copy's name must give back the
/// partition's). None when that is longer than a file name may be.
pub fn future_name(name: &str) -> Option<String> {
    let future = format!("{name}.{}{FUTURE_SUFFIX}", uuid::Uuid::new_v4().simple());
    (future.len() <= FILE_NAME_BYTES_MAX).then_some(future)
}

/// The partition directory name a [`future_name`] was made from.
pub fn original_name(future: &str) -> Option<String> {
    let (name, _) = future.strip_suffix(FUTURE_SUFFIX)?.rsplit_once('.')?;
    parse_dir_name(name).map(|_| name.to_string())
}

/// Whether `name` is one [`renamed`] made with `suffix` (`….<32 hex digits><suffix>`).
pub fn is_renamed(name: &str, suffix: &str) -> bool {
    name.strip_suffix(suffix)
        .and_then(|n| n.rsplit_once('.'))
        .is_some_and(|(_, id)| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Refuses to start on a data directory that holds partition directories with topic ids but
/// no cluster state (see the module header).
pub fn refuse_unowned_data(data_dir: &Path) -> Result<(), BrokerError> {
    let Ok(entries) = fs::read_dir(data_dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.join(METADATA_FILE).is_file() {
            return Err(BrokerError::Config(format!(
                "{} holds partition data ({}) but no cluster state ({}): refusing to start,                  since every partition would look orphaned; restore the state file, or move                  the partition directories away",
                data_dir.display(),
                path.display(),
                crate::topics::state_path(data_dir).display()
            )));
        }
    }
    Ok(())
}

/// Prepares the directories of partitions about to be opened, at start or when topics are
/// created: creates each with its `partition.metadata`, adopts one without the file, and
/// replaces one that holds another topic id (an orphan of an earlier topic of the name
/// whose removal failed). See [`write_all_metadata`] for how the files are made durable.
pub fn prepare(data_dir: &Path, parts: &[(String, i32, [u8; 16])]) -> io::Result<()> {
    let mut files = Vec::new();
    for (topic, partition, topic_id) in parts {
        let name = dir_name(topic, *partition);
        let dir = data_dir.join(&name);
        if dir.is_dir() {
            match read_topic_id(&dir)? {
                Some(id) if id == *topic_id => continue,
                Some(id) => {
                    log::warn!(
                        "{name}: partition directory holds topic id {} but the topic's id is \
                         {}; removing the orphan",
                        crate::topics::base64_url(&id),
                        crate::topics::base64_url(topic_id)
                    );
                    discard(data_dir, &name)?;
                    fs::create_dir(&dir)?;
                }
                None => {}
            }
        } else {
            fs::create_dir(&dir)?;
        }
        files.push((dir, *topic_id));
    }
    write_all_metadata(data_dir, &files)
}

/// Writes the `partition.metadata` of many directories of `data_dir` at once, durably and
/// atomically: each beside its final name, one `syncfs` (the contents), the renames, another
/// `syncfs` (the renames and the directories themselves). A crash leaves each directory with
/// no file or a whole one, never a torn one, and creating thousands of partitions costs two
/// syncs instead of several per partition (a CreateTopics of 6,000 partitions took longer
/// than clients wait with one file and directory fsync each).
pub fn write_all_metadata(data_dir: &Path, files: &[(PathBuf, [u8; 16])]) -> io::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    for (dir, id) in files {
        fs::write(dir.join(METADATA_TMP), encode_metadata(id))?;
    }
    syncfs(data_dir)?;
    for (dir, _) in files {
        fs::rename(dir.join(METADATA_TMP), dir.join(METADATA_FILE))?;
    }
    syncfs(data_dir)
}

/// Flushes the whole file system holding `path` (data and metadata).
fn syncfs(path: &Path) -> io::Result<()> {
    let f = fs::File::open(path)?;
    rustix::fs::syncfs(&f)?;
    Ok(())
}

/// What the start-up sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Partition directories of topics (or topic ids) no longer in the cluster state.
    pub orphans: usize,
    /// Directories of unfinished deletions (`…-delete`).
    pub deletions: usize,
    /// Partition directories without `partition.metadata` that got one.
    pub adopted: usize,
    /// Directories without `partition.metadata` and without a topic, set aside (`-stray`).
    pub strays: usize,
}

/// The start-up sweep of `data_dir` against the cluster state, before partitions are opened
/// (see the module header). A `partition.metadata` that cannot be read stops the start: the
/// directory's owner is unknown, and neither adopting nor removing its data is safe to guess.
pub fn sweep(data_dir: &Path, state: &ClusterState) -> Result<Swept, BrokerError> {
    let io_err = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| BrokerError::Io { op, path, source }
    };
    let topics: std::collections::HashMap<&str, &crate::topics::TopicRecord> =
        state.topics.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut swept = Swept::default();
    let mut adopted = Vec::new();
    let entries = fs::read_dir(data_dir).map_err(io_err("list", data_dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err("list", data_dir))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if is_renamed(&name, STRAY_SUFFIX) {
            continue;
        }
        if is_renamed(&name, DELETE_SUFFIX) {
            log::info!("removing {name}, left by an unfinished partition deletion");
            fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
            swept.deletions += 1;
            continue;
        }
        let Some((topic, partition)) = parse_dir_name(&name) else {
            continue;
        };
        // A partition this node holds no replica of (moved away while it was down) goes like
        // one of a deleted topic: its data lives on the nodes that hold it now.
        let owner = topics
            .get(topic)
            .filter(|t| partition < t.partitions && t.hosted_on(partition, state.node_id))
            .copied();
        let on_disk = read_topic_id(&path).map_err(|e| {
            BrokerError::Config(format!(
                "cannot read the topic id of partition directory {}: {e}; remove its {METADATA_FILE} \
                 to adopt it for the topic of its name, or the directory to drop its data",
                path.display()
            ))
        })?;
        match (owner, on_disk) {
            (Some(t), Some(id)) if id == t.id => {}
            (Some(t), None) => {
                log::info!(
                    "{name}: writing {METADATA_FILE} (topic id {}) into a partition directory \
                     that predates topic ids",
                    crate::topics::base64_url(&t.id)
                );
                adopted.push((path.clone(), t.id));
                swept.adopted += 1;
            }
            (None, None) => {
                // No topic id and no topic of its name: possibly not ours at all.
                let aside = data_dir.join(renamed(&name, STRAY_SUFFIX));
                log::warn!(
                    "{name}: no {METADATA_FILE} and no topic {topic} partition {partition}; \
                     setting it aside as {}",
                    aside.display()
                );
                fs::rename(&path, &aside).map_err(io_err("rename", &path))?;
                swept.strays += 1;
            }
            (owner, on_disk) => {
                let why = match (owner, on_disk) {
                    (Some(t), Some(id)) => format!(
                        "it holds topic id {} but topic {topic} now has id {}",
                        crate::topics::base64_url(&id),
                        crate::topics::base64_url(&t.id)
                    ),
                    (None, _) if topics.get(topic).is_some_and(|t| partition < t.partitions) => {
                        format!("this node holds no replica of {topic} partition {partition}")
                    }
                    (None, _) if topics.contains_key(topic) => {
                        format!("topic {topic} has no partition {partition}")
                    }
                    _ => format!("topic {topic} does not exist"),
                };
                log::warn!("removing orphaned partition directory {name}: {why}");
                discard(data_dir, &name).map_err(io_err("remove", &path))?;
                swept.orphans += 1;
            }
        }
    }
    write_all_metadata(data_dir, &adopted).map_err(io_err("write metadata in", data_dir))?;
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::TopicRecord;

    fn topic(name: &str, partitions: i32, id: u8) -> TopicRecord {
        TopicRecord {
            name: name.into(),
            id: [id; 16],
            partitions,
            configs: Default::default(),
            internal: false,
            replicas: Vec::new(),
            moves: Vec::new(),
        }
    }

    #[test]
    fn directory_names_parse_back() {
        assert_eq!(parse_dir_name("orders-0"), Some(("orders", 0)));
        assert_eq!(parse_dir_name("a-b-12"), Some(("a-b", 12)));
        assert_eq!(parse_dir_name("x.y_z-3"), Some(("x.y_z", 3)));
        // A topic name may end in a dash.
        assert_eq!(parse_dir_name("a--1"), Some(("a-", 1)));
        for bad in ["cluster", "-1", "a-", "a-01", "a-x", "a-99999999999"] {
            assert_eq!(parse_dir_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn metadata_round_trips_in_kafkas_format() {
        let id = *uuid::Uuid::new_v4().as_bytes();
        let text = encode_metadata(&id);
        assert!(text.starts_with("version: 0\ntopic_id: "), "{text}");
        assert_eq!(text.lines().nth(1).unwrap().len(), "topic_id: ".len() + 22);
        assert_eq!(decode_metadata(&text), Ok(id));
        // Kafka writes no trailing newline; accept both.
        assert_eq!(decode_metadata(text.trim_end()), Ok(id));
        for bad in [
            "",
            "version: 1\ntopic_id: AAAAAAAAAAAAAAAAAAAAAA",
            "version: 0",
            "version: 0\ntopic_id: short",
            "version: 0\ntopic_id: AAAAAAAAAAAAAAAAAAAAA!",
            "version: 0\ntopic_id: AAAAAAAAAAAAAAAAAAAAAB",
            "garbage",
        ] {
            assert!(decode_metadata(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_sweep_removes_orphans_and_adopts_old_directories() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path();
        let state = ClusterState {
            topics: vec![topic("kept", 2, 1), topic("renewed", 1, 2)],
            ..Default::default()
        };
        // kept-0: current id; kept-1: no file (older data dir); kept-2: beyond the count;
        // renewed-0: an earlier topic's id; gone-0: topic deleted; a leftover deletion; and
        // things that are not partitions.
        for name in [
            "kept-0",
            "kept-1",
            "kept-2",
            "renewed-0",
            "gone-0",
            "cluster",
        ] {
            fs::create_dir(data.join(name)).unwrap();
            fs::write(data.join(name).join("00000000000000000000.log"), b"x").unwrap();
        }
        write_metadata(&data.join("kept-0"), &[1; 16]).unwrap();
        write_metadata(&data.join("kept-2"), &[1; 16]).unwrap();
        write_metadata(&data.join("renewed-0"), &[9; 16]).unwrap();
        write_metadata(&data.join("gone-0"), &[3; 16]).unwrap();
        fs::create_dir(data.join("gone-1.0123456789abcdef0123456789abcdef-delete")).unwrap();
        // Not ours to judge: no topic id, no topic of its name; and a name that only looks
        // like a deletion.
        fs::create_dir(data.join("backup-2024")).unwrap();
        fs::create_dir(data.join("notes-delete")).unwrap();
        fs::write(data.join("x-0"), b"a file, not a directory").unwrap();

        let swept = sweep(data, &state).unwrap();
        assert_eq!(
            swept,
            Swept {
                orphans: 3,
                deletions: 1,
                adopted: 1,
                strays: 1,
            }
        );
        let mut left: Vec<String> = fs::read_dir(data)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let stray = left
            .iter()
            .position(|n| is_renamed(n, STRAY_SUFFIX))
            .unwrap();
        assert!(left[stray].starts_with("backup-2024."), "{left:?}");
        left.remove(stray);
        assert_eq!(left, ["cluster", "kept-0", "kept-1", "notes-delete", "x-0"]);
        assert_eq!(read_topic_id(&data.join("kept-1")).unwrap(), Some([1; 16]));
        assert!(data.join("kept-1/00000000000000000000.log").exists());
        // A second sweep has nothing to do.
        assert_eq!(sweep(data, &state).unwrap(), Swept::default());
    }

    #[test]
    fn the_sweep_removes_replicas_assigned_to_other_nodes() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path();
        let mut t = topic("spread", 3, 4);
        // Node 2 holds partitions 0 and 2; partition 1 moved to nodes 1 and 3.
        t.replicas = vec![vec![2, 1], vec![1, 3], vec![3, 2]];
        let state = ClusterState {
            node_id: 2,
            topics: vec![t],
            ..Default::default()
        };
        for p in 0..3 {
            let dir = data.join(format!("spread-{p}"));
            fs::create_dir(&dir).unwrap();
            write_metadata(&dir, &[4; 16]).unwrap();
        }
        let swept = sweep(data, &state).unwrap();
        assert_eq!(swept.orphans, 1);
        assert!(data.join("spread-0").exists());
        assert!(!data.join("spread-1").exists());
        assert!(data.join("spread-2").exists());
    }

    #[test]
    fn renamed_names_fit_in_a_file_name() {
        let long = "t".repeat(249);
        let name = dir_name(&long, 7);
        let r = renamed(&name, DELETE_SUFFIX);
        assert_eq!(r.len(), FILE_NAME_BYTES_MAX, "{r}");
        assert!(is_renamed(&r, DELETE_SUFFIX));
        assert!(r.contains("-7."));
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join(&name)).unwrap();
        discard(d.path(), &name).unwrap();
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
        assert!(renamed("short-0", STRAY_SUFFIX).starts_with("short-0."));
    }

    #[test]
    fn partition_data_without_cluster_state_is_refused() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("other-0")).unwrap();
        assert!(
            refuse_unowned_data(d.path()).is_ok(),
            "no topic ids: nothing claimed"
        );
        write_metadata(&d.path().join("other-0"), &[4; 16]).unwrap();
        assert!(refuse_unowned_data(d.path()).is_err());
    }

    #[test]
    fn an_unreadable_metadata_file_stops_the_start() {
        let d = tempfile::tempdir().unwrap();
        let state = ClusterState {
            topics: vec![topic("t", 1, 1)],
            ..Default::default()
        };
        fs::create_dir(d.path().join("t-0")).unwrap();
        fs::write(d.path().join("t-0").join(METADATA_FILE), "nonsense").unwrap();
        let err = sweep(d.path(), &state).unwrap_err().to_string();
        assert!(err.contains(METADATA_FILE), "{err}");
        assert!(d.path().join("t-0").exists());
    }

    #[test]
    fn prepare_creates_adopts_and_replaces() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path();
        let t = |id: u8| vec![("t".to_string(), 0, [id; 16])];
        let dir = data.join("t-0");
        prepare(data, &t(1)).unwrap();
        assert_eq!(read_topic_id(&dir).unwrap(), Some([1; 16]));
        fs::write(dir.join("00000000000000000000.log"), b"old").unwrap();
        // Same id: kept as it is.
        prepare(data, &t(1)).unwrap();
        assert!(dir.join("00000000000000000000.log").exists());
        // Another id: the old incarnation's data is gone.
        prepare(data, &t(2)).unwrap();
        assert_eq!(read_topic_id(&dir).unwrap(), Some([2; 16]));
        assert!(!dir.join("00000000000000000000.log").exists());
        // No file: adopted.
        fs::remove_file(dir.join(METADATA_FILE)).unwrap();
        fs::write(dir.join("00000000000000000000.log"), b"kept").unwrap();
        prepare(data, &t(2)).unwrap();
        assert_eq!(read_topic_id(&dir).unwrap(), Some([2; 16]));
        assert!(dir.join("00000000000000000000.log").exists());
        let names: Vec<_> = fs::read_dir(data).unwrap().collect();
        assert_eq!(names.len(), 1, "no -delete directory left behind");
        // Many at once, none left as a temporary file.
        let many: Vec<_> = (0..50).map(|p| ("m".to_string(), p, [3; 16])).collect();
        prepare(data, &many).unwrap();
        for p in 0..50 {
            let dir = data.join(dir_name("m", p));
            assert_eq!(read_topic_id(&dir).unwrap(), Some([3; 16]));
            assert!(!dir.join(METADATA_TMP).exists());
        }
    }
}
