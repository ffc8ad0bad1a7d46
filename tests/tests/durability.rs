//! Durability gaps of issue 11: a deleted topic's data never comes back under a re-created
//! topic of the same name (KIP-516 topic ids in partition directories, orphans swept at
//! start), data directories from before topic ids keep their data, `sluice verify` checks
//! every segment offline, and SIGTERM under load loses no acknowledged record.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rdkafka::producer::FutureRecord;
use sluice_tests::kafka::{
    admin, admin_opts, assert_log_eq, base_timestamp, consume_all, consumer, create_topics,
    gen_records, produce_all, producer, wait_for_topic, watermarks, Rec, OP_TIMEOUT,
};
use sluice_tests::{skip_in_cluster_mode, Broker};

const METADATA_FILE: &str = "partition.metadata";

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        assert!(e.file_type().unwrap().is_file(), "{:?}", e.path());
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Produces `n` generated records to `topic`/`partition` with acks=all; returns them.
async fn produce_some(
    broker: &Broker,
    topic: &str,
    partition: i32,
    n: usize,
    seed: u64,
) -> Vec<Rec> {
    let recs = gen_records(&mut StdRng::seed_from_u64(seed), n, base_timestamp());
    let p = producer(&broker.bootstrap(), &[("acks", "all")]);
    let with_partition: Vec<(i32, Rec)> = recs.iter().map(|r| (partition, r.clone())).collect();
    produce_all(&p, topic, &with_partition).await;
    recs
}

async fn delete_topic(broker: &Broker, topic: &str) {
    let results = admin(&broker.bootstrap())
        .delete_topics(&[topic], &admin_opts())
        .await
        .expect("DeleteTopics request");
    for r in results {
        if let Err((name, code)) = r {
            panic!("DeleteTopics {name}: {code:?}");
        }
    }
}

fn topic_id_line(dir: &Path) -> String {
    let text = fs::read_to_string(dir.join(METADATA_FILE))
        .unwrap_or_else(|e| panic!("{}/{METADATA_FILE}: {e}", dir.display()));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("version: 0"), "{text:?}");
    let id = lines.next().unwrap_or_default().to_string();
    assert!(
        id.starts_with("topic_id: ") && id.len() == "topic_id: ".len() + 22,
        "{text:?}"
    );
    id
}

/// The crash window of a deletion: the broker stored the state without the topic and died
/// before its files were gone. The partition directory it left behind (a copy taken before
/// the deletion, put back while the broker is down) must not become the data of a topic
/// re-created under the same name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_topic_never_sees_a_deleted_topics_data() {
    skip_in_cluster_mode!("copies partition directories in and out of one broker's data directory");
    const TOPIC: &str = "phoenix";
    let mut broker = Broker::start();
    create_topics(&admin(&broker.bootstrap()), &[(TOPIC, 1, &[])]).await;
    produce_some(&broker, TOPIC, 0, 50, 1).await;
    broker.stop_ok();
    let dir = broker.data_dir().join(format!("{TOPIC}-0"));
    let aside = broker.data_dir().parent().unwrap().join("aside");
    copy_dir(&dir, &aside);

    broker.restart();
    delete_topic(&broker, TOPIC).await;
    broker.stop_ok();
    assert!(!dir.exists(), "a deleted partition's directory stays");
    let leftovers: Vec<_> = fs::read_dir(broker.data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(TOPIC))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    copy_dir(&aside, &dir);

    broker.restart();
    create_topics(&admin(&broker.bootstrap()), &[(TOPIC, 1, &[])]).await;
    let c = consumer(&broker.bootstrap());
    wait_for_topic(&c, TOPIC, 1).await;
    assert_eq!(
        watermarks(&c, TOPIC, 0),
        (0, 0),
        "the re-created topic holds the deleted topic's records"
    );
    assert!(
        broker
            .stderr_log()
            .contains(&format!("removing orphaned partition directory {TOPIC}-0")),
        "the orphan's removal is not logged"
    );
    let new_id = topic_id_line(&dir);
    assert_ne!(
        new_id,
        topic_id_line(&aside),
        "the re-created topic has the old topic id"
    );

    // The new incarnation's data stays across a restart.
    let recs = produce_some(&broker, TOPIC, 0, 20, 2).await;
    broker.restart();
    let c = consumer(&broker.bootstrap());
    let got = consume_all(&c, TOPIC, &[0], OP_TIMEOUT).await;
    assert_log_eq("re-created topic after restart", &got[&0], &recs, 0);
    assert_eq!(topic_id_line(&dir), new_id);
    broker.stop_ok();
}

