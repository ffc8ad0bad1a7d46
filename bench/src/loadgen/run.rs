//! The load-generator engine: creates the topic, starts consumers (in groups) and producers,
//! drives the producers from sender threads on a token schedule, and samples throughput and
//! latency once a second through warm-up, measured phases, an optional backlog and the drain.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use serde::Serialize;
use sluice_bench::batch::XorShift;

use super::hist::{new_hist, Pcts, Side};
use super::native::{NativeConfig, NativeProducer};
use super::native_consumer::{self, ConsumerConfig};
use super::sys;
use super::workload::{Client, Isolation, KeyDistribution, Stamp, Workload};

/// Bound on every single client call (metadata, admin, flush).
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// A phase whose achieved produce rate is below this share of its target is flagged.
const RATE_SHORTFALL: f64 = 0.95;
/// The generator is called CPU-bound above this share of the CPUs it may use.
const CPU_BOUND: f64 = 0.90;
const MIB: f64 = 1024.0 * 1024.0;
/// Transactional producers' `transaction.timeout.ms`: at least the `message.timeout.ms` set
/// below (120 s), and at most the broker's `transaction.max.timeout.ms` (900 s).
const TXN_TIMEOUT_MS: u64 = 120_000;

/// What the command line adds to a workload.
#[derive(Clone, Debug)]
pub struct RunOpts {
    pub bootstrap: String,
    /// Exact topic name (reused if it exists) instead of `<workload.topic>-<run id>`.
    pub topic: Option<String>,
    pub peak: Option<f64>,
    pub broker_pid: Option<i32>,
    pub generator_cpus: Vec<usize>,
    /// Delete the run's own topic (`<workload.topic>-<run id>`) when the run ends, as OMB
    /// does: a baseline's runs write tens of GB that retention (7 days) would keep.
    /// Never deletes a topic named with `--topic`.
    pub delete_topic: bool,
}

/// State shared by the sender threads, delivery callbacks, consumers and the collector.
struct Shared {
    /// Records sent at or after this wall-clock ns (and before `measure_end_ns`) are measured.
    measure_start_ns: AtomicU64,
    measure_end_ns: AtomicU64,
    measuring: AtomicBool,
    /// Total target rate × 1000 (records/s); 0 = as fast as possible.
    rate_milli: AtomicU64,
    /// Bumped on every rate change so senders restart their schedule.
    rate_epoch: AtomicU64,
    stop_senders: AtomicBool,
    stop_consumers: AtomicBool,
    consumers_paused: AtomicBool,
    queue_full: AtomicU64,
    send_errors: AtomicU64,
    /// Worst lag of any sender behind its schedule during a measured phase, µs.
    lag_max_us: AtomicU64,
    /// Transactions aborted after an abortable error (their records never reach a
    /// read_committed consumer).
    txn_aborts: AtomicU64,
}

impl Shared {
    fn is_measured(&self, sent_ns: u64) -> bool {
        sent_ns >= self.measure_start_ns.load(Ordering::Relaxed)
            && sent_ns < self.measure_end_ns.load(Ordering::Relaxed)
    }
}

impl native_consumer::Control for Shared {
    fn stopped(&self) -> bool {
        self.stop_consumers.load(Ordering::Relaxed)
    }
    fn paused(&self) -> bool {
        self.consumers_paused.load(Ordering::Relaxed)
    }
    fn measured(&self, sent_ns: u64) -> bool {
        self.is_measured(sent_ns)
    }
}

/// The send time (ns since the epoch) in a record value's first 8 bytes, little-endian.
pub(super) fn embedded_ns(payload: Option<&[u8]>) -> Option<u64> {
    let p = payload?;
    Some(u64::from_le_bytes(p.get(..8)?.try_into().ok()?))
}

/// Producer context: the delivery callback (on the producer's own poll thread) records
/// send → ack latency from the timestamp inside the record, so no per-record allocation.
struct ProdCtx {
    side: Arc<Side>,
    shared: Arc<Shared>,
}

impl ClientContext for ProdCtx {}

