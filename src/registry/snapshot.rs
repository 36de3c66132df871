//! Serializable snapshots of services and connections.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::bans::TimedBan;
use super::reason::RejectReason;
use super::service::{lock, ByteCounts, ServiceMonitor};
use crate::clock::{now_ms, since, system_secs, unix_secs};
use crate::io::CloseCause;

/// A service's figures at one instant, as served by `/stats`.
///
/// Every counter is exact: bytes include the live connections' bytes.
///
/// # Examples
/// ```
/// let service = monconn::Registry::new().service("web");
/// let snap = service.snapshot();
/// assert_eq!((snap.connections, snap.accepted, snap.bytes_read), (0, 0, 0));
/// assert_eq!(snap.rejected["blacklisted"], 0);
/// // The JSON of `/stats/{sid}`, and back.
/// let json = serde_json::to_string(&snap).unwrap();
/// let back: monconn::ServiceSnapshot = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, snap);
/// ```
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceSnapshot {
    /// The service's id.
    pub sid: String,
    /// When the service was created, in unix seconds.
    pub boot_at: u64,
    /// Seconds since the service was created.
    pub uptime_secs: u64,
    /// When a client connection last read a byte, in unix seconds; `null` if never.
    pub access_at: Option<u64>,
    /// Open connections.
    pub connections: usize,
    /// Distinct client keys (IPv4 addresses, IPv6 prefixes) with an open
    /// connection.
    pub ip_count: usize,
    /// Each client key with its number of open connections, sorted.
    pub ips: Vec<IpConnections>,
    /// Bytes read from clients, closed and live connections (minus `take_bytes`).
    pub bytes_read: u64,
    /// Bytes written to clients, closed and live connections (minus `take_bytes`).
    pub bytes_written: u64,
    /// Connections admitted and monitored.
    pub accepted: u64,
    /// Connections refused at accept time, by reason (`blacklisted`,
    /// `not_allowed`, `conn_limit`, `ip_limit`, `per_ip_limit`, `rate_limit`,
    /// `stopped`, and any reason a user's layer named).
    pub rejected: BTreeMap<String, u64>,
    /// Connections ended, by cause (`normal`, `error`, `idle`,
    /// `read_timeout`, `write_timeout`, `kicked`, `shutdown`).
    pub closed: BTreeMap<String, u64>,
    /// Accepts that failed for lack of resources (out of file descriptors,
    /// say), each followed by a short back-off.
    pub accept_errors: u64,
    /// The live bans with a lifetime, with their remaining time; absent
    /// when there is none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timed_bans: Vec<TimedBan>,
    /// The open connections, when asked for; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conns: Option<Vec<ConnSnapshot>>,
}

/// One client key and its open connections: the count `ip_limit` and
/// `per_ip_limit` apply to.
///
/// The key is the network `ip`/`prefix` ([`client_key`](crate::client_key)):
/// an IPv4 client's address with `prefix` 32 (IPv4-mapped IPv6 shown as
/// IPv4), an IPv6 client's network of
/// [`ipv6_prefix`](super::ServiceConfig::ipv6_prefix) bits (`"2001:db8:1:2::"`
/// with `prefix` 64 holds every client of 2001:db8:1:2::/64).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpConnections {
    /// The key's network address.
    pub ip: IpAddr,
    /// The key's prefix length: 32 for IPv4, the service's `ipv6_prefix` for
    /// IPv6 (as it was when the connections were admitted).
    pub prefix: u8,
    /// Its open connections.
    pub connections: u32,
}

impl IpConnections {
    /// The key as a network, e.g. `2001:db8:1:2::/64` or `192.0.2.7/32`
    /// (a `prefix` too long for the address gives the address alone).
    pub fn net(&self) -> IpNet {
        IpNet::new(self.ip, self.prefix).unwrap_or_else(|_| IpNet::from(self.ip))
    }
}

