//! axum through a monitored listener, driven by a real hyper client.
#![cfg(feature = "axum")]

use crate::http_support;
use crate::support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use axum::{Json, Router};
use http_support::Client;
use monconn::integrations::ConnInfo;
use monconn::integrations::PendingReport;
use monconn::{CloseReport, Registry, ServiceMonitor};
use support::{
    bind_monitored, eventually, graceful_on_stop, quiet_config, stop_and_wait_out, within, PATIENCE,
};
use tokio::sync::{mpsc, oneshot, Notify};

/// What the `/info` handler saw of its connection.
async fn info(ConnectInfo(conn): ConnectInfo<ConnInfo>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "id": conn.id(),
        "peer": conn.peer().to_string(),
        "local": conn.local().to_string(),
        "bytes_read": conn.bytes_read(),
        "bytes_written": conn.bytes_written(),
    }))
}

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/echo", post(|body: axum::body::Bytes| async move { body }))
        .route("/info", get(info))
}

/// Serves `app` through a monitored listener for `service`, with
/// `ConnInfo` connect info; returns the address and the server task.
async fn serve(service: &ServiceMonitor, app: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let (listener, addr) = bind_monitored(service).await;
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<ConnInfo>(),
        )
        .await
        .unwrap();
    });
    (addr, server)
}

#[tokio::test]
async fn byte_counts_equal_the_wire_and_keep_alive_is_one_connection() {
    let service = Registry::new().create("bytes", quiet_config()).unwrap();
    let (addr, _server) = serve(&service, app()).await;

    let mut client = Client::connect(addr).await;
    for i in 0..25usize {
        let body = support::pattern(i as u64, 1000 * i + 7);
        let (resp, echoed) = client
            .send(http_support::post("/echo", body.clone()))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(&echoed[..], &body[..]);
        assert_eq!(client.get("/").await, "hello");
    }
    let (read, written) = client.wire.get();
    assert!(read > 300_000 && written > 300_000, "{read} {written}");

    // Live: the server read exactly what the client wrote and wrote exactly
    // what the client read.
    assert_eq!(service.accepted(), 1);
    assert_eq!(service.connections(), 1);
    assert_eq!(
        service.bytes(),
        monconn::ByteCounts {
            read: written,
            written: read
        }
    );
    let conns = service.snapshot_with_conns().conns.unwrap();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].peer, client.local);
    assert_eq!(
        (conns[0].bytes_read, conns[0].bytes_written),
        (written, read)
    );

    // Closed: the totals stay exact.
    drop(client.sender);
    within("client connection end", client.conn)
        .await
        .unwrap()
        .unwrap();
    eventually("server side closed", || service.connections() == 0).await;
    assert_eq!(
        service.bytes(),
        monconn::ByteCounts {
            read: written,
            written: read
        }
    );
    let snap = service.snapshot();
    assert_eq!(snap.accepted, 1);
    assert_eq!(snap.closed["normal"], 1);
    assert_eq!(client.wire.get(), (read, written));
}

#[tokio::test]
async fn connect_info_reaches_the_handler() {
    let service = Registry::new().create("info", quiet_config()).unwrap();
    let (addr, _server) = serve(&service, app()).await;
    let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));
    let mut client = Client::connect_from(src, addr).await;

    let first: serde_json::Value = serde_json::from_slice(&client.get("/info").await).unwrap();
    let (read1, written1) = client.wire.get();
    assert_eq!(first["peer"], client.local.to_string());
    assert_eq!(client.local.ip(), src);
    assert_eq!(first["local"], addr.to_string());
    // The whole request was read before the handler ran; nothing written yet.
    assert_eq!(first["bytes_read"], written1);
    assert_eq!(first["bytes_written"], 0);
    let id = first["id"].as_u64().unwrap();
    let record = service
        .conn(id)
        .expect("the handler's id is the open connection's");
    assert_eq!(record.peer(), client.local);

    // Same connection, live counters moved on.
    let second: serde_json::Value = serde_json::from_slice(&client.get("/info").await).unwrap();
    let (read2, written2) = client.wire.get();
    assert_eq!(second["id"], id);
    assert_eq!(second["bytes_read"], written2);
    assert_eq!(second["bytes_written"], read1);
    assert_eq!(
        (record.bytes_read(), record.bytes_written()),
        (written2, read2)
    );
}

#[tokio::test]
async fn conn_limit_one_refuses_a_second_connection_while_the_first_is_open() {
    let service = Registry::new()
        .create("limit", quiet_config().conn_limit(1))
        .unwrap();
    let (addr, _server) = serve(&service, app()).await;

    let mut first = Client::connect(addr).await;
    assert_eq!(first.get("/").await, "hello");

    // The kernel completes the handshake; the listener then refuses and
    // closes the connection without reading from it.
    let mut second = Client::connect(addr).await;
    let refused = within("refused request", second.send(http_support::get("/"))).await;
    assert!(refused.is_err(), "second connection served: {refused:?}");
    eventually("refusal counted", || {
        service.snapshot().rejected["conn_limit"] == 1
    })
    .await;
    assert_eq!(service.accepted(), 1);
    assert_eq!(
        second.wire.get().0,
        0,
        "nothing was sent to the refused client"
    );

    // The first connection still works; once it is gone, a new one is served.
    assert_eq!(first.get("/").await, "hello");
    drop(first.sender);
    eventually("first closed", || service.connections() == 0).await;
    let mut third = Client::connect(addr).await;
    assert_eq!(third.get("/").await, "hello");
    assert_eq!(service.accepted(), 2);
    assert_eq!(service.snapshot().rejected["conn_limit"], 1);
}

