//! Bans with a lifetime: kept beside the blacklist, compiled into sets the
//! accept path reads without a lock, and expired with no timer per ban (a
//! lookup that meets an expired ban checks it exactly and asks for a prune;
//! the sweeper's tick and every change prune too).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::RejectReason;
use crate::ip::{canonical_ip, IpSet};

/// An expiry that never comes: a ban without a lifetime learnt from another
/// instance.
pub(crate) const NEVER: u64 = u64::MAX;

/// Where a timed ban came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BanSource {
    /// This instance's API: [`ServiceMonitor::ban_for`](crate::ServiceMonitor::ban_for),
    /// the admin API.
    Local,
    /// This service's [`AutoBan`](crate::AutoBan) rule; its refusals count
    /// as [`RejectReason::AutoBanned`].
    Rule,
    /// Another instance, through the shared ban list (feature `redis`).
    Cluster,
}

/// A ban with a lifetime, as [`ServiceMonitor::timed_bans`](crate::ServiceMonitor::timed_bans)
/// and snapshots show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedBan {
    /// The banned address or network.
    pub net: IpNet,
    /// Milliseconds until it expires; `null` for a ban without expiry
    /// learnt from another instance.
    pub remaining_ms: Option<u64>,
    /// Who banned it.
    pub source: BanSource,
}

/// One ban: its expiry in unix ms ([`NEVER`] for none) and its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) until: u64,
    pub(crate) source: BanSource,
}

/// Now, in unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `now + d` in unix ms, saturating below [`NEVER`].
pub(crate) fn after(now: u64, d: Duration) -> u64 {
    now.saturating_add(d.as_millis().min(u128::from(NEVER - 1)) as u64)
        .min(NEVER - 1)
}

/// The timed bans as the accept path reads them: immutable, swapped whole.
#[derive(Default)]
pub(crate) struct TimedSet {
    /// Bans of every source but [`BanSource::Rule`].
    banned: IpSet,
    /// Bans made by the auto-ban rule.
    by_rule: IpSet,
    pub(crate) entries: HashMap<IpNet, Entry>,
    /// The earliest expiry: before it, every ban in the sets is live.
    earliest: u64,
}

impl TimedSet {
    pub(crate) fn new(entries: HashMap<IpNet, Entry>) -> Self {
        let set = |rule: bool| {
            IpSet::new(
                entries
                    .iter()
                    .filter(|(_, e)| (e.source == BanSource::Rule) == rule)
                    .map(|(net, _)| *net),
            )
        };
        TimedSet {
            banned: set(false),
            by_rule: set(true),
            earliest: entries.values().map(|e| e.until).min().unwrap_or(NEVER),
            entries,
        }
    }

    /// Whether `ip` is banned, and why; `stale` is set when an expired ban
    /// was met (time to prune).
    #[inline]
    pub(crate) fn verdict(&self, ip: IpAddr, stale: &mut bool) -> Option<RejectReason> {
        let reason = if !self.banned.is_empty() && self.banned.contains(ip) {
            RejectReason::Blacklisted
        } else if !self.by_rule.is_empty() && self.by_rule.contains(ip) {
            RejectReason::AutoBanned
        } else {
            return None;
        };
        let now = unix_ms();
        if now < self.earliest {
            return Some(reason);
        }
        *stale = true;
        self.exact(ip, now)
    }

