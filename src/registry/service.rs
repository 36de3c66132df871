//! A monitored service: its config, counters and live connection table.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use ipnet::IpNet;
use tokio::sync::Notify;

use super::admission::Admission;
use super::rate::RateTable;
use super::reason::{RejectReason, Rejected};
use super::ServiceConfig;
use crate::clock::now_ms;
use crate::io::{CloseCause, ConnRecord, MonitoredIo, Record, Release};
use crate::ip::client_key;
use crate::tap::Hub;

mod inner;

/// A service's byte totals: read from and written to its clients.
///
/// Returned by [`ServiceMonitor::bytes`] and [`ServiceMonitor::take_bytes`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ByteCounts {
    /// Bytes read from clients.
    pub read: u64,
    /// Bytes written to clients.
    pub written: u64,
}

const RUNNING: u8 = 0;
pub(super) const DRAINING: u8 = 1;
pub(super) const STOPPED: u8 = 2;

/// The monitor of one service: a set of connections under one id (`sid`),
/// with its settings, live counters and connection table (the Go tool's
/// `ServiceMonitor`; named apart from `tower::Service`, which the accept layers
/// implement).
///
/// Cheap to clone; clones share everything. Get one from a
/// [`Registry`](crate::Registry).
///
/// # Examples
/// Wrapping a connection accepted by hand (the Go tool's `WrapMonConn`):
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use tokio::io::AsyncWriteExt;
///
/// let registry = monconn::Registry::new();
/// let service = registry.service("127.0.0.1:4000");
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
/// loop {
///     let (stream, peer) = listener.accept().await?;
///     let local = stream.local_addr()?;
///     let Ok(mut conn) = service.wrap(stream, peer, local) else { continue };
///     tokio::spawn(async move { conn.write_all(b"hello\n").await });
///     let snapshot = service.snapshot();
///     println!("{}", serde_json::to_string(&snapshot).unwrap());
/// }
/// # }
/// ```
#[doc(alias = "Service")]
#[derive(Clone)]
pub struct ServiceMonitor {
    pub(crate) inner: Arc<ServiceInner>,
}

pub(crate) struct ServiceInner {
    sid: Arc<str>,
    pub(super) config: ArcSwap<ServiceConfig>,
    boot_at: SystemTime,
    boot_ms: u64,
    pub(super) state: AtomicU8,
    next_id: AtomicU64,
    pub(super) table: Mutex<Table>,
    pub(crate) counters: Counters,
    /// Notified whenever a slot is released.
    pub(super) released: Notify,
    sweeper: AtomicBool,
    /// The blacklist and allowlist, compiled (see `rules.rs`).
    pub(crate) rules: super::rules::Rules,
    /// The per-client `rate_limit` buckets: one table for every listener,
    /// stack and `wrap` of the service.
    pub(super) rates: RateTable,
    /// The last refusals, with their clients.
    pub(super) recent: super::recent::Recent,
    /// Live connections by address pair, on once looked up.
    pub(super) by_addr: super::addr_index::AddrIndex,
    /// Where this instance's ban changes are told (the registry's).
    pub(crate) hooks: Arc<super::hooks::Hooks>,
    /// Each client's strikes towards its auto-ban (`auto_ban.rs`).
    pub(super) strikes: super::auto_ban::Strikes,
    /// The key of this service's duration histogram.
    #[cfg(feature = "metrics")]
    duration_key: metrics::Key,
    /// Its registry's taps, told of every connection.
    hub: Arc<Hub>,
}

#[derive(Default)]
pub(crate) struct Table {
    pub(crate) conns: HashMap<u64, Record>,
    /// Open connections per client key ([`client_key`]).
    pub(crate) ips: HashMap<IpNet, u32>,
    pub(crate) active: usize,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: [AtomicU64; RejectReason::BUILTIN.len()],
    pub(crate) rejected_other: Mutex<BTreeMap<String, u64>>,
    pub(crate) closed: [AtomicU64; CloseCause::ALL.len()],
    pub(crate) accept_errors: AtomicU64,
    /// Bytes of closed connections, folded in under the table lock.
    pub(crate) closed_read: AtomicU64,
    pub(crate) closed_written: AtomicU64,
    /// Bytes handed out by `take_bytes`, subtracted from the totals.
    pub(crate) taken_read: AtomicU64,
    pub(crate) taken_written: AtomicU64,
    /// Last read of a closed connection (ms).
    pub(crate) last_read: AtomicU64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl ServiceMonitor ===

impl ServiceMonitor {
    pub(crate) fn new(
        sid: Arc<str>,
        config: ServiceConfig,
        hub: Arc<Hub>,
        hooks: Arc<super::hooks::Hooks>,
    ) -> Self {
        let config = Arc::new(config);
        ServiceMonitor {
            inner: Arc::new(ServiceInner {
                hooks,
                strikes: Default::default(),
                #[cfg(feature = "metrics")]
                duration_key: super::export::duration_key(&sid),
                sid,
                rules: super::rules::Rules::new(config.clone()),
                rates: RateTable::default(),
                config: ArcSwap::new(config),
                boot_at: SystemTime::now(),
                boot_ms: now_ms(),
                state: AtomicU8::new(RUNNING),
                next_id: AtomicU64::new(1),
                table: Mutex::default(),
                counters: Counters::default(),
                released: Notify::new(),
                sweeper: AtomicBool::new(false),
                by_addr: Default::default(),
                recent: Default::default(),
                hub,
            }),
        }
    }

