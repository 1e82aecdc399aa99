//! An in-process broker that behaves like a real one, for tests, examples and
//! services that want busrpc's engine without a broker.
//!
//! - Each group of a queue receives every message; within a group, competing
//!   consumers share them (whoever asks first takes the next one).
//! - A delivery stays with its consumer until acknowledged or released. When a
//!   consumer goes away (its stream dropped), whatever it still held is
//!   delivered again to another member, as a broker does when a process dies.
//! - Messages published before any group exists wait for the first group.
//! - Queues and inboxes are bounded; a publish beyond the bound is
//!   [`Overloaded`](TransportError::Overloaded), never silently dropped.
//! - A reply to an inbox that has been closed is discarded, as a broker
//!   would let it expire unread.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use async_trait::async_trait;
use futures_util::stream;

use crate::transport::{Deliveries, Demand, Inbox, Member, Transport, TransportError};
use crate::wire::Message;

mod broker;

use broker::{lock, Broker, INBOX_PREFIX};

/// Default bound on messages waiting in one group (or one inbox).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// The in-memory transport. Cheap to clone; clones share one broker.
///
/// ```
/// # use busrpc_core::memory::MemoryTransport;
/// let a = MemoryTransport::named("orders");
/// let b = MemoryTransport::named("orders"); // the same broker as `a`
/// let c = MemoryTransport::new();           // a private one
/// # let _ = (a, b, c);
/// ```
#[derive(Clone)]
pub struct MemoryTransport {
    broker: Arc<Broker>,
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("capacity", &self.broker.capacity)
            .finish_non_exhaustive()
    }
}

