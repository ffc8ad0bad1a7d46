//! The transport's runtime side, on one glommio executor: a listener that accepts peers'
//! connections and hands what they send to the owner's [`Handler`], and per peer one
//! outgoing connection fed by two bounded queues (Raft first, then requests), with
//! reconnects, keepalive pings and request timeouts; with [`RpcTls`], every connection is
//! mutual TLS before its first frame. See the crate header for the rules.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future::or;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::TaskQueueHandle;
use sluice_raft::Envelope;

use crate::envelope::{decode_envelope_lossy, encode_envelope_frames};
use crate::frame::{
    read_frame, status, uuid_to_base64, DirectoryId, Frame, Hello, Kind, Request, Response,
    HELLO_BODY_MAX,
};
use crate::sync::{Event, Latch};
use crate::{
    NodeId, BACKOFF_MAX, BACKOFF_MIN, CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT, INBOUND_CONNECTIONS_MAX,
    PING_INTERVAL, RAFT_QUEUE_BYTES_MAX, RAFT_QUEUE_FRAMES_MAX, REQUESTS_IN_FLIGHT_MAX,
    REQUEST_QUEUE_BYTES_MAX, REQUEST_QUEUE_FRAMES_MAX, RPC_FRAME_MAX, SILENCE_TIMEOUT,
};

/// A boxed future local to the executor (handlers are not `Send`).
pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// What the owner does with what peers send. Called on the transport's executor.
pub trait Handler: 'static {
    /// A Raft envelope, already checked to come from the connection's authenticated peer
    /// (`envelope.from`) and to be addressed to this node.
    fn raft(&self, envelope: Envelope);
    /// A request from node `from`; the response goes back on the connection it came on (if
    /// that connection is gone by then, it is dropped: the sender has already failed it).
    fn request(&self, from: NodeId, request: Request) -> LocalBoxFuture<Response>;
    /// Peer `by` knows this node by data directory `known`, not by this node's own
    /// ([`TransportConfig::directory`]): this node's directory was replaced or wiped since
    /// it registered, and it must not take part under this node id (see the crate header).
    /// The transport refuses the connection; the owner decides how to stop.
    fn directory_replaced(&self, by: NodeId, known: DirectoryId) {
        let _ = (by, known);
    }
}

/// Bounds per peer and per transport; `Default` is the named constants.
#[derive(Debug, Clone)]
pub struct Limits {
    pub raft_queue_frames: usize,
    pub raft_queue_bytes: usize,
    pub request_queue_frames: usize,
    pub request_queue_bytes: usize,
    pub requests_in_flight: usize,
    pub inbound_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            raft_queue_frames: RAFT_QUEUE_FRAMES_MAX,
            raft_queue_bytes: RAFT_QUEUE_BYTES_MAX,
            request_queue_frames: REQUEST_QUEUE_FRAMES_MAX,
            request_queue_bytes: REQUEST_QUEUE_BYTES_MAX,
            requests_in_flight: REQUESTS_IN_FLIGHT_MAX,
            inbound_connections: INBOUND_CONNECTIONS_MAX,
        }
    }
}

/// Connection timing; `Default` is the named constants (tests shorten them).
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    pub handshake: Duration,
    pub ping_interval: Duration,
    pub silence: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: CONNECT_TIMEOUT,
            handshake: HANDSHAKE_TIMEOUT,
            ping_interval: PING_INTERVAL,
            silence: SILENCE_TIMEOUT,
            backoff_min: BACKOFF_MIN,
            backoff_max: BACKOFF_MAX,
        }
    }
}

/// TLS between nodes (`--rpc-tls`): both sides present a certificate signed by the CA
/// and check the other's. A function, so a reloaded certificate serves the next
/// connection.
#[derive(Clone)]
pub struct RpcTls {
    /// The configurations for a new connection: accepting (client certificates required)
    /// and dialing (the node's certificate presented, the peer's checked).
    pub configs: std::sync::Arc<
        dyn Fn() -> (
                std::sync::Arc<rustls::ServerConfig>,
                std::sync::Arc<rustls::ClientConfig>,
            ) + Send
            + Sync,
    >,
}

impl std::fmt::Debug for RpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RpcTls")
    }
}

/// The TLS name a peer's certificate must carry: its dialed IP address.
fn server_name(addr: SocketAddr) -> rustls_pki_types::ServerName<'static> {
    rustls_pki_types::ServerName::IpAddress(addr.ip().into())
}

/// How to start a [`Transport`].
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's id (never 0).
    pub node_id: NodeId,
    /// Sent in `Hello`; peers with another cluster id are refused.
    pub cluster_id: String,
    /// This node's data directory id, sent in `Hello` (zeros: none).
    pub directory: DirectoryId,
    /// Where to accept peers (`--rpc-listen`); `None`: dial only.
    pub listen: Option<SocketAddr>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// The glommio task queue every transport task runs in (the owner gives Raft traffic its
    /// own queue so it is never scheduled behind client work); `None`: the current one.
    pub task_queue: Option<TaskQueueHandle>,
    /// TLS on every connection (`None`: plaintext).
    pub tls: Option<RpcTls>,
}

impl TransportConfig {
    pub fn new(node_id: NodeId, listen: Option<SocketAddr>) -> TransportConfig {
        TransportConfig {
            node_id,
            cluster_id: String::new(),
            directory: [0; 16],
            listen,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            task_queue: None,
            tls: None,
        }
    }
}

/// Counters since start (a snapshot from [`Transport::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub raft_frames_queued: u64,
    /// Raft frames refused because the peer's Raft queue was full (Raft retransmits).
    pub raft_frames_dropped: u64,
    /// Raft traffic discarded because the connection to its peer was lost: the frames still
    /// queued when it closed, and the envelopes sent until it is back (Raft retransmits).
    pub raft_frames_discarded: u64,
    /// Raft messages larger than a frame, dropped at send (should never happen: see
    /// `RAFT_ENTRY_BYTES_MAX`).
    pub raft_messages_too_large: u64,
    pub raft_frames_sent: u64,
    pub raft_frames_received: u64,
    /// Raft messages dropped on receipt because a Kafka batch beside them failed its CRC
    /// (the rest of their frame is delivered; see `decode_envelope_lossy`).
    pub raft_messages_damaged: u64,
    pub requests_sent: u64,
    pub requests_received: u64,
    /// Requests answered `BUSY` because their connection had too many in flight.
    pub requests_refused_busy: u64,
    pub responses_received: u64,
    /// Outgoing connections that completed their handshake.
    pub connections_established: u64,
    /// Incoming connections that completed their handshake.
    pub connections_accepted: u64,
    pub connect_failures: u64,
    /// Handshakes refused, either way (wrong id, cluster, version, or not a `Hello`).
    pub handshakes_refused: u64,
    /// Connections closed for a frame that broke the protocol (bad header, CRC, body, kind).
    pub protocol_errors: u64,
    /// Connections closed because the other side was silent for `Timeouts::silence`.
    pub silence_timeouts: u64,
}

