//! Layer 1, the one seam between busrpc and a broker.
//!
//! A broker has to do four things for busrpc: publish a message to an
//! address ([`Transport::publish`]); hand a service's request queue out to
//! a group of competing consumers, no faster than they can take it
//! ([`Transport::consume`], [`Demand`]); settle each delivery one way,
//! [`Acknowledge::settle`] with a [`Settle`] outcome; and give a client a
//! private inbox for its replies ([`Transport::inbox`]). Everything else
//! (JSON-RPC, routing, deadlines, correlation, limits, which outcome a
//! delivery gets, the answer owed for a dead letter) lives above the seam,
//! once, for every broker. [`kit`] holds what the authors of transports
//! share.
//!
//! Decorators (signing, compression, tenancy) wrap a transport with the
//! public combinators only: [`Deliveries::filter_map`],
//! [`Inbox::filter_map`] and [`Delivery::map_acker`].

use async_trait::async_trait;

use crate::wire::Message;

mod admin;
mod deliveries;
mod delivery;
mod error;
mod inbox;
pub mod kit;
mod members;
mod readiness;

pub use admin::{Admin, DeadLetter, PartitionLag, QueueState, DEAD_DELIVERIES, REPLAY_OF};
pub use deliveries::{Deliveries, Demand};
pub use delivery::{Acknowledge, Delivery, Exhausted, OnSettled, Settle, SettleError};
pub use error::{BoxError, ErrorKind, TransportError};
pub use inbox::Inbox;
pub use kit::{default_member_name, is_secret_option, member_name, redact_url, unique_id};
pub use members::Member;
pub use readiness::{Readiness, ReadinessSignal};

/// A broker as the engine sees it. Implementations: [`MemoryTransport`]
/// here, Kafka and Redis in their own crates.
///
/// Addresses are plain strings: a service's request queue (see
/// [`service_address`](Transport::service_address)) or an inbox's address
/// (which travels in the `reply-to` header).
///
/// [`MemoryTransport`]: crate::memory::MemoryTransport
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Publishes `message` to `address`, returning once the broker has taken it.
    ///
    /// A service's queue is created by [`consume`](Transport::consume), never
    /// here: publishing to one that does not exist fails with
    /// [`TransportError::NotServed`] (the transport may remember the queues it
    /// has seen, so the check costs nothing per call). An inbox that is gone
    /// takes the message and drops it: its reader has left.
    async fn publish(&self, address: &str, message: Message) -> Result<(), TransportError>;

    /// Joins `group` as one more competing consumer of the queue at `address`:
    /// each message goes to one member of each group. A delivery that its
    /// consumer neither acknowledges nor releases goes to another member once
    /// that consumer is gone (the stream dropped, the process dead), and
    /// never while it lives: a transport whose broker hands idle deliveries
    /// over (Redis) keeps the ones in hand alive.
    ///
    /// `demand` tells how many more deliveries the consumer's owner can take
    /// now; a transport that reads ahead reads no more than that.
    async fn consume(
        &self,
        address: &str,
        group: &str,
        demand: Demand,
    ) -> Result<Deliveries, TransportError>;

    /// Opens a private inbox: an address only this inbox reads, ready to
    /// receive before this returns.
    async fn inbox(&self) -> Result<Inbox, TransportError>;

    /// The members of `group` on the queue at `address` that the broker
    /// counts alive (each a server of the service), or `None` when this
    /// transport cannot tell: the default. A client asks at most once per
    /// [`check_servers_every`](crate::ClientConfig::check_servers_every)
    /// per service, never once per call, so that a call to a service with a queue but no live
    /// server fails at once (`Error::NoServers`) instead of waiting out
    /// its timeout. A transport that answers must count a server that
    /// stopped cleanly as gone at once, and one that died within a bound
    /// its documentation states.
    async fn members(
        &self,
        address: &str,
        group: &str,
    ) -> Result<Option<Vec<Member>>, TransportError> {
        let _ = (address, group);
        Ok(None)
    }

    /// Sends `message` to every live subscriber of the queue at `address`
    /// (see [`subscribe`](Transport::subscribe)): its servers, each of
    /// them, not one. Best effort: a subscriber not listening now never
    /// gets it, and nothing is kept. Clients send cancel notices this way
    /// (docs/PROTOCOL.md, "Cancel notices"). The default sends nothing: a
    /// transport that cannot broadcast leaves calls given up on to run to
    /// their end or their deadline.
    async fn broadcast(&self, address: &str, message: Message) -> Result<(), TransportError> {
        let _ = (address, message);
        Ok(())
    }

    /// Every message [broadcast](Transport::broadcast) to the queue at
    /// `address` from now on, or `None` when this transport cannot
    /// broadcast (the default).
    async fn subscribe(&self, address: &str) -> Result<Option<Inbox>, TransportError> {
        let _ = address;
        Ok(None)
    }

    /// The operator's side of this transport (`busrpc status`, `busrpc
    /// dlq`), or `None` when it has none: the default. A decorator hands
    /// out the one of the transport it wraps.
    fn admin(&self) -> Option<&dyn Admin> {
        None
    }

    /// The address of a service's request queue.
    fn service_address(&self, service: &str) -> String {
        format!("busrpc.{service}")
    }

    /// The largest payload this transport publishes, if it has a limit of
    /// its own (Kafka: `message.max.bytes`). A server checks every reply
    /// against it, and its own [`Limits`](crate::Limits), before publishing,
    /// and answers a reply over it with a small error instead: the broker
    /// would refuse it, and the caller would hear nothing.
    fn max_payload_bytes(&self) -> Option<usize> {
        None
    }
}
