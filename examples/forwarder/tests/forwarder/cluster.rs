//! End to end: two forwarder processes share one ban list through a real
//! redis-server (started by the test on a loopback port, killed by its
//! PID): a ban on one refuses on the other within a second, expires on
//! both, survives Redis going away, and a ban made meanwhile reaches the
//! other instance once Redis is back. The password in the URL is never
//! logged.

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::peers::{redis_on, Peer};
use support::*;

const PASSWORD: &str = "s3cret-pw-never-logged";

/// A key of its own for each test, so that tests sharing a Redis (none
/// do) or reruns never meet.
fn key() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn url(redis: &Peer) -> String {
    format!("redis://:{PASSWORD}@{}", redis.addr)
}

/// Instance A reads the cluster from its config file; instance B from
/// `--cluster-redis` and `--cluster-key`. Both serve `svc` to `backend`.
fn pair(redis: &Peer, key: &str, backend: SocketAddr) -> [(Forwarder, SocketAddr); 2] {
    let (a, [pa]) = Forwarder::start_with_ports(|[port]| {
        Setup::config(format!(
            "cluster:\n  redis: \"{}\"\n  key: {key}\n{}",
            url(redis),
            service_yaml("svc", port, backend.port(), "")
        ))
    });
    let (b, [pb]) = Forwarder::start_with_ports(|[port]| Setup {
        args: vec![
            "--cluster-redis".into(),
            url(redis),
            "--cluster-key".into(),
            key.into(),
        ],
        ..Setup::config(service_yaml("svc", port, backend.port(), ""))
    });
    [(a, local(pa)), (b, local(pb))]
}

async fn cluster(fwd: &Forwarder) -> serde_json::Value {
    let (status, body) = fwd.http("GET", "/stats").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["cluster"].clone()
}

async fn wait_cluster(fwd: &Forwarder, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = cluster(fwd).await;
        if check(&c) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never {what}: {c}\n{}",
            fwd.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn banned(stats: &serde_json::Value, net: &str) -> bool {
    stats["timed_bans"]
        .as_array()
        .is_some_and(|bans| bans.iter().any(|b| b["net"] == net))
}

async fn ban(fwd: &Forwarder, ip: &str, time: &str) {
    let (status, body) = fwd
        .http("POST", &format!("/services/svc/blacklist/{ip}?for={time}"))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ban_on_a_refuses_on_b_within_a_second_and_expires_on_both() {
    let redis = redis_on(free_port(), PASSWORD);
    let key = key();
    let backend = banner_backend().await;
    let [(a, addr_a), (b, addr_b)] = pair(&redis, &key, backend);
    for fwd in [&a, &b] {
        wait_cluster(fwd, "connected", |c| c["connected"] == true).await;
    }
    assert!(open([127, 0, 0, 9], addr_b).await.is_some());

    ban(&a, "127.0.0.9", "3").await;
    let banned_at = Instant::now();
    b.wait_stats("svc", "the ban learnt", |s| banned(s, "127.0.0.9/32"))
        .await;
    let took = banned_at.elapsed();
    assert!(took < Duration::from_secs(1), "learnt after {took:?}");
    for addr in [addr_a, addr_b] {
        assert!(open([127, 0, 0, 9], addr).await.is_none());
        let mut other = open([127, 0, 0, 4], addr).await.expect("others served");
        echo(&mut other, b"ping").await;
    }
    let on_b = b.stats("svc").await;
    assert_eq!(on_b["timed_bans"][0]["source"], "cluster");
    assert!(on_b["timed_bans"][0]["remaining_ms"].as_u64().unwrap() <= 3_000);
    assert_eq!(on_b["rejected"]["blacklisted"], 1);
    let (ca, cb) = (cluster(&a).await, cluster(&b).await);
    assert_eq!(
        (ca["bans_out"].as_u64(), cb["bans_in"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(cb["last_sync"].as_u64().is_some(), "{cb}");

    // Expired on both, 3 s after the ban, with no unban.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(banned_at.elapsed())).await;
    for (fwd, addr) in [(&a, addr_a), (&b, addr_b)] {
        let mut back = open([127, 0, 0, 9], addr).await.expect("the ban expired");
        echo(&mut back, b"back").await;
        fwd.wait_stats("svc", "the ban gone", |s| !banned(s, "127.0.0.9/32"))
            .await;
        assert!(!fwd.stderr().contains(PASSWORD), "the password was logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_outage_keeps_enforcing_and_a_ban_made_meanwhile_reaches_b_when_redis_returns() {
    let port = free_port();
    let redis = redis_on(port, PASSWORD);
    let key = key();
    let backend = banner_backend().await;
    let [(a, addr_a), (b, addr_b)] = pair(&redis, &key, backend);
    for fwd in [&a, &b] {
        wait_cluster(fwd, "connected", |c| c["connected"] == true).await;
    }
    ban(&a, "127.0.0.9", "10m").await;
    b.wait_stats("svc", "the ban learnt", |s| banned(s, "127.0.0.9/32"))
        .await;

    // Redis killed: both keep refusing the banned client and serving others.
    drop(redis);
    for fwd in [&a, &b] {
        wait_cluster(fwd, "disconnected", |c| {
            c["connected"] == false && c["errors"].as_u64() > Some(0)
        })
        .await;
        fwd.wait_stderr("shared ban list unreachable; enforcing the local copy")
            .await;
    }
    for addr in [addr_a, addr_b] {
        assert!(open([127, 0, 0, 9], addr).await.is_none());
        let mut other = open([127, 0, 0, 4], addr).await.expect("others served");
        echo(&mut other, b"ping").await;
    }

    // A ban on A while Redis is down: A enforces it, B cannot know yet.
    ban(&a, "127.0.0.10", "10m").await;
    wait_cluster(&a, "the ban pending", |c| c["pending"] == 1).await;
    assert!(open([127, 0, 0, 10], addr_a).await.is_none());
    assert!(open([127, 0, 0, 10], addr_b).await.is_some());

    // Redis back, empty: A pushes what it made, B learns it within its
    // backoff, and B never forgot the first ban.
    let _redis = redis_on(port, PASSWORD);
    let back_at = Instant::now();
    b.wait_stats("svc", "the ban made while down", |s| {
        banned(s, "127.0.0.10/32")
    })
    .await;
    assert!(
        back_at.elapsed() < Duration::from_secs(10),
        "{:?}",
        back_at.elapsed()
    );
    for addr in [addr_a, addr_b] {
        assert!(open([127, 0, 0, 10], addr).await.is_none());
        assert!(open([127, 0, 0, 9], addr).await.is_none());
    }
    for fwd in [&a, &b] {
        wait_cluster(fwd, "reconnected", |c| {
            c["connected"] == true && c["pending"] == 0
        })
        .await;
        assert!(!fwd.stderr().contains(PASSWORD), "the password was logged");
    }
    b.wait_stderr("reconnected=true").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_bad_settings_are_named() {
    let backend = 1;
    let service = service_yaml("svc", free_port(), backend, "");
    let (status, _, stderr) = run_to_end(
        Some(&format!(
            "cluster: {{listen_port: 1, backend_port: 2}}\n{service}"
        )),
        &[],
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("a service cannot be named `cluster`"),
        "{stderr}"
    );
    let (status, _, stderr) = run_to_end(
        Some(&service),
        &["--cluster-redis", "redis://:hunter2@host:notaport"],
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cluster: bad Redis URL \"redis://***@host:notaport\""),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
