//! How a client calls, and what it has seen.

use std::time::Duration;

use crate::wire::codec::Codec;
use crate::wire::Limits;

/// The default of [`ClientConfig::check_servers_every`]: a stopped
/// service is known for what it is within half a second, at two small
/// broker queries a second per service called.
pub const CHECK_SERVERS_EVERY: Duration = Duration::from_millis(500);

/// How a client calls.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// How long a call waits for its reply (default 30 s). It travels as the
    /// `deadline` header, so servers skip calls nobody waits for any more.
    pub timeout: Duration,
    /// Most calls awaiting a reply at once (default 1024); a call beyond it
    /// waits, within its timeout, for a slot.
    pub max_in_flight: usize,
    /// Largest message and batch sent (see [`Limits`]).
    pub limits: Limits,
    /// Encoding of requests (default JSON).
    pub codec: Codec,
    /// How long a notification stays worth running (default: forever).
    /// It travels as the `deadline` header, so a server skips notifications
    /// that waited longer in the queue (after an outage, say) instead of
    /// running a backlog of stale ones.
    pub notification_ttl: Option<Duration>,
    /// How often, at most, the client asks the broker whether a service
    /// it calls has a live server (default every 500 ms, per service; never
    /// once per call): a call to a service with a queue but none fails at
    /// once with [`Error::NoServers`](crate::Error::NoServers), unsent.
    /// `None` ([`wait_for_servers`](Self::wait_for_servers)): calls wait in
    /// the queue, until their timeout, for a server that may start later.
    /// Notifications always wait. A transport that cannot tell
    /// ([`Transport::members`](crate::Transport::members) says `None`)
    /// never fails a call this way.
    pub check_servers_every: Option<Duration>,
    /// Whether a caller that gives up on a call (its timeout, or its
    /// future dropped) tells the service's servers with a cancel notice,
    /// so that the one running it stops (default true; docs/PROTOCOL.md,
    /// "Cancel notices"). Off: the call runs to its end or its deadline,
    /// and its late reply is dropped.
    pub cancel_on_give_up: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_in_flight: 1024,
            limits: Limits::default(),
            codec: Codec::Json,
            notification_ttl: None,
            check_servers_every: Some(CHECK_SERVERS_EVERY),
            cancel_on_give_up: true,
        }
    }
}

impl ClientConfig {
    /// Sets [`timeout`](Self::timeout).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`max_in_flight`](Self::max_in_flight); at least 1.
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Sets [`limits`](Self::limits).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets [`codec`](Self::codec).
    #[must_use]
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Sets [`notification_ttl`](Self::notification_ttl).
    #[must_use]
    pub fn notification_ttl(mut self, ttl: Duration) -> Self {
        self.notification_ttl = Some(ttl);
        self
    }
}

impl ClientConfig {
    /// Sets [`check_servers_every`](Self::check_servers_every).
    #[must_use]
    pub fn check_servers_every(mut self, every: Duration) -> Self {
        self.check_servers_every = Some(every);
        self
    }

    /// Sets [`cancel_on_give_up`](Self::cancel_on_give_up).
    #[must_use]
    pub fn cancel_on_give_up(mut self, cancel: bool) -> Self {
        self.cancel_on_give_up = cancel;
        self
    }

    /// Calls to a service with no live server wait in its queue, until
    /// their timeout, for a server that may start later (at-least-once
    /// queueing), instead of failing at once with
    /// [`Error::NoServers`](crate::Error::NoServers).
    #[must_use]
    pub fn wait_for_servers(mut self) -> Self {
        self.check_servers_every = None;
        self
    }
}

/// What a client has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ClientStats {
    /// Calls sent (each call of a batch counts).
    pub calls: u64,
    /// Replies handed to their caller.
    pub replies: u64,
    /// Calls that ran out of time.
    pub timeouts: u64,
    /// Replies dropped: late (their caller gave up), duplicate, unknown,
    /// or malformed. None is ever handed to another caller.
    pub replies_dropped: u64,
}
