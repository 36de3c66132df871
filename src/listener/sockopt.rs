//! TCP keepalive and `TCP_NODELAY` for accepted connections.
//!
//! On Linux an accepted socket inherits these options from the listening
//! socket, so they are set there, once, and again only when the service's
//! config changes them: no system call per connection. After a change, the
//! connections that were already in the accept queue (they carry the old
//! settings) get the new ones one by one, until the queue is found empty.
//! Elsewhere the options are set on each accepted socket.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};

use crate::ServiceConfig;

type Wanted = (Option<Duration>, bool);

/// The settings last put on the listening socket.
#[derive(Debug, Default)]
pub(super) struct SockOpts {
    /// `TCP_NODELAY` for this listener whatever the service's config says
    /// (see `Listener::nodelay`).
    pub(super) nodelay: Option<bool>,
    applied: Option<Wanted>,
    /// Set each accepted socket until the accept queue is empty: it may hold
    /// connections cloned from the listening socket before a change.
    catch_up: bool,
}

impl SockOpts {
    /// Puts `config`'s settings on the listening socket (Linux).
    pub(super) fn on_listener(&mut self, tcp: &TcpListener, config: &ServiceConfig) {
        if cfg!(target_os = "linux") {
            let wanted = self.wanted(config);
            set(SockRef::from(tcp), wanted);
            self.applied = Some(wanted);
            // Connections queued before (a listener passed in) lack them.
            self.catch_up = true;
        }
    }

    /// Gives `stream` `config`'s settings.
    pub(super) fn on_accept(
        &mut self,
        tcp: &TcpListener,
        stream: &TcpStream,
        config: &ServiceConfig,
    ) {
        let wanted = self.wanted(config);
        if !cfg!(target_os = "linux") {
            // Only what differs from a fresh socket's defaults.
            if wanted.1 {
                let _ = stream.set_nodelay(true);
            }
            if config.keepalive.is_some() {
                set(SockRef::from(stream), (config.keepalive, false));
            }
        } else {
            if self.applied != Some(wanted) {
                set(SockRef::from(tcp), wanted);
                self.applied = Some(wanted);
                self.catch_up = true;
            }
            if self.catch_up {
                set(SockRef::from(stream), wanted);
            }
        }
    }

    fn wanted(&self, config: &ServiceConfig) -> Wanted {
        (config.keepalive, self.nodelay.unwrap_or(config.nodelay))
    }

    /// The accept queue is empty: every connection from now on was cloned
    /// from the listening socket as it is.
    pub(super) fn queue_empty(&mut self) {
        self.catch_up = false;
    }
}

/// Errors are ignored: a socket that cannot take an option (a peer that
/// already reset, say) works without it.
fn set(sock: SockRef<'_>, (keepalive, nodelay): Wanted) {
    let _ = sock.set_tcp_nodelay(nodelay);
    match keepalive {
        Some(period) => {
            let ka = TcpKeepalive::new().with_time(period).with_interval(period);
            let _ = sock.set_tcp_keepalive(&ka);
        }
        None => {
            let _ = sock.set_keepalive(false);
        }
    }
}
