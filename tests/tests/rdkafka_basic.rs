//! Real-client (librdkafka via rdkafka) integration tests of produce, fetch, metadata,
//! list-offsets and topic admin against the `sluice` binary.
//!
//! Every test starts its own broker (fresh data dir, own port, 2 shards), so tests run in
//! parallel without sharing state. Consumers use assign() only (no consumer groups yet).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use rdkafka::admin::{NewPartitions, NewTopic};
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use sluice_tests::kafka::{
    admin, admin_opts, alter_topic_config, assert_log_eq, base_timestamp, consume_all, consumer,
    create_topics, first_offset, gen_records, produce_all, produce_and_verify, producer,
    topic_config, wait_for_topic, watermarks, Rec, DEFAULT_REPLICATION, OP_TIMEOUT,
};
use sluice_tests::{test_cluster_nodes, Broker};

const CONSUME_TIMEOUT: Duration = Duration::from_secs(60);

/// Creates `topic` with `partitions` partitions, then [`produce_and_verify`].
async fn roundtrip(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    producer_cfg: &[(&str, &str)],
    n: usize,
    explicit_partitions: bool,
) {
    let bootstrap = broker.bootstrap();
    create_topics(&admin(&bootstrap), &[(topic, partitions, &[])]).await;
    wait_for_topic(&consumer(&bootstrap), topic, partitions as usize).await;
    produce_and_verify(
        &bootstrap,
        topic,
        partitions,
        producer_cfg,
        n,
        explicit_partitions,
    )
    .await;
}

async fn codec_roundtrip(codec: &str) {
    let broker = Broker::start();
    // Plain producer with acks=1, and an idempotent one (which forces acks=all and uses
    // InitProducerId plus sequence numbers), each into its own 3-partition topic.
    roundtrip(
        &broker,
        &format!("codec-{codec}-plain"),
        3,
        &[
            ("compression.type", codec),
            ("acks", "1"),
            ("enable.idempotence", "false"),
        ],
        400,
        true,
    )
    .await;
    roundtrip(
        &broker,
        &format!("codec-{codec}-idempotent"),
        3,
        &[
            ("compression.type", codec),
            ("enable.idempotence", "true"),
            ("acks", "all"),
        ],
        400,
        true,
    )
    .await;
}

#[tokio::test]
async fn codec_none() {
    codec_roundtrip("none").await;
}

#[tokio::test]
async fn codec_gzip() {
    codec_roundtrip("gzip").await;
}

#[tokio::test]
async fn codec_snappy() {
    codec_roundtrip("snappy").await;
}

#[tokio::test]
async fn codec_lz4() {
    codec_roundtrip("lz4").await;
}

#[tokio::test]
async fn codec_zstd() {
    codec_roundtrip("zstd").await;
}

/// acks=0, 1 and all; the client's own partitioner chooses partitions (keys hash, null
/// keys spread), so the client must have understood Metadata.
#[tokio::test]
async fn acks_variants_with_client_partitioner() {
    let broker = Broker::start();
    for (acks, idem) in [
        ("0", "false"),
        ("1", "false"),
        ("all", "false"),
        ("all", "true"),
    ] {
        roundtrip(
            &broker,
            &format!("acks-{acks}-idem-{idem}"),
            3,
            &[("acks", acks), ("enable.idempotence", idem)],
            300,
            false,
        )
        .await;
    }
}

