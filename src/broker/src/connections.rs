//! Client connection admission and upkeep: per-shard and per-IP limits, the node's
//! connection creation rate (`max.connection.creation.rate`), the idle sweeper
//! (`connections.max.idle.ms`), and the process's file-descriptor limit.
//!
//! Invariants:
//! - A connection is counted (on its shard and against its IP) from accept until its task
//!   ends; the [`Admitted`] guard undoes both counts when dropped, whatever ends it.
//! - A connection is idle when nothing was read from it nor written to it for
//!   `connections.max.idle.ms` while it had no request in flight, or when one response
//!   write has not finished for that long (a client that stopped reading). The sweeper
//!   shuts an idle connection's socket down; its reader and writer then end by themselves.
//!   A request in flight (a parked fetch, bounded by `FETCH_WAIT_MAX`) keeps it alive.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Kafka's `connections.max.idle.ms` default: 10 minutes.
pub const CONNECTIONS_MAX_IDLE_DEFAULT: Duration = Duration::from_millis(600_000);
/// Kafka's `max.connections.per.ip` default (`Int.MaxValue`: no limit).
pub const MAX_CONNECTIONS_PER_IP_DEFAULT: u32 = i32::MAX as u32;
/// How often the sweeper looks for idle connections at the most; at the least it looks
/// ten times per idle period, so a connection closes within 10 % of its idle time.
const SWEEP_INTERVAL_MAX: Duration = Duration::from_secs(5);
/// How long the accept loop pauses after an accept error (EMFILE, ENFILE, ENOBUFS): long
/// enough not to spin on a condition that persists, short enough to serve again soon.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Kafka's `max.connection.creation.rate` default (`Int.MaxValue`: no limit).
pub const MAX_CONNECTION_CREATION_RATE_DEFAULT: u32 = i32::MAX as u32;

/// The node's `max.connection.creation.rate` (KIP-612): new client connections per second
/// over every listener and shard. Over it, an accept loop waits before it serves the
/// connection it accepted and before it accepts the next, as Kafka's acceptor does: the
/// connections wait in the kernel's backlog instead of being refused. (An IP over its own
/// `connection_creation_rate` quota is refused instead, see `quotas`.)
///
/// The budget holds one second of the rate (at least one connection), so a burst of that
/// size passes at once; a connection over it is drawn as debt, and the loop that accepted it
/// waits until the rate has paid it back. Each accept loop waits for its own connection, so
/// with several loops the debt is at most one connection per loop.
pub struct CreationRate {
    per_second: f64,
    /// Connections that may be accepted now (negative: debt), as of the instant.
    budget: Mutex<(f64, Instant)>,
}

impl CreationRate {
    /// `None` for Kafka's default (`Int.MaxValue`), which sets no limit.
    pub fn new(per_second: u32) -> Option<CreationRate> {
        assert!(
            per_second >= 1,
            "max.connection.creation.rate is at least 1"
        );
        (per_second < MAX_CONNECTION_CREATION_RATE_DEFAULT).then(|| CreationRate {
            per_second: f64::from(per_second),
            budget: Mutex::new((f64::from(per_second), Instant::now())),
        })
    }

    /// Takes one new connection at `now`; how long its accept loop waits before serving it.
    pub fn take(&self, now: Instant) -> Duration {
        let mut b = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(b.1).as_secs_f64();
        b.0 = (b.0 + elapsed * self.per_second).min(self.per_second.max(1.0)) - 1.0;
        b.1 = now;
        if b.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.0 / self.per_second)
        }
    }
}

/// What one connection's tasks report so the sweeper can tell it is idle.
#[derive(Debug)]
pub struct Activity {
    last: Cell<Instant>,
    inflight: Cell<usize>,
    writing_since: Cell<Option<Instant>>,
}

