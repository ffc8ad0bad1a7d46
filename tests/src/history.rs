//! Jepsen-style history checker for Kafka workloads: pure functions over what producers and
//! readers recorded (no I/O, no clocks), so every verdict can be unit-tested on a crafted
//! history and replayed on a recorded one.
//!
//! A history has three kinds of events, all timed in milliseconds since the workload began
//! (one clock for every client of a run, so "before" means before in real time):
//!
//! - [`Write`]: one record a producer tried to write: its [`Value`] (producer id and that
//!   producer's sequence number, so the checker knows exactly who wrote what and in which
//!   order), the partition, the `acks` mode, and the outcome (acknowledged with an offset,
//!   failed, or never resolved).
//! - [`ReadPass`]: one reader's pass over one partition from some offset up to a target,
//!   with every (offset, value) it received and how far it is known to have covered the log.
//! - [`HwObservation`]: a high watermark a client was told (ListOffsets latest), with the
//!   interval during which it was asked.
//!
//! What [`check`] reports (each a [`Violation`] kind, each with a unit test below that makes
//! it fire and a clean history that does not):
//!
//! Producers are idempotent only with `acks=all` (the workload turns idempotence off for
//! weaker acks, as a client must), so `Moved`, `Duplicate`, `ValueAtTwoOffsets` and
//! `OrderBroken` judge `acks=all` writes only: without idempotence the client's retries may
//! write a record twice or after a later one.
//!
//! - `Lost`: an `acks=all` acknowledged record is not at its acknowledged offset in the final
//!   read of its partition (and is nowhere else in it), or is absent from it after an
//!   acknowledgement without an offset (acks=all always returns one). `acks=1`/`acks=0`
//!   losses are counted in [`Stats`] only: Kafka does not promise them across a leader change.
//! - `Moved`: an `acks=all` acknowledged record read at another offset than the one it was
//!   acknowledged at.
//! - `Duplicate`: one value twice in one read pass (the idempotent producer wrote it twice).
//! - `ValueAtTwoOffsets`: one value at different offsets in different passes.
//! - `OffsetTwoValues`: one offset with two values across reads and `acks=all`
//!   acknowledgements (`acks=1` acknowledgements are left out: a failover may legitimately
//!   reuse their offsets).
//! - `OrderBroken`: a producer's records in one partition at offsets that do not increase
//!   with its sequence numbers, in a read pass or in its acknowledgements.
//! - `Vanished`: a record a reader received was absent from a later pass (started after it
//!   was received) that covered its offset: the log ended below it while the high watermark
//!   the pass read up to was above it, or the offset was skipped.
//! - `HighWatermarkBehind`: a high watermark observation lower than something known to be
//!   below the high watermark before the observation began: a record read at offset `o`
//!   (a consumer only gets records below the high watermark, so HW > o then), an `acks=all`
//!   acknowledgement at `o` (committed, so HW > o then), or an earlier observation. It covers
//!   "no reader sees past the high watermark" and "the high watermark is monotonic" as far as
//!   a client can tell. A deposed leader that has not yet learnt of its successor could
//!   answer ListOffsets with an older high watermark; sluice's leaders confirm their
//!   leadership with a quorum before they answer (Raft's ReadIndex), so the fault runs keep
//!   this check on even where clients still reach such a node. A run against a broker
//!   without that can turn this kind off with [`CheckOptions::high_watermark`].
//! - `Unwritten`: a value read that no producer tried to write to that partition.
//! - `Garbage`: bytes read that are not a [`Value`] at all.
//! - `NoFinalRead`: a partition with acknowledged writes but no complete final read, so the
//!   loss check could not run (a test must not pass by failing to read).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

/// Milliseconds since the workload started (one clock for every client of a run).
pub type Ms = u64;

/// What a producer writes: its id and its own sequence number (0, 1, 2, ... over all the
/// partitions it writes to, in send order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value {
    pub producer: u32,
    pub seq: u64,
}

/// Prefix of every encoded value, so stray records are told apart from corrupted ones.
const VALUE_TAG: &str = "sluice-h:";

impl Value {
    /// The bytes written as the record value: `sluice-h:p<producer>:s<seq>`.
    pub fn encode(self) -> Vec<u8> {
        format!("{VALUE_TAG}p{}:s{}", self.producer, self.seq).into_bytes()
    }

    /// The inverse of [`Value::encode`]; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Value> {
        let s = std::str::from_utf8(bytes).ok()?.strip_prefix(VALUE_TAG)?;
        let (p, s) = s.split_once(':')?;
        let producer = p.strip_prefix('p')?.parse().ok()?;
        let seq = s.strip_prefix('s')?.parse().ok()?;
        let v = Value { producer, seq };
        // Reject non-canonical spellings (leading zeros, '+'), so decode ∘ encode is exact.
        (v.encode() == bytes).then_some(v)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}s{}", self.producer, self.seq)
    }
}

/// The producer's `acks` setting for a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    Zero,
    One,
    All,
}

/// How a write ended, as the client reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Delivery report with an offset (`None` for acks=0, which returns no offset).
    Acked(Option<i64>),
    /// Delivery report with an error. Not a promise that nothing was written (a timed-out
    /// request may have been), so the checker treats it as "maybe written".
    Failed(String),
    /// The client never reported (the run ended first): "maybe written" as well.
    Pending,
}

