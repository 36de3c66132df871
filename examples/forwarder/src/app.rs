//! The process: shards (one current-thread runtime per thread), logging,
//! the admin API, signals, reloads and the drain.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use clap::Parser;
use monconn::Registry;
use tokio::runtime::{Builder, Handle};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use crate::cli::Args;
use crate::reload::{load_specs, Forwarder};
use crate::{admin, cli, logging, reload, service, stats, telemetry};

/// Runs the forwarder with the process's arguments until it stops; the
/// process's exit code.
pub fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args);
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let runtime = match Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let mut shards = vec![runtime.handle().clone()];
    match start_shards(threads - 1) {
        Ok(more) => shards.extend(more),
        Err(e) => return fail(format!("cannot start the runtimes: {e}")),
    }
    for shard in &shards {
        shard.spawn(timer_floor());
    }
    let code = runtime.block_on(run(args, shards));
    // Do not wait for stray tasks (a DNS lookup, say) on the way out.
    runtime.shutdown_timeout(Duration::from_millis(100));
    logging::flush(Duration::from_secs(1));
    code
}

/// Starts `count` threads, each running a current-thread runtime until the
/// process exits, and returns their handles.
fn start_shards(count: usize) -> std::io::Result<Vec<Handle>> {
    let (sender, handles) = mpsc::channel();
    for n in 1..=count {
        let sender = sender.clone();
        std::thread::Builder::new()
            .name(format!("shard-{n}"))
            .spawn(move || {
                let runtime = Builder::new_current_thread().enable_all().build();
                let handle = match &runtime {
                    Ok(rt) => Ok(rt.handle().clone()),
                    Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                };
                let _ = sender.send(handle);
                drop(sender);
                if let Ok(runtime) = runtime {
                    runtime.block_on(std::future::pending::<()>());
                }
            })?;
    }
    drop(sender);
    handles.iter().collect()
}

/// Keeps a timer on a shard that is always due within a second.
///
/// tokio wakes its parked runtime (an eventfd write and one more trip
/// through epoll) whenever a new timer is due before every other one. On a
/// shard whose only timers are the connect timeouts of its connections,
/// that is every connection that finds no other connect in progress: about
/// one in two under a stream of short connections. With this timer always
/// due sooner, a connect timeout over a second (10 s by default) never is.
/// It costs each shard one wakeup a second.
async fn timer_floor() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Raises the soft limit on open files to the hard limit, as Go does for
/// its programs: a service manager's soft default (systemd's 1,024) leaves
/// a proxy short of descriptors at a few hundred clients, while the hard
/// limit (systemd's 524,288) is there for the asking. Logs both; a failure
/// is a warning, never fatal.
fn raise_nofile_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    let (soft, hard) = (show(limit.current), show(limit.maximum));
    // An unlimited hard limit is more than the kernel grants: fs.nr_open is.
    let target = limit.maximum.or_else(|| {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|n| n.trim().parse().ok())
    });
    let Some(target) = target else {
        tracing::info!(%soft, %hard, "open files limit (RLIMIT_NOFILE)");
        return;
    };
    if limit.current.is_none_or(|soft| soft >= target) {
        tracing::info!(%soft, %hard, "open files limit (RLIMIT_NOFILE)");
        return;
    }
    let raised = Rlimit {
        current: Some(target),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(
            %soft,
            %hard,
            now = target,
            "open files limit (RLIMIT_NOFILE) raised"
        ),
        Err(error) => {
            let error = std::io::Error::from(error);
            tracing::warn!(%soft, %hard, %error, "cannot raise the open files limit (RLIMIT_NOFILE)");
        }
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("forwarder: {message}");
    ExitCode::from(2)
}

fn init_logging(args: &Args) {
    let level = if args.debug { "debug" } else { &args.log_level };
    // Hex dumps are logged at TRACE, and only for services with print_bytes.
    let mut filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},monconn::hexdump=trace")));
    // `--access-log off` wins over RUST_LOG too.
    if args.access_log == cli::Switch::Off {
        if let Ok(off) = format!("{}=off", telemetry::ACCESS_TARGET).parse() {
            filter = filter.add_directive(off);
        }
    }
    // Lines go out through a queue that drops them when stderr stalls, so
    // that logging never blocks a shard or the admin API (`logging.rs`).
    let queue = logging::Queue::start();
    if let Err(e) = &queue {
        eprintln!(
            "forwarder: cannot start the log writer thread ({e}); logging to stderr directly"
        );
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (args.log_format, queue) {
        (cli::LogFormat::Json, Ok(queue)) => builder.json().with_writer(queue).init(),
        (cli::LogFormat::Json, Err(_)) => builder.json().with_writer(std::io::stderr).init(),
        (cli::LogFormat::Text, queue) => {
            let builder = builder.with_ansi(std::io::stderr().is_terminal());
            match queue {
                Ok(queue) => builder.with_writer(queue).init(),
                Err(_) => builder.with_writer(std::io::stderr).init(),
            }
        }
    }
}

