//! What the forwarder tells operators beyond `/stats`: the Prometheus
//! recorder (connection durations as a histogram with buckets, which
//! Prometheus can aggregate across instances, unlike a summary),
//! `monconn_build_info`, the process's own metrics (open descriptors, RSS,
//! CPU: `metrics-process`), and the access log line of each connection.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use monconn::ConnRecord;

/// The access log's `tracing` target: `--access-log off` filters it out.
pub const ACCESS_TARGET: &str = "access";

/// Upper bounds (seconds) of the connection duration histogram's buckets:
/// from a millisecond (a refused or failed backend) to an hour (ssh).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// How often the process metrics are read.
const PROCESS_EVERY: Duration = Duration::from_secs(1);

/// Installs the Prometheus recorder, with [`DURATION_BUCKETS`] for the
/// connection duration, and records `monconn_build_info`.
///
/// # Errors
/// The exporter's, when a recorder is installed already.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("monconn_connection_duration_seconds".into()),
            &DURATION_BUCKETS,
        )?
        .install_recorder()?;
    metrics::describe_gauge!(
        "monconn_build_info",
        "Always 1; the labels name the build: version of monconn-forwarder."
    );
    metrics::gauge!("monconn_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// Reads the process's metrics (`process_open_fds`,
/// `process_resident_memory_bytes`, `process_cpu_seconds_total`, ...) every
/// second, for ever.
pub async fn process_metrics() {
    let collector = metrics_process::Collector::default();
    collector.describe();
    let mut every = tokio::time::interval(PROCESS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        collector.collect();
    }
}

/// Logs a closed connection at INFO, target [`ACCESS_TARGET`]: service,
/// peer, backend, duration, bytes in (from the client) and out (to it),
/// and how it ended (`normal`, `error`, or the cause of a cut: `idle`,
/// `read_timeout`, `write_timeout`, `kicked`, `shutdown`).
pub fn access_log(sid: &str, record: &ConnRecord, backend: &dyn std::fmt::Display, error: bool) {
    // With the log off (`--access-log off`), nothing is read or formatted.
    if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        return;
    }
    let cause = match record.closed() {
        Some(cause) => cause.to_string(),
        None if error => "error".to_owned(),
        None => "normal".to_owned(),
    };
    let peer: SocketAddr = record.peer();
    tracing::info!(
        target: ACCESS_TARGET,
        sid,
        id = record.id(),
        %peer,
        %backend,
        duration_ms = record.age().as_millis() as u64,
        bytes_in = record.bytes_read(),
        bytes_out = record.bytes_written(),
        cause,
        "closed"
    );
}