/// One record a producer tried to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub value: Value,
    pub partition: i32,
    pub acks: Acks,
    pub sent_at: Ms,
    /// When the outcome was reported (`None` while pending).
    pub done_at: Option<Ms>,
    pub outcome: Outcome,
}

impl Write {
    /// The acknowledged offset, if the broker gave one.
    pub fn acked_offset(&self) -> Option<i64> {
        match self.outcome {
            Outcome::Acked(o) => o,
            _ => None,
        }
    }
}

/// One record received by a reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecord {
    pub offset: i64,
    /// The raw value bytes (decoded by the checker, so garbage is reported, not hidden).
    pub value: Vec<u8>,
    /// When the client received it.
    pub at: Ms,
}

/// One reader's pass over one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPass {
    pub reader: u32,
    pub partition: i32,
    pub started_at: Ms,
    pub ended_at: Ms,
    /// The first offset asked for.
    pub from: i64,
    /// Every offset in `[from, covered_to)` was either received or is not a data record
    /// (control batches, which consumers skip): for a pass that reached its target this is
    /// the high watermark it read up to; for a pass cut short, one past the last offset
    /// received (or `from`).
    pub covered_to: i64,
    /// In the order received.
    pub records: Vec<ReadRecord>,
    /// Taken after every fault healed and every producer stopped, and complete: the log as
    /// it finally is. The loss check uses the last such pass of each partition.
    pub final_read: bool,
}

/// A high watermark a client was told, and the interval during which it asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HwObservation {
    pub partition: i32,
    pub started_at: Ms,
    pub ended_at: Ms,
    pub high_watermark: i64,
}

/// Everything a workload recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub writes: Vec<Write>,
    pub passes: Vec<ReadPass>,
    pub high_watermarks: Vec<HwObservation>,
}

/// Which checks to run beyond the always-on ones.
#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    /// Check `HighWatermarkBehind` (see the module docs for when a run may turn it off).
    pub high_watermark: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            high_watermark: true,
        }
    }
}

/// One broken promise. Partition/offset pairs are written `p@o`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    Lost {
        value: Value,
        partition: i32,
        /// `None`: acknowledged without an offset.
        acked_offset: Option<i64>,
        /// What the final read has at that offset instead (`None`: nothing).
        found: Option<Vec<u8>>,
        /// How far the final read covered the log.
        final_covered_to: i64,
    },
    Moved {
        value: Value,
        partition: i32,
        acked_offset: i64,
        read_offset: i64,
    },
    Duplicate {
        value: Value,
        partition: i32,
        offsets: (i64, i64),
        reader: u32,
        pass_started_at: Ms,
    },
    ValueAtTwoOffsets {
        value: Value,
        partition: i32,
        offsets: (i64, i64),
    },
    OffsetTwoValues {
        partition: i32,
        offset: i64,
        values: (Vec<u8>, Vec<u8>),
    },
    OrderBroken {
        producer: u32,
        partition: i32,
        /// (seq, offset) of the earlier-sent record and of the later-sent one, which is at a
        /// lower offset.
        earlier: (u64, i64),
        later: (u64, i64),
        /// "read by reader N" or "acknowledgements".
        source: String,
    },
    Vanished {
        partition: i32,
        offset: i64,
        value: Vec<u8>,
        seen_at: Ms,
        reader: u32,
        pass_started_at: Ms,
        pass_covered_to: i64,
    },
    HighWatermarkBehind {
        partition: i32,
        observed: i64,
        observed_at: Ms,
        /// The bound it violates and where it came from.
        at_least: i64,
        because: String,
    },
    Unwritten {
        partition: i32,
        offset: i64,
        value: Value,
    },
    Garbage {
        partition: i32,
        offset: i64,
        bytes: Vec<u8>,
    },
    NoFinalRead {
        partition: i32,
        acked_writes: usize,
    },
}

impl Violation {
    /// The kind's name, for tests and summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::Lost { .. } => "Lost",
            Violation::Moved { .. } => "Moved",
            Violation::Duplicate { .. } => "Duplicate",
            Violation::ValueAtTwoOffsets { .. } => "ValueAtTwoOffsets",
            Violation::OffsetTwoValues { .. } => "OffsetTwoValues",
            Violation::OrderBroken { .. } => "OrderBroken",
            Violation::Vanished { .. } => "Vanished",
            Violation::HighWatermarkBehind { .. } => "HighWatermarkBehind",
            Violation::Unwritten { .. } => "Unwritten",
            Violation::Garbage { .. } => "Garbage",
            Violation::NoFinalRead { .. } => "NoFinalRead",
        }
    }
}

