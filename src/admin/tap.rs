//! `GET /tap?sid=&ip=&conn=`: a [`Tap`] as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use serde_json::{json, Value};

use super::routes::{error, parse_net, Shared};
use crate::tap::{Tap, TapEvent, TapFilter, TapKind};

/// How often a quiet stream checks whether events were lost.
const LOST_CHECK: Duration = Duration::from_secs(1);

/// `?sid=&ip=&conn=`, each optional.
#[derive(Debug, Default, Deserialize)]
pub(super) struct TapQuery {
    sid: Option<String>,
    ip: Option<String>,
    conn: Option<String>,
}

/// The filter from the query; the error names the bad value (a 400).
fn filter(query: Result<Query<TapQuery>, QueryRejection>) -> Result<TapFilter, String> {
    let Query(q) = query.map_err(|e| e.body_text())?;
    let given = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let mut filter = TapFilter::new();
    if let Some(sid) = given(q.sid) {
        filter = filter.with_sid(sid);
    }
    if let Some(ip) = given(q.ip) {
        filter = filter.with_ip(parse_net(&ip)?);
    }
    if let Some(conn) = given(q.conn) {
        let id = conn
            .parse()
            .map_err(|_| format!("bad conn \"{conn}\": a connection id is a number"))?;
        filter = filter.with_conn(id);
    }
    Ok(filter)
}

/// `GET /tap`: a `tap` event (the filter and limits), then an event per
/// thing that happens to a matching connection (`open`, `read`, `write`,
/// `close`), and a `lost` event with the running total whenever events were
/// dropped, until the client goes (which stops the tap).
pub(super) async fn tap(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<TapQuery>, QueryRejection>,
) -> Response {
    let filter = match filter(query) {
        Ok(filter) => filter,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let limits = shared.tap_limits;
    let tap = shared.registry.tap_with_limits(filter, limits);
    let f = tap.filter();
    let first = Event::default().event("tap").data(
        json!({
            "filter": {
                "sid": f.sid(),
                "ip": f.ip().map(|n| n.to_string()),
                "conn": f.conn(),
            },
            "bytes_per_event": limits.bytes_per_event(),
            "events_per_sec": limits.events_per_sec(),
        })
        .to_string(),
    );
    let state = Stream {
        tap,
        reported: 0,
        first: Some(first),
    };
    let events = stream::unfold(state, |mut s| async move {
        let event = s.next().await;
        Some((Ok::<_, Infallible>(event), s))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

struct Stream {
    tap: Tap,
    /// The lost count the client was last told.
    reported: u64,
    first: Option<Event>,
}

impl Stream {
    async fn next(&mut self) -> Event {
        if let Some(first) = self.first.take() {
            return first;
        }
        loop {
            let lost = self.tap.lost();
            if lost > self.reported {
                self.reported = lost;
                return Event::default()
                    .event("lost")
                    .data(json!({ "lost": lost }).to_string());
            }
            tokio::select! {
                event = self.tap.next() => match event {
                    Some(event) => return sse(&event),
                    // A tap never ends by itself.
                    None => std::future::pending::<()>().await,
                },
                () = tokio::time::sleep(LOST_CHECK) => {}
            }
        }
    }
}

fn sse(event: &TapEvent) -> Event {
    let t = event
        .at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut data = json!({
        "sid": &*event.sid,
        "conn": event.conn,
        "peer": event.peer.to_string(),
        "t": t,
    });
    let extra = match &event.kind {
        TapKind::Open { local, live } => json!({ "local": local.to_string(), "live": live }),
        TapKind::Read(b) | TapKind::Write(b) => json!({
            "offset": b.offset,
            "len": b.len,
            "shown": b.head.len(),
            "hex": event.hex().unwrap_or_default(),
        }),
        TapKind::Close {
            cause,
            bytes_read,
            bytes_written,
            duration,
        } => json!({
            "cause": cause.as_str(),
            "bytes_read": bytes_read,
            "bytes_written": bytes_written,
            "duration_ms": duration.as_millis() as u64,
        }),
    };
    if let (Value::Object(data), Value::Object(extra)) = (&mut data, extra) {
        data.extend(extra);
    }
    Event::default().event(event.name()).data(data.to_string())
}
