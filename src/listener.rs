//! `Listener`: a tokio `TcpListener` whose accepted connections pass through
//! an accept stack (filters, limits, the user's own layers) and come out
//! monitored.

mod builder;
mod sockopt;
mod state;

pub use builder::ListenerBuilder;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::Mutex;
use tower::ServiceBuilder;

use crate::layers::{BoxError, Filter, FilterLayer, Limit, LimitLayer, Pass};
use crate::{Accepted, MonitoredIo, ServiceMonitor};
use state::{Ctx, State};

/// The accept stack of [`Listener::bind`] and [`Listener::from_tcp`]: the
/// service's filters, then its limits.
pub type DefaultStack = Filter<Limit<Pass>>;

/// What a [`Listener`]'s accept stack is: a `tower::Service` of accepted
/// TCP connections whose response is an [`Accepted`] transport (the same
/// `TcpStream`, or one your layers made of it: a TLS stream, say). Any such
/// stack has this trait (a blanket impl): it only names the transport
/// ([`AcceptStack::Io`]), so that the framework integrations are written
/// for every stack, not only the [`DefaultStack`].
pub trait AcceptStack:
    tower::Service<Accepted<TcpStream>, Response = Accepted<Self::Io>, Error: Into<BoxError>>
{
    /// The transport the stack hands out, monitored as `MonitoredIo<Io>`.
    type Io;
}

impl<S, IO> AcceptStack for S
where
    S: tower::Service<Accepted<TcpStream>, Response = Accepted<IO>>,
    S::Error: Into<BoxError>,
{
    type Io = IO;
}

/// Accepts TCP connections for a [`ServiceMonitor`] and yields them as
/// [`MonitoredIo`]s.
///
/// Every accepted connection gets the service's TCP keepalive (default 30 s)
/// and `TCP_NODELAY` settings, then passes through the accept stack, a
/// `tower::Service<Accepted<TcpStream>>`: by default a
/// [`FilterLayer`] (blacklist, allowlist) and a [`LimitLayer`] (`conn_limit`,
/// `ip_limit`, `per_ip_limit`, `rate_limit`); see [`Listener::builder`] and
/// [`Listener::with_stack`] to add layers of your own. A connection the stack
/// refuses is closed at once, with nothing read from it, counted in the
/// service by reason ([`Rejected`](crate::Rejected)'s, else `"timeout"` for a
/// `tower::timeout` error, else `"error"`) and traced at DEBUG with its peer.
/// Stack futures that take time (a handshake) run concurrently, alongside the
/// next accepts. After the stack, the connection's
/// [`Admission`](crate::Admission) is attached (or taken now, if no layer
/// took one). A connection still in the stack when
/// [`ServiceMonitor::close`] cuts is counted in its
/// [`CloseReport::cut`](crate::CloseReport::cut) and closed when it comes
/// out, never yielded.
///
/// With [`pause_at_limit`](crate::ServiceConfig::pause_at_limit), the
/// listener stops accepting while the service is at `conn_limit` and resumes
/// when a connection closes; clients wait in the kernel's backlog.
///
/// Accept errors that concern one connection (`ECONNABORTED`, `ECONNRESET`)
/// are skipped; resource errors (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) are
/// counted ([`Listener::accept_errors`]) and make it wait 50 ms before
/// accepting again, never spin.
///
/// Settings are read from the service's config for every connection: limits,
/// lists and socket options changed at runtime apply to the next one.
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use tokio::io::AsyncWriteExt;
///
/// let service = monconn::Registry::new().service("hello");
/// let listener = monconn::Listener::bind("127.0.0.1:0", service.clone()).await?;
/// let client = tokio::net::TcpStream::connect(listener.local_addr()).await?;
///
/// let (mut conn, peer) = listener.accept().await?;
/// conn.write_all(b"hello\n").await?;
/// assert_eq!(peer, client.local_addr()?);
/// assert_eq!(service.snapshot().bytes_written, 6);
/// # Ok(()) }
/// ```
pub struct Listener<S = DefaultStack>
where
    S: tower::Service<Accepted<TcpStream>>,
{
    tcp: TcpListener,
    service: ServiceMonitor,
    local: SocketAddr,
    accept_errors: AtomicU64,
    /// Locked by one `accept` at a time: the stack and the connections in
    /// flight in it live here, so a cancelled `accept` loses nothing.
    state: Mutex<State<S, S::Future>>,
}

