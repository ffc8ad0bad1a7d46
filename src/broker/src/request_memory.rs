//! Per-shard budget for the bytes of requests in flight (Kafka's `queued.max.request.bytes`,
//! Redpanda's per-shard memory semaphore): when it is spent, connections stop reading their
//! sockets until memory is released. Back-pressure, never an error.
//!
//! What the budget counts: every byte of a request frame (size prefix included) from the
//! moment it is read off the socket until the request's handler has finished with it (its
//! response is built, or it needed none, or it was refused). Bytes of a produce that outlive
//! the handler are not counted here: the log copies them into its write buffer and the batch
//! cache keeps (and counts against its own budget) only what it retains. Response memory is
//! not counted (it is bounded per connection by `INFLIGHT_REQUESTS_MAX` and the fetch caps).
//!
//! Bytes are acquired as they arrive, never for the size a prefix declares: a client that
//! sends the prefix of a 100 MiB request and then trickles (or nothing) holds only what it
//! really sent, so a few such prefixes cannot pin the budget and starve everyone else.
//! Reserving the declared size (Kafka, Redpanda) is deadlock-free for free; acquiring as
//! bytes arrive is not (partial requests could fill the budget and all wait for more), so
//! one connection at a time may run over the budget to finish the request it has started:
//! the *overdraft*, handed to the longest waiter, held until that request's handler is done.
//!
//! Invariants:
//! - `used` is the sum of what live connections and request permits hold.
//! - `used <= capacity` unless the overdraft is taken, and the overdraft holder adds at most
//!   one request (`REQUEST_SIZE_MAX` plus its prefix) and one read (at most 64 KiB past the
//!   request's end): so any request the framer admits can be received whatever the budget,
//!   and memory stays bounded by about `capacity + REQUEST_SIZE_MAX`, as Kafka's own
//!   non-strict pool overruns its budget by at most one request.
//! - Waiters are served in arrival order (only the overdraft holder goes past them), so a
//!   large read cannot starve behind a stream of small ones.
//! - A request that may park (fetch long-poll, JoinGroup, SyncGroup) of at most 1 MiB
//!   leaves the overdraft behind when its frame is complete, so parked work never stops the
//!   shard's reading; each such request overruns the budget by at most its own size.
//! - The overdraft is held for a bounded time: a connection that has not finished its
//!   request [`REQUEST_OVERDRAFT_HOLD_DEFAULT`] (`--request-overdraft-hold-ms`) after taking
//!   the overdraft is closed, which releases it (the connection's reads time out; see
//!   [`ConnMemory::overdraft_deadline`]). So a client trickling a large request cannot keep
//!   a budget filled with other partial requests waiting for it; one that sends nothing at
//!   all is also closed after `connections.max.idle.ms`. Filling the budget takes real
//!   bytes, where reserving declared sizes would take 4 per 100 MiB.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Default per-shard budget: room for two maximum-size requests (`socket.request.max.bytes`,
/// 100 MiB) beside many small ones, so one large producer never stalls the shard; a 32-core
/// host can hold at most 8 GiB of request bytes.
pub const QUEUED_MAX_REQUEST_BYTES_DEFAULT: usize = 256 * 1024 * 1024;

/// How long a connection may hold the overdraft before its request must be complete: the
/// Kafka clients' `request.timeout.ms` default. A request still being sent after that has
/// timed out at its client anyway (which retries on a new connection), so closing it loses
/// nothing; 100 MiB in that time needs only 3.4 MiB/s.
pub const REQUEST_OVERDRAFT_HOLD_DEFAULT: std::time::Duration = std::time::Duration::from_secs(30);

/// Largest request that may park without keeping the overdraft (see
/// [`ConnMemory::take_request`]).
pub const PARKED_OVERDRAFT_BYTES_MAX: usize = 1024 * 1024;

