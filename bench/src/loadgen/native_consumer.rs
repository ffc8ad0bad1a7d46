//! The load generator's own consumer (`consumer_client = "native"`): Fetch requests on one
//! blocking TCP connection per partition leader, and a walk over each response's RecordBatch
//! v2 bytes that reads every record's send timestamp in place, so a max-rate run's consumer
//! costs the host a fraction of librdkafka's CPU (which took most of a CPU at ~300 MiB/s on
//! a 2-CPU host, CPU the broker under test then lacked).
//!
//! Assignment is static: consumer `i` of a group of `n` reads the partitions p with
//! p % n == i, from offset 0 (every run's topic is fresh). No group protocol is spoken (no
//! FindCoordinator, JoinGroup or offset commits): the group coordinator is not exercised, and
//! each "group" is simply an independent reader of every partition.
//!
//! Uncompressed batches are read record by record; compressed ones are counted from their
//! header's recordCount without latencies (the generator's own producer never compresses);
//! control batches are skipped. CRCs are not checked, as librdkafka's `check.crcs` default
//! does not. Errors are counted and retried: a broken connection or a leadership error
//! re-resolves the leaders and reconnects with backoff.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_bench::batch::get_varint;
use sluice_codec::batch::{offsets, BatchHeader, BATCH_LOG_OVERHEAD, RECORD_BATCH_HEADER_LEN};

use super::hist::Side;
use super::native::{
    call, decode_response, io_err, leaders, read_frame_len, request_frame, NativeError,
};
use super::run::embedded_ns;
use super::sys;

/// Fetch v12: the newest version that still names topics (v13+ use topic ids); sluice serves
/// 4..=18, Apache Kafka 4.x from 4 as well.
const FETCH_VERSION: i16 = 12;
const LIST_OFFSETS_VERSION: i16 = 7;
/// How long the broker may hold a fetch waiting for data (it answers at the first byte).
const FETCH_WAIT_MS: i32 = 100;
/// Bytes per Fetch response: 16 partitions at librdkafka's per-partition 2 MiB.
const FETCH_BYTES_MAX: i32 = 32 << 20;
/// A partition's fetch size grows to fit a single batch larger than it, up to this.
const PARTITION_BYTES_MAX: i32 = 32 << 20;
/// Largest response frame accepted: a whole fetch plus one oversized first batch.
const FRAME_BYTES_MAX: usize = 2 * FETCH_BYTES_MAX as usize + (1 << 20);
/// A read unanswered this long closes the connection (librdkafka's `socket.timeout.ms`).
const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often a paused (or idle) consumer looks at its flags.
const IDLE_POLL: Duration = Duration::from_millis(10);
/// ListOffsets timestamp meaning "the log start offset".
const EARLIEST: i64 = -2;

// Kafka error codes the fetch loop acts on.
const NONE: i16 = 0;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const LEADER_NOT_AVAILABLE: i16 = 5;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;
const UNKNOWN_TOPIC_ID: i16 = 100;

/// What the run tells a consumer (implemented by the run's shared state).
pub trait Control: Send + Sync {
    fn stopped(&self) -> bool;
    /// While true, no fetch is sent (a backlog builds on the broker, not in the client).
    fn paused(&self) -> bool;
    /// Whether a record sent at `sent_ns` belongs to a measured phase.
    fn measured(&self, sent_ns: u64) -> bool;
}

/// Settings of one native consumer.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub client_id: String,
    pub topic: String,
    pub partitions: i32,
    /// This consumer's index among the `count` consumers of its group.
    pub index: usize,
    pub count: usize,
    /// Bytes per partition per fetch (librdkafka's `max.partition.fetch.bytes`).
    pub partition_max_bytes: i32,
}

impl ConsumerConfig {
    /// The partitions this consumer reads, ascending.
    pub fn owned(&self) -> Vec<i32> {
        let n = self.count.max(1);
        (0..self.partitions)
            .filter(|p| *p as usize % n == self.index)
            .collect()
    }
}