impl MemoryTransport {
    /// A new private broker.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A new private broker holding at most `capacity` waiting messages per
    /// group and per inbox.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            broker: Arc::new(Broker::new(capacity)),
        }
    }

    /// The process-wide broker called `name`, created on first use and freed
    /// when no transport refers to it any more. `memory://NAME` connects here.
    pub fn named(name: &str) -> Self {
        static NAMED: OnceLock<Mutex<HashMap<String, Weak<Broker>>>> = OnceLock::new();
        let mut named = lock(NAMED.get_or_init(Mutex::default));
        named.retain(|_, b| b.strong_count() > 0);
        if let Some(broker) = named.get(name).and_then(Weak::upgrade) {
            return Self { broker };
        }
        let transport = Self::new();
        named.insert(name.to_owned(), Arc::downgrade(&transport.broker));
        transport
    }

    /// Messages not queued for a group because it was full and had no
    /// members left (its consumers gone): such a group keeps what it holds
    /// for its next member, but does not block the live groups of its queue.
    pub fn skipped(&self) -> u64 {
        self.broker.skipped.load(Ordering::Relaxed)
    }

    /// Connects to `memory://` (the default broker) or `memory://NAME`.
    pub fn from_url(url: &str) -> Result<Self, TransportError> {
        let name = url
            .strip_prefix("memory://")
            .ok_or_else(|| TransportError::InvalidUrl {
                url: url.to_owned(),
                reason: "expected memory:// or memory://NAME".into(),
            })?;
        if name.contains(['/', '?', '#']) {
            return Err(TransportError::InvalidUrl {
                url: url.to_owned(),
                reason: "the memory transport takes only a broker name: memory://NAME".into(),
            });
        }
        Ok(Self::named(name))
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn publish(&self, address: &str, message: Message) -> Result<(), TransportError> {
        self.broker.publish(address, message)
    }

    /// Hands out one message per poll, never ahead, so `demand` needs no heed.
    async fn consume(
        &self,
        address: &str,
        group: &str,
        _demand: Demand,
    ) -> Result<Deliveries, TransportError> {
        if address.starts_with(INBOX_PREFIX) {
            return Err(TransportError::Rejected(format!(
                "{address} is an inbox, not a queue"
            )));
        }
        let name = crate::transport::member_name(None);
        let member = Broker::join(&self.broker, address, group, &name);
        Ok(Deliveries::new(stream::unfold(member, |member| async move {
            let delivery = member.next().await;
            Some((Ok(delivery), member))
        }))
        .with_member(name))
    }

    /// To every subscriber now; a queue nobody subscribes to drops it.
    async fn broadcast(&self, address: &str, message: Message) -> Result<(), TransportError> {
        self.broker.broadcast(address, &message);
        Ok(())
    }

    async fn subscribe(&self, address: &str) -> Result<Option<Inbox>, TransportError> {
        let mut messages = self.broker.subscribe(address);
        let stream =
            futures_util::stream::poll_fn(move |cx| messages.poll_recv(cx).map(|m| m.map(Ok)));
        Ok(Some(Inbox::new(format!("{address}:broadcasts"), stream)))
    }

    /// Every member of the group: a server that stops or is dropped
    /// leaves at once.
    async fn members(
        &self,
        address: &str,
        group: &str,
    ) -> Result<Option<Vec<Member>>, TransportError> {
        let members = self.broker.members(address, group);
        Ok(members.map(|members| {
            members
                .into_iter()
                .map(|(name, held)| Member::new(name).with_pending(held))
                .collect()
        }))
    }

    async fn inbox(&self) -> Result<Inbox, TransportError> {
        let (address, messages) = Broker::open_inbox(&self.broker);
        Ok(Inbox::new(address, messages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Delivery, Settle};
    use futures_util::StreamExt;
    use std::time::Duration;

    async fn next(d: &mut Deliveries) -> Delivery {
        tokio::time::timeout(Duration::from_secs(5), d.next())
            .await
            .expect("a delivery in time")
            .expect("stream open")
            .expect("no error")
    }

    async fn nothing_ready(d: &mut Deliveries) -> bool {
        tokio::time::timeout(Duration::from_millis(20), d.next())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn competing_consumers_share_and_groups_each_get_all() {
        let t = MemoryTransport::new();
        let mut a = t.consume("q", "g1", Demand::unbounded()).await.unwrap();
        let mut b = t.consume("q", "g1", Demand::unbounded()).await.unwrap();
        let mut other = t.consume("q", "g2", Demand::unbounded()).await.unwrap();
        t.publish("q", Message::new("1")).await.unwrap();
        t.publish("q", Message::new("2")).await.unwrap();
        let first = next(&mut a).await;
        let second = next(&mut b).await;
        assert_eq!(first.message().payload, "1");
        assert_eq!(second.message().payload, "2");
        assert!(nothing_ready(&mut a).await);
        assert_eq!(next(&mut other).await.message().payload, "1");
        assert_eq!(next(&mut other).await.message().payload, "2");
    }

    #[tokio::test]
    async fn unsettled_deliveries_go_to_another_member_when_their_consumer_goes() {
        let t = MemoryTransport::new();
        let mut dying = t.consume("q", "g", Demand::unbounded()).await.unwrap();
        let mut live = t.consume("q", "g", Demand::unbounded()).await.unwrap();
        t.publish("q", Message::new("a")).await.unwrap();
        t.publish("q", Message::new("b")).await.unwrap();
        let a = next(&mut dying).await;
        let b = next(&mut dying).await;
        b.settle(Settle::Ack).await.unwrap();
        drop(a); // unsettled, its consumer still alive: stays held
        assert!(nothing_ready(&mut live).await);
        drop(dying);
        assert_eq!(next(&mut live).await.message().payload, "a");
        assert!(
            nothing_ready(&mut live).await,
            "the acked one is not redelivered"
        );
    }

    #[tokio::test]
    async fn deliveries_count_their_attempts() {
        let t = MemoryTransport::new();
        let mut a = t.consume("q", "g", Demand::unbounded()).await.unwrap();
        t.publish("q", Message::new("x")).await.unwrap();
        let first = next(&mut a).await;
        assert_eq!(first.attempt(), Some(1));
        first.settle(Settle::Release).await.unwrap();
        let second = next(&mut a).await;
        assert_eq!(second.attempt(), Some(2));
        // Held by a consumer that goes away: handed to the next one.
        drop(second);
        let mut b = t.consume("q", "g", Demand::unbounded()).await.unwrap();
        drop(a);
        assert_eq!(next(&mut b).await.attempt(), Some(3));
    }

    #[tokio::test]
    async fn released_deliveries_come_back_first() {
        let t = MemoryTransport::new();
        let mut c = t.consume("q", "g", Demand::unbounded()).await.unwrap();
        for p in ["x", "y"] {
            t.publish("q", Message::new(p)).await.unwrap();
        }
        let x = next(&mut c).await;
        x.settle(Settle::Release).await.unwrap();
        assert_eq!(next(&mut c).await.message().payload, "x");
        assert_eq!(next(&mut c).await.message().payload, "y");
    }

    #[tokio::test]
    async fn a_queue_nobody_has_served_takes_no_request() {
        let t = MemoryTransport::new();
        assert!(matches!(
            t.publish("q", Message::new("m")).await,
            Err(TransportError::NotServed(ref q)) if q == "q"
        ));
        assert!((t.broker.queue_count() == 0), "nothing was created");
        drop(t.consume("q", "g", Demand::unbounded()).await.unwrap());
        assert!((t.broker.queue_count() == 0), "reaped");
        t.publish("q", Message::new("m")).await.unwrap();
    }

    #[tokio::test]
    async fn backlog_waits_for_the_next_group_and_capacity_rejects() {
        let t = MemoryTransport::with_capacity(2);
        // Served once, then left: requests wait for the next server.
        drop(t.consume("q", "old", Demand::unbounded()).await.unwrap());
        t.publish("q", Message::new("early")).await.unwrap();
        t.publish("q", Message::new("early2")).await.unwrap();
        assert!(matches!(
            t.publish("q", Message::new("x")).await,
            Err(TransportError::Overloaded(_))
        ));
        let mut c = t.consume("q", "g", Demand::unbounded()).await.unwrap();
        assert_eq!(next(&mut c).await.message().payload, "early");
    }

    #[tokio::test]
    async fn inboxes_are_private_and_vanish_when_dropped() {
        let t = MemoryTransport::new();
        let mut inbox = t.inbox().await.unwrap();
        let other = t.inbox().await.unwrap();
        assert_ne!(inbox.address(), other.address());
        let address = inbox.address().to_owned();
        t.publish(&address, Message::new("r").with_header("k", "v"))
            .await
            .unwrap();
        let m = inbox.next().await.unwrap().unwrap();
        assert_eq!(
            (m.payload.as_ref(), m.headers.get("k")),
            (&b"r"[..], Some("v"))
        );
        drop(inbox);
        assert!(!t.broker.has_inbox(&address));
        // A late reply to a closed inbox is discarded, not queued forever.
        t.publish(&address, Message::new("late")).await.unwrap();
        assert!((t.broker.queue_count() == 0));
    }

    #[tokio::test]
    async fn groups_and_queues_nobody_reads_are_reaped() {
        let t = MemoryTransport::new();
        let a = t.consume("q", "g", Demand::unbounded()).await.unwrap();
        let mut b = t.consume("q", "g", Demand::unbounded()).await.unwrap();
        t.publish("q", Message::new("m")).await.unwrap();
        let delivery = next(&mut b).await;
        drop(a);
        assert_eq!(t.broker.queue_count(), 1, "b is still a member");
        drop(b);
        assert_eq!(t.broker.queue_count(), 1, "the unsettled one waits");
        let mut c = t.consume("q", "g", Demand::unbounded()).await.unwrap();
        let again = next(&mut c).await;
        assert_eq!(again.message().payload, "m");
        again.settle(Settle::Ack).await.unwrap();
        drop(delivery);
        drop(c);
        assert!((t.broker.queue_count() == 0), "nothing left to read");
        // A member-less group that empties is reaped when its last member goes.
        let d = t.consume("other", "g", Demand::unbounded()).await.unwrap();
        drop(d);
        assert!((t.broker.queue_count() == 0));
    }

    #[tokio::test]
    async fn a_full_group_without_members_does_not_block_the_others() {
        let t = MemoryTransport::with_capacity(2);
        let mut live = t.consume("q", "live", Demand::unbounded()).await.unwrap();
        let gone = t.consume("q", "gone", Demand::unbounded()).await.unwrap();
        for p in ["1", "2"] {
            t.publish("q", Message::new(p)).await.unwrap();
        }
        // Its consumer goes, leaving two unread: kept for its next member.
        drop(gone);
        for p in ["1", "2"] {
            let d = next(&mut live).await;
            assert_eq!(d.message().payload, p);
            d.settle(Settle::Ack).await.unwrap();
        }
        // "gone" holds two, its capacity, and has no member: skipped.
        t.publish("q", Message::new("3")).await.unwrap();
        assert_eq!(next(&mut live).await.message().payload, "3");
        assert_eq!(t.skipped(), 1);
        // A live full group still refuses.
        t.publish("q", Message::new("4")).await.unwrap();
        assert!(matches!(
            t.publish("q", Message::new("5")).await,
            Err(TransportError::Overloaded(_))
        ));
    }

    #[tokio::test]
    async fn named_brokers_are_shared_and_urls_parse() {
        let a = MemoryTransport::from_url("memory://shared-test").unwrap();
        let b = MemoryTransport::named("shared-test");
        assert!(Arc::ptr_eq(&a.broker, &b.broker));
        assert!(!Arc::ptr_eq(
            &a.broker,
            &MemoryTransport::named("other").broker
        ));
        assert!(MemoryTransport::from_url("memory://x/y").is_err());
        assert!(MemoryTransport::from_url("kafka://x").is_err());
    }
}
