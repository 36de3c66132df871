//! The admin HTTP API: stats, Prometheus metrics, blacklist changes, kicks.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/stats` | `{"services": [snapshot, ...], "draining": [...], "log_lines_dropped": n, "cluster": {...}}` ([`crate::stats::all`]; `cluster` when bans are shared) |
//! | GET | `/stats/{sid}` | one service's snapshot, with its `backend_errors` |
//! | GET | `/stats/{sid}/connections` | `{"sid", "connections": [...]}` |
//! | GET | `/metrics` | Prometheus text |
//! | POST, DELETE | `/services/{sid}/blacklist/{ip-or-cidr}` | `{"sid", "blacklist": [...], "timed_bans": [...], "kicked"}`; `?kick=1` on POST also closes the live connections from it; `?for=10m` on POST bans for that long |
//! | POST | `/services/{sid}/connections/{id}/kick` | `{"sid", "id", "kicked": true}` |
//! | GET | `/`, `/events`, `/tap`, `/connections`, `/healthz`, `/readyz`, `/services/{sid}/blacklist`; POST, DELETE `/session` | the live dashboard, the runtime tap and the rest of [`monconn::admin`] |
//!
//! It is [`monconn::admin`]'s router and server, with two routes of the
//! forwarder's own (`/stats`, `/stats/{sid}`, through
//! [`monconn::admin::Admin::extend`]) and a metrics renderer that publishes
//! the forwarder's counters first: one set of routes, one auth, one server.
//! Path segments are percent-decoded: `/stats/%3A22`, `.../blacklist/10.0.0.0%2F8`.
//! Blacklist changes act on the rule set the accept stack checks
//! ([`ServiceMonitor::ban`], [`ServiceMonitor::unban`]) and survive SIGHUP reloads.
//! Errors are `{"error": "..."}` with a 4xx status.
//!
//! With a token, every request needs `Authorization: Bearer TOKEN` (the
//! scheme in any case) or the dashboard's session cookie. The server
//! serves at most [`MAX_CONNECTIONS`] connections at once and leaves the
//! next ones in the kernel's backlog; a client gets [`HEADER_TIMEOUT`] for
//! each request's headers and [`CONNECTION_DEADLINE`] (plus [`GRACE`] for
//! the request in progress) for the whole connection, after which it is
//! cut: the admin port never holds descriptors or tasks for clients that
//! stall.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use monconn::Registry;
#[cfg(doc)]
use monconn::ServiceMonitor;
use serde_json::json;
use tokio::net::TcpListener;

pub use monconn::admin::{
    BACKLOG, CONNECTION_DEADLINE, GRACE, HEADER_TIMEOUT, MAX_CONNECTIONS, STREAM_DEADLINE,
};

use crate::backend_errors::{self, WithBackendErrors};

/// What the admin handlers need.
#[derive(Clone, Debug)]
pub struct Admin {
    pub registry: Registry,
    pub metrics: PrometheusHandle,
    pub token: Option<Arc<str>>,
    /// The shared ban list, when on: its figures go in `/stats`.
    pub cluster: Option<monconn::cluster::Cluster>,
}

/// Checks the admin address: anything but loopback needs a token.
pub fn check_bind(addr: SocketAddr, token: Option<&str>) -> Result<(), String> {
    if token.is_some_and(str::is_empty) {
        return Err("--admin-token is empty".into());
    }
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "refusing to serve the admin API on {addr} (not a loopback address) without a token: \
             set --admin-token or MONCONN_ADMIN_TOKEN, or bind 127.0.0.1"
        ));
    }
    Ok(())
}

/// How often [`upkeep`] drains the exporter's histograms: each second, so
/// that the samples waiting stay under some 16 bytes times a second's
/// connections (`PrometheusBuilder::install` would wait 5 s).
pub const UPKEEP: Duration = Duration::from_secs(1);

/// Drains the exporter's histogram samples (a connection's duration, at each
/// close) into their summaries every [`UPKEEP`]. A recorder installed with
/// `install_recorder` has no task of its own for it: its samples would pile
/// up between scrapes, some 16 bytes per closed connection, for ever if
/// nobody scrapes.
pub async fn upkeep(metrics: PrometheusHandle) {
    let mut every = tokio::time::interval(UPKEEP);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        metrics.run_upkeep();
    }
}

/// Serves the API on `listener` until the task is dropped: the library's
/// server ([`monconn::admin::serve`]), bounded in connections and time.
pub async fn serve(listener: TcpListener, admin: Admin) {
    monconn::admin::serve(listener, admin.into_library()).await;
}

// === impl Admin ===

impl Admin {
    /// The library's admin with the forwarder's figures.
    fn into_library(self) -> monconn::admin::Admin {
        let Admin {
            registry,
            metrics,
            token,
            cluster,
        } = self;
        let published = registry.clone();
        let render = move || {
            for service in published.list() {
                service.publish_metrics();
                backend_errors::publish(service.sid());
            }
            metrics::counter!("monconn_forwarder_log_lines_dropped")
                .absolute(crate::logging::dropped());
            metrics.render()
        };
        let own = Router::new()
            .route("/stats", get(all))
            .route("/stats/", get(all))
            .with_state((registry.clone(), cluster))
            .merge(
                Router::new()
                    .route("/stats/{sid}", get(one))
                    .with_state(registry.clone()),
            );
        let admin = monconn::admin::Admin::new(registry)
            .metrics(render)
            .extend(own);
        match token {
            Some(token) => admin.token(token.to_string()),
            None => admin,
        }
    }
}

fn json_reply(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /stats`: every service, the draining ones, the dropped log lines,
/// the shared ban list's figures.
async fn all(
    State((registry, cluster)): State<(Registry, Option<monconn::cluster::Cluster>)>,
) -> Response {
    json_reply(
        StatusCode::OK,
        &crate::stats::all(&registry, cluster.as_ref()),
    )
}

/// `GET /stats/{sid}`: one service's snapshot with its backend errors.
async fn one(
    State(registry): State<Registry>,
    sid: Result<Path<String>, PathRejection>,
) -> Response {
    let sid = match sid {
        Ok(Path(sid)) => sid,
        Err(e) => return json_reply(StatusCode::BAD_REQUEST, &json!({ "error": e.body_text() })),
    };
    match registry.get(&sid) {
        Some(service) => json_reply(StatusCode::OK, &WithBackendErrors::of(&service, false)),
        None => json_reply(
            StatusCode::NOT_FOUND,
            &json!({ "error": format!("no service `{sid}`") }),
        ),
    }
}

/// Binds the admin address, with a [`BACKLOG`] for the clients past the cap
/// (std's 128 would leave the next ones retrying their SYNs for seconds).
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    monconn::admin::listen(addr).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot serve the admin API on {addr}: {e}"),
        )
    })
}
