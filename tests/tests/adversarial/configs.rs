//! Topic and broker configs under attack: values validated by type and range as Kafka does,
//! Kafka's no-op configs accepted, caps on what one request may create, and nothing refused
//! ever persisted (each test restarts the broker after the refusals).

use std::net::TcpStream;

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use sluice_tests::kafka::{
    admin, admin_opts, alter_topic_config, consumer, create_topics, produce_and_verify,
    topic_config, wait_for_topic, OP_TIMEOUT,
};
use sluice_tests::wire;
use sluice_tests::Broker;

const INVALID_CONFIG: i16 = 40;
const CREATE_TOPICS: i16 = 19;
const INCREMENTAL_ALTER_CONFIGS: i16 = 44;
const ALTER_CONFIGS: i16 = 33;

/// A flexible-version request body (compact strings and arrays, tagged fields): the only
/// encoding in which a config value can be longer than 32767 bytes.
#[derive(Default)]
struct Flex(Vec<u8>);

impl Flex {
    fn uvarint(mut self, mut v: u64) -> Flex {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }
    fn i8(mut self, v: i8) -> Flex {
        self.0.push(v as u8);
        self
    }
    fn i16(mut self, v: i16) -> Flex {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(mut self, v: i32) -> Flex {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn str(self, s: &str) -> Flex {
        let mut f = self.uvarint(s.len() as u64 + 1);
        f.0.extend_from_slice(s.as_bytes());
        f
    }
    /// A compact array's length.
    fn len(self, n: usize) -> Flex {
        self.uvarint(n as u64 + 1)
    }
    /// No tagged fields.
    fn tags(self) -> Flex {
        self.uvarint(0)
    }
}

/// Reads a flexible response body.
struct FlexDec<'a>(&'a [u8]);

impl FlexDec<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        assert!(n <= self.0.len(), "response truncated");
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn uvarint(&mut self) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = self.take(1)[0];
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn nstr(&mut self) -> Option<String> {
        match self.uvarint() {
            0 => None,
            n => Some(String::from_utf8_lossy(self.take(n as usize - 1)).into_owned()),
        }
    }
}

/// Sends a flexible request (header v2) and returns the response body after the response
/// header (v1: correlation id, tagged fields).
fn call_flex(s: &mut TcpStream, api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut req = wire::header(api_key, version, 7);
    req.push(0); // header tagged fields
    req.extend_from_slice(body);
    s.write_all(&wire::frame(&req)).expect("send request");
    let resp = wire::read_response(s)
        .unwrap_or_else(|| panic!("api {api_key} v{version}: connection closed, no response"));
    assert_eq!(i32::from_be_bytes(resp[0..4].try_into().unwrap()), 7);
    assert_eq!(resp[4], 0, "no tagged fields in the response header");
    resp[5..].to_vec()
}

/// CreateTopics v5 of one topic with one partition and `configs`: (error code, message).
fn create_raw(broker: &Broker, topic: &str, configs: &[(&str, &str)]) -> (i16, String) {
    let mut body = Flex::default()
        .len(1)
        .str(topic)
        .i32(1)
        .i16(1)
        .len(0)
        .len(configs.len());
    for (k, v) in configs {
        body = body.str(k).str(v).tags();
    }
    let body = body.tags().i32(30_000).i8(0).tags();
    let resp = call_flex(&mut wire::connect(broker), CREATE_TOPICS, 5, &body.0);
    let mut d = FlexDec(&resp);
    d.i32(); // throttle
    assert_eq!(d.uvarint(), 2, "one topic result");
    assert_eq!(d.nstr().as_deref(), Some(topic));
    let code = d.i16();
    (code, d.nstr().unwrap_or_default())
}

/// IncrementalAlterConfigs v1, SET `name`=`value` on a topic: (error code, message).
fn set_raw(broker: &Broker, topic: &str, name: &str, value: &str) -> (i16, String) {
    let body = Flex::default()
        .len(1)
        .i8(2) // TOPIC
        .str(topic)
        .len(1)
        .str(name)
        .i8(0) // SET
        .str(value)
        .tags()
        .tags()
        .i8(0)
        .tags();
    let resp = call_flex(
        &mut wire::connect(broker),
        INCREMENTAL_ALTER_CONFIGS,
        1,
        &body.0,
    );
    let mut d = FlexDec(&resp);
    d.i32(); // throttle
    assert_eq!(d.uvarint(), 2, "one resource result");
    let code = d.i16();
    (code, d.nstr().unwrap_or_default())
}

