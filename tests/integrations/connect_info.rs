//! Connect info without rewrites: handlers that take
//! `ConnectInfo<SocketAddr>`, and tower_governor's default peer-IP key
//! extractor, work unchanged with the monitored listener through axum's
//! `tap_io` (the one-liner the `axum` integration documents).
#![cfg(feature = "axum")]

use crate::http_support;
use crate::support;

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use http_support::Client;
use monconn::Registry;
use support::{bind_monitored, quiet_config, within};
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::GovernorLayer;

/// The handler of an app written for tokio's `TcpListener`.
async fn whoami(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> String {
    peer.to_string()
}

#[tokio::test]
async fn a_socket_addr_handler_works_unchanged() {
    let service = Registry::new().create("addr", quiet_config()).unwrap();
    let (listener, addr) = bind_monitored(&service).await;
    let app = Router::new().route("/", get(whoami));
    let _server = tokio::spawn(async move {
        axum::serve(
            listener.tap_io(|_| ()),
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let mut client = Client::connect(addr).await;
    let body = within("GET /", client.get("/")).await;
    assert_eq!(body, client.local.to_string());
    assert_eq!(service.connections(), 1, "the connection is monitored");
}

#[tokio::test]
async fn tower_governor_limits_by_peer_ip_unchanged() {
    let service = Registry::new().create("governed", quiet_config()).unwrap();
    let (listener, addr) = bind_monitored(&service).await;
    // Two requests per peer IP, then one every 60 s.
    let config = GovernorConfigBuilder::default()
        .per_second(60)
        .burst_size(2)
        .finish()
        .expect("a governor config");
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(GovernorLayer::new(config));
    let _server = tokio::spawn(async move {
        axum::serve(
            listener.tap_io(|_| ()),
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let mut client = Client::connect(addr).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (resp, _) = within("GET /", client.send(http_support::get("/")))
            .await
            .expect("an answer");
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429], "the peer IP was the key");
}
