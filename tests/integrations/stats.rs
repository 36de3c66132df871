//! The registry's stats as JSON over HTTP: a router nested in an axum app,
//! and the one-call side server for tonic and hyper users.
#![cfg(feature = "axum")]

use crate::http_support;
use crate::support;

use axum::routing::get;
use axum::Router;
use http_support::Client;
use monconn::integrations::stats;
use monconn::integrations::ConnInfo;
use monconn::Registry;
use support::{bind_monitored, quiet_config, within};

#[tokio::test]
async fn a_nested_router_serves_every_service_one_and_its_connections() {
    let registry = Registry::new();
    let web = registry.create("web", quiet_config()).unwrap();
    let _other = registry.create("other:1", quiet_config()).unwrap();
    let (listener, addr) = bind_monitored(&web).await;
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .nest("/stats", stats::router(registry.clone()));
    let _server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<ConnInfo>(),
        )
        .await
        .unwrap();
    });
    let mut client = Client::connect(addr).await;
    assert_eq!(client.get("/").await, "hello");

    let all: serde_json::Value = serde_json::from_slice(&client.get("/stats").await).unwrap();
    let sids: Vec<_> = all["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sids, ["other:1", "web"]);

    let one: serde_json::Value = serde_json::from_slice(&client.get("/stats/web").await).unwrap();
    assert_eq!(one["sid"], "web");
    assert_eq!(one["connections"], 1);
    assert_eq!(one["accepted"], 1);

    let encoded: serde_json::Value =
        serde_json::from_slice(&client.get("/stats/other%3A1").await).unwrap();
    assert_eq!(encoded["sid"], "other:1");

    let conns: serde_json::Value =
        serde_json::from_slice(&client.get("/stats/web/connections").await).unwrap();
    assert_eq!(conns["sid"], "web");
    let conns = conns["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0]["peer"], client.local.to_string());
    assert!(conns[0]["bytes_read"].as_u64().unwrap() > 0);

    let (resp, body) = client.send(http_support::get("/stats/nope")).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["error"], "no service `nope`");
}

#[tokio::test]
async fn a_side_server_serves_the_stats_of_a_non_axum_server() {
    let registry = Registry::new();
    let grpc = registry.create("grpc", quiet_config()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _side = tokio::spawn(stats::serve(listener, registry.clone()));
    // A connection of the monitored service, held open.
    let (_conn, _client) = support::tcp_pair(&grpc).await;

    let mut client = Client::connect(addr).await;
    let one: serde_json::Value = serde_json::from_slice(&client.get("/grpc").await).unwrap();
    assert_eq!(one["connections"], 1);
    let conns: serde_json::Value =
        serde_json::from_slice(&client.get("/grpc/connections").await).unwrap();
    assert_eq!(conns["connections"].as_array().unwrap().len(), 1);
    // The side server's own connection is not monitored.
    assert_eq!(grpc.connections(), 1);

    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = within(
        "bind a taken address",
        stats::bind(taken.local_addr().unwrap(), registry),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("cannot serve stats on"), "{err}");
}
