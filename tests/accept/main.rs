//! Accept stack and listener: filters, limits, custom layers, churn, descriptor exhaustion.
//!
//! One test binary per area (tower's layout); the shared helpers are the
//! `monconn-test-support` crate (`tests/support`).

use monconn_test_support as support;

mod accept_common;
mod auto_ban;
mod churn;
#[cfg(target_os = "linux")]
mod fd;
mod filter;
mod limits;
#[cfg(feature = "proxy-protocol")]
mod proxy;
#[cfg(feature = "proxy-protocol")]
mod proxy_props;
mod shared_limits;
mod stack;
