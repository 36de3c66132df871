//! The last refusals of a service, with the client and the reason: what an
//! operator looks at first when a counter of rejections moves.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::reason::RejectReason;
use super::service::lock;
use crate::clock::{now_ms, unix_secs};

/// Refusals kept per service.
pub const RECENT_REJECTIONS: usize = 32;

/// One refused connection, as
/// [`ServiceMonitor::recent_rejections`](crate::ServiceMonitor::recent_rejections)
/// lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The refused client (the one a PROXY header named, behind a load balancer).
    pub peer: SocketAddr,
    /// Why, as in snapshots' `rejected` (`blacklisted`, `conn_limit`, ...).
    pub reason: String,
    /// When, in seconds since the Unix epoch.
    pub at: u64,
}

/// A ring of the last [`RECENT_REJECTIONS`] refusals: a refusal costs one
/// short lock and no allocation once the ring is full (a reason of a user's
/// own layer is copied).
#[derive(Debug, Default)]
pub(crate) struct Recent {
    ring: Mutex<VecDeque<Rejection>>,
}

impl Recent {
    pub(crate) fn push(&self, peer: SocketAddr, reason: &RejectReason) {
        let mut ring = lock(&self.ring);
        let mut entry = if ring.len() == RECENT_REJECTIONS {
            ring.pop_front().expect("the ring is full")
        } else {
            Rejection {
                peer,
                reason: String::new(),
                at: 0,
            }
        };
        entry.peer = peer;
        entry.reason.clear();
        entry.reason.push_str(reason.as_str());
        entry.at = unix_secs(now_ms());
        ring.push_back(entry);
    }

    /// The refusals, newest first.
    pub(crate) fn list(&self) -> Vec<Rejection> {
        lock(&self.ring).iter().rev().cloned().collect()
    }
}
