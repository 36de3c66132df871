//! Admission: a connection's reserved slot in its service, released exactly once.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use super::service::ServiceInner;
use crate::io::MonitoredIo;
use crate::ip::client_key;
use crate::proxied::ProxyInfo;

/// A connection's reserved slot in a [`ServiceMonitor`](crate::ServiceMonitor): it is counted
/// in the service's active connections and its IP's count, and has passed the
/// service's limits.
///
/// Dropping it gives the slot back. [`Admission::attach`] turns it into a
/// monitored connection, which gives the slot back when it is dropped, however
/// it ends (EOF, error, panic, task cancelled, shutdown).
pub struct Admission {
    service: Option<Arc<ServiceInner>>,
    peer: SocketAddr,
    /// The `ipv6_prefix` the peer was counted under (the config may change).
    prefix: u8,
}

// === impl Admission ===

impl Admission {
    pub(crate) fn new(service: Arc<ServiceInner>, peer: SocketAddr, prefix: u8) -> Self {
        Admission {
            service: Some(service),
            peer,
            prefix,
        }
    }

    /// The admitted client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Wraps `io` in a [`MonitoredIo`] registered in the live table of the
    /// service, with `local` as the local address.
    pub fn attach<T: 'static>(self, io: T, local: SocketAddr) -> MonitoredIo<T> {
        self.attach_proxied(io, local, None)
    }

    /// [`Admission::attach`], with the PROXY header it came through.
    pub(crate) fn attach_proxied<T: 'static>(
        mut self,
        io: T,
        local: SocketAddr,
        proxy: Option<Box<ProxyInfo>>,
    ) -> MonitoredIo<T> {
        let service = self.service.take().expect("an admission is attached once");
        let record = service.register(self.peer, local, self.prefix, proxy);
        MonitoredIo::new(io, record)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(service) = self.service.take() {
            service.release(client_key(self.peer.ip(), self.prefix), None);
        }
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("sid", &self.service.as_ref().map(|s| s.sid()))
            .field("peer", &self.peer)
            .finish()
    }
}
