//! `Mesh`: bounded request/reply messaging between shards, with correlation ids and a per-shard handler.
//!
//! Channel choice: every directed pair of shards gets two `glommio::channels::shared_channel`
//! bounded SPSC queues built by us up front, one for requests and one for replies. Not
//! `channel_mesh`, because (a) its peer ids follow executor creation order, not our shard ids,
//! and (b) its builder shares an `Rc` across threads. Separate reply links matter: a shard's
//! reply pump never blocks (it only completes local calls), so replies always drain even when
//! request links are full and handlers are saturated, which rules out the classic
//! "A waits on B's reply stuck behind A's requests" deadlock. All cross-thread synchronisation
//! is glommio's own channels; this module writes no atomic or lock-free code (hence no loom).
//!
//! Pumps: each shard runs one request pump and one reply pump per peer link rather than one task
//! polling all links. glommio parks one waker per poll of an empty link and only drains a
//! link's wakers when that link has data, so a single task re-polling N links would pile up
//! wakers on quiet links without bound. One task per link is woken only by its own link.
//!
//! Backpressure: a request pump takes a permit from a per-shard semaphore of
//! `handlers_inflight_max` before pulling the next request, so a slow shard stops draining its
//! request links and senders block on the bounded queues (`mesh_queue_depth_max`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};
use glommio::sync::Semaphore;

use crate::error::ShardError;
use crate::frame::{Envelope, Frame, RouteHeader, RouteKind};
use crate::runtime::{spawn_into, QueueKind, Queues};
use crate::table::ShardId;

/// Mesh limits from [`crate::ShardConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct MeshLimits {
    pub pending_calls_max: usize,
    pub handlers_inflight_max: usize,
}

/// Receives the frames other shards send to this one.
///
/// Installed per shard with [`Mesh::set_handler`]; runs on that shard. A handler may call other
/// shards, but must not call back (directly or through a chain) into the shard whose request it
/// is serving: with `handlers_inflight_max` handlers all waiting on such cycles, neither shard
/// pulls the requests that would complete them. Keep handler work shard-local, or fan out only
/// "downwards".
pub trait FrameHandler: 'static {
    /// The queue the handler for this frame runs in (e.g. by `frame.tag()`).
    fn queue_for(&self, from: ShardId, frame: &Frame) -> QueueKind;
    /// Handles one frame; the returned frame is the reply (dropped for one-way frames).
    #[allow(async_fn_in_trait)]
    async fn handle(&self, from: ShardId, frame: Frame) -> Frame;
}

/// Object-safe form of [`FrameHandler`], so the mesh can store any handler.
trait ErasedHandler {
    fn queue_for(&self, from: ShardId, frame: &Frame) -> QueueKind;
    fn handle_boxed(
        self: Rc<Self>,
        from: ShardId,
        frame: Frame,
    ) -> Pin<Box<dyn Future<Output = Frame>>>;
}

impl<H: FrameHandler> ErasedHandler for H {
    fn queue_for(&self, from: ShardId, frame: &Frame) -> QueueKind {
        FrameHandler::queue_for(self, from, frame)
    }

    fn handle_boxed(
        self: Rc<Self>,
        from: ShardId,
        frame: Frame,
    ) -> Pin<Box<dyn Future<Output = Frame>>> {
        Box::pin(async move { self.handle(from, frame).await })
    }
}

/// Unconnected channel ends for one shard, built on the starting thread and moved to the shard.
pub(crate) struct LinkEnds {
    req_tx: Vec<Option<SharedSender<Envelope>>>,
    rep_tx: Vec<Option<SharedSender<Envelope>>>,
    req_rx: Vec<Option<SharedReceiver<Envelope>>>,
    rep_rx: Vec<Option<SharedReceiver<Envelope>>>,
}

/// Connected channel ends; owned by one shard.
pub(crate) struct Links {
    req_tx: Vec<Option<ConnectedSender<Envelope>>>,
    rep_tx: Vec<Option<ConnectedSender<Envelope>>>,
    req_rx: Vec<Option<ConnectedReceiver<Envelope>>>,
    rep_rx: Vec<Option<ConnectedReceiver<Envelope>>>,
}