/// AlterConfigs v0 (replaces the topic's overrides with `name`=`value`): (error code,
/// message).
fn alter_raw(broker: &Broker, topic: &str, name: &str, value: &str) -> (i16, String) {
    let mut body = wire::Enc::new().i32(1);
    body.0.push(2); // TOPIC
    let mut body = body.str(topic).i32(1).str(name).nstr(Some(value));
    body.0.push(0); // validate_only
    let resp = wire::call(&mut wire::connect(broker), ALTER_CONFIGS, 0, 9, &body.0);
    let mut d = wire::Dec::new(&resp);
    d.i32(); // throttle
    assert_eq!(d.i32(), 1, "one resource result");
    let code = d.i16();
    (code, d.nstr().unwrap_or_default())
}

/// Topic names in the broker's metadata.
fn topic_names(broker: &Broker) -> Vec<String> {
    let md = consumer(&broker.bootstrap())
        .fetch_metadata(None, OP_TIMEOUT)
        .expect("metadata");
    md.topics().iter().map(|t| t.name().to_string()).collect()
}

/// Restarts (off the async workers: it blocks) and checks that topics can still be created.
async fn restart_and_create(broker: &mut Broker, topic: &str) {
    tokio::task::block_in_place(|| broker.restart());
    let bootstrap = broker.bootstrap();
    create_topics(&admin(&bootstrap), &[(topic, 2, &[])]).await;
    wait_for_topic(&consumer(&bootstrap), topic, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2mb_config_value_is_refused_and_topics_still_change_after_restart() {
    let mut broker = Broker::start();
    let huge = "1".repeat(2 << 20);
    // local.retention.ms is a LONG: two megabytes of digits are not one.
    let (code, msg) = create_raw(&broker, "huge-value", &[("local.retention.ms", &huge)]);
    assert_eq!(code, INVALID_CONFIG, "{msg}");
    assert!(msg.len() < 1024, "the refusal echoes {} bytes", msg.len());
    // A well-formed but 2 MB list is refused for its length.
    let throttles = "0:0,".repeat(1 << 19);
    let (code, msg) = create_raw(
        &broker,
        "huge-list",
        &[("leader.replication.throttled.replicas", &throttles)],
    );
    assert_eq!(code, INVALID_CONFIG, "{msg}");
    // The same through IncrementalAlterConfigs on an existing topic.
    let bootstrap = broker.bootstrap();
    create_topics(&admin(&bootstrap), &[("plain", 1, &[])]).await;
    let (code, msg) = set_raw(&broker, "plain", "local.retention.ms", &huge);
    assert_eq!(code, INVALID_CONFIG, "{msg}");
    let (code, msg) = set_raw(
        &broker,
        "plain",
        "leader.replication.throttled.replicas",
        &throttles,
    );
    assert_eq!(code, INVALID_CONFIG, "{msg}");

    restart_and_create(&mut broker, "after-restart").await;
    let names = topic_names(&broker);
    assert!(!names.iter().any(|n| n.starts_with("huge")), "{names:?}");
    let admin = admin(&broker.bootstrap());
    assert_eq!(
        topic_config(&admin, "plain", "local.retention.ms")
            .await
            .as_deref(),
        Some("-2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_numeric_and_out_of_range_values_are_refused_as_kafka_does() {
    let mut broker = Broker::start();
    let cases: &[(&str, &str, &str)] = &[
        ("retention.ms", "forever", "Not a number of type LONG"),
        ("retention.ms", "-2", "Value must be at least -1"),
        ("local.retention.bytes", "abc", "Not a number of type LONG"),
        ("segment.index.bytes", "0", "Value must be at least 4"),
        ("segment.bytes", "2147483648", "Not a number of type INT"),
        (
            "message.format.version",
            "banana",
            "Version banana is not a valid version",
        ),
    ];
    for (i, (name, value, why)) in cases.iter().enumerate() {
        let (code, msg) = create_raw(&broker, &format!("bad-{i}"), &[(name, value)]);
        assert_eq!(code, INVALID_CONFIG, "{name}={value}: {msg}");
        assert_eq!(
            msg,
            format!("Invalid value {value} for configuration {name}: {why}"),
            "{name}={value}"
        );
    }
    // AlterConfigs too (raw: the rdkafka crate reports every AlterConfigs resource as Ok,
    // whatever the broker answered).
    let bootstrap = broker.bootstrap();
    let admin = admin(&bootstrap);
    create_topics(&admin, &[("kept", 1, &[("retention.ms", "60000")])]).await;
    let (code, msg) = alter_raw(&broker, "kept", "retention.ms", "soon");
    assert_eq!(code, INVALID_CONFIG, "{msg}");
    assert_eq!(
        msg,
        "Invalid value soon for configuration retention.ms: Not a number of type LONG"
    );
    assert_eq!(
        topic_config(&admin, "kept", "retention.ms")
            .await
            .as_deref(),
        Some("60000")
    );

    restart_and_create(&mut broker, "after-restart").await;
    let names = topic_names(&broker);
    assert!(!names.iter().any(|n| n.starts_with("bad-")), "{names:?}");
    let admin = sluice_tests::kafka::admin(&broker.bootstrap());
    assert_eq!(
        topic_config(&admin, "kept", "retention.ms")
            .await
            .as_deref(),
        Some("60000")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_format_version_is_accepted_as_a_no_op() {
    let mut broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let admin = admin(&bootstrap);
    // Old clients and librdkafka's own test suite send these; Kafka 3.x stores and ignores them.
    create_topics(
        &admin,
        &[(
            "legacy",
            2,
            &[
                ("message.format.version", "0.10.0"),
                ("message.downconversion.enable", "false"),
            ],
        )],
    )
    .await;
    wait_for_topic(&consumer(&bootstrap), "legacy", 2).await;
    alter_topic_config(&admin, "legacy", &[("message.format.version", "2.8")]).await;
    assert_eq!(
        topic_config(&admin, "legacy", "message.format.version")
            .await
            .as_deref(),
        Some("2.8")
    );
    produce_and_verify(&bootstrap, "legacy", 2, &[], 50, true).await;

    restart_and_create(&mut broker, "after-restart").await;
    let admin = sluice_tests::kafka::admin(&broker.bootstrap());
    assert_eq!(
        topic_config(&admin, "legacy", "message.format.version")
            .await
            .as_deref(),
        Some("2.8")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_over_the_record_cap_is_refused_and_nothing_persisted() {
    let mut broker = Broker::start();
    let admin = admin(&broker.bootstrap());
    // Two topics of 6000 partitions: 12,000 partitions in one request, over the 10,000
    // Kafka's controller takes in one request (`MAX_PARTITIONS_PER_BATCH`; topics and
    // configs are not counted). The whole request is refused.
    let new = [
        NewTopic::new("wide-a", 6000, TopicReplication::Fixed(1)),
        NewTopic::new("wide-b", 6000, TopicReplication::Fixed(1)),
    ];
    let res = admin
        .create_topics(new.iter(), &admin_opts())
        .await
        .expect("CreateTopics request");
    assert_eq!(res.len(), 2);
    for r in &res {
        assert!(
            matches!(r, Err((_, RDKafkaErrorCode::PolicyViolation))),
            "{res:?}"
        );
    }
    // 10,001 partitions over two topics: one over.
    let two = [
        NewTopic::new("wide-c", 5000, TopicReplication::Fixed(1)),
        NewTopic::new("wide-d", 5001, TopicReplication::Fixed(1)),
    ];
    let res = admin
        .create_topics(two.iter(), &admin_opts())
        .await
        .expect("CreateTopics request");
    assert!(
        res.iter()
            .all(|r| matches!(r, Err((_, RDKafkaErrorCode::PolicyViolation)))),
        "{res:?}"
    );

    restart_and_create(&mut broker, "after-restart").await;
    let names = topic_names(&broker);
    assert!(!names.iter().any(|n| n.starts_with("wide")), "{names:?}");
}
