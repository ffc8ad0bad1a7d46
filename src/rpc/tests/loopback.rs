//! Transports on loopback TCP in one glommio executor: Raft envelopes and requests between
//! real endpoints, a peer restart, refused identities, hostile frames, and a peer that stops
//! reading. Waits are "until it happens" with a generous bound, never timing assertions.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use raft::eraftpb::{Entry, Message, MessageType};
use sluice_raft::{Envelope, Heartbeat};
use sluice_rpc::frame::{read_frame, Frame, HEADER_LEN, HELLO_BODY_MAX};
use sluice_rpc::{
    encode_envelope, status, DirectoryId, Handler, Hello, Kind, LocalBoxFuture, NodeId, Request,
    RequestError, Response, SendError, Timeouts, Transport, TransportConfig, RPC_FRAME_MAX,
};

/// Method the test handler answers by echoing "from <id>: <body>".
const ECHO: u16 = 1;
/// Method the test handler never answers.
const HANG: u16 = 2;
/// Bound on every "until it happens" wait.
const PATIENCE: Duration = Duration::from_secs(20);

fn run<F: Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .ring_depth(64)
        .make()
        .expect("glommio executor");
    ex.run(f());
}

#[derive(Default)]
struct Recorder {
    raft: RefCell<Vec<Envelope>>,
    /// `directory_replaced` calls: who knew us by which directory.
    replaced: RefCell<Vec<(NodeId, DirectoryId)>>,
}

impl Handler for Recorder {
    fn raft(&self, envelope: Envelope) {
        self.raft.borrow_mut().push(envelope);
    }

    fn directory_replaced(&self, by: NodeId, known: DirectoryId) {
        self.replaced.borrow_mut().push((by, known));
    }

    fn request(&self, from: NodeId, request: Request) -> LocalBoxFuture<Response> {
        Box::pin(async move {
            match request.method {
                ECHO => {
                    let mut b = format!("from {from}: ").into_bytes();
                    b.extend_from_slice(&request.body);
                    Response::ok(Bytes::from(b))
                }
                HANG => futures_lite::future::pending().await,
                _ => Response {
                    status: status::UNKNOWN_METHOD,
                    body: Bytes::new(),
                },
            }
        })
    }
}

fn fast_timeouts() -> Timeouts {
    Timeouts {
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        ..Timeouts::default()
    }
}

struct Node {
    t: Transport,
    rec: Rc<Recorder>,
}

async fn node(id: NodeId, listen: &str) -> Node {
    node_with_directory(id, listen, [0; 16]).await
}

async fn node_with_directory(id: NodeId, listen: &str, directory: DirectoryId) -> Node {
    let rec = Rc::new(Recorder::default());
    let mut cfg = TransportConfig::new(id, Some(listen.parse().unwrap()));
    cfg.timeouts = fast_timeouts();
    cfg.directory = directory;
    let t = Transport::start(cfg, rec.clone())
        .await
        .expect("start transport");
    Node { t, rec }
}

