//! Fault-injecting TCP proxy for multi-node tests: sits between two real processes on
//! loopback and lets the test thread delay, black-hole, one-way drop or cut their traffic at
//! runtime, without root or network namespaces.
//!
//! `Proxy::start(target)` listens on a free loopback port ([`Proxy::addr`]) and forwards every
//! accepted connection to `target`. In the names below **A** is the side that dialed the proxy
//! and **B** is the target. Each call to a fault method replaces the whole fault state (faults
//! do not stack; [`Proxy::set`] combines per-direction modes):
//!
//! - [`Proxy::pass`] / [`Proxy::heal`]: forward as fast as the sockets allow.
//! - [`Proxy::delay`]: every chunk is delivered no earlier than `d` after the proxy read it,
//!   in order, in each direction (a round trip gains `2 d`). Throughput is bounded by the queue:
//!   about `QUEUE_CHUNKS_MAX * CHUNK_MAX` bytes per direction per `d`, like a TCP window over a
//!   long link.
//! - [`Proxy::blackhole`]: connections stay open, both directions' bytes (and FIN/RST) are read
//!   and silently discarded, new connections are accepted and connected to B and behave the
//!   same: what an isolated node looks like to its peers.
//! - [`Proxy::drop_a_to_b`] / [`Proxy::drop_b_to_a`]: the same, in one direction only.
//! - [`Proxy::cut`]: every current connection is reset (both A and B see it closed), and new
//!   connections are accepted and immediately reset until the state changes: a crashed or
//!   firewalled-with-reject peer.
//!
//! What it cannot do, and why:
//!
//! - Faults act on TCP byte streams, not messages: it cannot reorder, duplicate or corrupt
//!   bytes within a stream (TCP never does), and a chunk boundary means nothing to the peers.
//!   Message-level faults (drop one Raft message, reorder, duplicate) belong to the
//!   deterministic Raft simulator in `src/raft`, not here.
//! - A stream never resumes with a hole in it: once bytes were discarded in a direction, the
//!   connection is reset as soon as that direction stops dropping (on [`Proxy::heal`] or any
//!   other state change), and never delivers another byte. Real TCP would retransmit after a
//!   partition heals; the proxy cannot, because it has already acknowledged and discarded the
//!   bytes, so the peers see a reset instead and must reconnect (which they must survive anyway).
//! - The proxy acknowledges bytes at the TCP level even while dropping them, so a sender
//!   behind a black hole never sees its socket buffer fill up as it would across a real
//!   partition; its writes keep succeeding and only its own timeouts notice the silence.
//! - One proxy forwards one dialing direction. When both nodes of a pair dial each other, give
//!   each dialing direction its own proxy; a one-way fault X↛Y is then `drop_a_to_b` on X's
//!   proxy to Y plus `drop_b_to_a` on Y's proxy to X.
//!
//! Implementation: plain threads (the sockets are blocking; a handful of connections per test).
//! An accept thread per proxy; per connection a reader and a writer thread per direction joined
//! by a bounded chunk queue, so a slow receiver back-pressures the sender through TCP and the
//! memory per direction stays below `(QUEUE_CHUNKS_MAX + 3) * CHUNK_MAX` (the queue, one chunk
//! waiting to enter it, one being written, the read buffer). The writer decides a
//! chunk's fate (deliver, wait out the delay, drop) under the fault-state lock, at delivery
//! time, so a state change applies to bytes already queued. Socket errors and peer resets end
//! that connection (propagated as a reset to the other side), never the proxy, and never panic.
//! Dropping the [`Proxy`] resets every connection, closes the listener and joins every thread
//! before it returns, so its port is free and nothing keeps running.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Largest chunk read from a socket and queued at once (one `read` call's buffer).
pub const CHUNK_MAX: usize = 64 * 1024;
/// Chunks queued per direction of a connection before the reader stops reading (back-pressure).
pub const QUEUE_CHUNKS_MAX: usize = 16;
/// How long the proxy waits to connect to the target before resetting the dialer's connection.
/// Bounded so that dropping a proxy whose target stopped accepting cannot hang for long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Stack per proxy thread: they only shuffle buffers that live on the heap.
const THREAD_STACK: usize = 128 * 1024;
/// Back-off after a failed `accept` (e.g. out of file descriptors), so the loop never spins.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);

