//! `ConnInfo`: a handler's view of its connection.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::io::{ConnRecord, MonitoredIo};

/// A handler's view of its connection: peer and local addresses, the
/// connection's id within its service, and its live byte counters.
///
/// Cheap to clone (an `Arc` to the connection's [`ConnRecord`]); clones read
/// the same record, which stays readable after the connection is gone.
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let service = monconn::Registry::new().service("demo");
/// let (_client, server) = tokio::io::duplex(64);
/// let peer = "127.0.0.1:5555".parse().unwrap();
/// let local = "127.0.0.1:80".parse().unwrap();
/// let io = service.wrap(server, peer, local)?;
///
/// let info = monconn::integrations::ConnInfo::of(&io);
/// assert_eq!((info.peer(), info.local(), info.id()), (peer, local, 1));
/// assert_eq!(info.bytes_read(), 0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConnInfo {
    record: Arc<ConnRecord>,
}

// === impl ConnInfo ===

impl ConnInfo {
    /// The info of a monitored connection.
    pub fn of<T>(io: &MonitoredIo<T>) -> Self {
        Self::from_record(io.record().clone())
    }

    /// The info of the connection whose record this is.
    pub fn from_record(record: Arc<ConnRecord>) -> Self {
        ConnInfo { record }
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.record.peer()
    }

    /// The local address the client connected to.
    pub fn local(&self) -> SocketAddr {
        self.record.local()
    }

    /// The socket's own peer: the load balancer when a PROXY header named
    /// the client ([`ConnInfo::peer`]), else the client.
    pub fn socket_peer(&self) -> SocketAddr {
        self.record.socket_peer()
    }

    /// The PROXY header the connection came through (its TLVs, say).
    pub fn proxy_header(&self) -> Option<&crate::proxied::ProxyHeader> {
        self.record.proxy().map(|p| &p.header)
    }

    /// The connection's id, unique within its service (see [`ServiceMonitor::conn`](crate::ServiceMonitor::conn)
    /// and [`ServiceMonitor::kick`](crate::ServiceMonitor::kick)).
    pub fn id(&self) -> u64 {
        self.record.id()
    }

    /// Bytes read from the client so far, live.
    pub fn bytes_read(&self) -> u64 {
        self.record.bytes_read()
    }

    /// Bytes written to the client so far, live.
    pub fn bytes_written(&self) -> u64 {
        self.record.bytes_written()
    }

    /// The connection's live record (age, idle time, close cause too).
    pub fn record(&self) -> &Arc<ConnRecord> {
        &self.record
    }
}

impl<T> From<&MonitoredIo<T>> for ConnInfo {
    fn from(io: &MonitoredIo<T>) -> Self {
        ConnInfo::of(io)
    }
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnInfo")
            .field("id", &self.id())
            .field("peer", &self.peer())
            .field("local", &self.local())
            .field("bytes_read", &self.bytes_read())
            .field("bytes_written", &self.bytes_written())
            .finish()
    }
}
