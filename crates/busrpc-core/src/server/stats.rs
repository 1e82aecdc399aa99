//! What a server instance has done so far.

use std::sync::atomic::{AtomicU64, Ordering};

use super::ServerState;
use crate::telemetry::metrics::ServerEvent;

/// What a server instance has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ServerStats {
    /// Deliveries taken from the queue.
    pub received: u64,
    /// Deliveries acknowledged (answered, or found not worth answering).
    pub acked: u64,
    /// Deliveries abandoned to another instance when the shutdown grace ran out.
    pub released: u64,
    /// Calls executed (each call of a batch counts).
    pub calls: u64,
    /// Notifications executed.
    pub notifications: u64,
    /// Error responses produced, of any code.
    pub errors: u64,
    /// Handlers that panicked (each answered -32603).
    pub panics: u64,
    /// Messages skipped because their deadline had passed on arrival.
    pub expired: u64,
    /// Messages whose handlers were stopped when their deadline passed
    /// (see [`ServerConfig::cancel_on_deadline`](crate::ServerConfig::cancel_on_deadline)); acknowledged, unanswered.
    pub cancelled: u64,
    /// Requests whose caller gave up and sent a cancel notice: their
    /// handler stopped, or never started; acknowledged, unanswered.
    pub abandoned: u64,
    /// Messages counted and dropped: bad input or a response with no
    /// `reply-to` to send it to.
    pub dropped: u64,
    /// Replies that could not be published and acknowledged. The request
    /// stays with the broker for another try, unless the broker refused the
    /// reply itself (too large for it, a full inbox, a Redis `reply-to`
    /// naming a key that is not a stream): that is final, the request is
    /// acknowledged, and the caller is sent a small -32603 saying why where
    /// the broker takes it. The logged error says which.
    pub reply_failures: u64,
    /// Replies larger than the server's or the transport's limit, answered
    /// with a small -32603 giving both sizes instead of being sent.
    pub oversized_replies: u64,
    /// Requests their transport delivered too often (its
    /// `max_deliveries`), never run: moved to the dead-letter queue and
    /// their callers answered -32001. Counted once settled.
    pub dead_lettered: u64,
}

#[derive(Default)]
pub(super) struct ServerCounters {
    received: AtomicU64,
    acked: AtomicU64,
    released: AtomicU64,
    expired: AtomicU64,
    cancelled: AtomicU64,
    abandoned: AtomicU64,
    dropped: AtomicU64,
    reply_failures: AtomicU64,
    oversized_replies: AtomicU64,
    dead_lettered: AtomicU64,
}

impl ServerState {
    /// Counts `event` in the stats and as a metric.
    pub(super) fn count(&self, event: ServerEvent) {
        self.count_n(event, 1);
    }

    /// Counts `n` of `event` in the stats and as a metric.
    pub(super) fn count_n(&self, event: ServerEvent, n: u64) {
        let c = &self.counters;
        let counter = match event {
            ServerEvent::Received => Some(&c.received),
            ServerEvent::Acked => Some(&c.acked),
            ServerEvent::Released => Some(&c.released),
            ServerEvent::Expired => Some(&c.expired),
            ServerEvent::Cancelled => Some(&c.cancelled),
            ServerEvent::Abandoned => Some(&c.abandoned),
            ServerEvent::Dropped => Some(&c.dropped),
            ServerEvent::ReplyFailed => Some(&c.reply_failures),
            ServerEvent::Oversized => Some(&c.oversized_replies),
            // A metric only: the stats have no count of it.
            ServerEvent::Redelivered => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(n, Ordering::Relaxed);
        }
        self.engine.meters.count_n(event, n);
    }

    /// Counts a request dead-lettered, in the stats and as a metric.
    pub(super) fn dead_lettered(&self) {
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.engine.meters.dead_lettered(&self.address);
    }
}

impl ServerState {
    pub(super) fn stats(&self) -> ServerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (s, e) = (&self.counters, &self.engine.counters);
        ServerStats {
            received: get(&s.received),
            acked: get(&s.acked),
            released: get(&s.released),
            calls: get(&e.calls),
            notifications: get(&e.notifications),
            errors: get(&e.errors),
            panics: get(&e.panics),
            expired: get(&s.expired),
            cancelled: get(&s.cancelled),
            abandoned: get(&s.abandoned),
            dropped: get(&s.dropped),
            reply_failures: get(&s.reply_failures),
            oversized_replies: get(&s.oversized_replies),
            dead_lettered: get(&s.dead_lettered),
        }
    }
}
