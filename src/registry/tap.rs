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

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::Registry;
    use crate::tap::TapFilter;

    /// A tap marks what it matches; gone, it leaves a mark that the next
    /// write clears; a new one marks it again.
    #[tokio::test]
    async fn marks_follow_the_taps() {
        let registry = Registry::new();
        let service = registry.service("marks");
        let (_peer, io) = tokio::io::duplex(64);
        let addr = "192.0.2.1:1".parse().unwrap();
        let mut conn = service.wrap(io, addr, addr).unwrap();
        assert!(!conn.record().watched());
        let elsewhere = registry.tap(TapFilter::new().with_sid("other"));
        assert!(!conn.record().watched());
        let tap = registry.tap(TapFilter::new().with_sid("marks"));
        assert!(conn.record().tapped());
        drop(tap);
        assert!(conn.record().tapped());
        conn.write_all(b"x").await.unwrap();
        assert!(!conn.record().watched());
        let _tap = registry.tap(TapFilter::new().with_conn(conn.record().id()));
        assert!(conn.record().tapped());
        drop(elsewhere);
    }
}