/// A data directory written before partition directories held topic ids: each partition
/// directory is adopted by the topic of its name (the file is written), and keeps its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_directory_without_a_topic_id_keeps_its_data() {
    skip_in_cluster_mode!("edits partition directories in one broker's data directory");
    const TOPIC: &str = "elder";
    let mut broker = Broker::start();
    create_topics(&admin(&broker.bootstrap()), &[(TOPIC, 2, &[])]).await;
    let want = [
        produce_some(&broker, TOPIC, 0, 40, 3).await,
        produce_some(&broker, TOPIC, 1, 30, 4).await,
    ];
    broker.stop_ok();
    let mut ids = Vec::new();
    for p in 0..2 {
        let dir = broker.data_dir().join(format!("{TOPIC}-{p}"));
        ids.push(topic_id_line(&dir));
        fs::remove_file(dir.join(METADATA_FILE)).unwrap();
    }

    broker.restart();
    let c = consumer(&broker.bootstrap());
    let got = consume_all(&c, TOPIC, &[0, 1], OP_TIMEOUT).await;
    for p in 0..2 {
        assert_log_eq(&format!("{TOPIC}-{p}"), &got[&p], &want[p as usize], 0);
        let dir = broker.data_dir().join(format!("{TOPIC}-{p}"));
        assert_eq!(
            topic_id_line(&dir),
            ids[p as usize],
            "adopted with another id"
        );
    }
    broker.stop_ok();
}

/// Runs `sluice verify --data-dir DIR`; its exit code and stdout.
fn run_verify(data_dir: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(sluice_tests::sluice_bin())
        .arg("verify")
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run sluice verify");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("sluice verify:\n{stdout}{stderr}");
    (out.status.code(), stdout)
}

/// `sluice verify` checks every segment, not only the tail that recovery checks: clean data
/// passes (also beside the running broker), and a byte flipped in a sealed segment is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_every_segment_and_finds_a_flipped_byte() {
    skip_in_cluster_mode!(
        "runs `sluice verify` on one broker's data directory and flips a byte in it"
    );
    const TOPIC: &str = "ledger";
    let mut broker = Broker::start();
    create_topics(
        &admin(&broker.bootstrap()),
        &[(TOPIC, 2, &[("segment.bytes", "65536")])],
    )
    .await;
    // Rounds of separate produce requests: many batches, rolled into several segments.
    for round in 0..12 {
        produce_some(&broker, TOPIC, 0, 40, 100 + round).await;
    }
    produce_some(&broker, TOPIC, 1, 10, 6).await;

    let (code, out) = run_verify(broker.data_dir());
    assert_eq!(code, Some(0), "verify beside the running broker: {out}");
    broker.stop_ok();
    let (code, out) = run_verify(broker.data_dir());
    assert_eq!(code, Some(0), "verify of a clean data dir: {out}");
    let summary = out.lines().last().unwrap_or_default().to_string();
    assert!(summary.contains(" 0 problems"), "{summary}");

    let dir = broker.data_dir().join(format!("{TOPIC}-0"));
    let mut segments: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    assert!(
        segments.len() >= 3,
        "want sealed segments, got {segments:?}"
    );
    // The first segment is sealed: recovery would not look at it.
    let sealed = &segments[0];
    let mut bytes = fs::read(sealed).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    fs::write(sealed, bytes).unwrap();

    let (code, out) = run_verify(broker.data_dir());
    assert_eq!(code, Some(1), "a flipped byte went unnoticed: {out}");
    let problem = out
        .lines()
        .find(|l| l.starts_with("PROBLEM: "))
        .unwrap_or_else(|| panic!("no problem line: {out}"));
    assert!(problem.contains(&sealed.display().to_string()), "{problem}");
}

