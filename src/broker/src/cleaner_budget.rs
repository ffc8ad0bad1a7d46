//! The log cleaner's IO budget on one shard (Kafka's `log.cleaner.io.max.bytes.per.second`,
//! split evenly between the shards' cleaners): a token bucket over the bytes a cleaning
//! pass reads and writes, so cleaning a large compacted log cannot take the disk from
//! produce and fetch.
//!
//! The bucket holds at most [`BURST_S`] of its rate; a pass's IO is let through and charged,
//! and when the bucket is in debt the pass sleeps until the debt is paid. Over any span the
//! bytes moved exceed the rate's allowance by at most the burst plus one read (a batch, at
//! most `BATCH_BYTES_MAX`, or a segment's first-change copy of one batch).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// Seconds of its rate the bucket holds.
pub const BURST_S: f64 = 0.1;

/// One shard's cleaner budget.
pub struct CleanerIoBudget {
    bytes_per_s: f64,
    /// Tokens (bytes; negative: debt) as of the instant.
    state: Cell<(f64, Instant)>,
}

impl CleanerIoBudget {
    /// A budget of `bytes_per_s` (> 0), full.
    pub fn new(bytes_per_s: f64, now: Instant) -> CleanerIoBudget {
        assert!(bytes_per_s > 0.0, "a cleaner budget needs a positive rate");
        CleanerIoBudget {
            bytes_per_s,
            state: Cell::new((bytes_per_s * BURST_S, now)),
        }
    }

    /// Charges `bytes` at `now`; returns how long to wait before more IO.
    pub fn charge(&self, bytes: u64, now: Instant) -> Duration {
        let (tokens, at) = self.state.get();
        let elapsed = now.saturating_duration_since(at).as_secs_f64();
        let cap = self.bytes_per_s * BURST_S;
        let tokens = (tokens + elapsed * self.bytes_per_s).min(cap) - bytes as f64;
        self.state.set((tokens, now));
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.bytes_per_s)
        }
    }
}

impl sluice_storage::log::IoBudget for CleanerIoBudget {
    fn spend(&self, bytes: u64) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        let wait = self.charge(bytes, Instant::now());
        Box::pin(async move {
            if !wait.is_zero() {
                sluice_shard::sleep(wait).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_its_rate_through_and_makes_debt_wait() {
        let t0 = Instant::now();
        let b = CleanerIoBudget::new(1_000_000.0, t0);
        // The burst: 100 KB at once.
        assert_eq!(b.charge(100_000, t0), Duration::ZERO);
        // 50 KB more: 50 ms of debt.
        let wait = b.charge(50_000, t0);
        assert!((wait.as_secs_f64() - 0.05).abs() < 1e-9, "{wait:?}");
        // After the wait the debt is paid, and what follows pays at the rate.
        let t1 = t0 + wait;
        assert_eq!(b.charge(0, t1), Duration::ZERO);
        let t2 = t1 + Duration::from_millis(10);
        assert_eq!(b.charge(10_000, t2), Duration::ZERO);
        assert!(b.charge(1, t2) > Duration::ZERO, "nothing saved up");
        // A long idle spell refills only the burst.
        let t3 = t2 + Duration::from_secs(60);
        assert_eq!(b.charge(100_000, t3), Duration::ZERO);
        assert!(b.charge(1_000, t3) > Duration::ZERO);
    }
}
