//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::addr::{Backend, ListenAddr};
use crate::config::{self, ServiceSpec, CONNECT_TIMEOUT};

/// A TCP port forwarder that monitors every connection: live byte counts,
/// idle and timeout closing, IP blacklists and allowlists, connection and
/// IP limits, JSON stats and Prometheus metrics.
#[derive(Debug, Parser)]
#[command(name = "monconn-forwarder", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Forward LISTEN to BACKEND (repeatable). LISTEN is `:PORT` (every
    /// interface), `IP:PORT` or `[IPv6]:PORT`; BACKEND is `IP:PORT`,
    /// `[IPv6]:PORT` or `HOST:PORT` (resolved at each connection). The
    /// service's id is the LISTEN text.
    #[arg(short = 'p', long = "port", value_name = "LISTEN=BACKEND", value_parser = parse_mapping)]
    pub mappings: Vec<Mapping>,

    /// The config file (the Go monconn's config.yaml format, plus new keys):
    /// a map of service name to its settings. Reloaded on SIGHUP.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Load and check the config and the -p values, print the services, and
    /// exit (0 when valid, 2 otherwise). Binds nothing.
    #[arg(long)]
    pub check_config: bool,

    /// Debug logging (the same as --log-level debug).
    #[arg(short = 'D', long)]
    pub debug: bool,

    /// Log level: error, warn, info, debug or trace. RUST_LOG, when set, wins.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,

    /// Log format: `text` (human-readable) or `json` (one JSON object per
    /// line, for log collectors).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// One INFO line per closed connection (target `access`: service, peer,
    /// backend, duration, bytes in and out, close cause): `on` or `off`.
    #[arg(long, value_name = "ON|OFF", value_enum, default_value_t = Switch::On)]
    pub access_log: Switch,

    /// Serve the admin HTTP API (stats, metrics, blacklist, kick) on ADDR.
    /// Off unless given. A non-loopback ADDR needs --admin-token.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,

    /// Require `Authorization: Bearer TOKEN` on every admin request.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MONCONN_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Share bans with every instance using this Redis (or Valkey) server
    /// and key: `redis://[user:password@]host[:port][/db]`. Overrides the
    /// config file's `cluster: {redis: ...}`. The URL is never logged.
    #[arg(
        long,
        value_name = "URL",
        env = "MONCONN_CLUSTER_REDIS",
        hide_env_values = true
    )]
    pub cluster_redis: Option<String>,

    /// The key prefix the instances share (default `monconn`; overrides
    /// the file's `cluster: {key: ...}`).
    #[arg(long, value_name = "KEY")]
    pub cluster_key: Option<String>,

    /// Log one line of stats per service every SECS seconds (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub stats_interval: u64,

    /// Threads that accept and forward connections, each with its own
    /// runtime. 0 or 1: one thread. Default: one per CPU core.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// How the threads share each service's new connections.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = Accept::Reuseport)]
    pub accept: Accept,

    /// Move bulk transfers with splice(2) (Linux), socket to pipe to socket,
    /// instead of copying them through a 63 KiB buffer; never for services
    /// with print_bytes. Off by default: over loopback, copies moved more.
    #[arg(long, env = "FORWARDER_SPLICE", value_parser = clap::builder::BoolishValueParser::new())]
    pub splice: bool,
}

/// The log's format (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// On or off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// On.
    #[default]
    On,
    /// Off.
    Off,
}

/// How the threads share a service's new connections (`--accept`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Accept {
    /// One SO_REUSEPORT socket per thread: the kernel hands each thread an
    /// even share (by address hash), busy or not, and wakes only that one.
    #[default]
    Reuseport,
    /// One listening socket that every thread accepts from: a connection
    /// goes to a thread free to take it, and a thread with two connections
    /// more than the least busy one (and an eighth more, past 8) leaves new
    /// ones to the others. Every thread wakes for each new connection; this
    /// pays where the threads often lose their core to busier processes.
    Shared,
}

/// One `-p LISTEN=BACKEND` value.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub text: String,
    pub listen: ListenAddr,
    pub backend: Backend,
}

fn parse_mapping(value: &str) -> Result<Mapping, String> {
    let (listen, backend) = value
        .split_once('=')
        .ok_or("expected LISTEN=BACKEND, as in :22=127.0.0.1:2222")?;
    Ok(Mapping {
        text: listen.to_owned(),
        listen: ListenAddr::parse(listen).map_err(|e| format!("listen address: {e}"))?,
        backend: Backend::parse(backend).map_err(|e| format!("backend: {e}"))?,
    })
}

