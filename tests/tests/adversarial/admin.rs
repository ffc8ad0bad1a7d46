//! Admin and lookup requests under attack: the offsets topic cannot be re-partitioned or
//! given configs that would erase it, and a request that names a partition many times does
//! the work once (ListOffsets refuses duplicates as Kafka does; DescribeLogDirs describes
//! each partition once; ElectLeaders answers a duplicate INVALID_REQUEST once, and refuses
//! unknown election types). Each test restarts the broker after the refusals.

use std::net::TcpStream;

use rdkafka::admin::NewPartitions;
use rdkafka::error::RDKafkaErrorCode;
use sluice_tests::kafka::{admin, admin_opts, topic_config};
use sluice_tests::wire::{
    call, connect, create_by_metadata, elect_leaders, find_coordinator, now_ms, produce,
    record_batch, Dec, Enc,
};
use sluice_tests::{skip_in_cluster_mode, Broker};

const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
const OFFSETS: &str = "__consumer_offsets";

/// Partition count of `topic` from Metadata v1 (raw, so it also sees internal topics).
fn partitions_of(s: &mut TcpStream, topic: &str) -> i32 {
    let resp = call(s, 3, 1, 7, &Enc::new().i32(1).str(topic).0);
    let mut d = Dec::new(&resp);
    for _ in 0..d.i32() {
        let _id = d.i32();
        let _host = d.str();
        let _port = d.i32();
        let _rack = d.nstr();
    }
    let _controller = d.i32();
    assert_eq!(d.i32(), 1, "one topic");
    assert_eq!(d.i16(), 0, "Metadata error for {topic}");
    assert_eq!(d.str(), topic);
    let _internal = d.i8();
    d.i32()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offsets_topic_keeps_its_partitions_and_compaction() {
    let mut broker = Broker::start();
    let mut s = connect(&broker);
    find_coordinator(&mut s, "g");
    let before = partitions_of(&mut s, OFFSETS);
    let adm = admin(&broker.bootstrap());

    let res = adm
        .create_partitions(
            [&NewPartitions::new(OFFSETS, before as usize + 10)],
            &admin_opts(),
        )
        .await
        .expect("CreatePartitions request");
    assert_eq!(
        res,
        vec![Err((OFFSETS.to_string(), RDKafkaErrorCode::InvalidRequest))],
        "CreatePartitions on the offsets topic"
    );

    // Each of these would leave the offsets topic under time/size retention.
    let erasing: [&[(&str, &str)]; 3] = [
        &[("cleanup.policy", "delete")],
        &[("cleanup.policy", "compact,delete")],
        // AlterConfigs replaces every override: dropping cleanup.policy means `delete`.
        &[("retention.ms", "1000")],
    ];
    // Over raw TCP: rust-rdkafka's alter_configs reports success for a resource the
    // broker refused.
    for entries in erasing {
        assert_eq!(
            alter_configs(&mut s, OFFSETS, entries),
            INVALID_CONFIG,
            "AlterConfigs {entries:?} on the offsets topic"
        );
    }
    // Harmless changes that keep compaction are accepted.
    assert_eq!(
        alter_configs(
            &mut s,
            OFFSETS,
            &[
                ("cleanup.policy", "compact"),
                ("segment.bytes", "104857600")
            ]
        ),
        0
    );

    tokio::task::block_in_place(|| broker.restart());
    let mut s = connect(&broker);
    assert_eq!(partitions_of(&mut s, OFFSETS), before);
    let adm = admin(&broker.bootstrap());
    assert_eq!(
        topic_config(&adm, OFFSETS, "cleanup.policy")
            .await
            .as_deref(),
        Some("compact")
    );
}

/// AlterConfigs v0 replacing `topic`'s overrides with `entries`: the resource's error code.
fn alter_configs(s: &mut TcpStream, topic: &str, entries: &[(&str, &str)]) -> i16 {
    let mut e = Enc::new().i32(1);
    e.0.push(2); // resource type: topic
    e = e.str(topic).i32(entries.len() as i32);
    for (k, v) in entries {
        e = e.str(k).str(v);
    }
    e.0.push(0); // validate_only
    let resp = call(s, 33, 0, 11, &e.0);
    let mut d = Dec::new(&resp);
    let _throttle = d.i32();
    assert_eq!(d.i32(), 1);
    let error = d.i16();
    let _message = d.nstr();
    let _type = d.i8();
    assert_eq!(d.str(), topic);
    error
}

/// ListOffsets v1 naming `entries` (topic, partition, timestamp) in one topic entry each:
/// per entry, the error code and offset.
fn list_offsets(s: &mut TcpStream, entries: &[(&str, i32, i64)]) -> Vec<(i16, i64)> {
    let mut e = Enc::new().i32(-1).i32(entries.len() as i32);
    for (topic, partition, ts) in entries {
        e = e.str(topic).i32(1).i32(*partition).i64(*ts);
    }
    let resp = call(s, 2, 1, 3, &e.0);
    let mut d = Dec::new(&resp);
    let n = d.i32();
    assert_eq!(n as usize, entries.len());
    (0..n)
        .map(|_| {
            let _topic = d.str();
            assert_eq!(d.i32(), 1);
            let _partition = d.i32();
            let error = d.i16();
            let _ts = d.i64();
            (error, d.i64())
        })
        .collect()
}

#[test]
fn list_offsets_refuses_a_partition_named_twice() {
    let mut broker = Broker::start();
    let mut s = connect(&broker);
    let topic = "dup-lookups";
    create_by_metadata(&mut s, topic);
    assert_eq!(
        produce(
            &mut s,
            8,
            topic,
            0,
            -1,
            5000,
            &record_batch(&[b"a"], now_ms())
        ),
        0
    );
    let other = "dup-lookups-other";
    create_by_metadata(&mut s, other);
    let ts = now_ms() - 60_000;
    // Partition 0 three times (in separate topic entries), plus another topic's once.
    let got = list_offsets(
        &mut s,
        &[
            (topic, 0, ts),
            (other, 0, -1),
            (topic, 0, -1),
            (topic, 0, ts),
        ],
    );
    assert_eq!(got[0].0, INVALID_REQUEST, "{got:?}");
    assert_eq!(got[2].0, INVALID_REQUEST, "{got:?}");
    assert_eq!(got[3].0, INVALID_REQUEST, "{got:?}");
    assert_eq!(got[1], (0, 0), "a partition named once is answered");
    // Named once, the same lookup works.
    assert_eq!(list_offsets(&mut s, &[(topic, 0, ts)]), vec![(0, 0)]);

    broker.restart();
    let mut s = connect(&broker);
    assert_eq!(list_offsets(&mut s, &[(topic, 0, -1)]), vec![(0, 1)]);
}

#[test]
fn describe_log_dirs_describes_a_partition_named_twice_once() {
    let mut broker = Broker::start();
    let mut s = connect(&broker);
    let topic = "dup-dirs";
    create_by_metadata(&mut s, topic);
    // DescribeLogDirs v1: the topic twice, partition 0 three times in all.
    let body = Enc::new()
        .i32(2)
        .str(topic)
        .i32(2)
        .i32(0)
        .i32(0)
        .str(topic)
        .i32(1)
        .i32(0)
        .0;
    let resp = call(&mut s, 35, 1, 9, &body);
    let mut d = Dec::new(&resp);
    let _throttle = d.i32();
    assert_eq!(d.i32(), 1, "one log dir");
    assert_eq!(d.i16(), 0);
    let _dir = d.str();
    assert_eq!(d.i32(), 1, "one topic");
    assert_eq!(d.str(), topic);
    assert_eq!(d.i32(), 1, "partition 0 described once");

    broker.restart();
    let mut s = connect(&broker);
    assert_eq!(partitions_of(&mut s, topic), 1);
}

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const ELECTION_NOT_NEEDED: i16 = 84;

/// ElectLeaders (ApiKey 43) on one node, where every partition has its only replica as
/// leader: nothing needs an election (named, or every partition with a null list, which
/// then answers nothing, as Kafka leaves out partitions that need none); an empty list
/// answers nothing; unknown topics and partitions are UNKNOWN_TOPIC_OR_PARTITION; a
/// partition named twice is answered once, INVALID_REQUEST, even when it does not exist;
/// an unknown election type fails the whole request with INVALID_REQUEST; v0 (no election
/// type) and v2 (flexible) answer as v1.
#[test]
fn elect_leaders_refuses_duplicates_and_unknown_types_and_needs_no_election_on_one_node() {
    skip_in_cluster_mode!("on a cluster a partition's leader may not be its preferred replica");
    let mut broker = Broker::start();
    let mut s = connect(&broker);
    let topic = "elect-one";
    create_by_metadata(&mut s, topic);
    let el = |s: &mut TcpStream, election: i8, parts: Option<&[(&str, &[i32])]>| {
        elect_leaders(s, election, parts, 5000)
    };
    for election in [0, 1] {
        assert_eq!(
            el(&mut s, election, Some(&[(topic, &[0])])),
            (0, vec![(topic.to_string(), 0, ELECTION_NOT_NEEDED)]),
            "election type {election}"
        );
        assert_eq!(
            el(&mut s, election, None),
            (0, vec![]),
            "null: all partitions"
        );
        assert_eq!(el(&mut s, election, Some(&[])), (0, vec![]), "empty list");
    }
    let (top, got) = el(
        &mut s,
        0,
        Some(&[
            (topic, &[0, 3, 0, 9, 9]),
            ("elect-none", &[0]),
            (topic, &[0, -1]),
        ]),
    );
    assert_eq!(top, 0);
    let t = |p, code| (topic.to_string(), p, code);
    assert_eq!(
        got,
        vec![
            t(0, INVALID_REQUEST),
            t(3, UNKNOWN_TOPIC_OR_PARTITION),
            t(9, INVALID_REQUEST),
            t(-1, UNKNOWN_TOPIC_OR_PARTITION),
            ("elect-none".to_string(), 0, UNKNOWN_TOPIC_OR_PARTITION),
        ]
    );
    for bad in [2, 7, -1] {
        assert_eq!(
            el(&mut s, bad, Some(&[(topic, &[0])])),
            (INVALID_REQUEST, vec![]),
            "election type {bad}"
        );
    }
    // v0: no election type (preferred), no top-level error code.
    let body = Enc::new().i32(1).str(topic).i32(1).i32(0).i32(5000).0;
    let resp = call(&mut s, 43, 0, 5, &body);
    let mut d = Dec::new(&resp);
    let _throttle = d.i32();
    assert_eq!(d.i32(), 1);
    assert_eq!(d.str(), topic);
    assert_eq!(d.i32(), 1);
    assert_eq!(d.i32(), 0);
    assert_eq!(d.i16(), ELECTION_NOT_NEEDED);
    // v2 (flexible): header v2 (v1 plus empty tagged fields), compact arrays and strings.
    let mut body = vec![0u8]; // tagged fields of the header
    body.push(0); // election type: preferred
    body.push(2); // one topic (compact: n + 1)
    body.push(topic.len() as u8 + 1);
    body.extend_from_slice(topic.as_bytes());
    body.push(2); // one partition
    body.extend_from_slice(&0i32.to_be_bytes());
    body.push(0); // topic's tagged fields
    body.extend_from_slice(&5000i32.to_be_bytes());
    body.push(0); // request's tagged fields
    let resp = call(&mut s, 43, 2, 6, &body);
    let mut d = Dec::new(&resp);
    assert_eq!(d.i8(), 0, "response header's tagged fields");
    let _throttle = d.i32();
    assert_eq!(d.i16(), 0);
    assert_eq!(d.i8(), 2, "one topic");
    assert_eq!(d.i8() as usize, topic.len() + 1);
    for b in topic.bytes() {
        assert_eq!(d.i8() as u8, b);
    }
    assert_eq!(d.i8(), 2, "one partition");
    assert_eq!(d.i32(), 0);
    assert_eq!(d.i16(), ELECTION_NOT_NEEDED);

    broker.restart();
    let mut s = connect(&broker);
    assert_eq!(partitions_of(&mut s, topic), 1);
    assert_eq!(
        el(&mut s, 0, Some(&[(topic, &[0])])),
        (0, vec![(topic.to_string(), 0, ELECTION_NOT_NEEDED)])
    );
}
