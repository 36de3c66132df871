//! Bulk copy through `MonitoredIo` against the raw stream, over loopback TCP
//! and over `tokio::io::duplex`: 64 MiB per iteration in 64 KiB buffers, both
//! ends monitored in the monitored case.
//!
//! After criterion's runs, the same copies run again interleaved (raw,
//! monitored, raw, ...) so that load drifting on a shared machine slows both
//! alike, and the median throughput ratio is printed; then monitored copies
//! with no tap against monitored copies with taps on in their registry for
//! other connections (`tap_elsewhere`: the one relaxed load per read and
//! write that a tap costs a connection it does not match).
//!
//! `cargo bench --bench io`; the figures are recorded in BENCHMARKS.md.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use monconn::tap::{Tap, TapFilter};
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

fn quiet() -> ServiceConfig {
    ServiceConfig::default()
        .read_timeout(None)
        .write_timeout(None)
        .max_idle(None)
}

fn service() -> ServiceMonitor {
    Registry::new().create("bench", quiet()).unwrap()
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
    group.bench_function(BenchmarkId::new("tcp", "tap_elsewhere"), |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let (w, r) = tcp_pair().await;
            let (s, _taps) = tapped_elsewhere();
            let (wp, rp) = (w.peer_addr().unwrap(), r.peer_addr().unwrap());
            let w = s.wrap(w, wp, rp).unwrap();
            let r = s.wrap(r, rp, wp).unwrap();
            timed(w, r, iters).await
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

/// Wraps one end of a pair for one side of an interleaved comparison.
type Wrap<'a> = &'a dyn Fn(Box<dyn Stream>) -> Box<dyn Stream>;

/// Alternates copies of side `a` and side `b` (each over a fresh pair, its
/// ends wrapped by that side's `Wrap`), so that a machine whose load drifts
/// slows both alike and no pair's quirks (socket buffer sizes) favour one
/// side; prints each side's median throughput and the median of the paired
/// ratios (b / a).
fn interleaved(
    rt: &tokio::runtime::Runtime,
    kind: &str,
    rounds: usize,
    (a_name, wrap_a): (&str, Wrap<'_>),
    (b_name, wrap_b): (&str, Wrap<'_>),
) {
    let (a_ms, b_ms) = rt.block_on(async {
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
        let (mut a_ms, mut b_ms) = (Vec::new(), Vec::new());
        for round in 0..rounds + 2 {
            let (aw, ar) = pair().await;
            let (mut a_w, mut a_r) = (wrap_a(aw), wrap_a(ar));
            let (bw, br) = pair().await;
            let (mut b_w, mut b_r) = (wrap_b(bw), wrap_b(br));
            let (a, b) = if round % 2 == 0 {
                let a = timed_once(&mut a_w, &mut a_r).await;
                (a, timed_once(&mut b_w, &mut b_r).await)
            } else {
                let b = timed_once(&mut b_w, &mut b_r).await;
                (timed_once(&mut a_w, &mut a_r).await, b)
            };
            if round >= 2 {
                // The first two rounds warm up.
                a_ms.push(a);
                b_ms.push(b);
            }
        }
        (a_ms, b_ms)
    });
    let ratios: Vec<f64> = a_ms.iter().zip(&b_ms).map(|(a, b)| a / b).collect();
    let gib = |ms: f64| TOTAL as f64 / (1u64 << 30) as f64 / (ms / 1000.0);
    let (a, b) = (median(a_ms), median(b_ms));
    println!(
        "interleaved {kind}, {rounds} rounds of 64 MiB: {a_name} median {a:.2} ms ({:.2} GiB/s), \
         {b_name} median {b:.2} ms ({:.2} GiB/s), throughput ratio {b_name}/{a_name}: \
         median of paired ratios {:.3}, ratio of medians {:.3}",
        gib(a),
        gib(b),
        median(ratios),
        a / b,
    );
}

/// A service whose registry has taps on, all on other connections: another
/// service, another network, another connection id. Keep the taps.
fn tapped_elsewhere() -> (ServiceMonitor, Vec<Tap>) {
    let registry = Registry::new();
    let s = registry.create("bench", quiet()).unwrap();
    let taps = vec![
        registry.tap(TapFilter::new().with_sid("another")),
        registry.tap(TapFilter::new().with_ip("10.9.9.9/32".parse().unwrap())),
        registry.tap(TapFilter::new().with_sid("bench").with_conn(u64::MAX)),
    ];
    (s, taps)
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
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let plain = service();
        let (tapped, _taps) = tapped_elsewhere();
        let raw: Wrap<'_> = &|io| io;
        let monitored: Wrap<'_> = &|io| Box::new(plain.wrap(io, addr, addr).unwrap());
        let tap_elsewhere: Wrap<'_> = &|io| Box::new(tapped.wrap(io, addr, addr).unwrap());
        interleaved(&rt, "tcp", 60, ("raw", raw), ("monitored", monitored));
        interleaved(&rt, "duplex", 300, ("raw", raw), ("monitored", monitored));
        let (no_tap, tap) = (("no_tap", monitored), ("tap_elsewhere", tap_elsewhere));
        interleaved(&rt, "tcp", 60, no_tap, tap);
        interleaved(&rt, "duplex", 300, no_tap, tap);
    }
}
