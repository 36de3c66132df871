//! What operators read: the access log (text and JSON, and `--access-log
//! off`), the connection duration as a Prometheus histogram, build and
//! process metrics, and the shipped Prometheus and Grafana configs, checked
//! against the metrics the process really exports.

use crate::support;

use std::collections::BTreeSet;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A forwarder of one `-p` mapping to a banner backend, plus `extra`
/// arguments, logging at INFO (no debug lines).
async fn start(extra: &[&str]) -> (Forwarder, std::net::SocketAddr) {
    let backend = banner_backend().await;
    let (fwd, [port]) = Forwarder::start_with_ports(|[port]| {
        let mut setup = Setup::mapping(format!("127.0.0.1:{port}={backend}"));
        setup.args.extend(extra.iter().map(|s| s.to_string()));
        setup.log = Some("info");
        setup
    });
    (fwd, local(port))
}

/// One connection: greeting, one echo of "ping!", then the client closes.
async fn one_connection(addr: std::net::SocketAddr) {
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(greeting(&mut client).await, "hello");
    echo(&mut client, b"ping!").await;
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_closed_connection_gets_one_access_line() {
    let (fwd, addr) = start(&[]).await;
    one_connection(addr).await;
    fwd.wait_stderr("bytes_in=5").await;
    let log = fwd.stderr();
    let line = log
        .lines()
        .find(|l| l.contains(" access: ") && l.contains("closed"))
        .unwrap_or_else(|| panic!("no access line in:\n{log}"));
    for field in [
        "bytes_in=5",
        "bytes_out=11",
        "cause=\"normal\"",
        "duration_ms=",
    ] {
        assert!(line.contains(field), "no `{field}` in {line}");
    }
    assert!(
        line.contains(&format!("sid=\"127.0.0.1:{}\"", addr.port())),
        "{line}"
    );
    assert_eq!(
        log.matches(" access: ").count(),
        1,
        "one line per connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_off_logs_no_access_line() {
    let (fwd, addr) = start(&["--access-log", "off"]).await;
    one_connection(addr).await;
    fwd.wait_stats(&format!("127.0.0.1:{}", addr.port()), "the close", |s| {
        s["closed"]["normal"] == 1
    })
    .await;
    assert!(!fwd.stderr().contains(" access: "), "{}", fwd.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let (fwd, addr) = start(&["--log-format", "json"]).await;
    one_connection(addr).await;
    fwd.wait_stderr("\"bytes_in\":5").await;
    let log = fwd.stderr();
    let mut access = None;
    for line in log.lines().filter(|l| !l.is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if value["target"] == "access" {
            access = Some(value);
        }
    }
    let access = access.unwrap_or_else(|| panic!("no access object in:\n{log}"));
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["fields"]["bytes_in"], 5);
    assert_eq!(access["fields"]["bytes_out"], 11);
    assert_eq!(access["fields"]["cause"], "normal");
}

/// The names of the series in a Prometheus text exposition.
fn series_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The metric names a PromQL expression reads (`monconn_*`, `process_*`).
fn queried_metrics(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("monconn_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_a_duration_histogram_build_and_process_metrics() {
    let (fwd, addr) = start(&[]).await;
    one_connection(addr).await;
    let sid = format!("127.0.0.1:{}", addr.port());
    fwd.wait_stats(&sid, "the close", |s| s["closed"]["normal"] == 1)
        .await;
    // Process metrics are read every second; the duration every close.
    let mut text = String::new();
    for _ in 0..100 {
        let (status, body) = fwd.http("GET", "/metrics").await;
        assert_eq!(status, 200);
        text = body;
        if text.contains("process_open_fds") && text.contains("duration_seconds_bucket") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        text.contains(&format!(
            "monconn_connection_duration_seconds_bucket{{service=\"{sid}\",le=\"+Inf\"}} 1"
        )),
        "{text}"
    );
    assert!(text.contains("le=\"0.005\""), "{text}");
    assert!(
        text.contains(&format!(
            "monconn_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    for name in [
        "process_open_fds",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(name), "no {name} in {text}");
    }

    // The shipped Grafana dashboard queries only metrics that exist (the
    // `_bucket` series of the histogram among them).
    let names = series_names(&text);
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../ops/grafana-dashboard.json"))
            .expect("the dashboard is JSON");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expr");
            for metric in queried_metrics(expr) {
                queried += 1;
                assert!(
                    names.contains(&metric),
                    "the dashboard queries {metric}, not exported"
                );
            }
        }
    }
    assert!(queried >= 10, "{queried} metrics queried");

    // The shipped Prometheus config scrapes the admin API's /metrics.
    let prometheus: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(include_str!("../../ops/prometheus.yml")).expect("YAML");
    let job = &prometheus["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    assert_eq!(job["job_name"].as_str(), Some("monconn-forwarder"));
}
