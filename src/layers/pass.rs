//! `Pass`: the innermost service of an accept stack.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use tower::Service;

use crate::Accepted;

/// The innermost service of an accept stack: hands every connection back,
/// as it is, to the [`Listener`](crate::Listener).
///
/// # Examples
/// ```
/// use monconn::layers::{FilterLayer, LimitLayer, Pass};
/// use tower::ServiceBuilder;
///
/// let service = monconn::Registry::new().service("web");
/// let stack = ServiceBuilder::new()
///     .layer(FilterLayer::new(&service))
///     .layer(LimitLayer::new(&service))
///     .service(Pass);
/// # let _ = stack;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Pass;

impl<IO> Service<Accepted<IO>> for Pass {
    type Response = Accepted<IO>;
    type Error = Infallible;
    type Future = Ready<Result<Accepted<IO>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, conn: Accepted<IO>) -> Self::Future {
        ready(Ok(conn))
    }
}
