//! Which connections a tap sees ([`TapFilter`]) and how much of them
//! ([`TapLimits`]).

use std::fmt;
use std::sync::Arc;

use ipnet::IpNet;

use crate::io::ConnRecord;
use crate::ip::{canonical_ip, canonical_net};

/// Bytes of each read or write a tap event carries, by default.
pub const BYTES_PER_EVENT: usize = 64;

/// Events a tap subscriber gets per second at most, by default.
pub const EVENTS_PER_SEC: u32 = 200;

/// Events waiting for a tap subscriber at most, by default.
pub const QUEUE: usize = 256;

/// The connections a tap sees: those of a service, of a client IP or
/// network, a connection id, or all of these together. An empty filter
/// matches every connection.
///
/// # Examples
/// ```
/// use monconn::tap::TapFilter;
///
/// let filter = TapFilter::new()
///     .with_sid("web")
///     .with_ip("10.0.0.0/8".parse().unwrap())
///     .with_conn(7);
/// assert_eq!(filter.to_string(), "sid=web ip=10.0.0.0/8 conn=7");
/// assert_eq!(TapFilter::new().to_string(), "all");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapFilter {
    sid: Option<Arc<str>>,
    ip: Option<IpNet>,
    conn: Option<u64>,
}

impl TapFilter {
    /// Every connection of every service.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only connections of the service `sid`.
    pub fn with_sid(mut self, sid: impl Into<Arc<str>>) -> Self {
        self.sid = Some(sid.into());
        self
    }

    /// Only connections whose client (after a PROXY header, the real one)
    /// is in `net` (an address is `IpNet::from(ip)`, a /32 or /128).
    /// IPv4-mapped IPv6 addresses and networks count as IPv4; host bits are
    /// ignored.
    pub fn with_ip(mut self, net: IpNet) -> Self {
        self.ip = Some(canonical_net(net));
        self
    }

    /// Only the connection of this id. Ids are unique within a service:
    /// without [`TapFilter::with_sid`], the connection of that id of every
    /// service.
    pub fn with_conn(mut self, id: u64) -> Self {
        self.conn = Some(id);
        self
    }

    /// The service it is limited to, if any.
    pub fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }

    /// The client network it is limited to, if any.
    pub fn ip(&self) -> Option<IpNet> {
        self.ip
    }

    /// The connection id it is limited to, if any.
    pub fn conn(&self) -> Option<u64> {
        self.conn
    }

    /// Whether the connection of `record` passes.
    pub(crate) fn matches(&self, record: &ConnRecord) -> bool {
        self.conn.is_none_or(|id| id == record.id())
            && self.sid.as_deref().is_none_or(|sid| sid == record.sid())
            && self
                .ip
                .is_none_or(|net| net.contains(&canonical_ip(record.peer().ip())))
    }
}

impl fmt::Display for TapFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(sid) = &self.sid {
            parts.push(format!("sid={sid}"));
        }
        if let Some(ip) = &self.ip {
            parts.push(format!("ip={ip}"));
        }
        if let Some(conn) = self.conn {
            parts.push(format!("conn={conn}"));
        }
        if parts.is_empty() {
            f.write_str("all")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// How much one tap subscriber gets: past these, events are dropped and
/// counted as lost ([`Tap::lost`](super::Tap::lost)), and the connections
/// never wait.
///
/// # Examples
/// ```
/// use monconn::tap::TapLimits;
///
/// let limits = TapLimits::default().with_bytes_per_event(16).with_events_per_sec(50);
/// assert_eq!((limits.bytes_per_event(), limits.events_per_sec(), limits.queue()), (16, 50, 256));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapLimits {
    bytes_per_event: usize,
    events_per_sec: u32,
    queue: usize,
}

impl Default for TapLimits {
    fn default() -> Self {
        TapLimits {
            bytes_per_event: BYTES_PER_EVENT,
            events_per_sec: EVENTS_PER_SEC,
            queue: QUEUE,
        }
    }
}

impl TapLimits {
    /// The first `bytes` bytes of each read or write are copied into its
    /// event (its length is always given whole). Default:
    /// [`BYTES_PER_EVENT`]; 0 sends lengths only.
    pub fn with_bytes_per_event(mut self, bytes: usize) -> Self {
        self.bytes_per_event = bytes;
        self
    }

    /// At most `events` events per second (each clock second); the rest
    /// are lost. Default: [`EVENTS_PER_SEC`].
    pub fn with_events_per_sec(mut self, events: u32) -> Self {
        self.events_per_sec = events;
        self
    }

    /// At most `events` events wait for the subscriber (at least 1); when
    /// it does not keep up, the rest are lost. Default: [`QUEUE`].
    pub fn with_queue(mut self, events: usize) -> Self {
        self.queue = events.max(1);
        self
    }

    /// See [`TapLimits::with_bytes_per_event`].
    pub fn bytes_per_event(&self) -> usize {
        self.bytes_per_event
    }

    /// See [`TapLimits::with_events_per_sec`].
    pub fn events_per_sec(&self) -> u32 {
        self.events_per_sec
    }

    /// See [`TapLimits::with_queue`].
    pub fn queue(&self) -> usize {
        self.queue
    }
}
