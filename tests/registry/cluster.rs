//! The shared ban list (feature `redis`) between registries of this
//! process, each with its own `Cluster`, over a real redis-server: bans,
//! timed bans, auto-bans and unbans travel; bans expire on both; a ban
//! lifted while an instance was away is lifted at its resync.

use std::net::IpAddr;
use std::time::Duration;

use monconn::cluster::{Cluster, ClusterConfig};
use monconn::{AutoBan, BanSource, Registry, RejectReason, ServiceConfig, ServiceMonitor};

use crate::support::{eventually, RedisServer};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn instance(redis: &RedisServer, config: ServiceConfig) -> (ServiceMonitor, Cluster) {
    let registry = Registry::new();
    let web = registry.create("web", config).unwrap();
    let cluster = Cluster::start(
        &registry,
        ClusterConfig::new(&redis.url())
            .unwrap()
            .key("lib")
            .resync_every(Duration::from_millis(200)),
    )
    .unwrap();
    eventually("connected", || cluster.stats().connected).await;
    (web, cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_timed_bans_and_unbans_travel_both_ways() {
    let redis = RedisServer::start();
    let (a, ca) = instance(&redis, ServiceConfig::default()).await;
    let (b, cb) = instance(&redis, ServiceConfig::default()).await;

    a.ban(ip("192.0.2.1"));
    a.ban_for(ip("192.0.2.2"), Duration::from_millis(500));
    b.ban_for(
        "198.51.100.0/24".parse::<ipnet::IpNet>().unwrap(),
        Duration::from_secs(60),
    );
    eventually("B learns A's bans", || {
        b.ip_verdict(ip("192.0.2.1")).is_some() && b.ip_verdict(ip("192.0.2.2")).is_some()
    })
    .await;
    eventually("A learns B's", || {
        a.ip_verdict(ip("198.51.100.9")).is_some()
    })
    .await;
    let learnt: Vec<_> = b
        .timed_bans()
        .into_iter()
        .filter(|t| t.source == BanSource::Cluster)
        .collect();
    assert_eq!(learnt.len(), 2);
    assert_eq!(
        learnt
            .iter()
            .find(|t| t.net.to_string() == "192.0.2.1/32")
            .unwrap()
            .remaining_ms,
        None
    );

    // The timed one expires on both, the permanent one stays.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(a.ip_verdict(ip("192.0.2.2")), None);
    assert_eq!(b.ip_verdict(ip("192.0.2.2")), None);
    assert_eq!(
        b.ip_verdict(ip("192.0.2.1")),
        Some(RejectReason::Blacklisted)
    );

    // An unban anywhere lifts it everywhere.
    assert!(b.unban(ip("192.0.2.1")));
    eventually("A lifts it", || a.ip_verdict(ip("192.0.2.1")).is_none()).await;
    assert!(a.config().blacklist.is_empty());
    assert!(a.unban("198.51.100.0/24".parse::<ipnet::IpNet>().unwrap()));
    eventually("B lifts its own", || {
        b.ip_verdict(ip("198.51.100.9")).is_none()
    })
    .await;
    let (sa, sb) = (ca.stats(), cb.stats());
    assert_eq!((sa.bans_out, sb.bans_out), (3, 2), "{sa:?} {sb:?}");
    assert!(sa.bans_in >= 2 && sb.bans_in >= 3, "{sa:?} {sb:?}");
    assert_eq!((sa.errors, sb.errors, sa.pending, sb.pending), (0, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_ban_is_shared_and_a_ban_lifted_while_away_is_lifted_at_resync() {
    let redis = RedisServer::start();
    let rule = AutoBan::after_refusals(3, Duration::from_secs(10));
    let (a, _ca) = instance(
        &redis,
        ServiceConfig::default().per_ip_limit(1).auto_ban(rule),
    )
    .await;
    let (b, cb) = instance(&redis, ServiceConfig::default()).await;

    // Three refusals by per_ip_limit on A ban the client on both.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let flooder: std::net::SocketAddr = "127.0.0.77:4000".parse().unwrap();
    let _held = a.admit(flooder).unwrap();
    for _ in 0..3 {
        let (_client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (server, _) = accepted.unwrap();
        assert!(a.wrap(server, flooder, addr).is_err());
    }
    assert_eq!(a.ip_verdict(flooder.ip()), Some(RejectReason::AutoBanned));
    eventually("B learns the auto-ban", || {
        b.ip_verdict(flooder.ip()).is_some()
    })
    .await;

    // Lifted behind B's back (straight in Redis, as an operator might):
    // B's next resync, with the same Redis process, lifts it too.
    let mut cmd = std::process::Command::new("redis-cli");
    cmd.args([
        "-p",
        &redis.port().to_string(),
        "ZREM",
        "lib:bans:web",
        "127.0.0.77/32",
    ]);
    assert!(cmd.output().expect("redis-cli").status.success());
    eventually("B lifts it at its resync", || {
        b.ip_verdict(flooder.ip()).is_none()
    })
    .await;
    assert!(cb.stats().last_sync.is_some());
}
