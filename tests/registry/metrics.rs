//! The `metrics` export, read back with metrics-util's `DebuggingRecorder`.
#![cfg(feature = "metrics")]

use crate::support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use metrics::Unit;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use monconn::Registry;
use support::{eventually, listen, quiet_config, tcp_pair_from};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One exported series: its kind, unit, whether it has a description, value.
#[derive(Debug)]
struct Series {
    kind: MetricKind,
    unit: Option<Unit>,
    described: bool,
    value: DebugValue,
}

/// A series' name and labels.
type SeriesKey = (String, Vec<(String, String)>);

/// Series by (name, labels), for the service `sid` only.
fn series(snapshotter: &Snapshotter, sid: &str) -> BTreeMap<SeriesKey, Series> {
    let mut out = BTreeMap::new();
    for (key, unit, desc, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        if !labels.contains(&("service".to_owned(), sid.to_owned())) {
            continue;
        }
        let series = Series {
            kind,
            unit,
            described: desc.is_some_and(|d| !d.is_empty()),
            value,
        };
        out.insert((key.name().to_owned(), labels), series);
    }
    out
}

fn labels(sid: &str, extra: Option<(&str, &str)>) -> Vec<(String, String)> {
    let mut l = vec![("service".to_owned(), sid.to_owned())];
    if let Some((k, v)) = extra {
        l.push((k.to_owned(), v.to_owned()));
    }
    l
}

fn counter(
    s: &BTreeMap<SeriesKey, Series>,
    name: &str,
    sid: &str,
    extra: Option<(&str, &str)>,
) -> u64 {
    match &s[&(name.to_owned(), labels(sid, extra))].value {
        DebugValue::Counter(n) => *n,
        other => panic!("{name}: not a counter: {other:?}"),
    }
}

/// `monconn_connections_rejected_total` of `sid` for `reason`.
fn rejected(s: &BTreeMap<SeriesKey, Series>, sid: &str, reason: &str) -> u64 {
    counter(
        s,
        "monconn_connections_rejected_total",
        sid,
        Some(("reason", reason)),
    )
}

/// `monconn_connections_closed_total` of `sid` for `cause`.
fn closed(s: &BTreeMap<SeriesKey, Series>, sid: &str, cause: &str) -> u64 {
    counter(
        s,
        "monconn_connections_closed_total",
        sid,
        Some(("cause", cause)),
    )
}

fn gauge(s: &BTreeMap<SeriesKey, Series>, name: &str, sid: &str) -> f64 {
    match &s[&(name.to_owned(), labels(sid, None))].value {
        DebugValue::Gauge(v) => v.into_inner(),
        other => panic!("{name}: not a gauge: {other:?}"),
    }
}

