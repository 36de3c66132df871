//! Monitor and guard TCP connections in tower servers.
//!
//! `monconn` answers, for any tokio server or proxy: who is connected, how
//! much each connection read and wrote, which connections are idle; and it
//! decides at accept time who may connect and how many.
//!
//! - [`MonitoredIo`] wraps a connection and counts its bytes, live and exact,
//!   on the connection's own atomics: no lock, no allocation, no task and no
//!   timer per connection.
//! - [`Registry`] holds [`Service`]s by id: settings ([`ServiceConfig`]),
//!   exact counters, the live connection table, JSON snapshots, one sweeper
//!   task per service for idle and timed-out connections, graceful close.
//!
//! # How it fits together
//! A connection flows one way, and so do the imports: the
//! [`Listener`] accepts it and passes it, as an [`Accepted`], through the
//! accept stack of [`layers`] (filter, limits, your own); a layer admits it
//! into its [`Service`] (an [`Admission`]), and the service wraps it in a
//! [`MonitoredIo`] that counts into the connection's own [`ConnRecord`].
//! Modules import downwards only: listener → layers → `Accepted` → registry
//! ([`Registry`], [`Service`], snapshots, sweeper, limits, rules) → io
//! ([`MonitoredIo`], [`ConnRecord`], [`CloseCause`]) → the leaves (the
//! address helpers [`client_key`], [`canonical_ip`], [`IpSet`], and a
//! coarse clock). io knows nothing of the registry: it hands a dropped
//! connection back through a one-method private trait (`Release`) that the
//! service implements and that the record holds, so the wrapper stays a
//! pointer to its record. The registry publishes to the `metrics` facade
//! through a private seam of its own (`registry/export.rs`); the `metrics`
//! and `forward` modules (features of those names) and [`integrations`]
//! read the registry and io; nothing calls back up. `.ci/module-deps`
//! lists who imports whom and fails on a circle.
//!
//! # Examples
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
//! let stats = service.snapshot(true);
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
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod accepted;
mod clock;
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
mod registry;

pub use accepted::Accepted;
pub use io::{CloseCause, ConnRecord, MonitoredIo};
pub use ip::{canonical_ip, client_key, IpSet};
/// The `ipnet` crate, whose `IpNet` the blacklist and allowlist take.
pub use ipnet;
pub use listener::{AcceptStack, DefaultStack, Listener, ListenerBuilder};
pub use registry::{
    Admission, CloseReport, ConnSnapshot, IpConnections, RateLimit, Reason, Registry,
    RegistrySnapshot, Rejected, Service, ServiceConfig, ServiceSnapshot,
};

/// The README's examples, compiled as doctests.
#[cfg(all(doctest, feature = "axum", feature = "tonic"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