    /// The service's id.
    pub fn sid(&self) -> &str {
        self.inner.sid()
    }

    /// The current settings.
    pub fn config(&self) -> Arc<ServiceConfig> {
        self.inner.config.load_full()
    }

    /// Replaces the settings. Limits and filters apply to connections admitted
    /// afterwards; the sweeper uses the new timeouts from its next tick.
    pub fn set_config(&self, config: ServiceConfig) {
        self.inner.config.store(Arc::new(config));
        self.inner.rules.sync(|| self.inner.config.load_full());
    }

    /// Changes the settings with `f`, atomically with respect to other updates.
    pub fn update_config(&self, f: impl Fn(&mut ServiceConfig)) {
        self.inner.config.rcu(|old| {
            let mut new = ServiceConfig::clone(old);
            f(&mut new);
            new
        });
        self.inner.rules.sync(|| self.inner.config.load_full());
    }

    /// Reserves a slot for a connection from `peer`, or refuses it.
    ///
    /// Refuses when the service is stopping ([`RejectReason::Stopped`]); when the
    /// peer's `rate_limit` bucket is empty ([`RejectReason::RateLimit`]: checked
    /// before the other limits, so an attempt they refuse still spends its
    /// token); at `conn_limit`; when the peer's key is new and the service is
    /// at `ip_limit`; or at `per_ip_limit` for that key. The check and the
    /// reservation are one step under the table lock, so no number of
    /// concurrent callers can pass a limit.
    ///
    /// Clients are keyed by [`client_key`](crate::client_key): an
    /// IPv4 address, or an IPv6 network of
    /// [`ipv6_prefix`](ServiceConfig::ipv6_prefix) bits. The rate buckets
    /// belong to the service: every [`Listener`](crate::Listener), accept
    /// stack and [`ServiceMonitor::wrap`] of it draws on the same bucket for a
    /// client. At most 65,536 keys have a bucket of their own; a bucket is
    /// forgotten only once it has refilled (a full bucket is what a new
    /// client gets, so nothing is lost). When all 65,536 are still
    /// refilling, clients without a bucket share one overflow bucket (same
    /// rate and burst) until one refills: churn from other addresses can
    /// never hand a throttled client a fresh bucket, and the table stays
    /// under 3.2 MiB (3.1 MiB measured at the cap).
    ///
    /// The refusal is not counted here: the caller counts it with
    /// [`ServiceMonitor::count_rejected`] (the [`Listener`](crate::Listener) and
    /// [`ServiceMonitor::wrap`] do).
    ///
    /// # Errors
    /// [`Rejected`] with the reason.
    pub fn admit(&self, peer: SocketAddr) -> Result<Admission, Rejected> {
        let prefix = self.inner.admit(peer)?;
        Ok(Admission::new(self.inner.clone(), peer, prefix))
    }

    /// Admits and wraps a connection accepted by hand (the Go tool's
    /// `WrapMonConn`): it is counted, listed and swept like any other.
    /// The service's blacklist and allowlist apply, then its limits
    /// ([`ServiceMonitor::admit`]: `rate_limit`, with the buckets the service's
    /// listeners use, `conn_limit`, `ip_limit`, `per_ip_limit`); a refusal
    /// is counted by reason.
    ///
    /// # Errors
    /// [`Rejected`] when the peer is filtered out ([`ServiceMonitor::ip_verdict`]) or
    /// [`ServiceMonitor::admit`] refuses the connection; drop `io` to close it.
    pub fn wrap<T: 'static>(
        &self,
        io: T,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<MonitoredIo<T>, Rejected> {
        let admitted = match self.ip_verdict(peer.ip()) {
            Some(reason) => Err(Rejected::new(reason, peer)),
            None => self.admit(peer),
        };
        match admitted {
            Ok(admission) => Ok(admission.attach(io, local)),
            Err(rejected) => {
                self.count_rejected(rejected.reason(), peer);
                Err(rejected)
            }
        }
    }

    /// Counts a connection from `peer` refused for `reason`, and lists it
    /// among the [recent rejections](Self::recent_rejections). The
    /// [`Listener`](crate::Listener) and [`ServiceMonitor::wrap`] do it for
    /// every refusal; call it for connections you refuse by other means.
    /// Under an [`AutoBan`](crate::AutoBan) rule counting refusals, a
    /// refusal by a limit counts towards the client's ban.
    pub fn count_rejected(&self, reason: &RejectReason, peer: SocketAddr) {
        self.inner.recent.push(peer, reason);
        self.inner.strike_refusal(peer, reason);
        let c = &self.inner.counters;
        match reason.slot() {
            Some(slot) => {
                c.rejected[slot].fetch_add(1, Relaxed);
            }
            None => {
                *lock(&c.rejected_other)
                    .entry(reason.as_str().to_owned())
                    .or_default() += 1
            }
        }
    }

