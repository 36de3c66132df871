//! Addresses: listen addresses, backends, strict IP and network parsing.
//!
//! IP addresses are parsed strictly: `010.0.0.1` is refused (some tools read
//! a leading zero as octal, others as decimal, so it cannot mean one thing).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;

/// Where a service listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// Every interface, IPv4 and IPv6 (`:22`, or an empty `listen_ip`).
    Any(u16),
    /// One address (`0.0.0.0:80` is every IPv4 interface).
    Addr(SocketAddr),
}

/// Where a service forwards to: an address, or a host name resolved at
/// every connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Addr(SocketAddr),
    Host(String, u16),
}

// === impl ListenAddr ===

impl ListenAddr {
    pub fn port(&self) -> u16 {
        match self {
            ListenAddr::Any(port) => *port,
            ListenAddr::Addr(addr) => addr.port(),
        }
    }

    /// Whether two services cannot both listen on these addresses.
    pub fn overlaps(&self, other: &ListenAddr) -> bool {
        if self.port() != other.port() {
            return false;
        }
        match (self, other) {
            (ListenAddr::Addr(a), ListenAddr::Addr(b)) => {
                let (a, b) = (a.ip(), b.ip());
                a == b
                    || a == Ipv6Addr::UNSPECIFIED
                    || b == Ipv6Addr::UNSPECIFIED
                    || (a.is_unspecified() && a.is_ipv4() == b.is_ipv4())
                    || (b.is_unspecified() && a.is_ipv4() == b.is_ipv4())
            }
            _ => true,
        }
    }

    /// Parses `:22`, `0.0.0.0:80`, `[::1]:8080`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(port) = text.strip_prefix(':').filter(|p| !p.contains(':')) {
            return Ok(ListenAddr::Any(parse_port(port)?));
        }
        let (host, port) = split_host_port(text)?;
        let ip = parse_ip(host)?;
        Ok(ListenAddr::Addr(SocketAddr::new(ip, parse_port(port)?)))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Any(port) => write!(f, ":{port}"),
            ListenAddr::Addr(addr) => addr.fmt(f),
        }
    }
}

// === impl Backend ===

impl Backend {
    /// Parses `127.0.0.1:2222`, `[::1]:80`, `db.internal:5432`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (host, port) = split_host_port(text)?;
        Self::from_parts(host, parse_port(port)?)
    }

    /// A backend from a host (an IP address or a host name) and a port.
    pub fn from_parts(host: &str, port: u16) -> Result<Self, String> {
        if port == 0 {
            return Err("backend port 0 is not a port one can connect to".into());
        }
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if looks_like_ip(host) {
            return Ok(Backend::Addr(SocketAddr::new(parse_ip(host)?, port)));
        }
        check_host_name(host)?;
        Ok(Backend::Host(host.to_owned(), port))
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Addr(addr) => addr.fmt(f),
            Backend::Host(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

// === parsing ===

/// Splits `host:port` and `[v6]:port`.
fn split_host_port(text: &str) -> Result<(&str, &str), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("`{text}`: expected [IPv6]:PORT"))?;
        return Ok((host, port));
    }
    match text.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Err(format!(
            "`{text}`: an IPv6 address needs brackets, as in [::1]:8080"
        )),
        Some((host, port)) if !host.is_empty() => Ok((host, port)),
        _ => Err(format!("`{text}`: expected HOST:PORT")),
    }
}

/// A port number, 1 to 65535.
pub fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) => Err("port 0 is not allowed: give the port to listen on or connect to".into()),
        Ok(port) if !text.starts_with('+') => Ok(port),
        _ => Err(format!(
            "invalid port `{text}`: expected a number from 1 to 65535"
        )),
    }
}

fn looks_like_ip(host: &str) -> bool {
    host.contains(':') || host.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Parses an IP address strictly, with a message that says what is wrong.
pub fn parse_ip(text: &str) -> Result<IpAddr, String> {
    if text.contains(':') {
        return Ipv6Addr::from_str(text)
            .map(IpAddr::V6)
            .map_err(|_| format!("invalid IPv6 address `{text}`"));
    }
    Ipv4Addr::from_str(text).map(IpAddr::V4).map_err(|_| {
        let leading_zero = text
            .split('.')
            .any(|part| part.len() > 1 && part.starts_with('0'));
        if leading_zero {
            format!("invalid IPv4 address `{text}`: leading zeros are not allowed (write 10.0.0.1, not 010.0.0.1)")
        } else {
            format!("invalid IPv4 address `{text}`")
        }
    })
}

/// Parses an address (`1.2.3.4`, `::1`) or a network (`10.0.0.0/8`,
/// `2001:db8::/32`). Host bits set in a network are cleared (`10.1.2.3/8`
/// is `10.0.0.0/8`).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    match text.split_once('/') {
        None => parse_ip(text).map(IpNet::from),
        Some((ip, len)) => {
            let ip = parse_ip(ip)?;
            let len: u8 = len
                .parse()
                .map_err(|_| format!("invalid prefix length in `{text}`"))?;
            IpNet::new(ip, len)
                .map(|net| net.trunc())
                .map_err(|_| format!("prefix length {len} is too long for `{text}`"))
        }
    }
}

fn check_host_name(host: &str) -> Result<(), String> {
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if valid {
        Ok(())
    } else {
        Err(format!("invalid host name `{host}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(ListenAddr::parse(":22"), Ok(ListenAddr::Any(22)));
        assert_eq!(
            ListenAddr::parse("0.0.0.0:80"),
            Ok(ListenAddr::Addr("0.0.0.0:80".parse().unwrap()))
        );
        assert_eq!(
            ListenAddr::parse("[::1]:8080"),
            Ok(ListenAddr::Addr("[::1]:8080".parse().unwrap()))
        );
        assert!(ListenAddr::parse("localhost:80").is_err());
        assert!(ListenAddr::parse("::1:80")
            .unwrap_err()
            .contains("brackets"));
        assert!(ListenAddr::parse(":0").is_err());
        assert!(ListenAddr::parse(":70000").is_err());
    }

    #[test]
    fn backend_forms() {
        assert_eq!(
            Backend::parse("127.0.0.1:2222"),
            Ok(Backend::Addr("127.0.0.1:2222".parse().unwrap()))
        );
        assert_eq!(
            Backend::parse("db.internal:5432"),
            Ok(Backend::Host("db.internal".into(), 5432))
        );
        assert!(Backend::parse("010.0.0.1:80")
            .unwrap_err()
            .contains("leading zeros"));
        assert!(Backend::parse("bad host:80").is_err());
    }

    #[test]
    fn nets() {
        assert_eq!(parse_net("1.1.1.1").unwrap().to_string(), "1.1.1.1/32");
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("010.0.0.1").is_err());
    }

    #[test]
    fn overlaps() {
        let p = |s| ListenAddr::parse(s).unwrap();
        assert!(p(":80").overlaps(&p("127.0.0.1:80")));
        assert!(p("0.0.0.0:80").overlaps(&p("127.0.0.1:80")));
        assert!(!p("0.0.0.0:80").overlaps(&p("[::1]:80")));
        assert!(!p("127.0.0.1:80").overlaps(&p("127.0.0.2:80")));
        assert!(!p("127.0.0.1:80").overlaps(&p("127.0.0.1:81")));
    }
}
