//! What partitions and group members cost the broker in resident memory: thousands of each,
//! RSS measured before and after, the per-item figure printed for perf/results (the
//! assertions are generous ceilings that catch a leak or a per-item buffer, not a tuning).

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use sluice_tests::kafka::{admin, consumer, create_topics, wait_for_topic};
use sluice_tests::procfs::{raise_nofile, rss_kib};
use sluice_tests::wire::{self, call, frame, header, read_response, Dec, Enc};
use sluice_tests::Broker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_empty_partitions_cost_little_memory() {
    // Two topics, two requests: one request creates at most 10,000 records (topics and
    // partitions).
    const PARTITIONS: usize = 10_000;
    let broker = Broker::start();
    let pid = broker.pid().unwrap();
    let adm = admin(&broker.bootstrap());
    // One small topic first, so per-shard one-time costs are paid before measuring.
    create_topics(&adm, &[("warm", 1, &[])]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);
    let half = PARTITIONS as i32 / 2;
    create_topics(&adm, &[("many-a", half, &[])]).await;
    create_topics(&adm, &[("many-b", half, &[])]).await;
    let cons = consumer(&broker.bootstrap());
    wait_for_topic(&cons, "many-a", half as usize).await;
    wait_for_topic(&cons, "many-b", half as usize).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before) * 1024) / PARTITIONS as u64;
    eprintln!(
        "empty partitions: {PARTITIONS}, broker RSS {before} KiB -> {after} KiB, {per} B each"
    );
    assert!(
        per < 64 * 1024,
        "{per} B of RSS per empty partition (limit 64 KiB)"
    );
}

/// JoinGroup v2 (the oldest Kafka 4 accepts; no member id round trip before v4) for
/// `group` with one protocol ("range", 64 bytes of metadata).
fn join_group_v2(group: &str, correlation: i32) -> Vec<u8> {
    let mut req = header(11, 2, correlation);
    let body = Enc::new()
        .str(group)
        .i32(30_000) // session timeout
        .i32(30_000) // rebalance timeout
        .str("") // no member id yet
        .str("consumer")
        .i32(1)
        .str("range")
        .bytes(&[7u8; 64])
        .0;
    req.extend_from_slice(&body);
    frame(&req)
}

#[test]
fn a_thousand_group_members_cost_little_memory() {
    const MEMBERS: usize = 1000;
    let limit = raise_nofile(MEMBERS as u64 + 512);
    if limit < MEMBERS as u64 + 256 {
        eprintln!("skipped: open-file hard limit {limit} is below {MEMBERS}");
        return;
    }
    let broker = Broker::start();
    let pid = broker.pid().unwrap();
    // The coordinator's topic and one connection per member exist before measuring, so the
    // figure is what the members themselves cost (connections are measured elsewhere).
    let mut first = wire::connect(&broker);
    let resp = call(&mut first, 10, 0, 1, &Enc::new().str("costs").0);
    assert_eq!(Dec::new(&resp).i16(), 0, "FindCoordinator");
    let mut conns: Vec<TcpStream> = (0..MEMBERS).map(|_| wire::connect(&broker)).collect();
    for s in conns.iter_mut() {
        let resp = call(s, 18, 0, 2, &[]);
        assert_eq!(Dec::new(&resp).i16(), 0, "ApiVersions");
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid);
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(&join_group_v2("costs", 100 + i as i32))
            .unwrap();
    }
    // Every member is answered once the join phase ends (Kafka's initial rebalance delay).
    let mut joined = 0;
    for s in conns.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let resp = read_response(s).expect("JoinGroup response");
        let mut d = Dec::new(&resp[4..]);
        let _throttle = d.i32();
        assert_eq!(d.i16(), 0, "JoinGroup error");
        joined += 1;
    }
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before) * 1024) / MEMBERS as u64;
    eprintln!(
        "group members: {joined} in one group, broker RSS {before} KiB -> {after} KiB, {per} B each"
    );
    assert!(
        per < 64 * 1024,
        "{per} B of RSS per group member (limit 64 KiB)"
    );
}
