//! Per-stage timers of the produce and fetch paths, one set per shard thread, logged every
//! `--stats-interval-ms` (off by default) so a latency tail can be pinned on a stage.
//!
//! When off, a timer costs one relaxed atomic load and no clock read. When on, each stage
//! is an HDR histogram in microseconds owned by the shard that records it (a thread-local:
//! nothing is shared between shards, so nothing is locked); the reporter prints and resets
//! them, so each log line covers one interval.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sluice_shard::ShardId;

/// Set once at start from the configuration; read on every timed step.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Longest duration a histogram tells apart (longer ones count as this).
const RECORDED_US_MAX: u64 = 60_000_000;

/// The timed steps. Connection-side stages are recorded on the shard holding the
/// connection; owner-side stages on the shard owning the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Produce: request frame decoded → response written to the socket (connection shard).
    ProduceRequest,
    /// Produce: request frame decoded → handler done (every partition answered). The rest
    /// of `ProduceRequest` is waiting for earlier responses and the socket write.
    ProduceHandled,
    /// Produce of one partition owned by another shard: the cross-shard call's round trip
    /// as the connection shard sees it (owner-side stages plus the two mesh hops).
    ProduceRemote,
    /// Owner shard: appending one partition's batches (CRC and sequence checks, the copy
    /// into the write buffer, index and cache updates).
    ProduceAppend,
    /// Owner shard: append done → the fdatasync covering it completed (waiting for the
    /// flush in progress, then the flush that takes these bytes).
    ProduceDurable,
    /// One flush's writes (all chunks of all its segments).
    FlushWrite,
    /// One flush's fdatasync calls.
    FlushSync,
    /// Fetch: request frame decoded → response written (includes long-poll waits).
    FetchRequest,
    /// Leader of a replicated partition: proposal submitted → committed on a quorum and
    /// under this leader's high watermark (what an acks=all answer waits for).
    RaftProduceCommitted,
    /// Replication driver: one log sync run beside further writes (`LogSync`).
    RaftLogSync,
    /// Replication driver: one sync it waited for, with nothing performed meanwhile (the
    /// state file, a log start, a file-level write).
    RaftBlockingSync,
    /// How late a [`TIMER_PROBE_PERIOD`] sleep in the produce queue wakes: the executor's
    /// own delay (busy task queues, a stuck reactor), which every timer-driven step (Raft
    /// ticks, batching, retries) inherits.
    ShardTimerLag,
}

/// The sleep the timer-lag probe measures (see [`Stage::ShardTimerLag`]).
pub const TIMER_PROBE_PERIOD: Duration = Duration::from_millis(10);
/// The probe's sleep while the stage timers are off: it feeds `/metrics` only.
pub const TIMER_PROBE_PERIOD_IDLE: Duration = Duration::from_millis(500);

const STAGES: [Stage; 12] = [
    Stage::ProduceRequest,
    Stage::ProduceHandled,
    Stage::ProduceRemote,
    Stage::ProduceAppend,
    Stage::ProduceDurable,
    Stage::FlushWrite,
    Stage::FlushSync,
    Stage::FetchRequest,
    Stage::RaftProduceCommitted,
    Stage::RaftLogSync,
    Stage::RaftBlockingSync,
    Stage::ShardTimerLag,
];

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::ProduceRequest => "produce.request",
            Stage::ProduceHandled => "produce.handled",
            Stage::ProduceRemote => "produce.remote_partition",
            Stage::ProduceAppend => "produce.append",
            Stage::ProduceDurable => "produce.append_to_durable",
            Stage::FlushWrite => "flush.write",
            Stage::FlushSync => "flush.fdatasync",
            Stage::FetchRequest => "fetch.request",
            Stage::RaftProduceCommitted => "raft.produce_to_committed",
            Stage::RaftLogSync => "raft.log_sync",
            Stage::RaftBlockingSync => "raft.blocking_sync",
            Stage::ShardTimerLag => "shard.timer_lag",
        }
    }
}

/// One shard's histograms plus flush byte counts.
struct ShardStats {
    stages: Vec<Histogram<u64>>,
    flushes: u64,
    flush_bytes: u64,
    since: Instant,
}

impl ShardStats {
    fn new() -> ShardStats {
        let h = Histogram::new_with_bounds(1, RECORDED_US_MAX, 2)
            .expect("static histogram bounds are valid");
        ShardStats {
            stages: vec![h; STAGES.len()],
            flushes: 0,
            flush_bytes: 0,
            since: Instant::now(),
        }
    }
}

