//! Bans with a lifetime: refused until they expire, listed with their
//! remaining time, lifted early, kept across config changes, and as cheap to
//! look up with 100,000 of them.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use monconn::{BanSource, Registry, RejectReason, ServiceConfig};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[tokio::test]
async fn a_timed_ban_refuses_until_it_expires_and_then_leaves_the_list() {
    let service = Registry::new()
        .create("web", ServiceConfig::default())
        .unwrap();
    assert!(service.ban_for(net("192.0.2.0/24"), Duration::from_millis(300)));
    assert!(service.ban_for(ip("198.51.100.7"), Duration::from_secs(60)));
    // A shorter ban of the same net leaves the longer one.
    assert!(!service.ban_for(ip("198.51.100.7"), Duration::from_secs(1)));
    assert_eq!(
        service.ip_verdict(ip("192.0.2.9")),
        Some(RejectReason::Blacklisted)
    );
    assert_eq!(
        service.ip_verdict(ip("::ffff:192.0.2.9")),
        Some(RejectReason::Blacklisted)
    );
    assert_eq!(service.ip_verdict(ip("192.0.3.1")), None);

    let snap = serde_json::to_value(service.snapshot()).unwrap();
    let bans = snap["timed_bans"].as_array().unwrap();
    assert_eq!(bans.len(), 2);
    assert_eq!(
        (bans[0]["net"].as_str(), bans[0]["source"].as_str()),
        (Some("192.0.2.0/24"), Some("local"))
    );
    assert!(bans[0]["remaining_ms"].as_u64().unwrap() <= 300);
    assert!(bans[1]["remaining_ms"].as_u64().unwrap() > 59_000);

    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(service.ip_verdict(ip("192.0.2.9")), None);
    assert_eq!(
        service.ip_verdict(ip("198.51.100.7")),
        Some(RejectReason::Blacklisted)
    );
    // The lookup that met the expired ban pruned it, in a task.
    crate::support::eventually("pruned", || {
        service
            .timed_bans()
            .iter()
            .map(|b| b.net)
            .collect::<Vec<_>>()
            == [net("198.51.100.7/32")]
    })
    .await;
}

#[test]
fn unban_lifts_a_timed_ban_and_config_changes_keep_them() {
    let service = Registry::new().service("web");
    service.ban_for(ip("10.0.0.1"), Duration::from_secs(60));
    service.ban_for(ip("10.0.0.2"), Duration::from_secs(60));
    service.set_config(
        ServiceConfig::default()
            .conn_limit(5)
            .blacklist([net("10.9.0.0/16")]),
    );
    assert_eq!(
        service.ip_verdict(ip("10.0.0.1")),
        Some(RejectReason::Blacklisted)
    );
    assert_eq!(
        service.ip_verdict(ip("10.9.1.1")),
        Some(RejectReason::Blacklisted)
    );
    assert!(service.unban(ip("10.0.0.1")));
    assert!(!service.unban(ip("10.0.0.1")));
    assert_eq!(service.ip_verdict(ip("10.0.0.1")), None);
    let left: Vec<_> = service
        .timed_bans()
        .into_iter()
        .map(|b| (b.net, b.source))
        .collect();
    assert_eq!(left, [(net("10.0.0.2/32"), BanSource::Local)]);
    // A time already past bans nothing.
    assert!(!service.ban_until(ip("10.0.0.3"), std::time::SystemTime::UNIX_EPOCH));
    let soon = std::time::SystemTime::now() + Duration::from_secs(30);
    assert!(service.ban_until(ip("10.0.0.3"), soon));
    assert_eq!(
        service.ip_verdict(ip("10.0.0.3")),
        Some(RejectReason::Blacklisted)
    );
}

#[test]
fn a_hundred_thousand_timed_bans_are_looked_up_exactly() {
    let service = Registry::new().service("web");
    let nets: Vec<IpNet> = (0..100_000u32)
        .map(|n| IpNet::from(IpAddr::from((0x0a00_0000 + n * 3).to_be_bytes())))
        .collect();
    assert_eq!(service.ban_all_for(nets, Duration::from_secs(60)), 100_000);
    assert_eq!(service.timed_bans().len(), 100_000);
    for n in [0u32, 1, 2, 3, 149_997, 299_997, 299_998, 300_000] {
        let probe = IpAddr::from((0x0a00_0000 + n).to_be_bytes());
        let want = (n % 3 == 0 && n < 300_000).then_some(RejectReason::Blacklisted);
        assert_eq!(service.ip_verdict(probe), want, "{probe}");
    }
    // One more ban, one more rebuild: still all there.
    service.ban_for(ip("192.0.2.1"), Duration::from_secs(60));
    assert_eq!(service.timed_bans().len(), 100_001);
}
