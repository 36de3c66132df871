//! Security checks against the real forwarder process: who may reach the
//! admin API, hex dumps only when asked for, and blacklist bypass attempts
//! (IPv4-mapped IPv6 peers on a dual-stack listener, other spellings of the
//! same address in the config and the admin API, leading zeros).
//!
//! Leading zeros: IPv4 addresses are parsed strictly, so `127.0.0.02` and
//! `0177.0.0.1` are refused with an error, never read as octal or decimal.

use crate::support;
use crate::support::reliability;

use reliability::count;
use support::*;

#[test]
fn admin_api_off_loopback_needs_a_token() {
    let mapping = format!("127.0.0.1:{}=127.0.0.1:9", free_port());
    for admin in [
        "0.0.0.0:9".to_owned(),
        "[::]:9".to_owned(),
        format!("{}:9", "10.1.2.3"),
        "[::ffff:127.0.0.1]:9".to_owned(),
    ] {
        let (status, _, stderr) = run_to_end(None, &["-p", &mapping, "--admin", &admin]);
        assert_eq!(status.code(), Some(2), "{admin}: {stderr}");
        assert!(
            stderr.contains("not a loopback address"),
            "{admin}: {stderr}"
        );
        assert!(stderr.contains("--admin-token"), "{stderr}");
    }
    // An empty token is no token.
    let (status, _, stderr) = run_to_end(
        None,
        &["-p", &mapping, "--admin", "0.0.0.0:9", "--admin-token", ""],
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("empty"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_wrong_or_missing_is_401_and_changes_nothing() {
    let backend = banner_backend().await;
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| {
        let mut setup = Setup::mapping(format!("127.0.0.1:{port}={backend}"));
        setup.args.extend(["--admin-token".into(), "t0ken".into()]);
        setup
    });
    let sid = encode(&format!("127.0.0.1:{port}"));
    let blacklist = format!("/services/{sid}/blacklist/127.0.0.2");
    for auth in [
        None,
        Some("Bearer t0ke"),
        Some("Bearer t0kenn"),
        Some("bearer t0kem"),
        Some("Basic dDBrZW4="),
        Some("t0ken"),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        for (method, path) in [("POST", blacklist.as_str()), ("GET", "/stats")] {
            let (status, body) = http(fwd.admin, method, path, &headers).await;
            assert_eq!(status, 401, "{method} {path} with {auth:?}: {body}");
        }
    }
    // The refused POSTs changed nothing: 127.0.0.2 still gets through.
    assert!(open([127, 0, 0, 2], local(port)).await.is_some());
    let ok = [("Authorization", "Bearer t0ken")];
    let (status, body) = http(fwd.admin, "GET", "/stats", &ok).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"accepted\":1"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hex_dumps_only_for_services_that_ask() {
    let backend = banner_backend().await;
    // The test harness enables TRACE for monconn::hexdump: only the
    // service's print_bytes decides.
    let (fwd, [quiet, dump]) = Forwarder::start_with_ports(|[quiet, dump]| {
        Setup::config(
            service_yaml("quiet", quiet, backend.port(), "")
                + &service_yaml("dump", dump, backend.port(), "  print_bytes: true\n"),
        )
    });
    let mut c = open([127, 0, 0, 1], local(quiet)).await.unwrap();
    echo(&mut c, b"SECRETPASSWORD").await;
    let mut d = open([127, 0, 0, 1], local(dump)).await.unwrap();
    echo(&mut d, b"MONCONN").await;
    // "MONCONN" as the dump of the asking service shows it.
    fwd.wait_stderr("4d4f 4e43 4f4e 4e").await;
    fwd.wait_stats("quiet", "the bytes counted", |s| s["bytes_read"] == 14)
        .await;
    let log = fwd.stderr();
    // "SECRETPASSWORD" (53 45 43 52 ...), neither as hex nor as text, and
    // not the banner it got back either.
    assert!(!log.contains("5345 4352"), "{log}");
    assert!(!log.contains("SECRETPASSWORD"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("sid=quiet") && l.contains("6865 6c6c 6f")),
        "{log}"
    );
}

/// One service on every interface (a dual-stack `[::]` socket, so IPv4
/// clients arrive as `::ffff:a.b.c.d`), with rules spelled as IPv6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_mapped_spellings_cannot_bypass_the_blacklist() {
    let backend = banner_backend().await;
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| {
        Setup::config(format!(
            "svc:\n  listen_port: {port}\n  backend_port: {}\n  ip_blacklist:\n    \
             - 0:0:0:0:0:ffff:7f00:2\n    - ::ffff:127.0.5.0/120\n    - ::FFFF:7F00:6\n",
            backend.port()
        ))
    });
    let addr = local(port);
    // The rules read as the IPv4 they mean.
    let snapshot = fwd.stats("svc").await;
    assert_eq!(snapshot["rejected"]["blacklisted"], 0);
    assert!(open([127, 0, 0, 2], addr).await.is_none(), "7f00:2");
    assert!(open([127, 0, 5, 9], addr).await.is_none(), "/120");
    assert!(open([127, 0, 0, 6], addr).await.is_none(), "upper case");
    let _three = open([127, 0, 0, 3], addr).await.expect("not listed");

    // The admin API: an IPv6 spelling of 127.0.0.3 blacklists 127.0.0.3.
    let path = format!(
        "/services/svc/blacklist/{}",
        encode("0:0:0:0:0:ffff:7f00:3")
    );
    let (status, body) = fwd.http("POST", &path).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"127.0.0.3/32\""), "{body}");
    assert!(open([127, 0, 0, 3], addr).await.is_none());
    // And another spelling of it removes that rule.
    let path = format!("/services/svc/blacklist/{}", encode("::ffff:127.0.0.3"));
    let (status, body) = fwd.http("DELETE", &path).await;
    assert_eq!(status, 200, "{body}");
    assert!(open([127, 0, 0, 3], addr).await.is_some());

    let stats = fwd.stats("svc").await;
    assert_eq!(count(&stats, "rejected", "blacklisted"), 4, "{stats}");
    // Peers show as IPv4, the form the rules and per-IP counts use.
    let ips: Vec<&str> = stats["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["127.0.0.3"], "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leading_zeros_are_refused_in_the_admin_api() {
    let backend = banner_backend().await;
    let (fwd, [port]) =
        Forwarder::start_with_ports(|[port]| Setup::mapping(format!("127.0.0.1:{port}={backend}")));
    let sid = encode(&format!("127.0.0.1:{port}"));
    for bad in ["127.0.0.02", "0177.0.0.1", "127.000.0.1/8", "010.0.0.0/8"] {
        let path = format!("/services/{sid}/blacklist/{}", encode(bad));
        let (status, body) = fwd.http("POST", &path).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("leading zeros"), "{bad}: {body}");
    }
    for bad in ["0x7f.0.0.1", "127.1", "2130706433", "127.0.0.1/33"] {
        let path = format!("/services/{sid}/blacklist/{}", encode(bad));
        let (status, body) = fwd.http("POST", &path).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("\"error\""), "{body}");
    }
    // Nothing was added.
    assert!(open([127, 0, 0, 1], local(port)).await.is_some());
}

