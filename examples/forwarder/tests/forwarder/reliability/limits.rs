//! Limits under concurrency, against the real forwarder: for `conn_limit`,
//! `ip_limit` and `per_ip_limit`, thousands of parallel connection attempts
//! from several 127.0.0.x sources; and `rate_limit`'s bound over time.
//!
//! Two views of "admitted at once", both of which must stay within the limit:
//! - inside: `/stats`, polled all along (connections, ip_count, per-IP
//!   counts are the admission counters themselves);
//! - the clients: a connection counts from its greeting (it was admitted
//!   and forwarded) to its close. The forwarder holds the admission over a
//!   longer span than that, so this view never overstates it.
//!
//! Afterwards every slot is free (connections 0, no IP) and each attempt is
//! either accepted or rejected with the limit's reason.

use crate::support;
use crate::support::reliability;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reliability::{count, start, total, wait_drained, Svc};
use support::*;

/// Workers attempting connections at once.
const PARALLEL: usize = 64;
/// Admitted connections each run makes, however many attempts it takes.
const ADMISSIONS: u64 = 300;
/// A bound on the attempts of one run.
const MAX_ATTEMPTS: u64 = 50_000;

/// What the clients see held at once: in total, per IP, distinct IPs.
#[derive(Debug, Default)]
struct Held {
    now: usize,
    per_ip: HashMap<u8, usize>,
    peak: usize,
    peak_ips: usize,
    peak_per_ip: usize,
}

impl Held {
    fn enter(&mut self, ip: u8) {
        self.now += 1;
        *self.per_ip.entry(ip).or_default() += 1;
        self.peak = self.peak.max(self.now);
        self.peak_ips = self.peak_ips.max(self.per_ip.len());
        self.peak_per_ip = self.peak_per_ip.max(self.per_ip[&ip]);
    }
    fn leave(&mut self, ip: u8) {
        self.now -= 1;
        let n = self.per_ip.get_mut(&ip).expect("held");
        *n -= 1;
        if *n == 0 {
            self.per_ip.remove(&ip);
        }
    }
}

/// The highest figures `/stats` showed.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    polls: u64,
    connections: u64,
    ip_count: u64,
    per_ip: u64,
}

