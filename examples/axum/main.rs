//! An axum app served through a monitored listener.
//!
//! ```text
//! cargo run --example axum --features axum,metrics -- --listen 127.0.0.1:3000 \
//!     --conn-limit 1000 --per-ip-limit 50 --blacklist 10.0.0.0/8
//! curl localhost:3000/           # hello, with what the server knows of the connection
//! curl localhost:3000/stats      # {"services": [...]}; /stats/{sid}, /stats/{sid}/connections
//! curl localhost:3000/metrics    # Prometheus text
//! ```
//! Ctrl-C (or SIGTERM) stops accepting, lets requests finish for up to
//! `--wait-timeout` seconds, then cuts the rest and exits.
//!
//! `--plain` serves `/` and `/hello` from a plain tokio `TcpListener` (no
//! monitoring), for the benchmark in `bench/axum.sh`, which compares
//! `/hello` (a static "Hello, World!") in both modes.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use ipnet::IpNet;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use monconn::integrations::ConnInfo;
use monconn::{Listener, Registry, ServiceConfig};

/// An axum app served through a monitored listener.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// ServiceMonitor id in stats and metrics (default: the listen address).
    #[arg(long)]
    sid: Option<String>,
    /// Most concurrent connections.
    #[arg(long)]
    conn_limit: Option<usize>,
    /// Most distinct client IPs.
    #[arg(long)]
    ip_limit: Option<usize>,
    /// Most concurrent connections from one IP.
    #[arg(long)]
    per_ip_limit: Option<usize>,
    /// Refuse these addresses or networks (repeatable), e.g. 10.0.0.0/8, 192.0.2.7.
    #[arg(long, value_parser = parse_net)]
    blacklist: Vec<IpNet>,
    /// Close connections idle this many seconds (0: never).
    #[arg(long, default_value_t = 900)]
    max_idle: u64,
    /// TCP keepalive period in seconds (0: off).
    #[arg(long, default_value_t = 30)]
    keepalive: u64,
    /// On shutdown, how long requests may go on (seconds) before they are cut.
    #[arg(long, default_value_t = 10)]
    wait_timeout: u64,
    /// Serve from a plain tokio TcpListener, without monitoring (for benchmarks).
    #[arg(long)]
    plain: bool,
    /// Do not install the Prometheus recorder (`/metrics` is then empty).
    #[arg(long)]
    no_metrics: bool,
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("not an IP address or network: {s:?}"))
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    prometheus: PrometheusHandle,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.plain {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "serving (plain TcpListener)");
        let app = Router::new()
            .route("/", get(hello_plain))
            .route("/hello", get(hello_world));
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown_signal())
        .await?;
        return Ok(());
    }

    let recorder = PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    if !args.no_metrics {
        metrics::set_global_recorder(recorder).map_err(|e| format!("metrics recorder: {e}"))?;
        monconn::metrics::describe();
    }
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });

    let registry = Registry::new();
    let sid = args.sid.clone().unwrap_or_else(|| args.listen.to_string());
    let config = ServiceConfig::default()
        .conn_limit(args.conn_limit)
        .ip_limit(args.ip_limit)
        .per_ip_limit(args.per_ip_limit)
        .blacklist(args.blacklist.iter().copied())
        .max_idle((args.max_idle > 0).then(|| Duration::from_secs(args.max_idle)))
        .keepalive((args.keepalive > 0).then(|| Duration::from_secs(args.keepalive)))
        .wait_timeout(Duration::from_secs(args.wait_timeout));
    let service = registry.create(&sid, config).unwrap();
    let listener = Listener::bind(args.listen, service.clone()).await?;
    tracing::info!(addr = %listener.local_addr(), %sid, "serving (monitored)");

    let app = Router::new()
        .route("/", get(hello))
        .route("/hello", get(hello_world))
        .route("/metrics", get(prometheus_text))
        .with_state(AppState {
            registry: registry.clone(),
            prometheus,
        })
        .nest("/stats", monconn::integrations::stats::router(registry));
    let shutdown = monconn::integrations::graceful(service, shutdown_signal());
    let report = shutdown.report();
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<ConnInfo>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    if let Some(report) = report.wait().await {
        tracing::info!(drained = report.drained, cut = report.cut, "stopped");
    }
    Ok(())
}

async fn hello(ConnectInfo(conn): ConnectInfo<ConnInfo>) -> String {
    format!(
        "Hello, {}! Connection {} has read {} bytes and written {}.\n",
        conn.peer(),
        conn.id(),
        conn.bytes_read(),
        conn.bytes_written()
    )
}

/// The benchmark's route, the same in both modes.
async fn hello_world() -> &'static str {
    "Hello, World!\n"
}

async fn hello_plain(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> String {
    format!("Hello, {peer}!\n")
}

/// Publishes every service's figures, then renders them.
async fn prometheus_text(State(state): State<AppState>) -> impl IntoResponse {
    for service in state.registry.list() {
        service.publish_metrics();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus.render(),
    )
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
