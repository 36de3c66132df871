//! `forwarder`: the Go monconn command line, rebuilt on the `monconn` crate.
//!
//! A TCP port forwarder that monitors every connection. Run
//! `cargo run --example forwarder --features metrics -- --help` for the
//! flags, the config file keys and examples.
//!
//! Exit codes: 0 after a clean stop (SIGINT, SIGTERM), 2 for bad arguments,
//! a bad config or an address that cannot be bound, 1 for a second signal
//! during the drain.

mod addr;
mod admin;
mod cli;
mod config;
mod copy;
mod reload;
mod service;
mod stats;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use monconn::Registry;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use crate::cli::Args;
use crate::reload::{load_specs, Forwarder};

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let code = runtime.block_on(run(args));
    // Do not wait for stray tasks (a DNS lookup, say) on the way out.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

fn fail(message: String) -> ExitCode {
    eprintln!("forwarder: {message}");
    ExitCode::from(2)
}

fn init_logging(args: &Args) {
    let level = if args.debug { "debug" } else { &args.log_level };
    // Hex dumps are logged at TRACE, and only for services with print_bytes.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},monconn::hexdump=trace")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn run(args: Args) -> ExitCode {
    let flags: Vec<_> = args.mappings.iter().map(cli::Mapping::spec).collect();
    let specs = match load_specs(args.config.as_deref(), &flags) {
        Ok(specs) => specs,
        Err(e) => return fail(e),
    };
    if args.check_config {
        for spec in &specs {
            println!("{}: {} -> {}", spec.sid, spec.listen, spec.backend);
        }
        println!("config OK: {} service(s)", specs.len());
        return ExitCode::SUCCESS;
    }
    if specs.is_empty() {
        return fail("nothing to forward: give -p LISTEN=BACKEND or -c FILE (see --help)".into());
    }
    if let Some(addr) = args.admin {
        if let Err(e) = admin::check_bind(addr, args.admin_token.as_deref()) {
            return fail(e);
        }
    }
    // Signals first, so that a signal sent right after start is not lost.
    let (mut hup, mut int, mut term, mut quit) = match (
        signal(SignalKind::hangup()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::quit()),
    ) {
        (Ok(h), Ok(i), Ok(t), Ok(q)) => (h, i, t, q),
        _ => return fail("cannot install signal handlers".into()),
    };
    let metrics = match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(handle) => handle,
        Err(e) => return fail(format!("cannot install the metrics recorder: {e}")),
    };
    let registry = Registry::new();
    let mut forwarder = match Forwarder::start(registry.clone(), specs, flags, args.config.clone())
    {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    // The admin API binds last: once it answers, every service listens.
    if let Some(addr) = args.admin {
        let listener = match admin::bind(addr).await {
            Ok(listener) => listener,
            Err(e) => return fail(e.to_string()),
        };
        tracing::info!(%addr, "admin API listening");
        let admin = admin::Admin {
            registry: registry.clone(),
            metrics,
            token: args.admin_token.as_deref().map(Arc::from),
        };
        tokio::spawn(admin::serve(listener, admin));
    }
    if args.stats_interval > 0 {
        tokio::spawn(stats::log_every(
            registry.clone(),
            Duration::from_secs(args.stats_interval),
        ));
    }
    tracing::info!(services = forwarder.len(), "ready");

    loop {
        tokio::select! {
            _ = hup.recv() => match forwarder.reload().await {
                Ok(()) => tracing::info!(services = forwarder.len(), "config reloaded"),
                Err(e) => tracing::error!(error = %e, "config reload failed"),
            },
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = quit.recv() => break,
        }
    }

    tracing::info!("stopping");
    let shutdown = forwarder.shutdown();
    let reports = tokio::select! {
        reports = shutdown => reports,
        _ = int.recv() => return cut_short(),
        _ = term.recv() => return cut_short(),
        _ = quit.recv() => return cut_short(),
    };
    stats::wait_closed(&registry, Duration::from_secs(2)).await;
    stats::print_final(&registry, &reports);
    let _ = std::io::stdout().flush();
    ExitCode::SUCCESS
}

fn cut_short() -> ExitCode {
    eprintln!("forwarder: second signal during the drain; exiting now");
    ExitCode::from(1)
}
