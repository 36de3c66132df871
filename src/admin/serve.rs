//! The admin's own server: bounded in connections and in time, so that no
//! client of the admin port (a stalled browser, a port scanner, a script
//! that never reads) can hold descriptors or tasks that forwarding needs.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{lookup_host, TcpListener, TcpSocket, TcpStream, ToSocketAddrs};
use tokio::sync::Semaphore;

use super::{router, Admin};

/// Admin connections served at once. No more are accepted until one ends:
/// the next clients wait in the kernel's backlog, holding no descriptor of
/// the process.
pub const MAX_CONNECTIONS: usize = 64;

/// Clients the kernel keeps waiting for an accept past [`MAX_CONNECTIONS`]
/// when [`bind`] made the listener (capped by `net.core.somaxconn`).
pub const BACKLOG: u32 = 1024;

/// How long a client may take to send a request's headers, and how long a
/// keep-alive connection may wait for its next request.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one admin connection may last. Then it closes after the request
/// in progress (a slow body, an answer not read yet) if that ends within
/// [`GRACE`], and is cut with a reset otherwise.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// How long a connection carrying an event stream (`GET /events`, `GET
/// /tap`) may last; then it ends as others do, and the page's `EventSource`
/// reconnects within a second. Bounded still: a client that never reads its
/// stream holds a slot for ten minutes at most.
pub const STREAM_DEADLINE: Duration = Duration::from_secs(600);

/// See [`CONNECTION_DEADLINE`].
pub const GRACE: Duration = Duration::from_secs(5);

/// Paths whose answers are streams, given [`STREAM_DEADLINE`].
const STREAMS: [&str; 2] = ["/events", "/tap"];

/// Serves [`router`](super::router) on `listener`, at most
/// [`MAX_CONNECTIONS`] connections at once, each within
/// [`HEADER_TIMEOUT`] and [`CONNECTION_DEADLINE`] (or [`STREAM_DEADLINE`]),
/// until the task is dropped. Plain HTTP/1.1 over tokio accepts: the
/// admin's own connections are not monitored. An accept error (out of
/// descriptors, say) is logged and retried after 100 ms.
pub async fn serve(listener: TcpListener, admin: impl Into<Admin>) {
    let router = router(admin);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A slot first, then the accept: past the cap, clients stay in the
        // backlog rather than take a descriptor.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let router = router.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, router).await;
            drop(slot);
        });
    }
}

/// Binds `addr` (with a [`BACKLOG`] for the clients past the cap) and
/// [`serve`]s on it: a one-call side server for tonic, hyper and anything
/// that is not an axum app.
///
/// # Errors
/// Only when it cannot bind: the error names the address (`cannot serve
/// the admin API on 127.0.0.1:9000: Address in use`). Otherwise it serves
/// until the task is dropped.
pub async fn bind(
    addr: impl ToSocketAddrs + fmt::Display,
    admin: impl Into<Admin>,
) -> io::Result<()> {
    let listener = listen(&addr).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot serve the admin API on {addr}: {e}"),
        )
    })?;
    serve(listener, admin).await;
    Ok(())
}

/// Binds the first of `addr`'s addresses that binds, with [`BACKLOG`].
pub async fn listen(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in lookup_host(addr).await? {
        match listen_on(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address")))
}

fn listen_on(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves one connection until it ends or its deadline passes.
async fn serve_connection(stream: TcpStream, peer: SocketAddr, router: Router) {
    // Set once the connection carries an event stream, which lasts.
    let streaming = Arc::new(AtomicBool::new(false));
    let seen = streaming.clone();
    let service = tower::service_fn(move |req: hyper::Request<Incoming>| {
        if STREAMS.contains(&req.uri().path()) {
            seen.store(true, Relaxed);
        }
        tower::ServiceExt::oneshot(router.clone(), req)
    });
    let mut conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    if tokio::time::timeout(CONNECTION_DEADLINE, &mut conn)
        .await
        .is_ok()
    {
        return;
    }
    if streaming.load(Relaxed)
        && tokio::time::timeout(STREAM_DEADLINE - CONNECTION_DEADLINE, &mut conn)
            .await
            .is_ok()
    {
        return;
    }
    // No keep-alive past the request in progress; an idle connection closes now.
    Pin::new(&mut conn).graceful_shutdown();
    if tokio::time::timeout(GRACE, &mut conn).await.is_ok() {
        return;
    }
    // Stuck on a client that neither sends nor reads: a reset frees the
    // socket at once, unsent answer and all.
    let stream = conn.into_parts().io.into_inner();
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    tracing::debug!(%peer, "admin connection cut at its deadline");
}
