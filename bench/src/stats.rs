//! Latency summaries from raw samples (nanoseconds). Runs are seconds long, so a sorted
//! `Vec` of every sample is exact and small enough; no histogram bucketing error.

/// Percentiles of one latency phase, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

/// Nearest-rank percentile of sorted samples (`q` in 0..=1).
fn rank(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

impl Latency {
    pub fn from_samples(mut samples: Vec<u64>) -> Latency {
        samples.sort_unstable();
        let count = samples.len();
        let mean_ns = if count == 0 {
            0.0
        } else {
            samples.iter().map(|&s| s as f64).sum::<f64>() / count as f64
        };
        Latency {
            count,
            mean_ns,
            p50_ns: rank(&samples, 0.50),
            p99_ns: rank(&samples, 0.99),
            p999_ns: rank(&samples, 0.999),
            max_ns: samples.last().copied().unwrap_or(0),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "mean_us": self.mean_ns / 1e3,
            "p50_us": self.p50_ns as f64 / 1e3,
            "p99_us": self.p99_ns as f64 / 1e3,
            "p999_us": self.p999_ns as f64 / 1e3,
            "max_us": self.max_ns as f64 / 1e3,
        })
    }
}

/// Milliseconds with three decimals, for tables.
pub fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let l = Latency::from_samples((1..=1000).rev().collect());
        assert_eq!(
            (l.p50_ns, l.p99_ns, l.p999_ns, l.max_ns, l.count),
            (500, 990, 999, 1000, 1000)
        );
        assert_eq!(Latency::from_samples(vec![]).p99_ns, 0);
        assert_eq!(Latency::from_samples(vec![7]).p999_ns, 7);
    }
}
