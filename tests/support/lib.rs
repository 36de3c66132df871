//! Helpers shared by monconn's integration tests (every area binary under
//! `tests/`): loopback pairs, clients bound to chosen source addresses,
//! deadline polling. Not published.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use monconn::integrations::{Graceful, PendingReport};
use monconn::{Listener, MonitoredIo, ServiceConfig, ServiceMonitor};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod redis;
pub use redis::RedisServer;

/// How long any wait in a test may take before it fails: generous, so a
/// loaded machine never trips it; a passing test never waits this long.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// 127.0.0.1.
pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A config with no timeout, no idle limit and no keepalive: nothing closes a
/// connection unless the test asks for it.
pub fn quiet_config() -> ServiceConfig {
    ServiceConfig::default()
        .read_timeout(None)
        .write_timeout(None)
        .max_idle(None)
        .keepalive(None)
}

/// A listener on 127.0.0.1, any port.
pub async fn listen() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// A connected pair of plain loopback sockets: (client, server).
pub async fn plain_pair() -> (TcpStream, TcpStream) {
    let listener = listen().await;
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .expect("connect to our own listener");
    let (server, _) = listener.accept().await.expect("accept our own client");
    (client, server)
}

/// A monitored listener for `service` on 127.0.0.1, any port, and its
/// address.
pub async fn bind_monitored(service: &ServiceMonitor) -> (Listener, SocketAddr) {
    let listener = Listener::bind("127.0.0.1:0", service.clone())
        .await
        .expect("bind a monitored listener on 127.0.0.1:0");
    let addr = listener.local_addr();
    (listener, addr)
}

/// A graceful shutdown of `service` (for a server to await) that starts
/// when the returned sender sends, and the handle of its report.
pub fn graceful_on_stop(
    service: &ServiceMonitor,
) -> (
    oneshot::Sender<()>,
    Graceful<impl Future<Output = ()> + Send + 'static>,
    PendingReport,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = monconn::integrations::graceful(service.clone(), async move {
        let _ = stopped.await;
    });
    let report = shutdown.report();
    (stop, shutdown, report)
}

/// Sends `stop` with a request still running and waits for `server` to
/// return: not before `wait` (the wait_timeout the shutdown honours), and
/// not much later.
pub async fn stop_and_wait_out(stop: oneshot::Sender<()>, server: JoinHandle<()>, wait: Duration) {
    let stopped_at = std::time::Instant::now();
    stop.send(()).unwrap();
    within("server return", server).await.unwrap();
    let took = stopped_at.elapsed();
    assert!(took >= wait, "returned after {took:?}, before wait_timeout");
    assert!(
        took < wait + Duration::from_secs(5),
        "returned after {took:?}"
    );
}

/// A client socket bound to `src` (any port) connected to `addr`.
pub async fn connect_from(src: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = match src {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .expect("socket");
    socket
        .bind(SocketAddr::new(src, 0))
        .unwrap_or_else(|e| panic!("bind {src}: {e}"));
    socket
        .connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {src} -> {addr}: {e}"))
}

/// Accepts one connection on `listener` and wraps it in `service`.
pub async fn accept_wrapped(
    listener: &TcpListener,
    service: &ServiceMonitor,
) -> MonitoredIo<TcpStream> {
    let (stream, peer) = within("accept", listener.accept()).await.expect("accept");
    let local = listener.local_addr().expect("local_addr");
    service.wrap(stream, peer, local).expect("admitted")
}

/// A monitored server end and its raw client end, over loopback TCP, with
/// the client bound to `src`.
pub async fn tcp_pair_from(
    listener: &TcpListener,
    service: &ServiceMonitor,
    src: IpAddr,
) -> (MonitoredIo<TcpStream>, TcpStream) {
    let addr = listener.local_addr().expect("local_addr");
    let client = connect_from(src, addr).await;
    let server = accept_wrapped(listener, service).await;
    assert_eq!(server.record().peer(), client.local_addr().unwrap());
    (server, client)
}

/// A monitored server end and its raw client end, over loopback TCP from 127.0.0.1.
pub async fn tcp_pair(service: &ServiceMonitor) -> (MonitoredIo<TcpStream>, TcpStream) {
    let listener = listen().await;
    tcp_pair_from(&listener, service, LOCALHOST).await
}

/// Runs `fut`, failing the test if it takes longer than [`PATIENCE`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: still waiting after {PATIENCE:?}"),
    }
}

/// Polls `cond` every few milliseconds until it holds; fails the test if it
/// does not within [`PATIENCE`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: not true after {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `len` bytes of a recognisable pattern that starts at stream offset `offset`
/// (so a receiver can check every byte of a long stream).
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64).map(pattern_byte).collect()
}

/// The pattern's byte at stream offset `at`.
pub fn pattern_byte(at: u64) -> u8 {
    (at.wrapping_mul(31) ^ (at >> 8)) as u8
}
