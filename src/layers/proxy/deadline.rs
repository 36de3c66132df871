//! `Deadlines`: the header timeout of every waiting connection of a layer,
//! kept by one coarse clock and one shared task instead of a timer each.
//!
//! The clock is an epoch counter that one task per layer advances every
//! tick (a quarter of the timeout, 10 ms to 1 s), and only while some
//! connection waits. A connection whose header has not arrived leaves its
//! waker in the layer's table under a deadline epoch; at each tick the task
//! wakes those whose deadline has come, and their next poll refuses them.
//! A header that arrives takes the entry out again. So a connection costs
//! two uncontended locks and a slot in a table that keeps its capacity, not
//! a timer in tokio's wheel, and a stalled one is refused between the
//! timeout and the timeout plus a tick after its accept.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pin_project_lite::pin_project;
use slab::Slab;

/// The finest and the coarsest tick.
const TICK_MIN: Duration = Duration::from_millis(10);
const TICK_MAX: Duration = Duration::from_secs(1);

/// A table kept that large while empty is given back.
const KEEP_CAPACITY: usize = 1024;

/// The deadlines of a layer's waiting connections. Clones share one table
/// and one ticking task.
#[derive(Clone, Debug)]
pub(crate) struct Deadlines {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tick: Duration,
    /// Ticks from an accept to its deadline: a connection accepted during
    /// epoch `e` expires when the epoch reaches `e + ticks`, at least the
    /// timeout and at most the timeout plus a tick later.
    ticks: u64,
    /// The coarse clock: ticks counted while the ticker ran (written under
    /// the table's lock, read without it).
    epoch: AtomicU64,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    /// Whether a ticker task is running (it stops when the table empties).
    ticking: bool,
    /// The waiting connections: deadline epoch and waker.
    waiting: Slab<(u64, Waker)>,
}

// === impl Deadlines ===

impl Deadlines {
    /// Deadlines `timeout` after each accept.
    pub(crate) fn new(timeout: Duration) -> Self {
        let tick = (timeout / 4).clamp(TICK_MIN, TICK_MAX);
        let ticks = timeout.as_nanos().div_ceil(tick.as_nanos());
        Deadlines {
            shared: Arc::new(Shared {
                tick,
                ticks: u64::try_from(ticks).unwrap_or(u64::MAX / 2) + 1,
                epoch: AtomicU64::new(0),
                table: Mutex::default(),
            }),
        }
    }

    /// How coarse the deadline is: a stalled connection is refused at most
    /// this long after its timeout.
    #[cfg(test)]
    fn tick(&self) -> Duration {
        self.shared.tick
    }

