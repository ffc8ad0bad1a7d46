//! History-checked fault tests (issue 12's "Real processes"): idempotent `acks=all`
//! producers and a reader run while nodes are killed, paused and cut off, and the recorded
//! history is checked by `sluice_tests::history` (no acknowledged record lost or moved, no
//! duplicates, order kept, nothing read later vanishes, high watermark never behind).
//!
//! The single-node run through kill -9/restart (replication factor 1), the checker firing on
//! a deliberately corrupted copy of that real history, the cluster harness driven with a
//! stand-in node (`tests/fixtures/fake_node.py`, needs python3) to show that each pair's
//! traffic goes through its own proxy and that every fault method cuts what it says, and the
//! 3-node fault cases on replication factor 3 (`require_cluster!()`: skipped with a printed
//! reason when `SLUICE_CLUSTER_TESTS=0`). Committed offsets with the coordinator's node dead
//! is ignored until the offsets topic is replicated.
//! Partition reassignments (AlterPartitionReassignments, ListPartitionReassignments) run on
//! three nodes too: a move to another node under `acks=all` with the leaving node killed
//! afterwards, a replication-factor increase, a move cancelled at once, and the list asked
//! of a node cut off from the controller (an error, never a stale answer); partitions of one
//! replica raised to three, moved to another node, shrunk back to one, and one moved while
//! its node was down (adopted at its restart), and one moved under replication throttles
//! (no faster than their rate: a lower bound only). DeleteRecords on
//! a partition with three replicas is checked across two kill -9s of its leader.
//! Controller metadata snapshots (forced small through `SLUICE_METADATA_SNAPSHOT_BYTES`)
//! compact the voters' WALs while a voter is killed, and it catches up from the snapshot.
//! A node whose data directory was wiped is refused by its peers and stops with the reason.
//! A broker-only node (4 nodes, 3 voters) with a manually assigned replica restarts, catches
//! up on the metadata and its replica, and once wiped is refused too.
//!
//! No assertion is on timing but the throttle's lower bound (a slow host only makes a
//! throttled move longer): faults come after a number of acknowledgements, not after a
//! time, and waits are bounded only to fail instead of hanging.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use sluice_tests::cluster::{controller_id, Cluster, ClusterConfig};
use sluice_tests::history::{check, CheckOptions, Report};
use sluice_tests::kafka::{admin, admin_opts, base_config, consumer, producer, wait_for_topic};
use sluice_tests::workload::{drop_acknowledged_record, Workload, WorkloadConfig};
use sluice_tests::{poll_until, require_cluster, skip_in_cluster_mode, Broker, BrokerConfig};

const TOPIC: &str = "jepsen";
const PARTITIONS: i32 = 3;
/// Acknowledgements between faults: enough that each fault lands mid-stream.
const ACKS_PER_STEP: u64 = 300;
/// Bound on reaching one step's acknowledgements (includes a restart or a failover).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longer than any election timeout a sluice node would use (Raft's default is ~1 s; this
/// is a lower bound on the pause, never a measured duration).
const PAST_ELECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on settling after a fault heals (ISR full, controller agreed).
const SETTLE: Duration = Duration::from_secs(60);

/// Creates `TOPIC` with `rf` replicas per partition and waits until every partition has a
/// leader.
async fn create_topic(bootstrap: &str, rf: i32) {
    // `rf` replicas need `rf` registered brokers (else INVALID_REPLICATION_FACTOR).
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "enough registered brokers", || {
            (broker_ids(bootstrap).len() >= rf as usize).then_some(())
        })
    });
    let t = NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(rf));
    let res = admin(bootstrap)
        .create_topics([&t], &admin_opts())
        .await
        .expect("CreateTopics request");
    for r in res {
        if let Err((name, code)) = r {
            panic!("CreateTopics {name}: {code:?}");
        }
    }
    wait_for_topic(&consumer(bootstrap), TOPIC, PARTITIONS as usize).await;
}

fn report(what: &str, r: &Report) {
    eprintln!("{what}: {r}");
}

/// One node, replication factor 1, three rounds of kill -9 and restart and a SIGSTOP under
/// the workload:
/// the real history is clean, and the same history with one acknowledged record removed
/// from every read (what losing it would look like) makes the checker report it lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_history_survives_kill9_and_the_checker_fires_on_a_lost_record() {
    skip_in_cluster_mode!(
        "the single-node (replication factor 1) case; the others in this file are the cluster's"
    );
    let mut broker = Broker::start_with(BrokerConfig {
        extra_args: vec!["--node-id".into(), "1".into()],
        ..BrokerConfig::default()
    });
    let bootstrap = broker.bootstrap();
    // A cluster of one is its own controller (checks the harness's raw Metadata parsing).
    assert_eq!(controller_id(broker.port()), Some(1));
    create_topic(&bootstrap, 1).await;
    let mut cfg = WorkloadConfig::new(&bootstrap, TOPIC, PARTITIONS);
    cfg.producers = 3;
    let w = Workload::start(cfg);
    w.wait_acked(ACKS_PER_STEP, STEP_TIMEOUT).await;
    for round in 0..3 {
        eprintln!("round {round}: kill -9 at {:?}", w.progress());
        tokio::task::block_in_place(|| broker.restart());
        w.wait_acked(ACKS_PER_STEP, STEP_TIMEOUT).await;
        // The reader gets through the restarted broker too.
        w.wait_rounds(2, STEP_TIMEOUT).await;
    }
    // A pause (SIGSTOP/SIGCONT) costs nothing but time.
    tokio::task::block_in_place(|| broker.pause());
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| broker.resume());
    w.wait_acked(ACKS_PER_STEP, STEP_TIMEOUT).await;
    let history = w.stop().await;
    let r = check(&history, CheckOptions::default());
    report("single node, kill -9 x3", &r);
    r.assert_clean("single node through kill -9");
    assert!(r.stats.acked > 0 && r.stats.records_read > 0, "{r}");

    let (lossy, victim) =
        drop_acknowledged_record(&history).expect("an acknowledged record in the final read");
    let r = check(&lossy, CheckOptions::default());
    report(&format!("the same history without {victim}"), &r);
    assert!(
        r.violations.iter().any(|v| matches!(v,
            sluice_tests::history::Violation::Lost { value, .. } if *value == victim)),
        "the checker missed the removed record {victim}:\n{r}"
    );
    broker.stop_ok();
}

/// A node's status from the stand-in's listener: (starts, voters, heard, acked), counters
/// keyed by peer id.
type Status = (
    u64,
    BTreeMap<usize, String>,
    BTreeMap<usize, u64>,
    BTreeMap<usize, u64>,
);

fn fake_status(port: u16) -> Option<Status> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
    let map = |key: &str| -> BTreeMap<usize, serde_json::Value> {
        doc[key]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.parse().unwrap(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let counts = |key: &str| {
        map(key)
            .into_iter()
            .map(|(k, v)| (k, v.as_u64().unwrap()))
            .collect()
    };
    let voters = map("voters")
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
        .collect();
    Some((
        doc["starts"].as_u64()?,
        voters,
        counts("heard"),
        counts("acked"),
    ))
}

/// Traffic counters for the directed pair `from → to`, as node `to` sees them: hellos on
/// `from`'s connection and acks on `to`'s own.
fn flow(c: &mut Cluster, from: usize, to: usize) -> (u64, u64) {
    let port = c.node(to).port();
    let (_, _, heard, acked) = fake_status(port).unwrap_or_else(|| panic!("status of node {to}"));
    (
        heard.get(&from).copied().unwrap_or(0),
        acked.get(&from).copied().unwrap_or(0),
    )
}

/// Waits (bounded) until `from`'s hellos reach `to`, and, when `to → from` is open too (an
/// ack needs `to`'s hello to get there first), `from`'s acks as well.
fn assert_flows(c: &mut Cluster, from: usize, to: usize) {
    let acks_too = !c.blocked().contains(&(to, from));
    let before = flow(c, from, to);
    poll_until(
        Duration::from_secs(30),
        &format!("traffic {from} → {to}"),
        || {
            let now = flow(c, from, to);
            (now.0 > before.0 && (!acks_too || now.1 > before.1)).then_some(())
        },
    );
}

/// After a settling moment, neither counter of `from → to` grows over a window. Only a
/// lower bound on silence: a slow machine cannot fail it, only traffic that gets through.
fn assert_blocked(c: &mut Cluster, from: usize, to: usize) {
    std::thread::sleep(Duration::from_millis(200));
    let before = flow(c, from, to);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        flow(c, from, to),
        before,
        "traffic {from} → {to} got through"
    );
}

fn check_matrix(c: &mut Cluster, what: &str) {
    eprintln!("{what}: blocked {:?}", c.blocked());
    let blocked = c.blocked().clone();
    let pairs: Vec<(usize, usize)> = c
        .ids()
        .flat_map(|i| c.ids().filter(move |&j| j != i).map(move |j| (i, j)))
        .collect();
    for &(from, to) in &pairs {
        if !blocked.contains(&(from, to)) {
            assert_flows(c, from, to);
        }
    }
    for &(from, to) in &pairs {
        if blocked.contains(&(from, to)) {
            assert_blocked(c, from, to);
        }
    }
}

fn fake_node() -> PathBuf {
    sluice_tests::workspace_root().join("tests/fixtures/fake_node.py")
}

/// The harness itself, with a stand-in node that pings its peers: each node is given the
/// proxy of its own pair for every peer, every fault method blocks exactly the directed
/// pairs it names, pause/resume, kill -9/restart (same ports, same data directory) and the
/// clean stop of every node.
#[test]
fn harness_routes_each_pair_through_its_own_proxy_and_faults_cut_what_they_name() {
    let mut c = Cluster::start_with(ClusterConfig {
        bin: Some(fake_node()),
        ..ClusterConfig::default()
    });
    assert_eq!(c.bootstrap().split(',').count(), 3);
    for i in c.ids().collect::<Vec<_>>() {
        let rpc = c.rpc_addr(i).to_string();
        let (starts, voters, _, _) = fake_status(c.node(i).port()).expect("status");
        assert_eq!(starts, 1);
        for j in c.ids() {
            let want = if i == j {
                rpc.clone()
            } else {
                c.proxy(i, j).addr().to_string()
            };
            assert_eq!(voters[&j], want, "node {i}'s address for node {j}");
        }
    }
    check_matrix(&mut c, "all healthy");

    c.isolate(1);
    check_matrix(&mut c, "node 1 isolated");
    c.heal();
    check_matrix(&mut c, "healed");

    c.split(&[1, 3], &[2]);
    check_matrix(&mut c, "split 1,3 | 2");
    c.bridge(&[1], 2, &[3]);
    check_matrix(&mut c, "bridge 1 - 2 - 3");
    c.heal();
    c.drop_one_way(3, 1);
    check_matrix(&mut c, "3 → 1 dropped");
    c.heal();
    check_matrix(&mut c, "healed again");

    c.node(2).pause();
    assert_blocked(&mut c, 2, 1);
    assert_blocked(&mut c, 2, 3);
    c.node(2).resume();
    check_matrix(&mut c, "node 2 resumed");

    let port = c.node(3).port();
    let data = c.node(3).data_dir().to_path_buf();
    c.node(3).kill9();
    c.node(3).restart();
    assert_eq!(c.node(3).port(), port);
    assert_eq!(c.node(3).data_dir(), data);
    assert_eq!(fake_status(port).expect("status").0, 2, "data dir kept");
    check_matrix(&mut c, "node 3 restarted");

    let statuses = c.stop_all();
    assert_eq!(statuses.len(), 3);
}

/// Which fault a 3-node case injects, each round, on the then-current leader.
#[derive(Clone, Copy, Debug)]
enum Fault {
    KillPartitionLeader,
    KillControllerLeader,
    PausePartitionLeader,
    IsolatePartitionLeader,
    /// The controller leader alone on the minority side of a split.
    SplitControllerIntoMinority,
}

/// The leader of partition 0 as Metadata reports it (bounded wait until one is known).
fn partition_leader(c: &Cluster) -> usize {
    let cons: BaseConsumer = base_config(&c.bootstrap())
        .create()
        .expect("metadata client");
    poll_until(SETTLE, "a leader for partition 0", || {
        let md = cons
            .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
            .ok()?;
        let t = md.topics().iter().find(|t| t.name() == TOPIC)?;
        let leader = t.partitions().iter().find(|p| p.id() == 0)?.leader();
        usize::try_from(leader)
            .ok()
            .filter(|l| (1..=c.len()).contains(l))
    })
}

/// Waits (bounded) until every partition lists every node in its ISR.
fn wait_isr_full(c: &Cluster) {
    let cons: BaseConsumer = base_config(&c.bootstrap())
        .create()
        .expect("metadata client");
    let n = c.len();
    poll_until(SETTLE, "ISR back to every replica", || {
        let md = cons
            .fetch_metadata(Some(TOPIC), Duration::from_secs(5))
            .ok()?;
        let t = md.topics().iter().find(|t| t.name() == TOPIC)?;
        (t.partitions().len() == PARTITIONS as usize
            && t.partitions().iter().all(|p| p.isr().len() == n))
        .then_some(())
    });
}

/// Leaders of `topic`'s partitions, in partition order, as `bootstrap`'s Metadata reports
/// them (-1: none).
fn leaders(bootstrap: &str, topic: &str) -> Option<Vec<i32>> {
    let cons: BaseConsumer = base_config(bootstrap).create().expect("metadata client");
    let md = cons
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    let mut ps: Vec<(i32, i32)> = t
        .partitions()
        .iter()
        .map(|p| (p.id(), p.leader()))
        .collect();
    ps.sort_unstable();
    Some(ps.into_iter().map(|(_, l)| l).collect())
}

/// How many replicas each partition of `topic` has in `bootstrap`'s Metadata (empty: none
/// known).
fn replica_counts(bootstrap: &str, topic: &str) -> Vec<usize> {
    let cons: BaseConsumer = base_config(bootstrap).create().expect("metadata client");
    let Ok(md) = cons.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return Vec::new();
    };
    md.topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.replicas().len()))
        .collect()
}

