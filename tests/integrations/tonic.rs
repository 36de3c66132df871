//! tonic through a monitored listener, with a real tonic client.
#![cfg(feature = "tonic")]

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use monconn::integrations::tonic::{conn_info, ConnInfoLayer, Incoming};
use monconn::integrations::ConnInfo;
use monconn::integrations::PendingReport;
use monconn::{CloseReport, Registry, ServiceMonitor};
use support::{
    bind_monitored, eventually, graceful_on_stop, quiet_config, stop_and_wait_out, within,
};
use tokio::sync::{mpsc, oneshot};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Server};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// What the interceptor saw of a request's connection.
#[derive(Debug)]
struct Seen {
    remote: Option<SocketAddr>,
    local: Option<SocketAddr>,
    looked_up: Option<ConnInfo>,
    from_layer: Option<ConnInfo>,
}

struct Grpc {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    report: PendingReport,
}

/// tonic-health through a monitored listener, with `ConnInfoLayer` and an
/// interceptor that reports what each request knows of its connection.
async fn grpc_server(service: &ServiceMonitor) -> Grpc {
    let (listener, addr) = bind_monitored(service).await;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (tx, seen) = mpsc::unbounded_channel();
    let lookup = service.clone();
    let health = InterceptedService::new(health, move |req: tonic::Request<()>| {
        let _ = tx.send(Seen {
            remote: req.remote_addr(),
            local: req.local_addr(),
            looked_up: conn_info(&req, &lookup),
            from_layer: req.extensions().get::<ConnInfo>().cloned(),
        });
        Ok(req)
    });
    let (stop, shutdown, report) = graceful_on_stop(service);
    let layer = ConnInfoLayer::new(service.clone());
    let server = tokio::spawn(async move {
        Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming_shutdown(Incoming::new(listener), shutdown)
            .await
            .unwrap();
    });
    Grpc {
        addr,
        seen,
        stop,
        server,
        report,
    }
}

/// A tonic-health client connected to `addr`.
pub(crate) async fn client(addr: SocketAddr) -> HealthClient<Channel> {
    let channel = within(
        "connect",
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect(),
    )
    .await
    .expect("connect");
    HealthClient::new(channel)
}

fn overall() -> HealthCheckRequest {
    HealthCheckRequest {
        service: String::new(),
    }
}

#[tokio::test]
async fn health_check_through_the_listener_is_counted_and_knows_its_peer() {
    let service = Registry::new().create("grpc", quiet_config()).unwrap();
    let mut grpc = grpc_server(&service).await;
    let mut health = client(grpc.addr).await;

    for _ in 0..3 {
        let resp = within("check", health.check(overall())).await.unwrap();
        assert_eq!(resp.into_inner().status, ServingStatus::Serving as i32);
    }
    // One HTTP/2 connection for the three calls.
    assert_eq!(service.accepted(), 1);
    assert_eq!(service.connections(), 1);
    let conns = service.snapshot_with_conns().conns.unwrap();
    let (id, peer) = (conns[0].id, conns[0].peer);
    assert_eq!(peer.ip(), support::LOCALHOST);

    for _ in 0..3 {
        let seen = grpc.seen.recv().await.unwrap();
        assert_eq!(seen.remote, Some(peer));
        assert_eq!(seen.local, Some(grpc.addr));
        let looked_up = seen.looked_up.expect("conn_info finds the connection");
        assert_eq!((looked_up.id(), looked_up.peer()), (id, peer));
        let from_layer = seen.from_layer.expect("ConnInfoLayer inserted ConnInfo");
        assert_eq!((from_layer.id(), from_layer.local()), (id, grpc.addr));
        assert!(from_layer.bytes_read() > 0);
    }
    let (read, written) = service.bytes();
    assert!(read > 0 && written > 0);

    drop(health);
    eventually("client gone", || service.connections() == 0).await;
    grpc.stop.send(()).unwrap();
    within("server return", grpc.server).await.unwrap();
    let report = within("report", grpc.report.wait()).await;
    assert_eq!(report, Some(CloseReport { drained: 0, cut: 0 }));
    assert_eq!(service.snapshot().closed["normal"], 1);
}

#[tokio::test]
async fn graceful_shutdown_cuts_an_endless_watch_and_the_server_returns() {
    let wait = Duration::from_millis(500);
    let service = Registry::new()
        .create("grpc-cut", quiet_config().wait_timeout(wait))
        .unwrap();
    let grpc = grpc_server(&service).await;
    let mut health = client(grpc.addr).await;

    let mut watch = within("watch", health.watch(overall()))
        .await
        .unwrap()
        .into_inner();
    let first = within("first status", watch.message()).await.unwrap();
    assert_eq!(first.unwrap().status, ServingStatus::Serving as i32);

    stop_and_wait_out(grpc.stop, grpc.server, wait).await;

    let report = within("report", grpc.report.wait()).await;
    assert_eq!(report, Some(CloseReport { drained: 0, cut: 1 }));
    let end = within("watch end", watch.message()).await;
    assert!(end.is_err(), "the cut stream ended cleanly: {end:?}");
    eventually("closed", || service.connections() == 0).await;
    assert_eq!(service.snapshot().closed["shutdown"], 1);
}

#[tokio::test]
async fn incoming_turns_nodelay_on_as_tonic_does_unless_told() {
    use tokio_stream::StreamExt;
    // The service's config says nothing of nodelay (off by default).
    let service = Registry::new().create("nodelay", quiet_config()).unwrap();
    for (listener_says, expected) in [(None, true), (Some(false), false), (Some(true), true)] {
        let (listener, addr) = support::bind_monitored(&service).await;
        let listener = match listener_says {
            Some(on) => listener.nodelay(on),
            None => listener,
        };
        let mut incoming = Incoming::new(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let io = within("a connection", incoming.next())
            .await
            .expect("a connection")
            .expect("admitted");
        assert_eq!(
            io.get_ref().nodelay().unwrap(),
            expected,
            "{listener_says:?}"
        );
    }
    // A plain listener (axum, hyper) follows the config: off here.
    let (listener, addr) = support::bind_monitored(&service).await;
    let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (io, _) = within("accept", listener.accept()).await.unwrap();
    assert!(!io.get_ref().nodelay().unwrap());
}
