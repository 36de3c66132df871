//! [`Tap`]: one subscriber's end of the tap.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;

use super::event::TapEvent;
use super::filter::TapFilter;
use super::hub::{Hub, Sub};

/// A running tap: the events of the connections its [`TapFilter`] matches,
/// from [`Registry::tap`](crate::Registry::tap). Dropping it stops the tap.
///
/// The connections never wait for it: past its
/// [`TapLimits`](super::TapLimits) (events per second, events queued),
/// events are dropped and counted ([`Tap::lost`]).
///
/// Not `Clone`: it is one subscriber, whose queue one reader drains.
pub struct Tap {
    rx: mpsc::Receiver<TapEvent>,
    sub: Arc<Sub>,
    hub: Arc<Hub>,
}

impl Tap {
    pub(crate) fn new(rx: mpsc::Receiver<TapEvent>, sub: Arc<Sub>, hub: Arc<Hub>) -> Self {
        Tap { rx, sub, hub }
    }

    /// The next event; waits for one. A tap never ends by itself (drop it
    /// to stop it): the `Option` is the [`Stream`]'s.
    pub async fn next(&mut self) -> Option<TapEvent> {
        self.rx.recv().await
    }

    /// The next event if one is queued.
    pub fn try_next(&mut self) -> Option<TapEvent> {
        self.rx.try_recv().ok()
    }

    /// Polls for the next event (see [`Tap::next`]).
    pub fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<TapEvent>> {
        self.rx.poll_recv(cx)
    }

    /// Events dropped so far: over the rate, or while the queue was full.
    pub fn lost(&self) -> u64 {
        self.sub.lost.load(Relaxed)
    }

    /// The connections it sees.
    pub fn filter(&self) -> &TapFilter {
        &self.sub.filter
    }
}

impl Stream for Tap {
    type Item = TapEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TapEvent>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.sub.id());
    }
}

impl fmt::Debug for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tap")
            .field("filter", &self.sub.filter)
            .field("lost", &self.lost())
            .field("queued", &self.rx.len())
            .finish()
    }
}
