//! The config file (the Go tool's `config.yaml`, plus new keys) and the
//! services it describes.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use monconn::layers::ProxyConfig;
use monconn::{RateLimit, ServiceConfig};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::addr::{self, Backend, ListenAddr};

/// One service to run: where it listens, where it forwards, its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceSpec {
    /// The service's id: its name in the file, its LISTEN text for `-p`.
    pub sid: String,
    pub listen: ListenAddr,
    pub backend: Backend,
    /// `None`: wait as long as the system does.
    pub connect_timeout: Option<Duration>,
    /// Pass one side's EOF on as a write shutdown and let the other
    /// direction go on (`true`, the default), or close both sides as soon
    /// as either ends (`false`, nginx stream's default).
    pub half_close: bool,
    pub config: ServiceConfig,
    /// `proxy_protocol` (with `proxy_trusted`, `proxy_optional`,
    /// `proxy_timeout`): read a PROXY header from the load balancers first.
    pub proxy_in: Option<ProxyConfig>,
    /// `send_proxy`: the PROXY version (1 or 2) of the header written to the
    /// backend first, naming the client.
    pub send_proxy: Option<u8>,
    /// Whether it came from the config file (a reload may change it).
    pub from_file: bool,
}

/// The default backend connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The forwarder's default settings: the library's, with `TCP_NODELAY` on
/// and the Go tool's timeouts (read and write 600 s, max idle 900 s; the
/// library's are off).
pub fn default_config() -> ServiceConfig {
    ServiceConfig::default()
        .nodelay(true)
        .read_timeout(Duration::from_secs(600))
        .write_timeout(Duration::from_secs(600))
        .max_idle(Duration::from_secs(900))
}

/// One service in the file. Keys of the Go tool first, then new ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileService {
    #[serde(default)]
    listen_ip: Option<Ip>,
    listen_port: Port,
    #[serde(default)]
    backend_ip: Option<Host>,
    backend_port: Port,
    read_timeout: Option<Secs>,
    write_timeout: Option<Secs>,
    wait_timeout: Option<Secs>,
    max_idle: Option<Secs>,
    conn_limit: Option<usize>,
    ip_limit: Option<usize>,
    keepalive: Option<KeepAlive>,
    print_bytes: Option<bool>,
    #[serde(default)]
    ip_blacklist: Vec<Net>,
    // New keys.
    idle_interval: Option<Secs>,
    per_ip_limit: Option<usize>,
    rate_limit: Option<f64>,
    rate_burst: Option<u32>,
    #[serde(default)]
    ip_allowlist: Vec<Net>,
    connect_timeout: Option<Secs>,
    nodelay: Option<bool>,
    pause_at_limit: Option<bool>,
    half_close: Option<bool>,
    ipv6_prefix: Option<Prefix>,
    proxy_protocol: Option<ProxyVersion>,
    #[serde(default)]
    proxy_trusted: Vec<Net>,
    proxy_optional: Option<bool>,
    proxy_timeout: Option<Secs>,
    send_proxy: Option<ProxyVersion>,
    auto_ban_refused: Option<u32>,
    auto_ban_connections: Option<u32>,
    auto_ban_within: Option<Secs>,
    auto_ban_for: Option<Secs>,
}

