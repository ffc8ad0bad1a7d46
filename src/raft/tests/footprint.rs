//! Memory of idle replicas (issue 12's budget: at most 64 KiB per replica), measured with a
//! counting allocator; the cost of ticking many idle groups is printed, not asserted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use sluice_raft::{Config, Effect, GroupManager};

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
}
