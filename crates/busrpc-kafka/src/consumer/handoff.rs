//! Where a consumer thread leaves what it read for the async server: a
//! queue the thread fills no further than the room it is given (the
//! server's demand, read ahead by a bound) and the server's task drains.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::connection::lock;

/// The queue between a consumer thread and the task that reads it. The
/// thread offers items while there is room, or waits for it (blocking is
/// allowed there); the task takes them as a stream would. Closed by the
/// reader (it stopped reading: the thread ends) or the thread (it ended:
/// the stream does too).
#[derive(Debug)]
pub(crate) struct Handoff<T> {
    state: Mutex<State<T>>,
    /// Told whenever an item is taken or the handoff closes.
    taken: Condvar,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    waker: Option<Waker>,
    closed: bool,
}

impl<T> Default for Handoff<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                waker: None,
                closed: false,
            }),
            taken: Condvar::new(),
        }
    }
}

impl<T> Handoff<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        lock(&self.state)
    }

    /// How many items wait to be taken.
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether the reader has gone (or the thread has ended).
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Adds `item` if fewer than `room` wait; gives it back otherwise, or
    /// if the handoff is closed.
    pub(crate) fn offer(&self, item: T, room: usize) -> Result<(), T> {
        let waker = {
            let mut state = self.lock();
            if state.closed || state.items.len() >= room {
                return Err(item);
            }
            state.items.push_back(item);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Adds `item` whatever waits, at the front (a request handed out again
    /// goes first) or the back; dropped if the handoff is closed.
    pub(crate) fn push(&self, item: T, front: bool) {
        let waker = {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            if front {
                state.items.push_front(item);
            } else {
                state.items.push_back(item);
            }
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Waits (at most `within`) until fewer than `room` items wait; whether
    /// they do (and the handoff is open).
    pub(crate) fn wait_for_room(&self, room: usize, within: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .taken
            .wait_timeout_while(state, within, |state| {
                state.items.len() >= room && !state.closed
            })
            .unwrap_or_else(|e| e.into_inner());
        state.items.len() < room && !state.closed
    }

    /// The next item for the reader, or, with none, whether there will be.
    pub(crate) fn take(&self, waker: &Waker) -> Poll<Option<T>> {
        let mut state = self.lock();
        match state.items.pop_front() {
            Some(item) => {
                self.taken.notify_all();
                Poll::Ready(Some(item))
            }
            None if state.closed => Poll::Ready(None),
            None => {
                state.waker = Some(waker.clone());
                Poll::Pending
            }
        }
    }

    /// Drops what waits, untaken.
    pub(crate) fn clear(&self) {
        let items = std::mem::take(&mut self.lock().items);
        self.taken.notify_all();
        drop(items);
    }

    /// Closes the handoff: what waits is dropped, and so is anything
    /// offered later; the reader's next take ends its stream.
    pub(crate) fn close(&self) {
        let (items, waker) = {
            let mut state = self.lock();
            state.closed = true;
            (std::mem::take(&mut state.items), state.waker.take())
        };
        self.taken.notify_all();
        drop(items);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn waker() -> Waker {
        futures_util::task::noop_waker()
    }

    #[test]
    fn items_are_offered_within_the_room_and_taken_in_order() {
        let handoff = Handoff::default();
        assert_eq!(handoff.offer(1, 2), Ok(()));
        assert_eq!(handoff.offer(2, 2), Ok(()));
        assert_eq!(handoff.offer(3, 2), Err(3), "no room");
        handoff.push(0, true);
        assert_eq!(handoff.len(), 3);
        for expected in [0, 1, 2] {
            assert_eq!(handoff.take(&waker()), Poll::Ready(Some(expected)));
        }
        assert_eq!(handoff.take(&waker()), Poll::Pending);
        handoff.close();
        assert_eq!(handoff.take(&waker()), Poll::Ready(None));
        assert_eq!(handoff.offer(4, 10), Err(4), "closed");
    }

    #[test]
    fn a_thread_waiting_for_room_wakes_when_an_item_is_taken() {
        let handoff = Arc::new(Handoff::default());
        handoff.offer("a", 1).unwrap();
        let waiting = {
            let handoff = handoff.clone();
            std::thread::spawn(move || handoff.wait_for_room(1, Duration::from_secs(30)))
        };
        assert_eq!(handoff.take(&waker()), Poll::Ready(Some("a")));
        assert!(waiting.join().unwrap());
        assert!(!handoff.wait_for_room(0, Duration::ZERO), "no room at all");
    }
}
