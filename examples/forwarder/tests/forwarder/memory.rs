//! What closed connections leave behind in the real forwarder process:
//! nothing that grows. Its resident memory (`VmRSS`, from `/proc`) is read
//! after a warm-up of short connections and again after many more; it must
//! not grow with their number, with the admin API (and its Prometheus
//! exporter, whose histogram samples are drained every second) and without
//! it (no recorder at all).
//!
//! Until 2026-12-02 the forwarder installed the exporter without draining
//! it: each closed connection left a duration sample of some 16 bytes, for
//! ever unless `/metrics` was scraped; this test, run on that build, saw
//! +1,340 KiB after the 80,000 connections without the admin API.

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use support::{backend, local, read_until_closed, Forwarder, Setup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Connections in flight at once.
const CONCURRENCY: usize = 16;
const WARM_UP: usize = 30_000;
const CONNS: usize = 80_000;
/// Longer than the forwarder's upkeep period (1 s).
const SETTLE: Duration = Duration::from_millis(1_500);
/// What the connections may add to the forwarder's resident memory. A
/// leak of 16 bytes per connection shows as 1.25 MiB here; a quiet machine
/// measures +64 to +124 KiB, one loaded to a load average of 7.7 measured
/// +568 KiB once (allocator and log-queue slack), hence the margin.
const LIMIT_KIB: u64 = 768;

/// The forwarder's resident memory, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in:\n{status}"))
}

/// `n` short connections through `to`: one byte up, one byte back, then the
/// backend closes and the client reads to the end and closes.
async fn short_connections(to: SocketAddr, n: usize) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let slot = slots.clone().acquire_owned().await.expect("semaphore");
        tasks.push(tokio::spawn(async move {
            let _slot = slot;
            let mut c = TcpStream::connect(to).await.expect("connect");
            c.write_all(b"x").await.expect("write");
            assert_eq!(read_until_closed(&mut c).await, b"x");
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_leave_no_memory_behind() {
    let to = backend(|mut s| async move {
        let mut b = [0; 1];
        if s.read_exact(&mut b).await.is_ok() {
            let _ = s.write_all(&b).await;
        }
    })
    .await;
    for no_admin in [true, false] {
        let (fwd, [port]) = Forwarder::start_with_ports(|[port]| Setup {
            no_admin,
            // Info: no line per connection.
            log: Some("info"),
            ..Setup::mapping(format!("127.0.0.1:{port}={to}"))
        });
        // Each reading a little after the load: past an upkeep, no sample
        // waits to be drained.
        short_connections(local(port), WARM_UP).await;
        tokio::time::sleep(SETTLE).await;
        let before = rss_kib(fwd.pid());
        short_connections(local(port), CONNS).await;
        tokio::time::sleep(SETTLE).await;
        let after = rss_kib(fwd.pid());
        let admin = if no_admin { "without" } else { "with" };
        println!("{admin} the admin API: {before} KiB after the warm-up, {after} KiB after {CONNS} more connections");
        assert!(
            after <= before + LIMIT_KIB,
            "{admin} the admin API, {CONNS} connections took the forwarder from {before} to {after} KiB"
        );
        if !no_admin {
            // The samples were drained, not dropped: every close is counted.
            let (status, text) = fwd.http("GET", "/metrics").await;
            assert_eq!(status, 200, "{text}");
            let count = text
                .lines()
                .find(|l| l.starts_with("monconn_connection_duration_seconds_count"))
                .unwrap_or_else(|| panic!("no duration count in:\n{text}"));
            assert!(count.ends_with(&format!(" {}", WARM_UP + CONNS)), "{count}");
        }
    }
}
