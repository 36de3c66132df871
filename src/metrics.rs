//! Export of service counters to the [`metrics`](https://docs.rs/metrics) facade.
//!
//! Each service publishes its figures, labelled `service = sid` (never the
//! peer's IP), from its sweeper's tick and whenever
//! [`ServiceMonitor::publish_metrics`](crate::ServiceMonitor::publish_metrics) is called (at scrape time, say); never per
//! read or write. The connection duration histogram is recorded as each
//! connection closes.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `monconn_connections_accepted_total` | counter | `service` |
//! | `monconn_connections_rejected_total` | counter | `service`, `reason` |
//! | `monconn_connections_closed_total` | counter | `service`, `cause` |
//! | `monconn_connections_active` | gauge | `service` |
//! | `monconn_client_ips_active` | gauge | `service` |
//! | `monconn_bytes_read_total` | counter (bytes) | `service` |
//! | `monconn_bytes_written_total` | counter (bytes) | `service` |
//! | `monconn_accept_errors_total` | counter | `service` |
//! | `monconn_connection_duration_seconds` | histogram (seconds) | `service` |
//!
//! The histogram takes one sample per closed connection. An exporter may keep
//! samples until it is drained: `metrics-exporter-prometheus` installed with
//! `install_recorder` or `build_recorder` (rather than `install`) does, and
//! needs `PrometheusHandle::run_upkeep` called every few seconds, or its
//! memory grows with every connection until the next scrape.
//!
//! Counters carry units `count` or `bytes`, gauges `count`, the histogram
//! `seconds`; every metric has a description ([`describe`]). Every rejection
//! reason and close cause is published, zeros included, so that rates can be
//! computed from the first scrape. Counters are published as absolute values
//! of the service's own totals: after [`ServiceMonitor::reset_stats`](crate::ServiceMonitor::reset_stats) or
//! [`ServiceMonitor::take_bytes`](crate::ServiceMonitor::take_bytes) an exporter keeps the higher value it already saw
//! (Prometheus counters never go down) until the totals pass it again.
//!
//! # Examples
//! Publishing at scrape time with metrics-exporter-prometheus:
//! ```
//! let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
//! let handle = recorder.handle();
//! let registry = monconn::Registry::new();
//! let service = registry.service("web");
//! metrics::with_local_recorder(&recorder, || {
//!     monconn::metrics::describe();
//!     for service in registry.list() {
//!         service.publish_metrics();
//!     }
//! });
//! let text = handle.render();
//! assert!(text.contains("monconn_connections_accepted_total{service=\"web\"} 0"));
//! # drop(service);
//! ```

/// Describes every metric (help text and unit) to the installed recorder.
/// Called once by the first publish; call it again after installing a new
/// recorder.
pub fn describe() {
    crate::registry::describe_metrics();
}