/// A peer's queues at one moment (see [`Transport::queue_lengths`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLengths {
    pub raft_frames: usize,
    pub raft_bytes: usize,
    pub request_frames: usize,
    pub request_bytes: usize,
    /// Requests admitted and not yet answered (queued or sent).
    pub requests_in_flight: usize,
}

/// Why a Raft envelope was not (entirely) queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    UnknownPeer(NodeId),
    /// `envelope.from` is not this node.
    NotFromThisNode(NodeId),
    /// Some frames were dropped (full queue) or some messages were larger than a frame.
    Dropped {
        frames: usize,
        messages_too_large: usize,
    },
    /// The connection to the peer was lost and is not back yet: nothing was queued.
    Disconnected(NodeId),
    Shutdown,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::UnknownPeer(id) => write!(f, "no peer with node id {id}"),
            SendError::NotFromThisNode(id) => write!(f, "envelope is from node {id}, not this node"),
            SendError::Dropped {
                frames,
                messages_too_large,
            } => write!(
                f,
                "dropped {frames} raft frame(s) (queue full) and {messages_too_large} oversized message(s)"
            ),
            SendError::Disconnected(id) => {
                write!(f, "node {id} is disconnected: raft frames discarded")
            }
            SendError::Shutdown => write!(f, "transport is shut down"),
        }
    }
}

impl std::error::Error for SendError {}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    UnknownPeer(NodeId),
    /// The body is larger than a frame may carry.
    TooLarge {
        len: usize,
        max: usize,
    },
    /// The peer's request queue or in-flight slots stayed full until the timeout: it was
    /// never sent.
    Backpressure {
        peer: NodeId,
    },
    /// Sent (or queued) but not answered in time; the response, if it comes, is ignored.
    Timeout {
        peer: NodeId,
    },
    /// The connection it was sent on closed before the response came; the peer may or may
    /// not have handled it.
    ConnectionLost {
        peer: NodeId,
    },
    /// The peer was removed or the transport shut down.
    Shutdown,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::UnknownPeer(id) => write!(f, "no peer with node id {id}"),
            RequestError::TooLarge { len, max } => {
                write!(f, "request of {len} bytes is over the frame limit of {max}")
            }
            RequestError::Backpressure { peer } => write!(
                f,
                "request to node {peer} not sent: its queue stayed full until the timeout"
            ),
            RequestError::Timeout { peer } => write!(f, "request to node {peer} timed out"),
            RequestError::ConnectionLost { peer } => write!(
                f,
                "connection to node {peer} closed before the response (the request may have been handled)"
            ),
            RequestError::Shutdown => write!(f, "transport or peer shut down"),
        }
    }
}

impl std::error::Error for RequestError {}

/// One bounded FIFO of encoded frames. A frame is admitted while the queue is empty or it
/// fits both limits, so a frame larger than the byte limit still goes out alone, and the
/// queue holds at most `max_bytes` plus one frame.
#[derive(Debug)]
pub(crate) struct FrameQueue {
    frames: VecDeque<Frame>,
    bytes: usize,
    max_frames: usize,
    max_bytes: usize,
}

impl FrameQueue {
    pub fn new(max_frames: usize, max_bytes: usize) -> FrameQueue {
        assert!(max_frames >= 1, "a queue holds at least one frame");
        FrameQueue {
            frames: VecDeque::new(),
            bytes: 0,
            max_frames,
            max_bytes,
        }
    }

    pub fn admits(&self, wire_len: usize) -> bool {
        self.frames.is_empty()
            || (self.frames.len() < self.max_frames && self.bytes + wire_len <= self.max_bytes)
    }

    pub fn push(&mut self, f: Frame) {
        debug_assert!(self.admits(f.wire_len()));
        self.bytes += f.wire_len();
        self.frames.push_back(f);
    }

    pub fn pop(&mut self) -> Option<Frame> {
        let f = self.frames.pop_front()?;
        self.bytes -= f.wire_len();
        Some(f)
    }

