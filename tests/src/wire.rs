//! Raw Kafka wire access for tests that must send what no well-behaved client sends: a
//! TCP connection to the broker, request framing with a v1 (non-flexible) header, response
//! reading, and a tiny big-endian encoder/decoder for non-flexible request/response bodies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::Broker;

/// A connection to `broker` with a 10 s read timeout (a missing answer fails, not hangs).
pub fn connect(broker: &Broker) -> TcpStream {
    connect_port(broker.port())
}

/// A connection to the Kafka listener on loopback `port` (another node of a test cluster).
pub fn connect_port(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A size-prefixed frame around `body`.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A request header v1 (api key, version, correlation id, client id "t").
pub fn header(api_key: i16, version: i16, correlation: i32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&api_key.to_be_bytes());
    h.extend_from_slice(&version.to_be_bytes());
    h.extend_from_slice(&correlation.to_be_bytes());
    h.extend_from_slice(&1i16.to_be_bytes());
    h.push(b't');
    h
}

/// Reads one response frame; `None` if the broker closed the connection.
pub fn read_response(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let len = i32::from_be_bytes(len);
    assert!((4..=16 << 20).contains(&len), "response size {len}");
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

/// True once the peer has closed (read returns 0 or the connection was reset); false when
/// it answered with bytes or the read timed out (a connection left open is not closed).
pub fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Sends one request (header v1 + `body`) and returns the response body after the
/// correlation id (response header v0), checking that the correlation id matches.
/// Panics if the broker closes the connection instead of answering.
pub fn call(
    s: &mut TcpStream,
    api_key: i16,
    version: i16,
    correlation: i32,
    body: &[u8],
) -> Vec<u8> {
    let mut req = header(api_key, version, correlation);
    req.extend_from_slice(body);
    s.write_all(&frame(&req)).expect("send request");
    let resp = read_response(s).unwrap_or_else(|| {
        panic!("api {api_key} v{version}: connection closed instead of a response")
    });
    let got = i32::from_be_bytes(resp[0..4].try_into().unwrap());
    assert_eq!(got, correlation, "api {api_key} v{version}: correlation id");
    resp[4..].to_vec()
}

/// Builds a non-flexible request body.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn new() -> Enc {
        Enc::default()
    }
    pub fn i8(mut self, v: i8) -> Enc {
        self.0.push(v as u8);
        self
    }
    pub fn i16(mut self, v: i16) -> Enc {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i32(mut self, v: i32) -> Enc {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i64(mut self, v: i64) -> Enc {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn str(self, v: &str) -> Enc {
        let mut e = self.i16(v.len() as i16);
        e.0.extend_from_slice(v.as_bytes());
        e
    }
    /// A nullable string (`None`: length -1).
    pub fn nstr(self, v: Option<&str>) -> Enc {
        match v {
            Some(v) => self.str(v),
            None => self.i16(-1),
        }
    }
    pub fn bytes(self, v: &[u8]) -> Enc {
        let mut e = self.i32(v.len() as i32);
        e.0.extend_from_slice(v);
        e
    }
}

/// Reads a non-flexible response body; panics (failing the test) on truncation.
pub struct Dec<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Dec<'a> {
        Dec { buf, at: 0 }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(
            self.at + n <= self.buf.len(),
            "response truncated: need {n} bytes at {} of {}",
            self.at,
            self.buf.len()
        );
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        s
    }
    pub fn i8(&mut self) -> i8 {
        self.take(1)[0] as i8
    }
    pub fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    pub fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    pub fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    pub fn nstr(&mut self) -> Option<String> {
        let n = self.i16();
        if n < 0 {
            return None;
        }
        Some(String::from_utf8_lossy(self.take(n as usize)).into_owned())
    }
    pub fn str(&mut self) -> String {
        self.nstr().expect("non-null string")
    }
    pub fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.i32();
        if n < 0 {
            return None;
        }
        Some(self.take(n as usize).to_vec())
    }
}

/// Bitwise CRC32C (Castagnoli), enough for test batches.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Byte positions of the RecordBatch v2 header fields a test may want to tamper with.
pub mod at {
    pub const BATCH_LENGTH: usize = 8;
    pub const MAGIC: usize = 16;
    pub const CRC: usize = 17;
    pub const ATTRIBUTES: usize = 21;
    pub const LAST_OFFSET_DELTA: usize = 23;
    pub const BASE_TIMESTAMP: usize = 27;
    pub const MAX_TIMESTAMP: usize = 35;
    pub const PRODUCER_ID: usize = 43;
    pub const BASE_SEQUENCE: usize = 53;
    pub const RECORDS_COUNT: usize = 57;
}

