//! Request memory (`--queued-max-request-bytes`, per shard): clients that declare 100 MiB
//! requests and then trickle or send nothing cost the broker only what they sent, and do not
//! stop another client's produce; requests larger than the whole budget wait for it and get
//! through, never an error.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use sluice_tests::procfs::rss_kib;
use sluice_tests::wire::{
    closed, connect, create_by_metadata, now_ms, produce, record_batch, seal,
};
use sluice_tests::{Broker, BrokerConfig, TEST_SHARDS};

/// Kafka's `socket.request.max.bytes`: the largest request a client may declare.
const REQUEST_MAX: i32 = 104_857_600;

fn broker_with(args: &[&str]) -> Broker {
    Broker::start_with(BrokerConfig {
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        ..BrokerConfig::default()
    })
}

fn zigzag(v: i64, out: &mut Vec<u8>) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A valid batch of one record whose value is `value_len` bytes.
fn large_batch(value_len: usize) -> Vec<u8> {
    // record_batch's header (61 bytes) with a count of one; its record is replaced.
    let mut b = record_batch(&[b"x"], now_ms());
    b.truncate(61);
    let mut body = vec![0u8]; // attributes
    zigzag(0, &mut body); // timestamp delta
    zigzag(0, &mut body); // offset delta
    zigzag(-1, &mut body); // no key
    zigzag(value_len as i64, &mut body);
    body.resize(body.len() + value_len, b'v');
    zigzag(0, &mut body); // no headers
    zigzag(body.len() as i64, &mut b);
    b.extend_from_slice(&body);
    seal(&mut b);
    b
}

/// A produce request's first bytes: its size prefix declares `REQUEST_MAX`, and the header
/// and body start as a real produce would.
fn declared_produce_start() -> Vec<u8> {
    let mut out = REQUEST_MAX.to_be_bytes().to_vec();
    out.extend_from_slice(&sluice_tests::wire::header(0, 8, 1));
    out
}

#[test]
fn declared_but_unsent_requests_cost_nothing_and_block_no_one() {
    const HOSTILE: usize = 300;
    const BUDGET: usize = 8 << 20;
    let broker = broker_with(&["--queued-max-request-bytes", &BUDGET.to_string()]);
    let pid = broker.pid().unwrap();
    let mut good = connect(&broker);
    create_by_metadata(&mut good, "mem-good");
    let batch = record_batch(&[b"warm"], now_ms());
    assert_eq!(produce(&mut good, 8, "mem-good", 0, -1, 30_000, &batch), 0);
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid);

    // Each declares a 100 MiB produce; half then send nothing more, half trickle.
    let mut hostile: Vec<TcpStream> = (0..HOSTILE)
        .map(|_| {
            let mut s = connect(&broker);
            s.write_all(&declared_produce_start()).unwrap();
            s
        })
        .collect();
    for round in 0..20u8 {
        for s in hostile.iter_mut().skip(HOSTILE / 2) {
            s.write_all(&[round; 64]).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Another client's produce still goes through, and is stored.
    let batch = record_batch(&[b"still served"], now_ms());
    assert_eq!(
        produce(&mut good, 8, "mem-good", 0, -1, 30_000, &batch),
        0,
        "a produce beside {HOSTILE} declared 100 MiB requests"
    );
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(pid);
    let grown = after.saturating_sub(before) * 1024;
    eprintln!(
        "{HOSTILE} connections declaring {REQUEST_MAX} B: broker RSS {before} KiB -> {after} KiB"
    );
    // Generous: the whole budget of every shard plus 32 MiB of slack; a pending 1 MiB read
    // per connection (the old behaviour) is ~300 MiB.
    let bound = TEST_SHARDS as u64 * BUDGET as u64 + (32 << 20);
    assert!(
        grown < bound,
        "RSS grew {grown} B with {HOSTILE} declared requests (bound {bound} B)"
    );
    // The hostile connections are waited on, not closed (back-pressure, never an error).
    for s in hostile.iter_mut().take(4) {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        assert!(!closed(s), "a connection sending slowly stays open");
    }
}

#[test]
fn requests_beyond_the_budget_wait_and_succeed() {
    // Each request is ~3.5 times one shard's budget.
    const BUDGET: usize = 256 << 10;
    const CLIENTS: usize = 6;
    const REQUESTS: usize = 3;
    let broker = broker_with(&["--queued-max-request-bytes", &BUDGET.to_string()]);
    let mut s = connect(&broker);
    create_by_metadata(&mut s, "mem-big");
    let batch = large_batch(900 << 10);
    assert!(batch.len() > 3 * BUDGET);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let batch = batch.clone();
            let mut s = connect(&broker);
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            std::thread::spawn(move || {
                (0..REQUESTS)
                    .map(|_| produce(&mut s, 8, "mem-big", 0, -1, 30_000, &batch))
                    .collect::<Vec<i16>>()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), vec![0; REQUESTS], "every request stored");
    }
    let (error, end) = sluice_tests::wire::list_offset(&mut s, "mem-big", 0, -1);
    assert_eq!((error, end), (0, (CLIENTS * REQUESTS) as i64));
}

/// Clients that declare 100 MiB requests, overrun a small budget and then trickle a byte at
/// a time: the one holding the overdraft is closed once `--request-overdraft-hold-ms` has
/// passed without its request completing, so another client's large produce, waiting behind
/// them for the budget, gets through (without the hold limit it waits for ever).
#[test]
fn a_trickling_client_cannot_keep_the_overdraft() {
    const BUDGET: usize = 256 << 10;
    const HOSTILE: usize = 6;
    let broker = broker_with(&[
        "--queued-max-request-bytes",
        &BUDGET.to_string(),
        "--request-overdraft-hold-ms",
        "1500",
    ]);
    let mut setup = connect(&broker);
    create_by_metadata(&mut setup, "mem-trickle");
    let mut hostile: Vec<Option<TcpStream>> = (0..HOSTILE)
        .map(|_| {
            let mut s = connect(&broker);
            s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
            s.write_all(&declared_produce_start()).unwrap();
            // More than a shard's budget: the first on each shard takes the overdraft.
            let _ = s.write_all(&vec![7u8; BUDGET + (64 << 10)]);
            Some(s)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let batch = large_batch(BUDGET + (100 << 10));
    let mut good = connect(&broker);
    good.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let producer =
        std::thread::spawn(move || produce(&mut good, 8, "mem-trickle", 0, -1, 30_000, &batch));
    // Trickle until the good produce is answered; a closed hostile connection is dropped.
    let started = std::time::Instant::now();
    while !producer.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the produce waited behind trickling clients for 120 s"
        );
        for slot in hostile.iter_mut() {
            if let Some(s) = slot {
                if s.write_all(&[1]).is_err() {
                    *slot = None;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(producer.join().unwrap(), 0, "the produce is stored");
    let closed_count = hostile
        .iter_mut()
        .filter_map(|slot| match slot {
            None => Some(()),
            Some(s) => {
                s.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                closed(s).then_some(())
            }
        })
        .count();
    assert!(closed_count >= 1, "a trickling overdraft holder was closed");
    let (error, end) = sluice_tests::wire::list_offset(&mut setup, "mem-trickle", 0, -1);
    assert_eq!((error, end), (0, 1));
}

#[test]
fn the_budget_flag_is_validated() {
    let out = std::process::Command::new(sluice_tests::sluice_bin())
        .args(["start", "--queued-max-request-bytes", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--queued-max-request-bytes"));
}
