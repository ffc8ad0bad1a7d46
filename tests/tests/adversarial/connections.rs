//! Connections: idle ones are closed after `connections.max.idle.ms`, a busy one is not;
//! `max.connections.per.ip` turns the excess away; thousands of idle connections cost little
//! memory (the number is printed for perf/results; the assertion is generous).

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sluice_tests::procfs::{raise_nofile, rss_kib};
use sluice_tests::wire::{closed, frame, header, read_response};
use sluice_tests::{Broker, BrokerConfig};

fn broker_with(args: &[&str]) -> Broker {
    Broker::start_with(BrokerConfig {
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        ..BrokerConfig::default()
    })
}

fn connect(broker: &Broker) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", broker.port())).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn api_versions_ok(s: &mut TcpStream) -> bool {
    if s.write_all(&frame(&header(18, 0, 5))).is_err() {
        return false;
    }
    read_response(s).is_some()
}

#[test]
fn idle_connections_are_closed_and_busy_ones_kept() {
    let broker = broker_with(&["--connections-max-idle-ms", "1000"]);
    let mut idle = connect(&broker);
    let mut busy = connect(&broker);
    assert!(api_versions_ok(&mut idle));
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        assert!(api_versions_ok(&mut busy), "a busy connection stays open");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The sweeper looks every 100 ms here: the idle one is long gone by now.
    assert!(closed(&mut idle), "an idle connection is closed");
    assert!(api_versions_ok(&mut busy));
}

#[test]
fn connections_over_the_per_ip_limit_are_turned_away() {
    let broker = broker_with(&["--max-connections-per-ip", "5"]);
    let mut held: Vec<TcpStream> = (0..5).map(|_| connect(&broker)).collect();
    for s in &mut held {
        assert!(api_versions_ok(s), "within the limit");
    }
    let mut extra = connect(&broker);
    assert!(
        closed(&mut extra),
        "the sixth connection from one IP is closed"
    );
    drop(held.pop());
    // The closed connection's count is released once its task ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = connect(&broker);
        if api_versions_ok(&mut again) {
            break;
        }
        assert!(Instant::now() < deadline, "a freed slot is reusable");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_thousand_idle_connections_cost_little_memory() {
    const CONNECTIONS: usize = 3000;
    let limit = raise_nofile(CONNECTIONS as u64 + 512);
    if limit < CONNECTIONS as u64 + 256 {
        eprintln!("skipped: open-file hard limit {limit} is below {CONNECTIONS}");
        return;
    }
    let broker = Broker::start();
    let pid = broker.pid().unwrap();
    // Warm up: one connection that did a request, so per-shard one-time costs are paid.
    let mut warm = connect(&broker);
    assert!(api_versions_ok(&mut warm));
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid);
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        conns.push(connect(&broker));
    }
    // Each did one request (a real client's first step), then went idle.
    for s in conns.iter_mut() {
        assert!(api_versions_ok(s));
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(pid);
    let per_conn = (after.saturating_sub(before) * 1024) / CONNECTIONS as u64;
    eprintln!(
        "idle connections: {CONNECTIONS}, broker RSS {before} KiB -> {after} KiB, {per_conn} B each"
    );
    assert!(
        per_conn < 50 * 1024,
        "{per_conn} B of RSS per idle connection (limit 50 KiB)"
    );
    assert!(api_versions_ok(&mut warm), "still serving");
}
