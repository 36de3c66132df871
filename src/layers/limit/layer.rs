use tower_layer::Layer;

use super::Limit;
use crate::Service;

/// Admits each connection into its service ([`Service::admit`]: the
/// per-client `rate_limit`, then `conn_limit`, `ip_limit`, `per_ip_limit`,
/// one atomic step). The reservation travels with the connection as its
/// [`Admission`](crate::Admission) and is released exactly once when the
/// connection ends.
///
/// The rate is checked first, so an attempt refused by a limit still spends
/// its token: a client hammering a full service is slowed down too. The
/// rate buckets belong to the service, not to the layer: every listener,
/// layer and [`Service::wrap`] of one service draws on the same bucket for a
/// client (see [`Service::admit`] for their bound).
#[derive(Clone, Debug)]
pub struct LimitLayer {
    service: Service,
}

impl LimitLayer {
    /// The limits of `service`, read from its config for every connection.
    pub fn new(service: &Service) -> Self {
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
