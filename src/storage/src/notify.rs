//! Single-shard waiters on a partition's offsets: "wake me when the durable offset passes N"
//! (acks=all) and "when the high watermark passes N" (fetch long-poll), and a single-shard
//! async lock for operations that must not interleave. No threads involved.

use std::cell::{Cell, RefCell};
use std::task::{Poll, Waker};

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

/// An async mutual-exclusion lock for one shard's tasks (no threads): operations that await
/// between reading and writing a partition's state (DeleteRecords' checkpoint replace) hold
/// it so they cannot interleave. Dropping a waiting `lock()` future is harmless.
#[derive(Default, Debug)]
pub struct LocalLock {
    held: Cell<bool>,
    waiters: OffsetWaiters,
}

/// Holds a [`LocalLock`] until dropped.
#[derive(Debug)]
pub struct LocalLockGuard<'a>(&'a LocalLock);

impl LocalLock {
    pub async fn lock(&self) -> LocalLockGuard<'_> {
        std::future::poll_fn(|cx| {
            if self.held.get() {
                self.waiters.register(0, cx.waker());
                Poll::Pending
            } else {
                self.held.set(true);
                Poll::Ready(())
            }
        })
        .await;
        LocalLockGuard(self)
    }

    /// The lock if nobody holds it now, without waiting.
    pub fn try_lock(&self) -> Option<LocalLockGuard<'_>> {
        if self.held.replace(true) {
            return None;
        }
        Some(LocalLockGuard(self))
    }
}

impl Drop for LocalLockGuard<'_> {
    fn drop(&mut self) {
        self.0.held.set(false);
        self.0.waiters.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_excludes_and_hands_over() {
        let lock = LocalLock::default();
        futures_lite::future::block_on(async {
            let first = lock.lock().await;
            let mut second = Box::pin(lock.lock());
            assert!(futures_lite::future::poll_once(&mut second).await.is_none());
            drop(first);
            assert!(futures_lite::future::poll_once(&mut second).await.is_some());
        });
    }

    #[test]
    fn try_lock_fails_only_while_held() {
        let lock = LocalLock::default();
        let first = lock.try_lock().expect("free");
        assert!(lock.try_lock().is_none());
        drop(first);
        let _again = lock.try_lock().expect("free again");
    }
}
