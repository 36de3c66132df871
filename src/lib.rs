//! Monitor and guard TCP connections in tower servers.
//!
//! `monconn` answers, for any tokio server or proxy: who is connected, how
//! much each connection read and wrote, which connections are idle; and it
//! decides at accept time who may connect and how many. It plugs into the
//! accept loop of axum, tonic, hyper or your own server: a [`Listener`]
//! instead of tokio's `TcpListener`, and every connection is counted, limited
//! and visible in a [`Registry`].
//!
//! # Quick start: axum
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use axum::{routing::get, Router};
//! use monconn::integrations::{graceful, stats};
//! use monconn::{Listener, Registry, ServiceConfig};
//!
//! let registry = Registry::new();
//! let service = registry.create("web", ServiceConfig::default().conn_limit(10_000))?;
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .nest("/stats", stats::router(registry.clone())); // JSON snapshots
//! let listener = Listener::bind("127.0.0.1:3000", service.clone()).await?;
//! let ctrl_c = async { let _ = tokio::signal::ctrl_c().await; };
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(graceful(service, ctrl_c)) // bounded by wait_timeout
//!     .await
//! # }
//! ```
//!
//! # Quick start: tonic
//! One line changes: `serve_with_incoming(Incoming::new(listener))` instead
//! of `serve(addr)`; `request.remote_addr()` keeps working, and the stats go
//! on a side port with [`integrations::stats::bind`]:
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use monconn::integrations::tonic::Incoming;
//! use monconn::{Listener, Registry};
//!
//! let registry = Registry::new();
//! let listener = Listener::bind("127.0.0.1:50051", registry.service("grpc")).await?;
//! tokio::spawn(monconn::integrations::stats::bind("127.0.0.1:9000", registry));
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! tonic::transport::Server::builder()
//!     .add_service(health)
//!     .serve_with_incoming(Incoming::new(listener))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Features
//! | feature | what it adds |
//! |---|---|
//! | *(none)* | [`MonitoredIo`], [`Registry`], [`ServiceMonitor`], [`Listener`], the accept [`layers`], [`integrations::graceful`], [`integrations::ConnInfo`], the hyper recipe |
//! | `axum` | `axum::serve` takes a [`Listener`] of any stack; `ConnectInfo<ConnInfo>`; [`integrations::stats`], the JSON router and side server |
//! | `tonic` | [`integrations::tonic::Incoming`], `Connected`, `ConnInfoLayer` |
//! | `metrics` | service figures on the `metrics` facade ([`metrics`]) |
//! | `forward` | [`forward::copy_bidirectional`], a monitored, half-close-correct copy for your own proxy |
//! | `proxy-protocol` | `layers::proxy`: the real client behind a load balancer (PROXY v1 and v2), read before every guard |
//! | `admin` | [`admin`]: an operator's router (JSON API, kick and ban, health probes, a runtime tap) and a live dashboard over server-sent events, served bounded on its own address or nested in your app |
//! | `redis` | [`cluster`]: bans (with their expiry) shared by many instances through Redis or Valkey; each enforces its local copy |
//!
//! # Map of the types
//! - Accepting: [`Listener`] (with [`Listener::builder`] for your own layers,
//!   any stack being an [`AcceptStack`]), [`Accepted`] (a connection in the
//!   stack), [`layers`] (`FilterLayer`, `LimitLayer`), [`Rejected`] and
//!   [`RejectReason`] (why a connection was refused), [`Rejection`] (one of
//!   a service's recent refusals: who, why, when).
//! - Counting: [`MonitoredIo`] (the wrapper), [`ConnRecord`] (one
//!   connection's live counters), [`CloseCause`] (why it was cut).
//! - Owning: [`Registry`] of [`ServiceMonitor`]s by id, each with a
//!   [`ServiceConfig`] (timeouts, limits, lists), an [`Admission`] per
//!   connection, [`ServiceSnapshot`] / [`RegistrySnapshot`] /
//!   [`ConnSnapshot`] (serde), [`ByteCounts`] (read and written),
//!   [`CloseReport`] of a graceful close, [`SidTaken`] (a sid
//!   [`Registry::create`] found in use).
//! - Serving: [`integrations`] (axum, tonic, hyper, `graceful`, `stats`).
//! - Watching: [`tap`] ([`Registry::tap`] streams matching connections'
//!   opens, bytes and closes; it also carries the `print_bytes` dump).
//!
//! # How it fits together
//! A connection flows one way, and so do the imports: the
//! [`Listener`] accepts it and passes it, as an [`Accepted`], through the
//! accept stack of [`layers`] (filter, limits, your own); a layer admits it
//! into its [`ServiceMonitor`] (an [`Admission`]), and the service wraps it in a
//! [`MonitoredIo`] that counts into the connection's own [`ConnRecord`].
//! Modules import downwards only: listener → layers → `Accepted` → registry
//! ([`Registry`], [`ServiceMonitor`], snapshots, sweeper, limits, rules) → io
//! ([`MonitoredIo`], [`ConnRecord`], [`CloseCause`]) → the leaves (the
//! address helpers [`client_key`], [`canonical_ip`], [`IpSet`], and a
//! coarse clock). io knows nothing of the registry: it hands a dropped
//! connection back through a one-method private trait (`Release`) that the
//! service implements and that the record holds, so the wrapper stays a
//! pointer to its record. The [`tap`] sits between them: the record calls
//! it through another private trait (`Watcher`) only when watched, and the
//! registry starts taps. The registry publishes to the `metrics` facade
//! through a private seam of its own (`registry/export.rs`); the `metrics`
//! and `forward` modules (features of those names) and [`integrations`]
//! read the registry and io; nothing calls back up. `.ci/module-deps`
//! lists who imports whom and fails on a circle.
//!
//! # A connection accepted by hand
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio::net::{TcpListener, TcpStream};
//!
//! let registry = monconn::Registry::new();
//! let service = registry.service("echo");
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let mut client = TcpStream::connect(addr).await?;
//!
//! let (stream, peer) = listener.accept().await?;
//! let mut conn = service.wrap(stream, peer, addr)?;
//! client.write_all(b"hello").await?;
//! let mut buf = [0; 5];
//! conn.read_exact(&mut buf).await?;
//!
//! let stats = service.snapshot_with_conns();
//! assert_eq!(stats.connections, 1);
//! assert_eq!(stats.bytes_read, 5);
//! # Ok(()) }
//! ```
#![warn(
    missing_debug_implementations,
    missing_docs,
    rust_2018_idioms,
    unreachable_pub
)]
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod accepted;
#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
mod clock;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod cluster;
#[cfg(feature = "forward")]
#[cfg_attr(docsrs, doc(cfg(feature = "forward")))]
pub mod forward;
pub mod integrations;
mod io;
mod ip;
pub mod layers;
mod listener;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod proxied;
mod registry;
pub mod tap;

pub use accepted::Accepted;
pub use io::{CloseCause, ConnRecord, MonitoredIo};
pub use ip::{canonical_ip, client_key, IpSet};
/// The `ipnet` crate, whose `IpNet` the blacklist and allowlist take.
pub use ipnet;
pub use listener::{AcceptStack, DefaultStack, Listener, ListenerBuilder};
pub use registry::{
    Admission, AutoBan, AutoBanCounts, BanSource, ByteCounts, CloseReport, ConnSnapshot,
    IpConnections, RateLimit, Registry, RegistrySnapshot, RejectReason, Rejected, Rejection,
    ServiceConfig, ServiceMonitor, ServiceSnapshot, SidTaken, TimedBan, RECENT_REJECTIONS,
};

/// The README's examples, compiled as doctests.
#[cfg(all(doctest, feature = "axum", feature = "tonic"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
