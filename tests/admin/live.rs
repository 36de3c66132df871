//! The dashboard's data: server-sent events with the history ring, rates
//! from the registry's counters, and the capped, filtered connection table.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use monconn::admin::Admin;
use monconn::Registry;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::http::{echo, get, round_trip, serve_admin};
use crate::support::{connect_from, quiet_config, within};

/// An open `GET /events` (or `/tap`) stream, parsed into (event, data) pairs.
pub(crate) struct Events {
    body: Incoming,
    buf: String,
    _sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Events {
    async fn open(addr: SocketAddr, query: &str) -> Events {
        Self::open_path(addr, &format!("/events{query}"), &[]).await
    }

    /// Opens the event stream at `path`, sending `headers`.
    pub(crate) async fn open_path(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Events {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::get(path).header("host", "t");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::default()).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert!(resp.headers().get("access-control-allow-origin").is_none());
        Events {
            body: resp.into_body(),
            buf: String::new(),
            _sender: sender,
        }
    }

    /// The next event with a name (keep-alive comments skipped).
    pub(crate) async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if !name.is_empty() {
                    return (name, serde_json::from_str(&data).unwrap());
                }
                continue;
            }
            let frame = within("an event", self.body.frame())
                .await
                .expect("the stream goes on")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    /// The next tick whose frame satisfies `cond`.
    async fn tick_where(&mut self, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..20 {
            let (name, data) = self.next().await;
            assert_eq!(name, "tick");
            if cond(&data) {
                return data;
            }
        }
        panic!("{what}: no such tick in 20");
    }
}

fn service<'a>(frame: &'a Value, sid: &str) -> &'a Value {
    frame["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sid"] == sid)
        .unwrap()
}

#[tokio::test]
async fn a_page_opened_late_sees_history_then_live_rates_rows_and_rejections() {
    let registry = Registry::new();
    let svc = registry.create("echo", quiet_config()).unwrap();
    let echo_addr = echo(&svc).await;
    let addr = serve_admin(Admin::new(registry.clone())).await;
    tokio::time::sleep(Duration::from_millis(2_300)).await;

    let mut events = Events::open(addr, "").await;
    let (name, history) = events.next().await;
    assert_eq!(name, "history");
    assert_eq!(
        (
            history["interval_ms"].as_u64(),
            history["capacity"].as_u64()
        ),
        (Some(1000), Some(300))
    );
    let ring = history["services"]["echo"].as_array().unwrap();
    assert!(ring.len() >= 2, "{ring:?}");
    assert_eq!(ring[0]["c"], 0);

    // Traffic: bytes and a connection show up, with rates.
    // Traffic that goes on: a rate needs bytes between two ticks.
    let client = TcpStream::connect(echo_addr).await.unwrap();
    let peer = client.local_addr().unwrap();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let traffic = tokio::spawn(async move {
        let mut client = client;
        let mut sent = 0u64;
        while stopped.try_recv().is_err() {
            round_trip(&mut client, &[7u8; 10_000]).await;
            sent += 10_000;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (client, sent)
    });
    let frame = events
        .tick_where("the connection with a rate", |f| {
            f["conns"]["rows"]
                .as_array()
                .is_some_and(|r| r.len() == 1 && r[0]["rate"].as_f64() > Some(0.0))
        })
        .await;
    stop.send(()).unwrap();
    let (_client, sent) = traffic.await.unwrap();
    let echo_tick = service(&frame, "echo");
    assert_eq!(echo_tick["connections"], 1);
    assert_eq!(echo_tick["ip_count"], 1);
    assert!(echo_tick["point"]["rin"].as_f64() > Some(0.0));
    let row = &frame["conns"]["rows"][0];
    assert_eq!(row["peer"], peer.to_string());
    assert_eq!(row["sid"], "echo");
    assert_eq!(row["in"], echo_tick["bytes_read"]);
    assert!(row["in"].as_u64().unwrap() <= sent);
    // Once the traffic stops, the totals are exact.
    let frame = events
        .tick_where("every byte counted", |f| {
            service(f, "echo")["bytes_read"] == sent
        })
        .await;
    assert_eq!(service(&frame, "echo")["bytes_written"], sent);
    assert_eq!(frame["conns"]["total"], 1);
    assert_eq!(frame["talkers"]["by_connections"][0]["ip"], "127.0.0.1");
    assert_eq!(frame["talkers"]["by_connections"][0]["connections"], 1);

    // A rejection shows up by reason, per second.
    svc.ban("127.0.0.9".parse::<IpAddr>().unwrap());
    let _refused = connect_from("127.0.0.9".parse().unwrap(), echo_addr).await;
    let frame = events
        .tick_where("a blacklisted rate", |f| {
            service(f, "echo")["rejected_rate"]["blacklisted"].as_f64() > Some(0.0)
        })
        .await;
    let echo_tick = service(&frame, "echo");
    assert_eq!(echo_tick["rejected"]["blacklisted"], 1);
    assert!(echo_tick["point"]["rej"].as_f64() > Some(0.0));
    assert_eq!(echo_tick["blacklist"], serde_json::json!(["127.0.0.9/32"]));
}

#[tokio::test]
async fn the_table_is_capped_sorted_and_filtered_on_the_server() {
    let registry = Registry::new();
    let svc = registry.create("echo", quiet_config()).unwrap();
    let echo_addr = echo(&svc).await;
    let addr = serve_admin(Admin::new(registry.clone()).max_rows(10)).await;
    let mut clients = Vec::new();
    for i in 0..30 {
        let mut c = TcpStream::connect(echo_addr).await.unwrap();
        round_trip(&mut c, &vec![1; 10 + i]).await;
        clients.push(c);
    }
    let two: IpAddr = "127.0.0.2".parse().unwrap();
    for _ in 0..5 {
        let mut c = connect_from(two, echo_addr).await;
        round_trip(&mut c, b"x").await;
        clients.push(c);
    }
    // `/connections` asks the sampler for rows: they come with its next tick.
    let mut table = get(addr, "/connections?limit=50&sort=in").await.json();
    for _ in 0..40 {
        if table["live"] == true && table["total"] == 35 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        table = get(addr, "/connections?limit=50&sort=in").await.json();
    }
    assert_eq!(
        (table["total"].as_u64(), table["matched"].as_u64()),
        (Some(35), Some(35))
    );
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 10, "capped by with_max_rows");
    let ins: Vec<u64> = rows.iter().map(|r| r["in"].as_u64().unwrap()).collect();
    assert_eq!(
        ins,
        (30..40).rev().collect::<Vec<u64>>(),
        "the top 10 by bytes in"
    );

    let filtered = get(addr, "/connections?filter=127.0.0.2").await.json();
    assert_eq!(
        (
            filtered["matched"].as_u64(),
            filtered["rows"].as_array().unwrap().len()
        ),
        (Some(5), 5)
    );
    assert_eq!(filtered["filter"], "127.0.0.2/32");
    let cidr = get(addr, "/connections?filter=127.0.0.2%2F31&limit=3")
        .await
        .json();
    assert_eq!(
        (
            cidr["matched"].as_u64(),
            cidr["rows"].as_array().unwrap().len()
        ),
        (Some(5), 3)
    );
    let none = get(addr, "/connections?filter=10.0.0.0/8").await.json();
    assert_eq!(
        (none["matched"].as_u64(), none["total"].as_u64()),
        (Some(0), Some(35))
    );

    for (query, message) in [
        ("filter=127.0.0.256", "bad IP or CIDR \"127.0.0.256\""),
        ("filter=10.0.0.0/99", "bad IP or CIDR \"10.0.0.0/99\""),
        (
            "sort=size",
            "bad sort \"size\": use rate, in, out, age or idle",
        ),
    ] {
        for route in ["/connections", "/events"] {
            let bad = get(addr, &format!("{route}?{query}")).await;
            assert_eq!(
                (bad.status, bad.error()),
                (StatusCode::BAD_REQUEST, message.to_owned()),
                "{route}?{query}"
            );
        }
    }
    let bad_limit = get(addr, "/connections?limit=-1").await;
    assert_eq!(bad_limit.status, StatusCode::BAD_REQUEST);
    assert!(bad_limit.error().contains("limit"), "{}", bad_limit.error());
}

