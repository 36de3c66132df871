//! `MonitoredIo<T>`: an `AsyncRead + AsyncWrite` that counts into its record.

use std::any::{Any, TypeId};
use std::fmt;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::guard::ConnGuard;
use super::record::{ConnRecord, Record};
use super::watch::Direction;

pin_project! {
    /// A transport whose reads and writes are counted into its connection's
    /// [`ConnRecord`].
    ///
    /// Every `Ready(Ok(n))` of `poll_read`, `poll_write` and
    /// `poll_write_vectored` adds `n` to the record's byte count and stamps
    /// the time of the last read or write; that is all the hot path does, on
    /// this connection's own atomics. `poll_flush` and `poll_shutdown`
    /// are forwarded.
    ///
    /// A connection that is watched (`print_bytes`, or a tap that matches
    /// it) also hands a copy of the bytes to a bounded queue, never waiting
    /// on it: a full queue drops the copy and counts the loss. One that is
    /// not pays one relaxed load of its own record for this.
    ///
    /// When the connection is closed from outside (the sweeper, a kick, a
    /// service stop), a task parked on it is woken and its next read, write,
    /// flush or shutdown fails: [`io::ErrorKind::TimedOut`] for idle and
    /// timeouts, [`io::ErrorKind::ConnectionAborted`] for kicks and shutdown.
    ///
    /// A cut is not a clean end: a cut `MonitoredIo<tokio::net::TcpStream>`
    /// closes with a reset (`SO_LINGER` 0 when dropped, and no FIN from
    /// `poll_shutdown` before it), so the peer's next read fails with
    /// `ECONNRESET` and a truncated download is an error, not a short file.
    /// Bytes still in the send buffer are dropped. Other transports are
    /// closed as their `Drop` closes them.
    ///
    /// A completed `poll_flush` or `poll_shutdown` ends the write wait that
    /// `write_timeout` watches, as a completed write does.
    ///
    /// Dropping it removes the connection from its service's table, folds its
    /// bytes into the service totals and releases its admission.
    ///
    /// `Unpin` when `T` is.
    ///
    /// # Examples
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// let service = monconn::Registry::new().service("demo");
    /// let (mut client, server) = tokio::io::duplex(64);
    /// let addr = "127.0.0.1:1".parse().unwrap();
    /// let mut server = service.wrap(server, addr, addr)?;
    /// client.write_all(b"ping").await?;
    /// let mut buf = [0; 4];
    /// server.read_exact(&mut buf).await?;
    /// server.write_all(b"pong!").await?;
    /// let record = server.record();
    /// assert_eq!((record.bytes_read(), record.bytes_written()), (4, 5));
    /// # Ok(()) }
    /// ```
    pub struct MonitoredIo<T> {
        // Dropped first (fields drop in order): the connection is released
        // (unlisted, its bytes in the totals) before its socket closes, so a
        // peer that saw the close reads stats that include it.
        guard: ConnGuard,
        #[pin]
        inner: T,
        // Makes the transport's close a reset, run on drop after a cut;
        // `Some` for a `tokio::net::TcpStream`.
        reset: Option<fn(&T)>,
    }

    impl<T> PinnedDrop for MonitoredIo<T> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(reset) = this.reset {
                if this.guard.record().closed().is_some() {
                    reset(this.inner.as_ref().get_ref());
                }
            }
        }
    }
}

/// The reset of a cut connection's transport: `SO_LINGER` 0 for a
/// `tokio::net::TcpStream`, nothing known for other transports.
fn reset_of<T: 'static>() -> Option<fn(&T)> {
    (TypeId::of::<T>() == TypeId::of::<TcpStream>()).then_some(reset_tcp::<T> as fn(&T))
}

fn reset_tcp<T: 'static>(io: &T) {
    if let Some(tcp) = (io as &dyn Any).downcast_ref::<TcpStream>() {
        // The close that follows sends a RST; nothing else to do on failure.
        let _ = SockRef::from(tcp).set_linger(Some(Duration::ZERO));
    }
}

// === impl MonitoredIo ===

impl<T> MonitoredIo<T> {
    /// Monitors `inner`, counted into `record`, which it releases when dropped.
    pub(crate) fn new(inner: T, record: Record) -> Self
    where
        T: 'static,
    {
        MonitoredIo {
            inner,
            guard: ConnGuard::new(record),
            reset: reset_of::<T>(),
        }
    }

    /// The connection's live record: id, addresses, byte counts, idle time.
    /// Clone the `Arc` to keep reading it after the connection is gone.
    pub fn record(&self) -> &Arc<ConnRecord> {
        self.guard.record()
    }

    /// The id of the service the connection belongs to.
    pub fn sid(&self) -> &str {
        self.guard.record().sid()
    }