impl Listener {
    /// Binds `addr` for `service`, with the [`DefaultStack`].
    ///
    /// # Errors
    /// The bind error (address in use, say), with the address in its message.
    pub async fn bind(
        addr: impl ToSocketAddrs + fmt::Display,
        service: ServiceMonitor,
    ) -> io::Result<Self> {
        let tcp = TcpListener::bind(&addr)
            .await
            .map_err(|e| bind_error(&addr, e))?;
        Self::from_tcp(tcp, service)
    }

    /// Wraps a bound tokio listener, with the [`DefaultStack`].
    ///
    /// # Errors
    /// When the listener's local address cannot be read.
    pub fn from_tcp(tcp: TcpListener, service: ServiceMonitor) -> io::Result<Self> {
        let stack = ServiceBuilder::new()
            .layer(FilterLayer::new(&service))
            .layer(LimitLayer::new(&service))
            .service(Pass);
        Listener::with_stack(tcp, service, stack)
    }

    /// A builder for a listener with the built-in layers and your own.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn run() -> std::io::Result<()> {
    /// let service = monconn::Registry::new().service("web");
    /// let listener = monconn::Listener::builder(service)
    ///     .bind_retries(3)
    ///     .bind("127.0.0.1:8080")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(service: ServiceMonitor) -> ListenerBuilder<tower::layer::util::Identity> {
        ListenerBuilder::new(service)
    }
}

impl<S> Listener<S>
where
    S: tower::Service<Accepted<TcpStream>>,
{
    /// Wraps a bound tokio listener with `stack` as the accept stack. The
    /// stack should hold a [`FilterLayer`] and a [`LimitLayer`] for `service`
    /// (see the [`layers`](crate::layers) module for an example); without a
    /// `LimitLayer`, each connection is admitted after the stack.
    ///
    /// # Errors
    /// When the listener's local address cannot be read.
    pub fn with_stack(tcp: TcpListener, service: ServiceMonitor, stack: S) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let mut state = State::new(stack);
        state.sockopts.on_listener(&tcp, &service.config());
        Ok(Listener {
            tcp,
            service,
            local,
            accept_errors: AtomicU64::new(0),
            state: Mutex::new(state),
        })
    }

    /// Sets `TCP_NODELAY` on this listener's connections, whatever the
    /// service's [`nodelay`](crate::ServiceConfig::nodelay) says (other
    /// listeners of the service keep following it). tonic's
    /// [`Incoming`](crate::integrations::tonic::Incoming) turns it on, as
    /// tonic's own server does, unless this was called.
    #[must_use]
    pub fn with_nodelay(mut self, on: bool) -> Self {
        self.state.get_mut().sockopts.nodelay = Some(on);
        self
    }

    /// [`Self::with_nodelay`] unless it was called already.
    #[cfg_attr(not(feature = "tonic"), allow(dead_code))]
    pub(crate) fn nodelay_unless_set(mut self, on: bool) -> Self {
        let opts = &mut self.state.get_mut().sockopts;
        opts.nodelay.get_or_insert(on);
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The service the connections belong to.
    pub fn service(&self) -> &ServiceMonitor {
        &self.service
    }

    /// Accept errors for lack of resources (`EMFILE`, `ENFILE`, `ENOBUFS`,
    /// `ENOMEM`) since the listener was made.
    pub fn accept_errors(&self) -> u64 {
        self.accept_errors.load(Relaxed)
    }
}

impl<S, IO> Listener<S>
where
    S: tower::Service<Accepted<TcpStream>, Response = Accepted<IO>>,
    S::Error: Into<BoxError>,
    IO: 'static,
{
    /// The next admitted connection and its client's address (the one a
    /// PROXY header named, else the socket's peer).
    ///
    /// Cancel-safe: connections accepted and in the stack stay in the
    /// listener for the next call. Concurrent calls take turns.
    ///
    /// # Errors
    /// Accept errors that are neither about one connection nor about
    /// resources (see [`Listener`]), and a failure of the stack's
    /// `poll_ready`.
    pub async fn accept(&self) -> io::Result<(MonitoredIo<IO>, SocketAddr)> {
        let mut state = self.state.lock().await;
        let ctx = Ctx {
            tcp: &self.tcp,
            service: &self.service,
            local: self.local,
            accept_errors: &self.accept_errors,
        };
        std::future::poll_fn(|cx| state.poll_accept(cx, &ctx)).await
    }
}

pub(crate) fn bind_error(addr: &impl fmt::Display, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
}

impl<S> fmt::Debug for Listener<S>
where
    S: tower::Service<Accepted<TcpStream>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Listener");
        d.field("local", &self.local)
            .field("service", &self.service.sid())
            .field("accept_errors", &self.accept_errors());
        if let Ok(state) = self.state.try_lock() {
            d.field("in_flight", &state.in_flight());
        }
        d.finish()
    }
}
