use std::task::{Context, Poll};

use crate::layers::BoxError;
use crate::layers::ResponseFuture;
use crate::{Accepted, ServiceMonitor};

/// The service built by [`LimitLayer`](super::LimitLayer): admits the
/// connection into the service (or refuses it with the limit's
/// [`RejectReason`](crate::RejectReason)) and passes it on with its [`Admission`](crate::Admission).
///
/// A connection that already carries an admission is passed on as it is.
#[derive(Clone, Debug)]
pub struct Limit<S> {
    inner: S,
    service: ServiceMonitor,
}

impl<S> Limit<S> {
    /// Applies `service`'s limits in front of `inner`.
    pub fn new(inner: S, service: ServiceMonitor) -> Self {
        Limit { inner, service }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, IO> tower::Service<Accepted<IO>> for Limit<S>
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

    fn call(&mut self, mut conn: Accepted<IO>) -> Self::Future {
        if conn.admission.is_none() {
            match self.service.admit(conn.peer) {
                Ok(admission) => conn.admission = Some(admission),
                Err(rejected) => return ResponseFuture::refused(rejected.closing(conn)),
            }
        }
        ResponseFuture::inner(self.inner.call(conn))
    }
}
