//! Rate and per-IP limits that cannot be flushed or dodged, over real
//! loopback TCP: one rate table per service, shared by every listener and by
//! `ServiceMonitor::wrap`; a throttled address stays throttled however many other
//! addresses connect; IPv6 clients counted by their prefix.

use crate::accept_common;
use crate::support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use accept_common::{attempt, counts, lo, refused, serve, Fate};
use monconn::{Listener, RateLimit, Registry, RejectReason, ServiceConfig, ServiceMonitor};
use serde_json::json;
use support::{connect_from, eventually, listen, quiet_config, within};
use tokio::sync::Semaphore;

/// One token per 10 s, no burst: nothing refills during a test.
const SLOW: RateLimit = RateLimit {
    per_sec: 0.1,
    burst: 1,
};

fn slow_config() -> ServiceConfig {
    quiet_config().rate_limit(SLOW)
}

async fn served(service: &ServiceMonitor) -> SocketAddr {
    let listener = Listener::bind("127.0.0.1:0", service.clone())
        .await
        .expect("bind 127.0.0.1:0");
    serve(listener).addr
}

#[tokio::test]
async fn wrap_applies_the_rate_limit() {
    let service = Registry::new().create("wrap", slow_config()).unwrap();
    let listener = listen().await;
    let addr = listener.local_addr().unwrap();
    let mut admitted = Vec::new();
    for _ in 0..5 {
        let client = connect_from(lo(2), addr).await;
        let (stream, peer) = within("accept", listener.accept()).await.unwrap();
        if let Ok(io) = service.wrap(stream, peer, addr) {
            admitted.push((io, client));
        }
    }
    assert_eq!(admitted.len(), 1, "admitted of 5 at 0.1/s, burst 1");
    assert_eq!(refused(&service), counts(&[("rate_limit", 4)]));
    assert_eq!(service.accepted(), 1);
}

#[tokio::test]
async fn listeners_and_wrap_of_one_service_share_its_rate_buckets() {
    let service = Registry::new().create("shared", slow_config()).unwrap();
    let a = served(&service).await;
    let b = served(&service).await;
    let built = Listener::builder(service.clone())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let c = serve(built).addr;

    assert_eq!(attempt(lo(2), a).await.0, Fate::Admitted);
    assert_eq!(attempt(lo(2), b).await.0, Fate::Refused, "second listener");
    assert_eq!(attempt(lo(2), c).await.0, Fate::Refused, "built listener");
    assert_eq!(attempt(lo(3), b).await.0, Fate::Admitted);
    assert_eq!(attempt(lo(3), a).await.0, Fate::Refused);

    // A connection accepted by hand and wrapped draws on the same bucket.
    let by_hand = listen().await;
    let to = by_hand.local_addr().unwrap();
    let _client = connect_from(lo(3), to).await;
    let (stream, peer) = within("accept", by_hand.accept()).await.unwrap();
    let err = service.wrap(stream, peer, to).unwrap_err();
    assert_eq!(err.reason(), &RejectReason::RateLimit);
    assert_eq!(refused(&service), counts(&[("rate_limit", 4)]));
}

/// `127.1.x.y`, the `n`th address of 127.1.0.0/16.
fn churn_ip(n: u32) -> IpAddr {
    Ipv4Addr::from(0x7f01_0000 + n).into()
}

/// Connects from `src`, waits for the welcome or the close, and closes with
/// a reset (`SO_LINGER` 0: no TIME_WAIT left behind by 65,536 clients).
async fn knock(src: IpAddr, addr: SocketAddr) -> Fate {
    let (fate, stream) = attempt(src, addr).await;
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    fate
}

/// The attack: throttle one address, then connect once from each
/// of 65,536 other addresses (which emptied the table of buckets), then try
/// the throttled address again. It must still be throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_65536_other_addresses_do_not_unthrottle_an_ip() {
    const CHURN: u32 = 65_536;
    const PARALLEL: usize = 64;
    // One token per 1,000 s: the churn takes seconds (12 s seen on a loaded
    // machine), and the throttled address must not refill meanwhile.
    let rate = RateLimit {
        per_sec: 0.001,
        burst: 1,
    };
    let service = Registry::new()
        .create("churn", quiet_config().rate_limit(rate))
        .unwrap();
    let addr = served(&service).await;
    let throttled = lo(2);
    assert_eq!(knock(throttled, addr).await, Fate::Admitted);
    assert_eq!(knock(throttled, addr).await, Fate::Refused);

    let gate = Arc::new(Semaphore::new(PARALLEL));
    let mut clients = tokio::task::JoinSet::new();
    for n in 0..CHURN {
        let permit = gate.clone().acquire_owned().await.unwrap();
        clients.spawn(async move {
            let fate = knock(churn_ip(n), addr).await;
            drop(permit);
            fate
        });
        // Keep the set small: collect what finished.
        while let Some(done) = clients.try_join_next() {
            done.unwrap();
        }
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let seen = |s: &ServiceMonitor| {
        let snap = s.snapshot();
        snap.accepted + snap.rejected.values().sum::<u64>()
    };
    eventually("every churn connection seen", || {
        seen(&service) == u64::from(CHURN) + 2
    })
    .await;

    assert_eq!(
        knock(throttled, addr).await,
        Fate::Refused,
        "the throttled address got a fresh bucket"
    );
    eventually("all closed", || service.connections() == 0).await;
}

