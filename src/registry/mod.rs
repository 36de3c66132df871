//! The registry of services, their live connection tables and snapshots.
//!
//! A [`Registry`] maps a service id (`sid`, usually the listen address) to a
//! [`ServiceMonitor`]. Each service holds its [`ServiceConfig`], exact live counters
//! and the table of its open connections' [`ConnRecord`]s; one sweeper task
//! per service closes idle and timed-out connections.
//!
//! # Examples
//! ```
//! use std::time::Duration;
//! use monconn::{Registry, ServiceConfig};
//!
//! let registry = Registry::new();
//! let web = registry.create(
//!     "web",
//!     ServiceConfig::default().max_idle(Duration::from_secs(60)),
//! ).unwrap();
//! assert_eq!(registry.get("web").unwrap().sid(), web.sid());
//! let stats = registry.snapshot();
//! assert_eq!(stats.services.len(), 1);
//! ```

mod addr_index;
mod admission;
mod auto_ban;
mod bans;
mod close;
mod config;
#[cfg(feature = "metrics")]
mod export;
mod hooks;
mod lookup;
mod rate;
mod reason;
mod recent;
mod rules;
mod service;
mod snapshot;
mod sweeper;
mod tap;

pub use admission::Admission;
pub use auto_ban::{AutoBan, AutoBanCounts};
#[cfg(feature = "redis")]
pub(crate) use bans::{unix_ms, NEVER};
pub use bans::{BanSource, TimedBan};
pub use close::CloseReport;
pub use config::{RateLimit, ServiceConfig};
#[cfg(feature = "metrics")]
pub(crate) use export::describe as describe_metrics;
#[cfg(feature = "redis")]
pub(crate) use hooks::{BanChange, Sink as BanSink};
pub use reason::{RejectReason, Rejected};
pub use recent::{Rejection, RECENT_REJECTIONS};
pub use service::{ByteCounts, ServiceMonitor};

pub use snapshot::{ConnSnapshot, IpConnections, ServiceSnapshot};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::Serialize;

use crate::tap::Hub;

/// Services by id. Cheap to clone; clones share the same services.
///
/// [`Registry::global`] is a process-wide default, like the Go tool's
/// package-level table.
///
/// # Examples
/// ```
/// use monconn::{Registry, ServiceConfig};
///
/// let registry = Registry::new();
/// let web = registry.create("web", ServiceConfig::default().conn_limit(100)).unwrap();
/// let ssh = registry.service("ssh"); // created with the defaults
/// assert_eq!(registry.get("web").unwrap().sid(), web.sid());
/// let sids: Vec<_> = registry.snapshot().services.into_iter().map(|s| s.sid).collect();
/// assert_eq!(sids, ["ssh", "web"]);
/// # drop(ssh);
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    services: Arc<RwLock<BTreeMap<Arc<str>, ServiceMonitor>>>,
    /// Told of every service's ban changes (the shared ban list listens).
    hooks: Arc<hooks::Hooks>,
    /// Its taps, shared by all its services' connections.
    hub: Arc<Hub>,
}

/// The error of [`Registry::create`]: the sid names a service already.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidTaken {
    sid: String,
    running: bool,
}

impl SidTaken {
    /// The sid that is taken.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// Whether the service under that sid is running (else it is stopped,
    /// and [`Registry::remove`] frees its sid).
    pub fn is_running(&self) -> bool {
        self.running
    }
}

impl fmt::Display for SidTaken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.running { "running" } else { "stopped" };
        write!(
            f,
            "service `{}` already exists ({state}); use Registry::create_or_update \
             to change its config, or remove it first",
            self.sid
        )
    }
}

impl std::error::Error for SidTaken {}

impl From<SidTaken> for std::io::Error {
    fn from(e: SidTaken) -> Self {
        std::io::Error::new(std::io::ErrorKind::AlreadyExists, e)
    }
}

/// Every service's snapshot, as `{"services": [...]}`.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RegistrySnapshot {
    /// One snapshot per service, sorted by sid.
    pub services: Vec<ServiceSnapshot>,
}

fn normalize(sid: &str) -> &str {
    if sid.is_empty() {
        "default"
    } else {
        sid
    }
}

