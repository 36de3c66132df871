//! tonic: an incoming stream of monitored connections for
//! `serve_with_incoming` / `serve_with_incoming_shutdown`, and
//! `tonic::transport::server::Connected` for `MonitoredIo<TcpStream>`.
//!
//! `Request::remote_addr()` keeps working: the connect info tonic puts into
//! each request is the usual [`TcpConnectInfo`]. tonic inserts exactly one
//! connect-info value per connection and its `remote_addr` only looks for
//! that type, so the connection's monconn record is found from the
//! addresses: [`conn_info`] in a handler, or [`ConnInfoLayer`] on the
//! server to put a [`ConnInfo`] into every request's extensions. Both scan
//! the service's connection table (see [`ServiceMonitor::find_conn`]).
//!
//! # Examples
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use monconn::integrations::tonic::{ConnInfoLayer, Incoming};
//! use monconn::{Listener, Registry, ServiceConfig};
//!
//! let service = Registry::global().create(
//!     "grpc",
//!     ServiceConfig::default()
//!         .conn_limit(1000)
//!         .wait_timeout(Duration::from_secs(10)),
//! ).unwrap();
//! let listener = Listener::bind("127.0.0.1:50051", service.clone()).await?;
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! let ctrl_c = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! tonic::transport::Server::builder()
//!     .layer(ConnInfoLayer::new(service.clone()))
//!     .add_service(health)
//!     .serve_with_incoming_shutdown(
//!         Incoming::new(listener),
//!         monconn::integrations::graceful(service, ctrl_c),
//!     )
//!     .await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;
use tokio_stream::Stream;

use tonic::transport::server::{Connected, TcpConnectInfo};

use super::ConnInfo;
use crate::{AcceptStack, DefaultStack, Listener, MonitoredIo, ServiceMonitor};

/// How long the stream waits after yielding an error, before accepting
/// again: tonic only traces incoming errors, it does not back off.
const ERROR_BACKOFF: Duration = Duration::from_millis(200);

type Accept<IO> = Pin<Box<dyn Future<Output = io::Result<(MonitoredIo<IO>, SocketAddr)>> + Send>>;

/// The connections of a [`Listener`] as a stream, for tonic's
/// `serve_with_incoming` and `serve_with_incoming_shutdown`, whatever the
/// listener's accept stack (the default one, or one built with
/// [`Listener::builder`] and your own layers).
///
/// Yields each admitted connection; refused ones are closed and counted by
/// the listener and never reach tonic. An accept error the listener does not
/// handle itself is yielded once (tonic traces it), then the stream waits
/// 200 ms before accepting again, so that it never spins. It never ends.
///
/// `TCP_NODELAY` is on, as tonic's own server sets it by default, unless
/// the listener was given [`Listener::nodelay`]. tonic's own TCP
/// settings (`tcp_nodelay`, `tcp_keepalive`) do not apply to an incoming
/// stream: use [`Listener::nodelay`] and
/// [`ServiceConfig::keepalive`](crate::ServiceConfig::keepalive).
///
/// # Examples
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use monconn::integrations::tonic::Incoming;
///
/// let service = monconn::Registry::new().service("grpc");
/// let listener = monconn::Listener::bind("127.0.0.1:50051", service).await?;
/// let (_reporter, health) = tonic_health::server::health_reporter();
/// tonic::transport::Server::builder()
///     .add_service(health)
///     .serve_with_incoming(Incoming::new(listener))
///     .await?;
/// # Ok(()) }
/// ```
pub struct Incoming<S: AcceptStack = DefaultStack> {
    listener: Arc<Listener<S>>,
    accept: Option<Accept<S::Io>>,
    backoff: Option<Pin<Box<Sleep>>>,
}

// === impl Incoming ===

impl<S: AcceptStack> Incoming<S> {
    /// The connections of `listener`, with `TCP_NODELAY` on unless the
    /// listener says otherwise ([`Listener::nodelay`]).
    pub fn new(listener: Listener<S>) -> Self {
        Incoming {
            listener: Arc::new(listener.nodelay_unless_set(true)),
            accept: None,
            backoff: None,
        }
    }

    /// The listener.
    pub fn listener(&self) -> &Listener<S> {
        &self.listener
    }
}

