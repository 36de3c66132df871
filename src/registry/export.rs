//! The registry's seam to the `metrics` facade (feature `metrics`): what
//! its services publish and record. [`crate::metrics`] documents it and
//! reads the registry through it; nothing here imports that module.

use std::sync::{Arc, Once};
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, Key, Label, Level,
    Metadata, Unit,
};

use super::service::{ServiceInner, ServiceMonitor};

/// Describes every metric (help text and unit) to the installed recorder;
/// [`crate::metrics::describe`].
pub(crate) fn describe() {
    describe_counter!(
        "monconn_connections_accepted_total",
        Unit::Count,
        "Connections admitted and monitored."
    );
    describe_counter!(
        "monconn_connections_rejected_total",
        Unit::Count,
        "Connections refused at accept time, by reason."
    );
    describe_counter!(
        "monconn_connections_closed_total",
        Unit::Count,
        "Connections ended, by cause."
    );
    describe_gauge!(
        "monconn_connections_active",
        Unit::Count,
        "Open connections."
    );
    describe_gauge!(
        "monconn_client_ips_active",
        Unit::Count,
        "Distinct client IPs with an open connection."
    );
    describe_counter!(
        "monconn_bytes_read_total",
        Unit::Bytes,
        "Bytes read from clients."
    );
    describe_counter!(
        "monconn_bytes_written_total",
        Unit::Bytes,
        "Bytes written to clients."
    );
    describe_counter!(
        "monconn_accept_errors_total",
        Unit::Count,
        "Accepts that failed for lack of resources (out of file descriptors, say)."
    );
    describe_histogram!(
        "monconn_connection_duration_seconds",
        Unit::Seconds,
        "How long connections stayed open."
    );
}

fn describe_once() {
    static DESCRIBED: Once = Once::new();
    DESCRIBED.call_once(describe);
}

impl ServiceMonitor {
    /// Publishes the service's figures to the `metrics` facade now (see
    /// [`crate::metrics`]).
    pub fn publish_metrics(&self) {
        publish(&self.inner);
    }
}

/// Publishes the figures of the service `inner` (its sweeper does, at each tick).
pub(crate) fn publish(inner: &Arc<ServiceInner>) {
    describe_once();
    let service = ServiceMonitor {
        inner: inner.clone(),
    };
    let s = service.snapshot();
    let sid = s.sid;
    counter!("monconn_connections_accepted_total", "service" => sid.clone()).absolute(s.accepted);
    for (reason, n) in s.rejected {
        counter!("monconn_connections_rejected_total", "service" => sid.clone(), "reason" => reason).absolute(n);
    }
    for (cause, n) in s.closed {
        counter!("monconn_connections_closed_total", "service" => sid.clone(), "cause" => cause)
            .absolute(n);
    }
    gauge!("monconn_connections_active", "service" => sid.clone()).set(s.connections as f64);
    gauge!("monconn_client_ips_active", "service" => sid.clone()).set(s.ip_count as f64);
    counter!("monconn_bytes_read_total", "service" => sid.clone()).absolute(s.bytes_read);
    counter!("monconn_bytes_written_total", "service" => sid.clone()).absolute(s.bytes_written);
    counter!("monconn_accept_errors_total", "service" => sid).absolute(s.accept_errors);
}

/// The key of a service's connection duration histogram, built once per
/// service, and retained: its labels are shared, so that the copy a recorder
/// keeps of it at each close (`metrics-exporter-prometheus` does) is an
/// `Arc` clone, not three allocations.
pub(crate) fn duration_key(sid: &str) -> Key {
    Key::from_parts(
        "monconn_connection_duration_seconds",
        vec![Label::new("service", sid.to_owned())],
    )
    .to_retained()
}

/// Records one connection's duration under its service's [`duration_key`].
pub(crate) fn record_duration(key: &Key, age: Duration) {
    // What `histogram!` passes, with the key built once rather than per call.
    static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
    metrics::with_recorder(|recorder| recorder.register_histogram(key, &METADATA))
        .record(age.as_secs_f64());
}
