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
//!   [`Rejected`](TransportError::Rejected), never silently dropped.
//! - A reply to an inbox that has been closed is discarded, as a broker
//!   would let it expire unread.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures_util::stream::{self, Stream};
use tokio::sync::{mpsc, Notify};

use crate::message::Message;
use crate::transport::{
    Acknowledge, Deliveries, Delivery, Demand, Inbox, Transport, TransportError,
};

/// Inbox addresses start with this, so that a reply to a closed inbox is
/// recognisable and does not create a queue nobody reads.
const INBOX_PREFIX: &str = "_inbox.";

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
            broker: Arc::new(Broker {
                queues: RwLock::default(),
                inboxes: RwLock::default(),
                next_inbox: AtomicU64::new(1),
                capacity: capacity.max(1),
                skipped: AtomicU64::new(0),
                served: RwLock::default(),
            }),
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

// Maps are read on every publish and written only when a queue or inbox
// appears or goes, hence RwLock: publishers on different threads never wait
// for each other on them.
struct Broker {
    queues: RwLock<HashMap<String, Arc<Queue>>>,
    inboxes: RwLock<HashMap<String, mpsc::Sender<Message>>>,
    next_inbox: AtomicU64,
    capacity: usize,
    /// Messages not queued for a full group without members.
    skipped: AtomicU64,
    /// Every queue a consumer has ever read: only these take requests, as
    /// only a server creates its queue on Kafka and Redis. Kept when an
    /// idle queue is reaped, so requests wait for the next server.
    served: RwLock<HashSet<String>>,
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    groups: Vec<(String, Arc<Group>)>,
    /// Messages published while no group existed.
    backlog: VecDeque<Arc<Message>>,
}

#[derive(Default)]
struct Group {
    state: Mutex<GroupState>,
    available: Notify,
}

#[derive(Default)]
struct GroupState {
    /// Each with how many times it was delivered before (0: never).
    ready: VecDeque<(Arc<Message>, u32)>,
    /// Delivered, not yet settled: tag -> (consumer, message).
    /// By tag: the consumer holding it, the message, which delivery.
    in_flight: HashMap<u64, (u64, Arc<Message>, u32)>,
    next_tag: u64,
    next_consumer: u64,
    /// Consumers now in the group: one whose members have all gone and
    /// that holds nothing is removed (see `Member`'s drop).
    members: usize,
}

/// Locks, shrugging off poisoning: every critical section here leaves the
/// state consistent, so a panic elsewhere must not take the broker down.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

impl Broker {
    fn queue(&self, address: &str) -> Arc<Queue> {
        if let Some(q) = read(&self.queues).get(address) {
            return q.clone();
        }
        write(&self.queues)
            .entry(address.to_owned())
            .or_default()
            .clone()
    }

    fn full(&self, address: &str) -> TransportError {
        TransportError::Rejected(format!(
            "{address} holds {} messages, the memory broker's capacity",
            self.capacity
        ))
    }