impl Registry {
    // A panic elsewhere cannot leave the map half-written (every write is one
    // insert or remove), so a poisoned lock is taken as it is.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<Arc<str>, ServiceMonitor>> {
        self.services.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<Arc<str>, ServiceMonitor>> {
        self.services
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide registry.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    /// The service `sid`, created with the default config if it does not
    /// exist. An empty sid is `"default"`.
    pub fn service(&self, sid: &str) -> ServiceMonitor {
        if let Some(s) = self.get(sid) {
            return s;
        }
        self.create_if_absent(sid, ServiceConfig::default())
    }

    /// Creates the service `sid` with `config`. An empty sid is `"default"`.
    ///
    /// A sid names one service: if `sid` is taken (running, or stopped and
    /// not yet [removed](Registry::remove)), nothing changes and the error
    /// says so. [`Registry::create_or_update`] replaces the config of an
    /// existing service instead.
    ///
    /// # Examples
    /// ```
    /// use monconn::{Registry, ServiceConfig};
    ///
    /// let registry = Registry::new();
    /// let web = registry.create("web", ServiceConfig::default().conn_limit(100)).unwrap();
    /// let err = registry.create("web", ServiceConfig::default()).unwrap_err();
    /// assert_eq!(err.to_string(), "service `web` already exists (running); \
    ///     use Registry::create_or_update to change its config, or remove it first");
    /// assert_eq!(web.config().conn_limit, Some(100));
    /// ```
    #[doc(alias = "NewService")]
    pub fn create(&self, sid: &str, config: ServiceConfig) -> Result<ServiceMonitor, SidTaken> {
        let sid = normalize(sid);
        let mut services = self.write();
        if let Some(s) = services.get(sid) {
            return Err(SidTaken {
                sid: sid.to_owned(),
                running: s.is_running(),
            });
        }
        let service =
            ServiceMonitor::new(Arc::from(sid), config, self.hub.clone(), self.hooks.clone());
        services.insert(Arc::from(sid), service.clone());
        Ok(service)
    }

    /// Creates the service `sid` with `config`, or, if it exists, replaces
    /// its config with `config` (see [`ServiceMonitor::set_config`]: its live
    /// connections stay) and returns it.
    ///
    /// # Examples
    /// ```
    /// use monconn::{Registry, ServiceConfig};
    ///
    /// let registry = Registry::new();
    /// let web = registry.create_or_update("web", ServiceConfig::default());
    /// registry.create_or_update("web", ServiceConfig::default().conn_limit(10));
    /// assert_eq!(web.config().conn_limit, Some(10));
    /// ```
    pub fn create_or_update(&self, sid: &str, config: ServiceConfig) -> ServiceMonitor {
        let sid = normalize(sid);
        let mut services = self.write();
        if let Some(s) = services.get(sid) {
            s.set_config(config);
            return s.clone();
        }
        let service =
            ServiceMonitor::new(Arc::from(sid), config, self.hub.clone(), self.hooks.clone());
        services.insert(Arc::from(sid), service.clone());
        service
    }

    fn create_if_absent(&self, sid: &str, config: ServiceConfig) -> ServiceMonitor {
        let sid = normalize(sid);
        let mut services = self.write();
        services
            .entry(Arc::from(sid))
            .or_insert_with(|| {
                ServiceMonitor::new(Arc::from(sid), config, self.hub.clone(), self.hooks.clone())
            })
            .clone()
    }

    /// Installs (or removes) the receiver of every service's ban changes.
    #[cfg(feature = "redis")]
    pub(crate) fn set_ban_sink(&self, sink: Option<BanSink>) {
        self.hooks.set(sink);
    }

    /// The service `sid`, if it exists.
    #[doc(alias = "GetService")]
    pub fn get(&self, sid: &str) -> Option<ServiceMonitor> {
        let services = self.read();
        services.get(normalize(sid)).cloned()
    }

    /// Removes the service `sid` and closes it gracefully (see
    /// [`ServiceMonitor::close`]). `None` if there was no such service.
    #[doc(alias = "DelService")]
    pub async fn remove(&self, sid: &str) -> Option<CloseReport> {
        let service = {
            let mut services = self.write();
            services.remove(normalize(sid))?
        };
        Some(service.close().await)
    }

    /// All services, sorted by sid.
    #[doc(alias = "ServicesList")]
    pub fn list(&self) -> Vec<ServiceMonitor> {
        let services = self.read();
        services.values().cloned().collect()
    }

    /// Closes every service gracefully, all at once; they stay listed.
    /// Returns each sid with its report.
    pub async fn shutdown(&self) -> Vec<(String, CloseReport)> {
        let services = self.list();
        let mut set = tokio::task::JoinSet::new();
        for service in services {
            set.spawn(async move { (service.sid().to_owned(), service.close().await) });
        }
        let mut reports: Vec<_> = set.join_all().await;
        reports.sort_by(|a, b| a.0.cmp(&b.0));
        reports
    }

    /// Every service's snapshot, sorted by sid; see [`ServiceMonitor::snapshot`].
    pub fn snapshot(&self) -> RegistrySnapshot {
        RegistrySnapshot {
            services: self.list().iter().map(ServiceMonitor::snapshot).collect(),
        }
    }

    /// Every service's snapshot with its open connections; see
    /// [`ServiceMonitor::snapshot_with_conns`].
    pub fn snapshot_with_conns(&self) -> RegistrySnapshot {
        RegistrySnapshot {
            services: self
                .list()
                .iter()
                .map(ServiceMonitor::snapshot_with_conns)
                .collect(),
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sids: Vec<String> = self.list().iter().map(|s| s.sid().to_owned()).collect();
        f.debug_struct("Registry").field("services", &sids).finish()
    }
}
