use std::sync::Arc;

use tower_layer::Layer;

use super::rate::RateTable;
use super::Limit;
use crate::Service;

/// Reserves each connection's slot in its service ([`Service::admit`]:
/// `conn_limit`, `ip_limit`, `per_ip_limit`, one atomic step) and applies the
/// service's per-IP `rate_limit`. The reservation travels with the
/// connection as its [`Admission`](crate::Admission) and is released exactly
/// once when the connection ends.
///
/// The rate is checked first, so an attempt refused by a limit still spends
/// its token: a client hammering a full service is slowed down too. The
/// buckets are kept for at most 65,536 client IPs at a time.
///
/// Clones share the per-IP rate buckets: give every listener of one service
/// the same layer (or a clone) to share the rate among them.
#[derive(Clone, Debug)]
pub struct LimitLayer {
    service: Service,
    rates: Arc<RateTable>,
}

impl LimitLayer {
    /// The limits of `service`, read from its config for every connection.
    pub fn new(service: &Service) -> Self {
        LimitLayer {
            service: service.clone(),
            rates: Arc::default(),
        }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;

    fn layer(&self, inner: S) -> Limit<S> {
        Limit::with_rates(inner, self.service.clone(), self.rates.clone())
    }
}