/// A valid, uncompressed magic-2 batch with one record per value (no keys, no headers),
/// every record at `timestamp`, no producer id.
pub fn record_batch(values: &[&[u8]], timestamp: i64) -> Vec<u8> {
    let records: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|v| (None, *v)).collect();
    keyed_batch(&records, timestamp)
}

/// [`record_batch`] with a key (or none) per record.
pub fn keyed_batch(kv: &[(Option<&[u8]>, &[u8])], timestamp: i64) -> Vec<u8> {
    assert!(!kv.is_empty() && kv.len() < 64, "test batches are small");
    let mut records = Vec::new();
    for (i, (k, v)) in kv.iter().enumerate() {
        assert!(v.len() < 64, "test values are small");
        // attributes, timestamp delta 0, offset delta i, key (length -1 when none), value,
        // no headers (zigzag varints, each one byte at these sizes)
        let mut body = vec![0u8, 0, (i as u8) << 1];
        match k {
            None => body.push(1),
            Some(k) => {
                assert!(k.len() < 64, "test keys are small");
                body.push((k.len() as u8) << 1);
                body.extend_from_slice(k);
            }
        }
        body.push((v.len() as u8) << 1);
        body.extend_from_slice(v);
        body.push(0);
        assert!(body.len() < 64, "test records are small");
        records.push((body.len() as u8) << 1);
        records.extend_from_slice(&body);
    }
    let mut b = Enc::new()
        .i64(0) // base offset
        .i32(0) // length, sealed below
        .i32(-1) // leader epoch
        .0;
    b.push(2); // magic
    b.extend_from_slice(
        &Enc::new()
            .i32(0) // crc, sealed below
            .i16(0) // attributes
            .i32(kv.len() as i32 - 1) // last offset delta
            .i64(timestamp)
            .i64(timestamp)
            .i64(-1) // producer id
            .i16(-1) // producer epoch
            .i32(-1) // base sequence
            .i32(kv.len() as i32)
            .0,
    );
    b.extend_from_slice(&records);
    seal(&mut b);
    b
}