/// Where one partition is read from.
#[derive(Clone, Copy, Debug)]
struct Part {
    partition: i32,
    offset: i64,
    max_bytes: i32,
}

/// Why a connection's fetch loop ended.
enum Exit {
    Stopped,
    /// Re-resolve the leaders and reconnect; `progressed` when a response came first.
    Failed {
        progressed: bool,
    },
}

/// Reads its partitions until `ctl` says stop or `deadline` passes; stores the number of
/// partitions it reads into `assigned` once connected to their leaders.
pub fn consume<C: Control>(
    bootstrap: &str,
    cfg: &ConsumerConfig,
    side: &Side,
    ctl: &C,
    assigned: &AtomicU64,
    deadline: Instant,
) {
    let done = || ctl.stopped() || Instant::now() >= deadline;
    let mut parts: Vec<Part> = cfg
        .owned()
        .into_iter()
        .map(|partition| Part {
            partition,
            offset: 0,
            max_bytes: cfg.partition_max_bytes.clamp(1, PARTITION_BYTES_MAX),
        })
        .collect();
    if parts.is_empty() {
        // More consumers than partitions: this one has nothing to read.
        while !done() {
            std::thread::sleep(IDLE_POLL * 10);
        }
        return;
    }
    let mut backoff = BACKOFF_MIN;
    while !done() {
        let by_leader = match leaders(bootstrap, &cfg.topic, &cfg.client_id)
            .and_then(|l| group_by_leader(&parts, &l))
        {
            Ok(g) => g,
            Err(_) => {
                side.errors.fetch_add(1, Ordering::Relaxed);
                sleep_unless(backoff, &done);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let mut by_leader = by_leader;
        assigned.store(0, Ordering::Relaxed);
        // A failing connection makes its siblings end too, so all re-resolve together.
        let restart = AtomicBool::new(false);
        let exits: Vec<Exit> = std::thread::scope(|s| {
            let handles: Vec<_> = by_leader
                .iter_mut()
                .map(|(addr, ps)| {
                    let addr = *addr;
                    let restart = &restart;
                    std::thread::Builder::new()
                        .name(cfg.client_id.clone())
                        .spawn_scoped(s, move || {
                            let exit =
                                fetch_loop(addr, ps, cfg, side, ctl, assigned, deadline, restart);
                            if matches!(exit, Exit::Failed { .. }) {
                                restart.store(true, Ordering::Relaxed);
                            }
                            exit
                        })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h.map(|h| h.join()) {
                    Ok(Ok(exit)) => exit,
                    _ => {
                        restart.store(true, Ordering::Relaxed);
                        Exit::Failed { progressed: false }
                    }
                })
                .collect()
        });
        parts = by_leader.into_iter().flat_map(|(_, ps)| ps).collect();
        parts.sort_by_key(|p| p.partition);
        if exits.iter().all(|e| matches!(e, Exit::Stopped)) {
            break;
        }
        if exits
            .iter()
            .any(|e| matches!(e, Exit::Failed { progressed: true }))
        {
            backoff = BACKOFF_MIN;
        }
        sleep_unless(backoff, &done);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Sleeps `d` in short steps, returning early once `done` says so.
fn sleep_unless(d: Duration, done: &impl Fn() -> bool) {
    let end = Instant::now() + d;
    while !done() {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(IDLE_POLL * 5));
    }
}

/// The partitions grouped by leader, each group ascending by partition.
fn group_by_leader(
    parts: &[Part],
    leaders: &HashMap<i32, SocketAddr>,
) -> Result<Vec<(SocketAddr, Vec<Part>)>, NativeError> {
    let mut out: Vec<(SocketAddr, Vec<Part>)> = Vec::new();
    for p in parts {
        let addr = *leaders.get(&p.partition).ok_or_else(|| {
            NativeError::Protocol(format!("no leader for partition {}", p.partition))
        })?;
        match out.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, ps)) => ps.push(*p),
            None => out.push((addr, vec![*p])),
        }
    }
    Ok(out)
}

/// What one fetch round asks of the loop.
enum Next {
    Continue,
    /// An error that a short pause may cure (counted already).
    Backoff,
    /// Leadership moved or the topic is unknown here: re-resolve (counted already).
    Reresolve,
}

#[allow(clippy::too_many_arguments)]
fn fetch_loop<C: Control>(
    addr: SocketAddr,
    parts: &mut [Part],
    cfg: &ConsumerConfig,
    side: &Side,
    ctl: &C,
    assigned: &AtomicU64,
    deadline: Instant,
    restart: &AtomicBool,
) -> Exit {
    let mut conn = match Conn::connect(addr, cfg) {
        Ok(c) => c,
        Err(_) => {
            side.errors.fetch_add(1, Ordering::Relaxed);
            return Exit::Failed { progressed: false };
        }
    };
    assigned.fetch_add(parts.len() as u64, Ordering::Relaxed);
    let mut progressed = false;
    loop {
        if ctl.stopped() || Instant::now() >= deadline {
            return Exit::Stopped;
        }
        if restart.load(Ordering::Relaxed) {
            return Exit::Failed { progressed };
        }
        if ctl.paused() {
            // Nothing is prefetched, so the drain after the pause reads from the broker.
            std::thread::sleep(IDLE_POLL);
            continue;
        }
        match conn.fetch(parts, side, ctl) {
            Ok(Next::Continue) => progressed = true,
            Ok(Next::Backoff) => std::thread::sleep(BACKOFF_MIN),
            Ok(Next::Reresolve) => return Exit::Failed { progressed },
            Err(_) => {
                side.errors.fetch_add(1, Ordering::Relaxed);
                return Exit::Failed { progressed };
            }
        }
    }
}

/// One connection to a partition leader.
struct Conn {
    stream: TcpStream,
    client_id: String,
    topic: TopicName,
    correlation: i32,
    /// The response buffer, reused: responses are decoded from it in place.
    buf: BytesMut,
}

impl Conn {
    fn connect(addr: SocketAddr, cfg: &ConsumerConfig) -> Result<Conn, NativeError> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(io_err(format!("connect {addr}")))?;
        stream.set_nodelay(true).map_err(io_err("nodelay"))?;
        stream
            .set_read_timeout(Some(SOCKET_TIMEOUT))
            .map_err(io_err("set timeout"))?;
        stream
            .set_write_timeout(Some(SOCKET_TIMEOUT))
            .map_err(io_err("set timeout"))?;
        Ok(Conn {
            stream,
            client_id: cfg.client_id.clone(),
            topic: TopicName(StrBytes::from_string(cfg.topic.clone())),
            correlation: 0,
            buf: BytesMut::new(),
        })
    }

    fn next_correlation(&mut self) -> i32 {
        self.correlation = self.correlation.wrapping_add(1);
        self.correlation
    }

    /// One Fetch of every partition in `parts` (ascending by partition); records what came
    /// and moves each partition's offset past its last complete batch.
    fn fetch<C: Control>(
        &mut self,
        parts: &mut [Part],
        side: &Side,
        ctl: &C,
    ) -> Result<Next, NativeError> {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(FETCH_WAIT_MS)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_BYTES_MAX)
            .with_isolation_level(0)
            // Sessionless full fetch: session 0, epoch -1 (FINAL).
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(self.topic.clone())
                .with_partitions(
                    parts
                        .iter()
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(p.partition)
                                .with_current_leader_epoch(-1)
                                .with_fetch_offset(p.offset)
                                .with_last_fetched_epoch(-1)
                                .with_log_start_offset(-1)
                                .with_partition_max_bytes(p.max_bytes)
                        })
                        .collect(),
                )]);
        let correlation = self.next_correlation();
        let frame = request_frame(
            ApiKey::Fetch,
            FETCH_VERSION,
            correlation,
            &self.client_id,
            &req,
        )?;
        self.stream
            .write_all(&frame)
            .map_err(io_err("send fetch"))?;
        let n =
            read_frame_len(&mut self.stream, FRAME_BYTES_MAX).map_err(io_err("fetch response"))?;
        // The buffer keeps its largest length, so it is zeroed only when it grows.
        if self.buf.len() < n {
            self.buf.resize(n, 0);
        }
        self.stream
            .read_exact(&mut self.buf[..n])
            .map_err(io_err("fetch response"))?;
        let frame = std::mem::take(&mut self.buf).freeze();
        let mut body = frame.slice(..n);
        let decoded = decode_response::<FetchResponse>(&mut body, FETCH_VERSION);
        drop(body);
        let next = match decoded {
            Ok((corr, _)) if corr != correlation => Err(NativeError::Protocol(format!(
                "fetch response for correlation id {corr}, expected {correlation}"
            ))),
            Ok((_, resp)) => self.apply(&resp, parts, side, ctl),
            Err(e) => Err(e),
        };
        // Every slice of the frame is gone with the response: take the buffer back.
        self.buf = frame.try_into_mut().unwrap_or_default();
        next
    }

    fn apply<C: Control>(
        &mut self,
        resp: &FetchResponse,
        parts: &mut [Part],
        side: &Side,
        ctl: &C,
    ) -> Result<Next, NativeError> {
        if resp.error_code != NONE {
            side.errors.fetch_add(1, Ordering::Relaxed);
            return Ok(Next::Backoff);
        }
        let mut sink = Recorder {
            side,
            ctl,
            now: sys::now_ns(),
        };
        let mut next = Next::Continue;
        let mut reset = Vec::new();
        for pd in resp.responses.iter().flat_map(|t| &t.partitions) {
            let Ok(i) = parts.binary_search_by_key(&pd.partition_index, |p| p.partition) else {
                continue;
            };
            let part = &mut parts[i];
            match pd.error_code {
                NONE => {
                    let Some(records) = &pd.records else { continue };
                    let w = walk(records, part.offset, &mut sink);
                    if let Some(o) = w.next_offset {
                        part.offset = part.offset.max(o);
                    } else if let Some(need) = w.partial_needed {
                        // Not even one whole batch fitted: ask for enough next time.
                        let need = i32::try_from(need).unwrap_or(i32::MAX);
                        part.max_bytes = part.max_bytes.max(need.min(PARTITION_BYTES_MAX));
                    }
                    if w.corrupt > 0 {
                        side.errors.fetch_add(w.corrupt, Ordering::Relaxed);
                    }
                }
                // Retention deleted what we were to read: restart at the log start, as
                // librdkafka's auto.offset.reset=earliest does (not counted as an error).
                OFFSET_OUT_OF_RANGE if pd.log_start_offset > part.offset => {
                    part.offset = pd.log_start_offset;
                }
                OFFSET_OUT_OF_RANGE => reset.push(part.partition),
                UNKNOWN_TOPIC_OR_PARTITION
                | LEADER_NOT_AVAILABLE
                | NOT_LEADER_OR_FOLLOWER
                | FENCED_LEADER_EPOCH
                | UNKNOWN_LEADER_EPOCH
                | UNKNOWN_TOPIC_ID => {
                    side.errors.fetch_add(1, Ordering::Relaxed);
                    next = Next::Reresolve;
                }
                _ => {
                    side.errors.fetch_add(1, Ordering::Relaxed);
                    if matches!(next, Next::Continue) {
                        next = Next::Backoff;
                    }
                }
            }
        }
        if !reset.is_empty() {
            for (p, offset) in self.earliest(&reset)? {
                if let Ok(i) = parts.binary_search_by_key(&p, |x| x.partition) {
                    parts[i].offset = offset;
                }
            }
        }
        Ok(next)
    }

    /// Log start offsets of `partitions` (ListOffsets earliest), for brokers that leave
    /// logStartOffset out of an OFFSET_OUT_OF_RANGE answer.
    fn earliest(&mut self, partitions: &[i32]) -> Result<Vec<(i32, i64)>, NativeError> {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(self.topic.clone())
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(EARLIEST)
                        })
                        .collect(),
                )]);
        let correlation = self.next_correlation();
        let resp: ListOffsetsResponse = call(
            &mut self.stream,
            ApiKey::ListOffsets,
            LIST_OFFSETS_VERSION,
            correlation,
            &self.client_id,
            &req,
        )?;
        let mut out = Vec::new();
        for p in resp.topics.iter().flat_map(|t| &t.partitions) {
            if p.error_code != NONE {
                return Err(NativeError::Protocol(format!(
                    "ListOffsets partition {}: error {}",
                    p.partition_index, p.error_code
                )));
            }
            out.push((p.partition_index, p.offset.max(0)));
        }
        Ok(out)
    }
}

