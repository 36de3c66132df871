//! A monitored, half-close-correct `copy_bidirectional` for proxies: one
//! future moves both directions between a monitored client and its backend,
//! and holds no buffer while the pair is idle.
//!
//! - it waits for a side to be readable with no buffer, then borrows a
//!   63 KiB buffer from the thread's pool, moves the burst, and gives it
//!   back (a buffer stays lent only while its bytes wait for a slow
//!   destination);
//! - with [`Mode::with_splice`], on Linux, for a connection that nobody
//!   watches when its copy starts (no `print_bytes`, no [`tap`](crate::tap)
//!   on it), a direction whose read filled a whole buffer goes on
//!   with `splice(2)` (socket -> pipe -> socket, no copy through user space,
//!   a pooled pipe lent per burst), until a burst is small again. Off by
//!   default: over loopback, copies through a 63 KiB buffer move more;
//! - one side's EOF becomes a write shutdown of the other, and the other
//!   direction goes on until it ends too (without [`Mode::with_half_close`],
//!   the first EOF closes both sides instead); an EOF the reactor reported
//!   before the short read that drained the socket is taken without reading
//!   it ([`eof_pending`]); when that FIN was known before the read that
//!   drained the socket, the last bytes are written with `MSG_MORE` (Linux)
//!   and the FIN passed on at once, so both leave in one segment (a
//!   request-reply-close exchange, `echod once` or an HTTP/1.0 server, costs
//!   both peers a segment less to send, receive and acknowledge);
//! - an error in either direction, or a close of the client from outside
//!   (idle, timeouts, kick, shutdown), ends the pair: both sockets close
//!   with a reset, so neither peer mistakes the cut for a clean end;
//! - a backend that stops taking the client's bytes is watched by the
//!   client's `write_timeout` ([`ConnRecord::set_upstream_blocked`]);
//! - the client side is counted (and hex-dumped) by its [`MonitoredIo`],
//!   including what `splice` moves.
//!
//! [`ConnRecord::set_upstream_blocked`]: crate::ConnRecord::set_upstream_blocked
//!
//! # Examples
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use monconn::forward::{copy_bidirectional, Mode};
//! use monconn::{Listener, Registry};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio::net::{TcpListener, TcpStream};
//!
//! // A backend that answers "pong".
//! let backend = TcpListener::bind("127.0.0.1:0").await?;
//! let backend_addr = backend.local_addr()?;
//! tokio::spawn(async move {
//!     let (mut s, _) = backend.accept().await.unwrap();
//!     let mut buf = [0; 4];
//!     s.read_exact(&mut buf).await.unwrap();
//!     s.write_all(b"pong").await.unwrap();
//! });
//!
//! // The proxy: every accepted client is monitored, then forwarded.
//! let service = Registry::new().service("proxy");
//! let listener = Listener::bind("127.0.0.1:0", service.clone()).await?;
//! let addr = listener.local_addr();
//! tokio::spawn(async move {
//!     while let Ok((client, _peer)) = listener.accept().await {
//!         let backend = TcpStream::connect(backend_addr).await.unwrap();
//!         tokio::spawn(copy_bidirectional(client, backend, Mode::default()));
//!     }
//! });
//!
//! let mut client = TcpStream::connect(addr).await?;
//! client.write_all(b"ping").await?;
//! let mut answer = [0; 4];
//! client.read_exact(&mut answer).await?;
//! assert_eq!(&answer, b"pong");
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll, Waker};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf, Ready};
use tokio::net::TcpStream;

use crate::MonitoredIo;

mod pool;
#[cfg(target_os = "linux")]
mod splice;
mod tcp;

use pool::{Buf, BUF_SIZE};

/// A spliced burst smaller than this sends the direction back to copies.
#[cfg(target_os = "linux")]
const SPLICE_MIN: usize = 16 * 1024;

/// How a pair moves its bytes and ends. The default: copies through pooled
/// buffers, half-close passed on.
///
/// # Examples
/// ```
/// let mode = monconn::forward::Mode::default()
///     .with_splice(true)
///     .with_half_close(false);
/// assert!(mode.splice() && !mode.half_close());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    splice: bool,
    half_close: bool,
}

