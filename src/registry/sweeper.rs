//! The one background task per service that closes idle and timed-out connections.

use std::sync::{Arc, Weak};

use super::service::ServiceInner;
use crate::clock::{now_ms, since};
use crate::io::{CloseCause, ReadProbe};

/// Resets the service's "sweeper running" flag however the task ends
/// (returned, or dropped with its runtime), so a later connection starts a new one.
struct Running(Weak<ServiceInner>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(service) = self.0.upgrade() {
            service.sweeper_stopped();
        }
    }
}

/// Ticks every `idle_interval` (read anew at each tick) until the service is
/// dropped or stopped with no connection left.
pub(crate) async fn run(service: Weak<ServiceInner>) {
    let _running = Running(service.clone());
    loop {
        let Some(tick) = service.upgrade().map(|s| s.config().tick()) else {
            return;
        };
        tokio::time::sleep(tick).await;
        let Some(service) = service.upgrade() else {
            return;
        };
        service.sweep();
        service.rates.prune();
        service
            .strikes
            .prune(service.config().auto_ban.map(|r| r.window));
        crate::ServiceMonitor {
            inner: service.clone(),
        }
        .prune_bans();
        #[cfg(feature = "metrics")]
        super::export::publish(&service);
        if service.is_stopped() && service.table().active == 0 {
            return;
        }
    }
}

impl ServiceInner {
    /// Closes the connections idle past `max_idle`, with a read pending past
    /// `read_timeout` or a write pending past `write_timeout`.
    ///
    /// A timeout counts from the later of the wait's start and the last byte
    /// moved either way: a connection moving bytes in either direction is
    /// never cut by `read_timeout` or `write_timeout`. A read pending past
    /// `read_timeout` is probed first (`ConnRecord::probe_read`): it is
    /// cut at the next sweep if its task polled it again, and forgotten if
    /// not (its caller dropped it).
    pub(crate) fn sweep(self: &Arc<Self>) -> usize {
        let config = self.config();
        let now = now_ms();
        let expired = |since_ms: u64, limit: Option<std::time::Duration>| {
            since_ms != 0 && limit.is_some_and(|l| since(now, since_ms) >= l)
        };
        let table = self.table();
        let mut closed = 0;
        for record in table.conns.values() {
            if record.closed().is_some() {
                continue;
            }
            let active = record.last_active();
            let waited = |wait: u64| if wait == 0 { 0 } else { wait.max(active) };
            let cause = if expired(active, config.max_idle) {
                CloseCause::Idle
            } else if expired(waited(record.write_waiting_since()), config.write_timeout) {
                CloseCause::WriteTimeout
            } else if expired(waited(record.read_waiting_since()), config.read_timeout)
                && record.probe_read() == ReadProbe::Pending
            {
                CloseCause::ReadTimeout
            } else {
                continue;
            };
            if record.close(cause) {
                tracing::debug!(sid = %self.sid(), id = record.id(), peer = %record.peer(), %cause, "closing connection");
                closed += 1;
            }
        }
        closed
    }
}
