//! hyper: a manual accept loop over [`Listener::accept`](crate::Listener::accept)
//! with hyper-util's auto (HTTP/1 and HTTP/2) builder.
//!
//! Nothing here needs code of its own: the loop accepts monitored
//! connections, puts each one's [`ConnInfo`](super::ConnInfo) into its
//! requests' extensions from a `service_fn` closure, and shuts down with
//! hyper-util's `GracefulShutdown` watching a [`graceful`](super::graceful)
//! signal, so that the drain is bounded by the service's `wait_timeout`.
//! (This crate does not depend on hyper.)
//!
//! # Examples
//! ```no_run
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use http_body_util::Full;
//! use hyper::body::{Bytes, Incoming};
//! use hyper::{Request, Response};
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use hyper_util::server::conn::auto;
//! use hyper_util::server::graceful::GracefulShutdown;
//! use monconn::integrations::ConnInfo;
//! use monconn::{Listener, Registry, ServiceConfig};
//!
//! async fn hello(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     let conn = req.extensions().get::<ConnInfo>().expect("inserted by the accept loop");
//!     let body = format!("connection {} from {}\n", conn.id(), conn.peer());
//!     Ok(Response::new(Full::new(Bytes::from(body))))
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let service = Registry::new().create(
//!     "web",
//!     ServiceConfig::default().wait_timeout(Duration::from_secs(10)),
//! ).unwrap();
//! let listener = Listener::bind("127.0.0.1:3000", service.clone()).await?;
//! let builder = auto::Builder::new(TokioExecutor::new());
//! let graceful = GracefulShutdown::new();
//! let ctrl_c = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! let mut signal = std::pin::pin!(monconn::integrations::graceful(service, ctrl_c));
//! loop {
//!     let (io, _peer) = tokio::select! {
//!         accepted = listener.accept() => accepted?,
//!         _ = &mut signal => break,
//!     };
//!     let info = ConnInfo::of(&io);
//!     let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
//!         req.extensions_mut().insert(info.clone());
//!         hello(req)
//!     });
//!     let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
//!     let conn = graceful.watch(conn.into_owned());
//!     tokio::spawn(async move {
//!         if let Err(e) = conn.await {
//!             tracing::debug!(error = %e, "connection ended");
//!         }
//!     });
//! }
//! // Connections still open `wait_timeout` after the signal are cut, so
//! // this returns in bounded time.
//! graceful.shutdown().await;
//! # Ok(()) }
//! ```
