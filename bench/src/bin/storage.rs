//! `sluice-storage-bench`: measures, in one run and on one pinned shard, the disk's raw
//! O_DIRECT write bandwidth and 4 KiB write+fdatasync latency, then the partition log's
//! durable append throughput and durable-append latency over the same IO path
//! (`DmaStorage`: glommio DMA files, io_uring), and prints the ratios against the
//! Foundation targets (append ≥ 90 % of raw bandwidth, durable p99 ≤ 1.3 × raw fdatasync p99).
//!
//! The raw-bandwidth and log-throughput phases alternate over several rounds (raw, log, log,
//! raw, ...) and the ratio is taken over their totals: a shared virtual disk drifts by ±20 %
//! within a minute, and back-to-back single phases measured that drift more than the log.
//!
//! Usage: sluice-storage-bench [--dir DIR] [--seconds N] [--rounds N] [--batch-bytes N] [--inflight N] [--json FILE]
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

fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mul = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1024,
        "m" | "mib" | "mb" => 1024 * 1024,
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
            "[1/5] round {}/{}: raw O_DIRECT write, {} buffers, QD1, and log append throughput, {} batches, {} in flight ({secs} s each)",
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
        "[2/5] raw O_DIRECT write, {} buffers, QD1 (context, {secs} s)",
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
        "[3/5] raw O_DIRECT write, {} buffers, QD{CONTEXT_DEPTH} (context, {secs} s)",
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
    eprintln!("[4/5] raw 4 KiB write + fdatasync ({secs} s)");
    r.raw_sync = raw_sync(&st, &plan.work.join("raw-sync"), &plan).await?;
    eprintln!(
        "[5/5] log durable-append latency, {} batches ({secs} s)",
        size_label(SMALL_BATCH_BYTES)
    );
    r.log_lat = log_latency(&ctx, &plan).await?;
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
}

fn ratios(r: &Report) -> Ratios {
    Ratios {
        append: r.log_tput.mibs / r.raw.mibs.max(1e-9),
        durable: r.log_lat.durable.p99_ns as f64 / (r.raw_sync.total.p99_ns.max(1)) as f64,
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

fn to_json(args: &Args, fs: &str, r: &Report) -> serde_json::Value {
    let q = ratios(r);
    let raw = |x: &Raw| serde_json::json!({"buf_bytes": x.buf_bytes, "depth": x.depth, "bytes": x.bytes, "seconds": x.elapsed.as_secs_f64(), "mib_per_s": x.mibs});
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
        "ratios": {
            "append_over_raw": q.append, "append_target_min": APPEND_TARGET, "append_pass": q.append >= APPEND_TARGET,
            "durable_p99_over_raw_p99": q.durable, "durable_target_max": DURABLE_P99_TARGET, "durable_pass": q.durable <= DURABLE_P99_TARGET,
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
