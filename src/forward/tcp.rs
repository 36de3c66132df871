//! Readiness-based, counted IO on the monitored client of a pair: the copy
//! engine waits for readiness holding no buffer, and counts what `splice(2)`
//! moves past `AsyncRead`/`AsyncWrite`.

use std::io;
use std::task::{ready, Context, Poll};

use tokio::net::TcpStream;

use crate::MonitoredIo;

impl MonitoredIo<TcpStream> {
    /// Polls until the socket is readable, or fails once the connection is
    /// closed from outside. Waiting counts as a pending read for
    /// `read_timeout`.
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let record = self.record();
        record.check_open()?;
        match self.get_ref().poll_read_ready(cx) {
            Poll::Pending => {
                record.read_pending(cx)?;
                Poll::Pending
            }
            ready => ready,
        }
    }

    /// Polls until the socket is writable, or fails once the connection is
    /// closed from outside. Waiting counts as a pending write for
    /// `write_timeout`.
    pub(crate) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let record = self.record();
        record.check_open()?;
        match self.get_ref().poll_write_ready(cx) {
            Poll::Pending => {
                record.write_pending(cx)?;
                Poll::Pending
            }
            ready => ready,
        }
    }

    /// Writes `buf` with `MSG_MORE` (see [`poll_send_more`]), counted as
    /// written, as a pending write while it waits, and as an error if it
    /// fails. The bytes are not shown to watchers: for an unwatched
    /// connection only.
    #[cfg(target_os = "linux")]
    pub(crate) fn poll_send_more(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_write_ready(cx))?;
            match send_more(self.get_ref(), buf) {
                Ok(n) => {
                    self.count_written(n);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.count_error();
                    return Poll::Ready(Err(e));
                }
            }
        }
    }

    /// Counts bytes moved by other means (a `splice(2)` pipe) as read from
    /// the client.
    pub(crate) fn count_read(&self, n: usize) {
        self.record().on_read(n);
    }

    /// Counts bytes moved by other means as written to the client.
    pub(crate) fn count_written(&self, n: usize) {
        self.record().on_write(n);
    }

    /// Notes an error met by other means (a failed `splice(2)`, or the
    /// backend's), so that the connection is counted as closed by an error.
    pub(crate) fn count_error(&self) {
        self.record().on_error();
    }
}

/// Writes `buf` to `tcp` with `MSG_MORE`: a tail shorter than a segment
/// waits in the socket for more, or for the write shutdown that the caller
/// makes next, whose FIN then leaves in the same segment.
#[cfg(target_os = "linux")]
pub(crate) fn poll_send_more(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(tcp.poll_write_ready(cx))?;
        match send_more(tcp, buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return Poll::Ready(done),
        }
    }
}

/// One `send(MSG_MORE)` through tokio, which clears the socket's write
/// readiness when it would block.
#[cfg(target_os = "linux")]
fn send_more(tcp: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    use rustix::net::{send, SendFlags};
    tcp.try_io(tokio::io::Interest::WRITABLE, || {
        send(tcp, buf, SendFlags::MORE | SendFlags::NOSIGNAL).map_err(io::Error::from)
    })
}
