//! `Kicker`: wakes every shard's executor from a plain thread at a fixed interval, so no shard can sleep past a due timer.
//!
//! Why: glommio 0.9 has been seen to leave an executor asleep in `io_uring_enter` after
//! one of its timers was due (or a wake-up it was owed had been sent): the shard then
//! waits for the next unrelated event, which on an idle shard may never come. It showed
//! as a cluster node that never became ready (about 1 in 250 starts of a loaded 2-CPU
//! host: shard 1 polls a flag with a 10 ms sleep and never woke), and any attach of a
//! debugger, which interrupts the syscall, released it at once. The root cause inside
//! glommio is not found. Every shard therefore keeps one task parked here, and a thread
//! wakes them all every [`KICK_INTERVAL`]: a wake from another thread writes the
//! executor's eventfd (the task lives in a latency-sensitive queue, for which glommio
//! always notifies), the executor leaves its sleep, and its reactor fires every expired
//! timer and drains its completions before it sleeps again. A lost wake-up then costs at
//! most one interval instead of forever.
//!
//! Cost: one eventfd write, one wake of the executor and one task poll per shard per
//! interval (10 a second). The thread holds only a weak reference and ends within one
//! interval of the runtime's last shard and handle going.

use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

/// How often every shard is woken: at most this long can a lost wake-up delay a shard
/// (two Raft ticks). Each kick costs a pass of the executor's loop, a membarrier included:
/// about 0.1 % of a core per shard at this rate, measured idle.
pub const KICK_INTERVAL: Duration = Duration::from_millis(100);

/// The wakers of each shard's kick task.
pub(crate) struct Kicker {
    slots: Mutex<Vec<Option<Waker>>>,
}

impl Kicker {
    /// A kicker for `shards` shards and its thread (named `name`).
    pub(crate) fn start(
        shards: usize,
        name: &str,
        every: Duration,
    ) -> std::io::Result<Arc<Kicker>> {
        let kicker = Arc::new(Kicker {
            slots: Mutex::new(vec![None; shards]),
        });
        let weak = Arc::downgrade(&kicker);
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(weak, every))?;
        Ok(kicker)
    }

    /// The task shard `shard` parks here for ever: it only re-registers when kicked.
    pub(crate) async fn park(self: Arc<Self>, shard: usize) {
        std::future::poll_fn(|cx| {
            self.register(shard, cx.waker());
            Poll::<()>::Pending
        })
        .await
    }

    fn register(&self, shard: usize, waker: &Waker) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get_mut(shard) {
            if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                *slot = Some(waker.clone());
            }
        }
    }

    /// Shard `shard` has stopped: its executor is about to go, so no more kicks for it.
    pub(crate) fn clear(&self, shard: usize) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get_mut(shard) {
            *slot = None;
        }
    }

    fn kick(&self) {
        let wakers: Vec<Waker> = {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.iter().flatten().cloned().collect()
        };
        // Woken outside the lock: a foreign wake queues on the shard's channel.
        for w in wakers {
            w.wake();
        }
    }
}

fn run(kicker: Weak<Kicker>, every: Duration) {
    loop {
        std::thread::sleep(every);
        match kicker.upgrade() {
            Some(k) => k.kick(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn registered_wakers_are_kicked_until_cleared() {
        let k = Kicker::start(2, "kick-test", Duration::from_millis(5)).unwrap();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        k.register(1, &Waker::from(count.clone()));
        while count.0.load(Ordering::SeqCst) < 3 {
            std::thread::sleep(Duration::from_millis(5));
        }
        k.clear(1);
        // A kick already under way may still land; after that, none.
        std::thread::sleep(Duration::from_millis(20));
        let after = count.0.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(count.0.load(Ordering::SeqCst), after);
        // Out-of-range shards are ignored.
        k.register(7, &Waker::from(count.clone()));
    }
}
