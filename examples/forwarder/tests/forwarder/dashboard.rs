//! The forwarder serves the library's dashboard (`monconn::admin`) beside
//! its own JSON API, behind the same token.

use crate::support;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_address_serves_the_dashboard_its_events_and_probes() {
    let backend = banner_backend().await;
    let fwd = start_with_token(backend, "t0ken");
    let auth = [("Authorization", "Bearer t0ken")];

    let (status, page) = http(fwd.admin, "GET", "/", &[]).await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>monconn dashboard</title>"), "{page}");
    assert_eq!(
        http(fwd.admin, "GET", "/healthz", &[]).await,
        (200, r#"{"alive":true}"#.to_owned())
    );
    assert_eq!(
        http(fwd.admin, "GET", "/readyz", &[]).await,
        (200, r#"{"ready":true}"#.to_owned())
    );

    assert_eq!(http(fwd.admin, "GET", "/connections", &[]).await.0, 401);
    let (status, table) = http(fwd.admin, "GET", "/connections", &auth).await;
    assert_eq!(status, 200, "{table}");
    let table: serde_json::Value = serde_json::from_str(&table).unwrap();
    assert_eq!(table["total"], 0);
    // A session needs the request header too.
    assert_eq!(http(fwd.admin, "POST", "/session", &auth).await.0, 403);
    let session = [
        ("Authorization", "Bearer t0ken"),
        ("X-Monconn-Request", "1"),
    ];
    assert_eq!(http(fwd.admin, "POST", "/session", &session).await.0, 204);

    // The forwarder's own routes stay its own.
    let (status, stats) = http(fwd.admin, "GET", "/stats", &auth).await;
    assert_eq!(status, 200);
    assert!(stats.contains("\"draining\""), "{stats}");

    // The event stream starts with the history.
    let mut stream = TcpStream::connect(fwd.admin).await.unwrap();
    let req = "GET /events HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer t0ken\r\n\r\n";
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0; 4096];
    let read = async {
        while !seen.contains("event: history") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), read)
        .await
        .expect("the history event");
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(
        seen.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{seen}"
    );
}

/// The dashboard's event stream outlives the admin API's 10 s connection
/// deadline (plus its 5 s grace): a page stays live without reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_outlives_the_connection_deadline() {
    let backend = banner_backend().await;
    let fwd = start_with_token(backend, "t0ken");
    let mut stream = TcpStream::connect(fwd.admin).await.unwrap();
    let req = "GET /events HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer t0ken\r\n\r\n";
    stream.write_all(req.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut ticks_late = 0;
    while started.elapsed() < std::time::Duration::from_secs(17) {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an event within 5 s")
            .expect("the stream reads");
        assert!(n > 0, "the stream ended after {:?}", started.elapsed());
        if started.elapsed() > std::time::Duration::from_secs(16) {
            ticks_late += String::from_utf8_lossy(&buf[..n])
                .matches("event: tick")
                .count();
        }
    }
    assert!(ticks_late > 0, "no tick past 16 s");
}

/// The admin address serves the library's tap (`GET /tap`), behind the
/// same token: it shows the bytes the forwarder moves, as hex.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_address_serves_a_tap_of_the_forwarded_bytes() {
    let backend = banner_backend().await;
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| Setup {
        args: vec!["--admin-token".into(), "t0ken".into()],
        ..Setup::config(service_yaml("web", port, backend.port(), ""))
    });
    assert_eq!(http(fwd.admin, "GET", "/tap", &[]).await.0, 401);
    let mut stream = TcpStream::connect(fwd.admin).await.unwrap();
    let req =
        "GET /tap?ip=127.0.0.3 HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer t0ken\r\n\r\n";
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0; 4096];
    let mut read_until = async |what: &str| {
        let read = async {
            while !seen.contains(what) {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the stream ended: {seen}");
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .unwrap_or_else(|_| panic!("{what} not in the tap's stream"));
    };
    read_until("event: tap").await;
    // Another client first: not in the tap.
    let mut other = open([127, 0, 0, 2], local(port)).await.unwrap();
    echo(&mut other, b"SECRET").await;
    let mut c = open([127, 0, 0, 3], local(port)).await.unwrap();
    echo(&mut c, b"MONCONN-TAP").await;
    // "MONCONN-TAP" read from the client, then written back to it.
    read_until("4d4f 4e43 4f4e 4e2d 5441 50").await;
    read_until("event: write").await;
    assert!(!seen.contains("5345 4352 4554"), "{seen}");
    assert!(!seen.contains("127.0.0.2:"), "{seen}");
}
