//! One message taken from a queue, and how it is settled: the seam's one
//! verb, [`Acknowledge::settle`], with an outcome ([`Settle`]).

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use super::TransportError;
use crate::wire::Message;

/// How a delivery is settled: what its consumer did with it.
///
/// Which one applies is the server's to decide, once, for every transport
/// (a reply the broker refuses is final, anything else that fails is
/// released); a transport only carries out what it is told. Exhaustive on
/// purpose: an outcome added later is one every transport must carry out,
/// not one it may ignore in a catch-all.
#[derive(Debug)]
pub enum Settle {
    /// Done, nothing to send: never deliver it again.
    Ack,
    /// Publish `message` to the address `to`, then acknowledge: the order
    /// that makes delivery at-least-once. Both in one round trip where the
    /// broker can (Redis: one pipeline).
    Reply {
        /// The caller's inbox (the request's `reply-to`).
        to: Arc<str>,
        /// The response.
        message: Message,
    },
    /// Not handled: deliver it again, to this consumer or another.
    Release,
    /// Never deliver it again: move it to the dead-letter queue, publish
    /// `reply` (the answer its caller is owed, if any), and acknowledge it.
    /// Given for a delivery the transport marked
    /// [`exhausted`](Delivery::exhausted).
    DeadLetter {
        /// The caller's inbox and the answer (-32001) the server composed.
        reply: Option<(Arc<str>, Message)>,
    },
}

impl Settle {
    /// The reply this settlement publishes, if any: what a decorator signs
    /// or changes before the transport sends it.
    pub fn reply_mut(&mut self) -> Option<(&str, &mut Message)> {
        match self {
            Settle::Reply { to, message }
            | Settle::DeadLetter {
                reply: Some((to, message)),
            } => Some((to, message)),
            Settle::Ack | Settle::Release | Settle::DeadLetter { reply: None } => None,
        }
    }

    /// Its name, for logs: `ack`, `reply`, `release` or `dead-letter`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Settle::Ack => "ack",
            Settle::Reply { .. } => "reply",
            Settle::Release => "release",
            Settle::DeadLetter { .. } => "dead-letter",
        }
    }
}

/// A settlement that failed, and the delivery back if it is still
/// unsettled (as omniqueue's acker gives it back): its caller decides what
/// to do with it (the server: acknowledge it if the broker refused the
/// reply, else release it).
pub struct SettleError {
    /// What went wrong.
    pub error: TransportError,
    /// The acknowledger of the delivery, if the delivery is still with
    /// its consumer, unsettled; `None` if it was settled all the same (a
    /// refused reply acknowledged in the same round trip) or can no longer
    /// be (its consumer is gone).
    pub unsettled: Option<Box<dyn Acknowledge>>,
}

impl SettleError {
    /// A failure that left the delivery unsettled, its acknowledger given
    /// back.
    pub fn unsettled(error: TransportError, acker: Box<dyn Acknowledge>) -> Self {
        Self {
            error,
            unsettled: Some(acker),
        }
    }

    /// A failure after which there is nothing left to settle.
    pub fn settled(error: TransportError) -> Self {
        Self {
            error,
            unsettled: None,
        }
    }
}

impl fmt::Debug for SettleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettleError")
            .field("error", &self.error)
            .field("unsettled", &self.unsettled.is_some())
            .finish()
    }
}

impl fmt::Display for SettleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for SettleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Called once with the outcome of a settlement handed to a transport
/// that reports it later (see [`Acknowledge::settle_then`]).
pub type OnSettled = Box<dyn FnOnce(Result<(), SettleError>) + Send + Sync + 'static>;

/// Settles one delivery. Implemented by each transport; it captures what
/// it needs (a connection, a channel to a settling task), so that no
/// settlement takes a transport.
#[async_trait]
pub trait Acknowledge: Send + Sync + 'static {
    /// Carries out `how`. On failure, the error says whether the delivery
    /// is still unsettled (and gives its acknowledger back) or not.
    async fn settle(self: Box<Self>, how: Settle) -> Result<(), SettleError>;

    /// Carries out `how` and calls `then` with the outcome, perhaps after
    /// this returns: the fast path of a transport that settles many
    /// deliveries in one round trip (Redis), whose settling task reports
    /// every outcome of a batch instead of waking each request's task in
    /// turn. The default awaits [`settle`](Self::settle), then reports.
    async fn settle_then(self: Box<Self>, how: Settle, then: OnSettled) {
        then(self.settle(how).await);
    }
}

