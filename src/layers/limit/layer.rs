use tower_layer::Layer;

use super::Limit;
use crate::ServiceMonitor;

/// Admits each connection into its service ([`ServiceMonitor::admit`]: the
/// per-client `rate_limit`, then `conn_limit`, `ip_limit`, `per_ip_limit`,
/// one atomic step). The reservation travels with the connection as its
/// [`Admission`](crate::Admission) and is released exactly once when the
/// connection ends.
///
/// The rate is checked first, so an attempt refused by a limit still spends
/// its token: a client hammering a full service is slowed down too. The
/// rate buckets belong to the service, not to the layer: every listener,
/// layer and [`ServiceMonitor::wrap`] of one service draws on the same bucket for a
/// client (see [`ServiceMonitor::admit`] for their bound). IPv6 clients are keyed
/// by prefix: see [`client_key`](crate::client_key).
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use monconn::layers::{LimitLayer, Pass};
/// use monconn::{Accepted, RejectReason, Rejected, Registry, ServiceConfig};
/// use tower::{Layer, ServiceExt};
///
/// let service = Registry::new().create("web", ServiceConfig::default().conn_limit(1)).unwrap();
/// let limit = LimitLayer::new(&service).layer(Pass);
/// let (peer, local) = ("10.0.0.1:5555".parse().unwrap(), "127.0.0.1:80".parse().unwrap());
///
/// let first = limit.clone().oneshot(Accepted::new((), peer, local)).await.unwrap();
/// assert!(first.admission.is_some());
/// assert_eq!(service.connections(), 1);
/// let err = limit.clone().oneshot(Accepted::new((), peer, local)).await.unwrap_err();
/// assert_eq!(err.downcast_ref::<Rejected>().unwrap().reason(), &RejectReason::ConnLimit);
///
/// drop(first); // the slot is given back
/// assert_eq!(service.connections(), 0);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct LimitLayer {
    service: ServiceMonitor,
}

impl LimitLayer {
    /// The limits of `service`, read from its config for every connection.
    pub fn new(service: &ServiceMonitor) -> Self {
        LimitLayer {
            service: service.clone(),
        }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;

    fn layer(&self, inner: S) -> Limit<S> {
        Limit::new(inner, self.service.clone())
    }
}
