//! `ProxyHeader`: what a PROXY-protocol header said, and `ProxyInfo`: a
//! proxied connection's header and socket peer. A leaf (std only), so that
//! the connection record can keep them; public as
//! [`layers::proxy`](crate::layers::proxy)'s, which parses and writes them.

use std::fmt;
use std::net::SocketAddr;

/// The command of a PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// A relayed connection: the header names the client (v1 `TCP4`/`TCP6`,
    /// v2 `PROXY`).
    Proxy,
    /// A connection the proxy made itself (a health check, say): served as
    /// from the socket's peer (v2 `LOCAL`, and v1 `UNKNOWN`).
    Local,
}

/// A PROXY-protocol header (v1 text or v2 binary), owned: its version,
/// command, the addresses it names and, for v2, its TLVs.
///
/// # Examples
/// ```
/// # #[cfg(feature = "proxy-protocol")] {
/// use monconn::layers::proxy::{Command, ProxyHeader};
///
/// let bytes = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n";
/// let (header, len) = ProxyHeader::parse(bytes).unwrap();
/// assert_eq!(len, 41); // the payload starts at bytes[41]
/// assert_eq!((header.version(), header.command()), (1, Command::Proxy));
/// assert_eq!(header.source(), Some("192.0.2.7:51000".parse().unwrap()));
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    version: u8,
    command: Command,
    source: Option<SocketAddr>,
    destination: Option<SocketAddr>,
    /// The v2 TLV bytes, validated (type, 2-byte length, value; repeated).
    tlvs: Box<[u8]>,
}

// === impl ProxyHeader ===

impl ProxyHeader {
    /// A header that relays a connection from `source` to `destination`
    /// (to send one: [`ProxyHeader::to_v1`], [`ProxyHeader::to_v2`]).
    pub fn proxied(source: SocketAddr, destination: SocketAddr) -> Self {
        ProxyHeader {
            version: 2,
            command: Command::Proxy,
            source: Some(source),
            destination: Some(destination),
            tlvs: Box::default(),
        }
    }

    #[cfg_attr(not(feature = "proxy-protocol"), allow(dead_code))]
    pub(crate) fn new(
        version: u8,
        command: Command,
        addresses: Option<(SocketAddr, SocketAddr)>,
        tlvs: Box<[u8]>,
    ) -> Self {
        ProxyHeader {
            version,
            command,
            source: addresses.map(|a| a.0),
            destination: addresses.map(|a| a.1),
            tlvs,
        }
    }

    /// 1 for the text format, 2 for the binary one.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// `Proxy` for a relayed connection, `Local` for the proxy's own.
    pub fn command(&self) -> Command {
        self.command
    }

    /// The client the header names: `None` for a `LOCAL` or `UNKNOWN`
    /// header, or an address family without IP addresses (v2 `UNSPEC`,
    /// `UNIX`).
    pub fn source(&self) -> Option<SocketAddr> {
        match self.command {
            Command::Proxy => self.source,
            Command::Local => None,
        }
    }

    /// The address the client connected to (on the proxy), when named.
    pub fn destination(&self) -> Option<SocketAddr> {
        match self.command {
            Command::Proxy => self.destination,
            Command::Local => None,
        }
    }

