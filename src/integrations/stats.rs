//! Read-only JSON stats over HTTP, for any server: a [`router`] to nest in an
//! axum app, and [`serve`] / [`bind`], a side server on its own address for
//! tonic and hyper servers (or anything else). Feature `axum`.
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | every service: `{"services": [ServiceSnapshot, ...]}` |
//! | `GET /{sid}` | one service's [`ServiceSnapshot`](crate::ServiceSnapshot) |
//! | `GET /{sid}/connections` | its live connections, `{"sid", "connections": [ConnSnapshot, ...]}` (as the admin's) |
//!
//! Snapshots are read from the registry's counters when asked: nothing is
//! added to the connections' read and write path. Errors are JSON too
//! (`{"error": "no service `x`"}` with 404). Percent-encode a sid that holds
//! a `/` or a `:` (`127.0.0.1:22` is `127.0.0.1%3A22`). The answers carry no
//! CORS header: a page on another origin cannot read them.
//!
//! # Examples
//! An axum app with its stats under `/stats`:
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use axum::{routing::get, Router};
//! use monconn::{Listener, Registry};
//!
//! let registry = Registry::new();
//! let service = registry.service("web");
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .nest("/stats", monconn::integrations::stats::router(registry.clone()));
//! let listener = Listener::bind("127.0.0.1:3000", service).await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! A tonic (or hyper) server with its stats on a second, loopback port:
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let registry = monconn::Registry::new();
//! let _grpc = registry.service("grpc");
//! tokio::spawn(monconn::integrations::stats::bind("127.0.0.1:9000", registry.clone()));
//! # Ok(()) }
//! ```

use std::io;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use tokio::net::{TcpListener, ToSocketAddrs};

use crate::{Registry, ServiceMonitor};

/// The stats routes of `registry` (see the [module](self)), to nest
/// anywhere in an axum app: `app.nest("/stats", router(registry))`.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/", get(all))
        .route("/{sid}", get(one))
        .route("/{sid}/connections", get(connections))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .with_state(registry)
}

/// Serves [`router`] on `listener` until an accept fails for good. Plain
/// tokio accepts: the stats connections are not monitored themselves.
///
/// # Errors
/// The listener's accept error that ended the server.
pub async fn serve(listener: TcpListener, registry: Registry) -> io::Result<()> {
    axum::serve(listener, router(registry)).await
}

/// Binds `addr` and serves [`router`] on it: a one-call side server for
/// servers that are not axum apps.
///
/// # Errors
/// The bind error (address in use, say), with the address in its message,
/// or the accept error that ended the server.
pub async fn bind(
    addr: impl ToSocketAddrs + std::fmt::Display,
    registry: Registry,
) -> io::Result<()> {
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot serve stats on {addr}: {e}")))?;
    serve(listener, registry).await
}

/// `GET /`: every service's snapshot.
pub(crate) async fn all(State(registry): State<Registry>) -> Response {
    json(StatusCode::OK, &registry.snapshot())
}

/// `GET /{sid}`: one service's snapshot.
pub(crate) async fn one(
    State(registry): State<Registry>,
    sid: Result<Path<String>, PathRejection>,
) -> Response {
    with_service(&registry, sid, |s| json(StatusCode::OK, &s.snapshot()))
}

/// `GET /{sid}/connections`: `{"sid", "connections": [ConnSnapshot, ...]}`.
pub(crate) async fn connections(
    State(registry): State<Registry>,
    sid: Result<Path<String>, PathRejection>,
) -> Response {
    with_service(&registry, sid, |s| {
        let conns = s.snapshot_with_conns().conns.unwrap_or_default();
        json(
            StatusCode::OK,
            &serde_json::json!({ "sid": s.sid(), "connections": conns }),
        )
    })
}

/// Runs `f` on the service the path names, or answers why not.
pub(crate) fn with_service(
    registry: &Registry,
    sid: Result<Path<String>, PathRejection>,
    f: impl FnOnce(&ServiceMonitor) -> Response,
) -> Response {
    let sid = match sid {
        Ok(Path(sid)) => sid,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match registry.get(&sid) {
        Some(service) => f(&service),
        None => error(StatusCode::NOT_FOUND, format!("no service `{sid}`")),
    }
}

/// `value` as a JSON answer.
pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A JSON error answer: `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
