//! A running forward: its listeners' accept loops (one per shard, each on
//! its own runtime) and each connection's way to the backend.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ipnet::IpNet;
use monconn::layers::proxy::ProxyHeader;
use monconn::layers::{FilterLayer, LimitLayer, Pass, ProxyProtocolLayer};
use monconn::{AcceptStack, Listener, MonitoredIo, ServiceConfig, ServiceMonitor};
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tower::Layer;

use crate::addr::{Backend, ListenAddr};
use crate::backend_errors::BackendErrors;
use crate::balance::{Balance, Load, Slot};
use crate::cli::Accept;
use crate::config::ServiceSpec;
use crate::telemetry;
use monconn::forward::{self, Mode};

/// Where new connections of a service go. Swapped on reload; connections
/// already forwarded keep their backend.
#[derive(Debug)]
pub struct Upstream {
    pub backend: Backend,
    pub connect_timeout: Option<Duration>,
    /// How its pairs copy: `--splice`, and the spec's `half_close`.
    pub mode: Mode,
    /// `send_proxy`: the version of the PROXY header written to the backend
    /// first.
    pub send_proxy: Option<u8>,
}

impl Upstream {
    fn new(spec: &ServiceSpec) -> Upstream {
        Upstream {
            backend: spec.backend.clone(),
            connect_timeout: spec.connect_timeout,
            mode: Mode::default()
                .with_splice(SPLICE.load(Relaxed))
                .with_half_close(spec.half_close),
            send_proxy: spec.send_proxy,
        }
    }
}

/// A service whose listeners are accepting, one per shard.
#[derive(Debug)]
pub struct Running {
    pub spec: ServiceSpec,
    pub service: ServiceMonitor,
    /// Its failed backend connects, counted by every shard.
    pub backend_errors: BackendErrors,
    upstream: Arc<RwLock<Arc<Upstream>>>,
    accept: Vec<JoinHandle<()>>,
}

/// Binds a listen address for `count` shards, one socket handle each:
/// `:PORT` is every interface, IPv6 and IPv4 on one dual-stack socket where
/// the system has IPv6, IPv4 only otherwise.
///
/// [`Accept::Shared`]: one socket, a handle (`dup`) per shard. With
/// [`Accept::Reuseport`] and more than one shard, a socket per shard, each
/// bound with `SO_REUSEPORT` (the kernel spreads new connections among
/// them); a plain socket is bound first and closed, so that an address
/// another process listens on (with `SO_REUSEPORT` or not) is refused as it
/// is with one socket, and so that port 0 picks one port for all of them.
pub fn bind(
    listen: &ListenAddr,
    count: usize,
    accept: Accept,
) -> io::Result<Vec<std::net::TcpListener>> {
    let result = match listen {
        ListenAddr::Any(port) => {
            bind_all((Ipv6Addr::UNSPECIFIED, *port).into(), true, count, accept)
                .or_else(|_| bind_all(([0, 0, 0, 0], *port).into(), false, count, accept))
        }
        ListenAddr::Addr(addr) => bind_all(*addr, false, count, accept),
    };
    result.map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))
}

fn bind_all(
    addr: SocketAddr,
    dual_stack: bool,
    count: usize,
    accept: Accept,
) -> io::Result<Vec<std::net::TcpListener>> {
    let first = bind_socket(addr, dual_stack, false)?;
    if count <= 1 {
        return Ok(vec![first]);
    }
    if accept == Accept::Shared {
        let mut all = (1..count)
            .map(|_| first.try_clone())
            .collect::<io::Result<Vec<_>>>()?;
        all.push(first);
        return Ok(all);
    }
    let addr = first.local_addr()?;
    drop(first);
    (0..count)
        .map(|_| bind_socket(addr, dual_stack, true))
        .collect()
}

fn bind_socket(
    addr: SocketAddr,
    dual_stack: bool,
    reuse_port: bool,
) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

// === impl Running ===

impl Running {
    /// Starts accepting for `service`: on each socket of `tcps` (from
    /// [`bind`]), in the shard of the same rank. Every shard's connections
    /// are counted, limited and listed in the one `service` (whose
    /// `rate_limit` buckets every shard shares), and they share one accept
    /// stack.
    /// With [`Accept::Shared`], the shards [balance](crate::balance) what
    /// they take.
    pub fn start(
        spec: ServiceSpec,
        service: ServiceMonitor,
        tcps: Vec<std::net::TcpListener>,
        shards: &[Handle],
        accept: Accept,
    ) -> io::Result<Self> {
        // `Listener::from_tcp`'s stack, its layers shared by every shard;
        // with `proxy_protocol`, the PROXY header is read first.
        let stack = FilterLayer::new(&service).layer(LimitLayer::new(&service).layer(Pass));
        let backend_errors = BackendErrors::of(service.sid());
        let errors = backend_errors.clone();
        let started = match spec.proxy_in.clone() {
            None => Self::spawn_all(&spec, &service, stack, tcps, shards, accept, errors),
            Some(proxy) => {
                let stack = ProxyProtocolLayer::new(proxy).layer(stack);
                Self::spawn_all(&spec, &service, stack, tcps, shards, accept, errors)
            }
        };
        let (accept, upstream) = started?;
        Ok(Running {
            spec,
            service,
            backend_errors,
            upstream,
            accept,
        })
    }

