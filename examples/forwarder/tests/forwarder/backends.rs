//! End to end: the real forwarder process and its backends: a backend
//! that refuses or never answers, IPv6 and host name backends, stats lines
//! and hex dumps in the log.

use crate::support;

use std::net::SocketAddr;

use support::*;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_closes_the_client_and_is_counted() {
    let dead = free_port();
    let (fwd, [port]) =
        Forwarder::start_with_ports(|[port]| Setup::mapping(format!(":{port}=127.0.0.1:{dead}")));
    let sid = format!(":{port}");
    let mut client = TcpStream::connect(local(port)).await.unwrap();
    assert!(read_until_closed(&mut client).await.is_empty());
    let stats = fwd
        .wait_stats(&sid, "the backend error counted", |s| {
            s["backend_errors"] == 1
        })
        .await;
    assert_eq!(stats["accepted"], 1);
    fwd.wait_stderr("backend connect failed").await;
    assert!(fwd.stderr().contains(&format!("127.0.0.1:{dead}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_and_host_name_backends_forward() {
    let v4 = banner_backend().await;
    let v6 = match tokio::net::TcpListener::bind("[::1]:0").await {
        Ok(probe) => {
            drop(probe);
            Some(named_backend("[::1]:0", "hello").await)
        }
        Err(_) => None, // no IPv6 loopback here: only the host name part runs
    };
    let (fwd, [v4_port, v6_port]) = Forwarder::start_with_ports(|[v4_port, v6_port]| {
        let mut setup = Setup::mapping(format!("127.0.0.1:{v4_port}=localhost:{}", v4.port()));
        if let Some(v6) = v6 {
            setup
                .args
                .extend(["-p".into(), format!("[::1]:{v6_port}={v6}")]);
        }
        setup
    });
    let mut by_name = open([127, 0, 0, 1], local(v4_port))
        .await
        .expect("localhost resolves to the backend");
    echo(&mut by_name, b"named").await;
    if let Some(_v6) = v6 {
        let listen: SocketAddr = format!("[::1]:{v6_port}").parse().unwrap();
        let mut client = TcpStream::connect(listen).await.unwrap();
        assert_eq!(greeting(&mut client).await, "hello");
        echo(&mut client, b"six").await;
        let sid = format!("[::1]:{v6_port}");
        let stats = fwd.stats(&sid).await;
        // Counted under its /64, the default `ipv6_prefix`.
        assert_eq!(stats["ips"][0]["ip"], "::");
        assert_eq!(stats["ips"][0]["prefix"], 64);
        assert_eq!(stats["bytes_read"], 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_lines_and_hex_dumps_are_logged() {
    let backend = banner_backend().await;
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| Setup {
        args: vec!["--stats-interval".into(), "1".into()],
        ..Setup::config(service_yaml(
            "dump",
            port,
            backend.port(),
            "  print_bytes: true\n",
        ))
    });
    let mut client = open([127, 0, 0, 1], local(port)).await.unwrap();
    echo(&mut client, b"MONCONN").await;
    // "MONCONN" read from the client, as the dump shows it.
    fwd.wait_stderr("00000000: 4d4f 4e43 4f4e 4e").await;
    fwd.wait_stderr("bytes_read=7").await;
    assert!(fwd.stderr().contains("sid=dump"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_connect_timeout_closes_the_client_and_is_counted() {
    // A backend that never accepts, with its accept queue full: connecting
    // to it hangs (the SYNs are dropped) until the connect timeout.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let stuck = socket.local_addr().unwrap().as_socket().unwrap();
    let _filler = std::net::TcpStream::connect(stuck).unwrap();

    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| {
        Setup::config(service_yaml(
            "stuck",
            port,
            stuck.port(),
            "  connect_timeout: 0.3\n",
        ))
    });
    let started = std::time::Instant::now();
    let mut client = TcpStream::connect(local(port)).await.unwrap();
    assert!(read_until_closed(&mut client).await.is_empty());
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    // Counted, and the client's connection released (the forwarder counts
    // the error, then drops the client).
    fwd.wait_stats("stuck", "the timeout counted and the client gone", |s| {
        s["backend_errors"] == 1 && s["connections"] == 0
    })
    .await;
    fwd.wait_stderr("connect timed out after 300ms").await;
}
