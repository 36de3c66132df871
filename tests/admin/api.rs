//! Every route of the admin router, over real sockets.

use std::net::IpAddr;

use axum::routing::get as route_get;
use axum::Router;
use hyper::{Method, StatusCode};
use monconn::admin::{self, Admin};
use monconn::Registry;
use tokio::net::TcpStream;

use crate::http::{act, closed_by_server, echo, get, round_trip, serve_admin};
use crate::support::{connect_from, eventually, quiet_config, within};

#[tokio::test]
async fn a_nested_router_serves_stats_health_metrics_and_the_page() {
    let registry = Registry::new();
    let echo_svc = registry.create("echo", quiet_config()).unwrap();
    let _other = registry.create("other:1", quiet_config()).unwrap();
    let echo_addr = echo(&echo_svc).await;
    let mut client = TcpStream::connect(echo_addr).await.unwrap();
    round_trip(&mut client, b"hello").await;

    let admin = Admin::new(registry.clone()).metrics(|| "monconn_up 1\n".to_owned());
    let app = Router::new()
        .route("/", route_get(|| async { "app" }))
        .nest("/monconn", admin::router(admin));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    assert_eq!(&get(addr, "/").await.body[..], b"app");
    let page = get(addr, "/monconn").await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(std::str::from_utf8(&page.body)
        .unwrap()
        .contains("<title>monconn"));

    let all = get(addr, "/monconn/stats").await.json();
    let sids: Vec<_> = all["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sid"].clone())
        .collect();
    assert_eq!(sids, ["echo", "other:1"]);
    let one = get(addr, "/monconn/stats/echo").await.json();
    assert_eq!(
        (one["connections"].as_u64(), one["bytes_read"].as_u64()),
        (Some(1), Some(5))
    );
    assert_eq!(
        get(addr, "/monconn/stats/other%3A1").await.json()["sid"],
        "other:1"
    );
    let conns = get(addr, "/monconn/stats/echo/connections").await.json();
    assert_eq!(conns["sid"], "echo");
    assert_eq!(
        conns["connections"][0]["peer"],
        client.local_addr().unwrap().to_string()
    );
    assert_eq!(conns["connections"][0]["bytes_written"], 5);

    let missing = get(addr, "/monconn/stats/nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.headers["content-type"], "application/json");
    assert_eq!(missing.error(), "no service `nope`");
    let nowhere = get(addr, "/monconn/nowhere").await;
    assert_eq!(
        (nowhere.status, nowhere.error()),
        (StatusCode::NOT_FOUND, "no such route: /nowhere".to_owned())
    );

    assert_eq!(get(addr, "/monconn/healthz").await.json()["alive"], true);
    assert_eq!(get(addr, "/monconn/readyz").await.json()["ready"], true);
    let metrics = get(addr, "/monconn/metrics").await;
    assert_eq!(
        metrics.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(&metrics.body[..], b"monconn_up 1\n");

    let wrong_method = act(addr, Method::DELETE, "/monconn/stats").await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(
        wrong_method.error(),
        "method DELETE is not allowed on /stats"
    );
}

#[tokio::test]
async fn without_a_renderer_there_is_no_metrics_route() {
    let addr = serve_admin(Admin::new(Registry::new())).await;
    let answer = get(addr, "/metrics").await;
    assert_eq!(
        (answer.status, answer.error()),
        (StatusCode::NOT_FOUND, "no such route: /metrics".to_owned())
    );
}

#[tokio::test]
async fn a_kick_closes_a_live_connection_and_a_gone_one_gets_404() {
    let registry = Registry::new();
    let svc = registry.create("echo", quiet_config()).unwrap();
    let echo_addr = echo(&svc).await;
    let mut client = TcpStream::connect(echo_addr).await.unwrap();
    round_trip(&mut client, b"ping").await;
    let id = svc.snapshot_with_conns().conns.unwrap()[0].id;
    let addr = serve_admin(Admin::new(registry.clone())).await;

    let path = format!("/services/echo/connections/{id}/kick");
    let kicked = act(addr, Method::POST, &path).await;
    assert_eq!(kicked.status, 200, "{:?}", kicked.body);
    assert_eq!(
        kicked.json(),
        serde_json::json!({"sid": "echo", "id": id, "kicked": true})
    );
    closed_by_server(&mut client).await;
    eventually("the kick counted", || svc.snapshot().closed["kicked"] == 1).await;

    let gone = act(addr, Method::POST, &path).await;
    assert_eq!(gone.status, 404);
    assert_eq!(
        gone.error(),
        format!("no connection {id} in service `echo`")
    );

    let bad = act(addr, Method::POST, "/services/echo/connections/x1/kick").await;
    assert_eq!(
        (bad.status, bad.error()),
        (
            StatusCode::BAD_REQUEST,
            "`x1` is not a connection id".to_owned()
        )
    );
    let no_service = act(addr, Method::POST, "/services/nope/connections/1/kick").await;
    assert_eq!(
        (no_service.status, no_service.error()),
        (StatusCode::NOT_FOUND, "no service `nope`".to_owned())
    );
    assert!(svc.conn(id).is_none());
}

#[tokio::test]
async fn a_ban_refuses_new_clients_kicks_with_kick_1_and_an_unban_lifts_it() {
    let registry = Registry::new();
    let svc = registry.create("echo", quiet_config()).unwrap();
    let echo_addr = echo(&svc).await;
    let nine: IpAddr = "127.0.0.9".parse().unwrap();
    let mut live = connect_from(nine, echo_addr).await;
    round_trip(&mut live, b"before").await;
    let addr = serve_admin(Admin::new(registry.clone())).await;

    // A plain ban keeps the live connection and refuses the next one.
    let banned = act(addr, Method::POST, "/services/echo/blacklist/127.0.0.9").await;
    assert_eq!(banned.status, 200, "{:?}", banned.body);
    assert_eq!(
        banned.json(),
        serde_json::json!({"sid": "echo", "blacklist": ["127.0.0.9/32"], "timed_bans": [], "kicked": 0})
    );
    round_trip(&mut live, b"still here").await;
    let mut refused = connect_from(nine, echo_addr).await;
    closed_by_server(&mut refused).await;
    eventually("counted as blacklisted", || {
        svc.snapshot().rejected["blacklisted"] == 1
    })
    .await;

    // A CIDR with ?kick=1, written plainly or percent-encoded.
    let cidr = act(
        addr,
        Method::POST,
        "/services/echo/blacklist/127.0.0.0/24?kick=1",
    )
    .await;
    assert_eq!(cidr.json()["kicked"], 1);
    assert_eq!(
        cidr.json()["blacklist"],
        serde_json::json!(["127.0.0.9/32", "127.0.0.0/24"])
    );
    closed_by_server(&mut live).await;
    let listed = get(addr, "/services/echo/blacklist").await.json();
    assert_eq!(
        listed["blacklist"],
        serde_json::json!(["127.0.0.9/32", "127.0.0.0/24"])
    );

    let lifted = act(
        addr,
        Method::DELETE,
        "/services/echo/blacklist/127.0.0.0%2F24",
    )
    .await;
    assert_eq!(
        lifted.json()["blacklist"],
        serde_json::json!(["127.0.0.9/32"])
    );
    let again = act(
        addr,
        Method::DELETE,
        "/services/echo/blacklist/127.0.0.0/24",
    )
    .await;
    assert_eq!(
        (again.status, again.error()),
        (
            StatusCode::NOT_FOUND,
            "127.0.0.0/24 is not on the blacklist of `echo`".to_owned()
        )
    );
    act(addr, Method::DELETE, "/services/echo/blacklist/127.0.0.9").await;
    let mut welcome = connect_from(nine, echo_addr).await;
    round_trip(&mut welcome, b"back").await;

    for (path, message) in [
        (
            "/services/echo/blacklist/10.0.0.300",
            "bad IP or CIDR \"10.0.0.300\"",
        ),
        (
            "/services/echo/blacklist/10.0.0.0/33",
            "bad IP or CIDR \"10.0.0.0/33\"",
        ),
        (
            "/services/echo/blacklist/bad%20ip",
            "bad IP or CIDR \"bad ip\"",
        ),
        (
            "/services/echo/blacklist/10.0.0.1?kick=maybe",
            "bad kick value \"maybe\": use kick=1 or kick=0",
        ),
    ] {
        let bad = act(addr, Method::POST, path).await;
        assert_eq!(
            (bad.status, bad.error()),
            (StatusCode::BAD_REQUEST, message.to_owned()),
            "{path}"
        );
    }
    assert_eq!(svc.config().blacklist.len(), 0);
}

#[tokio::test]
async fn readyz_is_503_while_a_service_stops() {
    let registry = Registry::new();
    let web = registry
        .create(
            "web",
            quiet_config().wait_timeout(std::time::Duration::from_secs(30)),
        )
        .unwrap();
    let _db = registry.create("db", quiet_config()).unwrap();
    let addr = serve_admin(Admin::new(registry.clone())).await;
    assert_eq!(get(addr, "/readyz").await.status, 200);
    // A live connection holds the drain open.
    let (_conn, _client) = crate::support::tcp_pair(&web).await;
    let closing = tokio::spawn(async move { web.close().await });
    eventually("the service stopping", || {
        !registry.get("web").unwrap().is_running()
    })
    .await;
    let answer = within("readyz", get(addr, "/readyz")).await;
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.json(),
        serde_json::json!({"ready": false, "stopping": ["web"]})
    );
    assert_eq!(get(addr, "/healthz").await.status, 200);
    closing.abort();
}

