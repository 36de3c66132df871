//! End to end: the command line. Start errors exit 2 with one clear
//! message, the Go tool's own config loads, `--help`, the admin token.

use crate::support;

use support::*;

/// The example config of the Go tool's README, as it is.
const GO_CONFIG: &str = r#"# monconn config.yaml
service_1: # service name
  # service listen on
  listen_ip: "127.0.0.1"
  # monconn listen on 80
  listen_port: 80
  # forward requests to this backend
  backend_ip: "127.0.0.1"
  # the real web listen on 8080
  backend_port: 8080
  # service config
  read_timeout: 600 # 10 minutes
  write_timeout: 600 # 10 minutes
  wait_timeout: 60 # 1 minute
  max_idle: 900 # 15 minutes
  conn_limit: 0 # zero means no limit
  ip_limit: 0 # zero means no limit
  keepalive: true
  print_bytes: true
  ip_blacklist:
    - 1.1.1.1
    - 2.2.2.2
"#;

/// Runs to the end and expects exit code 2 with `needles` in one line of
/// stderr, and no panic.
fn expect_start_error(config: Option<&str>, args: &[&str], needles: &[&str]) -> String {
    let (status, _, stderr) = run_to_end(config, args);
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "no `{needle}` in: {stderr}");
    }
    stderr
}

#[test]
fn the_go_tools_example_config_loads() {
    let (status, stdout, stderr) = run_to_end(Some(GO_CONFIG), &["--check-config"]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("service_1: 127.0.0.1:80 -> 127.0.0.1:8080"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_tools_example_config_runs_on_free_ports() {
    let backend = banner_backend().await;
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| {
        Setup::config(
            GO_CONFIG
                .replace("listen_port: 80", &format!("listen_port: {port}"))
                .replace(
                    "backend_port: 8080",
                    &format!("backend_port: {}", backend.port()),
                ),
        )
    });
    let mut conn = open([127, 0, 0, 1], local(port)).await.expect("forwarded");
    echo(&mut conn, b"hi").await;
    let stats = fwd.stats("service_1").await;
    assert_eq!(stats["accepted"], 1);
    assert_eq!(stats["bytes_read"], 2);
}

#[test]
fn port_in_use_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mapping = format!("{addr}=127.0.0.1:9");
    expect_start_error(None, &["-p", &mapping], &["cannot listen on", "in use"]);
}

#[test]
fn admin_port_in_use_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = taken.local_addr().unwrap().to_string();
    let mapping = format!("127.0.0.1:{}=127.0.0.1:9", free_port());
    expect_start_error(
        None,
        &["-p", &mapping, "--admin", &admin],
        &["admin", "in use"],
    );
}

#[test]
fn unknown_key_names_file_line_column_and_key() {
    let config = GO_CONFIG.replace("ip_blacklist", "ip_blaklist");
    let stderr = expect_start_error(
        Some(&config),
        &[],
        &[
            "config.yaml",
            "line 20, column 3",
            "unknown field `ip_blaklist`",
        ],
    );
    assert_eq!(stderr.lines().count(), 1, "one message: {stderr}");
}

#[test]
fn bad_values_in_the_config_are_named() {
    let cases = [
        (
            "listen_port: 80",
            "listen_port: 70000",
            "line 6, column 16",
            "invalid port `70000`",
        ),
        (
            "- 2.2.2.2",
            "- 02.2.2.2",
            "ip_blacklist[1]",
            "leading zeros",
        ),
        (
            "- 2.2.2.2",
            "- 2.2.2.0/33",
            "service_1.ip_blacklist[1]",
            "too long",
        ),
        (
            "max_idle: 900",
            "max_idle: -1",
            "max_idle",
            "invalid number of seconds",
        ),
        ("keepalive: true", "keepalive: maybe", "keepalive", "maybe"),
        (
            "keepalive: true",
            "keepalive: true\n  half_close: sometimes",
            "half_close",
            "sometimes",
        ),
        (
            "keepalive: true",
            "keepalive: true\n  ipv6_prefix: 129",
            "service_1.ipv6_prefix",
            "from 0 to 128",
        ),
    ];
    for (from, to, where_, what) in cases {
        expect_start_error(Some(&GO_CONFIG.replace(from, to)), &[], &[where_, what]);
    }
}

#[test]
fn unreadable_config_exits_2() {
    expect_start_error(
        None,
        &["-c", "/nonexistent/monconn.yaml"],
        &["cannot read config file /nonexistent/monconn.yaml"],
    );
}

#[test]
fn bad_port_mappings_exit_2() {
    for (value, needle) in [
        ("8080", "expected LISTEN=BACKEND"),
        (":80=", "expected HOST:PORT"),
        ("::1:80=127.0.0.1:80", "brackets"),
        ("010.0.0.1:80=127.0.0.1:80", "leading zeros"),
        (":80=127.0.0.1:0", "port 0"),
        (":99999=127.0.0.1:80", "invalid port"),
    ] {
        expect_start_error(None, &["-p", value], &[needle]);
    }
}

#[test]
fn two_services_on_one_address_exit_2() {
    let port = free_port();
    let a = format!(":{port}=127.0.0.1:1");
    let b = format!("127.0.0.1:{port}=127.0.0.1:2");
    expect_start_error(None, &["-p", &a, "-p", &b], &["listen on the same address"]);
}

#[test]
fn public_admin_without_a_token_exits_2() {
    let mapping = format!("127.0.0.1:{}=127.0.0.1:9", free_port());
    expect_start_error(
        None,
        &["-p", &mapping, "--admin", "0.0.0.0:9"],
        &["not a loopback address", "--admin-token"],
    );
}

#[test]
fn nothing_to_forward_exits_2() {
    expect_start_error(None, &[], &["nothing to forward"]);
}

#[test]
fn help_documents_flags_keys_and_examples() {
    let (status, stdout, _) = run_to_end(None, &["--help"]);
    assert_eq!(status.code(), Some(0));
    for needle in [
        "-p :22=127.0.0.1:2222",
        "--admin-token",
        "MONCONN_ADMIN_TOKEN",
        "ip_blacklist",
        "SIGHUP",
    ] {
        assert!(stdout.contains(needle), "no `{needle}` in --help");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_is_required_on_every_request() {
    let backend = banner_backend().await;
    let fwd = start_with_token(backend, "s3cret");
    for path in ["/stats", "/metrics", "/nowhere"] {
        let (status, body) = http(fwd.admin, "GET", path, &[]).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("\"error\""), "{body}");
        let (status, _) = http(
            fwd.admin,
            "GET",
            path,
            &[("Authorization", "Bearer wrong!")],
        )
        .await;
        assert_eq!(status, 401);
    }
    let (status, body) = http(
        fwd.admin,
        "GET",
        "/stats",
        &[("Authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("{\"services\":["), "{body}");
}