#[derive(Debug, Default)]
struct Inner {
    used: usize,
    /// Who holds the overdraft: a connection finishing a request, or (once the frame is
    /// complete) that request's permit.
    overdraft: Option<Holder>,
    /// When a connection took the overdraft (`Holder::Conn` only).
    overdraft_since: Option<std::time::Instant>,
    /// Tickets of waiting acquisitions, in arrival order, with their wakers.
    waiters: VecDeque<(u64, Waker)>,
    next_ticket: u64,
    next_conn: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Conn(u64),
    Request,
}

/// One shard's request-memory budget. `!Send`: owned by its shard.
#[derive(Debug)]
pub struct RequestMemory {
    capacity: usize,
    inner: RefCell<Inner>,
}

impl RequestMemory {
    /// A budget of `capacity` bytes (`usize::MAX`: unbounded).
    pub fn new(capacity: usize) -> Rc<RequestMemory> {
        Rc::new(RequestMemory {
            capacity,
            inner: RefCell::default(),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of requests in flight on this shard.
    pub fn used(&self) -> usize {
        self.inner.borrow().used
    }

    /// A new connection's account (holds nothing yet).
    pub fn connection(self: &Rc<Self>) -> ConnMemory {
        let mut inner = self.inner.borrow_mut();
        let id = inner.next_conn;
        inner.next_conn += 1;
        ConnMemory {
            id,
            held: Cell::new(0),
            pool: self.clone(),
        }
    }

    fn release(&self, n: usize, overdraft: Option<Holder>) {
        let mut inner = self.inner.borrow_mut();
        inner.used -= n;
        if overdraft.is_some() && inner.overdraft == overdraft {
            inner.overdraft = None;
        }
        // Only the head can go next; it wakes the one after it when it is served.
        if let Some((_, w)) = inner.waiters.front() {
            w.wake_by_ref();
        }
    }
}

/// What one connection holds of its shard's budget: the bytes it has read that belong to no
/// complete request yet. Released when dropped.
#[derive(Debug)]
pub struct ConnMemory {
    id: u64,
    held: Cell<usize>,
    pool: Rc<RequestMemory>,
}

impl ConnMemory {
    /// Bytes this connection holds.
    pub fn held(&self) -> usize {
        self.held.get()
    }

    /// Waits until `n` more bytes fit the budget, then counts them against this connection.
    pub fn acquire(&self, n: usize) -> Acquire<'_> {
        Acquire {
            conn: self,
            n,
            ticket: None,
        }
    }

    /// When this connection must have finished the request it holds the overdraft for
    /// (`None` if it does not hold it): `hold` after it took it. The connection is closed if
    /// its request is still incomplete then.
    pub fn overdraft_deadline(&self, hold: std::time::Duration) -> Option<std::time::Instant> {
        let inner = self.pool.inner.borrow();
        match (inner.overdraft, inner.overdraft_since) {
            (Some(Holder::Conn(id)), Some(since)) if id == self.id => Some(since + hold),
            _ => None,
        }
    }

    /// Gives back `n` of the bytes this connection holds (a read brought fewer than it
    /// acquired for).
    pub fn release(&self, n: usize) {
        assert!(n <= self.held.get(), "released more than held");
        self.held.set(self.held.get() - n);
        self.pool.release(n, None);
    }

    /// Moves `n` held bytes (one complete request frame) to a permit its handler keeps until
    /// it is done with the request. The overdraft, if this connection had it, goes with it:
    /// the connection's next request waits its turn. A request of at most
    /// [`PARKED_OVERDRAFT_BYTES_MAX`] that `may_park` (a fetch long-poll, a JoinGroup or
    /// SyncGroup waiting for a rebalance) does not take the overdraft along: it is freed for
    /// the next waiter at once (the request's bytes stay counted), or a parked request would
    /// stop the whole shard from reading past its budget, and a parked JoinGroup would wait
    /// for members whose requests cannot be read. Each such request overruns the budget by
    /// at most that much (real requests of these kinds are kilobytes).
    pub fn take_request(&self, n: usize, may_park: bool) -> RequestPermit {
        assert!(n <= self.held.get(), "a request larger than what was read");
        self.held.set(self.held.get() - n);
        let mut inner = self.pool.inner.borrow_mut();
        let mut overdraft = inner.overdraft == Some(Holder::Conn(self.id));
        if overdraft && may_park && n <= PARKED_OVERDRAFT_BYTES_MAX {
            inner.overdraft = None;
            overdraft = false;
            if let Some((_, w)) = inner.waiters.front() {
                w.wake_by_ref();
            }
        } else if overdraft {
            inner.overdraft = Some(Holder::Request);
        }
        RequestPermit {
            n,
            overdraft,
            pool: self.pool.clone(),
        }
    }
}

impl Drop for ConnMemory {
    fn drop(&mut self) {
        self.pool
            .release(self.held.get(), Some(Holder::Conn(self.id)));
    }
}

/// One request's bytes, held until its handler is done. Released when dropped.
#[derive(Debug)]
pub struct RequestPermit {
    n: usize,
    overdraft: bool,
    pool: Rc<RequestMemory>,
}

impl RequestPermit {
    pub fn bytes(&self) -> usize {
        self.n
    }
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        self.pool
            .release(self.n, self.overdraft.then_some(Holder::Request));
    }
}

/// Future of [`ConnMemory::acquire`]. Dropping it gives up its place in the queue.
pub struct Acquire<'a> {
    conn: &'a ConnMemory,
    n: usize,
    ticket: Option<u64>,
}

