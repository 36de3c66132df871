//! Ending connections from outside: kicks, and the graceful close of a service.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;

use super::admission::canonical_ip;
use super::reason::CloseCause;
use super::service::{lock, Service, DRAINING, STOPPED};

/// What a graceful [`Service::close`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CloseReport {
    /// Connections that ended by themselves within `wait_timeout`.
    pub drained: usize,
    /// Connections still open at `wait_timeout`, closed with
    /// [`CloseCause::Shutdown`].
    pub cut: usize,
}

// === impl Service ===

impl Service {
    /// Closes connection `id` ([`CloseCause::Kicked`]): its next poll fails
    /// with `ConnectionAborted`. Returns whether it was open.
    pub fn kick(&self, id: u64) -> bool {
        let table = lock(&self.inner.table);
        table
            .conns
            .get(&id)
            .is_some_and(|r| r.close(CloseCause::Kicked))
    }

    /// Closes every open connection from `ip` (IPv4-mapped addresses match
    /// their IPv4 address). Returns how many it closed.
    pub fn kick_ip(&self, ip: IpAddr) -> usize {
        let ip = canonical_ip(ip);
        let table = lock(&self.inner.table);
        table
            .conns
            .values()
            .filter(|r| canonical_ip(r.peer().ip()) == ip)
            .filter(|r| r.close(CloseCause::Kicked))
            .count()
    }

    /// Stops the service gracefully: admits nothing more, lets live
    /// connections go on for up to `wait_timeout`, then closes the rest with
    /// [`CloseCause::Shutdown`] (their next poll fails with
    /// `ConnectionAborted`). Idempotent.
    pub async fn close(&self) -> CloseReport {
        let inner = &self.inner;
        // Under the table lock, as `admit` checks the state: no admission
        // slips in between the state change and the count.
        let start = {
            let table = lock(&inner.table);
            inner.state.store(DRAINING, Relaxed);
            table.active
        };
        let deadline = tokio::time::Instant::now() + inner.config.load().wait_timeout;
        loop {
            let released = inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.connections() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                break;
            }
        }
        let table = lock(&inner.table);
        let remaining = table.active;
        let cut = table
            .conns
            .values()
            .filter(|r| r.close(CloseCause::Shutdown))
            .count();
        drop(table);
        inner.state.store(STOPPED, Relaxed);
        CloseReport {
            drained: start.saturating_sub(remaining),
            cut,
        }
    }
}
