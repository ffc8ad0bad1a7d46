//! The panic policy: a panic anywhere ends the whole process at once with a clear message
//! (no shard dies alone, start-up never hangs), and the data on disk is recovered at the next
//! start. Panics are forced through the broker's test switch `SLUICE_TEST_PANIC`.

use std::io::Write;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::wire::{frame, read_response};
use sluice_tests::{free_port, sluice_bin, Broker, BrokerConfig, TEST_SHARDS};

/// Far longer than a panic needs to end the process, far shorter than a hang.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `sluice start` with `SLUICE_TEST_PANIC=start` and waits for it to end by itself.
fn run_until_exit(env_value: &str) -> (Option<ExitStatus>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(sluice_bin())
        .args(["start", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--shards", &TEST_SHARDS.to_string()])
        .env("SLUICE_TEST_PANIC", env_value)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    (
        status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_panic_before_ready_ends_the_process_instead_of_hanging_start_up() {
    let (status, stdout, stderr) = run_until_exit("start");
    let status = status.unwrap_or_else(|| {
        panic!("start-up hung after a shard panicked\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    assert!(!status.success(), "exit status {status}");
    assert!(
        !stdout.contains("sluice: ready"),
        "a broker with a dead shard said ready:\n{stdout}"
    );
    assert!(
        stderr.contains("sluice: fatal: panic") && stderr.contains("test panic before the shard"),
        "stderr names the panic:\n{stderr}"
    );
}

/// ApiVersions v0 with the client id that trips the `request` test panic.
fn poison_request() -> Vec<u8> {
    let id = b"sluice-test-panic";
    let mut h = Vec::new();
    h.extend_from_slice(&18i16.to_be_bytes());
    h.extend_from_slice(&0i16.to_be_bytes());
    h.extend_from_slice(&7i32.to_be_bytes());
    h.extend_from_slice(&(id.len() as i16).to_be_bytes());
    h.extend_from_slice(id);
    frame(&h)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_in_a_request_handler_ends_the_process_and_data_survives() {
    let mut broker = Broker::start_with(BrokerConfig {
        env: vec![("SLUICE_TEST_PANIC".into(), "request".into())],
        ..BrokerConfig::default()
    });
    let topic = "panic-policy";
    let producer = sluice_tests::kafka::producer(&broker.bootstrap(), &[("acks", "all")]);
    for i in 0..20 {
        let v = format!("v{i}");
        producer
            .send(
                rdkafka::producer::FutureRecord::<(), _>::to(topic)
                    .partition(0)
                    .payload(&v),
                Duration::from_secs(10),
            )
            .await
            .expect("acked before the panic");
    }
    drop(producer);

    // Connections land on any shard: whichever one runs the poisoned request, the whole
    // process must end (before the policy, only that shard's thread died).
    let mut s = sluice_tests::wire::connect(&broker);
    s.write_all(&poison_request()).unwrap();
    assert!(
        read_response(&mut s).is_none(),
        "no answer to the poisoned request"
    );
    let status = broker
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|| panic!("the broker kept running after a panic in a request handler"));
    assert!(!status.success(), "exit status {status}");
    let stderr = broker.stderr_log();
    assert!(
        stderr.contains("sluice: fatal: panic") && stderr.contains("test panic in a request"),
        "stderr names the panic:\n{stderr}"
    );

    // Restart without the switch: every acknowledged record is there.
    broker.set_env(Vec::new());
    broker.restart();
    let consumer = sluice_tests::kafka::consumer(&broker.bootstrap());
    let (low, high) = sluice_tests::kafka::watermarks(&consumer, topic, 0);
    assert_eq!(
        (low, high),
        (0, 20),
        "acknowledged records after the restart"
    );
}
