//! Failed backend connects, per service: the forwarder's own counter (the
//! library knows nothing of backends). Served as `backend_errors` in each
//! service's object of `/stats`, `/stats/{sid}` and the final lines, and as
//! `monconn_backend_errors_total{service}` in `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};

use monconn::{ServiceMonitor, ServiceSnapshot};
use serde::Serialize;

/// A service's failed backend connects. Cheap to clone; clones share the count.
#[derive(Clone, Debug, Default)]
pub struct BackendErrors(Arc<AtomicU64>);

/// The counters of the services in the registry, by sid. A service keeps
/// its counter across reloads (moved or changed); one a reload removes takes
/// it along while it drains ([`take`]); a service created in the registry
/// gets a new one ([`fresh`]), from zero, as its `monconn::ServiceMonitor` starts.
static RUNNING: Mutex<BTreeMap<String, BackendErrors>> = Mutex::new(BTreeMap::new());

fn running() -> MutexGuard<'static, BTreeMap<String, BackendErrors>> {
    // Every change is one insert or remove: a panic cannot leave it half done.
    RUNNING.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BackendErrors {
    /// The counter of the service `sid`, created at zero if it has none.
    pub fn of(sid: &str) -> BackendErrors {
        running().entry(sid.to_owned()).or_default().clone()
    }

    /// Counts one failed connect to the backend.
    pub fn count(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    /// Failed connects so far.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Gives the service `sid` a new counter at zero: for a service just
/// created in the registry (a forwarder started again in the same process,
/// say, starts from zero, as its `monconn::ServiceMonitor` does).
pub fn fresh(sid: &str) {
    running().insert(sid.to_owned(), BackendErrors::default());
}

/// Takes the counter of the service `sid` out of the running ones (a
/// reload removed it); zero if it had none.
pub fn take(sid: &str) -> BackendErrors {
    running().remove(sid).unwrap_or_default()
}

/// Failed connects of the running service `sid` so far; 0 if it has no counter.
pub fn get(sid: &str) -> u64 {
    running().get(sid).map_or(0, BackendErrors::get)
}

/// A service's snapshot with its `backend_errors`: the object `/stats`
/// lists, `/stats/{sid}` answers and the final lines print.
#[derive(Debug, Serialize)]
pub struct WithBackendErrors {
    #[serde(flatten)]
    snapshot: ServiceSnapshot,
    backend_errors: u64,
}

impl WithBackendErrors {
    /// `snapshot` with `backend_errors` failed connects.
    pub fn new(snapshot: ServiceSnapshot, backend_errors: u64) -> Self {
        WithBackendErrors {
            snapshot,
            backend_errors,
        }
    }

    /// The running `service`'s snapshot (with its connections or not) and count.
    pub fn of(service: &ServiceMonitor, with_conns: bool) -> Self {
        Self::new(service.snapshot(with_conns), get(service.sid()))
    }
}

/// Publishes `monconn_backend_errors_total{service}` for the running
/// service `sid` to the `metrics` facade.
pub fn publish(sid: &str) {
    static DESCRIBED: Once = Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(
            "monconn_backend_errors_total",
            metrics::Unit::Count,
            "Failed connections to a backend."
        );
    });
    metrics::counter!("monconn_backend_errors_total", "service" => sid.to_owned())
        .absolute(get(sid));
}
