//! The on-disk format of a shard's Raft state: the manager's [`Write`]s, in `seq` order, as
//! checksummed records in one append-only file. Sans-IO: [`encode_record`] turns a write
//! into record bytes to append, [`replay`] turns the file's bytes back into every group's
//! [`ReplicaLog`] (for [`crate::GroupManager::recover`]) and the length of its valid prefix.
//! The simulator's disk and the real drivers (`sluice-cluster`'s controller WAL) share it.
//!
//! # Layout
//!
//! A record is `len: u32` (payload bytes), `crc: u32` (CRC32C of the payload), then the
//! payload; integers big-endian. A payload is a type byte and its fields:
//!
//! ```text
//! 1 Create     group u64, voter count u32, voters u64...
//! 2 Entries    group u64, entry count u32, per entry: type u8 (raft-rs EntryType), term u64,
//!              index u64, context length u32 + bytes, data length u32 + bytes
//! 3 HardState  group u64, term u64, vote u64, commit u64
//! 4 LogStart   group u64, index u64, term u64, offset i64, reset u8 (0 or 1)
//! 5 Remove     group u64
//! 6 Conf       group u64, voter count u32, voters u64..., learner count u32, learners u64...
//! ```
//!
//! Types 5 and 6 were added after the first files were written; those files hold none and
//! replay as before (a group's configuration is then the voters of its `Create`).
//!
//! # Replay
//!
//! Replay reads records from the start and stops at the first one that is cut short or
//! whose checksum does not match: that is the torn tail of a write a crash interrupted
//! (nothing after it was synced, as writes are appended in order and a sync covers every
//! write before it), and `valid_len` says where the driver must cut the file before it
//! appends again. A record whose checksum matches but which does not decode, or which does
//! not fit the log built so far (entries of a group never created, a gap in a group's
//! entries, a log start beyond its log, a commit index past the log's end), is not a torn
//! write but a damaged or foreign file: replay fails with [`ReplayError`] rather than cut
//! synced state away or guess. Decoding never panics and never allocates more than the
//! input backs: every count and length is checked against the bytes that remain first.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType, HardState};

use crate::effect::{GroupId, Write};
use crate::log::ReplicaLog;

/// Bytes before a record's payload: its length and checksum.
pub const RECORD_HEADER_BYTES: usize = 8;

const CREATE: u8 = 1;
const ENTRIES: u8 = 2;
const HARD_STATE: u8 = 3;
const LOG_START: u8 = 4;
const REMOVE: u8 = 5;
const CONF: u8 = 6;

/// Bytes an entry takes besides its context and data.
const ENTRY_FIXED_BYTES: usize = 1 + 8 + 8 + 4 + 4;

fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}

fn put_len(b: &mut Vec<u8>, n: usize) {
    put_u32(
        b,
        u32::try_from(n).expect("a length within a record fits u32"),
    );
}

/// Appends records that replay to `log` as group `group` (what the driver writes when it
/// rewrites the file without the entries a compaction dropped): its creation with its
/// voters, its configuration, its log start, its entries and its hard state. The snapshot
/// payload is not part of this format (the driver keeps it). `None` if entries were evicted
/// from memory (a log whose driver reads them back from elsewhere is not rewritten so).
pub fn encode_log(group: GroupId, log: &ReplicaLog, out: &mut Vec<u8>) -> Option<()> {
    if log.window_first() != log.first_index() {
        return None;
    }
    let voters = log.voters().to_vec();
    encode_record(
        &Write::Create {
            group,
            voters: voters.clone(),
        },
        out,
    );
    if !log.learners().is_empty() {
        encode_record(
            &Write::Conf {
                group,
                voters,
                learners: log.learners().to_vec(),
            },
            out,
        );
    }
    let (index, term) = log.start();
    if index > 0 {
        encode_record(
            &Write::LogStart {
                group,
                index,
                term,
                offset: log.start_offset(),
                reset: true,
            },
            out,
        );
    }
    let entries: Vec<Entry> = (log.first_index()..=log.last_index())
        .map(|i| log.entry(i).cloned())
        .collect::<Option<_>>()?;
    if !entries.is_empty() {
        encode_record(&Write::Entries { group, entries }, out);
    }
    encode_record(
        &Write::HardState {
            group,
            hard_state: log.hard_state().clone(),
        },
        out,
    );
    Some(())
}