    /// The slow path, once some ban has expired: the live ban covering
    /// `ip`, looked up by each prefix length (no scan of the list).
    #[cold]
    fn exact(&self, ip: IpAddr, now: u64) -> Option<RejectReason> {
        // An IPv4 client is looked up as itself and as its IPv4-mapped
        // IPv6 address (to /96); no allocation, as on the fast path.
        let (v4, v6, v6_max) = match canonical_ip(ip) {
            IpAddr::V4(a) => (Some(a), a.to_ipv6_mapped(), 96),
            IpAddr::V6(a) => (None, a, 128),
        };
        let nets = v4
            .into_iter()
            .flat_map(|a| (0..=32).filter_map(move |l| Ipv4Net::new(a, l).ok()))
            .map(|n| IpNet::V4(n.trunc()))
            .chain(
                (0..=v6_max)
                    .filter_map(move |l| Ipv6Net::new(v6, l).ok())
                    .map(|n| IpNet::V6(n.trunc())),
            );
        let mut live = nets
            .filter_map(|n| self.entries.get(&n))
            .filter(|e| e.until > now)
            .map(|e| e.source);
        let first = live.next()?;
        if first != BanSource::Rule || live.any(|s| s != BanSource::Rule) {
            Some(RejectReason::Blacklisted)
        } else {
            Some(RejectReason::AutoBanned)
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether some ban has expired by `now`.
    pub(crate) fn has_expired(&self, now: u64) -> bool {
        now >= self.earliest
    }

    /// The live bans, sorted by network.
    pub(crate) fn list(&self, now: u64) -> Vec<TimedBan> {
        let mut list: Vec<TimedBan> = self
            .entries
            .iter()
            .filter(|(_, e)| e.until > now)
            .map(|(net, e)| TimedBan {
                net: *net,
                remaining_ms: (e.until != NEVER).then(|| e.until - now),
                source: e.source,
            })
            .collect();
        list.sort_unstable_by_key(|b| b.net);
        list
    }
}

// === impl ServiceMonitor ===

/// Bans with a lifetime. They sit beside the blacklist (they are not in
/// [`ServiceConfig::blacklist`](crate::ServiceConfig::blacklist), and a
/// config change or reload keeps them), refuse connections as it does
/// ([`RejectReason::Blacklisted`]; [`RejectReason::AutoBanned`] for the
/// auto-ban rule's), and expire by themselves.
impl super::ServiceMonitor {
    /// Bans an address or network for `time`: new connections from it are
    /// refused until then (live ones stay; see [`ServiceMonitor::kick_net`](super::ServiceMonitor::kick_net)).
    /// A longer ban of the same net stays as it is. Returns whether the ban
    /// is new or longer than before. [`ServiceMonitor::unban`](super::ServiceMonitor::unban)
    /// lifts it early.
    ///
    /// No timer runs per ban: a lookup after the expiry sees it expired, and
    /// the list drops it at the next change or sweeper tick. Changes rebuild
    /// the timed list (not the blacklist) while accepts go on with the
    /// previous one, without waiting on a lock.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use monconn::{RejectReason, Registry};
    ///
    /// let service = Registry::new().service("web");
    /// let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    /// assert!(service.ban_for(ip, Duration::from_secs(600)));
    /// assert_eq!(service.ip_verdict(ip), Some(RejectReason::Blacklisted));
    /// let bans = service.timed_bans();
    /// assert_eq!(bans[0].net.to_string(), "192.0.2.7/32");
    /// assert!(bans[0].remaining_ms.unwrap() > 599_000);
    /// assert!(service.config().blacklist.is_empty());
    /// ```
    pub fn ban_for(&self, net: impl Into<IpNet>, time: Duration) -> bool {
        let until = after(unix_ms(), time);
        self.ban_timed(net.into(), until, BanSource::Local, true)
    }

    /// Bans an address or network until `until` (see
    /// [`ServiceMonitor::ban_for`](super::ServiceMonitor::ban_for)). A time
    /// already past bans nothing.
    pub fn ban_until(&self, net: impl Into<IpNet>, until: SystemTime) -> bool {
        let until = until
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis().min(u128::from(NEVER - 1)) as u64);
        until > unix_ms() && self.ban_timed(net.into(), until, BanSource::Local, true)
    }

    /// Bans every net of `nets` for `time` with one rebuild of the timed
    /// list (what [`ServiceMonitor::ban_for`](super::ServiceMonitor::ban_for)
    /// does for one). Returns how many bans are new or longer.
    ///
    /// ```
    /// use std::time::Duration;
    /// let service = monconn::Registry::new().service("web");
    /// let nets = (1..=200u8).map(|n| ipnet::IpNet::from(std::net::IpAddr::from([10, 0, 0, n])));
    /// assert_eq!(service.ban_all_for(nets, Duration::from_secs(60)), 200);
    /// assert_eq!(service.timed_bans().len(), 200);
    /// ```
    pub fn ban_all_for(&self, nets: impl IntoIterator<Item = IpNet>, time: Duration) -> usize {
        let until = after(unix_ms(), time);
        let mut added = Vec::new();
        self.inner.rules.edit_timed(|bans| {
            for net in nets.into_iter().map(crate::ip::canonical_net) {
                if bans.get(&net).is_none_or(|e| e.until < until) {
                    bans.insert(
                        net,
                        Entry {
                            until,
                            source: BanSource::Local,
                        },
                    );
                    added.push(net);
                }
            }
            !added.is_empty()
        });
        for net in &added {
            let until = Some(until);
            self.emit(super::hooks::BanChange::Ban { net: *net, until });
        }
        added.len()
    }

    /// The live bans with a lifetime, sorted by network, each with its
    /// remaining time and source.
    pub fn timed_bans(&self) -> Vec<TimedBan> {
        self.inner.rules.timed().list(unix_ms())
    }

    /// Adds or lengthens a timed ban; tells the hooks when `emit`.
    pub(crate) fn ban_timed(&self, net: IpNet, until: u64, source: BanSource, emit: bool) -> bool {
        let net = crate::ip::canonical_net(net);
        let changed = self.inner.rules.edit_timed(|bans| match bans.get(&net) {
            Some(e) if e.until >= until => false,
            _ => {
                bans.insert(net, Entry { until, source });
                true
            }
        });
        if changed && emit {
            let until = (until != NEVER).then_some(until);
            self.emit(super::hooks::BanChange::Ban { net, until });
        }
        changed
    }

    /// Makes the bans learnt from other instances those of `shared` (net,
    /// expiry): adds or lengthens them and, with `lift`, lifts those learnt
    /// before that `shared` lacks. Returns how many it added or lengthened.
    #[cfg(feature = "redis")]
    pub(crate) fn sync_shared(&self, shared: &HashMap<IpNet, u64>, lift: bool) -> usize {
        let mut learnt = 0;
        self.inner.rules.edit_timed(|bans| {
            let before = bans.len();
            if lift {
                bans.retain(|net, e| e.source != BanSource::Cluster || shared.contains_key(net));
            }
            let mut changed = bans.len() != before;
            for (net, until) in shared {
                let net = crate::ip::canonical_net(*net);
                let entry = bans.entry(net).or_insert(Entry {
                    until: 0,
                    source: BanSource::Cluster,
                });
                if entry.until < *until {
                    entry.until = *until;
                    learnt += 1;
                    changed = true;
                }
            }
            changed
        });
        learnt
    }

    /// Drops expired bans now (the sweeper's tick, or a lookup that met one).
    pub(crate) fn prune_bans(&self) {
        if self.inner.rules.timed().has_expired(unix_ms()) {
            self.inner.rules.edit_timed(|_| false);
        }
    }

    /// Prunes off the accept path: in a task when a runtime runs.
    pub(crate) fn spawn_prune(&self) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let service = self.clone();
                handle.spawn(async move { service.prune_bans() });
            }
            Err(_) => self.prune_bans(),
        }
    }

    pub(crate) fn emit(&self, change: super::hooks::BanChange) {
        self.inner.hooks.emit(self.sid(), change);
    }
}
