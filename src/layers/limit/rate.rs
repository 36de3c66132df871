//! Per-IP token buckets, bounded in number.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;

use tokio::time::Instant;

use crate::registry::{lock, RateLimit};

/// Most client IPs tracked at once. When the table is full, buckets that have
/// refilled (they hold no information) are dropped; if that frees nothing,
/// the whole table is (those clients start again with a full bucket).
const MAX_TRACKED: usize = 65_536;

#[derive(Default)]
pub(crate) struct RateTable {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: RateLimit, now: Instant) {
        let add = now.saturating_duration_since(self.at).as_secs_f64() * rate.per_sec;
        self.tokens = (self.tokens + add).min(burst(rate));
        self.at = now;
    }
}

fn burst(rate: RateLimit) -> f64 {
    f64::from(rate.burst.max(1))
}

impl RateTable {
    /// Takes a token from `ip`'s bucket; false when it is empty.
    pub(crate) fn allow(&self, ip: IpAddr, rate: RateLimit) -> bool {
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        if !buckets.contains_key(&ip) && buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, b| {
                b.refill(rate, now);
                b.tokens < burst(rate)
            });
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: burst(rate),
            at: now,
        });
        bucket.refill(rate, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        lock(&self.buckets).len()
    }
}

impl fmt::Debug for RateTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tracked = lock(&self.buckets).len();
        f.debug_struct("RateTable")
            .field("tracked", &tracked)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const RATE: RateLimit = RateLimit {
        per_sec: 2.0,
        burst: 3,
    };

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill() {
        let table = RateTable::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!((0..5).filter(|_| table.allow(ip, RATE)).count(), 3);
        tokio::time::advance(Duration::from_millis(500)).await; // one token
        assert!(table.allow(ip, RATE));
        assert!(!table.allow(ip, RATE));
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(table.allow(other, RATE));
    }

    #[tokio::test(start_paused = true)]
    async fn table_stays_bounded() {
        let table = RateTable::default();
        let fill = |table: &RateTable| {
            for n in 0..MAX_TRACKED as u32 {
                assert!(table.allow(IpAddr::V4(n.into()), RATE));
            }
            assert_eq!(table.tracked(), MAX_TRACKED);
        };
        fill(&table);
        // Full and nothing refilled: the table starts over.
        assert!(table.allow("200.0.0.1".parse().unwrap(), RATE));
        assert_eq!(table.tracked(), 1);
        // Refilled buckets are dropped, the others kept.
        let table = RateTable::default();
        fill(&table);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(table.allow("0.0.0.1".parse().unwrap(), RATE));
        assert!(table.allow("200.0.0.2".parse().unwrap(), RATE));
        assert_eq!(table.tracked(), 2);
    }
}
