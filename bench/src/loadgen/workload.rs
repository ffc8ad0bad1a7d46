//! Workload files (`bench/workloads/*.toml`) and the command-line overrides applied on top.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Which client drives the load: `client` for producers, `consumer_client` for consumers.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// librdkafka through the `rdkafka` crate: what most applications run.
    Rdkafka,
    /// The generator's own protocol client (producer: loadgen/native.rs, consumer:
    /// loadgen/native_consumer.rs): a fraction of librdkafka's CPU per record, so max-rate
    /// runs measure the broker, not the client.
    Native,
}

/// How record keys are chosen. Keys decide partitions (murmur2, as the Java client does), so
/// this is also the partition-load distribution.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeyDistribution {
    /// No key: librdkafka's sticky partitioner spreads batches over partitions.
    None,
    /// Keys drawn uniformly from `key_space`.
    Uniform,
    /// Keys drawn from a Zipf(`zipf_s`) distribution over `key_space`: a few hot keys (and so
    /// hot partitions) take most records, as with real customer or device ids.
    Skewed,
}

/// Which records a consumer may read (librdkafka's `isolation.level`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Only records of committed transactions, up to the last stable offset.
    ReadCommitted,
    /// Every record up to the high watermark, open and aborted transactions included.
    ReadUncommitted,
}

/// Where a record's send timestamp (its first 8 value bytes) comes from.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stamp {
    /// The clock when the producer is handed the record.
    Send,
    /// The time the rate schedule meant to send it (fixed-rate phases only; `send` at max
    /// rate). A record held back because its sender was blocked (a transaction commit, a
    /// full queue) then counts that wait in its latencies instead of hiding it.
    Schedule,
}

/// One benchmark workload. Every field has a default so a file states only what it is about.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    pub name: String,
    pub description: String,
    /// Topic name prefix; a run creates `<topic>-<run id>` so old data never pollutes the
    /// measurement (`--topic` on the command line uses an exact name instead).
    pub topic: String,
    pub partitions: i32,
    /// Producer client.
    pub client: Client,
    /// Consumer client. `native` assigns partitions statically (consumer i of a group reads
    /// the partitions p with p % consumers == i) and speaks no group protocol: the group
    /// coordinator is not exercised, and each "group" is simply an independent reader of
    /// every partition from offset 0.
    pub consumer_client: Client,
    pub producers: usize,
    /// Consumers in each consumer group.
    pub consumers: usize,
    /// Independent consumer groups; each reads every record.
    pub consumer_groups: usize,
    /// Size of each record value in bytes (the first 8 carry the send timestamp).
    pub record_bytes: usize,
    pub key_distribution: KeyDistribution,
    pub key_space: usize,
    pub zipf_s: f64,
    pub acks: String,
    pub compression: String,
    /// librdkafka `batch.size` (bytes per partition batch).
    pub batch_size: usize,
    pub linger_ms: u64,
    /// Total target rate in records/s across all producers; 0 means as fast as possible.
    pub rate: f64,
    /// Run several measured phases, one per rate (absolute records/s). Overrides `rate`.
    pub rates: Vec<f64>,
    /// Run one phase per fraction of a peak rate given with `--peak` (e.g. [0.5]).
    pub peak_fractions: Vec<f64>,
    pub warmup_s: u64,
    pub duration_s: u64,
    /// After the measured phases: keep producing this long with consumers paused, so the
    /// drain measured afterwards starts from a real backlog.
    pub backlog_s: u64,
    /// Bound on the final drain (consumers catching up after producers stop).
    pub drain_timeout_s: u64,
    /// Sender threads driving the producers; 0 = one per CPU the generator may use.
    pub sender_threads: usize,
    /// Topic configs for CreateTopics (e.g. retention.bytes, segment.bytes).
    pub topic_config: BTreeMap<String, String>,
    /// Extra librdkafka producer / consumer properties.
    pub producer_config: BTreeMap<String, String>,
    pub consumer_config: BTreeMap<String, String>,
    /// Transactional producing (client rdkafka): commit each producer's open transaction once
    /// it has been open this many ms. 0 = no time trigger.
    pub txn_commit_ms: u64,
    /// … or once it holds this many records. 0 = no count trigger. Either trigger set makes
    /// every producer transactional (its own `transactional.id`).
    pub txn_commit_records: u64,
    /// Consumers' isolation level; none = the client's default (librdkafka: read_committed;
    /// the native consumer reads uncommitted).
    pub isolation: Option<Isolation>,
    pub stamp: Stamp,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            name: "adhoc".into(),
            description: String::new(),
            topic: "sluice-bench".into(),
            partitions: 16,
            client: Client::Rdkafka,
            consumer_client: Client::Rdkafka,
            producers: 1,
            consumers: 1,
            consumer_groups: 1,
            record_bytes: 1024,
            key_distribution: KeyDistribution::None,
            key_space: 10_000,
            zipf_s: 1.1,
            acks: "all".into(),
            compression: "none".into(),
            batch_size: 131_072,
            linger_ms: 1,
            rate: 0.0,
            rates: Vec::new(),
            peak_fractions: Vec::new(),
            warmup_s: 5,
            duration_s: 30,
            backlog_s: 0,
            drain_timeout_s: 30,
            sender_threads: 0,
            topic_config: BTreeMap::new(),
            producer_config: BTreeMap::new(),
            consumer_config: BTreeMap::new(),
            txn_commit_ms: 0,
            txn_commit_records: 0,
            isolation: None,
            stamp: Stamp::Send,
        }
    }
}

