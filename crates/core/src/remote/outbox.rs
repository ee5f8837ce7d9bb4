//! What waits to be delivered to bursora-server: settlements of reserved calls and usage of
//! calls that went out unreserved. Bounded: past [`Outbox::capacity`] new items are dropped,
//! counted, and warned about once per outage, so a long outage cannot exhaust the host's memory.
//!
//! One delivery task drains it ([`super::Remote`]): one batch in flight at a time, up to
//! [`MAX_BATCH`] items, so concurrent calls settle in few requests. Items are removed only once
//! the server answered for them; a failed batch goes back to the front and waits for the circuit
//! to close. Delivery is idempotent server-side (by reservation / event id), so a batch whose
//! answer was lost is simply sent again.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::wire::{SettleItem, UsageItem};
use crate::pricing::ResolvedModel;

/// Most items in one request (bursora-server accepts up to 1,000).
pub(crate) const MAX_BATCH: usize = 1_000;

/// A settlement waiting for delivery.
#[derive(Debug)]
pub(crate) struct QueuedSettle {
    pub item: SettleItem,
    /// For the overrun warning.
    pub model: Option<Arc<ResolvedModel>>,
    /// A release of a reservation that may never have reached the server (its reserve got no
    /// answer): the server not knowing it is expected, not an error.
    pub may_be_unknown: bool,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub settles: VecDeque<QueuedSettle>,
    pub usage: VecDeque<UsageItem>,
    /// A batch is on its way to the server.
    pub in_flight: bool,
    /// Stop once drained (shutdown).
    pub stopping: bool,
    /// Items dropped because the outbox was full, since the last warning.
    pub dropped: u64,
}

impl State {
    pub(crate) fn len(&self) -> usize {
        self.settles.len() + self.usage.len()
    }
}

#[derive(Debug)]
pub(crate) struct Outbox {
    pub state: Mutex<State>,
    /// New items, a flush, a closed circuit or a stop: the delivery task looks again.
    pub wake: Notify,
    /// A delivery attempt ended: flushes look again.
    pub changed: Notify,
    pub capacity: usize,
}

/// The outcome of [`Outbox::push_settle`] / [`Outbox::push_usage`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// The outbox was full; this is the first drop since the last warning.
    DroppedFirst,
    Dropped,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            changed: Notify::new(),
            capacity,
        }
    }

    fn push_with(&self, f: impl FnOnce(&mut State)) -> Pushed {
        let mut st = self.state.lock();
        if st.len() >= self.capacity {
            st.dropped += 1;
            return if st.dropped == 1 {
                Pushed::DroppedFirst
            } else {
                Pushed::Dropped
            };
        }
        f(&mut st);
        drop(st);
        self.wake.notify_one();
        Pushed::Queued
    }

    pub(crate) fn push_settle(&self, item: QueuedSettle) -> Pushed {
        self.push_with(|st| st.settles.push_back(item))
    }

    pub(crate) fn push_usage(&self, item: UsageItem) -> Pushed {
        self.push_with(|st| st.usage.push_back(item))
    }

    /// Items waiting or in flight.
    pub(crate) fn pending(&self) -> usize {
        let st = self.state.lock();
        st.len() + usize::from(st.in_flight)
    }
}

/// A batch taken off the outbox for one request.
#[derive(Debug)]
pub(crate) enum Taken {
    Settles(Vec<QueuedSettle>),
    Usage(Vec<UsageItem>),
}

impl State {
    /// Takes the next batch: settlements first (they free reserved money).
    pub(crate) fn take(&mut self) -> Option<Taken> {
        if !self.settles.is_empty() {
            let n = self.settles.len().min(MAX_BATCH);
            return Some(Taken::Settles(self.settles.drain(..n).collect()));
        }
        if !self.usage.is_empty() {
            let n = self.usage.len().min(MAX_BATCH);
            return Some(Taken::Usage(self.usage.drain(..n).collect()));
        }
        None
    }

    /// Puts a batch that could not be delivered back in front, in its order.
    pub(crate) fn put_back(&mut self, batch: Taken) {
        match batch {
            Taken::Settles(items) => {
                for item in items.into_iter().rev() {
                    self.settles.push_front(item);
                }
            }
            Taken::Usage(items) => {
                for item in items.into_iter().rev() {
                    self.usage.push_front(item);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle(id: &str) -> QueuedSettle {
        QueuedSettle {
            item: SettleItem {
                id: id.into(),
                actual_nanos: Some(1),
                input_tokens: None,
                output_tokens: None,
            },
            model: None,
            may_be_unknown: false,
        }
    }

    #[test]
    fn bounded_and_order_kept_when_a_batch_comes_back() {
        let o = Outbox::new(3);
        assert_eq!(o.push_settle(settle("a")), Pushed::Queued);
        assert_eq!(o.push_settle(settle("b")), Pushed::Queued);
        assert_eq!(o.push_settle(settle("c")), Pushed::Queued);
        assert_eq!(o.push_settle(settle("d")), Pushed::DroppedFirst);
        assert_eq!(o.push_settle(settle("e")), Pushed::Dropped);
        let mut st = o.state.lock();
        let batch = st.take().unwrap();
        assert!(st.take().is_none());
        st.put_back(batch);
        let ids: Vec<_> = st.settles.iter().map(|s| s.item.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(st.dropped, 2);
    }
}
