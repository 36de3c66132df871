//! The token, the session cookie and the request header: who may do what.

use hyper::{Method, StatusCode};
use monconn::admin::Admin;
use monconn::Registry;

use crate::http::{call, get, serve_admin, Answer};
use crate::support::quiet_config;

const TOKEN: &str = "s3cret-token";

async fn guarded() -> (std::net::SocketAddr, Registry) {
    let registry = Registry::new();
    registry.create("web", quiet_config()).unwrap();
    (
        serve_admin(Admin::new(registry.clone()).token(TOKEN)).await,
        registry,
    )
}

fn unauthorized(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{:?}", answer.body);
    assert_eq!(answer.headers["www-authenticate"], "Bearer");
    assert_eq!(
        answer.error(),
        "missing or wrong bearer token (or session cookie)"
    );
}

fn no_cors(answer: &Answer) {
    let cors: Vec<_> = answer
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .collect();
    assert!(cors.is_empty(), "CORS headers: {cors:?}");
}

#[tokio::test]
async fn a_token_guards_every_route_but_the_page_and_the_probes() {
    let (addr, _registry) = guarded().await;
    let bearer = format!("Bearer {TOKEN}");
    for path in [
        "/stats",
        "/stats/web",
        "/events",
        "/connections",
        "/services/web/blacklist",
    ] {
        unauthorized(&get(addr, path).await);
        unauthorized(
            &call(
                addr,
                Method::GET,
                path,
                &[("authorization", "Bearer wrong")],
            )
            .await,
        );
    }
    // Never from the URL.
    unauthorized(&get(addr, &format!("/stats?token={TOKEN}")).await);
    unauthorized(&get(addr, &format!("/stats?access_token={TOKEN}")).await);
    // The scheme in any case, spaces after it.
    for value in [
        bearer.clone(),
        format!("bearer {TOKEN}"),
        format!("BEARER   {TOKEN}"),
    ] {
        let answer = call(
            addr,
            Method::GET,
            "/stats/web",
            &[("authorization", &value)],
        )
        .await;
        assert_eq!(answer.status, 200, "{value}");
        no_cors(&answer);
    }
    unauthorized(
        &call(
            addr,
            Method::GET,
            "/stats",
            &[("authorization", &format!("Basic {TOKEN}"))],
        )
        .await,
    );
    for path in ["/", "/healthz", "/readyz"] {
        assert_eq!(get(addr, path).await.status, 200, "{path}");
    }
}

