//! The operator's view of a [`Registry`]: a JSON API (stats, kick, ban),
//! health probes, Prometheus text and a live dashboard, as one axum
//! [`Router`] to nest in any app, or as a side server on its own address
//! for tonic, hyper and anything else. Feature `admin`.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/` | the live dashboard (one HTML page, no external resource) |
//! | GET | `/events` | the dashboard's server-sent events (`?filter=&sort=&limit=`, as `/connections`) |
//! | GET | `/tap` | a [tap](crate::tap) as server-sent events: `?sid=&ip=IP-or-CIDR&conn=ID` (each optional; none: every connection); events `tap` (its filter and limits), `open`, `read` and `write` (`offset`, `len`, `hex` of the first bytes), `close` (`cause`, `bytes_read`, `bytes_written`, `duration_ms`), `lost` (events dropped so far); limits: [`Admin::tap_limits`] |
//! | GET | `/healthz` | `{"alive": true}`: the process answers |
//! | GET | `/readyz` | `{"ready": true}` when every service accepts; 503 and `"stopping": [sid, ...]` otherwise |
//! | GET | `/stats` | `{"services": [ServiceSnapshot, ...]}` |
//! | GET | `/stats/{sid}` | one [`ServiceSnapshot`](crate::ServiceSnapshot) |
//! | GET | `/stats/{sid}/connections` | `{"sid", "connections": [ConnSnapshot, ...]}` |
//! | GET | `/connections` | the top rows by rate: `{"total", "matched", "rows": [...]}`; `?filter=IP-or-CIDR`, `?sort=rate\|in\|out\|age\|idle`, `?limit=` |
//! | GET | `/metrics` | the renderer's text ([`Admin::metrics`]); 404 without one |
//! | POST | `/services/{sid}/connections/{id}/kick` | `{"sid", "id", "kicked": true}`; 404 `no connection N ...` when it is gone |
//! | GET | `/services/{sid}/blacklist` | `{"sid", "blacklist": [...], "timed_bans": [{"net", "remaining_ms", "source"}, ...]}` |
//! | POST | `/services/{sid}/blacklist/{ip-or-cidr}` | `{"sid", "blacklist", "timed_bans", "kicked"}`; `?kick=1` closes its live connections too; `?for=10m` bans for that long ([`parse_ban_time`]) |
//! | DELETE | `/services/{sid}/blacklist/{ip-or-cidr}` | `{"sid", "blacklist", "kicked": 0}`; 404 when it was not listed |
//! | POST | `/session` | with the bearer token: sets the dashboard's session cookie (204) |
//! | DELETE | `/session` | clears it (204) |
//!
//! Errors are JSON, `{"error": "..."}`, naming what was wrong (`bad IP or
//! CIDR "10.0.0.300"`). Path segments are percent-decoded: `/stats/%3A22`;
//! a CIDR may be written plainly (`.../blacklist/10.0.0.0/8`) or encoded.
//!
//! # Security
//! - With a token ([`Admin::token`]), every route but `/`, `/healthz`
//!   and `/readyz` needs `Authorization: Bearer TOKEN` (the scheme in any
//!   case; compared in constant time) or the session cookie that
//!   `POST /session` sets with that header (`HttpOnly; SameSite=Strict;
//!   Path=/`): the dashboard's way, as `EventSource` cannot send headers.
//!   The token is never read from a URL.
//! - Every state-changing request (any method but GET and HEAD) needs the
//!   header `X-Monconn-Request: 1`, token or not, else 403 (the token is
//!   checked first: without it, the answer is 401): a form or an
//!   image on another origin cannot send it, and a script there would need a
//!   CORS preflight that this router never grants (it sends no CORS header
//!   at all).
//!
//! # The dashboard
//! One sampler task per [`Admin`] reads the registry's counters every
//! second (nothing is added to the connections' read and write path), keeps
//! five minutes of per-service figures in a ring (a page opened late still
//! draws its sparklines) and, while someone watches, the live connections
//! with their current rates, of which each page gets the top
//! [`Admin::max_rows`] by the column it sorts on.
//!
//! # Examples
//! An axum app with the operator's view under `/monconn`:
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use axum::{routing::get, Router};
//! use monconn::{admin::{self, Admin}, Listener, Registry};
//!
//! let registry = Registry::new();
//! let service = registry.service("web");
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .nest("/monconn", admin::router(Admin::new(registry.clone()).token("s3cret")));
//! let listener = Listener::bind("127.0.0.1:3000", service).await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! A tonic (or hyper) server with its dashboard on a loopback port:
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let registry = monconn::Registry::new();
//! let _grpc = registry.service("grpc");
//! tokio::spawn(monconn::admin::bind("127.0.0.1:9000", registry.clone()));
//! # Ok(()) }
//! ```

mod auth;
mod events;
mod routes;
mod sampler;
mod serve;
mod tap;

pub use auth::bearer_matches;
pub use serve::{
    bind, listen, serve, BACKLOG, CONNECTION_DEADLINE, GRACE, HEADER_TIMEOUT, MAX_CONNECTIONS,
    STREAM_DEADLINE,
};