/// One open connection's figures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnSnapshot {
    /// The connection's id within its service.
    pub id: u64,
    /// The client's address: the socket's peer, or the client a PROXY
    /// header named.
    pub peer: SocketAddr,
    /// The socket's own peer (the load balancer) when a PROXY header named
    /// the client; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_peer: Option<SocketAddr>,
    /// The local address the client connected to.
    pub local: SocketAddr,
    /// Seconds since the connection was accepted.
    pub age_secs: u64,
    /// Seconds since it last read or wrote a byte.
    pub idle_secs: u64,
    /// Bytes read from the client.
    pub bytes_read: u64,
    /// Bytes written to the client.
    pub bytes_written: u64,
}

impl ServiceMonitor {
    /// The service's figures now, without the list of open connections
    /// (`conns` is `None`): cheap enough for every scrape.
    ///
    /// # Examples
    /// ```
    /// let service = monconn::Registry::new().service("web");
    /// let json = serde_json::to_value(service.snapshot()).unwrap();
    /// assert_eq!(json["sid"], "web");
    /// assert_eq!(json["connections"], 0);
    /// ```
    #[doc(alias = "Stats")]
    pub fn snapshot(&self) -> ServiceSnapshot {
        self.snapshot_of(false)
    }

    /// [`ServiceMonitor::snapshot`] with the list of open connections
    /// (`conns`), sorted by id: one entry per connection, so meant for
    /// dashboards and debugging rather than every scrape.
    ///
    /// # Examples
    /// ```
    /// let service = monconn::Registry::new().service("web");
    /// assert_eq!(service.snapshot_with_conns().conns, Some(vec![]));
    /// assert_eq!(service.snapshot().conns, None);
    /// ```
    pub fn snapshot_with_conns(&self) -> ServiceSnapshot {
        self.snapshot_of(true)
    }

    fn snapshot_of(&self, with_conns: bool) -> ServiceSnapshot {
        let inner = &self.inner;
        let c = &inner.counters;
        let now = now_ms();
        let table = inner.table();
        let ByteCounts {
            read: bytes_read,
            written: bytes_written,
        } = inner.bytes(&table);
        let last_read = table
            .conns
            .values()
            .map(|r| r.last_read_ms())
            .fold(c.last_read.load(Relaxed), u64::max);
        let mut ips: Vec<_> = table
            .ips
            .iter()
            .map(|(net, n)| IpConnections {
                ip: net.addr(),
                prefix: net.prefix_len(),
                connections: *n,
            })
            .collect();
        ips.sort_unstable_by_key(|e| (e.ip, e.prefix));
        let conns = with_conns.then(|| {
            let mut list: Vec<_> = table
                .conns
                .values()
                .map(|r| ConnSnapshot {
                    id: r.id(),
                    peer: r.peer(),
                    socket_peer: r.proxy().map(|p| p.socket_peer),
                    local: r.local(),
                    age_secs: since(now, r.opened_ms()).as_secs(),
                    idle_secs: since(now, r.last_active()).as_secs(),
                    bytes_read: r.bytes_read(),
                    bytes_written: r.bytes_written(),
                })
                .collect();
            list.sort_unstable_by_key(|c| c.id);
            list
        });
        let connections = table.active;
        drop(table);

        let mut rejected: BTreeMap<String, u64> = RejectReason::BUILTIN
            .iter()
            .zip(&c.rejected)
            .map(|(r, n)| (r.as_str().to_owned(), n.load(Relaxed)))
            .collect();
        for (name, n) in lock(&c.rejected_other).iter() {
            *rejected.entry(name.clone()).or_default() += n;
        }
        let closed = CloseCause::ALL
            .iter()
            .zip(&c.closed)
            .map(|(cause, n)| (cause.as_str().to_owned(), n.load(Relaxed)))
            .collect();
        ServiceSnapshot {
            sid: inner.sid().to_owned(),
            boot_at: system_secs(self.boot_at()),
            uptime_secs: since(now, inner.boot_ms()).as_secs(),
            access_at: (last_read != 0).then(|| unix_secs(last_read)),
            connections,
            ip_count: ips.len(),
            ips,
            bytes_read,
            bytes_written,
            accepted: c.accepted.load(Relaxed),
            rejected,
            closed,
            accept_errors: c.accept_errors.load(Relaxed),
            timed_bans: self.timed_bans(),
            conns,
        }
    }
}
