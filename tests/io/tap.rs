//! The runtime tap through the library (`Registry::tap`) over loopback TCP:
//! what it sees of a connection, and that a subscriber that never reads
//! loses events without slowing the connection.

use std::io::IoSlice;
use std::time::{Duration, Instant};

use monconn::tap::{TapFilter, TapKind, TapLimits};
use monconn::{CloseCause, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{listen, quiet_config, tcp_pair, tcp_pair_from, within};

#[tokio::test]
async fn a_tap_sees_the_first_bytes_of_each_read_and_write_and_the_totals() {
    let registry = Registry::new();
    let service = registry.create("tapped", quiet_config()).unwrap();
    let limits = TapLimits::default().with_bytes_per_event(8);
    let mut tap = registry.tap_with_limits(TapFilter::new().with_sid("tapped"), limits);
    let (mut server, mut client) = tcp_pair(&service).await;
    let id = server.record().id();

    let open = within("open", tap.next()).await.unwrap();
    assert_eq!((open.name(), &*open.sid, open.conn), ("open", "tapped", id));
    assert_eq!(open.peer, client.local_addr().unwrap());
    assert!(matches!(open.kind, TapKind::Open { live: false, .. }));

    // A vectored write: one event, its head across both slices.
    let n = server
        .write_vectored(&[IoSlice::new(b"hello, "), IoSlice::new(b"world")])
        .await
        .unwrap();
    assert_eq!(n, 12);
    let write = within("write", tap.next()).await.unwrap();
    let bytes = write.bytes().unwrap();
    assert_eq!((write.name(), bytes.offset, bytes.len), ("write", 0, 12));
    assert_eq!(bytes.head, b"hello, w");
    assert_eq!(
        write.hex().unwrap(),
        "00000000: 6865 6c6c 6f2c 2077                      hello, w\n"
    );

    // Reads: the offsets follow the stream.
    client.write_all(&[0xab; 100]).await.unwrap();
    let mut buf = [0; 100];
    server.read_exact(&mut buf).await.unwrap();
    let mut offset = 0;
    while offset < 100 {
        let read = within("read", tap.next()).await.unwrap();
        let b = read.bytes().unwrap();
        assert_eq!((read.name(), b.offset), ("read", offset));
        assert_eq!(b.head, vec![0xab; b.len.min(8)]);
        offset += b.len as u64;
    }
    assert_eq!(offset, 100);

    drop(server);
    let close = within("close", tap.next()).await.unwrap();
    match close.kind {
        TapKind::Close {
            cause,
            bytes_read,
            bytes_written,
            ..
        } => assert_eq!(
            (cause, bytes_read, bytes_written),
            (CloseCause::Normal, 100, 12)
        ),
        other => panic!("not a close: {other:?}"),
    }
    assert_eq!(tap.lost(), 0);
    assert!(tap.try_next().is_none());
}

#[tokio::test]
async fn a_tap_sees_only_what_its_filter_matches_and_live_connections_first() {
    let registry = Registry::new();
    let a = registry.create("a", quiet_config()).unwrap();
    let b = registry.create("b", quiet_config()).unwrap();
    let listener_a = listen().await;
    let listener_b = listen().await;
    let five = "127.0.0.5".parse().unwrap();
    let six = "127.0.0.6".parse().unwrap();
    // Open before the tap: reported as live.
    let (mut live, _live_client) = tcp_pair_from(&listener_a, &a, five).await;
    let mut tap = registry.tap(
        TapFilter::new()
            .with_sid("a")
            .with_ip("127.0.0.4/31".parse().unwrap()),
    );
    let first = within("the live connection", tap.next()).await.unwrap();
    assert_eq!(first.conn, live.record().id());
    assert!(matches!(first.kind, TapKind::Open { live: true, .. }));

    // Other IP, other service: unseen.
    let (mut other_ip, _c1) = tcp_pair_from(&listener_a, &a, six).await;
    let (mut other_sid, _c2) = tcp_pair_from(&listener_b, &b, five).await;
    other_ip.write_all(b"not me").await.unwrap();
    other_sid.write_all(b"nor me").await.unwrap();
    drop((other_ip, other_sid));
    live.write_all(b"me").await.unwrap();
    let write = within("the live connection's write", tap.next())
        .await
        .unwrap();
    assert_eq!((write.name(), write.conn), ("write", live.record().id()));
    assert_eq!(write.bytes().unwrap().head, b"me");
    assert!(tap.try_next().is_none());

    // A tap on one connection id of one service.
    let (mut one, _c3) = tcp_pair_from(&listener_a, &a, six).await;
    let mut by_id = registry.tap(TapFilter::new().with_sid("a").with_conn(one.record().id()));
    within("its open", by_id.next()).await.unwrap();
    live.write_all(b"x").await.unwrap();
    one.write_all(b"y").await.unwrap();
    let ev = within("its write", by_id.next()).await.unwrap();
    assert_eq!(
        (ev.conn, ev.bytes().unwrap().head.as_slice()),
        (one.record().id(), &b"y"[..])
    );
    assert!(by_id.try_next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_that_is_never_read_loses_events_and_never_slows_the_connection() {
    const TOTAL: usize = 16 << 20;
    const CHUNK: usize = 16 << 10;
    let registry = Registry::new();
    let service = registry.create("busy", quiet_config()).unwrap();
    // Never read: four events fit; no rate limit, so that losses are the
    // queue's.
    let limits = TapLimits::default()
        .with_queue(4)
        .with_events_per_sec(u32::MAX);
    let tap = registry.tap_with_limits(TapFilter::new(), limits);
    let (mut server, mut client) = tcp_pair(&service).await;

    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0; CHUNK];
        let mut got = 0;
        while got < TOTAL {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got += n;
        }
        got
    });
    let chunk = vec![0x5a; CHUNK];
    for _ in 0..TOTAL / CHUNK {
        server.write_all(&chunk).await.unwrap();
    }
    assert_eq!(within("the transfer", reader).await.unwrap(), TOTAL);
    let took = started.elapsed();
    assert_eq!(server.record().bytes_written(), TOTAL as u64);
    assert!(took < Duration::from_secs(10), "16 MiB took {took:?}");
    // At least a write per chunk, four of them queued: the rest lost.
    assert!(
        tap.lost() >= (TOTAL / CHUNK - 4) as u64,
        "lost {}",
        tap.lost()
    );
    let mut tap = tap;
    let queued: Vec<_> = std::iter::from_fn(|| tap.try_next()).collect();
    assert_eq!(queued.len(), 4);
    assert_eq!(queued[0].name(), "open");
    assert!(queued[1..].iter().all(|e| e.name() == "write"));
}
