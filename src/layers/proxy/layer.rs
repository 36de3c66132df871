//! `ProxyProtocolLayer`: reads the PROXY header of connections from trusted
//! sources and hands them on as from the client it names.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::net::TcpStream;
use tower_layer::Layer;

use super::config::ProxyConfig;
use super::deadline::Deadlines;
use super::future::ResponseFuture;
use super::parse::HeaderError;
use super::read::{read_header, read_now, Now};
use crate::layers::BoxError;
use crate::proxied::{ProxyHeader, ProxyInfo};
use crate::{Accepted, RejectReason, Rejected};

/// Reads the PROXY-protocol header (v1 or v2) that a load balancer sends
/// first on each connection, so that the layers after it (the filter, the
/// limits) and the service see the client it names. Put it first in the
/// accept stack ([`ListenerBuilder::proxy_protocol`](crate::ListenerBuilder::proxy_protocol)).
///
/// Clones share one [`ProxyConfig`], and one clock for the header
/// timeouts: no timer per connection, but one task per layer that ticks
/// every quarter of the timeout (10 ms to 1 s) while a connection waits
/// for its header.
///
/// For a connection from a trusted source:
/// - the header must arrive whole within the config's timeout (a connection
///   still waiting is refused within a tick after it), be well
///   formed and not too long; else the connection is refused with a
///   [`ProxyRefused`] error whose [`Rejected`] names the reason
///   ([`RejectReason::ProxyTimeout`], [`RejectReason::ProxyMalformed`],
///   [`RejectReason::ProxyOversized`], [`RejectReason::ProxyTruncated`]) and whose
///   [`HeaderError`] says what was wrong;
/// - a `PROXY` header sets [`Accepted::peer`] to the client it names; a
///   `LOCAL` (or v1 `UNKNOWN`) header leaves the socket's peer;
/// - the header and the socket's peer go with the connection
///   ([`Accepted::proxy`], then [`ConnRecord::proxy`](crate::ConnRecord::proxy)
///   and [`ConnInfo::socket_peer`](crate::integrations::ConnInfo::socket_peer));
/// - the transport is the same `TcpStream`, its next byte the first byte
///   after the header: nothing the client sent after it is lost, and the
///   connection's byte counts start there.
///
/// A connection from elsewhere is refused ([`RejectReason::ProxyUntrusted`]), or
/// passed on untouched with
/// [`ProxyConfig::serve_untrusted`].
///
/// # Examples
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use monconn::layers::proxy::{ProxyConfig, ProxyProtocolLayer};
/// use monconn::layers::{FilterLayer, LimitLayer, Pass};
/// use tower::ServiceBuilder;
///
/// let service = monconn::Registry::new().service("web");
/// let config = ProxyConfig::new().trust(["10.0.0.0/8".parse().unwrap()]);
/// let stack = ServiceBuilder::new()
///     .layer(ProxyProtocolLayer::new(config))
///     .layer(FilterLayer::new(&service))
///     .layer(LimitLayer::new(&service))
///     .service(Pass);
/// let tcp = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
/// let listener = monconn::Listener::with_stack(tcp, service, stack)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ProxyProtocolLayer {
    config: Arc<ProxyConfig>,
    deadlines: Deadlines,
}

impl ProxyProtocolLayer {
    /// A layer with `config`.
    pub fn new(config: ProxyConfig) -> Self {
        ProxyProtocolLayer {
            deadlines: Deadlines::new(config.timeout),
            config: Arc::new(config),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }
}

impl<S> Layer<S> for ProxyProtocolLayer {
    type Service = ProxyProtocol<S>;

