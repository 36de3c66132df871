//! End to end: what a reload (SIGHUP) costs and what it refuses. A big
//! list reloads without freezing forwarding or the admin API; a file too
//! big or nested too deep is refused at once; a file with no service is
//! refused (at startup, on reload, by `--check-config`); a removed
//! service's draining connections stay in `/stats` until they end.

use crate::support;

use std::fmt::Write;

use support::*;

/// A blacklist of `n` distinct addresses (10.x.y.z), as YAML lines.
fn big_blacklist(n: u32) -> String {
    let mut yaml = String::from("  ip_blacklist:\n");
    for i in 0..n {
        let [_, a, b, c] = (i + 1).to_be_bytes();
        let _ = writeln!(yaml, "    - 10.{a}.{b}.{c}");
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_100k_entry_blacklist_keeps_forwarding_and_the_admin_api() {
    let backend = banner_backend().await.port();
    let list = big_blacklist(100_000);
    // One shard: the admin API, the reload and every connection share the
    // main runtime, which the reload must not hold.
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| Setup {
        args: vec!["--threads".into(), "1".into()],
        ..Setup::config(service_yaml("a", port, backend, &list))
    });
    let addr = local(port);
    let mut live = open([127, 0, 0, 1], addr).await.expect("admitted");
    // A runtime rule, which the reload keeps.
    let (status, body) = fwd.http("POST", "/services/a/blacklist/127.0.0.9").await;
    assert_eq!(status, 200, "{body}");

    // One setting changes; the list stays.
    fwd.write_config(&service_yaml(
        "a",
        port,
        backend,
        &format!("  conn_limit: 50\n{list}"),
    ));
    fwd.signal(libc::SIGHUP);
    // While it reloads (or once it has): the live pair echoes, the admin
    // API answers, new connections are admitted. Each waits up to WAIT.
    for round in 0..5 {
        echo(&mut live, format!("during {round}").as_bytes()).await;
        assert_eq!(fwd.http("GET", "/stats/a").await.0, 200);
    }
    fwd.wait_stderr("config reloaded").await;
    assert!(open([127, 0, 0, 2], addr).await.is_some());
    assert!(
        open([127, 0, 0, 9], addr).await.is_none(),
        "runtime rule kept"
    );
    let stats = fwd.stats("a").await;
    assert_eq!(stats["rejected"]["blacklisted"], 1);
    let log = fwd.stderr();
    assert!(log.contains("service settings changed"), "{log}");
}

/// `a:` followed by `depth` opening brackets, on one line.
fn nested(depth: usize) -> String {
    format!("a: {}\n", "[".repeat(depth))
}

#[test]
fn a_config_nested_too_deep_is_refused_with_its_line_and_the_limit() {
    // 100,000 levels: 45 s of parsing before the check.
    let (status, _, stderr) = run_to_end(Some(&nested(100_000)), &["--check-config"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 1, column 36: nested deeper than 32 levels"),
        "{stderr}"
    );
    // Brackets in a comment are text, not nesting.
    let text = format!(
        "# {}\na: {{listen_port: 1, backend_port: 2}}\n",
        "[".repeat(100)
    );
    let (status, stdout, stderr) = run_to_end(Some(&text), &["--check-config"]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("config OK: 1 service(s)"), "{stdout}");
}

#[test]
fn a_config_file_over_16_mib_is_refused() {
    let line = "# a comment line that fills the file up to its limit\n";
    let text = line.repeat(16 * 1024 * 1024 / line.len() + 1);
    let (status, _, stderr) = run_to_end(Some(&text), &["--check-config"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("larger than 16 MiB"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_config_nested_too_deep_keeps_the_running_one() {
    let backend = banner_backend().await.port();
    let (fwd, [port]) =
        Forwarder::start_with_ports(|[port]| Setup::config(service_yaml("a", port, backend, "")));
    let mut live = open([127, 0, 0, 1], local(port)).await.unwrap();
    fwd.write_config(&nested(100_000));
    fwd.signal(libc::SIGHUP);
    fwd.wait_stderr("config reload failed").await;
    let log = fwd.stderr();
    assert!(log.contains("nested deeper than 32 levels"), "{log}");
    echo(&mut live, b"unaffected").await;
    assert!(open([127, 0, 0, 1], local(port)).await.is_some());
}

/// Files with no service: empty, comments only, a lone document marker.
const NO_SERVICE: [&str; 3] = ["", "# services\n#   none yet\n", "---\n"];

#[test]
fn check_config_refuses_a_file_with_no_service() {
    for text in NO_SERVICE {
        let (status, stdout, stderr) = run_to_end(Some(text), &["--check-config"]);
        assert_eq!(status.code(), Some(2), "{text:?}: {stdout}{stderr}");
        assert!(stderr.contains("defines no service"), "{text:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_file_of_no_service_keeps_every_service_and_connection() {
    let backend = banner_backend().await.port();
    let (fwd, [a, b]) = Forwarder::start_with_ports(|[a, b]| {
        Setup::config(service_yaml("a", a, backend, "") + &service_yaml("b", b, backend, ""))
    });
    let mut live = open([127, 0, 0, 1], local(a)).await.unwrap();
    for (n, text) in NO_SERVICE.into_iter().enumerate() {
        fwd.write_config(text);
        fwd.signal(libc::SIGHUP);
        fwd.wait_stderr_count("config reload failed", n + 1).await;
        echo(&mut live, b"still here").await;
        assert!(open([127, 0, 0, 1], local(a)).await.is_some(), "{text:?}");
        assert!(open([127, 0, 0, 1], local(b)).await.is_some(), "{text:?}");
    }
    let log = fwd.stderr();
    assert!(!log.contains("config reloaded"), "{log}");
    assert_eq!(log.matches("defines no service").count(), 3, "{log}");
    // The probes above are closed; the forwarder sees it a moment later.
    let a = fwd
        .wait_stats("a", "only the live connection", |s| s["connections"] == 1)
        .await;
    assert_eq!(a["closed"]["shutdown"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_services_draining_connections_stay_in_stats_until_they_end() {
    let backend = banner_backend().await.port();
    let (fwd, [a, b]) = Forwarder::start_with_ports(|[a, b]| {
        Setup::config(
            service_yaml("a", a, backend, "")
                + &service_yaml("b", b, backend, "  wait_timeout: 60\n"),
        )
    });
    let mut live = open([127, 0, 0, 1], local(b)).await.unwrap();
    fwd.write_config(&service_yaml("a", a, backend, ""));
    fwd.signal(libc::SIGHUP);
    fwd.wait_stderr("config reloaded").await;
    echo(&mut live, b"draining").await;

    let all = || async {
        let (status, body) = fwd.http("GET", "/stats").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let stats = all().await;
    assert_eq!(
        stats["services"].as_array().map(Vec::len),
        Some(1),
        "{stats}"
    );
    let draining = &stats["draining"];
    assert_eq!(draining[0]["sid"], "b", "{stats}");
    assert_eq!(draining[0]["connections"], 1, "{stats}");
    assert_eq!(draining[0]["bytes_read"], 8, "{stats}");

    // Once its last connection ends, it leaves.
    drop(live);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let stats = all().await;
        if stats["draining"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still draining: {stats}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    fwd.wait_stderr("service stopped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_a_big_config_loads_stops_without_waiting_for_it() {
    let backend = banner_backend().await.port();
    let (mut fwd, [port]) =
        Forwarder::start_with_ports(|[port]| Setup::config(service_yaml("a", port, backend, "")));
    // Some 14 MB, under the 16 MiB limit: seconds of parsing in a debug build.
    fwd.write_config(&service_yaml("a", port, backend, &big_blacklist(800_000)));
    fwd.signal(libc::SIGHUP);
    // Well into the loading, by any measure.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    fwd.signal(libc::SIGTERM);
    let status = fwd.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", fwd.stderr());
    let log = fwd.stderr();
    assert!(log.contains("stopping"), "{log}");
    // It stopped first: the reload was never applied.
    assert!(!log.contains("config reloaded"), "{log}");
}