/// Parses a ban's lifetime as the admin API takes it (`?for=`): a number of
/// seconds (`90`) or a duration with units (`90s`, `10m`, `1h 30m`, `2d`),
/// more than zero. The error names the text.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use monconn::admin::parse_ban_time;
///
/// assert_eq!(parse_ban_time("10m"), Ok(Duration::from_secs(600)));
/// assert_eq!(parse_ban_time("90"), Ok(Duration::from_secs(90)));
/// assert_eq!(
///     parse_ban_time("soon").unwrap_err(),
///     "bad ban time \"soon\": use seconds or a duration such as 90s, 10m, 1h, 2d"
/// );
/// ```
pub fn parse_ban_time(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let time = match text.parse::<u64>() {
        Ok(secs) => std::time::Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text).map_err(|_| {
            format!("bad ban time \"{text}\": use seconds or a duration such as 90s, 10m, 1h, 2d")
        })?,
    };
    if time.is_zero() {
        return Err(format!(
            "bad ban time \"{text}\": it must be more than zero"
        ));
    }
    Ok(time)
}

use std::fmt;
use std::sync::Arc;

use axum::Router;

use crate::tap::TapLimits;
use crate::Registry;

/// Renders the text `GET /metrics` serves (Prometheus exposition format),
/// e.g. a `metrics_exporter_prometheus::PrometheusHandle`'s `render`.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// Rows of the connection table a page gets at most, by default.
pub const MAX_ROWS: usize = 200;

/// The header every state-changing request must carry (with any non-empty
/// value, `1` by convention): a cross-site form cannot send it.
pub const REQUEST_HEADER: &str = "x-monconn-request";

/// The name of the session cookie `POST /session` sets.
pub const SESSION_COOKIE: &str = "monconn_session";

/// What the operator's router serves: a registry, and optionally a token and
/// a metrics renderer. Build it, then call [`router`] or [`serve`].
///
/// # Examples
/// ```
/// use monconn::admin::Admin;
///
/// let registry = monconn::Registry::new();
/// let admin = Admin::new(registry)
///     .token("s3cret")
///     .metrics(|| "# no metrics yet\n".to_owned())
///     .max_rows(100);
/// # let _ = admin;
/// ```
#[derive(Clone)]
pub struct Admin {
    registry: Registry,
    token: Option<Arc<str>>,
    metrics: Option<MetricsRenderer>,
    max_rows: usize,
    extra: Option<Router>,
    tap_limits: TapLimits,
}

// === impl Admin ===

impl Admin {
    /// The operator's view of `registry`: no token, no `/metrics`, tables of
    /// at most [`MAX_ROWS`] rows.
    pub fn new(registry: Registry) -> Self {
        Admin {
            registry,
            token: None,
            metrics: None,
            max_rows: MAX_ROWS,
            extra: None,
            tap_limits: TapLimits::default(),
        }
    }

    /// Requires `Authorization: Bearer <token>` (or the session cookie) on
    /// every route but `/`, `/healthz` and `/readyz`. Default: none, for a
    /// loopback address. An empty token is refused by every request.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into().into());
        self
    }

    /// Serves `render()`'s text on `GET /metrics`. Default: no `/metrics`.
    pub fn metrics(mut self, render: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.metrics = Some(Arc::new(render));
        self
    }

    /// The most rows of the connection table a page or `/connections` gets
    /// at once (at least 1). Default: [`MAX_ROWS`].
    pub fn max_rows(mut self, rows: usize) -> Self {
        self.max_rows = rows.max(1);
        self
    }

    /// What each `GET /tap` subscriber gets at most: bytes per read or
    /// write, events per second, events queued. Default:
    /// [`TapLimits::default`] (64 bytes, 200 events/s, 256 queued).
    ///
    /// ```
    /// use monconn::{admin::Admin, tap::TapLimits};
    ///
    /// let admin = Admin::new(monconn::Registry::new())
    ///     .tap_limits(TapLimits::default().with_bytes_per_event(256));
    /// # let _ = admin;
    /// ```
    pub fn tap_limits(mut self, limits: TapLimits) -> Self {
        self.tap_limits = limits;
        self
    }
}

impl Admin {
    /// Serves `routes` (your own, with their state given) next to the
    /// admin's, under the same token and request-header rules; a path
    /// that both serve is answered by yours. How an app adds figures of its
    /// own (the forwarder's `/stats` adds its draining services and backend
    /// errors) without a second server or a second auth.
    ///
    /// # Examples
    /// ```
    /// use axum::{routing::get, Router};
    /// use monconn::admin::{self, Admin};
    ///
    /// let extra = Router::new().route("/version", get(|| async { "1.2.3" }));
    /// let app = admin::router(Admin::new(monconn::Registry::new()).extend(extra));
    /// # let _ = app;
    /// ```
    pub fn extend(mut self, routes: Router) -> Self {
        self.extra = Some(match self.extra.take() {
            Some(before) => routes.fallback_service(before),
            None => routes,
        });
        self
    }
}

impl From<Registry> for Admin {
    fn from(registry: Registry) -> Self {
        Admin::new(registry)
    }
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("registry", &self.registry)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("metrics", &self.metrics.is_some())
            .field("max_rows", &self.max_rows)
            .field("extended", &self.extra.is_some())
            .field("tap_limits", &self.tap_limits)
            .finish()
    }
}

/// The operator's routes (see the [module](self)), to nest anywhere in an
/// axum app: `app.nest("/monconn", router(admin))`. Takes an [`Admin`] or a
/// bare [`Registry`].
///
/// Its sampler task starts now when called inside a tokio runtime, else at
/// the first request; it ends within a second of the router's last clone
/// being dropped.
pub fn router(admin: impl Into<Admin>) -> Router {
    routes::build(admin.into())
}
