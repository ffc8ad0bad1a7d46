//! One client connection: read frames, run requests concurrently (bounded), write responses
//! strictly in request order, over plain TCP or TLS (`crate::tls_host`); on a SASL listener
//! the client authenticates first (`crate::sasl_host`). Bad input closes the connection; it
//! never panics the shard.

use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_lite::io::WriteHalf;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use sluice_codec::kafka_protocol::messages::ApiKey;
use sluice_codec::{peek_request_prefix, FrameDecoder, FRAME_SIZE_PREFIX_LEN};
use sluice_replica::sequences::ConnRefusals;
use sluice_shard::{CallClass, Frame, ShardId};

use crate::config::{SecurityProtocol, INFLIGHT_REQUESTS_MAX, REQUEST_SIZE_MAX};
use crate::connections::Admitted;
use crate::handlers;
use crate::ops::{ForwardHeader, TAG_FORWARD};
use crate::sasl_host::{SaslConn, Verdict, SASL_FRAME_BYTES_MAX};
use crate::shard::BrokerShard;
use crate::stats::{self, Stage};

/// Most bytes asked of the socket per read, unless a large frame is being received. These
/// reads land in a scratch buffer that is zeroed only when it is resized and are copied out:
/// a small request then costs a copy of its own bytes, not the zeroing of a fresh 64 KiB
/// read buffer (which was ~2 % of a shard's CPU with consumers fetching thousands of times a
/// second).
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// The scratch buffer's first and smallest size. It doubles while reads fill it and halves
/// while they use under a quarter of it, so an idle connection (whose one pending read is
/// this size) costs little memory and a busy one reads in large chunks.
const READ_CHUNK_BYTES_MIN: usize = 4 * 1024;
/// Largest read made straight into the buffer of a frame still missing at least
/// `READ_CHUNK_BYTES` (no copy; only the bytes asked for are zeroed first). A direct read
/// asks for at most twice what the previous read brought: its bytes are taken from the
/// shard's request budget (and zeroed) before the client sent them, so a client that
/// declares a large frame and then trickles is read through the scratch buffer instead and
/// holds only what it sent.
const READ_DIRECT_BYTES_MAX: usize = 1024 * 1024;
/// How much of a frame must have arrived before its buffer is sized for the rest of it (see
/// `reserve_frame`): one full TLS record.
const RESERVE_FRAME_AFTER: usize = 16 * 1024;

/// What a request produced.
pub enum Outcome {
    Respond(Bytes),
    /// A response frame in parts (large records shared, not copied), written in order.
    RespondParts(Vec<Bytes>),
    /// acks=0 produce: the client expects nothing.
    NoResponse,
    /// Protocol violation: close the connection after the responses before it.
    Close,
}

/// Serves one connection accepted on a `listener` until the client goes away, breaks the
/// protocol, stays idle (the sweeper in [`crate::connections`] then shuts its socket down),
/// or the broker stops (it then takes no new request, answers those in flight and closes).
/// `admitted` keeps the connection counted until this returns. On a TLS listener the
/// handshake comes first; a client that fails it (or takes longer than
/// [`crate::tls_host::TLS_HANDSHAKE_MAX`]) is closed, having cost nothing else.
pub async fn serve(
    shard: Rc<BrokerShard>,
    stream: TcpStream,
    listener: SecurityProtocol,
    admitted: Admitted,
) {
    let _ = stream.set_nodelay(true);
    // Kafka shows a member's host as "/1.2.3.4".
    let source = stream.peer_addr().ok();
    let peer: Rc<str> = source
        .map(|a| format!("/{}", a.ip()))
        .unwrap_or_default()
        .into();
    // For vectored sends and for the sweeper's shutdown; the stream owns the socket for as
    // long as this connection is served.
    let fd = stream.as_raw_fd();
    let mut client = Client {
        conn: ConnId::next(),
        host: peer,
        listener,
        principal: Rc::from(ANONYMOUS),
        internal: false,
        mute: Rc::default(),
        refusals: Rc::default(),
        source,
        software: Rc::default(),
        token_authenticated: false,
    };
    if !listener.tls() {
        return serve_stream(shard, stream, fd, Transport::Plain, client, admitted).await;
    }
    let Some(config) = shard
        .shared_handle
        .tls
        .as_ref()
        .map(|t| t.config_for(listener))
    else {
        log::error!("a {listener} listener without TLS configuration; closing the connection");
        return;
    };
    match crate::tls_host::handshake(config, stream).await {
        Ok(tls) => {
            // A client certificate (an `ssl` listener under `--tls-ca`) names the principal.
            if let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                match sluice_security::certificate_principal(cert) {
                    Ok(p) => client.principal = Rc::from(p),
                    Err(e) => log::info!("client certificate from {}: {e}", client.host),
                }
            }
            serve_stream(shard, tls, fd, Transport::Tls, client, admitted).await
        }
        Err(e) => log::info!(
            "closing connection from {} on the {listener} listener: TLS handshake: {e}",
            client.host
        ),
    }
}