impl<S: AcceptStack> Listener<S> {
    /// The listener's connections as a stream, for tonic; see [`Incoming`].
    pub fn into_incoming(self) -> Incoming<S> {
        Incoming::new(self)
    }
}

impl<S> Stream for Incoming<S>
where
    S: AcceptStack + Send + 'static,
    S::Future: Send + 'static,
    S::Io: Send + 'static,
{
    type Item = io::Result<MonitoredIo<S::Io>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(sleep) = this.backoff.as_mut() {
            ready!(sleep.as_mut().poll(cx));
            this.backoff = None;
        }
        let accept = this.accept.get_or_insert_with(|| {
            let listener = this.listener.clone();
            Box::pin(async move { listener.accept().await })
        });
        let result = ready!(accept.as_mut().poll(cx));
        this.accept = None;
        match result {
            Ok((io, _peer)) => Poll::Ready(Some(Ok(io))),
            Err(e) => {
                tracing::error!(sid = %this.listener.service().sid(), error = %e, "accept error");
                this.backoff = Some(Box::pin(tokio::time::sleep(ERROR_BACKOFF)));
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

// Nothing is pinned in place: the accept future and the backoff are boxed.
impl<S: AcceptStack> Unpin for Incoming<S> {}

impl<S: AcceptStack> fmt::Debug for Incoming<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

/// tonic's usual TCP connect info, taken from the connection's record, so
/// that `Request::remote_addr()` and `local_addr` work as with tonic's own
/// listener, whatever the transport the accept stack made.
impl<IO> Connected for MonitoredIo<IO> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: Some(self.record().local()),
            remote_addr: Some(self.record().peer()),
        }
    }
}

/// The monconn view of the connection a tonic request came on, found in
/// `service` from the request's [`TcpConnectInfo`]; `None` when the request
/// has no TCP connect info or the connection is not (or no longer) in
/// `service`. Scans the service's table; see [`ServiceMonitor::find_conn`].
pub fn conn_info<T>(request: &tonic::Request<T>, service: &ServiceMonitor) -> Option<ConnInfo> {
    lookup(request.extensions().get::<TcpConnectInfo>()?, service)
}

fn lookup(tcp: &TcpConnectInfo, service: &ServiceMonitor) -> Option<ConnInfo> {
    let record = service.find_conn(tcp.remote_addr?, tcp.local_addr?)?;
    Some(ConnInfo::from_record(record))
}

/// A tower layer for `tonic::transport::Server::builder().layer(..)` that
/// puts the [`ConnInfo`] of each request's connection into its extensions,
/// where handlers find it with `request.extensions().get::<ConnInfo>()`.
///
/// Each request costs a scan of the service's connection table (see
/// [`ServiceMonitor::find_conn`]). Clones share the service.
///
/// # Examples
/// ```no_run
/// # async fn run(listener: monconn::Listener, service: monconn::ServiceMonitor) -> Result<(), tonic::transport::Error> {
/// use monconn::integrations::tonic::{ConnInfoLayer, Incoming};
///
/// let (_reporter, health) = tonic_health::server::health_reporter();
/// tonic::transport::Server::builder()
///     .layer(ConnInfoLayer::new(service))
///     .add_service(health)
///     .serve_with_incoming(Incoming::new(listener))
///     .await
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ConnInfoLayer {
    service: ServiceMonitor,
}

impl ConnInfoLayer {
    /// Looks connections up in `service`.
    pub fn new(service: ServiceMonitor) -> Self {
        ConnInfoLayer { service }
    }
}

impl<S> tower_layer::Layer<S> for ConnInfoLayer {
    type Service = AddConnInfo<S>;

    fn layer(&self, inner: S) -> AddConnInfo<S> {
        AddConnInfo {
            inner,
            service: self.service.clone(),
        }
    }
}

/// The service of [`ConnInfoLayer`].
#[derive(Clone, Debug)]
pub struct AddConnInfo<S> {
    inner: S,
    service: ServiceMonitor,
}

impl<S, B> tower::Service<http::Request<B>> for AddConnInfo<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> S::Future {
        let info = req
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(|tcp| lookup(tcp, &self.service));
        if let Some(info) = info {
            req.extensions_mut().insert(info);
        }
        self.inner.call(req)
    }
}
