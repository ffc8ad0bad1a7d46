//! A partition's leader-epoch history: which leader epoch (Raft term) wrote the log from
//! which offset on, as Kafka's `LeaderEpochFileCache`, and its `leader-epoch-checkpoint`
//! file. A follower answers and asks OffsetForLeaderEpoch from it to find where its log
//! diverges from the leader's.
//!
//! Invariants: entries are strictly increasing in both epoch and start offset, and every
//! entry's start offset is below the log end offset (the log cuts the history whenever it
//! truncates, and on open cuts entries past the recovered end). An entry is added when the
//! first batch of a newer epoch is appended (leader or follower); a batch of an older epoch
//! than the newest is refused by the follower path, so the history only grows at its end.
//! When the log start offset moves up, entries below it go (the first kept one starts at
//! the new log start), as in Kafka.
//!
//! File format (Kafka's, so its tools read it): text lines, version `0`, the entry count,
//! then one `epoch startOffset` line per entry. The log replaces the file atomically (temp
//! file, fsync, rename, directory fsync) before any data after entries it cut (a truncation,
//! a cut at open), in the write stage that seals a rolled segment, and at close; entries
//! added since start in the tail segment, and the log's open assigns them again from that
//! segment's batches (which it scans anyway), so a new epoch costs no file replacement on
//! the way to its first acknowledgement.

/// Kafka's `UNDEFINED_EPOCH`.
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's `UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;
/// Name of the checkpoint file in a partition directory (Kafka's).
pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// Version line of the checkpoint format.
const CHECKPOINT_VERSION: u32 = 0;
/// Entries a checkpoint may hold. Each one is a leader change that wrote to this partition;
/// the file is rewritten whole at each change, so the bound also bounds that cost. Kafka has
/// no limit (its history shrinks only with the log start offset, as this one's does); past
/// this many, the oldest entries are dropped (their epochs are then answered like epochs
/// before the first).
pub const EPOCH_ENTRIES_MAX: usize = 65_536;