/// Upper bounds that keep a typo from starting 10^6 threads or a week-long run.
const PRODUCERS_MAX: usize = 1000;
const CONSUMERS_MAX: usize = 256;
const RECORD_BYTES_MAX: usize = 8 << 20;
const DURATION_MAX_S: u64 = 24 * 3600;

impl Workload {
    pub fn load(path: &Path) -> Result<Workload, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading workload {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("workload {}: {e}", path.display()))
    }

    /// Whether producers run transactions (either commit trigger set).
    pub fn transactional(&self) -> bool {
        self.txn_commit_ms > 0 || self.txn_commit_records > 0
    }

    /// When each transactional producer commits, for logs and reports ("100 ms or 1000
    /// records"); None without transactions.
    pub fn txn_schedule(&self) -> Option<String> {
        let mut by = Vec::new();
        if self.txn_commit_ms > 0 {
            by.push(format!("{} ms", self.txn_commit_ms));
        }
        if self.txn_commit_records > 0 {
            by.push(format!("{} records", self.txn_commit_records));
        }
        (!by.is_empty()).then(|| by.join(" or "))
    }

    /// The target rate of each measured phase (0 = as fast as possible).
    pub fn phase_rates(&self, peak: Option<f64>) -> Result<Vec<f64>, String> {
        if !self.peak_fractions.is_empty() {
            let peak = peak.ok_or_else(|| {
                format!(
                    "workload {} sets peak_fractions: pass --peak RECORDS_PER_S \
                     (the max-rate run's produce records/s)",
                    self.name
                )
            })?;
            return Ok(self.peak_fractions.iter().map(|f| f * peak).collect());
        }
        if !self.rates.is_empty() {
            return Ok(self.rates.clone());
        }
        Ok(vec![self.rate])
    }

    pub fn validate(&self) -> Result<(), String> {
        let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
        check(
            self.partitions >= 1 && self.partitions <= 10_000,
            "partitions: 1..=10000",
        )?;
        check(
            (1..=PRODUCERS_MAX).contains(&self.producers),
            "producers: 1..=1000",
        )?;
        check(
            self.consumers * self.consumer_groups <= CONSUMERS_MAX,
            "consumers × consumer_groups ≤ 256",
        )?;
        check(
            (16..=RECORD_BYTES_MAX).contains(&self.record_bytes),
            "record_bytes: 16..=8MiB (the first 8 bytes carry the timestamp)",
        )?;
        check(
            (1..=10_000_000).contains(&self.key_space),
            "key_space: 1..=10000000",
        )?;
        check(self.zipf_s > 0.0 && self.zipf_s < 10.0, "zipf_s: (0, 10)")?;
        check(
            self.duration_s >= 1 && self.duration_s <= DURATION_MAX_S,
            "duration_s: 1..=86400",
        )?;
        check(self.warmup_s <= DURATION_MAX_S, "warmup_s ≤ 86400")?;
        check(self.backlog_s <= DURATION_MAX_S, "backlog_s ≤ 86400")?;
        check(self.drain_timeout_s <= 3600, "drain_timeout_s ≤ 3600")?;
        check(self.sender_threads <= 64, "sender_threads ≤ 64")?;
        check(
            ["all", "-1", "0", "1"].contains(&self.acks.as_str()),
            "acks: all, -1, 0 or 1",
        )?;
        check(
            ["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.compression.as_str()),
            "compression: none, gzip, snappy, lz4, zstd",
        )?;
        check(
            self.client == Client::Rdkafka || self.compression == "none",
            "client native sends uncompressed batches only: use compression none or client rdkafka",
        )?;
        check(
            self.client == Client::Rdkafka || self.producer_config.is_empty(),
            "producer_config is for librdkafka: client native takes none",
        )?;
        check(
            self.consumer_client == Client::Rdkafka || self.consumer_config.is_empty(),
            "consumer_config is for librdkafka: consumer_client native takes none",
        )?;
        check(
            !self.transactional() || self.client == Client::Rdkafka,
            "txn_commit_ms / txn_commit_records need client rdkafka (the native producer has no \
             transactions)",
        )?;
        check(
            !self.transactional() || ["all", "-1"].contains(&self.acks.as_str()),
            "transactions need acks all (librdkafka's idempotent producer refuses others)",
        )?;
        check(
            self.txn_commit_ms <= 60_000,
            "txn_commit_ms ≤ 60000 (well inside the producers' transaction.timeout.ms, 120 s, \
             past which the broker aborts an open transaction)",
        )?;
        check(
            self.consumer_client == Client::Rdkafka
                || self.isolation != Some(Isolation::ReadCommitted),
            "isolation read_committed needs consumer_client rdkafka (the native consumer reads \
             uncommitted and does not filter aborted transactions)",
        )?;
        check(
            self.batch_size >= 1024 && self.batch_size <= 16 << 20,
            "batch_size: 1KiB..=16MiB",
        )?;
        check(
            self.rate >= 0.0 && self.rates.iter().all(|r| *r >= 0.0),
            "rates must be ≥ 0",
        )?;
        check(
            self.peak_fractions.iter().all(|f| *f > 0.0 && *f <= 2.0),
            "peak_fractions: (0, 2]",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_workloads_load_and_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("bench/workloads") {
            let p = e.expect("dir entry").path();
            if p.extension().is_some_and(|x| x == "toml") {
                let w = Workload::load(&p).unwrap_or_else(|e| panic!("{e}"));
                w.validate()
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n > 0);
    }

    #[test]
    fn transactions_need_librdkafka_producers_and_acks_all() {
        let txn = Workload {
            txn_commit_ms: 100,
            ..Workload::default()
        };
        assert!(txn.transactional());
        assert_eq!(txn.txn_schedule().as_deref(), Some("100 ms"));
        txn.validate().expect("rdkafka, acks all");
        let native = Workload {
            client: Client::Native,
            ..txn.clone()
        };
        assert!(native.validate().is_err());
        let acks1 = Workload {
            acks: "1".into(),
            ..txn.clone()
        };
        assert!(acks1.validate().is_err());
        let both = Workload {
            txn_commit_records: 1000,
            ..txn
        };
        assert_eq!(
            both.txn_schedule().as_deref(),
            Some("100 ms or 1000 records")
        );
        assert!(Workload::default().txn_schedule().is_none());
    }

    #[test]
    fn read_committed_needs_the_librdkafka_consumer() {
        let w = Workload {
            consumer_client: Client::Native,
            isolation: Some(Isolation::ReadCommitted),
            ..Workload::default()
        };
        assert!(w.validate().is_err());
        let w = Workload {
            isolation: Some(Isolation::ReadUncommitted),
            ..w
        };
        w.validate().expect("the native consumer reads uncommitted");
    }
}
