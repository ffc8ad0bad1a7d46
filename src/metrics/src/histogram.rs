//! A log-linear latency histogram with fixed bucket bounds, cheap to record into and to
//! merge, exposed as a Prometheus histogram in seconds.
//!
//! Bounds are 2^k and 1.5·2^k microseconds for k = 3..=24 (8 µs to about 25 s): two linear
//! steps per power of two, so a bucket's width is at most half of its lower bound, with
//! 44 bounds in all. Every histogram has the same bounds, so merging two adds their counts.

use rkyv::{Archive, Deserialize, Serialize};

/// The smallest power of two that is a bound (2^3 µs = 8 µs).
const FIRST_POWER: u32 = 3;
/// The largest power of two that is a bound (2^24 µs ≈ 16.8 s).
const LAST_POWER: u32 = 24;
/// Finite bounds: two per power of two.
pub const BOUNDS: usize = 2 * (LAST_POWER - FIRST_POWER + 1) as usize;

/// Upper bound of finite bucket `i`, in microseconds.
pub fn bound_us(i: usize) -> u64 {
    assert!(i < BOUNDS, "bucket {i} beyond the {BOUNDS} bounds");
    let power = 1u64 << (FIRST_POWER as usize + i / 2);
    if i % 2 == 0 {
        power
    } else {
        power + power / 2
    }
}

/// Counts per bucket (the last one counts everything above the largest bound), their sum
/// and how many.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// `BOUNDS + 1` counts, not cumulative.
    counts: Vec<u64>,
    sum_us: u64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BOUNDS + 1],
            sum_us: 0,
            count: 0,
        }
    }
}

impl Histogram {
    /// The bucket a value falls in: the first whose bound is ≥ it.
    fn bucket_of(us: u64) -> usize {
        if us <= bound_us(0) {
            return 0;
        }
        // The power of two at or above `us`, then which half of the step below it.
        let power = 64 - (us - 1).leading_zeros(); // 2^power >= us > 2^(power-1)
        if power > LAST_POWER {
            // Above 2^24: the 1.5·2^24 bucket, else the overflow bucket.
            return if us <= bound_us(BOUNDS - 1) {
                BOUNDS - 1
            } else {
                BOUNDS
            };
        }
        let below = 1u64 << (power - 1);
        let index_of_power = 2 * (power - FIRST_POWER) as usize;
        // Bounds around: 2^(power-1) < 1.5·2^(power-1) < 2^power.
        if us <= below + below / 2 {
            index_of_power - 1
        } else {
            index_of_power
        }
    }

    pub fn record_us(&mut self, us: u64) {
        self.counts[Self::bucket_of(us)] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
    }

    pub fn record(&mut self, d: std::time::Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Adds `other`'s counts to this one's.
    pub fn merge(&mut self, other: &Histogram) {
        // Snapshots come from this process's own shards, so they always have the full
        // set of buckets; a mismatch would be a bug, not input.
        assert_eq!(
            self.counts.len(),
            other.counts.len(),
            "histogram bucket count"
        );
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.count += other.count;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }

    /// `(upper bound in seconds, count)` per bucket, not cumulative; the last bound is
    /// `f64::MAX`, which the encoder writes as `+Inf`.
    pub fn buckets_seconds(&self) -> Vec<(f64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let upper = if i < BOUNDS {
                    bound_us(i) as f64 / 1e6
                } else {
                    f64::MAX
                };
                (upper, c)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_rise_by_half_steps() {
        let bounds: Vec<u64> = (0..BOUNDS).map(bound_us).collect();
        assert_eq!(&bounds[..6], &[8, 12, 16, 24, 32, 48]);
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(bounds[BOUNDS - 2], 1 << 24);
    }

    #[test]
    fn each_value_lands_in_the_first_bucket_whose_bound_holds_it() {
        for us in (0..2000).chain([1 << 24, (1 << 24) + 1, 25_165_824, 25_165_825, u64::MAX]) {
            let want = (0..BOUNDS).find(|&i| bound_us(i) >= us).unwrap_or(BOUNDS);
            assert_eq!(Histogram::bucket_of(us), want, "{us} µs");
        }
        for k in FIRST_POWER..=LAST_POWER {
            for us in [
                (1u64 << k) - 1,
                1 << k,
                (1 << k) + 1,
                3 << (k - 1),
                (3 << (k - 1)) + 1,
            ] {
                let want = (0..BOUNDS).find(|&i| bound_us(i) >= us).unwrap_or(BOUNDS);
                assert_eq!(Histogram::bucket_of(us), want, "{us} µs");
            }
        }
    }

    #[test]
    fn merging_adds_counts_and_sums() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record_us(10);
        b.record_us(10);
        b.record_us(5_000_000_000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.counts[Histogram::bucket_of(10)], 2);
        assert_eq!(a.counts[BOUNDS], 1);
        assert!((a.sum_seconds() - 5000.00002).abs() < 1e-6);
    }
}
