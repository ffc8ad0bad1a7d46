//! The generator's own ceiling (`self-test`) and the host's loopback TCP bandwidth
//! (`loopback`), both without a broker.
//!
//! The self-test is deliberately simple rather than a fake Kafka server. It times the two
//! costs the generator adds per record on its own threads:
//! 1. the record path: stamp the timestamp, pick a key, record a latency into the HDR
//!    histogram (what the send loop plus a delivery callback or consumer cost);
//! 2. librdkafka's enqueue (`send`): copying the record into the producer queue and
//!    partitioning, measured against a bootstrap address where nothing listens so the queue
//!    only fills (the run stops at the first QueueFull or the time limit).
//!
//! 3. the native producer (`client = "native"`) end to end against a discard server on
//!    loopback that acknowledges every request at once: batching, CRC, socket writes and
//!    the ack path, everything but a broker.
//! 4. the native consumer's parse path (`consumer_client = "native"`): walking fetched
//!    RecordBatch bytes and recording every record's latency, on a response-sized buffer
//!    in memory (no socket, no Fetch decoding).
//!
//! Not covered: librdkafka's own batching, compression and socket threads, whose cost lands
//! on the same CPUs during a real run. A run's per-phase "generator CPUs" figure shows that
//! part; if it approaches the CPUs the generator may use, the run warns.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use serde::Serialize;
use sluice_bench::batch::XorShift;

use super::hist::Side;
use super::native::{discard_server, encode_batch, NativeConfig, NativeProducer};
use super::native_consumer::{walk, Control, Recorder};
use super::sys;

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Serialize)]
pub struct SelfTest {
    pub threads: usize,
    pub record_bytes: usize,
    pub seconds: f64,
    /// Record path only (timestamp, key, histogram), all threads together.
    pub record_path_records_per_s: f64,
    /// librdkafka enqueue (plus the record path), all threads together.
    pub enqueue_records_per_s: f64,
    pub enqueue_mib_per_s: f64,
    /// Whether the enqueue phase ended at librdkafka's queue limit before the time limit.
    pub enqueue_hit_queue_limit: bool,
    /// The native producer (`client = "native"`) against a discard server on loopback:
    /// records acknowledged per second, all threads together.
    pub native_records_per_s: f64,
    pub native_mib_per_s: f64,
    /// The native consumer's batch walk plus latency recording (`consumer_client =
    /// "native"`), all threads together.
    pub consumer_parse_records_per_s: f64,
    pub consumer_parse_mib_per_s: f64,
}

/// The self-test's consumer control: never stops, never pauses, every record measured.
struct Always;

impl Control for Always {
    fn stopped(&self) -> bool {
        false
    }
    fn paused(&self) -> bool {
        false
    }
    fn measured(&self, _: u64) -> bool {
        true
    }
}

/// Bytes of fetched records the parse test walks per round: a 16-partition response at the
/// producer's 128 KiB batches.
const PARSE_BUFFER_BYTES: usize = 16 * 128 * 1024;

/// One thread walks a response-sized buffer of batches over and over for `seconds`, as the
/// native consumer walks each Fetch response; returns the records recorded.
fn consumer_parse(seconds: f64, record_bytes: usize, idx: usize) -> u64 {
    let mut rng = XorShift::new(31 + idx as u64);
    let mut value = vec![0u8; record_bytes];
    rng.fill(&mut value);
    value[..8].copy_from_slice(&sys::now_ns().to_le_bytes());
    let per_batch = (128 * 1024 / (record_bytes + 16)).max(1);
    let batch = encode_batch(&vec![(None, value.as_slice()); per_batch], 0);
    let buf = batch.repeat((PARSE_BUFFER_BYTES / batch.len()).max(1));
    let side = Side::new();
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        let mut sink = Recorder {
            side: &side,
            ctl: &Always,
            now: sys::now_ns(),
        };
        // Every copy of the batch has base offset 0: fetching from 0 walks them all.
        std::hint::black_box(walk(&buf, 0, &mut sink));
    }
    side.records.load(Ordering::Relaxed)
}

/// One thread's native producer against `addr` (a discard server) for `seconds`; returns the
/// records acknowledged.
fn native(seconds: f64, record_bytes: usize, idx: usize, addr: SocketAddr) -> Result<u64, String> {
    const PARTITIONS: i32 = 16;
    let leaders: HashMap<i32, SocketAddr> = (0..PARTITIONS).map(|p| (p, addr)).collect();
    let side = Arc::new(Side::new());
    let cfg = NativeConfig {
        client_id: format!("sluice-bench-selftest-{idx}"),
        topic: "self-test".into(),
        acks: -1,
        batch_bytes: 128 * 1024,
        linger: Duration::from_millis(1),
        partitions: PARTITIONS,
    };
    let mut p = NativeProducer::connect_to(
        &leaders,
        cfg,
        side.clone(),
        Arc::new(|_| true),
        idx as u64 + 1,
    )
    .map_err(|e| format!("native producer: {e}"))?;
    let mut rng = XorShift::new(7 + idx as u64);
    let mut buf = vec![0u8; record_bytes];
    rng.fill(&mut buf);
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        for _ in 0..1024 {
            buf[..8].copy_from_slice(&sys::now_ns().to_le_bytes());
            p.send(None, &buf)
                .map_err(|e| format!("native send: {e}"))?;
        }
        p.poll().map_err(|e| format!("native poll: {e}"))?;
    }
    p.flush().map_err(|e| format!("native flush: {e}"))?;
    Ok(side.records.load(Ordering::Relaxed))
}