/// 10,000 live connections (admitted and attached without sockets): each
/// page gets the capped table, and an update stays small and quick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_give_a_capped_table_and_a_small_update() {
    let registry = Registry::new();
    let svc = registry.create("big", quiet_config()).unwrap();
    let local: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let conns: Vec<_> = (0..10_000u32)
        .map(|i| {
            let peer = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 40_000));
            svc.admit(peer).expect("admitted").attach((), local)
        })
        .collect();
    let addr = serve_admin(Admin::new(registry.clone())).await;
    let mut events = Events::open(addr, "").await;
    let _history = events.next().await;
    let started = std::time::Instant::now();
    let frame = events
        .tick_where("the rows", |f| f["conns"]["live"] == true)
        .await;
    assert_eq!(frame["conns"]["total"], 10_000);
    assert_eq!(frame["conns"]["rows"].as_array().unwrap().len(), 200);
    assert_eq!(
        frame["talkers"]["by_connections"].as_array().unwrap().len(),
        10
    );
    let bytes = frame.to_string().len();
    assert!(bytes < 64 * 1024, "an update of {bytes} bytes");
    eprintln!(
        "10,000 connections: an update of {bytes} bytes, rows after {:?}",
        started.elapsed()
    );
    // The admin's CPU while one page watches (the whole process: run alone
    // for the figure, `--nocapture`).
    let (cpu0, t0) = (cpu_time(), std::time::Instant::now());
    for _ in 0..5 {
        events.tick_where("a tick", |_| true).await;
    }
    let per_sec = (cpu_time() - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    eprintln!(
        "10,000 connections, one page: {:.1} ms of CPU per second",
        per_sec * 1000.0
    );

    let t = std::time::Instant::now();
    let table = get(addr, "/connections?filter=10.0.1.0/24").await.json();
    assert_eq!(
        (
            table["matched"].as_u64(),
            table["rows"].as_array().unwrap().len()
        ),
        (Some(256), 200)
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop(conns);
    assert_eq!(svc.connections(), 0);
}

/// User and system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
