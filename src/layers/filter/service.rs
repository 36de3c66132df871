use std::task::{Context, Poll};

use crate::layers::BoxError;
use crate::layers::ResponseFuture;
use crate::{Accepted, Rejected, ServiceMonitor};

/// The service built by [`FilterLayer`](super::FilterLayer): refuses
/// connections whose client address the service's lists refuse, passes the
/// rest to `S`.
#[derive(Clone, Debug)]
pub struct Filter<S> {
    inner: S,
    service: ServiceMonitor,
}

impl<S> Filter<S> {
    /// Filters connections for `service` in front of `inner`.
    pub fn new(inner: S, service: ServiceMonitor) -> Self {
        Filter { inner, service }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, IO> tower::Service<Accepted<IO>> for Filter<S>
where
    IO: Send + Sync + 'static,
    S: tower::Service<Accepted<IO>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, conn: Accepted<IO>) -> Self::Future {
        match self.service.ip_verdict(conn.peer.ip()) {
            // Held until the listener has counted the refusal.
            Some(reason) => ResponseFuture::refused(Rejected::new(reason, conn.peer).closing(conn)),
            None => ResponseFuture::inner(self.inner.call(conn)),
        }
    }
}