/// The broker ids in `bootstrap`'s Metadata.
fn broker_ids(bootstrap: &str) -> Vec<i32> {
    let cons: BaseConsumer = base_config(bootstrap).create().expect("metadata client");
    let mut ids: Vec<i32> = cons
        .fetch_metadata(None, Duration::from_secs(5))
        .map(|md| md.brokers().iter().map(|b| b.id()).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// Three real nodes with single-replica partitions: the controller quorum forms, every node
/// registers and is listed by every node's Metadata, a topic created through one node is
/// placed across all three, an idempotent producer and a consumer group bootstrapped from
/// one node each reach every partition's node, the offsets topic the group's lookup
/// creates has three replicas per partition, and after the controller leader is killed
/// the other two elect a new one that creates topics; the killed node comes back with its
/// data, and all stop cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_metadata_and_serve_every_partition() {
    const SPREAD: &str = "spread";
    const RECORDS: usize = 600;
    let mut c = Cluster::start(3);
    for id in c.ids() {
        let bootstrap = c.node(id).bootstrap();
        tokio::task::block_in_place(|| {
            poll_until(SETTLE, "every node listed in Metadata", || {
                (broker_ids(&bootstrap) == [1, 2, 3]).then_some(())
            })
        });
    }
    let via_two = c.node(2).bootstrap();
    let t = NewTopic::new(SPREAD, 6, TopicReplication::Fixed(1));
    let res = admin(&via_two)
        .create_topics([&t], &admin_opts())
        .await
        .expect("CreateTopics request");
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    // Placement spreads the six partitions' leaders over all three nodes, and every node
    // reports the same.
    let via_three = c.node(3).bootstrap();
    let spread = tokio::task::block_in_place(|| {
        poll_until(SETTLE, "leaders of every partition", || {
            leaders(&via_three, SPREAD).filter(|l| l.len() == 6 && l.iter().all(|&n| n > 0))
        })
    });
    let mut nodes = spread.clone();
    nodes.sort_unstable();
    nodes.dedup();
    assert_eq!(nodes, [1, 2, 3], "leaders {spread:?}");
    assert_eq!(
        leaders(&c.node(1).bootstrap(), SPREAD),
        Some(spread.clone())
    );

    per_node_broker_configs(&mut c).await;

    let p = producer(
        &c.node(1).bootstrap(),
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    for i in 0..RECORDS {
        let v = format!("v{i}");
        p.send(
            FutureRecord::<(), _>::to(SPREAD)
                .partition((i % 6) as i32)
                .payload(&v),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|e| panic!("produce #{i}: {e:?}"));
    }
    let count_all = |bootstrap: String, group: &'static str| {
        let mut cfg = base_config(&bootstrap);
        cfg.set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false");
        let cons: BaseConsumer = cfg.create().expect("consumer");
        cons.subscribe(&[SPREAD]).expect("subscribe");
        let mut seen = std::collections::BTreeSet::new();
        poll_until(SETTLE, "every record consumed", || {
            while let Some(m) = cons.poll(Duration::from_millis(200)) {
                let m = m.ok()?;
                use rdkafka::Message;
                seen.insert(String::from_utf8_lossy(m.payload()?).into_owned());
            }
            (seen.len() >= RECORDS).then_some(())
        });
        cons.commit_consumer_state(CommitMode::Sync)
            .expect("commit through the group's coordinator");
        seen.len()
    };
    let got = tokio::task::block_in_place(|| count_all(c.node(3).bootstrap(), "spread-readers"));
    assert_eq!(got, RECORDS);
    // Created by the group's coordinator lookup with Kafka's offsets.topic.replication.factor
    // (3: every node was live).
    let offsets = tokio::task::block_in_place(|| replica_counts(&via_two, "__consumer_offsets"));
    assert!(
        !offsets.is_empty() && offsets.iter().all(|&n| n == 3),
        "replicas per __consumer_offsets partition: {offsets:?}"
    );

    // The controller leader dies; the other two elect one that still creates topics.
    let old = tokio::task::block_in_place(|| c.controller(SETTLE));
    tokio::task::block_in_place(|| c.node(old).kill9());
    let survivor = c.ids().find(|&i| i != old).expect("another node");
    let survivor_bootstrap = c.node(survivor).bootstrap();
    let after = NewTopic::new("after-failover", 2, TopicReplication::Fixed(1));
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "CreateTopics after the controller died", || {
            let rt = tokio::runtime::Handle::current();
            let res = rt
                .block_on(admin(&survivor_bootstrap).create_topics([&after], &admin_opts()))
                .ok()?;
            match &res[0] {
                Ok(_) => Some(()),
                Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => Some(()),
                Err(e) => {
                    eprintln!("CreateTopics after failover: {e:?}");
                    None
                }
            }
        })
    });
    tokio::task::block_in_place(|| c.node(old).restart());
    // Its partitions come back with their records once it has registered again.
    let got = tokio::task::block_in_place(|| count_all(c.bootstrap(), "after-restart"));
    assert_eq!(got, RECORDS);
    tokio::task::block_in_place(|| c.stop_all());
}

/// AlterConfigs v0 on the broker resource `name` ("" the cluster-wide defaults, else a node
/// id), replacing its settings with `configs`, sent to `broker`: (error code, message).
fn alter_broker_raw(broker: &Broker, name: &str, configs: &[(&str, &str)]) -> (i16, String) {
    let mut body = sluice_tests::wire::Enc::new().i32(1);
    body.0.push(4); // BROKER
    let mut body = body.str(name).i32(configs.len() as i32);
    for (k, v) in configs {
        body = body.str(k).nstr(Some(v));
    }
    body.0.push(0); // validate_only
    let mut s = sluice_tests::wire::connect(broker);
    let resp = sluice_tests::wire::call(&mut s, 33, 0, 9, &body.0);
    let mut d = sluice_tests::wire::Dec::new(&resp);
    d.i32(); // throttle
    assert_eq!(d.i32(), 1, "one resource result");
    let code = d.i16();
    (code, d.nstr().unwrap_or_default())
}

/// Per-node dynamic broker configs, as `kafka-configs.sh --entity-type brokers` sets them:
/// the cluster-wide default (`--entity-default`, resource "") and one node's own
/// (`--entity-name 2`), which wins on that node alone; DescribeConfigs on each node tells
/// the two apart by their source. Any node takes a change for any node; a name that is not
/// a node id is refused as Kafka refuses it. Both are cleared again afterwards.
async fn per_node_broker_configs(c: &mut Cluster) {
    use rdkafka::admin::{ConfigSource, ResourceSpecifier};
    let source = |s: ConfigSource| format!("{s:?}");
    const KEY: &str = "log.retention.ms";
    let via_one = c.node(1).bootstrap();
    assert_eq!(alter_broker_raw(c.node(1), "", &[(KEY, "5400000")]).0, 0);
    assert_eq!(alter_broker_raw(c.node(1), "2", &[(KEY, "7200000")]).0, 0);
    for bad in ["two", "-3"] {
        let (code, msg) = alter_broker_raw(c.node(1), bad, &[(KEY, "1")]);
        assert_eq!(code, 42, "INVALID_REQUEST for broker {bad:?}: {msg}");
    }
    // librdkafka sends a broker's DescribeConfigs to that broker: each answers for itself,
    // once it has applied the controller's records.
    let describe = |id: i32| {
        let via = via_one.clone();
        move || {
            let rt = tokio::runtime::Handle::current();
            let res = rt
                .block_on(
                    admin(&via).describe_configs([&ResourceSpecifier::Broker(id)], &admin_opts()),
                )
                .ok()?;
            let r = res.into_iter().next()?.ok()?;
            let e = r.get(KEY)?;
            Some((e.value.clone()?, format!("{:?}", e.source)))
        }
    };
    let want = [
        (1, "5400000", ConfigSource::DynamicDefaultBroker),
        (2, "7200000", ConfigSource::DynamicBroker),
        (3, "5400000", ConfigSource::DynamicDefaultBroker),
    ];
    for (id, value, want_source) in want {
        let want_source = source(want_source);
        tokio::task::block_in_place(|| {
            poll_until(SETTLE, &format!("node {id}'s {KEY}"), || {
                let got = describe(id)()?;
                (got == (value.to_string(), want_source.clone())).then_some(())
            })
        });
    }
    assert_eq!(alter_broker_raw(c.node(3), "2", &[]).0, 0);
    assert_eq!(alter_broker_raw(c.node(3), "", &[]).0, 0);
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "node 2's own config cleared", || {
            let got = describe(2)()?;
            (got == ("604800000".to_string(), source(ConfigSource::Default))).then_some(())
        })
    });
}

/// Produces `n` records `r{round}-{i}` to partition 0 of `topic`, one at a time, each
/// acknowledged before the next, and appends them to `sent`.
async fn produce_round(
    p: &rdkafka::producer::FutureProducer,
    topic: &str,
    round: usize,
    n: usize,
    sent: &mut Vec<String>,
) {
    for i in 0..n {
        let v = format!("r{round}-{i}");
        p.send(
            FutureRecord::<(), _>::to(topic).partition(0).payload(&v),
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|e| panic!("produce {v}: {e:?}"));
        sent.push(v);
    }
}

/// Replication factor 3 on three real nodes: records produced with `acks=all` through one
/// node are read back in order through another; the leader of a partition is killed with
/// kill -9, the others elect a new one (Metadata names it), the producer carries on, and
/// every acknowledged record is there, once, in order; the killed node comes back and
/// catches up, and all stop cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_keep_every_acknowledged_record_when_the_leader_dies() {
    const RF3: &str = "rf3";
    const ROUND: usize = 200;
    let t = NewTopic::new(RF3, 2, TopicReplication::Fixed(3));
    let mut c = Cluster::start_with_topic(ClusterConfig::default(), &t).await;
    let elected = |bootstrap: String| {
        poll_until(SETTLE, "a leader for every partition", || {
            leaders(&bootstrap, RF3).filter(|l| l.len() == 2 && l.iter().all(|&n| n > 0))
        })
    };
    let before = tokio::task::block_in_place(|| elected(c.node(2).bootstrap()));
    let p = producer(
        &c.bootstrap(),
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    let mut sent = Vec::new();
    produce_round(&p, RF3, 0, ROUND, &mut sent).await;
    let victim = before[0] as usize;
    tokio::task::block_in_place(|| c.node(victim).kill9());
    let survivor = c.ids().find(|&i| i != victim).expect("another node");
    let survivor_bootstrap = c.node(survivor).bootstrap();
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "a new leader for partition 0", || {
            leaders(&survivor_bootstrap, RF3)
                .filter(|l| l[0] > 0 && l[0] as usize != victim)
                .map(|_| ())
        })
    });
    produce_round(&p, RF3, 1, ROUND, &mut sent).await;
    let read_all = |bootstrap: String, want: usize| {
        let mut cfg = base_config(&bootstrap);
        cfg.set("group.id", "rf3-reader")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false");
        let cons: BaseConsumer = cfg.create().expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(RF3, 0, Offset::Beginning).unwrap();
        cons.assign(&tpl).expect("assign");
        let mut got = Vec::new();
        poll_until(SETTLE, "every acknowledged record", || {
            while let Some(m) = cons.poll(Duration::from_millis(200)) {
                let m = m.ok()?;
                use rdkafka::Message;
                got.push(String::from_utf8_lossy(m.payload()?).into_owned());
            }
            (got.len() >= want).then_some(())
        });
        got
    };
    let got = tokio::task::block_in_place(|| read_all(c.node(survivor).bootstrap(), sent.len()));
    assert_eq!(got, sent, "partition 0 after its leader died");
    tokio::task::block_in_place(|| c.node(victim).restart());
    produce_round(&p, RF3, 2, ROUND, &mut sent).await;
    let got = tokio::task::block_in_place(|| read_all(c.node(victim).bootstrap(), sent.len()));
    assert_eq!(got, sent, "partition 0 after the old leader came back");
    tokio::task::block_in_place(|| c.stop_all());
}

/// Kills node `id` with kill -9, empties its data directory and starts it again: it must
/// stop by itself, non-zero, saying why. Returns everything it wrote to stderr.
fn wipe_and_expect_refusal(c: &mut Cluster, id: usize) -> String {
    c.node(id).kill9();
    let dir = c.node(id).data_dir().to_path_buf();
    std::fs::remove_dir_all(&dir).expect("wipe");
    std::fs::create_dir_all(&dir).expect("recreate");
    c.node(id).respawn();
    let status = c.node(id).wait_exit(SETTLE);
    // Exit status 1 after a clean stop, not a panic's abort (no status code, a signal).
    assert!(
        status.is_some_and(|s| s.code() == Some(1)),
        "the wiped node {id} did not stop with exit status 1 ({status:?})"
    );
    let log = c.node(id).stderr_log();
    assert!(
        log.contains("data directory was wiped or replaced"),
        "the wiped node {id} says why it stopped"
    );
    assert!(
        log.contains("sluice: stopped: the controller runtime failed"),
        "the wiped node {id} ends with the reason"
    );
    log
}

/// A node whose data directory was wiped comes back under its node id: it must not rejoin
/// (Raft counts on a voter never forgetting what it acknowledged; raft-rs would even panic
/// on the leader's first heartbeat). Its peers know the directory it registered and refuse
/// it; it stops with the reason, and the other two serve on with every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_data_directory_was_wiped_is_refused_and_stops() {
    const TOPIC_W: &str = "wiped";
    const ROUND: usize = 100;
    let t = NewTopic::new(TOPIC_W, 1, TopicReplication::Fixed(3));
    // (One shard per node: lighter on the host the other tests share.)
    let cfg = ClusterConfig {
        shards: 1,
        ..ClusterConfig::default()
    };
    let mut c = Cluster::start_with_topic(cfg, &t).await;
    let leader = tokio::task::block_in_place(|| {
        let b = c.node(1).bootstrap();
        poll_until(SETTLE, "a leader", || {
            leaders(&b, TOPIC_W).and_then(|l| (l[0] > 0).then_some(l[0] as usize))
        })
    });
    let p = producer(
        &c.bootstrap(),
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    let mut sent = Vec::new();
    produce_round(&p, TOPIC_W, 0, ROUND, &mut sent).await;
    // The partition's leader loses its directory (and its controller replica with it).
    let log = tokio::task::block_in_place(|| wipe_and_expect_refusal(&mut c, leader));
    assert!(!log.contains("out of range"), "raft-rs panicked instead");
    produce_round(&p, TOPIC_W, 2, ROUND, &mut sent).await;
    let survivor = c.ids().find(|&i| i != leader).expect("a survivor");
    let survivor_log = c.node(survivor).stderr_log();
    assert!(
        survivor_log.contains("its directory was replaced or wiped"),
        "a survivor logs whom it refused"
    );
    let got = tokio::task::block_in_place(|| {
        read_partition(&c.node(survivor).bootstrap(), TOPIC_W, 0, sent.len())
    });
    assert_eq!(got, sent);
    tokio::task::block_in_place(|| c.stop_all());
}

