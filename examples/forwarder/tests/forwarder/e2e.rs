//! End to end: the real forwarder process between real loopback clients and
//! backends: forwarding (HTTP, 100 MiB each way, half-close), idle close,
//! exact stats (JSON and Prometheus).

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn mapping(listen: u16, backend: SocketAddr) -> Setup {
    Setup::mapping(format!("127.0.0.1:{listen}={backend}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_request_goes_through() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = backend.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let reply = format!("{} {}", req.method(), req.uri().path());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(reply),
                        )))
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| mapping(port, backend_addr));
    let sid = format!("127.0.0.1:{port}");

    let stream = TcpStream::connect(local(port)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/hello/world")
        .header("host", "example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"GET /hello/world");

    let stats = fwd.stats(&sid).await;
    assert_eq!(stats["sid"], sid.as_str());
    assert_eq!(stats["accepted"], 1);
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["backend_errors"], 0);
}

/// A fast checksum over a stream of bytes (FNV-1a on 8-byte words; the
/// stream is always a multiple of 8 bytes long here).
#[derive(Default)]
struct Sum {
    hash: u64,
    len: u64,
    tail: Vec<u8>,
}

impl Sum {
    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.tail.is_empty() {
            let need = 8 - self.tail.len();
            let take = need.min(data.len());
            self.tail.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.tail.len() == 8 {
                let word = u64::from_le_bytes(self.tail[..].try_into().unwrap());
                self.word(word);
                self.tail.clear();
            }
        }
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().unwrap()));
        }
        self.tail.extend_from_slice(chunks.remainder());
    }

    fn word(&mut self, w: u64) {
        self.hash = (self.hash ^ w).wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// `len` pseudo-random bytes from `seed`, in 64 KiB chunks.
fn pattern(seed: u64, chunk: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(chunk);
    while out.len() < chunk {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

const MIB: u64 = 1 << 20;
const CHUNK: usize = 64 * 1024;

/// Writes `total` bytes of chunks seeded from `seed`, returns their sum.
async fn send(w: &mut (impl AsyncWriteExt + Unpin), seed: u64, total: u64) -> Sum {
    let mut sum = Sum::default();
    let mut sent = 0u64;
    let mut i = 0;
    while sent < total {
        let chunk = pattern(seed + i, CHUNK);
        w.write_all(&chunk).await.unwrap();
        sum.update(&chunk);
        sent += CHUNK as u64;
        i += 1;
    }
    sum
}

async fn receive(r: &mut (impl AsyncReadExt + Unpin)) -> Sum {
    let mut sum = Sum::default();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return sum;
        }
        sum.update(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_each_way_arrive_intact_and_are_counted() {
    const TOTAL: u64 = 100 * MIB;
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    // The backend sends its 100 MiB while it receives the client's.
    let backend_side = tokio::spawn(async move {
        let (stream, _) = backend.accept().await.unwrap();
        let (mut r, mut w) = stream.into_split();
        let sending = tokio::spawn(async move {
            let sum = send(&mut w, 1_000_000, TOTAL).await;
            w.shutdown().await.unwrap();
            sum
        });
        let got = receive(&mut r).await;
        (got, sending.await.unwrap())
    });
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| mapping(port, backend_addr));
    let sid = format!("127.0.0.1:{port}");

    let client = TcpStream::connect(local(port)).await.unwrap();
    let (mut r, mut w) = client.into_split();
    let client_sending = tokio::spawn(async move {
        let sum = send(&mut w, 7, TOTAL).await;
        w.shutdown().await.unwrap();
        sum
    });
    let client_got = tokio::time::timeout(WAIT * 4, receive(&mut r))
        .await
        .expect("download");
    let client_sent = client_sending.await.unwrap();
    let (backend_got, backend_sent) = tokio::time::timeout(WAIT, backend_side)
        .await
        .expect("upload")
        .unwrap();

    assert_eq!(client_sent.len, TOTAL);
    assert_eq!(backend_got.len, TOTAL);
    assert_eq!(backend_got.hash, client_sent.hash);
    assert_eq!(client_got.len, TOTAL);
    assert_eq!(client_got.hash, backend_sent.hash);

    let stats = fwd
        .wait_stats(&sid, "the pair closed", |s| s["connections"] == 0)
        .await;
    assert_eq!(stats["bytes_read"], TOTAL);
    assert_eq!(stats["bytes_written"], TOTAL);
    assert_eq!(stats["closed"]["normal"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_passes_on_and_the_reply_still_arrives() {
    const REPLY: usize = 3 * 1024 * 1024 + 17;
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = backend.accept().await.unwrap();
        // Read the whole request: it ends only when the client's shutdown
        // comes through the forwarder.
        let mut request = Vec::new();
        stream.read_to_end(&mut request).await.unwrap();
        assert_eq!(request, b"the whole request");
        let reply: Vec<u8> = (0..REPLY).map(|i| (i % 251) as u8).collect();
        stream.write_all(&reply).await.unwrap();
        stream.shutdown().await.unwrap();
    });
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| mapping(port, backend_addr));

    let mut client = TcpStream::connect(local(port)).await.unwrap();
    client.write_all(b"the whole request").await.unwrap();
    client.shutdown().await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut reply))
        .await
        .expect("reply timed out")
        .unwrap();
    assert_eq!(reply.len(), REPLY);
    assert!(reply.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));

    let sid = format!("127.0.0.1:{port}");
    let stats = fwd
        .wait_stats(&sid, "the pair closed", |s| s["connections"] == 0)
        .await;
    assert_eq!(stats["bytes_read"], 17);
    assert_eq!(stats["bytes_written"], REPLY as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_exact_bytes_live_and_after_close() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = backend.accept().await.unwrap();
        let mut buf = vec![0u8; 12_345];
        stream.read_exact(&mut buf).await.unwrap();
        stream.write_all(&vec![7u8; 54_321]).await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
    });
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| mapping(port, backend_addr));
    let sid = format!("127.0.0.1:{port}");

    let mut client = TcpStream::connect(local(port)).await.unwrap();
    client.write_all(&vec![1u8; 12_345]).await.unwrap();
    let mut reply = vec![0u8; 54_321];
    client.read_exact(&mut reply).await.unwrap();

    // Live: the open connection's bytes are in the totals and its row.
    let stats = fwd
        .wait_stats(&sid, "live bytes counted", |s| s["bytes_written"] == 54_321)
        .await;
    assert_eq!(stats["bytes_read"], 12_345);
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["ips"][0]["ip"], "127.0.0.1");
    let (status, body) = fwd
        .http("GET", &format!("/stats/{}/connections", encode(&sid)))
        .await;
    assert_eq!(status, 200, "{body}");
    let conns: serde_json::Value = serde_json::from_str(&body).unwrap();
    let row = &conns["connections"][0];
    assert_eq!(row["bytes_read"], 12_345);
    assert_eq!(row["bytes_written"], 54_321);
    assert_eq!(row["peer"], client.local_addr().unwrap().to_string());

    // The registry-wide view has the same figures.
    let (status, body) = fwd.http("GET", "/stats").await;
    assert_eq!(status, 200);
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(all["services"].as_array().unwrap().len(), 1);
    assert_eq!(all["services"][0]["bytes_read"], 12_345);

    drop(client);
    let stats = fwd
        .wait_stats(&sid, "the pair closed", |s| s["connections"] == 0)
        .await;
    assert_eq!(stats["bytes_read"], 12_345);
    assert_eq!(stats["bytes_written"], 54_321);

    // Prometheus text has the same totals, labelled by service.
    let (status, metrics) = fwd.http("GET", "/metrics").await;
    assert_eq!(status, 200);
    let line = format!("monconn_bytes_read_total{{service=\"{sid}\"}} 12345");
    assert!(metrics.contains(&line), "no `{line}` in:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed_and_counted() {
    let backend = banner_backend().await;
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| {
        Setup::config(service_yaml(
            "idle",
            port,
            backend.port(),
            "  max_idle: 1\n  idle_interval: 0.1\n",
        ))
    });
    // Taken before the connection exists, so the idle time is at least this.
    let started = std::time::Instant::now();
    let mut client = open([127, 0, 0, 1], local(port)).await.expect("admitted");
    let rest = read_until_closed(&mut client).await;
    assert!(rest.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
    let stats = fwd
        .wait_stats("idle", "the idle close counted", |s| s["connections"] == 0)
        .await;
    assert_eq!(stats["closed"]["idle"], 1);
    assert_eq!(stats["bytes_written"], 6);
}