    fn publish_to_queue(&self, address: &str, message: Message) -> Result<(), TransportError> {
        // One shared copy, whatever the number of groups and redeliveries.
        if !read(&self.served).contains(address) {
            return Err(TransportError::NotServed(address.to_owned()));
        }
        let message = Arc::new(message);
        let queue = self.queue(address);
        let mut state = lock(&queue.state);
        if state.groups.is_empty() {
            if state.backlog.len() >= self.capacity {
                return Err(self.full(address));
            }
            state.backlog.push_back(message);
            return Ok(());
        }
        let mut groups: Vec<_> = state
            .groups
            .iter()
            .map(|(_, g)| (g, lock(&g.state)))
            .collect();
        let full = |g: &GroupState| g.ready.len() + g.in_flight.len() >= self.capacity;
        // A full group with members refuses the publish. A full one whose
        // members have all gone must not block the live groups beside it:
        // it keeps what it holds for its next member, and is skipped.
        let blocked = groups.iter().any(|(_, g)| full(g) && g.members > 0);
        let open = groups.iter().filter(|(_, g)| !full(g)).count();
        if blocked || open == 0 {
            return Err(self.full(address));
        }
        for (group, g) in &mut groups {
            if full(g) {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            g.ready.push_back((message.clone(), 0));
            group.available.notify_one();
        }
        Ok(())
    }

    fn publish_to_inbox(&self, address: &str, message: Message) -> Result<(), TransportError> {
        let inboxes = read(&self.inboxes);
        let Some(sender) = inboxes.get(address) else {
            return Ok(()); // closed inbox: the reply expires unread
        };
        match sender.try_send(message) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(self.full(address)),
        }
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn publish(&self, address: &str, message: Message) -> Result<(), TransportError> {
        if address.starts_with(INBOX_PREFIX) {
            self.broker.publish_to_inbox(address, message)
        } else {
            self.broker.publish_to_queue(address, message)
        }
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
        write(&self.broker.served).insert(address.to_owned());
        let queue = self.broker.queue(address);
        let group = {
            let mut state = lock(&queue.state);
            match state.groups.iter().find(|(name, _)| name == group) {
                Some((_, g)) => g.clone(),
                None => {
                    let g = Arc::new(Group::default());
                    lock(&g.state).ready = std::mem::take(&mut state.backlog)
                        .into_iter()
                        .map(|m| (m, 0))
                        .collect();
                    state.groups.push((group.to_owned(), g.clone()));
                    g
                }
            }
        };
        let consumer = {
            let mut g = lock(&group.state);
            g.next_consumer += 1;
            g.members += 1;
            g.next_consumer
        };
        let member = Member {
            group,
            consumer,
            queue,
            address: address.to_owned(),
            broker: Arc::downgrade(&self.broker),
        };
        Ok(Deliveries::new(stream::unfold(
            member,
            |member| async move {
                let delivery = member.next().await;
                Some((Ok(delivery), member))
            },
        )))
    }

    async fn inbox(&self) -> Result<Inbox, TransportError> {
        let n = self.broker.next_inbox.fetch_add(1, Ordering::Relaxed);
        let address = format!("{INBOX_PREFIX}{n}");
        let (tx, rx) = mpsc::channel(self.broker.capacity);
        write(&self.broker.inboxes).insert(address.clone(), tx);
        let messages = InboxMessages {
            rx,
            broker: Arc::downgrade(&self.broker),
            address: address.clone(),
        };
        Ok(Inbox::new(address, messages))
    }
}

/// One consumer of a group. Dropping it hands back what it held.
struct Member {
    group: Arc<Group>,
    consumer: u64,
    queue: Arc<Queue>,
    address: String,
    broker: Weak<Broker>,
}

impl Member {
    async fn next(&self) -> Delivery {
        loop {
            {
                let mut g = lock(&self.group.state);
                if let Some((message, before)) = g.ready.pop_front() {
                    let tag = g.next_tag;
                    g.next_tag += 1;
                    let attempt = before.saturating_add(1);
                    g.in_flight
                        .insert(tag, (self.consumer, Arc::clone(&message), attempt));
                    if !g.ready.is_empty() {
                        // Pass the wake-up on: one notify may stand for many messages.
                        self.group.available.notify_one();
                    }
                    drop(g);
                    let acker = MemoryAck {
                        group: self.group.clone(),
                        tag,
                    };
                    return Delivery::shared(message, acker).with_attempt(attempt);
                }
            }
            // notify_one stores a permit when nobody waits, so a message
            // published between the check above and this await is not missed.
            self.group.available.notified().await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut g = lock(&self.group.state);
        let mut held: Vec<u64> = g
            .in_flight
            .iter()
            .filter(|(_, (consumer, _, _))| *consumer == self.consumer)
            .map(|(tag, _)| *tag)
            .collect();
        held.sort_unstable();
        for tag in held.into_iter().rev() {
            if let Some((_, message, attempt)) = g.in_flight.remove(&tag) {
                g.ready.push_front((message, attempt));
                self.group.available.notify_one();
            }
        }
        g.members -= 1;
        let reapable = g.members == 0 && g.ready.is_empty() && g.in_flight.is_empty();
        drop(g);
        if reapable {
            self.reap();
        }
    }
}

impl Member {
    /// Removes this member's group, now without members and holding
    /// nothing, and its queue once no group and no backlog is left: what
    /// nobody reads is not kept. A group with messages waits for its next
    /// member, within the capacity.
    fn reap(&self) {
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        // The broker's map before the queue's lock, as `queue()` takes them.
        let mut queues = write(&broker.queues);
        let mut state = lock(&self.queue.state);
        state.groups.retain(|(_, g)| {
            let g_state = lock(&g.state);
            !(Arc::ptr_eq(g, &self.group)
                && g_state.members == 0
                && g_state.ready.is_empty()
                && g_state.in_flight.is_empty())
        });
        if state.groups.is_empty() && state.backlog.is_empty() {
            drop(state);
            if queues
                .get(&self.address)
                .is_some_and(|q| Arc::ptr_eq(q, &self.queue))
            {
                queues.remove(&self.address);
            }
        }
    }
}

struct MemoryAck {
    group: Arc<Group>,
    tag: u64,
}

#[async_trait]
impl Acknowledge for MemoryAck {
    async fn ack(self: Box<Self>) -> Result<(), TransportError> {
        // Absent when the consumer went away first and the message was
        // handed to another member: at-least-once allows that duplicate.
        lock(&self.group.state).in_flight.remove(&self.tag);
        Ok(())
    }

