//! One connection's record: its own counters, timestamps, close flag and wakers.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Context;
use std::time::Duration;

use atomic_waker::AtomicWaker;

use super::cause::CloseCause;
use super::guard::Release;
use super::watch::{Watcher, PRINT, TAP};
use crate::clock::{now_ms, since};
use crate::ip::client_key;
use crate::proxied::ProxyInfo;

const OPEN: u8 = u8::MAX;

/// No probe of the pending read is under way.
const PROBE_NONE: u8 = 0;
/// The sweeper woke the reader to see whether its read is still pending.
const PROBE_ASKED: u8 = 1;
/// The reader polled its read again after the probe: it is really pending.
const PROBE_SEEN: u8 = 2;

/// What the sweeper makes of a read pending past `read_timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadProbe {
    /// The read was polled again after the probe: it is really pending.
    Pending,
    /// The probe is asked: the reader is woken, and the next sweep knows.
    Asked,
    /// Nobody polled the read since the probe: its caller dropped it.
    Abandoned,
}

/// The live record of one monitored connection.
///
/// Shared (`Arc`) between the connection's [`MonitoredIo`](crate::MonitoredIo),
/// its service's live table and anyone who asked for it (connect info in a
/// handler, say). Only the connection itself writes its counters; everyone
/// else reads them.
pub struct ConnRecord {
    id: u64,
    /// The id of its service.
    sid: Arc<str>,
    peer: SocketAddr,
    local: SocketAddr,
    opened: u64,
    read: AtomicU64,
    written: AtomicU64,
    last_read: AtomicU64,
    last_write: AtomicU64,
    /// When the pending read started (ms), 0 when no read is pending.
    read_wait: AtomicU64,
    /// When the pending write started (ms), 0 when no write is pending.
    write_wait: AtomicU64,
    /// When a proxy's write of this connection's bytes to its upstream
    /// started to wait (ms), 0 when it does not wait.
    upstream_wait: AtomicU64,
    /// Whether the sweeper asked a pending read to show it is still there:
    /// [`PROBE_NONE`], [`PROBE_ASKED`] or [`PROBE_SEEN`].
    read_probe: AtomicU8,
    state: AtomicU8,
    errored: AtomicBool,
    /// Who watches the connection's bytes: [`PRINT`] and [`TAP`] bits, the
    /// one load the hot path pays for watching.
    watch: AtomicU8,
    /// The `ipv6_prefix` its client was counted under (the config may change
    /// before it closes).
    key_prefix: u8,
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
    /// What the connection is released into when its `MonitoredIo` is
    /// dropped (its service), taken then: a record kept after that (a
    /// handler's connect info) does not keep the service alive. Kept here
    /// rather than in the `MonitoredIo`, which stays one pointer to this
    /// record.
    owner: Mutex<Option<Arc<dyn Release>>>,
    /// The PROXY header it came through, and its socket's peer: one
    /// pointer, kept only with the `proxy-protocol` feature.
    #[cfg(feature = "proxy-protocol")]
    proxy: Option<Box<ProxyInfo>>,
}

// === impl ConnRecord ===

impl ConnRecord {
    /// The record of connection `id` of service `sid`, released into `owner`
    /// when its `MonitoredIo` is dropped; its bytes dumped (`print_bytes`)
    /// and tapped through the owner's [`Release::watcher`].
    pub(crate) fn new(
        id: u64,
        sid: Arc<str>,
        (peer, local): (SocketAddr, SocketAddr),
        print_bytes: bool,
        key_prefix: u8,
        owner: Arc<dyn Release>,
        proxy: Option<Box<ProxyInfo>>,
    ) -> Self {
        #[cfg(not(feature = "proxy-protocol"))]
        let _ = proxy;
        ConnRecord {
            id,
            sid,
            peer,
            local,
            opened: now_ms(),
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
            last_read: AtomicU64::new(0),
            last_write: AtomicU64::new(0),
            read_wait: AtomicU64::new(0),
            write_wait: AtomicU64::new(0),
            upstream_wait: AtomicU64::new(0),
            read_probe: AtomicU8::new(PROBE_NONE),
            state: AtomicU8::new(OPEN),
            errored: AtomicBool::new(false),
            watch: AtomicU8::new(if print_bytes { PRINT } else { 0 }),
            key_prefix,
            read_waker: AtomicWaker::new(),
            write_waker: AtomicWaker::new(),
            owner: Mutex::new(Some(owner)),
            #[cfg(feature = "proxy-protocol")]
            proxy,
        }
    }

