//! Transactions as clients see them so far (issue 13): the partitions' side, through
//! DescribeProducers (what `kafka-transactions.sh describe-producers` sends) after idempotent
//! produces. (read_committed fetches are every rdkafka consumer's default, so the other
//! client suites cover them.)

use std::io::Write;
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use sluice_tests::kafka::{admin, create_topics, producer};
use sluice_tests::{wire, Broker};

/// DescribeProducers v0 (flexible: request header v2, response header v1), by hand.
fn describe_producers(broker: &Broker, topics: &[(&str, &[i32])]) -> Vec<Partition> {
    let mut req = Vec::new();
    req.extend_from_slice(&61i16.to_be_bytes());
    req.extend_from_slice(&0i16.to_be_bytes());
    req.extend_from_slice(&7i32.to_be_bytes());
    req.extend_from_slice(&1i16.to_be_bytes());
    req.push(b't');
    req.push(0); // header tagged fields
    req.push(topics.len() as u8 + 1);
    for (name, parts) in topics {
        req.push(name.len() as u8 + 1);
        req.extend_from_slice(name.as_bytes());
        req.push(parts.len() as u8 + 1);
        for p in *parts {
            req.extend_from_slice(&p.to_be_bytes());
        }
        req.push(0);
    }
    req.push(0);
    let mut s = wire::connect(broker);
    s.write_all(&wire::frame(&req)).unwrap();
    let resp = wire::read_response(&mut s).expect("an answer");
    let mut d = Flex(&resp);
    assert_eq!(d.i32(), 7, "correlation id");
    d.tagged();
    let _throttle = d.i32();
    let mut out = Vec::new();
    for _ in 0..d.len() {
        let topic = d.string();
        for _ in 0..d.len() {
            let index = d.i32();
            let error = d.i16();
            let _message = d.len(); // null (0) or a string we do not read
            let mut producers = Vec::new();
            for _ in 0..d.len() {
                producers.push(Producer {
                    id: d.i64(),
                    epoch: d.i32(),
                    last_sequence: d.i32(),
                    _last_timestamp: d.i64(),
                    coordinator_epoch: d.i32(),
                    txn_start: d.i64(),
                });
                d.tagged();
            }
            d.tagged();
            out.push(Partition {
                topic: topic.clone(),
                index,
                error,
                producers,
            });
        }
        d.tagged();
    }
    out
}

#[derive(Debug)]
struct Partition {
    topic: String,
    index: i32,
    error: i16,
    producers: Vec<Producer>,
}

#[derive(Debug)]
struct Producer {
    id: i64,
    epoch: i32,
    last_sequence: i32,
    _last_timestamp: i64,
    coordinator_epoch: i32,
    txn_start: i64,
}

/// A reader of flexible-version fields (compact lengths as unsigned varints).
struct Flex<'a>(&'a [u8]);

impl Flex<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_first_chunk::<N>().expect("long enough");
        self.0 = rest;
        *head
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take())
    }
    fn uvarint(&mut self) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let [b] = self.take::<1>();
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    }
    /// A compact array's or string's length (0 for null).
    fn len(&mut self) -> u64 {
        self.uvarint().saturating_sub(1)
    }
    fn string(&mut self) -> String {
        let n = self.len() as usize;
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8(s.to_vec()).unwrap()
    }
    fn tagged(&mut self) {
        for _ in 0..self.uvarint() {
            self.uvarint();
            let n = self.uvarint() as usize;
            self.0 = &self.0[n..];
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn describe_producers_shows_an_idempotent_producers_state() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    create_topics(&admin(&bootstrap), &[("dp", 2, &[])]).await;
    let p = producer(&bootstrap, &[("enable.idempotence", "true")]);
    for i in 0..3 {
        p.send(
            FutureRecord::to("dp")
                .partition(0)
                .payload(&format!("v{i}"))
                .key("k"),
            Duration::from_secs(30),
        )
        .await
        .expect("produced");
    }
    let got = describe_producers(&broker, &[("dp", &[0, 1, 9]), ("nope", &[0])]);
    assert_eq!(got.len(), 4, "{got:?}");
    let p0 = &got[0];
    assert_eq!((p0.topic.as_str(), p0.index, p0.error), ("dp", 0, 0));
    assert_eq!(p0.producers.len(), 1, "{got:?}");
    let prod = &p0.producers[0];
    assert!(prod.id >= 0 && prod.epoch == 0, "{prod:?}");
    assert_eq!(prod.last_sequence, 2, "three records, sequences 0-2");
    assert_eq!((prod.coordinator_epoch, prod.txn_start), (-1, -1));
    assert_eq!(
        (got[1].index, got[1].error, got[1].producers.len()),
        (1, 0, 0)
    );
    assert_eq!(
        (got[2].index, got[2].error),
        (9, 3),
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!((got[3].topic.as_str(), got[3].error), ("nope", 3));
}
