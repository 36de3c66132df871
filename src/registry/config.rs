//! A service's settings: timeouts, limits, filters.

use std::time::Duration;

use ipnet::IpNet;

use super::AutoBan;

/// The settings of one [`ServiceMonitor`](crate::ServiceMonitor).
///
/// Defaults: no read or write timeout and no idle limit (like tower-http's
/// timeouts, off until asked for: a server streaming events or downloads
/// must not lose them because it added monitoring), wait timeout 60 s, idle
/// check every 15 s, no connection or IP limit, TCP keepalive with a 30 s
/// period, no hex dump, empty lists. The Go monconn's 600 s read and write
/// timeouts and 900 s max idle are one call away; the forwarder uses them.
///
/// # Timeouts
/// None of them cuts a connection whose bytes are moving in either
/// direction:
///
/// | setting | cuts a connection when | HAProxy's nearest |
/// |---|---|---|
/// | `max_idle` | no byte moved either way for this long | `timeout tunnel` |
/// | `read_timeout` | a read is pending on the peer, and no byte moved either way, for this long | `timeout client` ("the client is expected to send") |
/// | `write_timeout` | a write to the peer is pending (it stopped taking bytes), and no byte moved either way, for this long | `timeout client` ("expected to acknowledge"); a proxy's stalled backend, `timeout server` ([`ConnRecord::set_upstream_blocked`](crate::ConnRecord::set_upstream_blocked)) |
///
/// A timeout is noticed at the sweeper's next tick (`idle_interval`); a
/// pending read is checked once more one tick later, so that a read its
/// caller dropped (a `tokio::time::timeout` around it) is forgotten rather
/// than cut. A cut closes the connection with a reset (see
/// [`MonitoredIo`](crate::MonitoredIo)).
///
/// A `None` time or limit means "none". Settings changed at runtime with
/// [`ServiceMonitor::set_config`](crate::ServiceMonitor::set_config) apply to connections
/// admitted afterwards, and the sweeper reads the timeouts at every tick.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use monconn::ServiceConfig;
///
/// let config = ServiceConfig::default()
///     .max_idle(Duration::from_secs(60))
///     .conn_limit(1000)
///     .read_timeout(None) // the default, spelled out
///     .blacklist(["10.0.0.0/8".parse().unwrap()]);
/// assert_eq!(config.conn_limit, Some(1000));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// Close a connection whose read has been pending this long while no
    /// byte moved either way. Default none.
    pub read_timeout: Option<Duration>,
    /// Close a connection whose write has been pending this long (a peer that
    /// stopped reading) while no byte moved either way. Default none.
    pub write_timeout: Option<Duration>,
    /// On a graceful stop, how long live connections may go on before they are
    /// cut. Default 60 s.
    pub wait_timeout: Duration,
    /// Close a connection that has neither read nor written a byte for this
    /// long. Default none.
    pub max_idle: Option<Duration>,
    /// How often the sweeper checks idleness and timeouts. Default 15 s.
    pub idle_interval: Duration,
    /// Most concurrent connections. Default none.
    pub conn_limit: Option<usize>,
    /// Most distinct client IPs; a known IP may open more connections. Default none.
    pub ip_limit: Option<usize>,
    /// Most concurrent connections from one IP. Default none.
    pub per_ip_limit: Option<usize>,
    /// Most new connections per second from one IP (a token bucket), with its burst.
    /// Default none.
    pub rate_limit: Option<RateLimit>,
    /// How many leading bits of an IPv6 client's address make its key for
    /// `ip_limit`, `per_ip_limit`, `rate_limit` and the per-IP counts (see
    /// [`client_key`](crate::client_key)): clients of one network
    /// count as one. Default 64 (a client usually has a whole /64 and may use
    /// any address in it); 128 keys by address; values above 128 count as
    /// 128. IPv4 clients are keyed by address.
    pub ipv6_prefix: u8,
    /// TCP keepalive period, `None` to leave keepalive off. Default 30 s.
    pub keepalive: Option<Duration>,
    /// Set `TCP_NODELAY` on accepted connections. Default false.
    pub nodelay: bool,
    /// Hex-dump every read and write through `tracing` at TRACE. Default false.
    pub print_bytes: bool,
    /// At `conn_limit`, stop accepting until a slot frees (backpressure)
    /// instead of refusing. Default false.
    pub pause_at_limit: bool,
    /// Addresses and networks refused at accept time.
    pub blacklist: Vec<IpNet>,
    /// When not empty, only these addresses and networks are admitted.
    pub allowlist: Vec<IpNet>,
    /// A rule that bans a client by itself (too many refusals, or too many
    /// connections, within a window). Default none.
    pub auto_ban: Option<AutoBan>,
}

