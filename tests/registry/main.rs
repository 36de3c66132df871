//! The registry: services, snapshots, the sweeper, graceful close, metrics.
//!
//! One test binary per area (tower's layout); the shared helpers are the
//! `monconn-test-support` crate (`tests/support`).

use monconn_test_support as support;

#[cfg(feature = "redis")]
mod cluster;
mod graceful;
#[cfg(feature = "metrics")]
mod metrics;
mod registry;
mod snapshot;
mod sweeper;
mod timed_bans;