/// A compacted topic takes keyed records and refuses a keyless one: librdkafka reports
/// INVALID_RECORD for it (a permanent error, not retried) and the keyed ones are stored.
#[tokio::test]
async fn a_compacted_topic_refuses_records_without_a_key() {
    use rdkafka::producer::FutureRecord;
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    create_topics(
        &admin(&bootstrap),
        &[("keyed", 1, &[("cleanup.policy", "compact")])],
    )
    .await;
    let cons = consumer(&bootstrap);
    wait_for_topic(&cons, "keyed", 1).await;
    let p: FutureProducer = producer(&bootstrap, &[("linger.ms", "0")]);
    let keyed = p
        .send(
            FutureRecord::to("keyed").partition(0).key("k").payload("v"),
            OP_TIMEOUT,
        )
        .await;
    assert!(keyed.is_ok(), "a keyed record: {keyed:?}");
    // (On a cluster the log also holds Raft's election no-op.)
    let end = watermarks(&cons, "keyed", 0).1;
    let keyless = p
        .send(
            FutureRecord::<(), _>::to("keyed").partition(0).payload("v"),
            OP_TIMEOUT,
        )
        .await;
    match keyless {
        Err((KafkaError::MessageProduction(code), _)) => {
            assert_eq!(code, RDKafkaErrorCode::InvalidRecord)
        }
        other => panic!("a keyless record on a compacted topic: {other:?}"),
    }
    assert_eq!(
        watermarks(&cons, "keyed", 0).1,
        end,
        "nothing of the keyless record"
    );
}

/// The log cleaner on a compacted topic, read back by librdkafka: after many writes over
/// a few keys, every key's latest value is still there at the offset it was written at,
/// superseded values below the active segment are gone, offsets only grow, and a key whose
/// tombstone a pass has kept for `delete.retention.ms` (0 here) disappears.
#[tokio::test]
async fn a_compacted_topic_keeps_the_latest_value_per_key() {
    use rdkafka::producer::FutureRecord;
    use sluice_tests::BrokerConfig;
    let broker = Broker::start_with(BrokerConfig {
        extra_args: vec!["--log-cleaner-interval-ms".into(), "200".into()],
        // A failure's log tail then says what each pass found (or that none ran): a rare
        // stall on a 3-node cluster is not understood yet.
        env: vec![(
            "SLUICE_LOG".into(),
            "info,sluice_storage::log::compact=debug,sluice_broker::shard=trace".into(),
        )],
        ..BrokerConfig::default()
    });
    let bootstrap = broker.bootstrap();
    create_topics(
        &admin(&bootstrap),
        &[(
            "cleaned",
            1,
            &[
                ("cleanup.policy", "compact"),
                ("segment.bytes", "4096"),
                ("min.cleanable.dirty.ratio", "0.01"),
                ("delete.retention.ms", "0"),
            ],
        )],
    )
    .await;
    let cons = consumer(&bootstrap);
    wait_for_topic(&cons, "cleaned", 1).await;
    // Small batches: the active segment, which is never cleaned, holds only a few records.
    let p: FutureProducer = producer(&bootstrap, &[("linger.ms", "5"), ("batch.size", "2048")]);
    // Every key's latest (offset, value); `gone` ends in a tombstone.
    let mut want: BTreeMap<String, (i64, String)> = BTreeMap::new();
    let mut sends = Vec::new();
    for i in 0..1500 {
        let key = if i == 100 {
            "gone".to_string()
        } else {
            format!("key-{}", i % 10)
        };
        let value = format!("value-{i}-{}", "x".repeat(60));
        let rec = FutureRecord::to("cleaned")
            .partition(0)
            .key(&key)
            .payload(&value);
        sends.push((
            key.clone(),
            value.clone(),
            p.send_result(rec).expect("queued"),
        ));
        if i == 200 {
            let tomb = FutureRecord::<str, str>::to("cleaned")
                .partition(0)
                .key("gone");
            sends.push((
                "gone".into(),
                String::new(),
                p.send_result(tomb).expect("queued"),
            ));
        }
    }
    for (key, value, s) in sends {
        let offset = s.await.expect("delivered").expect("acknowledged").offset;
        if value.is_empty() {
            want.remove(&key);
        } else {
            want.insert(key, (offset, value));
        }
    }
    // A few more, one at a time: the segment of the last batches above rolls.
    for i in 0..3 {
        let (key, value) = (format!("filler-{i}"), "f".repeat(100));
        let rec = FutureRecord::to("cleaned")
            .partition(0)
            .key(&key)
            .payload(&value);
        let d = p.send(rec, OP_TIMEOUT).await.expect("acknowledged");
        want.insert(key, (d.offset, value));
    }
    let (_, end) = watermarks(&cons, "cleaned", 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        let all = consume_all(&cons, "cleaned", &[0], CONSUME_TIMEOUT).await;
        let got: Vec<(i64, String, Option<String>)> = all[&0]
            .iter()
            .map(|c| {
                let s = |b: &Option<Vec<u8>>| {
                    b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
                };
                (c.offset, s(&c.rec.key).unwrap_or_default(), s(&c.rec.value))
            })
            .collect();
        let cleaned = got.len() < 200 && !got.iter().any(|(_, k, _)| k == "gone");
        if cleaned || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        got.len() < 200,
        "compacted: {} of 1501 records left",
        got.len()
    );
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "offsets grow");
    let mut latest: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for (o, k, v) in &got {
        match v {
            Some(v) => latest.insert(k.clone(), (*o, v.clone())),
            None => latest.remove(k),
        };
    }
    assert_eq!(latest, want, "every key's latest value at its offset");
    assert!(
        !got.iter().any(|(_, k, _)| k == "gone"),
        "the expired tombstone and its key"
    );
    assert_eq!(
        watermarks(&cons, "cleaned", 0).1,
        end,
        "the log end does not move"
    );
}

