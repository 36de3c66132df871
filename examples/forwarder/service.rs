//! A running forward: its listener's accept loop and each connection's way
//! to the backend.

use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ipnet::IpNet;
use monconn::{Listener, MonitoredIo, Service, ServiceConfig};
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::addr::{Backend, ListenAddr};
use crate::config::ServiceSpec;
use crate::copy;

/// Where new connections of a service go. Swapped on reload; connections
/// already forwarded keep their backend.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) backend: Backend,
    pub(crate) connect_timeout: Option<Duration>,
}

/// A service whose listener is accepting.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) spec: ServiceSpec,
    pub(crate) service: Service,
    upstream: Arc<RwLock<Arc<Upstream>>>,
    accept: JoinHandle<()>,
}

/// Binds a listen address: `:PORT` is every interface, IPv6 and IPv4 on one
/// dual-stack socket where the system has IPv6, IPv4 only otherwise.
pub(crate) fn bind(listen: &ListenAddr) -> io::Result<TcpListener> {
    let result = match listen {
        ListenAddr::Any(port) => bind_socket((Ipv6Addr::UNSPECIFIED, *port).into(), true)
            .or_else(|_| bind_socket(([0, 0, 0, 0], *port).into(), false)),
        ListenAddr::Addr(addr) => bind_socket(*addr, false),
    };
    result.map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))
}

fn bind_socket(addr: SocketAddr, dual_stack: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

// === impl Running ===

impl Running {
    /// Starts accepting on `tcp` for `service`.
    pub(crate) fn start(spec: ServiceSpec, service: Service, tcp: TcpListener) -> io::Result<Self> {
        let listener = Listener::from_tcp(tcp, service.clone())?;
        let local = listener.local_addr();
        let upstream = Arc::new(RwLock::new(Arc::new(Upstream {
            backend: spec.backend.clone(),
            connect_timeout: spec.connect_timeout,
        })));
        let accept = tokio::spawn(accept_loop(listener, upstream.clone()));
        tracing::info!(sid = %spec.sid, listen = %local, backend = %spec.backend, "forwarding");
        Ok(Running {
            spec,
            service,
            upstream,
            accept,
        })
    }

    /// Points new connections at `spec`'s backend and applies its settings.
    pub(crate) fn update(&mut self, spec: ServiceSpec) {
        if spec.backend != self.spec.backend || spec.connect_timeout != self.spec.connect_timeout {
            let upstream = Arc::new(Upstream {
                backend: spec.backend.clone(),
                connect_timeout: spec.connect_timeout,
            });
            *self.upstream.write().unwrap_or_else(|e| e.into_inner()) = upstream;
        }
        if spec.config != self.spec.config {
            let config = keep_runtime_rules(&self.spec.config, &self.service, spec.config.clone());
            self.service.set_config(config);
        }
        self.spec = spec;
    }

    /// Stops accepting: the listening socket is closed when this returns.
    /// Live connections go on.
    pub(crate) async fn stop_accepting(self) -> (ServiceSpec, Service) {
        self.accept.abort();
        let _ = self.accept.await;
        (self.spec, self.service)
    }
}

/// The file's new settings, plus the blacklist and allowlist entries added
/// at runtime (through the admin API): those are not in `old`, the
/// settings the file gave before. Entries of the file come back with it.
pub(crate) fn keep_runtime_rules(
    old: &ServiceConfig,
    service: &Service,
    mut new: ServiceConfig,
) -> ServiceConfig {
    let current = service.config();
    let carry = |now: &[IpNet], before: &[IpNet], into: &mut Vec<IpNet>| {
        for net in now {
            if !before.contains(net) && !into.contains(net) {
                into.push(*net);
            }
        }
    };
    carry(&current.blacklist, &old.blacklist, &mut new.blacklist);
    carry(&current.allowlist, &old.allowlist, &mut new.allowlist);
    new
}

async fn accept_loop(listener: Listener, upstream: Arc<RwLock<Arc<Upstream>>>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                let upstream = upstream.read().unwrap_or_else(|e| e.into_inner()).clone();
                let service = listener.service().clone();
                tokio::spawn(forward(client, peer, upstream, service));
            }
            Err(e) => {
                tracing::error!(sid = %listener.service().sid(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Connects to the backend and copies both ways until both sides end.
async fn forward(
    client: MonitoredIo<TcpStream>,
    peer: SocketAddr,
    upstream: Arc<Upstream>,
    service: Service,
) {
    let sid = service.sid();
    // Boxed: the connect step's state (a timer among it) lives on the heap
    // only while connecting, not in the task for the pair's whole life.
    let backend = match Box::pin(connect(&upstream)).await {
        Ok(backend) => backend,
        Err(e) => {
            service.count_backend_error();
            tracing::warn!(%sid, %peer, backend = %upstream.backend, error = %e, "backend connect failed; closing client");
            return;
        }
    };
    if service.config().nodelay {
        let _ = backend.set_nodelay(true);
    }
    let id = client.record().id();
    tracing::debug!(%sid, id, %peer, backend = %upstream.backend, "connected");
    match copy::pipe(client, backend).await {
        Ok((up, down)) => tracing::debug!(%sid, id, %peer, up, down, "closed"),
        Err(e) => tracing::debug!(%sid, id, %peer, error = %e, "closed with error"),
    }
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