/// A broker-only node (not a controller voter: it pulls the metadata log from the voters)
/// holding a replica goes down with kill -9 while records are produced and a topic is
/// created, comes back, catches up on both (the new topic listed on it, its replica back in
/// the ISR), every acknowledged record reads back, and DescribeQuorum reports it as an
/// observer with its position; wiped, it is refused as a voter is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_only_node_restarts_catches_up_and_is_refused_once_wiped() {
    require_cluster!();
    const BO: &str = "broker-only";
    const LATER: &str = "created-while-down";
    const ROUND: usize = 100;
    let t = NewTopic::new(BO, 1, TopicReplication::Variable(&[&[4, 1, 2]]));
    // One shard per node: four nodes share the 2-core host with the tests running beside.
    let cfg = ClusterConfig {
        nodes: 4,
        voters: Some(3),
        shards: 1,
        ..ClusterConfig::default()
    };
    let mut c = tokio::task::block_in_place(|| Cluster::start_with(cfg));
    let first = c.node(1).bootstrap();
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "every node registered", || {
            (broker_ids(&first).len() == 4).then_some(())
        })
    });
    // A manual replica assignment (librdkafka sends partitions and replication factor -1
    // with it, as Kafka asks), node 4 first.
    let res = admin(&first)
        .create_topics([&t], &admin_opts())
        .await
        .expect("CreateTopics request");
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "a leader", || {
            leaders(&first, BO).filter(|l| l.len() == 1 && l[0] > 0)
        })
    });
    let p = producer(
        &c.bootstrap(),
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    let mut sent = Vec::new();
    produce_round(&p, BO, 0, ROUND, &mut sent).await;
    tokio::task::block_in_place(|| c.node(4).kill9());
    produce_round(&p, BO, 1, ROUND, &mut sent).await;
    let later = NewTopic::new(LATER, 1, TopicReplication::Fixed(3));
    let res = admin(&c.node(1).bootstrap())
        .create_topics([&later], &admin_opts())
        .await
        .expect("CreateTopics request");
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    tokio::task::block_in_place(|| c.node(4).restart());
    let back = c.node(4).bootstrap();
    let port4 = c.node(4).port();
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "the topic created meanwhile listed on it", || {
            // Asked of node 4 itself (a client library may ask any broker).
            sluice_tests::wire::topic_names_at(port4)?
                .contains(&LATER.to_string())
                .then_some(())
        });
        poll_until(SETTLE, "its replica back in the ISR", || {
            replicas_and_isr(&back, BO).filter(|(_, isr)| isr.contains(&4))
        });
    });
    produce_round(&p, BO, 2, ROUND, &mut sent).await;
    let got = tokio::task::block_in_place(|| read_partition(&back, BO, 0, sent.len()));
    assert_eq!(got, sent);
    // DescribeQuorum names it an observer with the index it pulled to and when.
    let root = sluice_tests::workspace_root();
    let out = std::process::Command::new(root.join("tests/.venv/bin/python"))
        .arg(root.join("tests/python/quorum_check.py"))
        .arg(&first)
        .arg("4")
        .output()
        .expect("run quorum_check.py");
    assert!(
        out.status.success(),
        "quorum_check.py: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    tokio::task::block_in_place(|| wipe_and_expect_refusal(&mut c, 4));
    tokio::task::block_in_place(|| c.stop_all());
}

/// One record to partition 0 of `topic`, waiting for its outcome.
async fn send_one(
    p: &rdkafka::producer::FutureProducer,
    topic: &str,
    v: &str,
) -> Result<
    rdkafka::producer::future_producer::Delivery,
    (rdkafka::error::KafkaError, rdkafka::message::OwnedMessage),
> {
    p.send(
        FutureRecord::<(), _>::to(topic).partition(0).payload(v),
        Duration::from_secs(10),
    )
    .await
}

/// `min.insync.replicas` on three replicas: with the topic asking for 3 and a follower
/// killed, the leader drops it from the ISR after `replica.lag.time.max.ms` (2 s here),
/// Metadata shows the ISR of 2, and `acks=all` is refused (NOT_ENOUGH_REPLICAS, never
/// acknowledged) while `acks=1` still goes; once the follower is back and caught up the ISR
/// is whole again and `acks=all` succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_needs_min_insync_replicas() {
    require_cluster!();
    const T: &str = "misr";
    let t = NewTopic::new(T, 1, TopicReplication::Fixed(3)).set("min.insync.replicas", "3");
    let cfg = ClusterConfig {
        extra_args: vec!["--replica-lag-time-max-ms".into(), "2000".into()],
        ..ClusterConfig::default()
    };
    let mut c = Cluster::start_with_topic(cfg, &t).await;
    let first = c.node(1).bootstrap();
    let isr = |bootstrap: &str| -> Option<(i32, usize)> {
        let cons: BaseConsumer = base_config(bootstrap).create().ok()?;
        let md = cons.fetch_metadata(Some(T), Duration::from_secs(5)).ok()?;
        let t = md.topics().first()?;
        let p = t.partitions().first()?;
        (p.leader() > 0).then(|| (p.leader(), p.isr().len()))
    };
    let (leader, _) = tokio::task::block_in_place(|| {
        poll_until(SETTLE, "a leader with every replica in sync", || {
            isr(&first).filter(|(_, n)| *n == 3)
        })
    });
    let all = producer(
        &c.bootstrap(),
        &[("acks", "all"), ("message.timeout.ms", "3000")],
    );
    send_one(&all, T, "whole")
        .await
        .expect("acks=all with every replica in sync");
    let follower = c.ids().find(|&i| i as i32 != leader).expect("a follower");
    tokio::task::block_in_place(|| c.node(follower).kill9());
    let via_leader = c.node(leader as usize).bootstrap();
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "the ISR without the dead follower", || {
            isr(&via_leader).filter(|(_, n)| *n == 2)
        })
    });
    let res = send_one(&all, T, "short").await;
    assert!(
        res.is_err(),
        "acks=all acknowledged with 2 of min.insync.replicas 3: {res:?}"
    );
    let one = producer(&c.bootstrap(), &[("acks", "1")]);
    send_one(&one, T, "one")
        .await
        .expect("acks=1 is not bound by min.insync.replicas");
    tokio::task::block_in_place(|| c.node(follower).restart());
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "the ISR whole again", || {
            isr(&via_leader).filter(|(_, n)| *n == 3)
        })
    });
    send_one(&all, T, "again")
        .await
        .expect("acks=all once the ISR is whole");
    tokio::task::block_in_place(|| c.stop_all());
}

/// A data directory of a single-node sluice from before the controller log (its state file
/// without a log index, no `cluster/controller.wal`, the old producer-id mark) is upgraded
/// in place: every record is still there, the topic keeps its id, and producer ids start
/// above the old mark. Made here by taking those files back to what the old broker wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_data_dir_is_upgraded_in_place_with_its_data() {
    skip_in_cluster_mode!(
        "rewrites one broker's data directory into an older single-node sluice's"
    );
    const OLD: &str = "from-before";
    let mut b = Broker::start();
    let t = NewTopic::new(OLD, 3, TopicReplication::Fixed(1));
    let res = admin(&b.bootstrap())
        .create_topics([&t], &admin_opts())
        .await
        .expect("CreateTopics request");
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    let p = producer(&b.bootstrap(), &[("acks", "all")]);
    for i in 0..90 {
        let v = format!("old-{i}");
        p.send(
            FutureRecord::<(), _>::to(OLD).partition(i % 3).payload(&v),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|e| panic!("produce #{i}: {e:?}"));
    }
    drop(p);
    b.stop_ok();
    let cluster = b.data_dir().join("cluster");
    let state_path = cluster.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let id_before = state["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == OLD)
        .expect("topic in the state")["id"]
        .clone();
    // What the single-node broker wrote: no log index, no replica lists, its own producer-id
    // mark, and no controller log at all.
    let obj = state.as_object_mut().unwrap();
    obj.remove("metadata_index");
    for t in obj["topics"].as_array_mut().unwrap() {
        t.as_object_mut().unwrap().remove("replicas");
    }
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    std::fs::remove_file(cluster.join("controller.wal")).unwrap();
    std::fs::write(cluster.join("producer-id-block"), "7000").unwrap();

    b.restart();
    let mut cfg = base_config(&b.bootstrap());
    cfg.set("group.id", "upgrade-check")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let cons: BaseConsumer = cfg.create().expect("consumer");
    cons.subscribe(&[OLD]).expect("subscribe");
    let mut seen = std::collections::BTreeSet::new();
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "every record written before the upgrade", || {
            while let Some(m) = cons.poll(Duration::from_millis(200)) {
                use rdkafka::Message;
                let m = m.ok()?;
                seen.insert(String::from_utf8_lossy(m.payload()?).into_owned());
            }
            (seen.len() >= 90).then_some(())
        })
    });
    assert_eq!(seen.len(), 90);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let t = state["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == OLD)
        .expect("topic after the upgrade")
        .clone();
    assert_eq!(t["id"], id_before, "the topic keeps its id");
    assert!(
        state["producer_id_next_block"].as_i64().unwrap() >= 7000,
        "producer ids resume at or above the old mark: {state}"
    );
    b.stop_ok();
}

/// A 3-node cluster, replication factor 3, the workload, and two rounds of `fault` on the
/// leader of the moment, each healed before the next; the history must be clean, the ISR
/// full again, and every node must stop cleanly on SIGTERM.
async fn fault_case(fault: Fault) {
    let mut c = Cluster::start(3);
    create_topic(&c.bootstrap(), 3).await;
    let w = Workload::start(WorkloadConfig::new(&c.bootstrap(), TOPIC, PARTITIONS));
    w.wait_acked(ACKS_PER_STEP, STEP_TIMEOUT).await;
    for round in 0..2 {
        let target = match fault {
            Fault::KillControllerLeader | Fault::SplitControllerIntoMinority => {
                tokio::task::block_in_place(|| c.controller(SETTLE))
            }
            _ => tokio::task::block_in_place(|| partition_leader(&c)),
        };
        eprintln!(
            "round {round}: {fault:?} on node {target} at {:?}",
            w.progress()
        );
        tokio::task::block_in_place(|| match fault {
            Fault::KillPartitionLeader | Fault::KillControllerLeader => c.node(target).kill9(),
            Fault::PausePartitionLeader => c.node(target).pause(),
            Fault::IsolatePartitionLeader => c.isolate(target),
            Fault::SplitControllerIntoMinority => {
                let majority: Vec<usize> = c.ids().filter(|&i| i != target).collect();
                c.split(&majority, &[target]);
            }
        });
        if !matches!(
            fault,
            Fault::KillPartitionLeader | Fault::KillControllerLeader
        ) {
            // Past the election timeout: the others must elect a new leader meanwhile (the
            // acknowledgements below may come faster than an election).
            tokio::time::sleep(PAST_ELECTION_TIMEOUT).await;
        }
        // The majority keeps the workload going.
        w.wait_acked(ACKS_PER_STEP, STEP_TIMEOUT).await;
        tokio::task::block_in_place(|| match fault {
            Fault::KillPartitionLeader | Fault::KillControllerLeader => c.node(target).restart(),
            Fault::PausePartitionLeader => c.node(target).resume(),
            Fault::IsolatePartitionLeader | Fault::SplitControllerIntoMinority => c.heal(),
        });
        w.wait_acked(ACKS_PER_STEP, STEP_TIMEOUT).await;
        tokio::task::block_in_place(|| wait_isr_full(&c));
    }
    let history = w.stop().await;
    let r = check(&history, CheckOptions::default());
    report(&format!("3 nodes, {fault:?}"), &r);
    r.assert_clean(&format!("{fault:?}"));
    tokio::task::block_in_place(|| c.stop_all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_kill9_of_a_partition_leader_loses_nothing() {
    require_cluster!();
    fault_case(Fault::KillPartitionLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_kill9_of_the_controller_leader_loses_nothing() {
    require_cluster!();
    fault_case(Fault::KillControllerLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_sigstop_of_a_leader_past_the_election_timeout_loses_nothing() {
    require_cluster!();
    fault_case(Fault::PausePartitionLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_isolated_leader_that_clients_still_reach_loses_nothing() {
    require_cluster!();
    fault_case(Fault::IsolatePartitionLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_majority_minority_split_loses_nothing() {
    require_cluster!();
    fault_case(Fault::SplitControllerIntoMinority).await;
}

/// With 2 of 3 nodes dead no `acks=all` produce is acknowledged (it times out or fails);
/// once they are back, produce succeeds again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_acks_all_is_never_acknowledged_with_two_of_three_nodes_dead() {
    require_cluster!();
    let mut c = Cluster::start(3);
    create_topic(&c.bootstrap(), 3).await;
    let survivor = tokio::task::block_in_place(|| partition_leader(&c));
    let dead: Vec<usize> = c.ids().filter(|&i| i != survivor).collect();
    tokio::task::block_in_place(|| {
        for &id in &dead {
            c.node(id).kill9();
        }
    });
    let p = producer(
        &c.node(survivor).bootstrap(),
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("message.timeout.ms", "5000"),
        ],
    );
    for i in 0..20 {
        let v = format!("alone-{i}");
        let res = p
            .send(
                FutureRecord::<(), _>::to(TOPIC).partition(0).payload(&v),
                Duration::from_secs(10),
            )
            .await;
        assert!(
            res.is_err(),
            "acks=all produce #{i} acknowledged with only node {survivor} alive: {res:?}"
        );
    }
    tokio::task::block_in_place(|| {
        for &id in &dead {
            c.node(id).restart();
        }
    });
    let p = producer(
        &c.bootstrap(),
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    p.send(
        FutureRecord::<(), _>::to(TOPIC)
            .partition(0)
            .payload("back"),
        Duration::from_secs(30),
    )
    .await
    .expect("acks=all produce after the nodes came back");
    tokio::task::block_in_place(|| c.stop_all());
}

/// Committed offsets stay served while each node in turn (so the coordinator's too) is
/// killed: a non-member's OffsetFetch returns what was committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_committed_offsets_survive_the_coordinators_node_dying() {
    require_cluster!();
    const GROUP: &str = "jepsen-offsets";
    let mut c = Cluster::start(3);
    create_topic(&c.bootstrap(), 3).await;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Offset(10 + p as i64))
            .unwrap();
    }
    let offsets_client = |bootstrap: &str| -> BaseConsumer {
        let mut cfg = base_config(bootstrap);
        cfg.set("group.id", GROUP)
            .set("enable.auto.commit", "false");
        cfg.create().expect("offsets client")
    };
    let committer = offsets_client(&c.bootstrap());
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "offset commit", || {
            committer.commit(&tpl, CommitMode::Sync).ok()
        })
    });
    for victim in c.ids().collect::<Vec<_>>() {
        tokio::task::block_in_place(|| c.node(victim).kill9());
        let reader = offsets_client(&c.bootstrap());
        let got = tokio::task::block_in_place(|| {
            poll_until(SETTLE, "OffsetFetch with a node down", || {
                let t = reader
                    .committed_offsets(tpl.clone(), Duration::from_secs(5))
                    .ok()?;
                let got: Vec<Offset> = t.elements().iter().map(|e| e.offset()).collect();
                got.iter()
                    .all(|o| matches!(o, Offset::Offset(_)))
                    .then_some(got)
            })
        });
        let want: Vec<Offset> = (0..PARTITIONS)
            .map(|p| Offset::Offset(10 + p as i64))
            .collect();
        assert_eq!(got, want, "committed offsets with node {victim} dead");
        tokio::task::block_in_place(|| c.node(victim).restart());
    }
    tokio::task::block_in_place(|| c.stop_all());
}

/// `/metrics` of a node serving the admin API, as text.
fn scrape(node: &Broker) -> String {
    use std::io::Write;
    let url = node.admin_url().expect("the node serves the admin API");
    let addr = url.trim_start_matches("http://");
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// `sluice_consumer_group_lag` of `group` in a `/metrics` text: partition → lag.
fn group_lag(metrics: &str, group: &str) -> BTreeMap<i32, i64> {
    let want = format!("sluice_consumer_group_lag{{group=\"{group}\",");
    metrics
        .lines()
        .filter(|l| l.starts_with(&want))
        .filter_map(|l| {
            let partition = l.split("partition=\"").nth(1)?.split('"').next()?;
            let value = l.rsplit(' ').next()?;
            Some((partition.parse().ok()?, value.parse::<f64>().ok()? as i64))
        })
        .collect()
}

/// Consumer lag is told for every partition a group committed, by the node coordinating
/// the group, including partitions of which it holds no replica (single-replica
/// partitions spread over three nodes): their high watermarks come from the nodes leading
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_lag_covers_partitions_with_no_replica_on_its_coordinator() {
    require_cluster!();
    const GROUP: &str = "lagging";
    let mut c = Cluster::start_with(ClusterConfig {
        admin_ports: true,
        ..ClusterConfig::default()
    });
    // Every node registered first, so placement spreads the partitions over all three.
    let bootstrap = c.bootstrap();
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "every node listed in Metadata", || {
            (broker_ids(&bootstrap) == [1, 2, 3]).then_some(())
        })
    });
    create_topic(&bootstrap, 1).await;
    let p = producer(&c.bootstrap(), &[("acks", "all")]);
    for part in 0..PARTITIONS {
        for i in 0..20 {
            let value = format!("v{i}");
            let rec = FutureRecord::to(TOPIC)
                .partition(part)
                .key("k")
                .payload(&value);
            p.send(rec, Duration::from_secs(30))
                .await
                .expect("acknowledged");
        }
    }
    let mut tpl = TopicPartitionList::new();
    for part in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, part, Offset::Offset(5 + part as i64))
            .unwrap();
    }
    let mut cfg = base_config(&c.bootstrap());
    cfg.set("group.id", GROUP)
        .set("enable.auto.commit", "false");
    let committer: BaseConsumer = cfg.create().expect("offsets client");
    let want: BTreeMap<i32, i64> = tokio::task::block_in_place(|| {
        poll_until(SETTLE, "offset commit", || {
            committer.commit(&tpl, CommitMode::Sync).ok()
        });
        (0..PARTITIONS)
            .map(|part| {
                let (_, high) = committer
                    .fetch_watermarks(TOPIC, part, Duration::from_secs(10))
                    .expect("watermarks");
                (part, high - (5 + part as i64))
            })
            .collect()
    });
    assert!(replica_counts(&c.bootstrap(), TOPIC)
        .iter()
        .all(|&n| n == 1));
    let ids: Vec<usize> = c.ids().collect();
    let (coordinator, got) = tokio::task::block_in_place(|| {
        poll_until(SETTLE, "the coordinator's lag for every partition", || {
            ids.iter()
                .map(|&id| (id, group_lag(&scrape(c.node(id)), GROUP)))
                .find(|(_, lag)| lag.len() == PARTITIONS as usize)
        })
    });
    assert_eq!(got, want, "lag = high watermark - committed, per partition");
    // Some partition's only replica is on another node: its lag came from there.
    let leaders = leaders(&c.bootstrap(), TOPIC).expect("leaders");
    assert!(
        leaders.iter().any(|&l| l != coordinator as i32),
        "partition leaders {leaders:?}, coordinator node {coordinator}"
    );
    tokio::task::block_in_place(|| c.stop_all());
}

