//! Single-shard waiters on a partition's offsets: "wake me when the durable offset passes N"
//! (acks=all) and "when the high watermark passes N" (fetch long-poll). No threads involved.

use std::cell::RefCell;
use std::task::Waker;

/// Wakers keyed by the offset each waits past. Owned by one shard.
#[derive(Default, Debug)]
pub struct OffsetWaiters {
    waiting: RefCell<Vec<(i64, Waker)>>,
}

impl OffsetWaiters {
    /// Registers `waker` to be woken once the watched offset exceeds `offset`.
    pub fn register(&self, offset: i64, waker: &Waker) {
        let mut w = self.waiting.borrow_mut();
        if let Some(slot) = w
            .iter_mut()
            .find(|(o, wk)| *o == offset && wk.will_wake(waker))
        {
            slot.1 = waker.clone();
            return;
        }
        w.push((offset, waker.clone()));
    }

    /// Wakes everyone waiting below `reached` (exclusive: offsets < reached are covered).
    pub fn wake_below(&self, reached: i64) {
        let ready: Vec<Waker> = {
            let mut w = self.waiting.borrow_mut();
            let mut ready = Vec::new();
            w.retain(|(o, wk)| {
                if *o < reached {
                    ready.push(wk.clone());
                    false
                } else {
                    true
                }
            });
            ready
        };
        for w in ready {
            w.wake();
        }
    }

    /// Wakes everybody (failure or shutdown).
    pub fn wake_all(&self) {
        let all = std::mem::take(&mut *self.waiting.borrow_mut());
        for (_, w) in all {
            w.wake();
        }
    }
}