/// Appends `w` to `out` as one record (header and payload).
pub fn encode_record(w: &Write, out: &mut Vec<u8>) {
    let at = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    encode_payload(w, out);
    let payload = &out[at + RECORD_HEADER_BYTES..];
    let len = u32::try_from(payload.len()).expect("a Raft write is under 4 GiB");
    let crc = crc32c::crc32c(payload);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    out[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
}

fn encode_payload(w: &Write, b: &mut Vec<u8>) {
    match w {
        Write::Create { group, voters } => {
            b.push(CREATE);
            put_u64(b, *group);
            put_len(b, voters.len());
            for v in voters {
                put_u64(b, *v);
            }
        }
        Write::Entries { group, entries } => {
            b.push(ENTRIES);
            put_u64(b, *group);
            put_len(b, entries.len());
            for e in entries {
                b.push(e.get_entry_type() as u8);
                put_u64(b, e.term);
                put_u64(b, e.index);
                put_len(b, e.context.len());
                b.extend_from_slice(&e.context);
                put_len(b, e.data.len());
                b.extend_from_slice(&e.data);
            }
        }
        Write::LogStart {
            group,
            index,
            term,
            offset,
            reset,
        } => {
            b.push(LOG_START);
            put_u64(b, *group);
            put_u64(b, *index);
            put_u64(b, *term);
            put_u64(b, *offset as u64);
            b.push(*reset as u8);
        }
        Write::HardState { group, hard_state } => {
            b.push(HARD_STATE);
            put_u64(b, *group);
            put_u64(b, hard_state.term);
            put_u64(b, hard_state.vote);
            put_u64(b, hard_state.commit);
        }
        Write::Remove { group } => {
            b.push(REMOVE);
            put_u64(b, *group);
        }
        Write::Conf {
            group,
            voters,
            learners,
        } => {
            b.push(CONF);
            put_u64(b, *group);
            for set in [voters, learners] {
                put_len(b, set.len());
                for v in set {
                    put_u64(b, *v);
                }
            }
        }
    }
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
    /// A count of items of at least `item_bytes` each, refused if the rest cannot hold them.
    fn count(&mut self, item_bytes: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.checked_mul(item_bytes)? <= self.0.len()).then_some(n)
    }
}

/// Decodes one record's payload; `None` if it is not exactly one valid write.
pub fn decode_payload(payload: &[u8]) -> Option<Write> {
    let mut c = Cursor(payload);
    let w = match c.u8()? {
        CREATE => {
            let group = c.u64()?;
            let n = c.count(8)?;
            let mut voters = Vec::with_capacity(n);
            for _ in 0..n {
                voters.push(c.u64()?);
            }
            Write::Create { group, voters }
        }
        ENTRIES => {
            let group = c.u64()?;
            let n = c.count(ENTRY_FIXED_BYTES)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let mut e = Entry::default();
                e.set_entry_type(match c.u8()? {
                    0 => EntryType::EntryNormal,
                    1 => EntryType::EntryConfChange,
                    2 => EntryType::EntryConfChangeV2,
                    _ => return None,
                });
                e.term = c.u64()?;
                e.index = c.u64()?;
                let n = c.count(1)?;
                e.context = Bytes::copy_from_slice(c.take(n)?);
                let n = c.count(1)?;
                e.data = Bytes::copy_from_slice(c.take(n)?);
                entries.push(e);
            }
            Write::Entries { group, entries }
        }
        LOG_START => Write::LogStart {
            group: c.u64()?,
            index: c.u64()?,
            term: c.u64()?,
            offset: c.u64()? as i64,
            reset: match c.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            },
        },
        HARD_STATE => {
            let group = c.u64()?;
            let hard_state = HardState {
                term: c.u64()?,
                vote: c.u64()?,
                commit: c.u64()?,
                ..Default::default()
            };
            Write::HardState { group, hard_state }
        }
        REMOVE => Write::Remove { group: c.u64()? },
        CONF => {
            let group = c.u64()?;
            let mut sets = [Vec::new(), Vec::new()];
            for set in &mut sets {
                let n = c.count(8)?;
                for _ in 0..n {
                    set.push(c.u64()?);
                }
            }
            let [voters, learners] = sets;
            Write::Conf {
                group,
                voters,
                learners,
            }
        }
        _ => return None,
    };
    c.0.is_empty().then_some(w)
}

/// A checksummed record that is not a valid write, or does not fit the log before it: the
/// file is damaged or not this shard's (see the module header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayError {
    /// Byte position of the record in the file.
    pub at: usize,
    pub reason: String,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft state record at byte {}: {}", self.at, self.reason)
    }
}

impl std::error::Error for ReplayError {}