fn record_path(seconds: f64, record_bytes: usize, idx: usize) -> u64 {
    let side = Side::new();
    let mut rng = XorShift::new(99 + idx as u64);
    let mut buf = vec![0u8; record_bytes];
    rng.fill(&mut buf);
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut n = 0u64;
    while Instant::now() < end {
        for _ in 0..1024 {
            let t = sys::now_ns();
            buf[..8].copy_from_slice(&t.to_le_bytes());
            let k = rng.next_u64() % 10_000;
            let lat = (sys::now_ns() - t) / 1000 + k % 7;
            side.record(buf.len(), lat, true);
            n += 1;
        }
    }
    std::hint::black_box(&buf);
    n
}

/// Enqueues records into a producer whose broker does not exist, until the queue is full or
/// time runs out. Returns (records, seconds, hit queue limit).
fn enqueue(seconds: f64, record_bytes: usize, idx: usize) -> Result<(u64, f64, bool), String> {
    let mut cfg = ClientConfig::new();
    // Port 1 on loopback: connection refused at once, so nothing is ever sent.
    cfg.set("bootstrap.servers", "127.0.0.1:1")
        .set("broker.address.family", "v4")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "524288")
        .set("message.timeout.ms", "300000")
        .set("log_level", "0");
    let p: BaseProducer<DefaultProducerContext> =
        cfg.create().map_err(|e| format!("producer: {e}"))?;
    let mut rng = XorShift::new(7 + idx as u64);
    let mut buf = vec![0u8; record_bytes];
    rng.fill(&mut buf);
    let side = Side::new();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut n = 0u64;
    let mut full = false;
    'outer: while Instant::now() < end {
        for _ in 0..256 {
            let t = sys::now_ns();
            buf[..8].copy_from_slice(&t.to_le_bytes());
            let rec = BaseRecord::<[u8], [u8]>::to("sluice-bench-selftest").payload(&buf[..]);
            match p.send(rec) {
                Ok(()) => {
                    // What a delivery callback would do for this record.
                    side.record(buf.len(), (sys::now_ns() - t) / 1000, true);
                    n += 1;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    full = true;
                    break 'outer;
                }
                Err((e, _)) => return Err(format!("send: {e}")),
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    p.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    Ok((n, secs, full))
}

pub fn self_test(seconds: f64, record_bytes: usize, threads: usize) -> Result<SelfTest, String> {
    let threads = threads.max(1);
    let run = |f: fn(f64, usize, usize) -> u64| -> u64 {
        let hs: Vec<_> = (0..threads)
            .map(|i| std::thread::spawn(move || f(seconds, record_bytes, i)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    };
    let path_n = run(record_path);
    let hs: Vec<_> = (0..threads)
        .map(|i| std::thread::spawn(move || enqueue(seconds, record_bytes, i)))
        .collect();
    let mut total = 0.0;
    let mut full = false;
    for h in hs {
        let (n, s, f) = h
            .join()
            .map_err(|_| "enqueue thread panicked".to_string())??;
        total += n as f64 / s.max(1e-9);
        full |= f;
    }
    let addr = discard_server().map_err(|e| format!("discard server: {e}"))?;
    let t0 = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|i| std::thread::spawn(move || native(seconds, record_bytes, i, addr)))
        .collect();
    let mut native_n = 0;
    for h in hs {
        native_n += h
            .join()
            .map_err(|_| "native thread panicked".to_string())??;
    }
    let native_rate = native_n as f64 / t0.elapsed().as_secs_f64().max(1e-9);
    let parse_n = run(consumer_parse);
    let parse_rate = parse_n as f64 / seconds;
    Ok(SelfTest {
        consumer_parse_records_per_s: parse_rate,
        consumer_parse_mib_per_s: parse_rate * record_bytes as f64 / MIB,
        native_records_per_s: native_rate,
        native_mib_per_s: native_rate * record_bytes as f64 / MIB,
        threads,
        record_bytes,
        seconds,
        record_path_records_per_s: path_n as f64 / seconds,
        enqueue_records_per_s: total,
        enqueue_mib_per_s: total * record_bytes as f64 / MIB,
        enqueue_hit_queue_limit: full,
    })
}

#[derive(Debug, Serialize)]
pub struct Loopback {
    pub seconds: f64,
    pub bytes: u64,
    pub mib_per_s: f64,
}

/// Pushes bytes from one thread to another over 127.0.0.1 TCP for `seconds`: the ceiling of
/// what any broker on this host can receive from a local client, one connection.
pub fn loopback(seconds: f64) -> Result<Loopback, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let rx = std::thread::spawn(move || -> u64 {
        let Ok((mut s, _)) = l.accept() else { return 0 };
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        // Ends when the writer closes the connection (read returns 0).
        while let Ok(k) = s.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        n
    });
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    let buf = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        if s.write_all(&buf).is_err() {
            stop.store(true, Ordering::Relaxed);
        }
    }
    drop(s);
    let bytes = rx.join().map_err(|_| "reader panicked".to_string())?;
    let secs = start.elapsed().as_secs_f64();
    Ok(Loopback {
        seconds: secs,
        bytes,
        mib_per_s: bytes as f64 / MIB / secs,
    })
}