#[tokio::test]
async fn state_changing_requests_need_the_header_and_the_token() {
    let (addr, registry) = guarded().await;
    let bearer = format!("Bearer {TOKEN}");
    let path = "/services/web/blacklist/192.0.2.1";
    // A cross-site form can send neither header.
    let forged = call(addr, Method::POST, path, &[("authorization", &bearer)]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(
        forged.error(),
        "a POST needs the header `X-Monconn-Request: 1`"
    );
    unauthorized(&call(addr, Method::POST, path, &[("x-monconn-request", "1")]).await);
    let empty = call(
        addr,
        Method::POST,
        path,
        &[("authorization", &bearer), ("x-monconn-request", "")],
    )
    .await;
    assert_eq!(empty.status, StatusCode::FORBIDDEN);
    assert!(registry.get("web").unwrap().config().blacklist.is_empty());

    let done = call(
        addr,
        Method::POST,
        path,
        &[("authorization", &bearer), ("x-monconn-request", "1")],
    )
    .await;
    assert_eq!(done.status, 200);
    assert_eq!(registry.get("web").unwrap().config().blacklist.len(), 1);

    // A preflight is never granted.
    let preflight = call(
        addr,
        Method::OPTIONS,
        path,
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-monconn-request"),
        ],
    )
    .await;
    unauthorized(&preflight);
    no_cors(&preflight);
    let preflight = call(
        addr,
        Method::OPTIONS,
        path,
        &[
            ("authorization", &bearer),
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await;
    assert_eq!(preflight.status, StatusCode::FORBIDDEN);
    no_cors(&preflight);
}

#[tokio::test]
async fn without_a_token_state_changes_still_need_the_header() {
    let registry = Registry::new();
    registry.create("web", quiet_config()).unwrap();
    let addr = serve_admin(Admin::new(registry.clone())).await;
    assert_eq!(get(addr, "/stats").await.status, 200);
    let forged = call(addr, Method::POST, "/services/web/blacklist/192.0.2.1", &[]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let forged = call(
        addr,
        Method::DELETE,
        "/services/web/blacklist/192.0.2.1",
        &[("content-type", "text/plain")],
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    // No token: a session is not needed, and no cookie is set.
    let session = call(
        addr,
        Method::POST,
        "/session",
        &[("x-monconn-request", "1")],
    )
    .await;
    assert_eq!(session.status, StatusCode::NO_CONTENT);
    assert!(session.headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn a_session_cookie_stands_for_the_token_but_not_for_the_header() {
    let (addr, _registry) = guarded().await;
    let bearer = format!("Bearer {TOKEN}");
    unauthorized(
        &call(
            addr,
            Method::POST,
            "/session",
            &[("x-monconn-request", "1")],
        )
        .await,
    );
    let no_header = call(
        addr,
        Method::POST,
        "/session",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(no_header.status, StatusCode::FORBIDDEN);

    let session = call(
        addr,
        Method::POST,
        "/session",
        &[("authorization", &bearer), ("x-monconn-request", "1")],
    )
    .await;
    assert_eq!(session.status, StatusCode::NO_CONTENT);
    let set = session.headers["set-cookie"].to_str().unwrap().to_owned();
    let (pair, attributes) = set.split_once(';').unwrap();
    assert_eq!(attributes, " HttpOnly; SameSite=Strict; Path=/");
    let (name, value) = pair.split_once('=').unwrap();
    assert_eq!(name, "monconn_session");
    assert_eq!(value.len(), 64);
    assert!(!value.contains(TOKEN));

    let cookie = format!("theme=dark; {pair}");
    let stats = call(addr, Method::GET, "/stats/web", &[("cookie", &cookie)]).await;
    assert_eq!(stats.status, 200);
    unauthorized(
        &call(
            addr,
            Method::GET,
            "/stats",
            &[("cookie", "monconn_session=0000")],
        )
        .await,
    );
    // The event stream answers (its headers; the stream itself goes on).
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/events")
        .header("host", "t")
        .header("cookie", &cookie)
        .body(http_body_util::Full::<hyper::body::Bytes>::default())
        .unwrap();
    let events = sender.send_request(req).await.unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");

    // The cookie does not stand for the header.
    let forged = call(
        addr,
        Method::POST,
        "/services/web/blacklist/192.0.2.1",
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let done = call(
        addr,
        Method::POST,
        "/services/web/blacklist/192.0.2.1",
        &[("cookie", &cookie), ("x-monconn-request", "1")],
    )
    .await;
    assert_eq!(done.status, 200);

    let closed = call(
        addr,
        Method::DELETE,
        "/session",
        &[("cookie", &cookie), ("x-monconn-request", "1")],
    )
    .await;
    assert_eq!(closed.status, StatusCode::NO_CONTENT);
    assert!(closed.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
}

#[tokio::test]
async fn nested_under_a_prefix_the_page_is_open_and_the_rest_guarded() {
    let registry = Registry::new();
    registry.create("web", quiet_config()).unwrap();
    let app = axum::Router::new().nest(
        "/monconn",
        monconn::admin::router(Admin::new(registry).token(TOKEN)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    for path in ["/monconn", "/monconn/healthz", "/monconn/readyz"] {
        assert_eq!(get(addr, path).await.status, 200, "{path}");
    }
    for path in ["/monconn/stats", "/monconn/events", "/monconn/nowhere"] {
        unauthorized(&get(addr, path).await);
    }
    let bearer = format!("Bearer {TOKEN}");
    let stats = call(
        addr,
        Method::GET,
        "/monconn/stats/web",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(stats.json()["sid"], "web");
}
