//! Reading a PROXY header off a socket, byte-exactly: the stream is left at
//! the first payload byte.

use std::io;

use tokio::io::{AsyncReadExt, Interest};
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
/// stays in the socket for whoever reads it next. A header that arrives
/// whole is read as [`read_now`] reads it, once the socket is readable; one
/// sent in pieces, or longer than a first look, is gathered piece by piece
/// (each peek waits for new bytes).
pub(crate) async fn read_header(
    io: &mut TcpStream,
    max: usize,
) -> Result<ProxyHeader, HeaderError> {
    loop {
        io.readable().await.map_err(HeaderError::Io)?;
        // Nothing yet: "would block" clears the readiness, so the next wait
        // is for bytes.
        let now = io.try_io(Interest::READABLE, || match read_now(io, max) {
            Now::Done(read) => Ok(Some(read)),
            Now::Wait => Err(io::ErrorKind::WouldBlock.into()),
            Now::Piecewise => Ok(None),
        });
        match now {
            Ok(Some(read)) => return read,
            Ok(None) => break,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(HeaderError::Io(e)),
        }
    }
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

/// What [`read_now`] found.
pub(crate) enum Now {
    /// The header, read, or what is wrong with it.
    Done(Result<ProxyHeader, HeaderError>),
    /// Nothing there yet.
    Wait,
    /// Part of a header, or one longer than a first look; nothing consumed:
    /// for [`read_header`]'s piecewise reads (which also see an end within
    /// the header).
    Piecewise,
}

/// Reads the header if it is all there already, without waiting.
///
/// Right after the accept, tokio has not seen the socket readable yet
/// (that takes a turn of its event loop), so this asks the socket itself
/// (`recv` with `MSG_PEEK | MSG_DONTWAIT`, on Linux). A header that is there
/// is read and the connection handed on at once: no task woken, no timer,
/// no allocation.
pub(crate) fn read_now(io: &TcpStream, max: usize) -> Now {
    let mut buf = [0u8; FIRST_LOOK];
    let n = match now::peek(io, &mut buf) {
        None => return Now::Wait,
        Some(Err(e)) => return Now::Done(Err(HeaderError::Io(e))),
        Some(Ok(0)) => return Now::Done(Err(HeaderError::Truncated { got: 0 })),
        Some(Ok(n)) => n,
    };
    let len = match frame(&buf[..n], max) {
        Err(e) => return Now::Done(Err(e)),
        Ok(Frame::More(_)) => return Now::Piecewise,
        Ok(Frame::Done(len)) => len,
    };
    // Exactly the header's bytes, already in the socket's buffer.
    let mut got = 0;
    while got < len {
        match now::read(io, &mut buf[got..len]) {
            Some(Ok(0)) => return Now::Done(Err(HeaderError::Truncated { got })),
            Some(Ok(n)) => got += n,
            Some(Err(e)) => return Now::Done(Err(HeaderError::Io(e))),
            // Peeked, so there; were it not, the connection is unusable.
            None => return Now::Done(Err(HeaderError::Truncated { got })),
        }
    }
    Now::Done(parse_frame(&buf[..len]))
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
