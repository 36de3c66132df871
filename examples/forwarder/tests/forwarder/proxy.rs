//! The PROXY protocol end to end, against real peers over loopback: HAProxy
//! in front of the forwarder (`send-proxy`, `send-proxy-v2`), nginx's
//! stream module behind it (`listen ... proxy_protocol`, logging
//! `$proxy_protocol_addr`), clients on 127.0.0.7. The forwarder's
//! blacklist and stats see the client, not HAProxy's 127.0.0.1, and nginx
//! logs the client, through one hop or two.

use crate::support;

use std::net::SocketAddr;

use ppp::v2;
use support::peers::{haproxy, nginx, nginx_log};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const CLIENT: [u8; 4] = [127, 0, 0, 7];

/// One service `svc` on 127.0.0.1 to `backend`, with `extra` keys.
fn start(backend: SocketAddr, extra: &str) -> (Forwarder, SocketAddr) {
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| {
        Setup::config(service_yaml("svc", port, backend.port(), extra))
    });
    (fwd, local(port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_the_blacklist_and_stats_see_the_client() {
    for (send, version) in [("send-proxy", "v1"), ("send-proxy-v2", "v2")] {
        let backend = banner_backend().await;
        let extra = format!("  proxy_protocol: {version}\n  proxy_trusted: [127.0.0.1/32]\n");
        let (fwd, addr) = start(backend, &extra);
        let haproxy = haproxy(addr, send);

        let mut live = open(CLIENT, haproxy.addr).await.expect("admitted");
        echo(&mut live, b"ping").await;
        let stats = fwd
            .wait_stats("svc", "one live connection", |s| s["connections"] == 1)
            .await;
        assert_eq!(stats["ips"][0]["ip"], "127.0.0.7", "{send}: {stats}");
        assert_eq!(stats["ips"].as_array().unwrap().len(), 1, "{stats}");
        let (_, body) = fwd.http("GET", "/stats/svc/connections").await;
        let conns: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            conns["connections"][0]["peer"],
            live.local_addr().unwrap().to_string(),
            "{send}: the client's own address and port"
        );
        // The header is not counted, the payload is: "ping", 4 bytes.
        assert_eq!(conns["connections"][0]["bytes_read"], 4, "{send}");

        let (status, body) = fwd.http("POST", "/services/svc/blacklist/127.0.0.7").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            open(CLIENT, haproxy.addr).await.is_none(),
            "{send}: 127.0.0.7 is blacklisted"
        );
        let stats = fwd
            .wait_stats("svc", "the refusal counted", |s| {
                s["rejected"]["blacklisted"] == 1
            })
            .await;
        assert_eq!(stats["accepted"], 1, "{send}: {stats}");
        echo(&mut live, b"still here").await;
    }
}