    /// Listens on `tcps` with `stack` and spawns an accept loop per shard.
    #[allow(clippy::type_complexity)]
    fn spawn_all<S>(
        spec: &ServiceSpec,
        service: &ServiceMonitor,
        stack: S,
        tcps: Vec<std::net::TcpListener>,
        shards: &[Handle],
        accept: Accept,
        backend_errors: BackendErrors,
    ) -> io::Result<(Vec<JoinHandle<()>>, Arc<RwLock<Arc<Upstream>>>)>
    where
        S: AcceptStack<Io = TcpStream> + Clone + Send + Sync + 'static,
        S::Future: Send,
    {
        // Each socket registers with the runtime of the shard that polls it.
        let listeners = tcps
            .into_iter()
            .zip(shards)
            .map(|(tcp, shard)| {
                let _runtime = shard.enter();
                let tcp = TcpListener::from_std(tcp)?;
                Listener::with_stack(tcp, service.clone(), stack.clone())
            })
            .collect::<io::Result<Vec<_>>>()?;
        let Some(local) = listeners.first().map(Listener::local_addr) else {
            return Err(io::Error::other("no socket to listen on"));
        };
        let upstream = Arc::new(RwLock::new(Arc::new(Upstream::new(spec))));
        let mut slots = match accept {
            Accept::Shared if listeners.len() > 1 => Balance::slots(listeners.len()),
            _ => Vec::new(),
        }
        .into_iter();
        let accept = listeners
            .into_iter()
            .zip(shards)
            .enumerate()
            .map(|(rank, (listener, shard))| {
                shard.spawn(accept_loop(
                    listener,
                    upstream.clone(),
                    backend_errors.clone(),
                    rank,
                    slots.next(),
                ))
            })
            .collect();
        tracing::info!(sid = %spec.sid, listen = %local, backend = %spec.backend, "forwarding");
        Ok((accept, upstream))
    }

    /// Points new connections at `spec`'s backend and applies its settings
    /// (see [`apply_config`]).
    pub async fn update(&mut self, spec: ServiceSpec) {
        if spec.backend != self.spec.backend
            || spec.connect_timeout != self.spec.connect_timeout
            || spec.half_close != self.spec.half_close
            || spec.send_proxy != self.spec.send_proxy
        {
            let upstream = Arc::new(Upstream::new(&spec));
            *self.upstream.write().unwrap_or_else(|e| e.into_inner()) = upstream;
        }
        let old = std::mem::replace(&mut self.spec, spec);
        if self.spec.config != old.config {
            apply_config(&self.service, old.config, self.spec.config.clone()).await;
        }
    }

    /// Stops accepting: the listening sockets are closed when this returns.
    /// Live connections go on.
    pub async fn stop_accepting(self) -> (ServiceSpec, ServiceMonitor) {
        for accept in &self.accept {
            accept.abort();
        }
        for accept in self.accept {
            let _ = accept.await;
        }
        (self.spec, self.service)
    }
}

/// Gives `service` the file's new settings `new` with [`keep_runtime_rules`],
/// off the runtime threads: with lists of 100,000 entries, the merge and
/// the lists' compiling take milliseconds that no shard or admin request
/// should wait for.
pub async fn apply_config(service: &ServiceMonitor, old: ServiceConfig, new: ServiceConfig) {
    let service = service.clone();
    let apply = tokio::task::spawn_blocking(move || {
        // An update, not a set: an entry added through the admin API
        // meanwhile is kept too.
        service.update_config(|current| {
            *current = keep_runtime_rules(&old, current, new.clone());
        });
    });
    if let Err(e) = apply.await {
        tracing::error!(error = %e, "applying the new settings failed");
    }
}

/// The file's new settings, plus the blacklist and allowlist entries added
/// at runtime (through the admin API): those in `current`, the service's
/// settings now, that are not in `old`, the settings the file gave before.
/// Entries of the file come back with it. Linear in the lists' length.
pub fn keep_runtime_rules(
    old: &ServiceConfig,
    current: &ServiceConfig,
    mut new: ServiceConfig,
) -> ServiceConfig {
    carry(&current.blacklist, &old.blacklist, &mut new.blacklist);
    carry(&current.allowlist, &old.allowlist, &mut new.allowlist);
    new
}

/// Appends to `into` the entries of `now` that are neither in `before` nor
/// already in `into`.
fn carry(now: &[IpNet], before: &[IpNet], into: &mut Vec<IpNet>) {
    if now == before {
        return;
    }
    let before: HashSet<&IpNet> = before.iter().collect();
    let added: Vec<IpNet> = now
        .iter()
        .filter(|net| !before.contains(net))
        .copied()
        .collect();
    if added.is_empty() {
        return;
    }
    let mut have: HashSet<IpNet> = into.iter().copied().collect();
    into.extend(added.into_iter().filter(|net| have.insert(*net)));
}