async fn run(args: Args, shards: Vec<Handle>) -> ExitCode {
    let threads = shards.len();
    let flags: Vec<_> = args.mappings.iter().map(cli::Mapping::spec).collect();
    let specs = match load_specs(args.config.as_deref(), &flags) {
        Ok(specs) => specs,
        Err(e) => return fail(e),
    };
    if specs.is_empty() {
        return fail("nothing to forward: give -p LISTEN=BACKEND or -c FILE (see --help)".into());
    }
    if args.check_config {
        for spec in &specs {
            println!("{}: {} -> {}", spec.sid, spec.listen, spec.backend);
        }
        println!("config OK: {} service(s)", specs.len());
        return ExitCode::SUCCESS;
    }
    if let Some(addr) = args.admin {
        if let Err(e) = admin::check_bind(addr, args.admin_token.as_deref()) {
            return fail(e);
        }
    }
    let file_cluster = match args.config.as_deref() {
        Some(path) => match crate::config::load_file(path) {
            Ok(file) => file.cluster,
            Err(e) => return fail(e),
        },
        None => None,
    };
    let cluster_config = match crate::cluster::settings(
        file_cluster.as_ref(),
        args.cluster_redis.as_deref(),
        args.cluster_key.as_deref(),
    ) {
        Ok(config) => config,
        Err(e) => return fail(e),
    };
    raise_nofile_limit();
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
    // Metrics are read only through the admin API: without it, no recorder,
    // and a closing connection records nothing.
    let metrics = match args.admin {
        None => None,
        Some(_) => match telemetry::install_recorder() {
            Ok(handle) => Some(handle),
            Err(e) => return fail(format!("cannot install the metrics recorder: {e}")),
        },
    };
    service::set_splice(args.splice);
    let registry = Registry::new();
    let mut forwarder = match Forwarder::start(
        registry.clone(),
        shards,
        args.accept,
        specs,
        flags,
        args.config.clone(),
    ) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    // Bans are shared once the services exist (a resync reads their sets).
    let cluster = match cluster_config {
        Some(config) => match crate::cluster::start(&registry, config) {
            Ok(cluster) => Some(cluster),
            Err(e) => return fail(e),
        },
        None => None,
    };
    // The admin API binds last: once it answers, every service listens.
    if let (Some(addr), Some(metrics)) = (args.admin, metrics) {
        let listener = match admin::bind(addr).await {
            Ok(listener) => listener,
            Err(e) => return fail(e.to_string()),
        };
        tracing::info!(%addr, "admin API listening");
        let admin = admin::Admin {
            registry: registry.clone(),
            metrics,
            token: args.admin_token.as_deref().map(Arc::from),
            cluster: cluster.clone(),
        };
        tokio::spawn(admin::upkeep(admin.metrics.clone()));
        tokio::spawn(telemetry::process_metrics());
        tokio::spawn(admin::serve(listener, admin));
    }
    if args.stats_interval > 0 {
        tokio::spawn(stats::log_every(
            registry.clone(),
            Duration::from_secs(args.stats_interval),
        ));
    }
    tracing::info!(services = forwarder.len(), threads, "ready");

    // The config file being loaded for a reload, off the runtime threads:
    // signals are seen meanwhile, and a newer SIGHUP takes the file anew.
    let mut loading: Option<reload::Loading> = None;
    loop {
        tokio::select! {
            _ = hup.recv() => match forwarder.load() {
                Ok(task) => loading = Some(task),
                Err(e) => tracing::error!(error = %e, "config reload failed"),
            },
            loaded = async { loading.as_mut().expect("enabled when some").await },
                if loading.is_some() =>
            {
                loading = None;
                let applied = match loaded {
                    Ok(Ok(specs)) => forwarder.apply(specs).await,
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(reload::kept(format!("loading the config failed: {e}"))),
                };
                match applied {
                    Ok(()) => tracing::info!(services = forwarder.len(), "config reloaded"),
                    Err(e) => tracing::error!(error = %e, "config reload failed"),
                }
            }
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
    // Through the log queue: a stalled stderr must not hold the exit.
    tracing::error!("second signal during the drain; exiting now");
    ExitCode::from(1)
}