/// A direction of traffic through the proxy: A is the side that dialed, B the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the dialer to the target.
    AToB,
    /// From the target back to the dialer.
    BToA,
}

impl Direction {
    const BOTH: [Direction; 2] = [Direction::AToB, Direction::BToA];

    fn index(self) -> usize {
        match self {
            Direction::AToB => 0,
            Direction::BToA => 1,
        }
    }

    /// Short tag for thread names (which Linux truncates to 15 bytes).
    fn tag(self) -> &'static str {
        match self {
            Direction::AToB => "ab",
            Direction::BToA => "ba",
        }
    }
}

/// What happens to the bytes of one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Delivered as soon as possible.
    Pass,
    /// Delivered no earlier than this long after the proxy read them, in order.
    Delay(Duration),
    /// Read and discarded (the connection stays open; see the module docs for what heals it).
    Drop,
}

/// Traffic of one direction, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// Bytes written to the receiving side.
    pub forwarded: u64,
    /// Bytes read and discarded because the direction was dropping.
    pub dropped: u64,
}

/// A snapshot of what went through a proxy since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub a_to_b: Flow,
    pub b_to_a: Flow,
    /// Connections accepted from dialers (including the ones then refused or failed).
    pub accepted: u64,
    /// Connections reset at accept because the proxy was cut.
    pub refused: u64,
    /// Connections reset because the target could not be reached.
    pub upstream_failed: u64,
    /// Forwarded connections the proxy reset: cut, heal after lost bytes, a peer's reset or
    /// a write error propagated to the other side, or the proxy being dropped.
    pub reset: u64,
    /// Forwarded connections currently open (their threads still running).
    pub active: u64,
}

impl Counters {
    /// The flow of `dir`.
    pub fn flow(&self, dir: Direction) -> Flow {
        match dir {
            Direction::AToB => self.a_to_b,
            Direction::BToA => self.b_to_a,
        }
    }
}

/// The fault state, changed by the test thread and read by every writer at delivery time.
struct State {
    modes: [Mode; 2],
    cut: bool,
    shutdown: bool,
}

/// Everything the proxy's threads share. Lock order: `state` before `conns` before `threads`.
struct Shared {
    port: u16,
    target: SocketAddr,
    state: Mutex<State>,
    /// Signalled on every state change and connection reset, so delayed writers re-decide.
    changed: Condvar,
    /// Live forwarded connections, for cut, heal and shutdown to reach them. Weak: a
    /// connection is owned by its threads and goes away with the last of them.
    conns: Mutex<Vec<Weak<Conn>>>,
    /// Every thread the proxy started and has not joined yet (Drop joins them all).
    threads: Mutex<Vec<JoinHandle<()>>>,
    forwarded: [AtomicU64; 2],
    dropped: [AtomicU64; 2],
    accepted: AtomicU64,
    refused: AtomicU64,
    upstream_failed: AtomicU64,
    reset: AtomicU64,
    active: AtomicU64,
}

