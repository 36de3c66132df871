//! Integrations: axum, hyper, tonic.
//!
//! One test binary per area (tower's layout); the shared helpers are the
//! `monconn-test-support` crate (`tests/support`).

use monconn_test_support as support;

#[cfg(feature = "axum")]
mod axum;
#[cfg(feature = "axum")]
mod connect_info;
mod custom_stack;
mod http_support;
mod hyper;
#[cfg(all(feature = "proxy-protocol", feature = "axum", feature = "tonic"))]
mod proxy;
#[cfg(feature = "axum")]
mod stats;
#[cfg(feature = "tonic")]
mod tonic;