/// Why a delivery is to be dead-lettered rather than run: the transport
/// counted its deliveries past its bound (see [`Delivery::exhausted`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Exhausted {
    /// How many times it was delivered, this delivery included.
    pub deliveries: u64,
    /// The most the transport allows (its `max_deliveries`).
    pub max_deliveries: u64,
    /// Where [`Settle::DeadLetter`] moves it.
    pub dead_letter: String,
}

impl Exhausted {
    /// `deliveries` beyond `max_deliveries`, to be moved to `dead_letter`.
    pub fn new(deliveries: u64, max_deliveries: u64, dead_letter: impl Into<String>) -> Self {
        Self {
            deliveries,
            max_deliveries,
            dead_letter: dead_letter.into(),
        }
    }
}

/// One message taken from a queue, to be settled once.
///
/// Dropping a delivery unsettled leaves it with its consumer: it is
/// delivered again only when that consumer goes away, as with a real broker
/// when a process dies mid-request.
pub struct Delivery {
    message: Arc<Message>,
    acker: Box<dyn Acknowledge>,
    attempt: Option<u32>,
    published: Option<SystemTime>,
    exhausted: Option<Box<Exhausted>>,
}

impl Delivery {
    /// A delivery of `message`, settled through `acker`.
    pub fn new(message: Message, acker: impl Acknowledge) -> Self {
        Self::shared(Arc::new(message), acker)
    }

    /// A delivery of a message the transport also keeps (to deliver it
    /// again should this delivery's consumer go away).
    pub fn shared(message: Arc<Message>, acker: impl Acknowledge) -> Self {
        Self {
            message,
            acker: Box::new(acker),
            attempt: None,
            published: None,
            exhausted: None,
        }
    }

    /// This delivery with its count: `1` for the first delivery of the
    /// message, more for redeliveries, as handlers see in
    /// [`Context::attempt`](crate::Context::attempt). A transport whose
    /// broker does not count deliveries leaves it unset.
    #[must_use]
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    /// This delivery with the time its message was published, by the
    /// broker's clock where it keeps one (a Redis entry's id, a Kafka
    /// record's timestamp): the server measures how long the request waited
    /// in the queue from it ([`Context::queue_wait`](crate::Context::queue_wait)).
    #[must_use]
    pub fn with_published(mut self, at: SystemTime) -> Self {
        self.published = Some(at);
        self
    }

    /// When the message was published, if the transport knows.
    pub fn published(&self) -> Option<SystemTime> {
        self.published
    }

    /// This delivery marked as delivered too often: the server does not run
    /// it, answers its callers -32001 (see
    /// [`DEAD_LETTER_CODE`](crate::jsonrpc::DEAD_LETTER_CODE)) and settles
    /// it with [`Settle::DeadLetter`].
    #[must_use]
    pub fn exhausted(mut self, why: Exhausted) -> Self {
        self.exhausted = Some(Box::new(why));
        self
    }

    /// Which delivery of the message this is, if the broker counts them.
    pub fn attempt(&self) -> Option<u32> {
        self.attempt
    }

    /// Whether (and why) the transport gave up on it: see
    /// [`exhausted`](Self::exhausted).
    pub fn exhaustion(&self) -> Option<&Exhausted> {
        self.exhausted.as_deref()
    }

    /// The message delivered.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The same delivery settled through `wrap(its acknowledger)`: how a
    /// transport wrapping another (signing, compressing, encrypting)
    /// changes what settling does.
    #[must_use]
    pub fn map_acker<A: Acknowledge>(self, wrap: impl FnOnce(Box<dyn Acknowledge>) -> A) -> Self {
        Self {
            acker: Box::new(wrap(self.acker)),
            ..self
        }
    }

    /// Settles the delivery (see [`Acknowledge::settle`]).
    pub async fn settle(self, how: Settle) -> Result<(), SettleError> {
        self.acker.settle(how).await
    }

    /// Settles the delivery and calls `then` with the outcome, perhaps
    /// after this returns (see [`Acknowledge::settle_then`]).
    pub async fn settle_then(self, how: Settle, then: OnSettled) {
        self.acker.settle_then(how, then).await;
    }

    /// Acknowledges the delivery.
    #[deprecated(since = "0.1.0", note = "use `settle(Settle::Ack)`")]
    pub async fn ack(self) -> Result<(), TransportError> {
        self.settle(Settle::Ack).await.map_err(|e| e.error)
    }

    /// Releases the delivery for redelivery.
    #[deprecated(since = "0.1.0", note = "use `settle(Settle::Release)`")]
    pub async fn release(self) -> Result<(), TransportError> {
        self.settle(Settle::Release).await.map_err(|e| e.error)
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("attempt", &self.attempt)
            .field("published", &self.published)
            .field("exhausted", &self.exhausted)
            .finish_non_exhaustive()
    }
}
