//! End to end: the auto-ban rule of the config file. A flood from one
//! address is banned within its window (logged once), its connections are
//! closed, and other clients are served all along.

use crate::support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_is_banned_once_and_others_are_served() {
    let backend = banner_backend().await;
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| {
        Setup::config(service_yaml(
            "svc",
            port,
            backend.port(),
            "  per_ip_limit: 2\n  auto_ban_refused: 5\n  auto_ban_within: 10\n  auto_ban_for: 60\n",
        ))
    });
    let addr = local(port);
    let mut held: Vec<_> = Vec::new();
    for _ in 0..2 {
        held.push(
            open([127, 0, 0, 66], addr)
                .await
                .expect("under per_ip_limit"),
        );
    }
    let mut other = open([127, 0, 0, 7], addr).await.expect("another client");
    // 30 more from the flooder: 5 refused by per_ip_limit, then banned.
    for _ in 0..30 {
        assert!(open([127, 0, 0, 66], addr).await.is_none());
        echo(&mut other, b"still served").await;
    }
    for stream in &mut held {
        read_until_closed(stream).await;
    }
    let stats = fwd
        .wait_stats("svc", "the refusals counted", |s| {
            s["rejected"]["auto_banned"] == 25
        })
        .await;
    assert_eq!(stats["rejected"]["per_ip_limit"], 5);
    assert_eq!(stats["closed"]["kicked"], 2);
    assert_eq!(stats["timed_bans"][0]["net"], "127.0.0.66/32");
    assert_eq!(stats["timed_bans"][0]["source"], "rule");
    assert!(open([127, 0, 0, 8], addr).await.is_some());
    // Logged once for the ban, not once per connection.
    fwd.wait_stderr("auto-banned").await;
    assert_eq!(fwd.stderr().matches("auto-banned").count(), 1);
}