    /// `future`, or `Err(Expired)` once the timeout since now has passed.
    pub(crate) fn run<F: Future>(&self, future: F) -> Expiring<F> {
        let deadline = self
            .shared
            .epoch
            .load(Relaxed)
            .saturating_add(self.shared.ticks);
        Expiring {
            future,
            slot: Slot {
                shared: self.shared.clone(),
                deadline,
                key: None,
            },
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Advances the epoch every tick and wakes the connections whose deadline
/// came, while any waits; holds the table weakly, so a layer dropped with
/// it ends it at the next tick.
fn ticker(shared: Weak<Shared>, tick: Duration) -> impl Future<Output = ()> + Send {
    // Made now, so that the task dropped before its first poll (its runtime
    // shutting down) still marks the ticker stopped.
    let mut running = Running(shared.clone());
    async move {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
        loop {
            interval.tick().await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut table = shared.lock();
            if table.waiting.is_empty() {
                table.ticking = false;
                if table.waiting.capacity() > KEEP_CAPACITY {
                    table.waiting = Slab::new();
                }
                running.disarm();
                return;
            }
            let epoch = shared.epoch.load(Relaxed) + 1;
            shared.epoch.store(epoch, Relaxed);
            for (_, (deadline, waker)) in &table.waiting {
                if *deadline <= epoch {
                    waker.wake_by_ref();
                }
            }
        }
    }
}

/// Marks the ticker stopped however it ends (its runtime shut down, say),
/// so that the next waiting connection starts another.
struct Running(Weak<Shared>);

impl Running {
    /// The ticker marked itself stopped: nothing left to do.
    fn disarm(&mut self) {
        self.0 = Weak::new();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.lock().ticking = false;
        }
    }
}

/// The header's deadline passed.
#[derive(Debug)]
pub(crate) struct Expired;

pin_project! {
    /// A future under a [`Deadlines`] deadline.
    pub(crate) struct Expiring<F> {
        #[pin]
        future: F,
        slot: Slot,
    }
}

impl<F: Future> Future for Expiring<F> {
    type Output = Result<F::Output, Expired>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if this.slot.wait(cx.waker()) {
            return Poll::Ready(Err(Expired));
        }
        Poll::Pending
    }
}

/// A waiting connection's entry in the table, taken out when dropped.
#[derive(Debug)]
struct Slot {
    shared: Arc<Shared>,
    deadline: u64,
    key: Option<usize>,
}

impl Slot {
    /// Whether the deadline passed; if not, `waker` is woken when it does.
    fn wait(&mut self, waker: &Waker) -> bool {
        let mut table = self.shared.lock();
        // Under the lock: a tick is either seen here or wakes the entry.
        if self.shared.epoch.load(Relaxed) >= self.deadline {
            return true;
        }
        match self.key.and_then(|key| table.waiting.get_mut(key)) {
            Some((_, old)) => old.clone_from(waker),
            None => self.key = Some(table.waiting.insert((self.deadline, waker.clone()))),
        }
        if !table.ticking {
            table.ticking = true;
            drop(table);
            let shared = Arc::downgrade(&self.shared);
            tokio::spawn(ticker(shared, self.shared.tick));
        }
        false
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            // Dropped outside the lock: a waker's drop may run anything.
            let entry = self.shared.lock().waiting.try_remove(key);
            drop(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(deadlines: &Deadlines) -> (usize, bool) {
        let table = deadlines.shared.lock();
        (table.waiting.len(), table.ticking)
    }

    async fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        let mut future = Some(future);
        std::future::poll_fn(|cx| Poll::Ready(future.take().unwrap().poll(cx))).await
    }

    /// Tasks alive in the test's runtime: the ticker, if running.
    fn tasks() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    #[test]
    fn the_tick_is_a_quarter_of_the_timeout_within_bounds() {
        let tick = |ms| Deadlines::new(Duration::from_millis(ms)).tick();
        assert_eq!(tick(0), TICK_MIN);
        assert_eq!(tick(400), Duration::from_millis(100));
        assert_eq!(tick(60_000), TICK_MAX);
        let ticks = |ms| Deadlines::new(Duration::from_millis(ms)).shared.ticks;
        assert_eq!((ticks(0), ticks(400), ticks(5_000)), (1, 5, 6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_future_expires_within_a_tick_after_its_timeout() {
        let deadlines = Deadlines::new(Duration::from_millis(400));
        let start = tokio::time::Instant::now();
        let stalled = deadlines.run(std::future::pending::<()>()).await;
        assert!(stalled.is_err());
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(400), "{took:?}");
        assert!(took <= Duration::from_millis(500), "{took:?}");
        // Its entry gone, the ticker stops at its next tick.
        assert_eq!(waiting(&deadlines).0, 0);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(waiting(&deadlines), (0, false));
        assert_eq!(tasks(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_future_done_in_time_leaves_nothing_behind() {
        let deadlines = Deadlines::new(Duration::from_millis(400));
        let sleep = tokio::time::sleep(Duration::from_millis(250));
        let mut done = Box::pin(deadlines.run(sleep));
        assert!(poll_once(done.as_mut()).await.is_pending());
        assert_eq!((waiting(&deadlines), tasks()), ((1, true), 1));
        assert!(done.await.is_ok());
        assert_eq!(waiting(&deadlines).0, 0);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!((waiting(&deadlines), tasks()), ((0, false), 0));
    }

    #[test]
    fn a_ticker_lost_with_its_runtime_is_started_again() {
        let deadlines = Deadlines::new(Duration::from_millis(400));
        let runtime = |paused| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(paused)
                .build()
                .unwrap()
        };
        // A connection waits, and its runtime goes, ticker and all.
        runtime(false).block_on(async {
            let mut stalled = Box::pin(deadlines.run(std::future::pending::<()>()));
            assert!(poll_once(stalled.as_mut()).await.is_pending());
            assert_eq!(waiting(&deadlines), (1, true));
        });
        assert_eq!(waiting(&deadlines), (0, false));
        // The next one, in another runtime, still expires.
        runtime(true).block_on(async {
            let stalled = deadlines.run(std::future::pending::<()>());
            let outer = tokio::time::timeout(Duration::from_secs(60), stalled).await;
            assert!(matches!(outer, Ok(Err(Expired))), "{outer:?}");
        });
    }

    #[tokio::test(start_paused = true)]
    async fn the_ticker_ends_with_the_layer() {
        let deadlines = Deadlines::new(Duration::from_millis(400));
        let weak = Arc::downgrade(&deadlines.shared);
        let mut stalled = Box::pin(deadlines.run(std::future::pending::<()>()));
        assert!(poll_once(stalled.as_mut()).await.is_pending());
        assert_eq!(tasks(), 1);
        // The ticker holds the table weakly: gone with the layer, and the
        // ticker returns at its next tick.
        drop((stalled, deadlines));
        assert_eq!(weak.strong_count(), 0);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(tasks(), 0);
    }
}
