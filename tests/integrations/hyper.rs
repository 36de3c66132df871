//! The documented hyper accept loop (see `monconn::integrations::hyper`):
//! hyper-util's auto builder over `Listener::accept`, the connection info in
//! request extensions, hyper-util's `GracefulShutdown` bounded by `graceful`.

use crate::http_support;
use crate::support;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use http_body_util::Full;
use http_support::Client;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use monconn::integrations::ConnInfo;
use monconn::{CloseReport, Listener, Registry};
use support::{
    bind_monitored, eventually, graceful_on_stop, quiet_config, stop_and_wait_out, within,
};
use tokio::sync::mpsc;

/// `/info` answers with what the handler sees of its connection; `/hang`
/// never answers (after telling `hung`).
async fn handle(
    req: Request<Incoming>,
    hung: mpsc::UnboundedSender<()>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let conn = req.extensions().get::<ConnInfo>().cloned();
    if req.uri().path() == "/hang" {
        let _ = hung.send(());
        std::future::pending::<()>().await;
    }
    let body = match conn {
        Some(c) => format!("{} {} {} {}", c.id(), c.peer(), c.local(), c.bytes_read()),
        None => "no ConnInfo".to_owned(),
    };
    Ok(Response::new(Full::new(Bytes::from(body))))
}

/// The accept loop of the module docs, until `signal`.
async fn serve(
    listener: Listener,
    signal: impl Future<Output = ()>,
    hung: mpsc::UnboundedSender<()>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut signal = std::pin::pin!(signal);
    loop {
        let (io, _peer) = tokio::select! {
            accepted = listener.accept() => accepted.expect("accept"),
            _ = &mut signal => break,
        };
        let info = ConnInfo::of(&io);
        let hung = hung.clone();
        let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(info.clone());
            handle(req, hung.clone())
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    graceful.shutdown().await;
}

#[tokio::test]
async fn the_connection_info_reaches_the_handler_and_bytes_are_exact() {
    let service = Registry::new().create("hyper", quiet_config()).unwrap();
    let (listener, addr) = bind_monitored(&service).await;
    let (stop, signal, report) = graceful_on_stop(&service);
    let (hung, _) = mpsc::unbounded_channel();
    let server = tokio::spawn(serve(listener, signal, hung));

    let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let mut client = Client::connect_from(src, addr).await;
    let mut last_written = 0;
    for _ in 0..10 {
        let body = client.get("/info").await;
        let (_, written) = client.wire.get();
        let id = service.snapshot_with_conns().conns.unwrap()[0].id;
        let expected = format!("{id} {} {addr} {written}", client.local);
        assert_eq!(std::str::from_utf8(&body).unwrap(), expected);
        assert!(written > last_written);
        last_written = written;
    }
    let (read, written) = client.wire.get();
    assert_eq!(
        service.bytes(),
        monconn::ByteCounts {
            read: written,
            written: read
        }
    );
    assert_eq!(service.accepted(), 1);

    // An idle keep-alive connection is closed by the graceful shutdown.
    stop.send(()).unwrap();
    within("server return", server).await.unwrap();
    within("client end", client.conn).await.unwrap().unwrap();
    assert_eq!(
        within("report", report.wait()).await,
        Some(CloseReport { drained: 1, cut: 0 })
    );
    eventually("closed", || service.connections() == 0).await;
    assert_eq!(
        service.bytes(),
        monconn::ByteCounts {
            read: written,
            written: read
        }
    );
}

#[tokio::test]
async fn graceful_shutdown_is_bounded_by_wait_timeout() {
    let wait = Duration::from_millis(500);
    let service = Registry::new()
        .create("hyper-cut", quiet_config().wait_timeout(wait))
        .unwrap();
    let (listener, addr) = bind_monitored(&service).await;
    let (stop, signal, report) = graceful_on_stop(&service);
    let (hung, mut hanging) = mpsc::unbounded_channel();
    let server = tokio::spawn(serve(listener, signal, hung));

    let mut client = Client::connect(addr).await;
    let request = tokio::spawn(async move { client.send(http_support::get("/hang")).await });
    within("handler start", hanging.recv()).await.unwrap();

    stop_and_wait_out(stop, server, wait).await;
    let out = within("cut request", request).await.unwrap();
    assert!(out.is_err(), "the cut request got a response: {out:?}");
    assert_eq!(
        within("report", report.wait()).await,
        Some(CloseReport { drained: 0, cut: 1 })
    );
    eventually("closed", || service.connections() == 0).await;
    assert_eq!(service.snapshot().closed["shutdown"], 1);
}