fn addr(n: &Node) -> SocketAddr {
    n.t.local_addr().unwrap()
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for: {what}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

fn heartbeat_envelope(from: NodeId, to: NodeId, group: u64) -> Envelope {
    let mut append = Message::default();
    append.set_msg_type(MessageType::MsgAppend);
    append.from = from;
    append.to = to;
    append.term = 3;
    let e = Entry {
        index: 1,
        term: 3,
        data: Bytes::from_static(b"a kafka batch"),
        ..Default::default()
    };
    append.set_entries(vec![e].into());
    Envelope {
        from,
        to,
        heartbeats: vec![Heartbeat {
            group,
            response: false,
            term: 3,
            commit: 7,
            quiesce: false,
        }],
        messages: vec![(group, append)],
    }
}

fn big_envelope(from: NodeId, to: NodeId, bytes: usize) -> Envelope {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    m.from = from;
    m.to = to;
    let e = Entry {
        data: Bytes::from(vec![7u8; bytes]),
        ..Default::default()
    };
    m.set_entries(vec![e].into());
    Envelope {
        from,
        to,
        heartbeats: vec![],
        messages: vec![(1, m)],
    }
}

#[test]
fn three_nodes_exchange_raft_envelopes_and_requests() {
    run(|| async {
        let mut nodes = Vec::new();
        for id in 1..=3 {
            nodes.push(node(id, "127.0.0.1:0").await);
        }
        for a in &nodes {
            for b in &nodes {
                if a.t.node_id() != b.t.node_id() {
                    a.t.add_peer(b.t.node_id(), addr(b)).unwrap();
                }
            }
        }
        eventually("all six connections up", || {
            nodes
                .iter()
                .all(|a| (1..=3).all(|p| p == a.t.node_id() || a.t.is_connected(p)))
        })
        .await;
        for a in &nodes {
            for b in &nodes {
                let (from, to) = (a.t.node_id(), b.t.node_id());
                if from != to {
                    a.t.send_raft(heartbeat_envelope(from, to, from * 10 + to), true)
                        .unwrap();
                }
            }
        }
        eventually("two envelopes at every node", || {
            nodes.iter().all(|n| n.rec.raft.borrow().len() == 2)
        })
        .await;
        for n in &nodes {
            let mut got = n.rec.raft.borrow().clone();
            got.sort_by_key(|e| e.from);
            let me = n.t.node_id();
            let want: Vec<Envelope> = (1..=3)
                .filter(|&p| p != me)
                .map(|p| heartbeat_envelope(p, me, p * 10 + me))
                .collect();
            assert_eq!(got, want, "node {me}");
        }

        let r = nodes[0]
            .t
            .request(2, ECHO, Bytes::from_static(b"hi"), PATIENCE)
            .await
            .unwrap();
        assert_eq!(r, Response::ok(Bytes::from_static(b"from 1: hi")));
        let r = nodes[2]
            .t
            .request(1, ECHO, Bytes::from(vec![b'x'; 300_000]), PATIENCE)
            .await
            .unwrap();
        assert_eq!(r.body.len(), "from 3: ".len() + 300_000);
        let r = nodes[1]
            .t
            .request(3, 99, Bytes::new(), PATIENCE)
            .await
            .unwrap();
        assert_eq!(r.status, status::UNKNOWN_METHOD);
        // Many concurrent requests, each matched to its own answer by correlation id.
        let t0 = &nodes[0].t;
        let answers = futures_lite::future::zip(
            futures_lite::future::zip(
                t0.request(3, ECHO, Bytes::from_static(b"a"), PATIENCE),
                t0.request(3, ECHO, Bytes::from_static(b"b"), PATIENCE),
            ),
            t0.request(2, ECHO, Bytes::from_static(b"c"), PATIENCE),
        )
        .await;
        assert_eq!(&answers.0 .0.unwrap().body[..], b"from 1: a");
        assert_eq!(&answers.0 .1.unwrap().body[..], b"from 1: b");
        assert_eq!(&answers.1.unwrap().body[..], b"from 1: c");
        // A request nobody answers times out, and the next one still works.
        let e = t0
            .request(2, HANG, Bytes::new(), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(e, RequestError::Timeout { peer: 2 });
        assert!(t0.request(2, ECHO, Bytes::new(), PATIENCE).await.is_ok());
        // Misaddressed sends are refused at once.
        assert_eq!(
            t0.send_raft(heartbeat_envelope(1, 9, 1), true),
            Err(SendError::UnknownPeer(9))
        );
        assert_eq!(
            t0.send_raft(heartbeat_envelope(2, 3, 1), true),
            Err(SendError::NotFromThisNode(2))
        );
        assert_eq!(
            t0.request(9, ECHO, Bytes::new(), PATIENCE).await,
            Err(RequestError::UnknownPeer(9))
        );

        let s = t0.stats();
        assert_eq!(s.connections_established, 2);
        assert_eq!(s.connections_accepted, 2);
        assert_eq!(s.raft_frames_sent, 2);
        assert_eq!(s.raft_frames_dropped, 0);
        assert_eq!(s.protocol_errors, 0);
        assert_eq!(s.handshakes_refused, 0);
        for n in &nodes {
            n.t.shutdown().await;
        }
    });
}

#[test]
fn a_restarted_peer_is_reconnected_and_traffic_resumes() {
    run(|| async {
        let a = Rc::new(node(1, "127.0.0.1:0").await);
        let b = node(2, "127.0.0.1:0").await;
        let b_addr = addr(&b);
        a.t.add_peer(2, b_addr).unwrap();
        b.t.add_peer(1, addr(&a)).unwrap();
        eventually("connected", || a.t.is_connected(2)).await;
        a.t.send_raft(heartbeat_envelope(1, 2, 5), true).unwrap();
        eventually("first envelope", || b.rec.raft.borrow().len() == 1).await;

        // A request in flight when the peer dies fails as ConnectionLost.
        let pending = glommio::spawn_local({
            let a = a.clone();
            async move { a.t.request(2, HANG, Bytes::new(), PATIENCE).await }
        });
        eventually("request arrived", || b.t.stats().requests_received == 1).await;
        b.t.shutdown().await;
        drop(b);
        assert_eq!(pending.await, Err(RequestError::ConnectionLost { peer: 2 }));
        eventually("disconnected", || !a.t.is_connected(2)).await;

        // Sent while the peer is down: discarded (stale by the time it is back).
        assert_eq!(
            a.t.send_raft(heartbeat_envelope(1, 2, 6), true),
            Err(SendError::Disconnected(2))
        );
        assert_eq!(a.t.stats().raft_frames_discarded, 1);
        // A second node cannot take a port in use (glommio's SO_REUSEPORT would allow it).
        let busy = TransportConfig::new(4, Some(addr(&a)));
        let err = Transport::start(busy, Rc::new(Recorder::default()))
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        let b2 = node(2, &b_addr.to_string()).await;
        b2.t.add_peer(1, addr(&a)).unwrap();
        eventually("reconnected", || a.t.stats().connections_established == 2).await;
        a.t.send_raft(heartbeat_envelope(1, 2, 7), true).unwrap();
        eventually("new envelope delivered", || b2.rec.raft.borrow().len() == 1).await;
        assert_eq!(b2.rec.raft.borrow()[0], heartbeat_envelope(1, 2, 7));
        let r =
            a.t.request(2, ECHO, Bytes::from_static(b"again"), PATIENCE)
                .await;
        assert_eq!(r.unwrap().body, Bytes::from_static(b"from 1: again"));
        // And the other way, over the restarted node's own outgoing connection.
        let r =
            b2.t.request(1, ECHO, Bytes::from_static(b"back"), PATIENCE)
                .await;
        assert_eq!(r.unwrap().body, Bytes::from_static(b"from 2: back"));
        a.t.shutdown().await;
        b2.t.shutdown().await;
    });
}

/// Accepts one connection, answers its Hello as node `id`, and returns the socket (which
/// the caller then never reads).
async fn fake_peer(listener: &TcpListener, id: NodeId) -> TcpStream {
    let mut s = listener.accept().await.unwrap();
    let f = read_frame(&mut s, HELLO_BODY_MAX).await.unwrap().unwrap();
    let h = Hello::decode(&f.body).unwrap();
    let reply = Frame::new(Kind::Hello, 0, Hello::new(id, h.node_id, "").encode());
    s.write_all(&reply.encode()).await.unwrap();
    s
}

#[test]
fn a_peer_announcing_another_id_is_refused() {
    run(|| async {
        // Node 1 is told node 2 is where node 3 listens: node 3 refuses (it is not the node
        // meant) and still says who it is, so node 1 logs the mismatch too.
        let a = node(1, "127.0.0.1:0").await;
        let c = node(3, "127.0.0.1:0").await;
        a.t.add_peer(2, addr(&c)).unwrap();
        a.t.send_raft(heartbeat_envelope(1, 2, 1), true).unwrap();
        eventually("both sides refused", || {
            a.t.stats().handshakes_refused >= 2 && c.t.stats().handshakes_refused >= 2
        })
        .await;
        assert!(!a.t.is_connected(2));
        assert!(
            c.rec.raft.borrow().is_empty(),
            "nothing delivered to the wrong node"
        );
        assert_eq!(c.t.stats().connections_accepted, 0);

        // A listener that claims to be node 3 when node 1 dialed node 2 (the dialer's check
        // alone, as a node of an older build or a confused proxy would).
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let d = node(1, "127.0.0.1:0").await;
        d.t.add_peer(2, l.local_addr().unwrap()).unwrap();
        let _s = fake_peer(&l, 3).await;
        eventually("dialer refused", || d.t.stats().handshakes_refused == 1).await;
        assert!(!d.t.is_connected(2));
        a.t.shutdown().await;
        c.t.shutdown().await;
        d.t.shutdown().await;
    });
}

/// Node 2 comes back with another data directory (it was wiped) at the same address: node
/// 1, which knows the directory it registered, refuses it either way round and tells it so,
/// and no Raft message reaches it; a node whose directory nobody knows yet is let in.
#[test]
fn a_node_whose_directory_was_replaced_is_refused_and_told() {
    run(|| async {
        let a = node_with_directory(1, "127.0.0.1:0", [1; 16]).await;
        let b = node_with_directory(2, "127.0.0.1:0", [2; 16]).await;
        let b_addr = addr(&b);
        a.t.set_peer_directory(2, [2; 16]);
        b.t.set_peer_directory(1, [1; 16]);
        a.t.add_peer(2, b_addr).unwrap();
        b.t.add_peer(1, addr(&a)).unwrap();
        a.t.send_raft(heartbeat_envelope(1, 2, 1), true).unwrap();
        eventually("delivered", || b.rec.raft.borrow().len() == 1).await;
        b.t.shutdown().await;
        drop(b);

        let wiped = node_with_directory(2, &b_addr.to_string(), [9; 16]).await;
        wiped.t.add_peer(1, addr(&a)).unwrap();
        // Queued if node 1 has not yet noticed the old connection's end, else discarded:
        // either way it must never reach the wiped node.
        let _ = a.t.send_raft(heartbeat_envelope(1, 2, 2), true);
        // Both ways refused: node 1 dialing it, and it dialing node 1.
        eventually("told twice", || wiped.rec.replaced.borrow().len() >= 2).await;
        assert!(wiped
            .rec
            .replaced
            .borrow()
            .iter()
            .all(|&r| r == (1, [2; 16])));
        eventually("node 1 refused it", || a.t.stats().handshakes_refused >= 2).await;
        assert!(!a.t.is_connected(2) && !wiped.t.is_connected(1));
        assert!(
            wiped.rec.raft.borrow().is_empty(),
            "no Raft message reached it"
        );
        assert!(a.rec.replaced.borrow().is_empty());
        wiped.t.shutdown().await;

        // Forgetting the registration (zeros) lets a node with any directory in.
        a.t.set_peer_directory(2, [0; 16]);
        let other = node_with_directory(2, &b_addr.to_string(), [9; 16]).await;
        other.t.add_peer(1, addr(&a)).unwrap();
        eventually("let in", || a.t.is_connected(2)).await;
        a.t.send_raft(heartbeat_envelope(1, 2, 3), true).unwrap();
        eventually("delivered after all", || {
            !other.rec.raft.borrow().is_empty()
        })
        .await;
        assert!(other.rec.replaced.borrow().is_empty());
        a.t.shutdown().await;
        other.t.shutdown().await;
    });
}

/// Writes `bytes` to `to` and returns once the other side has closed the connection.
async fn closed_after(to: SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(to).await.unwrap();
    // The server may close before reading everything; a write error is fine.
    let _ = s.write_all(bytes).await;
    let mut buf = vec![0u8; 4096];
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < PATIENCE,
            "server kept the connection open"
        );
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {} // our Hello's answer, before the bad frame
        }
    }
}