/// Builds request and reply links for every ordered pair of distinct shards.
pub(crate) fn build_links(shards: usize, depth: usize) -> Vec<LinkEnds> {
    fn none<T>(n: usize) -> Vec<Option<T>> {
        (0..n).map(|_| None).collect()
    }
    let mut ends: Vec<LinkEnds> = (0..shards)
        .map(|_| LinkEnds {
            req_tx: none(shards),
            rep_tx: none(shards),
            req_rx: none(shards),
            rep_rx: none(shards),
        })
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from == to {
                continue;
            }
            let (tx, rx) = shared_channel::new_bounded(depth);
            ends[from].req_tx[to] = Some(tx);
            ends[to].req_rx[from] = Some(rx);
            let (tx, rx) = shared_channel::new_bounded(depth);
            ends[from].rep_tx[to] = Some(tx);
            ends[to].rep_rx[from] = Some(rx);
        }
    }
    ends
}

/// Connects all ends concurrently: each `connect` waits for its peer shard to connect too.
pub(crate) async fn connect_links(ends: LinkEnds) -> Links {
    let spawn_tx = |v: Vec<Option<SharedSender<Envelope>>>| {
        v.into_iter()
            .map(|e| e.map(|s| glommio::spawn_local(s.connect())))
            .collect::<Vec<_>>()
    };
    let spawn_rx = |v: Vec<Option<SharedReceiver<Envelope>>>| {
        v.into_iter()
            .map(|e| e.map(|r| glommio::spawn_local(r.connect())))
            .collect::<Vec<_>>()
    };
    let (req_tx, rep_tx) = (spawn_tx(ends.req_tx), spawn_tx(ends.rep_tx));
    let (req_rx, rep_rx) = (spawn_rx(ends.req_rx), spawn_rx(ends.rep_rx));
    let mut links = Links {
        req_tx: vec![],
        rep_tx: vec![],
        req_rx: vec![],
        rep_rx: vec![],
    };
    for t in req_tx {
        links.req_tx.push(match t {
            Some(t) => Some(t.await),
            None => None,
        });
    }
    for t in rep_tx {
        links.rep_tx.push(match t {
            Some(t) => Some(t.await),
            None => None,
        });
    }
    for t in req_rx {
        links.req_rx.push(match t {
            Some(t) => Some(t.await),
            None => None,
        });
    }
    for t in rep_rx {
        links.rep_rx.push(match t {
            Some(t) => Some(t.await),
            None => None,
        });
    }
    links
}

/// This shard's endpoint of the mesh. Owned by shard N; !Send (clones stay on the shard).
#[derive(Clone)]
pub struct Mesh {
    inner: Rc<MeshInner>,
}

struct Pending {
    to: ShardId,
    result: Option<Result<Frame, ShardError>>,
    waker: Option<Waker>,
}

struct MeshInner {
    me: ShardId,
    count: usize,
    req_tx: Vec<Option<ConnectedSender<Envelope>>>,
    rep_tx: Vec<Option<ConnectedSender<Envelope>>>,
    pending: RefCell<HashMap<u64, Pending>>,
    next_corr: Cell<u64>,
    handler: RefCell<Option<Rc<dyn ErasedHandler>>>,
    /// Request pumps parked until a handler is installed.
    handler_wakers: RefCell<Vec<Waker>>,
    /// Peers whose reply link has ended: calls to them fail fast.
    gone: RefCell<Vec<bool>>,
    inflight: Rc<Semaphore>,
    queues: Queues,
    limits: MeshLimits,
    closed: Cell<bool>,
}