thread_local! {
    /// Owned by the shard thread it lives on.
    static STATS: RefCell<Option<ShardStats>> = const { RefCell::new(None) };
}

/// Turns the timers on for the whole process (before shards start).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The start of a timed step: `None` (no clock read) when timers are off.
pub fn start() -> Option<Instant> {
    enabled().then(Instant::now)
}

/// Records the time since `start` under `stage` (nothing when timers are off).
pub fn record_since(stage: Stage, start: Option<Instant>) {
    if let Some(t) = start {
        record(stage, t.elapsed());
    }
}

/// Records a measured duration under `stage`.
pub fn record(stage: Stage, d: Duration) {
    if !enabled() {
        return;
    }
    let us = (d.as_micros() as u64).clamp(1, RECORDED_US_MAX);
    with(|s| s.stages[stage as usize].saturating_record(us));
}

/// Records one completed flush: its write and sync time and the bytes it wrote.
pub fn record_flush(write: Duration, sync: Duration, bytes: u64) {
    if !enabled() {
        return;
    }
    record(Stage::FlushWrite, write);
    record(Stage::FlushSync, sync);
    with(|s| {
        s.flushes += 1;
        s.flush_bytes += bytes;
    });
}

fn with(f: impl FnOnce(&mut ShardStats)) {
    STATS.with(|cell| f(cell.borrow_mut().get_or_insert_with(ShardStats::new)));
}

/// This shard's figures since the last report, one line per stage that saw anything (after a
/// line saying which interval they cover), then resets them. Nothing when nothing happened.
pub fn report_and_reset(shard: ShardId) -> Vec<String> {
    let mut lines = Vec::new();
    with(|s| {
        let secs = s.since.elapsed().as_secs_f64();
        let end_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        lines.push(format!(
            "{shard} interval {secs:.1} s ending at unix_ms {end_unix_ms} (microsecond timers)"
        ));
        for (stage, h) in STAGES.iter().zip(&mut s.stages) {
            if h.is_empty() {
                continue;
            }
            lines.push(format!(
                "{shard} {:<26} n={:<8} p50={} p90={} p99={} p99.9={} max={}",
                stage.name(),
                h.len(),
                us(h.value_at_quantile(0.5)),
                us(h.value_at_quantile(0.9)),
                us(h.value_at_quantile(0.99)),
                us(h.value_at_quantile(0.999)),
                us(h.max()),
            ));
            h.reset();
        }
        if s.flushes > 0 {
            lines.push(format!(
                "{shard} flushes {:.0}/s, {:.0} KiB each on average, over {secs:.1} s",
                s.flushes as f64 / secs.max(1e-9),
                s.flush_bytes as f64 / s.flushes as f64 / 1024.0,
            ));
        }
        s.flushes = 0;
        s.flush_bytes = 0;
        s.since = Instant::now();
    });
    if lines.len() == 1 {
        lines.clear();
    }
    lines
}

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1}ms", v as f64 / 1000.0)
    } else {
        format!("{v}us")
    }
}

/// Logs this shard's figures every `interval` until `stopping` says so.
pub async fn report_every(shard: ShardId, interval: Duration, stopping: impl Fn() -> bool) {
    loop {
        sluice_shard::sleep(interval).await;
        if stopping() {
            break;
        }
        for line in report_and_reset(shard) {
            log::info!("stats {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_list_is_in_discriminant_order() {
        // `record` indexes the histograms by `stage as usize` and the report walks STAGES.
        for (i, s) in STAGES.iter().enumerate() {
            assert_eq!(*s as usize, i, "{s:?}");
        }
    }

    #[test]
    fn report_covers_recorded_stages_and_resets() {
        enable();
        record(Stage::ProduceAppend, Duration::from_micros(40));
        record(Stage::ProduceAppend, Duration::from_micros(60));
        record_flush(Duration::from_micros(300), Duration::from_micros(200), 4096);
        let lines = report_and_reset(ShardId(0));
        assert!(lines
            .iter()
            .any(|l| l.contains("produce.append ") && l.contains("n=2")));
        assert!(lines.iter().any(|l| l.contains("flush.fdatasync")));
        assert!(lines.iter().any(|l| l.contains("4 KiB each")));
        assert!(report_and_reset(ShardId(0)).is_empty());
    }
}