    /// The v2 TLVs (type-length-value extensions), in order, as `(type,
    /// value)`; none for v1.
    ///
    /// ```
    /// # #[cfg(feature = "proxy-protocol")] {
    /// use monconn::layers::proxy::ProxyHeader;
    ///
    /// let mut bytes = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x1d".to_vec();
    /// bytes.extend([192, 0, 2, 7, 10, 0, 0, 1, 0xc7, 0x38, 0x01, 0xbb]);
    /// // AWS's VPC endpoint id: type 0xEA, subtype 0x01, then the id.
    /// bytes.extend(b"\xea\x00\x0e\x01vpce-0123abcd");
    /// let (header, _) = ProxyHeader::parse(&bytes).unwrap();
    /// assert_eq!(header.tlvs().count(), 1);
    /// assert_eq!(header.aws_vpce_id(), Some("vpce-0123abcd"));
    /// # }
    /// ```
    pub fn tlvs(&self) -> impl Iterator<Item = (u8, &[u8])> + '_ {
        let mut rest: &[u8] = &self.tlvs;
        std::iter::from_fn(move || {
            // Validated at parse time; stops at anything short all the same.
            let (&kind, tail) = rest.split_first()?;
            let len = usize::from(u16::from_be_bytes([*tail.first()?, *tail.get(1)?]));
            let value = tail.get(2..2 + len)?;
            rest = &tail[2 + len..];
            Some((kind, value))
        })
    }

    /// The value of the first TLV of type `kind`.
    pub fn tlv(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs().find(|(k, _)| *k == kind).map(|(_, v)| v)
    }

    /// The AWS VPC endpoint id an AWS Network Load Balancer sends (TLV
    /// 0xEA, subtype 0x01), when present and UTF-8.
    pub fn aws_vpce_id(&self) -> Option<&str> {
        match self.tlv(0xEA)? {
            [0x01, id @ ..] => std::str::from_utf8(id).ok(),
            _ => None,
        }
    }

    /// The header's TLV bytes as they arrived (empty for v1).
    pub fn tlv_bytes(&self) -> &[u8] {
        &self.tlvs
    }

    /// This header with the TLVs of `received` (the header a connection
    /// came in with), for a proxy that passes them on to its backend: all
    /// of them, in order, but a CRC32C (type 0x03), which checks the header
    /// it came in and not this one, and any that would take this header
    /// past the 64 KiB of a v2 header. The v1 format has no TLVs.
    ///
    /// ```
    /// # #[cfg(feature = "proxy-protocol")] {
    /// use monconn::layers::proxy::ProxyHeader;
    ///
    /// let mut bytes = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x24".to_vec();
    /// bytes.extend([192, 0, 2, 7, 10, 0, 0, 1, 0xc7, 0x38, 0x01, 0xbb]);
    /// bytes.extend(b"\xea\x00\x0e\x01vpce-0123abcd\x03\x00\x04\x01\x02\x03\x04");
    /// let (received, _) = ProxyHeader::parse(&bytes).unwrap();
    /// let client = received.source().unwrap();
    /// let sent = ProxyHeader::proxied(client, "10.0.0.2:8080".parse().unwrap())
    ///     .with_tlvs_of(&received);
    /// assert_eq!(sent.aws_vpce_id(), Some("vpce-0123abcd"));
    /// assert_eq!(sent.tlv(0x03), None);
    /// let (back, _) = ProxyHeader::parse(&sent.to_v2()).unwrap();
    /// assert_eq!(back, sent);
    /// # }
    /// ```
    pub fn with_tlvs_of(mut self, received: &ProxyHeader) -> Self {
        /// A v2 header's length field counts at most this much, of which
        /// the largest address block (two IPv6 addresses and ports) takes 36.
        const ROOM: usize = u16::MAX as usize - 36;
        const CRC32C: u8 = 0x03;
        let mut tlvs = Vec::with_capacity(received.tlvs.len());
        for (kind, value) in received.tlvs().filter(|(kind, _)| *kind != CRC32C) {
            if tlvs.len() + 3 + value.len() > ROOM {
                break;
            }
            tlvs.push(kind);
            // At most 65,535 bytes: it came in a TLV.
            tlvs.extend_from_slice(&(value.len() as u16).to_be_bytes());
            tlvs.extend_from_slice(value);
        }
        self.tlvs = tlvs.into_boxed_slice();
        self
    }
}

impl fmt::Debug for ProxyHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyHeader")
            .field("version", &self.version)
            .field("command", &self.command)
            .field("source", &self.source)
            .field("destination", &self.destination)
            .field("tlvs", &self.tlvs().collect::<Vec<_>>())
            .finish()
    }
}

/// A connection accepted through a PROXY header: the header, and the
/// socket's own peer (the load balancer). Kept with the connection's record
/// ([`ConnRecord::proxy`](crate::ConnRecord::proxy)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyInfo {
    /// The socket's own peer: the proxy that sent the header.
    pub socket_peer: SocketAddr,
    /// The header it sent.
    pub header: ProxyHeader,
}
