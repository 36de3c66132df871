//! A service's blacklist and allowlist, compiled for lookups on the accept
//! path and changed at runtime through the service's config.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use ipnet::IpNet;

use super::bans::{unix_ms, Entry, TimedSet};
use super::hooks::BanChange;
use super::service::lock;
use super::{RejectReason, ServiceConfig, ServiceMonitor};
use crate::io::CloseCause;
use crate::ip::{canonical_ip, canonical_net, IpSet};

/// The compiled lists, with the config they were compiled from.
pub(crate) struct Compiled {
    from: Arc<ServiceConfig>,
    blacklist: IpSet,
    allowlist: IpSet,
    /// The bans with a lifetime (`bans.rs`).
    pub(crate) timed: Arc<TimedSet>,
}

/// Read lock-free on the accept path (an `arc-swap` snapshot); rebuilt under
/// a mutex when the config's lists change.
pub(crate) struct Rules {
    current: ArcSwap<Compiled>,
    rebuild: Mutex<()>,
    /// A prune of expired bans is on its way (spawned by a lookup).
    pruning: AtomicBool,
}

impl Compiled {
    fn new(from: Arc<ServiceConfig>) -> Self {
        Compiled {
            blacklist: IpSet::new(from.blacklist.iter().copied()),
            allowlist: IpSet::new(from.allowlist.iter().copied()),
            from,
            timed: Arc::default(),
        }
    }

    /// The verdict; `stale` is set when an expired timed ban was met.
    #[inline]
    pub(crate) fn verdict(&self, ip: IpAddr, stale: &mut bool) -> Option<RejectReason> {
        if !self.blacklist.is_empty() && self.blacklist.contains(ip) {
            Some(RejectReason::Blacklisted)
        } else if let Some(reason) = self.timed.verdict(ip, stale) {
            Some(reason)
        } else if !self.allowlist.is_empty() && !self.allowlist.contains(ip) {
            Some(RejectReason::NotAllowed)
        } else {
            None
        }
    }
}

impl Rules {
    pub(crate) fn new(config: Arc<ServiceConfig>) -> Self {
        Rules {
            current: ArcSwap::from_pointee(Compiled::new(config)),
            rebuild: Mutex::new(()),
            pruning: AtomicBool::new(false),
        }
    }

    /// The verdict, and whether the caller should start a prune of
    /// expired bans (true once until [`Rules::edit_timed`] runs).
    #[inline]
    pub(crate) fn verdict(&self, ip: IpAddr) -> (Option<RejectReason>, bool) {
        let mut stale = false;
        let reason = self.current.load().verdict(ip, &mut stale);
        (reason, stale && !self.pruning.swap(true, Relaxed))
    }

    /// The timed bans now.
    pub(crate) fn timed(&self) -> Arc<TimedSet> {
        self.current.load().timed.clone()
    }

    /// Changes the timed bans with `f` (expired ones are dropped first) and
    /// recompiles them if `f` returns true or some had expired. Returns
    /// what `f` returned.
    pub(crate) fn edit_timed(&self, f: impl FnOnce(&mut HashMap<IpNet, Entry>) -> bool) -> bool {
        let _rebuild = lock(&self.rebuild);
        self.pruning.store(false, Relaxed);
        let current = self.current.load();
        let now = unix_ms();
        if current.timed.is_empty() && !current.timed.has_expired(now) {
            let mut entries = HashMap::new();
            if !f(&mut entries) {
                return false;
            }
            self.store_timed(&current, entries);
            return true;
        }
        let mut entries = current.timed.entries.clone();
        entries.retain(|_, e| e.until > now);
        let expired = entries.len() != current.timed.entries.len();
        let changed = f(&mut entries);
        if changed || expired {
            self.store_timed(&current, entries);
        }
        changed
    }

    fn store_timed(&self, current: &Compiled, entries: HashMap<IpNet, Entry>) {
        self.current.store(Arc::new(Compiled {
            from: current.from.clone(),
            blacklist: current.blacklist.clone(),
            allowlist: current.allowlist.clone(),
            timed: Arc::new(TimedSet::new(entries)),
        }));
    }

    /// Recompiles the lists if `config` (the service's current config,
    /// loaded under the rebuild lock) changed them.
    pub(crate) fn sync(&self, load: impl Fn() -> Arc<ServiceConfig>) {
        let _rebuild = lock(&self.rebuild);
        let config = load();
        let current = self.current.load();
        if Arc::ptr_eq(&current.from, &config) {
            return;
        }
        let compiled = if current.from.blacklist == config.blacklist
            && current.from.allowlist == config.allowlist
        {
            Compiled {
                from: config,
                blacklist: current.blacklist.clone(),
                allowlist: current.allowlist.clone(),
                timed: current.timed.clone(),
            }
        } else {
            Compiled {
                timed: current.timed.clone(),
                ..Compiled::new(config)
            }
        };
        self.current.store(Arc::new(compiled));
    }
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.load();
        f.debug_struct("Rules")
            .field("blacklist", &current.blacklist)
            .field("allowlist", &current.allowlist)
            .field("timed", &current.timed.entries.len())
            .finish()
    }
}

// === impl ServiceMonitor ===