/// Short rendering of raw bytes: the value if it decodes, else a lossy prefix.
fn show(bytes: &[u8]) -> String {
    match Value::decode(bytes) {
        Some(v) => v.to_string(),
        None => {
            let s = String::from_utf8_lossy(&bytes[..bytes.len().min(32)]);
            format!("{}B{s:?}", bytes.len())
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Lost {
                value,
                partition,
                acked_offset,
                found,
                final_covered_to,
            } => match acked_offset {
                Some(o) => write!(
                    f,
                    "Lost: {value} acked (acks=all) at {partition}@{o}; final read \
                     (covering up to {final_covered_to}) has {} there",
                    found.as_deref().map_or("nothing".into(), show)
                ),
                None => write!(
                    f,
                    "Lost: {value} acked (acks=all) without an offset in partition \
                     {partition}; the final read (covering up to {final_covered_to}) lacks it"
                ),
            },
            Violation::Moved {
                value,
                partition,
                acked_offset,
                read_offset,
            } => write!(
                f,
                "Moved: {value} acked at {partition}@{acked_offset} but read at \
                 {partition}@{read_offset}"
            ),
            Violation::Duplicate {
                value,
                partition,
                offsets,
                reader,
                pass_started_at,
            } => write!(
                f,
                "Duplicate: {value} at {partition}@{} and {partition}@{} in one pass of \
                 reader {reader} (started at {pass_started_at} ms)",
                offsets.0, offsets.1
            ),
            Violation::ValueAtTwoOffsets {
                value,
                partition,
                offsets,
            } => write!(
                f,
                "ValueAtTwoOffsets: {value} read at {partition}@{} and at {partition}@{}",
                offsets.0, offsets.1
            ),
            Violation::OffsetTwoValues {
                partition,
                offset,
                values,
            } => write!(
                f,
                "OffsetTwoValues: {partition}@{offset} holds {} and {}",
                show(&values.0),
                show(&values.1)
            ),
            Violation::OrderBroken {
                producer,
                partition,
                earlier,
                later,
                source,
            } => write!(
                f,
                "OrderBroken: producer {producer} in partition {partition} ({source}): seq {} \
                 at offset {} but the later seq {} at offset {}",
                earlier.0, earlier.1, later.0, later.1
            ),
            Violation::Vanished {
                partition,
                offset,
                value,
                seen_at,
                reader,
                pass_started_at,
                pass_covered_to,
            } => write!(
                f,
                "Vanished: {} read at {partition}@{offset} at {seen_at} ms is absent from \
                 reader {reader}'s pass started at {pass_started_at} ms that covered up to \
                 {pass_covered_to}",
                show(value)
            ),
            Violation::HighWatermarkBehind {
                partition,
                observed,
                observed_at,
                at_least,
                because,
            } => write!(
                f,
                "HighWatermarkBehind: partition {partition} high watermark {observed} asked at \
                 {observed_at} ms, but it was already at least {at_least} ({because})"
            ),
            Violation::Unwritten {
                partition,
                offset,
                value,
            } => write!(
                f,
                "Unwritten: {value} read at {partition}@{offset} was never sent to partition \
                 {partition}"
            ),
            Violation::Garbage {
                partition,
                offset,
                bytes,
            } => write!(
                f,
                "Garbage: {partition}@{offset} holds {} (not a workload value)",
                show(bytes)
            ),
            Violation::NoFinalRead {
                partition,
                acked_writes,
            } => write!(
                f,
                "NoFinalRead: partition {partition} has {acked_writes} acknowledged writes but \
                 no complete final read"
            ),
        }
    }
}

/// Counts that describe a run (for the test's log, never for asserting timing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub writes: usize,
    pub acked: usize,
    pub failed: usize,
    pub pending: usize,
    /// Acknowledged `acks=1`/`acks=0` writes absent from the final read (allowed by Kafka
    /// across a failover, so not violations).
    pub lost_weak_acks: usize,
    /// Unacknowledged (failed or pending) writes found in the final read.
    pub unacked_present: usize,
    pub passes: usize,
    pub records_read: usize,
    pub high_watermarks: usize,
}

/// The checker's verdict.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub stats: Stats,
}

/// How many violations of each kind [`Report`]'s summary prints.
const SHOW_PER_KIND: usize = 5;

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// The kinds present, each once, sorted.
    pub fn kinds(&self) -> BTreeSet<&'static str> {
        self.violations.iter().map(Violation::kind).collect()
    }

    pub fn count(&self, kind: &str) -> usize {
        self.violations.iter().filter(|v| v.kind() == kind).count()
    }

    /// Panics with the summary unless the history is clean.
    pub fn assert_clean(&self, what: &str) {
        assert!(self.is_clean(), "{what}: history check failed\n{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:?}", self.stats)?;
        if self.violations.is_empty() {
            return writeln!(f, "no violations");
        }
        for kind in self.kinds() {
            let of_kind: Vec<_> = self
                .violations
                .iter()
                .filter(|v| v.kind() == kind)
                .collect();
            writeln!(f, "{kind}: {}", of_kind.len())?;
            for v in of_kind.iter().take(SHOW_PER_KIND) {
                writeln!(f, "  {v}")?;
            }
        }
        Ok(())
    }
}

/// Runs every check over `h`; see the module docs for what each finds.
pub fn check(h: &History, opts: CheckOptions) -> Report {
    let mut r = Report::default();
    let writes: HashMap<Value, &Write> = h.writes.iter().map(|w| (w.value, w)).collect();
    r.stats = Stats {
        writes: h.writes.len(),
        acked: count(h, |w| matches!(w.outcome, Outcome::Acked(_))),
        failed: count(h, |w| matches!(w.outcome, Outcome::Failed(_))),
        pending: count(h, |w| w.outcome == Outcome::Pending),
        passes: h.passes.len(),
        records_read: h.passes.iter().map(|p| p.records.len()).sum(),
        high_watermarks: h.high_watermarks.len(),
        ..Stats::default()
    };
    check_reads(h, &writes, &mut r);
    check_offsets(h, &mut r);
    check_order(h, &writes, &mut r);
    check_final(h, &mut r);
    check_vanished(h, &mut r);
    if opts.high_watermark {
        check_high_watermark(h, &mut r);
    }
    r
}

