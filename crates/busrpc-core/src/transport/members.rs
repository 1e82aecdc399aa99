//! Who serves a queue: the members of its group that the broker counts
//! alive, so that a caller can be told at once that nobody is serving.

use std::time::Duration;

/// One live member of a service's group (one server instance), as its
/// broker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// Its name on the broker: the Redis consumer, the Kafka client id.
    pub name: String,
    /// How many deliveries it holds unsettled, if the broker says.
    pub pending: Option<u64>,
    /// How long since it last read from the queue, if the broker says.
    pub idle: Option<Duration>,
}

impl Member {
    /// A member called `name`, with nothing else known of it.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            pending: None,
            idle: None,
        }
    }

    /// Sets [`pending`](Self::pending).
    #[must_use]
    pub fn with_pending(mut self, pending: u64) -> Self {
        self.pending = Some(pending);
        self
    }

    /// Sets [`idle`](Self::idle).
    #[must_use]
    pub fn with_idle(mut self, idle: Duration) -> Self {
        self.idle = Some(idle);
        self
    }
}