#[tokio::test]
async fn a_ban_for_a_time_lists_its_remaining_time_expires_and_bad_times_are_named() {
    let registry = Registry::new();
    let svc = registry.create("echo", quiet_config()).unwrap();
    let echo_addr = echo(&svc).await;
    let nine: IpAddr = "127.0.0.9".parse().unwrap();
    let addr = serve_admin(Admin::new(registry.clone())).await;

    let long = act(
        addr,
        Method::POST,
        "/services/echo/blacklist/10.0.0.0/8?for=10m",
    )
    .await;
    assert_eq!(long.status, 200, "{:?}", long.body);
    let bans = long.json()["timed_bans"].clone();
    assert_eq!(bans[0]["net"], "10.0.0.0/8");
    assert_eq!(bans[0]["source"], "local");
    let remaining = bans[0]["remaining_ms"].as_u64().unwrap();
    assert!((599_000..=600_000).contains(&remaining), "{remaining}");
    assert_eq!(long.json()["blacklist"], serde_json::json!([]));

    let short = act(
        addr,
        Method::POST,
        "/services/echo/blacklist/127.0.0.9?for=1",
    )
    .await;
    assert_eq!(short.json()["timed_bans"].as_array().unwrap().len(), 2);
    let stats = get(addr, "/stats/echo").await.json();
    assert_eq!(stats["timed_bans"][1]["net"], "127.0.0.9/32");
    let mut refused = connect_from(nine, echo_addr).await;
    closed_by_server(&mut refused).await;
    eventually("counted as blacklisted", || {
        svc.snapshot().rejected["blacklisted"] == 1
    })
    .await;
    // Expired after its second, with no timer of its own.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let mut welcome = connect_from(nine, echo_addr).await;
    round_trip(&mut welcome, b"back").await;
    let listed = get(addr, "/services/echo/blacklist").await.json();
    assert_eq!(listed["timed_bans"].as_array().unwrap().len(), 1);

    for (query, message) in [
        (
            "for=soon",
            "bad ban time \"soon\": use seconds or a duration such as 90s, 10m, 1h, 2d",
        ),
        ("for=0", "bad ban time \"0\": it must be more than zero"),
        (
            "for=-5m",
            "bad ban time \"-5m\": use seconds or a duration such as 90s, 10m, 1h, 2d",
        ),
    ] {
        let path = format!("/services/echo/blacklist/10.1.0.1?{query}");
        let bad = act(addr, Method::POST, &path).await;
        assert_eq!(
            (bad.status, bad.error()),
            (StatusCode::BAD_REQUEST, message.to_owned())
        );
    }
    assert_eq!(svc.timed_bans().len(), 1);
}
