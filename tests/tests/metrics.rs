//! The admin API (`--admin-listen`) of a real broker: `/metrics` read and parsed by the
//! Prometheus project's own OpenMetrics parser (tests/python/metrics_check.py, which
//! refuses a malformed document or histogram) after real clients produced, fetched and
//! committed, with the counters compared to what they did; the status endpoints;
//! `--aggregate-metrics`; and a start refused when the asked-for admin address is taken.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use sluice_tests::kafka::{
    admin, base_timestamp, consumer, create_topics, gen_records, produce_all, producer,
    wait_for_topic, Rec,
};
use sluice_tests::{free_port, sluice_bin, workspace_root, Broker, BrokerConfig, TEST_SHARDS};

/// The Grafana dashboard in the repository.
const DASHBOARD: &str = "src/metrics/grafana/sluice.json";

/// The `sluice_…` series names in a dashboard's queries.
fn plotted_series(dashboard: &str) -> BTreeSet<String> {
    let doc: Value = serde_json::from_str(dashboard).expect("dashboard is JSON");
    let mut out = BTreeSet::new();
    for panel in doc["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for (at, _) in expr.match_indices("sluice_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                out.insert(name);
            }
        }
    }
    out
}

const TOPIC: &str = "metered";
const PARTITIONS: i32 = 4;

/// One scrape: the status codes and every sample, as metrics_check.py prints them.
struct Scrape {
    doc: Value,
}