// === IPv6: keyed by prefix ===

fn v6(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn local() -> SocketAddr {
    "[::1]:80".parse().unwrap()
}

#[tokio::test]
async fn ipv6_addresses_of_one_64_share_per_ip_limit_ip_limit_and_rate() {
    let service = Registry::new()
        .create("v6", quiet_config().per_ip_limit(2).ip_limit(1))
        .unwrap();
    let wrap = |peer: &str| service.wrap(tokio::io::empty(), v6(peer), local());
    let a = wrap("[2001:db8:1:2::1]:1000").expect("first of its /64");
    let b = wrap("[2001:db8:1:2:ffff::9]:1000").expect("same /64: same IP for ip_limit");
    let err = wrap("[2001:db8:1:2:abcd::7]:1000").unwrap_err();
    assert_eq!(
        err.reason(),
        &RejectReason::PerIpLimit,
        "a third from one /64"
    );
    let err = wrap("[2001:db8:1:3::1]:1000").unwrap_err();
    assert_eq!(
        err.reason(),
        &RejectReason::IpLimit,
        "another /64 is another IP"
    );
    let json = serde_json::to_value(service.snapshot()).unwrap();
    assert_eq!(json["ip_count"], 1);
    let key = &service.snapshot().ips[0];
    assert_eq!(key.net().to_string(), "2001:db8:1:2::/64");
    assert_eq!(
        json["ips"],
        json!([{"ip": "2001:db8:1:2::", "prefix": 64, "connections": 2}])
    );
    drop((a, b));
    assert_eq!(service.ip_count(), 0);

    service.update_config(|c| {
        c.ip_limit = None;
        c.per_ip_limit = None;
        c.rate_limit = Some(SLOW);
    });
    let _c = wrap("[2001:db8:5:6::1]:1000").expect("the /64's one token");
    let err = wrap("[2001:db8:5:6::2]:1000").unwrap_err();
    assert_eq!(
        err.reason(),
        &RejectReason::RateLimit,
        "a new address of the /64"
    );
    let _d = wrap("[2001:db8:5:7::1]:1000").expect("another /64's token");
}

#[tokio::test]
async fn ipv6_loopback_counts_are_keyed_by_prefix_in_snapshots() {
    let listener = match tokio::net::TcpListener::bind("[::1]:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("skipped: cannot bind [::1]: {e}");
            return;
        }
    };
    let service = Registry::new().create("v6lo", slow_config()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = serve(Listener::from_tcp(listener, service.clone()).unwrap());
    let ip6: IpAddr = "::1".parse().unwrap();
    let (fate, _held) = attempt(ip6, server.addr).await;
    assert_eq!(fate, Fate::Admitted);
    let json = serde_json::to_value(service.snapshot()).unwrap();
    assert_eq!(
        json["ips"],
        json!([{"ip": "::", "prefix": 64, "connections": 1}])
    );
    assert_eq!(attempt(ip6, addr).await.0, Fate::Refused);
    assert_eq!(refused(&service), counts(&[("rate_limit", 1)]));
}

#[tokio::test]
async fn ipv4_counts_are_keyed_by_address_in_snapshots() {
    let service = Registry::new().create("v4", quiet_config()).unwrap();
    let addr = served(&service).await;
    let (_, _held) = attempt(lo(7), addr).await;
    eventually("counted", || service.connections() == 1).await;
    let json = serde_json::to_value(service.snapshot()).unwrap();
    assert_eq!(
        json["ips"],
        json!([{"ip": "127.0.0.7", "prefix": 32, "connections": 1}])
    );
}

#[tokio::test]
async fn ipv6_prefix_128_keys_by_address_and_a_change_keeps_counts_exact() {
    let service = Registry::new()
        .create("v6p", quiet_config().ipv6_prefix(128))
        .unwrap();
    let wrap = |peer: &str| service.wrap(tokio::io::empty(), v6(peer), local());
    let a = wrap("[2001:db8::1]:1").unwrap();
    let b = wrap("[2001:db8::2]:1").unwrap();
    assert_eq!(service.ip_count(), 2);
    // Admitted under /128; the prefix changes; they still leave their keys.
    service.update_config(|c| c.ipv6_prefix = 48);
    let c = wrap("[2001:db8:0:7::3]:1").unwrap();
    let json = serde_json::to_value(service.snapshot()).unwrap();
    assert_eq!(
        json["ips"],
        json!([
            {"ip": "2001:db8::", "prefix": 48, "connections": 1},
            {"ip": "2001:db8::1", "prefix": 128, "connections": 1},
            {"ip": "2001:db8::2", "prefix": 128, "connections": 1},
        ])
    );
    drop((a, b, c));
    assert_eq!((service.connections(), service.ip_count()), (0, 0));
    // Above 128 counts as 128.
    service.update_config(|c| c.ipv6_prefix = 200);
    let _d = wrap("[2001:db8::9]:1").unwrap();
    assert_eq!(service.ips()[0].0.to_string(), "2001:db8::9/128");
}
