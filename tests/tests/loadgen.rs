//! The load generator against a real broker: `sluice-bench run` with its native producer and
//! consumer and with librdkafka's, short and rate-limited, must deliver and consume every
//! record without errors and write its JSON/markdown/SVG results. (Throughput itself is
//! measured in perf/, not here.)

use std::path::PathBuf;
use std::process::Command;

use sluice_tests::{sluice_bin, Broker};

/// `sluice-bench` sits beside the broker binary (scripts/test.sh builds both).
fn bench_bin() -> PathBuf {
    let bin = sluice_bin().with_file_name("sluice-bench");
    assert!(
        bin.is_file(),
        "{} not found: build it with `cargo build --release -p sluice-bench` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// One short run; `client` is the producer client and also the consumer client, with
/// `consumers` in the one group.
fn run(broker: &Broker, client: &str, consumers: u32) -> serde_json::Value {
    let out = tempfile::tempdir().expect("tempdir");
    let workload = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bench/workloads/max-rate-1k-16p.toml"
    );
    let status = Command::new(bench_bin())
        .args([
            "run",
            "--bootstrap",
            &broker.bootstrap(),
            "--workload",
            workload,
        ])
        .args([
            "--client",
            client,
            "--consumer-client",
            client,
            "--rate",
            "3000",
            "--warmup-s",
            "1",
            "--duration-s",
            "2",
        ])
        .args([
            "--partitions",
            "4",
            "--producers",
            "2",
            "--drain-timeout-s",
            "20",
        ])
        .arg("--consumers")
        .arg(consumers.to_string())
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("sluice-bench runs");
    assert!(
        status.success(),
        "sluice-bench --client {client} failed: {status}"
    );
    let json = std::fs::read_dir(out.path())
        .expect("results dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("a JSON result");
    for ext in ["md", "svg"] {
        assert!(
            json.with_extension(ext).is_file(),
            "{ext} result next to {}",
            json.display()
        );
    }
    serde_json::from_str(&std::fs::read_to_string(&json).expect("read json")).expect("json")
}

fn check(v: &serde_json::Value, client: &str) {
    let text = v.to_string();
    let phase = &v["phases"][0];
    let produced = phase["produce"]["records_per_s"].as_f64().unwrap_or(0.0);
    assert!(
        produced > 1000.0,
        "{client}: produce rate {produced} in {text}"
    );
    let consumed = phase["consume"]["records_per_s"].as_f64().unwrap_or(0.0);
    assert!(
        consumed > 1000.0,
        "{client}: consume rate {consumed} in {text}"
    );
    assert_eq!(
        v["workload"]["consumer_client"].as_str(),
        Some(client),
        "{client}: consumer client in {text}"
    );
    let e2e = phase["e2e_latency"]["count"].as_u64().unwrap_or(0);
    assert!(e2e > 0, "{client}: no end-to-end latencies in {text}");
    for key in ["produce_errors", "send_errors", "consume_errors"] {
        assert_eq!(v[key].as_u64(), Some(0), "{client}: {key} in {text}");
    }
    assert_eq!(
        v["drain"]["complete"].as_bool(),
        Some(true),
        "{client}: drain in {text}"
    );
}

#[test]
fn native_and_rdkafka_clients_deliver_everything() {
    let broker = Broker::start();
    // Two native consumers split the 4 partitions statically; librdkafka's one consumer
    // keeps the group path as it was.
    for (client, consumers) in [("native", 2), ("rdkafka", 1)] {
        let v = run(&broker, client, consumers);
        check(&v, client);
    }
}