    async fn release(self: Box<Self>) -> Result<(), TransportError> {
        let mut g = lock(&self.group.state);
        if let Some((_, message, attempt)) = g.in_flight.remove(&self.tag) {
            g.ready.push_front((message, attempt));
            self.group.available.notify_one();
        }
        Ok(())
    }
}

/// An inbox's receiving end; closing it unregisters the address.
struct InboxMessages {
    rx: mpsc::Receiver<Message>,
    broker: Weak<Broker>,
    address: String,
}

impl Stream for InboxMessages {
    type Item = Result<Message, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|m| m.map(Ok))
    }
}

impl Drop for InboxMessages {
    fn drop(&mut self) {
        if let Some(broker) = self.broker.upgrade() {
            write(&broker.inboxes).remove(&self.address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        b.ack().await.unwrap();
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
        first.release().await.unwrap();
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
        x.release().await.unwrap();
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
        assert!(read(&t.broker.queues).is_empty(), "nothing was created");
        drop(t.consume("q", "g", Demand::unbounded()).await.unwrap());
        assert!(read(&t.broker.queues).is_empty(), "reaped");
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
            Err(TransportError::Rejected(_))
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
        assert!(!read(&t.broker.inboxes).contains_key(&address));
        // A late reply to a closed inbox is discarded, not queued forever.
        t.publish(&address, Message::new("late")).await.unwrap();
        assert!(read(&t.broker.queues).is_empty());
    }

    #[tokio::test]
    async fn groups_and_queues_nobody_reads_are_reaped() {
        let t = MemoryTransport::new();
        let a = t.consume("q", "g", Demand::unbounded()).await.unwrap();
        let mut b = t.consume("q", "g", Demand::unbounded()).await.unwrap();
        t.publish("q", Message::new("m")).await.unwrap();
        let delivery = next(&mut b).await;
        drop(a);
        assert_eq!(read(&t.broker.queues).len(), 1, "b is still a member");
        drop(b);
        assert_eq!(read(&t.broker.queues).len(), 1, "the unsettled one waits");
        let mut c = t.consume("q", "g", Demand::unbounded()).await.unwrap();
        let again = next(&mut c).await;
        assert_eq!(again.message().payload, "m");
        again.ack().await.unwrap();
        drop(delivery);
        drop(c);
        assert!(read(&t.broker.queues).is_empty(), "nothing left to read");
        // A member-less group that empties is reaped when its last member goes.
        let d = t.consume("other", "g", Demand::unbounded()).await.unwrap();
        drop(d);
        assert!(read(&t.broker.queues).is_empty());
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
            d.ack().await.unwrap();
        }
        // "gone" holds two, its capacity, and has no member: skipped.
        t.publish("q", Message::new("3")).await.unwrap();
        assert_eq!(next(&mut live).await.message().payload, "3");
        assert_eq!(t.skipped(), 1);
        // A live full group still refuses.
        t.publish("q", Message::new("4")).await.unwrap();
        assert!(matches!(
            t.publish("q", Message::new("5")).await,
            Err(TransportError::Rejected(_))
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
