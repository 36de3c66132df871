//! The accept stack's cost.
//!
//! - `accept/*`: connections accepted per second over loopback TCP, by a bare
//!   tokio accept loop, by a `monconn::Listener` with the default stack
//!   (filter + limits + monitoring, keepalive set) and by the same with a
//!   100,000-entry CIDR blacklist loaded. Clients connect from 4 tasks and
//!   close with `SO_LINGER` 0 (no TIME_WAIT pile-up); an iteration ends when
//!   the server has accepted, wrapped and dropped the connection.
//! - `filter/*`: the filter decision alone (`ServiceMonitor::ip_verdict`) against
//!   1,000 and 100,000 random IPv4 CIDRs (/8 to /32) and IPv6 CIDRs, over
//!   4,096 random client addresses.
//!
//! - `MONCONN_RATE_ROUNDS=n`: the per-client rate table under churn (see
//!   `rate_churn`).
//! - `MONCONN_PROXY_ROUNDS=n`: the PROXY-protocol layer on (v2, trusted) and
//!   off, in turns (feature `proxy-protocol`; see `accept/proxy.rs`).
//!
//! `cargo bench --bench accept`; the medians and their ratios are recorded
//! in BENCHMARKS.md.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use monconn::{Listener, Registry, ServiceConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;

#[path = "support/load.rs"]
mod load;
#[cfg(feature = "proxy-protocol")]
#[path = "accept/proxy.rs"]
mod proxy;

use load::{connect_many, interleaved_rates, median, paired, serve_dropping, Done};

/// `n` random CIDRs shaped like a real blacklist: 80 % IPv4 (60 % of them
/// single addresses, 30 % /24, 10 % /16 to /23) and 20 % IPv6 (/128, /64,
/// /48, /32 in 40/40/15/5 %), none covering 127.0.0.0/8 or ::1. Few of them
/// overlap, so the set keeps about `n` ranges.
fn cidrs(n: usize, seed: u64) -> Vec<IpNet> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let net = if rng.random_bool(0.8) {
            let len = match rng.random_range(0..100) {
                0..60 => 32,
                60..90 => 24,
                _ => rng.random_range(16..=23),
            };
            IpNet::V4(
                Ipv4Net::new(rng.random::<u32>().into(), len)
                    .unwrap()
                    .trunc(),
            )
        } else {
            let len = match rng.random_range(0..100) {
                0..40 => 128,
                40..80 => 64,
                80..95 => 48,
                _ => 32,
            };
            let addr = (0x2000u128 << 112) | (rng.random::<u128>() >> 3);
            IpNet::V6(Ipv6Net::new(addr.into(), len).unwrap().trunc())
        };
        if !net.contains(&lo) {
            out.push(net);
        }
    }
    out
}

/// A plain tokio accept loop; with `keepalive`, the listening socket has the
/// default config's keepalive (30 s), which accepted sockets inherit on Linux.
async fn bare_server(done: Arc<Done>, keepalive: bool) -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    if keepalive {
        let period = Duration::from_secs(30);
        let ka = socket2::TcpKeepalive::new()
            .with_time(period)
            .with_interval(period);
        socket2::SockRef::from(&tcp).set_tcp_keepalive(&ka).unwrap();
    }
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tcp.accept().await.unwrap();
            drop(black_box(stream));
            done.add();
        }
    });
    addr
}

async fn monconn_server(done: Arc<Done>, config: ServiceConfig) -> SocketAddr {
    let service = Registry::new().create("bench", config).unwrap();
    serve_dropping(Listener::bind("127.0.0.1:0", service).await.unwrap(), done)
}

fn accept(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("accept");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    let default = ServiceConfig::default();
    let blacklist = default.clone().blacklist(cidrs(100_000, 1));
    let servers: [(&str, Option<ServiceConfig>); 3] = [
        ("bare_tokio", None),
        ("listener_default_stack", Some(default)),
        ("listener_blacklist_100k", Some(blacklist)),
    ];
    for (name, config) in servers {
        let done = Arc::new(Done::default());
        let addr = rt.block_on(async {
            match config {
                None => bare_server(done.clone(), false).await,
                Some(config) => monconn_server(done.clone(), config).await,
            }
        });
        group.bench_function(name, |b| {
            b.iter_custom(|iters| rt.block_on(connect_many(addr, &done, iters, None)))
        });
    }
    group.finish();
}