impl Default for Mode {
    fn default() -> Self {
        Mode {
            splice: false,
            half_close: true,
        }
    }
}

impl Mode {
    /// Moves bulk transfers with `splice(2)` (Linux only, and never for a
    /// service with `print_bytes`, whose bytes must pass through user
    /// space to be dumped). Default false.
    #[must_use]
    pub fn with_splice(mut self, splice: bool) -> Self {
        self.splice = splice;
        self
    }

    /// Passes each side's EOF on as a write shutdown of the other and goes
    /// on until both have ended (`true`, the default), or ends the pair,
    /// closing both sides, at the first EOF (`false`, nginx stream's
    /// default).
    #[must_use]
    pub fn with_half_close(mut self, half_close: bool) -> Self {
        self.half_close = half_close;
        self
    }

    /// Whether bulk transfers use `splice(2)`.
    pub fn splice(&self) -> bool {
        self.splice
    }

    /// Whether a side's EOF is passed on as a half-close.
    pub fn half_close(&self) -> bool {
        self.half_close
    }
}

/// Copies both directions between `client` and `backend` until both have
/// ended, passing each side's EOF on as a write shutdown of the other (or,
/// without [`Mode::half_close`], until either ends). Returns the bytes
/// copied client -> backend and backend -> client.
///
/// The future is all the state a pair keeps while idle: the two sockets and
/// two small direction states (200 bytes on x86-64, tested); buffers and
/// pipes are lent per burst.
///
/// # Errors
/// The first error of either direction, including the client's being
/// closed from outside (idle, timeouts, kick, shutdown: see
/// [`MonitoredIo`]); both sockets are then closed with a reset, and the
/// client's connection is counted as closed by an error unless it was cut.
pub fn copy_bidirectional(
    client: MonitoredIo<TcpStream>,
    backend: TcpStream,
    mode: Mode,
) -> impl Future<Output = io::Result<(u64, u64)>> + Send {
    // A plain struct rather than an `async fn`: the future is all the state a
    // pair keeps while idle, so it is kept small.
    let splice = mode.splice && cfg!(target_os = "linux") && !client.record().watched();
    Pair {
        client,
        backend,
        up: Half::new(splice, mode.half_close),
        down: Half::new(splice, mode.half_close),
    }
}

/// Copy buffers and `splice` pipes lent right now to transfers in flight,
/// over all pairs of the process: both return to 0 when every pair is idle.
pub fn buffers_lent() -> (usize, usize) {
    #[cfg(target_os = "linux")]
    let pipes = splice::in_use();
    #[cfg(not(target_os = "linux"))]
    let pipes = 0;
    (pool::in_use(), pipes)
}

/// Bytes moved by `splice(2)` so far, over all pairs of the process (0 off
/// Linux, or when no pair uses it).
pub fn spliced_bytes() -> u64 {
    #[cfg(target_os = "linux")]
    return splice::moved();
    #[cfg(not(target_os = "linux"))]
    0
}

struct Pair {
    client: MonitoredIo<TcpStream>,
    backend: TcpStream,
    /// Client -> backend.
    up: Half,
    /// Backend -> client.
    down: Half,
}

impl Future for Pair {
    type Output = io::Result<(u64, u64)>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<(u64, u64)>> {
        let this = &mut *self;
        // Parks the waker on the client's record, so that a close from
        // outside ends the pair even while it waits on the backend alone.
        if let Poll::Ready(cause) = this.client.record().poll_closed(cx) {
            this.reset_both();
            return Poll::Ready(Err(io::Error::new(
                cause.error_kind(),
                format!("connection closed by monconn: {cause}"),
            )));
        }
        // An error on either side (a backend reset, say) ends the pair, and
        // the connection counts as closed by an error.
        // Without half-close, a direction's end is the pair's: no shutdown,
        // both sockets close when the pair returns.
        let alone = !this.up.half_close;
        let up = match this.up.poll(
            cx,
            &mut this.client,
            &mut this.backend,
            this.down.done() || alone,
        ) {
            Poll::Ready(Err(e)) => return Poll::Ready(Err(this.client_error(e))),
            up => up,
        };
        // A backend that stopped taking the client's bytes is watched by
        // the client's `write_timeout` (the sweeper cuts the pair, which
        // is woken through `poll_closed` above).
        this.client
            .record()
            .set_upstream_blocked(up.is_pending() && this.up.writing());
        let down = match this.down.poll(
            cx,
            &mut this.backend,
            &mut this.client,
            this.up.done() || alone,
        ) {
            Poll::Ready(Err(e)) => return Poll::Ready(Err(this.client_error(e))),
            down => down,
        };
        match (up, down) {
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => {
                Poll::Ready(Ok((this.up.bytes, this.down.bytes)))
            }
            (Poll::Ready(Ok(())), _) | (_, Poll::Ready(Ok(()))) if alone => {
                Poll::Ready(Ok((this.up.bytes, this.down.bytes)))
            }
            _ => Poll::Pending,
        }
    }
}