/// One record close to the 1 MiB default limit (max.message.bytes = 1048588, the limit on
/// a record batch) goes through uncompressed and compressed; one over it is rejected by the
/// broker with MESSAGE_TOO_LARGE, as Kafka does, without disturbing the log.
#[tokio::test]
async fn large_message_near_limit() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    create_topics(&admin(&bootstrap), &[("big", 1, &[])]).await;
    let cons = consumer(&bootstrap);
    wait_for_topic(&cons, "big", 1).await;
    let base = first_offset(&cons, "big", 0).await;

    let mut rng = StdRng::seed_from_u64(1);
    // Random (incompressible) bytes: the batch stays ~1 MB even under gzip. 1_040_000 plus
    // batch and record overhead (~100 B) is under 1_048_588.
    let mut big = vec![0u8; 1_040_000];
    rng.fill_bytes(&mut big);
    let ts = base_timestamp();
    let rec = |v: Vec<u8>, i: i64| Rec {
        key: Some(b"big".to_vec()),
        value: Some(v),
        headers: vec![("h".into(), Some(b"x".to_vec()))],
        timestamp: ts + i,
    };
    let mut want = Vec::new();
    for (i, codec) in ["none", "gzip", "zstd"].iter().enumerate() {
        // The client's own limit must not be what stops or splits anything here.
        let prod = producer(
            &bootstrap,
            &[
                ("compression.type", codec),
                ("message.max.bytes", "2000000"),
                ("acks", "all"),
            ],
        );
        let r = rec(big.clone(), i as i64);
        let delivered = produce_all(&prod, "big", &[(0, r.clone())]).await;
        assert_eq!(
            delivered,
            vec![(0, base + i as i64)],
            "big record with {codec}"
        );
        want.push(r);
    }

    // 1_100_000 bytes: over the broker's default max.message.bytes.
    let mut too_big = vec![0u8; 1_100_000];
    rng.fill_bytes(&mut too_big);
    let prod = producer(
        &bootstrap,
        &[
            ("message.max.bytes", "2000000"),
            ("acks", "all"),
            ("message.timeout.ms", "15000"),
        ],
    );
    let r = rec(too_big, 99);
    let res = prod
        .send(r.to_record("big", 0), Duration::from_secs(0))
        .await;
    match res {
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {}
        Err((e, _)) => panic!("oversized batch: expected MessageSizeTooLarge, got {e}"),
        Ok(d) => panic!(
            "oversized batch (1.1 MB > max.message.bytes 1048588) was accepted at offset {}",
            d.offset
        ),
    }

    let got = consume_all(&cons, "big", &[0], CONSUME_TIMEOUT).await;
    assert_log_eq("big/0", &got[&0], &want, base);
    assert_eq!(watermarks(&cons, "big", 0), (0, base + 3));
}