/// Per partition of `topic` in `bootstrap`'s Metadata: its preferred replica (the first in
/// replica order) and its leader.
fn preferred_and_leaders(bootstrap: &str, topic: &str) -> Option<Vec<(i32, i32)>> {
    let cons: BaseConsumer = base_config(bootstrap).create().expect("metadata client");
    let md = cons
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    let mut ps: Vec<(i32, i32, i32)> = t
        .partitions()
        .iter()
        .map(|p| {
            (
                p.id(),
                p.replicas().first().copied().unwrap_or(-1),
                p.leader(),
            )
        })
        .collect();
    ps.sort_unstable();
    Some(ps.into_iter().map(|(_, pref, l)| (pref, l)).collect())
}

/// Kafka's automatic preferred-leader election (`auto.leader.rebalance.enable`, checked here
/// every 2 s): leaders move to each partition's preferred replica, away from it when that
/// node dies, and back once it has restarted and caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_return_to_their_preferred_replicas() {
    require_cluster!();
    const TOPIC3: &str = "preferred";
    let cfg = ClusterConfig {
        extra_args: vec![
            "--leader-imbalance-check-interval-seconds".into(),
            "2".into(),
        ],
        ..ClusterConfig::default()
    };
    let t = NewTopic::new(TOPIC3, 3, TopicReplication::Fixed(3));
    let mut c = Cluster::start_with_topic(cfg, &t).await;
    let first = c.node(1).bootstrap();
    let balanced = |bootstrap: String, what: &'static str| {
        poll_until(SETTLE, what, || {
            preferred_and_leaders(&bootstrap, TOPIC3)
                .filter(|ps| ps.len() == 3 && ps.iter().all(|(pref, l)| pref == l))
        })
    };
    let placed = tokio::task::block_in_place(|| balanced(first.clone(), "preferred leaders"));
    let victim = placed[0].0 as usize;
    tokio::task::block_in_place(|| c.node(victim).kill9());
    let survivor = c.ids().find(|&i| i != victim).expect("another node");
    let via = c.node(survivor).bootstrap();
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "partition 0 led elsewhere", || {
            preferred_and_leaders(&via, TOPIC3)
                .filter(|ps| {
                    ps.first()
                        .is_some_and(|&(_, l)| l > 0 && l as usize != victim)
                })
                .map(|_| ())
        })
    });
    tokio::task::block_in_place(|| c.node(victim).restart());
    let back = tokio::task::block_in_place(|| balanced(via.clone(), "preferred leaders again"));
    assert_eq!(back, placed);
    tokio::task::block_in_place(|| c.stop_all());
}

/// Controlled shutdown (Kafka's `controlled.shutdown.enable`, on by default): SIGTERM to a
/// node that leads partitions, of a replicated topic and of `__consumer_offsets` (the
/// controller's node when it leads one), makes it hand each of them to another in-sync
/// replica before it stops serving Raft. It exits 0;
/// by then, for every partition it led, a survivor already reports itself the leader
/// (without the hand-off none could: the survivors' elections only start once the node
/// has gone quiet); `acks=all` produce to those partitions, running throughout, never
/// fails; and the other nodes' Metadata names the new leaders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_nodes_leaderships_to_other_replicas_before_it_exits() {
    require_cluster!();
    const T: &str = "handoff";
    const OFFSETS: &str = "__consumer_offsets";
    let t = NewTopic::new(T, 3, TopicReplication::Fixed(3));
    let mut c = Cluster::start_with_topic(ClusterConfig::default(), &t).await;
    // The offsets topic (three replicas per partition: every node is live), created by a
    // coordinator lookup (answered COORDINATOR_NOT_AVAILABLE until its partition leads).
    let port1 = c.node(1).port();
    tokio::task::block_in_place(|| {
        let mut s = sluice_tests::wire::connect_port(port1);
        let body = sluice_tests::wire::Enc::new().str("g").0;
        sluice_tests::wire::call(&mut s, 10, 0, 21, &body);
    });
    let ports: BTreeMap<usize, u16> = c.ids().map(|i| (i, c.node(i).port())).collect();
    let all_led = |topic: &'static str, port: u16| {
        poll_until(SETTLE, "a leader for every partition", || {
            sluice_tests::wire::partition_leaders(port, topic)
                .filter(|ps| !ps.is_empty() && ps.iter().all(|&(_, l)| l > 0))
        })
    };
    let topic_leaders = tokio::task::block_in_place(|| all_led(T, port1));
    tokio::task::block_in_place(|| all_led(OFFSETS, port1));
    // The controller's node, if it leads a partition of the topic (it hands the controller
    // leadership over too), else partition 0's leader.
    let controller = tokio::task::block_in_place(|| c.controller(SETTLE));
    let victim = if topic_leaders.iter().any(|&(_, l)| l as usize == controller) {
        controller
    } else {
        topic_leaders[0].1 as usize
    };
    // What the victim leads, as it says itself.
    let led: Vec<(&str, i32)> = [T, OFFSETS]
        .into_iter()
        .flat_map(|topic| {
            sluice_tests::wire::partition_leaders(ports[&victim], topic)
                .unwrap_or_default()
                .into_iter()
                .filter(|&(_, l)| l as usize == victim)
                .map(move |(p, _)| (topic, p))
        })
        .collect();
    assert!(led.iter().any(|&(t, _)| t == T), "{led:?}");
    let mine: Vec<i32> = led
        .iter()
        .filter(|(t, _)| *t == T)
        .map(|(_, p)| *p)
        .collect();
    eprintln!("node {victim} leads {} partition(s): {led:?}", led.len());

    // acks=all to the victim's partitions throughout.
    let p = producer(
        &c.bootstrap(),
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (p, stop, mine) = (p.clone(), stop.clone(), mine.clone());
        tokio::spawn(async move {
            let mut acked = 0u64;
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let part = mine[i % mine.len()];
                let v = format!("h{i}");
                p.send(
                    FutureRecord::<(), _>::to(T).partition(part).payload(&v),
                    Duration::from_secs(30),
                )
                .await
                .unwrap_or_else(|e| panic!("produce {v} to partition {part}: {e:?}"));
                acked += 1;
                i += 1;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = tokio::task::block_in_place(|| {
        c.node(victim).begin_stop();
        c.node(victim).wait_stopped()
    });
    assert!(status.success(), "node {victim} after SIGTERM: {status}");
    // At once: every partition it led is led by a survivor, as that survivor says.
    let survivors: Vec<usize> = c.ids().filter(|&i| i != victim).collect();
    let mut orphans = Vec::new();
    for &(topic, part) in &led {
        let taken = survivors.iter().any(|&s| {
            sluice_tests::wire::partition_leaders(ports[&s], topic)
                .and_then(|ps| ps.into_iter().find(|&(i, _)| i == part))
                .is_some_and(|(_, l)| l as usize == s)
        });
        if !taken {
            orphans.push((topic, part));
        }
    }
    assert!(
        orphans.is_empty(),
        "partitions node {victim} led that no survivor led when it had exited: {orphans:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked = writer.await.expect("writer");
    assert!(acked > 0);
    // Every survivor's Metadata names a survivor for each of them (and the controller).
    let after = tokio::task::block_in_place(|| c.controller(SETTLE));
    assert_ne!(after, victim, "the controller after node {victim} stopped");
    for &s in &survivors {
        tokio::task::block_in_place(|| {
            poll_until(SETTLE, "survivors naming the new leaders", || {
                led.iter()
                    .all(|&(topic, part)| {
                        sluice_tests::wire::partition_leaders(ports[&s], topic)
                            .and_then(|ps| ps.into_iter().find(|&(i, _)| i == part))
                            .is_some_and(|(_, l)| l > 0 && l as usize != victim)
                    })
                    .then_some(())
            })
        });
    }
    tokio::task::block_in_place(|| c.node(victim).restart());
    tokio::task::block_in_place(|| c.stop_all());
}

/// ElectLeaders codes (Kafka's).
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
const ELECTION_NOT_NEEDED: i16 = 84;

/// ElectLeaders (Kafka's preferred-leader election on request, ApiKey 43) with the automatic
/// rebalance off: partitions led by their preferred replicas need no election; unknown ones
/// are UNKNOWN_TOPIC_OR_PARTITION; after the preferred replica of a partition is killed and
/// restarted its partitions stay with the nodes that took over (nothing moves them back by
/// itself) until ElectLeaders PREFERRED, sent to a node that leads none of them, hands them
/// back once the restarted node has caught up (PREFERRED_LEADER_NOT_AVAILABLE before), and
/// Metadata through that node shows it at once; an UNCLEAN election of a partition with a
/// leader is not needed, and a PREFERRED one for every partition (null list) then answers
/// nothing for this topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_leaders_hands_partitions_back_to_their_preferred_replicas() {
    require_cluster!();
    const T: &str = "elect";
    let cfg = ClusterConfig {
        extra_args: vec!["--auto-leader-rebalance-enable".into(), "false".into()],
        ..ClusterConfig::default()
    };
    let t = NewTopic::new(T, 3, TopicReplication::Fixed(3));
    let mut c = Cluster::start_with_topic(cfg, &t).await;
    let first = c.node(1).bootstrap();
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "a leader for every partition", || {
            preferred_and_leaders(&first, T)
                .filter(|ps| ps.len() == 3 && ps.iter().all(|&(_, l)| l > 0))
                .map(|_| ())
        })
    });
    let all: &[i32] = &[0, 1, 2];
    let port1 = c.node(1).port();
    let elect = |port: u16, election: i8, parts: Option<&[(&str, &[i32])]>| {
        let mut s = sluice_tests::wire::connect_port(port);
        sluice_tests::wire::elect_leaders(&mut s, election, parts, 15_000)
    };
    // The preferred replica campaigns when the partition is created, but on a loaded host
    // another may win the first election (its peers had not created their replicas yet),
    // and the periodic rebalance is off here: an election puts every leader in place
    // (or was not needed) once each preferred replica has caught up (until then it is
    // PREFERRED_LEADER_NOT_AVAILABLE, as in Kafka for a replica outside the ISR).
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "every preferred replica elected", || {
            let (top, got) = elect(port1, 0, Some(&[(T, all)]));
            assert_eq!(top, 0);
            assert!(
                got.iter().all(|(_, _, e)| [
                    0,
                    ELECTION_NOT_NEEDED,
                    PREFERRED_LEADER_NOT_AVAILABLE
                ]
                .contains(e)),
                "{got:?}"
            );
            got.iter()
                .all(|(_, _, e)| *e != PREFERRED_LEADER_NOT_AVAILABLE)
                .then_some(())
        })
    });
    let placed = tokio::task::block_in_place(|| {
        poll_until(SETTLE, "preferred leaders", || {
            preferred_and_leaders(&first, T)
                .filter(|ps| ps.len() == 3 && ps.iter().all(|(pref, l)| pref == l))
        })
    });
    let (top, got) = tokio::task::block_in_place(|| elect(port1, 0, Some(&[(T, all)])));
    assert_eq!(top, 0);
    assert_eq!(
        got,
        (0..3)
            .map(|p| (T.to_string(), p, ELECTION_NOT_NEEDED))
            .collect::<Vec<_>>()
    );
    let (_, got) = tokio::task::block_in_place(|| {
        elect(port1, 0, Some(&[("no-such-topic", &[0]), (T, &[7, -1])]))
    });
    assert_eq!(
        got,
        vec![
            ("no-such-topic".to_string(), 0, UNKNOWN_TOPIC_OR_PARTITION),
            (T.to_string(), 7, UNKNOWN_TOPIC_OR_PARTITION),
            (T.to_string(), -1, UNKNOWN_TOPIC_OR_PARTITION),
        ]
    );

    let victim = placed[0].0 as usize;
    let mine: Vec<i32> = placed
        .iter()
        .enumerate()
        .filter(|(_, (pref, _))| *pref as usize == victim)
        .map(|(p, _)| p as i32)
        .collect();
    tokio::task::block_in_place(|| c.node(victim).kill9());
    // Ask through a node that is neither the victim nor, later, the leader of partition 0.
    let survivor = c.ids().find(|&i| i != victim).expect("another node");
    let via = c.node(survivor).bootstrap();
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "the victim's partitions led elsewhere", || {
            preferred_and_leaders(&via, T)
                .filter(|ps| {
                    mine.iter().all(|&p| {
                        let l = ps[p as usize].1;
                        l > 0 && l as usize != victim
                    })
                })
                .map(|_| ())
        })
    });
    tokio::task::block_in_place(|| c.node(victim).restart());
    let leaders_now = tokio::task::block_in_place(|| {
        poll_until(SETTLE, "every node listed again", || {
            (broker_ids(&via) == [1, 2, 3]).then_some(())
        });
        preferred_and_leaders(&via, T).expect("metadata")
    });
    // Nothing moved them back by itself.
    for &p in &mine {
        assert_ne!(
            leaders_now[p as usize].1 as usize, victim,
            "{leaders_now:?}"
        );
    }
    let asker = c
        .ids()
        .find(|&i| {
            i != victim
                && !mine
                    .iter()
                    .any(|&p| leaders_now[p as usize].1 as usize == i)
        })
        .unwrap_or(survivor);
    let port = c.node(asker).port();
    let wanted: Vec<(&str, &[i32])> = vec![(T, &mine)];
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "ElectLeaders handing the partitions back", || {
            let (top, got) = elect(port, 0, Some(&wanted));
            assert_eq!(top, 0);
            assert_eq!(got.len(), mine.len(), "{got:?}");
            for (_, _, code) in &got {
                assert!(
                    [0, PREFERRED_LEADER_NOT_AVAILABLE, ELECTION_NOT_NEEDED].contains(code),
                    "{got:?}"
                );
            }
            // Until the restarted node caught up it is not available; then each election
            // succeeds (or, asked again after one did, is not needed).
            got.iter()
                .all(|(_, _, code)| *code != PREFERRED_LEADER_NOT_AVAILABLE)
                .then_some(())
        })
    });
    // Metadata through the node that was asked already shows it.
    let after = preferred_and_leaders(&c.node(asker).bootstrap(), T).expect("metadata");
    assert_eq!(after, placed, "leaders after ElectLeaders");
    let (_, got) = tokio::task::block_in_place(|| elect(port, 1, Some(&[(T, all)])));
    assert!(
        got.iter().all(|(_, _, code)| *code == ELECTION_NOT_NEEDED),
        "UNCLEAN with leaders: {got:?}"
    );
    let (top, got) = tokio::task::block_in_place(|| elect(port, 0, None));
    assert_eq!(top, 0);
    assert!(
        got.iter().all(|(topic, _, _)| topic != T),
        "every partition of {T} is led by its preferred replica: {got:?}"
    );
    tokio::task::block_in_place(|| c.stop_all());
}

