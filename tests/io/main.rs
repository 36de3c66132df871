//! The IO wrapper: byte counts, hex dump, the tap, timeouts, allocations per connection, the forward module.
//!
//! One test binary per area (tower's layout); the shared helpers are the
//! `monconn-test-support` crate (`tests/support`).

use monconn_test_support as support;

mod alloc;
mod counts;
#[cfg(feature = "forward")]
mod forward;
#[cfg(all(feature = "forward", target_os = "linux"))]
mod forward_fin;
mod hexdump;
mod tap;
mod timeouts;
