use tower_layer::Layer;

use super::Filter;
use crate::ServiceMonitor;

/// Refuses connections by their client address: the service's blacklist,
/// then its allowlist. See [the module](crate::layers) for a whole stack.
///
/// It refuses connections from addresses on its service's
/// blacklist ([`RejectReason::Blacklisted`](crate::RejectReason::Blacklisted)) or, when the
/// allowlist is not empty, not on it ([`RejectReason::NotAllowed`](crate::RejectReason::NotAllowed)).
/// The lists are the service's [`ServiceConfig::blacklist`](crate::ServiceConfig::blacklist)
/// and [`allowlist`](crate::ServiceConfig::allowlist), changed at runtime with
/// [`ServiceMonitor::ban`](crate::ServiceMonitor::ban),
/// [`ServiceMonitor::unban`](crate::ServiceMonitor::unban) and
/// [`ServiceMonitor::set_config`](crate::ServiceMonitor::set_config); the accept path reads
/// them without a lock.
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use monconn::layers::{FilterLayer, Pass};
/// use monconn::{Accepted, RejectReason, Rejected, Registry};
/// use tower::{Layer, ServiceExt};
///
/// let service = Registry::new().service("web");
/// service.ban("10.0.0.0/8".parse::<ipnet::IpNet>().unwrap());
/// let filter = FilterLayer::new(&service).layer(Pass);
///
/// let local = "127.0.0.1:80".parse().unwrap();
/// let conn = Accepted::new((), "10.1.2.3:5555".parse().unwrap(), local);
/// let err = filter.clone().oneshot(conn).await.unwrap_err();
/// assert_eq!(err.downcast_ref::<Rejected>().unwrap().reason(), &RejectReason::Blacklisted);
///
/// let conn = Accepted::new((), "192.168.0.1:5555".parse().unwrap(), local);
/// assert!(filter.oneshot(conn).await.is_ok());
/// # }
/// ```
///
/// Clones share the service, hence its lists.
#[derive(Clone, Debug)]
pub struct FilterLayer {
    service: ServiceMonitor,
}

impl FilterLayer {
    /// A filter over `service`'s blacklist and allowlist.
    pub fn new(service: &ServiceMonitor) -> Self {
        FilterLayer {
            service: service.clone(),
        }
    }
}

impl<S> Layer<S> for FilterLayer {
    type Service = Filter<S>;

    fn layer(&self, inner: S) -> Filter<S> {
        Filter::new(inner, self.service.clone())
    }
}
