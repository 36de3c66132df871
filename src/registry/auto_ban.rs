//! Rules that ban by themselves: a client key refused too often by the
//! limits, or connecting too often, is banned for a while and its live
//! connections are closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;

use super::bans::{after, unix_ms, BanSource};
use super::service::{lock, ServiceInner};
use super::{RejectReason, ServiceMonitor};
use crate::clock::now_ms;
use crate::ip::client_key;

/// Most client keys counted at once, per service: past it, keys whose window
/// has passed are dropped, and new keys wait for room.
const MAX_KEYS: usize = 65_536;

/// What an [`AutoBan`] rule counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AutoBanCounts {
    /// Connections refused by a limit (`conn_limit`, `ip_limit`,
    /// `per_ip_limit`, `rate_limit`), as counted by
    /// [`ServiceMonitor::count_rejected`] (the [`Listener`](crate::Listener)
    /// and [`ServiceMonitor::wrap`] count every refusal).
    Refusals,
    /// Connections that reach the limits (past the blacklist and allowlist).
    Connections,
}

/// A rule that bans a client by itself: `max` counted events from one client
/// key ([`client_key`](crate::client_key): an IPv4 address, an IPv6
/// network of [`ipv6_prefix`](super::ServiceConfig::ipv6_prefix) bits)
/// within `window` ban that key for `ban_for` and close its live connections
/// ([`CloseCause::Kicked`](crate::CloseCause::Kicked)).
///
/// The ban is a [timed ban](ServiceMonitor::ban_for) of source
/// [`BanSource::Rule`]: the connections it refuses count as
/// [`RejectReason::AutoBanned`], the ban is logged once (WARN, `auto-banned`),
/// and it is shared with other instances as any ban is (feature `redis`).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use monconn::{AutoBan, ServiceConfig};
///
/// // 20 refusals within 10 s: banned for 10 minutes.
/// let config = ServiceConfig::default()
///     .per_ip_limit(4)
///     .auto_ban(AutoBan::after_refusals(20, Duration::from_secs(10)).ban_for(Duration::from_secs(600)));
/// assert_eq!(config.auto_ban.unwrap().max, 20);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoBan {
    /// What is counted.
    pub counts: AutoBanCounts,
    /// Events within `window` that ban (at least 1).
    pub max: u32,
    /// The window the events are counted in (fixed, starting at a key's
    /// first event).
    pub window: Duration,
    /// How long the ban lasts. Default 10 minutes.
    pub ban_for: Duration,
}

impl AutoBan {
    /// Bans a client key after `max` refusals by the limits within `window`.
    pub fn after_refusals(max: u32, window: Duration) -> Self {
        AutoBan {
            counts: AutoBanCounts::Refusals,
            max: max.max(1),
            window,
            ban_for: Duration::from_secs(600),
        }
    }

    /// Bans a client key after `max` connections within `window` (so, more
    /// than `max / window` connections a second).
    pub fn after_connections(max: u32, window: Duration) -> Self {
        AutoBan {
            counts: AutoBanCounts::Connections,
            ..AutoBan::after_refusals(max, window)
        }
    }

    /// Sets [`ban_for`](Self::ban_for).
    #[must_use]
    pub fn ban_for(mut self, time: Duration) -> Self {
        self.ban_for = time;
        self
    }
}

/// Each client key's count within its window: `(window start ms, count)`.
#[derive(Default)]
pub(crate) struct Strikes(Mutex<Table>);

#[derive(Default)]
pub(crate) struct Table {
    keys: HashMap<IpNet, (u64, u32)>,
    /// When full, no sweep of the whole table before this (ms): a flood
    /// of new keys into a full table costs a sweep a few times per window,
    /// not one per connection.
    next_sweep: u64,
}

impl Strikes {
    /// Counts one event for `key`; true when it reaches the rule's `max`
    /// (the key is then forgotten: its ban takes over).
    fn strike(&self, key: IpNet, rule: &AutoBan) -> bool {
        let now = now_ms();
        let window = rule.window.as_millis() as u64;
        let mut table = lock(&self.0);
        let Table {
            keys: map,
            next_sweep,
        } = &mut *table;
        if map.len() >= MAX_KEYS && !map.contains_key(&key) {
            if now < *next_sweep {
                return false;
            }
            map.retain(|_, (start, _)| now.saturating_sub(*start) < window);
            *next_sweep = now + (window / 8).max(1);
            if map.len() >= MAX_KEYS {
                return false;
            }
        }
        let (start, count) = map.entry(key).or_insert((now, 0));
        if now.saturating_sub(*start) >= window {
            (*start, *count) = (now, 0);
        }
        *count += 1;
        if *count < rule.max {
            return false;
        }
        map.remove(&key);
        true
    }

