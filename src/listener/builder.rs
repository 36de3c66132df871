//! `ListenerBuilder`: a [`Listener`] with the built-in layers and the user's own.

use std::fmt;
use std::io;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tower::layer::util::{Identity, Stack};
use tower::ServiceBuilder;
use tower_layer::Layer;

use super::Listener;
use crate::layers::{BoxError, Filter, FilterLayer, Limit, LimitLayer, Pass};
use crate::{Accepted, ServiceMonitor};

/// Builds a [`Listener`] whose accept stack is the built-in
/// [`FilterLayer`] and [`LimitLayer`] around the user's own layers, in the
/// order they are added (the first added is the outermost of them); with
/// [`ListenerBuilder::proxy_protocol`], a PROXY-protocol layer before all.
///
/// # Examples
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use std::time::Duration;
///
/// let service = monconn::Registry::new().service("web");
/// let listener = monconn::Listener::builder(service)
///     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
///     .bind_retries(3)
///     .bind("0.0.0.0:8080")
///     .await?;
/// # Ok(()) }
/// ```
pub struct ListenerBuilder<L, P = Identity> {
    service: ServiceMonitor,
    layers: ServiceBuilder<L>,
    /// The layer in front of the built-in ones (the PROXY protocol's).
    first: P,
    bind_tries: u32,
}

impl ListenerBuilder<Identity> {
    pub(super) fn new(service: ServiceMonitor) -> Self {
        ListenerBuilder {
            service,
            layers: ServiceBuilder::new(),
            first: Identity::new(),
            bind_tries: 1,
        }
    }
}

impl<L, P> ListenerBuilder<L, P> {
    /// Adds a layer inside the built-in ones and the layers added before it.
    pub fn layer<T>(self, layer: T) -> ListenerBuilder<Stack<T, L>, P> {
        ListenerBuilder {
            service: self.service,
            layers: self.layers.layer(layer),
            first: self.first,
            bind_tries: self.bind_tries,
        }
    }

    /// Reads a PROXY-protocol header (v1 or v2) first, before the filter and
    /// the limits, from the sources `config` trusts: every guard, the per-IP
    /// table, snapshots and [`ConnInfo`](crate::integrations::ConnInfo) see the client it
    /// names. See [`ProxyProtocolLayer`](crate::layers::ProxyProtocolLayer).
    ///
    /// ```no_run
    /// # async fn run() -> std::io::Result<()> {
    /// use monconn::layers::ProxyConfig;
    ///
    /// let service = monconn::Registry::new().service("web");
    /// let listener = monconn::Listener::builder(service)
    ///     .proxy_protocol(ProxyConfig::new().trust(["10.0.0.0/8".parse().unwrap()]))
    ///     .bind("0.0.0.0:8080")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "proxy-protocol")]
    #[cfg_attr(docsrs, doc(cfg(feature = "proxy-protocol")))]
    pub fn proxy_protocol(
        self,
        config: crate::layers::ProxyConfig,
    ) -> ListenerBuilder<L, crate::layers::ProxyProtocolLayer> {
        ListenerBuilder {
            service: self.service,
            layers: self.layers,
            first: crate::layers::ProxyProtocolLayer::new(config),
            bind_tries: self.bind_tries,
        }
    }

    /// Tries to bind up to `tries` times, waiting 0.5 s, 1 s, 1.5 s, ...
    /// between tries, like the Go monconn (which tries 3 times). Default 1.
    pub fn bind_retries(mut self, tries: u32) -> Self {
        self.bind_tries = tries.max(1);
        self
    }

    /// Binds `addr` and builds the listener.
    ///
    /// # Errors
    /// The last bind error, with the address in its message.
    pub async fn bind(
        self,
        addr: impl ToSocketAddrs + fmt::Display,
    ) -> io::Result<Listener<P::Service>>
    where
        L: Layer<Pass>,
        L::Service: tower::Service<Accepted<TcpStream>>,
        <L::Service as tower::Service<Accepted<TcpStream>>>::Error: Into<BoxError>,
        P: Layer<Filter<Limit<L::Service>>>,
        P::Service: tower::Service<Accepted<TcpStream>>,
    {
        let mut tries = 0;
        let tcp = loop {
            tries += 1;
            match TcpListener::bind(&addr).await {
                Ok(tcp) => break tcp,
                Err(e) if tries < self.bind_tries => {
                    tracing::warn!(%addr, error = %e, tries, "cannot listen; trying again");
                    tokio::time::sleep(Duration::from_millis(500) * tries).await;
                }
                Err(e) => return Err(super::bind_error(&addr, e)),
            }
        };
        self.from_tcp(tcp)
    }

    /// Builds the listener over a bound tokio listener.
    ///
    /// # Errors
    /// When the listener's local address cannot be read.
    pub fn from_tcp(self, tcp: TcpListener) -> io::Result<Listener<P::Service>>
    where
        L: Layer<Pass>,
        L::Service: tower::Service<Accepted<TcpStream>>,
        <L::Service as tower::Service<Accepted<TcpStream>>>::Error: Into<BoxError>,
        P: Layer<Filter<Limit<L::Service>>>,
        P::Service: tower::Service<Accepted<TcpStream>>,
    {
        let stack = ServiceBuilder::new()
            .layer(self.first)
            .layer(FilterLayer::new(&self.service))
            .layer(LimitLayer::new(&self.service))
            .layer(self.layers.into_inner())
            .service(Pass);
        Listener::with_stack(tcp, self.service, stack)
    }
}

impl<L, P> fmt::Debug for ListenerBuilder<L, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerBuilder")
            .field("service", &self.service.sid())
            .field("bind_tries", &self.bind_tries)
            .finish()
    }
}