    /// Takes back a queued request (its caller gave up on it).
    pub fn remove(&mut self, correlation: u64) -> bool {
        match self
            .frames
            .iter()
            .position(|f| f.correlation == correlation)
        {
            Some(i) => {
                let f = self.frames.remove(i).expect("position is in range");
                self.bytes -= f.wire_len();
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Empties the queue; returns how many frames it held.
    pub fn clear(&mut self) -> usize {
        let n = self.frames.len();
        self.frames.clear();
        self.bytes = 0;
        n
    }
}

/// A peer's two send queues; the writer always takes Raft frames first.
#[derive(Debug)]
pub(crate) struct PeerQueues {
    pub raft: FrameQueue,
    pub requests: FrameQueue,
}

impl PeerQueues {
    pub fn new(l: &Limits) -> PeerQueues {
        PeerQueues {
            raft: FrameQueue::new(l.raft_queue_frames, l.raft_queue_bytes),
            requests: FrameQueue::new(l.request_queue_frames, l.request_queue_bytes),
        }
    }

    pub fn pop_next(&mut self) -> Option<Frame> {
        self.raft.pop().or_else(|| self.requests.pop())
    }
}

/// A request waiting for its response.
#[derive(Default)]
struct Waiter {
    result: RefCell<Option<Result<Response, RequestError>>>,
    done: Event,
    /// The outgoing connection (generation) it was written on; 0 while queued.
    sent_on: Cell<u64>,
}

impl Waiter {
    fn complete(&self, r: Result<Response, RequestError>) {
        *self.result.borrow_mut() = Some(r);
        self.done.notify();
    }

    async fn wait(&self) -> Result<Response, RequestError> {
        loop {
            let g = self.done.generation();
            if let Some(r) = self.result.borrow_mut().take() {
                return r;
            }
            self.done.changed(g).await;
        }
    }
}

struct Peer {
    id: NodeId,
    addr: Cell<SocketAddr>,
    queues: RefCell<PeerQueues>,
    /// Wakes the writer: something was queued.
    queued: Event,
    /// Wakes requests waiting to be admitted: queue room or an in-flight slot freed.
    room: Event,
    /// Requests admitted and not yet answered (queued or sent), by correlation id.
    waiters: RefCell<BTreeMap<u64, Rc<Waiter>>>,
    next_correlation: Cell<u64>,
    /// Generation of the current outgoing connection (0: none yet).
    generation: Cell<u64>,
    connected: Cell<bool>,
    removed: Latch,
    /// The last failure logged, so a peer that stays down logs once, not every retry.
    last_error: RefCell<String>,
}

impl Peer {
    fn fail_waiters(&self, pred: impl Fn(&Waiter) -> bool, err: RequestError) {
        let failed: Vec<Rc<Waiter>> = {
            let mut w = self.waiters.borrow_mut();
            let ids: Vec<u64> = w.iter().filter(|(_, x)| pred(x)).map(|(k, _)| *k).collect();
            ids.iter().filter_map(|k| w.remove(k)).collect()
        };
        for w in failed {
            w.complete(Err(err.clone()));
        }
        self.room.notify();
    }

    fn note_error(&self, msg: String, error_level: bool) {
        let changed = *self.last_error.borrow() != msg;
        if changed {
            if error_level {
                log::error!("rpc: peer {}: {msg}", self.id);
            } else {
                log::warn!("rpc: peer {}: {msg}", self.id);
            }
            *self.last_error.borrow_mut() = msg;
        } else {
            log::debug!("rpc: peer {}: {msg}", self.id);
        }
    }
}

/// An accepted, identified connection.
struct Inbound {
    from: NodeId,
    out: RefCell<VecDeque<Frame>>,
    queued: Event,
    in_flight: Cell<usize>,
    pong_queued: Cell<bool>,
    closed: Latch,
}

struct Inner {
    cfg: TransportConfig,
    handler: Rc<dyn Handler>,
    local_addr: Option<SocketAddr>,
    peers: RefCell<BTreeMap<NodeId, Rc<Peer>>>,
    /// The current incoming connection of each peer: a newer one closes the older (a
    /// dialer has one connection to us at a time, so the older is dead or half-open).
    inbound: RefCell<BTreeMap<NodeId, Rc<Inbound>>>,
    inbound_count: Cell<usize>,
    /// The data directory each peer registered ([`Transport::set_peer_directory`]).
    peer_directories: RefCell<BTreeMap<NodeId, DirectoryId>>,
    stats: RefCell<Stats>,
    closed: Latch,
    tasks: Cell<usize>,
    tasks_changed: Event,
}

/// The node-to-node transport of one node, on the glommio executor that started it.
/// Dropping it stops its tasks (as [`Transport::shutdown`] does, without waiting).
pub struct Transport {
    inner: Rc<Inner>,
}

impl Transport {
    /// Binds the listener (if any) and starts accepting. Peers are added with
    /// [`Transport::add_peer`].
    pub async fn start(cfg: TransportConfig, handler: Rc<dyn Handler>) -> io::Result<Transport> {
        if cfg.node_id == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "node id 0 is reserved",
            ));
        }
        if cfg.cluster_id.len() > crate::frame::CLUSTER_ID_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cluster id too long",
            ));
        }
        if let Some(addr) = cfg.listen.filter(|a| a.port() != 0) {
            log::debug!("rpc: probing {addr} for another node");
            probe_listener(addr, cfg.timeouts.handshake, cfg.tls.as_ref()).await?;
        }
        let listener = cfg.listen.map(TcpListener::bind).transpose()?;
        let local_addr = listener.as_ref().map(|l| l.local_addr()).transpose()?;
        if let Some(a) = local_addr {
            log::info!("rpc: node {} listening on {a}", cfg.node_id);
        }
        let inner = Rc::new(Inner {
            cfg,
            handler,
            local_addr,
            peers: RefCell::new(BTreeMap::new()),
            inbound: RefCell::new(BTreeMap::new()),
            inbound_count: Cell::new(0),
            peer_directories: RefCell::new(BTreeMap::new()),
            stats: RefCell::new(Stats::default()),
            closed: Latch::default(),
            tasks: Cell::new(0),
            tasks_changed: Event::default(),
        });
        if let Some(l) = listener {
            spawn_tracked(&inner, accept_loop(inner.clone(), l))?;
        }
        Ok(Transport { inner })
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.cfg.node_id
    }

    /// The bound listener address (the port chosen when `listen` had port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// Adds peer `id` at `addr` and starts dialing it; for a known peer, the new address is
    /// used from its next connection attempt on.
    pub fn add_peer(&self, id: NodeId, addr: SocketAddr) -> io::Result<()> {
        let inner = &self.inner;
        if id == 0 || id == inner.cfg.node_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("peer id {id} is 0 or this node's own"),
            ));
        }
        if let Some(p) = inner.peers.borrow().get(&id) {
            p.addr.set(addr);
            return Ok(());
        }
        let peer = Rc::new(Peer {
            id,
            addr: Cell::new(addr),
            queues: RefCell::new(PeerQueues::new(&inner.cfg.limits)),
            queued: Event::default(),
            room: Event::default(),
            waiters: RefCell::new(BTreeMap::new()),
            next_correlation: Cell::new(1),
            generation: Cell::new(0),
            connected: Cell::new(false),
            removed: Latch::default(),
            last_error: RefCell::new(String::new()),
        });
        inner.peers.borrow_mut().insert(id, peer.clone());
        spawn_tracked(inner, run_peer(inner.clone(), peer))
    }

    /// Records the data directory node `id` registered with (zeros forget it): from now on
    /// a `Hello` from `id` announcing another one is refused, and ours tell it this one.
    /// Connections already open stay (a node cannot change its directory while running).
    pub fn set_peer_directory(&self, id: NodeId, directory: DirectoryId) {
        let mut known = self.inner.peer_directories.borrow_mut();
        if directory == [0; 16] {
            known.remove(&id);
        } else {
            known.insert(id, directory);
        }
    }

    /// Forgets peer `id`: its connection closes and its waiting requests fail.
    pub fn remove_peer(&self, id: NodeId) {
        if let Some(p) = self.inner.peers.borrow_mut().remove(&id) {
            p.removed.set();
            p.fail_waiters(|_| true, RequestError::Shutdown);
        }
    }

    /// Whether the outgoing connection to `id` is up (handshake done).
    pub fn is_connected(&self, id: NodeId) -> bool {
        self.inner
            .peers
            .borrow()
            .get(&id)
            .is_some_and(|p| p.connected.get())
    }

    /// The outgoing connection to `id` while it is up: a number that grows with every
    /// completed handshake, so an owner that keeps per-connection state (what the peer was
    /// sent) can tell that a reconnect happened between two looks. `None` while down.
    pub fn connection(&self, id: NodeId) -> Option<u64> {
        let peers = self.inner.peers.borrow();
        let p = peers.get(&id)?;
        p.connected.get().then(|| p.generation.get())
    }

    /// What is queued for peer `id` and how many of its requests await an answer.
    pub fn queue_lengths(&self, id: NodeId) -> Option<QueueLengths> {
        let p = self.inner.peers.borrow().get(&id)?.clone();
        let q = p.queues.borrow();
        let in_flight = p.waiters.borrow().len();
        Some(QueueLengths {
            raft_frames: q.raft.len(),
            raft_bytes: q.raft.bytes,
            request_frames: q.requests.len(),
            request_bytes: q.requests.bytes,
            requests_in_flight: in_flight,
        })
    }

    pub fn stats(&self) -> Stats {
        *self.inner.stats.borrow()
    }

    /// Queues `envelope` for `envelope.to`, split into frames of at most [`RPC_FRAME_MAX`].
    /// Never waits: a frame that finds the peer's Raft queue full is dropped and counted
    /// (Raft retransmits what it needs: heartbeats recur, a lost append is re-sent after the
    /// follower's reject or the leader's probe, a lost vote lets the election time out).
    /// While the connection to a peer that was connected is down, nothing is queued
    /// (`Disconnected`): what Raft sends then is stale by the time the peer is back (a
    /// restarted follower must get the leader's log start, not entries the leader has
    /// compacted since), and a long outage would otherwise hold a full queue for nothing.
    /// Before the first connection frames queue, so the first election does not wait a
    /// timeout for the dial.
    /// `batches_beside`: the entries that are Kafka batches (partition groups' entries, never
    /// the controller's) travel beside the envelope, outside the frame CRC; see
    /// [`crate::envelope`].
    pub fn send_raft(&self, envelope: Envelope, batches_beside: bool) -> Result<(), SendError> {
        let inner = &self.inner;
        if inner.closed.is_set() {
            return Err(SendError::Shutdown);
        }
        if envelope.from != inner.cfg.node_id {
            return Err(SendError::NotFromThisNode(envelope.from));
        }
        let peer = inner
            .peers
            .borrow()
            .get(&envelope.to)
            .cloned()
            .ok_or(SendError::UnknownPeer(envelope.to))?;
        if peer.generation.get() > 0 && !peer.connected.get() {
            bump(inner, |s| s.raft_frames_discarded += 1);
            return Err(SendError::Disconnected(peer.id));
        }
        let (bodies, too_large) = encode_envelope_frames(envelope, RPC_FRAME_MAX, batches_beside);
        for (group, len) in &too_large {
            log::error!(
                "rpc: raft message of group {group} to node {} is {len} bytes, over the frame limit {RPC_FRAME_MAX}: dropped",
                peer.id
            );
        }
        let (mut dropped, mut queued) = (0, 0);
        {
            let mut q = peer.queues.borrow_mut();
            for body in bodies {
                let f = Frame::raft(body);
                if q.raft.admits(f.wire_len()) {
                    q.raft.push(f);
                    queued += 1;
                } else {
                    dropped += 1;
                }
            }
        }
        peer.queued.notify();
        let mut s = inner.stats.borrow_mut();
        s.raft_messages_too_large += too_large.len() as u64;
        s.raft_frames_dropped += dropped as u64;
        s.raft_frames_queued += queued;
        if dropped > 0 || !too_large.is_empty() {
            return Err(SendError::Dropped {
                frames: dropped,
                messages_too_large: too_large.len(),
            });
        }
        Ok(())
    }

    /// Sends a request to `to` and waits for its response, all within `timeout`: first for
    /// room in the peer's request queue and a free in-flight slot (back-pressure:
    /// `Backpressure` if none comes in time), then for the answer (`Timeout`). A request
    /// whose connection closes after it was written fails with `ConnectionLost`; one still
    /// queued waits for the next connection.
    pub async fn request(
        &self,
        to: NodeId,
        method: u16,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, RequestError> {
        let inner = &self.inner;
        let deadline = Instant::now() + timeout;
        if inner.closed.is_set() {
            return Err(RequestError::Shutdown);
        }
        let peer = inner
            .peers
            .borrow()
            .get(&to)
            .cloned()
            .ok_or(RequestError::UnknownPeer(to))?;
        let body = Request { method, body }.encode();
        if body.len() > RPC_FRAME_MAX {
            return Err(RequestError::TooLarge {
                len: body.len() - 2,
                max: RPC_FRAME_MAX - 2,
            });
        }
        let wire_len = crate::frame::HEADER_LEN + body.len();
        let in_flight_max = inner.cfg.limits.requests_in_flight;
        let admitted = or(
            async {
                loop {
                    let g = peer.room.generation();
                    if peer.removed.is_set() || inner.closed.is_set() {
                        return false;
                    }
                    if peer.waiters.borrow().len() < in_flight_max
                        && peer.queues.borrow().requests.admits(wire_len)
                    {
                        return true;
                    }
                    or(
                        peer.room.changed(g),
                        or(peer.removed.wait(), inner.closed.wait()),
                    )
                    .await;
                }
            },
            async {
                sleep_until(deadline).await;
                false
            },
        )
        .await;
        if peer.removed.is_set() || inner.closed.is_set() {
            return Err(RequestError::Shutdown);
        }
        if !admitted {
            return Err(RequestError::Backpressure { peer: to });
        }
        let correlation = peer.next_correlation.get();
        peer.next_correlation.set(correlation + 1);
        let waiter = Rc::new(Waiter::default());
        peer.waiters
            .borrow_mut()
            .insert(correlation, waiter.clone());
        peer.queues
            .borrow_mut()
            .requests
            .push(Frame::new(Kind::Request, correlation, body));
        peer.queued.notify();
        let result = or(waiter.wait(), async {
            sleep_until(deadline).await;
            Err(RequestError::Timeout { peer: to })
        })
        .await;
        if result.is_err() {
            // Gone from the books either way: a late response is ignored, a request still
            // queued is not sent.
            if peer.waiters.borrow_mut().remove(&correlation).is_some() {
                peer.queues.borrow_mut().requests.remove(correlation);
                peer.room.notify();
            }
        }
        result
    }

    /// Stops accepting, closes every connection, fails every waiting request, and returns
    /// once the transport's tasks have ended (so the listener's port is free again).
    /// Requests the handler is still running finish on their own; their responses are
    /// dropped.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closed.set();
        let peers: Vec<Rc<Peer>> = inner.peers.borrow().values().cloned().collect();
        for p in peers {
            p.removed.set();
            p.fail_waiters(|_| true, RequestError::Shutdown);
        }
        loop {
            let g = inner.tasks_changed.generation();
            if inner.tasks.get() == 0 {
                return;
            }
            inner.tasks_changed.changed(g).await;
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.inner.closed.set();
        for p in self.inner.peers.borrow().values() {
            p.removed.set();
        }
    }
}

