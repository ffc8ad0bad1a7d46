//! The load generator's own Kafka producer (`client = "native"`): builds RecordBatch v2
//! bytes itself and pipelines Produce v8 requests on one blocking TCP connection per
//! partition leader, so a 2-CPU host can offer a broker more than librdkafka's per-record
//! cost allows (the self-test's librdkafka ceiling was ~320k records/s of 1 KiB, below half
//! of this host's disk limit). It speaks the plain protocol, so it drives Apache Kafka
//! unchanged too. Scope: uncompressed, non-idempotent batches, one batch per request,
//! Java's murmur2 partitioner for keys and a sticky partition for null keys — what the
//! OMB workloads need, no retries (an error is counted and the run goes on).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use sluice_bench::batch::{put_varint, varint_len};

use super::hist::Side;
use super::sys;

/// Produce requests awaiting their response on one connection (librdkafka's default of
/// `max.in.flight.requests.per.connection` is 5 as well).
pub const INFLIGHT_REQUESTS_MAX: usize = 5;
/// A request carries the ready batches of several partitions up to this many bytes (the
/// Java client's `max.request.size` default).
pub const REQUEST_BYTES_MAX: usize = 1 << 20;
/// Batches waiting for a request slot, per connection, before `send` blocks (the Java
/// client's `buffer.memory` default).
pub const READY_BYTES_MAX: usize = 32 << 20;
/// A request unanswered this long closes the connection (librdkafka's
/// `socket.timeout.ms` default); the producer then reports errors instead of hanging.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response frame accepted from the broker.
const RESPONSE_BYTES_MAX: usize = 64 << 20;
const PRODUCE_VERSION: i16 = 8;
const METADATA_VERSION: i16 = 12;
/// RecordBatch v2 header bytes before the first record.
const BATCH_HEADER_BYTES: usize = 61;

/// Why a send did not happen.
#[derive(Debug)]
pub enum NativeError {
    Io { what: String, source: io::Error },
    Protocol(String),
}

impl std::fmt::Display for NativeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NativeError::Io { what, source } => write!(f, "{what}: {source}"),
            NativeError::Protocol(m) => write!(f, "protocol: {m}"),
        }
    }
}

pub(super) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> NativeError {
    let what = what.into();
    move |source| NativeError::Io { what, source }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Reads one size-prefixed response frame.
pub(super) fn read_frame(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    read_frame_max(s, RESPONSE_BYTES_MAX)
}

fn read_frame_max(s: &mut TcpStream, max: usize) -> io::Result<Vec<u8>> {
    let n = read_frame_len(s, max)?;
    let mut body = vec![0u8; n];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// Reads a frame's size prefix: the body length, checked against `max`.
pub(super) fn read_frame_len(s: &mut TcpStream, max: usize) -> io::Result<usize> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let n = i32::from_be_bytes(len);
    if n < 4 || n as usize > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("response frame of {n} bytes"),
        ));
    }
    Ok(n as usize)
}

/// A size-prefixed request frame (header and body) encoded with `kafka_protocol`.
pub(super) fn request_frame<R: Encodable + HeaderVersion>(
    key: ApiKey,
    version: i16,
    correlation: i32,
    client_id: &str,
    req: &R,
) -> Result<Vec<u8>, NativeError> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0; 4]);
    let enc = |e: String| NativeError::Protocol(format!("encode {key:?}: {e}"));
    header
        .encode(&mut buf, R::header_version(version))
        .map_err(|e| enc(e.to_string()))?;
    req.encode(&mut buf, version)
        .map_err(|e| enc(e.to_string()))?;
    let n = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&n.to_be_bytes());
    Ok(buf.to_vec())
}

/// Decodes a response frame's header and body; returns the correlation id with the body.
/// Decoding from `Bytes` keeps `bytes` fields (Fetch records) as slices of the frame.
pub(super) fn decode_response<R: Decodable + HeaderVersion>(
    body: &mut Bytes,
    version: i16,
) -> Result<(i32, R), NativeError> {
    let dec = |e: String| NativeError::Protocol(format!("decode response: {e}"));
    let h =
        ResponseHeader::decode(body, R::header_version(version)).map_err(|e| dec(e.to_string()))?;
    let r = R::decode(body, version).map_err(|e| dec(e.to_string()))?;
    Ok((h.correlation_id, r))
}

