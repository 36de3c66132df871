//! Zero-copy forwarding with Linux `splice(2)`: socket -> pipe -> socket,
//! the bytes never entering user space.
//!
//! A [`Pipe`] is lent to one direction of one pair while bytes are in it and
//! given back to this thread's pool once it is empty, like the copy buffers:
//! an idle pair holds no pipe.
//!
//! With main.rs's `getrlimit` and `setrlimit`, this is the example's only
//! `unsafe` code (the library itself forbids it): three libc calls on file
//! descriptors that this module owns (the pipe's two ends) or borrows for
//! the duration of the call (a socket's).

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity asked for with `F_SETPIPE_SZ` (the kernel may round it).
const PIPE_SIZE: usize = 256 * 1024;

/// Pipes a thread keeps for reuse; more are closed when given back.
const KEEP: usize = 16;

static IN_USE: AtomicUsize = AtomicUsize::new(0);

/// Bytes spliced out of pipes so far, over all threads.
static MOVED: AtomicU64 = AtomicU64::new(0);

/// Pipes lent right now, over all threads.
pub(crate) fn in_use() -> usize {
    IN_USE.load(Relaxed)
}

/// Bytes moved by splice so far, over all pairs.
pub(crate) fn moved() -> u64 {
    MOVED.load(Relaxed)
}

/// A pipe lent to one direction of a pair, with the bytes spliced into it
/// and not yet out. Dropping it gives it back when empty, closes it when not.
pub(crate) struct Pipe {
    fds: Option<Fds>,
    /// Bytes in the pipe.
    pub(crate) len: usize,
}

impl Pipe {
    /// Borrows an empty pipe from this thread's pool, making one if it is empty.
    pub(crate) fn lend() -> io::Result<Pipe> {
        let fds = match FREE.try_with(|f| f.borrow_mut().pop()).ok().flatten() {
            Some(fds) => fds,
            None => Fds::new()?,
        };
        IN_USE.fetch_add(1, Relaxed);
        Ok(Pipe {
            fds: Some(fds),
            len: 0,
        })
    }

    /// Moves what `from` has (up to the pipe's room) into the pipe, without
    /// waiting. `Ok(0)` is the end of `from`'s stream; `WouldBlock` (with
    /// `from`'s readiness cleared) when it has nothing now.
    pub(crate) fn fill(&mut self, from: &TcpStream) -> io::Result<usize> {
        let fds = self.fds.as_ref().expect("pipe in use");
        let room = fds.size - self.len;
        let n = from.try_io(Interest::READABLE, || splice(raw(from), fds.write, room))?;
        self.len += n;
        Ok(n)
    }

    /// Moves bytes from the pipe into `to`, without waiting; `WouldBlock`
    /// (with `to`'s readiness cleared) when it takes none now.
    pub(crate) fn drain(&mut self, to: &TcpStream) -> io::Result<usize> {
        let fds = self.fds.as_ref().expect("pipe in use");
        let n = to.try_io(Interest::WRITABLE, || splice(fds.read, raw(to), self.len))?;
        self.len -= n;
        MOVED.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        IN_USE.fetch_sub(1, Relaxed);
        if let Some(fds) = self.fds.take() {
            if self.len == 0 {
                let _ = FREE.try_with(|f| {
                    let mut f = f.borrow_mut();
                    if f.len() < KEEP {
                        f.push(fds);
                    }
                });
            }
        }
    }
}

fn raw(s: &TcpStream) -> i32 {
    std::os::fd::AsRawFd::as_raw_fd(s)
}

thread_local! {
    static FREE: RefCell<Vec<Fds>> = const { RefCell::new(Vec::new()) };
}

/// The two ends of a non-blocking pipe, closed on drop.
struct Fds {
    read: i32,
    write: i32,
    size: usize,
}

impl Fds {
    fn new() -> io::Result<Fds> {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut pipe = Fds {
            read: fds[0],
            write: fds[1],
            size: 64 * 1024, // Linux's default capacity
        };
        // SAFETY: fcntl on a descriptor we own; a failure leaves the default size.
        let size = unsafe { libc::fcntl(pipe.write, libc::F_SETPIPE_SZ, PIPE_SIZE as i32) };
        if size > 0 {
            pipe.size = size as usize;
        }
        Ok(pipe)
    }
}

impl Drop for Fds {
    fn drop(&mut self) {
        // SAFETY: both descriptors are owned by this value and closed once.
        unsafe {
            libc::close(self.read);
            libc::close(self.write);
        }
    }
}

/// One non-blocking `splice(2)` of up to `len` bytes from `from` to `to`.
fn splice(from: i32, to: i32, len: usize) -> io::Result<usize> {
    // SAFETY: splice only reads and writes kernel objects behind descriptors
    // that stay open for the call (a pipe this module owns, a socket borrowed
    // from a live TcpStream); no user memory is passed.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
