//! The admin HTTP API: stats, Prometheus metrics, blacklist changes, kicks.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/stats` | `{"services": [snapshot, ...], "draining": [...], "log_lines_dropped": n}` ([`crate::stats::all`]) |
//! | GET | `/stats/{sid}` | one service's snapshot, with its `backend_errors` |
//! | GET | `/stats/{sid}/connections` | `{"sid", "connections": [...]}` |
//! | GET | `/metrics` | Prometheus text |
//! | POST, DELETE | `/services/{sid}/blacklist/{ip-or-cidr}` | `{"sid", "blacklist": [...], "timed_bans": [...], "kicked"}`; `?kick=1` on POST also closes the live connections from it; `?for=10m` on POST bans for that long |
//! | POST | `/services/{sid}/connections/{id}/kick` | `{"sid", "id", "kicked": true}` |
//! | GET | `/`, `/events`, `/connections`, `/healthz`, `/readyz`; POST, DELETE `/session` | the live dashboard of [`monconn::admin`], served by its router |
//!
//! Path segments are percent-decoded: `/stats/%3A22`, `.../blacklist/10.0.0.0%2F8`.
//! Blacklist changes act on the rule set the accept stack checks
//! ([`ServiceMonitor::ban`], [`ServiceMonitor::unban`]) and survive SIGHUP reloads.
//! Errors are `{"error": "..."}` with a 4xx status.
//!
//! With a token, every request needs `Authorization: Bearer TOKEN` (the
//! scheme in any case). The server serves at most [`MAX_CONNECTIONS`]
//! connections at once and leaves the next ones in the kernel's backlog; a
//! client gets [`HEADER_TIMEOUT`] for each request's headers and
//! [`CONNECTION_DEADLINE`] (plus [`GRACE`] for the request in progress) for
//! the whole connection, after which it is cut: the admin port never holds
//! descriptors or tasks for clients that stall.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use metrics_exporter_prometheus::PrometheusHandle;
use monconn::{Registry, ServiceMonitor};
use percent_encoding::percent_decode_str;
use serde_json::json;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

use crate::addr::parse_net;
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

/// Admin connections served at once. No more are accepted until one ends:
/// the next clients wait in the kernel's backlog, holding no descriptor of
/// the process, so the admin port can never take those forwarding needs.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send a request's headers, and how long a
/// keep-alive connection may wait for its next request.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one admin connection may last. Then it closes after the
/// request in progress (a slow body, an answer not read yet) if that ends
/// within [`GRACE`], and is cut with a reset otherwise.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// How long a connection carrying the dashboard's event stream (`GET
/// /events`) may last: then it ends as others do, and the page's
/// `EventSource` reconnects within a second. Bounded still, so that a
/// client that never reads its stream holds a slot for ten minutes at most.
pub const STREAM_DEADLINE: Duration = Duration::from_secs(600);

/// See [`CONNECTION_DEADLINE`].
pub const GRACE: Duration = Duration::from_secs(5);

/// Paths answered by the library's admin router ([`monconn::admin`]): the
/// dashboard, its event stream and table, its session, the probes.
const DASHBOARD: [&str; 6] = [
    "/",
    "/events",
    "/connections",
    "/session",
    "/healthz",
    "/readyz",
];

/// Serves the API on `listener` until the task is dropped, at most
/// [`MAX_CONNECTIONS`] connections at once.
pub async fn serve(listener: TcpListener, admin: Admin) {
    let mut dashboard = monconn::admin::Admin::new(admin.registry.clone());
    if let Some(token) = &admin.token {
        dashboard = dashboard.token(token.to_string());
    }
    let dashboard = monconn::admin::router(dashboard);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A slot first, then the accept: past the cap, clients stay in the
        // backlog rather than take a descriptor.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let admin = admin.clone();
        let dashboard = dashboard.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, admin, dashboard).await;
            drop(slot);
        });
    }
}