/// The test-only switch the issue asks for ("acknowledges `acks=all` before commit"), in the
/// nodes' environment (`sluice_broker::replication::ACK_BEFORE_COMMIT_ENV`).
const ACK_BEFORE_COMMIT_ENV: &str = "SLUICE_TEST_ACK_BEFORE_COMMIT";

/// The checker must be shown to fire on a real cluster: with `acks=all` answered before the
/// batch commits, a leader cut off from its followers (clients still reach it) acknowledges
/// records that never replicate; the others elect a new leader, the old one rejoins and
/// truncates, and the history check must report them lost (or, when a loaded host keeps
/// the final read from completing, acknowledgements past the high watermark readers are
/// told afterwards, the same fault seen from the other side). One round, and no wait for
/// acknowledgements after the isolation: the isolated leader acknowledges as fast as it is
/// sent to, and once the others lead, the idempotent producers' sequences no longer follow
/// what the log holds (their records are refused as out of order), so more acknowledgements
/// may never come; the workload is stopped instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_checker_fires_when_acks_all_is_answered_before_commit() {
    require_cluster!();
    let mut c = Cluster::start_with(ClusterConfig {
        env: vec![(ACK_BEFORE_COMMIT_ENV.into(), "1".into())],
        ..ClusterConfig::default()
    });
    create_topic(&c.bootstrap(), 3).await;
    let w = Workload::start(WorkloadConfig::new(&c.bootstrap(), TOPIC, PARTITIONS));
    w.wait_acked(ACKS_PER_STEP, STEP_TIMEOUT).await;
    let leader = tokio::task::block_in_place(|| partition_leader(&c));
    eprintln!("isolating node {leader} at {:?}", w.progress());
    tokio::task::block_in_place(|| c.isolate(leader));
    // Past the election timeout, so that the majority elects another leader while the
    // isolated one still acknowledges what it cannot commit.
    tokio::time::sleep(PAST_ELECTION_TIMEOUT).await;
    eprintln!("healing at {:?}", w.progress());
    tokio::task::block_in_place(|| c.heal());
    // The old leader rejoins and truncates what it acknowledged alone.
    tokio::time::sleep(PAST_ELECTION_TIMEOUT).await;
    let history = w.stop().await;
    let r = check(&history, CheckOptions::default());
    report("3 nodes, acks=all answered before commit", &r);
    // Both are what acknowledging before commit does: records acknowledged and then gone
    // (Lost, when the final read covers them), and acknowledgements past the high
    // watermark a reader is told afterwards (HighWatermarkBehind, seen even when a final
    // read does not complete on a loaded host).
    assert!(
        r.count("Lost") > 0 || r.count("HighWatermarkBehind") > 0,
        "acknowledging before commit broke nothing the checker could see:\n{r}"
    );
    tokio::task::block_in_place(|| c.stop_all());
}

/// Flexible-version wire helpers for the reassignment APIs (v0 of both is flexible):
/// request header v2, compact strings and arrays, empty tagged fields.
mod flex {
    use std::io::Write;
    use std::net::TcpStream;

    pub fn uvarint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub fn compact_str(out: &mut Vec<u8>, s: &str) {
        uvarint(out, s.len() as u64 + 1);
        out.extend_from_slice(s.as_bytes());
    }

    /// Sends one request (header v2: client id "t", no tags) and returns the response body
    /// after the response header v1 (correlation id, no tags).
    pub fn call(s: &mut TcpStream, api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
        let mut req = Vec::new();
        req.extend_from_slice(&api_key.to_be_bytes());
        req.extend_from_slice(&version.to_be_bytes());
        req.extend_from_slice(&7i32.to_be_bytes());
        req.extend_from_slice(&1i16.to_be_bytes());
        req.push(b't');
        req.push(0);
        req.extend_from_slice(body);
        s.write_all(&sluice_tests::wire::frame(&req))
            .expect("send request");
        let resp = sluice_tests::wire::read_response(s).expect("an answer");
        assert_eq!(i32::from_be_bytes(resp[..4].try_into().unwrap()), 7);
        assert_eq!(resp[4], 0, "no tagged fields in the response header");
        resp[5..].to_vec()
    }

    pub struct Dec<'a>(pub &'a [u8]);

    impl Dec<'_> {
        fn take(&mut self, n: usize) -> &[u8] {
            let (h, t) = self.0.split_at(n);
            self.0 = t;
            h
        }
        pub fn uvarint(&mut self) -> u64 {
            let (mut v, mut shift) = (0u64, 0);
            loop {
                let b = self.take(1)[0];
                v |= u64::from(b & 0x7f) << shift;
                if b < 0x80 {
                    return v;
                }
                shift += 7;
            }
        }
        pub fn bool(&mut self) -> bool {
            self.take(1)[0] != 0
        }
        pub fn i16(&mut self) -> i16 {
            i16::from_be_bytes(self.take(2).try_into().unwrap())
        }
        pub fn i32(&mut self) -> i32 {
            i32::from_be_bytes(self.take(4).try_into().unwrap())
        }
        pub fn nstr(&mut self) -> Option<String> {
            let n = self.uvarint();
            (n > 0).then(|| String::from_utf8_lossy(self.take(n as usize - 1)).into_owned())
        }
        /// A compact array's length (`None`: null).
        pub fn len(&mut self) -> Option<usize> {
            let n = self.uvarint();
            (n > 0).then(|| n as usize - 1)
        }
        pub fn ids(&mut self) -> Vec<i32> {
            let n = self.len().unwrap_or(0);
            (0..n).map(|_| self.i32()).collect()
        }
        pub fn tags(&mut self) {
            assert_eq!(self.uvarint(), 0, "no tagged fields");
        }
    }
}

const API_ALTER_PARTITION_REASSIGNMENTS: i16 = 45;
const API_LIST_PARTITION_REASSIGNMENTS: i16 = 46;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const INVALID_REPLICATION_FACTOR: i16 = 38;

/// AlterPartitionReassignments v0 of `(topic, partition, target or None to cancel)`:
/// the top-level error and each partition's (topic, partition, error code).
fn alter_reassignments(
    port: u16,
    moves: &[(&str, i32, Option<&[i32]>)],
) -> (i16, Vec<(String, i32, i16)>) {
    alter_reassignments_flagged(port, moves, true)
}

/// As [`alter_reassignments`]; with `allow_rf_change` false it sends v1 with
/// allowReplicationFactorChange false (KIP-860).
fn alter_reassignments_flagged(
    port: u16,
    moves: &[(&str, i32, Option<&[i32]>)],
    allow_rf_change: bool,
) -> (i16, Vec<(String, i32, i16)>) {
    let version = if allow_rf_change { 0 } else { 1 };
    let mut b = 60_000i32.to_be_bytes().to_vec();
    if version >= 1 {
        b.push(u8::from(allow_rf_change));
    }
    flex::uvarint(&mut b, moves.len() as u64 + 1);
    for (topic, p, target) in moves {
        flex::compact_str(&mut b, topic);
        flex::uvarint(&mut b, 2);
        b.extend_from_slice(&p.to_be_bytes());
        match target {
            Some(t) => {
                flex::uvarint(&mut b, t.len() as u64 + 1);
                for n in *t {
                    b.extend_from_slice(&n.to_be_bytes());
                }
            }
            None => flex::uvarint(&mut b, 0),
        }
        b.push(0); // partition tags
        b.push(0); // topic tags
    }
    b.push(0);
    let mut s = sluice_tests::wire::connect_port(port);
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    let resp = flex::call(&mut s, API_ALTER_PARTITION_REASSIGNMENTS, version, &b);
    let mut d = flex::Dec(&resp);
    let _throttle = d.i32();
    if version >= 1 {
        let _allow = d.bool();
    }
    let top = d.i16();
    let _msg = d.nstr();
    let mut out = Vec::new();
    for _ in 0..d.len().unwrap_or(0) {
        let name = d.nstr().unwrap_or_default();
        for _ in 0..d.len().unwrap_or(0) {
            let p = d.i32();
            let code = d.i16();
            let _msg = d.nstr();
            d.tags();
            out.push((name.clone(), p, code));
        }
        d.tags();
    }
    d.tags();
    (top, out)
}

/// ListPartitionReassignments v0 of every partition: (topic, partition, replicas, adding,
/// removing) of each move in progress.
type Ongoing = (String, i32, Vec<i32>, Vec<i32>, Vec<i32>);
fn list_reassignments(port: u16) -> Vec<Ongoing> {
    let (code, out) = list_reassignments_within(port, 60_000);
    assert_eq!(code, 0, "ListPartitionReassignments error");
    out
}

/// ListPartitionReassignments v0 of every partition with the request's `timeout_ms`: the
/// top-level error code and the moves in progress.
fn list_reassignments_within(port: u16, timeout_ms: i32) -> (i16, Vec<Ongoing>) {
    let mut b = timeout_ms.to_be_bytes().to_vec();
    b.push(0); // topics: null (all)
    b.push(0);
    let mut s = sluice_tests::wire::connect_port(port);
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    let resp = flex::call(&mut s, API_LIST_PARTITION_REASSIGNMENTS, 0, &b);
    let mut d = flex::Dec(&resp);
    let _throttle = d.i32();
    let code = d.i16();
    let _msg = d.nstr();
    let mut out = Vec::new();
    for _ in 0..d.len().unwrap_or(0) {
        let name = d.nstr().unwrap_or_default();
        for _ in 0..d.len().unwrap_or(0) {
            let p = d.i32();
            let (r, a, rm) = (d.ids(), d.ids(), d.ids());
            d.tags();
            out.push((name.clone(), p, r, a, rm));
        }
        d.tags();
    }
    d.tags();
    (code, out)
}

/// (replicas, ISR) of partition 0 of `topic` in `bootstrap`'s Metadata.
fn replicas_and_isr(bootstrap: &str, topic: &str) -> Option<(Vec<i32>, Vec<i32>)> {
    let cons: BaseConsumer = base_config(bootstrap).create().expect("metadata client");
    let md = cons
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    let p = t.partitions().iter().find(|p| p.id() == 0)?;
    Some((p.replicas().to_vec(), p.isr().to_vec()))
}

