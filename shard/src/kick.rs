//! `Kicker`: interrupts every shard thread's sleep at a fixed interval, so no shard can sleep past a due timer or a completed wake-up.
//!
//! Why: on this project's hosts (Linux 6.18, glommio 0.9) an executor was seen asleep in
//! `io_uring_enter` long after one of its timers was due: the shard then waits for the
//! next unrelated event, which on an idle shard may never come. It showed as a cluster node
//! that never became ready (7 of about 5,100 node starts of a loaded 2-CPU host: shard 1,
//! which then polled a flag with a 10 ms sleep, never woke). Writing the executor's eventfd (a
//! foreign wake, tried first) did not release it; attaching a debugger, which interrupts
//! the syscall, always did. So the wake-up the kernel owed the sleeping thread was lost,
//! or glommio's linked-ring sleep was waiting on nothing; the root cause is not found.
//!
//! The workaround does what the debugger did: a plain thread sends every registered shard
//! thread [`KICK_SIGNAL`] every [`KICK_INTERVAL`]. Its handler (signal-hook's, setting a
//! flag nobody reads) does next to nothing and is installed with `SA_RESTART`, so ordinary
//! system calls resume as if nothing happened, while the io_uring wait returns (or is
//! restarted, which re-checks the completion queue); glommio treats an interrupted wait as
//! a wake-up, fires its expired timers, drains its completions and foreign wakes, and
//! sleeps again. A lost wake-up then costs at most one interval instead of forever.
//!
//! Invariant: a thread is signalled only between its `register` and its `clear` (under the
//! same lock), so a thread that has exited is never signalled. Cost: one signal delivery
//! and one pass of the executor's loop per shard per interval (10 a second), measured idle
//! in `perf/results/2026-12-02-startup-hang.md`. The thread holds the kicker weakly and
//! ends within one interval of the runtime handle and the last shard thread going.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use nix::sys::pthread::{pthread_kill, pthread_self, Pthread};
use nix::sys::signal::Signal;

/// How often every shard thread is interrupted: at most this long can a lost wake-up delay
/// a shard (two Raft ticks).
pub const KICK_INTERVAL: Duration = Duration::from_millis(100);

/// The signal that interrupts a sleeping shard thread. SIGURG, as Go's runtime uses for its
/// preemption: ignored by default, so a stray one elsewhere harms nothing, and nothing in
/// sluice asks for it (no socket has an owner set with F_SETOWN).
pub const KICK_SIGNAL: Signal = Signal::SIGURG;

/// The registered shard threads.
pub(crate) struct Kicker {
    threads: Mutex<Vec<Option<Pthread>>>,
}

impl Kicker {
    /// A kicker for `shards` shards and its thread (named `name`).
    pub(crate) fn start(
        shards: usize,
        name: &str,
        every: Duration,
    ) -> std::io::Result<Arc<Kicker>> {
        install_handler()?;
        let kicker = Arc::new(Kicker {
            threads: Mutex::new(vec![None; shards]),
        });
        let weak = Arc::downgrade(&kicker);
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(weak, every))?;
        Ok(kicker)
    }

    /// The calling thread is shard `shard`'s: kick it from now on.
    pub(crate) fn register_current(&self, shard: usize) {
        let me = pthread_self();
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = threads.get_mut(shard) {
            *slot = Some(me);
        }
    }

    /// Shard `shard`'s thread is about to finish: no more kicks for it (none is under way
    /// once this returns: kicks are sent under the same lock).
    pub(crate) fn clear(&self, shard: usize) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = threads.get_mut(shard) {
            *slot = None;
        }
    }

    fn kick(&self) {
        let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for &t in threads.iter().flatten() {
            // `t` is a live thread: registered by itself and cleared before it exits, under
            // this lock (module invariant), so pthread_kill never sees a stale id.
            let sent = pthread_kill(t, KICK_SIGNAL);
            debug_assert_eq!(sent, Ok(()), "pthread_kill of a registered shard thread");
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

/// Installs the handler for [`KICK_SIGNAL`] (once per process): signal-hook's flag setter,
/// which is async-signal-safe, registered with `SA_RESTART`.
fn install_handler() -> std::io::Result<()> {
    static INSTALLED: OnceLock<Result<(), std::io::ErrorKind>> = OnceLock::new();
    let done = INSTALLED.get_or_init(|| {
        let kicked = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(KICK_SIGNAL as libc::c_int, kicked)
            .map(drop)
            .map_err(|e| e.kind())
    });
    done.map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A thread blocked in `pause()` (which only a handled signal ends) is released over
    /// and over while registered. Without the kicks it would stay blocked: the main thread
    /// then gives up waiting and the test fails (instead of hanging, which proves nothing).
    #[test]
    fn a_registered_thread_is_interrupted_until_cleared() {
        /// Far above the 5 ms interval: only a kicker that does not kick misses it.
        const PATIENCE: Duration = Duration::from_secs(30);
        let k = Kicker::start(2, "kick-test", Duration::from_millis(5)).unwrap();
        let woke = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let (k2, w2) = (k.clone(), woke.clone());
        let t = std::thread::spawn(move || {
            k2.register_current(1);
            while w2.load(Ordering::SeqCst) < 3 {
                // Returns once a handler ran.
                nix::unistd::pause();
                w2.fetch_add(1, Ordering::SeqCst);
            }
            k2.clear(1);
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(PATIENCE).is_ok(),
            "the registered thread was not kicked out of pause() ({} wake-ups)",
            woke.load(Ordering::SeqCst)
        );
        t.join().unwrap();
        assert_eq!(woke.load(Ordering::SeqCst), 3);
        // Out-of-range shards are ignored.
        k.clear(7);
    }
}