/// Accepts in the shard of rank `shard`, and forwards each connection in
/// a task of its own. With a `slot`, only when it is this shard's turn.
async fn accept_loop<S>(
    listener: Listener<S>,
    upstream: Arc<RwLock<Arc<Upstream>>>,
    backend_errors: BackendErrors,
    shard: usize,
    slot: Option<Slot>,
) where
    S: AcceptStack<Io = TcpStream>,
{
    loop {
        if let Some(slot) = &slot {
            slot.turn().await;
        }
        match listener.accept().await {
            Ok((client, peer)) => {
                let upstream = upstream.read().unwrap_or_else(|e| e.into_inner()).clone();
                let service = listener.service().clone();
                let load = slot.as_ref().map(Slot::load);
                let errors = backend_errors.clone();
                tokio::spawn(forward(
                    client, peer, upstream, service, errors, shard, load,
                ));
            }
            Err(e) => {
                tracing::error!(sid = %listener.service().sid(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Whether pairs move bulk transfers with `splice(2)` (`--splice`), read
/// when a service starts or its upstream changes.
static SPLICE: AtomicBool = AtomicBool::new(false);

/// Sets `--splice` for the services started from now on.
pub fn set_splice(on: bool) {
    SPLICE.store(on, Relaxed);
}

/// Connects to the backend and copies both ways until both sides end.
/// `_load` counts the pair on its shard (`--accept shared`) until then.
async fn forward(
    client: MonitoredIo<TcpStream>,
    peer: SocketAddr,
    upstream: Arc<Upstream>,
    service: ServiceMonitor,
    backend_errors: BackendErrors,
    shard: usize,
    _load: Option<Load>,
) {
    let sid = service.sid();
    // Boxed: the connect step's state (a timer among it) lives on the heap
    // only while connecting, not in the task for the pair's whole life.
    let backend = match Box::pin(connect(&upstream)).await {
        Ok(backend) => backend,
        Err(e) => {
            backend_errors.count();
            tracing::warn!(%sid, %peer, backend = %upstream.backend, error = %e, "backend connect failed; closing client");
            return;
        }
    };
    if service.config().nodelay {
        let _ = backend.set_nodelay(true);
    }
    let mut backend = backend;
    if let Some(version) = upstream.send_proxy {
        if let Err(e) = send_proxy(&mut backend, &client, version).await {
            backend_errors.count();
            tracing::warn!(%sid, %peer, backend = %upstream.backend, error = %e, "writing the PROXY header to the backend failed; closing client");
            return;
        }
    }
    let record = client.record().clone();
    let id = record.id();
    tracing::debug!(%sid, id, %peer, backend = %upstream.backend, shard, "connected");
    let result = forward::copy_bidirectional(client, backend, upstream.mode).await;
    if let Err(e) = &result {
        tracing::debug!(%sid, id, %peer, error = %e, "closed with error");
    }
    telemetry::access_log(sid, &record, &upstream.backend, result.is_err());
}

/// Writes the PROXY header (`version` 1 or 2) that names `client`'s client
/// (the one its own header named, if any) to `backend`, before any byte;
/// a v2 header carries the TLVs of the one received.
async fn send_proxy(
    backend: &mut TcpStream,
    client: &MonitoredIo<TcpStream>,
    version: u8,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let record = client.record();
    let destination = record
        .proxy()
        .and_then(|p| p.header.destination())
        .unwrap_or(record.local());
    let mut header = ProxyHeader::proxied(record.peer(), destination);
    // The TLVs of the header received (an AWS VPC endpoint id, say) go on.
    if let Some(received) = record.proxy() {
        header = header.with_tlvs_of(&received.header);
    }
    let bytes = match version {
        1 => header.to_v1(),
        _ => header.to_v2(),
    };
    backend.write_all(&bytes).await
}

async fn connect(upstream: &Upstream) -> io::Result<TcpStream> {
    let connect = async {
        match &upstream.backend {
            Backend::Addr(addr) => TcpStream::connect(addr).await,
            Backend::Host(host, port) => TcpStream::connect((host.as_str(), *port)).await,
        }
    };
    match upstream.connect_timeout {
        None => connect.await,
        Some(limit) => tokio::time::timeout(limit, connect)
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect timed out after {limit:?}"),
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn runtime_rules_are_kept_and_file_rules_replaced() {
        let old = ServiceConfig::default().blacklist(nets(&["10.0.0.1/32", "10.0.0.2/32"]));
        // At runtime: 10.0.0.9 added, 10.0.0.2 released.
        let current = ServiceConfig::default().blacklist(nets(&[
            "10.0.0.1/32",
            "10.0.0.9/32",
            "10.0.0.3/32",
        ]));
        let new = ServiceConfig::default().blacklist(nets(&["10.0.0.1/32", "10.0.0.3/32"]));
        let merged = keep_runtime_rules(&old, &current, new);
        assert_eq!(
            merged.blacklist,
            nets(&["10.0.0.1/32", "10.0.0.3/32", "10.0.0.9/32"])
        );
    }
}
