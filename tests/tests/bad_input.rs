//! Bad input over real TCP: malformed frames, oversized size prefixes, unknown API keys,
//! unsupported versions and corrupt record batches get a Kafka error code or a clean close,
//! and the broker keeps serving other connections. A second broker pointed at a port in use
//! refuses to start.

use std::io::Write;
use std::net::TcpStream;

use sluice_tests::wire::{
    closed, connect, connect_leader, create_by_metadata, frame, header, list_offset, produce,
    read_response, record_batch,
};
use sluice_tests::{sluice_bin, Broker};

/// ApiVersions v0 works: the broker is still serving.
fn assert_serving(broker: &Broker) {
    let mut s = connect(broker);
    s.write_all(&frame(&header(18, 0, 77))).unwrap();
    let resp = read_response(&mut s).expect("ApiVersions answered");
    assert_eq!(i32::from_be_bytes(resp[0..4].try_into().unwrap()), 77);
    assert_eq!(
        i16::from_be_bytes(resp[4..6].try_into().unwrap()),
        0,
        "error code"
    );
}

#[test]
fn malformed_frames_close_cleanly_and_broker_keeps_serving() {
    let broker = Broker::start();

    // A size prefix far over the request limit: closed before anything is allocated.
    let mut s = connect(&broker);
    s.write_all(&i32::MAX.to_be_bytes()).unwrap();
    assert!(
        closed(&mut s),
        "oversized request must close the connection"
    );

    // A negative size prefix.
    let mut s = connect(&broker);
    s.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert!(closed(&mut s));

    // An unknown API key.
    let mut s = connect(&broker);
    s.write_all(&frame(&header(9999, 0, 1))).unwrap();
    assert!(closed(&mut s), "unknown api key closes");

    // A truncated header.
    let mut s = connect(&broker);
    s.write_all(&frame(&[0, 3])).unwrap();
    assert!(closed(&mut s));

    // A Metadata v1 request whose topic array claims two billion entries.
    let mut s = connect(&broker);
    let mut body = header(3, 1, 5);
    body.extend_from_slice(&i32::MAX.to_be_bytes());
    s.write_all(&frame(&body)).unwrap();
    assert!(closed(&mut s), "absurd array count closes");

    // Random garbage in many shapes.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..200 {
        let mut s = connect(&broker);
        let len = 1 + (round * 7) % 300;
        let mut body = Vec::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            body.push(seed as u8);
        }
        let _ = s.write_all(&frame(&body));
        // Either an answer or a close; never a hang (read timeout is 10 s).
        let _ = read_response(&mut s);
    }
    assert_serving(&broker);
}

#[test]
fn api_versions_of_unknown_version_gets_v0_fallback() {
    let broker = Broker::start();
    let mut s = connect(&broker);
    // Version 99 with a flexible-looking header: the broker must still answer in v0 form.
    s.write_all(&frame(&header(18, 99, 4242))).unwrap();
    let resp = read_response(&mut s).expect("fallback response");
    assert_eq!(i32::from_be_bytes(resp[0..4].try_into().unwrap()), 4242);
    assert_eq!(
        i16::from_be_bytes(resp[4..6].try_into().unwrap()),
        35,
        "UNSUPPORTED_VERSION"
    );
    let count = i32::from_be_bytes(resp[6..10].try_into().unwrap());
    assert!(count >= 10, "api list of {count} entries");
    // An unsupported version of another API closes the connection.
    let mut s = connect(&broker);
    s.write_all(&frame(&header(0, 1, 9))).unwrap();
    assert!(closed(&mut s));
    assert_serving(&broker);
}

/// Produce v3 of one batch to `topic`/0 with acks=-1; returns the partition error code.
fn produce_raw(s: &mut TcpStream, topic: &str, batch: &[u8]) -> i16 {
    produce(s, 3, topic, 0, -1, 5000, batch)
}

/// A valid magic-2 batch of one record (value "v").
fn batch() -> Vec<u8> {
    record_batch(&[b"v"], 1)
}

#[test]
fn corrupt_batches_get_corrupt_message_and_nothing_is_stored() {
    let broker = Broker::start();
    let mut s = connect(&broker);
    create_by_metadata(&mut s, "bad");
    // The partition's leader (this broker on one node).
    let (mut s, base) = connect_leader(&broker, "bad", 0);

    assert_eq!(
        produce_raw(&mut s, "bad", &batch()),
        0,
        "a valid batch is stored"
    );
    let mut flipped = batch();
    let last = flipped.len() - 2;
    flipped[last] ^= 0x40;
    assert_eq!(
        produce_raw(&mut s, "bad", &flipped),
        2,
        "CRC mismatch → CORRUPT_MESSAGE"
    );
    let mut magic1 = batch();
    magic1[16] = 1;
    assert_eq!(
        produce_raw(&mut s, "bad", &magic1),
        87,
        "wrong magic → INVALID_RECORD (Kafka: v3+ produce carries magic 2 only)"
    );
    let truncated = &batch()[..40];
    assert_eq!(produce_raw(&mut s, "bad", truncated), 2, "truncated batch");
    assert_eq!(produce_raw(&mut s, "bad", &batch()), 0);
    // Offsets: the two good batches are 0 and 1 (from `base`); nothing from the bad ones
    // was kept.
    assert_eq!(
        list_offset(&mut s, "bad", 0, -1),
        (0, base + 2),
        "latest offset after two good batches"
    );
    assert_serving(&broker);
}

/// A second broker on a port the first one holds must not start (SO_REUSEPORT would let it
/// bind and take half of the new connections).
#[test]
fn second_broker_on_a_used_port_refuses_to_start() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(sluice_bin())
        .args(["start", "--shards", "1", "--listen", &broker.bootstrap()])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the second broker is still running on a port in use");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "second broker exited with {status}");
    assert!(
        stderr.contains("a Kafka broker already serves it"),
        "stderr: {stderr}"
    );
    assert_serving(&broker);
}
