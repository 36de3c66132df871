//! Any accept stack serves: axum and tonic through a `Listener` built with
//! a `tower::timeout` and a user `async fn` layer, and a closure layer in a
//! spawned accept loop (the form the docs show).
#![cfg(all(feature = "axum", feature = "tonic"))]

use crate::http_support;
use crate::support;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use http_support::Client;
use monconn::integrations::tonic::Incoming;
use monconn::integrations::ConnInfo;
use monconn::layers::BoxError;
use monconn::{Accepted, Listener, Registry, ServiceMonitor};
use support::{eventually, quiet_config, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Server;
use tonic_health::pb::HealthCheckRequest;

/// Connections the user's layer saw.
static SEEN: AtomicU64 = AtomicU64::new(0);

/// A user layer as an `async fn`: counts the connection and passes it on.
async fn count(conn: Accepted<TcpStream>) -> Result<Accepted<TcpStream>, BoxError> {
    SEEN.fetch_add(1, Relaxed);
    Ok(conn)
}

/// A listener for `service` with the built-in layers, a 5 s timeout and
/// the counting layer.
async fn custom_listener(
    service: &ServiceMonitor,
) -> Listener<impl monconn::AcceptStack<Io = TcpStream, Future: Send + 'static> + Send + 'static> {
    Listener::builder(service.clone())
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
        .layer(tower::layer::layer_fn(|_| tower::service_fn(count)))
        .bind("127.0.0.1:0")
        .await
        .expect("bind a custom-stack listener")
}

#[tokio::test]
async fn axum_serves_through_a_custom_stack() {
    let service = Registry::new()
        .create("axum-custom", quiet_config())
        .unwrap();
    let listener = custom_listener(&service).await;
    let addr = listener.local_addr();
    let app = Router::new().route(
        "/",
        get(|ConnectInfo(conn): ConnectInfo<ConnInfo>| async move { conn.peer().to_string() }),
    );
    let _server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<ConnInfo>(),
        )
        .await
        .unwrap();
    });
    let before = SEEN.load(Relaxed);
    let mut client = Client::connect(addr).await;
    let body = within("GET /", client.get("/")).await;
    assert_eq!(body, client.local.to_string());
    assert!(
        SEEN.load(Relaxed) > before,
        "the user's layer saw the connection"
    );
    assert_eq!(service.snapshot().accepted, 1);
}

#[tokio::test]
async fn tonic_serves_through_a_custom_stack() {
    let service = Registry::new()
        .create("tonic-custom", quiet_config())
        .unwrap();
    let listener = custom_listener(&service).await;
    let addr = listener.local_addr();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let _server = tokio::spawn(async move {
        Server::builder()
            .add_service(health)
            .serve_with_incoming(Incoming::new(listener))
            .await
            .unwrap();
    });
    let mut health = crate::tonic::client(addr).await;
    let request = HealthCheckRequest {
        service: String::new(),
    };
    within("check", health.check(request)).await.expect("check");
    assert_eq!(service.connections(), 1);
    assert!(service.snapshot().bytes_read > 0);
}

/// A closure layer in a spawned accept loop compiles and works when its
/// error type is a concrete one (`std::io::Error`, say): the form the
/// `layers` docs show. (With `BoxError` written in the closure, rustc
/// cannot prove the spawned loop `Send`: an `async fn` layer, as above,
/// avoids that.)
#[tokio::test]
async fn a_closure_layer_serves_in_a_spawned_loop() {
    let service = Registry::new().create("closure", quiet_config()).unwrap();
    let refused = Arc::new(AtomicU64::new(0));
    let seen = refused.clone();
    let listener = Listener::builder(service.clone())
        .layer(tower::layer::layer_fn(move |_| {
            let seen = seen.clone();
            tower::service_fn(move |mut conn: Accepted<TcpStream>| {
                let seen = seen.clone();
                async move {
                    let mut hello = [0u8; 6];
                    conn.io.read_exact(&mut hello).await?;
                    if &hello != b"HELLO\n" {
                        seen.fetch_add(1, Relaxed);
                        return Err(std::io::Error::other("bad greeting"));
                    }
                    Ok(conn)
                }
            })
        }))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listener.local_addr();
    tokio::spawn(async move {
        while let Ok((mut conn, _peer)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = conn.write_all(b"welcome\n").await;
            });
        }
    });
    let mut good = TcpStream::connect(addr).await.unwrap();
    good.write_all(b"HELLO\n").await.unwrap();
    let mut answer = Vec::new();
    within("answer", good.read_to_end(&mut answer))
        .await
        .unwrap();
    assert_eq!(answer, b"welcome\n");

    let mut bad = TcpStream::connect(addr).await.unwrap();
    bad.write_all(b"nope!\n").await.unwrap();
    let mut nothing = Vec::new();
    let _ = within("refusal", bad.read_to_end(&mut nothing)).await;
    assert!(nothing.is_empty());
    eventually("the refusal counted", || {
        service.snapshot().rejected["error"] == 1
    })
    .await;
    assert_eq!(refused.load(Relaxed), 1);
}