/// SIGTERM while a producer sends without pause (acks=1: each produce is answered once
/// appended, before any flush). The broker stops taking requests, answers those in flight,
/// only then flushes and closes its logs, and exits 0: every record whose produce was
/// acknowledged is there after the restart, at the offset it was acknowledged with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_keeps_every_acknowledged_record() {
    skip_in_cluster_mode!("SIGTERM of the only broker under load");
    const TOPIC: &str = "steady";
    // Many partitions: closing them all takes a while, and produces keep arriving meanwhile.
    const PARTITIONS: i32 = 200;
    /// Sends in flight at once.
    const WINDOW: usize = 512;
    const VALUE_BYTES: usize = 8 * 1024;
    /// Acknowledgements to see before the signal.
    const ACKED_BEFORE_SIGNAL: u64 = 5_000;
    let mut broker = Broker::start();
    create_topics(&admin(&broker.bootstrap()), &[(TOPIC, PARTITIONS, &[])]).await;
    let p = producer(
        &broker.bootstrap(),
        &[
            ("acks", "1"),
            ("linger.ms", "1"),
            // Once the broker is gone, sends fail soon instead of waiting for it.
            ("message.timeout.ms", "5000"),
        ],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicU64::new(0));
    let sender = {
        let (stop, acked_count) = (stop.clone(), acked_count.clone());
        tokio::spawn(async move {
            let mut acked: Vec<(i32, i64, Vec<u8>)> = Vec::new();
            let mut inflight = VecDeque::new();
            let mut seq = 0u64;
            let settle =
                |acked: &mut Vec<(i32, i64, Vec<u8>)>,
                 value: Vec<u8>,
                 res: rdkafka::producer::future_producer::OwnedDeliveryResult| {
                    if let Ok(d) = res {
                        acked.push((d.partition, d.offset, value));
                        acked_count.fetch_add(1, Ordering::SeqCst);
                    }
                };
            while !stop.load(Ordering::SeqCst) {
                // Large values: the last flushes, which closing the logs waits for, are
                // long, and the producer keeps sending meanwhile.
                let mut value = format!("steady-{seq:012}-").into_bytes();
                value.resize(VALUE_BYTES, b'0' + (seq % 10) as u8);
                let part = (seq % PARTITIONS as u64) as i32;
                match p.send_result(
                    FutureRecord::<(), _>::to(TOPIC)
                        .partition(part)
                        .payload(&value),
                ) {
                    Ok(f) => {
                        inflight.push_back((value, f));
                        seq += 1;
                    }
                    // The client's queue is full: let deliveries catch up.
                    Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                }
                while inflight.len() >= WINDOW {
                    let (value, f) = inflight.pop_front().unwrap();
                    let res = f.await.expect("delivery future cancelled");
                    settle(&mut acked, value, res);
                }
            }
            for (value, f) in inflight {
                let res = f.await.expect("delivery future cancelled");
                settle(&mut acked, value, res);
            }
            acked
        })
    };
    while acked_count.load(Ordering::SeqCst) < ACKED_BEFORE_SIGNAL {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // SIGTERM with the producer still sending; the harness bounds the wait for the exit.
    tokio::task::block_in_place(|| broker.stop_ok());
    stop.store(true, Ordering::SeqCst);
    let acked = sender.await.unwrap();
    eprintln!(
        "{} records acknowledged before the broker stopped",
        acked.len()
    );

    broker.restart();
    let c = consumer(&broker.bootstrap());
    let parts: Vec<i32> = (0..PARTITIONS).collect();
    let got = consume_all(&c, TOPIC, &parts, Duration::from_secs(60)).await;
    let stored: HashMap<(i32, i64), Option<Vec<u8>>> = got
        .values()
        .flatten()
        .map(|c| ((c.partition, c.offset), c.rec.value.clone()))
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|(p, o, v)| stored.get(&(*p, *o)) != Some(&Some(v.clone())))
        .map(|(p, o, v)| (*p, *o, String::from_utf8_lossy(v).into_owned()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged records are not there after the restart, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    broker.stop_ok();
}

/// A batch refused before it reached its partition (here the topic did not exist yet; in a
/// cluster, a shard or node whose view lagged) fences its producer's later batches sent on
/// the same connection: a later sequence of a producer the log does not know is refused
/// (retriable) until the refused batch comes again, never taken as the producer's first
/// (KIP-360), whose success librdkafka would count as the refused batch's too.
#[test]
fn a_batch_refused_before_its_partition_fences_its_producers_later_batches() {
    use sluice_tests::wire::{connect, create_by_metadata, produce, record_batch};
    skip_in_cluster_mode!("one broker: the topic is created on the connection's node");
    let broker = Broker::start();
    let topic = "fenced-early";
    // One record per batch, producer 77 epoch 0, base sequence `seq`.
    let batch = |seq: i32| sluice_tests::wire::idempotent_batch(b"early", 77, 0, seq);
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    let mut s = connect(&broker);
    assert_eq!(
        produce(&mut s, 7, topic, 0, -1, 5000, &batch(0)),
        UNKNOWN_TOPIC_OR_PARTITION
    );
    create_by_metadata(&mut s, topic);
    let mut other = connect(&broker);
    sluice_tests::poll_until(Duration::from_secs(10), "the topic takes writes", || {
        let plain = record_batch(&[b"plain"], sluice_tests::wire::now_ms());
        (produce(&mut other, 7, topic, 0, -1, 5000, &plain) == 0).then_some(())
    });
    assert_eq!(
        produce(&mut s, 7, topic, 0, -1, 5000, &batch(1)),
        NOT_LEADER_OR_FOLLOWER,
        "the later batch is fenced"
    );
    // The refused batch, retried, is written; then the later one.
    assert_eq!(
        produce(&mut s, 7, topic, 0, -1, 5000, &batch(0)),
        0,
        "the retry"
    );
    assert_eq!(
        produce(&mut s, 7, topic, 0, -1, 5000, &batch(1)),
        0,
        "then the next"
    );
}

/// JBOD (issue 17): three `--data-dir` directories, driven by kafka-python's admin client
/// (tests/python/jbod_check.py). Partitions spread over the directories (fewest first),
/// DescribeLogDirs reports each, AlterReplicaLogDirs moves a replica while a producer writes
/// to it (no acknowledged record lost, nothing left behind) and refuses bad requests with
/// Kafka's codes; the placement survives kill -9; a directory whose writes fail while
/// serving, or that is unusable at start, takes only its partitions offline
/// (KAFKA_STORAGE_ERROR), and its data is back with it.
#[test]
fn partitions_spread_over_data_dirs_move_between_them_and_fail_with_their_dir() {
    skip_in_cluster_mode!("one node's directories");
    let extra = tempfile::tempdir().unwrap();
    let (d2, d3) = (extra.path().join("d2"), extra.path().join("d3"));
    let mut broker = Broker::start_with(sluice_tests::BrokerConfig {
        extra_args: vec![
            "--data-dir".into(),
            format!("{},{}", d2.display(), d3.display()),
        ],
        ..Default::default()
    });
    let canonical = |p: &Path| fs::canonicalize(p).unwrap().display().to_string();
    let dirs = [canonical(broker.data_dir()), canonical(&d2), canonical(&d3)].join(",");
    let state = extra.path().join("state.json").display().to_string();
    let bootstrap = broker.bootstrap();
    let check = |phase: &str, more: &[&str]| {
        let mut args = vec![
            "--bootstrap",
            &bootstrap,
            "--dirs",
            &dirs,
            "--state",
            &state,
            "--phase",
            phase,
        ];
        args.extend_from_slice(more);
        let out = sluice_tests::python_script_ok("jbod_check.py", &args);
        eprintln!("{out}");
    };
    check("spread", &[]);
    broker.kill9();
    broker.restart();
    check("persisted", &[]);
    check("runtime", &[]);
    // The third directory becomes a file: unusable at start.
    broker.stop();
    let away = extra.path().join("d3.away");
    fs::rename(&d3, &away).unwrap();
    fs::write(&d3, b"not a directory").unwrap();
    broker.restart();
    let offline = canonical(&away).replace("d3.away", "d3");
    check("offline", &["--offline-dir", &offline]);
    broker.stop();
    fs::remove_file(&d3).unwrap();
    fs::rename(&away, &d3).unwrap();
    broker.restart();
    check("back", &[]);
}