/// metrics_check.py with `arg`: its JSON output.
fn metrics_check(arg: &str) -> Value {
    let root = workspace_root();
    let python = root.join("tests/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-test-deps.sh (creates the venv with \
         prometheus-client)",
        python.display()
    );
    let out = Command::new(&python)
        .arg(root.join("tests/python/metrics_check.py"))
        .arg(arg)
        .output()
        .expect("run metrics_check.py");
    assert!(
        out.status.success(),
        "metrics_check.py {arg}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("metrics_check.py prints JSON")
}

impl Scrape {
    fn of(broker: &Broker) -> Scrape {
        Scrape {
            doc: metrics_check(&broker.admin_url().expect("admin API asked for")),
        }
    }

    fn status(&self, what: &str) -> i64 {
        self.doc[what].as_i64().unwrap_or(-1)
    }

    /// Samples named `name` whose labels include every `(key, value)` of `with`.
    fn samples(&self, name: &str, with: &[(&str, &str)]) -> Vec<(BTreeMap<String, String>, f64)> {
        self.doc["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .filter(|s| s["name"] == name)
            .map(|s| {
                let labels: BTreeMap<String, String> = s["labels"]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                (labels, s["value"].as_f64().expect("numeric value"))
            })
            .filter(|(labels, _)| {
                with.iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples(name, with).iter().map(|(_, v)| v).sum()
    }

    /// The one sample named `name` with these labels.
    fn one(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        let s = self.samples(name, with);
        assert_eq!(s.len(), 1, "{name} {with:?}: {s:?}");
        s[0].1
    }
}

fn sluice_ok(broker: &Broker, args: &[&str]) -> String {
    let out = Command::new(sluice_bin())
        .args(args)
        .env("SLUICE_BROKERS", broker.bootstrap())
        .stdin(Stdio::null())
        .output()
        .expect("run sluice");
    assert!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn with_admin(extra: &[&str]) -> Broker {
    Broker::start_with(BrokerConfig {
        admin_port: Some(free_port()),
        extra_args: extra.iter().map(|a| a.to_string()).collect(),
        ..BrokerConfig::default()
    })
}

/// Produces `per_partition[p]` records to each partition of [`TOPIC`] with librdkafka.
async fn produce(broker: &Broker, per_partition: &[usize], seed: u64) {
    let total = per_partition.iter().sum();
    let mut recs =
        gen_records(&mut StdRng::seed_from_u64(seed), total, base_timestamp()).into_iter();
    let mut assigned: Vec<(i32, Rec)> = Vec::new();
    for (p, &n) in per_partition.iter().enumerate() {
        assigned.extend(recs.by_ref().take(n).map(|r| (p as i32, r)));
    }
    produce_all(
        &producer(&broker.bootstrap(), &[("acks", "all")]),
        TOPIC,
        &assigned,
    )
    .await;
}

#[test]
fn the_parser_refuses_malformed_documents() {
    let refused = metrics_check("--self-test");
    assert_eq!(refused["refused"].as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn metrics_count_what_clients_did() {
    let broker = with_admin(&[]);
    let b = broker.bootstrap();
    create_topics(&admin(&b), &[(TOPIC, PARTITIONS, &[])]).await;
    wait_for_topic(&consumer(&b), TOPIC, PARTITIONS as usize).await;
    produce(&broker, &[250, 250, 250, 250], 1).await;
    // A group reads everything and commits it, then partition 0 gets 40 more: its lag.
    let read = sluice_ok(
        &broker,
        &[
            "topic",
            "consume",
            TOPIC,
            "-g",
            "metered-group",
            "-e",
            "--format",
            "%p\n",
        ],
    );
    assert_eq!(read.lines().count(), 1000);
    produce(&broker, &[40, 0, 0, 0], 2).await;
    // A request that fails: Metadata for a topic that does not exist.
    let missing = Command::new(sluice_bin())
        .args(["topic", "describe", "no-such-topic"])
        .env("SLUICE_BROKERS", &b)
        .output()
        .expect("run sluice");
    assert!(!missing.status.success());

    let m = Scrape::of(&broker);
    assert_eq!(m.status("live"), 200);
    assert_eq!(m.status("ready"), 200);
    assert_eq!(m.status("missing"), 404);
    assert!(m.doc["content_type"]
        .as_str()
        .is_some_and(|c| c.starts_with("application/openmetrics-text")));

    // Per partition: what was produced, where the high watermark is, and the lag.
    let topic = [("topic", TOPIC)];
    assert_eq!(m.sum("sluice_produced_records_total", &topic), 1040.0);
    for (p, want) in [(0, 290.0), (1, 250.0), (2, 250.0), (3, 250.0)] {
        let p = p.to_string();
        let at = [("topic", TOPIC), ("partition", p.as_str())];
        assert_eq!(m.one("sluice_produced_records_total", &at), want, "{at:?}");
        assert_eq!(
            m.one("sluice_partition_high_watermark", &at),
            want,
            "{at:?}"
        );
        assert_eq!(
            m.one("sluice_partition_log_end_offset", &at),
            want,
            "{at:?}"
        );
        assert_eq!(
            m.one("sluice_partition_log_start_offset", &at),
            0.0,
            "{at:?}"
        );
        assert!(m.one("sluice_partition_size_bytes", &at) > 0.0, "{at:?}");
        let group = [
            ("group", "metered-group"),
            ("topic", TOPIC),
            ("partition", p.as_str()),
        ];
        let lag = if p == "0" { 40.0 } else { 0.0 };
        assert_eq!(m.one("sluice_consumer_group_lag", &group), lag, "{group:?}");
    }
    assert!(m.sum("sluice_produced_bytes_total", &topic) > 1040.0 * 10.0);
    assert_eq!(m.sum("sluice_fetched_records_total", &topic), 1000.0);

    // Requests, errors and latency by API.
    let produce_requests = m.sum("sluice_requests_total", &[("api", "Produce")]);
    assert!(produce_requests >= 1.0);
    assert_eq!(
        m.one(
            "sluice_request_latency_seconds_count",
            &[("api", "Produce")]
        ),
        produce_requests
    );
    assert!(
        m.sum(
            "sluice_request_errors_total",
            &[("api", "Metadata"), ("error", "UNKNOWN_TOPIC_OR_PARTITION")]
        ) >= 1.0
    );
    assert!(m.sum("sluice_request_errors_total", &[("error", "NONE")]) == 0.0);
    assert!(
        m.one(
            "sluice_consumer_group_members",
            &[("group", "metered-group")]
        ) == 0.0
    );
    assert_eq!(m.sum("sluice_consumer_groups", &[("state", "Empty")]), 1.0);

    // Every shard reports its own series.
    let shards: BTreeSet<String> = m
        .samples("sluice_executor_tasks_total", &[])
        .into_iter()
        .map(|(l, _)| l["shard"].clone())
        .collect();
    let want: BTreeSet<String> = (0..TEST_SHARDS).map(|s| s.to_string()).collect();
    assert_eq!(shards, want);
    assert_eq!(m.one("sluice_shards", &[]), f64::from(TEST_SHARDS));

    // The produced records went to disk through io_uring: direct writes and their bytes,
    // and segment files opened.
    let direct_writes = [("op", "write"), ("mode", "direct")];
    assert!(m.sum("sluice_io_operations_total", &direct_writes) > 0.0);
    assert!(m.sum("sluice_io_bytes_total", &direct_writes) > 0.0);
    assert!(m.sum("sluice_io_files_opened_total", &[]) > 0.0);

    // Every series the Grafana dashboard plots is in the document.
    let dashboard = std::fs::read_to_string(workspace_root().join(DASHBOARD)).expect(DASHBOARD);
    let names: BTreeSet<&str> = m.doc["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    let plotted = plotted_series(&dashboard);
    assert!(plotted.len() >= 15, "{plotted:?}");
    for name in &plotted {
        assert!(
            names.contains(name.as_str()),
            "{DASHBOARD} plots {name}: not served"
        );
    }
    assert!(m.sum("sluice_flush_sync_seconds_count", &[]) >= 1.0);
    assert!(m.sum("sluice_connections_accepted_total", &[]) >= 3.0);
}

#[tokio::test]
async fn aggregate_metrics_sum_partitions_per_topic() {
    let broker = with_admin(&["--aggregate-metrics"]);
    let b = broker.bootstrap();
    create_topics(&admin(&b), &[(TOPIC, PARTITIONS, &[])]).await;
    wait_for_topic(&consumer(&b), TOPIC, PARTITIONS as usize).await;
    produce(&broker, &[5, 6, 7, 8], 3).await;
    let m = Scrape::of(&broker);
    assert_eq!(
        m.one("sluice_produced_records_total", &[("topic", TOPIC)]),
        26.0
    );
    let with_partition = m.doc["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter(|s| s["labels"].get("partition").is_some())
        .count();
    assert_eq!(with_partition, 0, "no per-partition series");
}

/// The log cleaner's passes show in `/metrics`: a compacted topic written over and over
/// under a few keys is cleaned, and the records it removed and the small cleaned segments
/// it merged are counted.
#[tokio::test]
async fn the_log_cleaner_counts_what_it_removed() {
    // Under an IO budget (ample: the pacing path runs, no test waits on it).
    let broker = with_admin(&[
        "--log-cleaner-interval-ms",
        "100",
        "--log-cleaner-io-max-bytes-per-second",
        "200000000",
    ]);
    let b = broker.bootstrap();
    let configs = [
        ("cleanup.policy", "compact"),
        ("segment.bytes", "4096"),
        ("min.cleanable.dirty.ratio", "0.01"),
    ];
    create_topics(&admin(&b), &[("cleaned", 1, &configs)]).await;
    wait_for_topic(&consumer(&b), "cleaned", 1).await;
    let recs: Vec<(i32, Rec)> = (0..400)
        .map(|i| {
            let r = Rec {
                key: Some(format!("key-{}", i % 4).into_bytes()),
                value: Some(vec![b'v'; 100]),
                headers: Vec::new(),
                timestamp: base_timestamp() + i,
            };
            (0, r)
        })
        .collect();
    produce_all(&producer(&b, &[("batch.size", "2048")]), "cleaned", &recs).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let m = Scrape::of(&broker);
        let removed = m.sum("sluice_log_cleaner_records_removed_total", &[]);
        let merged = m.sum("sluice_log_cleaner_segments_merged_total", &[]);
        if removed > 0.0 && merged > 0.0 {
            assert!(m.sum("sluice_log_cleaner_bytes_reclaimed_total", &[]) > 0.0);
            assert!(m.sum("sluice_log_cleaner_pass_seconds_count", &[]) >= 1.0);
            assert!(removed < 400.0, "{removed}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no cleaning and merging counted within 60 s ({removed} removed, {merged} merged)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[test]
fn an_admin_address_asked_for_and_in_use_fails_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka = format!("127.0.0.1:{}", free_port());
    let out = Command::new(sluice_bin())
        .args(["start", "--shards", "1", "--no-pin", "--listen", &kafka])
        .args(["--admin-listen", &addr, "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run sluice start");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--admin-listen") && err.contains(&addr),
        "stderr: {err}"
    );
    let bad = Command::new(sluice_bin())
        .args(["start", "--admin-listen", "nowhere", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run sluice start");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--admin-listen nowhere"));
    drop(taken);
}

/// Client telemetry (KIP-714): a librdkafka producer matched by a `client-metrics`
/// subscription pushes its metrics, which appear on `/metrics` with its instance's labels;
/// raw GetTelemetrySubscriptions / PushTelemetry requests get Kafka's answers to good
/// payloads (zstd, gzip, raw snappy, lz4, null) and bad ones (too early, unknown
/// subscription, unknown codec, too large, not OTLP, a decompression bomb, a reserved id,
/// after terminating).
/// The checks are tests/python/telemetry_check.py's.
#[test]
fn client_telemetry_pushed_by_clients_appears_on_metrics() {
    let broker = with_admin(&[]);
    let root = workspace_root();
    let python = root.join("tests/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        python.display()
    );
    let out = Command::new(&python)
        .arg(root.join("tests/python/telemetry_check.py"))
        .arg(broker.bootstrap())
        .arg(broker.admin_url().expect("admin API asked for"))
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run telemetry_check.py");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "telemetry_check.py: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Every scrape of it parsed; once more after all that bad input.
    let scrape = Scrape::of(&broker);
    assert_eq!(scrape.status("ready"), 200);
}
