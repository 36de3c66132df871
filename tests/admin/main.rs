//! The operator's view (`monconn::admin`): the JSON API and its guards over
//! real sockets, and the dashboard in a real browser.
//!
//! One test binary per area (tower's layout); the shared helpers are the
//! `monconn-test-support` crate (`tests/support`).

use monconn_test_support as support;

mod api;
mod browser;
mod guard;
mod http;
mod live;
mod server;
mod tap;
