//! The registry and a service's table, without the sweeper's timing.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use monconn::{CloseCause, Registry, RejectReason, ServiceConfig};
use support::quiet_config;

fn peer(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn services_by_sid() {
    let registry = Registry::new();
    let web = registry.service("web");
    assert_eq!(web.sid(), "web");
    assert_eq!(registry.service("").sid(), "default");
    assert_eq!(registry.get("").unwrap().sid(), "default");
    assert!(registry.get("nope").is_none());

    // `create` on an existing sid sets its config and returns the same service.
    let config = quiet_config().conn_limit(3);
    let again = registry.create("web", config.clone()).unwrap();
    assert_eq!(*web.config(), config);
    let local = peer("127.0.0.1:80");
    let conn = again
        .wrap(tokio::io::empty(), peer("10.0.0.1:1"), local)
        .unwrap();
    assert_eq!(web.connections(), 1, "clones share the table");
    drop(conn);

    let sids: Vec<String> = registry.list().iter().map(|s| s.sid().to_owned()).collect();
    assert_eq!(sids, ["default", "web"]);
    let clone = registry.clone();
    clone.service("zz");
    assert_eq!(
        registry.list().len(),
        3,
        "registry clones share the services"
    );
    assert!(format!("{registry:?}").contains("zz"));

    let global = Registry::global().service("registry-test-global");
    assert_eq!(
        global.sid(),
        Registry::global()
            .get("registry-test-global")
            .unwrap()
            .sid()
    );
    assert!(Registry::new().get("registry-test-global").is_none());
}

#[test]
fn update_config_changes_one_field() {
    let service = Registry::new().create("cfg", quiet_config()).unwrap();
    service.update_config(|c| c.max_idle = Some(Duration::from_secs(5)));
    assert_eq!(service.config().max_idle, Some(Duration::from_secs(5)));
    assert_eq!(service.config().read_timeout, None);
}

#[test]
fn admission_dropped_unattached_gives_its_slot_back() {
    let service = Registry::new()
        .create("adm", quiet_config().conn_limit(1))
        .unwrap();
    let admission = service.admit(peer("10.0.0.1:1")).unwrap();
    assert_eq!(admission.peer(), peer("10.0.0.1:1"));
    assert_eq!((service.connections(), service.ip_count()), (1, 1));
    let refused = service.admit(peer("10.0.0.2:1")).unwrap_err();
    assert_eq!(refused.reason(), &RejectReason::ConnLimit);
    assert_eq!(refused.peer(), peer("10.0.0.2:1"));
    drop(admission);
    assert_eq!((service.connections(), service.ip_count()), (0, 0));
    let snap = service.snapshot_with_conns();
    assert_eq!(snap.accepted, 0, "only attached connections are accepted");
    assert_eq!(snap.closed.values().sum::<u64>(), 0);
    assert_eq!(
        snap.rejected["conn_limit"], 0,
        "admit alone does not count refusals"
    );
    assert!(service.admit(peer("10.0.0.2:1")).is_ok());
}

#[test]
fn limits_hold_at_admission() {
    let config = quiet_config().ip_limit(2).per_ip_limit(2);
    let service = Registry::new().create("limits", config).unwrap();
    let local = peer("127.0.0.1:80");
    let wrap = |p: &str| service.wrap(tokio::io::empty(), peer(p), local);
    let a1 = wrap("10.0.0.1:1").unwrap();
    let _a2 = wrap("10.0.0.1:2").unwrap();
    assert_eq!(
        wrap("10.0.0.1:3").unwrap_err().reason(),
        &RejectReason::PerIpLimit
    );
    let _b1 = wrap("10.0.0.2:1").unwrap();
    assert_eq!(
        wrap("10.0.0.3:1").unwrap_err().reason(),
        &RejectReason::IpLimit
    );
    drop(a1);
    assert!(
        wrap("10.0.0.1:4").is_ok(),
        "a slot freed by a close is reusable"
    );
    let snap = service.snapshot();
    assert_eq!(
        (snap.rejected["per_ip_limit"], snap.rejected["ip_limit"]),
        (1, 1)
    );
    assert_eq!(snap.accepted, 4);
}

#[test]
fn conn_lookup_and_ips() {
    let service = Registry::new().create("lookup", quiet_config()).unwrap();
    let local = peer("127.0.0.1:80");
    let a = service
        .wrap(tokio::io::empty(), peer("10.0.0.9:1"), local)
        .unwrap();
    let b = service
        .wrap(tokio::io::empty(), peer("10.0.0.1:1"), local)
        .unwrap();
    let c = service
        .wrap(tokio::io::empty(), peer("10.0.0.1:2"), local)
        .unwrap();
    assert_eq!(a.sid(), "lookup");
    let id = b.record().id();
    assert_eq!(service.conn(id).unwrap().peer(), peer("10.0.0.1:1"));
    assert_eq!(
        service.ips(),
        vec![
            ("10.0.0.1/32".parse().unwrap(), 2),
            ("10.0.0.9/32".parse().unwrap(), 1)
        ]
    );
    drop(b);
    assert!(service.conn(id).is_none());
    assert_eq!(service.ips().len(), 2);
    drop((a, c));
    assert!(service.ips().is_empty());
}

/// Without a runtime there is no sweeper task; `sweep` does its work by hand.
#[test]
fn sweep_by_hand_without_a_runtime() {
    let service = Registry::new()
        .create("hand", quiet_config().max_idle(Duration::ZERO))
        .unwrap();
    let local = peer("127.0.0.1:80");
    let conn = service
        .wrap(tokio::io::empty(), peer("10.0.0.1:1"), local)
        .unwrap();
    let record = conn.record().clone();
    assert_eq!(service.sweep(), 1);
    assert_eq!(record.closed(), Some(CloseCause::Idle));
    assert_eq!(service.sweep(), 0, "closed once");
    drop(conn);
    assert_eq!(service.snapshot().closed["idle"], 1);
}

#[test]
fn default_config_has_no_timeouts() {
    // Off until asked for, like tower-http's: a server streaming events must
    // not lose them because it added monitoring. The forwarder sets the Go
    // tool's 600/600/900 s itself.
    let c = ServiceConfig::default();
    assert_eq!(c.read_timeout, None);
    assert_eq!(c.write_timeout, None);
    assert_eq!(c.wait_timeout, Duration::from_secs(60));
    assert_eq!(c.max_idle, None);
    assert_eq!(c.idle_interval, Duration::from_secs(15));
    assert_eq!(
        (c.conn_limit, c.ip_limit, c.per_ip_limit),
        (None, None, None)
    );
    assert_eq!(c.keepalive, Some(Duration::from_secs(30)));
    assert!(!c.print_bytes);
    assert!(c.blacklist.is_empty());
}

/// `wrap` applies the service's blacklist, like the listener does.
#[tokio::test]
async fn wrap_applies_the_blacklist() {
    let service = monconn::Registry::new()
        .create(
            "wrap-filter",
            monconn::ServiceConfig::default().blacklist(["127.0.0.0/8".parse().unwrap()]),
        )
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (stream, peer) = tcp.accept().await.unwrap();
    let refused = service.wrap(stream, peer, addr).unwrap_err();
    assert_eq!(refused.reason(), &monconn::RejectReason::Blacklisted);
    assert_eq!(service.snapshot().rejected["blacklisted"], 1);
    assert_eq!(service.accepted(), 0);
    service.unban("127.0.0.0/8".parse::<ipnet::IpNet>().unwrap());
    let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (stream, peer) = tcp.accept().await.unwrap();
    assert!(service.wrap(stream, peer, addr).is_ok());
    assert_eq!(service.accepted(), 1);
}