impl Pair {
    /// Marks the client's record as ended by an error, and passes `e` on.
    /// Both sockets will close with a reset: an error is not a clean end
    /// for either peer.
    fn client_error(&self, e: io::Error) -> io::Error {
        self.client.count_error();
        self.reset_both();
        e
    }

    /// Makes the closes of both sockets resets (`SO_LINGER` 0): a pair cut
    /// by an error, a timeout, a kick or a shutdown must not look like a
    /// clean end to the client or to the backend.
    fn reset_both(&self) {
        for tcp in [self.client.get_ref(), &self.backend] {
            // Nothing else to do if it fails: the socket closes all the same.
            let _ = SockRef::from(tcp).set_linger(Some(std::time::Duration::ZERO));
        }
    }
}

/// One direction of a pair.
struct Half {
    state: State,
    /// Bytes moved so far.
    bytes: u64,
    /// Whether this direction may use `splice(2)`.
    splice: bool,
    /// [`Mode::half_close`], the same in both halves (kept here, in what
    /// would be padding, so that the pair future stays as small).
    half_close: bool,
    /// The source's FIN was seen before the read in flight drained it: the
    /// bytes being written are its last, and the destination's FIN goes in
    /// the same segment (see [`End::poll_write_before_fin`]).
    eof: bool,
}

enum State {
    /// Waiting for the source to be readable; holds nothing. `drained`:
    /// the last read was short (it drained the socket) and the direction
    /// has not waited for the source since: only then can its EOF be known
    /// without a read ([`eof_pending`]), so only then is that asked.
    Idle { drained: bool },
    /// Writing `buf[pos..end]` to the destination.
    Write { buf: Buf, pos: u32, end: u32 },
    /// Bulk transfer: moving bytes through a pipe, `None` while it waits.
    #[cfg(target_os = "linux")]
    Splice(Option<splice::Pipe>),
    /// The source ended and the destination's write side is shut down.
    Done,
}

impl Half {
    fn new(splice: bool, half_close: bool) -> Half {
        Half {
            state: State::Idle { drained: false },
            bytes: 0,
            splice,
            half_close,
            eof: false,
        }
    }

