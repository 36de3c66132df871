//! Snapshot JSON: field names and values, exactly.

use crate::support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use monconn::{MonitoredIo, Registry, RejectReason, ServiceMonitor};
use serde_json::{json, Value};
use support::{eventually, listen, quiet_config, tcp_pair_from, LOCALHOST};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Moves `up` bytes from the client to the server and `down` back.
async fn traffic(
    server: &mut MonitoredIo<TcpStream>,
    client: &mut TcpStream,
    up: usize,
    down: usize,
) {
    let mut buf = vec![0; up.max(down)];
    client.write_all(&vec![b'u'; up]).await.unwrap();
    server.read_exact(&mut buf[..up]).await.unwrap();
    server.write_all(&vec![b'd'; down]).await.unwrap();
    client.read_exact(&mut buf[..down]).await.unwrap();
}

/// Checks that `value[key]` is a number within `lo..=hi` and replaces it with 0.
fn normalize(value: &mut Value, key: &str, lo: u64, hi: u64) {
    let n = value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number: {}", value[key]));
    assert!(
        (lo..=hi).contains(&n),
        "{key} = {n}, expected within {lo}..={hi}"
    );
    value[key] = json!(0);
}

fn all_rejected(entries: &[(&str, u64)]) -> Value {
    let mut map = json!({
        "blacklisted": 0, "not_allowed": 0, "conn_limit": 0, "ip_limit": 0,
        "per_ip_limit": 0, "rate_limit": 0, "stopped": 0, "auto_banned": 0,
    });
    for (k, v) in entries {
        map[*k] = json!(v);
    }
    map
}

fn all_closed(entries: &[(&str, u64)]) -> Value {
    let mut map = json!({
        "normal": 0, "error": 0, "idle": 0, "read_timeout": 0,
        "write_timeout": 0, "kicked": 0, "shutdown": 0,
    });
    for (k, v) in entries {
        map[*k] = json!(v);
    }
    map
}

#[tokio::test]
async fn fresh_service_snapshot() {
    let t0 = unix_now();
    let service = Registry::new().create("fresh", quiet_config()).unwrap();
    let mut value = serde_json::to_value(service.snapshot()).unwrap();
    normalize(&mut value, "boot_at", t0, unix_now());
    normalize(&mut value, "uptime_secs", 0, 1);
    assert_eq!(
        value,
        json!({
            "sid": "fresh", "boot_at": 0, "uptime_secs": 0, "access_at": null,
            "connections": 0, "ip_count": 0, "ips": [],
            "bytes_read": 0, "bytes_written": 0, "accepted": 0,
            "rejected": all_rejected(&[]), "closed": all_closed(&[]),
            "accept_errors": 0,
        })
    );
    let with_conns = serde_json::to_value(service.snapshot_with_conns()).unwrap();
    assert_eq!(with_conns["conns"], json!([]));
}

async fn snapshot_scene(
    service: &ServiceMonitor,
) -> (Vec<(MonitoredIo<TcpStream>, TcpStream)>, Value) {
    let listener = listen().await;
    let local = listener.local_addr().unwrap();
    let two = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let three = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let mut conns = Vec::new();
    for (src, up, down) in [(two, 10, 20), (two, 0, 5), (three, 7, 0), (LOCALHOST, 3, 4)] {
        let (mut server, mut client) = tcp_pair_from(&listener, service, src).await;
        traffic(&mut server, &mut client, up, down).await;
        conns.push((server, client));
    }
    // The last one, from 127.0.0.1, closes normally.
    drop(conns.pop());
    service.count_rejected(&RejectReason::Blacklisted, "127.0.0.1:9".parse().unwrap());
    service.count_rejected(&RejectReason::Blacklisted, "127.0.0.1:9".parse().unwrap());
    service.count_rejected(&RejectReason::RateLimit, "127.0.0.1:9".parse().unwrap());
    service.count_rejected(
        &RejectReason::Other("tls_handshake".into()),
        "127.0.0.1:9".parse().unwrap(),
    );

    let conn = |i: usize, up: u64, down: u64| {
        let (server, client) = &conns[i];
        let peer: SocketAddr = client.local_addr().unwrap();
        assert_eq!(server.record().peer(), peer);
        json!({
            "id": server.record().id(), "peer": peer.to_string(), "local": local.to_string(),
            "age_secs": 0, "idle_secs": 0, "bytes_read": up, "bytes_written": down,
        })
    };
    let expected = json!({
        "sid": "snap", "boot_at": 0, "uptime_secs": 0, "access_at": 0,
        "connections": 3, "ip_count": 2,
        "ips": [
            {"ip": "127.0.0.2", "prefix": 32, "connections": 2},
            {"ip": "127.0.0.3", "prefix": 32, "connections": 1},
        ],
        "bytes_read": 20, "bytes_written": 29, "accepted": 4,
        "rejected": all_rejected(&[("blacklisted", 2), ("rate_limit", 1), ("tls_handshake", 1)]),
        "closed": all_closed(&[("normal", 1)]),
        "accept_errors": 0,
        "conns": [conn(0, 10, 20), conn(1, 0, 5), conn(2, 7, 0)],
    });
    (conns, expected)
}

