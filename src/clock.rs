//! A process-wide monotonic clock in milliseconds, so that per-connection
//! timestamps fit in one `AtomicU64` each.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process epoch, plus one, so that `0` can mean "never".
#[inline]
pub(crate) fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
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