/// (epoch, start offset) pairs in increasing order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochCache {
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// The newest epoch, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// Notes that a batch of `epoch` was appended at `start_offset`. Adds an entry when
    /// `epoch` is newer than every known one; returns whether the history changed. Negative
    /// epochs (batches written without a leader epoch) are not recorded, as in Kafka.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        if let Some(&(latest, latest_start)) = self.entries.last() {
            if epoch <= latest {
                return false;
            }
            assert!(
                start_offset > latest_start,
                "epoch {epoch} starts at {start_offset}, not after epoch {latest} at {latest_start}"
            );
        }
        if self.entries.len() == EPOCH_ENTRIES_MAX {
            self.entries.remove(0);
        }
        self.entries.push((epoch, start_offset));
        true
    }

    /// Drops every entry starting at or after `end_offset` (the log was truncated there, or
    /// recovered to end there); returns whether anything was dropped.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let keep = self.entries.partition_point(|&(_, s)| s < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log start offset moved up to `start` (retention, DeleteRecords): entries wholly
    /// below it go, and the one it falls in now starts at `start`, as Kafka's
    /// `truncateFromStart`. Returns whether anything changed.
    pub fn truncate_from_start(&mut self, start: i64) -> bool {
        let below = self.entries.partition_point(|&(_, s)| s < start);
        if below == 0 {
            return false;
        }
        let at_start = self.entries.get(below).is_some_and(|&(_, s)| s == start);
        if at_start {
            self.entries.drain(..below);
        } else {
            self.entries[below - 1].1 = start;
            self.entries.drain(..below - 1);
        }
        true
    }

    /// Kafka's OffsetForLeaderEpoch answer for `requested`, given the log end offset:
    /// - the newest epoch: (it, log end offset);
    /// - otherwise, if a newer epoch is known: (the largest known epoch ≤ `requested`, or
    ///   `requested` itself when it is older than every known epoch, and the start offset of
    ///   the first epoch newer than `requested`);
    /// - otherwise (undefined, newer than all known, or no history): ([`UNDEFINED_EPOCH`],
    ///   [`UNDEFINED_EPOCH_OFFSET`]).
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        let higher = self.entries.partition_point(|&(e, _)| e <= requested);
        let Some(&(_, higher_start)) = self.entries.get(higher) else {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        };
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            Some((floor_epoch, _)) => (floor_epoch, higher_start),
            None => (requested, higher_start),
        }
    }

    /// [`Self::end_offset_for`] on a log whose current leader epoch is `current`: when
    /// `current` is newer than every entry (begun, nothing written in it yet), the answer is
    /// the one the history would give with `current` starting at the log end, as Kafka's
    /// leader, which assigns its epoch's start offset when it takes over.
    pub fn end_offset_for_current(
        &self,
        requested: i32,
        current: i32,
        log_end_offset: i64,
    ) -> (i32, i64) {
        let latest = self.latest_epoch();
        if requested == UNDEFINED_EPOCH || latest >= Some(current) {
            return self.end_offset_for(requested, log_end_offset);
        }
        if requested == current {
            return (current, log_end_offset);
        }
        if requested > current {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        }
        match latest {
            // A known newer epoch than `requested` ends it.
            Some(l) if requested < l => self.end_offset_for(requested, log_end_offset),
            // `requested` is in [latest, current): the newest entry is the floor and
            // `current` the next epoch, starting at the log end.
            Some(l) => (l, log_end_offset),
            // No history: `requested` is older than every epoch, `current` the first.
            None => (requested, log_end_offset),
        }
    }

    /// The checkpoint file's text.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for (e, s) in &self.entries {
            out.push_str(&format!("{e} {s}\n"));
        }
        out.into_bytes()
    }

    /// Parses a checkpoint file; `None` when it is not one this version wrote (wrong
    /// version, count, ordering or syntax).
    pub fn decode(bytes: &[u8]) -> Option<LeaderEpochCache> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        if lines.next()?.trim().parse::<u32>().ok()? != CHECKPOINT_VERSION {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        if count > EPOCH_ENTRIES_MAX {
            return None;
        }
        let mut cache = LeaderEpochCache::default();
        for _ in 0..count {
            let mut parts = lines.next()?.split_whitespace();
            let epoch: i32 = parts.next()?.parse().ok()?;
            let start: i64 = parts.next()?.parse().ok()?;
            if parts.next().is_some() || epoch < 0 || start < 0 {
                return None;
            }
            if let Some(&(le, ls)) = cache.entries.last() {
                if epoch <= le || start <= ls {
                    return None;
                }
            }
            cache.entries.push((epoch, start));
        }
        if lines.any(|l| !l.trim().is_empty()) {
            return None;
        }
        Some(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        for &(e, s) in entries {
            assert!(c.assign(e, s));
        }
        c
    }

    #[test]
    fn assign_keeps_only_newer_epochs() {
        let mut c = cache(&[(0, 0), (2, 10)]);
        assert!(!c.assign(2, 15), "same epoch: no new entry");
        assert!(!c.assign(1, 20), "older epoch: ignored");
        assert!(!c.assign(-1, 20), "no epoch: ignored");
        assert!(c.assign(5, 20));
        assert_eq!(c.entries(), &[(0, 0), (2, 10), (5, 20)]);
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let c = cache(&[(1, 0), (3, 10), (6, 25)]);
        let leo = 40;
        assert_eq!(c.end_offset_for(6, leo), (6, 40), "latest: log end");
        assert_eq!(c.end_offset_for(3, leo), (3, 25), "next epoch's start");
        assert_eq!(c.end_offset_for(4, leo), (3, 25), "floor epoch, next start");
        assert_eq!(c.end_offset_for(5, leo), (3, 25));
        assert_eq!(c.end_offset_for(1, leo), (1, 10));
        assert_eq!(
            c.end_offset_for(0, leo),
            (0, 0),
            "older than all: first start"
        );
        assert_eq!(
            c.end_offset_for(7, leo),
            (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        );
        assert_eq!(
            c.end_offset_for(UNDEFINED_EPOCH, leo),
            (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        );
        assert_eq!(
            LeaderEpochCache::default().end_offset_for(0, 0),
            (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        );
    }

    #[test]
    fn a_begun_epoch_answers_as_if_it_started_at_the_log_end() {
        let c = cache(&[(1, 0), (3, 10)]);
        let leo = 40;
        // Current epoch already in the history: the plain answer.
        assert_eq!(c.end_offset_for_current(3, 3, leo), (3, 40));
        assert_eq!(c.end_offset_for_current(1, 3, leo), (1, 10));
        // Epoch 5 begun, nothing written in it.
        assert_eq!(c.end_offset_for_current(5, 5, leo), (5, 40));
        assert_eq!(
            c.end_offset_for_current(4, 5, leo),
            (3, 40),
            "floor, ends at LEO"
        );
        assert_eq!(c.end_offset_for_current(3, 5, leo), (3, 40));
        assert_eq!(c.end_offset_for_current(2, 5, leo), (1, 10));
        assert_eq!(c.end_offset_for_current(0, 5, leo), (0, 0));
        assert_eq!(
            c.end_offset_for_current(6, 5, leo),
            (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        );
        assert_eq!(
            c.end_offset_for_current(UNDEFINED_EPOCH, 5, leo),
            (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        );
        // A new, empty log at epoch 0.
        let empty = LeaderEpochCache::default();
        assert_eq!(empty.end_offset_for_current(0, 0, 0), (0, 0));
        assert_eq!(
            empty.end_offset_for_current(1, 0, 0),
            (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        );
        assert_eq!(empty.end_offset_for_current(0, 2, 7), (0, 7));
    }

    #[test]
    fn truncation_cuts_entries_at_and_after_the_offset() {
        let mut c = cache(&[(1, 0), (3, 10), (6, 25)]);
        assert!(!c.truncate_from_end(26));
        assert!(c.truncate_from_end(25));
        assert_eq!(c.entries(), &[(1, 0), (3, 10)]);
        assert!(c.truncate_from_end(3));
        assert_eq!(c.entries(), &[(1, 0)]);
        // The next epoch may then start anywhere after.
        assert!(c.assign(7, 3));
    }

    #[test]
    fn truncation_from_start_keeps_the_epoch_the_start_falls_in() {
        let mut c = cache(&[(1, 0), (3, 10), (6, 25)]);
        assert!(!c.truncate_from_start(0));
        assert!(c.truncate_from_start(12));
        assert_eq!(c.entries(), &[(3, 12), (6, 25)]);
        assert!(c.truncate_from_start(25));
        assert_eq!(c.entries(), &[(6, 25)]);
        assert!(c.truncate_from_start(40));
        assert_eq!(c.entries(), &[(6, 40)]);
        assert!(!c.truncate_from_start(40));
    }

    #[test]
    fn checkpoint_text_round_trips_and_rejects_junk() {
        let c = cache(&[(0, 0), (4, 150)]);
        assert_eq!(c.encode(), b"0\n2\n0 0\n4 150\n");
        assert_eq!(LeaderEpochCache::decode(&c.encode()), Some(c));
        assert_eq!(
            LeaderEpochCache::decode(b"0\n0\n"),
            Some(LeaderEpochCache::default())
        );
        for bad in [
            &b"1\n0\n"[..],
            b"0\n2\n0 0\n",
            b"0\n2\n3 0\n2 5\n",
            b"0\n1\n0 x\n",
            b"0\n1\n0 0 0\n",
            b"0\n1\n0 0\n9 9\n",
            b"",
        ] {
            assert_eq!(LeaderEpochCache::decode(bad), None, "{bad:?}");
        }
    }
}