    /// Drops the keys whose window has passed (the sweeper's tick).
    pub(crate) fn prune(&self, window: Option<Duration>) {
        let map = &mut lock(&self.0).keys;
        match window {
            None => map.clear(),
            Some(w) => {
                let (now, w) = (now_ms(), w.as_millis() as u64);
                map.retain(|_, (start, _)| now.saturating_sub(*start) < w);
            }
        }
    }
}

// === impl ServiceInner ===

impl ServiceInner {
    /// Counts a connection attempt that reached the limits, under a rule
    /// counting connections; true when it banned the client.
    pub(super) fn strike_connection(
        self: &Arc<Self>,
        peer: SocketAddr,
        config: &super::ServiceConfig,
    ) -> bool {
        match config.auto_ban {
            Some(rule) if rule.counts == AutoBanCounts::Connections => {
                let key = client_key(peer.ip(), config.ipv6_prefix);
                self.strikes.strike(key, &rule) && self.auto_ban(key, &rule)
            }
            _ => false,
        }
    }

    /// Counts a refusal for `reason`, under a rule counting refusals.
    pub(crate) fn strike_refusal(self: &Arc<Self>, peer: SocketAddr, reason: &RejectReason) {
        let limit = matches!(
            reason,
            RejectReason::ConnLimit
                | RejectReason::IpLimit
                | RejectReason::PerIpLimit
                | RejectReason::RateLimit
        );
        let config = self.config();
        if let (true, Some(rule)) = (limit, config.auto_ban) {
            if rule.counts == AutoBanCounts::Refusals {
                let key = client_key(peer.ip(), config.ipv6_prefix);
                drop(config);
                if self.strikes.strike(key, &rule) {
                    self.auto_ban(key, &rule);
                }
            }
        }
    }

    /// Bans `key` by the rule, kicks its connections and logs it once.
    fn auto_ban(self: &Arc<Self>, key: IpNet, rule: &AutoBan) -> bool {
        let service = ServiceMonitor {
            inner: self.clone(),
        };
        let until = after(unix_ms(), rule.ban_for);
        if !service.ban_timed(key, until, BanSource::Rule, true) {
            return false;
        }
        let kicked = service.kick_net(key);
        tracing::warn!(
            sid = %self.sid(),
            net = %key,
            events = rule.max,
            counts = ?rule.counts,
            window_ms = rule.window.as_millis() as u64,
            ban_secs = rule.ban_for.as_secs(),
            kicked,
            "auto-banned"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use ipnet::IpNet;

    use super::{AutoBan, Strikes, MAX_KEYS};

    fn key(n: u32) -> IpNet {
        IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)))
    }

    /// A full table counts no new key until a window has passed, sweeps
    /// at most a few times per window, and never grows past its cap.
    #[test]
    fn a_full_table_stays_bounded_and_frees_up_after_the_window() {
        let rule = AutoBan::after_connections(3, Duration::from_millis(300));
        let strikes = Strikes::default();
        let counted = |n: u32| strikes.0.lock().unwrap().keys.get(&key(n)).map(|e| e.1);
        for n in 0..MAX_KEYS as u32 {
            assert!(!strikes.strike(key(n), &rule));
        }
        // A known key is still counted; a new one is not.
        assert!(!strikes.strike(key(7), &rule));
        assert_eq!(counted(7), Some(2));
        let new = MAX_KEYS as u32;
        for _ in 0..3 {
            assert!(!strikes.strike(key(new), &rule));
        }
        assert_eq!(counted(new), None);
        assert_eq!(strikes.0.lock().unwrap().keys.len(), MAX_KEYS);
        std::thread::sleep(Duration::from_millis(400));
        // The window has passed: the sweep frees the table.
        assert!(!strikes.strike(key(new), &rule));
        assert_eq!(counted(new), Some(1));
        assert_eq!(strikes.0.lock().unwrap().keys.len(), 1);
    }
}
