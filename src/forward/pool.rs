//! Copy buffers, lent to a transfer only while its bytes are in flight.
//!
//! A connection pair waits for readiness with no buffer at all; once a side
//! is readable it borrows one [`Buf`] from this thread's pool, reads into it,
//! writes it on, and gives it back when the burst is done (or holds it while
//! the other side cannot take the bytes yet). A pair idle for hours costs its
//! sockets and its small state, nothing more.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// The size of a copy buffer: large enough that a bulk transfer moves in
/// few system calls, and under 64 KiB so that one write fits one TCP
/// segment of the largest size the stack builds (64 KiB with its headers,
/// for GSO and TSO alike). A 64 KiB write is one such segment plus a runt of
/// some 50 bytes, which `TCP_NODELAY` sends on its own: over loopback that
/// halved a stream's throughput at times (BENCHMARKS.md, "copy buffers").
pub(crate) const BUF_SIZE: usize = 63 * 1024;

/// Buffers a thread keeps for reuse; more are freed when given back.
const KEEP: usize = 16;

/// One thread's count of buffers lent minus given back, on its own cache
/// line: lending touches no memory shared with other threads.
#[repr(align(128))]
#[derive(Default)]
struct Count(AtomicIsize);

/// Every thread's count, summed by [`in_use`].
static COUNTS: Mutex<Vec<Arc<Count>>> = Mutex::new(Vec::new());

struct Local {
    free: RefCell<Vec<Box<[u8]>>>,
    count: Arc<Count>,
}

thread_local! {
    static LOCAL: Local = {
        let count = Arc::new(Count::default());
        COUNTS.lock().unwrap_or_else(|e| e.into_inner()).push(count.clone());
        Local { free: RefCell::new(Vec::new()), count }
    };
}

/// A copy buffer of [`BUF_SIZE`] bytes, borrowed from the pool; dropping it
/// gives it back.
pub(crate) struct Buf {
    data: Box<[u8]>,
}

impl Buf {
    /// Borrows a buffer from this thread's pool, allocating one if it is empty.
    pub(crate) fn lend() -> Buf {
        let data = LOCAL
            .try_with(|local| {
                local.count.0.fetch_add(1, Relaxed);
                local.free.borrow_mut().pop()
            })
            .ok()
            .flatten()
            .unwrap_or_else(|| vec![0; BUF_SIZE].into_boxed_slice());
        Buf { data }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        // On a thread that is going away, the buffer is simply freed (and
        // stays counted as lent: only tests read the count, on live threads).
        let _ = LOCAL.try_with(|local| {
            local.count.0.fetch_sub(1, Relaxed);
            let mut free = local.free.borrow_mut();
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
    let counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    counts
        .iter()
        .map(|c| c.0.load(Relaxed))
        .sum::<isize>()
        .max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's count: other tests lend on their own threads meanwhile.
    fn lent_here() -> isize {
        LOCAL.with(|local| local.count.0.load(Relaxed))
    }

    #[test]
    fn lends_and_takes_back() {
        let before = lent_here();
        let mut a = Buf::lend();
        a[0] = 7;
        assert_eq!(a.len(), BUF_SIZE);
        let ptr = a.as_ptr();
        assert_eq!(lent_here(), before + 1);
        drop(a);
        assert_eq!(lent_here(), before);
        // The same thread gets the same memory back.
        let b = Buf::lend();
        assert_eq!(b.as_ptr(), ptr);
        assert_eq!(lent_here(), before + 1);
    }
}
