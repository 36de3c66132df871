//! The response future of the built-in layers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::BoxError;
use crate::Rejected;

pin_project! {
    /// The response future of [`Filter`](super::Filter) and
    /// [`Limit`](super::Limit): the refusal, or the inner service's future.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Refused { rejected: Option<Rejected> },
        Inner { #[pin] future: F },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn refused(rejected: Rejected) -> Self {
        ResponseFuture {
            kind: Kind::Refused {
                rejected: Some(rejected),
            },
        }
    }

    pub(crate) fn inner(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Inner { future },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Refused { rejected } => {
                let rejected = rejected.take().expect("polled after completion");
                Poll::Ready(Err(rejected.into()))
            }
            KindProj::Inner { future } => future.poll(cx).map_err(Into::into),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Refused { rejected } => f.debug_tuple("Refused").field(rejected).finish(),
            Kind::Inner { .. } => f.debug_tuple("Inner").finish(),
        }
    }
}
