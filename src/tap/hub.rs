//! The tap hub: one per registry, the [`Watcher`] every record of its
//! services holds. It keeps the subscribers, marks the connections they
//! match (the record's `TAP` bit, the only thing an unwatched connection
//! ever reads of the tap) and hands each matching subscriber its events
//! without ever waiting.

use std::io::IoSlice;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::event::TapEvent;
use super::filter::{TapFilter, TapLimits};
use super::log;
use crate::clock::now_ms;
use crate::io::{ConnRecord, Direction, Watcher};

/// The subscribers of one registry's taps.
#[derive(Default)]
pub(crate) struct Hub {
    /// Read by connections on their watched path; replaced whole on a
    /// change.
    subs: ArcSwap<Vec<Arc<Sub>>>,
    /// Bumped after each change of `subs`: a connection that found no
    /// subscriber and cleared its mark checks that no subscriber came
    /// meanwhile.
    version: AtomicU64,
    /// Serialises changes of `subs`.
    edit: Mutex<()>,
    next_id: AtomicU64,
}

/// One subscriber: its filter, its limits, its queue and its losses.
pub(crate) struct Sub {
    id: u64,
    pub(super) filter: TapFilter,
    limits: TapLimits,
    tx: mpsc::Sender<TapEvent>,
    /// Events dropped: over the rate, or the queue full.
    pub(super) lost: AtomicU64,
    /// The clock second `sent` counts in.
    second: AtomicU64,
    sent: AtomicU32,
}

// === impl Hub ===

impl Hub {
    /// Adds a subscriber; returns it and the receiving end of its queue.
    /// The caller marks the live connections it matches
    /// ([`Hub::mark_live`]).
    pub(crate) fn subscribe(
        &self,
        filter: TapFilter,
        limits: TapLimits,
    ) -> (Arc<Sub>, mpsc::Receiver<TapEvent>) {
        let (tx, rx) = mpsc::channel(limits.queue());
        let sub = Arc::new(Sub {
            id: self.next_id.fetch_add(1, Relaxed),
            filter,
            limits,
            tx,
            lost: AtomicU64::new(0),
            second: AtomicU64::new(0),
            sent: AtomicU32::new(0),
        });
        self.change(|subs| subs.push(sub.clone()));
        (sub, rx)
    }

    /// Removes a subscriber. The connections it alone matched keep their
    /// mark until their next read or write finds no subscriber.
    pub(crate) fn unsubscribe(&self, id: u64) {
        self.change(|subs| subs.retain(|s| s.id != id));
    }

    fn change(&self, f: impl FnOnce(&mut Vec<Arc<Sub>>)) {
        let _edit = self.edit.lock().unwrap_or_else(PoisonError::into_inner);
        let mut subs = Vec::clone(&self.subs.load());
        f(&mut subs);
        self.subs.store(Arc::new(subs));
        self.version.fetch_add(1, SeqCst);
    }

    /// A connection that was open when `sub` started: marks it, and tells
    /// `sub` it is there, if `sub` matches it.
    pub(crate) fn mark_live(&self, sub: &Sub, record: &ConnRecord) {
        if sub.filter.matches(record) {
            record.set_tapped(true);
            sub.offer(|| TapEvent::open(record, true));
        }
    }

    /// A connection just listed in its service: marks it and tells every
    /// subscriber that matches it. One load when there is none.
    pub(crate) fn on_open(&self, record: &ConnRecord) {
        let subs = self.subs.load();
        if subs.is_empty() {
            return;
        }
        let mut event = None;
        for sub in subs.iter().filter(|s| s.filter.matches(record)) {
            record.set_tapped(true);
            let event = event.get_or_insert_with(|| TapEvent::open(record, false));
            sub.offer(|| event.clone());
        }
    }

    /// Offers `make`'s event to every subscriber that matches `record`;
    /// when none does, clears the record's mark (and sets it back should a
    /// subscriber have come meanwhile).
    fn dispatch(&self, record: &ConnRecord, mut make: impl FnMut(&Sub) -> TapEvent) {
        let version = self.version.load(SeqCst);
        let subs = self.subs.load();
        let mut matched = false;
        for sub in subs.iter().filter(|s| s.filter.matches(record)) {
            matched = true;
            sub.offer(|| make(sub));
        }
        if !matched {
            record.set_tapped(false);
            if self.version.load(SeqCst) != version
                && self.subs.load().iter().any(|s| s.filter.matches(record))
            {
                record.set_tapped(true);
            }
        }
    }
}

impl Watcher for Hub {
    fn on_bytes(
        &self,
        record: &ConnRecord,
        dir: Direction,
        offset: u64,
        n: usize,
        bufs: &[IoSlice<'_>],
    ) {
        if record.print_bytes() {
            log::dump(record, dir, offset, n, bufs);
        }
        if record.tapped() {
            self.dispatch(record, |sub| {
                let head = gather(bufs, n.min(sub.limits.bytes_per_event()));
                TapEvent::bytes_of(record, dir, offset, n, head)
            });
        }
    }

    fn on_close(&self, record: &ConnRecord) {
        let mut event = None;
        self.dispatch(record, |_| {
            event.get_or_insert_with(|| TapEvent::close(record)).clone()
        });
    }
}

/// The first `n` bytes of `bufs`, copied.
fn gather(bufs: &[IoSlice<'_>], n: usize) -> Vec<u8> {
    let mut head = Vec::with_capacity(n);
    for buf in bufs {
        let take = (n - head.len()).min(buf.len());
        head.extend_from_slice(&buf[..take]);
        if head.len() == n {
            break;
        }
    }
    head
}

// === impl Sub ===

impl Sub {
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// The connections it sees.
    pub(crate) fn filter(&self) -> &TapFilter {
        &self.filter
    }

    /// Queues `make`'s event if the rate and the queue allow; else counts
    /// it lost. Never waits.
    fn offer(&self, make: impl FnOnce() -> TapEvent) {
        if self.tx.is_closed() {
            return;
        }
        let second = now_ms() / 1000;
        if self.second.load(Relaxed) != second && self.second.swap(second, Relaxed) != second {
            self.sent.store(0, Relaxed);
        }
        if self.sent.fetch_add(1, Relaxed) >= self.limits.events_per_sec() {
            self.lost.fetch_add(1, Relaxed);
            return;
        }
        match self.tx.try_send(make()) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.lost.fetch_add(1, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use crate::tap::TapFilter;
    use crate::Registry;

    /// A tap marks what it matches; gone, it leaves a mark that the next
    /// write clears; a new one marks it again.
    #[tokio::test]
    async fn marks_follow_the_taps() {
        let registry = Registry::new();
        let service = registry.service("marks");
        let (_peer, io) = tokio::io::duplex(64);
        let addr = "192.0.2.1:1".parse().unwrap();
        let mut conn = service.wrap(io, addr, addr).unwrap();
        assert!(!conn.record().watched());
        let elsewhere = registry.tap(TapFilter::new().with_sid("other"));
        assert!(!conn.record().watched());
        let tap = registry.tap(TapFilter::new().with_sid("marks"));
        assert!(conn.record().tapped());
        drop(tap);
        assert!(conn.record().tapped());
        conn.write_all(b"x").await.unwrap();
        assert!(!conn.record().watched());
        let _tap = registry.tap(TapFilter::new().with_conn(conn.record().id()));
        assert!(conn.record().tapped());
        drop(elsewhere);
    }
}
