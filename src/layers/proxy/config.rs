//! `ProxyConfig`: who may send a PROXY header, and how long it may take.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::parse::V2_MAX;

/// The settings of a [`ProxyProtocolLayer`](super::ProxyProtocolLayer).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use monconn::layers::proxy::ProxyConfig;
///
/// let config = ProxyConfig::new()
///     .trust(["10.0.0.0/8".parse().unwrap(), "192.168.1.10/32".parse().unwrap()])
///     .header_timeout(Duration::from_secs(3));
/// assert!(config.is_trusted("10.1.2.3".parse().unwrap()));
/// assert!(config.is_trusted("::ffff:10.1.2.3".parse().unwrap()));
/// assert!(!config.is_trusted("192.0.2.7".parse().unwrap()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    pub(crate) trusted: Vec<IpNet>,
    pub(crate) serve_untrusted: bool,
    pub(crate) timeout: Duration,
    pub(crate) max_len: usize,
    pub(crate) version: Option<u8>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            trusted: Vec::new(),
            serve_untrusted: false,
            timeout: Duration::from_secs(5),
            max_len: 4096,
            version: None,
        }
    }
}

impl ProxyConfig {
    /// Trusts no one yet: add the load balancers with [`ProxyConfig::trust`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds networks whose connections must start with a PROXY header (the
    /// load balancers). IPv4-mapped IPv6 peers match IPv4 networks.
    pub fn trust(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted.extend(nets.into_iter().map(|n| n.trunc()));
        self
    }

    /// Serves connections from untrusted sources as they are: their socket
    /// peer is their client and their bytes, a PROXY header included, are
    /// theirs. By default they are refused, counted as
    /// [`RejectReason::ProxyUntrusted`](crate::RejectReason::ProxyUntrusted).
    pub fn serve_untrusted(mut self) -> Self {
        self.serve_untrusted = true;
        self
    }

    /// How long a trusted source has to send its whole header, from the
    /// accept; then the connection is refused, counted as
    /// [`RejectReason::ProxyTimeout`](crate::RejectReason::ProxyTimeout). Default 5 s.
    ///
    /// Kept coarsely, by a clock that ticks every quarter of the timeout
    /// (10 ms to 1 s) and only while a connection waits: a connection still
    /// waiting is refused between the timeout and a tick after it.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest v2 header accepted, TLVs included (v1 headers are at most
    /// 107 bytes). Longer ones are refused, counted as
    /// [`RejectReason::ProxyOversized`](crate::RejectReason::ProxyOversized). Default
    /// 4096 bytes; at least 16, at most 65,551.
    pub fn max_header_len(mut self, len: usize) -> Self {
        self.max_len = len.clamp(16, V2_MAX);
        self
    }

    /// Accepts only headers of `version` (1, text; 2, binary); one of the
    /// other version is refused as
    /// [`RejectReason::ProxyMalformed`](crate::RejectReason::ProxyMalformed). Default:
    /// either.
    pub fn only_version(mut self, version: u8) -> Self {
        self.version = Some(version);
        self
    }

    /// Whether connections from `ip` must send a header.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}