    /// The last refusals (at most [`RECENT_REJECTIONS`](crate::RECENT_REJECTIONS)),
    /// newest first, with the client and the reason: the counters say how
    /// many, this says who.
    ///
    /// # Examples
    /// ```
    /// use monconn::{Registry, ServiceConfig};
    ///
    /// let service = Registry::new()
    ///     .create("web", ServiceConfig::default().blacklist(["10.0.0.0/8".parse().unwrap()]))
    ///     .unwrap();
    /// let (peer, local) = ("10.1.2.3:4000".parse().unwrap(), "127.0.0.1:80".parse().unwrap());
    /// assert!(service.wrap(tokio::io::empty(), peer, local).is_err());
    /// let last = &service.recent_rejections()[0];
    /// assert_eq!((last.peer, last.reason.as_str()), (peer, "blacklisted"));
    /// ```
    pub fn recent_rejections(&self) -> Vec<super::recent::Rejection> {
        self.inner.recent.list()
    }

    /// Counts an accept that failed for lack of resources (`EMFILE`,
    /// `ENFILE`, `ENOBUFS`, `ENOMEM`); the [`Listener`](crate::Listener) does.
    pub fn count_accept_error(&self) {
        self.inner.counters.accept_errors.fetch_add(1, Relaxed);
    }

    /// Whether the service still admits connections (it is not stopping).
    pub fn is_running(&self) -> bool {
        self.inner.state.load(Relaxed) == RUNNING
    }

    /// Admitted connections not yet closed.
    pub fn connections(&self) -> usize {
        lock(&self.inner.table).active
    }

    /// Distinct client keys (IPv4 addresses, IPv6 prefixes: see
    /// [`client_key`](crate::client_key)) with at least one open
    /// connection.
    pub fn ip_count(&self) -> usize {
        lock(&self.inner.table).ips.len()
    }

    /// Client keys (an IPv4 address as a /32, an IPv6 client's network of
    /// [`ipv6_prefix`](ServiceConfig::ipv6_prefix) bits) with their open
    /// connection counts, sorted.
    pub fn ips(&self) -> Vec<(IpNet, u32)> {
        let mut ips: Vec<_> = lock(&self.inner.table)
            .ips
            .iter()
            .map(|(ip, n)| (*ip, *n))
            .collect();
        ips.sort_unstable();
        ips
    }

    /// Bytes read and written by the service's connections, closed and live,
    /// minus what [`ServiceMonitor::take_bytes`] handed out.
    ///
    /// ```
    /// let service = monconn::Registry::new().service("web");
    /// let bytes = service.bytes();
    /// assert_eq!((bytes.read, bytes.written), (0, 0));
    /// ```
    #[doc(alias = "ReadWriteBytes")]
    pub fn bytes(&self) -> ByteCounts {
        self.inner.bytes(&lock(&self.inner.table))
    }

    /// Returns the byte totals and starts counting again from zero (the Go
    /// tool's `EliminateBytes`): for shipping totals elsewhere without
    /// counting a byte twice or losing one.
    #[doc(alias = "EliminateBytes")]
    pub fn take_bytes(&self) -> ByteCounts {
        let table = lock(&self.inner.table);
        let bytes = self.inner.bytes(&table);
        let c = &self.inner.counters;
        c.taken_read.fetch_add(bytes.read, Relaxed);
        c.taken_written.fetch_add(bytes.written, Relaxed);
        bytes
    }

    /// Connections attached since boot (or the last reset).
    pub fn accepted(&self) -> u64 {
        self.inner.counters.accepted.load(Relaxed)
    }

    /// Resets accepted, rejected, closed, accept error and byte counters.
    /// Live connections and their own counters are untouched.
    pub fn reset_stats(&self) {
        let _ = self.take_bytes();
        let c = &self.inner.counters;
        c.accepted.store(0, Relaxed);
        c.accept_errors.store(0, Relaxed);
        c.rejected.iter().for_each(|n| n.store(0, Relaxed));
        c.closed.iter().for_each(|n| n.store(0, Relaxed));
        lock(&c.rejected_other).clear();
    }

    /// When the service was created.
    pub fn boot_at(&self) -> SystemTime {
        self.inner.boot_at
    }

    /// How long the service has existed.
    pub fn uptime(&self) -> Duration {
        crate::clock::since(now_ms(), self.inner.boot_ms)
    }

    /// Waits until a slot is released (a connection or admission dropped).
    /// Used for backpressure at `conn_limit`.
    pub async fn released(&self) {
        self.inner.released.notified().await;
    }

    /// Closes what the sweeper would close now. The sweeper task calls this
    /// every `idle_interval`; call it by hand where no runtime runs one.
    /// Returns how many connections it closed.
    pub fn sweep(&self) -> usize {
        self.inner.sweep()
    }
}

impl fmt::Debug for ServiceMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceMonitor")
            .field("sid", &self.sid())
            .field("connections", &self.connections())
            .finish()
    }
}