/// Reads and checks the config file: its services, sorted by name.
/// Blocking, and up to some hundreds of milliseconds for a big file: call
/// it off the runtime threads.
///
/// # Errors
/// A message naming the file, and for a bad value its line, column and key;
/// a file over the [size](crate::precheck::MAX_FILE_BYTES) or
/// [nesting](crate::precheck::MAX_NESTING) limit; a file with no service.
pub fn load(path: &Path) -> Result<Vec<ServiceSpec>, String> {
    let text = crate::precheck::read(path)?;
    parse(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

/// Parses config text (see [`load`]).
pub fn parse(text: &str) -> Result<Vec<ServiceSpec>, String> {
    parse_file(text).map(|file| file.services)
}

/// The config file: its services, sorted by name, and its `cluster:`
/// section (read at start only).
#[derive(Debug)]
pub struct FileConfig {
    pub services: Vec<ServiceSpec>,
    pub cluster: Option<crate::cluster::ClusterSpec>,
}

/// Reads and checks the config file as a whole (see [`load`]).
///
/// # Errors
/// As [`load`].
pub fn load_file(path: &Path) -> Result<FileConfig, String> {
    let text = crate::precheck::read(path)?;
    parse_file(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

/// Parses config text as a whole (see [`load`]).
pub fn parse_file(text: &str) -> Result<FileConfig, String> {
    crate::precheck::nesting(text)?;
    let file: Option<crate::cluster::File> = if text.trim().is_empty() {
        None
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| yaml_error(&e))?
    };
    // As at startup, so on reload: a file with no service (empty, comments
    // only, or cut short) would stop every service of the file.
    let file = file.filter(|f| !f.services.is_empty()).ok_or(
        "the whole file: it defines no service (is it empty, only comments, or cut short?)",
    )?;
    Ok(FileConfig {
        services: file
            .services
            .into_iter()
            .map(|(name, s)| s.into_spec(name))
            .collect::<Result<_, _>>()?,
        cluster: file.cluster,
    })
}

/// The longest message about a bad value: serde quotes the value whole,
/// which may be megabytes.
const MAX_ERROR: usize = 300;

fn yaml_error(e: &serde_yaml_ng::Error) -> String {
    // serde_yaml_ng's message ends with "at line L column C"; put it first.
    let msg = e.to_string();
    match e.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            let mut msg = msg.strip_suffix(&suffix).unwrap_or(&msg);
            if msg.len() > MAX_ERROR {
                let cut = (0..=MAX_ERROR).rev().find(|&i| msg.is_char_boundary(i));
                msg = &msg[..cut.unwrap_or(0)];
                return format!("line {}, column {}: {msg}...", loc.line(), loc.column());
            }
            format!("line {}, column {}: {msg}", loc.line(), loc.column())
        }
        // No place in the text (e.g. "more than one document"): the error
        // is about the file as a whole; say so, so every error names where.
        None => format!("the whole file: {msg}"),
    }
}

impl FileService {
    fn into_spec(self, sid: String) -> Result<ServiceSpec, String> {
        let bad = |e: String| format!("service `{sid}`: {e}");
        let proxy_in = self.proxy_in().map_err(bad)?;
        let auto_ban = crate::auto_ban::rule(crate::auto_ban::Keys {
            refused: self.auto_ban_refused,
            connections: self.auto_ban_connections,
            within: self.auto_ban_within.map(|s| s.0),
            ban_for: self.auto_ban_for.map(|s| s.0),
        })
        .map_err(bad)?;
        let listen = match self.listen_ip.and_then(|ip| ip.0) {
            None => ListenAddr::Any(self.listen_port.0),
            Some(ip) => ListenAddr::Addr((ip, self.listen_port.0).into()),
        };
        let host = self
            .backend_ip
            .map_or_else(|| "127.0.0.1".to_owned(), |h| h.0);
        let backend = Backend::from_parts(&host, self.backend_port.0).map_err(bad)?;
        let d = default_config();
        let limit = |v: Option<usize>, default| v.map_or(default, |n| (n != 0).then_some(n));
        let time = |v: Option<Secs>, default| v.map_or(default, |s| s.nonzero());
        let rate_limit = match (self.rate_limit, self.rate_burst) {
            (None | Some(0.0), _) => None,
            (Some(per_sec), burst) if per_sec.is_finite() && per_sec > 0.0 => Some(RateLimit {
                per_sec,
                burst: burst.unwrap_or(per_sec.ceil().max(1.0) as u32),
            }),
            (Some(v), _) => return Err(bad(format!("rate_limit {v} is not a positive number"))),
        };
        let config = d
            .clone()
            .read_timeout(time(self.read_timeout, d.read_timeout))
            .write_timeout(time(self.write_timeout, d.write_timeout))
            .wait_timeout(self.wait_timeout.map_or(d.wait_timeout, |s| s.0))
            .max_idle(time(self.max_idle, d.max_idle))
            .idle_interval(self.idle_interval.map_or(d.idle_interval, |s| s.0))
            .conn_limit(limit(self.conn_limit, d.conn_limit))
            .ip_limit(limit(self.ip_limit, d.ip_limit))
            .per_ip_limit(limit(self.per_ip_limit, d.per_ip_limit))
            .rate_limit(rate_limit)
            .ipv6_prefix(self.ipv6_prefix.map_or(d.ipv6_prefix, |p| p.0))
            .keepalive(self.keepalive.map_or(d.keepalive, |k| k.0))
            .nodelay(self.nodelay.unwrap_or(d.nodelay))
            .print_bytes(self.print_bytes.unwrap_or(d.print_bytes))
            .pause_at_limit(self.pause_at_limit.unwrap_or(d.pause_at_limit))
            .blacklist(self.ip_blacklist.into_iter().map(|n| n.0))
            .allowlist(self.ip_allowlist.into_iter().map(|n| n.0))
            .auto_ban(auto_ban);
        Ok(ServiceSpec {
            send_proxy: self.send_proxy.and_then(|v| v.0),
            proxy_in,
            sid,
            listen,
            backend,
            connect_timeout: self
                .connect_timeout
                .map_or(Some(CONNECT_TIMEOUT), |s| s.nonzero()),
            half_close: self.half_close.unwrap_or(true),
            config,
            from_file: true,
        })
    }
}

impl FileService {
    /// `proxy_protocol` and the keys that go with it.
    fn proxy_in(&self) -> Result<Option<ProxyConfig>, String> {
        let Some(version) = self.proxy_protocol.as_ref().and_then(|v| v.0) else {
            let stray = [
                ("proxy_trusted", !self.proxy_trusted.is_empty()),
                ("proxy_optional", self.proxy_optional.is_some()),
                ("proxy_timeout", self.proxy_timeout.is_some()),
            ];
            return match stray.iter().find(|(_, set)| *set) {
                Some((key, _)) => Err(format!("{key} is set but proxy_protocol is off")),
                None => Ok(None),
            };
        };
        if self.proxy_trusted.is_empty() {
            return Err(format!(
                "proxy_protocol v{version} needs proxy_trusted: the addresses (CIDRs) of the load balancers that send the header"
            ));
        }
        let mut config = ProxyConfig::new()
            .only_version(version)
            .trust(self.proxy_trusted.iter().map(|n| n.0));
        if self.proxy_optional == Some(true) {
            config = config.serve_untrusted();
        }
        if let Some(timeout) = self.proxy_timeout.and_then(Secs::nonzero) {
            config = config.header_timeout(timeout);
        }
        Ok(Some(config))
    }
}

/// Refuses two services on one listen address (or one service name twice).
pub fn check_conflicts(specs: &[ServiceSpec]) -> Result<(), String> {
    for (i, a) in specs.iter().enumerate() {
        for b in &specs[i + 1..] {
            if a.sid == b.sid {
                return Err(format!("two services are named `{}`", a.sid));
            }
            if a.listen.overlaps(&b.listen) {
                return Err(format!(
                    "services `{}` ({}) and `{}` ({}) listen on the same address",
                    a.sid, a.listen, b.sid, b.listen
                ));
            }
        }
    }
    Ok(())
}

// === value types, each checked as it is read (so errors carry a line) ===

/// A port, written as a number or a string.
#[derive(Debug)]
struct Port(u16);

/// An IP address, strictly parsed; an empty string means every interface.
#[derive(Debug)]
struct Ip(Option<std::net::IpAddr>);

/// An IP address or a host name.
#[derive(Debug)]
struct Host(String);

/// An address or a network (CIDR).
#[derive(Debug)]
struct Net(IpNet);

/// Seconds, whole or fractional.
#[derive(Debug, Clone, Copy)]
struct Secs(Duration);

/// An IPv6 prefix length, 0 to 128.
#[derive(Debug)]
struct Prefix(u8);

/// A PROXY protocol version: `v1`, `v2` (or 1, 2), or `off`.
#[derive(Debug, Clone, Copy)]
struct ProxyVersion(Option<u8>);

/// `true` (30 s period), `false`, or a period in seconds.
#[derive(Debug)]
struct KeepAlive(Option<Duration>);

impl Secs {
    /// `None` for 0, which means "no limit".
    fn nonzero(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

/// A visitor for scalars that may be written as numbers or strings.
struct Scalar<T>(&'static str, fn(&str) -> Result<T, String>);

impl<T> Visitor<'_> for Scalar<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.1)(v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        self.visit_str(if v { "true" } else { "false" })
    }
}

macro_rules! scalar {
    ($ty:ty, $expecting:literal, $parse:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(Scalar($expecting, $parse))
            }
        }
    };
}

