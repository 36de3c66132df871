//! Client addresses as rules and counts see them: IPv4-mapped IPv6
//! addresses as IPv4 ([`canonical_ip`]), IPv6 clients by prefix
//! ([`client_key`]), and [`IpSet`], the sets rules are compiled into.
//! A leaf: it imports nothing of the crate.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

mod set;

pub use set::IpSet;

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
/// use monconn::client_key;
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

/// `::ffff:0.0.0.0`, the start of the IPv4-mapped IPv6 addresses.
pub(crate) const MAPPED: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0);

/// `net` with its host bits cleared, and as an IPv4 network when it lies
/// within `::ffff:0:0/96`.
pub(crate) fn canonical_net(net: IpNet) -> IpNet {
    match net.trunc() {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.network().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(Ipv4Net::new(v4, n.prefix_len() - 96).expect("prefix <= 32")),
            None => IpNet::V6(n),
        },
        other => other,
    }
}