    /// The connection's id, unique within its service.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The id of its service.
    pub(crate) fn sid(&self) -> &str {
        &self.sid
    }

    /// The id of its service, shared.
    pub(crate) fn sid_arc(&self) -> &Arc<str> {
        &self.sid
    }

    /// The key its client is counted under ([`client_key`]).
    pub(crate) fn client_key(&self) -> ipnet::IpNet {
        client_key(self.peer.ip(), self.key_prefix)
    }

    /// Releases the connection into its owner, once: the first call does,
    /// later ones find nothing to do.
    pub(crate) fn release(&self) {
        let owner = self
            .owner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(owner) = owner {
            owner.release(self);
            if self.watch.load(Relaxed) & TAP != 0 {
                if let Some(watcher) = owner.watcher() {
                    watcher.on_close(self);
                }
            }
        }
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The local address the client connected to.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The socket's own peer: the load balancer when the connection came
    /// through a PROXY header, else [`ConnRecord::peer`].
    pub fn socket_peer(&self) -> SocketAddr {
        self.proxy().map_or(self.peer, |p| p.socket_peer)
    }

    /// The PROXY header the connection came through, with its socket's peer
    /// (always `None` without the `proxy-protocol` feature).
    pub fn proxy(&self) -> Option<&ProxyInfo> {
        #[cfg(feature = "proxy-protocol")]
        return self.proxy.as_deref();
        #[cfg(not(feature = "proxy-protocol"))]
        None
    }

    /// Bytes read from the client so far.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Relaxed)
    }

    /// Bytes written to the client so far.
    pub fn bytes_written(&self) -> u64 {
        self.written.load(Relaxed)
    }

    /// How long the connection has been open.
    pub fn age(&self) -> Duration {
        since(now_ms(), self.opened)
    }

    /// How long since the connection last read or wrote a byte (or opened).
    pub fn idle(&self) -> Duration {
        since(now_ms(), self.last_active())
    }

    /// Why the connection was closed from outside, if it was.
    pub fn closed(&self) -> Option<CloseCause> {
        CloseCause::from_slot(self.state.load(Relaxed))
    }

    /// Whether the service asked for a hex dump of this connection's bytes
    /// (`print_bytes`, fixed when the connection was admitted). A proxy that
    /// moves bytes by other means (`splice(2)`) must take the counted,
    /// dumping path when it is set.
    pub fn print_bytes(&self) -> bool {
        self.watch.load(Relaxed) & PRINT != 0
    }

    /// Whether anyone watches this connection's bytes: `print_bytes`, or a
    /// tap that matches it. A proxy that moves bytes by other means
    /// (`splice(2)`) keeps them visible by not doing so while it is set.
    #[inline]
    pub(crate) fn watched(&self) -> bool {
        self.watch.load(Relaxed) != 0
    }

    /// Whether a tap matched the connection (still a hint: see [`TAP`]).
    pub(crate) fn tapped(&self) -> bool {
        self.watch.load(Relaxed) & TAP != 0
    }

    /// Marks the connection as matched by a tap, or not. Sequentially
    /// consistent with the hub's version, so that a mark cleared for want
    /// of a subscriber is never lost to one that came meanwhile (the hub
    /// checks its version after a clear); the hot path's load is relaxed.
    pub(crate) fn set_tapped(&self, on: bool) {
        if on {
            self.watch.fetch_or(TAP, SeqCst);
        } else {
            self.watch.fetch_and(!TAP, SeqCst);
        }
    }