/// One request and its response on a blocking connection (no other request in flight).
pub(super) fn call<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
    s: &mut TcpStream,
    key: ApiKey,
    version: i16,
    correlation: i32,
    client_id: &str,
    req: &Req,
) -> Result<Resp, NativeError> {
    let frame = request_frame(key, version, correlation, client_id, req)?;
    s.write_all(&frame)
        .map_err(io_err(format!("send {key:?}")))?;
    let mut body = Bytes::from(read_frame(s).map_err(io_err(format!("{key:?} response")))?);
    let (corr, resp) = decode_response(&mut body, version)?;
    if corr != correlation {
        return Err(NativeError::Protocol(format!(
            "{key:?} response for correlation id {corr}, expected {correlation}"
        )));
    }
    Ok(resp)
}

/// Partition → leader address, from a Metadata request to `bootstrap`.
pub fn leaders(
    bootstrap: &str,
    topic: &str,
    client_id: &str,
) -> Result<HashMap<i32, SocketAddr>, NativeError> {
    let first = bootstrap.split(',').next().unwrap_or(bootstrap).trim();
    let mut s = TcpStream::connect(first).map_err(io_err(format!("connect {first}")))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io_err("set timeout"))?;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_string())),
        ))]))
        .with_allow_auto_topic_creation(false);
    let resp: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        METADATA_VERSION,
        1,
        client_id,
        &req,
    )?;
    let brokers: HashMap<i32, (String, i32)> = resp
        .brokers
        .iter()
        .map(|b| (b.node_id.0, (b.host.to_string(), b.port)))
        .collect();
    let t = resp
        .topics
        .first()
        .ok_or_else(|| NativeError::Protocol(format!("no metadata for {topic}")))?;
    if t.error_code != 0 {
        return Err(NativeError::Protocol(format!(
            "metadata for {topic}: error {}",
            t.error_code
        )));
    }
    let mut out = HashMap::new();
    for p in &t.partitions {
        let (host, port) = brokers.get(&p.leader_id.0).ok_or_else(|| {
            NativeError::Protocol(format!(
                "partition {} leader {} not among brokers",
                p.partition_index, p.leader_id.0
            ))
        })?;
        let addr = (host.as_str(), *port as u16)
            .to_socket_addrs()
            .map_err(io_err(format!("resolve {host}:{port}")))?
            .next()
            .ok_or_else(|| NativeError::Protocol(format!("{host}:{port} resolves to nothing")))?;
        out.insert(p.partition_index, addr);
    }
    if out.is_empty() {
        return Err(NativeError::Protocol(format!("{topic} has no partitions")));
    }
    Ok(out)
}

/// One request on the wire: what to record when its response comes.
struct Pending {
    /// Send time (ns since the epoch) of every record in the request.
    sent_ns: Vec<u64>,
    record_bytes: usize,
}

/// The requests of one connection awaiting responses; the reader thread pops them.
#[derive(Default)]
struct Inflight {
    queue: Mutex<InflightState>,
    changed: Condvar,
}

#[derive(Default)]
struct InflightState {
    pending: VecDeque<Pending>,
    /// The reader stopped (connection closed or broken).
    closed: bool,
}

/// One connection to a partition leader, with its response reader thread.
struct Link {
    stream: TcpStream,
    inflight: Arc<Inflight>,
    reader: Option<JoinHandle<()>>,
    /// Finished batches (partition, batch) waiting for a request slot, oldest first.
    ready: VecDeque<(i32, Open)>,
    ready_bytes: usize,
}

/// Settings of one native producer.
#[derive(Clone, Debug)]
pub struct NativeConfig {
    pub client_id: String,
    pub topic: String,
    /// -1 (all), 0 or 1.
    pub acks: i16,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub partitions: i32,
}

/// A batch being filled for one partition.
struct Open {
    buf: Vec<u8>,
    count: i32,
    base_ts_ms: i64,
    max_ts_ms: i64,
    opened: Instant,
    sent_ns: Vec<u64>,
    record_bytes: usize,
}

impl Open {
    fn new(capacity: usize, ts_ms: i64) -> Open {
        let mut buf = Vec::with_capacity(capacity);
        buf.resize(BATCH_HEADER_BYTES, 0);
        Open {
            buf,
            count: 0,
            base_ts_ms: ts_ms,
            max_ts_ms: ts_ms,
            opened: Instant::now(),
            sent_ns: Vec::new(),
            record_bytes: 0,
        }
    }

