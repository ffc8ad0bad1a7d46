//! Memory of idle replicas (issue 12's budget: at most 64 KiB per replica), measured with a
//! counting allocator; the cost of ticking many idle groups, awake and quiesced, is printed,
//! not asserted (numbers in perf/results/).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use sluice_raft::{Config, Effect, Envelope, GroupManager, Heartbeat};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Replicas per node in the idle-cost target.
const REPLICAS: u64 = 3_000;
/// The memory budget per replica.
const BYTES_PER_REPLICA_MAX: isize = 64 << 10;

#[test]
fn idle_replicas_fit_the_memory_budget() {
    let mut m = GroupManager::new(Config {
        node_id: 1,
        ..Default::default()
    });
    let before = LIVE.load(Ordering::Relaxed);
    let mut seq = 0;
    for g in 0..REPLICAS {
        for e in m.create_group(g, &[1, 2, 3]).expect("create") {
            if let Effect::Persist { seq: s, .. } = e {
                seq = s;
            }
        }
    }
    m.persisted(seq);
    // A few ticks short of an election: followers waiting for a leader, the idle state.
    let start = std::time::Instant::now();
    for t in 1..=10 {
        assert!(m
            .tick(t * sluice_raft::manager::TICK_MS)
            .iter()
            .all(|e| !matches!(e, Effect::Send(_))));
    }
    let per_tick = start.elapsed() / 10;
    let per_replica = (LIVE.load(Ordering::Relaxed) - before) / REPLICAS as isize;
    eprintln!(
        "{REPLICAS} idle follower replicas: {per_replica} bytes each, {per_tick:?} per tick of all"
    );
    assert!(
        per_replica <= BYTES_PER_REPLICA_MAX,
        "{per_replica} bytes per replica"
    );

    // Node 2 leads every group (term 1) and has told the followers to quiesce: the first
    // round of heartbeats makes them its followers (a hard-state write, synced), the second
    // carries the notice.
    let mut now = 10 * sluice_raft::manager::TICK_MS;
    for quiesce in [false, true] {
        let env = Envelope {
            from: 2,
            to: 1,
            heartbeats: (0..REPLICAS)
                .map(|group| Heartbeat {
                    group,
                    response: false,
                    term: 1,
                    commit: 0,
                    quiesce,
                })
                .collect(),
            messages: Vec::new(),
        };
        for e in m.step(env) {
            if let Effect::Persist { seq, .. } = e {
                m.persisted(seq);
            }
        }
        if !quiesce {
            // Awake followers of a live leader (their heartbeats are not delivered here).
            let start = std::time::Instant::now();
            for _ in 0..10 {
                now += sluice_raft::manager::TICK_MS;
                m.tick(now);
            }
            eprintln!(
                "{REPLICAS} awake followers of a leader: {:?} per tick of all",
                start.elapsed() / 10
            );
        }
    }
    assert_eq!(m.quiesced_groups(), REPLICAS as usize, "all quiesced");
    const QUIET_TICKS: u32 = 1_000;
    let start = std::time::Instant::now();
    for _ in 0..QUIET_TICKS {
        now += sluice_raft::manager::TICK_MS;
        assert!(m.tick(now).is_empty(), "a quiesced group did something");
    }
    let per_tick = start.elapsed() / QUIET_TICKS;
    let per_replica = (LIVE.load(Ordering::Relaxed) - before) / REPLICAS as isize;
    eprintln!(
        "{REPLICAS} quiesced follower replicas: {per_replica} bytes each, {per_tick:?} per tick of all"
    );
    assert!(
        per_replica <= BYTES_PER_REPLICA_MAX,
        "{per_replica} bytes per replica"
    );
}