#[test]
fn leading_zeros_in_config_ips_stop_the_start() {
    for (key, value) in [
        ("ip_blacklist", "[127.0.0.02]"),
        ("ip_blacklist", "[\"0177.0.0.1\"]"),
        ("ip_allowlist", "[010.0.0.0/8]"),
        ("listen_ip", "127.000.000.001"),
    ] {
        let config = format!(
            "svc:\n  listen_port: {}\n  backend_port: 9\n  {key}: {value}\n",
            free_port()
        );
        let (status, _, stderr) = run_to_end(Some(&config), &[]);
        assert_eq!(status.code(), Some(2), "{key}: {value}: {stderr}");
        assert!(stderr.contains("leading zeros"), "{key}: {value}: {stderr}");
        assert!(stderr.contains("line 4"), "{key}: {value}: {stderr}");
    }
}

/// The real process's admin API under malformed requests: raw bytes,
/// broken request lines, bad framing, paths that decode to nothing valid.
/// It answers what it can, never dies, and leaks no connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_of_the_real_process_survives_garbage() {
    use rand::{Rng, SeedableRng};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let backend = banner_backend().await;
    let (fwd, [port]) =
        Forwarder::start_with_ports(|[port]| Setup::mapping(format!("127.0.0.1:{port}={backend}")));
    let at_start = reliability::settled_fds(fwd.pid()).await;
    let fixed: Vec<Vec<u8>> = [
        &b"GET /stats/%FF%FE HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"GET /stats/%00/connections HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /services/%2e%2e/blacklist/%25 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /services/x/connections/99999999999999999999999/kick HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /stats HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET /stats HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /stats HTTP/9.9\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a TLS ClientHello
        b"GET /stats HTTP/1.1\r\nHost: x\r\n",             // never finished
        b"\r\n\r\n\r\n",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let mut inputs = fixed;
    for _ in 0..190 {
        let len = rng.random_range(0..2048);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if rng.random_bool(0.5) {
            let mut line = b"GET /".to_vec();
            line.append(&mut junk);
            junk = line;
        }
        inputs.push(junk);
    }
    let mut answered = 0;
    for raw in &inputs {
        let mut s = tokio::net::TcpStream::connect(fwd.admin).await.unwrap();
        let _ = s.write_all(raw).await;
        let _ = s.shutdown().await;
        let mut out = Vec::new();
        let read = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "no answer or close for {raw:?}");
        if out.starts_with(b"HTTP/1.1 ") {
            answered += 1;
        }
    }
    // Still serving, both the API and the forwarded service.
    let (status, body) = fwd.http("GET", "/stats").await;
    assert_eq!(status, 200, "{body}");
    assert!(open([127, 0, 0, 1], local(port)).await.is_some());
    reliability::wait_fds_back(&fwd, at_start).await;
    println!(
        "admin API: {} malformed requests, {answered} answered with a status, the rest closed",
        inputs.len()
    );
}
