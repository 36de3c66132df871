//! Integrations: axum, hyper, tonic.
//!
//! One test binary per area (tower's layout); the shared helpers are the
//! `monconn-test-support` crate (`tests/support`).

use monconn_test_support as support;

#[cfg(feature = "axum")]
mod axum;
mod http_support;
mod hyper;
#[cfg(feature = "tonic")]
mod tonic;
