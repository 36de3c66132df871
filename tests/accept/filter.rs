//! The accept stack's filter over real loopback TCP: blacklist, CIDR rules,
//! IPv4-mapped peers on a dual-stack listener, allowlist, runtime changes.

use crate::accept_common;
use crate::support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use accept_common::{attempt, lo, serve, Fate};
use ipnet::IpNet;
use monconn::{Listener, Registry, ServiceConfig};
use support::{eventually, quiet_config, within};
use tokio::io::AsyncReadExt;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The reasons with a count (the snapshot lists every built-in one).
fn refused(service: &monconn::ServiceMonitor) -> BTreeMap<String, u64> {
    let mut rejected = service.snapshot().rejected;
    rejected.retain(|_, n| *n > 0);
    rejected
}

async fn listener(config: ServiceConfig) -> Listener {
    let service = Registry::new().create("filter", config).unwrap();
    Listener::bind("127.0.0.1:0", service).await.unwrap()
}

#[tokio::test]
async fn blacklisted_ip_is_closed_with_nothing_read() {
    let listener = listener(quiet_config().blacklist([net("127.0.0.2/32")])).await;
    let service = listener.service().clone();
    let mut server = serve(listener);

    let (fate, _refused) = attempt(lo(2), server.addr).await;
    assert_eq!(fate, Fate::Refused);
    let (fate, _admitted) = attempt(lo(3), server.addr).await;
    assert_eq!(fate, Fate::Admitted);
    let peer = server.admitted.recv().await.unwrap();
    assert_eq!(peer.ip(), lo(3));

    // The admitted client's 5 bytes, and not one of the refused client's.
    eventually("admitted bytes read", || service.bytes().read == 5).await;
    let stats = service.snapshot();
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.bytes_read, 5);
    assert_eq!(refused(&service), counts(&[("blacklisted", 1)]));
    assert!(server.admitted.try_recv().is_err());
}

#[tokio::test]
async fn cidr_rule_refuses_the_whole_network() {
    let listener = listener(quiet_config().blacklist([net("127.0.0.0/30")])).await;
    let service = listener.service().clone();
    let server = serve(listener);

    let mut fates = Vec::new();
    for n in 1..=5 {
        fates.push(attempt(lo(n), server.addr).await);
    }
    let got: Vec<Fate> = fates.iter().map(|(f, _)| *f).collect();
    use Fate::*;
    // 127.0.0.0/30 is .0 to .3.
    assert_eq!(got, [Refused, Refused, Refused, Admitted, Admitted]);
    let stats = service.snapshot();
    assert_eq!(stats.accepted, 2);
    assert_eq!(refused(&service), counts(&[("blacklisted", 3)]));
}

#[tokio::test]
async fn ipv4_mapped_peer_on_a_dual_stack_listener_matches_ipv4_rules() {
    let service = Registry::new()
        .create("dual", quiet_config().blacklist([net("127.0.0.0/8")]))
        .unwrap();
    let listener = Listener::bind("[::]:0", service.clone()).await.unwrap();
    let port = listener.local_addr().port();
    let mut server = serve(listener);

    // 127.0.0.1 -> [::]:port: the listener sees ::ffff:127.0.0.1.
    let v4: SocketAddr = (lo(1), port).into();
    let (fate, _c) = attempt(lo(1), v4).await;
    assert_eq!(fate, Fate::Refused);

    // ::1 is not in 127.0.0.0/8.
    let v6: SocketAddr = (IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), port).into();
    let (fate, _c) = attempt(v6.ip(), v6).await;
    assert_eq!(fate, Fate::Admitted);
    assert_eq!(server.admitted.recv().await.unwrap().ip(), v6.ip());

    let stats = service.snapshot();
    assert_eq!(refused(&service), counts(&[("blacklisted", 1)]));
    assert_eq!(stats.accepted, 1);

    // A rule written as a mapped address matches a plain IPv4 client too.
    service.set_config(quiet_config().blacklist([net("::ffff:127.0.0.5/128")]));
    assert_eq!(attempt(lo(5), v4).await.0, Fate::Refused);
    assert_eq!(attempt(lo(6), v4).await.0, Fate::Admitted);
    let peer = server.admitted.recv().await.unwrap();
    assert_eq!(peer.ip().to_canonical(), lo(6));
    assert_eq!(refused(&service), counts(&[("blacklisted", 2)]));
}

#[tokio::test]
async fn allowlist_admits_only_its_addresses() {
    let listener = listener(quiet_config().allowlist([net("127.0.0.8/31")])).await;
    let service = listener.service().clone();
    let server = serve(listener);

    assert_eq!(attempt(lo(8), server.addr).await.0, Fate::Admitted);
    assert_eq!(attempt(lo(9), server.addr).await.0, Fate::Admitted);
    assert_eq!(attempt(lo(10), server.addr).await.0, Fate::Refused);
    assert_eq!(attempt(lo(1), server.addr).await.0, Fate::Refused);
    // The blacklist wins over the allowlist.
    assert!(service.ban(lo(9)));
    assert_eq!(attempt(lo(9), server.addr).await.0, Fate::Refused);

    let stats = service.snapshot();
    assert_eq!(stats.accepted, 2);
    assert_eq!(
        refused(&service),
        counts(&[("blacklisted", 1), ("not_allowed", 2)])
    );
}

#[tokio::test]
async fn runtime_reject_kick_and_release() {
    let listener = listener(quiet_config()).await;
    let service = listener.service().clone();
    let server = serve(listener);

    let (fate, mut live) = attempt(lo(2), server.addr).await;
    assert_eq!(fate, Fate::Admitted);
    eventually("one connection", || service.connections() == 1).await;

    // Blacklisted now, live connection kicked.
    assert_eq!(service.ban_and_kick(net("127.0.0.0/30")), 1);
    let mut buf = [0u8; 8];
    let end = within("kicked close", live.read(&mut buf)).await;
    assert!(matches!(end, Ok(0)) || end.is_err(), "{end:?}");
    assert_eq!(service.config().blacklist, vec![net("127.0.0.0/30")]);
    assert_eq!(attempt(lo(2), server.addr).await.0, Fate::Refused);
    assert_eq!(attempt(lo(3), server.addr).await.0, Fate::Refused);
    assert_eq!(attempt(lo(4), server.addr).await.0, Fate::Admitted);

    // Released: admitted again.
    assert!(service.unban(net("127.0.0.0/30")));
    assert!(!service.unban(net("127.0.0.0/30")));
    assert_eq!(attempt(lo(2), server.addr).await.0, Fate::Admitted);

    // set_config replaces the lists as a whole.
    service.update_config(|c| c.blacklist = vec![net("127.0.0.3/32")]);
    assert_eq!(attempt(lo(3), server.addr).await.0, Fate::Refused);
    assert_eq!(attempt(lo(2), server.addr).await.0, Fate::Admitted);

    eventually("kick counted", || {
        service.snapshot().closed.get("kicked") == Some(&1)
    })
    .await;
    let stats = service.snapshot();
    assert_eq!(stats.accepted, 4);
    assert_eq!(refused(&service), counts(&[("blacklisted", 3)]));
}