fn count(h: &History, f: impl Fn(&Write) -> bool) -> usize {
    h.writes.iter().filter(|w| f(w)).count()
}

/// Garbage, Unwritten, Duplicate, ValueAtTwoOffsets and Moved: where each value was read.
fn check_reads(h: &History, writes: &HashMap<Value, &Write>, r: &mut Report) {
    // value -> first (partition, offset) it was read at.
    let mut first_at: HashMap<Value, (i32, i64)> = HashMap::new();
    // (value, offset) pairs already reported, so one misplaced record read by many passes
    // is one violation.
    let mut reported: BTreeSet<(Value, i64, i64)> = BTreeSet::new();
    let mut garbage: BTreeSet<(i32, i64)> = BTreeSet::new();
    for pass in &h.passes {
        let mut in_pass: HashMap<Value, i64> = HashMap::new();
        for rec in &pass.records {
            let p = pass.partition;
            let Some(v) = Value::decode(&rec.value) else {
                if garbage.insert((p, rec.offset)) {
                    r.violations.push(Violation::Garbage {
                        partition: p,
                        offset: rec.offset,
                        bytes: rec.value.clone(),
                    });
                }
                continue;
            };
            // Only idempotent (acks=all) writes promise one copy at their acknowledged offset.
            let idempotent = match writes.get(&v) {
                Some(w) if w.partition == p => {
                    let idempotent = w.acks == Acks::All;
                    if let Some(acked) = w.acked_offset().filter(|_| idempotent) {
                        if acked != rec.offset && reported.insert((v, acked, rec.offset)) {
                            r.violations.push(Violation::Moved {
                                value: v,
                                partition: p,
                                acked_offset: acked,
                                read_offset: rec.offset,
                            });
                        }
                    }
                    idempotent
                }
                _ => {
                    if reported.insert((v, -1, rec.offset)) {
                        r.violations.push(Violation::Unwritten {
                            partition: p,
                            offset: rec.offset,
                            value: v,
                        });
                    }
                    continue;
                }
            };
            if let Some(&o) = in_pass.get(&v) {
                if o != rec.offset && idempotent {
                    r.violations.push(Violation::Duplicate {
                        value: v,
                        partition: p,
                        offsets: (o, rec.offset),
                        reader: pass.reader,
                        pass_started_at: pass.started_at,
                    });
                }
                continue;
            }
            in_pass.insert(v, rec.offset);
            match first_at.get(&v) {
                None => {
                    first_at.insert(v, (p, rec.offset));
                }
                Some(&(_, o)) if o != rec.offset && idempotent => {
                    let key = (v, o.min(rec.offset), o.max(rec.offset));
                    if reported.insert(key) {
                        r.violations.push(Violation::ValueAtTwoOffsets {
                            value: v,
                            partition: p,
                            offsets: (o, rec.offset),
                        });
                    }
                }
                Some(_) => {}
            }
        }
    }
}

/// OffsetTwoValues: every read and every acks=all acknowledgement names the value at an
/// offset; they must agree.
fn check_offsets(h: &History, r: &mut Report) {
    let mut at: HashMap<(i32, i64), &[u8]> = HashMap::new();
    let mut reported: BTreeSet<(i32, i64)> = BTreeSet::new();
    let acked: Vec<(i32, i64, Vec<u8>)> = h
        .writes
        .iter()
        .filter(|w| w.acks == Acks::All)
        .filter_map(|w| Some((w.partition, w.acked_offset()?, w.value.encode())))
        .collect();
    let reads = h.passes.iter().flat_map(|pass| {
        pass.records
            .iter()
            .map(move |rec| (pass.partition, rec.offset, &rec.value[..]))
    });
    let all = acked.iter().map(|(p, o, v)| (*p, *o, &v[..])).chain(reads);
    for (p, o, v) in all {
        match at.get(&(p, o)) {
            None => {
                at.insert((p, o), v);
            }
            Some(&first) if first != v => {
                if reported.insert((p, o)) {
                    r.violations.push(Violation::OffsetTwoValues {
                        partition: p,
                        offset: o,
                        values: (first.to_vec(), v.to_vec()),
                    });
                }
            }
            Some(_) => {}
        }
    }
}

/// OrderBroken: within each read pass, and within the acknowledgements, an idempotent
/// (acks=all) producer's offsets in a partition increase with its sequence numbers.
fn check_order(h: &History, writes: &HashMap<Value, &Write>, r: &mut Report) {
    let mut reported: BTreeSet<(u32, i32, u64, u64)> = BTreeSet::new();
    let mut report = |r: &mut Report, seqs: &[(u64, i64)], producer, partition, source: &str| {
        // Sorted by offset: every seq must exceed the previous one.
        for pair in seqs.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.0 < a.0 && reported.insert((producer, partition, b.0, a.0)) {
                r.violations.push(Violation::OrderBroken {
                    producer,
                    partition,
                    earlier: b,
                    later: a,
                    source: source.to_string(),
                });
            }
        }
    };
    for pass in &h.passes {
        let mut by_producer: BTreeMap<u32, Vec<(u64, i64)>> = BTreeMap::new();
        for rec in &pass.records {
            let value = Value::decode(&rec.value);
            let idempotent = |v: &Value| writes.get(v).is_some_and(|w| w.acks == Acks::All);
            if let Some(v) = value.filter(idempotent) {
                by_producer
                    .entry(v.producer)
                    .or_default()
                    .push((v.seq, rec.offset));
            }
        }
        let source = format!("read by reader {}", pass.reader);
        for (producer, mut seqs) in by_producer {
            seqs.sort_by_key(|&(s, o)| (o, s));
            report(r, &seqs, producer, pass.partition, &source);
        }
    }
    let mut acked: BTreeMap<(u32, i32), Vec<(u64, i64)>> = BTreeMap::new();
    for w in &h.writes {
        if let (Some(o), Acks::All) = (w.acked_offset(), w.acks) {
            acked
                .entry((w.value.producer, w.partition))
                .or_default()
                .push((w.value.seq, o));
        }
    }
    for ((producer, partition), mut seqs) in acked {
        seqs.sort_by_key(|&(s, o)| (o, s));
        report(r, &seqs, producer, partition, "acknowledgements");
    }
}