/// A mutex guard even if a thread panicked while holding it: the state is plain data that is
/// valid after any partial update, and the proxy must keep working (and shut down) regardless.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes the socket's eventual close send a reset instead of a FIN, and leave no TIME_WAIT:
/// what the peers of a cut or refused connection should see.
fn set_linger_zero(s: &impl AsRawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid, open socket fd (borrowed from its owner) and a correctly sized option
    // value; failure only means a FIN instead of a reset, which closes the connection as well.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

impl Shared {
    /// Starts a named proxy thread and records it for Drop to join. `None` if the OS refused
    /// (the caller then resets what the thread would have served).
    fn spawn(
        self: &Arc<Self>,
        role: &str,
        f: impl FnOnce() + Send + 'static,
    ) -> Option<JoinHandle<()>> {
        let name = format!("px{}-{role}", self.port);
        let handle = thread::Builder::new()
            .name(name)
            .stack_size(THREAD_STACK)
            .spawn(f)
            .ok()?;
        Some(handle)
    }

    /// Like `spawn`, but the handle goes to the registry Drop joins from.
    fn spawn_tracked(self: &Arc<Self>, role: &str, f: impl FnOnce() + Send + 'static) -> bool {
        match self.spawn(role, f) {
            Some(h) => {
                let mut threads = lock(&self.threads);
                // Finished threads' handles are dropped (detaching a finished thread is free),
                // so a long test with many reconnects does not grow this list.
                threads.retain(|t| !t.is_finished());
                threads.push(h);
                true
            }
            None => false,
        }
    }
}

/// One forwarded connection: the dialer's socket `a` and the target's socket `b`. The four
/// pump threads use clones of these; shutting these down wakes and ends all of them.
struct Conn {
    shared: Arc<Shared>,
    a: TcpStream,
    b: TcpStream,
    dead: AtomicBool,
    /// Per direction: bytes (or the FIN) were discarded, so the stream has a hole and must
    /// never deliver again.
    lost: [AtomicBool; 2],
}

impl Conn {
    fn new(shared: Arc<Shared>, a: TcpStream, b: TcpStream) -> Conn {
        shared.active.fetch_add(1, Ordering::Relaxed);
        Conn {
            shared,
            a,
            b,
            dead: AtomicBool::new(false),
            lost: [AtomicBool::new(false), AtomicBool::new(false)],
        }
    }

    /// Resets both sides: each peer's next read sees the connection closed and the pump
    /// threads' blocked reads and writes return. Idempotent. Takes no lock, so it may be
    /// called with the state lock held.
    fn reset(&self) {
        if self.dead.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared.reset.fetch_add(1, Ordering::Relaxed);
        set_linger_zero(&self.a);
        set_linger_zero(&self.b);
        let _ = self.a.shutdown(Shutdown::Both);
        let _ = self.b.shutdown(Shutdown::Both);
        self.shared.changed.notify_all();
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a reader hands its writer.
enum Item {
    /// Bytes and when the proxy read them (the delay counts from then).
    Data(Instant, Vec<u8>),
    /// The sender closed its side cleanly: forward a FIN.
    End(Instant),
    /// The sender's side failed (reset): reset the receiving side too.
    Abort(Instant),
}

impl Item {
    fn read_at(&self) -> Instant {
        match self {
            Item::Data(at, _) | Item::End(at) | Item::Abort(at) => *at,
        }
    }

    fn len(&self) -> usize {
        match self {
            Item::Data(_, bytes) => bytes.len(),
            Item::End(_) | Item::Abort(_) => 0,
        }
    }
}

/// A writer's verdict on the next item.
enum Verdict {
    Deliver,
    Discarded,
    Stop,
}

/// A fault-injecting TCP proxy in front of one target; see the module docs. Dropping it
/// stops everything and frees its port.
pub struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// Also held by the accept thread; kept here so Drop can shut it down (waking a blocked
    /// `accept`) while the fd is certainly still open.
    listener: Arc<TcpListener>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to `target`, passing
    /// everything until told otherwise. Panics if no port or thread can be had (a test
    /// environment problem, not a fault to inject).
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|e| panic!("proxy to {target}: bind a loopback port: {e}"));
        let addr = listener.local_addr().expect("proxy listener address");
        let listener = Arc::new(listener);
        let shared = Arc::new(Shared {
            port: addr.port(),
            target,
            state: Mutex::new(State {
                modes: [Mode::Pass; 2],
                cut: false,
                shutdown: false,
            }),
            changed: Condvar::new(),
            conns: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            forwarded: [AtomicU64::new(0), AtomicU64::new(0)],
            dropped: [AtomicU64::new(0), AtomicU64::new(0)],
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            upstream_failed: AtomicU64::new(0),
            reset: AtomicU64::new(0),
            active: AtomicU64::new(0),
        });
        let (s, l) = (shared.clone(), listener.clone());
        let accept = shared
            .spawn("acc", move || accept_loop(&s, &l))
            .unwrap_or_else(|| panic!("proxy to {target}: spawn the accept thread"));
        Proxy {
            shared,
            addr,
            listener,
            accept: Some(accept),
        }
    }

    /// Where dialers connect (A's side of the proxy).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections are forwarded (B).
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Forward everything, both ways (the initial state).
    pub fn pass(&self) {
        self.set(Mode::Pass, Mode::Pass);
    }

    /// Back to [`Proxy::pass`] after any fault. Connections that lost bytes are reset (see the
    /// module docs); the rest carry on.
    pub fn heal(&self) {
        self.pass();
    }

    /// Delay every chunk by `d` in both directions, order kept.
    pub fn delay(&self, d: Duration) {
        self.set(Mode::Delay(d), Mode::Delay(d));
    }

    /// Discard everything in both directions; connections stay open.
    pub fn blackhole(&self) {
        self.set(Mode::Drop, Mode::Drop);
    }

    /// Discard what A sends to B; B's replies still reach A.
    pub fn drop_a_to_b(&self) {
        self.set(Mode::Drop, Mode::Pass);
    }

    /// Discard what B sends to A; A's bytes still reach B.
    pub fn drop_b_to_a(&self) {
        self.set(Mode::Pass, Mode::Drop);
    }

    /// Per-direction modes, not cut. Replaces the whole fault state.
    pub fn set(&self, a_to_b: Mode, b_to_a: Mode) {
        self.apply([a_to_b, b_to_a], false);
    }

    /// Reset every current connection and every new one until the state changes.
    pub fn cut(&self) {
        self.apply([Mode::Pass; 2], true);
    }

    /// What went through so far.
    pub fn counters(&self) -> Counters {
        let s = &self.shared;
        let flow = |dir: Direction| Flow {
            forwarded: s.forwarded[dir.index()].load(Ordering::Relaxed),
            dropped: s.dropped[dir.index()].load(Ordering::Relaxed),
        };
        Counters {
            a_to_b: flow(Direction::AToB),
            b_to_a: flow(Direction::BToA),
            accepted: s.accepted.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            upstream_failed: s.upstream_failed.load(Ordering::Relaxed),
            reset: s.reset.load(Ordering::Relaxed),
            active: s.active.load(Ordering::Relaxed),
        }
    }

    fn apply(&self, modes: [Mode; 2], cut: bool) {
        let shared = &self.shared;
        let mut st = lock(&shared.state);
        st.modes = modes;
        st.cut = cut;
        // Under the state lock: a writer marks `lost` under it too, so every connection with a
        // hole is either seen here or sees the new state itself (and resets before delivering).
        for conn in lock(&shared.conns).iter().filter_map(Weak::upgrade) {
            let hole_heals = Direction::BOTH.iter().any(|d| {
                conn.lost[d.index()].load(Ordering::SeqCst) && modes[d.index()] != Mode::Drop
            });
            if cut || hole_heals {
                conn.reset();
            }
        }
        drop(st);
        shared.changed.notify_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let shared = &self.shared;
        {
            let mut st = lock(&shared.state);
            st.shutdown = true;
            for conn in lock(&shared.conns).iter().filter_map(Weak::upgrade) {
                conn.reset();
            }
        }
        shared.changed.notify_all();
        // On Linux, shutting down a listening socket wakes a blocked accept() with EINVAL and
        // refuses further connections; the accept thread then sees `shutdown` and returns.
        // SAFETY: the listener is alive (this struct holds an Arc to it).
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        // Connection threads may start others until they see the shutdown; loop until a
        // round finds nothing left to join.
        loop {
            let threads = std::mem::take(&mut *lock(&shared.threads));
            if threads.is_empty() {
                break;
            }
            for t in threads {
                let _ = t.join();
            }
        }
        // The listener closes when `self.listener`, now its last owner, drops after this.
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    loop {
        let accepted = listener.accept();
        let st = lock(&shared.state);
        if st.shutdown {
            if let Ok((a, _)) = accepted {
                set_linger_zero(&a);
            }
            return;
        }
        let a = match accepted {
            Ok((a, _)) => a,
            Err(_) => {
                drop(st);
                thread::sleep(ACCEPT_RETRY);
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        if st.cut {
            // Accept-then-reset rather than closing the listener: the port stays ours, and the
            // dialer sees its connection fail just the same.
            shared.refused.fetch_add(1, Ordering::Relaxed);
            set_linger_zero(&a);
            continue;
        }
        drop(st);
        // Connecting to the target happens on the connection's own thread, so a slow target
        // never holds up other dialers.
        let s = shared.clone();
        let a_keep = a.try_clone();
        if !shared.spawn_tracked("up", move || connect_upstream(&s, a)) {
            if let Ok(a) = a_keep {
                set_linger_zero(&a);
                let _ = a.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Connects an accepted dialer to the target and starts its four pump threads.
fn connect_upstream(shared: &Arc<Shared>, a: TcpStream) {
    let b = match TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) {
        Ok(b) => b,
        Err(_) => {
            shared.upstream_failed.fetch_add(1, Ordering::Relaxed);
            set_linger_zero(&a);
            return;
        }
    };
    // The proxy must add no latency of its own; the peers set their own options on their ends.
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let clones = clone_pair(&a, &b);
    let conn = Arc::new(Conn::new(shared.clone(), a, b));
    let Ok((a_read, a_write, b_read, b_write)) = clones else {
        conn.reset();
        return;
    };
    {
        // Registered under the state lock, so a concurrent cut or shutdown either finds this
        // connection or is seen here.
        let st = lock(&shared.state);
        if st.shutdown || st.cut {
            if st.cut {
                shared.refused.fetch_add(1, Ordering::Relaxed);
            }
            conn.reset();
            return;
        }
        let mut conns = lock(&shared.conns);
        conns.retain(|c| c.strong_count() > 0);
        conns.push(Arc::downgrade(&conn));
    }
    let pumps = [
        (Direction::AToB, a_read, b_write),
        (Direction::BToA, b_read, a_write),
    ];
    for (dir, src, dst) in pumps {
        let (tx, rx) = mpsc::sync_channel(QUEUE_CHUNKS_MAX);
        let c = conn.clone();
        let reader_ok =
            shared.spawn_tracked(&format!("{}-r", dir.tag()), move || pump_read(&c, src, tx));
        let c = conn.clone();
        let writer_ok = shared.spawn_tracked(&format!("{}-w", dir.tag()), move || {
            pump_write(&c, dir, dst, rx)
        });
        if !(reader_ok && writer_ok) {
            // Whatever did start sees the reset and ends.
            conn.reset();
            return;
        }
    }
}

/// The four pump threads' handles on a connection's two sockets.
fn clone_pair(
    a: &TcpStream,
    b: &TcpStream,
) -> io::Result<(TcpStream, TcpStream, TcpStream, TcpStream)> {
    Ok((
        a.try_clone()?,
        a.try_clone()?,
        b.try_clone()?,
        b.try_clone()?,
    ))
}

/// Reads chunks from one side and queues them for the writer; blocks (back-pressure) while the
/// queue is full. Ends on EOF, error, or when the writer has gone.
fn pump_read(conn: &Conn, mut src: TcpStream, tx: SyncSender<Item>) {
    let mut buf = vec![0u8; CHUNK_MAX];
    loop {
        match src.read(&mut buf) {
            Ok(0) => {
                let _ = tx.send(Item::End(Instant::now()));
                return;
            }
            Ok(n) => {
                if tx
                    .send(Item::Data(Instant::now(), buf[..n].to_vec()))
                    .is_err()
                {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // Our own reset also lands here; the writer then finds the connection dead.
                if !conn.is_dead() {
                    let _ = tx.send(Item::Abort(Instant::now()));
                }
                return;
            }
        }
    }
}

/// Delivers, delays or discards queued items according to the fault state at delivery time.
fn pump_write(conn: &Conn, dir: Direction, mut dst: TcpStream, rx: Receiver<Item>) {
    let shared = &conn.shared;
    while let Ok(item) = rx.recv() {
        match verdict(conn, dir, &item) {
            Verdict::Stop => return,
            Verdict::Discarded => continue,
            Verdict::Deliver => {}
        }
        match item {
            Item::Data(_, bytes) => {
                if dst.write_all(&bytes).is_err() {
                    // The receiver is gone: tell the sender the same way.
                    conn.reset();
                    return;
                }
                shared.forwarded[dir.index()].fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Item::End(_) => {
                // Half-close: the other direction may still be carrying a reply.
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
            Item::Abort(_) => {
                conn.reset();
                return;
            }
        }
    }
}

/// Decides under the state lock what happens to `item`, waiting out a delay (re-deciding on
/// every state change, so a heal releases delayed chunks at once and a blackhole catches them).
fn verdict(conn: &Conn, dir: Direction, item: &Item) -> Verdict {
    let shared = &conn.shared;
    let d = dir.index();
    let mut st = lock(&shared.state);
    loop {
        if st.shutdown || conn.is_dead() {
            return Verdict::Stop;
        }
        match st.modes[d] {
            Mode::Drop => {
                conn.lost[d].store(true, Ordering::SeqCst);
                shared.dropped[d].fetch_add(item.len() as u64, Ordering::Relaxed);
                return Verdict::Discarded;
            }
            Mode::Pass => break,
            Mode::Delay(delay) => {
                let due = item.read_at() + delay;
                let now = Instant::now();
                if now >= due {
                    break;
                }
                st = shared
                    .changed
                    .wait_timeout(st, due - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }
    if conn.lost[d].load(Ordering::SeqCst) {
        // Delivering now would splice the stream around a hole.
        conn.reset();
        return Verdict::Stop;
    }
    Verdict::Deliver
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poll_until;

    /// Guard for reads that must succeed: a broken proxy fails the test instead of hanging it.
    const MUST: Duration = Duration::from_secs(10);
    /// How long a read waits to show that nothing arrives. Only ever a lower bound on silence:
    /// a slow machine cannot make these tests fail, only a proxy that forwards.
    const SILENCE: Duration = Duration::from_millis(300);

    /// A target listener the test accepts from itself, so it holds both ends.
    fn target() -> TcpListener {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        l.set_nonblocking(true).unwrap();
        l
    }

    fn accept_within(l: &TcpListener, timeout: Duration) -> Option<TcpStream> {
        let deadline = Instant::now() + timeout;
        loop {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(MUST)).unwrap();
                    return Some(s);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// A dialer connected through `proxy`, and the target's end of the same connection.
    fn pair(proxy: &Proxy, l: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(proxy.addr()).unwrap();
        client.set_read_timeout(Some(MUST)).unwrap();
        let server = accept_within(l, MUST).expect("proxy connected to the target");
        (client, server)
    }

    fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).expect("bytes arrive");
        buf
    }

    fn assert_silent(s: &mut TcpStream) {
        s.set_read_timeout(Some(SILENCE)).unwrap();
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            other => panic!("expected silence on an open connection, got {other:?}"),
        }
        s.set_read_timeout(Some(MUST)).unwrap();
    }

    /// The connection is closed (EOF or reset), not silent and not delivering.
    fn assert_closed(s: &mut TcpStream) {
        s.set_read_timeout(Some(MUST)).unwrap();
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) => {}
            other => panic!("expected a closed connection, got {other:?}"),
        }
    }

    fn assert_round_trip(client: &mut TcpStream, server: &mut TcpStream) {
        client.write_all(b"ping").unwrap();
        assert_eq!(read_n(server, 4), b"ping");
        server.write_all(b"pong").unwrap();
        assert_eq!(read_n(client, 4), b"pong");
    }

    /// An echo server for one connection; its thread ends when the connection does.
    fn echo_once() -> SocketAddr {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            if let Ok((s, _)) = l.accept() {
                let mut r = s.try_clone().unwrap();
                let mut w = s;
                let _ = io::copy(&mut r, &mut w);
            }
        });
        addr
    }

    fn proxy_threads(port: u16) -> Vec<String> {
        let prefix = format!("px{port}-");
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|c| c.trim().to_string())
            .filter(|c| c.starts_with(&prefix))
            .collect()
    }

    #[test]
    fn pass_forwards_both_ways_with_back_pressure() {
        let l = target();
        let proxy = Proxy::start(l.local_addr().unwrap());
        let (mut client, mut server) = pair(&proxy, &l);
        assert_round_trip(&mut client, &mut server);

        // More than every buffer on the way (queues, socket buffers) through an echo server,
        // written by one thread while this one reads: chunked, back-pressured, intact.
        let proxy = Proxy::start(echo_once());
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.set_read_timeout(Some(MUST)).unwrap();
        const N: usize = 8 << 20;
        let data: Vec<u8> = (0..N).map(|i| (i % 251) as u8).collect();
        let mut w = c.try_clone().unwrap();
        let sent = data.clone();
        let writer = thread::spawn(move || w.write_all(&sent).unwrap());
        assert_eq!(read_n(&mut c, N), data);
        writer.join().unwrap();
        let n = N as u64;
        let counters = poll_until(MUST, "both directions counted", || {
            let k = proxy.counters();
            (k.b_to_a.forwarded == n).then_some(k)
        });
        assert_eq!(
            counters.a_to_b,
            Flow {
                forwarded: n,
                dropped: 0
            }
        );
        assert_eq!(
            (counters.accepted, counters.active, counters.reset),
            (1, 1, 0)
        );

        // A clean close is forwarded as a FIN, and the connection's threads end.
        c.shutdown(Shutdown::Write).unwrap();
        assert_closed(&mut c);
        poll_until(MUST, "connection ended", || {
            (proxy.counters().active == 0).then_some(())
        });
    }

    #[test]
    fn delay_delays_each_direction_and_keeps_order() {
        let l = target();
        let proxy = Proxy::start(l.local_addr().unwrap());
        let d = Duration::from_millis(300);
        proxy.delay(d);
        let (mut client, mut server) = pair(&proxy, &l);

        let t = Instant::now();
        for i in 0..100u8 {
            client.write_all(&[i]).unwrap();
        }
        assert_eq!(read_n(&mut server, 100), (0..100u8).collect::<Vec<_>>());
        assert!(t.elapsed() >= d, "A→B arrived after {:?}", t.elapsed());

        let t = Instant::now();
        server.write_all(b"back").unwrap();
        assert_eq!(read_n(&mut client, 4), b"back");
        assert!(t.elapsed() >= d, "B→A arrived after {:?}", t.elapsed());

        // A long delay, then heal: the queued bytes are released, nothing lost.
        proxy.delay(Duration::from_secs(3600));
        client.write_all(b"held").unwrap();
        assert_silent(&mut server);
        proxy.heal();
        assert_eq!(read_n(&mut server, 4), b"held");
        assert_round_trip(&mut client, &mut server);
    }

    #[test]
    fn blackhole_keeps_connections_open_and_silent_then_heal_resets_them() {
        let l = target();
        let proxy = Proxy::start(l.local_addr().unwrap());
        let (mut client, mut server) = pair(&proxy, &l);
        assert_round_trip(&mut client, &mut server);

        proxy.blackhole();
        client.write_all(b"lost").unwrap();
        server.write_all(b"gone!").unwrap();
        assert_silent(&mut server);
        assert_silent(&mut client);
        // A connection made during the black hole is established, and just as silent.
        let (mut c2, mut s2) = pair(&proxy, &l);
        c2.write_all(b"x").unwrap();
        assert_silent(&mut s2);
        let k = poll_until(MUST, "drops counted", || {
            let k = proxy.counters();
            (k.a_to_b.dropped == 5 && k.b_to_a.dropped == 5).then_some(k)
        });
        assert_eq!(k.reset, 0, "a black hole closes nothing");
        assert_eq!(k.active, 2);

        // Heal: streams with a hole are reset instead of resuming mid-stream ...
        proxy.heal();
        for s in [&mut client, &mut server, &mut c2, &mut s2] {
            assert_closed(s);
        }
        // ... and new connections work.
        let (mut client, mut server) = pair(&proxy, &l);
        assert_round_trip(&mut client, &mut server);
    }

    #[test]
    fn idle_connection_survives_a_blackhole() {
        // Nothing was lost, so there is no hole and nothing to reset.
        let l = target();
        let proxy = Proxy::start(l.local_addr().unwrap());
        let (mut client, mut server) = pair(&proxy, &l);
        proxy.blackhole();
        proxy.heal();
        assert_round_trip(&mut client, &mut server);
        assert_eq!(proxy.counters().reset, 0);
    }

    #[test]
    fn cut_closes_connections_and_refuses_new_ones_until_healed() {
        let l = target();
        let proxy = Proxy::start(l.local_addr().unwrap());
        let (mut client, mut server) = pair(&proxy, &l);
        assert_round_trip(&mut client, &mut server);

        proxy.cut();
        assert_closed(&mut client);
        assert_closed(&mut server);

        let mut refused = TcpStream::connect(proxy.addr()).unwrap();
        assert_closed(&mut refused);
        assert!(
            accept_within(&l, SILENCE).is_none(),
            "a cut proxy dialed the target"
        );
        let k = proxy.counters();
        assert_eq!((k.accepted, k.refused), (2, 1));
        poll_until(MUST, "cut connection's threads ended", || {
            (proxy.counters().active == 0).then_some(())
        });

        proxy.heal();
        let (mut client, mut server) = pair(&proxy, &l);
        assert_round_trip(&mut client, &mut server);
    }

    #[test]
    fn one_way_drop_affects_only_that_direction() {
        let l = target();
        let proxy = Proxy::start(l.local_addr().unwrap());

        proxy.drop_a_to_b();
        let (mut client, mut server) = pair(&proxy, &l);
        client.write_all(b"req").unwrap();
        assert_silent(&mut server);
        server.write_all(b"still").unwrap();
        assert_eq!(read_n(&mut client, 5), b"still");
        drop((client, server));

        proxy.drop_b_to_a();
        let (mut client, mut server) = pair(&proxy, &l);
        client.write_all(b"req").unwrap();
        assert_eq!(read_n(&mut server, 3), b"req");
        server.write_all(b"resp").unwrap();
        assert_silent(&mut client);

        let want = (
            Flow {
                forwarded: 3,
                dropped: 3,
            },
            Flow {
                forwarded: 5,
                dropped: 4,
            },
        );
        poll_until(MUST, "per-direction counters", || {
            let k = proxy.counters();
            ((k.a_to_b, k.b_to_a) == want).then_some(())
        });
    }

    #[test]
    fn peer_resets_and_a_missing_target_end_only_that_connection() {
        let l = target();
        let proxy = Proxy::start(l.local_addr().unwrap());

        // Dialer resets: the target's end sees it closed.
        let (client, mut server) = pair(&proxy, &l);
        set_linger_zero(&client);
        drop(client);
        assert_closed(&mut server);
        // Target resets: the dialer's end sees it closed.
        let (mut client, server) = pair(&proxy, &l);
        set_linger_zero(&server);
        drop(server);
        assert_closed(&mut client);
        // The proxy carries on.
        let (mut client, mut server) = pair(&proxy, &l);
        assert_round_trip(&mut client, &mut server);

        // A target nobody listens on: the dialer's connection is reset.
        let gone = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let gone_addr = gone.local_addr().unwrap();
        drop(gone);
        let proxy = Proxy::start(gone_addr);
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        assert_closed(&mut c);
        poll_until(MUST, "upstream failure counted", || {
            (proxy.counters().upstream_failed == 1).then_some(())
        });
    }

    #[test]
    fn slow_receiver_back_pressures_the_sender() {
        let l = target();
        let proxy = Proxy::start(l.local_addr().unwrap());
        let (client, mut server) = pair(&proxy, &l);
        // The target reads nothing; the dialer tries to push far more than every buffer on the
        // way can hold. With bounded queues it blocks; the asserted bound (128 MiB) is above
        // the four socket buffers at their largest (`tcp_rmem`/`tcp_wmem` max, 32 + 4 MiB
        // here) plus the proxy's queue, so only unbounded buffering can reach it.
        const TOTAL: u64 = 1 << 30;
        let written = Arc::new(AtomicU64::new(0));
        let (w, mut c) = (written.clone(), client.try_clone().unwrap());
        let writer = thread::spawn(move || {
            let piece = vec![7u8; 64 * 1024];
            while w.load(Ordering::Relaxed) < TOTAL {
                if c.write_all(&piece).is_err() {
                    return;
                }
                w.fetch_add(piece.len() as u64, Ordering::Relaxed);
            }
        });
        thread::sleep(SILENCE * 3);
        let stalled_at = written.load(Ordering::Relaxed);
        assert!(
            stalled_at < 128 << 20,
            "sender was not held back: {stalled_at} bytes"
        );
        // The receiver reading again releases it.
        read_n(&mut server, 1 << 20);
        poll_until(MUST, "sender resumed", || {
            (written.load(Ordering::Relaxed) > stalled_at).then_some(())
        });
        // Dropping the proxy with writes blocked on both sides of it ends them.
        drop(proxy);
        writer.join().unwrap();
        assert!(written.load(Ordering::Relaxed) < TOTAL);
    }

    #[test]
    fn drop_closes_everything_joins_threads_and_frees_the_port() {
        let l = target();
        let proxy = Proxy::start(l.local_addr().unwrap());
        let port = proxy.addr().port();
        let (mut client, mut server) = pair(&proxy, &l);
        assert_round_trip(&mut client, &mut server);
        // A delayed chunk in flight, so a writer is waiting when the proxy goes.
        proxy.delay(Duration::from_secs(3600));
        client.write_all(b"late").unwrap();
        assert!(!proxy_threads(port).is_empty());

        drop(proxy);
        // Drop joined them; the kernel may list a joined thread for a moment longer.
        poll_until(MUST, "no proxy threads left", || {
            proxy_threads(port).is_empty().then_some(())
        });
        assert_closed(&mut client);
        assert_closed(&mut server);
        TcpListener::bind(("127.0.0.1", port)).expect("the proxy's port is free");
    }
}