fn header(kind: u8, correlation: u64, len: u32, crc: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(b"SLRP");
    h.put_u8(1);
    h.put_u8(kind);
    h.put_u16(0);
    h.put_u64(correlation);
    h.put_u32(len);
    h.put_u32(crc);
    h
}

fn hello_from(id: NodeId, to: NodeId) -> Vec<u8> {
    Frame::new(Kind::Hello, 0, Hello::new(id, to, "").encode())
        .encode()
        .to_vec()
}

#[test]
fn hostile_frames_close_the_connection_without_panic() {
    run(|| async {
        let b = node(2, "127.0.0.1:0").await;
        let to = addr(&b);
        let after_hello = |frame: Vec<u8>| {
            let mut v = hello_from(9, 2);
            v.extend_from_slice(&frame);
            v
        };
        let garbage_body = b"not an envelope".to_vec();
        let mut garbage_raft = header(
            2,
            0,
            garbage_body.len() as u32,
            crc32c::crc32c(&garbage_body),
        );
        garbage_raft.extend_from_slice(&garbage_body);
        let forged = encode_envelope(heartbeat_envelope(5, 2, 1), true);
        let mut forged_raft = header(2, 0, forged.len() as u32, crc32c::crc32c(&forged));
        forged_raft.extend_from_slice(&forged);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "kafka request instead of hello",
                // ApiVersions v0, client id "test-client-id" (a Kafka client on the wrong port).
                b"\0\0\0\x16\0\x12\0\0\0\0\0\x01\0\x0etest-client-id".to_vec(),
            ),
            ("huge hello", header(1, 0, u32::MAX, 0)),
            (
                "hello over the pre-handshake limit",
                header(1, 0, HELLO_BODY_MAX as u32 + 1, 0),
            ),
            ("request before hello", header(3, 1, 0, 0)),
            ("hello from node 0", hello_from(0, 2)),
            ("hello from itself", hello_from(2, 2)),
            (
                "bad crc",
                after_hello({
                    let mut f = header(3, 1, 4, 0xdead_beef);
                    f.extend_from_slice(b"abcd");
                    f
                }),
            ),
            (
                "oversized frame",
                after_hello(header(2, 0, RPC_FRAME_MAX as u32 + 1, 0)),
            ),
            ("unknown kind", after_hello(header(77, 0, 0, 0))),
            (
                "response on an incoming connection",
                after_hello({
                    let mut f = header(4, 1, 2, crc32c::crc32c(&[0, 0]));
                    f.extend_from_slice(&[0, 0]);
                    f
                }),
            ),
            (
                "request body too short",
                after_hello({
                    let mut f = header(3, 1, 1, crc32c::crc32c(&[0]));
                    f.push(0);
                    f
                }),
            ),
            ("garbage raft envelope", after_hello(garbage_raft)),
            ("envelope claiming another sender", after_hello(forged_raft)),
            ("second hello", after_hello(hello_from(9, 2))),
        ];
        let n = cases.len();
        for (what, bytes) in cases {
            let before = b.t.stats();
            closed_after(to, &bytes).await;
            let after = b.t.stats();
            let counted = after.protocol_errors + after.handshakes_refused
                - before.protocol_errors
                - before.handshakes_refused;
            assert_eq!(counted, 1, "{what}: {after:?}");
        }
        assert!(b.rec.raft.borrow().is_empty());
        let s = b.t.stats();
        assert_eq!(s.protocol_errors + s.handshakes_refused, n as u64);
        // Still serving real peers.
        let a = node(1, "127.0.0.1:0").await;
        a.t.add_peer(2, to).unwrap();
        let r =
            a.t.request(2, ECHO, Bytes::from_static(b"ok?"), PATIENCE)
                .await;
        assert_eq!(r.unwrap().body, Bytes::from_static(b"from 1: ok?"));
        a.t.shutdown().await;
        b.t.shutdown().await;
    });
}

