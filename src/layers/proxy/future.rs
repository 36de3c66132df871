//! The response future of [`ProxyProtocol`](super::ProxyProtocol).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::layers::BoxError;

/// The boxed wait for a header that had not arrived at the accept.
pub(crate) type Waiting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

pin_project! {
    /// The response future of [`ProxyProtocol`](super::ProxyProtocol): the
    /// inner service's future when the header was already there at the
    /// accept (or none was expected), the refusal, or the wait for the header
    /// (boxed, under the layer's shared deadlines).
    pub struct ResponseFuture<F, T> {
        #[pin]
        kind: Kind<F, T>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, T> {
        Inner { #[pin] future: F },
        Refused { error: Option<BoxError> },
        Waiting { future: Waiting<T> },
    }
}

impl<F, T> ResponseFuture<F, T> {
    pub(crate) fn inner(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Inner { future },
        }
    }

    pub(crate) fn refused(error: impl Into<BoxError>) -> Self {
        ResponseFuture {
            kind: Kind::Refused {
                error: Some(error.into()),
            },
        }
    }

    pub(crate) fn waiting(future: Waiting<T>) -> Self {
        ResponseFuture {
            kind: Kind::Waiting { future },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx).map_err(Into::into),
            KindProj::Refused { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion")))
            }
            KindProj::Waiting { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, T> fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Refused { .. } => "Refused",
            Kind::Waiting { .. } => "Waiting",
        };
        f.debug_tuple("ResponseFuture").field(&kind).finish()
    }
}
