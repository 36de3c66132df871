//! Why a connection was refused.

use std::borrow::Cow;
use std::fmt;
use std::io;

/// Why a connection was refused at accept time (its pair for connections
/// that were admitted is [`CloseCause`](crate::CloseCause)).
///
/// The built-in reasons are counted in fixed slots; [`RejectReason::Other`] lets a
/// user's own layer (a failed handshake, say) name its own reason.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[doc(alias = "Reason")]
pub enum RejectReason {
    /// The peer's address is on the blacklist.
    Blacklisted,
    /// An allowlist is set and the peer's address is not on it.
    NotAllowed,
    /// The service already has `conn_limit` connections.
    ConnLimit,
    /// The service already has `ip_limit` distinct client IPs and this one is new.
    IpLimit,
    /// This client IP already has `per_ip_limit` connections.
    PerIpLimit,
    /// This client IP opened connections faster than its rate limit allows.
    RateLimit,
    /// The service is stopping or stopped.
    Stopped,
    /// The peer's address is banned by the service's
    /// [`AutoBan`](crate::AutoBan) rule.
    AutoBanned,
    /// A connection from outside the PROXY protocol's trusted sources.
    ProxyUntrusted,
    /// No whole PROXY header within its timeout.
    ProxyTimeout,
    /// Not a PROXY header, or a malformed one.
    ProxyMalformed,
    /// A PROXY header longer than allowed.
    ProxyOversized,
    /// The connection ended, or failed, within its PROXY header.
    ProxyTruncated,
    /// A reason named by a user's layer.
    Other(Cow<'static, str>),
}

impl RejectReason {
    /// The built-in reasons, in the order of their counter slots (the
    /// PROXY protocol's are counted by name, as [`RejectReason::Other`] is, and
    /// appear in snapshots once they happen).
    pub(crate) const BUILTIN: [RejectReason; 8] = [
        RejectReason::Blacklisted,
        RejectReason::NotAllowed,
        RejectReason::ConnLimit,
        RejectReason::IpLimit,
        RejectReason::PerIpLimit,
        RejectReason::RateLimit,
        RejectReason::Stopped,
        RejectReason::AutoBanned,
    ];

    /// The reason's name as it appears in snapshots and metrics labels.
    pub fn as_str(&self) -> &str {
        match self {
            RejectReason::Blacklisted => "blacklisted",
            RejectReason::NotAllowed => "not_allowed",
            RejectReason::ConnLimit => "conn_limit",
            RejectReason::IpLimit => "ip_limit",
            RejectReason::PerIpLimit => "per_ip_limit",
            RejectReason::RateLimit => "rate_limit",
            RejectReason::Stopped => "stopped",
            RejectReason::AutoBanned => "auto_banned",
            RejectReason::ProxyUntrusted => "proxy_untrusted",
            RejectReason::ProxyTimeout => "proxy_timeout",
            RejectReason::ProxyMalformed => "proxy_malformed",
            RejectReason::ProxyOversized => "proxy_oversized",
            RejectReason::ProxyTruncated => "proxy_truncated",
            RejectReason::Other(name) => name,
        }
    }

    /// The counter slot of a built-in reason.
    pub(crate) fn slot(&self) -> Option<usize> {
        Self::BUILTIN.iter().position(|r| r == self)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection refused at accept time, with its reason and peer.
///
/// Accept-stack layers return it (boxed) as their error; the listener
/// downcasts it to count the refusal by reason.
#[derive(Clone, Debug)]
pub struct Rejected {
    reason: RejectReason,
    peer: std::net::SocketAddr,
    /// The refused connection, closed when the last clone of this drops.
    conn: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

impl Rejected {
    /// A refusal of `peer` for `reason`.
    pub fn new(reason: RejectReason, peer: std::net::SocketAddr) -> Self {
        Rejected {
            reason,
            peer,
            conn: None,
        }
    }

    /// Makes this refusal the owner of `conn`, the refused connection, which
    /// closes when the last clone of the refusal drops: so the client sees
    /// its connection closed only after whoever handles the refusal is done
    /// with it. The [`Listener`](crate::Listener) counts a refusal first, so
    /// that stats read after a client saw its close include the refusal.
    /// The built-in layers close the connections they refuse this way; a
    /// layer of your own may too.
    ///
    /// ```
    /// use monconn::{RejectReason, Rejected};
    /// let (client, server) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let refused = Rejected::new(RejectReason::Blacklisted, "10.0.0.1:4000".parse().unwrap())
    ///     .closing(server);
    /// client.set_nonblocking(true).unwrap();
    /// let mut byte = [0u8; 1];
    /// // Still open: nothing to read yet, but no EOF either.
    /// assert!(std::io::Read::read(&mut &client, &mut byte).is_err());
    /// drop(refused);
    /// assert_eq!(std::io::Read::read(&mut &client, &mut byte).unwrap(), 0);
    /// ```
    pub fn closing(mut self, conn: impl std::any::Any + Send + Sync) -> Self {
        self.conn = Some(std::sync::Arc::new(conn));
        self
    }

    /// Why the connection was refused.
    pub fn reason(&self) -> &RejectReason {
        &self.reason
    }

    /// The refused client's address.
    pub fn peer(&self) -> std::net::SocketAddr {
        self.peer
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection from {} refused: {}", self.peer, self.reason)
    }
}

impl std::error::Error for Rejected {}

impl From<Rejected> for io::Error {
    fn from(r: Rejected) -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionRefused, r)
    }
}
