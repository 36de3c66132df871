//! Copy buffers, lent to a transfer only while its bytes are in flight.
//!
//! A connection pair waits for readiness with no buffer at all; once a side
//! is readable it borrows one [`Buf`] from this thread's pool, reads into it,
//! writes it on, and gives it back when the burst is done (or holds it while
//! the other side cannot take the bytes yet). A pair idle for hours costs its
//! sockets and its small state, nothing more.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The size of a copy buffer: large enough that a bulk transfer moves in
/// few system calls.
pub(crate) const BUF_SIZE: usize = 64 * 1024;

/// Buffers a thread keeps for reuse; more are freed when given back.
const KEEP: usize = 16;

/// Buffers lent and not yet given back, over all threads.
static IN_USE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A copy buffer of [`BUF_SIZE`] bytes, borrowed from the pool; dropping it
/// gives it back.
pub(crate) struct Buf {
    data: Box<[u8]>,
}

impl Buf {
    /// Borrows a buffer from this thread's pool, allocating one if it is empty.
    pub(crate) fn lend() -> Buf {
        IN_USE.fetch_add(1, Relaxed);
        let data = FREE
            .try_with(|free| free.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| vec![0; BUF_SIZE].into_boxed_slice());
        Buf { data }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        IN_USE.fetch_sub(1, Relaxed);
        let data = std::mem::take(&mut self.data);
        // On a thread that is going away, the buffer is simply freed.
        let _ = FREE.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < KEEP {
                free.push(data);
            }
        });
    }
}

impl Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

/// Buffers lent right now, over all threads.
pub(crate) fn in_use() -> usize {
    IN_USE.load(Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lends_and_takes_back() {
        let before = in_use();
        let mut a = Buf::lend();
        a[0] = 7;
        assert_eq!(a.len(), BUF_SIZE);
        let ptr = a.as_ptr();
        assert_eq!(in_use(), before + 1);
        drop(a);
        assert_eq!(in_use(), before);
        // The same thread gets the same memory back.
        let b = Buf::lend();
        assert_eq!(b.as_ptr(), ptr);
    }
}
