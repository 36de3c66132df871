//! `GET /tap`: a tap as server-sent events over real sockets: what it shows
//! of a connection, its filters, its token rules, and a subscriber that
//! never reads.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use hyper::{Method, StatusCode};
use monconn::admin::Admin;
use monconn::tap::TapLimits;
use monconn::Registry;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http::{call, echo, get, round_trip, serve_admin};
use crate::live::Events;
use crate::support::{connect_from, eventually, quiet_config, within};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Events of the stream until a `close`, that one included.
async fn until_close(tap: &mut Events) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    loop {
        let (name, data) = tap.next().await;
        let close = name == "close";
        seen.push((name, data));
        if close {
            return seen;
        }
    }
}

#[tokio::test]
async fn a_tap_streams_open_the_payloads_hex_and_close_with_totals() {
    let registry = Registry::new();
    let svc = registry.create("echo", quiet_config()).unwrap();
    let echo_addr = echo(&svc).await;
    let addr = serve_admin(Admin::new(registry.clone())).await;
    let mut tap = Events::open_path(addr, "/tap?sid=echo&ip=127.0.0.5", &[]).await;
    let (name, hello) = tap.next().await;
    assert_eq!(name, "tap");
    assert_eq!(
        hello,
        json!({
            "filter": {"sid": "echo", "ip": "127.0.0.5/32", "conn": null},
            "bytes_per_event": 64,
            "events_per_sec": 200,
        })
    );

    let mut client = connect_from(ip("127.0.0.5"), echo_addr).await;
    let peer = client.local_addr().unwrap().to_string();
    round_trip(&mut client, b"tap me: hello").await;
    drop(client);

    let events = until_close(&mut tap).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["open", "read", "write", "close"], "{events:?}");
    let id = events[0].1["conn"].clone();
    for (_, data) in &events {
        assert_eq!(
            (&data["sid"], &data["peer"], &data["conn"]),
            (&json!("echo"), &json!(peer), &id)
        );
    }
    assert_eq!(events[0].1["live"], false);
    assert_eq!(events[0].1["local"], echo_addr.to_string());
    let hex = "00000000: 7461 7020 6d65 3a20 6865 6c6c 6f         tap me: hello\n";
    for (_, data) in &events[1..3] {
        assert_eq!(
            (&data["offset"], &data["len"], &data["shown"], &data["hex"]),
            (&json!(0), &json!(13), &json!(13), &json!(hex))
        );
    }
    let close = &events[3].1;
    assert_eq!(
        (
            &close["cause"],
            &close["bytes_read"],
            &close["bytes_written"]
        ),
        (&json!("normal"), &json!(13), &json!(13))
    );
}

#[tokio::test]
async fn a_tap_shows_only_what_its_filter_matches_and_refuses_bad_filters() {
    let registry = Registry::new();
    let a = registry.create("a", quiet_config()).unwrap();
    let b = registry.create("b", quiet_config()).unwrap();
    let (a_addr, b_addr) = (echo(&a).await, echo(&b).await);
    let addr = serve_admin(Admin::new(registry.clone())).await;

    let bad = get(addr, "/tap?ip=10.0.0.300").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error(), "bad IP or CIDR \"10.0.0.300\"");
    let bad = get(addr, "/tap?conn=abc").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error(), "bad conn \"abc\": a connection id is a number");

    // By service and network: another IP on a, the same IP on b, unseen.
    let mut tap = Events::open_path(addr, "/tap?sid=a&ip=127.0.0.4/30", &[]).await;
    assert_eq!(tap.next().await.0, "tap");
    for (src, to) in [("127.0.0.9", a_addr), ("127.0.0.5", b_addr)] {
        let mut other = connect_from(ip(src), to).await;
        round_trip(&mut other, b"not for this tap").await;
    }
    eventually("both others closed", || {
        a.connections() == 0 && b.connections() == 0
    })
    .await;
    let mut me = connect_from(ip("127.0.0.6"), a_addr).await;
    let peer = me.local_addr().unwrap().to_string();
    round_trip(&mut me, b"for this tap").await;
    drop(me);
    let events = until_close(&mut tap).await;
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(
        events
            .iter()
            .all(|(_, d)| d["sid"] == "a" && d["peer"] == peer.as_str()),
        "{events:?}"
    );

    // By connection id: a connection open before the tap, and only it.
    let mut one = connect_from(ip("127.0.0.7"), a_addr).await;
    let mut two = connect_from(ip("127.0.0.7"), a_addr).await;
    round_trip(&mut one, b"1").await;
    round_trip(&mut two, b"2").await;
    let two_peer = two.local_addr().unwrap();
    let id = a
        .snapshot_with_conns()
        .conns
        .unwrap()
        .iter()
        .find(|c| c.peer == two_peer)
        .unwrap()
        .id;
    let mut tap = Events::open_path(addr, &format!("/tap?conn={id}"), &[]).await;
    assert_eq!(tap.next().await.0, "tap");
    round_trip(&mut one, b"one").await;
    round_trip(&mut two, b"two").await;
    drop((one, two));
    let events = until_close(&mut tap).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["open", "read", "write", "close"], "{events:?}");
    assert_eq!(events[0].1["live"], true);
    assert!(events.iter().all(|(_, d)| d["conn"] == id), "{events:?}");
    assert_eq!(events[1].1["offset"], 1);
}