#[tokio::test]
async fn snapshot_json_fields_and_values() {
    let t0 = unix_now();
    let started = Instant::now();
    let registry = Registry::new();
    let service = registry.create("snap", quiet_config()).unwrap();
    let (_conns, mut expected) = snapshot_scene(&service).await;

    let snap = service.snapshot_with_conns();
    let t1 = unix_now();
    let secs = started.elapsed().as_secs() + 1;
    let mut value = serde_json::to_value(&snap).unwrap();
    normalize(&mut value, "boot_at", t0, t1);
    normalize(&mut value, "uptime_secs", 0, secs);
    normalize(&mut value, "access_at", t0, t1);
    for conn in value["conns"].as_array_mut().unwrap() {
        normalize(conn, "age_secs", 0, secs);
        normalize(conn, "idle_secs", 0, secs);
    }
    assert_eq!(value, expected);

    // Without connections, `conns` is absent.
    let mut value = serde_json::to_value(service.snapshot()).unwrap();
    assert!(value.get("conns").is_none());
    expected.as_object_mut().unwrap().remove("conns");
    for key in ["boot_at", "uptime_secs", "access_at"] {
        value[key] = json!(0);
    }
    assert_eq!(value, expected);

    // The registry's snapshot lists every service under "services", by sid.
    registry.create("a-first", quiet_config()).unwrap();
    let value = serde_json::to_value(registry.snapshot()).unwrap();
    assert_eq!(value.as_object().unwrap().len(), 1);
    let sids: Vec<&str> = value["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sid"].as_str().unwrap())
        .collect();
    assert_eq!(sids, ["a-first", "snap"]);
    assert_eq!(value["services"][1]["bytes_read"], 20);
}

