//! The accept loop: the TCP accept, the stack futures in flight, backoff and
//! backpressure, polled together.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use pin_project_lite::pin_project;
use tokio::net::{TcpListener, TcpStream};

use super::sockopt::SockOpts;
use crate::layers::BoxError;
use crate::{Accepted, MonitoredIo, RejectReason, Rejected, ServiceMonitor};

/// How long to wait after a resource error (`EMFILE`, ...) before accepting again.
pub(super) const BACKOFF: Duration = Duration::from_millis(50);

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What one `accept` needs besides the state.
pub(super) struct Ctx<'a> {
    pub(super) tcp: &'a TcpListener,
    pub(super) service: &'a ServiceMonitor,
    pub(super) local: SocketAddr,
    pub(super) accept_errors: &'a AtomicU64,
}

pub(super) struct State<S, F> {
    pub(super) stack: S,
    /// Stack futures in flight (handshakes), polled alongside the accept.
    pending: FuturesUnordered<Pin<Box<Slot<F>>>>,
    /// An empty slot for the next connection's stack future. Most stacks
    /// (filters, limits, monitoring) answer at the first poll: their slot
    /// comes back empty at once, so a connection costs no allocation here.
    spare: Option<Pin<Box<Slot<F>>>>,
    /// Set after a resource error: no accept until it fires.
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Set while paused at `conn_limit`: fires when a slot is released.
    released: Option<Wait>,
    pub(super) sockopts: SockOpts,
}

pin_project! {
    /// A place on the heap for one stack future and the peer it is for. The
    /// slot outlives its future: once a future is done, the next connection's
    /// is written in the same place.
    #[project = SlotProj]
    enum Slot<F> {
        Empty,
        Busy {
            peer: SocketAddr,
            #[pin]
            future: F,
        },
    }
}

impl<F: Future> Future for Slot<F> {
    type Output = (SocketAddr, F::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            SlotProj::Busy { peer, future } => {
                let out = ready!(future.poll(cx));
                Poll::Ready((*peer, out))
            }
            // Only busy slots are polled: `pending` never holds an empty one.
            SlotProj::Empty => Poll::Pending,
        }
    }
}

impl<S, F> State<S, F> {
    pub(super) fn new(stack: S) -> Self {
        State {
            stack,
            pending: FuturesUnordered::new(),
            spare: None,
            backoff: None,
            released: None,
            sockopts: SockOpts::default(),
        }
    }

