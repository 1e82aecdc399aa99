//! The one correlate-and-time ping every raw baseline uses, and the trait
//! they share.
//!
//! A raw baseline is the broker's own round trip with no busrpc in it: a
//! request published with a correlation tag and a reply-to address, a
//! responder that echoes the payload back under the same tag, and a reader
//! that hands each reply to the call waiting for that tag, as a busrpc
//! client does by id. The backends differ only in how they publish and
//! read; the waiting, the timeout and the check of the echo are here, once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use busrpc_core::TransportError;
use bytes::Bytes;
use tokio::sync::oneshot;

/// The header (Kafka, memory) or field (Redis) that carries a raw
/// request's correlation tag, in decimal, back with its reply.
pub const CORRELATION: &str = "n";

/// How long a raw ping waits for its echo: as long as the bench's busrpc
/// client waits for a reply, so neither side gives up sooner.
pub const PING_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a raw round trip failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// The request could not be published.
    #[error("the raw request could not be sent: {0}")]
    Send(#[source] TransportError),
    /// No echo came within the timeout.
    #[error("no raw reply within {0:?}")]
    Timeout(Duration),
    /// An echo came back under the request's tag with another payload.
    #[error("the raw reply differs from the request")]
    Mismatch,
    /// The reader that hands replies out has stopped.
    #[error("the raw reply reader has stopped")]
    ReaderStopped,
}

/// Hands replies to the pings waiting for them, by correlation tag.
#[derive(Debug)]
pub struct Correlator {
    waiting: Mutex<HashMap<u64, oneshot::Sender<Bytes>>>,
    next: AtomicU64,
    timeout: Duration,
}

impl Default for Correlator {
    fn default() -> Self {
        Self::new(PING_TIMEOUT)
    }
}

/// A ping's place in the waiting table, given up however the ping ends:
/// a failed publish or a timeout leaves no entry behind.
struct Entry<'a> {
    correlator: &'a Correlator,
    tag: u64,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        self.correlator.table().remove(&self.tag);
    }
}

impl Correlator {
    /// A correlator whose pings wait at most `timeout` for their echo.
    pub fn new(timeout: Duration) -> Self {
        Self {
            waiting: Mutex::default(),
            next: AtomicU64::new(1),
            timeout,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Bytes>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One round trip: `send(tag)` publishes `payload` under the
    /// correlation `tag`; then waits for its echo, which must be `payload`.
    pub async fn ping<F, Fut>(&self, payload: &[u8], send: F) -> Result<(), PingError>
    where
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = Result<(), TransportError>>,
    {
        let tag = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.table().insert(tag, tx);
        // Registered before the publish: the echo may come back first.
        let _entry = Entry {
            correlator: self,
            tag,
        };
        send(tag).await.map_err(PingError::Send)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(reply)) if reply == payload => Ok(()),
            Ok(Ok(_)) => Err(PingError::Mismatch),
            Ok(Err(_)) => Err(PingError::ReaderStopped),
            Err(_) => Err(PingError::Timeout(self.timeout)),
        }
    }

    /// Hands `reply` to the ping waiting under `tag`; `false` if none is
    /// (it gave up, or the tag is not one of this correlator's).
    pub fn deliver(&self, tag: u64, reply: Bytes) -> bool {
        match self.table().remove(&tag) {
            Some(waiter) => waiter.send(reply).is_ok(),
            None => false,
        }
    }

    /// [`deliver`](Self::deliver) for a tag as it travelled, in decimal;
    /// `false` for one that does not parse.
    pub fn deliver_tagged(&self, tag: &[u8], reply: Bytes) -> bool {
        let parsed = std::str::from_utf8(tag).ok().and_then(|t| t.parse().ok());
        parsed.is_some_and(|tag| self.deliver(tag, reply))
    }

    /// How many pings are waiting now.
    pub fn waiting(&self) -> usize {
        self.table().len()
    }
}

/// A broker's raw round trip, measured against busrpc's on the same broker.
#[async_trait::async_trait]
pub trait Baseline: Send + Sync {
    /// One round trip of `payload`.
    async fn ping(&self, payload: &[u8]) -> Result<(), PingError>;

    /// Stops the responder and reader and deletes from the broker what this
    /// baseline's prefix names (for the bench, busrpc's keys or topics of
    /// the same run too). Idempotent.
    async fn clean_up(&self) -> Result<(), TransportError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ping_gets_its_own_echo() {
        let correlator = std::sync::Arc::new(Correlator::default());
        let echo = correlator.clone();
        correlator
            .ping(b"hello", |tag| async move {
                assert!(echo.deliver_tagged(tag.to_string().as_bytes(), Bytes::from("hello")));
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(correlator.waiting(), 0);
        // A reply under an unknown or unparsable tag goes nowhere.
        assert!(!correlator.deliver(99, Bytes::new()));
        assert!(!correlator.deliver_tagged(b"x", Bytes::new()));
    }

    #[tokio::test]
    async fn a_wrong_echo_is_a_mismatch() {
        let correlator = std::sync::Arc::new(Correlator::default());
        let echo = correlator.clone();
        let outcome = correlator
            .ping(b"hello", |tag| async move {
                echo.deliver(tag, Bytes::from("other"));
                Ok(())
            })
            .await;
        assert!(matches!(outcome, Err(PingError::Mismatch)), "{outcome:?}");
    }

    /// The copies this replaced left a failed ping's entry in the table.
    #[tokio::test(start_paused = true)]
    async fn a_failed_or_unanswered_ping_leaves_nothing_waiting() {
        let correlator = Correlator::new(Duration::from_secs(1));
        let refused = correlator
            .ping(b"x", |_| async { Err(TransportError::Closed) })
            .await;
        assert!(matches!(refused, Err(PingError::Send(_))), "{refused:?}");
        assert_eq!(correlator.waiting(), 0, "after a failed publish");
        let unanswered = correlator.ping(b"x", |_| async { Ok(()) }).await;
        assert!(
            matches!(unanswered, Err(PingError::Timeout(t)) if t == Duration::from_secs(1)),
            "{unanswered:?}"
        );
        assert_eq!(correlator.waiting(), 0, "after a timeout");
    }
}
