//! Single-thread wake-ups for the controller runtime's tasks (all on one glommio executor):
//! the transport's [`Event`] (waiters re-check their own condition after every `notify`),
//! and a one-shot [`Slot`] that carries one answer to the task waiting for it.

use std::cell::RefCell;

pub(crate) use sluice_rpc::sync::Event;

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