/// A per-IP connection rate: `per_sec` new connections a second, bursts up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_sec: f64,
    /// Bucket size: connections allowed at once after a quiet period.
    pub burst: u32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            read_timeout: None,
            write_timeout: None,
            wait_timeout: Duration::from_secs(60),
            max_idle: None,
            idle_interval: Duration::from_secs(15),
            conn_limit: None,
            ip_limit: None,
            per_ip_limit: None,
            rate_limit: None,
            ipv6_prefix: 64,
            keepalive: Some(Duration::from_secs(30)),
            nodelay: false,
            print_bytes: false,
            pause_at_limit: false,
            blacklist: Vec::new(),
            allowlist: Vec::new(),
            auto_ban: None,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: Option<$ty:ty>;)*) => {
        impl ServiceConfig {
            $(
                $(#[$doc])*
                ///
                /// Takes the value (`.conn_limit(100)`) or `None` to clear it.
                #[must_use]
                pub fn $name(mut self, value: impl Into<Option<$ty>>) -> Self {
                    self.$name = value.into();
                    self
                }
            )*
        }
    };
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl ServiceConfig {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = value;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`read_timeout`](Self::read_timeout).
    read_timeout: Option<Duration>;
    /// Sets [`write_timeout`](Self::write_timeout).
    write_timeout: Option<Duration>;
    /// Sets [`max_idle`](Self::max_idle).
    max_idle: Option<Duration>;
    /// Sets [`conn_limit`](Self::conn_limit).
    conn_limit: Option<usize>;
    /// Sets [`ip_limit`](Self::ip_limit).
    ip_limit: Option<usize>;
    /// Sets [`per_ip_limit`](Self::per_ip_limit).
    per_ip_limit: Option<usize>;
    /// Sets [`rate_limit`](Self::rate_limit).
    rate_limit: Option<RateLimit>;
    /// Sets [`keepalive`](Self::keepalive).
    keepalive: Option<Duration>;
    /// Sets [`auto_ban`](Self::auto_ban).
    auto_ban: Option<AutoBan>;
}

setters! {
    /// Sets [`wait_timeout`](Self::wait_timeout).
    wait_timeout: Duration;
    /// Sets [`idle_interval`](Self::idle_interval); a zero interval is raised to 1 ms.
    idle_interval: Duration;
    /// Sets [`ipv6_prefix`](Self::ipv6_prefix).
    ipv6_prefix: u8;
    /// Sets [`nodelay`](Self::nodelay).
    nodelay: bool;
    /// Sets [`print_bytes`](Self::print_bytes).
    print_bytes: bool;
    /// Sets [`pause_at_limit`](Self::pause_at_limit).
    pause_at_limit: bool;
}

impl ServiceConfig {
    /// Sets [`blacklist`](Self::blacklist).
    #[must_use]
    pub fn blacklist(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.blacklist = nets.into_iter().collect();
        self
    }

    /// Sets [`allowlist`](Self::allowlist).
    #[must_use]
    pub fn allowlist(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.allowlist = nets.into_iter().collect();
        self
    }

    /// The sweeper's tick, never zero.
    pub(crate) fn tick(&self) -> Duration {
        self.idle_interval.max(Duration::from_millis(1))
    }
}