scalar!(Port, "a port number", |s| addr::parse_port(s.trim())
    .map(Port));
scalar!(Ip, "an IP address", |s| {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Ip(None));
    }
    addr::parse_ip(s.trim_start_matches('[').trim_end_matches(']')).map(|ip| Ip(Some(ip)))
});
scalar!(Host, "an IP address or host name", |s| Ok(Host(
    s.trim().to_owned()
)));
scalar!(Net, "an IP address or network", |s| addr::parse_net(s)
    .map(Net));
scalar!(Secs, "a number of seconds", |s| parse_secs(s).map(Secs));
scalar!(
    Prefix,
    "an IPv6 prefix length",
    |s| match s.trim().parse::<u8>() {
        Ok(n) if n <= 128 => Ok(Prefix(n)),
        _ => Err(format!(
            "invalid IPv6 prefix length `{s}`: a number of bits from 0 to 128"
        )),
    }
);
scalar!(
    KeepAlive,
    "true, false or a number of seconds",
    |s| match s {
        "true" => Ok(KeepAlive(Some(Duration::from_secs(30)))),
        "false" => Ok(KeepAlive(None)),
        s => parse_secs(s).map(|d| KeepAlive((!d.is_zero()).then_some(d))),
    }
);

scalar!(ProxyVersion, "v1, v2 or off", |s| match s.trim() {
    "v1" | "1" => Ok(ProxyVersion(Some(1))),
    "v2" | "2" => Ok(ProxyVersion(Some(2))),
    "off" | "false" => Ok(ProxyVersion(None)),
    other => Err(format!(
        "invalid PROXY protocol version `{other}`: v1, v2 or off"
    )),
});

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("invalid number of seconds `{s}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err =
            parse("a:\n  listen_port: 1\n  backend_port: 2\n  ip_blaklist: []\n").unwrap_err();
        assert!(err.contains("ip_blaklist"), "{err}");
        assert!(err.starts_with("line 4, column 3"), "{err}");
    }

    #[test]
    fn ports_as_numbers_or_strings() {
        let specs =
            parse("a:\n  listen_ip: 127.0.0.1\n  listen_port: \"81\"\n  backend_port: 82\n")
                .unwrap();
        assert_eq!(specs[0].listen.to_string(), "127.0.0.1:81");
        assert_eq!(specs[0].backend.to_string(), "127.0.0.1:82");
    }

    #[test]
    fn zero_means_no_limit() {
        let specs = parse(
            "a: {listen_port: 1, backend_port: 2, max_idle: 0, conn_limit: 0, read_timeout: 0.5}",
        )
        .unwrap();
        let c = &specs[0].config;
        assert_eq!(c.max_idle, None);
        assert_eq!(c.conn_limit, None);
        assert_eq!(c.read_timeout, Some(Duration::from_millis(500)));
    }

    #[test]
    fn a_huge_bad_value_is_not_quoted_whole() {
        let err = parse(&format!("a: {}\n", "x".repeat(100_000))).unwrap_err();
        assert!(
            err.starts_with("line 1, column 4: a: invalid type: string"),
            "{err}"
        );
        assert!(err.len() < 400, "{}", err.len());
    }

    #[test]
    fn a_file_with_no_service_is_refused() {
        for text in ["", " \n", "# only a comment\n", "---\n", "~\n", "{}\n"] {
            let err = parse(text).unwrap_err();
            assert!(err.contains("defines no service"), "{text:?}: {err}");
        }
    }

    #[test]
    fn ipv6_prefix_is_read_and_checked() {
        let spec = |extra: &str| parse(&format!("a: {{listen_port: 1, backend_port: 2{extra}}}"));
        assert_eq!(spec("").unwrap()[0].config.ipv6_prefix, 64);
        assert_eq!(spec(", ipv6_prefix: 48").unwrap()[0].config.ipv6_prefix, 48);
        assert_eq!(
            spec(", ipv6_prefix: 128").unwrap()[0].config.ipv6_prefix,
            128
        );
        for bad in ["129", "300", "-1", "/64", "sixty"] {
            let err = spec(&format!(", ipv6_prefix: {bad}")).unwrap_err();
            assert!(err.contains("a.ipv6_prefix"), "{err}");
            assert!(err.contains("invalid IPv6 prefix length"), "{err}");
        }
    }

    #[test]
    fn proxy_keys_are_read_and_checked() {
        let spec = |extra: &str| parse(&format!("a: {{listen_port: 1, backend_port: 2{extra}}}"));
        let s = spec(", proxy_protocol: v2, proxy_trusted: [10.0.0.0/8], send_proxy: v1").unwrap();
        let proxy = s[0].proxy_in.as_ref().unwrap();
        assert!(proxy.is_trusted("10.9.9.9".parse().unwrap()));
        assert_eq!(s[0].send_proxy, Some(1));
        let s = spec(", proxy_protocol: off, send_proxy: off").unwrap();
        assert_eq!((s[0].proxy_in.is_none(), s[0].send_proxy), (true, None));
        for (extra, want) in [
            (
                ", proxy_protocol: v3",
                "a.proxy_protocol: invalid PROXY protocol version `v3`",
            ),
            (
                ", send_proxy: yes",
                "a.send_proxy: invalid PROXY protocol version `yes`",
            ),
            (
                ", proxy_protocol: v1",
                "service `a`: proxy_protocol v1 needs proxy_trusted",
            ),
            (
                ", proxy_trusted: [10.0.0.1]",
                "service `a`: proxy_trusted is set but proxy_protocol is off",
            ),
            (
                ", proxy_protocol: v2, proxy_trusted: [nope]",
                "a.proxy_trusted",
            ),
        ] {
            let err = spec(extra).unwrap_err();
            assert!(err.contains(want), "{extra}: {err}");
        }
    }

    #[test]
    fn leading_zero_ip_is_refused() {
        let err = parse("a: {listen_ip: 010.0.0.1, listen_port: 1, backend_port: 2}").unwrap_err();
        assert!(err.contains("leading zeros"), "{err}");
    }
}