/// Fails if a sluice node already serves `addr`. glommio binds with SO_REUSEPORT, which
/// another process of the same user doing the same would also get: a second node on the
/// port would start and take half the connections. A plain bind cannot tell (sockets a
/// stopped node left in TIME_WAIT refuse it), nor can a bare connect (a killed node's
/// listener accepts until the kernel tears down its rings); a live node answers a `Hello`
/// (this one, from node 0, it refuses, but it says who it is first). A self-connect (source
/// port = target port) is nobody.
async fn probe_listener(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&RpcTls>,
) -> io::Result<()> {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    async fn hello<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Option<()> {
        let probe = Frame::new(Kind::Hello, 0, Hello::new(0, 0, "").encode());
        s.write_all(&probe.encode()).await.ok()?;
        s.flush().await.ok()?;
        let mut h = [0u8; crate::frame::HEADER_LEN];
        futures_lite::AsyncReadExt::read_exact(&mut s, &mut h)
            .await
            .ok()
    }
    let answered = within(timeout, async {
        let s = TcpStream::connect(target).await.ok()?;
        // Connecting to a port of the ephemeral range nobody listens on, the kernel may
        // pick that same port as the source: a TCP self-connect, which would echo the probe
        // back as if a node had answered.
        if s.local_addr().ok()? == s.peer_addr().ok()? {
            return None;
        }
        match tls {
            None => hello(s).await,
            // A node with TLS answers only over TLS.
            Some(tls) => {
                let (_, client) = (tls.configs)();
                let s = futures_rustls::TlsConnector::from(client)
                    .connect(server_name(target), s)
                    .await
                    .ok()?;
                hello(s).await
            }
        }
    })
    .await
    .flatten()
    .is_some();
    if answered {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("cannot listen on {addr}: a sluice node already serves it"),
        ));
    }
    Ok(())
}

