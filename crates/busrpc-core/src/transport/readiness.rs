//! Whether a consumer can take requests now.

use std::fmt;
use std::sync::Arc;

/// Whether a consumer can take requests now: what a readiness probe asks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Readiness {
    /// In its group with its share of the queue, and the broker answers.
    Ready,
    /// Not taking requests now, and why: not (yet, or any longer) given its
    /// share of the queue (a Kafka rebalance), the broker not answering,
    /// the server stopping.
    NotReady(Arc<str>),
}

impl Readiness {
    /// Whether it is [`Readiness::Ready`].
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready)
    }
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready => f.write_str("ready"),
            Self::NotReady(why) => write!(f, "not ready: {why}"),
        }
    }
}

/// Where a transport says how its consumer is doing (see
/// [`Deliveries::with_readiness`](crate::Deliveries::with_readiness)); the server reads it for
/// [`ServerHandle::readiness`](crate::ServerHandle::readiness). Clones share
/// one state. Setting the state it already has wakes nobody, so a transport
/// may report every success.
#[derive(Clone, Debug)]
pub struct ReadinessSignal {
    state: Arc<tokio::sync::watch::Sender<Readiness>>,
}

impl ReadinessSignal {
    /// A signal that starts in `initial`.
    pub fn new(initial: Readiness) -> Self {
        Self {
            state: Arc::new(tokio::sync::watch::Sender::new(initial)),
        }
    }

    /// Reports the consumer ready.
    pub fn ready(&self) {
        self.state.send_if_modified(|state| {
            let changed = !state.is_ready();
            *state = Readiness::Ready;
            changed
        });
    }

    /// Reports the consumer not ready, and why.
    pub fn not_ready(&self, why: impl Into<Arc<str>>) {
        let why = why.into();
        self.state.send_if_modified(|state| {
            let changed = !matches!(state, Readiness::NotReady(was) if *was == why);
            *state = Readiness::NotReady(why);
            changed
        });
    }

    /// The state now.
    pub fn get(&self) -> Readiness {
        self.state.borrow().clone()
    }

    /// A receiver told of every change of the state.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<Readiness> {
        self.state.subscribe()
    }

    /// Waits until `accept` holds for the state.
    pub(crate) async fn wait_for(&self, accept: impl FnMut(&Readiness) -> bool) {
        let mut state = self.state.subscribe();
        // The sender lives in `self`: waiting cannot fail.
        let _ = state.wait_for(accept).await;
    }
}
