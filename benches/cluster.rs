//! The shared ban list (feature `redis`) and timed bans, against a real
//! redis-server started here on a free loopback port (killed by its PID).
//!
//! - Propagation: instance A bans an address (`ServiceMonitor::ban_for`),
//!   a thread polls instance B's `ip_verdict` until it refuses it; 20
//!   bans, the median, min and max in µs. Both instances are registries of
//!   this process, each with its own `Cluster` (its own connections).
//! - Accept rate: connections accepted per second through the default
//!   stack, in turns (as `benches/accept.rs`): the feature on with Redis
//!   connected and 100 bans shared, the same with no cluster, and a service
//!   holding 100,000 timed bans; medians of the per-round ratios.
//!
//! `MONCONN_CLUSTER_ROUNDS=21 cargo bench --features redis --bench cluster`
//! (needs `redis-server`: `scripts/test-deps.sh`).

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use monconn::cluster::{Cluster, ClusterConfig};
use monconn::{Listener, Registry, RejectReason, ServiceMonitor};

#[path = "support/load.rs"]
mod load;
use load::{interleaved_rates, median, paired, serve_dropping, Done};

const CONNS: u64 = 2_000;

/// redis-server in the foreground, killed on drop.
struct Redis(Child, u16);

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (run scripts/test-deps.sh)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server not listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis(child, port)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.1)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A registry with service `web` sharing bans under `key`.
async fn instance(redis: &Redis, key: &str) -> (ServiceMonitor, Cluster) {
    let registry = Registry::new();
    let web = registry.service("web");
    let config = ClusterConfig::new(&redis.url()).unwrap().key(key);
    let cluster = Cluster::start(&registry, config).unwrap();
    while !cluster.stats().connected {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (web, cluster)
}

fn propagation(rt: &tokio::runtime::Runtime, redis: &Redis) {
    let ((a, _ca), (b, _cb)) =
        rt.block_on(async { (instance(redis, "prop").await, instance(redis, "prop").await) });
    let mut us = Vec::new();
    for n in 1..=20u8 {
        let ip = IpAddr::from([198, 51, 100, n]);
        let started = Instant::now();
        a.ban_for(ip, Duration::from_secs(60));
        while b.ip_verdict(ip) != Some(RejectReason::Blacklisted) {
            assert!(started.elapsed() < Duration::from_secs(5), "never learnt");
            std::thread::yield_now();
        }
        us.push(started.elapsed().as_secs_f64() * 1e6);
        std::thread::sleep(Duration::from_millis(20));
    }
    let min = us.iter().copied().fold(f64::MAX, f64::min);
    let max = us.iter().copied().fold(0.0, f64::max);
    println!(
        "ban propagation A -> B, 20 bans: median {:.0} us (min {min:.0}, max {max:.0})",
        median(us)
    );
}

fn accept_rate(rt: &tokio::runtime::Runtime, redis: &Redis, rounds: usize) {
    let (on, _cluster) = rt.block_on(instance(redis, "accept"));
    let nets = (0..100u8).map(|n| IpNet::from(IpAddr::from([203, 0, 113, n])));
    on.ban_all_for(nets, Duration::from_secs(600));
    let off = Registry::new().service("web");
    let timed = Registry::new().service("web");
    let many =
        (0..100_000u32).map(|n| IpNet::from(IpAddr::from((0x0b00_0000 + n * 7).to_be_bytes())));
    timed.ban_all_for(many, Duration::from_secs(600));
    let variants = [
        ("cluster_off", off),
        ("cluster_connected", on),
        ("timed_bans_100k", timed),
    ];
    let servers: Vec<_> = variants
        .into_iter()
        .map(|(name, service)| {
            let done = Arc::new(Done::default());
            let addr = rt.block_on(async {
                serve_dropping(
                    Listener::bind("127.0.0.1:0", service).await.unwrap(),
                    done.clone(),
                )
            });
            (name, addr, done)
        })
        .collect();
    let turns: Vec<_> = servers
        .iter()
        .map(|(_, addr, done)| (*addr, done.clone()))
        .collect();
    let rates = interleaved_rates(rt, &turns, rounds, CONNS);
    println!("{rounds} rounds of {CONNS} connections; medians, and medians of per-round ratios:");
    for (i, (name, _, _)) in servers.iter().enumerate() {
        let ratio = paired(&rates, i, 0);
        println!(
            "{name:<18} {:>9.0} conn/s  to cluster_off {ratio:.3}",
            median(rates[i].clone())
        );
    }
}

fn main() {
    let rounds = std::env::var("MONCONN_CLUSTER_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(11);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = Redis::start();
    propagation(&rt, &redis);
    accept_rate(&rt, &redis, rounds);
}
