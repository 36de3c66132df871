//! axum: [`Listener`] implements [`axum::serve::Listener`], [`ConnInfo`] is
//! connect info, and [`graceful`](super::graceful) bounds the graceful shutdown.
//!
//! # Examples
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::time::Duration;
//! use axum::{extract::ConnectInfo, routing::get, Router};
//! use monconn::integrations::ConnInfo;
//! use monconn::{Listener, Registry, ServiceConfig};
//!
//! let service = Registry::global().create(
//!     "web",
//!     ServiceConfig::default()
//!         .with_conn_limit(Some(10_000))
//!         .with_wait_timeout(Duration::from_secs(10)),
//! );
//! let listener = Listener::bind("127.0.0.1:3000", service.clone()).await?;
//!
//! async fn hello(ConnectInfo(conn): ConnectInfo<ConnInfo>) -> String {
//!     format!("hello {}, connection {} read {} bytes", conn.peer(), conn.id(), conn.bytes_read())
//! }
//! let app = Router::new().route("/", get(hello));
//!
//! let ctrl_c = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! axum::serve(listener, app.into_make_service_with_connect_info::<ConnInfo>())
//!     .with_graceful_shutdown(monconn::integrations::graceful(service, ctrl_c))
//!     .await?;
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, TapIo};
use tokio::net::TcpStream;

use super::ConnInfo;
use crate::{Listener, MonitoredIo};

/// How long `accept` waits after an error that [`Listener::accept`] does not
/// handle itself, before trying again.
const ERROR_BACKOFF: Duration = Duration::from_millis(200);

/// `axum::serve` accepts through the monitored listener: connections are
/// admitted by the service (refusals are closed at once and counted, never
/// reach axum), and come out as [`MonitoredIo`]s.
///
/// axum's `accept` cannot fail: errors that [`Listener::accept`] does not
/// handle itself (those about one connection are skipped, resource errors
/// back off) are logged and retried after 200 ms.
impl axum::serve::Listener for Listener {
    type Io = MonitoredIo<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match Listener::accept(self).await {
                Ok(accepted) => return accepted,
                Err(e) => {
                    tracing::error!(sid = %self.service().sid(), error = %e, "accept error");
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Listener::local_addr(self))
    }
}

/// For `into_make_service_with_connect_info::<ConnInfo>()`: handlers take
/// `ConnectInfo<ConnInfo>`.
impl Connected<IncomingStream<'_, Listener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Self {
        ConnInfo::of(stream.io())
    }
}

/// The same through [`ListenerExt::tap_io`](axum::serve::ListenerExt::tap_io).
impl<F> Connected<IncomingStream<'_, TapIo<Listener, F>>> for ConnInfo
where
    F: FnMut(&mut MonitoredIo<TcpStream>) + Send + 'static,
{
    fn connect_info(stream: IncomingStream<'_, TapIo<Listener, F>>) -> Self {
        ConnInfo::of(stream.io())
    }
}
