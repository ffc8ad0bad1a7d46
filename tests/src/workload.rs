//! Workload driver for history-checked tests: idempotent producers writing sequenced values
//! ([`crate::history::Value`]) round-robin over a topic's partitions and a reader passing
//! over every partition from its start again and again, all recording what they were told
//! into a [`History`] for [`crate::history::check`].
//!
//! It runs on the caller's tokio runtime (multi-threaded: the blocking rdkafka calls run in
//! `block_in_place`). Everything is bounded: each producer sends at most
//! [`WorkloadConfig::max_per_producer`] records with at most [`WorkloadConfig::window`] in
//! flight; a read round gives up after [`WorkloadConfig::round_timeout`]; [`Workload::stop`]
//! waits at most [`WorkloadConfig::settle_timeout`] for outcomes (the rest are recorded as
//! pending, which the checker treats as "maybe written").
//!
//! Faults are the test's business (kill -9, proxies): the producers keep sending through
//! them (librdkafka retries), the reader keeps reading (a round cut short by an error or its
//! timeout becomes a pass whose coverage ends at the last offset it received).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::history::{
    Acks, History, HwObservation, Ms, Outcome, ReadPass, ReadRecord, Value, Write,
};
use crate::kafka::{consumer, producer};

/// What to run.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub producers: u32,
    pub acks: Acks,
    /// Records each producer keeps in flight (awaited oldest first).
    pub window: usize,
    /// Bound on what each producer sends in total.
    pub max_per_producer: u64,
    /// librdkafka's `message.timeout.ms`: how long a record may be retried before it fails.
    /// Long enough to span a restart or a failover, so records are retried, not failed.
    pub message_timeout: Duration,
    /// How long one read round may take before its unfinished passes are cut short.
    pub round_timeout: Duration,
    /// How long [`Workload::stop`] waits for outstanding outcomes.
    pub settle_timeout: Duration,
    /// Extra producer settings.
    pub producer_extra: Vec<(String, String)>,
}

impl WorkloadConfig {
    pub fn new(bootstrap: &str, topic: &str, partitions: i32) -> WorkloadConfig {
        WorkloadConfig {
            bootstrap: bootstrap.to_string(),
            topic: topic.to_string(),
            partitions,
            producers: 2,
            acks: Acks::All,
            window: 64,
            max_per_producer: 100_000,
            message_timeout: Duration::from_secs(60),
            round_timeout: Duration::from_secs(10),
            settle_timeout: Duration::from_secs(90),
            producer_extra: Vec::new(),
        }
    }
}

/// One clock for every client of a run: milliseconds since it started.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    pub fn now(&self) -> Ms {
        self.0.elapsed().as_millis() as Ms
    }
}

/// Progress counters, for tests that wait for the workload to get somewhere before a fault.
#[derive(Default, Debug)]
pub struct Progress {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub failed: AtomicU64,
    pub rounds: AtomicU64,
    pub records_read: AtomicU64,
}

/// A running workload; [`Workload::stop`] ends it and returns the history.
pub struct Workload {
    cfg: WorkloadConfig,
    clock: Clock,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    producers: Vec<tokio::task::JoinHandle<Vec<Write>>>,
    reader: tokio::task::JoinHandle<(Vec<ReadPass>, Vec<HwObservation>)>,
}