/// The backend sends a banner and shuts down its write side, then reports
/// whether its read side ended (the forwarder closed it) within `WAIT`,
/// while the client holds its side open and silent.
async fn backend_eof_seen_by_backend(extra: &str) -> bool {
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let seen_tx = std::sync::Mutex::new(Some(seen_tx));
    let backend_addr = backend(move |mut stream| {
        let seen_tx = seen_tx.lock().unwrap().take();
        async move {
            stream.write_all(b"banner\n").await.unwrap();
            stream.shutdown().await.unwrap();
            let mut rest = Vec::new();
            let ended = tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut rest))
                .await
                .is_ok();
            if let Some(tx) = seen_tx {
                let _ = tx.send(ended);
            }
        }
    })
    .await;
    let (_fwd, [port]) = Forwarder::start_with_ports(|[port]| {
        Setup::config(service_yaml("svc", port, backend_addr.port(), extra))
    });
    let mut client = TcpStream::connect(local(port)).await.unwrap();
    let mut banner = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut banner))
        .await
        .expect("banner and EOF timed out")
        .unwrap();
    assert_eq!(banner, b"banner\n");
    let ended = tokio::time::timeout(WAIT, seen_rx).await.unwrap().unwrap();
    drop(client);
    ended
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_setting_from_the_config_decides_when_the_pair_ends() {
    // Default: the backend's EOF is passed on, its read side stays open for
    // the client, which has not ended.
    assert!(!backend_eof_seen_by_backend("").await);
    // half_close: false: the first EOF closes both sides.
    assert!(backend_eof_seen_by_backend("  half_close: false\n").await);
}