/// Serves one connection until it ends or its deadline
/// ([`CONNECTION_DEADLINE`], then [`GRACE`]) passes.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    admin: Admin,
    dashboard: axum::Router,
) {
    // Set once the connection carries the dashboard's event stream, which
    // lasts: it gets [`STREAM_DEADLINE`] rather than [`CONNECTION_DEADLINE`].
    let streaming = Arc::new(AtomicBool::new(false));
    let stream_seen = streaming.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let admin = admin.clone();
        let dashboard = dashboard.clone();
        if req.uri().path() == "/events" {
            stream_seen.store(true, Relaxed);
        }
        async move {
            if DASHBOARD.contains(&req.uri().path()) {
                let Ok(response) = dashboard.oneshot(req).await;
                return Ok::<_, Infallible>(
                    response.map(|b| b.map_err(BoxError::from).boxed_unsync()),
                );
            }
            let response = admin.handle(req);
            Ok(response.map(|b| b.map_err(|never| match never {}).boxed_unsync()))
        }
    });
    let mut conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    if tokio::time::timeout(CONNECTION_DEADLINE, &mut conn)
        .await
        .is_ok()
    {
        return;
    }
    if streaming.load(Relaxed)
        && tokio::time::timeout(STREAM_DEADLINE - CONNECTION_DEADLINE, &mut conn)
            .await
            .is_ok()
    {
        return;
    }
    // No keep-alive past the request in progress; an idle connection closes now.
    Pin::new(&mut conn).graceful_shutdown();
    if tokio::time::timeout(GRACE, &mut conn).await.is_ok() {
        return;
    }
    // Stuck on a client that neither sends nor reads: a reset frees the
    // socket at once, unsent answer and all.
    let stream = conn.into_parts().io.into_inner();
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    tracing::debug!(%peer, "admin connection cut at its deadline");
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        content_type.parse().expect("a valid header value"),
    );
    response
}

fn json_reply(status: StatusCode, value: &impl serde::Serialize) -> Reply {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    reply(status, "application/json", body)
}

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    json_reply(status, &json!({ "error": message.into() }))
}

// === impl Admin ===

impl Admin {
    fn handle(&self, req: Request<Incoming>) -> Reply {
        if let Some(token) = &self.token {
            if !authorized(&req, token) {
                let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
                r.headers_mut()
                    .insert(WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
                return r;
            }
        }
        // A cross-site form can POST but cannot set a header: every state
        // change needs this one, token or not (as the dashboard's API).
        if !matches!(*req.method(), Method::GET | Method::HEAD)
            && !req.headers().contains_key(monconn::admin::REQUEST_HEADER)
        {
            return error(
                StatusCode::FORBIDDEN,
                format!("a {} needs the header `X-Monconn-Request: 1`", req.method()),
            );
        }
        let segments: Result<Vec<String>, _> = req
            .uri()
            .path()
            .split('/')
            .skip(1)
            .map(|s| percent_decode_str(s).decode_utf8().map(|s| s.into_owned()))
            .collect();
        let Ok(segments) = segments else {
            return error(
                StatusCode::BAD_REQUEST,
                "the path is not valid UTF-8 once decoded",
            );
        };
        let kick = req.uri().query().is_some_and(|q| {
            q.split('&')
                .any(|kv| kv == "kick" || kv == "kick=1" || kv == "kick=true")
        });
        // `?for=10m`: a ban with a lifetime.
        let ban_time = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("for=")))
            .map(|t| {
                let t = percent_decode_str(t).decode_utf8_lossy();
                monconn::admin::parse_ban_time(&t)
            })
            .transpose();
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let method = req.method();
        match (method, segs.as_slice()) {
            (&Method::GET, ["stats"] | ["stats", ""]) => json_reply(
                StatusCode::OK,
                &crate::stats::all(&self.registry, self.cluster.as_ref()),
            ),
            (&Method::GET, ["stats", sid]) => self.with_service(sid, |s| {
                json_reply(StatusCode::OK, &WithBackendErrors::of(s, false))
            }),
            (&Method::GET, ["stats", sid, "connections"]) => self.with_service(sid, |s| {
                let conns = s.snapshot_with_conns().conns.unwrap_or_default();
                json_reply(
                    StatusCode::OK,
                    &json!({ "sid": s.sid(), "connections": conns }),
                )
            }),
            (&Method::GET, ["metrics"]) => {
                for service in self.registry.list() {
                    service.publish_metrics();
                    backend_errors::publish(service.sid());
                }
                metrics::counter!("monconn_forwarder_log_lines_dropped")
                    .absolute(crate::logging::dropped());
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )
            }
            (&Method::POST | &Method::DELETE, ["services", sid, "blacklist", net]) => {
                let net = match parse_net(net) {
                    Ok(net) => net,
                    Err(e) => return error(StatusCode::BAD_REQUEST, e),
                };
                let add = method == Method::POST;
                let time = match ban_time {
                    Ok(time) if add || time.is_none() => time,
                    Ok(_) => return error(StatusCode::BAD_REQUEST, "`for` applies to a POST only"),
                    Err(e) => return error(StatusCode::BAD_REQUEST, e),
                };
                self.with_service(sid, |s| blacklist(s, net, add, kick, time))
            }
            (&Method::POST, ["services", sid, "connections", id, "kick"]) => {
                let Ok(id) = id.parse::<u64>() else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("`{id}` is not a connection id"),
                    );
                };
                self.with_service(sid, |s| {
                    if s.kick(id) {
                        json_reply(
                            StatusCode::OK,
                            &json!({ "sid": s.sid(), "id": id, "kicked": true }),
                        )
                    } else {
                        error(
                            StatusCode::NOT_FOUND,
                            format!("no open connection {id} in service `{}`", s.sid()),
                        )
                    }
                })
            }
            (_, ["stats", ..] | ["metrics"] | ["services", _, "blacklist", _])
            | (_, ["services", _, "connections", _, "kick"]) => error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} is not allowed on {}", req.uri().path()),
            ),
            _ => error(
                StatusCode::NOT_FOUND,
                format!("no such route: {}", req.uri().path()),
            ),
        }
    }

    fn with_service(&self, sid: &str, f: impl FnOnce(&ServiceMonitor) -> Reply) -> Reply {
        match self.registry.get(sid) {
            Some(service) => f(&service),
            None => error(StatusCode::NOT_FOUND, format!("no service `{sid}`")),
        }
    }
}

