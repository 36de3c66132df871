//! A process-wide monotonic clock in milliseconds, so that per-connection
//! timestamps fit in one `AtomicU64` each.
//!
//! It reads the kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE` on
//! Linux, a few ms of resolution; a vDSO read with no hardware timer access,
//! where `Instant::now()` measured 36-47 ns on this project's VM): the hot
//! path stamps every read and write, and idleness and timeouts are judged at
//! the sweeper's tick, in whole ms at best.
//! `now_without_cache_update` keeps it off coarsetime's shared cached instant,
//! so that no two connections write one cache line.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coarsetime::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now_without_cache_update)
}

/// Milliseconds since the process epoch, plus one, so that `0` can mean "never".
#[inline]
pub(crate) fn now_ms() -> u64 {
    let epoch = epoch();
    Instant::now_without_cache_update()
        .duration_since(epoch)
        .as_millis()
        + 1
}

/// How long ago a timestamp of [`now_ms`] was taken, as of `now`.
#[inline]
pub(crate) fn since(now: u64, then: u64) -> Duration {
    Duration::from_millis(now.saturating_sub(then))
}

/// Unix seconds of a timestamp taken with [`now_ms`].
pub(crate) fn unix_secs(ms: u64) -> u64 {
    let ago = since(now_ms(), ms);
    SystemTime::now()
        .checked_sub(ago)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Unix seconds of a `SystemTime`, 0 before 1970.
pub(crate) fn system_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
