//! HDR histograms of latencies in microseconds, shared between a recording thread (a delivery
//! callback or a consumer) and the once-a-second collector.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

pub type Hist = Histogram<u64>;

/// 1 µs .. 1 h at 3 significant digits: ~0.1 % resolution over the whole range.
pub fn new_hist() -> Hist {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Pcts {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub p9999_ms: f64,
    pub max_ms: f64,
}

impl Pcts {
    pub fn of(h: &Hist) -> Pcts {
        if h.is_empty() {
            return Pcts::default();
        }
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
        Pcts {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            p9999_ms: q(0.9999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

pub struct Hists {
    /// Everything since the collector last looked: the per-second time series.
    pub interval: Hist,
    /// Records sent inside the current measured phase.
    pub measured: Hist,
}

/// One recording side (a producer's delivery callback or one consumer): counters read without
/// a lock, histograms behind a mutex the collector takes once a second.
pub struct Side {
    pub hists: Mutex<Hists>,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
}

impl Side {
    pub fn new() -> Side {
        Side {
            hists: Mutex::new(Hists {
                interval: new_hist(),
                measured: new_hist(),
            }),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// Counts one record and records its latency; `measured` says whether it was sent inside
    /// a measured phase.
    pub fn record(&self, bytes: usize, latency_us: u64, measured: bool) {
        self.records.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let mut h = self.hists.lock().unwrap_or_else(|p| p.into_inner());
        let v = latency_us.max(1);
        h.interval.saturating_record(v);
        if measured {
            h.measured.saturating_record(v);
        }
    }

    /// Counts records without a latency (the native consumer's compressed batches, whose
    /// timestamps it does not decompress to read).
    pub fn count(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Adds this side's interval histogram into `into` and clears it.
    pub fn take_interval(&self, into: &mut Hist) {
        let mut h = self.hists.lock().unwrap_or_else(|p| p.into_inner());
        let _ = into.add(&h.interval);
        h.interval.reset();
    }

    pub fn take_measured(&self, into: &mut Hist) {
        let mut h = self.hists.lock().unwrap_or_else(|p| p.into_inner());
        let _ = into.add(&h.measured);
        h.measured.reset();
    }
}
