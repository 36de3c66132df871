//! The PROXY protocol (v1 and v2): the real client behind a load balancer.
//!
//! HAProxy, an AWS Network Load Balancer, nginx or Traefik in front of a
//! server make every connection come from their own address. With the
//! PROXY protocol they send, first on each connection, a header naming the
//! client. [`ProxyProtocolLayer`] (feature `proxy-protocol`) reads it first
//! in the accept stack, so that the blacklist, the allowlist, the per-IP
//! limits, the per-IP table, snapshots and [`ConnInfo`](crate::integrations::ConnInfo) all
//! see the client; the socket's own peer stays readable
//! ([`ConnInfo::socket_peer`](crate::integrations::ConnInfo::socket_peer)). Headers are
//! parsed with the [`ppp`](https://docs.rs/ppp) crate.
//!
//! [`ProxyHeader`] is the header, with its TLVs; [`ProxyHeader::to_v1`] and
//! [`ProxyHeader::to_v2`] write one, for a proxy that passes the client on
//! to its backend.
//!
//! # Examples
//! ```no_run
//! # #[cfg(feature = "proxy-protocol")]
//! # async fn run() -> std::io::Result<()> {
//! use monconn::layers::proxy::ProxyConfig;
//!
//! let service = monconn::Registry::new().service("web");
//! let listener = monconn::Listener::builder(service)
//!     .proxy_protocol(ProxyConfig::new().trust(["10.0.0.0/8".parse().unwrap()]))
//!     .bind("0.0.0.0:8080")
//!     .await?;
//! let (conn, client) = listener.accept().await?; // the client the header names
//! let info = monconn::integrations::ConnInfo::of(&conn);
//! println!("{client} via {}", info.socket_peer());
//! # Ok(()) }
//! ```

#[cfg(feature = "proxy-protocol")]
mod config;
#[cfg(feature = "proxy-protocol")]
mod deadline;
#[cfg(feature = "proxy-protocol")]
pub mod future;
#[cfg(feature = "proxy-protocol")]
mod layer;
#[cfg(feature = "proxy-protocol")]
mod parse;
#[cfg(feature = "proxy-protocol")]
mod read;

pub use crate::proxied::{Command, ProxyHeader, ProxyInfo};
#[cfg(feature = "proxy-protocol")]
pub use config::ProxyConfig;
#[cfg(feature = "proxy-protocol")]
pub use layer::{ProxyProtocol, ProxyProtocolLayer, ProxyRefused};
#[cfg(feature = "proxy-protocol")]
pub use parse::HeaderError;
