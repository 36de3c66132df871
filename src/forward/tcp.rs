//! Readiness-based, counted IO on the monitored client of a pair: the copy
//! engine waits for readiness holding no buffer, and counts what `splice(2)`
//! moves past `AsyncRead`/`AsyncWrite`.

use std::io;
use std::task::{Context, Poll};

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
