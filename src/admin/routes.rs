//! The routes, their JSON, and what they share.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::json;

use super::sampler::Sampler;
use super::{auth, events, tap, Admin, MetricsRenderer};
use crate::integrations::stats;
use crate::tap::TapLimits;
use crate::{Registry, ServiceMonitor};

/// The dashboard: one page, no external resource.
const DASHBOARD: &str = include_str!("dashboard.html");

/// What every handler of one [`Admin`] shares.
pub(super) struct Shared {
    pub(super) registry: Registry,
    pub(super) token: Option<Arc<str>>,
    pub(super) metrics: Option<MetricsRenderer>,
    pub(super) max_rows: usize,
    pub(super) tap_limits: TapLimits,
    /// The session cookie's value: random, one per admin.
    pub(super) session: String,
    pub(super) sampler: Sampler,
}

/// The stats handlers ([`stats`]) take the registry as their state.
impl axum::extract::FromRef<Arc<Shared>> for Registry {
    fn from_ref(shared: &Arc<Shared>) -> Registry {
        shared.registry.clone()
    }
}

pub(super) fn build(admin: Admin) -> Router {
    let shared = Arc::new(Shared {
        registry: admin.registry,
        token: admin.token,
        metrics: admin.metrics,
        max_rows: admin.max_rows,
        tap_limits: admin.tap_limits,
        session: auth::new_session(),
        sampler: Sampler::default(),
    });
    if tokio::runtime::Handle::try_current().is_ok() {
        shared.start_sampler();
    }
    let mut router = Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route(
            "/healthz",
            get(|| async { json(StatusCode::OK, &json!({"alive": true})) }),
        )
        .route("/readyz", get(readyz))
        .route("/events", get(events::events))
        .route("/connections", get(events::connections))
        .route("/tap", get(tap::tap))
        .route("/stats", get(stats::all))
        .route("/stats/{sid}", get(stats::one))
        .route("/stats/{sid}/connections", get(stats::connections))
        .route("/services/{sid}/connections/{id}/kick", post(kick))
        .route("/services/{sid}/blacklist", get(blacklist))
        .route("/services/{sid}/blacklist/{*net}", post(ban).delete(unban))
        .route(
            "/session",
            post(auth::open_session).delete(auth::close_session),
        );
    if shared.metrics.is_some() {
        router = router.route("/metrics", get(metrics));
    }
    let router = router
        .fallback(|uri: axum::http::Uri| async move {
            error(
                StatusCode::NOT_FOUND,
                format!("no such route: {}", uri.path()),
            )
        })
        .method_not_allowed_fallback(not_allowed)
        .with_state(shared.clone());
    // The app's own routes first; what they do not serve falls through.
    let router = match admin.extra {
        Some(extra) => extra
            .fallback_service(router)
            .method_not_allowed_fallback(not_allowed),
        None => router,
    };
    router.layer(axum::middleware::from_fn_with_state(shared, auth::guard))
}

async fn not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

// === handlers ===

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let stopping: Vec<String> = shared
        .registry
        .list()
        .iter()
        .filter(|s| !s.is_running())
        .map(|s| s.sid().to_owned())
        .collect();
    if stopping.is_empty() {
        json(StatusCode::OK, &json!({ "ready": true }))
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "ready": false, "stopping": stopping }),
        )
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let Some(render) = &shared.metrics else {
        return error(StatusCode::NOT_FOUND, "no metrics renderer");
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(),
    )
        .into_response()
}

async fn kick(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let (sid, id) = match path {
        Ok(Path(p)) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`{id}` is not a connection id"),
        );
    };
    with_service(&shared, Ok(Path(sid)), |s| {
        if s.kick(id) {
            tracing::info!(sid = %s.sid(), id, "connection kicked");
            json(
                StatusCode::OK,
                &json!({ "sid": s.sid(), "id": id, "kicked": true }),
            )
        } else {
            error(
                StatusCode::NOT_FOUND,
                format!("no connection {id} in service `{}`", s.sid()),
            )
        }
    })
}

async fn blacklist(
    State(shared): State<Arc<Shared>>,
    sid: Result<Path<String>, PathRejection>,
) -> Response {
    with_service(&shared, sid, |s| list_reply(s, 0))
}

#[derive(Deserialize)]
struct BanQuery {
    kick: Option<String>,
    #[serde(rename = "for")]
    time: Option<String>,
}