    /// Whether the source ended (and the destination was told).
    fn done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Whether bytes read wait to be written (on `Pending`: the destination
    /// is not taking them).
    fn writing(&self) -> bool {
        match self.state {
            State::Write { .. } => true,
            #[cfg(target_os = "linux")]
            State::Splice(Some(_)) => true,
            _ => false,
        }
    }

    /// Moves bytes from `src` to `dst` until one of them would block
    /// (`Pending`) or `src` ended (`Ready(Ok)`). `last`: the other direction
    /// is done, so this one's end closes the pair.
    fn poll<S: End, D: End>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut S,
        dst: &mut D,
        last: bool,
    ) -> Poll<io::Result<()>> {
        loop {
            match &mut self.state {
                State::Done => return Poll::Ready(Ok(())),
                State::Idle { drained } => {
                    let drained = std::mem::take(drained);
                    ready!(src.poll_read_ready(cx))?;
                    if drained && src.eof_pending() {
                        self.finish(dst, last)?;
                        continue;
                    }
                    // Whether the FIN came before this read: then a short
                    // read drains the socket up to it, and its bytes are
                    // the last. Read off the readiness just polled, with no
                    // lock and no system call.
                    let fin = read_readiness(src.tcp()).is_some_and(|r| r.is_read_closed());
                    let mut buf = Buf::lend();
                    let n = ready!(src.poll_read(cx, &mut buf))?;
                    if n == 0 {
                        self.finish(dst, last)?;
                        continue;
                    }
                    self.bytes += n as u64;
                    self.eof = fin && n < buf.len();
                    self.state = State::Write {
                        buf,
                        pos: 0,
                        end: n as u32,
                    };
                }
                State::Write { buf, pos, end } => {
                    while *pos < *end {
                        let bytes = &buf[*pos as usize..*end as usize];
                        let n = if self.eof {
                            ready!(dst.poll_write_before_fin(cx, bytes))?
                        } else {
                            ready!(dst.poll_write(cx, bytes))?
                        };
                        if n == 0 {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        *pos += n as u32;
                    }
                    if self.eof {
                        // The FIN now, even for the pair's last direction:
                        // it leaves with the bytes held back for it, which
                        // a later close would also send, but not at once.
                        self.state = State::Done;
                        dst.shutdown_write()?;
                        continue;
                    }
                    // A full buffer is a bulk transfer: go on without copies.
                    let bulk = *end as usize == BUF_SIZE;
                    self.state = State::Idle { drained: !bulk };
                    #[cfg(target_os = "linux")]
                    if bulk && self.splice {
                        self.state = State::Splice(None);
                    }
                    let _ = bulk;
                }
                #[cfg(target_os = "linux")]
                State::Splice(slot) => {
                    if slot.is_none() {
                        ready!(src.poll_read_ready(cx))?;
                        let Ok(mut pipe) = splice::Pipe::lend() else {
                            // No pipe to be had (out of file descriptors, say):
                            // this direction goes on with copies.
                            self.splice = false;
                            self.state = State::Idle { drained: false };
                            continue;
                        };
                        match src.fill(&mut pipe) {
                            Ok(0) => {
                                drop(pipe);
                                self.finish(dst, last)?;
                                continue;
                            }
                            Ok(n) => self.bytes += n as u64,
                            // Drained for now (readiness cleared): wait, holding nothing.
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                            Err(e) => return Poll::Ready(Err(e)),
                        }
                        *slot = Some(pipe);
                    }
                    let pipe = slot.as_mut().expect("pipe lent above");
                    let moved = pipe.len;
                    while pipe.len > 0 {
                        ready!(dst.poll_write_ready(cx))?;
                        match dst.drain(pipe) {
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return Poll::Ready(Err(e)),
                        }
                    }
                    // The empty pipe goes back to the pool. Small bursts are
                    // cheaper copied (splice cannot tell a drained socket from a
                    // short read, and costs a call more): back to the buffer.
                    self.state = if moved < SPLICE_MIN {
                        State::Idle { drained: false }
                    } else {
                        State::Splice(None)
                    };
                }
            }
        }
    }

    /// The source ended: shut down the destination's write side, unless
    /// this was the `last` direction: then both sockets close right away,
    /// each with everything read, and a close sends the same FIN (a system
    /// call less per connection).
    fn finish<D: End>(&mut self, dst: &mut D, last: bool) -> io::Result<()> {
        self.state = State::Done;
        if last {
            return Ok(());
        }
        dst.shutdown_write()
    }
}

/// A side of a pair: the monitored client or the plain backend.
trait End {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    /// Writes the source's last bytes, which a write shutdown follows at
    /// once: on Linux with `MSG_MORE`, which holds a short tail back until
    /// that shutdown, so that the FIN leaves in the same segment. One
    /// segment less per short exchange (a request, then the server's
    /// answer and close) for both peers to send, receive and acknowledge.
    fn poll_write_before_fin(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        #[cfg(target_os = "linux")]
        return tcp::poll_send_more(self.tcp(), cx, buf);
        #[cfg(not(target_os = "linux"))]
        self.poll_write(cx, buf)
    }
    fn tcp(&self) -> &TcpStream;
    /// Whether a read would return only EOF: see [`eof_pending`].
    fn eof_pending(&self) -> bool {
        eof_pending(self.tcp())
    }
    /// Splices from this side into `pipe`, counting what it moves.
    #[cfg(target_os = "linux")]
    fn fill(&self, pipe: &mut splice::Pipe) -> io::Result<usize> {
        pipe.fill(self.tcp())
    }
    /// Splices from `pipe` into this side, counting what it moves.
    #[cfg(target_os = "linux")]
    fn drain(&self, pipe: &mut splice::Pipe) -> io::Result<usize> {
        pipe.drain(self.tcp())
    }
    fn shutdown_write(&self) -> io::Result<()> {
        match SockRef::from(self.tcp()).shutdown(Shutdown::Write) {
            // The peer is gone already: nothing left to tell it.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }
}

/// Whether a read of `tcp` would return nothing but EOF, known without the
/// read: the reactor saw the peer's FIN (`EPOLLRDHUP`) and a later short
/// read, which drains the socket, cleared readability. Everything before a
/// FIN is queued before it, so that read got all of it: this saves the
/// `recv` that would only return 0 (nginx saves it the same way). A reset
/// (an error event) still goes through a read, which reports it.
///
/// Meant for right after `poll_read_ready` returned `Ready`: the readiness
/// is then not empty, and this poll completes at once, never parking a
/// waker. Otherwise it is only slower (a waiter added and removed).
pub fn eof_pending(tcp: &TcpStream) -> bool {
    read_readiness(tcp)
        .is_some_and(|r| r.is_read_closed() && (r & (Ready::READABLE | Ready::ERROR)).is_empty())
}

/// `tcp`'s read readiness as the reactor last saw it, if not empty: after
/// `poll_read_ready` returned `Ready`, it is not, and this completes at once
/// without a lock. Empty, it would park a waiter (a lock to add it, one to
/// remove it): `None` then.
fn read_readiness(tcp: &TcpStream) -> Option<Ready> {
    let ready = pin!(tcp.ready(Interest::READABLE | Interest::ERROR));
    match ready.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(r)) => Some(r),
        _ => None,
    }
}

/// Reads into `buf` through `AsyncRead`, which, unlike `try_read`, knows
/// that a short read drained the socket and saves the `EAGAIN` call.
fn read_into<R: AsyncRead + Unpin>(
    io: &mut R,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    let mut buf = ReadBuf::new(buf);
    ready!(Pin::new(io).poll_read(cx, &mut buf))?;
    Poll::Ready(Ok(buf.filled().len()))
}

impl End for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        read_into(self, cx, buf)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_write(cx, buf)
    }
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl End for MonitoredIo<TcpStream> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        MonitoredIo::poll_read_ready(self, cx)
    }
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        MonitoredIo::poll_write_ready(self, cx)
    }
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        read_into(self, cx, buf)
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_write(cx, buf)
    }
    fn poll_write_before_fin(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // A watched connection's bytes go through `AsyncWrite`, which shows
        // them to its watchers.
        #[cfg(target_os = "linux")]
        if !self.record().watched() {
            return self.poll_send_more(cx, buf);
        }
        self.poll_write(cx, buf)
    }
    fn tcp(&self) -> &TcpStream {
        self.get_ref()
    }
    #[cfg(target_os = "linux")]
    fn fill(&self, pipe: &mut splice::Pipe) -> io::Result<usize> {
        let n = pipe.fill(self.get_ref()).inspect_err(|e| self.note(e))?;
        self.count_read(n);
        Ok(n)
    }
    #[cfg(target_os = "linux")]
    fn drain(&self, pipe: &mut splice::Pipe) -> io::Result<usize> {
        let n = pipe.drain(self.get_ref()).inspect_err(|e| self.note(e))?;
        self.count_written(n);
        Ok(n)
    }
}

/// Notes a real error (not `WouldBlock`) of the client side.
trait NoteError {
    fn note(&self, e: &io::Error);
}

impl NoteError for MonitoredIo<TcpStream> {
    fn note(&self, e: &io::Error) {
        if e.kind() != io::ErrorKind::WouldBlock {
            self.count_error();
        }
    }
}