impl Mesh {
    pub(crate) fn new(
        me: ShardId,
        count: usize,
        links: Links,
        limits: MeshLimits,
        queues: Queues,
    ) -> Mesh {
        let Links {
            req_tx,
            rep_tx,
            req_rx,
            rep_rx,
        } = links;
        let inner = Rc::new(MeshInner {
            me,
            count,
            req_tx,
            rep_tx,
            pending: RefCell::new(HashMap::new()),
            next_corr: Cell::new(1),
            handler: RefCell::new(None),
            handler_wakers: RefCell::new(Vec::new()),
            gone: RefCell::new(vec![false; count]),
            inflight: Rc::new(Semaphore::new(limits.handlers_inflight_max as u64)),
            queues,
            limits,
            closed: Cell::new(false),
        });
        for (peer, rx) in req_rx.into_iter().enumerate() {
            if let Some(rx) = rx {
                let pump = request_pump(inner.clone(), ShardId(peer as u16), rx);
                spawn_pump(me, pump, queues);
            }
        }
        for (peer, rx) in rep_rx.into_iter().enumerate() {
            if let Some(rx) = rx {
                let pump = reply_pump(inner.clone(), ShardId(peer as u16), rx);
                spawn_pump(me, pump, queues);
            }
        }
        Mesh { inner }
    }

    pub fn shard_id(&self) -> ShardId {
        self.inner.me
    }

    pub fn shard_count(&self) -> usize {
        self.inner.count
    }

    /// Installs (or replaces) the handler for frames arriving at this shard.
    ///
    /// Requests that arrive before a handler is installed wait in their link, so peers may
    /// call a shard right after startup without racing its setup.
    pub fn set_handler<H: FrameHandler>(&self, handler: H) {
        *self.inner.handler.borrow_mut() = Some(Rc::new(handler));
        for w in self.inner.handler_wakers.take() {
            w.wake();
        }
    }

    /// Calls in flight from this shard.
    pub fn pending_calls(&self) -> usize {
        self.inner.pending.borrow().len()
    }