/// Metadata lists created and auto-created topics with their partition counts, this
/// broker (node 0 at the listen address) as leader of every partition; in test-cluster
/// mode every node, each partition led by one of them.
#[tokio::test]
async fn metadata_lists_topics() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let adm = admin(&bootstrap);
    create_topics(
        &adm,
        &[("meta-a", 3, &[]), ("meta-b", 1, &[]), ("meta-c", 7, &[])],
    )
    .await;

    // Auto-creation (auto.create.topics.enable=true, num.partitions=1): producing to an
    // unknown topic creates it with one partition.
    let prod = producer(&bootstrap, &[("acks", "all")]);
    let rec = Rec {
        key: None,
        value: Some(b"hello".to_vec()),
        headers: vec![],
        timestamp: base_timestamp(),
    };
    let delivered = produce_all(&prod, "meta-auto", &[(-1, rec)]).await;
    let cons = consumer(&bootstrap);
    // On one node the first offset; replicated, the first after Raft's own entries (see
    // first_offset), so the last one.
    let first = match test_cluster_nodes() {
        None => 0,
        Some(_) => watermarks(&cons, "meta-auto", 0).1 - 1,
    };
    assert_eq!(
        delivered,
        vec![(0, first)],
        "first record of an auto-created topic"
    );

    for (t, n) in [
        ("meta-a", 3),
        ("meta-b", 1),
        ("meta-c", 7),
        ("meta-auto", 1),
    ] {
        wait_for_topic(&cons, t, n).await;
    }
    let md = cons
        .fetch_metadata(None, OP_TIMEOUT)
        .expect("metadata for all topics");
    let mut brokers: Vec<_> = md
        .brokers()
        .iter()
        .map(|b| (b.id(), b.host().to_string(), b.port()))
        .collect();
    brokers.sort();
    let nodes: Vec<_> = broker
        .node_ports()
        .into_iter()
        .map(|(id, port)| (id, "127.0.0.1".to_string(), port as i32))
        .collect();
    assert_eq!(brokers, nodes, "broker list");
    let broker_ids: BTreeSet<i32> = nodes.iter().map(|(id, _, _)| *id).collect();
    let topics: BTreeMap<&str, Vec<(i32, i32)>> = md
        .topics()
        .iter()
        .map(|t| {
            (
                t.name(),
                t.partitions()
                    .iter()
                    .map(|p| (p.id(), p.leader()))
                    .collect(),
            )
        })
        .collect();
    // Created with replication factor -1 and auto-created: the broker's
    // default.replication.factor, 1 on one node, every node in test-cluster mode
    // (`--default-replication-factor N`), each partition on distinct nodes.
    let rf = test_cluster_nodes().unwrap_or(1);
    for t in md.topics().iter().filter(|t| t.name().starts_with("meta-")) {
        for p in t.partitions() {
            let replicas: BTreeSet<i32> = p.replicas().iter().copied().collect();
            assert_eq!(
                (p.replicas().len(), replicas.len()),
                (rf, rf),
                "{}/{} replicas {:?}",
                t.name(),
                p.id(),
                p.replicas()
            );
            assert!(replicas.is_subset(&broker_ids), "{replicas:?}");
        }
    }
    for (t, n) in [
        ("meta-a", 3),
        ("meta-b", 1),
        ("meta-c", 7),
        ("meta-auto", 1),
    ] {
        let parts = topics
            .get(t)
            .unwrap_or_else(|| panic!("{t} missing from metadata {topics:?}"));
        let mut ids: Vec<i32> = parts.iter().map(|(id, _)| *id).collect();
        ids.sort();
        assert_eq!(ids, (0..n).collect::<Vec<_>>(), "{t} partition ids");
        assert!(
            parts.iter().all(|(_, leader)| broker_ids.contains(leader)),
            "{t} leaders {parts:?}, brokers {broker_ids:?}"
        );
    }
}