/// A partition reassignment on three real nodes (KIP-455 on Raft membership changes): a
/// topic at replication factor 2 on two nodes takes `acks=all` records, is moved to the
/// third node and one of the first two with AlterPartitionReassignments while more are
/// produced; ListPartitionReassignments empties once the new replica has joined as a
/// learner, caught up, been promoted, and the leaving one removed; Metadata then lists the
/// new replicas, both in the ISR; with the leaving node killed, the new set serves every
/// acknowledged record, once, in order, and takes new ones. Kafka's errors for a cancel with
/// nothing in progress, an unknown partition, a node named twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_to_new_replicas_and_keeps_every_acknowledged_record() {
    require_cluster!();
    const MOVING: &str = "moving";
    const ROUND: usize = 150;
    let t = NewTopic::new(MOVING, 1, TopicReplication::Fixed(2));
    let mut c = Cluster::start_with_topic(ClusterConfig::default(), &t).await;
    let first = c.node(1).bootstrap();
    let (before, _) = tokio::task::block_in_place(|| {
        poll_until(SETTLE, "a leader and both replicas in sync", || {
            replicas_and_isr(&first, MOVING).filter(|(r, isr)| r.len() == 2 && isr.len() == 2)
        })
    });
    let leaving = before[0];
    let staying = before[1];
    let joining = (1..=3).find(|n| !before.contains(n)).expect("a third node");
    let target = [staying, joining];
    let p = producer(
        &c.bootstrap(),
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    let mut sent = Vec::new();
    produce_round(&p, MOVING, 0, ROUND, &mut sent).await;

    let port = c.node(joining as usize).port();
    // (A partition named twice in one request is INVALID_REQUEST: one request each.)
    for (moves, want) in [
        (&[(MOVING, 0, None)][..], NO_REASSIGNMENT_IN_PROGRESS),
        (
            &[("nosuch", 0, Some(&[1, 2][..]))][..],
            UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            &[(MOVING, 0, Some(&[1, 1][..]))][..],
            INVALID_REPLICA_ASSIGNMENT,
        ),
    ] {
        let got = tokio::task::block_in_place(|| alter_reassignments(port, moves));
        assert_eq!(got.0, 0);
        assert_eq!(
            got.1.iter().map(|e| e.2).collect::<Vec<_>>(),
            [want],
            "{moves:?}: {got:?}"
        );
    }

    // The move, sent to a node that is not the controller's (forwarded), while producing.
    let moved =
        tokio::task::block_in_place(|| alter_reassignments(port, &[(MOVING, 0, Some(&target))]));
    assert_eq!(moved, (0, vec![(MOVING.to_string(), 0, 0)]));
    // In progress, Metadata and ListPartitionReassignments show old and new replicas (unless
    // it already completed: no assertion on timing).
    let ongoing = tokio::task::block_in_place(|| list_reassignments(port));
    for (t, p, replicas, adding, removing) in &ongoing {
        assert_eq!((t.as_str(), *p), (MOVING, 0));
        assert_eq!(replicas, &vec![staying, joining, leaving]);
        assert_eq!((adding, removing), (&vec![joining], &vec![leaving]));
    }
    produce_round(&p, MOVING, 1, ROUND, &mut sent).await;
    tokio::task::block_in_place(|| {
        for id in c.ids() {
            let port = c.node(id).port();
            poll_until(SETTLE, "the reassignment completed", || {
                list_reassignments(port).is_empty().then_some(())
            });
        }
    });
    let (replicas, _) = tokio::task::block_in_place(|| {
        poll_until(SETTLE, "the new replicas in sync", || {
            replicas_and_isr(&first, MOVING).filter(|(r, isr)| {
                let mut isr = isr.clone();
                isr.sort_unstable();
                let mut want = target.to_vec();
                want.sort_unstable();
                r.len() == 2 && isr == want
            })
        })
    });
    assert_eq!(
        replicas,
        target.to_vec(),
        "Metadata lists the target replicas"
    );
    // The leaving node deletes its replica.
    let dir = c
        .node(leaving as usize)
        .data_dir()
        .join(format!("{MOVING}-0"));
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "the leaving replica deleted", || {
            (!dir.exists()).then_some(())
        })
    });
    tokio::task::block_in_place(|| c.node(leaving as usize).kill9());
    produce_round(&p, MOVING, 2, ROUND, &mut sent).await;
    let bootstrap = c.node(joining as usize).bootstrap();
    let got = tokio::task::block_in_place(|| {
        let mut cfg = base_config(&bootstrap);
        cfg.set("group.id", "moving-reader")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false");
        let cons: BaseConsumer = cfg.create().expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(MOVING, 0, Offset::Beginning)
            .unwrap();
        cons.assign(&tpl).expect("assign");
        let mut got = Vec::new();
        poll_until(SETTLE, "every acknowledged record", || {
            while let Some(m) = cons.poll(Duration::from_millis(200)) {
                let m = m.ok()?;
                use rdkafka::Message;
                got.push(String::from_utf8_lossy(m.payload()?).into_owned());
            }
            (got.len() >= sent.len()).then_some(())
        });
        got
    });
    assert_eq!(got, sent, "every acknowledged record from the new replicas");
    tokio::task::block_in_place(|| c.stop_all());
}

/// Partitions of one replica reassigned (their log becomes a Raft group's, adopted by the
/// only replica): a topic at replication factor 1 with `acks=all` records is raised to 3
/// replicas while more are produced, another one moves to a different node ([X] → [Y]:
/// a one-voter group there, restarted with kill -9 and still a group). Once
/// ListPartitionReassignments is empty everywhere, the original owner of the first is
/// killed with kill -9 and the other two serve every acknowledged record of it, once, in
/// order, and take new ones; the moved one serves all of its records from its new node;
/// the first then shrinks to one replica and still serves them all. The moved one had its
/// first records deleted (DeleteRecords) before the move: they stay deleted on its new node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_partitions_gain_replicas_and_move_keeping_every_record() {
    require_cluster!();
    const GROWN: &str = "grown";
    const MOVED: &str = "moved";
    const ROUND: usize = 100;
    let t = NewTopic::new(GROWN, 1, TopicReplication::Fixed(1));
    let mut c = Cluster::start_with_topic(ClusterConfig::default(), &t).await;
    let first = c.node(1).bootstrap();
    let moved = NewTopic::new(MOVED, 1, TopicReplication::Fixed(1));
    let res = admin(&first)
        .create_topics([&moved], &admin_opts())
        .await
        .expect("CreateTopics request");
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    let owner_of = |topic: &'static str| {
        let first = first.clone();
        tokio::task::block_in_place(move || {
            poll_until(SETTLE, "one replica in sync", || {
                replicas_and_isr(&first, topic).filter(|(r, isr)| r.len() == 1 && isr == r)
            })
        })
        .0[0]
    };
    let owner = owner_of(GROWN);
    let m_from = owner_of(MOVED);
    // (Not the node killed below either.)
    let m_to = (1..=3)
        .find(|n| *n != m_from && *n != owner)
        .expect("another node");
    let p = producer(
        &c.bootstrap(),
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    let (mut sent, mut sent_m) = (Vec::new(), Vec::new());
    produce_round(&p, GROWN, 0, ROUND, &mut sent).await;
    produce_round(&p, MOVED, 0, ROUND, &mut sent_m).await;
    // The partition to move loses its first records to a DeleteRecords while it is a plain
    // one-replica log (its checkpoint): they must stay deleted on the node it moves to.
    use sluice_tests::wire::{connect_port, delete_records, list_offset};
    const DELETED: usize = 30;
    let mut w = connect_port(c.node(m_from as usize).port());
    assert_eq!(
        delete_records(&mut w, MOVED, 0, DELETED as i64, 30_000),
        (0, DELETED as i64)
    );
    let kept_m = |sent_m: &[String]| sent_m[DELETED..].to_vec();

    let grown: Vec<i32> = std::iter::once(owner)
        .chain((1..=3).filter(|n| *n != owner))
        .collect();
    let port = c.node(1).port();
    // Kafka's check still holds: a different replica count needs the flag.
    let refused = tokio::task::block_in_place(|| {
        alter_reassignments_flagged(port, &[(GROWN, 0, Some(&grown[..]))], false)
    });
    assert_eq!(refused.1[0].2, INVALID_REPLICATION_FACTOR, "{refused:?}");
    let got =
        tokio::task::block_in_place(|| alter_reassignments(port, &[(GROWN, 0, Some(&grown[..]))]));
    assert_eq!(got, (0, vec![(GROWN.to_string(), 0, 0)]));
    let got =
        tokio::task::block_in_place(|| alter_reassignments(port, &[(MOVED, 0, Some(&[m_to]))]));
    assert_eq!(got, (0, vec![(MOVED.to_string(), 0, 0)]));
    produce_round(&p, GROWN, 1, ROUND, &mut sent).await;
    produce_round(&p, MOVED, 1, ROUND, &mut sent_m).await;
    tokio::task::block_in_place(|| {
        for id in c.ids() {
            let port = c.node(id).port();
            poll_until(SETTLE, "the reassignments completed", || {
                list_reassignments(port).is_empty().then_some(())
            });
        }
        poll_until(SETTLE, "three replicas in sync", || {
            replicas_and_isr(&first, GROWN).filter(|(r, isr)| *r == grown && isr.len() == 3)
        });
        poll_until(SETTLE, "the moved partition on its new node", || {
            replicas_and_isr(&first, MOVED).filter(|(r, isr)| *r == [m_to] && *isr == [m_to])
        });
    });
    let dir = c
        .node(m_from as usize)
        .data_dir()
        .join(format!("{MOVED}-0"));
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "the moved replica deleted", || {
            (!dir.exists()).then_some(())
        })
    });
    let mut w = connect_port(c.node(m_to as usize).port());
    assert_eq!(
        list_offset(&mut w, MOVED, 0, -2),
        (0, DELETED as i64),
        "the log start moved with the partition"
    );

    tokio::task::block_in_place(|| c.node(owner as usize).kill9());
    produce_round(&p, GROWN, 2, ROUND, &mut sent).await;
    let reader = c.node(grown[1] as usize).bootstrap();
    let got = tokio::task::block_in_place(|| read_partition(&reader, GROWN, 0, sent.len()));
    assert_eq!(got, sent, "every acknowledged record from the new replicas");

    // The moved partition is a one-voter group on its new node: it serves everything,
    // takes more, and is a group again after a kill -9 there.
    produce_round(&p, MOVED, 2, ROUND, &mut sent_m).await;
    tokio::task::block_in_place(|| {
        c.node(m_to as usize).kill9();
        c.node(m_to as usize).restart();
    });
    produce_round(&p, MOVED, 3, ROUND, &mut sent_m).await;
    let reader = c.node(m_to as usize).bootstrap();
    let want = kept_m(&sent_m);
    let got = tokio::task::block_in_place(|| read_partition(&reader, MOVED, 0, want.len()));
    assert_eq!(
        got, want,
        "every acknowledged record of the moved partition, none it deleted"
    );

    // The grown partition shrinks to one replica (its original owner still down): a
    // one-voter group on the staying node, which keeps serving everything.
    let stay = grown[1];
    let port = c.node(stay as usize).port();
    let got =
        tokio::task::block_in_place(|| alter_reassignments(port, &[(GROWN, 0, Some(&[stay]))]));
    assert_eq!(got, (0, vec![(GROWN.to_string(), 0, 0)]));
    let reader = c.node(stay as usize).bootstrap();
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "shrunk to one replica", || {
            (list_reassignments(port).is_empty()
                && replicas_and_isr(&reader, GROWN).is_some_and(|(r, _)| r == [stay]))
            .then_some(())
        })
    });
    produce_round(&p, GROWN, 3, ROUND, &mut sent).await;
    let got = tokio::task::block_in_place(|| read_partition(&reader, GROWN, 0, sent.len()));
    assert_eq!(got, sent, "every acknowledged record after the shrink");
    tokio::task::block_in_place(|| c.stop_all());
}

/// The state a kill -9 mid-conversion leaves: a one-replica partition's move is recorded
/// while its only node is down (killed with kill -9), so that node restarts with the plain
/// log on disk and a move in progress its store knows nothing of. It adopts the log then
/// (never clearing it as a stray replica's), the move completes, and with that node killed
/// again the new replicas serve every acknowledged record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_replica_partition_moved_while_its_node_is_down_is_adopted_at_restart() {
    require_cluster!();
    const LATE: &str = "late";
    let t = NewTopic::new(LATE, 1, TopicReplication::Fixed(1));
    let mut c = Cluster::start_with_topic(ClusterConfig::default(), &t).await;
    let first = c.node(1).bootstrap();
    let owner = tokio::task::block_in_place(|| {
        poll_until(SETTLE, "one replica in sync", || {
            replicas_and_isr(&first, LATE).filter(|(r, isr)| r.len() == 1 && isr == r)
        })
    })
    .0[0];
    let p = producer(
        &c.bootstrap(),
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    let mut sent = Vec::new();
    produce_round(&p, LATE, 0, 200, &mut sent).await;
    tokio::task::block_in_place(|| c.node(owner as usize).kill9());
    let others: Vec<i32> = (1..=3).filter(|n| *n != owner).collect();
    let grown = [owner, others[0], others[1]];
    let port = c.node(others[0] as usize).port();
    let got = tokio::task::block_in_place(|| {
        poll_until(SETTLE, "the move accepted", || {
            let got = alter_reassignments(port, &[(LATE, 0, Some(&grown[..]))]);
            (got.1.first().map(|e| e.2) == Some(0)).then_some(got)
        })
    });
    assert_eq!(got.0, 0);
    tokio::task::block_in_place(|| {
        c.node(owner as usize).restart();
        for id in c.ids() {
            let port = c.node(id).port();
            poll_until(SETTLE, "the reassignment completed", || {
                list_reassignments(port).is_empty().then_some(())
            });
        }
        let reader = c.node(others[0] as usize).bootstrap();
        poll_until(SETTLE, "three replicas in sync", || {
            replicas_and_isr(&reader, LATE).filter(|(r, isr)| *r == grown && isr.len() == 3)
        });
        c.node(owner as usize).kill9();
    });
    let log = c.node(owner as usize).stderr_log() + &c.node(owner as usize).stdout_log();
    assert!(
        log.contains(&format!("adopted partition log {LATE}-0")),
        "the restarted node adopted the plain log"
    );
    let reader = c.node(others[1] as usize).bootstrap();
    let got = tokio::task::block_in_place(|| read_partition(&reader, LATE, 0, sent.len()));
    assert_eq!(got, sent, "every acknowledged record, adopted at restart");
    tokio::task::block_in_place(|| c.stop_all());
}

