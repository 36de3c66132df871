use std::sync::Arc;
use std::task::{Context, Poll};

use super::rate::RateTable;
use crate::layers::future::ResponseFuture;
use crate::layers::BoxError;
use crate::{Accepted, Reason, Rejected, Service};

/// The service built by [`LimitLayer`](super::LimitLayer): admits the
/// connection into the service (or refuses it with the limit's
/// [`Reason`]) and passes it on with its [`Admission`](crate::Admission).
///
/// A connection that already carries an admission is passed on as it is.
#[derive(Clone, Debug)]
pub struct Limit<S> {
    inner: S,
    service: Service,
    rates: Arc<RateTable>,
}

impl<S> Limit<S> {
    /// Applies `service`'s limits in front of `inner`.
    pub fn new(inner: S, service: Service) -> Self {
        Limit::with_rates(inner, service, Arc::default())
    }

    pub(super) fn with_rates(inner: S, service: Service, rates: Arc<RateTable>) -> Self {
        Limit {
            inner,
            service,
            rates,
        }
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
            let peer = conn.peer;
            let rate = self.service.inner.config().rate_limit;
            if let Some(rate) = rate {
                if !self
                    .rates
                    .allow(crate::registry::canonical_ip(peer.ip()), rate)
                {
                    let rejected = Rejected::new(Reason::RateLimit, peer).holding(conn);
                    return ResponseFuture::refused(rejected);
                }
            }
            match self.service.admit(peer) {
                Ok(admission) => conn.admission = Some(admission),
                Err(rejected) => return ResponseFuture::refused(rejected.holding(conn)),
            }
        }
        ResponseFuture::inner(self.inner.call(conn))
    }
}