    pub(super) fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

impl<S, IO> State<S, S::Future>
where
    S: tower::Service<Accepted<TcpStream>, Response = Accepted<IO>>,
    S::Error: Into<BoxError>,
    IO: 'static,
{
    pub(super) fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
        ctx: &Ctx<'_>,
    ) -> Poll<io::Result<(MonitoredIo<IO>, SocketAddr)>> {
        loop {
            // Connections through the stack first: they are ready to serve.
            while let Poll::Ready(Some((peer, result))) = self.pending.poll_next_unpin(cx) {
                if let Some(io) = admit(ctx.service, peer, result) {
                    // The client a PROXY header named, else the socket's peer.
                    let peer = io.record().peer();
                    return Poll::Ready(Ok((io, peer)));
                }
            }
            if let Some(sleep) = &mut self.backoff {
                ready!(sleep.as_mut().poll(cx));
                self.backoff = None;
            }
            if ready!(self.poll_paused(cx, ctx.service)) {
                continue;
            }
            ready!(self.stack.poll_ready(cx))
                .map_err(|e| io::Error::other(format!("accept stack failed: {}", e.into())))?;
            let accepted = ctx.tcp.poll_accept(cx);
            if accepted.is_pending() {
                self.sockopts.queue_empty();
            }
            match ready!(accepted) {
                Ok((stream, peer)) => {
                    self.sockopts
                        .on_accept(ctx.tcp, &stream, &ctx.service.inner.config());
                    let future = self.stack.call(Accepted::new(stream, peer, ctx.local));
                    let mut slot = self.spare.take().unwrap_or_else(|| Box::pin(Slot::Empty));
                    slot.as_mut().set(Slot::Busy { peer, future });
                    match slot.as_mut().poll(cx) {
                        Poll::Ready((peer, result)) => {
                            slot.as_mut().set(Slot::Empty);
                            self.spare = Some(slot);
                            if let Some(io) = admit(ctx.service, peer, result) {
                                let peer = io.record().peer();
                                return Poll::Ready(Ok((io, peer)));
                            }
                        }
                        // A handshake, say: polled on with the others.
                        Poll::Pending => self.pending.push(slot),
                    }
                }
                Err(e) if is_per_connection(&e) => {}
                Err(e) if is_resource_error(&e) => {
                    ctx.accept_errors.fetch_add(1, Relaxed);
                    ctx.service.count_accept_error();
                    tracing::warn!(sid = %ctx.service.sid(), error = %e, "accept failed for lack of resources; backing off");
                    self.backoff = Some(Box::pin(tokio::time::sleep(BACKOFF)));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Backpressure: with `pause_at_limit`, no accept while the service is at
    /// `conn_limit`. `Ready(true)` when a wait just ended (check again),
    /// `Ready(false)` when not at the limit.
    fn poll_paused(&mut self, cx: &mut Context<'_>, service: &ServiceMonitor) -> Poll<bool> {
        if !at_limit(service) {
            self.released = None;
            return Poll::Ready(false);
        }
        let released = self.released.get_or_insert_with(|| {
            let service = service.clone();
            Box::pin(async move { service.released().await })
        });
        if released.as_mut().poll(cx).is_ready() {
            self.released = None;
            return Poll::Ready(true);
        }
        // Registered for the next release; a release before registering is
        // seen here.
        if at_limit(service) {
            Poll::Pending
        } else {
            self.released = None;
            Poll::Ready(false)
        }
    }
}

fn at_limit(service: &ServiceMonitor) -> bool {
    let config = service.inner.config();
    config.pause_at_limit
        && config
            .conn_limit
            .is_some_and(|l| service.connections() >= l)
}

/// What the stack made of the connection from `peer`: monitored, refused
/// (counted, traced and closed), or cut by a service close while in the
/// stack (closed).
fn admit<IO: 'static, E: Into<BoxError>>(
    service: &ServiceMonitor,
    peer: SocketAddr,
    result: Result<Accepted<IO>, E>,
) -> Option<MonitoredIo<IO>> {
    let refused: BoxError = match result {
        Ok(conn) => match conn.into_monitored(service) {
            // Cut by a close while it was in the stack: counted there, and
            // counted closed when dropped here; never served.
            Ok(io) if io.record().closed().is_some() => {
                tracing::debug!(sid = %service.sid(), %peer, "connection cut in the accept stack");
                return None;
            }
            Ok(io) => return Some(io),
            Err(rejected) => rejected.into(),
        },
        Err(e) => e.into(),
    };
    refuse(service, peer, refused);
    None
}

/// Counts and traces a refused connection (dropping it closes it).
fn refuse(service: &ServiceMonitor, peer: SocketAddr, error: BoxError) {
    let reason = match find_rejected(&*error) {
        Some(rejected) => rejected.reason().clone(),
        None if error.is::<tower::timeout::error::Elapsed>() => {
            RejectReason::Other("timeout".into())
        }
        None => RejectReason::Other("error".into()),
    };
    tracing::debug!(sid = %service.sid(), %peer, %reason, error = %error, "connection refused");
    service.count_rejected(&reason, peer);
}

fn find_rejected<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Rejected> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<Rejected>() {
            return Some(r);
        }
        next = e.source();
    }
    None
}

/// Errors about one connection, which ended before it was accepted.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Out of descriptors, buffers or memory: `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`.
fn is_resource_error(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOMEM are 24, 23, 12 on Linux and the BSDs; ENOBUFS is
    // 105 on Linux, 55 on the BSDs and macOS.
    #[cfg(target_os = "linux")]
    const CODES: [i32; 4] = [24, 23, 12, 105];
    #[cfg(all(unix, not(target_os = "linux")))]
    const CODES: [i32; 4] = [24, 23, 12, 55];
    #[cfg(not(unix))]
    const CODES: [i32; 0] = [];
    e.raw_os_error().is_some_and(|c| CODES.contains(&c)) || e.kind() == io::ErrorKind::OutOfMemory
}