    /// Appends one record v2: length, attributes, timestampDelta, offsetDelta, key, value,
    /// no headers.
    fn append(&mut self, key: Option<&[u8]>, value: &[u8], ts_ms: i64, sent_ns: u64) {
        let ts_delta = ts_ms - self.base_ts_ms;
        let key_len = key.map_or(-1, |k| k.len() as i64);
        let body = 1
            + varint_len(ts_delta)
            + varint_len(self.count as i64)
            + varint_len(key_len)
            + key.map_or(0, |k| k.len())
            + varint_len(value.len() as i64)
            + value.len()
            + 1;
        put_varint(&mut self.buf, body as i64);
        self.buf.push(0);
        put_varint(&mut self.buf, ts_delta);
        put_varint(&mut self.buf, self.count as i64);
        put_varint(&mut self.buf, key_len);
        if let Some(k) = key {
            self.buf.extend_from_slice(k);
        }
        put_varint(&mut self.buf, value.len() as i64);
        self.buf.extend_from_slice(value);
        put_varint(&mut self.buf, 0);
        self.count += 1;
        self.max_ts_ms = self.max_ts_ms.max(ts_ms);
        self.sent_ns.push(sent_ns);
        self.record_bytes += value.len() + key.map_or(0, |k| k.len());
    }
}

/// One finished batch (base offset 0) of `records` (key, value) exactly as the producer
/// builds it: what the native consumer's tests and self-test parse.
pub fn encode_batch(records: &[(Option<&[u8]>, &[u8])], ts_ms: i64) -> Vec<u8> {
    let bytes: usize = records
        .iter()
        .map(|(k, v)| k.map_or(0, |k| k.len()) + v.len() + 16)
        .sum();
    let mut open = Open::new(BATCH_HEADER_BYTES + bytes, ts_ms);
    for (k, v) in records {
        open.append(*k, v, ts_ms, 0);
    }
    finish_batch(&mut open);
    open.buf
}

/// A producer owned by one sender thread: `send` appends, full or lingering batches go out.
pub struct NativeProducer {
    cfg: NativeConfig,
    side: Arc<Side>,
    measured: Arc<dyn Fn(u64) -> bool + Send + Sync>,
    /// Partition → index into `links`.
    route: Vec<usize>,
    links: Vec<Link>,
    open: Vec<Option<Open>>,
    sticky: i32,
    rng: u64,
    correlation: i32,
    last_linger_check: Instant,
}

impl NativeProducer {
    /// Connects to every leader of `cfg.topic`. `measured(sent_ns)` says whether a record's
    /// latency belongs to a measured phase.
    pub fn connect(
        bootstrap: &str,
        cfg: NativeConfig,
        side: Arc<Side>,
        measured: Arc<dyn Fn(u64) -> bool + Send + Sync>,
        seed: u64,
    ) -> Result<NativeProducer, NativeError> {
        let leaders = leaders(bootstrap, &cfg.topic, &cfg.client_id)?;
        Self::connect_to(&leaders, cfg, side, measured, seed)
    }

