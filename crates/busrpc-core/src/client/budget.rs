//! How long a call may take: the handle's timeout, cut short by the
//! deadline of the request being served when the call is made inside a
//! handler, so that a chain of services shares its first caller's deadline.

use std::time::Duration;

use tokio::time::Instant;

use super::Client;
use crate::wire::{Deadline, Serving};

/// One call's time, read once when it starts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Budget {
    /// How long the call may take: what a timeout error says.
    pub(super) timeout: Duration,
    /// When its caller stops waiting, as the `deadline` header says it.
    pub(super) deadline: Deadline,
    /// The same moment on this machine's monotonic clock: the call's one
    /// timer.
    pub(super) at: Instant,
}

impl Budget {
    /// Whether nothing is left: the request being served has passed its
    /// deadline, so a call would be skipped by its server; it fails at once
    /// instead of being sent.
    pub(super) fn is_spent(&self) -> bool {
        self.timeout.is_zero()
    }

    /// When the call started.
    pub(super) fn started(&self) -> Instant {
        self.at - self.timeout
    }
}

impl Client {
    /// The budget of a call starting now.
    pub(super) fn budget(&self) -> Budget {
        let now = Instant::now();
        let own = Deadline::after(self.timeout);
        match self.inherited_deadline() {
            Some(served) if served < own => {
                let timeout = served.remaining();
                Budget {
                    timeout,
                    deadline: served,
                    at: now + timeout,
                }
            }
            _ => Budget {
                timeout: self.timeout,
                deadline: own,
                at: now + self.timeout,
            },
        }
    }

    /// The `deadline` a notification carries: its time to live, cut short
    /// by the deadline of the request being served.
    pub(super) fn notification_deadline(&self) -> Option<Deadline> {
        let ttl = self.core.config.notification_ttl.map(Deadline::after);
        match (ttl, self.inherited_deadline()) {
            (Some(ttl), Some(served)) => Some(ttl.min(served)),
            (ttl, served) => ttl.or(served),
        }
    }

    /// The deadline of the request being served where the call is made,
    /// unless this handle is [detached](Client::detached).
    fn inherited_deadline(&self) -> Option<Deadline> {
        if self.detached {
            None
        } else {
            Serving::read(|serving| serving.deadline)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::memory::MemoryTransport;
    use crate::wire::Headers;

    async fn client(timeout: Duration) -> Client {
        Client::connect(Arc::new(MemoryTransport::new()))
            .await
            .unwrap()
            .with_timeout(timeout)
    }

    fn serving(deadline: Deadline) -> Serving {
        Serving::of(Some(deadline), &Headers::new()).unwrap()
    }

    #[tokio::test]
    async fn a_call_outside_a_request_has_its_own_timeout() {
        let client = client(Duration::from_secs(30)).await;
        let budget = client.budget();
        assert_eq!(budget.timeout, Duration::from_secs(30));
        assert!(budget.deadline.remaining() > Duration::from_secs(29));
        assert_eq!(client.notification_deadline(), None);
    }

    #[tokio::test]
    async fn a_call_inside_a_request_ends_by_its_deadline() {
        let client = client(Duration::from_secs(30)).await;
        let served = Deadline::after(Duration::from_millis(300));
        let (budget, ttl) = serving(served)
            .scope(async { (client.budget(), client.notification_deadline()) })
            .await;
        assert_eq!(budget.deadline, served);
        assert!(budget.timeout <= Duration::from_millis(300));
        assert!(budget.at <= Instant::now() + Duration::from_millis(300));
        assert_eq!(ttl, Some(served));
    }

    #[tokio::test]
    async fn a_shorter_timeout_of_its_own_wins() {
        let client = client(Duration::from_millis(50)).await;
        let served = Deadline::after(Duration::from_secs(60));
        let budget = serving(served).scope(async { client.budget() }).await;
        assert_eq!(budget.timeout, Duration::from_millis(50));
        assert!(budget.deadline < served);
    }

    #[tokio::test]
    async fn a_detached_handle_ignores_the_request_it_is_called_in() {
        let client = client(Duration::from_secs(30)).await.detached();
        let served = Deadline::after(Duration::from_millis(300));
        let (budget, ttl) = serving(served)
            .scope(async { (client.budget(), client.notification_deadline()) })
            .await;
        assert_eq!(budget.timeout, Duration::from_secs(30));
        assert_eq!(ttl, None);
    }
}
