//! The accept stack's layers: tower [`Layer`](tower_layer::Layer)s over
//! [`Accepted`](crate::Accepted) connections.
//!
//! A [`Listener`](crate::Listener) passes every accepted connection through
//! a `tower::Service<Accepted<TcpStream>>`. Each layer may refuse the
//! connection, with a [`Rejected`](crate::Rejected) error naming the reason, or
//! pass it on, possibly over a new transport. A refused connection is closed
//! at once, with nothing read from it, and counted by reason in its
//! [`ServiceMonitor`](crate::ServiceMonitor). The built-in layers close it only once it is
//! counted (their refusal holds it, [`Rejected::closing`](crate::Rejected::closing)),
//! so that stats read after a client saw its close include its refusal.
//!
//! - [`FilterLayer`]: the service's blacklist and allowlist (IPs and CIDRs).
//! - [`LimitLayer`]: `conn_limit`, `ip_limit`, `per_ip_limit` (one atomic
//!   reservation, an [`Admission`](crate::Admission)) and the per-IP
//!   `rate_limit`.
//! - [`proxy`]: the PROXY protocol, first in the stack when a load balancer
//!   sends it (feature `proxy-protocol`).
//! - [`Pass`]: the innermost service, which hands the connection back.
//!
//! Both built-in layers read the service's current
//! [`ServiceConfig`](crate::ServiceConfig) for every connection, so limits and
//! lists changed at runtime apply to the next connection.
//!
//! # Examples
//! A stack with a user's own layer, an async handshake under a timeout:
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::time::Duration;
//! use monconn::layers::{BoxError, FilterLayer, LimitLayer, Pass};
//! use monconn::{Accepted, Listener, Registry};
//! use tokio::io::AsyncReadExt;
//! use tokio::net::TcpStream;
//! use tower::ServiceBuilder;
//!
//! // Reads a one-line greeting before the connection is handed on.
//! async fn handshake(mut conn: Accepted<TcpStream>) -> Result<Accepted<TcpStream>, BoxError> {
//!     let mut hello = [0u8; 6];
//!     conn.io.read_exact(&mut hello).await?;
//!     if &hello != b"HELLO\n" {
//!         return Err("bad greeting".into());
//!     }
//!     Ok(conn)
//! }
//!
//! let service = Registry::new().service("tcp");
//! let stack = ServiceBuilder::new()
//!     .layer(FilterLayer::new(&service))
//!     .layer(LimitLayer::new(&service))
//!     .timeout(Duration::from_secs(5))
//!     .service(tower::service_fn(handshake));
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let listener = Listener::with_stack(tcp, service, stack)?;
//! let (conn, peer) = listener.accept().await?;
//! # Ok(()) }
//! ```
//!
//! A layer written as a closure, with the builder, in a spawned accept
//! loop. Give the closure's error a concrete type (`std::io::Error` here):
//! with `BoxError` written in a closure, rustc cannot prove the spawned
//! loop `Send` ("implementation of `From` is not general enough"; a
//! limitation of its auto-trait checks, not of the stack), while an `async
//! fn` layer such as `handshake` above may return `BoxError`:
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use monconn::{Accepted, Listener, Registry};
//! use tokio::net::TcpStream;
//!
//! let service = Registry::new().service("tcp");
//! let listener = Listener::builder(service)
//!     .layer(tower::layer::layer_fn(|_| {
//!         tower::service_fn(|conn: Accepted<TcpStream>| async move {
//!             // ... inspect `conn` ...
//!             Ok::<_, std::io::Error>(conn)
//!         })
//!     }))
//!     .bind("127.0.0.1:0")
//!     .await?;
//! tokio::spawn(async move {
//!     while let Ok((conn, _peer)) = listener.accept().await {
//!         tokio::spawn(async move { drop(conn) });
//!     }
//! });
//! # Ok(()) }
//! ```

mod filter;
mod future;
mod limit;
mod pass;
pub mod proxy;

pub use filter::{Filter, FilterLayer};
pub use future::ResponseFuture;
pub use limit::{Limit, LimitLayer};
pub use pass::Pass;
#[cfg(feature = "proxy-protocol")]
#[cfg_attr(docsrs, doc(cfg(feature = "proxy-protocol")))]
pub use proxy::{ProxyConfig, ProxyProtocol, ProxyProtocolLayer};

/// The boxed error of the accept stack's services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
