//! Admission: a connection's reserved slot in its service, released exactly once.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::conn::{ConnRecord, Record};
use super::service::ServiceInner;
use crate::io::MonitoredIo;
use crate::layers::proxy::ProxyInfo;

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
        MonitoredIo::new(io, ConnGuard { service, record })
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
            .release(self.record.client_key(), Some(&self.record));
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

/// The key a client is counted and limited under (`ip_limit`,
/// `per_ip_limit`, `rate_limit`, the per-IP table of snapshots): an IPv4
/// client's address (a /32; IPv4-mapped IPv6 addresses count as IPv4), an
/// IPv6 client's network of `ipv6_prefix` bits (above 128 counts as 128).
///
/// An IPv6 client is usually given a whole /64 and may pick any address in
/// it: keyed by its address, it would dodge every per-IP limit.
///
/// # Examples
/// ```
/// use monconn::registry::client_key;
///
/// let key = |ip: &str| client_key(ip.parse().unwrap(), 64).to_string();
/// assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::/64");
/// assert_eq!(key("2001:db8:1:2:ffff::9"), "2001:db8:1:2::/64");
/// assert_eq!(key("192.0.2.7"), "192.0.2.7/32");
/// assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7/32");
/// ```
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> IpNet {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => Ipv4Net::from(v4).into(),
        IpAddr::V6(v6) => Ipv6Net::new_assert(v6, ipv6_prefix.min(128)).trunc().into(),
    }
}
