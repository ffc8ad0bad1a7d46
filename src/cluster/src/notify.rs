//! Single-thread wake-ups for the controller runtime's tasks (all on one glommio executor):
//! an [`Event`] whose waiters re-check their own condition after every `notify`, and a
//! one-shot [`Slot`] that carries one answer to the task waiting for it.

use std::cell::{Cell, RefCell};
use std::task::{Poll, Waker};

/// "Something changed": waiters registered since the last `notify` are woken and re-check.
/// A generation counter makes a `notify` between a check and the wait count.
#[derive(Default)]
pub(crate) struct Event {
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

/// Holds one value for one waiter.
pub(crate) struct Slot<T> {
    value: RefCell<Option<T>>,
    event: Event,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            value: RefCell::new(None),
            event: Event::default(),
        }
    }
}

impl<T> Slot<T> {
    pub fn set(&self, v: T) {
        *self.value.borrow_mut() = Some(v);
        self.event.notify();
    }

    pub async fn take(&self) -> T {
        loop {
            let g = self.event.generation();
            if let Some(v) = self.value.borrow_mut().take() {
                return v;
            }
            self.event.changed(g).await;
        }
    }
}
