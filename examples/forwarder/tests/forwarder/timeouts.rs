//! End to end: what the forwarder's timeouts watch. A download outlives
//! `read_timeout`, an upload outlives `write_timeout`, a backend that stops
//! reading is cut after `write_timeout`, and every cut reaches both peers
//! as a reset, never as a clean end.

use crate::support;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

/// Timeouts of half a second, checked every 50 ms.
const TIMEOUTS: &str =
    "  read_timeout: 0.5\n  write_timeout: 0.5\n  max_idle: 0\n  idle_interval: 0.05\n";

async fn start(backend: SocketAddr, extra: &str) -> (Forwarder, SocketAddr) {
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| {
        Setup::config(service_yaml("svc", port, backend.port(), extra))
    });
    (fwd, local(port))
}

/// Waits for a backend connection's report of how its stream ended, and
/// checks that it was a reset.
async fn backend_sees_a_reset(ends: &mut mpsc::UnboundedReceiver<Result<(), io::ErrorKind>>) {
    let end = tokio::time::timeout(Duration::from_secs(20), ends.recv())
        .await
        .expect("the backend's read ends")
        .unwrap();
    assert_eq!(
        end,
        Err(io::ErrorKind::ConnectionReset),
        "the backend sees a reset"
    );
}

/// Reads to the end: the bytes read, and how it ended (`Ok` for EOF).
async fn drain(stream: &mut TcpStream) -> (u64, io::Result<()>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await {
            Err(_) => panic!("still open after 20 s, {total} bytes read"),
            Ok(Ok(0)) => return (total, Ok(())),
            Ok(Ok(n)) => total += n as u64,
            Ok(Err(e)) => return (total, Err(e)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_outlives_read_timeout() {
    // 60 chunks of 16 KiB, one every 50 ms: 3 s, six read timeouts, and the
    // client never sends a byte.
    let backend = backend(|mut stream| async move {
        for _ in 0..60 {
            if stream.write_all(&[b'd'; 16 * 1024]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stream.shutdown().await;
    })
    .await;
    let (fwd, addr) = start(backend, TIMEOUTS).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let (got, end) = drain(&mut client).await;
    end.expect("the download ends cleanly");
    assert_eq!(got, 60 * 16 * 1024);
    drop(client);
    let stats = fwd
        .wait_stats("svc", "the connection closed", |s| s["connections"] == 0)
        .await;
    assert_eq!(stats["closed"]["read_timeout"], 0, "{stats}");
    assert_eq!(stats["closed"]["normal"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_to_a_silent_backend_outlives_write_and_read_timeouts() {
    // The backend reads everything and answers nothing until the end.
    let backend = backend(|mut stream| async move {
        let mut sink = Vec::new();
        if stream.read_to_end(&mut sink).await.is_ok() {
            let _ = stream.write_all(&(sink.len() as u64).to_be_bytes()).await;
        }
    })
    .await;
    let (fwd, addr) = start(backend, TIMEOUTS).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    for _ in 0..60 {
        client.write_all(&[b'u'; 4096]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.shutdown().await.unwrap();
    let mut answer = [0u8; 8];
    client.read_exact(&mut answer).await.expect("the answer");
    assert_eq!(u64::from_be_bytes(answer), 60 * 4096);
    let stats = fwd
        .wait_stats("svc", "the connection closed", |s| s["connections"] == 0)
        .await;
    assert_eq!(stats["closed"]["normal"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_stops_reading_is_cut_by_write_timeout() {
    // The backend holds its socket and reads nothing until the client was
    // cut; then it reads what is queued and reports how the stream ended.
    let (ended, mut ends) = mpsc::unbounded_channel();
    let cut = Arc::new(Notify::new());
    let client_cut = cut.clone();
    let backend = backend(move |mut stream| {
        let ended = ended.clone();
        let cut = cut.clone();
        async move {
            cut.notified().await;
            let _ = ended.send(drain(&mut stream).await.1.map_err(|e| e.kind()));
        }
    })
    .await;
    // A write timeout of 2 s, so the client has stopped writing well
    // before the cut: a reset is reported once, to the call that meets it,
    // and the read below must be the one.
    let (fwd, addr) = start(
        backend,
        "  write_timeout: 2\n  read_timeout: 0\n  max_idle: 0\n  idle_interval: 0.05\n",
    )
    .await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    // Write until every buffer on the way is full: a write that makes no
    // progress for 300 ms.
    let chunk = vec![b'w'; 64 * 1024];
    let mut sent = 0u64;
    while let Ok(wrote) =
        tokio::time::timeout(Duration::from_millis(300), client.write(&chunk)).await
    {
        sent += wrote.expect("writes go through until the buffers fill") as u64;
        assert!(
            sent < 1 << 30,
            "1 GiB written to a backend that reads nothing"
        );
    }
    let (got, end) = drain(&mut client).await;
    assert_eq!(got, 0);
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset),
        "the client sees a reset"
    );
    let stats = fwd
        .wait_stats("svc", "the pair cut", |s| s["connections"] == 0)
        .await;
    assert_eq!(stats["closed"]["write_timeout"], 1, "{stats}");
    client_cut.notify_one();
    backend_sees_a_reset(&mut ends).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_timeout_cut_resets_both_peers() {
    let (ended, mut ends) = mpsc::unbounded_channel();
    let backend = backend(move |mut stream| {
        let ended = ended.clone();
        async move {
            let _ = ended.send(drain(&mut stream).await.1.map_err(|e| e.kind()));
        }
    })
    .await;
    let (fwd, addr) = start(backend, TIMEOUTS).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    // Neither side sends: the client's read times out.
    let (_, end) = drain(&mut client).await;
    assert_eq!(
        end.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset),
        "the client sees a reset"
    );
    backend_sees_a_reset(&mut ends).await;
    let stats = fwd
        .wait_stats("svc", "the pair cut", |s| s["connections"] == 0)
        .await;
    assert_eq!(stats["closed"]["read_timeout"], 1, "{stats}");
}
