//! The accept stack's limits over real loopback TCP: conn_limit under a
//! burst, ip_limit, per-IP limit, rate limit, runtime changes, backpressure.

use crate::accept_common;
use crate::support;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use accept_common::{attempt, counts, lo, refused, serve_new, Fate};
use monconn::RateLimit;
use support::{eventually, quiet_config, within};
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_limit_holds_under_ten_times_the_attempts() {
    const LIMIT: usize = 5;
    let (service, server) = serve_new("limits", quiet_config().conn_limit(LIMIT)).await;

    // Sample the open count all along, not only at accepts.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (service, stop) = (service.clone(), stop.clone());
        tokio::spawn(async move {
            let mut max = 0;
            while !stop.load(SeqCst) {
                max = max.max(service.connections());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            max
        })
    };

    // 50 clients from 10 source addresses, all at once.
    let attempts: Vec<_> = (0..LIMIT * 10)
        .map(|i| tokio::spawn(attempt(lo(2 + (i % 10) as u8), server.addr)))
        .collect();
    let mut admitted = Vec::new();
    let mut refused_n = 0;
    for a in attempts {
        match a.await.unwrap() {
            (Fate::Admitted, stream) => admitted.push(stream),
            (Fate::Refused, _) => refused_n += 1,
        }
    }
    assert_eq!(admitted.len(), LIMIT);
    assert_eq!(refused_n, LIMIT * 9);
    assert_eq!(service.connections(), LIMIT);
    assert_eq!(refused(&service), counts(&[("conn_limit", 45)]));
    assert_eq!(server.max_open.load(SeqCst), LIMIT);

    // Closing one frees exactly one slot.
    drop(admitted.pop());
    eventually("slot freed", || service.connections() == LIMIT - 1).await;
    let (fate, again) = attempt(lo(20), server.addr).await;
    assert_eq!(fate, Fate::Admitted);
    assert_eq!(attempt(lo(21), server.addr).await.0, Fate::Refused);

    drop((admitted, again));
    eventually("all closed", || service.connections() == 0).await;
    assert_eq!(service.ip_count(), 0);
    stop.store(true, SeqCst);
    assert!(sampler.await.unwrap() <= LIMIT);
    assert_eq!(service.accepted(), LIMIT as u64 + 1);
}

#[tokio::test]
async fn ip_limit_refuses_new_ips_but_not_known_ones() {
    let (service, server) = serve_new("limits", quiet_config().ip_limit(2)).await;

    let (_, a1) = attempt(lo(2), server.addr).await;
    let (_, b1) = attempt(lo(3), server.addr).await;
    assert_eq!(attempt(lo(4), server.addr).await.0, Fate::Refused);
    let (fate, _a2) = attempt(lo(2), server.addr).await;
    assert_eq!(fate, Fate::Admitted, "a known IP may open more");
    assert_eq!(service.ip_count(), 2);

    drop(b1);
    eventually("127.0.0.3 gone", || service.ip_count() == 1).await;
    assert_eq!(attempt(lo(4), server.addr).await.0, Fate::Admitted);
    assert_eq!(refused(&service), counts(&[("ip_limit", 1)]));
    drop(a1);
}

#[tokio::test]
async fn per_ip_limit_counts_each_address_apart() {
    let (service, server) = serve_new("limits", quiet_config().per_ip_limit(2)).await;

    let (_, a1) = attempt(lo(2), server.addr).await;
    let (_, _a2) = attempt(lo(2), server.addr).await;
    assert_eq!(attempt(lo(2), server.addr).await.0, Fate::Refused);
    assert_eq!(attempt(lo(3), server.addr).await.0, Fate::Admitted);

    drop(a1);
    eventually("one of 127.0.0.2's closed", || {
        service.ips().first() == Some(&(lo(2).into(), 1))
    })
    .await;
    assert_eq!(attempt(lo(2), server.addr).await.0, Fate::Admitted);
    assert_eq!(refused(&service), counts(&[("per_ip_limit", 1)]));
}

#[tokio::test]
async fn rate_limit_refuses_past_the_burst() {
    // One token per 100 s: no refill during the test.
    let rate = RateLimit {
        per_sec: 0.01,
        burst: 3,
    };
    let (service, server) = serve_new("limits", quiet_config().rate_limit(rate)).await;

    let mut fates = Vec::new();
    for _ in 0..5 {
        // Each closes before the next: only the rate limits them.
        fates.push(attempt(lo(2), server.addr).await.0);
    }
    use Fate::*;
    assert_eq!(fates, [Admitted, Admitted, Admitted, Refused, Refused]);
    assert_eq!(attempt(lo(3), server.addr).await.0, Admitted);
    assert_eq!(refused(&service), counts(&[("rate_limit", 2)]));
    assert_eq!(service.accepted(), 4);
}

#[tokio::test]
async fn limits_changed_at_runtime_apply_to_the_next_connection() {
    let (service, server) = serve_new("limits", quiet_config()).await;

    let (_, _c1) = attempt(lo(2), server.addr).await;
    service.update_config(|c| c.conn_limit = Some(1));
    assert_eq!(attempt(lo(2), server.addr).await.0, Fate::Refused);
    service.update_config(|c| c.conn_limit = Some(2));
    let (fate, _c2) = attempt(lo(2), server.addr).await;
    assert_eq!(fate, Fate::Admitted);
    service.update_config(|c| {
        c.conn_limit = Some(3);
        c.per_ip_limit = Some(2);
    });
    assert_eq!(attempt(lo(2), server.addr).await.0, Fate::Refused);
    assert_eq!(
        refused(&service),
        counts(&[("conn_limit", 1), ("per_ip_limit", 1)])
    );
    assert_eq!(service.connections(), 2);
}

#[tokio::test]
async fn pause_at_limit_holds_clients_back_instead_of_refusing() {
    let config = quiet_config().conn_limit(2).pause_at_limit(true);
    let (service, mut server) = serve_new("limits", config).await;

    let (_, c1) = attempt(lo(2), server.addr).await;
    let (_, _c2) = attempt(lo(3), server.addr).await;
    server.admitted.recv().await.unwrap();
    server.admitted.recv().await.unwrap();

    // The third waits in the backlog: connected, neither welcomed nor closed.
    let mut waiting = support::connect_from(lo(4), server.addr).await;
    let mut first = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut first)).await;
    assert!(early.is_err(), "third client got {early:?} while paused");
    assert_eq!(service.connections(), 2);

    // A slot frees: the waiting client is accepted.
    drop(c1);
    assert_eq!(
        within("welcome", waiting.read(&mut first)).await.unwrap(),
        1
    );
    assert_eq!(first[0], accept_common::WELCOME);
    assert_eq!(server.admitted.recv().await.unwrap().ip(), lo(4));
    assert_eq!(refused(&service), counts(&[]));
    assert_eq!(service.accepted(), 3);
}
