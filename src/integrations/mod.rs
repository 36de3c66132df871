//! Plugging monitored connections into servers: axum, tonic and hyper.
//!
//! - [`ConnInfo`]: what a request handler may know about its connection
//!   (peer, local address, id, live byte counters). axum hands it to
//!   handlers as connect info, a hyper accept loop puts it into request
//!   extensions, tonic handlers look it up.
//! - [`graceful`]: a shutdown signal that also drains the service and cuts
//!   what is left after its `wait_timeout`, so that `axum::serve`, tonic's
//!   server and hyper-util's `GracefulShutdown` return in bounded time.
//!   None of them has a drain timeout of its own: they wait for every
//!   connection, for ever.
//! - [`axum`](mod@axum) (feature `axum`): [`Listener`](crate::Listener)
//!   implements `axum::serve::Listener`.
//! - [`tonic`](mod@tonic) (feature `tonic`): an incoming stream for
//!   `serve_with_incoming`, and `tonic::transport::server::Connected` for
//!   `MonitoredIo<TcpStream>`.
//! - [`stats`] (feature `axum`): a registry's snapshots as JSON over HTTP,
//!   as a `Router` to nest in any axum app or as a side server for tonic
//!   and hyper servers.
//! - [`hyper`](mod@hyper): a manual accept loop with hyper-util, documented
//!   and tested; it needs nothing beyond [`Listener::accept`](crate::Listener::accept),
//!   [`ConnInfo`] and [`graceful`], so this crate does not depend on hyper.

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
mod conn_info;
pub mod hyper;
mod shutdown;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod stats;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

pub use conn_info::ConnInfo;
pub use shutdown::{graceful, Graceful, PendingReport};