fn filter(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(2);
    let probes_v4: Vec<IpAddr> = (0..4096)
        .map(|_| IpAddr::V4(rng.random::<u32>().into()))
        .collect();
    let probes_v6: Vec<IpAddr> = (0..4096)
        .map(|_| IpAddr::V6(((0x2000u128 << 112) | (rng.random::<u128>() >> 3)).into()))
        .collect();
    let mut group = c.benchmark_group("filter");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for entries in [1_000usize, 100_000] {
        let service = Registry::new()
            .create(
                "filter",
                ServiceConfig::default().blacklist(cidrs(entries, 3)),
            )
            .unwrap();
        for (family, probes) in [("v4", &probes_v4), ("v6", &probes_v6)] {
            group.bench_with_input(
                BenchmarkId::new(format!("ip_verdict_{family}"), entries),
                probes,
                |b, probes| {
                    let mut i = 0;
                    b.iter(|| {
                        i = (i + 1) & 4095;
                        black_box(service.ip_verdict(black_box(probes[i])))
                    })
                },
            );
        }
    }
    // A runtime change to a 100,000-entry list: reject then release.
    let service = Registry::new()
        .create(
            "filter",
            ServiceConfig::default().blacklist(cidrs(100_000, 5)),
        )
        .unwrap();
    let extra: IpNet = "198.51.100.0/24".parse().unwrap();
    group.sample_size(10);
    group.bench_function("reject_and_release/100000", |b| {
        b.iter(|| {
            assert!(service.ban(extra));
            assert!(service.unban(extra));
        })
    });
    group.sample_size(50);

    // The worst shape for the bucket index: a third of the entries in one
    // bucket (every other address of 10.1.0.0/16: no two adjacent, so they
    // do not merge), the rest spread out.
    let mut clustered: Vec<IpNet> = (0..=u16::MAX)
        .step_by(2)
        .map(|n| IpNet::V4(Ipv4Net::new([10, 1, (n >> 8) as u8, n as u8].into(), 32).unwrap()))
        .collect();
    clustered.extend(cidrs(100_000 - clustered.len(), 4));
    let service = Registry::new()
        .create("filter", ServiceConfig::default().blacklist(clustered))
        .unwrap();
    let probes: Vec<IpAddr> = (0..4096)
        .map(|_| IpAddr::V4([10, 1, rng.random(), rng.random()].into()))
        .collect();
    group.bench_with_input(
        BenchmarkId::new("ip_verdict_v4_clustered", 100_000),
        &probes,
        |b, probes| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(service.ip_verdict(black_box(probes[i])))
            })
        },
    );
    group.finish();
}

/// The accept variants, run in turns (`MONCONN_ACCEPT_ROUNDS=n`): on a busy
/// machine, load that comes and goes hits all of them alike, so the ratios
/// of the medians are steadier than criterion's one-after-the-other runs.
fn interleaved(rounds: usize) {
    const CONNS: u64 = 2_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let default = ServiceConfig::default();
    // `None`: bare tokio; `Some(None)`: bare tokio with keepalive.
    let variants: Vec<(&str, Option<Option<ServiceConfig>>)> = vec![
        ("bare_tokio", None),
        ("listener_default_stack", Some(Some(default.clone()))),
        ("bare_tokio_keepalive", Some(None)),
        (
            "listener_blacklist_100k",
            Some(Some(default.clone().blacklist(cidrs(100_000, 1)))),
        ),
        ("listener_no_keepalive", Some(Some(default.keepalive(None)))),
    ];
    // MONCONN_ACCEPT_ONLY=name runs one variant (for strace or perf).
    let only = std::env::var("MONCONN_ACCEPT_ONLY").ok();
    let variants: Vec<_> = variants
        .into_iter()
        .filter(|(name, _)| only.as_deref().is_none_or(|o| o == *name))
        .collect();
    let servers: Vec<_> = variants
        .iter()
        .map(|(name, config)| {
            let done = Arc::new(Done::default());
            let addr = rt.block_on(async {
                match config.clone() {
                    None => bare_server(done.clone(), false).await,
                    Some(None) => bare_server(done.clone(), true).await,
                    Some(Some(config)) => monconn_server(done.clone(), config).await,
                }
            });
            (*name, addr, done)
        })
        .collect();
    let turns: Vec<_> = servers
        .iter()
        .map(|(_, addr, done)| (*addr, done.clone()))
        .collect();
    let rates = interleaved_rates(&rt, &turns, rounds, CONNS);
    println!("{rounds} rounds of {CONNS} connections; medians, and medians of per-round ratios:");
    let last = servers.len() - 1;
    for (i, (name, _, _)) in servers.iter().enumerate() {
        println!(
            "{name:<26} {:>9.0} conn/s  to bare {:.3}  to bare+keepalive {:.3}  to default stack {:.3}",
            median(rates[i].clone()),
            paired(&rates, i, 0),
            paired(&rates, i, 2.min(last)),
            paired(&rates, i, 1.min(last))
        );
    }
}