fn bump(inner: &Inner, f: impl FnOnce(&mut Stats)) {
    f(&mut inner.stats.borrow_mut());
}

fn spawn_local<F: Future<Output = ()> + 'static>(inner: &Inner, f: F) -> io::Result<()> {
    let task = match inner.cfg.task_queue {
        Some(tq) => glommio::spawn_local_into(f, tq)
            .map_err(|e| io::Error::other(format!("rpc: spawn in task queue: {e}")))?,
        None => glommio::spawn_local(f),
    };
    task.detach();
    Ok(())
}

/// Spawns one of the transport's own tasks, counted so `shutdown` can wait for them.
fn spawn_tracked<F: Future<Output = ()> + 'static>(inner: &Rc<Inner>, f: F) -> io::Result<()> {
    struct Count(Rc<Inner>);
    impl Drop for Count {
        fn drop(&mut self) {
            self.0.tasks.set(self.0.tasks.get() - 1);
            self.0.tasks_changed.notify();
        }
    }
    inner.tasks.set(inner.tasks.get() + 1);
    let count = Count(inner.clone());
    spawn_local(inner, async move {
        let _count = count;
        f.await
    })
}

async fn sleep_until(deadline: Instant) {
    let d = deadline.saturating_duration_since(Instant::now());
    if !d.is_zero() {
        glommio::timer::sleep(d).await;
    }
}

/// `f`, or `None` once `d` has passed.
async fn within<T>(d: Duration, f: impl Future<Output = T>) -> Option<T> {
    or(async { Some(f.await) }, async {
        glommio::timer::sleep(d).await;
        None
    })
    .await
}

/// Reads through to `inner`, noting when bytes last arrived (the silence watchdog's clock:
/// a large frame arriving slowly is not silence).
struct Heard<'a, R> {
    inner: R,
    last: &'a Cell<Instant>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Heard<'_, R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            if *n > 0 {
                self.last.set(Instant::now());
            }
        }
        r
    }
}

/// Completes when nothing has arrived for `silence`.
async fn watchdog(last: &Cell<Instant>, silence: Duration) {
    loop {
        let due = last.get() + silence;
        if Instant::now() >= due {
            return;
        }
        sleep_until(due).await;
    }
}

/// Bodies up to this are copied into the write buffer; larger ones are written directly.
const INLINE_BODY_MAX: usize = 16 * 1024;
/// The write buffer is flushed to the socket once it holds this much.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Writes every frame `next` yields until it yields none, small ones batched into one
/// socket write. `next` is asked again after each write, so a Raft frame queued meanwhile
/// goes before requests queued earlier.
async fn write_available<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &mut Vec<u8>,
    mut next: impl FnMut() -> Option<Frame>,
) -> io::Result<()> {
    let mut any = false;
    while let Some(f) = next() {
        any = true;
        buf.extend_from_slice(&f.header());
        // Part by part: a frame of many small batches must not gather whole in `buf`.
        for part in std::iter::once(&f.body).chain(&f.beside) {
            if part.len() <= INLINE_BODY_MAX {
                buf.extend_from_slice(part);
            } else {
                w.write_all(buf).await?;
                buf.clear();
                w.write_all(part).await?;
            }
            if buf.len() >= WRITE_BUFFER_BYTES {
                w.write_all(buf).await?;
                buf.clear();
            }
        }
    }
    if !buf.is_empty() {
        w.write_all(buf).await?;
        buf.clear();
    }
    if any {
        w.flush().await?;
    }
    Ok(())
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> io::Result<()> {
    w.write_all(&f.encode()).await?;
    w.flush().await
}

/// The data directory `id` registered with (zeros: unknown).
fn known_directory(inner: &Inner, id: NodeId) -> DirectoryId {
    inner
        .peer_directories
        .borrow()
        .get(&id)
        .copied()
        .unwrap_or_default()
}

/// Our `Hello` to `peer` (0: we do not know who it is).
fn our_hello(inner: &Inner, peer: NodeId) -> Hello {
    let cfg = &inner.cfg;
    Hello::new(cfg.node_id, peer, &cfg.cluster_id)
        .with_directories(cfg.directory, known_directory(inner, peer))
}

/// Checks a received `Hello` against this node. `expect` is the id we dialed (outgoing) or
/// `None` (incoming: any other node may dial us).
fn check_hello(inner: &Inner, f: &Frame, expect: Option<NodeId>) -> Result<Hello, String> {
    if f.kind != Kind::Hello {
        return Err(format!("first frame is {:?}, not Hello", f.kind));
    }
    let h = Hello::decode(&f.body).map_err(|e| e.to_string())?;
    let me = inner.cfg.node_id;
    if let Some(want) = expect {
        if h.node_id != want {
            return Err(format!(
                "the node at this address says it is node {}, not node {want}: check --voters",
                h.node_id
            ));
        }
    }
    if h.node_id == 0 || h.node_id == me {
        return Err(format!(
            "peer claims node id {} (this node is {me}; a node starting on this port \
             sends 0 to find out whether the port is taken)",
            h.node_id
        ));
    }
    if h.peer_id != 0 && h.peer_id != me {
        return Err(format!(
            "node {} dialed node {} but reached this node ({me}): check its --voters",
            h.node_id, h.peer_id
        ));
    }
    if h.cluster_id != inner.cfg.cluster_id {
        return Err(format!(
            "node {} is in cluster {:?}, this node in {:?}",
            h.node_id, h.cluster_id, inner.cfg.cluster_id
        ));
    }
    let mine = Hello::new(me, 0, &inner.cfg.cluster_id);
    if mine.agree(&h).is_none() {
        return Err(format!(
            "node {} speaks protocol versions {}..={}, this node {}..={}",
            h.node_id, h.version_min, h.version_max, mine.version_min, mine.version_max
        ));
    }
    let zero = [0; 16];
    let own = inner.cfg.directory;
    if h.peer_directory != zero && own != zero && h.peer_directory != own {
        inner
            .handler
            .directory_replaced(h.node_id, h.peer_directory);
        return Err(format!(
            "node {} knows this node ({me}) by data directory {}, but this node's is {}: \
             the directory was replaced or wiped since this node registered",
            h.node_id,
            uuid_to_base64(&h.peer_directory),
            uuid_to_base64(&own)
        ));
    }
    let known = known_directory(inner, h.node_id);
    if known != zero && h.directory != zero && h.directory != known {
        return Err(format!(
            "node {} comes with data directory {}, but it registered {}: its directory was \
             replaced or wiped, and it may not rejoin as node {} (restore its directory, or \
             reassign its replicas and give the new one another node id)",
            h.node_id,
            uuid_to_base64(&h.directory),
            uuid_to_base64(&known),
            h.node_id
        ));
    }
    Ok(h)
}

// ---------------------------------------------------------------------------------------
// Outgoing side

/// Dials `peer` for as long as it is known: connect, handshake, serve, then back off
/// (doubling from `backoff_min` to `backoff_max`, reset by a successful handshake).
async fn run_peer(inner: Rc<Inner>, peer: Rc<Peer>) {
    let t = inner.cfg.timeouts.clone();
    let mut backoff = t.backoff_min;
    loop {
        if peer.removed.is_set() || inner.closed.is_set() {
            break;
        }
        let handshaken = or(dial(&inner, &peer), async {
            or(peer.removed.wait(), inner.closed.wait()).await;
            false
        })
        .await;
        if handshaken {
            backoff = t.backoff_min;
        }
        if peer.removed.is_set() || inner.closed.is_set() {
            break;
        }
        or(glommio::timer::sleep(backoff), peer.removed.wait()).await;
        backoff = (backoff * 2).min(t.backoff_max);
    }
    peer.connected.set(false);
}

/// One connection's life; true if its handshake succeeded.
async fn dial(inner: &Rc<Inner>, peer: &Rc<Peer>) -> bool {
    let t = &inner.cfg.timeouts;
    let addr = peer.addr.get();
    let stream = match within(t.connect, TcpStream::connect(addr)).await {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            bump(inner, |s| s.connect_failures += 1);
            peer.note_error(format!("connect to {addr}: {e}"), false);
            return false;
        }
        None => {
            bump(inner, |s| s.connect_failures += 1);
            peer.note_error(format!("connect to {addr}: timed out"), false);
            return false;
        }
    };
    let _ = stream.set_nodelay(true);
    let Some(tls) = &inner.cfg.tls else {
        return dialed(inner, peer, stream, addr).await;
    };
    let (_, client) = (tls.configs)();
    let connector = futures_rustls::TlsConnector::from(client);
    match within(t.handshake, connector.connect(server_name(addr), stream)).await {
        Some(Ok(s)) => dialed(inner, peer, s, addr).await,
        Some(Err(e)) => {
            bump(inner, |s| s.connect_failures += 1);
            peer.note_error(format!("TLS handshake with {addr}: {e}"), false);
            false
        }
        None => {
            bump(inner, |s| s.connect_failures += 1);
            peer.note_error(format!("TLS handshake with {addr}: timed out"), false);
            false
        }
    }
}

