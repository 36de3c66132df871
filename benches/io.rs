//! Bulk copy through `MonitoredIo` against the raw stream, over loopback TCP
//! and over `tokio::io::duplex`: 64 MiB per iteration in 64 KiB buffers, both
//! ends monitored in the monitored case.
//!
//! After criterion's runs, the same copies run again interleaved (raw,
//! monitored, raw, ...) so that load drifting on a shared machine slows both
//! alike, and the median throughput ratio is printed.
//!
//! `cargo bench --bench io`; the figures are recorded in BENCHMARKS.md.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use monconn::{Registry, ServiceConfig, ServiceMonitor};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOTAL: usize = 64 << 20;
const BUF: usize = 64 << 10;

/// Writes `TOTAL` bytes into `w` while reading them all from `r`.
async fn copy<W, R>(w: &mut W, r: &mut R)
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let out = vec![0x5a; BUF];
    let mut buf = vec![0; BUF];
    let write = async {
        let mut left = TOTAL;
        while left > 0 {
            let n = w.write(&out[..left.min(BUF)]).await.unwrap();
            left -= n;
        }
    };
    let read = async {
        let mut left = TOTAL;
        while left > 0 {
            let n = r.read(&mut buf).await.unwrap();
            assert!(n > 0, "early EOF");
            left -= n;
        }
    };
    tokio::join!(write, read);
}

/// Times `iters` copies between `w` and `r`.
async fn timed<W, R>(mut w: W, mut r: R, iters: u64) -> Duration
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let start = Instant::now();
    for _ in 0..iters {
        copy(&mut w, &mut r).await;
    }
    start.elapsed()
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

fn service() -> ServiceMonitor {
    let config = ServiceConfig::default()
        .read_timeout(None)
        .write_timeout(None)
        .max_idle(None);
    Registry::new().create("bench", config).unwrap()
}

fn bulk_copy(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mut group = c.benchmark_group("bulk_copy_64MiB");
    group
        .throughput(Throughput::Bytes(TOTAL as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));

    group.bench_function(BenchmarkId::new("tcp", "raw"), |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let (w, r) = tcp_pair().await;
            timed(w, r, iters).await
        })
    });
    group.bench_function(BenchmarkId::new("tcp", "monitored"), |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let (w, r) = tcp_pair().await;
            let s = service();
            let (wp, rp) = (w.peer_addr().unwrap(), r.peer_addr().unwrap());
            let w = s.wrap(w, wp, rp).unwrap();
            let r = s.wrap(r, rp, wp).unwrap();
            let elapsed = timed(w, r, iters).await;
            assert_eq!(
                s.bytes(),
                monconn::ByteCounts {
                    read: iters * TOTAL as u64,
                    written: iters * TOTAL as u64
                }
            );
            elapsed
        })
    });
    group.bench_function(BenchmarkId::new("duplex", "raw"), |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let (w, r) = tokio::io::duplex(4 * BUF);
            timed(w, r, iters).await
        })
    });
    group.bench_function(BenchmarkId::new("duplex", "monitored"), |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let (w, r) = tokio::io::duplex(4 * BUF);
            let s = service();
            let w = s.wrap(w, addr, addr).unwrap();
            let r = s.wrap(r, addr, addr).unwrap();
            let elapsed = timed(w, r, iters).await;
            assert_eq!(
                s.bytes(),
                monconn::ByteCounts {
                    read: iters * TOTAL as u64,
                    written: iters * TOTAL as u64
                }
            );
            elapsed
        })
    });
    group.finish();
}

/// Alternates raw and monitored copies, each over a fresh pair, so that a
/// machine whose load drifts slows both alike and no pair's quirks (socket
/// buffer sizes) favour one side; prints each side's median throughput and
/// the median of the paired ratios (monitored / raw).
fn interleaved(rt: &tokio::runtime::Runtime, kind: &str, rounds: usize) {
    let (raw_ms, mon_ms) = rt.block_on(async {
        let s = service();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let pair = || async {
            if kind == "tcp" {
                let (w, r) = tcp_pair().await;
                (
                    Box::new(w) as Box<dyn Stream>,
                    Box::new(r) as Box<dyn Stream>,
                )
            } else {
                let (w, r) = tokio::io::duplex(4 * BUF);
                (
                    Box::new(w) as Box<dyn Stream>,
                    Box::new(r) as Box<dyn Stream>,
                )
            }
        };
        let (mut raw_ms, mut mon_ms) = (Vec::new(), Vec::new());
        for round in 0..rounds + 2 {
            let (mut raw_w, mut raw_r) = pair().await;
            let (mw, mr) = pair().await;
            let (mut mon_w, mut mon_r) = (
                s.wrap(mw, addr, addr).unwrap(),
                s.wrap(mr, addr, addr).unwrap(),
            );
            let (raw, mon) = if round % 2 == 0 {
                let raw = timed_once(&mut raw_w, &mut raw_r).await;
                (raw, timed_once(&mut mon_w, &mut mon_r).await)
            } else {
                let mon = timed_once(&mut mon_w, &mut mon_r).await;
                (timed_once(&mut raw_w, &mut raw_r).await, mon)
            };
            if round >= 2 {
                // The first two rounds warm up.
                raw_ms.push(raw);
                mon_ms.push(mon);
            }
        }
        (raw_ms, mon_ms)
    });
    let ratios: Vec<f64> = raw_ms.iter().zip(&mon_ms).map(|(r, m)| r / m).collect();
    let gib = |ms: f64| TOTAL as f64 / (1u64 << 30) as f64 / (ms / 1000.0);
    let (raw, mon) = (median(raw_ms), median(mon_ms));
    println!(
        "interleaved {kind}, {rounds} rounds of 64 MiB: raw median {raw:.2} ms ({:.2} GiB/s), \
         monitored median {mon:.2} ms ({:.2} GiB/s), throughput ratio monitored/raw: \
         median of paired ratios {:.3}, ratio of medians {:.3}",
        gib(raw),
        gib(mon),
        median(ratios),
        raw / mon,
    );
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One copy, in milliseconds.
async fn timed_once<W, R>(w: &mut W, r: &mut R) -> f64
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let start = Instant::now();
    copy(w, r).await;
    start.elapsed().as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

criterion_group!(benches, bulk_copy);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Only under `cargo bench` (which passes `--bench`), not when the bench
    // runs as a test (`cargo test --benches`) or lists its benchmarks.
    if std::env::args().any(|a| a == "--bench") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        interleaved(&rt, "tcp", 60);
        interleaved(&rt, "duplex", 300);
    }
}
