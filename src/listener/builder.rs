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
use crate::{Accepted, Service};

/// Builds a [`Listener`] whose accept stack is the built-in
/// [`FilterLayer`] and [`LimitLayer`] around the user's own layers, in the
/// order they are added (the first added is the outermost of them).
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
pub struct ListenerBuilder<L> {
    service: Service,
    layers: ServiceBuilder<L>,
    bind_tries: u32,
}

impl ListenerBuilder<Identity> {
    pub(super) fn new(service: Service) -> Self {
        ListenerBuilder {
            service,
            layers: ServiceBuilder::new(),
            bind_tries: 1,
        }
    }
}

impl<L> ListenerBuilder<L> {
    /// Adds a layer inside the built-in ones and the layers added before it.
    pub fn layer<T>(self, layer: T) -> ListenerBuilder<Stack<T, L>> {
        ListenerBuilder {
            service: self.service,
            layers: self.layers.layer(layer),
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
    ) -> io::Result<Listener<Filter<Limit<L::Service>>>>
    where
        L: Layer<Pass>,
        L::Service: tower::Service<Accepted<TcpStream>>,
        <L::Service as tower::Service<Accepted<TcpStream>>>::Error: Into<BoxError>,
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
    pub fn from_tcp(self, tcp: TcpListener) -> io::Result<Listener<Filter<Limit<L::Service>>>>
    where
        L: Layer<Pass>,
        L::Service: tower::Service<Accepted<TcpStream>>,
        <L::Service as tower::Service<Accepted<TcpStream>>>::Error: Into<BoxError>,
    {
        let stack = ServiceBuilder::new()
            .layer(FilterLayer::new(&self.service))
            .layer(LimitLayer::new(&self.service))
            .layer(self.layers.into_inner())
            .service(Pass);
        Listener::with_stack(tcp, self.service, stack)
    }
}

impl<L> fmt::Debug for ListenerBuilder<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerBuilder")
            .field("service", &self.service.sid())
            .field("bind_tries", &self.bind_tries)
            .finish()
    }
}