/// A final pass indexed: value by offset, and every value it holds.
type FinalIndex<'a> = (HashMap<i64, &'a [u8]>, HashSet<&'a [u8]>);

/// Lost and NoFinalRead, plus the loss statistics: the last final pass of each partition
/// against the acknowledgements.
fn check_final(h: &History, r: &mut Report) {
    let mut finals: BTreeMap<i32, &ReadPass> = BTreeMap::new();
    for pass in h.passes.iter().filter(|p| p.final_read) {
        let later = finals
            .get(&pass.partition)
            .is_none_or(|f| pass.started_at >= f.started_at);
        if later {
            finals.insert(pass.partition, pass);
        }
    }
    let mut no_final: BTreeMap<i32, usize> = BTreeMap::new();
    let final_maps: BTreeMap<i32, FinalIndex> = finals
        .iter()
        .map(|(&p, f)| {
            let by_offset = f.records.iter().map(|x| (x.offset, &x.value[..])).collect();
            let values = f.records.iter().map(|x| &x.value[..]).collect();
            (p, (by_offset, values))
        })
        .collect();
    for w in &h.writes {
        let acked = matches!(w.outcome, Outcome::Acked(_));
        let Some((by_offset, values)) = final_maps.get(&w.partition) else {
            if acked {
                *no_final.entry(w.partition).or_default() += 1;
            }
            continue;
        };
        let encoded = w.value.encode();
        let present = values.contains(&encoded[..]);
        if !acked {
            r.stats.unacked_present += usize::from(present);
            continue;
        }
        if present {
            // At the right offset, or reported as Moved by check_reads.
            continue;
        }
        if w.acks != Acks::All {
            r.stats.lost_weak_acks += 1;
            continue;
        }
        let o = w.acked_offset();
        r.violations.push(Violation::Lost {
            value: w.value,
            partition: w.partition,
            acked_offset: o,
            found: o.and_then(|o| by_offset.get(&o)).map(|v| v.to_vec()),
            final_covered_to: finals[&w.partition].covered_to,
        });
    }
    for (partition, acked_writes) in no_final {
        r.violations.push(Violation::NoFinalRead {
            partition,
            acked_writes,
        });
    }
}

/// Vanished: per partition, the earliest time each offset was received, against every
/// pass that started after that and covered the offset.
fn check_vanished(h: &History, r: &mut Report) {
    // partition -> offset -> (earliest receive time, value, reader).
    let mut seen: BTreeMap<i32, BTreeMap<i64, (Ms, &[u8])>> = BTreeMap::new();
    for pass in &h.passes {
        let offsets = seen.entry(pass.partition).or_default();
        for rec in &pass.records {
            let e = offsets.entry(rec.offset).or_insert((rec.at, &rec.value));
            if rec.at < e.0 {
                *e = (rec.at, &rec.value);
            }
        }
    }
    let mut reported: BTreeSet<(i32, i64)> = BTreeSet::new();
    for pass in &h.passes {
        let Some(offsets) = seen.get(&pass.partition) else {
            continue;
        };
        if pass.covered_to <= pass.from {
            continue;
        }
        let got: BTreeSet<i64> = pass.records.iter().map(|x| x.offset).collect();
        for (&o, &(at, value)) in offsets.range(pass.from..pass.covered_to) {
            if at < pass.started_at && !got.contains(&o) && reported.insert((pass.partition, o)) {
                r.violations.push(Violation::Vanished {
                    partition: pass.partition,
                    offset: o,
                    value: value.to_vec(),
                    seen_at: at,
                    reader: pass.reader,
                    pass_started_at: pass.started_at,
                    pass_covered_to: pass.covered_to,
                });
            }
        }
    }
}