/// Blacklist and allowlist at runtime. These change the service's config
/// ([`ServiceConfig::blacklist`], [`ServiceConfig::allowlist`]), so the config,
/// snapshots of it and the [`FilterLayer`](crate::layers::FilterLayer) all see
/// one set; [`ServiceMonitor::set_config`] replaces the lists as a whole.
impl ServiceMonitor {
    /// Whether the filter refuses `ip`, and why: [`RejectReason::Blacklisted`] when
    /// it is on the blacklist, [`RejectReason::NotAllowed`] when an allowlist is set
    /// and it is not on it. IPv4-mapped IPv6 addresses are looked up as their
    /// IPv4 address. Lock-free, and about as fast for 100,000 rules as for 10.
    ///
    /// # Examples
    /// ```
    /// use monconn::{RejectReason, Registry};
    ///
    /// let service = Registry::new().service("web");
    /// service.ban("10.0.0.0/8".parse::<ipnet::IpNet>().unwrap());
    /// assert_eq!(service.ip_verdict("10.1.2.3".parse().unwrap()), Some(RejectReason::Blacklisted));
    /// assert_eq!(service.ip_verdict("::ffff:10.1.2.3".parse().unwrap()), Some(RejectReason::Blacklisted));
    /// assert_eq!(service.ip_verdict("192.168.0.1".parse().unwrap()), None);
    /// ```
    pub fn ip_verdict(&self, ip: IpAddr) -> Option<RejectReason> {
        let (reason, prune) = self.inner.rules.verdict(ip);
        if prune {
            self.spawn_prune();
        }
        reason
    }

    /// Adds an address or network to the blacklist: new connections from it
    /// are refused. Live connections stay; see [`ServiceMonitor::ban_and_kick`].
    /// Returns whether it was not there yet.
    ///
    /// The lists are recompiled (sorted and indexed: about 7 ms for 100,000
    /// entries in `benches/accept.rs`, more on a loaded machine); accepts go
    /// on meanwhile with the previous lists, without waiting on a lock.
    ///
    /// # Examples
    /// ```
    /// use std::net::IpAddr;
    /// use monconn::{RejectReason, Registry};
    ///
    /// let service = Registry::new().service("web");
    /// let ip: IpAddr = "192.0.2.7".parse().unwrap();
    /// assert!(service.ban(ip));
    /// assert_eq!(service.ip_verdict(ip), Some(RejectReason::Blacklisted));
    /// assert_eq!(service.config().blacklist, ["192.0.2.7/32".parse::<ipnet::IpNet>().unwrap()]);
    /// assert!(service.unban(ip));
    /// assert_eq!(service.ip_verdict(ip), None);
    /// ```
    #[doc(alias = "RejectIP", alias = "reject_ip")]
    pub fn ban(&self, net: impl Into<IpNet>) -> bool {
        let net = canonical_net(net.into());
        let added = self.edit_list(|c| &mut c.blacklist, |list| add(list, net));
        if added {
            self.emit(BanChange::Ban { net, until: None });
        }
        added
    }

    /// Adds an address or network to the blacklist and closes the live
    /// connections from it ([`CloseCause::Kicked`]). Returns how many it closed.
    pub fn ban_and_kick(&self, net: impl Into<IpNet>) -> usize {
        let net = net.into();
        self.ban(net);
        self.kick_net(net)
    }

    /// Removes an address or network from the blacklist and from the
    /// timed bans (the entry itself: releasing one address of a blacklisted
    /// network does not punch a hole in it). Returns whether it was there.
    #[doc(alias = "ReleaseIP", alias = "release_ip")]
    pub fn unban(&self, net: impl Into<IpNet>) -> bool {
        let removed = self.unban_here(net.into());
        if let Some(net) = removed {
            self.emit(BanChange::Unban { net });
        }
        removed.is_some()
    }

    /// [`ServiceMonitor::unban`] without telling the hooks: the net, if it
    /// was there.
    pub(crate) fn unban_here(&self, net: IpNet) -> Option<IpNet> {
        let net = canonical_net(net);
        let listed = self.edit_list(|c| &mut c.blacklist, |list| remove(list, net));
        let timed = self
            .inner
            .rules
            .edit_timed(|bans| bans.remove(&net).is_some());
        (listed || timed).then_some(net)
    }

    /// Adds an address or network to the allowlist. Once the allowlist is not
    /// empty, only its addresses are admitted. Returns whether it was new.
    #[doc(alias = "allow_ip")]
    pub fn allow(&self, net: impl Into<IpNet>) -> bool {
        let net = canonical_net(net.into());
        self.edit_list(|c| &mut c.allowlist, |list| add(list, net))
    }

    /// Removes an address or network from the allowlist. Returns whether it
    /// was there.
    #[doc(alias = "disallow_ip")]
    pub fn disallow(&self, net: impl Into<IpNet>) -> bool {
        let net = canonical_net(net.into());
        self.edit_list(|c| &mut c.allowlist, |list| remove(list, net))
    }

    /// Closes every live connection whose client address is in `net`
    /// ([`CloseCause::Kicked`]); IPv4-mapped addresses match IPv4 networks.
    /// Returns how many it closed.
    pub fn kick_net(&self, net: impl Into<IpNet>) -> usize {
        let net = canonical_net(net.into());
        let table = self.inner.table();
        table
            .conns
            .values()
            .filter(|r| net.contains(&canonical_ip(r.peer().ip())))
            .filter(|r| r.close(CloseCause::Kicked))
            .count()
    }

    fn edit_list(
        &self,
        list: impl Fn(&mut ServiceConfig) -> &mut Vec<IpNet>,
        edit: impl Fn(&mut Vec<IpNet>) -> bool,
    ) -> bool {
        let changed = Cell::new(false);
        self.update_config(|c| changed.set(edit(list(c))));
        changed.get()
    }
}

fn add(list: &mut Vec<IpNet>, net: IpNet) -> bool {
    if list.iter().any(|n| canonical_net(*n) == net) {
        return false;
    }
    list.push(net);
    true
}

fn remove(list: &mut Vec<IpNet>, net: IpNet) -> bool {
    let before = list.len();
    list.retain(|n| canonical_net(*n) != net);
    list.len() != before
}
