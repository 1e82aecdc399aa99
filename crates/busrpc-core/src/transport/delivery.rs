//! One message taken from a queue, and how it is settled.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Transport, TransportError};
use crate::wire::Message;

/// Called once with the outcome of a settlement that the server hands to
/// the transport instead of awaiting (see [`Acknowledge::settle_then`]).
pub type OnSettled = Box<dyn FnOnce(Result<(), TransportError>) + Send + Sync + 'static>;

/// Settles one delivery. Implemented by each transport.
#[async_trait]
pub trait Acknowledge: Send + Sync + 'static {
    /// The message is done with: never deliver it again.
    async fn ack(self: Box<Self>) -> Result<(), TransportError>;

    /// The message was not handled: deliver it again, to this or another consumer.
    async fn release(self: Box<Self>) -> Result<(), TransportError>;

    /// Publishes `reply` to `address`, then acknowledges: the order that
    /// makes delivery at-least-once. If the publish fails the delivery is
    /// released and the publish error returned, unless the broker refused
    /// the reply itself ([`TransportError::Rejected`]: too large, a full
    /// inbox, not allowed) or the address is no queue at all
    /// ([`TransportError::NotServed`]: a reply-to naming nothing): another
    /// try would fail alike, and a release would run the request again at
    /// once, in a loop. Such a delivery is acknowledged, and the error
    /// returned.
    ///
    /// A transport that can do both in one round trip (Redis: one
    /// MULTI/EXEC pipeline) overrides this; `transport` is the one the
    /// server consumes through.
    async fn reply_and_ack(
        self: Box<Self>,
        transport: &dyn Transport,
        address: &str,
        reply: Message,
    ) -> Result<(), TransportError> {
        match transport.publish(address, reply).await {
            Ok(()) => self.ack().await,
            Err(e @ (TransportError::Rejected(_) | TransportError::NotServed(_))) => {
                if let Err(ack) = self.ack().await {
                    tracing::warn!(error = %ack, "acknowledging a request whose reply was refused failed");
                }
                Err(e)
            }
            Err(e) => {
                if let Err(release) = self.release().await {
                    tracing::warn!(error = %release, "releasing a delivery failed");
                }
                Err(e)
            }
        }
    }

    /// Settles the delivery, replying first if `reply` holds an address and
    /// a message (as [`reply_and_ack`](Self::reply_and_ack)) or only
    /// acknowledging (as [`ack`](Self::ack)), and calls `on_settled` with
    /// the outcome. A failed reply leaves the delivery with the broker for
    /// another try, as `reply_and_ack` does, unless the broker refused the
    /// reply itself ([`TransportError::Rejected`]): that is final, and the
    /// transport acknowledges the delivery.
    ///
    /// The default awaits the settlement and then reports it. A transport
    /// that settles many deliveries in one round trip (Redis) overrides
    /// this to return at once: the task that sends a batch then reports
    /// every outcome in it, instead of waking each request's task in turn.
    async fn settle_then(
        self: Box<Self>,
        transport: &dyn Transport,
        reply: Option<(Arc<str>, Message)>,
        on_settled: OnSettled,
    ) {
        let outcome = match reply {
            Some((address, message)) => self.reply_and_ack(transport, &address, message).await,
            None => self.ack().await,
        };
        on_settled(outcome);
    }
}

/// One message taken from a queue, to be acknowledged or released.
///
/// Dropping a delivery unsettled leaves it with its consumer: it is
/// delivered again only when that consumer goes away, as with a real broker
/// when a process dies mid-request.
pub struct Delivery {
    message: Arc<Message>,
    acker: Box<dyn Acknowledge>,
    attempt: Option<u32>,
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

    /// Which delivery of the message this is, if the broker counts them.
    pub fn attempt(&self) -> Option<u32> {
        self.attempt
    }

    /// The same delivery settled through `wrap(its acknowledger)`: how a
    /// transport wrapping another changes what settling does.
    #[cfg(feature = "auth")]
    pub(crate) fn map_acker<A: Acknowledge>(
        self,
        wrap: impl FnOnce(Box<dyn Acknowledge>) -> A,
    ) -> Self {
        Self {
            message: self.message,
            acker: Box::new(wrap(self.acker)),
            attempt: self.attempt,
        }
    }

    /// The message delivered.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Acknowledges the delivery.
    pub async fn ack(self) -> Result<(), TransportError> {
        self.acker.ack().await
    }

    /// Releases the delivery for redelivery.
    pub async fn release(self) -> Result<(), TransportError> {
        self.acker.release().await
    }

    /// Publishes `reply` to `address` and acknowledges the delivery, in that
    /// order (see [`Acknowledge::reply_and_ack`]).
    pub async fn reply_and_ack(
        self,
        transport: &dyn Transport,
        address: &str,
        reply: Message,
    ) -> Result<(), TransportError> {
        self.acker.reply_and_ack(transport, address, reply).await
    }

    /// Settles the delivery, replying first if there is a reply, and calls
    /// `on_settled` with the outcome, perhaps after this returns (see
    /// [`Acknowledge::settle_then`]).
    pub async fn settle_then(
        self,
        transport: &dyn Transport,
        reply: Option<(Arc<str>, Message)>,
        on_settled: OnSettled,
    ) {
        self.acker.settle_then(transport, reply, on_settled).await;
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}
