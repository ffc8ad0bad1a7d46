//! Consumer groups with real clients: several rdkafka consumers (each its own client, one
//! thread each) subscribe to a 6-partition topic and commit after processing; the tests
//! check that the partitions are split without overlap, that every record is consumed
//! exactly once across members, member death / arrival, cooperative-sticky, static
//! membership, committed offsets across a broker kill -9, and the coordinator's error codes
//! for bad requests over raw TCP.
//!
//! A member that must die without a LeaveGroup runs in a child process: this test binary
//! itself, re-run with only the ignored [`member_process`] test and the member's settings in
//! `SLUICE_GROUPS_MEMBER`; it reports what it does as `NOTE ...` lines on stdout, and the
//! test kills it with SIGKILL.
//!
//! Every test starts its own broker. Consumers use a 6 s session timeout (the broker's
//! minimum) and a 1 s heartbeat so dead members are noticed quickly; the coordinator delays
//! a new group's first rebalance by 3 s (group.initial.rebalance.delay.ms).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice_tests::kafka::{
    admin, base_config, base_timestamp, consumer, create_topics, produce_all, producer,
    wait_for_topic, Rec, OP_TIMEOUT,
};
use sluice_tests::wire::{self, Dec, Enc};
use sluice_tests::{skip_in_cluster_mode, Broker};

const PARTITIONS: i32 = 6;
const SESSION_TIMEOUT_MS: &str = "6000";
const HEARTBEAT_INTERVAL_MS: &str = "1000";
/// Bound on a group reaching an expected assignment or consuming what was produced: the
/// initial rebalance delay, a session timeout for a dead member, join/sync rounds, with
/// slack for a loaded 2-core machine running other tests.
const SETTLE: Duration = Duration::from_secs(60);
/// Env var carrying a child member's settings (see [`member_process`]).
const MEMBER_ENV: &str = "SLUICE_GROUPS_MEMBER";
/// A child member exits on its own after this long, should its parent vanish.
const CHILD_LIFETIME: Duration = Duration::from_secs(180);

// ---- what a member observed ---------------------------------------------------------------

/// One processed record: where it was, whether its synchronous commit succeeded, when.
#[derive(Clone, Debug)]
struct Delivery {
    partition: i32,
    offset: i64,
    committed: bool,
    at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Assign(BTreeSet<i32>),
    Revoke(BTreeSet<i32>),
    Error(String),
}

/// Everything a member reports; in-process members and child processes fill the same shape.
#[derive(Debug)]
enum Note {
    Consumed(Delivery),
    /// `consumer.assignment()` changed to this.
    Assignment(BTreeSet<i32>),
    /// A rebalance callback (before the client applies it).
    Rebalance(Event),
    Protocol(String),
    Error(String),
}

impl Note {
    fn encode(&self) -> String {
        let set = |s: &BTreeSet<i32>| {
            let v: Vec<String> = s.iter().map(|p| p.to_string()).collect();
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        match self {
            Note::Consumed(d) => format!(
                "NOTE consumed {} {} {} {}",
                d.partition, d.offset, d.committed as u8, d.at_ms
            ),
            Note::Assignment(s) => format!("NOTE assignment {}", set(s)),
            Note::Rebalance(Event::Assign(s)) => format!("NOTE assign {}", set(s)),
            Note::Rebalance(Event::Revoke(s)) => format!("NOTE revoke {}", set(s)),
            Note::Rebalance(Event::Error(e)) => format!("NOTE rebalance-error {}", one_line(e)),
            Note::Protocol(p) => format!("NOTE protocol {p}"),
            Note::Error(e) => format!("NOTE error {}", one_line(e)),
        }
    }

    fn decode(line: &str) -> Option<Note> {
        let rest = line.strip_prefix("NOTE ")?;
        let (kind, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        let set = |a: &str| -> BTreeSet<i32> {
            if a == "-" {
                BTreeSet::new()
            } else {
                a.split(',').filter_map(|p| p.parse().ok()).collect()
            }
        };
        Some(match kind {
            "consumed" => {
                let f: Vec<i64> = arg.split(' ').filter_map(|x| x.parse().ok()).collect();
                if f.len() != 4 {
                    return None;
                }
                Note::Consumed(Delivery {
                    partition: f[0] as i32,
                    offset: f[1],
                    committed: f[2] == 1,
                    at_ms: f[3],
                })
            }
            "assignment" => Note::Assignment(set(arg)),
            "assign" => Note::Rebalance(Event::Assign(set(arg))),
            "revoke" => Note::Rebalance(Event::Revoke(set(arg))),
            "rebalance-error" => Note::Rebalance(Event::Error(arg.to_string())),
            "protocol" => Note::Protocol(arg.to_string()),
            "error" => Note::Error(arg.to_string()),
            _ => return None,
        })
    }
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

#[derive(Debug, Default)]
struct Log {
    name: String,
    consumed: Vec<Delivery>,
    /// Latest `assignment()`; `None` until the first poll.
    assignment: Option<BTreeSet<i32>>,
    events: Vec<Event>,
    protocol: Option<String>,
    errors: Vec<String>,
}

impl Log {
    fn apply(&mut self, note: Note) {
        match note {
            Note::Consumed(d) => self.consumed.push(d),
            Note::Assignment(s) => self.assignment = Some(s),
            Note::Rebalance(e) => self.events.push(e),
            Note::Protocol(p) => self.protocol = Some(p),
            Note::Error(e) => self.errors.push(e),
        }
    }
}

type Shared = Arc<Mutex<Log>>;
type Reporter = Arc<dyn Fn(Note) + Send + Sync>;

fn new_log(name: &str) -> Shared {
    Arc::new(Mutex::new(Log {
        name: name.to_string(),
        ..Log::default()
    }))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn partitions_of(tpl: &TopicPartitionList) -> BTreeSet<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

// ---- a member: one client subscribed to one topic -------------------------------------------

/// A member's settings.
#[derive(Clone, Debug)]
struct MemberCfg {
    bootstrap: String,
    group: String,
    topic: String,
    /// `partition.assignment.strategy`; librdkafka's default (range,roundrobin) if `None`.
    strategy: Option<String>,
    /// `group.instance.id` (static membership).
    instance_id: Option<String>,
    /// `group.protocol`: `consumer` for KIP-848 (ConsumerGroupHeartbeat); classic if `None`.
    protocol: Option<String>,
}

impl MemberCfg {
    fn new(bootstrap: &str, group: &str, topic: &str) -> MemberCfg {
        MemberCfg {
            bootstrap: bootstrap.to_string(),
            group: group.to_string(),
            topic: topic.to_string(),
            strategy: None,
            instance_id: None,
            protocol: None,
        }
    }

    /// KIP-848: the consumer group protocol, with the broker's default assignor.
    fn consumer_protocol(mut self) -> MemberCfg {
        self.protocol = Some("consumer".to_string());
        self
    }

    fn strategy(mut self, s: &str) -> MemberCfg {
        self.strategy = Some(s.to_string());
        self
    }

    fn instance(mut self, id: &str) -> MemberCfg {
        self.instance_id = Some(id.to_string());
        self
    }

    fn client_config(&self) -> ClientConfig {
        let mut cfg = base_config(&self.bootstrap);
        cfg.set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // The rebalance timeout: bounds a rebalance waiting for a member that is gone.
            .set("max.poll.interval.ms", "30000")
            .set("fetch.wait.max.ms", "100")
            // New topics matching a regex subscription are noticed within a second.
            .set("topic.metadata.refresh.interval.ms", "1000");
        match &self.protocol {
            // The broker owns session and heartbeat timing under KIP-848; librdkafka refuses
            // the classic settings with it.
            Some(p) => {
                cfg.set("group.protocol", p);
            }
            None => {
                cfg.set("session.timeout.ms", SESSION_TIMEOUT_MS)
                    .set("heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS);
            }
        }
        if let Some(s) = &self.strategy {
            cfg.set("partition.assignment.strategy", s);
        }
        if let Some(id) = &self.instance_id {
            cfg.set("group.instance.id", id);
        }
        cfg
    }

    /// `bootstrap|group|topic|strategy|instance|protocol` (`-`: unset), for a child's
    /// environment.
    fn encode(&self) -> String {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".to_string());
        format!(
            "{}|{}|{}|{}|{}|{}",
            self.bootstrap,
            self.group,
            self.topic,
            opt(&self.strategy),
            opt(&self.instance_id),
            opt(&self.protocol)
        )
    }

    fn decode(s: &str) -> MemberCfg {
        let f: Vec<&str> = s.split('|').collect();
        assert_eq!(f.len(), 6, "bad {MEMBER_ENV}: {s}");
        let opt = |x: &str| (x != "-").then(|| x.to_string());
        MemberCfg {
            bootstrap: f[0].to_string(),
            group: f[1].to_string(),
            topic: f[2].to_string(),
            strategy: opt(f[3]),
            instance_id: opt(f[4]),
            protocol: opt(f[5]),
        }
    }
}

/// Records the rebalance callbacks (what is assigned / revoked, before it is applied).
struct Ctx(Reporter);

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let event = match rebalance {
            Rebalance::Assign(tpl) => Event::Assign(partitions_of(tpl)),
            Rebalance::Revoke(tpl) => Event::Revoke(partitions_of(tpl)),
            Rebalance::Error(e) => Event::Error(e.to_string()),
        };
        (self.0)(Note::Rebalance(event));
    }
}

/// Subscribes and polls until `stop`: each record is "processed" (reported) and committed
/// synchronously before the next poll. Reports assignment changes and the rebalance
/// protocol. Returning drops the consumer, which closes it (LeaveGroup, unless static).
fn member_loop(cfg: &MemberCfg, report: Reporter, stop: &AtomicBool) {
    let consumer: BaseConsumer<Ctx> = cfg
        .client_config()
        .create_with_context(Ctx(report.clone()))
        .expect("create group consumer");
    consumer.subscribe(&[&cfg.topic]).expect("subscribe");
    let mut last: Option<BTreeSet<i32>> = None;
    let mut protocol_reported = false;
    while !stop.load(Ordering::SeqCst) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let (partition, offset) = (m.partition(), m.offset());
                let committed = match consumer.commit_message(&m, CommitMode::Sync) {
                    Ok(()) => true,
                    Err(e) => {
                        report(Note::Error(format!("commit {partition}/{offset}: {e}")));
                        false
                    }
                };
                report(Note::Consumed(Delivery {
                    partition,
                    offset,
                    committed,
                    at_ms: now_ms(),
                }));
            }
            Some(Err(e)) => report(Note::Error(format!("poll: {e}"))),
            None => {}
        }
        if let Ok(tpl) = consumer.assignment() {
            let now = partitions_of(&tpl);
            if last.as_ref() != Some(&now) {
                report(Note::Assignment(now.clone()));
                last = Some(now);
            }
        }
        if !protocol_reported {
            let name = match consumer.rebalance_protocol() {
                RebalanceProtocol::None => None,
                RebalanceProtocol::Eager => Some("Eager"),
                RebalanceProtocol::Cooperative => Some("Cooperative"),
            };
            if let Some(name) = name {
                report(Note::Protocol(name.to_string()));
                protocol_reported = true;
            }
        }
    }
}