/// Where [`walk`] puts what it finds.
pub trait Sink {
    /// One record of an uncompressed batch: its key plus value bytes, and its value.
    fn record(&mut self, key_value_bytes: usize, value: &[u8]);
    /// The records of a compressed batch, counted without opening it; `bytes` is the
    /// batch's (compressed) record bytes.
    fn compressed(&mut self, records: u64, bytes: u64);
}

/// Records each record into a [`Side`] with its send → consume latency, `now` read once per
/// response.
pub struct Recorder<'a, C> {
    pub side: &'a Side,
    pub ctl: &'a C,
    pub now: u64,
}

impl<C: Control> Sink for Recorder<'_, C> {
    #[inline]
    fn record(&mut self, key_value_bytes: usize, value: &[u8]) {
        match embedded_ns(Some(value)) {
            Some(sent) => self.side.record(
                key_value_bytes,
                self.now.saturating_sub(sent) / 1000,
                self.ctl.measured(sent),
            ),
            // Not the generator's record: counted, no latency to take.
            None => self.side.count(1, key_value_bytes as u64),
        }
    }

    fn compressed(&mut self, records: u64, bytes: u64) {
        self.side.count(records, bytes);
    }
}

/// What walking one partition's records found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Walk {
    /// The offset after the last complete batch; `None` when there was none.
    pub next_offset: Option<i64>,
    /// Total size of a batch cut off at the end (refetched from its offset next time).
    pub partial_needed: Option<usize>,
    /// Batches that did not parse: counted as errors. A bad header ends the walk; records
    /// that do not parse end only their batch.
    pub corrupt: u64,
}

