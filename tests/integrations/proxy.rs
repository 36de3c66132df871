//! Behind a load balancer: with the PROXY layer first in the listener,
//! axum's `ConnectInfo<SocketAddr>` and `ConnectInfo<ConnInfo>` and tonic's
//! `remote_addr` are the client the header names; the socket's peer (the
//! balancer) stays readable.
#![cfg(all(feature = "proxy-protocol", feature = "axum", feature = "tonic"))]

use crate::support;

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use hyper_util::rt::TokioIo;
use monconn::integrations::tonic::Incoming;
use monconn::integrations::ConnInfo;
use monconn::layers::proxy::{ProxyConfig, ProxyHeader};
use monconn::{Listener, Registry};
use support::{quiet_config, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const CLIENT: &str = "198.51.100.7:40000";

async fn proxied_listener(
    sid: &str,
) -> Listener<monconn::layers::ProxyProtocol<monconn::DefaultStack>> {
    let trusted = ProxyConfig::new().trust(["127.0.0.1/32".parse().unwrap()]);
    Listener::builder(Registry::new().create(sid, quiet_config()).unwrap())
        .proxy_protocol(trusted)
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

/// A connection to `addr` that starts with a v2 header naming [`CLIENT`].
async fn through_balancer(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    let header = ProxyHeader::proxied(CLIENT.parse().unwrap(), addr).to_v2();
    stream.write_all(&header).await?;
    Ok(stream)
}

async fn whoami(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> String {
    peer.to_string()
}

async fn via(ConnectInfo(conn): ConnectInfo<ConnInfo>) -> String {
    format!("{} via {}", conn.peer(), conn.socket_peer())
}

async fn get_over(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    within("response", stream.read_to_string(&mut raw))
        .await
        .unwrap();
    raw.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[tokio::test]
async fn axum_connect_info_is_the_named_client() {
    let listener = proxied_listener("axum-addr").await;
    let addr = listener.local_addr();
    let app = Router::new().route("/", get(whoami));
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener.tap_io(|_| ()), app).await.unwrap();
    });
    let mut stream = through_balancer(addr).await.unwrap();
    assert_eq!(get_over(&mut stream, "/").await, CLIENT);

    let listener = proxied_listener("axum-conninfo").await;
    let addr = listener.local_addr();
    let app = Router::new().route("/", get(via));
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<ConnInfo>();
        axum::serve(listener, app).await.unwrap();
    });
    let mut stream = through_balancer(addr).await.unwrap();
    let me = stream.local_addr().unwrap();
    assert_eq!(
        get_over(&mut stream, "/").await,
        format!("{CLIENT} via {me}")
    );
}

#[tokio::test]
async fn tonic_remote_addr_is_the_named_client() {
    let listener = proxied_listener("grpc").await;
    let addr = listener.local_addr();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (tx, mut seen) = mpsc::unbounded_channel();
    let health = tonic::service::interceptor::InterceptedService::new(
        health,
        move |req: tonic::Request<()>| {
            let _ = tx.send(req.remote_addr());
            Ok(req)
        },
    );
    tokio::spawn(async move {
        Server::builder()
            .add_service(health)
            .serve_with_incoming(Incoming::new(listener))
            .await
            .unwrap();
    });
    let connector = tower::service_fn(move |_: http::Uri| async move {
        through_balancer(addr).await.map(TokioIo::new)
    });
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let channel = endpoint.connect_with_connector(connector);
    let channel = within("connect", channel).await.unwrap();
    let request = HealthCheckRequest {
        service: String::new(),
    };
    within("check", HealthClient::new(channel).check(request))
        .await
        .unwrap();
    assert_eq!(seen.recv().await.unwrap(), Some(CLIENT.parse().unwrap()));
}