impl Activity {
    fn new(now: Instant) -> Activity {
        Activity {
            last: Cell::new(now),
            inflight: Cell::new(0),
            writing_since: Cell::new(None),
        }
    }
    /// Bytes were read from the client.
    pub fn read(&self) {
        self.last.set(Instant::now());
    }
    /// A request was taken in (its response, if any, is now owed).
    pub fn request_started(&self) {
        self.inflight.set(self.inflight.get() + 1);
    }
    /// A response write starts.
    pub fn write_started(&self) {
        self.writing_since.set(Some(Instant::now()));
    }
    /// The request's response was written (or none was due).
    pub fn request_done(&self) {
        self.inflight.set(self.inflight.get().saturating_sub(1));
        self.writing_since.set(None);
        self.last.set(Instant::now());
    }
    fn idle(&self, now: Instant, max_idle: Duration) -> bool {
        let stalled_write = self
            .writing_since
            .get()
            .is_some_and(|t| now.duration_since(t) >= max_idle);
        let quiet = self.inflight.get() == 0 && now.duration_since(self.last.get()) >= max_idle;
        stalled_write || quiet
    }
}

/// Process-wide connection counts per client IP (`max.connections.per.ip`). Touched only at
/// accept and close, never on the request path.
#[derive(Debug, Default)]
pub struct PerIp {
    counts: Mutex<HashMap<IpAddr, u32>>,
}

impl PerIp {
    fn try_add(&self, ip: IpAddr, max: u32) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }
    fn remove(&self, ip: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }
}

/// Why a new connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    ShardFull,
    PerIp,
}

/// One shard's connections. Owned by that shard; `!Send`.
pub struct Connections {
    per_shard_max: usize,
    per_ip_max: u32,
    max_idle: Duration,
    per_ip: Arc<PerIp>,
    next_id: Cell<u64>,
    live: RefCell<HashMap<u64, (RawFd, Rc<Activity>)>>,
}

/// A connection's admission: holds its counts until dropped.
pub struct Admitted {
    id: u64,
    ip: Option<IpAddr>,
    owner: Rc<Connections>,
    pub activity: Rc<Activity>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.owner.live.borrow_mut().remove(&self.id);
        sluice_metrics::recorder::connection_closed();
        if let Some(ip) = self.ip {
            self.owner.per_ip.remove(ip);
        }
    }
}

impl Connections {
    pub fn new(
        per_shard_max: usize,
        per_ip_max: u32,
        max_idle: Duration,
        per_ip: Arc<PerIp>,
    ) -> Rc<Connections> {
        Rc::new(Connections {
            per_shard_max,
            per_ip_max,
            max_idle,
            per_ip,
            next_id: Cell::new(0),
            live: RefCell::new(HashMap::new()),
        })
    }

