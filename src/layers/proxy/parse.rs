//! Framing and parsing a PROXY header (with the `ppp` crate), and writing one.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ppp::{v1, v2};

use crate::proxied::{Command, ProxyHeader};

/// The v1 header starts with this.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (the protocol's limit).
pub(crate) const V1_MAX: usize = 107;
/// The fixed part of a v2 header: signature, version and command, family
/// and protocol, length.
const V2_FIXED: usize = 16;
/// The longest v2 header (the 16-bit length's limit).
pub(crate) const V2_MAX: usize = V2_FIXED + u16::MAX as usize;

/// Why a PROXY header was not accepted.
#[derive(Debug)]
#[non_exhaustive]
pub enum HeaderError {
    /// The first bytes are not a PROXY header's (`PROXY ` or the v2 signature).
    NotProxy {
        /// The first bytes received, up to 16.
        start: Vec<u8>,
    },
    /// The header is framed but wrong: what the parser found, in its words.
    Malformed {
        /// 1 or 2.
        version: u8,
        /// What is wrong.
        detail: String,
    },
    /// The header is longer than allowed (`len` bytes, more than `max`).
    Oversized {
        /// Its length, or how much was read without finding its end.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The buffer ends within the header (from [`ProxyHeader::parse`]), or
    /// the client closed the connection there.
    Truncated {
        /// Bytes of the header received.
        got: usize,
    },
    /// No complete header within the timeout.
    Timeout(Duration),
    /// Reading the header failed.
    Io(io::Error),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::NotProxy { start } => {
                write!(
                    f,
                    "not a PROXY header: starts with {:?}",
                    start.escape_ascii().to_string()
                )
            }
            HeaderError::Malformed { version, detail } => {
                write!(f, "malformed PROXY v{version} header: {detail}")
            }
            HeaderError::Oversized { len, max } => {
                write!(f, "PROXY header too long: {len} bytes, at most {max}")
            }
            HeaderError::Truncated { got: 0 } => f.write_str("closed before its PROXY header"),
            HeaderError::Truncated { got } => {
                write!(f, "PROXY header truncated after {got} bytes")
            }
            HeaderError::Timeout(t) => write!(f, "no PROXY header within {t:?}"),
            HeaderError::Io(e) => write!(f, "reading the PROXY header failed: {e}"),
        }
    }
}

impl std::error::Error for HeaderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HeaderError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Where a buffer's header ends, as far as its bytes tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// The header is the first `n` bytes.
    Done(usize),
    /// More bytes are needed; the header is at most this long.
    More(usize),
}

/// Frames the header at the start of `buf`, longer than `max` refused.
pub(crate) fn frame(buf: &[u8], max: usize) -> Result<Frame, HeaderError> {
    let Some(&first) = buf.first() else {
        return Ok(Frame::More(V1_MAX.max(V2_FIXED)));
    };
    let not_proxy = || HeaderError::NotProxy {
        start: buf[..buf.len().min(16)].to_vec(),
    };
    match first {
        b'P' => {
            let n = buf.len().min(V1_PREFIX.len());
            if buf[..n] != V1_PREFIX[..n] {
                return Err(not_proxy());
            }
            let max = max.min(V1_MAX);
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) if i < max => Ok(Frame::Done(i + 1)),
                Some(i) => Err(HeaderError::Oversized { len: i + 1, max }),
                None if buf.len() >= max => Err(HeaderError::Oversized {
                    len: buf.len(),
                    max,
                }),
                None => Ok(Frame::More(max)),
            }
        }
        b'\r' => {
            let n = buf.len().min(v2::PROTOCOL_PREFIX.len());
            if buf[..n] != v2::PROTOCOL_PREFIX[..n] {
                return Err(not_proxy());
            }
            if buf.len() < V2_FIXED {
                return Ok(Frame::More(V2_FIXED));
            }
            let len = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
            if len > max {
                Err(HeaderError::Oversized { len, max })
            } else if buf.len() >= len {
                Ok(Frame::Done(len))
            } else {
                Ok(Frame::More(len))
            }
        }
        _ => Err(not_proxy()),
    }
}