/// What [`replay`] read back.
#[derive(Debug, Default)]
pub struct Replayed {
    pub logs: BTreeMap<GroupId, ReplicaLog>,
    /// Length of the valid prefix: the driver cuts the file here (dropping a torn tail).
    pub valid_len: usize,
}

/// Reads the records of `bytes` back into the replicas' logs, stopping at the first torn or
/// garbled record (see the module header). `on_write` sees every replayed write in order
/// (the simulator rebuilds its partition-log model from them).
pub fn replay_with(
    bytes: &[u8],
    mut on_write: impl FnMut(&Write),
) -> Result<Replayed, ReplayError> {
    let mut logs: BTreeMap<GroupId, ReplicaLog> = BTreeMap::new();
    let mut at = 0;
    loop {
        let mut c = Cursor(&bytes[at..]);
        let (Some(len), Some(crc)) = (c.u32(), c.u32()) else {
            break;
        };
        let Some(payload) = c.take(len as usize) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        let fail = |reason: String| ReplayError { at, reason };
        let w = decode_payload(payload).ok_or_else(|| fail("does not decode".into()))?;
        apply(&mut logs, &w).map_err(fail)?;
        on_write(&w);
        at += RECORD_HEADER_BYTES + len as usize;
    }
    for (group, log) in &logs {
        let commit = log.hard_state().commit;
        if commit > log.last_index() {
            return Err(ReplayError {
                at,
                reason: format!(
                    "group {group}: commit index {commit} past the log's last index {}",
                    log.last_index()
                ),
            });
        }
    }
    Ok(Replayed {
        logs,
        valid_len: at,
    })
}

/// [`replay_with`] without a callback.
pub fn replay(bytes: &[u8]) -> Result<Replayed, ReplayError> {
    replay_with(bytes, |_| {})
}

fn log_mut(
    logs: &mut BTreeMap<GroupId, ReplicaLog>,
    group: GroupId,
) -> Result<&mut ReplicaLog, String> {
    logs.get_mut(&group)
        .ok_or_else(|| format!("group {group} was never created"))
}