/// HighWatermarkBehind: each observation against the largest lower bound established
/// before it began (records read, acks=all acknowledgements, earlier observations).
fn check_high_watermark(h: &History, r: &mut Report) {
    // Lower bounds per partition: (time it was known by, HW at least, where from).
    let mut bounds: BTreeMap<i32, Vec<(Ms, i64, String)>> = BTreeMap::new();
    for pass in &h.passes {
        for rec in &pass.records {
            bounds.entry(pass.partition).or_default().push((
                rec.at,
                rec.offset + 1,
                format!(
                    "reader {} received offset {} at {} ms",
                    pass.reader, rec.offset, rec.at
                ),
            ));
        }
    }
    for w in &h.writes {
        if let (Acks::All, Some(o), Some(done)) = (w.acks, w.acked_offset(), w.done_at) {
            bounds.entry(w.partition).or_default().push((
                done,
                o + 1,
                format!(
                    "{} acknowledged (acks=all) at offset {o} at {done} ms",
                    w.value
                ),
            ));
        }
    }
    for obs in &h.high_watermarks {
        bounds.entry(obs.partition).or_default().push((
            obs.ended_at,
            obs.high_watermark,
            format!(
                "high watermark {} observed by {} ms",
                obs.high_watermark, obs.ended_at
            ),
        ));
    }
    let mut observations: Vec<&HwObservation> = h.high_watermarks.iter().collect();
    observations.sort_by_key(|o| (o.partition, o.started_at));
    for (partition, list) in bounds.iter_mut() {
        list.sort_by_key(|b| b.0);
        // Sweep: observations by start time, bounds by the time they were known; keep the
        // largest bound known strictly before the observation began.
        let mut i = 0;
        let mut best: Option<usize> = None;
        for obs in observations.iter().filter(|o| o.partition == *partition) {
            while i < list.len() && list[i].0 < obs.started_at {
                if best.is_none_or(|b| list[i].1 > list[b].1) {
                    best = Some(i);
                }
                i += 1;
            }
            if let Some(b) = best {
                if obs.high_watermark < list[b].1 {
                    r.violations.push(Violation::HighWatermarkBehind {
                        partition: *partition,
                        observed: obs.high_watermark,
                        observed_at: obs.started_at,
                        at_least: list[b].1,
                        because: list[b].2.clone(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(producer: u32, seq: u64) -> Value {
        Value { producer, seq }
    }

    fn acked(value: Value, partition: i32, offset: i64, at: Ms) -> Write {
        Write {
            value,
            partition,
            acks: Acks::All,
            sent_at: at.saturating_sub(1),
            done_at: Some(at),
            outcome: Outcome::Acked(Some(offset)),
        }
    }

    /// A complete pass over `partition` from 0 that received `records` (offset, value) at
    /// `started_at`, covering up to one past the last offset.
    fn pass(
        partition: i32,
        started_at: Ms,
        records: &[(i64, Value)],
        final_read: bool,
    ) -> ReadPass {
        ReadPass {
            reader: 0,
            partition,
            started_at,
            ended_at: started_at + 1,
            from: 0,
            covered_to: records.last().map_or(0, |(o, _)| o + 1),
            records: records
                .iter()
                .map(|&(offset, v)| ReadRecord {
                    offset,
                    value: v.encode(),
                    at: started_at,
                })
                .collect(),
            final_read,
        }
    }

    /// Producer 1 writes seq 0..3 to partition 0 at offsets 0..3, producer 2 seq 0..2 to
    /// partition 0 at offsets 3..5 and seq 2 to partition 1 at 0; a mid-run pass, a
    /// watermark, and a final pass that agree.
    fn clean() -> History {
        let p0 = [
            (0, v(1, 0)),
            (1, v(1, 1)),
            (2, v(1, 2)),
            (3, v(2, 0)),
            (4, v(2, 1)),
        ];
        History {
            writes: vec![
                acked(v(1, 0), 0, 0, 10),
                acked(v(1, 1), 0, 1, 11),
                acked(v(1, 2), 0, 2, 12),
                acked(v(2, 0), 0, 3, 13),
                acked(v(2, 1), 0, 4, 14),
                acked(v(2, 2), 1, 0, 15),
                // Failed but written all the same: allowed.
                Write {
                    value: v(2, 3),
                    partition: 1,
                    acks: Acks::All,
                    sent_at: 16,
                    done_at: Some(30),
                    outcome: Outcome::Failed("timed out".into()),
                },
                Write {
                    value: v(2, 4),
                    partition: 1,
                    acks: Acks::All,
                    sent_at: 17,
                    done_at: None,
                    outcome: Outcome::Pending,
                },
            ],
            passes: vec![
                pass(0, 13, &p0[..3], false),
                pass(0, 100, &p0, true),
                pass(1, 100, &[(0, v(2, 2)), (1, v(2, 3))], true),
            ],
            high_watermarks: vec![HwObservation {
                partition: 0,
                started_at: 20,
                ended_at: 21,
                high_watermark: 5,
            }],
        }
    }

    fn kinds(h: &History) -> Vec<&'static str> {
        check(h, CheckOptions::default())
            .kinds()
            .into_iter()
            .collect()
    }

    #[test]
    fn value_encoding_round_trips_and_rejects_others() {
        let x = v(7, 123_456_789_012);
        assert_eq!(Value::decode(&x.encode()), Some(x));
        for bad in [
            &b"sluice-h:p07:s1"[..],
            b"sluice-h:p7:s+1",
            b"sluice-h:p7",
            b"p7:s1",
            b"",
            &[0xff, 0xfe],
        ] {
            assert_eq!(Value::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let r = check(&clean(), CheckOptions::default());
        r.assert_clean("clean history");
        assert_eq!(r.stats.acked, 6);
        assert_eq!(r.stats.unacked_present, 1);
        assert_eq!(r.stats.lost_weak_acks, 0);
    }

    #[test]
    fn lost_fires_when_an_acked_record_is_missing_from_the_final_read() {
        let mut h = clean();
        // The final read of partition 0 lacks offset 2 (the log has a hole there).
        h.passes[1].records.remove(2);
        let r = check(&h, CheckOptions::default());
        assert_eq!(r.count("Lost"), 1, "{r}");
        // The mid-run pass saw it: it vanished too.
        assert_eq!(r.kinds(), ["Lost", "Vanished"].into(), "{r}");
        // A final read that ends below the acknowledged offset (log truncated).
        let mut h = clean();
        h.passes[1].records.truncate(3);
        h.passes[1].covered_to = 3;
        h.high_watermarks.clear();
        assert_eq!(kinds(&h), ["Lost"]);
    }

    #[test]
    fn weak_acks_losses_are_counted_not_violations() {
        let mut h = clean();
        h.writes[4].acks = Acks::One;
        h.passes[1].records.truncate(4);
        h.passes[1].covered_to = 4;
        h.high_watermarks.clear();
        let r = check(&h, CheckOptions::default());
        r.assert_clean("acks=1 loss");
        assert_eq!(r.stats.lost_weak_acks, 1);
    }

    #[test]
    fn an_acks_all_acknowledgement_without_an_offset_is_lost_when_absent() {
        let mut h = clean();
        h.writes[4].outcome = Outcome::Acked(None);
        h.passes[1].records.truncate(4);
        h.passes[1].covered_to = 4;
        h.high_watermarks.clear();
        let r = check(&h, CheckOptions::default());
        assert!(
            r.violations.iter().any(|x| matches!(x,
                Violation::Lost { value, acked_offset: None, .. } if *value == v(2, 1))),
            "{r}"
        );
        assert_eq!(r.kinds(), ["Lost"].into(), "{r}");
        assert_eq!(r.stats.lost_weak_acks, 0);
        // Present in the final read: nothing to report.
        let mut h = clean();
        h.writes[4].outcome = Outcome::Acked(None);
        check(&h, CheckOptions::default()).assert_clean("acked without offset, present");
    }

    /// Producer 3 writes seq 0..3 to partition 2 with `acks`; its retries wrote seq 0 twice
    /// and seq 2 before seq 1, and seq 1 was acknowledged at an offset where the final read
    /// has another copy.
    fn retried_without_idempotence(acks: Acks) -> History {
        let w = |seq, offset| Write {
            acks,
            ..acked(v(3, seq), 2, offset, 10 + seq)
        };
        History {
            writes: vec![w(0, 0), w(1, 2), w(2, 1)],
            passes: vec![
                pass(2, 50, &[(0, v(3, 0)), (1, v(3, 2)), (2, v(3, 1))], false),
                ReadPass {
                    from: 1,
                    ..pass(2, 60, &[(1, v(3, 2)), (2, v(3, 1)), (3, v(3, 0))], false)
                },
                pass(
                    2,
                    100,
                    &[(0, v(3, 0)), (1, v(3, 2)), (2, v(3, 1)), (3, v(3, 0))],
                    true,
                ),
            ],
            high_watermarks: Vec::new(),
        }
    }

    #[test]
    fn weak_acks_producers_may_duplicate_reorder_and_move() {
        // Without idempotence (acks=1) all of it is allowed.
        let mut h = retried_without_idempotence(Acks::One);
        check(&h, CheckOptions::default()).assert_clean("acks=1 retries");
        // acks=1 acknowledged at 1, read at 2: not Moved either.
        h.writes[1].outcome = Outcome::Acked(Some(1));
        h.writes[2].outcome = Outcome::Acked(Some(2));
        check(&h, CheckOptions::default()).assert_clean("acks=1 moved");
        // The same from an idempotent (acks=all) producer breaks its promises.
        let mut h = retried_without_idempotence(Acks::All);
        h.writes[1].outcome = Outcome::Acked(Some(1));
        h.writes[2].outcome = Outcome::Acked(Some(2));
        let r = check(&h, CheckOptions::default());
        for kind in ["Duplicate", "OrderBroken", "Moved"] {
            assert!(r.kinds().contains(kind), "{kind}: {r}");
        }
    }

    #[test]
    fn moved_fires_when_an_acked_record_is_read_elsewhere() {
        let mut h = clean();
        // p1s2 acked at 2 but read at 3; p2s0 (acked at 3) read at 2: both moved, and each
        // offset now has two values (read vs acknowledgement).
        for p in [0, 1] {
            let recs = &mut h.passes[p].records;
            if recs.len() > 3 {
                recs.swap(2, 3);
                recs[2].offset = 2;
                recs[3].offset = 3;
            }
        }
        let r = check(&h, CheckOptions::default());
        assert_eq!(r.count("Moved"), 2, "{r}");
        assert!(r.kinds().contains("OffsetTwoValues"), "{r}");
    }

    #[test]
    fn duplicate_fires_on_one_value_twice_in_a_pass() {
        let mut h = clean();
        // The final read of partition 1 has p2s3 (unacknowledged) twice.
        h.passes[2].records.push(ReadRecord {
            offset: 2,
            value: v(2, 3).encode(),
            at: 100,
        });
        h.passes[2].covered_to = 3;
        assert_eq!(kinds(&h), ["Duplicate"]);
    }

    #[test]
    fn value_at_two_offsets_fires_across_passes() {
        let mut h = clean();
        // An unacknowledged value read at 1 in one pass and at 2 in another.
        let mut early = pass(1, 50, &[(0, v(2, 2)), (1, v(2, 3))], false);
        early.ended_at = 51;
        h.passes.insert(0, early);
        let last = h.passes.len() - 1;
        h.passes[last].records[1].offset = 2;
        h.passes[last].covered_to = 3;
        let r = check(&h, CheckOptions::default());
        assert_eq!(r.count("ValueAtTwoOffsets"), 1, "{r}");
    }

    #[test]
    fn offset_two_values_fires_across_reads() {
        let mut h = clean();
        // Another pass of partition 1 sees p2s4 at offset 1, where the final read has p2s3.
        h.passes
            .push(pass(1, 40, &[(0, v(2, 2)), (1, v(2, 4))], false));
        let r = check(&h, CheckOptions::default());
        assert_eq!(r.count("OffsetTwoValues"), 1, "{r}");
    }

    #[test]
    fn order_broken_fires_in_reads_and_in_acks() {
        let mut h = clean();
        // Producer 1's seq 1 and 2 swapped in the final read (values swapped at offsets 1, 2).
        let recs = &mut h.passes[1].records;
        let (a, b) = (recs[1].value.clone(), recs[2].value.clone());
        recs[1].value = b;
        recs[2].value = a;
        let r = check(&h, CheckOptions::default());
        assert!(
            r.violations.iter().any(|x| matches!(x,
                Violation::OrderBroken { source, .. } if source.starts_with("read"))),
            "{r}"
        );
        // The same swap in the acknowledgements only.
        let mut h = clean();
        h.writes[1].outcome = Outcome::Acked(Some(2));
        h.writes[2].outcome = Outcome::Acked(Some(1));
        let r = check(&h, CheckOptions::default());
        assert!(
            r.violations.iter().any(|x| matches!(x,
                Violation::OrderBroken { source, .. } if source == "acknowledgements")),
            "{r}"
        );
    }

    #[test]
    fn vanished_fires_when_a_later_pass_skips_a_record_seen_before() {
        let mut h = clean();
        // A pass after the mid-run one that covered up to 3 but has nothing at offset 1.
        let mut later = pass(0, 50, &[(0, v(1, 0)), (2, v(1, 2))], false);
        later.covered_to = 3;
        h.passes.insert(1, later);
        assert_eq!(kinds(&h), ["Vanished"]);
        // The same pass cut short before offset 1 (covered only offset 0) is no violation.
        let mut h = clean();
        let mut short = pass(0, 50, &[(0, v(1, 0))], false);
        short.covered_to = 1;
        h.passes.insert(1, short);
        assert!(kinds(&h).is_empty());
        // Nor is a pass that started before the record was first received.
        let mut h = clean();
        let mut early = pass(0, 5, &[(0, v(1, 0)), (2, v(1, 2))], false);
        early.covered_to = 3;
        for rec in &mut early.records {
            rec.at = 5;
        }
        h.passes.insert(0, early);
        h.high_watermarks.clear();
        assert!(kinds(&h).is_empty(), "{:?}", kinds(&h));
    }

    #[test]
    fn high_watermark_behind_fires_on_regressions_and_reads_past_it() {
        // Below an acks=all acknowledgement made before it was asked.
        let mut h = clean();
        h.high_watermarks[0].high_watermark = 4;
        assert_eq!(kinds(&h), ["HighWatermarkBehind"]);
        // Below an earlier observation.
        let mut h = clean();
        h.writes.retain(|w| w.partition != 0);
        h.passes.retain(|p| p.partition != 0);
        h.high_watermarks.push(HwObservation {
            partition: 0,
            started_at: 22,
            ended_at: 23,
            high_watermark: 3,
        });
        assert_eq!(kinds(&h), ["HighWatermarkBehind"]);
        // Below a record read before it was asked (the reader saw past the HW).
        let mut h = clean();
        for w in h.writes.iter_mut().filter(|w| w.partition == 0) {
            // acks=1 acknowledgements set no bound: only the reads do.
            w.acks = Acks::One;
        }
        h.high_watermarks[0].high_watermark = 2;
        assert_eq!(kinds(&h), ["HighWatermarkBehind"]);
        // Overlapping in time is no violation: the order is unknown.
        let mut h = clean();
        h.high_watermarks[0].started_at = 14;
        h.high_watermarks[0].high_watermark = 4;
        h.passes.remove(0);
        assert!(kinds(&h).is_empty(), "{:?}", kinds(&h));
        // And the check can be turned off.
        let mut h = clean();
        h.high_watermarks[0].high_watermark = 0;
        check(
            &h,
            CheckOptions {
                high_watermark: false,
            },
        )
        .assert_clean("high watermark check off");
    }

    #[test]
    fn unwritten_and_garbage_fire_on_foreign_reads() {
        let mut h = clean();
        // p2s2 was written to partition 1, not 0; p9s9 never.
        h.passes[1].records.push(ReadRecord {
            offset: 5,
            value: v(2, 2).encode(),
            at: 100,
        });
        h.passes[1].records.push(ReadRecord {
            offset: 6,
            value: v(9, 9).encode(),
            at: 100,
        });
        h.passes[1].records.push(ReadRecord {
            offset: 7,
            value: b"\x00junk".to_vec(),
            at: 100,
        });
        h.passes[1].covered_to = 8;
        let r = check(&h, CheckOptions::default());
        assert_eq!(r.count("Unwritten"), 2, "{r}");
        assert_eq!(r.count("Garbage"), 1, "{r}");
        assert_eq!(r.kinds(), ["Garbage", "Unwritten"].into(), "{r}");
    }

    #[test]
    fn no_final_read_fires_when_the_final_read_is_missing() {
        let mut h = clean();
        h.passes.retain(|p| !(p.final_read && p.partition == 1));
        assert_eq!(kinds(&h), ["NoFinalRead"]);
    }
}