/// Whether the request carries `Authorization: Bearer <token>`. The scheme
/// is case-insensitive (RFC 9110 §11.1) and one or more spaces follow it
/// (`1*SP`, §11.4); the token is compared exactly, in constant time.
fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| monconn::admin::bearer_matches(v, token))
}

/// Adds `net` to, or removes it from, the service's blacklist: the rule set
/// its accept stack checks for every new connection. With `kick`, an added
/// network's live connections are closed too.
fn blacklist(
    service: &ServiceMonitor,
    net: IpNet,
    add: bool,
    kick: bool,
    time: Option<Duration>,
) -> Reply {
    let mut kicked = 0;
    if add {
        match time {
            Some(time) => service.ban_for(net, time),
            None => service.ban(net),
        };
        if kick {
            kicked = service.kick_net(net);
        }
    } else if !service.unban(net) {
        return error(
            StatusCode::NOT_FOUND,
            format!("{net} is not on the blacklist of `{}`", service.sid()),
        );
    }
    let for_secs = time.map(|t| t.as_secs());
    tracing::info!(sid = %service.sid(), %net, add, kicked, for_secs, "blacklist changed");
    let list: Vec<String> = service
        .config()
        .blacklist
        .iter()
        .map(ToString::to_string)
        .collect();
    json_reply(
        StatusCode::OK,
        &json!({
            "sid": service.sid(),
            "blacklist": list,
            "timed_bans": service.timed_bans(),
            "kicked": kicked,
        }),
    )
}

/// Clients the kernel keeps waiting for an accept past [`MAX_CONNECTIONS`]
/// (capped by `net.core.somaxconn`): they hold no descriptor of ours.
pub const BACKLOG: u32 = 1024;

/// Binds the admin address, with a [`BACKLOG`] for the clients past the cap
/// (std's 128 would leave the next ones retrying their SYNs for seconds).
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let listen = || {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    listen().map_err(|e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot serve the admin API on {addr}: {e}"),
        )
    })
}
