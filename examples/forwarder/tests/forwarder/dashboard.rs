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