    /// Sends `frame` to shard `to` and waits for its handler's reply.
    ///
    /// A call to this shard itself runs the handler inline, without a channel hop.
    /// Dropping the returned future abandons the call; a late reply is discarded.
    /// Waits while `to`'s request link is full (backpressure) or it has no handler installed
    /// yet; fails with `PeerGone` once `to` has stopped. There is no built-in timeout: wrap the
    /// call in one if the caller needs a deadline.
    pub async fn call(&self, to: ShardId, frame: Frame) -> Result<Frame, ShardError> {
        let inner = &self.inner;
        inner.check_target(to)?;
        if to == inner.me {
            let handler = inner
                .handler
                .borrow()
                .clone()
                .ok_or(ShardError::NoHandler { shard: to })?;
            return Ok(handler.handle_boxed(to, frame).await);
        }
        if inner.pending.borrow().len() >= inner.limits.pending_calls_max {
            return Err(ShardError::TooManyPendingCalls {
                pending_calls_max: inner.limits.pending_calls_max,
            });
        }
        let corr = inner.next_corr.get();
        inner.next_corr.set(corr.wrapping_add(1));
        inner.pending.borrow_mut().insert(
            corr,
            Pending {
                to,
                result: None,
                waker: None,
            },
        );
        let _guard = PendingGuard { inner, corr };
        inner.send(to, RouteKind::Request, corr, frame).await?;
        std::future::poll_fn(|cx| {
            let mut pending = inner.pending.borrow_mut();
            let Some(p) = pending.get_mut(&corr) else {
                return Poll::Ready(Err(ShardError::MeshClosed { shard: inner.me }));
            };
            match p.result.take() {
                Some(r) => Poll::Ready(r),
                None => {
                    p.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Sends a one-way frame: the handler runs, its reply is dropped. Returns once queued.
    pub async fn notify(&self, to: ShardId, frame: Frame) -> Result<(), ShardError> {
        let inner = &self.inner;
        inner.check_target(to)?;
        if to == inner.me {
            let handler = inner
                .handler
                .borrow()
                .clone()
                .ok_or(ShardError::NoHandler { shard: to })?;
            let queue = handler.queue_for(to, &frame);
            spawn_into(&inner.queues, queue, async move {
                handler.handle_boxed(to, frame).await;
            })?
            .detach();
            return Ok(());
        }
        inner.send(to, RouteKind::OneWay, 0, frame).await
    }

    /// Calls every OTHER shard concurrently with a copy of `frame` (the body is cloned, the
    /// payload's bytes are shared) and returns each shard's result, in shard order.
    pub async fn broadcast(&self, frame: &Frame) -> Vec<(ShardId, Result<Frame, ShardError>)> {
        let mut tasks = Vec::with_capacity(self.inner.count);
        for i in 0..self.inner.count {
            let to = ShardId(i as u16);
            if to == self.inner.me {
                continue;
            }
            let (mesh, frame) = (self.clone(), frame.clone());
            tasks.push((
                to,
                glommio::spawn_local(async move { mesh.call(to, frame).await }),
            ));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for (to, t) in tasks {
            out.push((to, t.await));
        }
        out
    }

    /// Closes this endpoint: peers' pumps from us end, pending calls fail, new calls are refused.
    /// Called automatically when the shard's future returns.
    pub fn close(&self) {
        let inner = &self.inner;
        if inner.closed.replace(true) {
            return;
        }
        for tx in inner.req_tx.iter().chain(inner.rep_tx.iter()).flatten() {
            tx.close();
        }
        inner.inflight.close();
        // Dropping the handler breaks the Rc cycle a handler holding a `Mesh` would form.
        inner.handler.borrow_mut().take();
        for w in inner.handler_wakers.take() {
            w.wake();
        }
        let me = inner.me;
        inner.fail_pending(|_| true, |_| ShardError::MeshClosed { shard: me });
    }
}

impl MeshInner {
    fn check_target(&self, to: ShardId) -> Result<(), ShardError> {
        if to.index() >= self.count {
            return Err(ShardError::NoSuchShard {
                shard: to,
                shard_count: self.count,
            });
        }
        if self.closed.get() {
            return Err(ShardError::MeshClosed { shard: self.me });
        }
        if self.gone.borrow()[to.index()] {
            return Err(ShardError::PeerGone { shard: to });
        }
        Ok(())
    }

    async fn send(
        &self,
        to: ShardId,
        kind: RouteKind,
        corr_id: u64,
        frame: Frame,
    ) -> Result<(), ShardError> {
        let links = if kind == RouteKind::Request || kind == RouteKind::OneWay {
            &self.req_tx
        } else {
            &self.rep_tx
        };
        let tx = links
            .get(to.index())
            .and_then(Option::as_ref)
            .ok_or(ShardError::NoSuchShard {
                shard: to,
                shard_count: self.count,
            })?;
        let header = RouteHeader {
            corr_id,
            from: self.me.0,
            kind,
            _reserved: [0; 5],
        };
        tx.send(Envelope { header, frame })
            .await
            .map_err(|_| ShardError::PeerGone { shard: to })
    }

    /// Completes the pending call `corr`, if its caller is still waiting.
    fn complete(&self, corr: u64, result: Result<Frame, ShardError>) {
        let waker = {
            let mut pending = self.pending.borrow_mut();
            let Some(p) = pending.get_mut(&corr) else {
                return;
            };
            p.result = Some(result);
            p.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn fail_pending(&self, which: impl Fn(&Pending) -> bool, err: impl Fn(ShardId) -> ShardError) {
        let mut wakers = Vec::new();
        for p in self.pending.borrow_mut().values_mut() {
            if p.result.is_none() && which(p) {
                p.result = Some(Err(err(p.to)));
                wakers.extend(p.waker.take());
            }
        }
        for w in wakers {
            w.wake();
        }
    }

    /// Waits until a handler is installed; `None` once the mesh is closed.
    async fn wait_handler(&self) -> Option<Rc<dyn ErasedHandler>> {
        std::future::poll_fn(|cx| {
            if self.closed.get() {
                return Poll::Ready(None);
            }
            if let Some(h) = self.handler.borrow().clone() {
                return Poll::Ready(Some(h));
            }
            self.handler_wakers.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

fn spawn_pump(me: ShardId, pump: impl Future<Output = ()> + 'static, queues: Queues) {
    // Only fails for a foreign queue handle, which `Queues` never holds; log rather than panic.
    match glommio::spawn_local_into(pump, queues.mesh) {
        Ok(t) => drop(t.detach()),
        Err(e) => log::error!("{me}: cannot start a mesh pump: {e}"),
    }
}

/// Removes a call's pending entry however the call ends (reply, error, or caller dropped).
struct PendingGuard<'a> {
    inner: &'a MeshInner,
    corr: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.pending.borrow_mut().remove(&self.corr);
    }
}

async fn request_pump(inner: Rc<MeshInner>, from: ShardId, rx: ConnectedReceiver<Envelope>) {
    loop {
        // Take the permit before pulling, so a saturated shard leaves requests in the bounded
        // link (backpressure on the sender) instead of buffering them as tasks.
        let Ok(permit) = inner.inflight.acquire_static_permit(1).await else {
            break;
        };
        let Some(env) = rx.recv().await else { break };
        let Some(handler) = inner.wait_handler().await else {
            break;
        };
        let (kind, corr) = (env.header.kind, env.header.corr_id);
        if kind != RouteKind::Request && kind != RouteKind::OneWay {
            log::warn!(
                "{} got a {kind:?} envelope on the request link from {from}; dropped",
                inner.me
            );
            continue;
        }
        let queue = handler.queue_for(from, &env.frame);
        let inner2 = inner.clone();
        let task = async move {
            let reply = handler.handle_boxed(from, env.frame).await;
            if kind == RouteKind::Request {
                // The caller may be gone (shard stopping); then there is nobody to tell.
                let _ = inner2.send(from, RouteKind::Reply, corr, reply).await;
            }
            drop(permit);
        };
        match spawn_into(&inner.queues, queue, task) {
            Ok(t) => t.detach(),
            Err(e) => {
                log::error!(
                    "{}: cannot run handler for request from {from}: {e}",
                    inner.me
                );
                if kind == RouteKind::Request {
                    let _ = inner
                        .send(from, RouteKind::ReplyFailed, corr, Frame::default())
                        .await;
                }
            }
        }
    }
}

async fn reply_pump(inner: Rc<MeshInner>, from: ShardId, rx: ConnectedReceiver<Envelope>) {
    while let Some(env) = rx.recv().await {
        let result = match env.header.kind {
            RouteKind::Reply => Ok(env.frame),
            RouteKind::ReplyFailed => Err(ShardError::HandlerFailed { shard: from }),
            other => {
                log::warn!(
                    "{} got a {other:?} envelope on the reply link from {from}; dropped",
                    inner.me
                );
                continue;
            }
        };
        inner.complete(env.header.corr_id, result);
    }
    // The peer closed its end: no reply from it will ever come.
    inner.gone.borrow_mut()[from.index()] = true;
    inner.fail_pending(|p| p.to == from, |to| ShardError::PeerGone { shard: to });
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::runtime::{start, ShardConfig};
    use crate::shutdown::Shutdown;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(rkyv::Archive, rkyv::Serialize, Debug)]
    struct Ping {
        n: u64,
        note: String,
    }

    #[derive(rkyv::Archive, rkyv::Serialize, Debug)]
    struct Pong {
        n: u64,
        by: u16,
        payload_ptr: u64,
    }

    struct Echo {
        me: ShardId,
        one_way: Arc<AtomicUsize>,
    }

    impl FrameHandler for Echo {
        fn queue_for(&self, _from: ShardId, frame: &Frame) -> QueueKind {
            if frame.tag() == 9 {
                QueueKind::Background
            } else {
                QueueKind::Produce
            }
        }

        async fn handle(&self, _from: ShardId, frame: Frame) -> Frame {
            if frame.tag() == 9 {
                self.one_way.fetch_add(1, Ordering::SeqCst);
                return Frame::default();
            }
            let ping = frame.access::<Ping>().unwrap();
            let ptr = frame.payload().map(|p| p.as_ptr() as u64).unwrap_or(0);
            let pong = Pong {
                n: ping.n.to_native() + 1,
                by: self.me.0,
                payload_ptr: ptr,
            };
            Frame::encode(&pong, frame.payload().cloned()).unwrap()
        }
    }

    fn cfg(shards: usize) -> ShardConfig {
        ShardConfig {
            shards,
            io_memory: 1 << 20,
            ring_depth: 64,
            mesh_queue_depth_max: 4,
            ..ShardConfig::default()
        }
    }

    #[test]
    fn call_every_shard_including_self_zero_copy_payload() {
        let one_way = Arc::new(AtomicUsize::new(0));
        let ow = one_way.clone();
        let shards = 3;
        let done = Arc::new(AtomicUsize::new(0));
        let done2 = done.clone();
        let rt = start(cfg(shards), Shutdown::new(), move |ctx| {
            let (ow, done) = (ow.clone(), done2.clone());
            async move {
                let mesh = ctx.mesh().clone();
                mesh.set_handler(Echo {
                    me: ctx.shard_id(),
                    one_way: ow,
                });
                // Many more calls than the queue depth (4): exercises bounded backpressure.
                for round in 0..50u64 {
                    for to in 0..shards as u16 {
                        let payload = Bytes::from(vec![round as u8; 1000]);
                        let ptr = payload.as_ptr() as u64;
                        let f = Frame::encode(
                            &Ping {
                                n: round,
                                note: "hi".into(),
                            },
                            Some(payload),
                        )
                        .unwrap();
                        let reply = mesh.call(ShardId(to), f).await.unwrap();
                        let pong = reply.access::<Pong>().unwrap();
                        assert_eq!(pong.n, round + 1);
                        assert_eq!(pong.by, to);
                        // The handler on the other thread saw our allocation, not a copy.
                        assert_eq!(pong.payload_ptr, ptr);
                        assert_eq!(reply.payload().unwrap().as_ptr() as u64, ptr);
                    }
                }
                for (_, r) in mesh
                    .broadcast(
                        &Frame::encode(
                            &Ping {
                                n: 1,
                                note: String::new(),
                            },
                            None,
                        )
                        .unwrap(),
                    )
                    .await
                {
                    assert_eq!(r.unwrap().access::<Pong>().unwrap().n, 2);
                }
                let next = ShardId(((ctx.shard_id().0 as usize + 1) % shards) as u16);
                mesh.notify(next, Frame::empty(9, None)).await.unwrap();
                assert_eq!(mesh.pending_calls(), 0);
                assert!(matches!(
                    mesh.call(ShardId(7), Frame::default()).await,
                    Err(ShardError::NoSuchShard { .. })
                ));
                // Stay up until every shard is done calling, so nobody calls a closed peer.
                done.fetch_add(1, Ordering::SeqCst);
                while done.load(Ordering::SeqCst) < shards {
                    crate::runtime::sleep(std::time::Duration::from_millis(1)).await;
                }
                crate::runtime::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .unwrap();
        rt.join().unwrap();
        assert_eq!(one_way.load(Ordering::SeqCst), shards);
    }

    #[test]
    fn calls_to_a_stopped_shard_fail_instead_of_hanging() {
        let rt = start(cfg(2), Shutdown::new(), |ctx| async move {
            if ctx.shard_id() == ShardId(1) {
                return; // leaves the mesh at once
            }
            let mesh = ctx.mesh();
            crate::runtime::sleep(std::time::Duration::from_millis(30)).await;
            let r = mesh.call(ShardId(1), Frame::default()).await;
            assert!(matches!(r, Err(ShardError::PeerGone { .. })), "{r:?}");
            // A self call without a handler is an error, not a hang.
            assert!(matches!(
                mesh.call(ShardId(0), Frame::default()).await,
                Err(ShardError::NoHandler { .. })
            ));
        })
        .unwrap();
        rt.join().unwrap();
    }

    #[test]
    fn requests_before_the_handler_is_installed_wait_for_it() {
        let rt = start(cfg(2), Shutdown::new(), |ctx| async move {
            let mesh = ctx.mesh().clone();
            if ctx.shard_id() == ShardId(1) {
                crate::runtime::sleep(std::time::Duration::from_millis(30)).await;
                mesh.set_handler(Echo {
                    me: ctx.shard_id(),
                    one_way: Arc::new(AtomicUsize::new(0)),
                });
                ctx.shutdown().wait().await;
                return;
            }
            let f = Frame::encode(
                &Ping {
                    n: 41,
                    note: String::new(),
                },
                None,
            )
            .unwrap();
            let reply = mesh.call(ShardId(1), f).await.unwrap();
            assert_eq!(reply.access::<Pong>().unwrap().n, 42);
            ctx.shutdown().trigger();
        })
        .unwrap();
        rt.join().unwrap();
    }
}