    /// Tells the owner's watcher (its registry's tap hub), if any, of a
    /// watched connection's bytes; nothing once the connection is released.
    /// Off the hot path: only watched connections get here.
    pub(crate) fn with_watcher(&self, f: impl FnOnce(&dyn Watcher)) {
        let owner = self
            .owner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(watcher) = owner.as_deref().and_then(Release::watcher) {
            f(watcher);
        }
    }

    /// Why the connection ended, as it is counted once it is released: the
    /// cause it was cut with, else an error it saw, else a clean close.
    pub(crate) fn end_cause(&self) -> CloseCause {
        self.closed().unwrap_or(if self.errored() {
            CloseCause::Error
        } else {
            CloseCause::Normal
        })
    }

    /// Ready with the close cause once the connection is closed from outside;
    /// otherwise parks `cx`'s waker so that the close wakes the task.
    ///
    /// For a proxy that is waiting on something else (its backend) and must
    /// still notice a kick, an idle close or a shutdown. Unlike a pending
    /// read or write, it does not count towards `read_timeout` or
    /// `write_timeout`. It shares the slot of the read waker: call it from
    /// the task that reads the connection.
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> std::task::Poll<CloseCause> {
        if let Some(cause) = self.closed() {
            return std::task::Poll::Ready(cause);
        }
        self.read_waker.register(cx.waker());
        match self.closed() {
            Some(cause) => std::task::Poll::Ready(cause),
            None => std::task::Poll::Pending,
        }
    }

    pub(crate) fn opened_ms(&self) -> u64 {
        self.opened
    }

    pub(crate) fn last_read_ms(&self) -> u64 {
        self.last_read.load(Relaxed)
    }

    pub(crate) fn last_active(&self) -> u64 {
        self.opened
            .max(self.last_read.load(Relaxed))
            .max(self.last_write.load(Relaxed))
    }

    pub(crate) fn read_waiting_since(&self) -> u64 {
        self.read_wait.load(Relaxed)
    }

    /// Since when a write is pending, to the client or (for a proxy) to its
    /// upstream, whichever started first; 0 when none is.
    pub(crate) fn write_waiting_since(&self) -> u64 {
        match (
            self.write_wait.load(Relaxed),
            self.upstream_wait.load(Relaxed),
        ) {
            (0, up) => up,
            (w, 0) => w,
            (w, up) => w.min(up),
        }
    }

    /// For a read pending past `read_timeout`: is it still there? The
    /// first call wakes the reader (a task still waiting on the read polls
    /// it again, which [`Self::read_pending`] notes); the next one tells
    /// whether that happened. A read whose caller dropped it (a
    /// `tokio::time::timeout` around it, say) is forgotten then.
    pub(crate) fn probe_read(&self) -> ReadProbe {
        match self
            .read_probe
            .compare_exchange(PROBE_NONE, PROBE_ASKED, Relaxed, Relaxed)
        {
            Ok(_) => {
                self.read_waker.wake();
                ReadProbe::Asked
            }
            Err(PROBE_SEEN) => ReadProbe::Pending,
            Err(_) => {
                if self
                    .read_probe
                    .compare_exchange(PROBE_ASKED, PROBE_NONE, Relaxed, Relaxed)
                    .is_ok()
                {
                    self.read_wait.store(0, Relaxed);
                }
                ReadProbe::Abandoned
            }
        }
    }

    /// For a proxy: whether this connection's bytes are stuck in a write to
    /// its upstream (the backend stopped reading). While they are,
    /// `write_timeout` counts as for a write to the client that is pending,
    /// so a backend that stops taking bytes is cut after `write_timeout`,
    /// counted as a write timeout. Call it with `false` once the write moves
    /// again. The task that waits must have parked its waker with
    /// [`Self::poll_closed`] (or a pending read) to hear of the cut.
    pub fn set_upstream_blocked(&self, blocked: bool) {
        let since = self.upstream_wait.load(Relaxed);
        if blocked && since == 0 {
            self.upstream_wait.store(now_ms(), Relaxed);
        } else if !blocked && since != 0 {
            self.upstream_wait.store(0, Relaxed);
        }
    }

