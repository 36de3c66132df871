//! Rules that ban by themselves: a flood from one address is banned within
//! its window, its live connections are closed, its refusals count as
//! `auto_banned`, and other clients are served all along.

use std::time::Duration;

use crate::accept_common::{assert_closed, attempt, lo, refused, serve_new, Fate};
use crate::support::{eventually, quiet_config};
use monconn::{AutoBan, BanSource};

#[tokio::test]
async fn refusals_by_a_limit_ban_the_flooder_and_kick_its_connections() {
    let rule = AutoBan::after_refusals(5, Duration::from_secs(10)).ban_for(Duration::from_secs(60));
    let (service, server) = serve_new("flood", quiet_config().per_ip_limit(2).auto_ban(rule)).await;
    let (flooder, other) = (lo(66), lo(7));

    let (fate, mut held_a) = attempt(flooder, server.addr).await;
    assert_eq!(fate, Fate::Admitted);
    let (_, mut held_b) = attempt(flooder, server.addr).await;
    let (fate, _served) = attempt(other, server.addr).await;
    assert_eq!(fate, Fate::Admitted);

    // Five refusals by per_ip_limit: the fifth bans, and the ban kicks the two it holds.
    for _ in 0..5 {
        assert_eq!(attempt(flooder, server.addr).await.0, Fate::Refused);
    }
    assert_closed("kicked a", &mut held_a).await;
    assert_closed("kicked b", &mut held_b).await;
    eventually("the flooder's connections closed", || {
        service.ip_count() == 1
    })
    .await;
    // Banned now: refused before the limits, counted as its own reason.
    for _ in 0..10 {
        assert_eq!(attempt(flooder, server.addr).await.0, Fate::Refused);
    }
    let (fate, _still) = attempt(other, server.addr).await;
    assert_eq!(fate, Fate::Admitted);
    eventually("counted", || refused(&service).values().sum::<u64>() == 15).await;
    assert_eq!(
        refused(&service),
        [
            ("auto_banned".to_owned(), 10),
            ("per_ip_limit".to_owned(), 5)
        ]
        .into()
    );
    assert_eq!(service.snapshot().closed["kicked"], 2);
    let bans = service.timed_bans();
    assert_eq!(bans.len(), 1);
    assert_eq!(
        (bans[0].net, bans[0].source),
        ("127.0.0.66/32".parse().unwrap(), BanSource::Rule)
    );
    assert!(bans[0].remaining_ms.unwrap() > 55_000);
}

#[tokio::test]
async fn a_connection_rate_rule_bans_a_flood_within_its_window_while_others_are_served() {
    // More than 10 connections a second from one address.
    let rule =
        AutoBan::after_connections(10, Duration::from_secs(1)).ban_for(Duration::from_secs(60));
    let (service, server) = serve_new("rate", quiet_config().auto_ban(rule)).await;
    let (flooder, other) = (lo(67), lo(8));
    let started = std::time::Instant::now();
    let mut fates = Vec::new();
    for i in 0..40 {
        fates.push(attempt(flooder, server.addr).await.0);
        if i % 10 == 0 {
            assert_eq!(attempt(other, server.addr).await.0, Fate::Admitted);
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let admitted = fates.iter().filter(|f| **f == Fate::Admitted).count();
    assert_eq!(admitted, 9, "{fates:?}");
    assert!(fates[9..].iter().all(|f| *f == Fate::Refused));
    eventually("counted", || refused(&service).values().sum::<u64>() == 31).await;
    assert_eq!(refused(&service), [("auto_banned".to_owned(), 31)].into());
    assert_eq!(service.accepted(), 9 + 4);
}

#[tokio::test]
async fn without_a_rule_nobody_is_banned() {
    let (service, server) = serve_new("off", quiet_config().per_ip_limit(1)).await;
    let (_held_fate, _held) = attempt(lo(68), server.addr).await;
    for _ in 0..20 {
        assert_eq!(attempt(lo(68), server.addr).await.0, Fate::Refused);
    }
    assert!(service.timed_bans().is_empty());
    eventually("counted", || refused(&service).values().sum::<u64>() == 20).await;
    assert_eq!(refused(&service), [("per_ip_limit".to_owned(), 20)].into());
}
