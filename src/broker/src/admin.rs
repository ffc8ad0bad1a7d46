//! The admin API (`--admin-listen`, Redpanda's port 9644): HTTP/1.1 through hyper on shard
//! 0. `GET /metrics` answers every shard's metrics in the Prometheus (OpenMetrics) text
//! format, made at most [`METRICS_DOCUMENT_MAX_AGE`] before; `GET /v1/status/live` answers
//! 200 while the process runs; `GET /v1/status/ready` answers 200 once every shard serves
//! Kafka clients, and 503 before that and once shutdown has begun.
//!
//! Bounded: at most [`ADMIN_CONNECTIONS_MAX`] connections at once (more are closed at
//! accept), each for at most [`ADMIN_CONNECTION_LIFETIME_MAX`]; hyper bounds a request's
//! head. Requests have no body worth reading: nothing here accepts one.

use std::cell::Cell;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::shard::BrokerShard;

/// Admin connections open at once; more are closed as they are accepted.
pub const ADMIN_CONNECTIONS_MAX: usize = 64;
/// How long one admin connection may stay open (a scraper reconnects).
pub const ADMIN_CONNECTION_LIFETIME_MAX: Duration = Duration::from_secs(60);
/// How old a `/metrics` document may be when it is served again. Making one wakes every
/// shard (a snapshot each) and writes every series: about 0.4–0.8 ms of CPU on the 2-core
/// test host (perf/metrics-scrape-cost.py); Prometheus scrapes every few seconds, so a
/// second's reuse changes nothing for it, and scrapes far more frequent than that (a
/// dashboard's refresh, several scrapers) cost only the transfer.
pub const METRICS_DOCUMENT_MAX_AGE: Duration = Duration::from_secs(1);

/// The last `/metrics` document and when it was made.
type Cached = Rc<std::cell::RefCell<Option<(std::time::Instant, Bytes)>>>;

/// Binds the admin listener, on the calling thread (before any shard starts, so a start
/// with an address in use fails at once). Plain `bind`, not the Kafka listeners' shared
/// port: a second broker must not split this port's connections with the first.
pub fn bind(addr: std::net::SocketAddr) -> io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves the admin API on `listener` until the shard stops.
pub async fn serve(shard: Rc<BrokerShard>, listener: std::net::TcpListener) {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: the descriptor comes from a listening socket this process owns, handed over
    // whole (`into_raw_fd` gives up the std listener's ownership).
    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(listener.into_raw_fd()) };
    let open = Rc::new(Cell::new(0usize));
    let cached: Cached = Rc::default();
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                log::warn!("admin API: accept: {e}");
                glommio::timer::sleep(crate::connections::ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        if open.get() >= ADMIN_CONNECTIONS_MAX {
            drop(stream);
            continue;
        }
        open.set(open.get() + 1);
        let (shard, open, cached) = (shard.clone(), open.clone(), cached.clone());
        glommio::spawn_local(async move {
            let service = hyper::service::service_fn(|req| {
                let (shard, cached) = (shard.clone(), cached.clone());
                async move { Ok::<_, Infallible>(answer(&shard, &cached, req).await) }
            });
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(Io(stream), service);
            let _ = glommio::timer::timeout(ADMIN_CONNECTION_LIFETIME_MAX, async {
                if let Err(e) = conn.await {
                    log::debug!("admin API connection: {e}");
                }
                Ok(())
            })
            .await;
            open.set(open.get() - 1);
        })
        .detach();
    }
}

fn text(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn answer(
    shard: &Rc<BrokerShard>,
    cached: &Cached,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    const JSON: &str = "application/json";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            JSON,
            r#"{"error":"GET only"}"#,
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let now = std::time::Instant::now();
            let fresh = cached
                .borrow()
                .as_ref()
                .filter(|(at, _)| now.duration_since(*at) < METRICS_DOCUMENT_MAX_AGE)
                .map(|(_, doc)| doc.clone());
            let doc = match fresh {
                Some(doc) => doc,
                None => {
                    let snapshots = crate::metrics_host::gather(shard).await;
                    let node = sluice_metrics::Node {
                        node_id: shard.config.node_id,
                        version: env!("CARGO_PKG_VERSION"),
                        aggregate: shard.config.aggregate_metrics,
                    };
                    let remote =
                        crate::metrics_host::remote_high_watermarks(shard, &snapshots).await;
                    let doc = Bytes::from(sluice_metrics::render_with(&node, snapshots, remote));
                    *cached.borrow_mut() = Some((now, doc.clone()));
                    doc
                }
            };
            text(StatusCode::OK, sluice_metrics::CONTENT_TYPE, doc)
        }
        "/v1/status/live" => text(StatusCode::OK, JSON, r#"{"status":"live"}"#),
        "/v1/status/ready" => {
            if shard.shared_handle.serving.load(Ordering::SeqCst) {
                text(StatusCode::OK, JSON, r#"{"status":"ready"}"#)
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    JSON,
                    r#"{"status":"not ready"}"#,
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, JSON, r#"{"error":"not found"}"#),
    }
}

/// A glommio socket as hyper's IO (hyper has its own read/write traits).
struct Io(glommio::net::TcpStream);

impl hyper::rt::Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // Through an initialised buffer: no unsafe writes into hyper's uninitialised one.
        let mut chunk = [0u8; 4096];
        let want = buf.remaining().min(chunk.len());
        match Pin::new(&mut self.0).poll_read(cx, &mut chunk[..want]) {
            Poll::Ready(Ok(n)) => {
                buf.put_slice(&chunk[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