/// A server with a `/slow` route that reports when it starts and answers
/// when `release` is notified; shut down by `stop` through `graceful`.
struct Slow {
    addr: SocketAddr,
    started: mpsc::UnboundedReceiver<()>,
    release: Arc<Notify>,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    report: PendingReport,
}

async fn slow_server(service: &ServiceMonitor) -> Slow {
    let (started_tx, started) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let notified = release.clone();
    let app = app().route(
        "/slow",
        get(move || {
            let (started, release) = (started_tx.clone(), notified.clone());
            async move {
                let _ = started.send(());
                release.notified().await;
                "done"
            }
        }),
    );
    let (listener, addr) = bind_monitored(service).await;
    let (stop, shutdown, report) = graceful_on_stop(service);
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<ConnInfo>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .unwrap();
    });
    Slow {
        addr,
        started,
        release,
        stop,
        server,
        report,
    }
}

#[tokio::test]
async fn graceful_shutdown_lets_a_request_finish_within_wait_timeout() {
    let config = quiet_config().wait_timeout(PATIENCE);
    let service = Registry::new().create("drain", config).unwrap();
    let mut slow = slow_server(&service).await;

    let mut client = Client::connect(slow.addr).await;
    let request = tokio::spawn(async move {
        let out = client.send(http_support::get("/slow")).await;
        (out, client)
    });
    within("handler start", slow.started.recv()).await.unwrap();
    slow.stop.send(()).unwrap();
    eventually("service draining", || !service.is_running()).await;
    assert!(
        !slow.server.is_finished(),
        "server returned with a request in flight"
    );

    slow.release.notify_one();
    let (out, _client) = within("response", request).await.unwrap();
    let (resp, body) = out.expect("the request completes");
    assert_eq!((resp.status().as_u16(), &body[..]), (200, &b"done"[..]));

    within("server return", slow.server).await.unwrap();
    let report = within("close report", slow.report.wait()).await;
    assert_eq!(report, Some(CloseReport { drained: 1, cut: 0 }));
    let snap = service.snapshot();
    assert_eq!((snap.closed["normal"], snap.closed["shutdown"]), (1, 0));
}

#[tokio::test]
async fn graceful_shutdown_cuts_a_request_past_wait_timeout_and_returns() {
    let wait = Duration::from_millis(500);
    let service = Registry::new()
        .create("cut", quiet_config().wait_timeout(wait))
        .unwrap();
    let mut slow = slow_server(&service).await;

    // One idle keep-alive connection (closed by the shutdown at once) and
    // one whose request never finishes.
    let mut idle = Client::connect(slow.addr).await;
    assert_eq!(idle.get("/").await, "hello");
    let mut client = Client::connect(slow.addr).await;
    let request = tokio::spawn(async move { client.send(http_support::get("/slow")).await });
    within("handler start", slow.started.recv()).await.unwrap();
    assert_eq!(service.connections(), 2);

    stop_and_wait_out(slow.stop, slow.server, wait).await;

    let out = within("cut request", request).await.unwrap();
    assert!(out.is_err(), "the cut request got a response: {out:?}");
    within("idle client end", idle.conn).await.unwrap().unwrap();

    eventually("all closed", || service.connections() == 0).await;
    let snap = service.snapshot();
    assert_eq!((snap.closed["shutdown"], snap.closed["normal"]), (1, 1));
    let report = within("close report", slow.report.wait()).await;
    assert_eq!(report, Some(CloseReport { drained: 1, cut: 1 }));
}

#[tokio::test]
async fn connect_info_works_through_tap_io() {
    use axum::serve::ListenerExt;

    let service = Registry::new().create("tap", quiet_config()).unwrap();
    let (listener, addr) = bind_monitored(&service).await;
    let listener = listener.tap_io(|io| {
        let _ = io.get_ref().set_nodelay(true);
    });
    tokio::spawn(async move {
        axum::serve(
            listener,
            app().into_make_service_with_connect_info::<ConnInfo>(),
        )
        .await
        .unwrap();
    });
    let mut client = Client::connect(addr).await;
    let info: serde_json::Value = serde_json::from_slice(&client.get("/info").await).unwrap();
    assert_eq!(info["peer"], client.local.to_string());
    assert_eq!(info["bytes_read"], client.wire.get().1);
}

#[tokio::test]
async fn the_sweeper_closes_an_idle_keep_alive_connection() {
    let config = quiet_config()
        .max_idle(Duration::from_millis(300))
        .idle_interval(Duration::from_millis(50));
    let service = Registry::new().create("idle", config).unwrap();
    let (addr, _server) = serve(&service, app()).await;

    let mut client = Client::connect(addr).await;
    assert_eq!(client.get("/").await, "hello");
    // The server drops the connection once the sweeper closes it; the client
    // sees its connection reset (a cut is never a clean end).
    let end = within("idle close", client.conn).await.unwrap();
    let err = end.expect_err("the idle close is a reset");
    let io = std::error::Error::source(&err)
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    assert_eq!(io, Some(std::io::ErrorKind::ConnectionReset), "{err:?}");
    eventually("closed", || service.connections() == 0).await;
    let snap = service.snapshot();
    assert_eq!((snap.closed["idle"], snap.accepted), (1, 1));
}