/// The filter decision for 1,000 and 100,000 entries, in turns
/// (`MONCONN_FILTER_ROUNDS=n`): rounds of 409,600 lookups each, the order
/// rotated every round, medians in ns per lookup.
fn interleaved_filter(rounds: usize) {
    const LOOKUPS: usize = 100 * 4096;
    let mut rng = SmallRng::seed_from_u64(2);
    let v4: Vec<IpAddr> = (0..4096)
        .map(|_| IpAddr::V4(rng.random::<u32>().into()))
        .collect();
    let v6: Vec<IpAddr> = (0..4096)
        .map(|_| IpAddr::V6(((0x2000u128 << 112) | (rng.random::<u128>() >> 3)).into()))
        .collect();
    let mut cases = Vec::new();
    for entries in [1_000usize, 100_000] {
        let service = Registry::new()
            .create(
                "filter",
                ServiceConfig::default().blacklist(cidrs(entries, 3)),
            )
            .unwrap();
        let set = monconn::IpSet::new(service.config().blacklist.iter().copied());
        println!("{entries} entries: {} ranges", set.ranges());
        cases.push((format!("v4/{entries}"), service.clone(), &v4));
        cases.push((format!("v6/{entries}"), service, &v6));
    }
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        for k in 0..cases.len() {
            let i = (k + round) % cases.len();
            let (_, service, probes) = &cases[i];
            let start = Instant::now();
            for j in 0..LOOKUPS {
                black_box(service.ip_verdict(black_box(probes[j & 4095])));
            }
            ns[i].push(start.elapsed().as_nanos() as f64 / LOOKUPS as f64);
        }
    }
    let medians: Vec<f64> = ns
        .iter_mut()
        .map(|v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    println!("{rounds} rounds of {LOOKUPS} lookups, medians:");
    for ((name, _, _), m) in cases.iter().zip(&medians) {
        println!("{name:<10} {m:>6.1} ns");
    }
    println!(
        "100,000 / 1,000: v4 {:.2}, v6 {:.2}",
        medians[2] / medians[0],
        medians[3] / medians[1]
    );
}

criterion_group!(benches, filter, accept);

/// The rate table under churn (`MONCONN_RATE_ROUNDS=n`): `ServiceMonitor::admit`
/// with a `rate_limit` of one token per 1,000 s, from 65,536 new addresses
/// (each gets a bucket: the table fills to its cap), then 65,536 more new
/// addresses (the table is full and nothing has refilled: they share the
/// overflow bucket), then the first 65,536 again (known, throttled). Each
/// admission is dropped at once. Prints the median ns per call of each phase.
fn rate_churn(rounds: usize) {
    const N: u32 = 65_536;
    let peer = |n: u32| SocketAddr::new(IpAddr::V4((0x0a00_0000 + n).into()), 1);
    let mut phases: [Vec<f64>; 3] = Default::default();
    for _ in 0..rounds {
        let service = Registry::new()
            .create(
                "rate",
                ServiceConfig::default().rate_limit(monconn::RateLimit {
                    per_sec: 0.001,
                    burst: 1,
                }),
            )
            .unwrap();
        for (phase, range) in [(0, 0..N), (1, N..2 * N), (2, 0..N)] {
            let started = Instant::now();
            for n in range {
                black_box(service.admit(black_box(peer(n))).is_ok());
            }
            phases[phase].push(started.elapsed().as_nanos() as f64 / f64::from(N));
        }
    }
    for (name, mut v) in [
        "new addresses, table filling",
        "new addresses, table full",
        "known, throttled",
    ]
    .into_iter()
    .zip(phases)
    {
        v.sort_by(f64::total_cmp);
        println!(
            "{name:32} {:6.0} ns per admit (median of {rounds})",
            v[v.len() / 2]
        );
    }
}

fn main() {
    #[cfg(feature = "proxy-protocol")]
    if let Some(rounds) = std::env::var("MONCONN_PROXY_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        proxy::interleaved_proxy(rounds);
        return;
    }
    if let Some(rounds) = std::env::var("MONCONN_RATE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        rate_churn(rounds);
        return;
    }
    if let Some(rounds) = std::env::var("MONCONN_FILTER_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        interleaved_filter(rounds);
        return;
    }
    if let Some(rounds) = std::env::var("MONCONN_ACCEPT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        interleaved(rounds);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