/// Replication throttles as `kafka-reassign-partitions.sh --throttle` sets them: the topic's
/// `leader.replication.throttled.replicas` names the partition's current replica and
/// `follower.replication.throttled.replicas` the one joining, the leader's node gets its own
/// `leader.replication.throttled.rate` and every node the cluster-wide default
/// `follower.replication.throttled.rate`. A one-replica partition holding `BACKLOG` bytes
/// then moves to another node: the new replica catches up from the leader's log at that
/// rate, so the move takes at least what the rate allows (a lower bound only: a slow host
/// makes it longer, never shorter; unthrottled it takes well under a second here). Every
/// record reads back from the new node, and the configs clear again (as `--verify` clears
/// them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_reassignment_catches_up_no_faster_than_its_rate() {
    require_cluster!();
    const SLOW: &str = "slow";
    const RATE: u64 = 1 << 20;
    const VALUE_BYTES: usize = 8 << 10;
    const RECORDS: usize = 768;
    const BACKLOG: u64 = (VALUE_BYTES * RECORDS) as u64;
    let t = NewTopic::new(SLOW, 1, TopicReplication::Fixed(1));
    let mut c = Cluster::start_with_topic(ClusterConfig::default(), &t).await;
    let first = c.node(1).bootstrap();
    let owner = tokio::task::block_in_place(|| {
        poll_until(SETTLE, "one replica in sync", || {
            replicas_and_isr(&first, SLOW).filter(|(r, isr)| r.len() == 1 && isr == r)
        })
    })
    .0[0];
    let joining = (1..=3).find(|n| *n != owner).expect("another node");
    let p = producer(&c.bootstrap(), &[("acks", "all"), ("linger.ms", "5")]);
    let value = vec![b'x'; VALUE_BYTES];
    let sends: Vec<_> = (0..RECORDS)
        .map(|_| {
            p.send(
                FutureRecord::<(), _>::to(SLOW)
                    .partition(0)
                    .payload(&value[..]),
                Duration::from_secs(60),
            )
        })
        .collect();
    for s in sends {
        s.await.unwrap_or_else(|e| panic!("produce: {e:?}"));
    }
    sluice_tests::kafka::alter_topic_config(
        &admin(&first),
        SLOW,
        &[
            (
                "leader.replication.throttled.replicas",
                &format!("0:{owner}"),
            ),
            (
                "follower.replication.throttled.replicas",
                &format!("0:{joining}"),
            ),
        ],
    )
    .await;
    let rate = RATE.to_string();
    let leader_rate = [("leader.replication.throttled.rate", rate.as_str())];
    let follower_rate = [("follower.replication.throttled.rate", rate.as_str())];
    assert_eq!(alter_broker_raw(c.node(1), "", &follower_rate).0, 0);
    assert_eq!(
        alter_broker_raw(c.node(1), &owner.to_string(), &leader_rate).0,
        0
    );
    // The leader's node has the rate (and so, applied in order, the topic's lists) before
    // the move starts.
    let via_owner = c.node(owner as usize).bootstrap();
    let owner_rate = || {
        let via = via_owner.clone();
        move || {
            use rdkafka::admin::ResourceSpecifier;
            let rt = tokio::runtime::Handle::current();
            let res = rt
                .block_on(
                    admin(&via)
                        .describe_configs([&ResourceSpecifier::Broker(owner)], &admin_opts()),
                )
                .ok()?;
            let r = res.into_iter().next()?.ok()?;
            r.get("leader.replication.throttled.rate")?.value.clone()
        }
    };
    let owner_rate_now = owner_rate();
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "the leader's node has its rate", || {
            (owner_rate_now()? == rate).then_some(())
        })
    });
    let port = c.node(1).port();
    let started = std::time::Instant::now();
    let got =
        tokio::task::block_in_place(|| alter_reassignments(port, &[(SLOW, 0, Some(&[joining]))]));
    assert_eq!(got, (0, vec![(SLOW.to_string(), 0, 0)]));
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "the throttled move completed", || {
            let done = list_reassignments(port).is_empty();
            (done && replicas_and_isr(&first, SLOW).is_some_and(|(_, isr)| isr == [joining]))
                .then_some(())
        })
    });
    let took = started.elapsed();
    // A second of allowance up front, the rest at the rate.
    let least = Duration::from_secs_f64((BACKLOG - RATE) as f64 / RATE as f64 * 0.8);
    assert!(
        took >= least,
        "{BACKLOG} bytes caught up in {took:?} at {RATE} bytes/s (at least {least:?})"
    );
    eprintln!("{BACKLOG} bytes caught up in {took:?} under a {RATE} bytes/s throttle");
    // Cleared as `--verify` clears them.
    assert_eq!(alter_broker_raw(c.node(1), "", &[]).0, 0);
    assert_eq!(alter_broker_raw(c.node(1), &owner.to_string(), &[]).0, 0);
    let owner_rate_now = owner_rate();
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "the leader's rate cleared", || {
            (owner_rate_now()? == i64::MAX.to_string()).then_some(())
        })
    });
    let got = tokio::task::block_in_place(|| read_partition(&first, SLOW, 0, RECORDS));
    assert_eq!(got.len(), RECORDS, "every record from the new replica");
    assert!(got.iter().all(|v| v.len() == VALUE_BYTES));
    tokio::task::block_in_place(|| c.stop_all());
}

/// Reads partition `partition` of `topic` from the beginning through `bootstrap` until
/// `want` records arrived (bounded).
fn read_partition(bootstrap: &str, topic: &str, partition: i32, want: usize) -> Vec<String> {
    let mut cfg = base_config(bootstrap);
    cfg.set("group.id", format!("{topic}-{partition}-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let cons: BaseConsumer = cfg.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    cons.assign(&tpl).expect("assign");
    let mut got = Vec::new();
    poll_until(SETTLE, "every acknowledged record", || {
        while let Some(m) = cons.poll(Duration::from_millis(200)) {
            let m = m.ok()?;
            use rdkafka::Message;
            got.push(String::from_utf8_lossy(m.payload()?).into_owned());
        }
        (got.len() >= want).then_some(())
    });
    got
}

/// A replication factor change and a cancellation: a partition on two nodes gains the
/// third (a learner promoted, nobody leaves) and ends with three replicas in sync; a move
/// cancelled right after it began (or, if it already completed, answered
/// NO_REASSIGNMENT_IN_PROGRESS) leaves the partition on one of the two sets with no move
/// in progress and every replica in sync. Every acknowledged record reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_gains_a_replica_and_a_cancelled_move_settles() {
    require_cluster!();
    const GROWING: &str = "growing";
    const ROUND: usize = 100;
    let t = NewTopic::new(GROWING, 1, TopicReplication::Fixed(2));
    let mut c = Cluster::start_with_topic(ClusterConfig::default(), &t).await;
    let first = c.node(1).bootstrap();
    let (before, _) = tokio::task::block_in_place(|| {
        poll_until(SETTLE, "a leader and both replicas in sync", || {
            replicas_and_isr(&first, GROWING).filter(|(r, isr)| r.len() == 2 && isr.len() == 2)
        })
    });
    let third = (1..=3).find(|n| !before.contains(n)).expect("a third node");
    let grown = [before[0], before[1], third];
    let p = producer(
        &c.bootstrap(),
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    let mut sent = Vec::new();
    produce_round(&p, GROWING, 0, ROUND, &mut sent).await;
    let port = c.node(1).port();
    let got = tokio::task::block_in_place(|| {
        alter_reassignments(port, &[(GROWING, 0, Some(&grown[..]))])
    });
    assert_eq!(got, (0, vec![(GROWING.to_string(), 0, 0)]));
    produce_round(&p, GROWING, 1, ROUND, &mut sent).await;
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "three replicas in sync, no move left", || {
            let (r, isr) = replicas_and_isr(&first, GROWING)?;
            (r == grown && isr.len() == 3 && list_reassignments(port).is_empty()).then_some(())
        })
    });
    // Back to two replicas, cancelled at once.
    let shrunk = [third, before[1]];
    let got =
        tokio::task::block_in_place(|| alter_reassignments(port, &[(GROWING, 0, Some(&shrunk))]));
    assert_eq!(got, (0, vec![(GROWING.to_string(), 0, 0)]));
    let cancel = tokio::task::block_in_place(|| alter_reassignments(port, &[(GROWING, 0, None)]));
    assert!(
        [0, NO_REASSIGNMENT_IN_PROGRESS].contains(&cancel.1[0].2),
        "{cancel:?}"
    );
    produce_round(&p, GROWING, 2, ROUND, &mut sent).await;
    let settled = tokio::task::block_in_place(|| {
        poll_until(SETTLE, "no move left, every replica in sync", || {
            let (r, isr) = replicas_and_isr(&first, GROWING)?;
            (list_reassignments(port).is_empty() && isr.len() == r.len()).then_some(r)
        })
    });
    if cancel.1[0].2 == 0 {
        // (Kafka's revert: the staying replicas in the target's order, then the others.)
        let mut set = settled.clone();
        set.sort_unstable();
        let mut want = grown.to_vec();
        want.sort_unstable();
        assert_eq!(set, want, "cancelled: back to the replicas before the move");
    } else {
        assert_eq!(settled, shrunk, "completed before the cancel");
    }
    let reader = c.node(settled[0] as usize).bootstrap();
    let got = tokio::task::block_in_place(|| read_partition(&reader, GROWING, 0, sent.len()));
    assert_eq!(got, sent);
    tokio::task::block_in_place(|| c.stop_all());
}

/// ListPartitionReassignments is answered as the controller would (Kafka answers it from
/// its controller): a node cut off from the others, asked right after another node accepted
/// a move, never answers from its stale copy of the metadata that no move is in progress
/// (it answers an error while it cannot reach the controller); once it can, it lists the
/// move (the move includes the cut-off node, so it cannot complete meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_partition_reassignments_answers_as_the_controller_would() {
    require_cluster!();
    const T: &str = "listed";
    let t = NewTopic::new(T, 1, TopicReplication::Fixed(2));
    let mut c = Cluster::start_with_topic(ClusterConfig::default(), &t).await;
    let first = c.node(1).bootstrap();
    let (before, _) = tokio::task::block_in_place(|| {
        poll_until(SETTLE, "both replicas in sync", || {
            replicas_and_isr(&first, T).filter(|(r, isr)| r.len() == 2 && isr.len() == 2)
        })
    });
    let controller = tokio::task::block_in_place(|| c.controller(SETTLE));
    // The node to cut off: not the controller's (whose own stale leadership would answer
    // for a while). The move includes it: as a joining replica it cannot catch up, as a
    // staying one its partition has no quorum, so the move cannot complete meanwhile.
    let cut = c.ids().find(|&i| i != controller).expect("another node") as i32;
    let third = (1..=3).find(|n| !before.contains(n)).expect("a third node");
    let target = if before.contains(&cut) {
        [cut, third]
    } else {
        [before[0], cut]
    };
    let leaving: Vec<i32> = before
        .iter()
        .copied()
        .filter(|n| !target.contains(n))
        .collect();
    let adding: Vec<i32> = target
        .iter()
        .copied()
        .filter(|n| !before.contains(n))
        .collect();
    let mut replicas = target.to_vec();
    replicas.extend(&leaving);
    let want = vec![(T.to_string(), 0, replicas, adding, leaving)];
    let port = c.node(controller).port();
    let cut = cut as usize;
    tokio::task::block_in_place(|| c.isolate(cut));
    let moved = tokio::task::block_in_place(|| alter_reassignments(port, &[(T, 0, Some(&target))]));
    assert_eq!(moved, (0, vec![(T.to_string(), 0, 0)]));
    // The accepting node lists it at once.
    assert_eq!(
        tokio::task::block_in_place(|| list_reassignments(port)),
        want
    );
    // The cut-off node cannot learn it, nor reach the controller: an error, never "none".
    let cut_port = c.node(cut).port();
    let (code, listed) = tokio::task::block_in_place(|| list_reassignments_within(cut_port, 3000));
    assert!(
        code != 0 || listed == want,
        "the cut-off node answered {listed:?} (error {code})"
    );
    tokio::task::block_in_place(|| c.heal());
    let ports: Vec<u16> = c.ids().map(|id| c.node(id).port()).collect();
    tokio::task::block_in_place(|| {
        poll_until(
            SETTLE,
            "the healed node listing the move, or it completed",
            || {
                let (code, listed) = list_reassignments_within(cut_port, 5000);
                (code == 0 && (listed == want || listed.is_empty())).then_some(())
            },
        );
        poll_until(SETTLE, "the move completed", || {
            ports
                .iter()
                .all(|&p| list_reassignments(p).is_empty())
                .then_some(())
        });
    });
    tokio::task::block_in_place(|| c.stop_all());
}

/// The serving leader of `topic`/0 as node `ask`'s Metadata names it, other than `not`:
/// its node id and a connection to it, once it answers ListOffsets (a new leader answers
/// OFFSET_NOT_AVAILABLE until its election no-op committed).
fn serving_leader(
    c: &mut Cluster,
    ask: usize,
    topic: &str,
    not: Option<usize>,
) -> (usize, TcpStream) {
    use sluice_tests::wire::{connect_port, list_offset, partition_leader};
    let port = c.node(ask).port();
    poll_until(SETTLE, "a serving leader", || {
        let mut s = connect_port(port);
        let (id, leader_port) = partition_leader(&mut s, topic, 0)?;
        let id = usize::try_from(id).ok().filter(|&i| Some(i) != not)?;
        let mut l = connect_port(leader_port);
        (list_offset(&mut l, topic, 0, -2).0 == 0).then_some((id, l))
    })
}

/// DeleteRecords on a partition with three replicas (Kafka's semantics, through Raft): the
/// leader answers with the new log start (inside a batch too) once the move committed, and
/// ListOffsets earliest and Fetch below it behave as after Kafka's DeleteRecords; followers
/// answer NOT_LEADER_OR_FOLLOWER, an offset past the high watermark OFFSET_OUT_OF_RANGE, a
/// lower one changes nothing. After kill -9 of the leader the new leader has the same log
/// start; -1 (the high watermark) empties the partition; the start survives the killed
/// node's restart and another leader change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_on_a_replicated_partition_survives_leader_changes() {
    use sluice_tests::wire::{delete_records, fetch_at, list_offset};
    require_cluster!();
    const DR: &str = "dr3";
    const OFFSET_OUT_OF_RANGE: i16 = 1;
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    let mut c = Cluster::start(3);
    let first = c.node(1).bootstrap();
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "every node registered", || {
            (broker_ids(&first) == [1, 2, 3]).then_some(())
        })
    });
    let t = NewTopic::new(DR, 1, TopicReplication::Fixed(3));
    let res = admin(&first)
        .create_topics([&t], &admin_opts())
        .await
        .expect("CreateTopics request");
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    let (leader, mut l) = tokio::task::block_in_place(|| serving_leader(&mut c, 1, DR, None));
    let p = producer(
        &c.bootstrap(),
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    let mut sent = Vec::new();
    produce_round(&p, DR, 0, 100, &mut sent).await;
    let (e, start) = list_offset(&mut l, DR, 0, -2);
    assert_eq!(e, 0);
    let (e, hw) = list_offset(&mut l, DR, 0, -1);
    assert_eq!(e, 0);
    assert!(hw >= start + 100, "{start}..{hw}");
    // One batch per record, the last 100 offsets (Raft's election no-op comes first).
    let x = hw - 100 + 37;

    // A follower refuses; past the high watermark is out of range; nothing moved.
    let follower = c.ids().find(|&i| i != leader).unwrap();
    let mut f = sluice_tests::wire::connect_port(c.node(follower).port());
    assert_eq!(
        delete_records(&mut f, DR, 0, x, 30_000).0,
        NOT_LEADER_OR_FOLLOWER
    );
    assert_eq!(
        delete_records(&mut l, DR, 0, hw + 1, 30_000).0,
        OFFSET_OUT_OF_RANGE
    );
    assert_eq!(
        delete_records(&mut l, DR, 0, -2, 30_000).0,
        OFFSET_OUT_OF_RANGE
    );
    assert_eq!(list_offset(&mut l, DR, 0, -2), (0, start));

    // The move: answered with the new start, which reads then see.
    assert_eq!(delete_records(&mut l, DR, 0, x, 30_000), (0, x));
    assert_eq!(list_offset(&mut l, DR, 0, -2), (0, x));
    assert_eq!(fetch_at(&mut l, DR, 0, x - 1).0, OFFSET_OUT_OF_RANGE);
    let (e, _, records) = fetch_at(&mut l, DR, 0, x);
    assert_eq!(e, 0);
    assert!(!records.is_empty(), "the records from {x} on are there");
    // A lower offset changes nothing and answers the start.
    assert_eq!(delete_records(&mut l, DR, 0, x - 10, 30_000), (0, x));
    // A consumer from the beginning starts at it.
    let read_from_start = |bootstrap: String, want: usize| {
        let mut cfg = base_config(&bootstrap);
        cfg.set("group.id", "dr3-reader")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false");
        let cons: BaseConsumer = cfg.create().expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(DR, 0, Offset::Beginning).unwrap();
        cons.assign(&tpl).expect("assign");
        let mut got = Vec::new();
        poll_until(SETTLE, "the records after the log start", || {
            while let Some(m) = cons.poll(Duration::from_millis(200)) {
                let m = m.ok()?;
                use rdkafka::Message;
                got.push((
                    m.offset(),
                    String::from_utf8_lossy(m.payload()?).into_owned(),
                ));
            }
            (got.len() >= want).then_some(())
        });
        got
    };
    let got = tokio::task::block_in_place(|| read_from_start(c.bootstrap(), sent.len() - 37));
    assert_eq!(got.first().map(|g| g.0), Some(x));
    assert_eq!(
        got.iter().map(|g| g.1.clone()).collect::<Vec<_>>(),
        sent[37..],
        "what is left"
    );

    // The leader dies: the new one has the same start (it serves only once everything
    // committed before its term is applied).
    tokio::task::block_in_place(|| c.node(leader).kill9());
    let ask = follower;
    let (leader2, mut l2) =
        tokio::task::block_in_place(|| serving_leader(&mut c, ask, DR, Some(leader)));
    assert_eq!(
        list_offset(&mut l2, DR, 0, -2),
        (0, x),
        "new leader {leader2}"
    );
    assert_eq!(fetch_at(&mut l2, DR, 0, x - 1).0, OFFSET_OUT_OF_RANGE);
    assert_eq!(fetch_at(&mut l2, DR, 0, start).0, OFFSET_OUT_OF_RANGE);
    assert_eq!(fetch_at(&mut l2, DR, 0, x).0, 0);

    // -1: up to the high watermark.
    produce_round(&p, DR, 1, 20, &mut sent).await;
    let (e, hw2) = list_offset(&mut l2, DR, 0, -1);
    assert_eq!(e, 0);
    assert_eq!(delete_records(&mut l2, DR, 0, -1, 30_000), (0, hw2));
    assert_eq!(list_offset(&mut l2, DR, 0, -2), (0, hw2));
    assert_eq!(fetch_at(&mut l2, DR, 0, hw2 - 1).0, OFFSET_OUT_OF_RANGE);

    // The killed node comes back (its replica caught up through Raft), then the second
    // leader dies too: whoever leads next, the start is still the high watermark.
    tokio::task::block_in_place(|| c.node(leader).restart());
    let back = c.node(leader).bootstrap();
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "the restarted node back in the ISR", || {
            let cons: BaseConsumer = base_config(&back).create().ok()?;
            let md = cons.fetch_metadata(Some(DR), Duration::from_secs(5)).ok()?;
            let t = md.topics().iter().find(|t| t.name() == DR)?;
            (t.partitions().first()?.isr().len() == 3).then_some(())
        })
    });
    tokio::task::block_in_place(|| c.node(leader2).kill9());
    let (leader3, mut l3) =
        tokio::task::block_in_place(|| serving_leader(&mut c, leader, DR, Some(leader2)));
    assert_eq!(
        list_offset(&mut l3, DR, 0, -2),
        (0, hw2),
        "leader {leader3}"
    );
    assert_eq!(fetch_at(&mut l3, DR, 0, hw2 - 1).0, OFFSET_OUT_OF_RANGE);
    tokio::task::block_in_place(|| c.node(leader2).restart());
    tokio::task::block_in_place(|| c.stop_all());
}