/// `PARALLEL` workers attempt connections from 127.0.0.1 to
/// 127.0.0.`sources` until `ADMISSIONS` were admitted, each admitted one
/// held 0 to 20 ms; `/stats` is polled meanwhile. Returns what the clients
/// held, what `/stats` showed, the attempts, and the final stats.
async fn hammer(keys: &str, sources: u8) -> (Held, Seen, u64, serde_json::Value) {
    let (fwd, addrs) = start(&[Svc::new("svc", banner_backend().await, keys)]);
    let fwd = Arc::new(fwd);
    let addr: SocketAddr = addrs[0];
    let held = Arc::new(Mutex::new(Held::default()));
    let done = Arc::new(AtomicBool::new(false));

    let poller = tokio::spawn({
        let (fwd, done) = (fwd.clone(), done.clone());
        async move {
            let mut seen = Seen::default();
            while !done.load(Relaxed) {
                let s = fwd.stats("svc").await;
                seen.polls += 1;
                seen.connections = seen.connections.max(s["connections"].as_u64().unwrap());
                seen.ip_count = seen.ip_count.max(s["ip_count"].as_u64().unwrap());
                for ip in s["ips"].as_array().unwrap() {
                    seen.per_ip = seen.per_ip.max(ip["connections"].as_u64().unwrap());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        }
    });

    // PARALLEL workers, each attempting again as soon as its last attempt
    // ended, until ADMISSIONS were admitted (or MAX_ATTEMPTS were made).
    let attempts = Arc::new(AtomicU64::new(0));
    let admitted = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..PARALLEL {
        let (held, attempts, admitted) = (held.clone(), attempts.clone(), admitted.clone());
        tasks.spawn(async move {
            while admitted.load(Relaxed) < ADMISSIONS {
                let i = attempts.fetch_add(1, Relaxed);
                assert!(
                    i < MAX_ATTEMPTS,
                    "{MAX_ATTEMPTS} attempts, too few admitted"
                );
                let ip = 1 + ((i + w as u64) % u64::from(sources)) as u8;
                let Some(mut c) = open([127, 0, 0, ip], addr).await else {
                    continue;
                };
                admitted.fetch_add(1, Relaxed);
                held.lock().unwrap().enter(ip);
                let hold = rand::rng().random_range(0..20);
                tokio::time::sleep(Duration::from_millis(hold)).await;
                echo(&mut c, b"x").await;
                held.lock().unwrap().leave(ip);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("client");
    }
    let (attempts, admitted) = (attempts.load(Relaxed), admitted.load(Relaxed));
    done.store(true, Relaxed);
    let seen = poller.await.expect("poller");
    let stats = wait_drained(&fwd, "svc").await;
    assert_eq!(stats["accepted"], admitted, "{stats}");
    let held = std::mem::take(&mut *held.lock().unwrap());
    assert_eq!(held.now, 0);
    println!(
        "{}: {attempts} attempts ({PARALLEL} in parallel, {sources} IPs), {admitted} admitted; \
         clients held at most {} (IPs {}, per IP {}); /stats ({} polls) showed at most {} \
         connections, {} IPs, {} per IP; rejected {}",
        keys.trim().replace("\n  ", ", "),
        held.peak,
        held.peak_ips,
        held.peak_per_ip,
        seen.polls,
        seen.connections,
        seen.ip_count,
        seen.per_ip,
        stats["rejected"]
    );
    let rejected = total(&stats["rejected"]);
    assert_eq!(rejected, attempts - admitted, "{stats}");
    assert!(rejected > 0, "nothing was refused: {stats}");
    (held, seen, attempts, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_limit_holds_under_parallel_attempts() {
    let (held, seen, _, stats) = hammer("  conn_limit: 8\n", 20).await;
    assert!(held.peak <= 8 && seen.connections <= 8, "{held:?} {seen:?}");
    only_rejected_for(&stats, "conn_limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_limit_holds_under_parallel_attempts() {
    let (held, seen, _, stats) = hammer("  ip_limit: 3\n", 10).await;
    assert!(
        held.peak_ips <= 3 && seen.ip_count <= 3,
        "{held:?} {seen:?}"
    );
    only_rejected_for(&stats, "ip_limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_limit_holds_under_parallel_attempts() {
    let (held, seen, _, stats) = hammer("  per_ip_limit: 2\n", 5).await;
    assert!(
        held.peak_per_ip <= 2 && seen.per_ip <= 2,
        "{held:?} {seen:?}"
    );
    assert!(
        held.peak <= 10 && seen.connections <= 10,
        "{held:?} {seen:?}"
    );
    only_rejected_for(&stats, "per_ip_limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_three_limits_together_hold() {
    let (held, seen, _, _) =
        hammer("  conn_limit: 6\n  ip_limit: 4\n  per_ip_limit: 2\n", 12).await;
    assert!(held.peak <= 6 && seen.connections <= 6, "{held:?} {seen:?}");
    assert!(
        held.peak_ips <= 4 && seen.ip_count <= 4,
        "{held:?} {seen:?}"
    );
    assert!(
        held.peak_per_ip <= 2 && seen.per_ip <= 2,
        "{held:?} {seen:?}"
    );
}

/// The rate limit is a token bucket per IP: over any span, an IP gets at
/// most `burst + per_sec * span` connections in. 16 workers hammer it from
/// 4 sources for 1.5 s; the span measured around them bounds the forwarder's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_under_parallel_attempts() {
    const PER_SEC: f64 = 20.0;
    const BURST: u64 = 5;
    const SOURCES: u8 = 4;
    let (fwd, addrs) = start(&[Svc::new(
        "svc",
        banner_backend().await,
        "  rate_limit: 20\n  rate_burst: 5\n",
    )]);
    let addr = addrs[0];
    fwd.stats("svc").await;
    let per_ip: Arc<Vec<AtomicU64>> = Arc::new((0..SOURCES).map(|_| AtomicU64::new(0)).collect());
    let attempts = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..16u8 {
        let (per_ip, attempts) = (per_ip.clone(), attempts.clone());
        tasks.spawn(async move {
            let ip = w % SOURCES;
            while started.elapsed() < Duration::from_millis(1500) {
                attempts.fetch_add(1, Relaxed);
                if let Some(mut c) = open([127, 0, 0, 1 + ip], addr).await {
                    per_ip[usize::from(ip)].fetch_add(1, Relaxed);
                    echo(&mut c, b"x").await;
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("client");
    }
    let span = started.elapsed().as_secs_f64();
    let bound = BURST + (PER_SEC * span).ceil() as u64;
    let got: Vec<u64> = per_ip.iter().map(|n| n.load(Relaxed)).collect();
    let stats = wait_drained(&fwd, "svc").await;
    let attempts = attempts.load(Relaxed);
    let admitted: u64 = got.iter().sum();
    println!(
        "rate_limit 20/s burst 5: {attempts} attempts from {SOURCES} IPs in {span:.2} s, \
         admitted per IP {got:?} (bound {bound}), rejected {}",
        stats["rejected"]
    );
    for n in &got {
        assert!(*n <= bound, "{got:?} > {bound}");
        assert!(*n >= BURST, "the burst was not admitted: {got:?}");
    }
    assert_eq!(stats["accepted"], admitted);
    assert_eq!(count(&stats, "rejected", "rate_limit"), attempts - admitted);
}

/// Every refusal in `stats` was for `reason`.
fn only_rejected_for(stats: &serde_json::Value, reason: &str) {
    assert_eq!(
        count(stats, "rejected", reason),
        total(&stats["rejected"]),
        "{stats}"
    );
}
