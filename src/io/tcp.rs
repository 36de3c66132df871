//! Readiness-based, counted IO on a monitored `TcpStream`, for proxies that
//! borrow a buffer only once data is ready (see the forwarder).

use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};

use tokio::net::TcpStream;

use super::hexdump::Direction;
use super::MonitoredIo;

impl MonitoredIo<TcpStream> {
    /// Polls until the socket is readable, or fails once the connection is
    /// closed from outside (see [`MonitoredIo`]). Waiting counts as a pending
    /// read for `read_timeout`.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
    /// closed from outside. Waiting counts as a pending write for `write_timeout`.
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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

    /// Waits until the socket is readable; see [`Self::poll_read_ready`].
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_read_ready(cx)).await
    }

    /// Waits until the socket is writable; see [`Self::poll_write_ready`].
    pub async fn writable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_write_ready(cx)).await
    }

    /// Reads what is there without waiting, counting it;
    /// [`io::ErrorKind::WouldBlock`] when nothing is.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let record = self.record();
        record.check_open()?;
        match self.get_ref().try_read(buf) {
            Ok(n) => {
                let offset = record.on_read(n);
                self.dump(Direction::Read, offset, &buf[..n]);
                Ok(n)
            }
            Err(e) => Err(self.note(e)),
        }
    }

    /// Writes what fits without waiting, counting it;
    /// [`io::ErrorKind::WouldBlock`] when nothing does.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let record = self.record();
        record.check_open()?;
        match self.get_ref().try_write(buf) {
            Ok(n) => {
                let offset = record.on_write(n);
                self.dump(Direction::Write, offset, &buf[..n]);
                Ok(n)
            }
            Err(e) => Err(self.note(e)),
        }
    }

    /// Counts bytes moved by other means (a `splice(2)` pipe, say) as read
    /// from the client.
    pub fn count_read(&self, n: usize) {
        self.record().on_read(n);
    }

    /// Counts bytes moved by other means as written to the client.
    pub fn count_written(&self, n: usize) {
        self.record().on_write(n);
    }

    /// Notes an error met by other means (a failed `splice(2)`, say), so
    /// that the connection is counted as closed by an error.
    pub fn count_error(&self) {
        self.record().on_error();
    }

    fn note(&self, e: io::Error) -> io::Error {
        if e.kind() != io::ErrorKind::WouldBlock {
            self.record().on_error();
        }
        e
    }
}
