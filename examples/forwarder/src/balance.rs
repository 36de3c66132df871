//! Spreading the connections of a shared accept queue over the shards.
//!
//! With `--accept shared`, every shard accepts from the one listening socket
//! of a service, so a connection goes to whichever shard gets to it first: a
//! shard whose thread has no core at the moment leaves its share to the
//! others instead of letting it wait (`SO_REUSEPORT` hands each shard its
//! share regardless). Left alone, that race can also hand a burst of
//! long-lived connections (the streams of one transfer, say) to a single
//! shard, and leave the other cores with nothing to forward.
//!
//! So each shard counts the pairs it forwards, and a shard that has
//! [more than its share](Balance::over) stops accepting until that is no
//! longer so: the least loaded shard never stops, so some shard always
//! accepts. A shard waits only while it is over its share, and wakes when
//! a count changes (only then does a change of count cost a wakeup).

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;

use tokio::sync::Notify;

/// The pairs each shard forwards for one service.
#[derive(Debug)]
pub struct Balance {
    loads: Box<[Padded]>,
    /// Shards waiting for their turn: a count change wakes them only then.
    waiting: AtomicU32,
    changed: Notify,
}

/// A counter on its own cache line (two, for the adjacent-line prefetch), so
/// that one shard's counting does not slow the others'.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU32);

/// One shard's place in a [`Balance`].
#[derive(Clone, Debug)]
pub struct Slot {
    balance: Arc<Balance>,
    shard: usize,
}

/// A pair counted on its shard until dropped.
#[derive(Debug)]
pub struct Load(Slot);

impl Balance {
    /// A balance over `shards` shards, one [`Slot`] each.
    pub fn slots(shards: usize) -> Vec<Slot> {
        let balance = Arc::new(Balance {
            loads: (0..shards).map(|_| Padded::default()).collect(),
            waiting: AtomicU32::new(0),
            changed: Notify::new(),
        });
        (0..shards)
            .map(|shard| Slot {
                balance: balance.clone(),
                shard,
            })
            .collect()
    }

    /// Whether `shard` has more than its share: at least two pairs more
    /// than the least loaded shard, and an eighth more once it has many
    /// (short connections come and go on every shard; a few more on one is
    /// no reason to leave a connection waiting).
    pub fn over(&self, shard: usize) -> bool {
        let mine = self.loads[shard].0.load(SeqCst);
        let least = self.loads.iter().map(|l| l.0.load(SeqCst)).min();
        least.is_some_and(|least| mine > least + 1 + least / 8)
    }

    /// Wakes the shards waiting for their turn, if any, after a count changed.
    fn changed(&self) {
        if self.waiting.load(SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }
}

impl Slot {
    /// Waits until this shard is not over its share.
    pub async fn turn(&self) {
        let balance = &*self.balance;
        // The common case, on every accept: one look at the counts.
        while balance.over(self.shard) {
            // Woken by any `notify_waiters` from its creation on.
            let changed = balance.changed.notified();
            let _waiting = Waiting::announce(balance);
            // Checked again once announced: a change made before (which saw
            // nobody waiting, so woke nobody) shows here.
            if balance.over(self.shard) {
                changed.await;
            }
        }
    }

    /// Counts a pair on this shard until the returned [`Load`] is dropped.
    pub fn load(&self) -> Load {
        self.balance.loads[self.shard].0.fetch_add(1, SeqCst);
        self.balance.changed();
        Load(self.clone())
    }
}

/// A shard counted in [`Balance::waiting`] until dropped (also when its
/// accept loop is aborted while it waits).
struct Waiting<'a>(&'a Balance);

impl<'a> Waiting<'a> {
    fn announce(balance: &'a Balance) -> Self {
        balance.waiting.fetch_add(1, SeqCst);
        Waiting(balance)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, SeqCst);
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let Slot { balance, shard } = &self.0;
        balance.loads[*shard].0.fetch_sub(1, SeqCst);
        balance.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_shard_two_pairs_ahead_of_the_least_loaded_is_over() {
        let slots = Balance::slots(2);
        let balance = &slots[0].balance;
        let a: Vec<_> = (0..2).map(|_| slots[0].load()).collect();
        assert!(balance.over(0), "2 against 0");
        assert!(!balance.over(1), "the least loaded is never over");
        let _b = slots[1].load();
        assert!(!balance.over(0), "2 against 1");
        drop(a);
        let _many: Vec<_> = (0..16).map(|_| slots[1].load()).collect();
        let _more: Vec<_> = (0..18).map(|_| slots[0].load()).collect();
        // 18 against 17: within an eighth.
        assert!(!balance.over(0) && !balance.over(1));
    }

    /// `slot`'s turn, in a task of its own, checked to be waiting.
    async fn waiting(slot: &Slot) -> tokio::task::JoinHandle<()> {
        let slot = slot.clone();
        let waiter = tokio::spawn(async move { slot.turn().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "over its share: waits");
        waiter
    }

    /// Waits (up to 5 s) for `waiter` to get its turn.
    async fn resumed(waiter: tokio::task::JoinHandle<()>, by: &str) {
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap_or_else(|_| panic!("not woken by {by}"))
            .unwrap();
    }

    #[tokio::test]
    async fn a_waiting_shard_resumes_when_another_takes_more() {
        let slots = Balance::slots(2);
        let ahead: Vec<_> = (0..3).map(|_| slots[0].load()).collect();
        let waiter = waiting(&slots[0]).await;
        let taken: Vec<_> = (0..2).map(|_| slots[1].load()).collect();
        resumed(waiter, "the other shard's count").await;
        drop((ahead, taken));
    }

    #[tokio::test]
    async fn an_aborted_wait_is_no_longer_counted() {
        let slots = Balance::slots(2);
        let _ahead: Vec<_> = (0..2).map(|_| slots[0].load()).collect();
        let waiter = waiting(&slots[0]).await;
        assert_eq!(slots[0].balance.waiting.load(SeqCst), 1);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(slots[0].balance.waiting.load(SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_shard_resumes_when_its_own_pairs_end_on_another_thread() {
        let slots = Balance::slots(2);
        let ahead: Vec<_> = (0..2).map(|_| slots[0].load()).collect();
        let waiter = waiting(&slots[0]).await;
        std::thread::spawn(move || drop(ahead)).join().unwrap();
        resumed(waiter, "the pairs' end").await;
    }
}
