//! `sluice-storage-bench`: measures, in one run and on one pinned shard, the disk's raw
//! O_DIRECT write bandwidth and 4 KiB write+fdatasync latency, then the partition log's
//! durable append throughput and durable-append latency over the same IO path
//! (`DmaStorage`: glommio DMA files, io_uring), and prints the ratios against the
//! Foundation targets (append ≥ 90 % of raw bandwidth, durable p99 ≤ 1.3 × raw fdatasync p99).
//! Last, the read side: a log written once is read back raw (its segment files, large O_DIRECT
//! reads queued) and as a consumer catching up from disk reads it (1 MiB per read, with the
//! log's read-ahead and without), against the performance issue's target (catch-up ≥ 90 % of
//! raw read bandwidth).
//!
//! The raw-bandwidth and log-throughput phases alternate over several rounds (raw, log, log,
//! raw, ...) and the ratio is taken over their totals: a shared virtual disk drifts by ±20 %
//! within a minute, and back-to-back single phases measured that drift more than the log.
//!
//! Usage: sluice-storage-bench [--dir DIR] [--seconds N] [--rounds N] [--batch-bytes N] [--inflight N] [--read-bytes N] [--json FILE]
//! (`--help` describes each).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_bench::batch::{record_batch, XorShift};
use sluice_bench::stats::{ms, Latency};
use sluice_bench::timed::{IoTimes, TimedStorage};
use sluice_shard::{DmaStorage, ShardConfig, ShardCtx, Shutdown};
use sluice_storage::cache::BATCH_CACHE_BYTES_DEFAULT;
use sluice_storage::config::{BATCH_BYTES_MAX, WRITE_CHUNK_BYTES_MAX};
use sluice_storage::io::{Storage, StorageFile, PAGE_SIZE};
use sluice_storage::{BatchCache, LogConfig, PartitionLog};

const APPEND_TARGET: f64 = 0.90;
const DURABLE_P99_TARGET: f64 = 1.30;
/// Catch-up reads of a log larger than memory: ≥ 90 % of raw O_DIRECT read bandwidth.
const READ_TARGET: f64 = 0.90;
const MIB: f64 = 1024.0 * 1024.0;
/// Raw context phase: a common Kafka producer batch size, to show how bandwidth scales.
const CONTEXT_BUF_BYTES: usize = 128 * 1024;
/// Raw context phase: queue depth, to show what the disk gives with writes in parallel
/// (the log writes one chunk at a time).
const CONTEXT_DEPTH: usize = 4;
/// Size of each batch in the durable-latency phase (about one small produce request).
const SMALL_BATCH_BYTES: usize = 1024;
/// Value size of the records inside the batches (only the batch total matters to the log).
const RECORD_VALUE_BYTES: usize = 1000;
/// Space left untouched on the data directory's filesystem.
const FREE_SPACE_RESERVE: u64 = 2 << 30;

/// `sluice-storage-bench`'s flags.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "sluice-storage-bench",
    about = "The disk's raw O_DIRECT bandwidth and fdatasync latency against the partition \
             log's durable append throughput and latency, in alternating rounds"
)]
struct Args {
    /// Parent of the scratch directory; must be on a real disk (tmpfs is refused). The
    /// bench works in DIR/sluice-storage-bench-PID and removes it at the end.
    #[arg(long, value_name = "DIR", default_value = "./target/bench-tmp")]
    dir: PathBuf,
    /// Duration of each phase.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Rounds of the paired raw-bandwidth / log-throughput phases; the order alternates
    /// (raw,log / log,raw) to cancel drift.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Batch size for the raw and log throughput phases: the whole RecordBatch, header
    /// included; a multiple of 4096 (suffixes K/KiB/M/MiB accepted).
    #[arg(long, value_name = "N", default_value = "1MiB", value_parser = batch_bytes)]
    batch_bytes: usize,
    /// Log throughput phase: appended-but-not-durable batches allowed.
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    inflight: u64,
    /// Read phases: size of the log written once and read back (raw, and as a consumer
    /// catching up); suffixes as for --batch-bytes.
    #[arg(long, value_name = "N", default_value = "1GiB", value_parser = read_bytes)]
    read_bytes: u64,
    /// Read phases: the log's read-ahead window, also the size of the raw phase's reads.
    #[arg(long, value_name = "N", default_value_t = sluice_storage::log::READ_AHEAD_WINDOW_BYTES,
          value_parser = batch_bytes)]
    read_window: usize,
    /// Read phases: the log's read-ahead windows in flight per reader.
    #[arg(long, value_name = "N", default_value_t = sluice_storage::log::READ_AHEAD_DEPTH,
          value_parser = clap::value_parser!(usize))]
    read_depth: usize,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn batch_bytes(v: &str) -> Result<usize, String> {
    let n = parse_size(v).ok_or_else(|| format!("{v:?}: not a size (e.g. 1048576, 1MiB, 128K)"))?;
    if n < PAGE_SIZE || n % PAGE_SIZE != 0 || n > BATCH_BYTES_MAX {
        return Err(format!(
            "{n}: must be a multiple of {PAGE_SIZE} from {PAGE_SIZE} to {BATCH_BYTES_MAX} \
             (raw writes are O_DIRECT, so sizes are page multiples)"
        ));
    }
    Ok(n)
}

fn read_bytes(v: &str) -> Result<u64, String> {
    match parse_size(v) {
        Some(n) if n >= 64 << 20 => Ok(n as u64),
        _ => Err(format!(
            "{v:?}: a size of at least 64MiB (e.g. 1GiB, 2048MiB)"
        )),
    }
}

fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mul = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1024,
        "m" | "mib" | "mb" => 1024 * 1024,
        "g" | "gib" | "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// Filesystem of `path` by statfs magic, and the bytes free to an unprivileged writer.
