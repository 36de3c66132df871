//! Stats: the `/stats` answer, and the lines logged periodically
//! (`--stats-interval`) and printed on exit.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use monconn::{CloseReport, Registry, ServiceMonitor};
use serde::Serialize;

use crate::backend_errors::{self, BackendErrors, WithBackendErrors};
use crate::logging;

/// The services removed by a reload whose connections have not all ended
/// yet, each with its failed backend connects and the key of its
/// [`Draining`] guard.
static DRAINING: Mutex<Vec<(u64, ServiceMonitor, BackendErrors)>> = Mutex::new(Vec::new());

/// Keeps a removed service in `/stats` (under `draining`) until dropped.
#[derive(Debug)]
pub struct Draining(u64);

impl Draining {
    /// Lists `service`, with its failed backend connects, as draining
    /// until the guard is dropped.
    pub fn list(service: ServiceMonitor, backend_errors: BackendErrors) -> Draining {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let key = NEXT.fetch_add(1, Relaxed);
        draining().push((key, service, backend_errors));
        Draining(key)
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        draining().retain(|(key, _, _)| *key != self.0);
    }
}

fn draining() -> std::sync::MutexGuard<'static, Vec<(u64, ServiceMonitor, BackendErrors)>> {
    // Every change is one push or one retain: a panic cannot leave it half done.
    DRAINING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `/stats` answer: `{"services": [...], "draining": [...],
/// "log_lines_dropped": N, "cluster": {...}}` (`cluster` when bans are
/// shared: connected, last_sync, bans_in, bans_out, errors, pending), with a snapshot per running service (sorted
/// by sid), one per removed service whose connections are still draining
/// (each with its `backend_errors`), and the log lines dropped because
/// stderr did not keep up. `services` comes first, as it did alone.
#[derive(Debug, Serialize)]
pub struct All {
    services: Vec<WithBackendErrors>,
    draining: Vec<WithBackendErrors>,
    log_lines_dropped: u64,
    /// The shared ban list (`--cluster-redis`, `cluster:`), when on.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<monconn::cluster::ClusterStats>,
}

/// The `/stats` answer now.
pub fn all(registry: &Registry, cluster: Option<&monconn::cluster::Cluster>) -> All {
    All {
        cluster: cluster.map(monconn::cluster::Cluster::stats),
        services: registry
            .list()
            .iter()
            .map(|service| WithBackendErrors::of(service, false))
            .collect(),
        draining: draining()
            .iter()
            .map(|(_, service, errors)| WithBackendErrors::new(service.snapshot(), errors.get()))
            .collect(),
        log_lines_dropped: logging::dropped(),
    }
}

/// Logs one line per service every `period`.
pub async fn log_every(registry: Registry, period: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        ticks.tick().await;
        for service in registry.list() {
            let s = service.snapshot();
            tracing::info!(
                sid = %s.sid,
                connections = s.connections,
                ips = s.ip_count,
                bytes_read = s.bytes_read,
                bytes_written = s.bytes_written,
                accepted = s.accepted,
                rejected = total(&s.rejected),
                backend_errors = backend_errors::get(&s.sid),
                "stats"
            );
        }
    }
}

fn total(counts: &std::collections::BTreeMap<String, u64>) -> u64 {
    counts.values().sum()
}

/// Waits, up to `limit`, for the connections that a drain cut to be
/// dropped, so that the final figures are the last ones.
pub async fn wait_closed(registry: &Registry, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while registry.list().iter().any(|s| s.connections() > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Prints one JSON line per service on stdout: its snapshot, plus what the
/// drain did (`drained`, `cut`).
pub fn print_final(registry: &Registry, reports: &[(String, CloseReport)]) {
    for service in registry.list() {
        let snapshot = WithBackendErrors::of(&service, false);
        let mut line = serde_json::to_value(&snapshot).unwrap_or_default();
        let report = reports
            .iter()
            .find(|(sid, _)| sid == service.sid())
            .map(|(_, r)| *r)
            .unwrap_or_default();
        if let Some(map) = line.as_object_mut() {
            map.insert("drained".into(), report.drained.into());
            map.insert("cut".into(), report.cut.into());
        }
        println!("{line}");
    }
}