/// A batch of one record (`value`, stamped now) of idempotent producer `producer_id` at
/// `epoch`, base sequence `seq`.
pub fn idempotent_batch(value: &[u8], producer_id: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let mut b = record_batch(&[value], now_ms());
    b[at::PRODUCER_ID..at::PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    b[at::PRODUCER_ID + 8..at::PRODUCER_ID + 10].copy_from_slice(&epoch.to_be_bytes());
    b[at::BASE_SEQUENCE..at::BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
    seal(&mut b);
    b
}

/// Recomputes a batch's length field and CRC after a test changed its bytes.
pub fn seal(b: &mut [u8]) {
    let len = (b.len() - 12) as i32;
    b[at::BATCH_LENGTH..at::BATCH_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c(&b[at::ATTRIBUTES..]);
    b[at::CRC..at::CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Sends a Metadata v1 request naming `topic`, which auto-creates it.
pub fn create_by_metadata(s: &mut TcpStream, topic: &str) {
    let body = Enc::new().i32(1).str(topic).0;
    call(s, 3, 1, 1, &body);
}

/// Produce of `records` to `topic`/`partition` (a non-flexible version, 3 to 8) with the
/// given acks and timeout; returns the partition's error code (acks=0: no answer, returns 0).
pub fn produce(
    s: &mut TcpStream,
    version: i16,
    topic: &str,
    partition: i32,
    acks: i16,
    timeout_ms: i32,
    records: &[u8],
) -> i16 {
    assert!((3..=8).contains(&version), "non-flexible produce versions");
    let body = Enc::new()
        .nstr(None) // transactional id
        .i16(acks)
        .i32(timeout_ms)
        .i32(1)
        .str(topic)
        .i32(1)
        .i32(partition)
        .bytes(records)
        .0;
    let mut req = header(0, version, 11);
    req.extend_from_slice(&body);
    s.write_all(&frame(&req)).expect("send produce");
    if acks == 0 {
        return 0;
    }
    let resp = read_response(s).expect("produce answered");
    let mut d = Dec::new(&resp);
    assert_eq!(d.i32(), 11, "correlation id");
    assert_eq!(d.i32(), 1, "one topic");
    assert_eq!(d.str(), topic);
    assert_eq!(d.i32(), 1, "one partition");
    assert_eq!(d.i32(), partition);
    d.i16()
}

/// A Produce v8 answer for one partition: error code, KIP-467 record errors (batch index,
/// message) and error message.
pub type ProduceV8Answer = (i16, Vec<(i32, Option<String>)>, Option<String>);

/// Produce v8 (acks=-1) of `records` to `topic`/`partition`, answered in full.
pub fn produce_v8(
    s: &mut TcpStream,
    topic: &str,
    partition: i32,
    records: &[u8],
) -> ProduceV8Answer {
    let body = Enc::new()
        .nstr(None) // transactional id
        .i16(-1)
        .i32(5000)
        .i32(1)
        .str(topic)
        .i32(1)
        .i32(partition)
        .bytes(records)
        .0;
    let resp = call(s, 0, 8, 12, &body);
    let mut d = Dec::new(&resp);
    assert_eq!(d.i32(), 1, "one topic");
    assert_eq!(d.str(), topic);
    assert_eq!(d.i32(), 1, "one partition");
    assert_eq!(d.i32(), partition);
    let code = d.i16();
    let (_base, _append_time, _log_start) = (d.i64(), d.i64(), d.i64());
    let n = d.i32();
    let errors = (0..n.max(0)).map(|_| (d.i32(), d.nstr())).collect();
    (code, errors, d.nstr())
}

/// ListOffsets v1 for `topic`/`partition` at `timestamp` (-1 latest, -2 earliest): the
/// error code and the offset.
pub fn list_offset(s: &mut TcpStream, topic: &str, partition: i32, timestamp: i64) -> (i16, i64) {
    let body = Enc::new()
        .i32(-1) // replica id
        .i32(1)
        .str(topic)
        .i32(1)
        .i32(partition)
        .i64(timestamp)
        .0;
    let resp = call(s, 2, 1, 3, &body);
    let mut d = Dec::new(&resp);
    assert_eq!(d.i32(), 1);
    assert_eq!(d.str(), topic);
    assert_eq!(d.i32(), 1);
    assert_eq!(d.i32(), partition);
    let error = d.i16();
    let _timestamp = d.i64();
    (error, d.i64())
}

/// What a Metadata v1 response says, decoded once for the helpers below.
pub struct MetadataV1 {
    /// Broker id → Kafka port.
    pub ports: std::collections::BTreeMap<i32, u16>,
    /// Each topic as listed: its error, name and partitions.
    pub topics: Vec<(i16, String, Vec<PartitionV1>)>,
}

/// One partition in a Metadata v1 answer: (error, index, leader).
pub type PartitionV1 = (i16, i32, i32);

/// Sends Metadata v1 on `s` for `topic` (`None`: every topic) and decodes the answer;
/// `None` if the connection fails or answers another correlation id.
pub fn metadata_v1(s: &mut TcpStream, topic: Option<&str>) -> Option<MetadataV1> {
    const CORRELATION: i32 = 5;
    let body = match topic {
        Some(t) => Enc::new().i32(1).str(t).0,
        None => Enc::new().i32(-1).0, // null: all topics
    };
    let mut req = header(3, 1, CORRELATION);
    req.extend_from_slice(&body);
    s.write_all(&frame(&req)).ok()?;
    let resp = read_response(s)?;
    let mut d = Dec::new(&resp);
    if d.i32() != CORRELATION {
        return None;
    }
    let mut ports = std::collections::BTreeMap::new();
    for _ in 0..d.i32() {
        let id = d.i32();
        d.str();
        let port = d.i32();
        d.nstr();
        ports.insert(id, u16::try_from(port).ok()?);
    }
    d.i32(); // controller id
    let mut topics = Vec::new();
    for _ in 0..d.i32() {
        let topic_error = d.i16();
        let name = d.str();
        d.i8(); // is_internal
        let mut partitions = Vec::new();
        for _ in 0..d.i32() {
            let error = d.i16();
            let index = d.i32();
            let leader = d.i32();
            for _ in 0..2 {
                // replicas, isr
                for _ in 0..d.i32() {
                    d.i32();
                }
            }
            partitions.push((error, index, leader));
        }
        topics.push((topic_error, name, partitions));
    }
    Some(MetadataV1 { ports, topics })
}

/// Metadata v1 asked of the Kafka listener on loopback `port` itself (a client library
/// may ask any broker it learnt of); `None` if it does not answer.
pub fn metadata_v1_at(port: u16, topic: Option<&str>) -> Option<MetadataV1> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    metadata_v1(&mut s, topic)
}

/// Metadata v1 for `topic`: the node id and Kafka port of `partition`'s leader, `None`
/// while it has none (or the topic is not there yet).
pub fn partition_leader(s: &mut TcpStream, topic: &str, partition: i32) -> Option<(i32, u16)> {
    let m = metadata_v1(s, Some(topic))?;
    let node = m
        .topics
        .iter()
        .filter(|(error, name, _)| *error == 0 && name == topic)
        .flat_map(|(_, _, partitions)| partitions)
        .find(|&&(error, index, _)| error == 0 && index == partition)
        .map(|&(_, _, leader)| leader)
        .filter(|&n| n >= 0)?;
    Some((node, *m.ports.get(&node)?))
}

/// Metadata v1 for `topic` on the Kafka listener on loopback `port`: each partition's index
/// and leader (-1: none), in partition order; `None` if the node does not answer or does
/// not know the topic.
pub fn partition_leaders(port: u16, topic: &str) -> Option<Vec<(i32, i32)>> {
    let m = metadata_v1_at(port, Some(topic))?;
    let (_, _, partitions) = m
        .topics
        .iter()
        .find(|(error, name, _)| *error == 0 && name == topic)?;
    let mut out: Vec<(i32, i32)> = partitions
        .iter()
        .map(|&(_, index, leader)| (index, leader))
        .collect();
    out.sort_unstable();
    Some(out)
}

/// Metadata v1 for every topic, asked of the node whose Kafka listener is on loopback `port`
/// itself: the topic names it knows without error, sorted; `None` if it does not answer.
pub fn topic_names_at(port: u16) -> Option<Vec<String>> {
    let m = metadata_v1_at(port, None)?;
    let mut names: Vec<String> = m
        .topics
        .into_iter()
        .filter(|(error, _, _)| *error == 0)
        .map(|(_, name, _)| name)
        .collect();
    names.sort();
    Some(names)
}

/// A connection to the leader of the fresh, empty `topic`/`partition` once it serves, and
/// the offset its first record will get: 0 on one node (asserted), in test-cluster mode
/// the high watermark after Raft's own first entries (see `kafka::first_offset`).
pub fn connect_leader(broker: &Broker, topic: &str, partition: i32) -> (TcpStream, i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut s = connect(broker);
    loop {
        if let Some((_, port)) = partition_leader(&mut s, topic, partition) {
            let mut leader = connect_port(port);
            let (error, offset) = list_offset(&mut leader, topic, partition, -1);
            if error == 0 && crate::test_cluster_nodes().is_none() {
                assert_eq!(offset, 0, "{topic}/{partition}: end of a fresh partition");
                return (leader, 0);
            }
            if error == 0 && offset > 0 {
                return (leader, offset);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{topic}/{partition}: no serving leader within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wall-clock milliseconds since the epoch (record timestamps).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The latest offset (high watermark) of `topic` partition 0; asserts no error.
pub fn latest(s: &mut TcpStream, topic: &str) -> i64 {
    let (error, offset) = list_offset(s, topic, 0, -1);
    assert_eq!(error, 0, "ListOffsets of {topic}");
    offset
}

/// FindCoordinator v0 for `group`, which creates `__consumer_offsets`; asserts no error.
pub fn find_coordinator(s: &mut TcpStream, group: &str) {
    let resp = call(s, 10, 0, 21, &Enc::new().str(group).0);
    assert_eq!(Dec::new(&resp).i16(), 0, "FindCoordinator error");
}

/// What an ElectLeaders v1 request answered: the top-level error code, then per topic and
/// partition in response order its error code.
pub type ElectLeadersAnswer = (i16, Vec<(String, i32, i16)>);

/// ElectLeaders v1 (non-flexible) on `s`: `election` 0 preferred, 1 unclean; `partitions`
/// `None` for every partition, else per topic the partition ids as sent (duplicates and
/// all); `timeout_ms` the request's. Waits up to `timeout_ms` plus 10 s for the answer.
pub fn elect_leaders(
    s: &mut TcpStream,
    election: i8,
    partitions: Option<&[(&str, &[i32])]>,
    timeout_ms: i32,
) -> ElectLeadersAnswer {
    let mut e = Enc::new().i8(election);
    match partitions {
        None => e = e.i32(-1),
        Some(topics) => {
            e = e.i32(topics.len() as i32);
            for (topic, ps) in topics {
                e = e.str(topic).i32(ps.len() as i32);
                for p in *ps {
                    e = e.i32(*p);
                }
            }
        }
    }
    let body = e.i32(timeout_ms).0;
    let before = s.read_timeout().ok().flatten();
    s.set_read_timeout(Some(
        Duration::from_millis(timeout_ms.max(0) as u64) + Duration::from_secs(10),
    ))
    .unwrap();
    let resp = call(s, 43, 1, 43, &body);
    s.set_read_timeout(before).unwrap();
    let mut d = Dec::new(&resp);
    let _throttle = d.i32();
    let error = d.i16();
    let mut out = Vec::new();
    for _ in 0..d.i32() {
        let topic = d.str();
        for _ in 0..d.i32() {
            let partition = d.i32();
            let code = d.i16();
            let _message = d.nstr();
            out.push((topic.clone(), partition, code));
        }
    }
    (error, out)
}

/// DeleteRecords v1 of `topic`/`partition` before `offset` (-1: the high watermark), with
/// the request's `timeout_ms`: the partition's error code and low watermark.
pub fn delete_records(
    s: &mut TcpStream,
    topic: &str,
    partition: i32,
    offset: i64,
    timeout_ms: i32,
) -> (i16, i64) {
    let body = Enc::new()
        .i32(1)
        .str(topic)
        .i32(1)
        .i32(partition)
        .i64(offset)
        .i32(timeout_ms)
        .0;
    let resp = call(s, 21, 1, 23, &body);
    let mut d = Dec::new(&resp);
    let _throttle = d.i32();
    assert_eq!(d.i32(), 1);
    assert_eq!(d.str(), topic);
    assert_eq!(d.i32(), 1);
    assert_eq!(d.i32(), partition);
    let low_watermark = d.i64();
    (d.i16(), low_watermark)
}

/// Fetch v4 of `topic`/`partition` from `offset` (no waiting): the partition's error code,
/// its high watermark and the records bytes (possibly empty).
pub fn fetch_at(
    s: &mut TcpStream,
    topic: &str,
    partition: i32,
    offset: i64,
) -> (i16, i64, Vec<u8>) {
    fetch_as(s, topic, partition, offset, -1)
}

/// [`fetch_at`] naming `replica_id` (-1: a consumer; a node id: a follower's fetch).
pub fn fetch_as(
    s: &mut TcpStream,
    topic: &str,
    partition: i32,
    offset: i64,
    replica_id: i32,
) -> (i16, i64, Vec<u8>) {
    let mut body = Enc::new().i32(replica_id).i32(0).i32(1).i32(1 << 20).0;
    body.push(0); // isolation level
    let body = Enc(body)
        .i32(1)
        .str(topic)
        .i32(1)
        .i32(partition)
        .i64(offset)
        .i32(1 << 20)
        .0;
    let resp = call(s, 1, 4, 24, &body);
    let mut d = Dec::new(&resp);
    let _throttle = d.i32();
    assert_eq!(d.i32(), 1);
    assert_eq!(d.str(), topic);
    assert_eq!(d.i32(), 1);
    assert_eq!(d.i32(), partition);
    let error = d.i16();
    let hw = d.i64();
    let _lso = d.i64();
    let aborted = d.i32();
    assert!(aborted <= 0, "no transactions");
    (error, hw, d.bytes().unwrap_or_default())
}

/// A reader of flexible-version (KIP-482) response bodies: compact arrays and strings
/// (length + 1 as an unsigned varint) and tagged-field sections, which are skipped.
pub struct Flex<'a>(pub &'a [u8]);

impl Flex<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_first_chunk::<N>().expect("long enough");
        self.0 = rest;
        *head
    }
    pub fn i8(&mut self) -> i8 {
        i8::from_be_bytes(self.take())
    }
    pub fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take())
    }
    pub fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take())
    }
    pub fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take())
    }
    pub fn uuid(&mut self) -> [u8; 16] {
        self.take()
    }
    pub fn uvarint(&mut self) -> u64 {
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
    /// A compact array's or string's length (0 for null). Reads it: not a length of `self`.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&mut self) -> u64 {
        self.uvarint().saturating_sub(1)
    }
    pub fn string(&mut self) -> String {
        let n = self.len() as usize;
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8(s.to_vec()).unwrap()
    }
    pub fn tagged(&mut self) {
        for _ in 0..self.uvarint() {
            self.uvarint();
            let n = self.uvarint() as usize;
            self.0 = &self.0[n..];
        }
    }
}
