//! Reading a PROXY header off a socket, byte-exactly: the stream is left at
//! the first payload byte.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::header::ProxyHeader;
use super::parse::{frame, parse_frame, Frame, HeaderError};

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
