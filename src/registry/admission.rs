//! Admission: a connection's reserved slot in its service, released exactly once.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::conn::{ConnRecord, Record};
use super::service::ServiceInner;
use crate::io::MonitoredIo;

/// A connection's reserved slot in a [`Service`](crate::Service): it is counted
/// in the service's active connections and its IP's count, and has passed the
/// service's limits.
///
/// Dropping it gives the slot back. [`Admission::attach`] turns it into a
/// monitored connection, which gives the slot back when it is dropped, however
/// it ends (EOF, error, panic, task cancelled, shutdown).
pub struct Admission {
    service: Option<Arc<ServiceInner>>,
    peer: SocketAddr,
}

// === impl Admission ===

impl Admission {
    pub(crate) fn new(service: Arc<ServiceInner>, peer: SocketAddr) -> Self {
        Admission {
            service: Some(service),
            peer,
        }
    }

    /// The admitted client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Wraps `io` in a [`MonitoredIo`] registered in the live table of the
    /// service, with `local` as the local address.
    pub fn attach<T: 'static>(mut self, io: T, local: SocketAddr) -> MonitoredIo<T> {
        let service = self.service.take().expect("an admission is attached once");
        let record = service.register(self.peer, local);
        MonitoredIo::new(io, ConnGuard { service, record })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(service) = self.service.take() {
            service.release(self.peer.ip(), None);
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

/// Owned by a [`MonitoredIo`]: removes its record from the live table and
/// folds its bytes into the service totals on drop.
///
/// Not `Clone`: there is one per connection, so the release runs once.
pub(crate) struct ConnGuard {
    service: Arc<ServiceInner>,
    record: Record,
}

impl ConnGuard {
    pub(crate) fn record(&self) -> &Arc<ConnRecord> {
        &self.record
    }

    pub(crate) fn sid(&self) -> &str {
        self.service.sid()
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.service
            .release(self.record.peer().ip(), Some(&self.record));
    }
}

impl fmt::Debug for ConnGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnGuard")
            .field("sid", &self.service.sid())
            .field("record", &self.record)
            .finish()
    }
}

/// The address a rule or a per-IP count sees: IPv4-mapped IPv6 addresses
/// (`::ffff:a.b.c.d`) become the IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}