#[tokio::test]
async fn the_tap_takes_the_token_from_a_header_or_the_session_never_from_the_url() {
    let registry = Registry::new();
    registry.create("echo", quiet_config()).unwrap();
    let addr = serve_admin(Admin::new(registry.clone()).token("t0ken")).await;
    for path in [
        "/tap",
        "/tap?token=t0ken",
        "/tap?access_token=t0ken&sid=echo",
    ] {
        assert_eq!(
            get(addr, path).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    let mut tap = Events::open_path(addr, "/tap", &[("authorization", "Bearer t0ken")]).await;
    assert_eq!(tap.next().await.0, "tap");

    let session = call(
        addr,
        Method::POST,
        "/session",
        &[
            ("authorization", "Bearer t0ken"),
            ("x-monconn-request", "1"),
        ],
    )
    .await;
    assert_eq!(session.status, StatusCode::NO_CONTENT);
    let cookie = session.headers["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap();
    let mut tap = Events::open_path(addr, "/tap?sid=echo", &[("cookie", cookie)]).await;
    assert_eq!(tap.next().await.0, "tap");
}

/// A `GET /tap` whose client never reads: the answer is left in the
/// socket, whose buffers are small at both ends (see [`small_sends`]).
async fn stalled_tap(addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(b"GET /tap HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    stream
}

/// A loopback listener whose accepted sockets have a small send buffer
/// (they inherit it), so that a stalled client stalls the server soon.
fn small_sends() -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(16).unwrap()
}

/// Echoes `total` bytes through `to` (written and read back at once);
/// returns how long it took.
async fn echo_transfer(to: SocketAddr, total: usize) -> std::time::Duration {
    let started = Instant::now();
    let client = connect_from(ip("127.0.0.1"), to).await;
    let (mut rx, mut tx) = client.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![0x42; 64 << 10];
        for _ in 0..total / chunk.len() {
            tx.write_all(&chunk).await.unwrap();
        }
        tx
    });
    let mut buf = vec![0; 64 << 10];
    let mut got = 0;
    while got < total {
        let n = rx.read(&mut buf).await.unwrap();
        assert!(n > 0, "early EOF after {got}");
        assert!(buf[..n].iter().all(|&b| b == 0x42));
        got += n;
    }
    let _tx = writer.await.unwrap();
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_client_that_never_reads_loses_events_and_slows_no_connection() {
    const TOTAL: usize = 32 << 20;
    let registry = Registry::new();
    let svc = registry.create("echo", quiet_config()).unwrap();
    let echo_addr = echo(&svc).await;
    // No rate limit: the losses are the stalled queue's.
    let limits = TapLimits::default()
        .with_queue(16)
        .with_events_per_sec(u32::MAX);
    let listener = small_sends();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(monconn::admin::serve(
        listener,
        Admin::new(registry.clone()).tap_limits(limits),
    ));

    let untapped = within("32 MiB echoed", echo_transfer(echo_addr, TOTAL)).await;
    let mut stalled = stalled_tap(addr).await;
    // Time for the request to reach the router (a connection opened
    // before the tap starts is tapped all the same, from then on).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let tapped = within(
        "32 MiB echoed under a stalled tap",
        echo_transfer(echo_addr, TOTAL),
    )
    .await;
    eventually("closed", || svc.connections() == 0).await;
    assert_eq!(
        svc.bytes(),
        monconn::ByteCounts {
            read: 2 * TOTAL as u64,
            written: 2 * TOTAL as u64
        }
    );
    println!(
        "32 MiB echoed in {untapped:?} with no tap, {tapped:?} under a tap that is never read"
    );

    // Now read until the stream is quiet: its last `lost` event has the
    // total (the stream checks every second).
    let mut text = String::new();
    let mut buf = vec![0; 64 << 10];
    let quiet = std::time::Duration::from_millis(2_500);
    while let Ok(n) = tokio::time::timeout(quiet, stalled.read(&mut buf)).await {
        let n = n.unwrap();
        assert!(n > 0, "the tap's stream ended");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let lost = text
        .split("event: lost\ndata: {\"lost\":")
        .skip(1)
        .map(|rest| rest[..rest.find('}').unwrap()].parse::<u64>().unwrap())
        .max()
        .expect("a lost event");
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        &text[..200.min(text.len())]
    );
    // A read and a write per 16 KiB echoed, at least: most of them lost.
    assert!(lost > (TOTAL / (16 << 10)) as u64, "lost {lost}");
}
