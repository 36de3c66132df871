//! A service's per-client rate buckets: one table per service, bounded, and
//! never emptied by churn.
//!
//! Each bucket is kept as its theoretical arrival time (GCRA): the instant
//! at which it is full again. A bucket whose time has passed is full, and a
//! full bucket is exactly what a client without one gets; so forgetting it
//! changes nothing, and only such buckets are ever forgotten. A client that
//! spent tokens keeps its bucket until it has refilled, however many other
//! clients come and go.
//!
//! The table holds at most [`MAX_KEYS`] buckets (24 bytes each: 3.1 MiB
//! at the cap with the map's spare slots, measured in `tests/io/alloc.rs`). When it is full and none
//! of its buckets has refilled, clients without a bucket share one overflow
//! bucket (same rate and burst): they are limited together, never given a
//! fresh bucket of their own, until a bucket in the table refills.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use ipnet::IpNet;
use tokio::time::Instant;

use super::service::lock;
use super::RateLimit;

/// Most client keys with a bucket of their own, per service.
pub(crate) const MAX_KEYS: usize = 65_536;

/// At the cap, the table is scanned for refilled buckets at most this often,
/// so that a flood of new clients costs no scan each.
const SCAN_GAP: Duration = Duration::from_millis(100);

/// 2^62 ns, about 146 years: the longest interval and tolerance (a burst
/// that takes longer to refill is clipped to this).
const LONGEST: u64 = 1 << 62;

/// A client key's network address as two words (IPv4 as IPv4-mapped IPv6).
type Key = [u64; 2];

pub(crate) struct RateTable {
    epoch: Instant,
    buckets: Mutex<Buckets>,
}

#[derive(Default)]
struct Buckets {
    /// Each key's theoretical arrival time: ns since `epoch` at which its
    /// bucket is full again.
    tats: HashMap<Key, u64>,
    /// The bucket shared by keys without one while the table is full.
    overflow: u64,
    /// At the cap, no scan before this (ns since `epoch`): no bucket can
    /// have refilled sooner.
    scan_at: u64,
}

/// A rate as GCRA's emission interval and tolerance, in ns.
#[derive(Clone, Copy)]
struct Gcra {
    interval: u64,
    tolerance: u64,
}

impl Gcra {
    fn new(rate: RateLimit) -> Self {
        // Not a positive rate (0, negative, NaN): a token per 146 years, so
        // never. Both bounded by `LONGEST`, so an arrival time stays below
        // now + 2^63 ns and never saturates.
        let interval = if rate.per_sec > 0.0 {
            ((1e9 / rate.per_sec) as u64).min(LONGEST)
        } else {
            LONGEST
        };
        Gcra {
            interval,
            tolerance: interval
                .saturating_mul(u64::from(rate.burst.max(1) - 1))
                .min(LONGEST),
        }
    }

    /// Takes a token from the bucket whose arrival time is `tat`.
    fn take(self, tat: &mut u64, now: u64) -> bool {
        let start = (*tat).max(now);
        if start - now > self.tolerance {
            return false;
        }
        *tat = start.saturating_add(self.interval);
        true
    }
}

fn key(net: IpNet) -> Key {
    let bits = match net.addr() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    };
    [(bits >> 64) as u64, bits as u64]
}

impl Default for RateTable {
    fn default() -> Self {
        RateTable {
            epoch: Instant::now(),
            buckets: Mutex::default(),
        }
    }
}

