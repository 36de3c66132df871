//! The admin's own server and routes an app adds to it.

use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use hyper::{Method, StatusCode};
use monconn::admin::{Admin, MAX_CONNECTIONS};
use monconn::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::{call, get as http_get, serve_admin};
use crate::support::within;

const TOKEN: &str = "s3cret";

fn bearer() -> [(&'static str, &'static str); 1] {
    [("authorization", "Bearer s3cret")]
}

#[tokio::test]
async fn an_apps_own_routes_answer_first_under_the_same_guard() {
    let registry = Registry::new();
    registry.service("web");
    let own = Router::new()
        .route("/stats", get(|| async { "the app's own stats" }))
        .route("/version", get(|| async { "1.2.3" }))
        .route("/reload", post(|| async { "reloaded" }));
    let addr = serve_admin(Admin::new(registry).token(TOKEN).extend(own)).await;

    // The token guards the app's routes as it guards the admin's.
    assert_eq!(
        http_get(addr, "/version").await.status,
        StatusCode::UNAUTHORIZED
    );
    let version = call(addr, Method::GET, "/version", &bearer()).await;
    assert_eq!(
        (version.status, &version.body[..]),
        (StatusCode::OK, &b"1.2.3"[..])
    );
    // A path both serve is the app's.
    let stats = call(addr, Method::GET, "/stats", &bearer()).await;
    assert_eq!(&stats.body[..], b"the app's own stats");
    // What the app does not serve is the admin's.
    let one = call(addr, Method::GET, "/stats/web", &bearer()).await;
    assert_eq!(one.json()["sid"], "web");
    let missing = call(addr, Method::GET, "/nope", &bearer()).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error(), "no such route: /nope");
    // A state change on the app's route needs the request header too.
    let forged = call(addr, Method::POST, "/reload", &bearer()).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let headers = [bearer()[0], ("x-monconn-request", "1")];
    let reload = call(addr, Method::POST, "/reload", &headers).await;
    assert_eq!(&reload.body[..], b"reloaded");
    // A wrong method on the app's route is a JSON 405 like the admin's.
    let wrong = call(addr, Method::DELETE, "/version", &headers).await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.error(), "method DELETE is not allowed on /version");
}

#[tokio::test]
async fn silent_clients_past_the_cap_do_not_lock_the_admin_out_for_long() {
    // Every slot taken by a client that sends nothing: the next request
    // waits in the backlog and is answered once the header timeout frees
    // a slot, never refused and never lost.
    let registry = Registry::new();
    let addr = serve_admin(Admin::new(registry)).await;
    let mut silent = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let started = Instant::now();
    let answer = within(
        "an answer once a silent client is cut",
        tokio::time::timeout(Duration::from_secs(30), http_get(addr, "/healthz")),
    )
    .await
    .expect("answered within 30 s");
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "answered after {:?}: the cap did not hold",
        started.elapsed()
    );
    // The silent ones were closed by the server.
    let mut buf = [0u8; 64];
    let n = silent[0].read(&mut buf).await.unwrap_or(0);
    assert!(
        n == 0 || buf[..n].starts_with(b"HTTP/1.1 408"),
        "{:?}",
        &buf[..n]
    );
    let _ = silent[1].write_all(b"GET / HTTP/1.1\r\n\r\n").await;
}
