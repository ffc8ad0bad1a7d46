//! The counters one shard keeps: a thread-local each shard's thread records into without
//! sharing anything, read back into a [`ShardSnapshot`] when a scrape asks.
//!
//! Recording is a `RefCell` borrow and a few additions; nothing here reads a clock (callers
//! pass durations they measured anyway).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use crate::histogram::Histogram;
use crate::snapshot::{ApiSample, ErrorSample, ShardSnapshot};

/// API keys counted (Kafka's keys are below 100); a request with a larger key is never
/// decoded, so never recorded.
pub const API_KEYS_MAX: usize = 128;

/// A partition's traffic counters, by (topic id, partition).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionCounters {
    pub produced_records: u64,
    pub produced_bytes: u64,
    pub fetched_records: u64,
    pub fetched_bytes: u64,
}

#[derive(Default)]
struct Api {
    requests: u64,
    latency: Histogram,
}

struct Counters {
    apis: Vec<Api>,
    errors: HashMap<(i16, i16), u64>,
    partitions: HashMap<([u8; 16], i32), PartitionCounters>,
    flush_write: Histogram,
    flush_sync: Histogram,
    flushed_bytes: u64,
    timer_lag: Histogram,
    connections_open: u64,
    connections_accepted: u64,
    cleaner_pass: Histogram,
    cleaner_records_removed: u64,
    cleaner_bytes_reclaimed: u64,
    cleaner_segments_merged: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            apis: (0..API_KEYS_MAX).map(|_| Api::default()).collect(),
            errors: HashMap::new(),
            partitions: HashMap::new(),
            flush_write: Histogram::default(),
            flush_sync: Histogram::default(),
            flushed_bytes: 0,
            timer_lag: Histogram::default(),
            connections_open: 0,
            connections_accepted: 0,
            cleaner_pass: Histogram::default(),
            cleaner_records_removed: 0,
            cleaner_bytes_reclaimed: 0,
            cleaner_segments_merged: 0,
        }
    }
}

thread_local! {
    static SHARD: RefCell<Counters> = RefCell::new(Counters::default());
}

fn with<R>(f: impl FnOnce(&mut Counters) -> R) -> R {
    SHARD.with(|c| f(&mut c.borrow_mut()))
}

/// One request of `api` answered after `took` (decoded → response written).
pub fn request(api: i16, took: Duration) {
    let Ok(i) = usize::try_from(api) else { return };
    with(|c| {
        if let Some(a) = c.apis.get_mut(i) {
            a.requests += 1;
            a.latency.record(took);
        }
    });
}

/// An error code (not NONE) in a response of `api`: top-level, or per topic/partition.
pub fn error(api: i16, code: i16) {
    if code == 0 {
        return;
    }
    with(|c| *c.errors.entry((api, code)).or_default() += 1);
}

/// Records appended to a partition this shard owns.
pub fn produced(topic_id: [u8; 16], partition: i32, records: u64, bytes: u64) {
    with(|c| {
        let p = c.partitions.entry((topic_id, partition)).or_default();
        p.produced_records += records;
        p.produced_bytes += bytes;
    });
}

/// Records read from a partition this shard owns, for a client or a follower.
pub fn fetched(topic_id: [u8; 16], partition: i32, records: u64, bytes: u64) {
    with(|c| {
        let p = c.partitions.entry((topic_id, partition)).or_default();
        p.fetched_records += records;
        p.fetched_bytes += bytes;
    });
}

/// One flush of the shard's logs: its writes, its syncs, and the bytes it wrote.
pub fn flush(write: Duration, sync: Duration, bytes: u64) {
    with(|c| {
        c.flush_write.record(write);
        c.flush_sync.record(sync);
        c.flushed_bytes += bytes;
    });
}

/// One pass of the shard's log cleaner over a log: how long it took, the records it
/// removed, the bytes the log shrank by and the segments merged into others.
pub fn cleaner_pass(
    took: Duration,
    records_removed: u64,
    bytes_reclaimed: u64,
    segments_merged: u64,
) {
    with(|c| {
        c.cleaner_pass.record(took);
        c.cleaner_records_removed += records_removed;
        c.cleaner_bytes_reclaimed += bytes_reclaimed;
        c.cleaner_segments_merged += segments_merged;
    });
}

/// How late a timer of the shard's executor fired.
pub fn timer_lag(late: Duration) {
    with(|c| c.timer_lag.record(late));
}

pub fn connection_opened() {
    with(|c| {
        c.connections_open += 1;
        c.connections_accepted += 1;
    });
}

pub fn connection_closed() {
    with(|c| c.connections_open = c.connections_open.saturating_sub(1));
}

/// Fills `snap`'s counters from this thread's, and gives `partition` each partition's
/// counters; partitions for which `owned` says false are forgotten (deleted, or moved to
/// another shard).
pub fn fill(
    snap: &mut ShardSnapshot,
    api_name: impl Fn(i16) -> String,
    error_name: impl Fn(i16) -> String,
    mut owned: impl FnMut(&[u8; 16], i32) -> bool,
) -> HashMap<([u8; 16], i32), PartitionCounters> {
    with(|c| {
        snap.apis = c
            .apis
            .iter()
            .enumerate()
            .filter(|(_, a)| a.requests > 0)
            .map(|(key, a)| ApiSample {
                api: api_name(key as i16),
                requests: a.requests,
                latency: a.latency.clone(),
            })
            .collect();
        snap.errors = c
            .errors
            .iter()
            .map(|(&(api, code), &count)| ErrorSample {
                api: api_name(api),
                error: error_name(code),
                count,
            })
            .collect();
        snap.flush_write = c.flush_write.clone();
        snap.flush_sync = c.flush_sync.clone();
        snap.flushed_bytes = c.flushed_bytes;
        snap.timer_lag = c.timer_lag.clone();
        snap.connections = c.connections_open;
        snap.connections_accepted = c.connections_accepted;
        snap.cleaner_pass = c.cleaner_pass.clone();
        snap.cleaner_records_removed = c.cleaner_records_removed;
        snap.cleaner_bytes_reclaimed = c.cleaner_bytes_reclaimed;
        snap.cleaner_segments_merged = c.cleaner_segments_merged;
        c.partitions.retain(|(id, p), _| owned(id, *p));
        c.partitions.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_reads_back_what_it_recorded_and_forgets_partitions_it_gave_up() {
        std::thread::spawn(|| {
            request(0, Duration::from_micros(100));
            request(0, Duration::from_micros(300));
            request(3, Duration::from_micros(50));
            error(0, 6);
            error(0, 6);
            error(0, 0);
            produced([1; 16], 0, 10, 1000);
            produced([1; 16], 1, 1, 100);
            fetched([1; 16], 0, 4, 400);
            connection_opened();
            connection_opened();
            connection_closed();
            let mut snap = ShardSnapshot::default();
            let parts = fill(
                &mut snap,
                |k| if k == 0 { "Produce" } else { "Metadata" }.to_string(),
                |c| format!("E{c}"),
                |_, p| p == 0,
            );
            assert_eq!(snap.apis.len(), 2);
            assert_eq!(snap.apis[0].requests, 2);
            assert_eq!(snap.apis[0].latency.count(), 2);
            assert_eq!(snap.errors.len(), 1);
            assert_eq!(snap.errors[0].count, 2);
            assert_eq!(snap.connections, 1);
            assert_eq!(snap.connections_accepted, 2);
            assert_eq!(parts.len(), 1);
            let p0 = parts[&([1; 16], 0)];
            assert_eq!((p0.produced_records, p0.fetched_bytes), (10, 400));
        })
        .join()
        .unwrap();
    }
}