/// A dialed connection's life after its TCP (and TLS) set-up; true if its handshake
/// succeeded.
async fn dialed<S: AsyncRead + AsyncWrite + Unpin>(
    inner: &Rc<Inner>,
    peer: &Rc<Peer>,
    stream: S,
    addr: SocketAddr,
) -> bool {
    let t = &inner.cfg.timeouts;
    let (r, mut w) = futures_lite::io::split(stream);
    let last_heard = Cell::new(Instant::now());
    let mut r = Heard {
        inner: r,
        last: &last_heard,
    };
    let hello = Frame::new(Kind::Hello, 0, our_hello(inner, peer.id).encode());
    let reply = within(t.handshake, async {
        write_frame(&mut w, &hello).await?;
        read_frame(&mut r, HELLO_BODY_MAX)
            .await
            .map_err(|e| io::Error::other(e.to_string()))
    })
    .await;
    let reply = match reply {
        Some(Ok(Some(f))) => f,
        Some(Ok(None)) => {
            bump(inner, |s| s.connect_failures += 1);
            peer.note_error(
                format!("{addr} closed the connection during the handshake"),
                false,
            );
            return false;
        }
        Some(Err(e)) => {
            bump(inner, |s| s.connect_failures += 1);
            peer.note_error(format!("handshake with {addr}: {e}"), false);
            return false;
        }
        None => {
            bump(inner, |s| s.connect_failures += 1);
            peer.note_error(format!("handshake with {addr}: timed out"), false);
            return false;
        }
    };
    if let Err(e) = check_hello(inner, &reply, Some(peer.id)) {
        bump(inner, |s| s.handshakes_refused += 1);
        peer.note_error(format!("refused {addr}: {e}"), true);
        return false;
    }
    let generation = peer.generation.get() + 1;
    peer.generation.set(generation);
    peer.connected.set(true);
    peer.last_error.borrow_mut().clear();
    bump(inner, |s| s.connections_established += 1);
    log::info!("rpc: connected to node {} at {addr}", peer.id);

    let end = or(
        or(
            dial_reader(inner, peer, &mut r),
            dial_writer(inner, peer, generation, &mut w),
        ),
        async {
            watchdog(&last_heard, t.silence).await;
            bump(inner, |s| s.silence_timeouts += 1);
            format!("nothing heard for {:?}", t.silence)
        },
    )
    .await;
    peer.connected.set(false);
    // Raft frames still queued are stale by the next connection (see `send_raft`).
    let stale = peer.queues.borrow_mut().raft.clear();
    bump(inner, |s| s.raft_frames_discarded += stale as u64);
    // Requests written on this connection will get no answer; queued ones wait for the next.
    peer.fail_waiters(
        |w| w.sent_on.get() == generation,
        RequestError::ConnectionLost { peer: peer.id },
    );
    if !(peer.removed.is_set() || inner.closed.is_set()) {
        log::warn!(
            "rpc: connection to node {} at {addr} closed: {end}",
            peer.id
        );
    }
    true
}

async fn dial_reader<R: AsyncRead + Unpin>(inner: &Inner, peer: &Peer, r: &mut R) -> String {
    loop {
        let f = match read_frame(r, RPC_FRAME_MAX).await {
            Ok(Some(f)) => f,
            Ok(None) => return "closed by the peer".into(),
            Err(e) => {
                if !matches!(e, crate::frame::FrameError::Io(_)) {
                    bump(inner, |s| s.protocol_errors += 1);
                }
                return e.to_string();
            }
        };
        match f.kind {
            Kind::Pong => {}
            Kind::Response => {
                let resp = match Response::decode(&f.body) {
                    Ok(r) => r,
                    Err(e) => {
                        bump(inner, |s| s.protocol_errors += 1);
                        return e.to_string();
                    }
                };
                bump(inner, |s| s.responses_received += 1);
                let waiter = peer.waiters.borrow_mut().remove(&f.correlation);
                // No waiter: it timed out; the answer is late and ignored.
                if let Some(w) = waiter {
                    w.complete(Ok(resp));
                    peer.room.notify();
                }
            }
            other => {
                bump(inner, |s| s.protocol_errors += 1);
                return format!("unexpected {other:?} frame on an outgoing connection");
            }
        }
    }
}