    pub(crate) fn errored(&self) -> bool {
        self.errored.load(Relaxed)
    }

    /// Marks the connection closed with `cause` and wakes any task parked on it.
    /// The first cause wins; returns whether this call closed it.
    pub(crate) fn close(&self, cause: CloseCause) -> bool {
        let closed = self
            .state
            .compare_exchange(OPEN, cause.slot() as u8, Relaxed, Relaxed)
            .is_ok();
        if closed {
            self.read_waker.wake();
            self.write_waker.wake();
        }
        closed
    }

    // --- the hot path: this connection's own atomics only

    /// Fails with the close cause's error kind once the record is closed.
    #[inline]
    pub(crate) fn check_open(&self) -> io::Result<()> {
        match self.state.load(Relaxed) {
            OPEN => Ok(()),
            slot => Err(closed_error(slot)),
        }
    }

    #[inline]
    pub(crate) fn on_read(&self, n: usize) -> u64 {
        if self.read_wait.load(Relaxed) != 0 {
            self.read_wait.store(0, Relaxed);
            self.read_probe.store(PROBE_NONE, Relaxed);
        }
        if n == 0 {
            return self.read.load(Relaxed);
        }
        self.last_read.store(now_ms(), Relaxed);
        self.read.fetch_add(n as u64, Relaxed)
    }

    #[inline]
    pub(crate) fn on_write(&self, n: usize) -> u64 {
        if self.write_wait.load(Relaxed) != 0 {
            self.write_wait.store(0, Relaxed);
        }
        if n == 0 {
            return self.written.load(Relaxed);
        }
        self.last_write.store(now_ms(), Relaxed);
        self.written.fetch_add(n as u64, Relaxed)
    }

    /// A flush or shutdown completed: no write is pending any more.
    #[inline]
    pub(crate) fn write_done(&self) {
        if self.write_wait.load(Relaxed) != 0 {
            self.write_wait.store(0, Relaxed);
        }
    }

    #[inline]
    pub(crate) fn on_error(&self) {
        self.errored.store(true, Relaxed);
    }

    /// A read returned `Pending`: note since when, and park `cx`'s waker so that
    /// a close from outside wakes the task. Fails if the record closed meanwhile.
    #[inline]
    pub(crate) fn read_pending(&self, cx: &Context<'_>) -> io::Result<()> {
        if self.read_wait.load(Relaxed) == 0 {
            self.read_wait.store(now_ms(), Relaxed);
        } else if self.read_probe.load(Relaxed) == PROBE_ASKED {
            self.read_probe.store(PROBE_SEEN, Relaxed);
        }
        self.read_waker.register(cx.waker());
        self.check_open()
    }

    /// A write or flush returned `Pending`; see [`Self::read_pending`].
    #[inline]
    pub(crate) fn write_pending(&self, cx: &Context<'_>) -> io::Result<()> {
        if self.write_wait.load(Relaxed) == 0 {
            self.write_wait.store(now_ms(), Relaxed);
        }
        self.write_waker.register(cx.waker());
        self.check_open()
    }
}

#[cold]
fn closed_error(slot: u8) -> io::Error {
    let cause = CloseCause::from_slot(slot).unwrap_or(CloseCause::Shutdown);
    io::Error::new(
        cause.error_kind(),
        format!("connection closed by monconn: {cause}"),
    )
}

impl fmt::Debug for ConnRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnRecord")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("local", &self.local)
            .field("bytes_read", &self.bytes_read())
            .field("bytes_written", &self.bytes_written())
            .field("closed", &self.closed())
            .finish()
    }
}

/// Shorthand for the record as it is shared.
pub(crate) type Record = Arc<ConnRecord>;