// === impl ProxyHeader ===

impl ProxyHeader {
    /// Parses the PROXY header (v1 or v2) at the start of `buf`: the header
    /// and its length, the offset of the first payload byte.
    ///
    /// # Errors
    /// [`HeaderError::Truncated`] when `buf` ends within the header; else
    /// what is wrong with it. Never panics, whatever the bytes.
    pub fn parse(buf: &[u8]) -> Result<(ProxyHeader, usize), HeaderError> {
        match frame(buf, V2_MAX)? {
            Frame::Done(len) => Ok((parse_frame(&buf[..len])?, len)),
            Frame::More(_) => Err(HeaderError::Truncated { got: buf.len() }),
        }
    }

    /// The header in the v1 text format (`PROXY TCP4 ...\r\n`); `PROXY
    /// UNKNOWN\r\n` without addresses. TLVs have no place in v1.
    ///
    /// ```
    /// use monconn::layers::proxy::ProxyHeader;
    ///
    /// let header = ProxyHeader::proxied("192.0.2.7:51000".parse().unwrap(), "10.0.0.1:443".parse().unwrap());
    /// assert_eq!(header.to_v1(), b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\n");
    /// ```
    pub fn to_v1(&self) -> Vec<u8> {
        let addresses = match same_family(self.source(), self.destination()) {
            Some(pair) => v1::Addresses::from(pair),
            None => v1::Addresses::Unknown,
        };
        addresses.to_string().into_bytes()
    }

    /// The header in the v2 binary format, with its TLVs; `LOCAL` without
    /// addresses.
    pub fn to_v2(&self) -> Vec<u8> {
        let builder = match same_family(self.source(), self.destination()) {
            Some((s, d)) => v2::Builder::with_addresses(
                v2::Version::Two | v2::Command::Proxy,
                v2::Protocol::Stream,
                (s, d),
            ),
            None => v2::Builder::new(
                v2::Version::Two | v2::Command::Local,
                v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
            ),
        };
        builder
            .write_payload(v2::TypeLengthValues::from(self.tlv_bytes()))
            .and_then(|b| b.build())
            .expect("a header of at most 64 KiB is written to a Vec")
    }
}

/// Both addresses in one family: IPv4-mapped IPv6 addresses as IPv4 when
/// both can be, else IPv4 ones mapped to IPv6.
fn same_family(
    source: Option<SocketAddr>,
    destination: Option<SocketAddr>,
) -> Option<(SocketAddr, SocketAddr)> {
    let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (s, d) = (canon(source?), canon(destination?));
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    Some(if s.is_ipv4() == d.is_ipv4() {
        (s, d)
    } else {
        (v6(s), v6(d))
    })
}

/// Parses a framed header (exactly its bytes).
pub(crate) fn parse_frame(bytes: &[u8]) -> Result<ProxyHeader, HeaderError> {
    if bytes.first() == Some(&b'P') {
        let malformed = |detail: String| HeaderError::Malformed { version: 1, detail };
        let header = v1::Header::try_from(bytes).map_err(|e| malformed(e.to_string()))?;
        let addresses = match header.addresses {
            v1::Addresses::Tcp4(a) => Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
            v1::Addresses::Tcp6(a) => Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
            v1::Addresses::Unknown => None,
        };
        let command = match addresses {
            Some(_) => Command::Proxy,
            None => Command::Local,
        };
        return Ok(ProxyHeader::new(1, command, addresses, Box::default()));
    }
    let malformed = |detail: String| HeaderError::Malformed { version: 2, detail };
    let header = v2::Header::try_from(bytes).map_err(|e| malformed(e.to_string()))?;
    if let Some(Err(e)) = header.tlvs().find(Result::is_err) {
        return Err(malformed(e.to_string()));
    }
    let addresses = match header.addresses {
        v2::Addresses::IPv4(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        v2::Addresses::IPv6(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    };
    let command = match header.command {
        v2::Command::Proxy => Command::Proxy,
        v2::Command::Local => Command::Local,
    };
    Ok(ProxyHeader::new(
        2,
        command,
        addresses,
        header.tlv_bytes().into(),
    ))
}
