//! The PROXY-protocol layer over real loopback TCP: the "load balancer" is
//! a client from 127.0.0.1 that writes the header itself, the clients it
//! names are documentation addresses. Every guard sees the named client;
//! the payload after the header is intact and counted from its first byte;
//! garbage, half headers, silence, oversized headers and untrusted sources
//! are refused and counted by reason.

use crate::accept_common::{assert_closed, counts, lo, refused, serve, WELCOME};
use crate::support::{connect_from, eventually, quiet_config, within};

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monconn::integrations::ConnInfo;
use monconn::layers::proxy::{Command, ProxyConfig, ProxyHeader};
use monconn::{Listener, MonitoredIo, Registry, ServiceConfig, ServiceSnapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The builder's stack with the PROXY layer first.
type Proxied = monconn::layers::ProxyProtocol<monconn::DefaultStack>;

/// Trusts 127.0.0.1 only.
fn trust_lo1() -> ProxyConfig {
    ProxyConfig::new().trust(["127.0.0.1/32".parse().unwrap()])
}

async fn listener(config: ServiceConfig, proxy: ProxyConfig) -> Listener<Proxied> {
    let service = Registry::new().create("proxied", config).unwrap();
    Listener::builder(service)
        .proxy_protocol(proxy)
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn v2(source: &str, destination: &str, tlvs: &[u8]) -> Vec<u8> {
    let mut header = ProxyHeader::proxied(addr(source), addr(destination)).to_v2();
    // Append the TLVs and fix the length.
    header.extend_from_slice(tlvs);
    let len = (header.len() - 16) as u16;
    header[14..16].copy_from_slice(&len.to_be_bytes());
    header
}

/// Accepts one connection and reads exactly `n` payload bytes from it.
async fn accept_and_read<S>(
    listener: &Listener<S>,
    n: usize,
) -> (MonitoredIo<TcpStream>, SocketAddr, Vec<u8>)
where
    S: monconn::AcceptStack<Io = TcpStream>,
{
    let (mut conn, peer) = within("accept", listener.accept()).await.unwrap();
    let mut buf = vec![0; n];
    within("payload", conn.read_exact(&mut buf)).await.unwrap();
    (conn, peer, buf)
}

#[tokio::test]
async fn v1_header_names_the_client_that_every_guard_sees() {
    let config = quiet_config()
        .blacklist(["192.0.2.66/32".parse().unwrap()])
        .per_ip_limit(1);
    let listener = listener(config, trust_lo1()).await;
    let service = listener.service().clone();
    let to = listener.local_addr();

    let mut lb = connect_from(lo(1), to).await;
    lb.write_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\nhello")
        .await
        .unwrap();
    let (conn, peer, payload) = accept_and_read(&listener, 5).await;
    assert_eq!(peer, addr("192.0.2.7:51000"));
    assert_eq!(payload, b"hello");
    let info = ConnInfo::of(&conn);
    assert_eq!(info.peer(), addr("192.0.2.7:51000"));
    assert_eq!(info.socket_peer(), lb.local_addr().unwrap());
    let header = info.proxy_header().unwrap();
    assert_eq!((header.version(), header.command()), (1, Command::Proxy));
    assert_eq!(header.destination(), Some(addr("10.0.0.1:443")));
    // The payload's bytes only, not the header's.
    assert_eq!(info.bytes_read(), 5);
    let stats = service.snapshot_with_conns();
    assert_eq!(stats.bytes_read, 5);
    assert_eq!(
        stats.conns.as_ref().unwrap()[0].peer,
        addr("192.0.2.7:51000")
    );
    let ips: Vec<String> = stats
        .ips
        .iter()
        .map(|i| format!("{}/{}", i.ip, i.prefix))
        .collect();
    assert_eq!(ips, ["192.0.2.7/32"]);

    let server = tokio::spawn(async move {
        let (_conn, peer) = listener.accept().await.unwrap();
        panic!("served {peer}");
    });
    // The same client again, through the same balancer: per_ip_limit 1.
    let mut again = connect_from(lo(1), to).await;
    again
        .write_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 51001 443\r\n")
        .await
        .unwrap();
    assert_closed("second connection of 192.0.2.7", &mut again).await;
    // A blacklisted client, through the trusted balancer.
    let mut banned = connect_from(lo(1), to).await;
    banned
        .write_all(b"PROXY TCP4 192.0.2.66 10.0.0.1 51002 443\r\n")
        .await
        .unwrap();
    assert_closed("blacklisted 192.0.2.66", &mut banned).await;
    eventually("two refusals counted", || {
        refused(&service).values().sum::<u64>() == 2
    })
    .await;
    assert_eq!(
        refused(&service),
        counts(&[("blacklisted", 1), ("per_ip_limit", 1)])
    );
    drop(conn);
    server.abort();
}

#[tokio::test]
async fn v2_ipv6_header_keeps_its_tlvs_and_the_payload() {
    let listener = listener(quiet_config(), trust_lo1()).await;
    let service = listener.service().clone();
    let mut lb = connect_from(lo(1), listener.local_addr()).await;
    // AWS's VPC endpoint id (0xEA, subtype 1) and an authority (0x02).
    let tlvs = b"\xea\x00\x0e\x01vpce-0123abcd\x02\x00\x0bexample.com";
    let mut bytes = v2("[2001:db8::7]:40000", "[2001:db8::1]:443", tlvs);
    let header_len = bytes.len();
    bytes.extend_from_slice(b"payload!");
    lb.write_all(&bytes).await.unwrap();

    let (mut conn, peer, payload) = accept_and_read(&listener, 8).await;
    assert_eq!(peer, addr("[2001:db8::7]:40000"));
    assert_eq!(payload, b"payload!");
    let info = ConnInfo::of(&conn);
    let header = info.proxy_header().unwrap();
    assert_eq!(header.version(), 2);
    assert_eq!(header.aws_vpce_id(), Some("vpce-0123abcd"));
    assert_eq!(header.tlv(0x02), Some(&b"example.com"[..]));
    assert_eq!(header.tlv_bytes(), tlvs);
    assert_eq!(header_len, 16 + 36 + tlvs.len());
    // Writes count too, and the client gets them.
    conn.write_all(b"ok").await.unwrap();
    let mut back = [0; 2];
    lb.read_exact(&mut back).await.unwrap();
    assert_eq!((info.bytes_read(), info.bytes_written()), (8, 2));
    // Keyed by its /64, as any IPv6 client.
    let keys: Vec<String> = service
        .snapshot()
        .ips
        .iter()
        .map(|i| format!("{}/{}", i.ip, i.prefix))
        .collect();
    assert_eq!(keys, ["2001:db8::/64"]);
}

#[tokio::test]
async fn v2_local_and_v1_unknown_are_served_as_the_socket_peer() {
    let listener = listener(quiet_config(), trust_lo1()).await;
    let to = listener.local_addr();
    let local_v2 = ProxyHeader::proxied(addr("0.0.0.0:0"), addr("0.0.0.0:0"));
    let mut local_v2 = local_v2.to_v2();
    local_v2[12] = 0x20; // LOCAL
    for header in [local_v2, b"PROXY UNKNOWN\r\n".to_vec()] {
        let mut lb = connect_from(lo(1), to).await;
        lb.write_all(&header).await.unwrap();
        lb.write_all(b"ping").await.unwrap();
        let (conn, peer, payload) = accept_and_read(&listener, 4).await;
        assert_eq!(peer, lb.local_addr().unwrap(), "{header:?}");
        assert_eq!(payload, b"ping");
        let info = ConnInfo::of(&conn);
        assert_eq!(info.proxy_header().unwrap().command(), Command::Local);
        assert_eq!(info.proxy_header().unwrap().source(), None);
        assert_eq!(info.bytes_read(), 4);
    }
}

#[tokio::test]
async fn snapshots_show_the_socket_peer_of_proxied_connections_only() {
    let listener = listener(quiet_config(), trust_lo1().serve_untrusted()).await;
    let service = listener.service().clone();
    let to = listener.local_addr();
    let mut lb = connect_from(lo(1), to).await;
    lb.write_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\nhi")
        .await
        .unwrap();
    let (proxied, _, _) = accept_and_read(&listener, 2).await;
    // From an untrusted source, served as it is: no header, no socket_peer.
    let mut direct = connect_from(lo(7), to).await;
    direct.write_all(b"hi").await.unwrap();
    let (plain, _, _) = accept_and_read(&listener, 2).await;

    let stats = service.snapshot_with_conns();
    let conns = stats.conns.as_ref().unwrap();
    let lb_addr = lb.local_addr().unwrap();
    assert_eq!(conns[0].peer, addr("192.0.2.7:51000"));
    assert_eq!(conns[0].socket_peer, Some(lb_addr));
    assert_eq!(conns[1].peer, direct.local_addr().unwrap());
    assert_eq!(conns[1].socket_peer, None);
    // In JSON: both addresses of the proxied one; the key left out of the other.
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["conns"][0]["peer"], "192.0.2.7:51000");
    assert_eq!(json["conns"][0]["socket_peer"], lb_addr.to_string());
    assert!(json["conns"][1].get("socket_peer").is_none(), "{json}");
    let back: ServiceSnapshot = serde_json::from_value(json).unwrap();
    assert_eq!(back, stats);
    drop((proxied, plain));
}

#[tokio::test]
async fn a_header_in_one_byte_writes_loses_nothing_after_it() {
    let listener = listener(quiet_config(), trust_lo1()).await;
    let to = listener.local_addr();
    for header in [
        b"PROXY TCP4 192.0.2.9 10.0.0.1 52000 80\r\n".to_vec(),
        v2("192.0.2.9:52000", "10.0.0.1:80", b"\x04\x00\x01\x00"),
    ] {
        let mut lb = connect_from(lo(1), to).await;
        lb.set_nodelay(true).unwrap();
        let payload: Vec<u8> = (0..=255u8).collect();
        let sender = tokio::spawn(async move {
            for byte in header.iter().chain(&payload[..3]) {
                lb.write_all(&[*byte]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            lb.write_all(&payload[3..]).await.unwrap();
            lb
        });
        let (conn, peer, got) = accept_and_read(&listener, 256).await;
        assert_eq!(peer, addr("192.0.2.9:52000"));
        assert_eq!(got, (0..=255u8).collect::<Vec<_>>());
        assert_eq!(ConnInfo::of(&conn).bytes_read(), 256);
        drop(sender.await.unwrap());
    }
}

/// Connects from 127.0.0.1, sends `bytes`, closes its write side when
/// `close`, and expects to be closed unserved.
async fn refused_after(to: SocketAddr, bytes: &[u8], close: bool) {
    let mut lb = connect_from(lo(1), to).await;
    lb.write_all(bytes).await.unwrap();
    if close {
        lb.shutdown().await.unwrap();
    }
    assert_closed(
        &format!("after {:?}", bytes.escape_ascii().to_string()),
        &mut lb,
    )
    .await;
}

#[tokio::test]
async fn garbage_half_headers_silence_and_oversized_headers_are_refused_by_reason() {
    let proxy = trust_lo1()
        .header_timeout(Duration::from_millis(300))
        .max_header_len(64);
    let listener = listener(quiet_config(), proxy).await;
    let service = listener.service().clone();
    let to = listener.local_addr();
    let server = tokio::spawn(async move {
        let (conn, peer) = listener.accept().await.unwrap();
        panic!("served {peer}: {conn:?}");
    });

    refused_after(to, b"GET / HTTP/1.1\r\n\r\n", false).await; // malformed
    refused_after(to, b"PROXY TCP4 192.0.2.1 nonsense 1 2\r\n", false).await; // malformed
    refused_after(to, b"PROXY TCP4 192.0.2.1 10.0.0.1 5", true).await; // truncated
    refused_after(to, b"", true).await; // truncated
    refused_after(to, &[b'P', b'R', b'O', b'X', b'Y', b' '].repeat(20), false).await; // oversized
    let mut big = v2("192.0.2.1:1", "10.0.0.1:2", &[0; 100]);
    big.truncate(40);
    refused_after(to, &big, false).await; // oversized: 16 + 112 > 64
                                          // Half a header, and silence: refused on expiry, counted then.
    let start = Instant::now();
    refused_after(to, b"\r\n\r\n\0\r\nQUIT\n\x21", false).await;
    refused_after(to, b"", false).await;
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(600), "{took:?}");

    eventually("eight refusals", || {
        refused(&service).values().sum::<u64>() == 8
    })
    .await;
    assert_eq!(
        refused(&service),
        counts(&[
            ("proxy_malformed", 2),
            ("proxy_truncated", 2),
            ("proxy_oversized", 2),
            ("proxy_timeout", 2),
        ])
    );
    assert_eq!(service.snapshot().accepted, 0);
    server.abort();
}

#[tokio::test]
async fn a_silent_client_is_refused_within_a_tick_of_its_timeout_while_others_are_served() {
    // The layer's clock ticks every quarter of the timeout.
    let (timeout, tick) = (Duration::from_secs(1), Duration::from_millis(250));
    let listener = listener(quiet_config(), trust_lo1().header_timeout(timeout)).await;
    let service = listener.service().clone();
    let mut server = serve(listener);
    let start = Instant::now();
    let mut silent = connect_from(lo(1), server.addr).await;
    let mut half = connect_from(lo(1), server.addr).await;
    half.write_all(b"\r\n\r\n\0\r\nQUIT\n\x21").await.unwrap();

    // Meanwhile, a client through the same balancer is served at once.
    let mut good = connect_from(lo(1), server.addr).await;
    good.write_all(b"PROXY TCP4 192.0.2.8 10.0.0.1 52000 443\r\nhi")
        .await
        .unwrap();
    let mut welcome = [0u8; 1];
    within("welcome", good.read_exact(&mut welcome))
        .await
        .unwrap();
    assert_eq!(welcome[0], WELCOME);
    let admitted = within("admitted", server.admitted.recv()).await;
    assert_eq!(admitted, Some(addr("192.0.2.8:52000")));
    if start.elapsed() < timeout {
        assert!(refused(&service).is_empty());
    }

    // The silent and the half-sent ones: refused after the timeout, at
    // most a tick late (plus two seconds of slack for a busy machine; the
    // layer's unit tests check the tick exactly, on tokio's paused clock).
    assert_closed("silent client", &mut silent).await;
    assert_closed("half a header", &mut half).await;
    let took = start.elapsed();
    assert!(took >= timeout, "{took:?}");
    assert!(took < timeout + tick + Duration::from_secs(2), "{took:?}");
    eventually("two timeouts counted", || {
        refused(&service).values().sum::<u64>() == 2
    })
    .await;
    assert_eq!(refused(&service), counts(&[("proxy_timeout", 2)]));
    // The good one is still served.
    let stats = service.snapshot();
    assert_eq!((stats.accepted, stats.connections), (1, 1));
    good.write_all(b"!").await.unwrap();
    drop(good);
    eventually("closed", || service.connections() == 0).await;
}

#[tokio::test]
async fn untrusted_sources_are_refused_or_served_as_they_are() {
    let header = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\n";
    // Refused, counted as untrusted, whatever they send.
    let strict = listener(quiet_config(), trust_lo1()).await;
    let service = strict.service().clone();
    let mut client = connect_from(lo(7), strict.local_addr()).await;
    client.write_all(header).await.unwrap();
    let server = tokio::spawn(async move { strict.accept().await.map(|(_, p)| p) });
    assert_closed("untrusted 127.0.0.7", &mut client).await;
    eventually("refusal counted", || !refused(&service).is_empty()).await;
    assert_eq!(refused(&service), counts(&[("proxy_untrusted", 1)]));
    server.abort();

    // Served as from its socket peer, its header its own payload.
    let lenient = listener(quiet_config(), trust_lo1().serve_untrusted()).await;
    let mut client = connect_from(lo(7), lenient.local_addr()).await;
    client.write_all(header).await.unwrap();
    let (conn, peer, payload) = accept_and_read(&lenient, header.len()).await;
    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(payload, header);
    let info = ConnInfo::of(&conn);
    assert!(info.proxy_header().is_none());
    assert_eq!(info.socket_peer(), peer);
}
