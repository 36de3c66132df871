//! Stats lines: periodic (`--stats-interval`) and final (on exit).

use std::time::Duration;

use monconn::{CloseReport, Registry, ServiceSnapshot};

/// Logs one line per service every `period`.
pub async fn log_every(registry: Registry, period: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        ticks.tick().await;
        for service in registry.list() {
            let s = service.snapshot(false);
            tracing::info!(
                sid = %s.sid,
                connections = s.connections,
                ips = s.ip_count,
                bytes_read = s.bytes_read,
                bytes_written = s.bytes_written,
                accepted = s.accepted,
                rejected = total(&s.rejected),
                backend_errors = s.backend_errors,
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
        let snapshot: ServiceSnapshot = service.snapshot(false);
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