/// CreateTopics (and its duplicate error), DescribeConfigs, AlterConfigs on retention.ms,
/// CreatePartitions, DeleteRecords, DeleteTopics (and deleting a missing topic).
#[tokio::test]
async fn admin_topic_lifecycle() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let adm = admin(&bootstrap);
    let cons = consumer(&bootstrap);

    create_topics(&adm, &[("life", 3, &[("retention.ms", "86400000")])]).await;
    wait_for_topic(&cons, "life", 3).await;

    // Creating it again fails for that topic with TOPIC_ALREADY_EXISTS.
    let again = NewTopic::new("life", 3, DEFAULT_REPLICATION);
    let res = adm
        .create_topics([&again], &admin_opts())
        .await
        .expect("CreateTopics request");
    assert_eq!(
        res,
        vec![Err((
            "life".to_string(),
            RDKafkaErrorCode::TopicAlreadyExists
        ))],
        "re-creating an existing topic"
    );

    // DescribeConfigs reports the value set at creation and Kafka's defaults.
    assert_eq!(
        topic_config(&adm, "life", "retention.ms").await.as_deref(),
        Some("86400000")
    );
    assert_eq!(
        topic_config(&adm, "life", "cleanup.policy")
            .await
            .as_deref(),
        Some("delete")
    );

    // AlterConfigs changes it, and DescribeConfigs shows the change.
    alter_topic_config(&adm, "life", &[("retention.ms", "7200000")]).await;
    assert_eq!(
        topic_config(&adm, "life", "retention.ms").await.as_deref(),
        Some("7200000")
    );

    // CreatePartitions 3 -> 5, and the new partition takes writes.
    let res = adm
        .create_partitions([&NewPartitions::new("life", 5)], &admin_opts())
        .await
        .expect("CreatePartitions request");
    assert_eq!(res, vec![Ok("life".to_string())], "CreatePartitions");
    wait_for_topic(&cons, "life", 5).await;

    // DeleteRecords: ten records in partition 4, delete below offset 4 -> low watermark 4,
    // and a read from the start yields offsets 4..10 only.
    let base = first_offset(&cons, "life", 4).await;
    let mut rng = StdRng::seed_from_u64(2);
    let recs = gen_records(&mut rng, 10, base_timestamp());
    let addressed: Vec<(i32, Rec)> = recs.iter().map(|r| (4, r.clone())).collect();
    let prod = producer(&bootstrap, &[("acks", "all")]);
    let delivered = produce_all(&prod, "life", &addressed).await;
    assert_eq!(
        delivered,
        (base..base + 10).map(|o| (4, o)).collect::<Vec<_>>()
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("life", 4, Offset::Offset(base + 4))
        .unwrap();
    let res = adm
        .delete_records(&tpl, &admin_opts())
        .await
        .expect("DeleteRecords request");
    let elem = res
        .find_partition("life", 4)
        .expect("DeleteRecords result for life/4");
    // On a test cluster the partition is replicated: the move is a Raft entry, a control
    // batch (consumers skip it) that takes the offset at the log end, as the election no-op
    // does.
    elem.error().expect("DeleteRecords life/4");
    assert_eq!(
        elem.offset(),
        Offset::Offset(base + 4),
        "DeleteRecords low watermark"
    );
    let cluster = test_cluster_nodes().is_some();
    let end = base + 10 + i64::from(cluster);
    assert_eq!(watermarks(&cons, "life", 4), (base + 4, end));
    if cluster {
        // One record after it, so that the log does not end with the control batch (the
        // read below stops at the last record below the high watermark).
        let more = gen_records(&mut rng, 1, base_timestamp());
        let delivered = produce_all(&prod, "life", &[(4, more[0].clone())]).await;
        assert_eq!(delivered, vec![(4, end)]);
        let got = consume_all(&cons, "life", &[4], CONSUME_TIMEOUT).await;
        let got = &got[&4];
        assert_eq!(got.len(), 7, "life/4 after DeleteRecords");
        assert_log_eq(
            "life/4 after DeleteRecords",
            &got[..6],
            &recs[4..],
            base + 4,
        );
        assert_eq!(got[6].offset, end);
        assert!(got[6].rec == more[0]);
    } else {
        let got = consume_all(&cons, "life", &[4], CONSUME_TIMEOUT).await;
        assert_log_eq("life/4 after DeleteRecords", &got[&4], &recs[4..], 4);
    }

    // DeleteTopics, then metadata no longer lists it.
    let res = adm
        .delete_topics(&["life"], &admin_opts())
        .await
        .expect("DeleteTopics request");
    assert_eq!(res, vec![Ok("life".to_string())], "DeleteTopics");
    let deadline = std::time::Instant::now() + OP_TIMEOUT;
    loop {
        let md = cons.fetch_metadata(None, OP_TIMEOUT).expect("metadata");
        let names: BTreeSet<&str> = md.topics().iter().map(|t| t.name()).collect();
        if !names.contains("life") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deleted topic still in metadata: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its segment files are closed too, so their disk space is freed now (the files closing
    // behind the deletion is asynchronous: allow it a moment).
    let deadline = std::time::Instant::now() + OP_TIMEOUT;
    while !broker.open_deleted_files().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "deleted topic's files still open: {:?}",
            broker.open_deleted_files()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Deleting a topic that does not exist fails with UNKNOWN_TOPIC_OR_PARTITION.
    let res = adm
        .delete_topics(&["never-was"], &admin_opts())
        .await
        .expect("DeleteTopics request");
    assert_eq!(
        res,
        vec![Err((
            "never-was".to_string(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))],
        "deleting a missing topic"
    );
}

/// ListOffsets: earliest/latest through fetch_watermarks on empty and filled partitions,
/// and by timestamp through offsets_for_times (exact hit, between records, past the end).
#[tokio::test]
async fn list_offsets_and_offsets_for_times() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    create_topics(&admin(&bootstrap), &[("times", 2, &[])]).await;
    let cons = consumer(&bootstrap);
    wait_for_topic(&cons, "times", 2).await;
    // (0, 0) on one node, asserted by first_offset.
    let base = [
        first_offset(&cons, "times", 0).await,
        first_offset(&cons, "times", 1).await,
    ];
    for p in 0..2 {
        assert_eq!(
            watermarks(&cons, "times", p),
            (0, base[p as usize]),
            "empty partition"
        );
    }

    // 50 records per partition; record i has timestamp ts0 + i*1000 (gen_records).
    let ts0 = base_timestamp();
    let mut rng = StdRng::seed_from_u64(3);
    let prod: FutureProducer = producer(&bootstrap, &[("acks", "all"), ("linger.ms", "20")]);
    for p in 0..2 {
        let recs = gen_records(&mut rng, 50, ts0);
        let addressed: Vec<(i32, Rec)> = recs.into_iter().map(|r| (p, r)).collect();
        produce_all(&prod, "times", &addressed).await;
    }
    assert_eq!(watermarks(&cons, "times", 0), (0, base[0] + 50));
    assert_eq!(watermarks(&cons, "times", 1), (0, base[1] + 50));

    // (partition, timestamp, expected offset): the first offset whose timestamp >= target.
    let at = |p: usize, i: i64| Offset::Offset(base[p] + i);
    let cases = [
        (0, ts0, at(0, 0)),
        (0, ts0 - 5_000, at(0, 0)),
        (0, ts0 + 10_500, at(0, 11)),
        (1, ts0 + 25_000, at(1, 25)),
        (1, ts0 + 49_000, at(1, 49)),
        (1, ts0 + 49_001, Offset::End),
    ];
    for (p, ts, want) in cases {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("times", p, Offset::Offset(ts))
            .unwrap();
        let res = cons
            .offsets_for_times(tpl, OP_TIMEOUT)
            .expect("offsets_for_times");
        let elem = res.find_partition("times", p).expect("result partition");
        elem.error().expect("offsets_for_times partition error");
        assert_eq!(
            elem.offset(),
            want,
            "times/{p}: offset for timestamp ts0{:+}",
            ts - ts0
        );
    }
}