/// Walks a partition's records (concatenated v2 batches, as a Fetch response carries them)
/// and hands every record at or after `fetch_offset` to `sink`. Allocates nothing and copies
/// no record.
pub fn walk(records: &[u8], fetch_offset: i64, sink: &mut impl Sink) -> Walk {
    let mut w = Walk::default();
    let mut pos = 0usize;
    while pos < records.len() {
        let rest = &records[pos..];
        let Some(len) = rest.get(offsets::BATCH_LENGTH..offsets::BATCH_LENGTH + 4) else {
            // Cut before the length field: refetch from here.
            break;
        };
        let batch_length = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        let total = match usize::try_from(batch_length) {
            Ok(l) if l + BATCH_LOG_OVERHEAD >= RECORD_BATCH_HEADER_LEN => l + BATCH_LOG_OVERHEAD,
            _ => {
                w.corrupt += 1;
                break;
            }
        };
        let Some(batch) = rest.get(..total) else {
            w.partial_needed = Some(total);
            break;
        };
        // `batch` holds at least a whole header, so this parse cannot fail.
        let Ok(h) = BatchHeader::parse(batch) else {
            w.corrupt += 1;
            break;
        };
        if h.magic != 2 || h.last_offset_delta < 0 {
            w.corrupt += 1;
            break;
        }
        pos += total;
        if h.last_offset() < fetch_offset {
            // Wholly before the fetch offset (a broker may start at the batch holding it).
            continue;
        }
        w.next_offset = Some(h.next_offset());
        if h.is_control() {
            continue;
        }
        if h.compression_codec() != 0 {
            let skipped = (fetch_offset - h.base_offset).max(0);
            let n = (i64::from(h.records_count) - skipped).max(0) as u64;
            sink.compressed(n, (total - RECORD_BATCH_HEADER_LEN) as u64);
            continue;
        }
        if walk_batch(batch, &h, fetch_offset, sink).is_none() {
            w.corrupt += 1;
        }
    }
    w
}

