//! Runs tests/python/test_kafka_python.py (kafka-python, a client that is not librdkafka)
//! against a fresh broker and requires it to exit 0.
//!
//! The interpreter is tests/.venv/bin/python, made by scripts/install-test-deps.sh. A
//! missing venv fails the test (with that instruction) rather than skipping it, so a
//! machine without the install step cannot pass silently.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::{test_cluster_nodes, workspace_root, Broker};

/// Bound on the whole script (it bounds each of its own waits at 30 s).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn kafka_python_produce_consume_admin() {
    let root = workspace_root();
    let python = root.join("tests/.venv/bin/python");
    let script = root.join("tests/python/test_kafka_python.py");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-test-deps.sh (creates the venv with kafka-python)",
        python.display()
    );

    let broker = Broker::start();
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out_path = out_dir.path().join("python.log");
    let out = File::create(&out_path).expect("create python.log");
    let mut child = Command::new(&python)
        .arg(&script)
        .arg("--bootstrap")
        .arg(broker.bootstrap())
        .arg("--cluster")
        .arg(test_cluster_nodes().unwrap_or(1).to_string())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().expect("dup log file")))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", python.display()));

    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // A child process's exit has no portable blocking-wait-with-timeout in std.
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("----- kafka-python output -----\n{output}----- end -----");
    match status {
        None => panic!("kafka-python script did not finish within {SCRIPT_TIMEOUT:?} (killed)"),
        Some(s) => assert!(
            s.success(),
            "kafka-python script failed with {s}; output above"
        ),
    }
}