    /// Connects to the given partition leaders (no Metadata request).
    pub fn connect_to(
        leaders: &HashMap<i32, SocketAddr>,
        cfg: NativeConfig,
        side: Arc<Side>,
        measured: Arc<dyn Fn(u64) -> bool + Send + Sync>,
        seed: u64,
    ) -> Result<NativeProducer, NativeError> {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        let mut route = vec![0usize; cfg.partitions.max(0) as usize];
        for p in 0..cfg.partitions {
            let addr = *leaders
                .get(&p)
                .ok_or_else(|| NativeError::Protocol(format!("no leader for partition {p}")))?;
            let i = match addrs.iter().position(|a| *a == addr) {
                Some(i) => i,
                None => {
                    addrs.push(addr);
                    addrs.len() - 1
                }
            };
            route[p as usize] = i;
        }
        let mut links = Vec::new();
        for addr in addrs {
            let stream = TcpStream::connect(addr).map_err(io_err(format!("connect {addr}")))?;
            stream.set_nodelay(true).map_err(io_err("nodelay"))?;
            let inflight = Arc::new(Inflight::default());
            let reader = if cfg.acks == 0 {
                None
            } else {
                let mut rs = stream.try_clone().map_err(io_err("clone stream"))?;
                rs.set_read_timeout(Some(RESPONSE_TIMEOUT))
                    .map_err(io_err("set timeout"))?;
                let (inf, side, measured) = (inflight.clone(), side.clone(), measured.clone());
                Some(
                    std::thread::Builder::new()
                        .name("bench-native-rx".into())
                        .spawn(move || reader_loop(&mut rs, &inf, &side, &*measured))
                        .map_err(io_err("spawn reader"))?,
                )
            };
            links.push(Link {
                stream,
                inflight,
                reader,
                ready: VecDeque::new(),
                ready_bytes: 0,
            });
        }
        let partitions = cfg.partitions.max(1);
        let rng = seed | 1;
        Ok(NativeProducer {
            open: (0..partitions).map(|_| None).collect(),
            sticky: (seed % partitions as u64) as i32,
            cfg,
            side,
            measured,
            route,
            links,
            rng,
            correlation: 0,
            last_linger_check: Instant::now(),
        })
    }

    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Appends one record (its value's first 8 bytes are the send time in ns); sends the
    /// batch when it is full, waiting while the connection has the most requests in flight.
    pub fn send(&mut self, key: Option<&[u8]>, value: &[u8]) -> Result<(), NativeError> {
        let p = match key {
            Some(k) => {
                sluice_codec::partitioner::partition_of_key(k, self.cfg.partitions as u32) as usize
            }
            None => self.sticky as usize,
        };
        let sent_ns = value
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or_else(sys::now_ns);
        let ts_ms = (sent_ns / 1_000_000) as i64;
        let batch_bytes = self.cfg.batch_bytes;
        let open = self.open[p].get_or_insert_with(|| Open::new(batch_bytes + 2048, ts_ms));
        open.append(key, value, ts_ms, sent_ns);
        if open.buf.len() >= batch_bytes {
            self.dispatch(p)?;
        }
        Ok(())
    }

    /// Sends batches older than the linger time; cheap to call often.
    pub fn poll(&mut self) -> Result<(), NativeError> {
        for i in 0..self.links.len() {
            self.pump(i, false)?;
        }
        let now = Instant::now();
        if now.duration_since(self.last_linger_check) < Duration::from_micros(200) {
            return Ok(());
        }
        self.last_linger_check = now;
        for p in 0..self.open.len() {
            let due = self.open[p]
                .as_ref()
                .is_some_and(|o| now.duration_since(o.opened) >= self.cfg.linger);
            if due {
                self.dispatch(p)?;
            }
        }
        Ok(())
    }

    /// Sends every open batch and waits for every response.
    pub fn flush(&mut self) -> Result<(), NativeError> {
        for p in 0..self.open.len() {
            if self.open[p].is_some() {
                self.dispatch(p)?;
            }
        }
        for i in 0..self.links.len() {
            while !self.links[i].ready.is_empty() {
                self.pump(i, true)?;
            }
        }
        for link in &self.links {
            let mut st = link
                .inflight
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            while !st.pending.is_empty() && !st.closed {
                st = link
                    .inflight
                    .changed
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        Ok(())
    }

    /// Finishes partition `p`'s batch and queues it on its connection.
    fn dispatch(&mut self, p: usize) -> Result<(), NativeError> {
        let Some(mut open) = self.open[p].take() else {
            return Ok(());
        };
        if self.cfg.partitions > 1 && self.sticky as usize == p {
            // Sticky partitioner: the next null-key batch goes to another partition.
            let others = self.cfg.partitions as u64 - 1;
            let step = 1 + self.next_rand() % others;
            self.sticky = ((p as u64 + step) % self.cfg.partitions as u64) as i32;
        }
        finish_batch(&mut open);
        let li = self.route[p];
        let link = &mut self.links[li];
        link.ready_bytes += open.buf.len();
        link.ready.push_back((p as i32, open));
        self.pump(li, link_over_budget(&self.links[li]))
    }

    /// Sends queued batches of connection `li` while it has a free request slot, several
    /// partitions per request. With `block`, waits for a slot (the queue is over budget).
    fn pump(&mut self, li: usize, block: bool) -> Result<(), NativeError> {
        loop {
            let link = &mut self.links[li];
            if link.ready.is_empty() {
                return Ok(());
            }
            if self.cfg.acks != 0 {
                let mut st = link
                    .inflight
                    .queue
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                while block && st.pending.len() >= INFLIGHT_REQUESTS_MAX && !st.closed {
                    st = link
                        .inflight
                        .changed
                        .wait(st)
                        .unwrap_or_else(|e| e.into_inner());
                }
                if st.closed {
                    return Err(NativeError::Protocol(
                        "connection to the leader closed".into(),
                    ));
                }
                if st.pending.len() >= INFLIGHT_REQUESTS_MAX {
                    return Ok(());
                }
            }
            // Take batches in order until the request is full or a partition would repeat
            // (a request holds one batch per partition; later ones wait, keeping order).
            let mut batches: Vec<(i32, Open)> = Vec::new();
            let mut bytes = 0;
            while let Some((p, b)) = link.ready.front() {
                if !batches.is_empty()
                    && (bytes + b.buf.len() > REQUEST_BYTES_MAX
                        || batches.iter().any(|(q, _)| q == p))
                {
                    break;
                }
                bytes += b.buf.len();
                let item = link.ready.pop_front().expect("front exists");
                link.ready_bytes -= item.1.buf.len();
                batches.push(item);
            }
            self.correlation = self.correlation.wrapping_add(1);
            let req = produce_request(&self.cfg, self.correlation, &batches);
            let mut sent_ns = Vec::new();
            let mut record_bytes = 0;
            for (_, b) in &mut batches {
                sent_ns.append(&mut b.sent_ns);
                record_bytes += b.record_bytes;
            }
            if self.cfg.acks == 0 {
                link.stream
                    .write_all(&req)
                    .map_err(io_err("send produce"))?;
                // No response will come: count the records as delivered when written.
                let now = sys::now_ns();
                let per = record_bytes / sent_ns.len().max(1);
                for &s in &sent_ns {
                    self.side
                        .record(per, now.saturating_sub(s) / 1000, (self.measured)(s));
                }
                continue;
            }
            link.inflight
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pending
                .push_back(Pending {
                    sent_ns,
                    record_bytes,
                });
            link.stream
                .write_all(&req)
                .map_err(io_err("send produce"))?;
        }
    }
}

fn link_over_budget(link: &Link) -> bool {
    link.ready_bytes > READY_BYTES_MAX
}

/// A Produce v8 request carrying `batches` (distinct partitions of one topic).
fn produce_request(cfg: &NativeConfig, correlation: i32, batches: &[(i32, Open)]) -> Vec<u8> {
    let bytes: usize = batches.iter().map(|(_, b)| b.buf.len() + 8).sum();
    let mut req = Vec::with_capacity(bytes + 128);
    req.extend_from_slice(&[0; 4]);
    req.extend_from_slice(&(ApiKey::Produce as i16).to_be_bytes());
    req.extend_from_slice(&PRODUCE_VERSION.to_be_bytes());
    req.extend_from_slice(&correlation.to_be_bytes());
    put_str(&mut req, &cfg.client_id);
    req.extend_from_slice(&(-1i16).to_be_bytes()); // transactional_id: null
    req.extend_from_slice(&cfg.acks.to_be_bytes());
    req.extend_from_slice(&30_000i32.to_be_bytes());
    req.extend_from_slice(&1i32.to_be_bytes());
    put_str(&mut req, &cfg.topic);
    req.extend_from_slice(&(batches.len() as i32).to_be_bytes());
    for (p, b) in batches {
        req.extend_from_slice(&p.to_be_bytes());
        req.extend_from_slice(&(b.buf.len() as i32).to_be_bytes());
        req.extend_from_slice(&b.buf);
    }
    let n = (req.len() - 4) as i32;
    req[..4].copy_from_slice(&n.to_be_bytes());
    req
}

impl Drop for NativeProducer {
    fn drop(&mut self) {
        for link in &mut self.links {
            let _ = link.stream.shutdown(std::net::Shutdown::Both);
            if let Some(r) = link.reader.take() {
                let _ = r.join();
            }
        }
    }
}

/// Fills in the batch header: sizes, offsets, timestamps, no producer id, and the CRC32C.
fn finish_batch(open: &mut Open) {
    let b = &mut open.buf;
    let len = b.len();
    b[0..8].copy_from_slice(&0i64.to_be_bytes()); // baseOffset (the broker assigns)
    b[8..12].copy_from_slice(&((len - 12) as i32).to_be_bytes()); // batchLength
    b[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
    b[16] = 2; // magic
    b[21..23].copy_from_slice(&0i16.to_be_bytes()); // attributes: no compression
    b[23..27].copy_from_slice(&(open.count - 1).to_be_bytes()); // lastOffsetDelta
    b[27..35].copy_from_slice(&open.base_ts_ms.to_be_bytes());
    b[35..43].copy_from_slice(&open.max_ts_ms.to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // producerId
    b[51..53].copy_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    b[57..61].copy_from_slice(&open.count.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Reads Produce responses in order and records each record's send → ack latency.
fn reader_loop(
    s: &mut TcpStream,
    inflight: &Inflight,
    side: &Side,
    measured: &dyn Fn(u64) -> bool,
) {
    loop {
        let frame = match read_frame(s) {
            Ok(f) => f,
            // Idle (nothing in flight) is fine; a request unanswered this long is not.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) && inflight
                    .queue
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pending
                    .is_empty() =>
            {
                continue
            }
            Err(_) => break,
        };
        let errors = produce_errors(&frame);
        let done = {
            let mut st = inflight.queue.lock().unwrap_or_else(|e| e.into_inner());
            let d = st.pending.pop_front();
            inflight.changed.notify_all();
            d
        };
        let Some(done) = done else { break };
        let n = done.sent_ns.len().max(1);
        match errors {
            Some(0) => {
                let now = sys::now_ns();
                let per = done.record_bytes / n;
                for &s in &done.sent_ns {
                    side.record(per, now.saturating_sub(s) / 1000, measured(s));
                }
            }
            _ => {
                side.errors.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    let mut st = inflight.queue.lock().unwrap_or_else(|e| e.into_inner());
    st.closed = true;
    inflight.changed.notify_all();
}

/// A stand-in broker for the self-test: answers every Produce v8 request at once with an
/// empty success response and keeps nothing. Returns its address; it runs until the process
/// exits (one thread per connection).
pub fn discard_server() -> io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::Builder::new()
        .name("bench-discard".into())
        .spawn(move || {
            for conn in l.incoming() {
                let Ok(mut s) = conn else { continue };
                let _ = std::thread::Builder::new()
                    .name("bench-discard-c".into())
                    .spawn(move || {
                        while let Ok(frame) = read_frame_max(&mut s, 64 << 20) {
                            // Request header v1: api key, version, correlation id, ...
                            let Some(corr) = frame.get(4..8) else { break };
                            let mut resp = Vec::with_capacity(16);
                            resp.extend_from_slice(&12i32.to_be_bytes());
                            resp.extend_from_slice(corr);
                            resp.extend_from_slice(&0i32.to_be_bytes()); // no topics
                            resp.extend_from_slice(&0i32.to_be_bytes()); // throttle
                            if s.write_all(&resp).is_err() {
                                break;
                            }
                        }
                    });
            }
        })?;
    Ok(addr)
}

/// The first nonzero partition error code of a Produce v8 response (0 when none); None when
/// the response does not parse.
fn produce_errors(frame: &[u8]) -> Option<i16> {
    let mut d = Dec { b: frame, at: 0 };
    d.i32()?; // correlation id
    let topics = d.i32()?;
    let mut first = 0i16;
    for _ in 0..topics.max(0) {
        d.str()?;
        let parts = d.i32()?;
        for _ in 0..parts.max(0) {
            d.i32()?; // index
            let e = d.i16()?;
            if first == 0 {
                first = e;
            }
            d.take(8 + 8 + 8)?; // base offset, log append time, log start offset
            let errs = d.i32()?;
            for _ in 0..errs.max(0) {
                d.i32()?;
                d.str()?;
            }
            d.str()?; // error message
        }
    }
    Some(first)
}

struct Dec<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    /// A nullable string (skipped).
    fn str(&mut self) -> Option<()> {
        let n = self.i16()?;
        if n > 0 {
            self.take(n as usize)?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_batch_verifies_with_the_codec() {
        let mut open = Open::new(256, 1000);
        // Two records built the way `send` builds them, one with a key.
        open.append(None, b"abc", 1000, 0);
        open.append(Some(b"k"), b"abcd", 1001, 0);
        finish_batch(&mut open);
        sluice_codec::batch::validate_batch(&open.buf).expect("valid batch");
    }
}
