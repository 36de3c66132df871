//! `Accepted`: a connection on its way through the accept stack.

use std::net::SocketAddr;

use crate::proxied::ProxyInfo;
use crate::{Admission, MonitoredIo, ServiceMonitor};

/// A connection just accepted, as it flows through the accept stack (a
/// `tower::Service<Accepted<IO>>`): its transport, addresses and, once a
/// [`LimitLayer`](crate::layers::LimitLayer) reserved it a slot, its
/// [`Admission`].
///
/// A layer may replace the transport (after a TLS or PROXY-protocol
/// handshake, say) with [`Accepted::map_io`] or by moving the fields into a
/// new `Accepted`. After the stack, the [`Listener`](crate::Listener) attaches
/// the admission (or admits the connection itself when no layer did) and
/// yields a [`MonitoredIo`].
///
/// # Examples
/// ```
/// use monconn::Accepted;
///
/// let peer = "10.0.0.1:5555".parse().unwrap();
/// let local = "127.0.0.1:80".parse().unwrap();
/// let conn = Accepted::new(vec![1u8, 2, 3], peer, local);
/// let conn = conn.map_io(|bytes| bytes.len());
/// assert_eq!((conn.io, conn.peer.port()), (3, 5555));
/// ```
#[derive(Debug)]
pub struct Accepted<IO> {
    /// The transport.
    pub io: IO,
    /// The client's address: the socket's peer, or the client a PROXY
    /// header named.
    pub peer: SocketAddr,
    /// The local address the client connected to.
    pub local: SocketAddr,
    /// The connection's reserved slot in its service, once a layer reserved it.
    pub admission: Option<Admission>,
    /// The PROXY header and the socket's own peer, once a
    /// [`ProxyProtocolLayer`](crate::layers::proxy) read one (boxed: most
    /// connections have none).
    pub proxy: Option<Box<ProxyInfo>>,
}

impl<IO> Accepted<IO> {
    /// A connection from `peer` to `local`, not admitted yet.
    pub fn new(io: IO, peer: SocketAddr, local: SocketAddr) -> Self {
        Accepted {
            io,
            peer,
            local,
            admission: None,
            proxy: None,
        }
    }

    /// The same connection over another transport, made from this one.
    pub fn map_io<IO2>(self, f: impl FnOnce(IO) -> IO2) -> Accepted<IO2> {
        Accepted {
            io: f(self.io),
            peer: self.peer,
            local: self.local,
            admission: self.admission,
            proxy: self.proxy,
        }
    }

    /// Wraps the transport in a [`MonitoredIo`] of `service`: attaches the
    /// admission, or admits the connection now if no layer did.
    ///
    /// # Errors
    /// [`Rejected`](crate::Rejected) when `service` refuses it now (not
    /// counted: the caller counts refusals).
    pub fn into_monitored(
        self,
        service: &ServiceMonitor,
    ) -> Result<MonitoredIo<IO>, crate::Rejected>
    where
        IO: 'static,
    {
        let admission = match self.admission {
            Some(admission) => admission,
            None => service.admit(self.peer)?,
        };
        Ok(admission.attach_proxied(self.io, self.local, self.proxy))
    }
}