#[tokio::test]
async fn ipv4_mapped_peers_are_counted_under_their_ipv4_address() {
    let service = Registry::new().create("mapped", quiet_config()).unwrap();
    let mapped: SocketAddr = "[::ffff:127.0.0.5]:4000".parse().unwrap();
    let plain: SocketAddr = "127.0.0.5:4001".parse().unwrap();
    let v6: SocketAddr = "[::1]:4002".parse().unwrap();
    let local: SocketAddr = "[::1]:80".parse().unwrap();
    let a = service.wrap(tokio::io::empty(), mapped, local).unwrap();
    let b = service.wrap(tokio::io::empty(), plain, local).unwrap();
    let c = service.wrap(tokio::io::empty(), v6, local).unwrap();
    let value = serde_json::to_value(service.snapshot_with_conns()).unwrap();
    assert_eq!(value["ip_count"], 2);
    assert_eq!(
        value["ips"],
        json!([
            {"ip": "127.0.0.5", "prefix": 32, "connections": 2},
            {"ip": "::", "prefix": 64, "connections": 1},
        ])
    );
    let peers: Vec<&str> = value["conns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["peer"].as_str().unwrap())
        .collect();
    assert_eq!(
        peers,
        ["[::ffff:127.0.0.5]:4000", "127.0.0.5:4001", "[::1]:4002"]
    );
    drop((a, b, c));
    let value = serde_json::to_value(service.snapshot_with_conns()).unwrap();
    assert_eq!(
        (value["ip_count"].clone(), value["ips"].clone()),
        (json!(0), json!([]))
    );
    assert_eq!(value["closed"]["normal"], 3);
}

#[tokio::test]
async fn snapshots_read_back_from_their_json() {
    // A client of the JSON API reads the snapshots back into the same types.
    let registry = Registry::new();
    let service = registry.create("back", quiet_config()).unwrap();
    let (_conns, _) = snapshot_scene(&service).await;
    let with_conns = service.snapshot_with_conns();
    let text = serde_json::to_string(&with_conns).unwrap();
    let read: monconn::ServiceSnapshot = serde_json::from_str(&text).unwrap();
    assert_eq!(read, with_conns);
    assert!(read.conns.as_ref().is_some_and(|c| !c.is_empty()));

    let without = service.snapshot();
    let read: monconn::ServiceSnapshot =
        serde_json::from_str(&serde_json::to_string(&without).unwrap()).unwrap();
    assert_eq!(read.conns, None);
    assert_eq!(read, without);

    let all = registry.snapshot();
    let read: monconn::RegistrySnapshot =
        serde_json::from_str(&serde_json::to_string(&all).unwrap()).unwrap();
    assert_eq!(read, all);
    let report: monconn::CloseReport = serde_json::from_str(r#"{"drained": 3, "cut": 1}"#).unwrap();
    assert_eq!((report.drained, report.cut), (3, 1));
    // The re-exported ipnet builds the lists' networks.
    let net: monconn::ipnet::IpNet = "10.0.0.0/8".parse().unwrap();
    service.ban(net);
    assert!(service.config().blacklist.contains(&net));
}

#[tokio::test]
async fn recent_rejections_name_the_client_and_the_reason_newest_first() {
    let service = Registry::new()
        .create(
            "recent",
            quiet_config()
                .conn_limit(1)
                .blacklist(["127.0.0.66/32".parse().unwrap()]),
        )
        .unwrap();
    let listener = monconn::Listener::bind("127.0.0.1:0", service.clone())
        .await
        .unwrap();
    let addr = listener.local_addr();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let from = |ip: &str| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        socket
    };
    let _first = from("127.0.0.1").connect(addr).await.unwrap();
    eventually("the first admitted", || service.connections() == 1).await;
    let banned = from("127.0.0.66").connect(addr).await.unwrap();
    let banned_peer = banned.local_addr().unwrap();
    eventually("the ban counted", || {
        service.snapshot().rejected["blacklisted"] == 1
    })
    .await;
    let over = from("127.0.0.67").connect(addr).await.unwrap();
    let over_peer = over.local_addr().unwrap();
    eventually("the limit counted", || {
        service.snapshot().rejected["conn_limit"] == 1
    })
    .await;

    let recent = service.recent_rejections();
    assert_eq!(recent.len(), 2);
    assert_eq!(
        (recent[0].peer, recent[0].reason.as_str()),
        (over_peer, "conn_limit")
    );
    assert_eq!(
        (recent[1].peer, recent[1].reason.as_str()),
        (banned_peer, "blacklisted")
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(recent[0].at.abs_diff(now) <= 2, "{} vs {now}", recent[0].at);
    // Serialized as the dashboard reads it, and back.
    let json = serde_json::to_value(&recent[0]).unwrap();
    assert_eq!(json["reason"], "conn_limit");
    assert_eq!(json["peer"], over_peer.to_string());
    let back: monconn::Rejection = serde_json::from_value(json).unwrap();
    assert_eq!(back, recent[0]);

    // The ring keeps the last RECENT_REJECTIONS, and counters stay exact.
    let peer =
        |i: usize| -> std::net::SocketAddr { format!("10.9.0.{}:1", i % 250).parse().unwrap() };
    for i in 0..100 {
        service.count_rejected(&RejectReason::RateLimit, peer(i));
    }
    let recent = service.recent_rejections();
    assert_eq!(recent.len(), monconn::RECENT_REJECTIONS);
    assert_eq!(recent[0].peer, peer(99));
    assert_eq!(
        recent.last().unwrap().peer,
        peer(100 - monconn::RECENT_REJECTIONS)
    );
    assert_eq!(service.snapshot().rejected["rate_limit"], 100);
    server.abort();
}
