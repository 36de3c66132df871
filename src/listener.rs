//! `Listener`: a tokio `TcpListener` whose accepted connections are admitted
//! by their service and come out monitored.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use crate::{MonitoredIo, Service};

/// Accepts TCP connections for a [`Service`]: each one is admitted (limits),
/// gets the service's TCP keepalive and `TCP_NODELAY` settings, and comes out
/// as a [`MonitoredIo`]. A refused connection is closed at once, with nothing
/// read from it, and counted by reason.
///
/// Accept errors that concern one connection (`ECONNABORTED`, `ECONNRESET`)
/// are skipped; resource errors (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`)
/// make it sleep a little before trying again, never spin.
pub struct Listener {
    tcp: TcpListener,
    service: Service,
    local: SocketAddr,
}

impl Listener {
    /// Binds `addr` for `service`.
    ///
    /// # Errors
    /// The bind error (address in use, say), with the address in its message.
    pub async fn bind(
        addr: impl ToSocketAddrs + fmt::Display,
        service: Service,
    ) -> io::Result<Self> {
        let tcp = TcpListener::bind(&addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        Self::from_tcp(tcp, service)
    }

    /// Wraps a bound tokio listener.
    ///
    /// # Errors
    /// When the listener's local address cannot be read.
    pub fn from_tcp(tcp: TcpListener, service: Service) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        Ok(Listener {
            tcp,
            service,
            local,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The service the connections belong to.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The next admitted connection and its peer address.
    ///
    /// # Errors
    /// Only errors that are not about one connection or resources, which it
    /// handles itself (see [`Listener`]).
    pub async fn accept(&self) -> io::Result<(MonitoredIo<TcpStream>, SocketAddr)> {
        loop {
            let (stream, peer) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    handle_accept_error(e).await?;
                    continue;
                }
            };
            match self.service.admit(peer) {
                Ok(admission) => {
                    configure(&stream, &self.service);
                    return Ok((admission.attach(stream, self.local), peer));
                }
                Err(rejected) => {
                    tracing::debug!(sid = %self.service.sid(), %peer, reason = %rejected.reason(), "connection refused");
                    self.service.count_rejected(rejected.reason());
                }
            }
        }
    }
}

fn configure(stream: &TcpStream, service: &Service) {
    let config = service.config();
    if config.nodelay {
        let _ = stream.set_nodelay(true);
    }
    if let Some(period) = config.keepalive {
        let ka = TcpKeepalive::new().with_time(period).with_interval(period);
        let _ = SockRef::from(stream).set_tcp_keepalive(&ka);
    }
}

/// Skips per-connection errors, sleeps on resource errors, returns the rest.
async fn handle_accept_error(e: io::Error) -> io::Result<()> {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted => Ok(()),
        _ if is_resource_error(&e) => {
            tracing::warn!(error = %e, "accept failed for lack of resources; backing off");
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(())
        }
        _ => Err(e),
    }
}

fn is_resource_error(e: &io::Error) -> bool {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 on Linux.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("local", &self.local)
            .field("service", &self.service.sid())
            .finish()
    }
}
