//! What a registry tells whoever listens (the shared ban list, feature
//! `redis`) about the bans made on this instance: a callback installed from
//! above, so that the registry never calls up into the cluster module.

use std::fmt;

use arc_swap::ArcSwapOption;
use ipnet::IpNet;

/// A change of a service's bans made on this instance (through its API, the
/// admin API or its auto-ban rule); changes learnt from other instances are
/// not reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum BanChange {
    /// Banned until this unix ms (`None`: no expiry).
    Ban { net: IpNet, until: Option<u64> },
    /// Unbanned.
    Unban { net: IpNet },
}

/// Receives each service's ban changes: `(sid, change)`.
pub(crate) type Sink = Box<dyn Fn(&str, BanChange) + Send + Sync>;

/// Shared by a registry and its services.
#[derive(Default)]
pub(crate) struct Hooks {
    sink: ArcSwapOption<Sink>,
}

impl Hooks {
    /// Tells the sink, if any, of `change`.
    pub(crate) fn emit(&self, sid: &str, change: BanChange) {
        if let Some(sink) = &*self.sink.load() {
            sink(sid, change);
        }
    }

    /// Installs (or, with `None`, removes) the sink.
    #[cfg(feature = "redis")]
    pub(crate) fn set(&self, sink: Option<Sink>) {
        self.sink.store(sink.map(std::sync::Arc::new));
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("sink", &self.sink.load().is_some())
            .finish()
    }
}