/// How responses reach the socket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// Plain TCP: responses in parts go out with vectored sends on the descriptor.
    Plain,
    /// TLS: everything is written (encrypted) through the stream, which is flushed after
    /// every response so no record waits in its buffer.
    Tls,
}

/// Serves requests over `stream` (plain TCP, or TLS once its handshake is done) on the
/// socket `fd`.
async fn serve_stream<S>(
    shard: Rc<BrokerShard>,
    stream: S,
    fd: RawFd,
    transport: Transport,
    mut client: Client,
    admitted: Admitted,
) where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let activity = admitted.activity.clone();
    let conn = client.conn;
    let peer = client.host.clone();
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    // The bounded channel is the in-flight limit: the reader stops reading when it is full.
    // Each request travels with its stage timer (when `--stats-interval-ms` is on), and its
    // API key and arrival time for `/metrics`.
    let (tx, rx) = local_channel::new_bounded::<(glommio::task::JoinHandle<Outcome>, Timed, Started)>(
        INFLIGHT_REQUESTS_MAX,
    );

    let writer_activity = activity.clone();
    let writer_task = glommio::spawn_local(async move {
        let activity = writer_activity;
        while let Some((handle, timed, started)) = rx.recv().await {
            let outcome = handle.await;
            let answered = || {
                if let Some((api, t)) = started {
                    sluice_metrics::recorder::request(api, t.elapsed());
                }
            };
            if matches!(
                outcome,
                Some(Outcome::Respond(_)) | Some(Outcome::RespondParts(_))
            ) {
                activity.write_started();
            }
            match outcome {
                Some(Outcome::Respond(bytes)) => {
                    if write_response(&mut writer, fd, transport, &[bytes])
                        .await
                        .is_err()
                    {
                        break;
                    }
                    if let Some((stage, t)) = timed {
                        stats::record(stage, t.elapsed());
                    }
                    answered();
                }
                Some(Outcome::RespondParts(parts)) => {
                    if write_response(&mut writer, fd, transport, &parts)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    if let Some((stage, t)) = timed {
                        stats::record(stage, t.elapsed());
                    }
                    answered();
                }
                Some(Outcome::NoResponse) => answered(),
                Some(Outcome::Close) | None => {
                    // Protocol violation: end the whole connection, not just our half, or a
                    // silent client would hold it (and its connection slots) forever.
                    activity.request_done();
                    // SAFETY: the reader half still owns the open socket; shutdown only ends
                    // its traffic, so the reader sees end-of-stream and returns.
                    unsafe {
                        libc::shutdown(fd, libc::SHUT_RDWR);
                    }
                    break;
                }
            }
            activity.request_done();
        }
        let _ = writer.close().await;
    })
    .detach();

    // A SASL listener's client must authenticate first; until then its frames are small.
    let reauth = shard.config.connections_max_reauth;
    let mut sasl = client.listener.sasl().then(|| SaslConn::new(reauth));
    let mut decoder = FrameDecoder::new(if sasl.is_some() {
        SASL_FRAME_BYTES_MAX
    } else {
        REQUEST_SIZE_MAX
    });
    // Every byte in `buf` is counted in `memory` (the shard's request budget): it is taken
    // before it enters `buf`, and moves to the request's permit when its frame is complete.
    let memory = shard.request_memory.connection();
    let mut buf = BytesMut::new();
    let mut scratch = vec![0u8; READ_CHUNK_BYTES_MIN];
    let mut last_read = 0usize;
    'read: loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    // Shutdown: no new requests; the writer answers those in flight.
                    if shard.draining() {
                        break 'read;
                    }
                    // A throttled client (a quota): nothing more of it runs until its
                    // throttle time has passed.
                    if let Some(until) = client.mute.take() {
                        let now = Instant::now();
                        if until > now {
                            glommio::timer::sleep(until - now).await;
                        }
                    }
                    let permit =
                        memory.take_request(FRAME_SIZE_PREFIX_LEN + frame.len(), may_park(&frame));
                    if frame.len() >= READ_CHUNK_BYTES {
                        // The rest of `buf` shares the large frame's allocation: move it to
                        // its own, or every later request read into that spare room would
                        // keep the large one alive for as long as it lives (the batch cache
                        // keeps slices of produce requests).
                        buf = BytesMut::from(&buf[..]);
                    }
                    if sasl
                        .as_ref()
                        .is_some_and(|a| a.expired_for(&frame, Instant::now()))
                    {
                        log::info!(
                            "closing the connection of {} from {peer}: its SASL session expired \
                             without re-authentication",
                            client.principal
                        );
                        break 'read;
                    }
                    if let Some(auth) = sasl.as_mut().filter(|a| a.takes(&frame)) {
                        // Handled here, in order: nothing else may run before it is done.
                        match auth.frame(&shard, frame.clone()).await {
                            Verdict::Serve => {}
                            Verdict::Answer(outcome) => {
                                drop(permit);
                                if let Some(p) = auth.principal() {
                                    client.principal = Rc::from(p);
                                    client.token_authenticated = auth.token_authenticated();
                                    decoder = FrameDecoder::new(REQUEST_SIZE_MAX);
                                }
                                let ready = glommio::spawn_local(async move { outcome }).detach();
                                activity.request_started();
                                if tx.send((ready, None, started(&frame))).await.is_err() {
                                    break 'read;
                                }
                                continue;
                            }
                            Verdict::Refuse(outcome) => {
                                // The writer sends what is queued (and this answer), then
                                // closes: the reader is done.
                                if let Some(outcome) = outcome {
                                    let ready =
                                        glommio::spawn_local(async move { outcome }).detach();
                                    activity.request_started();
                                    let _ = tx.send((ready, None, started(&frame))).await;
                                }
                                break 'read;
                            }
                        }
                    }
                    let shard = shard.clone();
                    let client = client.clone();
                    let timed = timed(&frame);
                    let started = started(&frame);
                    let handle = glommio::spawn_local(async move {
                        let prefix = peek_request_prefix(&frame).ok();
                        let outcome = if shard.shared_handle.quotas.times_requests() {
                            // request_percentage: charged what the handler ran for.
                            let client_id = crate::quotas::client_id_of(&frame).map(str::to_string);
                            let timed = Box::pin(run(&shard, frame.clone(), &client));
                            let (outcome, spent) = crate::quotas::PollTimed::new(timed).await;
                            let throttle_ms = crate::quotas::charge(
                                &shard,
                                &client,
                                client_id.as_deref(),
                                crate::quotas::REQUEST_PERCENTAGE,
                                spent.as_micros() as u64,
                            );
                            match &prefix {
                                // The client is told as well as muted (KIP-219).
                                Some(p) if throttle_ms > 0 => crate::response_throttle::raise(
                                    outcome,
                                    p.api_key,
                                    p.api_version,
                                    throttle_ms,
                                ),
                                _ => outcome,
                            }
                        } else {
                            run(&shard, frame, &client).await
                        };
                        if let Some(p) = prefix.filter(|_| shard.shared_handle.quotas.any()) {
                            // A handler on another shard or node (CreateTopics on the
                            // controller's, say) could not mute this connection: the throttle
                            // its response carries does (KIP-219).
                            let ms = crate::response_throttle::carried(
                                &outcome,
                                p.api_key,
                                p.api_version,
                            );
                            if ms > 0 {
                                crate::quotas::mute(
                                    &client,
                                    Instant::now() + std::time::Duration::from_millis(ms as u64),
                                );
                            }
                        }
                        // The handler is done with the request's bytes (a produce's records
                        // live on in the log's buffer and the batch cache, which count them).
                        drop(permit);
                        if let Some((Stage::ProduceRequest, t)) = timed {
                            stats::record(Stage::ProduceHandled, t.elapsed());
                        }
                        outcome
                    })
                    .detach();
                    activity.request_started();
                    if tx.send((handle, timed, started)).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    log::info!("closing connection from {peer}: {e}");
                    break 'read;
                }
            }
        }
        debug_assert_eq!(memory.held(), buf.len());
        let filled = buf.len();
        reserve_frame(&mut buf, decoder.pending_frame_len());
        let direct = decoder
            .pending_frame_len()
            .map(|len| {
                (FRAME_SIZE_PREFIX_LEN + len)
                    .saturating_sub(filled)
                    .min(READ_DIRECT_BYTES_MAX)
                    .min(2 * last_read)
            })
            .filter(|&want| want >= READ_CHUNK_BYTES);
        let read = match direct {
            Some(want) => {
                // Waiting here stops reading this socket: back-pressure.
                memory.acquire(want).await;
                buf.resize(filled + want, 0);
                let deadline = memory.overdraft_deadline(shard.config.request_overdraft_hold);
                let read = read_until(&mut reader, &mut buf[filled..], deadline).await;
                let n = read.as_ref().map_or(0, |n| *n);
                buf.truncate(filled + n);
                memory.release(want - n);
                read
            }
            None => {
                let deadline = memory.overdraft_deadline(shard.config.request_overdraft_hold);
                let read = read_until(&mut reader, &mut scratch, deadline).await;
                // End of stream (n = 0) takes nothing: a closed connection must not queue
                // behind others for the budget before it can leave and release what it holds.
                if let Ok(n @ 1..) = read {
                    // The bytes wait in the scratch buffer (this connection's own memory)
                    // until the budget has room for them; meanwhile nothing more is read.
                    memory.acquire(n).await;
                    buf.extend_from_slice(&scratch[..n]);
                    let size = scratch.len();
                    if n == size && size < READ_CHUNK_BYTES {
                        scratch = vec![0u8; size * 2];
                    } else if n < size / 4 && size > READ_CHUNK_BYTES_MIN {
                        scratch = vec![0u8; size / 2];
                    }
                }
                read
            }
        };
        match read {
            Ok(0) => break,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    log::info!(
                        "closing connection from {peer}: its request was still incomplete \
                         {} ms after it took the request-memory overdraft",
                        shard.config.request_overdraft_hold.as_millis()
                    );
                }
                break;
            }
            Ok(n) => last_read = n,
        }
        activity.read();
    }
    drop(tx);
    // What the reader holds of the shard's request budget (a partial frame, perhaps the
    // overdraft) goes back now, not after the writer: answering what is in flight may take
    // a whole rebalance or a client that never reads, and a connection closed for holding
    // the overdraft too long must release it at once.
    drop(memory);
    drop(buf);
    let _ = writer_task.await;
    // Its fetch sessions can serve no other connection: free them now, and the telemetry
    // instances it introduced (Kafka forgets them with their connection).
    shard.fetch_sessions.borrow_mut().close_connection(conn);
    shard.telemetry.borrow_mut().connection_closed(conn.0);
}

