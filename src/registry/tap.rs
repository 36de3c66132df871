//! Starting a tap on a registry's connections.

use super::Registry;
use crate::tap::{Tap, TapFilter, TapLimits};

impl Registry {
    /// Starts a tap on the connections `filter` matches, in every service
    /// of this registry, with the default [`TapLimits`]. The connections
    /// already open come first, as `open` events with `live` set.
    ///
    /// See the [`tap`](crate::tap) module for what it costs.
    pub fn tap(&self, filter: TapFilter) -> Tap {
        self.tap_with_limits(filter, TapLimits::default())
    }

    /// Starts a tap as [`Registry::tap`] does, with `limits`.
    pub fn tap_with_limits(&self, filter: TapFilter, limits: TapLimits) -> Tap {
        let (sub, rx) = self.hub.subscribe(filter, limits);
        for service in self.list() {
            if sub.filter().sid().is_some_and(|sid| sid != service.sid()) {
                continue;
            }
            let live: Vec<_> = service.inner.table().conns.values().cloned().collect();
            for record in live {
                self.hub.mark_live(&sub, &record);
            }
        }
        Tap::new(rx, sub, self.hub.clone())
    }
}