fn filesystem(path: &Path) -> Result<(&'static str, u64), String> {
    let st = rustix::fs::statfs(path).map_err(|e| format!("statfs {}: {e}", path.display()))?;
    let name = match st.f_type as i64 {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x8584_58f6 => "ramfs",
        0x794c_7630 => "overlayfs",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        0xF2F5_2010 => "f2fs",
        _ => "other",
    };
    Ok((name, st.f_bavail as u64 * st.f_bsize as u64))
}

fn since(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn mibs(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / MIB / elapsed.as_secs_f64().max(1e-9)
}

fn size_label(n: usize) -> String {
    if n.is_multiple_of(1024 * 1024) {
        format!("{} MiB", n / (1024 * 1024))
    } else if n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

/// What each phase gets: the knobs and a cap on bytes written, so a long run on a small
/// disk stops a phase early instead of filling the filesystem.
#[derive(Clone, Debug)]
struct Plan {
    work: PathBuf,
    phase: Duration,
    rounds: u32,
    batch_bytes: usize,
    inflight: usize,
    byte_budget: u64,
    read_bytes: u64,
    read_window: usize,
    read_depth: usize,
}

#[derive(Debug, Default)]
struct Raw {
    buf_bytes: usize,
    depth: usize,
    bytes: u64,
    elapsed: Duration,
    mibs: f64,
}

impl Raw {
    /// Adds another run of the same phase (totals; the rate over the totals).
    fn absorb(&mut self, o: &Raw) {
        self.buf_bytes = o.buf_bytes;
        self.depth = o.depth;
        self.bytes += o.bytes;
        self.elapsed += o.elapsed;
        self.mibs = mibs(self.bytes, self.elapsed);
    }
}

#[derive(Debug, Default)]
struct RawSync {
    total: Latency,
    write: Latency,
    sync: Latency,
}

#[derive(Debug, Default)]
struct LogThroughput {
    batches: u64,
    bytes: u64,
    elapsed: Duration,
    mibs: f64,
    append_ns: u64,
    flushes: u64,
    flush_ns: u64,
    writes: u64,
    write_bytes: u64,
    write_ns: u64,
    write_busy_ns: u64,
    io_busy_ns: u64,
    syncs: u64,
    sync_ns: u64,
    segments_rolled: usize,
}

impl LogThroughput {
    /// Adds another run of the same phase (totals; the rate over the totals).
    fn absorb(&mut self, o: &LogThroughput) {
        self.batches += o.batches;
        self.bytes += o.bytes;
        self.elapsed += o.elapsed;
        self.mibs = mibs(self.bytes, self.elapsed);
        self.append_ns += o.append_ns;
        self.flushes += o.flushes;
        self.flush_ns += o.flush_ns;
        self.writes += o.writes;
        self.write_bytes += o.write_bytes;
        self.write_ns += o.write_ns;
        self.write_busy_ns += o.write_busy_ns;
        self.io_busy_ns += o.io_busy_ns;
        self.syncs += o.syncs;
        self.sync_ns += o.sync_ns;
        self.segments_rolled += o.segments_rolled;
    }
}

#[derive(Debug, Default)]
struct LogLatency {
    durable: Latency,
    append_mean_ns: f64,
    write: Latency,
    sync: Latency,
}

#[derive(Debug, Default)]
struct Report {
    /// Per round: (raw MiB/s, log MiB/s).
    rounds: Vec<(f64, f64)>,
    raw: Raw,
    raw_context_small: Raw,
    raw_context_depth: Raw,
    raw_sync: RawSync,
    log_tput: LogThroughput,
    log_lat: LogLatency,
    read: ReadReport,
}

type R<T> = Result<T, String>;

fn err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// Raw phase: sequential O_DIRECT writes of `buf_bytes` through `DmaStorage`, `depth` at a
/// time, then one fdatasync (inside the timed span: the log's figure is durable bytes too).
/// Each buffer is allocated and filled per write, as the log allocates and fills a chunk.
async fn raw_write(
    ctx: &ShardCtx,
    st: &DmaStorage,
    path: &Path,
    buf_bytes: usize,
    depth: usize,
    plan: &Plan,
) -> R<Raw> {
    let file = Rc::new(st.open_rw(path).await.map_err(err("raw open"))?);
    let mut pattern = vec![0u8; buf_bytes];
    XorShift::new(buf_bytes as u64).fill(&mut pattern);
    let mut pending = VecDeque::new();
    let mut pos = 0u64;
    let start = Instant::now();
    while start.elapsed() < plan.phase && pos < plan.byte_budget {
        let mut buf = st.alloc_buf(buf_bytes);
        buf.as_mut().copy_from_slice(&pattern);
        if depth == 1 {
            // The log's flush awaits each write before the next: same here, no task spawn.
            file.write_at(buf, pos).await.map_err(err("raw write"))?;
        } else {
            if pending.len() >= depth {
                let done: sluice_shard::ShardTask<std::io::Result<()>> =
                    pending.pop_front().expect("non-empty");
                done.await.map_err(err("raw write"))?;
            }
            let f = file.clone();
            pending.push_back(
                ctx.spawn_produce(async move { f.write_at(buf, pos).await })
                    .map_err(err("spawn"))?,
            );
        }
        pos += buf_bytes as u64;
    }
    for t in pending {
        t.await.map_err(err("raw write"))?;
    }
    file.fdatasync().await.map_err(err("raw fdatasync"))?;
    let elapsed = start.elapsed();
    drop(file);
    st.remove(path).await.map_err(err("raw remove"))?;
    Ok(Raw {
        buf_bytes,
        depth,
        bytes: pos,
        elapsed,
        mibs: mibs(pos, elapsed),
    })
}

/// Raw latency phase: write one 4 KiB page at the next offset, fdatasync, repeat.
async fn raw_sync(st: &DmaStorage, path: &Path, plan: &Plan) -> R<RawSync> {
    let file = st.open_rw(path).await.map_err(err("raw open"))?;
    let mut rng = XorShift::new(7);
    let (mut total, mut write, mut sync) = (Vec::new(), Vec::new(), Vec::new());
    let mut pos = 0u64;
    let start = Instant::now();
    while start.elapsed() < plan.phase && pos < plan.byte_budget {
        let mut buf = st.alloc_buf(PAGE_SIZE);
        rng.fill(buf.as_mut());
        let t0 = Instant::now();
        file.write_at(buf, pos).await.map_err(err("raw write"))?;
        let t1 = Instant::now();
        file.fdatasync().await.map_err(err("raw fdatasync"))?;
        write.push((t1 - t0).as_nanos() as u64);
        sync.push(since(t1));
        total.push(since(t0));
        pos += PAGE_SIZE as u64;
    }
    drop(file);
    st.remove(path).await.map_err(err("raw remove"))?;
    Ok(RawSync {
        total: Latency::from_samples(total),
        write: Latency::from_samples(write),
        sync: Latency::from_samples(sync),
    })
}

type BenchLog = PartitionLog<TimedStorage<DmaStorage>>;

async fn open_log(
    ctx: &ShardCtx,
    dir: PathBuf,
    batch_bytes: usize,
) -> R<(Rc<BenchLog>, Rc<IoTimes>)> {
    let storage = Rc::new(TimedStorage::new(ctx.storage()));
    let times = storage.times().clone();
    let defaults = LogConfig::default();
    let config = LogConfig {
        // One write buffer holds exactly one batch (when it is a page multiple up to the
        // 1 MiB cap); bigger batches get a buffer of their own size from the log anyway.
        write_buffer_bytes: batch_bytes.clamp(PAGE_SIZE, WRITE_CHUNK_BYTES_MAX),
        max_message_bytes: batch_bytes.max(defaults.max_message_bytes),
        ..defaults
    };
    let cache = Rc::new(RefCell::new(BatchCache::new(BATCH_CACHE_BYTES_DEFAULT)));
    let log = PartitionLog::open(storage, dir, config, cache, "bench-0".into())
        .await
        .map_err(err("log open"))?;
    Ok((Rc::new(log), times))
}

/// Flush timings of the flusher task.
#[derive(Default)]
struct FlushTimes {
    count: Cell<u64>,
    ns: Cell<u64>,
}

/// The broker's flusher: [`PartitionLog::run_flusher`], counting flushes and their time.
fn spawn_flusher(
    ctx: &ShardCtx,
    log: Rc<BenchLog>,
    times: Rc<FlushTimes>,
) -> R<sluice_shard::ShardTask<()>> {
    ctx.spawn_produce(async move {
        let result = log
            .run_flusher(
                || false,
                |t| {
                    times.count.set(times.count.get() + 1);
                    times
                        .ns
                        .set(times.ns.get() + (t.write + t.sync).as_nanos() as u64);
                },
            )
            .await;
        if let Err(e) = result {
            eprintln!("flush failed: {e}");
        }
    })
    .map_err(err("spawn flusher"))
}

async fn close_log(log: Rc<BenchLog>, flusher: sluice_shard::ShardTask<()>) -> R<()> {
    // The flusher is parked in `wait_dirty` (everything appended is durable): dropping it
    // cancels it between flushes.
    drop(flusher);
    log.close().await.map_err(err("log close"))?;
    log.destroy().await.map_err(err("log destroy"))?;
    Ok(())
}

/// Log throughput phase: a producer appends `batch_bytes` batches as fast as flushes
/// allow, with at most `inflight` batches appended but not yet durable.
async fn log_throughput(ctx: &ShardCtx, plan: &Plan) -> R<LogThroughput> {
    let (log, times) = open_log(ctx, plan.work.join("log-throughput"), plan.batch_bytes).await?;
    let batch = record_batch(plan.batch_bytes, RECORD_VALUE_BYTES, now_ms())
        .ok_or("cannot build the batch")?;
    let flush_times = Rc::new(FlushTimes::default());
    let flusher = spawn_flusher(ctx, log.clone(), flush_times.clone())?;
    // Warm-up: the first flush creates the segment file and syncs the directory.
    let a = log.append(&batch, now_ms()).map_err(err("append"))?;
    log.wait_durable(a.last_offset)
        .await
        .map_err(err("wait_durable"))?;
    times.reset();
    flush_times.count.set(0);
    flush_times.ns.set(0);
    let segments_before = log.segment_count();

    let (phase, inflight, budget, batch_bytes) = (
        plan.phase,
        plan.inflight,
        plan.byte_budget,
        plan.batch_bytes as u64,
    );
    let l = log.clone();
    let producer = ctx
        .spawn_produce(async move {
            let mut window = VecDeque::with_capacity(inflight);
            let (mut batches, mut append_ns) = (0u64, 0u64);
            let start = Instant::now();
            while start.elapsed() < phase && batches * batch_bytes < budget {
                if window.len() >= inflight {
                    let oldest = window.pop_front().expect("non-empty");
                    l.wait_durable(oldest).await.map_err(err("wait_durable"))?;
                }
                let t = Instant::now();
                let a = l.append(&batch, now_ms()).map_err(err("append"))?;
                append_ns += since(t);
                window.push_back(a.last_offset);
                batches += 1;
                // Let the flusher start on what is buffered, as a broker's produce handlers
                // (one task per request) would between requests.
                futures_lite::future::yield_now().await;
            }
            if let Some(&last) = window.back() {
                l.wait_durable(last).await.map_err(err("wait_durable"))?;
            }
            Ok::<_, String>((batches, start.elapsed(), append_ns))
        })
        .map_err(err("spawn producer"))?;
    let (batches, elapsed, append_ns) = producer.await?;
    let bytes = batches * batch_bytes;
    let out = LogThroughput {
        batches,
        bytes,
        elapsed,
        mibs: mibs(bytes, elapsed),
        append_ns,
        flushes: flush_times.count.get(),
        flush_ns: flush_times.ns.get(),
        writes: times.writes.get(),
        write_bytes: times.write_bytes.get(),
        write_ns: times.write_ns.get(),
        write_busy_ns: times.write_busy_ns.get(),
        io_busy_ns: times.io_busy_ns.get(),
        syncs: times.syncs.get(),
        sync_ns: times.sync_ns.get(),
        segments_rolled: log.segment_count() - segments_before,
    };
    close_log(log, flusher).await?;
    Ok(out)
}

/// Durable-append latency phase: one small batch at a time, append then await durability.
async fn log_latency(ctx: &ShardCtx, plan: &Plan) -> R<LogLatency> {
    let (log, times) = open_log(ctx, plan.work.join("log-latency"), SMALL_BATCH_BYTES).await?;
    let batch = record_batch(SMALL_BATCH_BYTES, RECORD_VALUE_BYTES / 2, now_ms())
        .ok_or("cannot build the batch")?;
    let flush_times = Rc::new(FlushTimes::default());
    let flusher = spawn_flusher(ctx, log.clone(), flush_times)?;
    let a = log.append(&batch, now_ms()).map_err(err("append"))?;
    log.wait_durable(a.last_offset)
        .await
        .map_err(err("wait_durable"))?;
    times.reset();

    let (phase, budget) = (plan.phase, plan.byte_budget);
    let l = log.clone();
    let producer = ctx
        .spawn_produce(async move {
            let (mut samples, mut append_ns) = (Vec::new(), 0u64);
            let start = Instant::now();
            while start.elapsed() < phase && (samples.len() * SMALL_BATCH_BYTES) < budget as usize {
                let t0 = Instant::now();
                let a = l.append(&batch, now_ms()).map_err(err("append"))?;
                append_ns += since(t0);
                l.wait_durable(a.last_offset)
                    .await
                    .map_err(err("wait_durable"))?;
                samples.push(since(t0));
            }
            Ok::<_, String>((samples, append_ns))
        })
        .map_err(err("spawn producer"))?;
    let (samples, append_ns) = producer.await?;
    let n = samples.len().max(1) as f64;
    let out = LogLatency {
        durable: Latency::from_samples(samples),
        append_mean_ns: append_ns as f64 / n,
        write: Latency::from_samples(times.write_samples.borrow().clone()),
        sync: Latency::from_samples(times.sync_samples.borrow().clone()),
    };
    close_log(log, flusher).await?;
    Ok(out)
}

/// Read phases: the size of the batches in the read set (a producer's usual batch).
const READ_BATCH_BYTES: usize = 16 * 1024;
/// Read phases: bytes a consumer asks of a partition per fetch (Kafka's
/// `max.partition.fetch.bytes` default).
const READ_FETCH_BYTES: usize = 1024 * 1024;
/// Raw read phase: reads in flight at once (the disk's bandwidth with requests queued).
const RAW_READ_DEPTH: usize = 4;

/// One read phase's totals (raw reads of the segment files, or a consumer's scan of the log).
#[derive(Debug, Default)]
struct ReadRun {
    bytes: u64,
    elapsed: Duration,
    mibs: f64,
    /// Log scans: read-ahead windows issued and reads served from them.
    windows: u64,
    served: u64,
}

impl ReadRun {
    fn absorb(&mut self, o: &ReadRun) {
        self.bytes += o.bytes;
        self.elapsed += o.elapsed;
        self.mibs = mibs(self.bytes, self.elapsed);
        self.windows += o.windows;
        self.served += o.served;
    }
}

#[derive(Debug, Default)]
struct ReadReport {
    set_bytes: u64,
    /// The read-ahead window and the raw phase's read size.
    window: usize,
    /// Per round: raw, log with read-ahead, log without (MiB/s).
    rounds: Vec<(f64, f64, f64)>,
    raw: ReadRun,
    raw_qd1: ReadRun,
    ahead: ReadRun,
    plain: ReadRun,
}

/// Writes the read set: `bytes` of `READ_BATCH_BYTES` batches in a log of its own, durable
/// and closed. Returns the log's directory.
async fn write_read_set(ctx: &ShardCtx, plan: &Plan, bytes: u64) -> R<PathBuf> {
    let dir = plan.work.join("read-set");
    let (log, _) = open_log(ctx, dir.clone(), READ_BATCH_BYTES).await?;
    let batch = record_batch(READ_BATCH_BYTES, RECORD_VALUE_BYTES, now_ms())
        .ok_or("cannot build the batch")?;
    let flusher = spawn_flusher(ctx, log.clone(), Rc::new(FlushTimes::default()))?;
    let mut window = VecDeque::new();
    let mut written = 0u64;
    while written < bytes {
        if window.len() >= 64 {
            let oldest = window.pop_front().expect("non-empty");
            log.wait_durable(oldest)
                .await
                .map_err(err("wait_durable"))?;
        }
        let a = log.append(&batch, now_ms()).map_err(err("append"))?;
        window.push_back(a.last_offset);
        written += READ_BATCH_BYTES as u64;
        futures_lite::future::yield_now().await;
    }
    if let Some(&last) = window.back() {
        log.wait_durable(last).await.map_err(err("wait_durable"))?;
    }
    drop(flusher);
    log.close().await.map_err(err("log close"))?;
    Ok(dir)
}

/// The read set's segment files, oldest first.
fn segment_files(dir: &Path) -> R<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(err("list read set"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    Ok(files)
}

/// Raw read phase: the segment files read in order with O_DIRECT through `DmaStorage`,
/// `buf_bytes` per read, `depth` reads in flight.
async fn raw_read(
    ctx: &ShardCtx,
    st: &DmaStorage,
    files: &[PathBuf],
    buf_bytes: usize,
    depth: usize,
) -> R<ReadRun> {
    let start = Instant::now();
    let mut bytes = 0u64;
    for path in files {
        let file = Rc::new(st.open_rw(path).await.map_err(err("raw open"))?);
        let size = file.size().await.map_err(err("raw size"))?;
        let mut pending = VecDeque::new();
        let mut pos = 0u64;
        while pos < size || !pending.is_empty() {
            if pos < size && pending.len() < depth {
                let f = file.clone();
                let at = pos;
                pending.push_back(
                    ctx.spawn_produce(async move { f.read_at(at, buf_bytes).await })
                        .map_err(err("spawn"))?,
                );
                pos += buf_bytes as u64;
                continue;
            }
            let read: sluice_shard::ShardTask<std::io::Result<bytes::Bytes>> =
                pending.pop_front().expect("non-empty");
            bytes += read.await.map_err(err("raw read"))?.len() as u64;
        }
    }
    let elapsed = start.elapsed();
    Ok(ReadRun {
        bytes,
        elapsed,
        mibs: mibs(bytes, elapsed),
        ..ReadRun::default()
    })
}

/// Log read phase: a consumer catching up, reading the whole log from its first offset,
/// `READ_FETCH_BYTES` per read, on a shard whose batch cache holds none of it; with the
/// log's read-ahead (the broker's budget) or without it.
async fn log_read(ctx: &ShardCtx, dir: &Path, read_ahead: bool, plan: &Plan) -> R<ReadRun> {
    let budget = if read_ahead {
        BATCH_CACHE_BYTES_DEFAULT / 2
    } else {
        0
    };
    let cache = Rc::new(RefCell::new(BatchCache::with_read_ahead(0, budget)));
    cache
        .borrow()
        .read_ahead_budget()
        .set_window_bytes(plan.read_window);
    cache
        .borrow()
        .read_ahead_budget()
        .set_depth(plan.read_depth);
    let storage = Rc::new(ctx.storage());
    let log = PartitionLog::open(
        storage,
        dir.to_path_buf(),
        LogConfig::default(),
        cache.clone(),
        "bench-read".into(),
    )
    .await
    .map_err(err("log open"))?;
    let end = log.high_watermark();
    let start = Instant::now();
    let (mut from, mut bytes) = (0i64, 0u64);
    while from < end {
        let (records, next) = log
            .read_next(from, READ_FETCH_BYTES)
            .await
            .map_err(err("log read"))?;
        if next <= from {
            return Err(format!("log read made no progress at offset {from}"));
        }
        bytes += records.len() as u64;
        from = next;
    }
    let elapsed = start.elapsed();
    let (windows, served) = cache.borrow().read_ahead_budget().windows_and_served();
    log.close().await.map_err(err("log close"))?;
    Ok(ReadRun {
        bytes,
        elapsed,
        mibs: mibs(bytes, elapsed),
        windows,
        served,
    })
}

/// The read phases: the read set written once, then rounds of raw reads and the two log
/// scans, their order rotating so drift favours none.
async fn read_phases(ctx: &ShardCtx, st: &DmaStorage, plan: &Plan) -> R<ReadReport> {
    let set = plan.read_bytes.min(plan.byte_budget);
    let dir = write_read_set(ctx, plan, set).await?;
    let files = segment_files(&dir)?;
    let mut r = ReadReport {
        set_bytes: set,
        window: plan.read_window,
        ..ReadReport::default()
    };
    let window = plan.read_window;
    for round in 0..plan.rounds {
        let mut got = [0.0f64; 3];
        for k in 0..3 {
            match (round as usize + k) % 3 {
                0 => {
                    let x = raw_read(ctx, st, &files, window, RAW_READ_DEPTH).await?;
                    got[0] = x.mibs;
                    r.raw.absorb(&x);
                }
                1 => {
                    let x = log_read(ctx, &dir, true, plan).await?;
                    got[1] = x.mibs;
                    r.ahead.absorb(&x);
                }
                _ => {
                    let x = log_read(ctx, &dir, false, plan).await?;
                    got[2] = x.mibs;
                    r.plain.absorb(&x);
                }
            }
        }
        r.rounds.push((got[0], got[1], got[2]));
    }
    r.raw_qd1 = raw_read(ctx, st, &files, READ_FETCH_BYTES, 1).await?;
    std::fs::remove_dir_all(&dir).map_err(err("remove read set"))?;
    Ok(r)
}

async fn run(ctx: ShardCtx, plan: Plan) -> R<Report> {
    let st = ctx.storage();
    st.create_dir_all(&plan.work)
        .await
        .map_err(err("create scratch dir"))?;
    let secs = plan.phase.as_secs();
    let b = plan.batch_bytes;
    let mut r = Report::default();
    for round in 0..plan.rounds {
        eprintln!(
            "[1/6] round {}/{}: raw O_DIRECT write, {} buffers, QD1, and log append throughput, {} batches, {} in flight ({secs} s each)",
            round + 1,
            plan.rounds,
            size_label(b),
            size_label(b),
            plan.inflight
        );
        // ABBA order: a disk speeding up or slowing down through the run favours neither.
        let (raw, log) = if round % 2 == 0 {
            let raw = raw_write(&ctx, &st, &plan.work.join("raw-seq"), b, 1, &plan).await?;
            (raw, log_throughput(&ctx, &plan).await?)
        } else {
            let log = log_throughput(&ctx, &plan).await?;
            (
                raw_write(&ctx, &st, &plan.work.join("raw-seq"), b, 1, &plan).await?,
                log,
            )
        };
        r.rounds.push((raw.mibs, log.mibs));
        r.raw.absorb(&raw);
        r.log_tput.absorb(&log);
    }
    eprintln!(
        "[2/6] raw O_DIRECT write, {} buffers, QD1 (context, {secs} s)",
        size_label(CONTEXT_BUF_BYTES)
    );
    r.raw_context_small = raw_write(
        &ctx,
        &st,
        &plan.work.join("raw-seq-small"),
        CONTEXT_BUF_BYTES,
        1,
        &plan,
    )
    .await?;
    eprintln!(
        "[3/6] raw O_DIRECT write, {} buffers, QD{CONTEXT_DEPTH} (context, {secs} s)",
        size_label(b)
    );
    r.raw_context_depth = raw_write(
        &ctx,
        &st,
        &plan.work.join("raw-seq-qd"),
        b,
        CONTEXT_DEPTH,
        &plan,
    )
    .await?;
    eprintln!("[4/6] raw 4 KiB write + fdatasync ({secs} s)");
    r.raw_sync = raw_sync(&st, &plan.work.join("raw-sync"), &plan).await?;
    eprintln!(
        "[5/6] log durable-append latency, {} batches ({secs} s)",
        size_label(SMALL_BATCH_BYTES)
    );
    r.log_lat = log_latency(&ctx, &plan).await?;
    eprintln!(
        "[6/6] read: a {} MiB log of {} batches written once, then {} rounds of raw O_DIRECT reads of its files ({} reads, QD{RAW_READ_DEPTH}) and a consumer's scan of it ({} reads) with and without read-ahead",
        plan.read_bytes.min(plan.byte_budget) >> 20,
        size_label(READ_BATCH_BYTES),
        plan.rounds,
        size_label(plan.read_window),
        size_label(READ_FETCH_BYTES)
    );
    r.read = read_phases(&ctx, &st, &plan).await?;
    Ok(r)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

struct Ratios {
    append: f64,
    durable: f64,
    read: f64,
}

fn ratios(r: &Report) -> Ratios {
    Ratios {
        append: r.log_tput.mibs / r.raw.mibs.max(1e-9),
        durable: r.log_lat.durable.p99_ns as f64 / (r.raw_sync.total.p99_ns.max(1)) as f64,
        // Against the better of the two raw figures: on some disks one read at a time is
        // faster than several.
        read: r.read.ahead.mibs / r.read.raw.mibs.max(r.read.raw_qd1.mibs).max(1e-9),
    }
}

fn print_report(args: &Args, fs: &str, r: &Report) {
    let q = ratios(r);
    let lat = |l: &Latency| {
        format!(
            "p50 {} / p99 {} / p999 {} / max {} ms (n={})",
            ms(l.p50_ns),
            ms(l.p99_ns),
            ms(l.p999_ns),
            ms(l.max_ns),
            l.count
        )
    };
    let raw = |x: &Raw| {
        format!(
            "{:.1} MiB/s ({} MiB in {:.2} s)",
            x.mibs,
            x.bytes >> 20,
            x.elapsed.as_secs_f64()
        )
    };
    println!(
        "sluice storage benchmark: {} s per phase, {} rounds of raw/log throughput, batch {}, fs {fs}, dir {}",
        args.seconds,
        args.rounds,
        size_label(args.batch_bytes),
        args.dir.display()
    );
    println!();
    println!("| phase | result |");
    println!("|---|---|");
    println!(
        "| raw O_DIRECT seq write, {} QD1 (all rounds) | {} |",
        size_label(r.raw.buf_bytes),
        raw(&r.raw)
    );
    println!(
        "| raw O_DIRECT seq write, {} QD1 (context) | {} |",
        size_label(r.raw_context_small.buf_bytes),
        raw(&r.raw_context_small)
    );
    println!(
        "| raw O_DIRECT seq write, {} QD{} (context) | {} |",
        size_label(r.raw_context_depth.buf_bytes),
        r.raw_context_depth.depth,
        raw(&r.raw_context_depth)
    );
    println!("| raw 4 KiB write+fdatasync | {} |", lat(&r.raw_sync.total));
    println!(
        "| log durable append, {} batches, {} in flight (all rounds) | {:.1} MiB/s ({} batches in {:.2} s) |",
        size_label(args.batch_bytes),
        args.inflight,
        r.log_tput.mibs,
        r.log_tput.batches,
        r.log_tput.elapsed.as_secs_f64()
    );
    println!(
        "| log durable-append latency, {} batches | {} |",
        size_label(SMALL_BATCH_BYTES),
        lat(&r.log_lat.durable)
    );
    println!();
    println!("| round | raw MiB/s | log MiB/s | log ÷ raw |");
    println!("|---|---|---|---|");
    for (i, (raw, log)) in r.rounds.iter().enumerate() {
        println!(
            "| {} | {raw:.1} | {log:.1} | {:.3} |",
            i + 1,
            log / raw.max(1e-9)
        );
    }
    println!();
    println!("| target | measured | goal | verdict |");
    println!("|---|---|---|---|");
    println!(
        "| append MiB/s ÷ raw MiB/s ({}, totals over the rounds) | {:.3} | ≥ {APPEND_TARGET:.2} | {} |",
        size_label(args.batch_bytes),
        q.append,
        verdict(q.append >= APPEND_TARGET)
    );
    println!(
        "| durable-append p99 ÷ raw fdatasync p99 | {:.3} | ≤ {DURABLE_P99_TARGET:.2} | {} |",
        q.durable,
        verdict(q.durable <= DURABLE_P99_TARGET)
    );
    println!(
        "| catch-up read MiB/s (read-ahead on) ÷ the better raw read MiB/s | {:.3} | ≥ {READ_TARGET:.2} | {} |",
        q.read,
        verdict(q.read >= READ_TARGET)
    );
    println!();
    print_read_report(&r.read);
    println!();
    let t = &r.log_tput;
    let s = |ns: u64| ns as f64 / 1e9;
    let el = t.elapsed.as_secs_f64().max(1e-9);
    println!("Where the log throughput phase spent its {:.2} s (one core; CPU work and IO waits overlap):", el);
    println!();
    println!("| item | total s | share of wall | per flush |");
    println!("|---|---|---|---|");
    let per = |ns: u64| {
        if t.flushes == 0 {
            "-".to_string()
        } else {
            format!("{:.3} ms", ns as f64 / 1e6 / t.flushes as f64)
        }
    };
    println!(
        "| sync stages: {} ({:.2} MiB written per sync on average; writes and syncs overlap) | | | |",
        t.flushes,
        t.write_bytes as f64 / MIB / t.flushes.max(1) as f64,
    );
    println!(
        "| · writes in flight ({} write_at calls, {:.1} MiB/s while any was in flight; up to {} at once) | {:.3} | {:.1} % | {} |",
        t.writes,
        t.write_bytes as f64 / MIB / s(t.write_busy_ns).max(1e-9),
        sluice_storage::log::WRITE_DEPTH_MAX,
        s(t.write_busy_ns),
        100.0 * s(t.write_busy_ns) / el,
        per(t.write_busy_ns)
    );
    println!(
        "| · fdatasync in flight ({} calls) | {:.3} | {:.1} % | {} |",
        t.syncs,
        s(t.sync_ns),
        100.0 * s(t.sync_ns) / el,
        per(t.sync_ns)
    );
    println!(
        "| · a write or an fdatasync in flight | {:.3} | {:.1} % | |",
        s(t.io_busy_ns),
        100.0 * s(t.io_busy_ns) / el,
    );
    let idle = (el - s(t.io_busy_ns)).max(0.0);
    println!(
        "| no IO in flight (bookkeeping, the producer's turn, waiting for appends) | {idle:.3} | {:.1} % | |",
        100.0 * idle / el
    );
    println!(
        "| append() CPU (CRC32C + copies), {:.3} ms per batch | {:.3} | {:.1} % | |",
        t.append_ns as f64 / 1e6 / t.batches.max(1) as f64,
        s(t.append_ns),
        100.0 * s(t.append_ns) / el
    );
    println!();
    println!(
        "Segments rolled during the throughput phase: {}.",
        t.segments_rolled
    );
    let l = &r.log_lat;
    println!();
    println!("Durable-append latency split (means, ms): append() {:.4}; log write_at {} (p99 {}); log fdatasync {} (p99 {}); raw write {} (p99 {}); raw fdatasync {} (p99 {}).",
        l.append_mean_ns / 1e6, ms(l.write.mean_ns as u64), ms(l.write.p99_ns), ms(l.sync.mean_ns as u64), ms(l.sync.p99_ns),
        ms(r.raw_sync.write.mean_ns as u64), ms(r.raw_sync.write.p99_ns), ms(r.raw_sync.sync.mean_ns as u64), ms(r.raw_sync.sync.p99_ns));
}

fn print_read_report(r: &ReadReport) {
    let run = |x: &ReadRun| {
        format!(
            "{:.1} MiB/s ({} MiB in {:.2} s)",
            x.mibs,
            x.bytes >> 20,
            x.elapsed.as_secs_f64()
        )
    };
    println!(
        "Reads of a {} MiB log of {} batches (O_DIRECT, nothing cached):",
        r.set_bytes >> 20,
        size_label(READ_BATCH_BYTES)
    );
    println!();
    println!("| phase | result |");
    println!("|---|---|");
    println!(
        "| raw seq read, {} QD{RAW_READ_DEPTH} (all rounds) | {} |",
        size_label(r.window),
        run(&r.raw)
    );
    println!(
        "| raw seq read, {} QD1 (context: one consumer fetch at a time) | {} |",
        size_label(READ_FETCH_BYTES),
        run(&r.raw_qd1)
    );
    println!(
        "| log catch-up read, {} per read, read-ahead on (all rounds) | {}; {} windows, {} reads served from them |",
        size_label(READ_FETCH_BYTES),
        run(&r.ahead),
        r.ahead.windows,
        r.ahead.served
    );
    println!(
        "| log catch-up read, {} per read, read-ahead off (all rounds) | {} |",
        size_label(READ_FETCH_BYTES),
        run(&r.plain)
    );
    println!();
    println!("| round | raw MiB/s | read-ahead MiB/s | without MiB/s | read-ahead ÷ raw | read-ahead ÷ without |");
    println!("|---|---|---|---|---|---|");
    for (i, (raw, ahead, plain)) in r.rounds.iter().enumerate() {
        println!(
            "| {} | {raw:.1} | {ahead:.1} | {plain:.1} | {:.3} | {:.2} |",
            i + 1,
            ahead / raw.max(1e-9),
            ahead / plain.max(1e-9)
        );
    }
}

fn to_json(args: &Args, fs: &str, r: &Report) -> serde_json::Value {
    let q = ratios(r);
    let raw = |x: &Raw| serde_json::json!({"buf_bytes": x.buf_bytes, "depth": x.depth, "bytes": x.bytes, "seconds": x.elapsed.as_secs_f64(), "mib_per_s": x.mibs});
    let read_run = |x: &ReadRun| serde_json::json!({"bytes": x.bytes, "seconds": x.elapsed.as_secs_f64(), "mib_per_s": x.mibs, "windows": x.windows, "served": x.served});
    let t = &r.log_tput;
    serde_json::json!({
        "unix_ms": now_ms(),
        "seconds_per_phase": args.seconds,
        "rounds": r.rounds.iter().map(|(raw, log)| serde_json::json!({"raw_mib_per_s": raw, "log_mib_per_s": log})).collect::<Vec<_>>(),
        "batch_bytes": args.batch_bytes,
        "inflight": args.inflight,
        "dir": args.dir.display().to_string(),
        "filesystem": fs,
        "raw_write": raw(&r.raw),
        "raw_write_context_small": raw(&r.raw_context_small),
        "raw_write_context_depth": raw(&r.raw_context_depth),
        "raw_fdatasync_4k": {"total": r.raw_sync.total.to_json(), "write": r.raw_sync.write.to_json(), "fdatasync": r.raw_sync.sync.to_json()},
        "log_append": {
            "batches": t.batches, "bytes": t.bytes, "seconds": t.elapsed.as_secs_f64(), "mib_per_s": t.mibs,
            "append_seconds": t.append_ns as f64 / 1e9, "flushes": t.flushes, "flush_seconds": t.flush_ns as f64 / 1e9,
            "writes": t.writes, "write_bytes": t.write_bytes, "write_seconds": t.write_ns as f64 / 1e9, "write_busy_seconds": t.write_busy_ns as f64 / 1e9, "io_busy_seconds": t.io_busy_ns as f64 / 1e9,
            "fdatasyncs": t.syncs, "fdatasync_seconds": t.sync_ns as f64 / 1e9, "segments_rolled": t.segments_rolled,
        },
        "log_durable_latency": {
            "batch_bytes": SMALL_BATCH_BYTES, "durable": r.log_lat.durable.to_json(),
            "append_mean_us": r.log_lat.append_mean_ns / 1e3,
            "write": r.log_lat.write.to_json(), "fdatasync": r.log_lat.sync.to_json(),
        },
        "read": {
            "set_bytes": r.read.set_bytes, "window_bytes": r.read.window, "batch_bytes": READ_BATCH_BYTES, "fetch_bytes": READ_FETCH_BYTES,
            "rounds": r.read.rounds.iter().map(|(raw, ahead, plain)| serde_json::json!({"raw_mib_per_s": raw, "read_ahead_mib_per_s": ahead, "no_read_ahead_mib_per_s": plain})).collect::<Vec<_>>(),
            "raw": read_run(&r.read.raw), "raw_qd1": read_run(&r.read.raw_qd1),
            "read_ahead": read_run(&r.read.ahead), "no_read_ahead": read_run(&r.read.plain),
        },
        "ratios": {
            "append_over_raw": q.append, "append_target_min": APPEND_TARGET, "append_pass": q.append >= APPEND_TARGET,
            "durable_p99_over_raw_p99": q.durable, "durable_target_max": DURABLE_P99_TARGET, "durable_pass": q.durable <= DURABLE_P99_TARGET,
            "read_over_raw": q.read, "read_target_min": READ_TARGET, "read_pass": q.read >= READ_TARGET,
        },
    })
}

fn main_inner() -> R<()> {
    let mut args = <Args as clap::Parser>::parse();
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("--dir {}: {e}", args.dir.display()))?;
    // Absolute, because glommio 0.9's `Directory::open` (used by `DmaStorage::sync_dir`)
    // calls openat(-1, ..) rather than openat(AT_FDCWD, ..): a relative path fails with EBADF.
    args.dir = std::fs::canonicalize(&args.dir)
        .map_err(|e| format!("--dir {}: {e}", args.dir.display()))?;
    let (fs, free) = filesystem(&args.dir)?;
    if fs == "tmpfs" || fs == "ramfs" {
        return Err(format!(
            "--dir {} is on {fs}: the benchmark must run on a real disk",
            args.dir.display()
        ));
    }
    let byte_budget = free.saturating_sub(FREE_SPACE_RESERVE) / 2;
    if byte_budget < 256 << 20 {
        return Err(format!(
            "--dir {}: only {} MiB free; want at least {} MiB",
            args.dir.display(),
            free >> 20,
            (FREE_SPACE_RESERVE >> 20) + 512
        ));
    }
    let work = args
        .dir
        .join(format!("sluice-storage-bench-{}", std::process::id()));
    if work.exists() {
        return Err(format!(
            "{} already exists (left by an earlier run?); remove it first",
            work.display()
        ));
    }
    let plan = Plan {
        work: work.clone(),
        phase: Duration::from_secs(args.seconds),
        rounds: args.rounds,
        batch_bytes: args.batch_bytes,
        inflight: args.inflight as usize,
        byte_budget,
        read_bytes: args.read_bytes,
        read_window: args.read_window,
        read_depth: args.read_depth,
    };
    let result: Arc<Mutex<Option<R<Report>>>> = Arc::new(Mutex::new(None));
    let slot = result.clone();
    let config = ShardConfig {
        shards: 1,
        pin: true,
        name: "storage-bench".into(),
        ..ShardConfig::default()
    };
    let rt = sluice_shard::start(config, Shutdown::new(), move |ctx| {
        let (slot, plan) = (slot.clone(), plan.clone());
        async move {
            let r = run(ctx, plan).await;
            if let Ok(mut s) = slot.lock() {
                *s = Some(r);
            }
        }
    })
    .map_err(err("starting the shard"))?;
    let joined = rt.join().map_err(err("shard"));
    // Whatever happened, do not leave gigabytes behind.
    let _ = std::fs::remove_dir_all(&work);
    joined?;
    let report = result
        .lock()
        .map_err(|_| "result lock poisoned".to_string())?
        .take()
        .ok_or("the shard produced no result")??;
    print_report(&args, fs, &report);
    if let Some(path) = &args.json {
        let text =
            serde_json::to_string_pretty(&to_json(&args, fs, &report)).map_err(err("json"))?;
        std::fs::write(path, text + "\n").map_err(|e| format!("--json {}: {e}", path.display()))?;
    }
    Ok(())
}

fn main() {
    if let Err(e) = main_inner() {
        eprintln!("sluice-storage-bench: error: {e}");
        eprintln!("(run with --help for usage)");
        std::process::exit(2);
    }
}