async fn ban(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<BanQuery>, QueryRejection>,
) -> Response {
    let (kick, time) = match query {
        Ok(Query(q)) => {
            let kick = match q.kick.as_deref() {
                None | Some("0" | "false" | "no") => false,
                Some("" | "1" | "true" | "yes") => true,
                Some(other) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("bad kick value \"{other}\": use kick=1 or kick=0"),
                    )
                }
            };
            match q.time.as_deref().map(super::parse_ban_time).transpose() {
                Ok(time) => (kick, time),
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            }
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    change_list(&shared, path, |s, net| {
        match time {
            Some(time) => s.ban_for(net, time),
            None => s.ban(net),
        };
        let kicked = if kick { s.kick_net(net) } else { 0 };
        let secs = time.map(|t| t.as_secs());
        tracing::info!(sid = %s.sid(), %net, kicked, for_secs = ?secs, "banned");
        list_reply(s, kicked)
    })
}

async fn unban(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    change_list(&shared, path, |s, net| {
        if !s.unban(net) {
            return error(
                StatusCode::NOT_FOUND,
                format!("{net} is not on the blacklist of `{}`", s.sid()),
            );
        }
        tracing::info!(sid = %s.sid(), %net, "unbanned");
        list_reply(s, 0)
    })
}

fn change_list(
    shared: &Shared,
    path: Result<Path<(String, String)>, PathRejection>,
    f: impl FnOnce(&ServiceMonitor, IpNet) -> Response,
) -> Response {
    let (sid, net) = match path {
        Ok(Path(p)) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let net = match parse_net(&net) {
        Ok(net) => net,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    with_service(shared, Ok(Path(sid)), |s| f(s, net))
}

fn list_reply(service: &ServiceMonitor, kicked: usize) -> Response {
    let list: Vec<String> = service
        .config()
        .blacklist
        .iter()
        .map(ToString::to_string)
        .collect();
    json(
        StatusCode::OK,
        &json!({
            "sid": service.sid(),
            "blacklist": list,
            "timed_bans": service.timed_bans(),
            "kicked": kicked,
        }),
    )
}

// === helpers ===

fn with_service(
    shared: &Shared,
    sid: Result<Path<String>, PathRejection>,
    f: impl FnOnce(&ServiceMonitor) -> Response,
) -> Response {
    stats::with_service(&shared.registry, sid, f)
}

/// An address (`192.0.2.7`, `::1`) or a network (`10.0.0.0/8`); host bits of
/// a network are cleared. The error names the text.
pub(super) fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim().trim_start_matches('/');
    let bad = || {
        // std refuses `010.0.0.1` (octal to some parsers, decimal to others).
        let ip = text.split('/').next().unwrap_or_default();
        if !ip.contains(':')
            && ip
                .split('.')
                .any(|p| p.len() > 1 && p.starts_with('0') && p.bytes().all(|b| b.is_ascii_digit()))
        {
            format!("bad IP or CIDR \"{text}\": leading zeros are not allowed (write 10.0.0.1, not 010.0.0.1)")
        } else {
            format!("bad IP or CIDR \"{text}\"")
        }
    };
    if text.is_empty() {
        return Err("an IP or CIDR is needed (e.g. 10.0.0.0/8)".to_owned());
    }
    match text.split_once('/') {
        None => text.parse::<IpAddr>().map(IpNet::from).map_err(|_| bad()),
        Some((ip, len)) => {
            let ip: IpAddr = ip.parse().map_err(|_| bad())?;
            let len: u8 = len.parse().map_err(|_| bad())?;
            IpNet::new(ip, len).map(|n| n.trunc()).map_err(|_| bad())
        }
    }
}

pub(super) use crate::integrations::stats::{error, json};

#[cfg(test)]
mod tests {
    use super::parse_net;

    #[test]
    fn nets_parse_or_name_the_bad_text() {
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(
            parse_net("2001:db8::1/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(
            parse_net("10.0.0.300").unwrap_err(),
            "bad IP or CIDR \"10.0.0.300\""
        );
        assert_eq!(
            parse_net("10.0.0.0/33").unwrap_err(),
            "bad IP or CIDR \"10.0.0.0/33\""
        );
        assert!(parse_net("").is_err());
        assert!(parse_net("127.000.0.1/8")
            .unwrap_err()
            .ends_with(": leading zeros are not allowed (write 10.0.0.1, not 010.0.0.1)"));
        assert_eq!(
            parse_net("0x7f.0.0.1").unwrap_err(),
            "bad IP or CIDR \"0x7f.0.0.1\""
        );
    }
}