async fn dial_writer<W: AsyncWrite + Unpin>(
    inner: &Inner,
    peer: &Peer,
    generation: u64,
    w: &mut W,
) -> String {
    let interval = inner.cfg.timeouts.ping_interval;
    let mut buf = Vec::with_capacity(WRITE_BUFFER_BYTES);
    let mut next_ping = Instant::now() + interval;
    let mut ping = 0u64;
    loop {
        let g = peer.queued.generation();
        let written = write_available(w, &mut buf, || {
            let f = peer.queues.borrow_mut().pop_next()?;
            match f.kind {
                Kind::Raft => bump(inner, |s| s.raft_frames_sent += 1),
                _ => {
                    if let Some(waiter) = peer.waiters.borrow().get(&f.correlation) {
                        waiter.sent_on.set(generation);
                    }
                    bump(inner, |s| s.requests_sent += 1);
                    peer.room.notify();
                }
            }
            Some(f)
        })
        .await;
        if let Err(e) = written {
            return format!("write: {e}");
        }
        if Instant::now() >= next_ping {
            ping += 1;
            if let Err(e) = write_frame(w, &Frame::new(Kind::Ping, ping, Bytes::new())).await {
                return format!("write: {e}");
            }
            next_ping = Instant::now() + interval;
        }
        if peer.queued.generation() == g {
            or(peer.queued.changed(g), sleep_until(next_ping)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Incoming side

async fn accept_loop(inner: Rc<Inner>, listener: TcpListener) {
    loop {
        let accepted = or(async { Some(listener.accept().await) }, async {
            inner.closed.wait().await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                if inner.inbound_count.get() >= inner.cfg.limits.inbound_connections {
                    log::warn!(
                        "rpc: {} incoming connections already: closing a new one",
                        inner.inbound_count.get()
                    );
                    continue;
                }
                inner.inbound_count.set(inner.inbound_count.get() + 1);
                let i = inner.clone();
                let spawned = spawn_tracked(&inner, async move {
                    serve_inbound(&i, stream).await;
                    i.inbound_count.set(i.inbound_count.get() - 1);
                });
                if let Err(e) = spawned {
                    log::error!("{e}");
                }
            }
            Some(Err(e)) => {
                // Out of descriptors and the like: wait rather than spin.
                log::warn!("rpc: accept: {e}");
                or(
                    glommio::timer::sleep(Duration::from_millis(100)),
                    inner.closed.wait(),
                )
                .await;
            }
        }
    }
}

async fn serve_inbound(inner: &Rc<Inner>, stream: TcpStream) {
    let t = &inner.cfg.timeouts;
    let remote = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let _ = stream.set_nodelay(true);
    let Some(tls) = &inner.cfg.tls else {
        return serve_accepted(inner, stream, remote).await;
    };
    let (server, _) = (tls.configs)();
    let acceptor = futures_rustls::TlsAcceptor::from(server);
    let handshake = or(
        async { within(t.handshake, acceptor.accept(stream)).await },
        async {
            inner.closed.wait().await;
            None
        },
    )
    .await;
    match handshake {
        Some(Ok(s)) => serve_accepted(inner, s, remote).await,
        Some(Err(e)) => {
            bump(inner, |s| s.handshakes_refused += 1);
            log::warn!("rpc: TLS handshake with {remote} failed: {e}");
        }
        None => {
            bump(inner, |s| s.handshakes_refused += 1);
            log::warn!("rpc: no TLS handshake from {remote} in time");
        }
    }
}

/// An incoming connection's life after its TCP (and TLS) set-up.
async fn serve_accepted<S: AsyncRead + AsyncWrite + Unpin>(
    inner: &Rc<Inner>,
    stream: S,
    remote: String,
) {
    let t = &inner.cfg.timeouts;
    let (r, mut w) = futures_lite::io::split(stream);
    let last_heard = Cell::new(Instant::now());
    let mut r = Heard {
        inner: r,
        last: &last_heard,
    };
    let first = or(
        async { within(t.handshake, read_frame(&mut r, HELLO_BODY_MAX)).await },
        async {
            inner.closed.wait().await;
            None
        },
    )
    .await;
    // The dialer's id when its first frame was a `Hello` at all (0 if it did not say).
    let (hello, dialer) = match first {
        Some(Ok(Some(f))) => {
            let dialer =
                (f.kind == Kind::Hello).then(|| Hello::decode(&f.body).map_or(0, |h| h.node_id));
            (check_hello(inner, &f, None), dialer)
        }
        Some(Ok(None)) => return,
        Some(Err(e)) => (Err(e.to_string()), None),
        None => (Err("no Hello in time".into()), None),
    };
    let hello = match hello {
        Ok(h) => h,
        Err(e) => {
            bump(inner, |s| s.handshakes_refused += 1);
            log::warn!("rpc: refused incoming connection from {remote}: {e}");
            if let Some(dialer) = dialer {
                // Say who we are anyway (and the directory we know the dialer by), so the
                // dialer can log the mismatch on its side, or learn it was wiped.
                let mine = Frame::new(Kind::Hello, 0, our_hello(inner, dialer).encode());
                let _ = within(t.handshake, write_frame(&mut w, &mine)).await;
            }
            return;
        }
    };
    let reply = Frame::new(Kind::Hello, 0, our_hello(inner, hello.node_id).encode());
    if within(t.handshake, write_frame(&mut w, &reply))
        .await
        .is_none()
    {
        return;
    }
    let conn = Rc::new(Inbound {
        from: hello.node_id,
        out: RefCell::new(VecDeque::new()),
        queued: Event::default(),
        in_flight: Cell::new(0),
        pong_queued: Cell::new(false),
        closed: Latch::default(),
    });
    if let Some(old) = inner.inbound.borrow_mut().insert(conn.from, conn.clone()) {
        log::info!(
            "rpc: node {} reconnected from {remote}: closing its older connection",
            conn.from
        );
        old.closed.set();
    }
    bump(inner, |s| s.connections_accepted += 1);
    log::debug!("rpc: accepted node {} from {remote}", conn.from);

    let end = or(
        or(
            inbound_reader(inner, &conn, &mut r),
            inbound_writer(&conn, &mut w),
        ),
        or(
            async {
                watchdog(&last_heard, t.silence).await;
                bump(inner, |s| s.silence_timeouts += 1);
                format!("nothing heard for {:?}", t.silence)
            },
            async {
                or(conn.closed.wait(), inner.closed.wait()).await;
                "closed".to_string()
            },
        ),
    )
    .await;
    conn.closed.set();
    {
        let mut map = inner.inbound.borrow_mut();
        if map.get(&conn.from).is_some_and(|c| Rc::ptr_eq(c, &conn)) {
            map.remove(&conn.from);
        }
    }
    log::debug!(
        "rpc: incoming connection of node {} ({remote}) closed: {end}",
        conn.from
    );
}

async fn inbound_reader<R: AsyncRead + Unpin>(
    inner: &Rc<Inner>,
    conn: &Rc<Inbound>,
    r: &mut R,
) -> String {
    let me = inner.cfg.node_id;
    let protocol_error = |msg: String| {
        bump(inner, |s| s.protocol_errors += 1);
        log::warn!("rpc: closing connection of node {}: {msg}", conn.from);
        msg
    };
    loop {
        let f = match read_frame(r, RPC_FRAME_MAX).await {
            Ok(Some(f)) => f,
            Ok(None) => return "closed by the peer".into(),
            Err(crate::frame::FrameError::Io(e)) => return e.to_string(),
            Err(e) => return protocol_error(e.to_string()),
        };
        match f.kind {
            Kind::Raft => {
                let env = match decode_envelope_lossy(&f.body) {
                    Ok((env, damaged)) => {
                        for group in &damaged {
                            log::error!(
                                "rpc: a Kafka batch of raft group {group} from node {} fails its CRC: its message is dropped (the sender's copy is damaged if this repeats)",
                                conn.from
                            );
                        }
                        bump(inner, |s| s.raft_messages_damaged += damaged.len() as u64);
                        env
                    }
                    Err(e) => return protocol_error(e.to_string()),
                };
                if env.from != conn.from || env.to != me {
                    return protocol_error(format!(
                        "raft envelope from {} to {} on node {}'s connection to node {me}",
                        env.from, env.to, conn.from
                    ));
                }
                bump(inner, |s| s.raft_frames_received += 1);
                inner.handler.raft(env);
            }
            Kind::Request => {
                let req = match Request::decode(&f.body) {
                    Ok(r) => r,
                    Err(e) => return protocol_error(e.to_string()),
                };
                bump(inner, |s| s.requests_received += 1);
                if conn.in_flight.get() >= inner.cfg.limits.requests_in_flight {
                    // A peer whose sender keeps our limit never gets here; one that also does
                    // not read its answers would grow our queue of BUSY answers without end.
                    if conn.out.borrow().len() >= inner.cfg.limits.requests_in_flight {
                        return protocol_error(
                            "requests far beyond the in-flight limit, answers unread".into(),
                        );
                    }
                    bump(inner, |s| s.requests_refused_busy += 1);
                    let busy = Response {
                        status: status::BUSY,
                        body: Bytes::new(),
                    };
                    respond(conn, f.correlation, &busy);
                    continue;
                }
                conn.in_flight.set(conn.in_flight.get() + 1);
                let fut = inner.handler.request(conn.from, req);
                let c = conn.clone();
                let correlation = f.correlation;
                let spawned = spawn_local(inner, async move {
                    let resp = fut.await;
                    c.in_flight.set(c.in_flight.get() - 1);
                    respond(&c, correlation, &resp);
                });
                if let Err(e) = spawned {
                    conn.in_flight.set(conn.in_flight.get() - 1);
                    log::error!("{e}");
                    let down = Response {
                        status: status::SHUTTING_DOWN,
                        body: Bytes::new(),
                    };
                    respond(conn, correlation, &down);
                }
            }
            Kind::Ping => {
                // One pong queued at a time: a peer that pings faster than it reads cannot
                // grow our queue.
                if !conn.pong_queued.replace(true) {
                    conn.out.borrow_mut().push_back(Frame::new(
                        Kind::Pong,
                        f.correlation,
                        Bytes::new(),
                    ));
                    conn.queued.notify();
                }
            }
            other => {
                return protocol_error(format!(
                    "unexpected {other:?} frame on an incoming connection"
                ))
            }
        }
    }
}

/// Queues a response unless the connection is gone (its sender has failed the request).
/// Responses are bounded by the in-flight limit, so the queue is too.
fn respond(conn: &Inbound, correlation: u64, resp: &Response) {
    if conn.closed.is_set() {
        return;
    }
    if resp.body.len() + 2 > RPC_FRAME_MAX {
        log::error!(
            "rpc: response of {} bytes to node {} is over the frame limit {RPC_FRAME_MAX}: answering TOO_LARGE",
            resp.body.len(),
            conn.from
        );
        let too_large = Response {
            status: status::TOO_LARGE,
            body: Bytes::new(),
        };
        return respond(conn, correlation, &too_large);
    }
    conn.out
        .borrow_mut()
        .push_back(Frame::new(Kind::Response, correlation, resp.encode()));
    conn.queued.notify();
}

async fn inbound_writer<W: AsyncWrite + Unpin>(conn: &Inbound, w: &mut W) -> String {
    let mut buf = Vec::with_capacity(WRITE_BUFFER_BYTES);
    loop {
        let g = conn.queued.generation();
        let written = write_available(w, &mut buf, || {
            let f = conn.out.borrow_mut().pop_front()?;
            if f.kind == Kind::Pong {
                conn.pong_queued.set(false);
            }
            Some(f)
        })
        .await;
        if let Err(e) = written {
            return format!("write: {e}");
        }
        if conn.queued.generation() == g {
            conn.queued.changed(g).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: Kind, c: u64, n: usize) -> Frame {
        Frame::new(kind, c, Bytes::from(vec![0u8; n]))
    }

    #[test]
    fn queue_limits_frames_and_bytes() {
        let mut q = FrameQueue::new(3, 1000);
        // Alone, a frame over the byte limit is still admitted (it must be sendable).
        assert!(q.admits(5000));
        q.push(frame(Kind::Raft, 0, 5000));
        assert!(!q.admits(30));
        assert_eq!(q.pop().unwrap().body.len(), 5000);
        for _ in 0..3 {
            assert!(q.admits(100));
            q.push(frame(Kind::Raft, 0, 76));
        }
        assert!(!q.admits(1), "frame limit");
        q.pop();
        assert!(q.admits(100));
        assert!(q.admits(800), "2 x 100 queued + 800 = 1000 fits");
        assert!(!q.admits(801), "byte limit");
        q.pop();
        q.pop();
        assert_eq!(q.len(), 0);
        assert_eq!(q.bytes, 0);
    }

    #[test]
    fn raft_frames_go_first_and_requests_can_be_withdrawn() {
        let mut q = PeerQueues::new(&Limits::default());
        q.requests.push(frame(Kind::Request, 1, 10));
        q.requests.push(frame(Kind::Request, 2, 10));
        q.raft.push(frame(Kind::Raft, 0, 10));
        assert_eq!(q.pop_next().unwrap().kind, Kind::Raft);
        q.raft.push(frame(Kind::Raft, 0, 10));
        assert!(q.requests.remove(1));
        assert!(!q.requests.remove(1));
        assert_eq!(q.pop_next().unwrap().kind, Kind::Raft);
        assert_eq!(q.pop_next().unwrap().correlation, 2);
        assert!(q.pop_next().is_none());
    }
}
