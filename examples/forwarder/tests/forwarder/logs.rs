//! End to end: logging never blocks forwarding or the admin API, even when
//! nobody reads the forwarder's output.

use crate::support;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the client pushes through the forwarder (and reads back).
const TOTAL: usize = 4 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_reader_blocks_neither_forwarding_nor_the_admin_api() {
    // An echo backend.
    let backend = backend(|mut stream| async move {
        let (mut r, mut w) = stream.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await;
    // print_bytes: a hex dump (about 4.3 bytes of log per byte moved) in
    // each direction, to a pipe nobody reads: its 64 KiB fill at once.
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| Setup {
        stderr_unread: true,
        ..Setup::config(service_yaml(
            "dump",
            port,
            backend.port(),
            "  print_bytes: true\n",
        ))
    });
    let client = tokio::net::TcpStream::connect(local(port)).await.unwrap();
    let (mut r, mut w) = client.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 16 * 1024];
        for _ in 0..TOTAL / chunk.len() {
            w.write_all(&chunk).await?;
        }
        w.shutdown().await
    });
    let read_back = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < TOTAL {
            match r.read(&mut buf).await.unwrap() {
                0 => break,
                n => got += n,
            }
        }
        got
    };
    let got = tokio::time::timeout(WAIT, read_back)
        .await
        .unwrap_or_else(|_| panic!("the transfer stalled: stderr is full and nobody reads it"));
    assert_eq!(got, TOTAL);
    writer.await.unwrap().unwrap();

    // The admin API answers, and counts the log lines it had to drop (the
    // dumps are formatted off the connection's path, so the drops may
    // come a little after the transfer).
    let deadline = tokio::time::Instant::now() + WAIT;
    let stats = loop {
        let (status, body) = fwd.http("GET", "/stats").await;
        assert_eq!(status, 200, "{body}");
        let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
        let dropped = stats["log_lines_dropped"].as_u64();
        if dropped > Some(0) {
            break stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log_lines_dropped > 0 in {stats}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(stats["services"][0]["bytes_read"], TOTAL as u64);
    let (status, metrics) = fwd.http("GET", "/metrics").await;
    assert_eq!(status, 200);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("monconn_forwarder_log_lines_dropped "))
        .unwrap_or_else(|| panic!("no monconn_forwarder_log_lines_dropped in:\n{metrics}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value > 0.0, "{line}");
}