/// An in-process member on its own thread.
struct Member {
    log: Shared,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Member {
    fn start(name: &str, cfg: &MemberCfg) -> Member {
        let log = new_log(name);
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s, cfg) = (log.clone(), stop.clone(), cfg.clone());
        let thread = thread::Builder::new()
            .name(format!("member-{name}"))
            .spawn(move || {
                let report: Reporter = Arc::new(move |n| l.lock().unwrap().apply(n));
                member_loop(&cfg, report, &s)
            })
            .expect("spawn member thread");
        Member {
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops polling and closes the client (consumer close: LeaveGroup unless static).
    fn close(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if let Err(e) = t.join() {
                std::panic::resume_unwind(e);
            }
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A member in a child process (this binary running [`member_process`]), killable with -9.
struct ChildMember {
    log: Shared,
    child: Option<Child>,
    reader: Option<JoinHandle<()>>,
}

impl ChildMember {
    fn spawn(name: &str, cfg: &MemberCfg) -> ChildMember {
        let log = new_log(name);
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(&exe)
            .args(["member_process", "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(MEMBER_ENV, cfg.encode())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", exe.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let l = log.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(note) = Note::decode(&line) {
                    l.lock().unwrap().apply(note);
                }
            }
        });
        ChildMember {
            log,
            child: Some(child),
            reader: Some(reader),
        }
    }

    /// SIGKILL: no LeaveGroup, no commit, no close; the session has to time out.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for ChildMember {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The child side of [`ChildMember`]: a no-op unless run with `SLUICE_GROUPS_MEMBER`.
#[test]
#[ignore = "helper run as a child process by the group tests"]
fn member_process() {
    let Ok(spec) = std::env::var(MEMBER_ENV) else {
        return;
    };
    let cfg = MemberCfg::decode(&spec);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    thread::spawn(move || {
        thread::sleep(CHILD_LIFETIME);
        s.store(true, Ordering::SeqCst);
    });
    // Written straight to the process's stdout (not the test harness's capture); a failed
    // write means the parent is gone, so stop.
    let s = stop.clone();
    let report: Reporter = Arc::new(move |n: Note| {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{}", n.encode())
            .and_then(|_| out.flush())
            .is_err()
        {
            s.store(true, Ordering::SeqCst);
        }
    });
    member_loop(&cfg, report, &stop);
}

// ---- checks ---------------------------------------------------------------------------------

/// Polls `cond` every 50 ms until it returns `Ok`; panics with its last `Err` after `timeout`.
async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match cond() {
            Ok(v) => return v,
            Err(state) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last state: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn describe(logs: &[&Shared]) -> String {
    logs.iter()
        .map(|l| {
            let l = l.lock().unwrap();
            format!(
                "\n  {}: assignment {:?}, {} consumed, events {:?}, protocol {:?}, errors {:?}",
                l.name,
                l.assignment,
                l.consumed.len(),
                l.events,
                l.protocol,
                l.errors.iter().rev().take(5).collect::<Vec<_>>()
            )
        })
        .collect()
}

fn assignment(log: &Shared) -> BTreeSet<i32> {
    log.lock().unwrap().assignment.clone().unwrap_or_default()
}

/// Ok once the members' current assignments have exactly the given sizes, do not overlap,
/// and together cover every partition. Returns the assignments.
fn split(logs: &[&Shared], sizes: &[usize]) -> Result<Vec<BTreeSet<i32>>, String> {
    let sets: Vec<BTreeSet<i32>> = logs.iter().map(|l| assignment(l)).collect();
    let sizes_ok = sets.iter().zip(sizes).all(|(s, n)| s.len() == *n);
    let total: usize = sets.iter().map(|s| s.len()).sum();
    let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    if sizes_ok && total == union.len() && union == all {
        Ok(sets)
    } else {
        Err(describe(logs))
    }
}

async fn wait_split(what: &str, logs: &[&Shared], sizes: &[usize]) -> Vec<BTreeSet<i32>> {
    wait_until(what, SETTLE, || split(logs, sizes)).await
}

fn consumed_set(logs: &[&Shared]) -> BTreeSet<(i32, i64)> {
    logs.iter()
        .flat_map(|l| {
            let l = l.lock().unwrap();
            l.consumed
                .iter()
                .map(|d| (d.partition, d.offset))
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn wait_consumed(what: &str, logs: &[&Shared], want: &BTreeSet<(i32, i64)>) {
    wait_until(what, SETTLE, || {
        let got = consumed_set(logs);
        let missing: Vec<_> = want.difference(&got).take(10).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} of {} not consumed yet (first {missing:?}){}",
                want.difference(&got).count(),
                want.len(),
                describe(logs)
            ))
        }
    })
    .await
}

/// Every produced record was delivered, nothing else was, and no record was delivered
/// again after a delivery whose commit succeeded (redelivery is allowed only after a
/// failed commit: at-least-once for uncommitted records).
fn assert_exactly_once(what: &str, logs: &[&Shared], produced: &BTreeSet<(i32, i64)>) {
    // Per record: (at_ms, committed, member) of each delivery.
    type Deliveries = Vec<(i64, bool, String)>;
    let mut by_record: BTreeMap<(i32, i64), Deliveries> = BTreeMap::new();
    let mut commit_errors = Vec::new();
    for l in logs {
        let l = l.lock().unwrap();
        for d in &l.consumed {
            by_record.entry((d.partition, d.offset)).or_default().push((
                d.at_ms,
                d.committed,
                l.name.clone(),
            ));
        }
        commit_errors.extend(
            l.errors
                .iter()
                .filter(|e| e.starts_with("commit"))
                .map(|e| format!("{}: {e}", l.name)),
        );
    }
    let got: BTreeSet<(i32, i64)> = by_record.keys().copied().collect();
    let missing: Vec<_> = produced.difference(&got).collect();
    let unexpected: Vec<_> = got.difference(produced).collect();
    let mut redelivered = Vec::new();
    for (rec, ds) in &mut by_record {
        ds.sort();
        if let Some(first_committed) = ds.iter().position(|d| d.1) {
            if first_committed + 1 < ds.len() {
                redelivered.push((*rec, ds.clone()));
            }
        }
    }
    assert!(
        missing.is_empty() && unexpected.is_empty() && redelivered.is_empty(),
        "{what}: {} records produced, {} delivered; missing {missing:?}; not produced but \
         delivered {unexpected:?}; delivered again after a committed delivery \
         ((at_ms, committed, member) each) {redelivered:?}; commit errors {commit_errors:?}{}",
        produced.len(),
        got.len(),
        describe(logs)
    );
    if !commit_errors.is_empty() {
        eprintln!("{what}: commit errors (tolerated, at-least-once): {commit_errors:?}");
    }
}

/// Each record was consumed by the member that held its partition in `sets`.
fn assert_consumed_by_owner(
    what: &str,
    logs: &[&Shared],
    sets: &[BTreeSet<i32>],
    records: &BTreeSet<(i32, i64)>,
) {
    for (l, set) in logs.iter().zip(sets) {
        let l = l.lock().unwrap();
        for d in &l.consumed {
            if records.contains(&(d.partition, d.offset)) {
                assert!(
                    set.contains(&d.partition),
                    "{what}: {} consumed {}/{} but its partitions were {set:?}",
                    l.name,
                    d.partition,
                    d.offset
                );
            }
        }
    }
}

// ---- set-up ---------------------------------------------------------------------------------

async fn create_topic(bootstrap: &str, topic: &str) {
    create_topics(&admin(bootstrap), &[(topic, PARTITIONS, &[])]).await;
    wait_for_topic(&consumer(bootstrap), topic, PARTITIONS as usize).await;
}

/// Produces records `first..first + n` (record i to partition i % 6, key `k<i>`) with
/// acks=all; returns their (partition, offset)s.
async fn produce_range(
    bootstrap: &str,
    topic: &str,
    first: usize,
    n: usize,
) -> BTreeSet<(i32, i64)> {
    let ts = base_timestamp();
    let records: Vec<(i32, Rec)> = (first..first + n)
        .map(|i| {
            let rec = Rec {
                key: Some(format!("k{i}").into_bytes()),
                value: Some(format!("value {i}").into_bytes()),
                headers: Vec::new(),
                timestamp: ts + i as i64,
            };
            (i as i32 % PARTITIONS, rec)
        })
        .collect();
    let prod = producer(bootstrap, &[("acks", "all")]);
    produce_all(&prod, topic, &records)
        .await
        .into_iter()
        .collect()
}

/// Committed offsets of `group` for every partition of `topic`, read with OffsetFetch by a
/// client that does not join the group. Retries while the coordinator is not ready.
async fn committed(bootstrap: &str, group: &str, topic: &str) -> BTreeMap<i32, Offset> {
    let mut cfg = base_config(bootstrap);
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false");
    let c: BaseConsumer = cfg.create().expect("create offsets reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    wait_until("OffsetFetch", SETTLE, || {
        c.committed_offsets(tpl.clone(), OP_TIMEOUT)
            .map(|t| {
                t.elements()
                    .iter()
                    .map(|e| (e.partition(), e.offset()))
                    .collect()
            })
            .map_err(|e| e.to_string())
    })
    .await
}

/// Per partition, the offset after the last of `records` (what a full commit stores).
fn ends(records: &BTreeSet<(i32, i64)>) -> BTreeMap<i32, Offset> {
    let mut out: BTreeMap<i32, Offset> = (0..PARTITIONS).map(|p| (p, Offset::Invalid)).collect();
    for &(p, o) in records {
        let next = Offset::Offset(o + 1);
        let e = out.get_mut(&p).unwrap();
        if *e == Offset::Invalid || matches!(e, Offset::Offset(x) if *x < o + 1) {
            *e = next;
        }
    }
    out
}

// ---- 1. a group splits the partitions and consumes every record once ------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_split_partitions_and_consume_each_record_once() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    let topic = "share";
    create_topic(&b, topic).await;
    // Records before the group exists are read from the start (auto.offset.reset=earliest).
    let early = produce_range(&b, topic, 0, 120).await;
    let cfg = MemberCfg::new(&b, "share-group", topic);
    let members: Vec<Member> = (0..3)
        .map(|i| Member::start(&format!("m{i}"), &cfg))
        .collect();
    let logs: Vec<&Shared> = members.iter().map(|m| &m.log).collect();
    let sets = wait_split("3 members with 2 partitions each", &logs, &[2, 2, 2]).await;
    let late = produce_range(&b, topic, 120, 180).await;
    let all: BTreeSet<_> = early.union(&late).copied().collect();
    wait_consumed("all 300 records", &logs, &all).await;
    assert_exactly_once("share", &logs, &all);
    // Nothing rebalanced after the group became stable, so the later records were read by
    // the members owning their partitions.
    assert_eq!(
        split(&logs, &[2, 2, 2]).unwrap(),
        sets,
        "assignment changed"
    );
    assert_consumed_by_owner("share", &logs, &sets, &late);

    // DescribeGroups (via librdkafka's group list): Stable, 3 members with assignments.
    let admin_consumer = consumer(&b);
    let info = wait_until("group list shows share-group Stable", SETTLE, || {
        let list = admin_consumer
            .fetch_group_list(Some("share-group"), OP_TIMEOUT)
            .map_err(|e| e.to_string())?;
        let g = list.groups().iter().find(|g| g.name() == "share-group");
        match g {
            Some(g) if g.state() == "Stable" => Ok((
                g.protocol_type().to_string(),
                g.protocol().to_string(),
                g.members()
                    .iter()
                    .map(|m| m.assignment().map_or(0, |a| a.len()))
                    .collect::<Vec<_>>(),
            )),
            other => Err(format!(
                "{:?}",
                other.map(|g| (g.state(), g.members().len()))
            )),
        }
    })
    .await;
    assert_eq!(info.0, "consumer");
    assert_eq!(info.1, "range", "librdkafka's first common assignor");
    assert_eq!(info.2.len(), 3, "3 members");
    assert!(
        info.2.iter().all(|n| *n > 0),
        "every member has an assignment: {info:?}"
    );

    for m in members {
        m.close();
    }
    // The committed offsets cover everything.
    assert_eq!(committed(&b, "share-group", topic).await, ends(&all));
}

// ---- 2. a member killed without leaving -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_member_partitions_move_to_survivors_after_session_timeout() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    let topic = "victim";
    create_topic(&b, topic).await;
    let cfg = MemberCfg::new(&b, "victim-group", topic);
    let survivors = [Member::start("s0", &cfg), Member::start("s1", &cfg)];
    let mut victim = ChildMember::spawn("victim", &cfg);
    let victim_log = victim.log.clone();
    let logs = [&survivors[0].log, &survivors[1].log, &victim_log];
    let sets = wait_split("3 members with 2 partitions each", &logs, &[2, 2, 2]).await;

    let first = produce_range(&b, topic, 0, 120).await;
    wait_consumed("first batch", &logs, &first).await;
    let victim_count = victim_log.lock().unwrap().consumed.len();
    assert!(
        victim_count > 0,
        "the victim consumed its share{}",
        describe(&logs)
    );

    victim.kill9();
    let killed_at = Instant::now();
    let second = produce_range(&b, topic, 120, 120).await;
    let survivor_logs = [&survivors[0].log, &survivors[1].log];
    let after = wait_split(
        "survivors take over all 6 partitions",
        &survivor_logs,
        &[3, 3],
    )
    .await;
    let took = killed_at.elapsed();
    wait_consumed("second batch", &logs, &second).await;
    let all: BTreeSet<_> = first.union(&second).copied().collect();
    // The victim's partitions resume at its committed offsets: nothing of the first batch
    // is read twice, everything of the second is read once.
    assert_exactly_once("victim", &logs, &all);
    assert_eq!(
        victim_log.lock().unwrap().consumed.len(),
        victim_count,
        "a killed member consumed"
    );
    let victim_parts = &sets[2];
    assert!(
        victim_parts
            .iter()
            .all(|p| after[0].contains(p) || after[1].contains(p)),
        "victim's partitions {victim_parts:?} moved to survivors {after:?}"
    );
    // Not before the session timeout (minus a heartbeat of slack): a coordinator that
    // dropped the member early would also pass the checks above.
    assert!(
        took >= Duration::from_millis(4500),
        "partitions moved {took:?} after the kill, before the 6 s session timeout"
    );
    eprintln!("victim's partitions moved {took:?} after kill -9");
}

// ---- 3. a member joins ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_member_gets_partitions() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    let topic = "grow";
    create_topic(&b, topic).await;
    let cfg = MemberCfg::new(&b, "grow-group", topic);
    let m0 = Member::start("m0", &cfg);
    let m1 = Member::start("m1", &cfg);
    wait_split(
        "2 members with 3 partitions each",
        &[&m0.log, &m1.log],
        &[3, 3],
    )
    .await;
    let first = produce_range(&b, topic, 0, 60).await;
    wait_consumed("first batch", &[&m0.log, &m1.log], &first).await;

