//! Helpers for the accept-stack tests: a server that holds every admitted
//! connection until its client closes, and clients that tell admitted from
//! refused.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use monconn::layers::BoxError;
use monconn::{Accepted, Listener, Registry, ServiceConfig, ServiceMonitor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::support::{connect_from, within};

/// The byte an admitted connection's server writes first.
pub const WELCOME: u8 = b'+';

/// What a test sees of its server.
pub struct Server {
    pub addr: SocketAddr,
    /// The peer of every admitted connection, in order.
    pub admitted: mpsc::UnboundedReceiver<SocketAddr>,
    /// The most connections the service had open, sampled at each accept.
    pub max_open: Arc<AtomicUsize>,
}

/// Serves `listener`: every admitted connection gets [`WELCOME`], then is
/// read until its client closes, then dropped.
pub fn serve<S, IO>(listener: Listener<S>) -> Server
where
    S: tower::Service<Accepted<TcpStream>, Response = Accepted<IO>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let addr = listener.local_addr();
    let (tx, admitted) = mpsc::unbounded_channel();
    let max_open = Arc::new(AtomicUsize::new(0));
    let max = max_open.clone();
    tokio::spawn(async move {
        loop {
            let (mut conn, peer) = listener.accept().await.expect("accept");
            max.fetch_max(listener.service().connections(), SeqCst);
            let _ = tx.send(peer);
            tokio::spawn(async move {
                let _ = conn.write_all(&[WELCOME]).await;
                let mut buf = [0; 1024];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    Server {
        addr,
        admitted,
        max_open,
    }
}

/// A client's fate.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Fate {
    /// The server welcomed it.
    Admitted,
    /// Closed without a byte (EOF or reset).
    Refused,
}

/// Connects from `src` and waits to be welcomed or closed; the stream is
/// returned open when admitted.
pub async fn attempt(src: IpAddr, addr: SocketAddr) -> (Fate, TcpStream) {
    let mut client = connect_from(src, addr).await;
    // Something for a refused connection's server to (not) read.
    let _ = client.write_all(b"knock").await;
    let mut first = [0u8; 1];
    let fate = match within("welcome or close", client.read(&mut first)).await {
        Ok(1) => {
            assert_eq!(first[0], WELCOME);
            Fate::Admitted
        }
        Ok(_) | Err(_) => Fate::Refused,
    };
    (fate, client)
}

/// `127.0.0.n`.
pub fn lo(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

/// A new service `sid` with `config`, served by [`serve`] on 127.0.0.1
/// (any port) through the default accept stack.
pub async fn serve_new(sid: &str, config: ServiceConfig) -> (ServiceMonitor, Server) {
    let service = Registry::new().create(sid, config).unwrap();
    let listener = Listener::bind("127.0.0.1:0", service.clone())
        .await
        .expect("bind 127.0.0.1:0");
    (service, serve(listener))
}

/// Reads from `stream` and expects its end (EOF or an error) before any
/// byte: a refused or closed connection.
pub async fn assert_closed(what: &str, stream: &mut TcpStream) {
    let mut buf = [0u8; 8];
    let end = within(what, stream.read(&mut buf)).await;
    assert!(matches!(end, Ok(0)) || end.is_err(), "{end:?}");
}

/// The service's refusals by reason, the reasons never used left out.
pub fn refused(service: &ServiceMonitor) -> BTreeMap<String, u64> {
    let mut rejected = service.snapshot().rejected;
    rejected.retain(|_, n| *n > 0);
    rejected
}

/// `pairs` as the map [`refused`] returns.
pub fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}