    /// Counts a new connection from `ip` (None: unknown peer, counted per shard only) on
    /// socket `fd`, or says why it is refused.
    pub fn admit(self: &Rc<Self>, ip: Option<IpAddr>, fd: RawFd) -> Result<Admitted, Refused> {
        if self.live.borrow().len() >= self.per_shard_max {
            return Err(Refused::ShardFull);
        }
        if let Some(ip) = ip {
            if !self.per_ip.try_add(ip, self.per_ip_max) {
                return Err(Refused::PerIp);
            }
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let activity = Rc::new(Activity::new(Instant::now()));
        self.live.borrow_mut().insert(id, (fd, activity.clone()));
        sluice_metrics::recorder::connection_opened();
        Ok(Admitted {
            id,
            ip,
            owner: self.clone(),
            activity,
        })
    }

    pub fn count(&self) -> usize {
        self.live.borrow().len()
    }

    /// How long the sweeper sleeps between looks.
    pub fn sweep_interval(&self) -> Duration {
        (self.max_idle / 10).clamp(Duration::from_millis(10), SWEEP_INTERVAL_MAX)
    }

    /// Shutdown, first step: shuts down the reading side of every connection's socket, so a
    /// reader waiting for a request wakes up (and, with the shard draining, takes no more);
    /// responses still go out.
    pub fn stop_reading(&self) {
        self.shutdown_all(libc::SHUT_RD);
    }

    /// Shutdown, when draining took too long: ends every remaining connection's traffic.
    pub fn close_all(&self) {
        self.shutdown_all(libc::SHUT_RDWR);
    }

    fn shutdown_all(&self, how: libc::c_int) {
        for (fd, _) in self.live.borrow().values() {
            // SAFETY: as in `sweep`: the connection is registered, so its stream owns the
            // open descriptor; shutdown only ends traffic.
            unsafe {
                libc::shutdown(*fd, how);
            }
        }
    }

    /// Shuts down every idle connection's socket; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let idle: Vec<RawFd> = self
            .live
            .borrow()
            .values()
            .filter(|(_, a)| a.idle(now, self.max_idle))
            .map(|(fd, _)| *fd)
            .collect();
        for &fd in &idle {
            // SAFETY: `fd` belongs to a connection still registered, so its stream (which
            // owns the descriptor) is alive; shutdown only ends the connection's traffic,
            // and the stream's owner closes the descriptor when its tasks end.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
        }
        idle.len()
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (each connection and each segment file
/// holds a descriptor; distributions often start processes with a soft limit of 1024).
/// Returns the limit in force.
pub fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // `None` is unlimited.
    let r = getrlimit(Resource::Nofile);
    let (soft, hard) = (r.current.unwrap_or(u64::MAX), r.maximum.unwrap_or(u64::MAX));
    if soft < hard {
        // Raising the soft limit up to the hard one needs no privilege.
        let raised = Rlimit {
            current: r.maximum,
            maximum: r.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return Some(hard);
        }
    }
    Some(soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_rate_passes_a_seconds_burst_then_paces_the_rest() {
        assert!(CreationRate::new(MAX_CONNECTION_CREATION_RATE_DEFAULT).is_none());
        let r = CreationRate::new(4).expect("a limit");
        let t = r.budget.lock().unwrap().1;
        for _ in 0..4 {
            assert_eq!(r.take(t), Duration::ZERO);
        }
        // The fifth waits a quarter second, the sixth (same instant) half a second.
        assert_eq!(r.take(t), Duration::from_millis(250));
        assert_eq!(r.take(t), Duration::from_millis(500));
        // Once the debt is paid and a connection's worth refilled, one passes at once.
        assert_eq!(r.take(t + Duration::from_millis(750)), Duration::ZERO);
        // An idle second refills the burst, not more.
        let later = t + Duration::from_secs(60);
        for _ in 0..4 {
            assert_eq!(r.take(later), Duration::ZERO);
        }
        assert!(!r.take(later).is_zero());
    }

    #[test]
    fn idle_rules() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(10);
        let a = Activity::new(t0);
        assert!(!a.idle(t0 + Duration::from_secs(9), idle));
        assert!(a.idle(t0 + Duration::from_secs(10), idle), "quiet");
        a.request_started();
        assert!(
            !a.idle(t0 + Duration::from_secs(60), idle),
            "a request in flight keeps it"
        );
        a.write_started();
        let w = a.writing_since.get().unwrap();
        assert!(!a.idle(w + Duration::from_secs(9), idle));
        assert!(a.idle(w + Duration::from_secs(10), idle), "stalled write");
        a.request_done();
        assert!(!a.idle(Instant::now(), idle));
    }

    #[test]
    fn limits_per_shard_and_per_ip() {
        let per_ip = Arc::new(PerIp::default());
        let c = Connections::new(3, 2, Duration::from_secs(1), per_ip.clone());
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let other: IpAddr = "127.0.0.10".parse().unwrap();
        let a = c.admit(Some(ip), -1).unwrap();
        let _b = c.admit(Some(ip), -1).unwrap();
        assert_eq!(c.admit(Some(ip), -1).err(), Some(Refused::PerIp));
        let _d = c.admit(Some(other), -1).unwrap();
        assert_eq!(c.admit(Some(other), -1).err(), Some(Refused::ShardFull));
        drop(a);
        assert_eq!(c.count(), 2);
        let _e = c
            .admit(Some(ip), -1)
            .expect("a closed connection frees its counts");
        // A second shard shares the per-IP counts.
        let c2 = Connections::new(3, 2, Duration::from_secs(1), per_ip);
        assert_eq!(c2.admit(Some(ip), -1).err(), Some(Refused::PerIp));
    }
}
