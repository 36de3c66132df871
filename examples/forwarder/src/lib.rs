//! `monconn-forwarder`: the Go monconn command line, rebuilt on the `monconn` crate.
//!
//! A TCP port forwarder that monitors every connection. Run
//! `monconn-forwarder --help` (or `cargo run -p monconn-forwarder -- --help`) for the
//! flags, the config file keys and examples.
//!
//! Connections are accepted and forwarded by one thread per core (or
//! `--threads N`), each with its own tokio current-thread runtime (a shard):
//! no work stealing and no wakeups across threads, like nginx's worker
//! processes. By default each shard has its own `SO_REUSEPORT` socket per
//! service; with `--accept shared` they all accept from one socket, and a
//! shard ahead of the others leaves new connections to them (`balance.rs`).
//! All shards share each service's `monconn::ServiceMonitor` (stats, limits, lists,
//! the admin API).
//! The main thread's runtime is shard 0 and also runs the admin API, the
//! signals, reloads and the drain.
//!
//! Exit codes: 0 after a clean stop (SIGINT, SIGTERM), 2 for bad arguments,
//! a bad config or an address that cannot be bound, 1 for a second signal
//! during the drain.

//!
//! The binary (`src/main.rs`) only calls [`app::main`]; the modules are
//! public so that the crate's tests, benches and fuzz targets use them as
//! they are.

pub mod addr;
pub mod admin;
pub mod app;
pub mod auto_ban;
pub mod backend_errors;
pub mod balance;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod logging;
pub mod precheck;
pub mod reload;
pub mod service;
pub mod stats;
pub mod telemetry;