    let m2 = Member::start("m2", &cfg);
    let logs = [&m0.log, &m1.log, &m2.log];
    let sets = wait_split("the new member gets 2 partitions", &logs, &[2, 2, 2]).await;
    let second = produce_range(&b, topic, 60, 60).await;
    wait_consumed("second batch", &logs, &second).await;
    let all: BTreeSet<_> = first.union(&second).copied().collect();
    assert_exactly_once("grow", &logs, &all);
    assert_consumed_by_owner("grow", &logs, &sets, &second);
    assert!(
        !m2.log.lock().unwrap().consumed.is_empty(),
        "the new member consumed nothing"
    );
    // Eager protocol: the old members gave everything back before the new assignment.
    for l in [&m0.log, &m1.log] {
        let l = l.lock().unwrap();
        assert!(
            l.events.iter().any(|e| matches!(e, Event::Revoke(_))),
            "{}: no revocation in {:?}",
            l.name,
            l.events
        );
    }
}

// ---- 4. cooperative-sticky ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_keeps_untouched_partitions_during_rebalance() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    let topic = "coop";
    create_topic(&b, topic).await;
    let cfg = MemberCfg::new(&b, "coop-group", topic).strategy("cooperative-sticky");
    let m0 = Member::start("m0", &cfg);
    let m1 = Member::start("m1", &cfg);
    let before = wait_split(
        "2 members with 3 partitions each",
        &[&m0.log, &m1.log],
        &[3, 3],
    )
    .await;
    let first = produce_range(&b, topic, 0, 60).await;
    wait_consumed("first batch", &[&m0.log, &m1.log], &first).await;
    let marks: Vec<usize> = [&m0.log, &m1.log]
        .iter()
        .map(|l| l.lock().unwrap().events.len())
        .collect();

    let m2 = Member::start("m2", &cfg);
    let logs = [&m0.log, &m1.log, &m2.log];
    let after = wait_split("the new member gets 2 partitions", &logs, &[2, 2, 2]).await;
    for (i, l) in [&m0.log, &m1.log].iter().enumerate() {
        let l = l.lock().unwrap();
        assert_eq!(
            l.protocol.as_deref(),
            Some("Cooperative"),
            "{}: protocol",
            l.name
        );
        let kept: BTreeSet<i32> = before[i].intersection(&after[i]).copied().collect();
        assert_eq!(
            kept.len(),
            2,
            "{}: sticky: kept 2 of {:?}, now {:?}",
            l.name,
            before[i],
            after[i]
        );
        // Incremental: only the partitions given away were ever revoked, never the kept ones.
        let revoked: BTreeSet<i32> = l.events[marks[i]..]
            .iter()
            .filter_map(|e| match e {
                Event::Revoke(s) => Some(s.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        let given: BTreeSet<i32> = before[i].difference(&after[i]).copied().collect();
        assert_eq!(
            revoked,
            given,
            "{}: revoked during the rebalance (events {:?}), kept {kept:?}",
            l.name,
            &l.events[marks[i]..]
        );
    }
    let second = produce_range(&b, topic, 60, 60).await;
    wait_consumed("second batch", &logs, &second).await;
    let all: BTreeSet<_> = first.union(&second).copied().collect();
    assert_exactly_once("coop", &logs, &all);
    assert_consumed_by_owner("coop", &logs, &after, &second);
}

// ---- 5. static membership -------------------------------------------------------------------

/// Ok once `log`'s assignment is `want` again after a restart.
fn has_assignment(log: &Shared, want: &BTreeSet<i32>, others: &[&Shared]) -> Result<(), String> {
    if &assignment(log) == want {
        Ok(())
    } else {
        let mut all = vec![log];
        all.extend_from_slice(others);
        Err(describe(&all))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_restart_within_session_timeout_causes_no_rebalance() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    let topic = "static";
    create_topic(&b, topic).await;
    let cfg = MemberCfg::new(&b, "static-group", topic);
    let observer = Member::start("observer", &cfg.clone().instance("observer"));
    let mut closer = Member::start("closer", &cfg.clone().instance("closer"));
    let mut killed = ChildMember::spawn("killed", &cfg.clone().instance("killed"));
    let logs = [&observer.log, &closer.log, &killed.log];
    let sets = wait_split("3 static members with 2 partitions each", &logs, &[2, 2, 2]).await;
    let first = produce_range(&b, topic, 0, 60).await;
    wait_consumed("first batch", &logs, &first).await;
    let observer_events = observer.log.lock().unwrap().events.clone();
    let closer_events = closer.log.lock().unwrap().events.clone();

    // kill -9 and restart the process within the session timeout: the coordinator hands
    // the new incarnation the old member's assignment, nobody else rebalances.
    killed.kill9();
    let restarted = ChildMember::spawn("killed-again", &cfg.clone().instance("killed"));
    wait_until(
        "the restarted static member gets its old partitions",
        SETTLE,
        || has_assignment(&restarted.log, &sets[2], &[&observer.log, &closer.log]),
    )
    .await;

    // Consumer close of a static member sends no LeaveGroup (KIP-345); a new client with
    // the same instance id takes its place.
    // (Closing revokes the closer's partitions locally; compare what came before.)
    assert_eq!(
        closer.log.lock().unwrap().events,
        closer_events,
        "the closer rebalanced after the other static member's restart"
    );
    let closer_log = closer.log.clone();
    closer.close();
    closer = Member::start("closer-again", &cfg.clone().instance("closer"));
    wait_until(
        "the reopened static member gets its old partitions",
        SETTLE,
        || has_assignment(&closer.log, &sets[1], &[&observer.log, &restarted.log]),
    )
    .await;

    // Give a rebalance (which heartbeats announce within 1 s) time to show: a few heartbeat
    // intervals in which nothing may change for the observer.
    let quiet_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < quiet_until {
        let events = observer.log.lock().unwrap().events.clone();
        assert_eq!(
            events,
            observer_events,
            "the observer rebalanced after a static member's restart{}",
            describe(&[&observer.log, &closer.log, &restarted.log])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(assignment(&observer.log), sets[0]);

    // The new incarnations resume at the committed offsets of the old ones.
    let second = produce_range(&b, topic, 60, 60).await;
    let now_logs = [&observer.log, &closer.log, &restarted.log];
    wait_consumed("second batch", &now_logs, &second).await;
    let all: BTreeSet<_> = first.union(&second).copied().collect();
    let every = [
        &observer.log,
        &closer_log,
        &killed.log,
        &closer.log,
        &restarted.log,
    ];
    assert_exactly_once("static", &every, &all);
    assert_consumed_by_owner("static", &now_logs, &sets, &second);
}

// ---- 5b. KIP-848: the consumer group protocol ----------------------------------------------

/// The broker's `group.consumer.heartbeat.interval.ms`: KIP-848 members heartbeat at the
/// pace the broker sets.
const KIP848_HEARTBEAT: Duration = Duration::from_secs(5);

/// A ConsumerGroupDescribe answer, as far as the tests look at it.
#[derive(Debug)]
struct Described {
    error: i16,
    state: String,
    epoch: i32,
    assignment_epoch: i32,
    assignor: String,
    members: Vec<DescribedMember>,
}

#[derive(Debug)]
struct DescribedMember {
    epoch: i32,
    subscribed: Vec<String>,
    /// (topic name, partition) of the current assignment.
    assigned: Vec<(String, i32)>,
    member_type: i8,
}

/// ConsumerGroupDescribe v1 for one group, by hand (flexible: request header v2).
fn consumer_group_describe(broker: &Broker, group: &str) -> Described {
    let mut req = Vec::new();
    req.extend_from_slice(&69i16.to_be_bytes());
    req.extend_from_slice(&1i16.to_be_bytes());
    req.extend_from_slice(&9i32.to_be_bytes());
    req.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    req.push(0); // header tagged fields
    req.push(2); // one group
    req.push(group.len() as u8 + 1);
    req.extend_from_slice(group.as_bytes());
    req.push(0); // include_authorized_operations = false
    req.push(0);
    let mut s = wire::connect(broker);
    s.write_all(&wire::frame(&req)).unwrap();
    let resp = wire::read_response(&mut s).expect("an answer");
    let mut d = wire::Flex(&resp);
    assert_eq!(d.i32(), 9, "correlation id");
    d.tagged();
    let _throttle = d.i32();
    assert_eq!(d.len(), 1, "one group");
    let error = d.i16();
    let _message = d.string();
    let _group = d.string();
    let state = d.string();
    let epoch = d.i32();
    let assignment_epoch = d.i32();
    let assignor = d.string();
    let mut members = Vec::new();
    for _ in 0..d.len() {
        let _id = d.string();
        let _instance = d.string();
        let _rack = d.string();
        let member_epoch = d.i32();
        let _client = d.string();
        let _host = d.string();
        let subscribed = (0..d.len()).map(|_| d.string()).collect();
        let _regex = d.string();
        let read_assignment = |d: &mut wire::Flex| {
            let mut out = Vec::new();
            for _ in 0..d.len() {
                let _id = d.uuid();
                let name = d.string();
                for _ in 0..d.len() {
                    out.push((name.clone(), d.i32()));
                }
                d.tagged();
            }
            d.tagged();
            out
        };
        let assigned = read_assignment(&mut d);
        let _target = read_assignment(&mut d);
        let member_type = d.i8();
        d.tagged();
        members.push(DescribedMember {
            epoch: member_epoch,
            subscribed,
            assigned,
            member_type,
        });
    }
    Described {
        error,
        state,
        epoch,
        assignment_epoch,
        assignor,
        members,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_members_split_join_and_leave_consuming_each_record_once() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    let topic = "kip848";
    create_topic(&b, topic).await;
    let early = produce_range(&b, topic, 0, 120).await;
    let cfg = MemberCfg::new(&b, "kip848-group", topic).consumer_protocol();
    let mut members: Vec<Member> = (0..3)
        .map(|i| Member::start(&format!("m{i}"), &cfg))
        .collect();
    let logs: Vec<&Shared> = members.iter().map(|m| &m.log).collect();
    wait_split(
        "3 KIP-848 members with 2 partitions each",
        &logs,
        &[2, 2, 2],
    )
    .await;
    wait_consumed("the first 120 records", &logs, &early).await;

    // A fourth member: the broker's uniform assignor moves two partitions to it, and the
    // others keep the rest (revoke first, then assign: nothing is read twice).
    members.push(Member::start("m3", &cfg));
    let logs: Vec<&Shared> = members.iter().map(|m| &m.log).collect();
    let four = wait_until("4 members split 6 partitions", SETTLE, || {
        let sets: Vec<BTreeSet<i32>> = logs.iter().map(|l| assignment(l)).collect();
        let mut sizes: Vec<usize> = sets.iter().map(|s| s.len()).collect();
        sizes.sort();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        if sizes == [1, 1, 2, 2] && union.len() == PARTITIONS as usize {
            Ok(sets)
        } else {
            Err(describe(&logs))
        }
    })
    .await;
    let middle = produce_range(&b, topic, 120, 60).await;
    wait_consumed("records after the join", &logs, &middle).await;
    assert_consumed_by_owner("kip848", &logs, &four, &middle);

    // One leaves (close sends the leave heartbeat): its partitions go to the others.
    let left = members.remove(1);
    let left_log = left.log.clone();
    left.close();
    let logs: Vec<&Shared> = members.iter().map(|m| &m.log).collect();
    wait_split("3 members again after one left", &logs, &[2, 2, 2]).await;
    let late = produce_range(&b, topic, 180, 60).await;
    wait_consumed("records after the leave", &logs, &late).await;

    // ConsumerGroupDescribe (what `describe_consumer_groups` sends): a consumer-protocol
    // group with 3 members, each at the group's epoch with 2 partitions.
    if sluice_tests::test_cluster_nodes().is_none() {
        let d = wait_until("ConsumerGroupDescribe shows a Stable group", SETTLE, || {
            let d = consumer_group_describe(&broker, "kip848-group");
            if d.state == "Stable" && d.members.len() == 3 {
                Ok(d)
            } else {
                Err(format!("{d:?}"))
            }
        })
        .await;
        assert_eq!(d.error, 0);
        assert_eq!(d.assignor, "uniform");
        assert!(d.epoch > 0 && d.assignment_epoch == d.epoch, "{d:?}");
        for m in &d.members {
            assert_eq!(m.epoch, d.epoch, "{d:?}");
            assert_eq!(m.member_type, 1, "a consumer-protocol member: {d:?}");
            assert_eq!(m.assigned.len(), 2, "{d:?}");
            assert_eq!(m.subscribed, vec![topic.to_string()]);
        }
    }

    let all: BTreeSet<_> = early.union(&middle).chain(late.iter()).copied().collect();
    let mut every = logs.clone();
    every.push(&left_log);
    assert_exactly_once("kip848", &every, &all);
    for m in members {
        m.close();
    }
    assert_eq!(committed(&b, "kip848-group", topic).await, ends(&all));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_static_member_reopened_gets_its_partitions_back() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    let topic = "kip848-static";
    create_topic(&b, topic).await;
    let cfg = MemberCfg::new(&b, "kip848-static-group", topic).consumer_protocol();
    let observer = Member::start("observer", &cfg.clone().instance("observer"));
    let closer = Member::start("closer", &cfg.clone().instance("closer"));
    let logs = [&observer.log, &closer.log];
    let sets = wait_split("2 static members with 3 partitions each", &logs, &[3, 3]).await;
    let first = produce_range(&b, topic, 0, 60).await;
    wait_consumed("first batch", &logs, &first).await;
    let observer_events = observer.log.lock().unwrap().events.clone();

    // Closing a static member sends the "leaving for now" epoch (-2): the broker keeps its
    // partitions for it, and a new client with the same instance id gets them back.
    let closer_log = closer.log.clone();
    closer.close();
    let reopened = Member::start("reopened", &cfg.clone().instance("closer"));
    wait_until(
        "the reopened static member gets its old partitions",
        SETTLE,
        || has_assignment(&reopened.log, &sets[1], &[&observer.log]),
    )
    .await;
    // Two heartbeat intervals in which the observer must not be touched.
    let quiet_until = Instant::now() + 2 * KIP848_HEARTBEAT;
    while Instant::now() < quiet_until {
        assert_eq!(
            observer.log.lock().unwrap().events,
            observer_events,
            "the observer rebalanced after a static member's restart{}",
            describe(&[&observer.log, &reopened.log])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second = produce_range(&b, topic, 60, 60).await;
    let now_logs = [&observer.log, &reopened.log];
    wait_consumed("second batch", &now_logs, &second).await;
    let all: BTreeSet<_> = first.union(&second).copied().collect();
    assert_exactly_once(
        "kip848-static",
        &[&observer.log, &closer_log, &reopened.log],
        &all,
    );
}

/// UpdateFeatures v1 of one feature over raw TCP: the response's top-level error code.
fn update_feature(broker: &Broker, name: &str, level: i16, upgrade_type: i8) -> i16 {
    let mut req = Vec::new();
    req.extend_from_slice(&57i16.to_be_bytes());
    req.extend_from_slice(&1i16.to_be_bytes());
    req.extend_from_slice(&11i32.to_be_bytes());
    req.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    req.push(0); // header tagged fields
    req.extend_from_slice(&30_000i32.to_be_bytes()); // timeout_ms
    req.push(2); // one update
    req.push(name.len() as u8 + 1);
    req.extend_from_slice(name.as_bytes());
    req.extend_from_slice(&level.to_be_bytes());
    req.push(upgrade_type as u8);
    req.push(0); // the update's tagged fields
    req.push(0); // validate_only = false
    req.push(0);
    let mut s = wire::connect(broker);
    s.write_all(&wire::frame(&req)).unwrap();
    let resp = wire::read_response(&mut s).expect("an answer");
    let mut d = wire::Flex(&resp);
    assert_eq!(d.i32(), 11, "correlation id");
    d.tagged();
    let _throttle = d.i32();
    d.i16()
}

/// group.version (KIP-584) turns the KIP-848 protocol off and on as in Kafka: at level 0
/// its APIs answer UNSUPPORTED_VERSION (and stay listed in ApiVersions); back at 1 they
/// serve again.
#[test]
fn kip848_is_refused_while_group_version_is_0() {
    const UNSUPPORTED_VERSION: i16 = 35;
    let broker = Broker::start();
    // A safe downgrade to 0 (type 2); the answer comes once this node applied it.
    assert_eq!(update_feature(&broker, "group.version", 0, 2), 0);
    assert_eq!(
        consumer_group_describe(&broker, "g").error,
        UNSUPPORTED_VERSION
    );
    // An upgrade (type 1) back to 1.
    assert_eq!(update_feature(&broker, "group.version", 1, 1), 0);
    assert_ne!(
        consumer_group_describe(&broker, "g").error,
        UNSUPPORTED_VERSION
    );
    // A level this build does not serve: INVALID_UPDATE_VERSION, nothing changes.
    assert_eq!(update_feature(&broker, "group.version", 2, 1), 95);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_regex_subscription_picks_up_a_new_matching_topic() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    create_topic(&b, "rx-first").await;
    create_topic(&b, "other").await;
    let mut cfg = base_config(&b);
    cfg.set("group.id", "kip848-regex")
        .set("group.protocol", "consumer")
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "1000");
    let c: BaseConsumer = cfg.create().expect("create consumer");
    c.subscribe(&["^rx-.*"]).expect("subscribe");
    let topics_assigned = |c: &BaseConsumer| -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        if let Ok(tpl) = c.assignment() {
            for e in tpl.elements() {
                *out.entry(e.topic().to_string()).or_default() += 1;
            }
        }
        out
    };
    let deadline = Instant::now() + SETTLE;
    let want_first = BTreeMap::from([("rx-first".to_string(), PARTITIONS as usize)]);
    while topics_assigned(&c) != want_first {
        assert!(
            Instant::now() < deadline,
            "never got rx-first: {:?}",
            topics_assigned(&c)
        );
        let _ = c.poll(Duration::from_millis(100));
    }
    create_topic(&b, "rx-second").await;
    let want_both = BTreeMap::from([
        ("rx-first".to_string(), PARTITIONS as usize),
        ("rx-second".to_string(), PARTITIONS as usize),
    ]);
    let deadline = Instant::now() + SETTLE;
    while topics_assigned(&c) != want_both {
        assert!(
            Instant::now() < deadline,
            "the new matching topic was not assigned: {:?}",
            topics_assigned(&c)
        );
        let _ = c.poll(Duration::from_millis(100));
    }
}

// ---- 5c. rebalance timings, classic against KIP-848 (a benchmark, not a check) ----------------

/// Partitions taken away from members (revocation callbacks) since `from` events.
fn revoked_since(logs: &[&Shared], from: &[usize]) -> usize {
    logs.iter()
        .zip(from)
        .map(|(l, &n)| {
            l.lock().unwrap().events[n..]
                .iter()
                .map(|e| match e {
                    Event::Revoke(p) => p.len(),
                    _ => 0,
                })
                .sum::<usize>()
        })
        .sum()
}

fn event_counts(logs: &[&Shared]) -> Vec<usize> {
    logs.iter()
        .map(|l| l.lock().unwrap().events.len())
        .collect()
}

/// Both protocols on one broker, one after the other: how long 3 members take to split 6
/// partitions from nothing, how long a fourth takes to get its share of a stable group (and
/// how many partitions the others give up meanwhile), how long a leaver's partitions take to
/// reach the rest. Run by `perf/group-rebalance.sh`, which records it in perf/results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: perf/group-rebalance.sh"]
async fn group_rebalance_timings() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    let round = std::env::var("SLUICE_REBALANCE_ROUND").unwrap_or_else(|_| "0".into());
    for protocol in ["classic", "consumer"] {
        let topic = format!("rb-{protocol}-{round}");
        create_topic(&b, &topic).await;
        let mut cfg = MemberCfg::new(&b, &format!("rb-{protocol}-{round}"), &topic);
        if protocol == "consumer" {
            cfg = cfg.consumer_protocol();
        } else {
            cfg = cfg.strategy("range");
        }
        let t0 = Instant::now();
        let mut members: Vec<Member> = (0..3)
            .map(|i| Member::start(&format!("{protocol}{i}"), &cfg))
            .collect();
        let logs: Vec<&Shared> = members.iter().map(|m| &m.log).collect();
        wait_split("3 members split 6 partitions", &logs, &[2, 2, 2]).await;
        let first = t0.elapsed();

        let before = event_counts(&logs);
        let t1 = Instant::now();
        members.push(Member::start(&format!("{protocol}3"), &cfg));
        let logs: Vec<&Shared> = members.iter().map(|m| &m.log).collect();
        wait_until("4 members split 6 partitions", SETTLE, || {
            let sets: Vec<BTreeSet<i32>> = logs.iter().map(|l| assignment(l)).collect();
            let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
            let total: usize = sets.iter().map(|s| s.len()).sum();
            if sets.iter().all(|s| !s.is_empty()) && total == 6 && union.len() == 6 {
                Ok(())
            } else {
                Err(describe(&logs))
            }
        })
        .await;
        let join = t1.elapsed();
        let revoked = revoked_since(&logs[..3], &before);

        let t2 = Instant::now();
        let leaver = members.remove(0);
        leaver.close();
        let logs: Vec<&Shared> = members.iter().map(|m| &m.log).collect();
        wait_split("3 members after a leave", &logs, &[2, 2, 2]).await;
        let leave = t2.elapsed();
        println!(
            "REBALANCE protocol={protocol} first_ms={} join_ms={} join_revoked={revoked} leave_ms={}",
            first.as_millis(),
            join.as_millis(),
            leave.as_millis()
        );
        for m in members {
            m.close();
        }
    }
}

// ---- 6. committed offsets survive a broker crash --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_broker_kill9() {
    let mut broker = Broker::start();
    let b = broker.bootstrap();
    let topic = "durable";
    create_topic(&b, topic).await;
    let cfg = MemberCfg::new(&b, "durable-group", topic);
    let first = produce_range(&b, topic, 0, 120).await;
    let a = Member::start("a", &cfg);
    wait_split("one member with every partition", &[&a.log], &[6]).await;
    wait_consumed("first batch", &[&a.log], &first).await;

    // Every commit was answered, so it was durable: a crash must not lose any.
    broker.kill9();
    broker.restart();
    assert_eq!(
        committed(&b, "durable-group", topic).await,
        ends(&first),
        "committed offsets after kill -9"
    );
    let admin_consumer = consumer(&b);
    wait_until(
        "ListGroups shows the group after the restart",
        SETTLE,
        || {
            let list = admin_consumer
                .fetch_group_list(None, OP_TIMEOUT)
                .map_err(|e| e.to_string())?;
            let names: Vec<String> = list.groups().iter().map(|g| g.name().to_string()).collect();
            if names.iter().any(|n| n == "durable-group") {
                Ok(())
            } else {
                Err(format!("groups {names:?}"))
            }
        },
    )
    .await;

    // The member that lived through the crash carries on (its session was restored).
    let second = produce_range(&b, topic, 120, 60).await;
    wait_consumed(
        "second batch, by the member that lived through the crash",
        &[&a.log],
        &second,
    )
    .await;
    let a_log = a.log.clone();
    a.close();

    // A new member resumes at the committed offsets: only new records.
    let third = produce_range(&b, topic, 180, 60).await;
    let c = Member::start("c", &cfg);
    wait_consumed("third batch, by a new member", &[&c.log], &third).await;
    let mut all: BTreeSet<_> = first.union(&second).copied().collect();
    all.extend(third.iter().copied());
    assert_exactly_once("durable", &[&a_log, &c.log], &all);
    c.close();
    assert_eq!(committed(&b, "durable-group", topic).await, ends(&all));
}

/// `__consumer_offsets` is compacted: after many commits of one group the log cleaner
/// leaves about one record per (group, partition) below the active segment, and a
/// restarted broker still serves the latest commit of every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offsets_topic_is_compacted_and_replays_the_latest_commits() {
    use sluice_tests::kafka::{alter_topic_config, consume_all};
    use sluice_tests::BrokerConfig;
    let mut broker = Broker::start_with(BrokerConfig {
        extra_args: vec!["--log-cleaner-interval-ms".into(), "100".into()],
        ..BrokerConfig::default()
    });
    let b = broker.bootstrap();
    let topic = "committed-often";
    create_topic(&b, topic).await;
    let mut cfg = base_config(&b);
    cfg.set("group.id", "compacted-group")
        .set("enable.auto.commit", "false");
    let c: BaseConsumer = cfg.create().expect("committer");
    // The first commit creates the offsets topic; then its segments are made small.
    let commit = |round: i64| {
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Offset(round * 10 + i64::from(p)))
                .unwrap();
        }
        c.commit(&tpl, CommitMode::Sync)
    };
    wait_until("the first commit", SETTLE, || {
        commit(0).map_err(|e| e.to_string())
    })
    .await;
    alter_topic_config(
        &admin(&b),
        "__consumer_offsets",
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "4096"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    )
    .await;
    let rounds = 300;
    for round in 1..=rounds {
        commit(round).expect("commit");
    }
    let want: BTreeMap<i32, Offset> = (0..PARTITIONS)
        .map(|p| (p, Offset::Offset(rounds * 10 + i64::from(p))))
        .collect();
    assert_eq!(committed(&b, "compacted-group", topic).await, want);
    // The offsets topic shrinks to a few records per partition committed. (Only the
    // partition the group's commits went to: on a cluster the others hold Raft's election
    // no-op alone, a control batch no consumer is given.)
    let reader = consumer(&b);
    let offsets: Vec<i32> = (0..50)
        .filter(|&p| {
            let (lo, hi) = sluice_tests::kafka::watermarks(&reader, "__consumer_offsets", p);
            hi - lo > 100
        })
        .collect();
    assert_eq!(offsets.len(), 1, "one partition holds the group's commits");
    let deadline = Instant::now() + SETTLE;
    loop {
        let read = consume_all(&reader, "__consumer_offsets", &offsets, OP_TIMEOUT).await;
        let left: usize = read.values().map(Vec::len).sum();
        if left < 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the offsets topic not compacted: {left} of {} records left",
            (rounds + 1) * 6
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    broker.stop_ok();
    broker.restart();
    assert_eq!(
        committed(&b, "compacted-group", topic).await,
        want,
        "the latest commits, replayed from the compacted log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_group_carries_on_across_a_broker_kill9() {
    let mut broker = Broker::start();
    let b = broker.bootstrap();
    let topic = "kip848-durable";
    create_topic(&b, topic).await;
    let cfg = MemberCfg::new(&b, "kip848-durable-group", topic).consumer_protocol();
    let first = produce_range(&b, topic, 0, 120).await;
    let a = Member::start("a", &cfg);
    let c = Member::start("c", &cfg);
    let sets = wait_split(
        "2 members with 3 partitions each",
        &[&a.log, &c.log],
        &[3, 3],
    )
    .await;
    wait_consumed("first batch", &[&a.log, &c.log], &first).await;
    let before = sluice_tests::test_cluster_nodes()
        .is_none()
        .then(|| consumer_group_describe(&broker, "kip848-durable-group"));

    // The group's epochs, members and assignments are records in __consumer_offsets: after
    // kill -9 the coordinator replays them, and the members' next heartbeats (with the
    // epochs they hold) are accepted as if nothing happened.
    broker.kill9();
    broker.restart();
    let second = produce_range(&b, topic, 120, 60).await;
    wait_consumed(
        "second batch, by the same members",
        &[&a.log, &c.log],
        &second,
    )
    .await;
    assert_eq!(
        split(&[&a.log, &c.log], &[3, 3]).unwrap(),
        sets,
        "the assignment moved across the restart"
    );
    if let Some(before) = before {
        let after = consumer_group_describe(&broker, "kip848-durable-group");
        assert_eq!(after.epoch, before.epoch, "{before:?} -> {after:?}");
        assert_eq!(after.members.len(), 2, "{after:?}");
    }
    let all: BTreeSet<_> = first.union(&second).copied().collect();
    assert_exactly_once("kip848-durable", &[&a.log, &c.log], &all);
    a.close();
    c.close();
    assert_eq!(
        committed(&b, "kip848-durable-group", topic).await,
        ends(&all)
    );
}

// ---- 7. bad requests over raw TCP -----------------------------------------------------------

const API_OFFSET_COMMIT: i16 = 8;
const API_FIND_COORDINATOR: i16 = 10;
const API_JOIN_GROUP: i16 = 11;
const API_HEARTBEAT: i16 = 12;
const API_LEAVE_GROUP: i16 = 13;
const API_SYNC_GROUP: i16 = 14;

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const ILLEGAL_GENERATION: i16 = 22;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const UNKNOWN_MEMBER_ID: i16 = 25;
const MEMBER_ID_REQUIRED: i16 = 79;

/// ConsumerProtocolSubscription v0 for one topic.
fn subscription(topic: &str) -> Vec<u8> {
    Enc::new().i16(0).i32(1).str(topic).i32(-1).0
}

/// ConsumerProtocolAssignment v0: `topic` with `partitions`.
fn assignment_bytes(topic: &str, partitions: &[i32]) -> Vec<u8> {
    let mut e = Enc::new()
        .i16(0)
        .i32(1)
        .str(topic)
        .i32(partitions.len() as i32);
    for p in partitions {
        e = e.i32(*p);
    }
    e.i32(-1).0
}

struct Joined {
    error: i16,
    generation: i32,
    protocol: String,
    leader: String,
    member_id: String,
    members: Vec<String>,
}

/// JoinGroup v5 (KIP-394 member ids, static membership field) with one protocol.
fn join_v5(
    s: &mut TcpStream,
    group: &str,
    member_id: &str,
    protocol_type: &str,
    protocols: &[(&str, &[u8])],
) -> Joined {
    let mut e = Enc::new()
        .str(group)
        .i32(30_000) // session timeout: outlives the test's pauses
        .i32(30_000) // rebalance timeout
        .str(member_id)
        .nstr(None)
        .str(protocol_type)
        .i32(protocols.len() as i32);
    for (name, meta) in protocols {
        e = e.str(name).bytes(meta);
    }
    let resp = wire::call(s, API_JOIN_GROUP, 5, 11, &e.0);
    let mut d = Dec::new(&resp);
    let _throttle = d.i32();
    let error = d.i16();
    let generation = d.i32();
    let protocol = d.nstr().unwrap_or_default();
    let leader = d.str();
    let member_id = d.str();
    let n = d.i32();
    let members = (0..n.max(0))
        .map(|_| {
            let id = d.str();
            let _instance = d.nstr();
            let _meta = d.bytes();
            id
        })
        .collect();
    Joined {
        error,
        generation,
        protocol,
        leader,
        member_id,
        members,
    }
}

fn heartbeat_v3(s: &mut TcpStream, group: &str, generation: i32, member_id: &str) -> i16 {
    let e = Enc::new()
        .str(group)
        .i32(generation)
        .str(member_id)
        .nstr(None);
    let resp = wire::call(s, API_HEARTBEAT, 3, 12, &e.0);
    let mut d = Dec::new(&resp);
    let _throttle = d.i32();
    d.i16()
}

/// SyncGroup v3; returns (error, assignment).
fn sync_v3(
    s: &mut TcpStream,
    group: &str,
    generation: i32,
    member_id: &str,
    assignments: &[(&str, &[u8])],
) -> (i16, Vec<u8>) {
    let mut e = Enc::new()
        .str(group)
        .i32(generation)
        .str(member_id)
        .nstr(None)
        .i32(assignments.len() as i32);
    for (m, a) in assignments {
        e = e.str(m).bytes(a);
    }
    let resp = wire::call(s, API_SYNC_GROUP, 3, 14, &e.0);
    let mut d = Dec::new(&resp);
    let _throttle = d.i32();
    let error = d.i16();
    (error, d.bytes().unwrap_or_default())
}

/// OffsetCommit v2 of one offset; returns the partition's error.
fn commit_v2(s: &mut TcpStream, group: &str, generation: i32, member_id: &str, topic: &str) -> i16 {
    commit_v2_partition(s, group, generation, member_id, topic, 0)
}

/// OffsetCommit v2 of offset 1 for one partition; returns the partition's error code.
fn commit_v2_partition(
    s: &mut TcpStream,
    group: &str,
    generation: i32,
    member_id: &str,
    topic: &str,
    partition: i32,
) -> i16 {
    let e = Enc::new()
        .str(group)
        .i32(generation)
        .str(member_id)
        .i64(-1) // retention: the broker's
        .i32(1)
        .str(topic)
        .i32(1)
        .i32(partition)
        .i64(1) // offset
        .nstr(None);
    let resp = wire::call(s, API_OFFSET_COMMIT, 2, 8, &e.0);
    let mut d = Dec::new(&resp);
    assert_eq!(d.i32(), 1, "one topic");
    assert_eq!(d.str(), topic);
    assert_eq!(d.i32(), 1, "one partition");
    assert_eq!(d.i32(), partition, "partition index");
    d.i16()
}

/// LeaveGroup v3 of one member; returns (top-level error, member error).
fn leave_v3(s: &mut TcpStream, group: &str, member_id: &str) -> (i16, i16) {
    let e = Enc::new().str(group).i32(1).str(member_id).nstr(None);
    let resp = wire::call(s, API_LEAVE_GROUP, 3, 13, &e.0);
    let mut d = Dec::new(&resp);
    let _throttle = d.i32();
    let error = d.i16();
    let n = d.i32();
    let member_error = if n > 0 {
        let _id = d.str();
        let _instance = d.nstr();
        d.i16()
    } else {
        -1
    };
    (error, member_error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_group_requests_get_kafka_error_codes() {
    let broker = Broker::start();
    let topic = "raw";
    create_topic(&broker.bootstrap(), topic).await;
    let group = "raw-group";
    let mut s = wire::connect(&broker);

    // FindCoordinator v0 (creates the offsets topic), until the coordinator is there: this
    // broker, or in test-cluster mode any node, which the rest of the test then talks to.
    let nodes = broker.node_ports();
    let deadline = Instant::now() + SETTLE;
    let coordinator_port = loop {
        let resp = wire::call(
            &mut s,
            API_FIND_COORDINATOR,
            0,
            10,
            &Enc::new().str(group).0,
        );
        let mut d = Dec::new(&resp);
        let error = d.i16();
        let (node, host, port) = (d.i32(), d.str(), d.i32());
        if error == NONE {
            assert!(
                nodes
                    .iter()
                    .any(|&(id, p)| (id, i32::from(p)) == (node, port)),
                "coordinator {node} at {host}:{port}, nodes {nodes:?}"
            );
            break port as u16;
        }
        assert_eq!(error, COORDINATOR_NOT_AVAILABLE, "FindCoordinator error");
        assert!(
            Instant::now() < deadline,
            "no coordinator within {SETTLE:?}"
        );
        thread::sleep(Duration::from_millis(50));
    };
    if coordinator_port != broker.port() {
        s = wire::connect_port(coordinator_port);
    }

    let meta = subscription(topic);
    let protocols: &[(&str, &[u8])] = &[("range", &meta)];
    // KIP-394: a first join without a member id gets one back with MEMBER_ID_REQUIRED. The
    // coordinator may still be loading its partition: retry those codes.
    let deadline = Instant::now() + SETTLE;
    let first = loop {
        let j = join_v5(&mut s, group, "", "consumer", protocols);
        if ![
            COORDINATOR_LOAD_IN_PROGRESS,
            NOT_COORDINATOR,
            COORDINATOR_NOT_AVAILABLE,
        ]
        .contains(&j.error)
            || Instant::now() >= deadline
        {
            break j;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        first.error, MEMBER_ID_REQUIRED,
        "first JoinGroup v5 without a member id"
    );
    assert!(
        !first.member_id.is_empty(),
        "MEMBER_ID_REQUIRED carries the new member id"
    );
    let me = first.member_id.clone();

    // Rejoin with it: after the initial rebalance delay, generation 1 with us as leader.
    let j = join_v5(&mut s, group, &me, "consumer", protocols);
    assert_eq!(j.error, NONE, "JoinGroup with the assigned member id");
    assert_eq!(j.member_id, me);
    assert_eq!(j.leader, me, "the only member leads");
    assert_eq!(j.protocol, "range");
    assert_eq!(j.members, vec![me.clone()]);
    let generation = j.generation;
    assert!(generation >= 1, "generation {generation}");

    let assignment = assignment_bytes(topic, &[0, 1, 2, 3, 4, 5]);
    let (error, got) = sync_v3(&mut s, group, generation, &me, &[(&me, &assignment)]);
    assert_eq!(error, NONE, "leader's SyncGroup");
    assert_eq!(got, assignment, "the leader gets its own assignment back");
    assert_eq!(
        heartbeat_v3(&mut s, group, generation, &me),
        NONE,
        "heartbeat of the member"
    );

    // Unknown member.
    assert_eq!(
        heartbeat_v3(&mut s, group, generation, "no-such-member"),
        UNKNOWN_MEMBER_ID,
        "Heartbeat of an unknown member"
    );
    assert_eq!(
        sync_v3(&mut s, group, generation, "no-such-member", &[]).0,
        UNKNOWN_MEMBER_ID,
        "SyncGroup of an unknown member"
    );
    // Stale and future generations.
    for g in [generation - 1, generation + 1] {
        assert_eq!(
            heartbeat_v3(&mut s, group, g, &me),
            ILLEGAL_GENERATION,
            "Heartbeat with generation {g} (current {generation})"
        );
        assert_eq!(
            sync_v3(&mut s, group, g, &me, &[]).0,
            ILLEGAL_GENERATION,
            "SyncGroup with generation {g} (current {generation})"
        );
        assert_eq!(
            commit_v2(&mut s, group, g, &me, topic),
            ILLEGAL_GENERATION,
            "OffsetCommit with generation {g} (current {generation})"
        );
    }
    assert_eq!(
        commit_v2(&mut s, group, generation, &me, topic),
        NONE,
        "OffsetCommit"
    );
    // Partitions that do not exist are refused, not stored (as Kafka does).
    assert_eq!(
        commit_v2(&mut s, group, generation, &me, "no-such-topic"),
        UNKNOWN_TOPIC_OR_PARTITION,
        "OffsetCommit to a topic that does not exist"
    );
    assert_eq!(
        commit_v2_partition(&mut s, group, generation, &me, topic, PARTITIONS + 3),
        UNKNOWN_TOPIC_OR_PARTITION,
        "OffsetCommit to a partition past the topic's count"
    );

    // A join with another protocol type, or with no protocol in common with the group.
    let other = join_v5(&mut s, group, "", "connect", protocols);
    assert_eq!(
        other.error, INCONSISTENT_GROUP_PROTOCOL,
        "JoinGroup with protocol type connect"
    );
    let other = join_v5(&mut s, group, "", "consumer", &[("roundrobin", &meta)]);
    assert_eq!(
        other.error, INCONSISTENT_GROUP_PROTOCOL,
        "JoinGroup with no common protocol"
    );
    // Neither disturbed the group.
    assert_eq!(
        heartbeat_v3(&mut s, group, generation, &me),
        NONE,
        "heartbeat after bad joins"
    );

    // Leaving ends the membership.
    assert_eq!(leave_v3(&mut s, group, &me), (NONE, NONE), "LeaveGroup");
    assert_eq!(
        heartbeat_v3(&mut s, group, generation, &me),
        UNKNOWN_MEMBER_ID,
        "Heartbeat after LeaveGroup"
    );
    // A second connection still gets answers: nothing above broke the broker.
    let mut s2 = wire::connect_port(coordinator_port);
    assert_eq!(
        heartbeat_v3(&mut s2, group, generation, &me),
        UNKNOWN_MEMBER_ID
    );
}

// ---- upgrade: groups an older sluice placed outside Kafka's partition -----------------------

/// "legacy-group-0".hashCode() is negative: sluice before Kafka's placement stored it in
/// `__consumer_offsets-4`, Kafka's `Utils.abs(hash) % 50` says 44.
const LEGACY_GROUP: &str = "legacy-group-0";
const LEGACY_TOPIC: &str = "legacy-topic";
/// What the fixture's group committed: partition → offset.
const LEGACY_COMMITS: [(i32, i64); 2] = [(0, 7), (3, 11)];

fn legacy_fixture() -> std::path::PathBuf {
    sluice_tests::workspace_root().join("tests/fixtures/legacy-group-placement.tar.gz")
}

/// Commits `offsets` for `group` without joining it (generation -1), as admin tools do.
async fn commit_offsets(bootstrap: &str, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let mut cfg = base_config(bootstrap);
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false");
    let c: BaseConsumer = cfg.create().expect("create committer");
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in offsets {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))
            .unwrap();
    }
    wait_until("OffsetCommit", SETTLE, || {
        c.commit(&tpl, CommitMode::Sync).map_err(|e| e.to_string())
    })
    .await;
}

/// Regenerates the fixture: run with `SLUICE_BIN` pointing at a sluice built from a71e1e7
/// (before Kafka's placement), e.g.
/// `SLUICE_BIN=/path/to/old/sluice cargo test -p sluice-tests --test groups -- --ignored make_legacy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn make_legacy_group_placement_fixture() {
    let mut broker = Broker::start();
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, LEGACY_TOPIC).await;
    commit_offsets(&bootstrap, LEGACY_GROUP, LEGACY_TOPIC, &LEGACY_COMMITS).await;
    broker.stop_ok();
    let out = legacy_fixture();
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(broker.data_dir())
        .arg("--exclude=space.reserve")
        .arg("--exclude=./.lock")
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_placed_by_an_older_sluice_are_moved_to_kafkas_partition() {
    skip_in_cluster_mode!(
        "restores a single-node data directory into one broker (an older sluice's; a node \
         of several voters may not upgrade in place)"
    );
    // A data dir written by the older sluice (see make_legacy_group_placement_fixture).
    let mut broker = Broker::start();
    broker.stop_ok();
    let data = broker.data_dir().to_path_buf();
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(legacy_fixture())
        .arg("-C")
        .arg(&data)
        .status()
        .expect("tar");
    assert!(status.success(), "unpacking the fixture");
    assert!(
        data.join("__consumer_offsets-4").exists(),
        "the fixture holds the legacy partition"
    );
    broker.restart();
    assert!(
        broker.stderr_log().contains("moved 1 consumer group(s)"),
        "the start moved the group"
    );
    let bootstrap = broker.bootstrap();
    let want: BTreeMap<i32, Offset> = (0..PARTITIONS)
        .map(|p| {
            let o = LEGACY_COMMITS.iter().find(|(q, _)| *q == p);
            (p, o.map_or(Offset::Invalid, |(_, o)| Offset::Offset(*o)))
        })
        .collect();
    assert_eq!(
        committed(&bootstrap, LEGACY_GROUP, LEGACY_TOPIC).await,
        want,
        "served from Kafka's partition with its committed offsets"
    );
    // A new commit wins over the moved one across restarts (the move runs once, and the old
    // copy was tombstoned).
    commit_offsets(&bootstrap, LEGACY_GROUP, LEGACY_TOPIC, &[(0, 8)]).await;
    broker.kill9();
    broker.restart();
    let mut want = want;
    want.insert(0, Offset::Offset(8));
    assert_eq!(
        committed(&bootstrap, LEGACY_GROUP, LEGACY_TOPIC).await,
        want
    );
    assert_eq!(
        broker
            .stderr_log()
            .matches("moved 1 consumer group(s)")
            .count(),
        1,
        "only the first start moved it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_classic_group_upgrades_online_and_downgrades_back() {
    // An eager classic consumer (librdkafka's default range,roundrobin).
    online_migration(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_cooperative_classic_member_migrates_online() {
    // A cooperative one keeps its other partitions while it gives some up (the classic
    // member passes through UNREVOKED_PARTITIONS inside the consumer group).
    online_migration(Some("cooperative-sticky")).await;
}

/// A classic group with one member is upgraded in place by a KIP-848 member joining, shares
/// its partitions, and turns classic again when that member leaves; every record once.
async fn online_migration(strategy: Option<&str>) {
    let broker = Broker::start();
    let b = broker.bootstrap();
    let topic = "migrate";
    let group = "migrate-group";
    create_topic(&b, topic).await;
    let early = produce_range(&b, topic, 0, 120).await;
    let mut classic_cfg = MemberCfg::new(&b, group, topic);
    if let Some(s) = strategy {
        classic_cfg = classic_cfg.strategy(s);
    }
    let classic = Member::start("classic", &classic_cfg);
    wait_split("the classic member alone", &[&classic.log], &[6]).await;
    wait_consumed("the first 120 records", &[&classic.log], &early).await;

    // A consumer-protocol member joins the running classic group: the group becomes a
    // consumer group in place, the classic member is told to rejoin, gives up half, and
    // the broker's assignor hands that half to the newcomer.
    let modern = Member::start(
        "modern",
        &MemberCfg::new(&b, group, topic).consumer_protocol(),
    );
    let logs = [&classic.log, &modern.log];
    wait_split("a classic and a consumer member share", &logs, &[3, 3]).await;
    let middle = produce_range(&b, topic, 120, 60).await;
    wait_consumed("records after the upgrade", &logs, &middle).await;
    if sluice_tests::test_cluster_nodes().is_none() {
        let d = consumer_group_describe(&broker, group);
        assert_eq!(d.error, 0, "{d:?}");
        let mut types: Vec<i8> = d.members.iter().map(|m| m.member_type).collect();
        types.sort();
        assert_eq!(types, vec![0, 1], "one classic, one consumer member: {d:?}");
    }

    // The consumer-protocol member leaves: only a classic member is left, so the group
    // turns classic again and its member takes every partition back in a rebalance.
    let modern_log = modern.log.clone();
    modern.close();
    wait_split("the classic member alone again", &[&classic.log], &[6]).await;
    let late = produce_range(&b, topic, 180, 60).await;
    wait_consumed("records after the downgrade", &[&classic.log], &late).await;
    if sluice_tests::test_cluster_nodes().is_none() {
        let d = consumer_group_describe(&broker, group);
        assert_eq!(
            d.error, 69,
            "GROUP_ID_NOT_FOUND: a classic group again: {d:?}"
        );
    }

    let all: BTreeSet<_> = early.union(&middle).chain(late.iter()).copied().collect();
    assert_exactly_once("online migration", &[&classic.log, &modern_log], &all);
    classic.close();
    assert_eq!(committed(&b, group, topic).await, ends(&all));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_classic_member_joins_a_running_consumer_group() {
    // The other direction of a rolling change: a consumer group running the KIP-848
    // protocol takes in a classic consumer (the broker assigns for it), and becomes a
    // classic group when its last KIP-848 member leaves.
    let broker = Broker::start();
    let b = broker.bootstrap();
    let topic = "mixed";
    let group = "mixed-group";
    create_topic(&b, topic).await;
    let early = produce_range(&b, topic, 0, 120).await;
    let modern = Member::start(
        "modern",
        &MemberCfg::new(&b, group, topic).consumer_protocol(),
    );
    wait_split("the KIP-848 member alone", &[&modern.log], &[6]).await;
    wait_consumed("the first 120 records", &[&modern.log], &early).await;
    let classic = Member::start("classic", &MemberCfg::new(&b, group, topic));
    let logs = [&modern.log, &classic.log];
    wait_split("a KIP-848 and a classic member share", &logs, &[3, 3]).await;
    let middle = produce_range(&b, topic, 120, 60).await;
    wait_consumed("records with both members", &logs, &middle).await;
    let modern_log = modern.log.clone();
    modern.close();
    wait_split("the classic member alone", &[&classic.log], &[6]).await;
    let late = produce_range(&b, topic, 180, 60).await;
    wait_consumed("records after the downgrade", &[&classic.log], &late).await;
    let all: BTreeSet<_> = early.union(&middle).chain(late.iter()).copied().collect();
    assert_exactly_once("classic joins consumer", &[&modern_log, &classic.log], &all);
    classic.close();
    assert_eq!(committed(&b, group, topic).await, ends(&all));
}