/// Controller metadata snapshots on real processes (issue 12): with the snapshot threshold
/// forced down to a few KiB (`SLUICE_METADATA_SNAPSHOT_BYTES`), the voters snapshot their
/// metadata image and compact the controller WAL behind it while one voter is dead (kill -9);
/// it comes back behind the others' log start, catches up from the leader's snapshot, and
/// its Metadata lists every topic. The survivors' snapshot files hold more than their WALs
/// (the log before the snapshot is gone from the WAL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_snapshots_compact_the_wal_and_a_killed_voter_catches_up() {
    require_cluster!();
    const BATCHES: usize = 20;
    const PER_BATCH: usize = 10;
    let mut c = Cluster::start_with(ClusterConfig {
        env: vec![("SLUICE_METADATA_SNAPSHOT_BYTES".into(), "4096".into())],
        ..ClusterConfig::default()
    });
    for id in c.ids() {
        let bootstrap = c.node(id).bootstrap();
        tokio::task::block_in_place(|| {
            poll_until(SETTLE, "every node listed in Metadata", || {
                (broker_ids(&bootstrap) == [1, 2, 3]).then_some(())
            })
        });
    }
    let controller = tokio::task::block_in_place(|| c.controller(SETTLE));
    let victim = c.ids().find(|&i| i != controller).expect("a follower");
    let via = c.node(controller).bootstrap();
    let mut want = Vec::new();
    for b in 0..BATCHES {
        if b == 2 {
            tokio::task::block_in_place(|| c.node(victim).kill9());
        }
        let names: Vec<String> = (0..PER_BATCH).map(|i| format!("snap-{b}-{i}")).collect();
        let topics: Vec<NewTopic> = names
            .iter()
            .map(|n| NewTopic::new(n, 1, TopicReplication::Fixed(1)))
            .collect();
        let res = admin(&via)
            .create_topics(topics.iter(), &admin_opts())
            .await
            .expect("CreateTopics request");
        assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
        want.extend(names);
    }
    want.sort();
    let cluster_dir = |c: &mut Cluster, id: usize| c.node(id).data_dir().join("cluster");
    for id in c.ids().filter(|&i| i != victim) {
        let dir = cluster_dir(&mut c, id);
        // The WAL's rewrite follows the snapshot file's write in the WAL task: polled.
        let what = format!("node {id}: the WAL compacted behind the snapshot");
        let (snap, wal) = tokio::task::block_in_place(|| {
            poll_until(SETTLE, &what, || {
                let snap = std::fs::metadata(dir.join("controller.snapshot"))
                    .ok()?
                    .len();
                let wal = std::fs::metadata(dir.join("controller.wal")).ok()?.len();
                (wal < snap).then_some((snap, wal))
            })
        });
        eprintln!("node {id}: controller.snapshot {snap} bytes, controller.wal {wal} bytes");
    }
    tokio::task::block_in_place(|| c.node(victim).restart());
    let back = c.node(victim).port();
    tokio::task::block_in_place(|| {
        poll_until(SETTLE, "the restarted voter lists every topic", || {
            // Asked of that node itself: a client library could ask any broker it knows.
            let have = sluice_tests::wire::topic_names_at(back)?;
            want.iter().all(|t| have.contains(t)).then_some(())
        })
    });
    let log = c.node(victim).stderr_log();
    // (The wait above asks the restarted voter itself: through a client library, which may
    // ask any broker it learnt of, it could end before that voter had caught up at all.)
    assert!(
        log.contains("caught up from the leader's metadata snapshot"),
        "node {victim} caught up through the leader's snapshot"
    );
    let dir = cluster_dir(&mut c, victim);
    tokio::task::block_in_place(|| {
        poll_until(
            SETTLE,
            "a snapshot on the restarted voter (the leader's, or its own)",
            || dir.join("controller.snapshot").exists().then_some(()),
        )
    });
    tokio::task::block_in_place(|| c.stop_all());
}

/// An idempotent batch a follower refused (NOT_LEADER_OR_FOLLOWER) fences its producer's
/// later batches once that node leads: the later one is refused until the refused one is
/// retried, never taken as an unknown producer's first (KIP-360), whose success librdkafka
/// would count as the refused one's too. The split test lost 21 acknowledged records so,
/// under load; this reproduces the order of events on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_a_follower_refused_fences_its_producers_later_batches_when_it_leads() {
    use sluice_tests::wire::{connect_port, produce, record_batch};
    require_cluster!();
    let mut c = Cluster::start(3);
    create_topic(&c.bootstrap(), 3).await;
    tokio::task::block_in_place(|| {
        let leader = partition_leader(&c);
        let followers: Vec<usize> = c.ids().filter(|&i| i != leader).collect();
        // One record per batch, producer 4242 epoch 0, base sequence `seq`.
        let batch = |seq: i32| sluice_tests::wire::idempotent_batch(b"fenced", 4242, 0, seq);
        const NOT_LEADER_OR_FOLLOWER: i16 = 6;
        for &f in &followers {
            let mut s = connect_port(c.node(f).port());
            let code = produce(&mut s, 7, TOPIC, 0, -1, 5000, &batch(0));
            assert_eq!(code, NOT_LEADER_OR_FOLLOWER, "a follower refuses");
        }
        // The leader stops; one of the followers that refused takes over.
        c.node(leader).pause();
        let new = poll_until(SETTLE, "a follower leads partition 0", || {
            followers.iter().copied().find(|&f| {
                sluice_tests::wire::partition_leaders(c.node(f).port(), TOPIC)
                    .and_then(|p| p.first().copied())
                    .is_some_and(|(_, l)| l == f as i32)
            })
        });
        let mut s = connect_port(c.node(new).port());
        // Once it writes (a plain batch goes through) ...
        let plain = record_batch(&[b"ready"], sluice_tests::wire::now_ms());
        poll_until(SETTLE, "the new leader writes", || {
            (produce(&mut s, 7, TOPIC, 0, -1, 5000, &plain) == 0).then_some(())
        });
        // ... sequence 1 before 0 was written is refused (retriable), not a new start.
        let code = produce(&mut s, 7, TOPIC, 0, -1, 5000, &batch(1));
        assert_eq!(code, NOT_LEADER_OR_FOLLOWER, "the later batch is fenced");
        // The refused batch, retried, is written; then the later one.
        let written = poll_until(SETTLE, "the refused batch retried", || {
            let code = produce(&mut s, 7, TOPIC, 0, -1, 5000, &batch(0));
            (code != NOT_LEADER_OR_FOLLOWER).then_some(code)
        });
        assert_eq!(written, 0);
        assert_eq!(produce(&mut s, 7, TOPIC, 0, -1, 5000, &batch(1)), 0);
        c.node(leader).resume();
    });
}

/// A producer the leader has never seen, whose first batch there does not start at 0, is
/// held once (NOT_LEADER_OR_FOLLOWER, retriable): librdkafka can send such a batch to a
/// new leader a moment before it puts its earlier batches, failed on the old leader, back
/// in its queue, and a success would make it count those as written. The retry of the held
/// batch goes through (KIP-360's new start), as do the batches it may have overtaken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_producer_not_starting_at_0_is_held_once() {
    use sluice_tests::wire::{connect_port, idempotent_batch, produce, record_batch};
    require_cluster!();
    let mut c = Cluster::start(3);
    create_topic(&c.bootstrap(), 3).await;
    tokio::task::block_in_place(|| {
        let leader = partition_leader(&c);
        let mut s = connect_port(c.node(leader).port());
        let plain = record_batch(&[b"ready"], sluice_tests::wire::now_ms());
        poll_until(SETTLE, "the leader writes", || {
            (produce(&mut s, 7, TOPIC, 0, -1, 5000, &plain) == 0).then_some(())
        });
        const NOT_LEADER_OR_FOLLOWER: i16 = 6;
        // Producer 4444 at sequence 3 before 0..=2: held; the earlier ones go, then it.
        let a = |seq: i32| idempotent_batch(b"overtaken", 4444, 0, seq);
        assert_eq!(
            produce(&mut s, 7, TOPIC, 0, -1, 5000, &a(3)),
            NOT_LEADER_OR_FOLLOWER,
            "held"
        );
        for seq in 0..=3 {
            assert_eq!(
                produce(&mut s, 7, TOPIC, 0, -1, 5000, &a(seq)),
                0,
                "seq {seq}"
            );
        }
        // Producer 4545 at sequence 9 with nothing before it: held once, then written.
        let b = |seq: i32| idempotent_batch(b"resumed", 4545, 0, seq);
        assert_eq!(
            produce(&mut s, 7, TOPIC, 0, -1, 5000, &b(9)),
            NOT_LEADER_OR_FOLLOWER,
            "held"
        );
        assert_eq!(
            produce(&mut s, 7, TOPIC, 0, -1, 5000, &b(9)),
            0,
            "its retry"
        );
        assert_eq!(
            produce(&mut s, 7, TOPIC, 0, -1, 5000, &b(10)),
            0,
            "the next"
        );
    });
    tokio::task::block_in_place(|| c.stop_all());
}

/// A batch refused before it reached any replica of its partition (here the partition did
/// not exist yet, as on a node whose view of the topic lags) fences its producer's later
/// batches on the same connection once the partition exists and that node leads it: the
/// leader takes the connection's memory of the refusal as one of its own
/// (`sluice_replica::sequences::ConnRefusals`), so the later batch is refused until the
/// refused one is retried, never written as an unknown producer's first (KIP-360).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_before_any_replica_fences_its_producers_later_batches() {
    use rdkafka::admin::NewPartitions;
    use sluice_tests::wire::{connect_port, produce, record_batch};
    require_cluster!();
    let mut c = Cluster::start(3);
    create_topic(&c.bootstrap(), 3).await;
    let ports: BTreeMap<usize, u16> = c
        .ids()
        .collect::<Vec<_>>()
        .into_iter()
        .map(|id| (id, c.node(id).port()))
        .collect();
    // One record per batch, producer 4343 epoch 0, base sequence `seq`.
    let batch = |seq: i32| sluice_tests::wire::idempotent_batch(b"early", 4343, 0, seq);
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    let new = PARTITIONS; // the partition about to be added
    let mut conns: BTreeMap<usize, TcpStream> = BTreeMap::new();
    tokio::task::block_in_place(|| {
        for (&id, &port) in &ports {
            let mut s = connect_port(port);
            let code = produce(&mut s, 7, TOPIC, new, -1, 5000, &batch(0));
            assert_eq!(
                code, UNKNOWN_TOPIC_OR_PARTITION,
                "node {id}: no such partition yet"
            );
            conns.insert(id, s);
        }
    });
    let res = admin(&c.bootstrap())
        .create_partitions(
            [&NewPartitions::new(TOPIC, PARTITIONS as usize + 1)],
            &admin_opts(),
        )
        .await
        .expect("CreatePartitions request");
    assert!(res.iter().all(|r| r.is_ok()), "CreatePartitions: {res:?}");
    tokio::task::block_in_place(|| {
        let leader = poll_until(SETTLE, "a leader of the new partition", || {
            ports.iter().find_map(|(&id, &port)| {
                sluice_tests::wire::partition_leaders(port, TOPIC)
                    .is_some_and(|p| p.iter().any(|&(i, l)| i == new && l == id as i32))
                    .then_some(id)
            })
        });
        let s = conns.get_mut(&leader).expect("a connection to every node");
        // Once it writes (a plain batch goes through) ...
        let plain = record_batch(&[b"ready"], sluice_tests::wire::now_ms());
        poll_until(SETTLE, "the new partition takes writes", || {
            (produce(s, 7, TOPIC, new, -1, 5000, &plain) == 0).then_some(())
        });
        // ... sequence 1 before 0 was written is refused (retriable), not a new start.
        let code = produce(s, 7, TOPIC, new, -1, 5000, &batch(1));
        assert_eq!(code, NOT_LEADER_OR_FOLLOWER, "the later batch is fenced");
        // The refused batch, retried, is written; then the later one.
        assert_eq!(produce(s, 7, TOPIC, new, -1, 5000, &batch(0)), 0);
        assert_eq!(produce(s, 7, TOPIC, new, -1, 5000, &batch(1)), 0);
    });
}
