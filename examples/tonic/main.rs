//! A tonic server (the gRPC health service) through a monitored listener,
//! and a client mode that calls it with a real tonic client.
//!
//! ```text
//! cargo run --example tonic --features tonic,axum -- --listen 127.0.0.1:50051 --stats 127.0.0.1:9000
//! cargo run --example tonic --features tonic,axum -- --client --listen 127.0.0.1:50051
//! curl 127.0.0.1:9000/grpc/connections
//! ```
//! The server logs every call with the caller's address (tonic's
//! `remote_addr`) and its connection as monconn sees it, and prints the
//! service's stats every `--stats-every` seconds. Ctrl-C stops it, cutting
//! calls still open `--wait-timeout` seconds later (health `Watch` streams
//! never end by themselves).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use monconn::integrations::tonic::{ConnInfoLayer, Incoming};
use monconn::integrations::ConnInfo;
use monconn::{Listener, Registry, ServiceConfig};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Server};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// tonic-health through a monitored listener.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on (or, with --client, to call).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Call the health service at --listen instead of serving it.
    #[arg(long)]
    client: bool,
    /// With --client: how many checks to make on one connection.
    #[arg(long, default_value_t = 3)]
    calls: u32,
    /// Most concurrent connections.
    #[arg(long)]
    conn_limit: Option<usize>,
    /// On shutdown, how long calls may go on (seconds) before they are cut.
    #[arg(long, default_value_t = 5)]
    wait_timeout: u64,
    /// Serve the stats as JSON on this address (`monconn::integrations::stats`).
    #[arg(long)]
    stats: Option<SocketAddr>,
    /// Print the service's stats this often (seconds; 0: never).
    #[arg(long, default_value_t = 10)]
    stats_every: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let result = if args.client {
        client(&args).await
    } else {
        server(&args).await
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn server(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = ServiceConfig::default()
        .conn_limit(args.conn_limit)
        .nodelay(true)
        .wait_timeout(Duration::from_secs(args.wait_timeout));
    let service = Registry::global().create("grpc", config).unwrap();
    let listener = Listener::bind(args.listen, service.clone()).await?;
    tracing::info!(addr = %listener.local_addr(), "serving grpc.health.v1.Health");

    let (_reporter, health) = tonic_health::server::health_reporter();
    let health = InterceptedService::new(health, |req: tonic::Request<()>| {
        let conn = req.extensions().get::<ConnInfo>();
        tracing::info!(
            remote = ?req.remote_addr(),
            conn = ?conn.map(ConnInfo::id),
            conn_bytes_read = ?conn.map(ConnInfo::bytes_read),
            "call"
        );
        Ok(req)
    });

    if let Some(addr) = args.stats {
        tokio::spawn(async move {
            let registry = Registry::global().clone();
            if let Err(e) = monconn::integrations::stats::bind(addr, registry).await {
                tracing::error!(error = %e, "stats server stopped");
            }
        });
    }
    if args.stats_every > 0 {
        let every = Duration::from_secs(args.stats_every);
        let stats = service.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let snapshot = stats.snapshot();
                tracing::info!("{}", serde_json::to_string(&snapshot).unwrap_or_default());
            }
        });
    }

    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    };
    let shutdown = monconn::integrations::graceful(service.clone(), ctrl_c);
    let report = shutdown.report();
    Server::builder()
        .layer(ConnInfoLayer::new(service.clone()))
        .add_service(health)
        .serve_with_incoming_shutdown(Incoming::new(listener), shutdown)
        .await?;
    if let Some(report) = report.wait().await {
        tracing::info!(drained = report.drained, cut = report.cut, "stopped");
    }
    println!("{}", serde_json::to_string(&service.snapshot())?);
    Ok(())
}

async fn client(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let channel = Channel::from_shared(format!("http://{}", args.listen))?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.listen))?;
    let mut health = HealthClient::new(channel);
    for _ in 0..args.calls {
        let resp = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        let status = resp.into_inner().status();
        println!("{}", status.as_str_name());
    }
    Ok(())
}
