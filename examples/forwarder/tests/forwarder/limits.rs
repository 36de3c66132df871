//! End to end: who may connect. Blacklist, conn_limit and ip_limit from the
//! config file, and the runtime blacklist and kicks of the admin API,
//! with clients on 127.0.0.x source addresses.

use crate::support;

use std::net::SocketAddr;

use support::*;

/// One service `svc` on 127.0.0.1 to a banner backend, with `extra` keys.
async fn start(extra: &str) -> (Forwarder, SocketAddr) {
    let backend = banner_backend().await;
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| {
        Setup::config(format!(
            "svc:\n  listen_ip: 127.0.0.1\n  listen_port: {port}\n  backend_ip: 127.0.0.1\n  backend_port: \"{}\"\n{extra}",
            backend.port()
        ))
    });
    (fwd, local(port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blacklist_from_the_config_refuses_addresses_and_networks() {
    let (fwd, addr) = start("  ip_blacklist:\n    - 127.0.0.2\n    - 127.0.3.0/24\n").await;
    assert!(open([127, 0, 0, 2], addr).await.is_none());
    assert!(open([127, 0, 3, 9], addr).await.is_none());
    let mut ok = open([127, 0, 0, 4], addr)
        .await
        .expect("127.0.0.4 is not listed");
    echo(&mut ok, b"ping").await;
    let stats = fwd.stats("svc").await;
    assert_eq!(stats["rejected"]["blacklisted"], 2);
    assert_eq!(stats["accepted"], 1);
    assert_eq!(stats["backend_errors"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_from_the_config_admits_only_its_networks() {
    let (fwd, addr) = start("  ip_allowlist: [127.0.0.8/30]\n").await;
    assert!(open([127, 0, 0, 9], addr).await.is_some());
    assert!(open([127, 0, 0, 12], addr).await.is_none());
    assert_eq!(fwd.stats("svc").await["rejected"]["not_allowed"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_limit_refuses_past_the_limit_and_frees_slots() {
    let (fwd, addr) = start("  conn_limit: 2\n").await;
    let a = open([127, 0, 0, 1], addr).await.expect("first");
    let _b = open([127, 0, 0, 2], addr).await.expect("second");
    assert!(open([127, 0, 0, 3], addr).await.is_none());
    assert!(open([127, 0, 0, 1], addr).await.is_none());
    drop(a);
    fwd.wait_stats("svc", "a slot freed", |s| s["connections"] == 1)
        .await;
    let _c = open([127, 0, 0, 3], addr)
        .await
        .expect("a slot is free again");
    let stats = fwd.stats("svc").await;
    assert_eq!(stats["rejected"]["conn_limit"], 2);
    assert_eq!(stats["accepted"], 3);
    assert_eq!(stats["connections"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_limit_refuses_new_ips_but_not_known_ones() {
    let (fwd, addr) = start("  ip_limit: 2\n  per_ip_limit: 2\n").await;
    let _a1 = open([127, 0, 0, 1], addr).await.expect("first IP");
    let _b1 = open([127, 0, 0, 2], addr).await.expect("second IP");
    assert!(open([127, 0, 0, 3], addr).await.is_none(), "a third IP");
    let _a2 = open([127, 0, 0, 1], addr).await.expect("a known IP");
    assert!(open([127, 0, 0, 1], addr).await.is_none(), "per_ip_limit");
    let stats = fwd.stats("svc").await;
    assert_eq!(stats["rejected"]["ip_limit"], 1);
    assert_eq!(stats["rejected"]["per_ip_limit"], 1);
    assert_eq!(stats["ip_count"], 2);
    assert_eq!(stats["ips"][0]["connections"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_blacklist_applies_at_once_and_spares_live_connections() {
    let (fwd, addr) = start("").await;
    let mut live = open([127, 0, 0, 2], addr).await.expect("before the rule");

    let (status, body) = fwd.http("POST", "/services/svc/blacklist/127.0.0.2").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = fwd
        .http(
            "POST",
            &format!("/services/svc/blacklist/{}", encode("127.0.5.0/24")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        reply["blacklist"],
        serde_json::json!(["127.0.0.2/32", "127.0.5.0/24"])
    );

    assert!(open([127, 0, 0, 2], addr).await.is_none());
    assert!(open([127, 0, 5, 1], addr).await.is_none());
    echo(&mut live, b"still here").await;
    assert!(open([127, 0, 0, 3], addr).await.is_some());

    let (status, _) = fwd
        .http("DELETE", "/services/svc/blacklist/127.0.0.2")
        .await;
    assert_eq!(status, 200);
    assert!(open([127, 0, 0, 2], addr).await.is_some());
    let (status, _) = fwd
        .http("DELETE", "/services/svc/blacklist/127.0.0.2")
        .await;
    assert_eq!(status, 404);
    assert_eq!(fwd.stats("svc").await["rejected"]["blacklisted"], 2);

    // Bad requests get a 4xx with a JSON error.
    for (method, path, want) in [
        ("POST", "/services/svc/blacklist/010.0.0.1", 400),
        ("POST", "/services/svc/blacklist/1.2.3.4%2F40", 400),
        ("POST", "/services/nope/blacklist/1.2.3.4", 404),
        ("GET", "/stats/nope", 404),
        ("GET", "/nowhere", 404),
        ("PUT", "/stats", 405),
        ("POST", "/services/svc/connections/x/kick", 400),
    ] {
        let (status, body) = fwd.http(method, path).await;
        assert_eq!(status, want, "{method} {path}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
        assert!(json["error"].is_string(), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_kick_closes_one_connection() {
    let (fwd, addr) = start("").await;
    let mut kept = open([127, 0, 0, 1], addr).await.unwrap();
    let mut kicked = open([127, 0, 0, 2], addr).await.unwrap();
    let (_, body) = fwd.http("GET", "/stats/svc/connections").await;
    let conns: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = conns["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["peer"] == kicked.local_addr().unwrap().to_string())
        .expect("the connection is listed")["id"]
        .as_u64()
        .unwrap();
    let (status, body) = fwd
        .http("POST", &format!("/services/svc/connections/{id}/kick"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(read_until_closed(&mut kicked).await.is_empty());
    echo(&mut kept, b"unaffected").await;
    let stats = fwd
        .wait_stats("svc", "the kick counted", |s| s["closed"]["kicked"] == 1)
        .await;
    assert_eq!(stats["connections"], 1);
    let (status, _) = fwd
        .http("POST", &format!("/services/svc/connections/{id}/kick"))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_interface_service_matches_ipv4_rules_for_mapped_peers() {
    // `:PORT` listens dual-stack where it can: IPv4 clients arrive as
    // ::ffff:a.b.c.d and must still match IPv4 rules and show as IPv4.
    let backend = banner_backend().await;
    let (fwd, [port]) =
        Forwarder::start_with_ports(|[port]| Setup::mapping(format!(":{port}={backend}")));
    let sid = format!(":{port}");
    let addr = local(port);
    let path = format!(
        "/services/{}/blacklist/{}",
        encode(&sid),
        encode("127.0.0.2/31")
    );
    let (status, body) = fwd.http("POST", &path).await;
    assert_eq!(status, 200, "{body}");
    assert!(open([127, 0, 0, 3], addr).await.is_none());
    let _ok = open([127, 0, 0, 4], addr)
        .await
        .expect("outside the network");
    let stats = fwd.stats(&sid).await;
    assert_eq!(stats["rejected"]["blacklisted"], 1);
    assert_eq!(stats["ips"][0]["ip"], "127.0.0.4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_refuses_a_burst_past_its_size() {
    // 0.001 new connections a second: no token comes back during the test.
    let (fwd, addr) = start("  rate_limit: 0.001\n  rate_burst: 2\n").await;
    let _a = open([127, 0, 0, 1], addr)
        .await
        .expect("first of the burst");
    let _b = open([127, 0, 0, 1], addr)
        .await
        .expect("second of the burst");
    assert!(open([127, 0, 0, 1], addr).await.is_none());
    let _c = open([127, 0, 0, 2], addr)
        .await
        .expect("another IP has its own bucket");
    assert_eq!(fwd.stats("svc").await["rejected"]["rate_limit"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_at_limit_makes_the_next_client_wait_for_a_slot() {
    let (fwd, addr) = start("  conn_limit: 1\n  pause_at_limit: true\n").await;
    let first = open([127, 0, 0, 1], addr).await.expect("first");
    let mut waiting = connect_from([127, 0, 0, 2], addr).await;
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        tokio::io::AsyncReadExt::read(&mut waiting, &mut byte),
    )
    .await;
    assert!(
        early.is_err(),
        "served while the service was full: {early:?}"
    );
    drop(first);
    assert_eq!(greeting(&mut waiting).await, "hello");
    let stats = fwd.stats("svc").await;
    assert_eq!(stats["rejected"]["conn_limit"], 0);
    assert_eq!(stats["accepted"], 2);
}

/// `ipv6_prefix` from the config keys IPv6 clients: over ::1 (the one IPv6
/// source a loopback test has), a /128 key and its rate bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_prefix_from_the_config_keys_ipv6_clients() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let backend = banner_backend().await;
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| {
        Setup::config(format!(
            "svc:\n  listen_ip: \"::1\"\n  listen_port: {port}\n  backend_port: {}\n  \
             ipv6_prefix: 128\n  rate_limit: 0.01\n  rate_burst: 1\n",
            backend.port()
        ))
    });
    let listen: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let mut first = tokio::net::TcpStream::connect(listen).await.unwrap();
    assert_eq!(greeting(&mut first).await, "hello");
    let stats = fwd.stats("svc").await;
    assert_eq!(
        stats["ips"],
        serde_json::json!([{"ip": "::1", "prefix": 128, "connections": 1}])
    );
    let mut second = tokio::net::TcpStream::connect(listen).await.unwrap();
    assert!(
        read_until_closed(&mut second).await.is_empty(),
        "rate_limit"
    );
    fwd.wait_stats("svc", "refused by rate", |s| {
        s["rejected"]["rate_limit"] == 1
    })
    .await;
}
