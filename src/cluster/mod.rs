//! A ban list shared by many instances through Redis or Valkey (feature
//! `redis`).
//!
//! What is shared: bans, with their expiry, of every service by sid, made
//! through [`ServiceMonitor::ban`](crate::ServiceMonitor::ban),
//! [`ban_for`](crate::ServiceMonitor::ban_for) and
//! [`unban`](crate::ServiceMonitor::unban), the admin API and the
//! [`AutoBan`](crate::AutoBan) rules alike. What is not: connection counts
//! and rate buckets (limits are per instance), nor the lists of each
//! instance's own config.
//!
//! - The shared list is the truth: one sorted set per service
//!   (`{key}:bans:{sid}`, each net scored by its expiry in unix ms), and
//!   every change is also published on `{key}:bans`.
//! - Each instance enforces its local copy: the accept path never waits on
//!   the network. Changes arrive by pub/sub within milliseconds; the whole
//!   list is read again at connect and every
//!   [`resync_every`](ClusterConfig::resync_every).
//! - Redis down: each instance keeps enforcing its last list, counts and
//!   logs the outage (once), keeps its own new bans pending, reconnects
//!   with a backoff (100 ms doubling up to
//!   [`max_backoff`](ClusterConfig::max_backoff)), then pushes what is
//!   pending and reads the list again.
//! - The URL's credentials are never logged: logs name the address alone.
//!
//! # Examples
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use monconn::cluster::{Cluster, ClusterConfig};
//!
//! let registry = monconn::Registry::new();
//! let web = registry.service("web");
//! let cluster = Cluster::start(&registry, ClusterConfig::new("redis://127.0.0.1:6379")?.key("edge"))?;
//! web.ban_for("192.0.2.7".parse::<std::net::IpAddr>()?, std::time::Duration::from_secs(600));
//! // ...every instance with the same key refuses 192.0.2.7 within milliseconds.
//! println!("{}", serde_json::to_string(&cluster.stats())?);
//! # Ok(()) }
//! ```

mod config;
mod stats;
mod sync;
mod wire;

pub use config::{ClusterConfig, ClusterError};
pub use stats::ClusterStats;

use std::fmt;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::Registry;

/// Changes waiting for the sync task, at most.
const QUEUE: usize = 65_536;

/// The running sync of a [`Registry`]'s bans with the shared list. Cheap to
/// clone; clones share the sync, which stops (and stops listening to the
/// registry) when the last one is dropped.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    counters: Arc<stats::Counters>,
    addr: String,
    registry: Registry,
    _stop: oneshot::Sender<()>,
}

impl Cluster {
    /// Starts syncing `registry`'s bans with the shared list, in a task of
    /// the current tokio runtime. It returns at once: the first connect
    /// happens in the task, and until it succeeds the instance enforces its
    /// own bans (and keeps them pending).
    ///
    /// # Errors
    /// [`ClusterError::NoRuntime`] outside a tokio runtime,
    /// [`ClusterError::EmptyKey`] for an empty key prefix.
    pub fn start(registry: &Registry, config: ClusterConfig) -> Result<Cluster, ClusterError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ClusterError::NoRuntime)?;
        if config.key.is_empty() {
            return Err(ClusterError::EmptyKey);
        }
        let counters = Arc::new(stats::Counters::default());
        let (changes, queue) = mpsc::channel(QUEUE);
        let dropped = counters.clone();
        registry.set_ban_sink(Some(Box::new(move |sid, change| {
            if changes.try_send((Arc::<str>::from(sid), change)).is_err() {
                dropped.error();
            }
        })));
        let (stop, stopped) = oneshot::channel();
        let addr = config.addr();
        let task = sync::Sync::new(registry.clone(), config, counters.clone());
        runtime.spawn(task.run(queue, stopped));
        Ok(Cluster {
            inner: Arc::new(Inner {
                counters,
                addr,
                registry: registry.clone(),
                _stop: stop,
            }),
        })
    }

    /// The sync's figures now.
    pub fn stats(&self) -> ClusterStats {
        self.inner.counters.get()
    }

    /// The server's address, without credentials.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.registry.set_ban_sink(None);
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("addr", &self.inner.addr)
            .field("stats", &self.stats())
            .finish()
    }
}