    fn layer(&self, inner: S) -> ProxyProtocol<S> {
        ProxyProtocol {
            inner,
            config: self.config.clone(),
            deadlines: self.deadlines.clone(),
        }
    }
}

/// The service built by [`ProxyProtocolLayer`]: reads the header, then
/// passes the connection to `S` as from the client the header names.
#[derive(Clone, Debug)]
pub struct ProxyProtocol<S> {
    inner: S,
    config: Arc<ProxyConfig>,
    deadlines: Deadlines,
}

impl<S> ProxyProtocol<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> tower::Service<Accepted<TcpStream>> for ProxyProtocol<S>
where
    S: tower::Service<Accepted<TcpStream>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut conn: Accepted<TcpStream>) -> Self::Future {
        let config = &self.config;
        if !config.is_trusted(conn.peer.ip()) {
            if config.serve_untrusted {
                return ResponseFuture::inner(self.inner.call(conn));
            }
            let rejected = Rejected::new(RejectReason::ProxyUntrusted, conn.peer).closing(conn);
            return ResponseFuture::refused(rejected);
        }
        // The header is usually there already: handed on at once.
        if let Now::Done(read) = read_now(&conn.io, config.max_len) {
            return match checked(config, read) {
                Ok(header) => ResponseFuture::inner(self.inner.call(with_header(conn, header))),
                Err(error) => ResponseFuture::refused(ProxyRefused::new(error, conn)),
            };
        }
        // Else wait for it, under the layer's shared deadlines. The service
        // made ready goes with the future; a clone stays.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        let deadlines = self.deadlines.clone();
        ResponseFuture::waiting(Box::pin(async move {
            let read = read_header(&mut conn.io, config.max_len);
            let read = match deadlines.run(read).await {
                Ok(read) => read,
                Err(_) => Err(HeaderError::Timeout(config.timeout)),
            };
            match checked(&config, read) {
                Ok(header) => inner
                    .call(with_header(conn, header))
                    .await
                    .map_err(Into::into),
                Err(error) => Err(ProxyRefused::new(error, conn).into()),
            }
        }))
    }
}

/// The header read, if of a version `config` accepts.
fn checked(
    config: &ProxyConfig,
    read: Result<ProxyHeader, HeaderError>,
) -> Result<ProxyHeader, HeaderError> {
    let header = read?;
    match config.version {
        Some(want) if want != header.version() => Err(HeaderError::Malformed {
            version: header.version(),
            detail: format!("only v{want} headers are accepted here"),
        }),
        _ => Ok(header),
    }
}

/// The connection as from the client `header` names, the header kept.
fn with_header(mut conn: Accepted<TcpStream>, header: ProxyHeader) -> Accepted<TcpStream> {
    let socket_peer = conn.peer;
    if let Some(client) = header.source() {
        conn.peer = client;
    }
    conn.proxy = Some(Box::new(ProxyInfo {
        socket_peer,
        header,
    }));
    conn
}

/// A connection refused for its PROXY header: the [`Rejected`] that the
/// listener counts (its [`source`](std::error::Error::source)), and what was
/// wrong with the header.
#[derive(Debug)]
pub struct ProxyRefused {
    rejected: Rejected,
    error: HeaderError,
}

impl ProxyRefused {
    fn new(error: HeaderError, conn: Accepted<TcpStream>) -> Self {
        let reason = match &error {
            HeaderError::NotProxy { .. } | HeaderError::Malformed { .. } => {
                RejectReason::ProxyMalformed
            }
            HeaderError::Oversized { .. } => RejectReason::ProxyOversized,
            HeaderError::Timeout(_) => RejectReason::ProxyTimeout,
            HeaderError::Truncated { .. } | HeaderError::Io(_) => RejectReason::ProxyTruncated,
        };
        let rejected = Rejected::new(reason, conn.peer).closing(conn);
        ProxyRefused { rejected, error }
    }

    /// The refusal, with its reason.
    pub fn rejected(&self) -> &Rejected {
        &self.rejected
    }

    /// What was wrong with the header.
    pub fn error(&self) -> &HeaderError {
        &self.error
    }
}

impl fmt::Display for ProxyRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rejected, self.error)
    }
}

impl std::error::Error for ProxyRefused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_future_is_send() {
        fn send<T: Send>(_: &T) {}
        let service = ProxyProtocolLayer::new(ProxyConfig::new()).layer(crate::layers::Pass);
        send(&service);
    }
}
