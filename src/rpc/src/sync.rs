//! Single-thread wake-up primitives for tasks on one glommio executor (the transport's, and
//! the controller runtime's, which owns it): an [`Event`] that waiters re-check a condition
//! on, and a set-once [`Latch`].

use std::cell::{Cell, RefCell};
use std::task::{Poll, Waker};

/// Something changed: every waiter registered since the last `notify` is woken and re-checks
/// its own condition (a generation counter makes a notify between check and wait count).
#[derive(Default)]
pub struct Event {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Event {
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }

    /// Completes once `notify` was called after `generation()` returned `since`.
    pub async fn changed(&self, since: u64) {
        futures_lite::future::poll_fn(|cx| {
            if self.generation.get() != since {
                return Poll::Ready(());
            }
            let mut wakers = self.wakers.borrow_mut();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// Set once, never reset: "this connection / peer / transport is closed".
#[derive(Default)]
pub struct Latch {
    set: Cell<bool>,
    event: Event,
}

impl Latch {
    pub fn set(&self) {
        if !self.set.replace(true) {
            self.event.notify();
        }
    }

    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    pub async fn wait(&self) {
        loop {
            let g = self.event.generation();
            if self.set.get() {
                return;
            }
            self.event.changed(g).await;
        }
    }
}
