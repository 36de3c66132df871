//! The forwarder end to end: the real `monconn-forwarder` process (started
//! through `CARGO_BIN_EXE_monconn-forwarder`) against real backends and
//! clients over loopback, and the reliability scenarios of RELIABILITY.md.
//!
//! One test binary; `support` starts the process and the backends.

mod support;

mod admin;
mod auto_ban;
mod backends;
mod balance;
mod cli;
mod cluster;
mod dashboard;
mod e2e;
mod limits;
mod logs;
mod memory;
mod nofile;
mod proxy;
mod reliability;
mod reload;
mod signals;
mod telemetry;
mod timeouts;