/// Applies one write to the logs, checking first that it fits (so `ReplicaLog`'s own
/// assertions never fire on a hostile file).
fn apply(logs: &mut BTreeMap<GroupId, ReplicaLog>, w: &Write) -> Result<(), String> {
    match w {
        Write::Create { group, voters } => {
            if logs.contains_key(group) {
                return Err(format!("group {group} created twice"));
            }
            logs.insert(*group, ReplicaLog::new(voters));
        }
        Write::Entries { group, entries } => {
            let log = log_mut(logs, *group)?;
            let Some(first) = entries.first() else {
                return Ok(());
            };
            // Nothing is evicted during replay, so the window is the whole log.
            if first.index < log.window_first() || first.index > log.last_index() + 1 {
                return Err(format!(
                    "group {group}: entries from {} outside the log {}..={}",
                    first.index,
                    log.window_first(),
                    log.last_index()
                ));
            }
            if entries
                .windows(2)
                .any(|p| p[0].index.checked_add(1) != Some(p[1].index))
            {
                return Err(format!("group {group}: entries are not consecutive"));
            }
            log.append(entries);
        }
        Write::LogStart {
            group,
            index,
            term,
            offset,
            reset,
        } => {
            let log = log_mut(logs, *group)?;
            if *reset {
                // Far beyond any real log, and keeps index arithmetic from overflowing.
                if *index >= 1 << 62 {
                    return Err(format!("group {group}: log start index {index}"));
                }
                log.restart_at(*index, *term, *offset);
            } else {
                if *index < log.first_index() || *index > log.last_index() {
                    return Err(format!(
                        "group {group}: log start after {index} outside the log {}..={}",
                        log.first_index(),
                        log.last_index()
                    ));
                }
                log.compact_before(index + 1);
                if log.start_offset() != *offset {
                    return Err(format!(
                        "group {group}: log start offset {offset}, the log says {}",
                        log.start_offset()
                    ));
                }
            }
        }
        Write::HardState { group, hard_state } => {
            log_mut(logs, *group)?.set_hard_state(hard_state.clone());
        }
        Write::Remove { group } => {
            if logs.remove(group).is_none() {
                return Err(format!("group {group} removed but never created"));
            }
        }
        Write::Conf {
            group,
            voters,
            learners,
        } => {
            let log = log_mut(logs, *group)?;
            log.set_conf(voters, learners)
                .map_err(|e| format!("group {group}: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::records_context;

    fn entry(index: u64, term: u64, data: &'static [u8]) -> Entry {
        Entry {
            index,
            term,
            data: Bytes::from_static(data),
            context: records_context(1),
            ..Default::default()
        }
    }

    fn sample() -> Vec<Write> {
        vec![
            Write::Create {
                group: 4,
                voters: vec![1, 2, 3],
            },
            Write::Entries {
                group: 4,
                entries: vec![entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")],
            },
            Write::HardState {
                group: 4,
                hard_state: HardState {
                    term: 1,
                    vote: 1,
                    commit: 2,
                    ..Default::default()
                },
            },
            Write::LogStart {
                group: 4,
                index: 1,
                term: 1,
                offset: 1,
                reset: false,
            },
        ]
    }

    /// A compacted log rewritten by `encode_log` replays to the same log: start, entries,
    /// offsets and hard state (the controller's WAL rewrite after a snapshot).
    #[test]
    fn a_compacted_log_rewrites_to_records_that_replay_to_it() {
        let mut b = Vec::new();
        for w in sample() {
            encode_record(&w, &mut b);
        }
        encode_record(
            &Write::Entries {
                group: 4,
                entries: vec![entry(4, 2, b"d"), entry(5, 2, b"e")],
            },
            &mut b,
        );
        let old = replay(&b).unwrap().logs.remove(&4).unwrap();
        let mut out = Vec::new();
        encode_log(4, &old, &mut out).unwrap();
        assert!(out.len() < b.len());
        let new = replay(&out).unwrap().logs.remove(&4).unwrap();
        assert_eq!(new.start(), old.start());
        assert_eq!(new.start(), (1, 1));
        assert_eq!(new.start_offset(), old.start_offset());
        assert_eq!(new.first_index(), 2);
        assert_eq!(new.last_index(), 5);
        for i in 2..=5 {
            assert_eq!(new.entry(i), old.entry(i));
            assert_eq!(new.span(i), old.span(i));
        }
        assert_eq!(new.hard_state(), old.hard_state());
        assert_eq!(new.voters(), old.voters());
        // A log never compacted has no log-start record.
        let mut fresh = ReplicaLog::new(&[1]);
        fresh.append(&[entry(1, 1, b"a")]);
        let mut out = Vec::new();
        encode_log(0, &fresh, &mut out).unwrap();
        let back = replay(&out).unwrap().logs.remove(&0).unwrap();
        assert_eq!((back.first_index(), back.last_index()), (1, 1));
    }

    #[test]
    fn records_round_trip() {
        let mut b = Vec::new();
        let writes = sample();
        for w in &writes {
            encode_record(w, &mut b);
        }
        let mut seen = Vec::new();
        let r = replay_with(&b, |w| seen.push(w.clone())).unwrap();
        assert_eq!(seen, writes);
        assert_eq!(r.valid_len, b.len());
        let log = &r.logs[&4];
        assert_eq!(log.first_index(), 2);
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.hard_state().commit, 2);
        assert_eq!(log.start_offset(), 1);
    }

    #[test]
    fn a_torn_tail_is_left_out() {
        let mut b = Vec::new();
        for w in &sample()[..3] {
            encode_record(w, &mut b);
        }
        let whole = b.len();
        encode_record(&sample()[3], &mut b);
        for cut in whole..b.len() {
            let r = replay(&b[..cut]).unwrap();
            assert_eq!(r.valid_len, whole);
            assert_eq!(r.logs[&4].first_index(), 1);
        }
        let mut garbled = b.clone();
        garbled[whole + 9] ^= 0x10;
        assert_eq!(replay(&garbled).unwrap().valid_len, whole);
    }

    #[test]
    fn a_removed_group_is_left_out_and_may_be_created_again() {
        let mut b = Vec::new();
        for w in &sample() {
            encode_record(w, &mut b);
        }
        let before_remove = b.len();
        encode_record(&Write::Remove { group: 4 }, &mut b);
        let r = replay(&b).unwrap();
        assert!(r.logs.is_empty(), "removed");
        assert_eq!(r.valid_len, b.len());
        // A torn removal leaves the group as it was.
        let r = replay(&b[..b.len() - 1]).unwrap();
        assert_eq!(r.valid_len, before_remove);
        assert_eq!(r.logs[&4].last_index(), 3);
        // Created again: a fresh log.
        encode_record(
            &Write::Create {
                group: 4,
                voters: vec![1, 2],
            },
            &mut b,
        );
        let r = replay(&b).unwrap();
        assert_eq!(r.logs[&4].last_index(), 0);
        assert_eq!(r.logs[&4].voters(), &[1u64, 2][..]);
        assert_eq!(r.logs[&4].hard_state().commit, 0);
        // Removing a group that is not there is damage, not a torn tail.
        let mut b = Vec::new();
        encode_record(&Write::Remove { group: 7 }, &mut b);
        assert!(replay(&b).is_err());
    }

    /// A configuration record replaces the voters of `Create` (and a later one the earlier);
    /// files without one replay as before; a configuration with a node twice, or of a group
    /// never created, is damage.
    #[test]
    fn a_configuration_record_replays_and_a_bad_one_is_refused() {
        let mut b = Vec::new();
        for w in &sample() {
            encode_record(w, &mut b);
        }
        let conf = |voters: Vec<u64>, learners: Vec<u64>| Write::Conf {
            group: 4,
            voters,
            learners,
        };
        encode_record(&conf(vec![1, 2, 3], vec![5]), &mut b);
        encode_record(&conf(vec![2, 3, 5], vec![]), &mut b);
        let mut seen = Vec::new();
        let r = replay_with(&b, |w| seen.push(w.clone())).unwrap();
        assert_eq!(seen.len(), sample().len() + 2);
        assert_eq!(r.logs[&4].voters(), &[2u64, 3, 5][..]);
        assert!(r.logs[&4].learners().is_empty());
        let r = replay(&b[..b.len() - 1]).unwrap();
        assert_eq!(
            (r.logs[&4].voters(), r.logs[&4].learners()),
            (&[1u64, 2, 3][..], &[5u64][..]),
            "a torn last configuration leaves the one before"
        );
        for bad in [conf(vec![1, 2], vec![2]), conf(vec![1, 1], vec![])] {
            let mut b2 = b.clone();
            encode_record(&bad, &mut b2);
            assert!(replay(&b2).is_err(), "{bad:?}");
        }
        let mut b2 = Vec::new();
        encode_record(&conf(vec![1], vec![]), &mut b2);
        assert!(replay(&b2).is_err(), "a group never created");
    }

    /// A checksummed record that does not fit the log is an error, never a panic.
    #[test]
    fn a_valid_record_that_does_not_fit_is_an_error() {
        let bad = [
            vec![Write::Entries {
                group: 9,
                entries: vec![entry(1, 1, b"a")],
            }],
            vec![
                sample()[0].clone(),
                Write::Entries {
                    group: 4,
                    entries: vec![entry(2, 1, b"a")],
                },
            ],
            vec![
                sample()[0].clone(),
                Write::Entries {
                    group: 4,
                    entries: vec![entry(1, 1, b"a"), entry(3, 1, b"a")],
                },
            ],
            vec![
                sample()[0].clone(),
                Write::LogStart {
                    group: 4,
                    index: 5,
                    term: 1,
                    offset: 5,
                    reset: false,
                },
            ],
            vec![
                sample()[0].clone(),
                Write::HardState {
                    group: 4,
                    hard_state: HardState {
                        commit: 3,
                        ..Default::default()
                    },
                },
            ],
            vec![sample()[0].clone(), sample()[0].clone()],
        ];
        for writes in bad {
            let mut b = Vec::new();
            for w in &writes {
                encode_record(w, &mut b);
            }
            assert!(replay(&b).is_err(), "{writes:?}");
        }
    }

    /// Hostile bytes, with and without a matching checksum: never a panic, never an
    /// allocation the input does not back (a count of 2^32-1 entries in a short record).
    #[test]
    fn hostile_bytes_never_panic() {
        let mut rng = crate::rng::Rng::new(7);
        let mut good = Vec::new();
        for w in &sample() {
            encode_record(w, &mut good);
        }
        for round in 0..20_000u64 {
            let mut payload = if round % 2 == 0 {
                good[RECORD_HEADER_BYTES..].to_vec()
            } else {
                Vec::new()
            };
            let extra = rng.below(64) as usize;
            for _ in 0..extra {
                payload.push(rng.below(256) as u8);
            }
            for _ in 0..rng.below(4) {
                if !payload.is_empty() {
                    let i = rng.below(payload.len() as u64) as usize;
                    payload[i] = rng.below(256) as u8;
                }
            }
            if round % 3 == 0 && payload.len() > 13 {
                payload[0] = ENTRIES;
                payload[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
            }
            let _ = decode_payload(&payload);
            let mut rec = Vec::new();
            put_len(&mut rec, payload.len());
            put_u32(&mut rec, crc32c::crc32c(&payload));
            rec.extend_from_slice(&payload);
            let mut file = good.clone();
            file.extend_from_slice(&rec);
            let _ = replay(&file);
            let _ = replay(&rec);
        }
    }
}
