//! Ending connections from outside: kicks, and the graceful close of a service.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;

use super::service::{lock, ServiceMonitor, DRAINING, STOPPED};
use crate::io::CloseCause;
use crate::ip::canonical_ip;

/// What a graceful [`ServiceMonitor::close`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CloseReport {
    /// Connections that ended by themselves within `wait_timeout`.
    pub drained: usize,
    /// Connections still open at `wait_timeout`, closed with
    /// [`CloseCause::Shutdown`]. This includes connections admitted but
    /// still inside the accept layers (a TLS handshake, say): they are born
    /// closed when attached, so the [`Listener`](crate::Listener) never
    /// yields them, and an [`Admission::attach`](crate::Admission::attach)
    /// made after the cut gives a connection whose reads and writes fail
    /// with `ConnectionAborted`.
    pub cut: usize,
}

// === impl ServiceMonitor ===

impl ServiceMonitor {
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
    /// `ConnectionAborted`), and with them every connection admitted but
    /// still in the accept layers (see [`CloseReport::cut`]). Idempotent.
    pub async fn close(&self) -> CloseReport {
        let inner = &self.inner;
        // Under the table lock, as `admit` checks the state: no admission
        // slips in between the state change and the count.
        let start = {
            let table = lock(&inner.table);
            match inner.state.load(Relaxed) {
                // Closed before: whatever is left was cut then, or is born
                // closed (see `register`).
                STOPPED => return CloseReport::default(),
                _ => inner.state.store(DRAINING, Relaxed),
            }
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
        // Under the table lock, as `register` checks the state: a connection
        // attached after this point is born closed (see `register`).
        let table = lock(&inner.table);
        let remaining = table.active;
        // A concurrent close may have cut already: the first one counts.
        if inner.state.swap(STOPPED, Relaxed) == STOPPED {
            return CloseReport::default();
        }
        let listed = table
            .conns
            .values()
            .filter(|r| r.close(CloseCause::Shutdown))
            .count();
        // Admitted but not attached yet: still in the accept layers (a
        // handshake, say). Each is born closed when it is attached.
        let in_flight = table.active.saturating_sub(table.conns.len());
        drop(table);
        CloseReport {
            drained: start.saturating_sub(remaining),
            cut: listed + in_flight,
        }
    }
}
