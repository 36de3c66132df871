//! Reading a PROXY header off a socket, byte-exactly: the stream is left at
//! the first payload byte.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::parse::{frame, parse_frame, Frame, HeaderError};
use crate::proxied::ProxyHeader;

/// How much is looked at first: a v2 header with addresses and a few TLVs,
/// or any v1 header, fits.
const FIRST_LOOK: usize = 256;

/// Reads the header at the start of `io`, at most `max` bytes long, and
/// nothing after it.
///
/// The bytes are peeked, then exactly the header's are read: what follows
/// stays in the socket for whoever reads it next. A header sent in pieces is
/// gathered piece by piece (each peek waits for new bytes).
pub(crate) async fn read_header(
    io: &mut TcpStream,
    max: usize,
) -> Result<ProxyHeader, HeaderError> {
    let mut buf = vec![0u8; FIRST_LOOK.min(max.max(16))];
    let mut got = 0;
    loop {
        let upto = match frame(&buf[..got], max)? {
            Frame::Done(len) => return parse_frame(&buf[..len]),
            Frame::More(upto) => upto,
        };
        if buf.len() < upto {
            buf.resize(upto, 0);
        }
        let n = io.peek(&mut buf[got..]).await.map_err(HeaderError::Io)?;
        if n == 0 {
            return Err(HeaderError::Truncated { got });
        }
        // The header's bytes among those peeked: all of them, or up to its end.
        let take = match frame(&buf[..got + n], max)? {
            Frame::Done(len) => len - got,
            Frame::More(_) => n,
        };
        // Already in the socket's buffer: this read does not wait.
        io.read_exact(&mut buf[got..got + take])
            .await
            .map_err(HeaderError::Io)?;
        got += take;
    }
}

/// Reads the header if it is all there already, without waiting: `None`
/// when it is not (nothing consumed then; [`read_header`] waits for it).
///
/// Right after the accept, tokio has not seen the socket readable yet
/// (that takes a turn of its event loop), so this asks the socket itself
/// (`recv` with `MSG_PEEK | MSG_DONTWAIT`, on Linux). A header that is there
/// is read and the connection handed on at once: no task woken, no timer,
/// no allocation.
pub(crate) fn read_now(io: &TcpStream, max: usize) -> Option<Result<ProxyHeader, HeaderError>> {
    let mut buf = [0u8; FIRST_LOOK];
    let n = match now::peek(io, &mut buf) {
        None => return None,
        Some(Err(e)) => return Some(Err(HeaderError::Io(e))),
        Some(Ok(0)) => return Some(Err(HeaderError::Truncated { got: 0 })),
        Some(Ok(n)) => n,
    };
    let len = match frame(&buf[..n], max) {
        Err(e) => return Some(Err(e)),
        Ok(Frame::More(_)) => return None,
        Ok(Frame::Done(len)) => len,
    };
    // Exactly the header's bytes, already in the socket's buffer.
    let mut got = 0;
    while got < len {
        match now::read(io, &mut buf[got..len]) {
            Some(Ok(0)) => return Some(Err(HeaderError::Truncated { got })),
            Some(Ok(n)) => got += n,
            Some(Err(e)) => return Some(Err(HeaderError::Io(e))),
            // Peeked, so there; were it not, the connection is unusable.
            None => return Some(Err(HeaderError::Truncated { got })),
        }
    }
    Some(parse_frame(&buf[..len]))
}

/// Non-blocking peek and read: `None` for "nothing there yet".
#[cfg(target_os = "linux")]
mod now {
    use std::io;

    use rustix::net::{recv, RecvFlags};
    use tokio::net::TcpStream;

    fn recv_now(io: &TcpStream, buf: &mut [u8], flags: RecvFlags) -> Option<io::Result<usize>> {
        match recv(io, buf, flags | RecvFlags::DONTWAIT) {
            Ok((n, _)) => Some(Ok(n)),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => None,
            Err(e) => Some(Err(e.into())),
        }
    }

    pub(super) fn peek(io: &TcpStream, buf: &mut [u8]) -> Option<io::Result<usize>> {
        recv_now(io, buf, RecvFlags::PEEK)
    }

    pub(super) fn read(io: &TcpStream, buf: &mut [u8]) -> Option<io::Result<usize>> {
        recv_now(io, buf, RecvFlags::empty())
    }
}

/// Non-blocking peek and read through tokio, which knows of bytes only
/// after a turn of its event loop: `None` for "not yet".
#[cfg(not(target_os = "linux"))]
mod now {
    use std::io;
    use std::task::{Context, Poll, Waker};

    use tokio::io::ReadBuf;
    use tokio::net::TcpStream;

    pub(super) fn peek(io: &TcpStream, buf: &mut [u8]) -> Option<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        // A `Pending` only means "wait", which `read_header` then does with
        // the task's own waker.
        match io.poll_peek(&mut Context::from_waker(Waker::noop()), &mut buf) {
            Poll::Pending => None,
            Poll::Ready(r) => Some(r),
        }
    }

    pub(super) fn read(io: &TcpStream, buf: &mut [u8]) -> Option<io::Result<usize>> {
        match io.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            r => Some(r),
        }
    }
}
