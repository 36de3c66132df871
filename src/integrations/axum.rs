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
//!         .conn_limit(10_000)
//!         .wait_timeout(Duration::from_secs(10)),
//! ).unwrap();
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
use tokio::io::{AsyncRead, AsyncWrite};

use super::ConnInfo;
use crate::{AcceptStack, Listener, MonitoredIo};

/// How long `accept` waits after an error that [`Listener::accept`] does not
/// handle itself, before trying again.
const ERROR_BACKOFF: Duration = Duration::from_millis(200);

/// `axum::serve` accepts through the monitored listener, whatever its accept
/// stack (the [`DefaultStack`](crate::DefaultStack), or one built with
/// [`Listener::builder`] and your own layers): connections are admitted by
/// the service (refusals are closed at once and counted, never reach axum),
/// and come out as [`MonitoredIo`]s of the stack's transport.
///
/// axum's `accept` cannot fail: errors that [`Listener::accept`] does not
/// handle itself (those about one connection are skipped, resource errors
/// back off) are logged and retried after 200 ms.
impl<S> axum::serve::Listener for Listener<S>
where
    S: AcceptStack + Send + 'static,
    S::Future: Send + 'static,
    S::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Io = MonitoredIo<S::Io>;
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
/// `ConnectInfo<ConnInfo>`, the connection's live record.
///
/// Handlers that take `ConnectInfo<SocketAddr>` (and extractors that read
/// it, such as `tower_governor`'s peer-IP key) keep working through axum's
/// [`tap_io`](axum::serve::ListenerExt::tap_io), for which axum gives every
/// listener's address as connect info:
///
/// ```no_run
/// # async fn run(listener: monconn::Listener, app: axum::Router) -> std::io::Result<()> {
/// use std::net::SocketAddr;
/// use axum::serve::ListenerExt;
///
/// axum::serve(
///     listener.tap_io(|_| ()),
///     app.into_make_service_with_connect_info::<SocketAddr>(),
/// )
/// .await
/// # }
/// ```
impl<S> Connected<IncomingStream<'_, Listener<S>>> for ConnInfo
where
    Listener<S>: axum::serve::Listener<Io = MonitoredIo<<S as AcceptStack>::Io>>,
    S: AcceptStack,
{
    fn connect_info(stream: IncomingStream<'_, Listener<S>>) -> Self {
        ConnInfo::of(stream.io())
    }
}

/// The same through [`ListenerExt::tap_io`](axum::serve::ListenerExt::tap_io).
impl<S, F> Connected<IncomingStream<'_, TapIo<Listener<S>, F>>> for ConnInfo
where
    Listener<S>: axum::serve::Listener<Io = MonitoredIo<<S as AcceptStack>::Io>>,
    S: AcceptStack,
    F: FnMut(&mut MonitoredIo<S::Io>) + Send + 'static,
{
    fn connect_info(stream: IncomingStream<'_, TapIo<Listener<S>, F>>) -> Self {
        ConnInfo::of(stream.io())
    }
}