/// Connects from [`CLIENT`] to `to` and reads nginx's answer to its end.
async fn hello_from_nginx(to: SocketAddr) -> SocketAddr {
    let mut client = connect_from(CLIENT, to).await;
    let me = client.local_addr().unwrap();
    assert_eq!(read_until_closed(&mut client).await, b"hello from nginx\n");
    me
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_behind_the_forwarder_logs_the_client_v1_and_v2() {
    let nginx = nginx();
    let mut expected = Vec::new();
    for version in ["v1", "v2"] {
        let (_fwd, addr) = start(nginx.addr, &format!("  send_proxy: {version}\n"));
        let me = hello_from_nginx(addr).await;
        // $proxy_protocol_addr:$proxy_protocol_port, then the socket's peer.
        expected.push(format!("{}:{} 127.0.0.1", me.ip(), me.port()));
        assert_eq!(
            nginx_log(&nginx, expected.len()).await,
            expected,
            "{version}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_then_forwarder_then_nginx_carry_the_client_through() {
    let nginx = nginx();
    let extra = "  proxy_protocol: v2\n  proxy_trusted: [127.0.0.1/32]\n  send_proxy: v1\n";
    let (fwd, addr) = start(nginx.addr, extra);
    let haproxy = haproxy(addr, "send-proxy-v2");
    let me = hello_from_nginx(haproxy.addr).await;
    let log = nginx_log(&nginx, 1).await;
    assert_eq!(log, [format!("127.0.0.7:{} 127.0.0.1", me.port())]);
    let stats = fwd.stats("svc").await;
    assert_eq!(stats["accepted"], 1, "{stats}");
}

/// What a [`ppp_backend`] found in the header it received.
type Received = (SocketAddr, Vec<(u8, Vec<u8>)>);

/// A backend that reads the v2 header first on each connection, parses it
/// with the `ppp` crate, reports the client and the TLVs it names, then
/// echoes.
async fn ppp_backend() -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = backend(move |mut stream| {
        let tx = tx.clone();
        async move {
            let mut header = vec![0u8; 16];
            stream.read_exact(&mut header).await.expect("a header");
            let len = u16::from_be_bytes([header[14], header[15]]);
            header.resize(16 + usize::from(len), 0);
            stream
                .read_exact(&mut header[16..])
                .await
                .expect("its rest");
            let parsed = v2::Header::try_from(&header[..]).expect("a v2 header");
            assert_eq!(parsed.command, v2::Command::Proxy);
            let client = match parsed.addresses {
                v2::Addresses::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
                v2::Addresses::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
                other => panic!("addresses {other:?}"),
            };
            let tlvs = parsed
                .tlvs()
                .map(|tlv| tlv.expect("a well-formed TLV"))
                .map(|tlv| (tlv.kind, tlv.value.to_vec()))
                .collect();
            tx.send((client, tlvs)).unwrap();
            let (mut from, mut to) = stream.split();
            let _ = tokio::io::copy(&mut from, &mut to).await;
        }
    })
    .await;
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_proxy_v2_carries_the_tlvs_of_the_header_received() {
    let (backend, mut received) = ppp_backend().await;
    let extra = "  proxy_protocol: v2\n  proxy_trusted: [127.0.0.1/32]\n  send_proxy: v2\n";
    let (fwd, addr) = start(backend, extra);
    // As an AWS NLB would: the VPC endpoint id (0xEA, subtype 1), and an
    // authority (0x02).
    let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let vpce = b"\x01vpce-0123abcd";
    let header = v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (client, "10.0.0.1:443".parse::<SocketAddr>().unwrap()),
    )
    .write_tlv(0xEA, vpce)
    .and_then(|b| b.write_tlv(v2::Type::Authority, b"example.com"))
    .and_then(|b| b.build())
    .unwrap();

    let mut lb = connect_from([127, 0, 0, 1], addr).await;
    lb.write_all(&header).await.unwrap();
    echo(&mut lb, b"ping").await;
    let (named, tlvs) = tokio::time::timeout(WAIT, received.recv())
        .await
        .expect("the backend got a header")
        .unwrap();
    assert_eq!(named, client);
    assert_eq!(
        tlvs,
        [(0xEA, vpce.to_vec()), (0x02, b"example.com".to_vec())]
    );

    // The admin API shows the client and the balancer it came through.
    let (_, body) = fwd.http("GET", "/stats/svc/connections").await;
    let conns: serde_json::Value = serde_json::from_str(&body).unwrap();
    let conn = &conns["connections"][0];
    assert_eq!(conn["peer"], "192.0.2.7:40000", "{conns}");
    assert_eq!(conn["socket_peer"], lb.local_addr().unwrap().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_sources_garbage_and_silence_are_refused_by_reason() {
    let backend = banner_backend().await;
    let extra = "  proxy_protocol: v1\n  proxy_trusted: [127.0.0.1/32]\n  proxy_timeout: 0.3\n";
    let (fwd, addr) = start(backend, extra);

    // A valid header, from a source that may not send one.
    let mut untrusted = connect_from(CLIENT, addr).await;
    untrusted
        .write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 80\r\n")
        .await
        .unwrap();
    assert!(read_until_closed(&mut untrusted).await.is_empty());
    // From the trusted source: garbage, a v2 header where v1 is expected,
    // half a header then the end, silence.
    let v2 =
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x7f\x00\x00\x07\x7f\x00\x00\x01\x03\xe8\x00\x50";
    for (bytes, end) in [
        (&b"SSH-2.0-OpenSSH_9.2\r\n"[..], false),
        (&v2[..], false),
        (&b"PROXY TCP4 192.0.2.1"[..], true),
        (&b""[..], false),
    ] {
        let mut lb = connect_from([127, 0, 0, 1], addr).await;
        lb.write_all(bytes).await.unwrap();
        if end {
            lb.shutdown().await.unwrap();
        }
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(WAIT, lb.read(&mut buf))
            .await
            .expect("closed");
        assert!(matches!(n, Ok(0) | Err(_)), "{bytes:?}: {n:?}");
    }
    let stats = fwd
        .wait_stats("svc", "five refusals", |s| {
            [
                "proxy_untrusted",
                "proxy_malformed",
                "proxy_truncated",
                "proxy_timeout",
            ]
            .iter()
            .map(|r| s["rejected"][r].as_u64().unwrap_or(0))
            .sum::<u64>()
                == 5
        })
        .await;
    let rejected = &stats["rejected"];
    assert_eq!(rejected["proxy_untrusted"], 1, "{stats}");
    assert_eq!(rejected["proxy_malformed"], 2, "{stats}");
    assert_eq!(rejected["proxy_truncated"], 1, "{stats}");
    assert_eq!(rejected["proxy_timeout"], 1, "{stats}");
    assert_eq!(stats["accepted"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_proxy_protocol_on() {
    let backend = banner_backend().await;
    let (fwd, addr) = start(backend, "");
    let mut plain = open(CLIENT, addr).await.expect("no header needed yet");

    let on = "  proxy_protocol: v1\n  proxy_trusted: [127.0.0.1/32]\n";
    fwd.write_config(&service_yaml("svc", addr.port(), backend.port(), on));
    fwd.signal(libc::SIGHUP);
    fwd.wait_stderr("config reloaded").await;
    // The live connection goes on; new ones need a header from 127.0.0.1.
    echo(&mut plain, b"still here").await;
    assert!(
        open(CLIENT, addr).await.is_none(),
        "127.0.0.7 is not trusted"
    );
    let mut lb = connect_from([127, 0, 0, 1], addr).await;
    lb.write_all(b"PROXY TCP4 192.0.2.8 127.0.0.1 4242 80\r\n")
        .await
        .unwrap();
    let mut hello = [0u8; 6];
    tokio::time::timeout(WAIT, lb.read_exact(&mut hello))
        .await
        .expect("greeted")
        .unwrap();
    let stats = fwd
        .wait_stats("svc", "two live connections", |s| s["connections"] == 2)
        .await;
    let ips: Vec<&str> = stats["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["127.0.0.7", "192.0.2.8"], "{stats}");
    assert_eq!(stats["rejected"]["proxy_untrusted"], 1, "{stats}");
}