impl Future for Acquire<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let pool = &this.conn.pool;
        let me = Holder::Conn(this.conn.id);
        let mut inner = pool.inner.borrow_mut();
        let at_head = match this.ticket {
            None => inner.waiters.is_empty(),
            Some(t) => inner.waiters.front().is_some_and(|(h, _)| *h == t),
        };
        let fits = inner.used.saturating_add(this.n) <= pool.capacity;
        // The overdraft holder finishes its request without queueing: others wait for it.
        // Otherwise the head of the queue goes when it fits, or takes the overdraft when it
        // is free (every acquisition is for bytes of a request already begun).
        let granted = if inner.overdraft == Some(me) {
            true
        } else if !at_head {
            false
        } else if fits {
            true
        } else if inner.overdraft.is_none() {
            inner.overdraft = Some(me);
            inner.overdraft_since = Some(std::time::Instant::now());
            true
        } else {
            false
        };
        if granted {
            inner.used += this.n;
            if let Some(t) = this.ticket.take() {
                inner.waiters.retain(|(h, _)| *h != t);
            }
            // The next waiter may fit too.
            if let Some((_, w)) = inner.waiters.front() {
                w.wake_by_ref();
            }
            drop(inner);
            this.conn.held.set(this.conn.held.get() + this.n);
            return Poll::Ready(());
        }
        match this.ticket {
            Some(t) => {
                if let Some(slot) = inner.waiters.iter_mut().find(|(h, _)| *h == t) {
                    slot.1.clone_from(cx.waker());
                }
            }
            None => {
                let t = inner.next_ticket;
                inner.next_ticket += 1;
                inner.waiters.push_back((t, cx.waker().clone()));
                this.ticket = Some(t);
            }
        }
        Poll::Pending
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket {
            let mut inner = self.conn.pool.inner.borrow_mut();
            let was_head = inner.waiters.front().is_some_and(|(h, _)| *h == t);
            inner.waiters.retain(|(h, _)| *h != t);
            if was_head {
                if let Some((_, w)) = inner.waiters.front() {
                    w.wake_by_ref();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn within_budget_is_granted_at_once_and_released() {
        let pool = RequestMemory::new(100);
        let c = pool.connection();
        block_on(c.acquire(60));
        assert_eq!(pool.used(), 60);
        let permit = c.take_request(50, false);
        assert_eq!((c.held(), permit.bytes()), (10, 50));
        drop(permit);
        assert_eq!(pool.used(), 10);
        drop(c);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn over_budget_waits_until_released_and_takes_the_overdraft_once() {
        block_on(async {
            let pool = RequestMemory::new(100);
            let a = pool.connection();
            let b = pool.connection();
            let c = pool.connection();
            a.acquire(80).await;
            // b does not fit: it takes the overdraft (nobody holds it) to finish its request.
            b.acquire(50).await;
            assert_eq!(pool.used(), 130);
            b.acquire(1000).await; // the holder is never refused
                                   // c must wait: over budget and the overdraft is taken.
            let mut wait = Box::pin(c.acquire(10));
            assert!(poll_once(wait.as_mut()).await.is_none());
            // b's request completes and is handled: the overdraft comes free, c goes.
            let permit = b.take_request(1050, false);
            assert!(poll_once(wait.as_mut()).await.is_none());
            drop(permit);
            assert!(poll_once(wait.as_mut()).await.is_some());
            assert_eq!(pool.used(), 90);
        });
    }

    #[test]
    fn a_request_that_may_park_leaves_the_overdraft_behind() {
        block_on(async {
            let pool = RequestMemory::new(100);
            let a = pool.connection();
            let b = pool.connection();
            let c = pool.connection();
            a.acquire(80).await;
            b.acquire(50).await; // the overdraft
            let mut wait = Box::pin(c.acquire(10));
            assert!(poll_once(wait.as_mut()).await.is_none());
            // b's request is a long-poll: it keeps its bytes, not the overdraft, so c goes on.
            let parked = b.take_request(50, true);
            assert!(poll_once(wait.as_mut()).await.is_some());
            assert_eq!(pool.used(), 140);
            drop(parked);
            assert_eq!(pool.used(), 90);
        });
    }

    #[test]
    fn waiters_are_served_in_order() {
        block_on(async {
            let pool = RequestMemory::new(100);
            let a = pool.connection();
            let b = pool.connection();
            let c = pool.connection();
            let d = pool.connection();
            a.acquire(100).await;
            let mut wb = Box::pin(b.acquire(60)); // takes the overdraft
            assert!(poll_once(wb.as_mut()).await.is_some());
            let mut wc = Box::pin(c.acquire(90));
            let mut wd = Box::pin(d.acquire(1));
            assert!(poll_once(wc.as_mut()).await.is_none());
            // d fits nowhere either, and may not barge past c.
            assert!(poll_once(wd.as_mut()).await.is_none());
            drop(a);
            assert_eq!(pool.used(), 60);
            // 60 + 90 > 100, the overdraft is b's: c waits, and d behind it.
            assert!(poll_once(wd.as_mut()).await.is_none());
            assert!(poll_once(wc.as_mut()).await.is_none());
            drop(wb);
            drop(b);
            assert!(poll_once(wc.as_mut()).await.is_some());
            assert!(poll_once(wd.as_mut()).await.is_some());
            assert_eq!(pool.used(), 91);
        });
    }

    #[test]
    fn a_dropped_waiter_leaves_the_queue_and_a_dropped_connection_its_overdraft() {
        block_on(async {
            let pool = RequestMemory::new(10);
            let a = pool.connection();
            let b = pool.connection();
            a.acquire(20).await; // overdraft
            let mut wb = Box::pin(b.acquire(5));
            assert!(poll_once(wb.as_mut()).await.is_none());
            drop(wb);
            drop(a);
            assert_eq!(pool.used(), 0);
            b.acquire(30).await; // the overdraft came free with a
            assert_eq!(pool.used(), 30);
        });
    }

    #[test]
    fn unbounded_budget_never_waits() {
        let pool = RequestMemory::new(usize::MAX);
        let c = pool.connection();
        block_on(c.acquire(usize::MAX / 2));
        block_on(c.acquire(usize::MAX / 2));
    }
}
