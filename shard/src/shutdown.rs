//! `Shutdown`: a cross-thread stop signal every shard can check cheaply or await, plus SIGTERM/SIGINT wiring.
//!
//! Built from a mutex-protected waker list plus an atomic mirror of the flag for lock-free
//! polling in hot loops. The flag is only ever written under the mutex, and a waiter re-checks
//! it under the same mutex before parking its waker, so a trigger can never slip between a
//! waiter's check and its registration (no lost wake-up). Waking a glommio task from a foreign
//! thread is supported by glommio (the waker is queued to the owning executor and its eventfd
//! is kicked). The protocol is model-checked with loom in `loom_tests` below.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[cfg(loom)]
use loom::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex, MutexGuard,
};
#[cfg(not(loom))]
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex, MutexGuard,
};

/// The stop signal. Cloning shares it; `Send + Sync`, usable from any thread.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown {
            inner: Arc::new(Inner {
                stopped: AtomicBool::new(false),
                waiters: Mutex::new(Waiters::default()),
            }),
        }
    }
}

struct Inner {
    /// Mirror of `Waiters::stopped` for lock-free checks; written only under the mutex.
    stopped: AtomicBool,
    waiters: Mutex<Waiters>,
}

#[derive(Default)]
struct Waiters {
    stopped: bool,
    next_key: u64,
    /// One entry per pending `ShutdownWait`, keyed so re-polls replace rather than pile up.
    wakers: Vec<(u64, Waker)>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Waiters> {
        // A panic while holding this lock cannot leave `Waiters` inconsistent (every update is a
        // single push/retain/assignment), so a poisoned lock is still safe to use.
        match self.waiters.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Requests shutdown and wakes every waiter. Idempotent.
    pub fn trigger(&self) {
        let wakers = {
            let mut w = self.inner.lock();
            w.stopped = true;
            self.inner.stopped.store(true, Ordering::Release);
            std::mem::take(&mut w.wakers)
        };
        // Wake outside the lock: a woken task on another thread may poll and lock immediately.
        for (_, waker) in wakers {
            waker.wake();
        }
    }

    /// Whether shutdown was requested. One atomic load; fine to call per request.
    pub fn is_triggered(&self) -> bool {
        self.inner.stopped.load(Ordering::Acquire)
    }

    /// A future that completes once shutdown is requested (immediately if it already was).
    pub fn wait(&self) -> ShutdownWait {
        ShutdownWait {
            inner: self.inner.clone(),
            key: None,
        }
    }
}

/// Future returned by [`Shutdown::wait`].
pub struct ShutdownWait {
    inner: Arc<Inner>,
    key: Option<u64>,
}

impl Future for ShutdownWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.inner.stopped.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let mut w = this.inner.lock();
        if w.stopped {
            return Poll::Ready(());
        }
        match this.key {
            Some(key) => match w.wakers.iter_mut().find(|(k, _)| *k == key) {
                Some((_, waker)) => waker.clone_from(cx.waker()),
                None => w.wakers.push((key, cx.waker().clone())),
            },
            None => {
                let key = w.next_key;
                w.next_key += 1;
                w.wakers.push((key, cx.waker().clone()));
                this.key = Some(key);
            }
        }
        Poll::Pending
    }
}

impl Drop for ShutdownWait {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.inner.lock().wakers.retain(|(k, _)| *k != key);
        }
    }
}

/// Turns the first SIGTERM or SIGINT into `shutdown.trigger()`; a second one exits at once (130).
///
/// The handlers come from signal-hook: whichever thread the kernel picks runs one, which
/// only writes to a self-pipe (async-signal-safe) and lets an interrupted system call
/// resume (`SA_RESTART`); the dedicated `sluice-signals` thread reads the pipe and acts.
#[cfg(not(loom))]
pub fn trigger_on_signals(shutdown: &Shutdown) -> Result<(), crate::ShardError> {
    use crate::ShardError;
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| ShardError::io("installing the SIGTERM/SIGINT handlers", e))?;
    let shutdown = shutdown.clone();
    std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            for (seen, sig) in signals.forever().enumerate() {
                if seen == 0 {
                    log::info!("signal {sig} received: shutting down (send again to exit now)");
                    shutdown.trigger();
                } else {
                    log::warn!("second signal {sig}: exiting without a clean shutdown");
                    std::process::exit(130);
                }
            }
            log::error!("the signal pipe closed; signals no longer trigger shutdown");
        })
        .map_err(|e| ShardError::io("spawning the signal thread", e))?;
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn wait_completes_after_trigger_from_another_thread() {
        let s = Shutdown::new();
        let s2 = s.clone();
        let waiter = std::thread::spawn(move || futures_lite::future::block_on(s2.wait()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!s.is_triggered());
        s.trigger();
        waiter.join().unwrap();
        assert!(s.is_triggered());
        // Already triggered: completes immediately, and triggering again is harmless.
        futures_lite::future::block_on(s.wait());
        s.trigger();
    }

    #[test]
    fn dropped_waiters_leave_no_wakers() {
        let s = Shutdown::new();
        for _ in 0..3 {
            let mut w = s.wait();
            let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| {
                Poll::Ready(cx.waker().clone())
            }));
            let mut cx = Context::from_waker(&waker);
            assert!(Pin::new(&mut w).poll(&mut cx).is_pending());
            assert!(Pin::new(&mut w).poll(&mut cx).is_pending());
            assert_eq!(s.inner.lock().wakers.len(), 1);
        }
        assert!(s.inner.lock().wakers.is_empty());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    #[test]
    fn trigger_always_wakes_a_waiter() {
        loom::model(|| {
            let s = Shutdown::new();
            let s2 = s.clone();
            let t = loom::thread::spawn(move || s2.trigger());
            loom::future::block_on(s.wait());
            assert!(s.is_triggered());
            t.join().unwrap();
        });
    }

    /// A waiter that registers and is then dropped while another thread triggers: the
    /// trigger must not wake a freed registration, and no waker may be left behind.
    #[test]
    fn cancelled_waiter_races_trigger() {
        loom::model(|| {
            let s = Shutdown::new();
            let s2 = s.clone();
            let t = loom::thread::spawn(move || s2.trigger());
            {
                let mut w = s.wait();
                let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| {
                    Poll::Ready(cx.waker().clone())
                }));
                let mut cx = Context::from_waker(&waker);
                let _ = Pin::new(&mut w).poll(&mut cx);
            }
            t.join().unwrap();
            assert!(s.is_triggered());
            assert!(s.inner.lock().wakers.is_empty());
        });
    }
}