/// The records of one whole uncompressed batch; `None` at the first that does not parse.
#[inline]
fn walk_batch(
    batch: &[u8],
    h: &BatchHeader,
    fetch_offset: i64,
    sink: &mut impl Sink,
) -> Option<()> {
    let mut at = RECORD_BATCH_HEADER_LEN;
    for _ in 0..h.records_count.max(0) {
        // Record v2: length, attributes, timestampDelta, offsetDelta, key, value, headers
        // (headers are not read: the length frames the record).
        let len = usize::try_from(get_varint(batch, &mut at)?).ok()?;
        let end = at.checked_add(len)?;
        let rec = batch.get(..end)?;
        let mut r = at + 1;
        get_varint(rec, &mut r)?;
        let offset_delta = get_varint(rec, &mut r)?;
        let key_len = get_varint(rec, &mut r)?;
        if key_len > 0 {
            r = r.checked_add(usize::try_from(key_len).ok()?)?;
        }
        let value_len = get_varint(rec, &mut r)?;
        let value = if value_len > 0 {
            rec.get(r..r.checked_add(usize::try_from(value_len).ok()?)?)?
        } else {
            &[]
        };
        at = end;
        if h.base_offset.saturating_add(offset_delta) < fetch_offset {
            continue;
        }
        sink.record(key_len.max(0) as usize + value.len(), value);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::native::encode_batch;

    #[derive(Default)]
    struct Collect {
        /// (key + value bytes, embedded send time)
        records: Vec<(usize, Option<u64>)>,
        compressed: u64,
    }

    impl Sink for Collect {
        fn record(&mut self, bytes: usize, value: &[u8]) {
            self.records.push((bytes, embedded_ns(Some(value))));
        }
        fn compressed(&mut self, records: u64, _bytes: u64) {
            self.compressed += records;
        }
    }

    /// A batch of `n` records whose values carry send times `base_ns + i`, at `base_offset`.
    fn batch(base_offset: i64, n: u64, base_ns: u64) -> Vec<u8> {
        let values: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let mut v = (base_ns + i).to_le_bytes().to_vec();
                v.extend_from_slice(&[7; 24]);
                v
            })
            .collect();
        let records: Vec<(Option<&[u8]>, &[u8])> =
            values.iter().map(|v| (None, v.as_slice())).collect();
        let mut b = encode_batch(&records, 1_700_000_000_000);
        sluice_codec::batch::set_base_offset(&mut b, base_offset).expect("whole batch");
        b
    }

    fn set_attributes(b: &mut [u8], attributes: i16) {
        b[offsets::ATTRIBUTES..offsets::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    }

    #[test]
    fn complete_batches_yield_every_record_and_the_next_offset() {
        let mut records = batch(0, 3, 1000);
        records.extend(batch(3, 2, 2000));
        let mut c = Collect::default();
        let w = walk(&records, 0, &mut c);
        assert_eq!(
            w,
            Walk {
                next_offset: Some(5),
                partial_needed: None,
                corrupt: 0
            }
        );
        let sent: Vec<_> = c.records.iter().map(|r| r.1).collect();
        assert_eq!(
            sent,
            [1000, 1001, 1002, 2000, 2001].map(Some).to_vec(),
            "send times in offset order"
        );
        assert!(c.records.iter().all(|r| r.0 == 32));
    }

    #[test]
    fn a_keyed_record_counts_key_and_value() {
        let mut b = encode_batch(&[(Some(b"key-1"), &[1u8; 20])], 0);
        sluice_codec::batch::set_base_offset(&mut b, 9).expect("whole batch");
        let mut c = Collect::default();
        assert_eq!(walk(&b, 9, &mut c).next_offset, Some(10));
        assert_eq!(c.records, vec![(25, Some(u64::from_le_bytes([1; 8])))]);
    }

    #[test]
    fn a_truncated_tail_batch_is_left_for_the_next_fetch() {
        let first = batch(0, 4, 10);
        let second = batch(4, 4, 20);
        for cut in [1, 11, 12, RECORD_BATCH_HEADER_LEN, second.len() - 1] {
            let mut records = first.clone();
            records.extend_from_slice(&second[..cut]);
            let mut c = Collect::default();
            let w = walk(&records, 0, &mut c);
            assert_eq!(w.next_offset, Some(4), "cut {cut}");
            assert_eq!(w.corrupt, 0, "cut {cut}");
            assert_eq!(c.records.len(), 4, "cut {cut}");
            let known = (cut >= 12).then_some(second.len());
            assert_eq!(w.partial_needed, known, "cut {cut}");
        }
        // Only a partial batch: no progress, and the size to ask for.
        let mut c = Collect::default();
        let w = walk(&second[..100], 4, &mut c);
        assert_eq!(w.next_offset, None);
        assert_eq!(w.partial_needed, Some(second.len()));
        assert!(c.records.is_empty());
    }

    #[test]
    fn compressed_batches_are_counted_and_control_batches_skipped() {
        let mut compressed = batch(0, 5, 0);
        set_attributes(&mut compressed, 4); // lz4: the records are not opened
        let mut control = batch(5, 1, 0);
        set_attributes(&mut control, 0x20);
        let mut records = compressed;
        records.extend(control);
        records.extend(batch(6, 2, 50));
        let mut c = Collect::default();
        let w = walk(&records, 0, &mut c);
        assert_eq!(w.next_offset, Some(8));
        assert_eq!(w.corrupt, 0);
        assert_eq!(c.compressed, 5);
        assert_eq!(
            c.records.iter().map(|r| r.1).collect::<Vec<_>>(),
            [Some(50), Some(51)]
        );
    }

    #[test]
    fn records_before_the_fetch_offset_are_skipped() {
        let mut records = batch(0, 3, 0);
        records.extend(batch(3, 3, 100));
        let mut c = Collect::default();
        let w = walk(&records, 4, &mut c);
        assert_eq!(w.next_offset, Some(6));
        assert_eq!(
            c.records.iter().map(|r| r.1).collect::<Vec<_>>(),
            [Some(101), Some(102)]
        );
    }

    #[test]
    fn garbage_is_counted_never_a_panic() {
        let good = batch(0, 2, 0);
        // A record length running past the batch.
        let mut bad_record = good.clone();
        bad_record[RECORD_BATCH_HEADER_LEN..RECORD_BATCH_HEADER_LEN + 3]
            .copy_from_slice(&[0xfe, 0xff, 0x7f]);
        let mut c = Collect::default();
        let w = walk(&bad_record, 0, &mut c);
        assert_eq!((w.next_offset, w.corrupt), (Some(2), 1));
        // A negative batch length, a wrong magic.
        let mut neg = good.clone();
        neg[offsets::BATCH_LENGTH..offsets::BATCH_LENGTH + 4]
            .copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(walk(&neg, 0, &mut c).corrupt, 1);
        let mut magic = good.clone();
        magic[offsets::MAGIC] = 1;
        assert_eq!(walk(&magic, 0, &mut c).corrupt, 1);
        // Every prefix and every single-byte corruption of two batches.
        let mut two = good.clone();
        two.extend(batch(2, 3, 0));
        for cut in 0..two.len() {
            walk(&two[..cut], 0, &mut c);
        }
        for i in 0..two.len() {
            let mut b = two.clone();
            b[i] ^= 0xff;
            walk(&b, 0, &mut c);
        }
    }

    #[test]
    fn static_assignment_covers_every_partition_once() {
        let cfg = |index, count| ConsumerConfig {
            client_id: String::new(),
            topic: String::new(),
            partitions: 16,
            index,
            count,
            partition_max_bytes: 1 << 20,
        };
        let mut all: Vec<i32> = (0..3).flat_map(|i| cfg(i, 3).owned()).collect();
        all.sort();
        assert_eq!(all, (0..16).collect::<Vec<_>>());
        assert_eq!(cfg(0, 3).owned(), vec![0, 3, 6, 9, 12, 15]);
        assert!(cfg(0, 20).owned() == vec![0] && cfg(17, 20).owned().is_empty());
    }
}