#[test]
fn a_peer_that_stops_reading_drops_raft_and_holds_back_requests() {
    run(|| async {
        let rec = Rc::new(Recorder::default());
        let mut cfg = TransportConfig::new(1, None);
        cfg.timeouts = Timeouts {
            silence: Duration::from_secs(3600),
            ping_interval: Duration::from_secs(1800),
            ..fast_timeouts()
        };
        cfg.limits.raft_queue_frames = 3;
        cfg.limits.raft_queue_bytes = 1 << 20;
        cfg.limits.request_queue_frames = 2;
        cfg.limits.requests_in_flight = 3;
        let a = Rc::new(Transport::start(cfg, rec).await.unwrap());
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        a.add_peer(2, l.local_addr().unwrap()).unwrap();
        let _socket = fake_peer(&l, 2).await; // never read
        eventually("connected", || a.is_connected(2)).await;

        // Fill the socket buffers, then the queue: sends never wait, they start failing.
        let mut sent = 0;
        let dropped = loop {
            assert!(sent < 4000, "queue never filled");
            match a.send_raft(big_envelope(1, 2, 256 * 1024), true) {
                Ok(()) => sent += 1,
                Err(SendError::Dropped { frames, .. }) => break frames,
                Err(e) => panic!("{e}"),
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        };
        assert_eq!(dropped, 1);
        assert!(a.stats().raft_frames_dropped >= 1);
        // The writer is stuck on the full socket, so the queue stays full.
        glommio::timer::sleep(Duration::from_millis(20)).await;
        assert!(matches!(
            a.send_raft(heartbeat_envelope(1, 2, 1), true),
            Err(SendError::Dropped { frames: 1, .. })
        ));

        // Requests queue behind (two fit), then wait for room and give up with a clear error.
        let waiting: Vec<_> = (0..2)
            .map(|i| {
                let a = a.clone();
                glommio::spawn_local(async move {
                    a.request(2, ECHO, Bytes::from(vec![i; 100]), PATIENCE)
                        .await
                })
            })
            .collect();
        eventually("two requests queued", || {
            a.queue_lengths(2).unwrap().request_frames == 2
        })
        .await;
        let e = a
            .request(
                2,
                ECHO,
                Bytes::from_static(b"third"),
                Duration::from_millis(100),
            )
            .await
            .unwrap_err();
        assert_eq!(e, RequestError::Backpressure { peer: 2 });
        assert_eq!(
            a.stats().requests_sent,
            0,
            "nothing got past the stuck Raft frame"
        );

        a.shutdown().await;
        for w in waiting {
            assert_eq!(w.await, Err(RequestError::Shutdown));
        }
    });
}

#[test]
fn requests_beyond_the_in_flight_limit_are_answered_busy_and_raft_still_flows() {
    run(|| async {
        let b = node(2, "127.0.0.1:0").await;
        let mut s = TcpStream::connect(addr(&b)).await.unwrap();
        let mut out = hello_from(9, 2);
        let limit = sluice_rpc::REQUESTS_IN_FLIGHT_MAX as u64;
        for c in 1..=limit + 1 {
            let body = Request {
                method: HANG,
                body: Bytes::new(),
            }
            .encode();
            out.extend_from_slice(&Frame::new(Kind::Request, c, body).encode());
        }
        s.write_all(&out).await.unwrap();
        let hello = read_frame(&mut s, HELLO_BODY_MAX).await.unwrap().unwrap();
        assert_eq!(Hello::decode(&hello.body).unwrap().node_id, 2);
        let busy = read_frame(&mut s, RPC_FRAME_MAX).await.unwrap().unwrap();
        assert_eq!((busy.kind, busy.correlation), (Kind::Response, limit + 1));
        assert_eq!(Response::decode(&busy.body).unwrap().status, status::BUSY);
        assert_eq!(b.t.stats().requests_refused_busy, 1);
        // The connection keeps being read: Raft frames are not stuck behind the requests.
        let env = heartbeat_envelope(9, 2, 4);
        let raft = Frame::new(Kind::Raft, 0, encode_envelope(env.clone(), true));
        s.write_all(&raft.encode()).await.unwrap();
        eventually("envelope handled", || b.rec.raft.borrow().len() == 1).await;
        assert_eq!(b.rec.raft.borrow()[0], env);
        b.t.shutdown().await;
    });
}

#[test]
fn a_silent_peer_is_dropped_and_redialed() {
    run(|| async {
        // A peer whose TCP stack still accepts bytes but which never answers (a black hole,
        // a stopped process): the dialer notices the missing pongs and dials again.
        let mut cfg = TransportConfig::new(1, None);
        cfg.timeouts = Timeouts {
            ping_interval: Duration::from_millis(20),
            silence: Duration::from_millis(200),
            ..fast_timeouts()
        };
        let a = Transport::start(cfg, Rc::new(Recorder::default()))
            .await
            .unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        a.add_peer(2, l.local_addr().unwrap()).unwrap();
        let _first = fake_peer(&l, 2).await;
        let redialed = futures_lite::future::or(async { Some(fake_peer(&l, 2).await) }, async {
            glommio::timer::sleep(PATIENCE).await;
            None
        })
        .await;
        assert!(redialed.is_some(), "never dialed again");
        let s = a.stats();
        assert!(s.silence_timeouts >= 1, "{s:?}");
        assert!(s.connections_established >= 1, "{s:?}");
        a.shutdown().await;
    });
}