/// Once at least [`RESERVE_FRAME_AFTER`] of a frame is in `buf` and it has no room for the
/// rest, makes room for the rest (at most [`READ_DIRECT_BYTES_MAX`]) and for one more
/// read through the scratch buffer (which may bring the next frame's start) in one step.
/// Otherwise `buf` would grow by doubling, copying what it holds at every step: about once
/// more the frame's size, which was 14 % of a shard's CPU under TLS produce (rustls hands
/// over one 16 KiB record per read, so those frames are read through the scratch buffer).
/// Only capacity is taken here, not touched: the bytes count against the request budget as
/// they arrive, and a client must have sent 16 KiB of the frame to make it reserve more.
fn reserve_frame(buf: &mut BytesMut, pending_frame_len: Option<usize>) {
    let Some(len) = pending_frame_len else {
        return;
    };
    let frame = FRAME_SIZE_PREFIX_LEN + len;
    let rest = frame.saturating_sub(buf.len()).min(READ_DIRECT_BYTES_MAX);
    if buf.len() >= RESERVE_FRAME_AFTER && buf.capacity() - buf.len() < rest {
        buf.reserve(rest + READ_CHUNK_BYTES);
    }
}

/// Reads from the socket, failing with `TimedOut` at `deadline` (the connection holds the
/// request-memory overdraft and must finish its request by then; see [`crate::request_memory`]).
async fn read_until<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    deadline: Option<std::time::Instant>,
) -> std::io::Result<usize> {
    let read = reader.read(buf);
    let Some(deadline) = deadline else {
        return read.await;
    };
    let late = async {
        sluice_shard::sleep(deadline.saturating_duration_since(std::time::Instant::now())).await;
        Err(std::io::ErrorKind::TimedOut.into())
    };
    futures_lite::future::or(read, late).await
}

