//! What the sync has done: the `cluster` object of `/stats`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

/// The shared ban list's state on this instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStats {
    /// Connected to Redis (subscribed, last command answered).
    pub connected: bool,
    /// When the whole list was last read, in unix seconds; `null` if never.
    pub last_sync: Option<u64>,
    /// Ban changes learnt from other instances.
    pub bans_in: u64,
    /// Ban changes of this instance written to Redis.
    pub bans_out: u64,
    /// Failed connects and commands, and changes dropped for lack of room.
    pub errors: u64,
    /// Changes of this instance waiting for Redis.
    pub pending: u64,
}

/// The live counters behind [`ClusterStats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) connected: AtomicBool,
    pub(super) last_sync_ms: AtomicU64,
    pub(super) bans_in: AtomicU64,
    pub(super) bans_out: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) pending: AtomicU64,
}

impl Counters {
    pub(super) fn get(&self) -> ClusterStats {
        let last = self.last_sync_ms.load(Relaxed);
        ClusterStats {
            connected: self.connected.load(Relaxed),
            last_sync: (last != 0).then_some(last / 1000),
            bans_in: self.bans_in.load(Relaxed),
            bans_out: self.bans_out.load(Relaxed),
            errors: self.errors.load(Relaxed),
            pending: self.pending.load(Relaxed),
        }
    }

    pub(super) fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }
}