impl Mapping {
    /// The service a `-p` value describes, with the default settings.
    pub fn spec(&self) -> ServiceSpec {
        ServiceSpec {
            sid: self.text.clone(),
            listen: self.listen,
            backend: self.backend.clone(),
            connect_timeout: Some(CONNECT_TIMEOUT),
            half_close: true,
            config: config::default_config(),
            proxy_in: None,
            send_proxy: None,
            from_file: false,
        }
    }
}

const AFTER_HELP: &str = "\
Examples:
  # ssh and web behind the forwarder (2222 and 8080 are the real services)
  forwarder -p :22=127.0.0.1:2222 -p 0.0.0.0:80=127.0.0.1:8080

  # IPv6, and a backend by host name
  forwarder -p [::1]:8080=[::1]:80 -p 127.0.0.1:5432=db.internal:5432

  # services from a file, stats and metrics on the loopback
  forwarder -c config.yaml --admin 127.0.0.1:9000 --stats-interval 60
  curl -s 127.0.0.1:9000/stats
  curl -s 127.0.0.1:9000/metrics
  curl -s -X POST 127.0.0.1:9000/services/web/blacklist/10.0.0.0%2F8
  kill -HUP $(pidof forwarder)      # reload config.yaml

Config file (every key but listen_port and backend_port is optional; times in
seconds, fractions allowed; 0 means no limit for limits, timeouts and max_idle):
  web:                      # the service's id
    listen_ip: 127.0.0.1    # default: every interface
    listen_port: 80
    backend_ip: 127.0.0.1   # or a host name; default 127.0.0.1
    backend_port: 8080
    read_timeout: 600       # the client sent nothing and nothing moved this long: cut
    write_timeout: 600      # client or backend stopped taking bytes this long: cut
    wait_timeout: 60        # on stop, how long live connections may finish
    max_idle: 900           # no byte either way for this long closes it
    idle_interval: 15       # how often idleness and timeouts are checked
    conn_limit: 0           # most concurrent connections
    ip_limit: 0             # most distinct client IPs
    per_ip_limit: 0         # most concurrent connections from one IP
    rate_limit: 0           # most new connections per second from one IP
    rate_burst: 0           # burst allowed by rate_limit (default: rate_limit)
    ipv6_prefix: 64         # IPv6 clients count as one IP per network of this
                            # many bits (0 to 128) for the limits above
    keepalive: true         # TCP keepalive (30 s), false, or a period in seconds
    nodelay: true           # TCP_NODELAY on both sides
    print_bytes: false      # hex-dump traffic (logged at trace level)
    pause_at_limit: false   # at conn_limit, wait instead of refusing
    connect_timeout: 10     # backend connect timeout
    half_close: true        # pass one side's EOF on, the other way goes on;
                            # false: close both as soon as either side ends
    ip_blacklist: [1.1.1.1, 10.0.0.0/8]
    ip_allowlist: []        # when not empty, only these may connect
    auto_ban_refused: 0     # ban a client refused this many times by the limits
    auto_ban_connections: 0 # ... or connecting this many times (pick one)
    auto_ban_within: 10     # ... within this window
    auto_ban_for: 600       # for this long (its connections are closed)

The top-level key `cluster` is reserved (so no service may be named so): the
ban list shared with other instances through Redis, read at start:
  cluster:
    redis: redis://:password@10.0.0.5:6379/0   # or --cluster-redis URL
    key: monconn            # instances with the same Redis and key share bans

A file with no service (empty, comments only), over 16 MiB, or with [ and {
nested deeper than 32 levels is refused: at start, by --check-config, and on
SIGHUP (the running services and their connections stay).

Signals: SIGHUP reloads the config file (services added, removed, moved or
changed; live connections untouched, those of a removed service listed under
`draining` in /stats until they end; blacklist and allowlist entries added
through the admin API are kept); SIGINT, SIGTERM and SIGQUIT stop accepting,
let connections finish for up to wait_timeout, print final stats (one JSON line
per service on stdout) and exit 0.

Logging goes to stderr through a queue: when nobody reads it, lines are
dropped (and counted: log_lines_dropped in /stats, a metric in /metrics)
rather than holding up forwarding and the admin API.

Admin API (--admin): GET /stats, /stats/{sid}, /stats/{sid}/connections,
/metrics; POST and DELETE /services/{sid}/blacklist/{ip-or-cidr};
POST /services/{sid}/connections/{id}/kick. Percent-encode the sid and the /
of a CIDR. Exit codes: 0 after a clean stop, 2 on bad arguments, a bad config
or an address that cannot be bound.";