/// Who sent a request: its connection, its address, and the listener it came in on (whose
/// endpoints Metadata and FindCoordinator answer with).
#[derive(Clone, Debug)]
pub struct Client {
    pub conn: ConnId,
    /// As Kafka shows it: `/1.2.3.4` (empty when unknown).
    pub host: Rc<str>,
    pub listener: SecurityProtocol,
    /// Who the client is: `User:ANONYMOUS` until SASL or a client certificate says.
    pub principal: Rc<str>,
    /// The node itself (a request one of its shards makes of another): the authorizer
    /// lets it do anything. Never set for a client's request, forwarded or not.
    pub internal: bool,
    /// Until when the connection is muted (a quota throttle, KIP-219): no request of it is
    /// read before then. Shared by every request of the connection.
    pub mute: Rc<std::cell::Cell<Option<Instant>>>,
    /// Idempotent batches of this connection refused before they were written, which
    /// their producers' later batches must not overtake (see `handlers::produce`).
    pub refusals: Rc<std::cell::RefCell<ConnRefusals<(u64, i32)>>>,
    /// The peer's address (none for the node itself).
    pub source: Option<std::net::SocketAddr>,
    /// The client software's name and version, as its ApiVersions (v3+) said: what
    /// telemetry subscriptions match on (`crate::telemetry_host`).
    pub software: Rc<std::cell::RefCell<Option<(String, String)>>>,
    /// Whether the client authenticated with a delegation token (which may not ask for
    /// tokens itself).
    pub token_authenticated: bool,
}

