use tower_layer::Layer;

use super::Filter;
use crate::Service;

/// Refuses connections by their client address: the service's blacklist,
/// then its allowlist. See [the module](crate::layers) for an example.
///
/// Clones share the service, hence its lists.
#[derive(Clone, Debug)]
pub struct FilterLayer {
    service: Service,
}

impl FilterLayer {
    /// A filter over `service`'s blacklist and allowlist.
    pub fn new(service: &Service) -> Self {
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
