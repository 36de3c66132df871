//! `graceful`: a shutdown signal that drains the service, then cuts the rest.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::watch;

use crate::{CloseReport, ServiceMonitor};

/// Wraps a shutdown `signal` for a server's graceful shutdown
/// (`axum::serve(..).with_graceful_shutdown(..)`, tonic's
/// `serve_with_incoming_shutdown`, a hyper accept loop) so that the server
/// returns in bounded time.
///
/// The returned future resolves when `signal` does, and at that moment starts
/// [`ServiceMonitor::close`] in a task of its own: the service admits nothing more,
/// live connections may finish for up to the service's `wait_timeout`, then
/// the rest are cut: their next read or write fails with `ConnectionAborted`,
/// the server drops them, and its own graceful shutdown, which waits for every
/// connection, completes. Meanwhile the server stops accepting and asks its
/// connections to finish (HTTP/1 keep-alive connections close after their
/// current response, HTTP/2 ones get a GOAWAY).
///
/// [`Graceful::report`] tells what the close did.
///
/// The cut reaches a request whose handler is still running because hyper's
/// HTTP/1 server keeps reading while it waits for the response (to notice a
/// client that went away) and HTTP/2 always reads; a server built with
/// hyper's `http1().half_close(true)` stops reading there, so a cut would
/// wait for the handler's next write.
///
/// # Examples
/// ```no_run
/// # #[cfg(feature = "axum")]
/// # async fn run() -> std::io::Result<()> {
/// use std::time::Duration;
/// use monconn::{Listener, Registry, ServiceConfig};
///
/// let service = Registry::new().create(
///     "web",
///     ServiceConfig::default().wait_timeout(Duration::from_secs(10)),
/// ).unwrap();
/// let listener = Listener::bind("127.0.0.1:3000", service.clone()).await?;
/// let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
/// let ctrl_c = async {
///     let _ = tokio::signal::ctrl_c().await;
/// };
/// let shutdown = monconn::integrations::graceful(service, ctrl_c);
/// let report = shutdown.report();
/// axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
/// // Returns at most about 10 s after Ctrl-C.
/// println!("{:?}", report.wait().await);
/// # Ok(()) }
/// ```
pub fn graceful<F>(service: ServiceMonitor, signal: F) -> Graceful<F>
where
    F: Future<Output = ()>,
{
    let (report, _) = watch::channel(None);
    Graceful {
        signal,
        service: Some(service),
        report,
    }
}

pin_project! {
    /// A shutdown signal that drains and then cuts a service's connections;
    /// see [`graceful`].
    ///
    /// Not `Clone`: it starts the close once, when it resolves.
    ///
    /// # Examples
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use monconn::{Registry, ServiceConfig};
    ///
    /// let service = Registry::new().create(
    ///     "web",
    ///     ServiceConfig::default().wait_timeout(Duration::from_secs(5)),
    /// ).unwrap();
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let shutdown = monconn::integrations::graceful(service, async {
    ///     let _ = stopped.await;
    /// });
    /// let report = shutdown.report();
    /// stop.send(()).unwrap();
    /// shutdown.await; // what axum's with_graceful_shutdown awaits
    /// let report = report.wait().await.unwrap();
    /// assert_eq!((report.drained, report.cut), (0, 0));
    /// # }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct Graceful<F> {
        #[pin]
        signal: F,
        service: Option<ServiceMonitor>,
        report: watch::Sender<Option<CloseReport>>,
    }
}

impl<F> Graceful<F> {
    /// A handle that yields the [`CloseReport`] once the close is done.
    pub fn report(&self) -> PendingReport {
        PendingReport {
            rx: self.report.subscribe(),
        }
    }
}

impl<F: Future<Output = ()>> Future for Graceful<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.service.is_none() {
            return Poll::Ready(());
        }
        ready!(this.signal.poll(cx));
        if let Some(service) = this.service.take() {
            start_close(service, this.report.clone());
        }
        Poll::Ready(())
    }
}

fn start_close(service: ServiceMonitor, report: watch::Sender<Option<CloseReport>>) {
    let close = async move {
        let sid = service.sid().to_owned();
        tracing::debug!(%sid, wait_timeout = ?service.config().wait_timeout, "draining");
        let done = service.close().await;
        tracing::debug!(%sid, drained = done.drained, cut = done.cut, "closed");
        report.send_replace(Some(done));
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(close);
        }
        Err(_) => tracing::error!(
            "monconn graceful shutdown outside a tokio runtime: connections are not drained"
        ),
    }
}

impl<F> fmt::Debug for Graceful<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Graceful")
            .field("service", &self.service)
            .field("report", &*self.report.borrow())
            .finish_non_exhaustive()
    }
}

/// Yields the [`CloseReport`] of a [`graceful`] shutdown. Clones wait for the
/// same report.
#[derive(Clone, Debug)]
pub struct PendingReport {
    rx: watch::Receiver<Option<CloseReport>>,
}

impl PendingReport {
    /// The report, if the close is done.
    pub fn get(&self) -> Option<CloseReport> {
        *self.rx.borrow()
    }

    /// Waits for the close to finish (at most about `wait_timeout` after the
    /// signal). `None` if the [`Graceful`] future was dropped before its
    /// signal fired, so that no close will ever run.
    pub async fn wait(mut self) -> Option<CloseReport> {
        match self.rx.wait_for(Option::is_some).await {
            Ok(report) => *report,
            Err(_) => None,
        }
    }
}
