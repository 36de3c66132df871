//! End to end: SIGHUP reloads, SIGTERM and SIGINT drain and exit.

use crate::support;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_service_and_blacklists_without_breaking_live_connections() {
    let backend = banner_backend().await.port();
    let (fwd, [port]) =
        Forwarder::start_with_ports(|[port]| Setup::config(service_yaml("a", port, backend, "")));
    let a_addr = local(port);
    let mut live = open([127, 0, 0, 3], a_addr).await.expect("admitted");
    echo(&mut live, b"before").await;
    // A runtime rule, which reloads keep.
    let (status, body) = fwd.http("POST", "/services/a/blacklist/127.0.0.9").await;
    assert_eq!(status, 200, "{body}");

    let b_port = free_port();
    fwd.write_config(&format!(
        "{}{}",
        service_yaml("a", port, backend, "  ip_blacklist: [127.0.0.3]\n"),
        service_yaml("b", b_port, backend, "")
    ));
    fwd.signal(libc::SIGHUP);
    fwd.wait_stderr("config reloaded").await;

    // The new service forwards; the blacklist refuses new connections only.
    let mut on_b = open([127, 0, 0, 1], ([127, 0, 0, 1], b_port).into())
        .await
        .expect("service b forwards");
    echo(&mut on_b, b"b").await;
    assert!(open([127, 0, 0, 3], a_addr).await.is_none());
    assert!(open([127, 0, 0, 4], a_addr).await.is_some());
    assert!(open([127, 0, 0, 9], a_addr).await.is_none());
    echo(&mut live, b"after the reload").await;

    let a = fwd.stats("a").await;
    assert_eq!(a["rejected"]["blacklisted"], 2);
    assert_eq!(a["closed"]["kicked"], 0);
    assert_eq!(a["closed"]["shutdown"], 0);
    assert_eq!(fwd.stats("b").await["accepted"], 1);

    // Removing a service stops its listener.
    fwd.write_config(&service_yaml("a", port, backend, ""));
    fwd.signal(libc::SIGHUP);
    fwd.wait_stderr_count("config reloaded", 2).await;
    assert_eq!(fwd.http("GET", "/stats/b").await.0, 404);
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", b_port))
        .await
        .is_err());
    assert!(open([127, 0, 0, 3], a_addr).await.is_some());
    assert!(open([127, 0, 0, 9], a_addr).await.is_none());
    echo(&mut live, b"still").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_on_sighup_keeps_the_running_one() {
    let backend = banner_backend().await.port();
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| {
        Setup::config(service_yaml("a", port, backend, "  conn_limit: 5\n"))
    });
    let addr = local(port);
    let mut live = open([127, 0, 0, 1], addr).await.unwrap();

    fwd.write_config(&service_yaml(
        "a",
        port,
        backend,
        "  ip_blaklist: [127.0.0.1]\n",
    ));
    fwd.signal(libc::SIGHUP);
    fwd.wait_stderr("config reload failed").await;
    let log = fwd.stderr();
    assert!(log.contains("ip_blaklist"), "{log}");
    assert!(log.contains("line 5, column 3"), "{log}");
    assert!(log.contains("the running config stays"), "{log}");

    echo(&mut live, b"unaffected").await;
    assert!(open([127, 0, 0, 1], addr).await.is_some());
    assert_eq!(fwd.stats("a").await["accepted"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_transfer_in_flight_then_exits_zero() {
    const TOTAL: usize = 8 * 1024 * 1024;
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    let received = tokio::spawn(async move {
        let (mut stream, _) = backend.accept().await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        stream.write_all(b"done").await.unwrap();
        got.len()
    });
    let (mut fwd, [port]) = Forwarder::start_with_ports(|[port]| {
        Setup::config(service_yaml(
            "a",
            port,
            backend_port,
            "  wait_timeout: 60\n",
        ))
    });
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let chunk = vec![5u8; 64 * 1024];
    client.write_all(&chunk).await.unwrap();
    fwd.wait_stats("a", "the transfer started", |s| {
        s["bytes_read"].as_u64() > Some(0)
    })
    .await;

    fwd.signal(libc::SIGTERM);
    fwd.wait_stderr("listeners closed").await;
    // No new connections once it stops accepting.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
    // The transfer in flight goes on to its end.
    let mut sent = chunk.len();
    while sent < TOTAL {
        client.write_all(&chunk).await.unwrap();
        sent += chunk.len();
    }
    client.shutdown().await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, b"done");
    assert_eq!(received.await.unwrap(), TOTAL);

    let status = fwd.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", fwd.stderr());
    let out = fwd.stdout();
    let last: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("final stats")).unwrap();
    assert_eq!(last["sid"], "a");
    assert_eq!(last["bytes_read"], TOTAL as u64);
    assert_eq!(last["bytes_written"], 4);
    assert_eq!(last["drained"], 1);
    assert_eq!(last["cut"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_cuts_what_outlives_wait_timeout_and_prints_final_stats() {
    let backend = banner_backend().await.port();
    let (mut fwd, [port]) = Forwarder::start_with_ports(|[port]| Setup {
        args: vec![
            "-p".into(),
            format!("127.0.0.1:{}=127.0.0.1:{backend}", free_port()),
        ],
        ..Setup::config(service_yaml("a", port, backend, "  wait_timeout: 0.2\n"))
    });
    let mut idle = open([127, 0, 0, 1], local(port)).await.unwrap();
    fwd.signal(libc::SIGINT);
    assert!(read_until_closed(&mut idle).await.is_empty());
    let status = fwd.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", fwd.stderr());
    let lines: Vec<serde_json::Value> = fwd
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one line per service");
    let a = lines.iter().find(|l| l["sid"] == "a").unwrap();
    assert_eq!(a["cut"], 1);
    assert_eq!(a["drained"], 0);
    assert_eq!(a["bytes_written"], 6);
    assert_eq!(a["closed"]["shutdown"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_moves_a_service_and_repoints_its_backend_keeping_live_connections() {
    let old_backend = named_backend("127.0.0.1:0", "old").await.port();
    let new_backend = named_backend("127.0.0.1:0", "new").await.port();
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| {
        Setup::config(service_yaml("a", port, old_backend, ""))
    });
    let mut live = connect_from([127, 0, 0, 1], local(port)).await;
    assert_eq!(greeting(&mut live).await, "old");

    // Same address, new backend: new connections go to the new backend.
    fwd.write_config(&service_yaml("a", port, new_backend, ""));
    fwd.signal(libc::SIGHUP);
    fwd.wait_stderr("config reloaded").await;
    let mut second = connect_from([127, 0, 0, 1], local(port)).await;
    assert_eq!(greeting(&mut second).await, "new");

    // New address: the old one stops listening, the service and its
    // connections go on.
    let moved = free_port();
    fwd.write_config(&service_yaml("a", moved, new_backend, ""));
    fwd.signal(libc::SIGHUP);
    fwd.wait_stderr_count("config reloaded", 2).await;
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
    let mut third = connect_from([127, 0, 0, 1], local(moved)).await;
    assert_eq!(greeting(&mut third).await, "new");
    echo(&mut live, b"old pair").await;
    echo(&mut second, b"second pair").await;
    let stats = fwd.stats("a").await;
    assert_eq!(stats["connections"], 3);
    assert_eq!(stats["accepted"], 3);
}