/// Kafka's principal of an unauthenticated client.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

impl Client {
    /// A request this node makes of itself (no client; endpoints of its first listener).
    pub fn internal(shard: &BrokerShard) -> Client {
        Client {
            conn: ConnId::FORWARDED,
            host: Rc::from(""),
            listener: shard.config.listeners[0].protocol,
            principal: Rc::from(ANONYMOUS),
            internal: true,
            mute: Rc::default(),
            refusals: Rc::default(),
            source: None,
            software: Rc::default(),
            token_authenticated: false,
        }
    }
}

/// Identifies one client connection within the process, for state bound to it (fetch
/// sessions). [`ConnId::FORWARDED`] marks a request another shard forwarded here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

impl ConnId {
    pub const FORWARDED: ConnId = ConnId(0);

    fn next() -> ConnId {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        ConnId(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// Writes one response (in one or more parts).
async fn write_response<W: futures_lite::AsyncWrite + Unpin>(
    writer: &mut WriteHalf<W>,
    fd: RawFd,
    transport: Transport,
    parts: &[Bytes],
) -> std::io::Result<()> {
    match (transport, parts) {
        (Transport::Plain, [one]) => writer.write_all(one).await,
        (Transport::Plain, _) => write_parts(writer, fd, parts).await,
        (Transport::Tls, _) => {
            for part in parts {
                writer.write_all(part).await?;
            }
            writer.flush().await
        }
    }
}

/// iovec entries per `sendmsg` (Linux's `UIO_MAXIOV`).
const IOVECS_MAX: usize = 1024;

/// Writes `parts` in order: vectored non-blocking sends while the socket takes them (one
/// system call for a whole fetch response, its records never copied in user space), and
/// the runtime's waiting write for the rest of a part when the socket buffer is full.
async fn write_parts<W: futures_lite::AsyncWrite + Unpin>(
    writer: &mut WriteHalf<W>,
    fd: RawFd,
    parts: &[Bytes],
) -> std::io::Result<()> {
    let mut part = 0usize;
    let mut offset = 0usize; // into parts[part]
    while part < parts.len() {
        let iov: Vec<std::io::IoSlice<'_>> = parts[part..]
            .iter()
            .take(IOVECS_MAX)
            .enumerate()
            .map(|(i, p)| std::io::IoSlice::new(&p[if i == 0 { offset } else { 0 }..]))
            .collect();
        // SAFETY: `fd` is the socket of the stream `writer` is half of, open while `writer`
        // lives, which is past this call.
        let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
        let mut sent = match rustix::net::sendmsg(socket, &iov, &mut Default::default(), flags) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => {
                // Full: let the runtime wait for room while it writes this part's rest.
                writer.write_all(&parts[part][offset..]).await?;
                part += 1;
                offset = 0;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        while part < parts.len() && sent >= parts[part].len() - offset {
            sent -= parts[part].len() - offset;
            part += 1;
            offset = 0;
        }
        offset += sent;
    }
    Ok(())
}

/// Which whole-request stage a frame is timed under, and since when (produce and fetch only;
/// `None` when timers are off).
type Timed = Option<(Stage, Instant)>;

/// Whether a request may wait a long time in its handler (a fetch long-poll; JoinGroup and
/// SyncGroup wait for a rebalance): it must not hold the request-memory overdraft.
fn may_park(frame: &Bytes) -> bool {
    peek_request_prefix(frame).is_ok_and(|p| {
        [ApiKey::Fetch, ApiKey::JoinGroup, ApiKey::SyncGroup]
            .iter()
            .any(|k| *k as i16 == p.api_key)
    })
}

/// A request's API key and when it was read, for `/metrics` (`sluice_metrics::recorder`).
type Started = Option<(i16, Instant)>;

fn started(frame: &Bytes) -> Started {
    Some((peek_request_prefix(frame).ok()?.api_key, Instant::now()))
}

fn timed(frame: &Bytes) -> Timed {
    let t = stats::start()?;
    match peek_request_prefix(frame).ok()?.api_key {
        0 => Some((Stage::ProduceRequest, t)),
        1 => Some((Stage::FetchRequest, t)),
        _ => None,
    }
}

/// Runs a request frame that another shard forwarded here: the reply payload is
/// `Some(bytes)` to respond, `Some(empty)` for no response, `None` to close.
pub async fn process_forwarded(
    shard: &Rc<BrokerShard>,
    frame: Bytes,
    client: &Client,
) -> Option<Bytes> {
    debug_assert_eq!(client.conn, ConnId::FORWARDED);
    match run(shard, frame, client).await {
        Outcome::Respond(b) => Some(b),
        Outcome::RespondParts(parts) => Some(Bytes::from(parts.concat())),
        Outcome::NoResponse => Some(Bytes::new()),
        Outcome::Close => None,
    }
}

pub async fn run(shard: &Rc<BrokerShard>, frame: Bytes, client: &Client) -> Outcome {
    let forwarded = client.conn == ConnId::FORWARDED;
    let Ok(prefix) = peek_request_prefix(&frame) else {
        return Outcome::Close;
    };
    if !forwarded {
        if let Some(target) = handlers::route(shard, prefix.api_key) {
            if target != shard.shard_id() {
                return forward(shard, target, prefix.api_key, frame, client).await;
            }
        }
    }
    let raw = frame.clone();
    let request = match shard.api.decode_frame(frame) {
        Ok(r) => r,
        Err(e) => {
            if let Some(correlation_id) = e.api_versions_fallback() {
                return handlers::api_versions::unsupported_version(shard, correlation_id);
            }
            log::info!("bad request (api key {}): {e}", prefix.api_key);
            return Outcome::Close;
        }
    };
    if crate::panic_policy::test_panic() == crate::panic_policy::TestPanic::Request
        && request.header.client_id.as_deref() == Some(crate::panic_policy::TEST_PANIC_CLIENT_ID)
    {
        panic!(
            "test panic in a request handler ({})",
            crate::panic_policy::TEST_PANIC_ENV
        );
    }
    if crate::group_host::group_ids(&request.body, request.header.api_version).is_some() {
        return crate::group_host::handle(
            shard,
            &request.header,
            request.body,
            raw,
            forwarded,
            client,
        )
        .await;
    }
    if crate::txn_host::coordinated(&request.body) {
        return crate::txn_host::handle(
            shard,
            &request.header,
            request.body,
            raw,
            forwarded,
            client,
        )
        .await;
    }
    handlers::dispatch(shard, request, raw.len(), client).await
}

/// Runs a request on another shard (controller work, group coordinators).
pub async fn forward(
    shard: &Rc<BrokerShard>,
    target: ShardId,
    api_key: i16,
    frame: Bytes,
    client: &Client,
) -> Outcome {
    let header = ForwardHeader {
        api_key,
        client_host: client.host.to_string(),
        listener: client.listener.id(),
        principal: client.principal.to_string(),
        token_authenticated: client.token_authenticated,
        internal: client.internal,
    };
    let f = match Frame::encode_tagged(TAG_FORWARD, &header, Some(frame)) {
        Ok(f) => f,
        Err(_) => return Outcome::Close,
    };
    // JoinGroup and SyncGroup wait on the coordinator for a whole rebalance (the client picks
    // the timeout), and the admin requests shard 0 hands to the controller quorum wait for a
    // commit (up to its 30 s timeout while no controller is reachable): they travel in the
    // parked class, so however many wait, partition work and other forwarded requests never
    // queue behind them.
    let class = match ApiKey::try_from(api_key).ok() {
        Some(
            ApiKey::JoinGroup
            | ApiKey::SyncGroup
            | ApiKey::CreateTopics
            | ApiKey::DeleteTopics
            | ApiKey::CreatePartitions
            | ApiKey::AlterConfigs
            | ApiKey::IncrementalAlterConfigs
            | ApiKey::AlterUserScramCredentials
            | ApiKey::CreateAcls
            | ApiKey::DeleteAcls
            | ApiKey::AlterClientQuotas
            | ApiKey::UpdateFeatures
            | ApiKey::DescribeQuorum
            // EndTxn waits for its markers; InitProducerId for a producer-id block from
            // the controller and for its record (a fence: the abort's Prepare record).
            | ApiKey::EndTxn
            | ApiKey::InitProducerId,
        ) => CallClass::Parked,
        _ => CallClass::General,
    };
    match shard.ctx.mesh().call_in(class, target, f).await {
        Ok(mut reply) => match reply.take_payload() {
            Some(b) if b.is_empty() => Outcome::NoResponse,
            Some(b) => Outcome::Respond(b),
            None => Outcome::Close,
        },
        Err(e) => {
            log::error!("forwarding api {api_key} to {target}: {e}");
            Outcome::Close
        }
    }
}

/// `ApiKey` of an i16, if known.
pub fn api_key(key: i16) -> Option<ApiKey> {
    ApiKey::try_from(key).ok()
}