impl RateTable {
    fn now(&self) -> u64 {
        let ns = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos();
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// Takes a token from the bucket of client `net`; false when it is empty.
    pub(crate) fn allow(&self, net: IpNet, rate: RateLimit) -> bool {
        let gcra = Gcra::new(rate);
        let now = self.now();
        let key = key(net);
        let mut guard = lock(&self.buckets);
        let b = &mut *guard;
        if let Some(tat) = b.tats.get_mut(&key) {
            return gcra.take(tat, now);
        }
        if b.tats.len() >= MAX_KEYS && !b.make_room(now) {
            return gcra.take(&mut b.overflow, now);
        }
        let mut tat = now;
        let allowed = gcra.take(&mut tat, now);
        b.tats.insert(key, tat);
        allowed
    }

    /// Forgets the buckets that have refilled and gives back spare capacity
    /// (the sweeper calls this at each tick).
    pub(crate) fn prune(&self) {
        let now = self.now();
        let mut b = lock(&self.buckets);
        b.forget_full(now);
        let len = b.tats.len();
        if b.tats.capacity() > 4 * len.max(256) {
            b.tats.shrink_to(2 * len);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        lock(&self.buckets).tats.len()
    }
}

impl Buckets {
    /// Forgets full buckets; returns when the next one will be full.
    fn forget_full(&mut self, now: u64) -> u64 {
        let mut next = u64::MAX;
        self.tats.retain(|_, tat| {
            let keep = *tat > now;
            if keep {
                next = next.min(*tat);
            }
            keep
        });
        next
    }

    /// At the cap: forgets the buckets that have refilled, if it is time to
    /// look. Whether a key can be added now.
    fn make_room(&mut self, now: u64) -> bool {
        if now < self.scan_at {
            return false;
        }
        let next = self.forget_full(now);
        let gap = u64::try_from(SCAN_GAP.as_nanos()).unwrap_or(u64::MAX);
        self.scan_at = next.max(now.saturating_add(gap));
        self.tats.len() < MAX_KEYS
    }
}

impl fmt::Debug for RateTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tracked = lock(&self.buckets).tats.len();
        f.debug_struct("RateTable")
            .field("tracked", &tracked)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: RateLimit = RateLimit {
        per_sec: 2.0,
        burst: 3,
    };

    fn v4(n: u32) -> IpNet {
        IpNet::from(IpAddr::from(std::net::Ipv4Addr::from(n)))
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill() {
        let table = RateTable::default();
        let ip = v4(1);
        assert_eq!((0..5).filter(|_| table.allow(ip, RATE)).count(), 3);
        tokio::time::advance(Duration::from_millis(500)).await; // one token
        assert!(table.allow(ip, RATE));
        assert!(!table.allow(ip, RATE));
        assert!(table.allow(v4(2), RATE));
    }

    #[tokio::test(start_paused = true)]
    async fn no_refill_without_a_positive_rate() {
        let table = RateTable::default();
        for (n, per_sec) in [0.0, -1.0, f64::NAN].into_iter().enumerate() {
            let rate = RateLimit { per_sec, burst: 2 };
            let ip = v4(n as u32);
            assert_eq!((0..4).filter(|_| table.allow(ip, rate)).count(), 2);
            tokio::time::advance(Duration::from_secs(3600)).await;
            assert!(!table.allow(ip, rate));
        }
    }

    /// The churn attack of issue 13: a throttled key, then one call from
    /// each of 4 × 65,536 other keys. The throttled key keeps its bucket,
    /// the table stays at its cap, and the newcomers share one bucket.
    #[tokio::test(start_paused = true)]
    async fn churn_never_gives_a_throttled_key_a_fresh_bucket() {
        let table = RateTable::default();
        let slow = RateLimit {
            per_sec: 0.1,
            burst: 1,
        };
        let throttled = v4(0x0a00_0001);
        assert!(table.allow(throttled, slow));
        assert!(!table.allow(throttled, slow));
        let mut admitted = 0;
        for n in 0..4 * MAX_KEYS as u32 {
            admitted += usize::from(table.allow(v4(0x2000_0000 + n), slow));
            tokio::time::advance(Duration::from_micros(1)).await;
        }
        assert!(table.tracked() <= MAX_KEYS, "{}", table.tracked());
        assert!(!table.allow(throttled, slow), "throttled key unthrottled");
        // The first MAX_KEYS - 1 newcomers got a bucket each, the rest
        // shared the overflow bucket (one token).
        assert_eq!(admitted, MAX_KEYS);
        // Once buckets have refilled, they are forgotten and new keys get
        // buckets of their own again.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(table.allow(throttled, slow));
        assert!(table.allow(v4(0x3000_0000), slow));
        assert!(table.allow(v4(0x3000_0001), slow));
        table.prune();
        assert_eq!(table.tracked(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_is_scanned_once_per_gap_not_per_newcomer() {
        let table = RateTable::default();
        for n in 0..MAX_KEYS as u32 {
            assert!(table.allow(v4(n), RATE));
        }
        // Nothing has refilled: the first newcomer scans and sets the
        // next scan no sooner than when a bucket refills (0.5 s here).
        assert!(table.allow(v4(u32::MAX), RATE));
        let scan_at = lock(&table.buckets).scan_at;
        assert_eq!(scan_at, 500_000_000);
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(table.allow(v4(u32::MAX - 1), RATE)); // the overflow bucket
        assert_eq!(table.tracked(), MAX_KEYS);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(table.allow(v4(u32::MAX - 2), RATE));
        assert_eq!(
            table.tracked(),
            1,
            "every bucket refilled and was forgotten"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn prune_forgets_only_full_buckets_and_gives_memory_back() {
        let table = RateTable::default();
        for n in 0..10_000 {
            table.allow(v4(n), RATE);
        }
        for _ in 0..3 {
            table.allow(v4(0), RATE); // v4(0) is empty now
        }
        tokio::time::advance(Duration::from_millis(600)).await;
        table.prune();
        assert_eq!(table.tracked(), 1);
        assert!(lock(&table.buckets).tats.capacity() < 1024);
    }
}