impl Workload {
    /// Starts the producers and the reader. The topic must exist with `cfg.partitions`
    /// partitions.
    pub fn start(cfg: WorkloadConfig) -> Workload {
        let clock = Clock::start();
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let producers = (0..cfg.producers)
            .map(|id| {
                tokio::spawn(run_producer(
                    cfg.clone(),
                    id,
                    clock,
                    stop.clone(),
                    progress.clone(),
                ))
            })
            .collect();
        let reader = tokio::spawn(run_reader(
            cfg.clone(),
            clock,
            stop.clone(),
            progress.clone(),
        ));
        Workload {
            cfg,
            clock,
            stop,
            progress,
            producers,
            reader,
        }
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Waits until at least `more` further records are acknowledged (bounded by `timeout`;
    /// panics with the counters then). Progress, not wall time, decides when a fault comes,
    /// so slow machines behave the same.
    pub async fn wait_acked(&self, more: u64, timeout: Duration) {
        let target = self.progress.acked.load(Ordering::SeqCst) + more;
        let deadline = Instant::now() + timeout;
        while self.progress.acked.load(Ordering::SeqCst) < target {
            assert!(
                Instant::now() < deadline,
                "fewer than {target} records acknowledged within {timeout:?}: {:?}",
                self.progress
            );
            // A counter has no event to await; poll it briefly.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the reader finished at least `more` further rounds (bounded).
    pub async fn wait_rounds(&self, more: u64, timeout: Duration) {
        let target = self.progress.rounds.load(Ordering::SeqCst) + more;
        let deadline = Instant::now() + timeout;
        while self.progress.rounds.load(Ordering::SeqCst) < target {
            assert!(
                Instant::now() < deadline,
                "reader did not finish {more} more rounds within {timeout:?}: {:?}",
                self.progress
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops sending and reading, collects every outcome (bounded by the settle timeout),
    /// then reads every partition completely once more as the final read. Call it after
    /// the faults healed.
    pub async fn stop(self) -> History {
        self.stop.store(true, Ordering::SeqCst);
        let mut history = History::default();
        for p in self.producers {
            history
                .writes
                .extend(p.await.expect("producer task panicked"));
        }
        let (passes, hws) = self.reader.await.expect("reader task panicked");
        history.passes = passes;
        history.high_watermarks = hws;
        final_read(&self.cfg, self.clock, &mut history, Duration::from_secs(60)).await;
        history
    }
}

type DeliveryOutput = <rdkafka::producer::DeliveryFuture as std::future::Future>::Output;

async fn run_producer(
    cfg: WorkloadConfig,
    id: u32,
    clock: Clock,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
) -> Vec<Write> {
    let acks = match cfg.acks {
        Acks::All => "all",
        Acks::One => "1",
        Acks::Zero => "0",
    };
    let timeout_ms = cfg.message_timeout.as_millis().to_string();
    let mut settings: Vec<(&str, &str)> = vec![
        ("acks", acks),
        // Idempotence needs acks=all; with weaker acks it is off, as a client must.
        (
            "enable.idempotence",
            if cfg.acks == Acks::All {
                "true"
            } else {
                "false"
            },
        ),
        ("message.timeout.ms", &timeout_ms),
        ("linger.ms", "2"),
    ];
    settings.extend(
        cfg.producer_extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let prod: FutureProducer = producer(&cfg.bootstrap, &settings);
    let key = format!("p{id}");
    let mut writes: Vec<Write> = Vec::new();
    // Index into `writes` and the future of each record in flight, oldest first.
    let mut inflight: VecDeque<(usize, rdkafka::producer::DeliveryFuture)> = VecDeque::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) && seq < cfg.max_per_producer {
        let value = Value { producer: id, seq };
        let partition = (seq % cfg.partitions as u64) as i32;
        let bytes = value.encode();
        let record = FutureRecord::to(&cfg.topic)
            .partition(partition)
            .key(&key)
            .payload(&bytes);
        let sent_at = clock.now();
        match prod.send_result(record) {
            Ok(f) => {
                writes.push(Write {
                    value,
                    partition,
                    acks: cfg.acks,
                    sent_at,
                    done_at: None,
                    outcome: Outcome::Pending,
                });
                inflight.push_back((writes.len() - 1, f));
                seq += 1;
                progress.sent.fetch_add(1, Ordering::SeqCst);
            }
            // The client's queue is full (or it failed fatally): let deliveries catch up.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        while inflight.len() >= cfg.window.max(1) {
            let (i, f) = inflight.pop_front().unwrap();
            settle(&mut writes[i], f.await, clock, &progress);
        }
    }
    let deadline = tokio::time::Instant::now() + cfg.settle_timeout;
    for (i, f) in inflight {
        // One still unresolved at the deadline is left pending: maybe written.
        if let Ok(res) = tokio::time::timeout_at(deadline, f).await {
            settle(&mut writes[i], res, clock, &progress);
        }
    }
    writes
}

fn settle(w: &mut Write, res: DeliveryOutput, clock: Clock, progress: &Progress) {
    w.done_at = Some(clock.now());
    w.outcome = match res {
        Ok(Ok(d)) => {
            progress.acked.fetch_add(1, Ordering::SeqCst);
            assert_eq!(d.partition, w.partition, "delivered to another partition");
            Outcome::Acked((w.acks != Acks::Zero && d.offset >= 0).then_some(d.offset))
        }
        Ok(Err((e, _))) => {
            progress.failed.fetch_add(1, Ordering::SeqCst);
            Outcome::Failed(e.to_string())
        }
        Err(_) => {
            progress.failed.fetch_add(1, Ordering::SeqCst);
            Outcome::Failed("delivery future cancelled".into())
        }
    };
}

/// Pause after a read round that read nothing.
const ROUND_PAUSE: Duration = Duration::from_millis(50);

/// Rounds of passes over every partition until stopped; the passes and the high
/// watermarks it was told.
async fn run_reader(
    cfg: WorkloadConfig,
    clock: Clock,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
) -> (Vec<ReadPass>, Vec<HwObservation>) {
    let cons = consumer(&cfg.bootstrap);
    let (mut passes, mut hws) = (Vec::new(), Vec::new());
    while !stop.load(Ordering::SeqCst) {
        let (p, h) = read_round(&cons, &cfg, clock, 0, false).await;
        let read: u64 = p.iter().map(|x| x.records.len() as u64).sum();
        progress.rounds.fetch_add(1, Ordering::SeqCst);
        progress.records_read.fetch_add(read, Ordering::SeqCst);
        if read == 0 {
            // Nothing to read or nothing reachable (a broker down): don't spin, and don't
            // fill the history with empty passes.
            tokio::time::sleep(ROUND_PAUSE).await;
        }
        passes.extend(p);
        hws.extend(h);
    }
    (passes, hws)
}

/// Reader id of the passes of [`final_read`] (the running reader is 0).
pub const FINAL_READER: u32 = 1;

/// The final read: rounds until every partition had one complete pass (bounded by
/// `timeout`), all marked `final_read`. A partition that never gets one is left without a
/// final pass, which the checker reports as `NoFinalRead` if it had acknowledged writes.
pub async fn final_read(
    cfg: &WorkloadConfig,
    clock: Clock,
    history: &mut History,
    timeout: Duration,
) {
    let cons = consumer(&cfg.bootstrap);
    let deadline = Instant::now() + timeout;
    let mut done: BTreeMap<i32, bool> = (0..cfg.partitions).map(|p| (p, false)).collect();
    while done.values().any(|d| !d) && Instant::now() < deadline {
        let (passes, hws) = read_round(&cons, cfg, clock, FINAL_READER, true).await;
        for pass in passes {
            if pass.final_read {
                done.insert(pass.partition, true);
            }
            history.passes.push(pass);
        }
        history.high_watermarks.extend(hws);
    }
}

/// One pass over every partition: ask each one's watermarks (recorded), read from the low
/// to the high watermark. A pass that reaches its target covers up to it; one cut short (an
/// error, the round timeout) covers up to one past its last record. With `final_round`,
/// complete passes are marked final. The reader id is `reader`.
async fn read_round(
    cons: &StreamConsumer,
    cfg: &WorkloadConfig,
    clock: Clock,
    reader: u32,
    final_round: bool,
) -> (Vec<ReadPass>, Vec<HwObservation>) {
    let started_at = clock.now();
    let mut hws = Vec::new();
    let mut passes: BTreeMap<i32, ReadPass> = BTreeMap::new();
    let mut target: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..cfg.partitions {
        let asked_at = clock.now();
        let wm = tokio::task::block_in_place(|| {
            cons.fetch_watermarks(&cfg.topic, p, Duration::from_secs(5))
        });
        let Ok((lo, hi)) = wm else { continue };
        hws.push(HwObservation {
            partition: p,
            started_at: asked_at,
            ended_at: clock.now(),
            high_watermark: hi,
        });
        passes.insert(
            p,
            ReadPass {
                reader,
                partition: p,
                started_at,
                ended_at: started_at,
                from: lo,
                covered_to: lo,
                records: Vec::new(),
                final_read: false,
            },
        );
        if hi > lo {
            tpl.add_partition_offset(&cfg.topic, p, Offset::Offset(lo))
                .expect("add partition");
            target.insert(p, hi);
        }
    }
    let reached =
        |pass: &ReadPass, hi: i64| pass.records.last().is_some_and(|r| r.offset + 1 >= hi);
    if !target.is_empty() && cons.assign(&tpl).is_ok() {
        let deadline = tokio::time::Instant::now() + cfg.round_timeout;
        while !target.iter().all(|(p, &hi)| reached(&passes[p], hi)) {
            let msg = match tokio::time::timeout_at(deadline, cons.recv()).await {
                Err(_) => break,
                // Transport errors while a broker restarts or moves: keep reading until the
                // round's deadline; librdkafka reconnects by itself.
                Ok(Err(_)) => continue,
                Ok(Ok(m)) => m,
            };
            let p = msg.partition();
            let Some(pass) = passes.get_mut(&p) else {
                continue;
            };
            // Only this assignment's records, in order (a stale buffered one is ignored).
            let next = pass.records.last().map_or(pass.from, |r| r.offset + 1);
            if msg.topic() != cfg.topic || msg.offset() < next {
                continue;
            }
            pass.records.push(ReadRecord {
                offset: msg.offset(),
                value: msg.payload().unwrap_or_default().to_vec(),
                at: clock.now(),
            });
        }
        let _ = cons.unassign();
    }
    let ended_at = clock.now();
    let mut out = Vec::new();
    for (p, mut pass) in passes {
        pass.ended_at = ended_at;
        match target.get(&p) {
            // Empty partition: covers nothing, complete.
            None => pass.final_read = final_round,
            Some(&hi) if reached(&pass, hi) => {
                pass.covered_to = hi;
                pass.final_read = final_round;
            }
            Some(_) => {
                pass.covered_to = pass.records.last().map_or(pass.from, |r| r.offset + 1);
            }
        }
        out.push(pass);
    }
    (out, hws)
}

/// A history with one acknowledged record removed from every read, as if the broker had
/// lost it: for showing that [`crate::history::check`] fires on a real run's history. Picks
/// the first `acks=all` acknowledged write that the final read holds; `None` if none does.
pub fn drop_acknowledged_record(h: &History) -> Option<(History, Value)> {
    let finals: Vec<&ReadPass> = h.passes.iter().filter(|p| p.final_read).collect();
    let victim = h.writes.iter().find(|w| {
        w.acks == Acks::All
            && w.acked_offset().is_some()
            && finals.iter().any(|p| {
                p.partition == w.partition && p.records.iter().any(|r| r.value == w.value.encode())
            })
    })?;
    let encoded = victim.value.encode();
    let mut out = h.clone();
    for pass in &mut out.passes {
        pass.records.retain(|r| r.value != encoded);
    }
    Some((out, victim.value))
}
