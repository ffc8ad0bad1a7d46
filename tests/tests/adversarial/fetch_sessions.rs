//! Fetch sessions (KIP-227) against another connection, over raw TCP: a session belongs to
//! the connection that created it, so connection B can neither use nor close nor replace
//! A's session (B gets FETCH_SESSION_ID_NOT_FOUND, Kafka's answer for an unknown id), and
//! session ids are not sequential (guessable).

use std::net::TcpStream;

use sluice_tests::wire::{call, connect, create_by_metadata, Dec, Enc};
use sluice_tests::{Broker, BrokerConfig};

const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INITIAL_EPOCH: i32 = 0;
const FINAL_EPOCH: i32 = -1;

/// Fetch v7 of `topic`/0 from offset 0 in session `id`/`epoch`: (error, session id).
fn fetch(s: &mut TcpStream, topic: &str, id: i32, epoch: i32) -> (i16, i32) {
    let mut body = Enc::new().i32(-1).i32(0).i32(1).i32(1 << 20).0;
    body.push(0); // isolation level
    let body = Enc(body)
        .i32(id)
        .i32(epoch)
        .i32(1)
        .str(topic)
        .i32(1)
        .i32(0) // partition
        .i64(0) // fetch offset
        .i64(-1) // log start offset
        .i32(1 << 20)
        .i32(0) // forgotten topics
        .0;
    let resp = call(s, 1, 7, 41, &body);
    let mut d = Dec::new(&resp);
    let _throttle = d.i32();
    (d.i16(), d.i32())
}

#[test]
fn another_connection_cannot_use_or_close_a_fetch_session() {
    // One shard: both connections reach the same session table.
    let broker = Broker::start_with(BrokerConfig {
        shards: 1,
        ..BrokerConfig::default()
    });
    let topic = "sessions";
    let mut a = connect(&broker);
    let mut b = connect(&broker);
    create_by_metadata(&mut a, topic);

    let (error, sa) = fetch(&mut a, topic, 0, INITIAL_EPOCH);
    assert_eq!(error, 0);
    assert!(sa > 0, "a session was created");

    // B names A's session: unknown to B.
    assert_eq!(fetch(&mut b, topic, sa, 1), (FETCH_SESSION_ID_NOT_FOUND, 0));
    // B "closes" it (a full sessionless fetch with the final epoch) and "replaces" it (a
    // new session with epoch 0): B is served, A's session is untouched.
    assert_eq!(fetch(&mut b, topic, sa, FINAL_EPOCH), (0, 0));
    let (error, sb) = fetch(&mut b, topic, sa, INITIAL_EPOCH);
    assert_eq!(error, 0);
    assert!(sb > 0 && sb != sa);
    // Not the next number: ids are not guessable from one's own.
    assert!(
        sb != sa + 1 && sb != sa - 1,
        "ids {sa} and {sb} look sequential"
    );
    assert_eq!(fetch(&mut a, topic, sa, 1), (0, sa), "A's session lives on");
    assert_eq!(fetch(&mut a, topic, sb, 1), (FETCH_SESSION_ID_NOT_FOUND, 0));
    assert_eq!(fetch(&mut b, topic, sb, 1), (0, sb));

    // A new connection of the same client is another connection: it cannot take over the
    // session either (that sessions end with their connection is a unit test in fetch.rs).
    drop(a);
    let mut a2 = connect(&broker);
    assert_eq!(
        fetch(&mut a2, topic, sa, 2),
        (FETCH_SESSION_ID_NOT_FOUND, 0)
    );
}