impl ProducerContext for ProdCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let now = sys::now_ns();
                let bytes = m.payload_len() + m.key().map_or(0, |k| k.len());
                if let Some(sent) = embedded_ns(m.payload()) {
                    let lat_us = now.saturating_sub(sent) / 1000;
                    self.side
                        .record(bytes, lat_us, self.shared.is_measured(sent));
                }
            }
            Err(_) => {
                self.side.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

type Prod = ThreadedProducer<ProdCtx>;

/// Keys, precomputed so the send loop only indexes.
struct Keys {
    dist: KeyDistribution,
    keys: Vec<Vec<u8>>,
    /// Zipf cumulative distribution over `keys` (skewed only).
    cdf: Vec<f64>,
}

impl Keys {
    fn new(w: &Workload) -> Keys {
        let n = if w.key_distribution == KeyDistribution::None {
            0
        } else {
            w.key_space
        };
        let keys = (0..n).map(|i| format!("key-{i:08}").into_bytes()).collect();
        let mut cdf = Vec::new();
        if w.key_distribution == KeyDistribution::Skewed {
            let mut acc = 0.0;
            for i in 0..n {
                acc += 1.0 / ((i + 1) as f64).powf(w.zipf_s);
                cdf.push(acc);
            }
            for c in &mut cdf {
                *c /= acc;
            }
        }
        Keys {
            dist: w.key_distribution,
            keys,
            cdf,
        }
    }

    fn pick(&self, rng: &mut XorShift) -> Option<&[u8]> {
        match self.dist {
            KeyDistribution::None => None,
            KeyDistribution::Uniform => {
                Some(&self.keys[(rng.next_u64() % self.keys.len() as u64) as usize])
            }
            KeyDistribution::Skewed => {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                let i = self
                    .cdf
                    .partition_point(|c| *c < u)
                    .min(self.keys.len() - 1);
                Some(&self.keys[i])
            }
        }
    }
}

fn base_config(bootstrap: &str, client_id: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("client.id", client_id)
        .set("socket.timeout.ms", "30000");
    cfg
}

fn producer_config(w: &Workload, bootstrap: &str, i: usize) -> ClientConfig {
    let mut cfg = base_config(bootstrap, &format!("sluice-bench-p{i}"));
    // Bound each producer's queue so 100 producers at max rate cannot queue gigabytes
    // (librdkafka's default is 1 GiB each): 256 MiB shared, 4..64 MiB per producer.
    let queue_kib = (256 * 1024 / w.producers).clamp(4 * 1024, 64 * 1024);
    cfg.set("acks", &w.acks)
        .set("compression.type", &w.compression)
        .set("batch.size", w.batch_size.to_string())
        .set("linger.ms", w.linger_ms.to_string())
        // Same key → partition mapping as the Java client, so keyed runs compare with OMB.
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.kbytes", queue_kib.to_string())
        .set("message.timeout.ms", "120000");
    if w.transactional() {
        // One id per producer and generator process: two producers sharing an id would fence
        // each other, and a previous run's id would make InitProducerId wait for (or abort)
        // that run's open transaction.
        cfg.set(
            "transactional.id",
            format!("sluice-bench-txn-{}-{i}", std::process::id()),
        )
        // librdkafka requires message.timeout.ms ≤ transaction.timeout.ms (default 60 s):
        // raise the latter rather than change the message timeout non-transactional runs
        // compare against.
        .set("transaction.timeout.ms", TXN_TIMEOUT_MS.to_string());
    }
    for (k, v) in &w.producer_config {
        cfg.set(k, v);
    }
    cfg
}

/// Bytes per partition per fetch, for either consumer client: at least two records.
fn partition_fetch_bytes(w: &Workload) -> usize {
    w.record_bytes.max(1 << 20) * 2
}

fn consumer_config(w: &Workload, bootstrap: &str, group: &str, i: usize) -> ClientConfig {
    let mut cfg = base_config(bootstrap, &format!("sluice-bench-c{i}"));
    cfg.set("group.id", group)
        // A fresh topic per run: earliest reads every record the run produced.
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("session.timeout.ms", "10000")
        .set(
            "max.partition.fetch.bytes",
            partition_fetch_bytes(w).to_string(),
        );
    match w.isolation {
        // Unset: librdkafka's own default (read_committed), as before the option existed.
        None => {}
        Some(Isolation::ReadCommitted) => {
            cfg.set("isolation.level", "read_committed");
        }
        Some(Isolation::ReadUncommitted) => {
            cfg.set("isolation.level", "read_uncommitted");
        }
    }
    for (k, v) in &w.consumer_config {
        cfg.set(k, v);
    }
    cfg
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Throughput {
    pub records: u64,
    pub bytes: u64,
    pub records_per_s: f64,
    pub mib_per_s: f64,
}

impl Throughput {
    fn of(records: u64, bytes: u64, secs: f64) -> Throughput {
        let s = secs.max(1e-9);
        Throughput {
            records,
            bytes,
            records_per_s: records as f64 / s,
            mib_per_s: bytes as f64 / MIB / s,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PhaseResult {
    pub index: usize,
    /// Target produce rate in records/s; 0 = as fast as possible.
    pub target_rate: f64,
    pub seconds: f64,
    pub produce: Throughput,
    pub consume: Throughput,
    pub produce_latency: Pcts,
    pub e2e_latency: Pcts,
    /// Transactional runs: each `commit_transaction` call begun in the phase (it flushes the
    /// transaction's records, then ends it), count and duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_latency: Option<Pcts>,
    /// CPU cores the generator process used on average.
    pub generator_cpu_cores: f64,
    /// … as a share of the CPUs it may run on.
    pub generator_cpu_share: f64,
    /// Share of all host CPUs busy (broker + generator + anything else).
    pub host_cpu_busy: f64,
    pub broker_cpu_cores: Option<f64>,
    pub sender_lag_max_ms: f64,
    pub queue_full_events: u64,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Drain {
    /// Records (summed over consumer groups) not yet consumed when producers stopped.
    pub backlog_records: u64,
    pub backlog_bytes: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub mib_per_s: f64,
    /// False if the drain timeout hit first.
    pub complete: bool,
}

/// A transactional run's commits over the whole run, warm-up and drain included.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TxnSummary {
    pub commits: u64,
    pub records_committed: u64,
    /// Failed begin/commit/abort calls.
    pub errors: u64,
    pub aborts: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Second {
    pub t_s: f64,
    pub phase: String,
    pub produce_rps: f64,
    pub produce_mibps: f64,
    pub consume_rps: f64,
    pub produce_p50_ms: f64,
    pub produce_p99_ms: f64,
    pub produce_p999_ms: f64,
    pub produce_max_ms: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    pub e2e_p999_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct HostInfo {
    pub hostname: String,
    pub cpus: usize,
    pub generator_cpus: Vec<usize>,
    pub broker_pid: Option<i32>,
    pub broker_cpus: Option<Vec<usize>>,
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub cpu_note: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub tool: String,
    pub started_unix_ms: u64,
    pub bootstrap: String,
    pub topic: String,
    pub workload: Workload,
    pub host: HostInfo,
    pub phases: Vec<PhaseResult>,
    pub drain: Drain,
    pub produce_errors: u64,
    pub send_errors: u64,
    pub consume_errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transactions: Option<TxnSummary>,
    pub warnings: Vec<String>,
    pub series: Vec<Second>,
}

fn rt() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

/// Deletes the run's topic (its data is in the results; the broker frees the disk).
fn delete_topic(bootstrap: &str, topic: &str) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = base_config(bootstrap, "sluice-bench-admin")
        .create()
        .map_err(|e| format!("admin client: {e}"))?;
    let opts = AdminOptions::new()
        .request_timeout(Some(OP_TIMEOUT))
        .operation_timeout(Some(OP_TIMEOUT));
    let res = rt()?
        .block_on(admin.delete_topics(&[topic], &opts))
        .map_err(|e| format!("DeleteTopics {topic}: {e}"))?;
    for r in res {
        if let Err((name, code)) = r {
            return Err(format!("DeleteTopics {name}: {code:?}"));
        }
    }
    Ok(())
}

/// Creates the topic (an existing one is fine) with the broker's `default.replication.factor`
/// (-1 in CreateTopics) and waits until every partition has a leader.
fn ensure_topic(w: &Workload, bootstrap: &str, topic: &str) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = base_config(bootstrap, "sluice-bench-admin")
        .create()
        .map_err(|e| format!("admin client: {e}"))?;
    let mut nt = NewTopic::new(topic, w.partitions, TopicReplication::Fixed(-1));
    for (k, v) in &w.topic_config {
        nt = nt.set(k, v);
    }
    let opts = AdminOptions::new()
        .request_timeout(Some(OP_TIMEOUT))
        .operation_timeout(Some(OP_TIMEOUT));
    let res = rt()?
        .block_on(admin.create_topics([&nt], &opts))
        .map_err(|e| format!("CreateTopics {topic}: {e}"))?;
    for r in res {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("CreateTopics {name}: {code:?}")),
        }
    }
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        let md = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(5));
        let last = match md {
            Ok(md) => match md.topics().iter().find(|t| t.name() == topic) {
                Some(t)
                    if t.error().is_none()
                        && t.partitions().len() == w.partitions as usize
                        && t.partitions().iter().all(|p| p.leader() >= 0) =>
                {
                    return Ok(())
                }
                Some(t) => format!("{} partitions, error {:?}", t.partitions().len(), t.error()),
                None => "topic not in metadata".into(),
            },
            Err(e) => format!("metadata: {e}"),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "topic {topic} not ready within {OP_TIMEOUT:?}: {last}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct SenderCfg {
    idx: usize,
    threads: usize,
    record_bytes: usize,
    topic: String,
    keys: Arc<Keys>,
    /// Hard stop for the send loop whatever happens to the stop flag.
    deadline: Instant,
    /// Stamp records with their scheduled send time instead of the clock.
    stamp_schedule: bool,
    /// Transactional producing (rdkafka producers only).
    txn: Option<TxnCfg>,
}

/// When a transactional producer commits: once its transaction has been open `every`, or
/// holds `records` records, whichever comes first.
#[derive(Clone)]
struct TxnCfg {
    every: Option<Duration>,
    /// 0 = no count trigger.
    records: u64,
    /// Commits: count, records covered (in the byte counter), duration, failed calls.
    side: Arc<Side>,
}

/// One producer's open transaction.
#[derive(Clone, Copy)]
struct OpenTxn {
    since: Instant,
    records: u64,
}

/// The transactions of one sender thread's rdkafka producers. A transaction opens at the
/// producer's first record and commits on the workload's schedule. Commits run on the
/// sender thread and block it, as `commitTransaction` blocks an application's producing
/// thread (librdkafka refuses records while a commit is under way, so the producer could not
/// take them anyway). The sender is an OS thread of its own, not a task on a shared
/// runtime: only its own producers wait, consumers and the collector carry on, and with
/// `stamp = "schedule"` the records due during a commit count that wait in their latencies.
struct Txns {
    cfg: TxnCfg,
    open: Vec<Option<OpenTxn>>,
    /// Producers left unusable by a non-abortable error: skipped from then on.
    dead: Vec<bool>,
    /// Error lines logged so far (bounded: a broken broker fails every call).
    logged: u32,
}

impl Txns {
    fn new(cfg: TxnCfg, producers: usize) -> Txns {
        Txns {
            cfg,
            open: vec![None; producers],
            dead: vec![false; producers],
            logged: 0,
        }
    }

    /// Opens producer `i`'s transaction unless one is open; false if it cannot take records.
    fn ready(&mut self, i: usize, p: &Prod, shared: &Shared) -> bool {
        if self.dead[i] {
            return false;
        }
        if self.open[i].is_some() {
            return true;
        }
        match p.begin_transaction() {
            Ok(()) => {
                self.open[i] = Some(OpenTxn {
                    since: Instant::now(),
                    records: 0,
                });
                true
            }
            Err(e) => {
                self.fail(i, p, "begin_transaction", e, shared);
                false
            }
        }
    }

    /// Counts a record handed to producer `i` (or refused: a refusal can mean the
    /// transaction needs aborting, which the commit finds out); commits on the count trigger.
    fn sent(&mut self, i: usize, p: &Prod, shared: &Shared) {
        let full = match &mut self.open[i] {
            Some(o) => {
                o.records += 1;
                self.cfg.records > 0 && o.records >= self.cfg.records
            }
            None => false,
        };
        if full {
            self.commit(i, p, shared);
        }
    }

    /// Commits every transaction open for the time trigger or longer.
    fn commit_due(&mut self, producers: &[Arc<Prod>], shared: &Shared) {
        let Some(every) = self.cfg.every else {
            return;
        };
        for (i, p) in producers.iter().enumerate() {
            if self.open[i].is_some_and(|o| o.since.elapsed() >= every) {
                self.commit(i, p, shared);
            }
        }
    }

    /// Commits whatever is still open (the end of the run: a read_committed consumer sees
    /// nothing of an open transaction, so the drain would never complete).
    fn finish(&mut self, producers: &[Arc<Prod>], shared: &Shared) {
        for (i, p) in producers.iter().enumerate() {
            self.commit(i, p, shared);
        }
    }

    fn commit(&mut self, i: usize, p: &Prod, shared: &Shared) {
        let Some(o) = self.open[i].take() else {
            return;
        };
        let start_ns = sys::now_ns();
        let t = Instant::now();
        drain(p, t + OP_TIMEOUT);
        let mut res = p.commit_transaction(OP_TIMEOUT);
        // librdkafka: a retriable commit error may be retried with the same call.
        for _ in 0..3 {
            match &res {
                Err(KafkaError::Transaction(e)) if e.is_retriable() => {
                    res = p.commit_transaction(OP_TIMEOUT);
                }
                _ => break,
            }
        }
        match res {
            Ok(()) => self.cfg.side.record(
                o.records as usize,
                t.elapsed().as_micros() as u64,
                shared.is_measured(start_ns),
            ),
            Err(e) => self.fail(i, p, "commit_transaction", e, shared),
        }
    }

    /// An abortable error aborts the transaction (the next record opens a new one); any
    /// other retires the producer, whose records are then counted as send errors.
    fn fail(&mut self, i: usize, p: &Prod, what: &str, e: KafkaError, shared: &Shared) {
        self.cfg.side.errors.fetch_add(1, Ordering::Relaxed);
        self.open[i] = None;
        let abortable = matches!(&e, KafkaError::Transaction(t) if t.txn_requires_abort());
        let mut msg = format!("producer {i}: {what}: {e}");
        if abortable {
            match p.abort_transaction(OP_TIMEOUT) {
                Ok(()) => {
                    shared.txn_aborts.fetch_add(1, Ordering::Relaxed);
                    msg.push_str(" (transaction aborted)");
                }
                Err(e2) => {
                    self.dead[i] = true;
                    msg.push_str(&format!("; abort_transaction: {e2} (producer retired)"));
                }
            }
        } else {
            self.dead[i] = true;
            msg.push_str(" (producer retired)");
        }
        if self.logged < 10 {
            self.logged += 1;
            log(&msg);
        }
    }
}

/// Waits (until `deadline`) for producer `p` to hold no undelivered record, in 0.2 ms steps.
/// The rdkafka crate's `commit_transaction` flushes before it calls librdkafka's, and its
/// flush polls in 100 ms waits: beside a ThreadedProducer's own poll thread, which takes
/// the delivery reports, each wait runs its full 100 ms. Every commit took 100–110 ms that
/// way where librdkafka's debug log showed its own commit taking 8 ms. Once drained here,
/// the crate's flush finds nothing outstanding and returns at once.
fn drain(p: &Prod, deadline: Instant) {
    // A flush that does not wait: wakes the broker threads so records lingering in the
    // queue go out now rather than after linger.ms.
    let _ = p.flush(Duration::ZERO);
    while p.in_flight_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A record's send timestamp: the clock, or (`stamp_schedule` at a fixed rate) the time its
/// schedule made it due. Record `n` of an epoch is due at (n + 1) / rate: the sender sends
/// floor(elapsed × rate) records by `elapsed`.
fn stamp(schedule: bool, t0_ns: u64, rate: f64, n: u64) -> u64 {
    if schedule && rate > 0.0 {
        t0_ns + ((n + 1) as f64 * 1e9 / rate) as u64
    } else {
        sys::now_ns()
    }
}

struct SenderStats {
    sent: u64,
    cpu_s: f64,
}

/// The producers one sender thread drives.
enum Sinks {
    Rdkafka(Vec<Arc<Prod>>),
    /// Connected by `run`, then moved to the one sender thread that uses them.
    Native(Vec<NativeProducer>),
}

impl Sinks {
    fn len(&self) -> usize {
        match self {
            Sinks::Rdkafka(v) => v.len(),
            Sinks::Native(v) => v.len(),
        }
    }

    /// Lets native producers send lingering batches.
    fn poll(&mut self, shared: &Shared) {
        if let Sinks::Native(v) = self {
            for p in v.iter_mut() {
                if p.poll().is_err() {
                    shared.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Sends on a token schedule: at each wake-up, sends every record that is due by now (up to a
/// bounded burst), then sleeps until the next one is due. At rate 0, sends until the producer
/// pushes back: librdkafka's QueueFull (then waits a millisecond), or a native producer
/// blocking while its connection has the most requests in flight.
fn sender_loop(mut producers: Sinks, cfg: SenderCfg, shared: Arc<Shared>) -> SenderStats {
    let mut rng = XorShift::new(0x5eed_0000 + cfg.idx as u64);
    // Random (incompressible) filler: compression is measured on realistic data, not zeros.
    let mut buf = vec![0u8; cfg.record_bytes];
    rng.fill(&mut buf);
    let mut epoch = u64::MAX;
    let mut rate = 0.0f64;
    let mut t0 = Instant::now();
    let mut t0_ns = sys::now_ns();
    let mut sent_epoch = 0u64;
    let mut sent = 0u64;
    let mut rr = 0usize;
    let mut txns = cfg.txn.clone().map(|c| Txns::new(c, producers.len()));
    const BURST_MAX: u64 = 4096;
    'outer: while !shared.stop_senders.load(Ordering::Relaxed) && Instant::now() < cfg.deadline {
        let e = shared.rate_epoch.load(Ordering::Acquire);
        if e != epoch {
            epoch = e;
            rate = shared.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0 / cfg.threads as f64;
            t0 = Instant::now();
            t0_ns = sys::now_ns();
            sent_epoch = 0;
        }
        producers.poll(&shared);
        // The time trigger is checked at every wake-up: at most 10 ms apart at a fixed rate.
        if let (Some(t), Sinks::Rdkafka(v)) = (&mut txns, &producers) {
            t.commit_due(v, &shared);
        }
        let burst = if rate <= 0.0 {
            BURST_MAX
        } else {
            let elapsed = t0.elapsed().as_secs_f64();
            let due = (elapsed * rate) as u64;
            if due <= sent_epoch {
                let next = (sent_epoch + 1) as f64 / rate;
                let wait = (next - elapsed).clamp(0.000_05, 0.01);
                std::thread::sleep(Duration::from_secs_f64(wait));
                continue;
            }
            if shared.measuring.load(Ordering::Relaxed) {
                let lag_us = ((elapsed - sent_epoch as f64 / rate) * 1e6) as u64;
                shared.lag_max_us.fetch_max(lag_us, Ordering::Relaxed);
            }
            (due - sent_epoch).min(BURST_MAX)
        };
        for _ in 0..burst {
            let key = cfg.keys.pick(&mut rng);
            let n = producers.len();
            let p = match &mut producers {
                Sinks::Native(v) => {
                    // Blocks while the connection has the most requests in flight: that is
                    // the back-pressure (librdkafka's is QueueFull, below).
                    let ts = stamp(cfg.stamp_schedule, t0_ns, rate, sent_epoch);
                    buf[..8].copy_from_slice(&ts.to_le_bytes());
                    if v[rr % n].send(key, &buf).is_err() {
                        shared.send_errors.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    rr = rr.wrapping_add(1);
                    sent_epoch += 1;
                    sent += 1;
                    continue;
                }
                Sinks::Rdkafka(v) => &v[rr % n],
            };
            let pi = rr % n;
            rr = rr.wrapping_add(1);
            if let Some(t) = &mut txns {
                if !t.ready(pi, p, &shared) {
                    shared.send_errors.fetch_add(1, Ordering::Relaxed);
                    sent_epoch += 1;
                    sent += 1;
                    continue;
                }
            }
            // Retry a full queue; bounded by the stop flag and the deadline.
            loop {
                let ts = stamp(cfg.stamp_schedule, t0_ns, rate, sent_epoch);
                buf[..8].copy_from_slice(&ts.to_le_bytes());
                let mut rec = BaseRecord::<[u8], [u8]>::to(&cfg.topic).payload(&buf[..]);
                if let Some(k) = key {
                    rec = rec.key(k);
                }
                match p.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        shared.queue_full.fetch_add(1, Ordering::Relaxed);
                        if shared.stop_senders.load(Ordering::Relaxed)
                            || Instant::now() >= cfg.deadline
                        {
                            break 'outer;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => {
                        shared.send_errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            if let Some(t) = &mut txns {
                t.sent(pi, p, &shared);
            }
            sent_epoch += 1;
            sent += 1;
        }
    }
    if let (Some(t), Sinks::Rdkafka(v)) = (&mut txns, &producers) {
        t.finish(v, &shared);
    }
    if let Sinks::Native(v) = &mut producers {
        for p in v.iter_mut() {
            if p.flush().is_err() {
                shared.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    SenderStats {
        sent,
        cpu_s: sys::thread_cpu_s(),
    }
}

/// Polls one consumer until told to stop; pauses (stops polling) while a backlog builds.
fn consumer_loop(
    c: BaseConsumer,
    side: Arc<Side>,
    shared: Arc<Shared>,
    assigned: Arc<AtomicU64>,
    deadline: Instant,
) {
    let mut n = 0u64;
    let mut paused: Option<rdkafka::TopicPartitionList> = None;
    while !shared.stop_consumers.load(Ordering::Relaxed) && Instant::now() < deadline {
        // Pause through librdkafka, not by ceasing to poll: otherwise its prefetch queue keeps
        // filling and the "drain" would read from client memory instead of the broker. Pausing
        // purges that queue and refetches from the consumed position on resume.
        let want_pause = shared.consumers_paused.load(Ordering::Relaxed);
        if want_pause && paused.is_none() {
            if let Ok(a) = c.assignment() {
                let _ = c.pause(&a);
                paused = Some(a);
            }
        } else if !want_pause {
            if let Some(a) = paused.take() {
                let _ = c.resume(&a);
            }
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let now = sys::now_ns();
                if let Some(sent) = embedded_ns(m.payload()) {
                    let bytes = m.payload_len() + m.key().map_or(0, |k| k.len());
                    side.record(
                        bytes,
                        now.saturating_sub(sent) / 1000,
                        shared.is_measured(sent),
                    );
                }
            }
            Some(Err(_)) => {
                side.errors.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
        // Assignment is only needed to know when the group is ready; check it sparingly.
        n += 1;
        if n % 64 == 1 {
            if let Ok(a) = c.assignment() {
                assigned.store(a.count() as u64, Ordering::Relaxed);
            }
        }
    }
    c.unsubscribe();
}

fn sum(sides: &[Arc<Side>]) -> (u64, u64, u64) {
    sides.iter().fold((0, 0, 0), |(r, b, e), s| {
        (
            r + s.records.load(Ordering::Relaxed),
            b + s.bytes.load(Ordering::Relaxed),
            e + s.errors.load(Ordering::Relaxed),
        )
    })
}

/// Once-a-second sampler over the producer and consumer sides.
struct Collector {
    /// The run's progress in seconds, with the last second's figures.
    bar: ProgressBar,
    t0: Instant,
    next_tick: Instant,
    last_at: Instant,
    last_prod: (u64, u64),
    last_cons: u64,
    series: Vec<Second>,
}

impl Collector {
    fn sample(&mut self, phase: &str, prod: &[Arc<Side>], cons: &[Arc<Side>]) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_at).as_secs_f64().max(1e-6);
        let mut ph = new_hist();
        let mut ch = new_hist();
        prod.iter().for_each(|s| s.take_interval(&mut ph));
        cons.iter().for_each(|s| s.take_interval(&mut ch));
        let (pr, pb, _) = sum(prod);
        let (cr, _, _) = sum(cons);
        let (p, c) = (Pcts::of(&ph), Pcts::of(&ch));
        self.series.push(Second {
            t_s: now.duration_since(self.t0).as_secs_f64(),
            phase: phase.to_string(),
            produce_rps: (pr - self.last_prod.0) as f64 / dt,
            produce_mibps: (pb - self.last_prod.1) as f64 / MIB / dt,
            consume_rps: (cr - self.last_cons) as f64 / dt,
            produce_p50_ms: p.p50_ms,
            produce_p99_ms: p.p99_ms,
            produce_p999_ms: p.p999_ms,
            produce_max_ms: p.max_ms,
            e2e_p50_ms: c.p50_ms,
            e2e_p99_ms: c.p99_ms,
            e2e_p999_ms: c.p999_ms,
        });
        if let Some(s) = self.series.last() {
            self.bar.set_position(s.t_s as u64);
            self.bar.set_message(format!(
                "{phase}: {:.0} rec/s, p99 {:.1} ms",
                s.produce_rps, s.produce_p99_ms
            ));
        }
        self.last_at = now;
        self.last_prod = (pr, pb);
        self.last_cons = cr;
    }

    /// Samples once a second until `secs` have passed or `until` says stop (checked every
    /// 50 ms); returns the time actually spent.
    fn run_for(
        &mut self,
        secs: f64,
        phase: &str,
        prod: &[Arc<Side>],
        cons: &[Arc<Side>],
        mut until: impl FnMut() -> bool,
    ) -> f64 {
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(secs);
        loop {
            let now = Instant::now();
            if now >= self.next_tick {
                self.sample(phase, prod, cons);
                self.next_tick += Duration::from_secs(1);
                if self.next_tick < now {
                    self.next_tick = now + Duration::from_secs(1);
                }
            }
            if now >= end || until() {
                break;
            }
            let wake = end.min(self.next_tick).min(now + Duration::from_millis(50));
            std::thread::sleep(wake.saturating_duration_since(now));
        }
        start.elapsed().as_secs_f64()
    }
}

/// The running bench's progress bar, if stderr is a terminal: log lines print above it.
static PROGRESS: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn log(msg: &str) {
    let bar = PROGRESS.lock().ok().and_then(|b| b.clone());
    match bar {
        Some(bar) => bar.suspend(|| eprintln!("sluice-bench: {msg}")),
        None => eprintln!("sluice-bench: {msg}"),
    }
}

/// A run's progress over its `planned_s` seconds, drawn on stderr while it is a terminal
/// (hidden when piped, so logs and scripts see only the log lines); cleared when dropped.
struct Progress(ProgressBar);

impl Progress {
    fn start(planned_s: u64) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(ProgressBar::hidden());
        }
        let target = ProgressDrawTarget::stderr_with_hz(4);
        let bar = ProgressBar::with_draw_target(Some(planned_s), target);
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} {wide_bar} {pos}/{len} s  {msg}")
        {
            bar.set_style(style);
        }
        if let Ok(mut g) = PROGRESS.lock() {
            *g = Some(bar.clone());
        }
        Progress(bar)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Ok(mut g) = PROGRESS.lock() {
            *g = None;
        }
        self.0.finish_and_clear();
    }
}

pub fn run(w: &Workload, opts: &RunOpts) -> Result<RunResult, String> {
    w.validate()?;
    let rates = w.phase_rates(opts.peak)?;
    let started_unix_ms = sys::now_ns() / 1_000_000;
    let run_id = format!("{:x}", started_unix_ms % 0xff_ffff);
    let topic = opts
        .topic
        .clone()
        .unwrap_or_else(|| format!("{}-{run_id}", w.topic));
    let gen_cpus = if opts.generator_cpus.is_empty() {
        sys::affinity(0)
    } else {
        opts.generator_cpus.clone()
    };
    let host_cpus = sys::host_cpus();
    let broker_cpus = opts.broker_pid.map(sys::affinity);
    let cpu_note = cpu_note(host_cpus, &gen_cpus, broker_cpus.as_deref());
    let loadavg_before = sys::loadavg();
    log(&format!(
        "workload {} → {} topic {topic} ({} partitions), {} producers ({:?}), {}×{} consumers ({:?}), \
         rates {:?}",
        w.name,
        opts.bootstrap,
        w.partitions,
        w.producers,
        w.client,
        w.consumer_groups,
        w.consumers,
        w.consumer_client,
        rates
    ));
    log(&cpu_note);

    ensure_topic(w, &opts.bootstrap, &topic)?;

    let shared = Arc::new(Shared {
        measure_start_ns: AtomicU64::new(u64::MAX),
        measure_end_ns: AtomicU64::new(u64::MAX),
        measuring: AtomicBool::new(false),
        rate_milli: AtomicU64::new((rates[0] * 1000.0) as u64),
        rate_epoch: AtomicU64::new(0),
        stop_senders: AtomicBool::new(false),
        stop_consumers: AtomicBool::new(false),
        consumers_paused: AtomicBool::new(false),
        queue_full: AtomicU64::new(0),
        send_errors: AtomicU64::new(0),
        lag_max_us: AtomicU64::new(0),
        txn_aborts: AtomicU64::new(0),
    });
    // Every thread stops by this deadline even if the main thread never says so.
    let planned_s = rates.len() as u64 * (w.warmup_s + w.duration_s) + w.backlog_s;
    let deadline = Instant::now() + Duration::from_secs(planned_s + w.drain_timeout_s + 300);
    let progress = Progress::start(planned_s);

    // Consumers first: the group must own every partition before the first record is sent.
    let mut cons_sides = Vec::new();
    let mut cons_threads: Vec<JoinHandle<()>> = Vec::new();
    let mut group_assigned: Vec<Vec<Arc<AtomicU64>>> = Vec::new();
    for g in 0..w.consumer_groups {
        let group = format!("sluice-bench-{run_id}-g{g}");
        let mut slots = Vec::new();
        for i in 0..w.consumers {
            let side = Arc::new(Side::new());
            let slot = Arc::new(AtomicU64::new(0));
            cons_sides.push(side.clone());
            slots.push(slot.clone());
            let sh = shared.clone();
            let body: Box<dyn FnOnce() + Send> = match w.consumer_client {
                Client::Rdkafka => {
                    let c: BaseConsumer =
                        consumer_config(w, &opts.bootstrap, &group, g * w.consumers + i)
                            .create()
                            .map_err(|e| format!("consumer: {e}"))?;
                    c.subscribe(&[&topic])
                        .map_err(|e| format!("subscribe {topic}: {e}"))?;
                    Box::new(move || consumer_loop(c, side, sh, slot, deadline))
                }
                Client::Native => {
                    let cfg = ConsumerConfig {
                        client_id: format!("sluice-bench-c{}", g * w.consumers + i),
                        topic: topic.clone(),
                        partitions: w.partitions,
                        index: i,
                        count: w.consumers,
                        partition_max_bytes: partition_fetch_bytes(w).min(i32::MAX as usize) as i32,
                    };
                    let bootstrap = opts.bootstrap.clone();
                    Box::new(move || {
                        native_consumer::consume(&bootstrap, &cfg, &side, &*sh, &slot, deadline)
                    })
                }
            };
            cons_threads.push(
                std::thread::Builder::new()
                    .name(format!("bench-c{g}.{i}"))
                    .spawn(body)
                    .map_err(|e| format!("spawn consumer: {e}"))?,
            );
        }
        group_assigned.push(slots);
    }
    let mut warnings = Vec::new();
    if w.consumer_client == Client::Native && w.compression != "none" {
        let msg = format!(
            "consumer_client native counts {} batches without opening them: end-to-end \
             latencies cover only uncompressed batches, consume MiB/s is compressed bytes",
            w.compression
        );
        log(&msg);
        warnings.push(msg);
    }
    if !cons_threads.is_empty() {
        let t = Instant::now();
        let ready = || {
            group_assigned.iter().all(|slots| {
                slots.iter().map(|s| s.load(Ordering::Relaxed)).sum::<u64>() >= w.partitions as u64
            })
        };
        while !ready() && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if ready() {
            log(&format!(
                "consumer groups assigned in {:.1} s",
                t.elapsed().as_secs_f64()
            ));
        } else {
            let msg = "consumer groups did not own every partition within 60 s; \
                       end-to-end figures may miss records"
                .to_string();
            log(&msg);
            warnings.push(msg);
        }
    }

    let mut prod_sides = Vec::new();
    let mut producers = Vec::new();
    let mut natives: Vec<Option<NativeProducer>> = Vec::new();
    for i in 0..w.producers {
        if w.client == Client::Native {
            let side = Arc::new(Side::new());
            let sh = shared.clone();
            let cfg = NativeConfig {
                client_id: format!("sluice-bench-p{i}"),
                topic: topic.clone(),
                acks: if w.acks == "all" {
                    -1
                } else {
                    w.acks.parse().unwrap_or(-1)
                },
                batch_bytes: w.batch_size,
                linger: Duration::from_millis(w.linger_ms),
                partitions: w.partitions,
            };
            let p = NativeProducer::connect(
                &opts.bootstrap,
                cfg,
                side.clone(),
                Arc::new(move |sent| sh.is_measured(sent)),
                0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1),
            )
            .map_err(|e| format!("native producer: {e}"))?;
            prod_sides.push(side);
            natives.push(Some(p));
            continue;
        }
        let side = Arc::new(Side::new());
        let ctx = ProdCtx {
            side: side.clone(),
            shared: shared.clone(),
        };
        let p: Prod = producer_config(w, &opts.bootstrap, i)
            .create_with_context(ctx)
            .map_err(|e| format!("producer: {e}"))?;
        if w.transactional() {
            // Once per producer, before the first record: gets its producer id and epoch
            // from the transaction coordinator (fencing any earlier holder of the id).
            p.init_transactions(OP_TIMEOUT)
                .map_err(|e| format!("producer {i}: init_transactions: {e}"))?;
        }
        prod_sides.push(side);
        producers.push(Arc::new(p));
    }
    let threads = if w.sender_threads > 0 {
        w.sender_threads
    } else {
        gen_cpus.len().max(1)
    }
    .min(w.producers);
    let keys = Arc::new(Keys::new(w));
    let commit_side = w.transactional().then(|| Arc::new(Side::new()));
    let txn_cfg = commit_side.as_ref().map(|side| TxnCfg {
        every: (w.txn_commit_ms > 0).then(|| Duration::from_millis(w.txn_commit_ms)),
        records: w.txn_commit_records,
        side: side.clone(),
    });
    if let Some(every) = w.txn_schedule() {
        log(&format!(
            "transactions: each producer commits every {every}"
        ));
    }
    let mut senders = Vec::new();
    for t in 0..threads {
        let mine = if w.client == Client::Native {
            Sinks::Native(
                natives
                    .iter_mut()
                    .enumerate()
                    .filter(|(i, _)| i % threads == t)
                    .filter_map(|(_, p)| p.take())
                    .collect(),
            )
        } else {
            Sinks::Rdkafka(
                producers
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % threads == t)
                    .map(|(_, p)| p.clone())
                    .collect(),
            )
        };
        let cfg = SenderCfg {
            idx: t,
            threads,
            record_bytes: w.record_bytes,
            topic: topic.clone(),
            keys: keys.clone(),
            deadline,
            stamp_schedule: w.stamp == Stamp::Schedule,
            txn: txn_cfg.clone(),
        };
        let sh = shared.clone();
        senders.push(
            std::thread::Builder::new()
                .name(format!("bench-s{t}"))
                .spawn(move || sender_loop(mine, cfg, sh))
                .map_err(|e| format!("spawn sender: {e}"))?,
        );
    }

    let now = Instant::now();
    let mut col = Collector {
        bar: progress.0.clone(),
        t0: now,
        next_tick: now + Duration::from_secs(1),
        last_at: now,
        last_prod: (0, 0),
        last_cons: 0,
        series: Vec::new(),
    };
    let allowed = gen_cpus.len().max(1) as f64;
    let mut phases: Vec<PhaseResult> = Vec::new();
    // Measured histograms are harvested late (at the next phase's start, or after the drain)
    // so acks and consumes of the phase's last records still count.
    let mut pending: Option<usize> = None;
    let harvest = |phases: &mut Vec<PhaseResult>, idx: usize| {
        let mut ph = new_hist();
        let mut ch = new_hist();
        prod_sides.iter().for_each(|s| s.take_measured(&mut ph));
        cons_sides.iter().for_each(|s| s.take_measured(&mut ch));
        phases[idx].produce_latency = Pcts::of(&ph);
        phases[idx].e2e_latency = Pcts::of(&ch);
        if let Some(side) = &commit_side {
            let mut h = new_hist();
            side.take_measured(&mut h);
            phases[idx].commit_latency = Some(Pcts::of(&h));
        }
    };
    for (i, &rate) in rates.iter().enumerate() {
        shared
            .rate_milli
            .store((rate * 1000.0) as u64, Ordering::Relaxed);
        shared.rate_epoch.fetch_add(1, Ordering::Release);
        let label = format!("warmup {i}");
        log(&format!(
            "phase {i}: target {} rec/s, warm-up {} s",
            if rate > 0.0 {
                format!("{rate:.0}")
            } else {
                "max".into()
            },
            w.warmup_s
        ));
        col.run_for(w.warmup_s as f64, &label, &prod_sides, &cons_sides, || {
            false
        });
        if let Some(p) = pending.take() {
            harvest(&mut phases, p);
        }
        // Measured phase.
        let (p0r, p0b, _) = sum(&prod_sides);
        let (c0r, c0b, _) = sum(&cons_sides);
        let cpu0 = sys::process_cpu_s();
        let host0 = sys::host_cpu_jiffies();
        let broker0 = opts.broker_pid.and_then(sys::pid_cpu_s);
        let qf0 = shared.queue_full.load(Ordering::Relaxed);
        shared.lag_max_us.store(0, Ordering::Relaxed);
        shared.measure_end_ns.store(u64::MAX, Ordering::Relaxed);
        shared
            .measure_start_ns
            .store(sys::now_ns(), Ordering::Relaxed);
        shared.measuring.store(true, Ordering::Relaxed);
        let secs = col.run_for(
            w.duration_s as f64,
            &format!("phase {i}"),
            &prod_sides,
            &cons_sides,
            || false,
        );
        shared
            .measure_end_ns
            .store(sys::now_ns(), Ordering::Relaxed);
        shared.measuring.store(false, Ordering::Relaxed);
        let (p1r, p1b, _) = sum(&prod_sides);
        let (c1r, c1b, _) = sum(&cons_sides);
        let cpu = (sys::process_cpu_s() - cpu0) / secs;
        let host1 = sys::host_cpu_jiffies();
        let host_busy = (host1.0 - host0.0) as f64 / ((host1.1 - host0.1) as f64).max(1.0);
        let broker = match (broker0, opts.broker_pid.and_then(sys::pid_cpu_s)) {
            (Some(a), Some(b)) => Some((b - a) / secs),
            _ => None,
        };
        let produce = Throughput::of(p1r - p0r, p1b - p0b, secs);
        let consume = Throughput::of(c1r - c0r, c1b - c0b, secs);
        let lag_ms = shared.lag_max_us.load(Ordering::Relaxed) as f64 / 1000.0;
        let queue_full = shared.queue_full.load(Ordering::Relaxed) - qf0;
        let mut pw = Vec::new();
        if rate > 0.0 && produce.records_per_s < RATE_SHORTFALL * rate {
            pw.push(format!(
                "phase {i}: achieved {:.0} rec/s = {:.0} % of the {rate:.0} rec/s target \
                 (sender lag up to {lag_ms:.0} ms, {queue_full} queue-full waits)",
                produce.records_per_s,
                100.0 * produce.records_per_s / rate
            ));
        }
        if cpu >= CPU_BOUND * allowed {
            pw.push(format!(
                "phase {i}: the generator was CPU-bound ({cpu:.2} of {allowed:.0} allowed CPUs): \
                 these figures may be the generator's ceiling, not the broker's"
            ));
        }
        if host_busy >= 0.95 {
            pw.push(format!(
                "phase {i}: host CPUs {:.0} % busy (broker + generator + other load share {host_cpus} CPUs)",
                host_busy * 100.0
            ));
        }
        for m in &pw {
            log(m);
        }
        log(&format!(
            "phase {i}: produce {:.0} rec/s {:.1} MiB/s, consume {:.0} rec/s, generator {:.2} CPUs",
            produce.records_per_s, produce.mib_per_s, consume.records_per_s, cpu
        ));
        phases.push(PhaseResult {
            index: i,
            target_rate: rate,
            seconds: secs,
            produce,
            consume,
            produce_latency: Pcts::default(),
            e2e_latency: Pcts::default(),
            commit_latency: None,
            generator_cpu_cores: cpu,
            generator_cpu_share: cpu / allowed,
            host_cpu_busy: host_busy,
            broker_cpu_cores: broker,
            sender_lag_max_ms: lag_ms,
            queue_full_events: queue_full,
            warnings: pw,
        });
        pending = Some(i);
    }

    if w.backlog_s > 0 && !cons_threads.is_empty() {
        log(&format!(
            "backlog: producing {} s with consumers paused",
            w.backlog_s
        ));
        shared.consumers_paused.store(true, Ordering::Relaxed);
        col.run_for(
            w.backlog_s as f64,
            "backlog",
            &prod_sides,
            &cons_sides,
            || false,
        );
    }
    shared.stop_senders.store(true, Ordering::Relaxed);
    let mut sent = 0;
    let mut sender_cpu = Vec::new();
    for s in senders {
        if let Ok(st) = s.join() {
            sent += st.sent;
            sender_cpu.push(st.cpu_s);
        }
    }
    for p in &producers {
        let _ = p.flush(OP_TIMEOUT);
    }
    shared.consumers_paused.store(false, Ordering::Relaxed);

    // Drain: every group must read every acked record.
    let mut drain = Drain::default();
    if !cons_threads.is_empty() {
        let (acked, acked_bytes, _) = sum(&prod_sides);
        let want = acked * w.consumer_groups as u64;
        let (c0, cb0, _) = sum(&cons_sides);
        let backlog = want.saturating_sub(c0);
        let avg = acked_bytes as f64 / acked.max(1) as f64;
        log(&format!("drain: {backlog} records behind"));
        let cs = cons_sides.clone();
        let secs = col.run_for(
            w.drain_timeout_s as f64,
            "drain",
            &prod_sides,
            &cons_sides,
            || sum(&cs).0 >= want,
        );
        let (c1, cb1, _) = sum(&cons_sides);
        let done = c1.saturating_sub(c0);
        drain = Drain {
            backlog_records: backlog,
            backlog_bytes: (backlog as f64 * avg) as u64,
            seconds: secs,
            records_per_s: done as f64 / secs.max(1e-9),
            mib_per_s: cb1.saturating_sub(cb0) as f64 / MIB / secs.max(1e-9),
            complete: c1 >= want,
        };
        if !drain.complete {
            warnings.push(format!(
                "drain incomplete after {} s: {} of {want} records consumed",
                w.drain_timeout_s, c1
            ));
        }
    }
    if let Some(p) = pending.take() {
        harvest(&mut phases, p);
    }
    shared.stop_consumers.store(true, Ordering::Relaxed);
    for t in cons_threads {
        let _ = t.join();
    }
    let (_, _, produce_errors) = sum(&prod_sides);
    let (_, _, consume_errors) = sum(&cons_sides);
    drop(producers);
    if produce_errors > 0 {
        warnings.push(format!("{produce_errors} records failed delivery"));
    }
    let transactions = commit_side.as_ref().map(|side| TxnSummary {
        commits: side.records.load(Ordering::Relaxed),
        records_committed: side.bytes.load(Ordering::Relaxed),
        errors: side.errors.load(Ordering::Relaxed),
        aborts: shared.txn_aborts.load(Ordering::Relaxed),
    });
    if let Some(t) = &transactions {
        if t.errors > 0 || t.aborts > 0 {
            warnings.push(format!(
                "transactions: {} failed calls, {} transactions aborted",
                t.errors, t.aborts
            ));
        }
    }
    for p in &phases {
        warnings.extend(p.warnings.iter().cloned());
    }
    if let Some(busiest) = sender_cpu.iter().cloned().reduce(f64::max) {
        let total: f64 =
            rates.len() as f64 * (w.warmup_s + w.duration_s) as f64 + w.backlog_s as f64;
        if busiest >= CPU_BOUND * total {
            warnings.push(format!(
                "a sender thread was busy {busiest:.1} s of {total:.0} s: the generator's send loop \
                 is saturated; add sender_threads"
            ));
        }
    }
    log(&format!("sent {sent} records in total"));
    if opts.delete_topic && opts.topic.is_none() {
        if let Err(e) = delete_topic(&opts.bootstrap, &topic) {
            log(&format!("could not delete topic {topic}: {e}"));
        }
    }
    Ok(RunResult {
        tool: format!("sluice-bench {}", env!("CARGO_PKG_VERSION")),
        started_unix_ms,
        bootstrap: opts.bootstrap.clone(),
        topic,
        workload: w.clone(),
        host: HostInfo {
            hostname: sys::hostname(),
            cpus: host_cpus,
            generator_cpus: gen_cpus,
            broker_pid: opts.broker_pid,
            broker_cpus,
            loadavg_before,
            loadavg_after: sys::loadavg(),
            cpu_note,
        },
        phases,
        drain,
        produce_errors,
        send_errors: shared.send_errors.load(Ordering::Relaxed),
        consume_errors,
        transactions,
        warnings,
        series: col.series,
    })
}

/// A plain statement of who shares which CPUs, for the report.
fn cpu_note(host: usize, gen: &[usize], broker: Option<&[usize]>) -> String {
    let all: Vec<usize> = (0..host).collect();
    let gen_all = gen.len() >= host || gen == all.as_slice();
    match broker {
        Some(b) if !gen_all && !b.iter().any(|c| gen.contains(c)) => format!(
            "{host} CPUs: generator pinned to {gen:?}, broker to {b:?} (separate CPUs; \
             other processes on the host may still use both)"
        ),
        Some(b) => format!(
            "{host} CPUs shared between broker (CPUs {b:?}) and generator (CPUs {gen:?}): \
             figures include the generator's CPU cost competing with the broker"
        ),
        None if gen_all => format!(
            "{host} CPUs shared between broker and generator (no pinning): figures include the \
             generator's CPU cost competing with the broker, if the broker runs on this host"
        ),
        None => format!("{host} CPUs; generator pinned to {gen:?}"),
    }
}
