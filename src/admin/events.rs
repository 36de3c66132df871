//! `GET /events` (the dashboard's server-sent events) and `GET /connections`
//! (the same capped table as JSON).

use std::cmp::Ordering;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::routes::{error, json, parse_net, Shared};
use super::sampler::{unix_ms, Row, ServiceTick, Talkers, Tick, Watching, HISTORY, INTERVAL};
use crate::canonical_ip as canonical;

/// `?filter=IP-or-CIDR&sort=rate|in|out|age|idle&limit=N`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RowQuery {
    filter: Option<String>,
    sort: Option<String>,
    limit: Option<usize>,
}

/// A page's view of the connection table.
#[derive(Debug)]
struct View {
    filter: Option<IpNet>,
    sort: Sort,
    limit: usize,
}

#[derive(Clone, Copy, Debug)]
enum Sort {
    Rate,
    In,
    Out,
    Age,
    Idle,
}

impl Sort {
    fn name(self) -> &'static str {
        match self {
            Sort::Rate => "rate",
            Sort::In => "in",
            Sort::Out => "out",
            Sort::Age => "age",
            Sort::Idle => "idle",
        }
    }

    /// Largest first, then by service and id.
    fn cmp(self, a: &Row, b: &Row) -> Ordering {
        let by = match self {
            Sort::Rate => b.rate.total_cmp(&a.rate),
            Sort::In => b.bytes_in.cmp(&a.bytes_in),
            Sort::Out => b.bytes_out.cmp(&a.bytes_out),
            Sort::Age => b.age.cmp(&a.age),
            Sort::Idle => b.idle.cmp(&a.idle),
        };
        by.then_with(|| a.sid.cmp(&b.sid)).then(a.id.cmp(&b.id))
    }
}

/// The page's view from its query; the error names the bad value (a 400).
fn view(query: Result<Query<RowQuery>, QueryRejection>, max_rows: usize) -> Result<View, String> {
    let Query(q) = query.map_err(|e| e.body_text())?;
    let filter = match q.filter.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(parse_net(text)?),
    };
    let sort = match q.sort.as_deref() {
        None | Some("" | "rate") => Sort::Rate,
        Some("in") => Sort::In,
        Some("out") => Sort::Out,
        Some("age") => Sort::Age,
        Some("idle") => Sort::Idle,
        Some(other) => {
            return Err(format!(
                "bad sort \"{other}\": use rate, in, out, age or idle"
            ))
        }
    };
    Ok(View {
        filter,
        sort,
        limit: q.limit.unwrap_or(max_rows).min(max_rows),
    })
}

/// One event's worth of data for one page.
#[derive(Serialize)]
struct Frame<'a> {
    t: u64,
    services: &'a [ServiceTick],
    conns: Conns<'a>,
    talkers: &'a Talkers,
}

#[derive(Serialize)]
struct Conns<'a> {
    /// Live connections, every service.
    total: usize,
    /// Of them, those the filter matches.
    matched: usize,
    /// Whether the rows are this tick's (else the sampler had no watcher).
    live: bool,
    sort: &'static str,
    filter: Option<String>,
    /// The top `limit` of the matched, by `sort`.
    rows: Vec<&'a Row>,
}

fn conns<'a>(rows: Option<&'a [Row]>, total: usize, view: &View) -> Conns<'a> {
    let mut matched: Vec<&Row> = rows
        .unwrap_or_default()
        .iter()
        .filter(|r| {
            view.filter
                .is_none_or(|net| net.contains(&canonical(r.peer.ip())))
        })
        .collect();
    let count = matched.len();
    if matched.len() > view.limit {
        if view.limit > 0 {
            matched.select_nth_unstable_by(view.limit - 1, |a, b| view.sort.cmp(a, b));
        }
        matched.truncate(view.limit);
    }
    matched.sort_unstable_by(|a, b| view.sort.cmp(a, b));
    Conns {
        total,
        matched: count,
        live: rows.is_some(),
        sort: view.sort.name(),
        filter: view.filter.map(|n| n.to_string()),
        rows: matched,
    }
}

fn frame(tick: &Tick, view: &View) -> String {
    let total = tick.services.iter().map(|s| s.connections).sum();
    let frame = Frame {
        t: tick.t,
        services: &tick.services,
        conns: conns(tick.rows.as_deref(), total, view),
        talkers: &tick.talkers,
    };
    serde_json::to_string(&frame).unwrap_or_else(|e| json!({ "error": e.to_string() }).to_string())
}

/// `GET /connections`: the top rows by `sort`, as the page gets them.
pub(super) async fn connections(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<RowQuery>, QueryRejection>,
) -> Response {
    let view = match view(query, shared.max_rows) {
        Ok(view) => view,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    shared.sampler.want_rows();
    let tick = shared.sampler.latest.borrow().clone();
    let conns = conns(
        tick.rows.as_deref(),
        tick.services.iter().map(|s| s.connections).sum(),
        &view,
    );
    json(StatusCode::OK, &conns)
}

/// `GET /events`: a `history` event (every service's ring), then a `tick`
/// event each second, until the page goes.
pub(super) async fn events(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<RowQuery>, QueryRejection>,
) -> Response {
    let view = match view(query, shared.max_rows) {
        Ok(view) => view,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let history = json!({
        "t": unix_ms(),
        "interval_ms": INTERVAL.as_millis() as u64,
        "capacity": HISTORY,
        "services": shared.sampler.history(),
    });
    // `retry`: a page whose stream was cut (a proxy's or server's deadline)
    // is back within a second.
    let first = Event::default()
        .event("history")
        .retry(std::time::Duration::from_secs(1))
        .data(history.to_string());
    let mut rx = shared.sampler.latest.subscribe();
    rx.mark_changed();
    let watching = Watching::new(shared);
    let ticks = stream::unfold(
        (rx, watching, view),
        |(mut rx, watching, view)| async move {
            rx.changed().await.ok()?;
            let tick = rx.borrow_and_update().clone();
            let event = Event::default().event("tick").data(frame(&tick, &view));
            Some((Ok::<_, Infallible>(event), (rx, watching, view)))
        },
    );
    let events = stream::once(async move { Ok::<_, Infallible>(first) }).chain(ticks);
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