    /// The wrapped transport.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped transport, mutably. Bytes moved through it directly are
    /// not counted.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Ends the monitoring and hands back the transport, open: the
    /// connection leaves its service's table (counted as closed, its bytes
    /// folded into the totals, its slot released) as if it were dropped,
    /// but the transport is not closed, and not reset even if the connection
    /// was cut. For protocol upgrades that need the bare socket.
    ///
    /// # Examples
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// let service = monconn::Registry::new().service("demo");
    /// let (mut client, server) = tokio::io::duplex(64);
    /// let addr = "127.0.0.1:1".parse().unwrap();
    /// let mut server = service.wrap(server, addr, addr)?;
    /// server.write_all(b"hi").await?;
    /// let mut bare = server.into_inner();
    /// assert_eq!(service.connections(), 0);
    /// bare.write_all(b"!").await?; // not counted any more
    /// let mut buf = [0; 3];
    /// client.read_exact(&mut buf).await?;
    /// assert_eq!((&buf, service.bytes().written), (b"hi!", 2));
    /// # Ok(()) }
    /// ```
    // The one unsafe block of the crate: a type with a `Drop` impl cannot be
    // destructured, so its fields are read out of a `ManuallyDrop`.
    #[allow(unsafe_code)]
    pub fn into_inner(self) -> T {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped nor used again, so each field is
        // moved out exactly once; `reset` is a `Copy` option of a fn pointer
        // with nothing to drop. `self` was taken by value, so it is not
        // pinned: moving `inner` out breaks no pinning promise.
        let (guard, inner) = unsafe { (std::ptr::read(&this.guard), std::ptr::read(&this.inner)) };
        drop(guard);
        inner
    }

    /// The wrapped transport, pinned. Bytes moved through it directly are
    /// not counted.
    pub fn get_pin_mut(self: Pin<&mut Self>) -> Pin<&mut T> {
        self.project().inner
    }
}

/// Hands the bytes of a watched connection to its watcher.
#[cold]
#[inline(never)]
fn watch(record: &ConnRecord, dir: Direction, offset: u64, n: usize, bufs: &[IoSlice<'_>]) {
    if n == 0 {
        return;
    }
    record.with_watcher(|watcher| watcher.on_bytes(record, dir, offset, n, bufs));
}

impl<T: AsyncRead> AsyncRead for MonitoredIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let record = this.guard.record();
        record.check_open()?;
        let before = buf.filled().len();
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let bytes = &buf.filled()[before..];
                let offset = record.on_read(bytes.len());
                if record.watched() {
                    watch(
                        record,
                        Direction::Read,
                        offset,
                        bytes.len(),
                        &[IoSlice::new(bytes)],
                    );
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                record.on_error();
                Poll::Ready(Err(e))
            }
            Poll::Pending => {
                record.read_pending(cx)?;
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite> AsyncWrite for MonitoredIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let record = this.guard.record();
        record.check_open()?;
        let n = ready!(ready_or_park(this.inner.poll_write(cx, buf), record, cx))?;
        let offset = record.on_write(n);
        if record.watched() {
            watch(record, Direction::Write, offset, n, &[IoSlice::new(buf)]);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let record = this.guard.record();
        record.check_open()?;
        let n = ready!(ready_or_park(
            this.inner.poll_write_vectored(cx, bufs),
            record,
            cx
        ))?;
        let offset = record.on_write(n);
        if record.watched() {
            watch(record, Direction::Write, offset, n, bufs);
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let record = this.guard.record();
        record.check_open()?;
        ready!(ready_or_park(this.inner.poll_flush(cx), record, cx))?;
        record.write_done();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let record = this.guard.record();
        // A cut sends no FIN: the close that follows is a reset.
        record.check_open()?;
        ready!(ready_or_park(this.inner.poll_shutdown(cx), record, cx))?;
        record.write_done();
        Poll::Ready(Ok(()))
    }
}

/// Unwraps a write-side poll: notes an error, or parks the waker on `Pending`.
#[inline]
fn ready_or_park<R>(
    poll: Poll<io::Result<R>>,
    record: &ConnRecord,
    cx: &Context<'_>,
) -> Poll<io::Result<R>> {
    match poll {
        Poll::Ready(Err(e)) => {
            record.on_error();
            Poll::Ready(Err(e))
        }
        Poll::Pending => match record.write_pending(cx) {
            Ok(()) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        },
        ready => ready,
    }
}

impl<T: fmt::Debug> fmt::Debug for MonitoredIo<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitoredIo")
            .field("inner", &self.inner)
            .field("record", self.record())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::MonitoredIo;

    fn assert_unpin_send_sync<T: Unpin + Send + Sync>() {}

    #[test]
    fn auto_traits() {
        assert_unpin_send_sync::<MonitoredIo<tokio::net::TcpStream>>();
        assert_unpin_send_sync::<MonitoredIo<tokio::io::DuplexStream>>();
    }
}