#[tokio::test]
async fn publishes_exact_figures_with_units_and_only_the_service_label() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let sid = "metrics-exact";
    let service = Registry::new()
        .create(sid, quiet_config().conn_limit(2))
        .unwrap();
    let listener = listen().await;
    let two = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let (mut a, mut a_client) = tcp_pair_from(&listener, &service, support::LOCALHOST).await;
    let (mut b, mut b_client) = tcp_pair_from(&listener, &service, two).await;

    a_client.write_all(&[7; 100]).await.unwrap();
    a.read_exact(&mut [0; 100]).await.unwrap();
    b.write_all(b"pong!!!").await.unwrap();
    b_client.read_exact(&mut [0; 7]).await.unwrap();
    // A third connection is over the limit.
    let c_client = support::connect_from(support::LOCALHOST, listener.local_addr().unwrap()).await;
    let (c, peer) = listener.accept().await.unwrap();
    assert!(service
        .wrap(c, peer, listener.local_addr().unwrap())
        .is_err());
    drop(c_client);

    metrics::with_local_recorder(&recorder, || {
        monconn::metrics::describe();
        service.publish_metrics();
    });
    let s = series(&snapshotter, sid);
    let total = "monconn_connections_accepted_total";
    assert_eq!(counter(&s, total, sid, None), 2);
    assert_eq!(rejected(&s, sid, "conn_limit"), 1);
    assert_eq!(rejected(&s, sid, "blacklisted"), 0);
    assert_eq!(closed(&s, sid, "normal"), 0);
    assert_eq!(gauge(&s, "monconn_connections_active", sid), 2.0);
    assert_eq!(gauge(&s, "monconn_client_ips_active", sid), 2.0);
    assert_eq!(counter(&s, "monconn_bytes_read_total", sid, None), 100);
    assert_eq!(counter(&s, "monconn_bytes_written_total", sid, None), 7);

    // Units, descriptions, kinds and labels of every series.
    for ((name, labels), series) in &s {
        assert!(name.starts_with("monconn_"), "{name}");
        assert!(series.described, "{name} has no description");
        let (kind, unit) = match name.as_str() {
            "monconn_bytes_read_total" | "monconn_bytes_written_total" => {
                (MetricKind::Counter, Unit::Bytes)
            }
            "monconn_connections_active" | "monconn_client_ips_active" => {
                (MetricKind::Gauge, Unit::Count)
            }
            "monconn_connection_duration_seconds" => (MetricKind::Histogram, Unit::Seconds),
            n if n.ends_with("_total") => (MetricKind::Counter, Unit::Count),
            n => panic!("unexpected series {n}"),
        };
        assert_eq!((series.kind, series.unit), (kind, Some(unit)), "{name}");
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        let allowed = match name.as_str() {
            "monconn_connections_rejected_total" => vec!["service", "reason"],
            "monconn_connections_closed_total" => vec!["service", "cause"],
            _ => vec!["service"],
        };
        assert_eq!(keys, allowed, "{name}");
        assert!(
            labels.iter().all(|(_, v)| !v.contains("127.0.0")),
            "{name}: peer address in labels"
        );
    }
    // Every reason and cause is published, zero or not.
    let reasons = s
        .keys()
        .filter(|(n, _)| n == "monconn_connections_rejected_total")
        .count();
    let causes = s
        .keys()
        .filter(|(n, _)| n == "monconn_connections_closed_total")
        .count();
    assert_eq!((reasons, causes), (8, 7));

    // Close both: one kicked, one normally; the duration histogram gets one
    // sample per connection, recorded as it closes.
    assert!(service.kick(b.record().id()));
    metrics::with_local_recorder(&recorder, || {
        drop(a);
        drop(b);
        service.publish_metrics();
    });
    let s = series(&snapshotter, sid);
    assert_eq!(closed(&s, sid, "normal"), 1);
    assert_eq!(closed(&s, sid, "kicked"), 1);
    assert_eq!(gauge(&s, "monconn_connections_active", sid), 0.0);
    assert_eq!(gauge(&s, "monconn_client_ips_active", sid), 0.0);
    assert_eq!(counter(&s, "monconn_bytes_read_total", sid, None), 100);
    assert_eq!(counter(&s, "monconn_bytes_written_total", sid, None), 7);
    match &s[&(
        "monconn_connection_duration_seconds".to_owned(),
        labels(sid, None),
    )]
        .value
    {
        DebugValue::Histogram(samples) => {
            assert_eq!(samples.len(), 2);
            assert!(
                samples
                    .iter()
                    .all(|v| (0.0..60.0).contains(&v.into_inner())),
                "{samples:?}"
            );
        }
        other => panic!("not a histogram: {other:?}"),
    }
    drop((a_client, b_client));
}

#[tokio::test]
async fn the_sweeper_tick_publishes_without_being_asked() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only global recorder of this test binary");
    let sid = "metrics-tick";
    let config = quiet_config().idle_interval(Duration::from_millis(20));
    let service = Registry::new().create(sid, config).unwrap();
    let listener = listen().await;
    let (mut conn, mut client) = tcp_pair_from(&listener, &service, support::LOCALHOST).await;
    client.write_all(b"hello").await.unwrap();
    conn.read_exact(&mut [0; 5]).await.unwrap();

    eventually("a tick published the live figures", || {
        let s = series(&snapshotter, sid);
        s.contains_key(&("monconn_bytes_read_total".to_owned(), labels(sid, None)))
            && counter(&s, "monconn_bytes_read_total", sid, None) == 5
            && gauge(&s, "monconn_connections_active", sid) == 1.0
    })
    .await;
    drop(conn);
    eventually("a tick published the close", || {
        let s = series(&snapshotter, sid);
        s.contains_key(&(
            "monconn_connections_closed_total".to_owned(),
            labels(sid, Some(("cause", "normal"))),
        )) && closed(&s, sid, "normal") == 1
    })
    .await;
}
