//! The broker's state: queues and their groups, inboxes, and the members
//! that consume them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::SystemTime;

use async_trait::async_trait;
use futures_util::stream::Stream;
use tokio::sync::{mpsc, Notify};

use crate::transport::{kit, Acknowledge, Delivery, Settle, SettleError, TransportError};
use crate::wire::Message;

/// Inbox addresses start with this, so that a reply to a closed inbox is
/// recognisable and does not create a queue nobody reads.
pub(super) const INBOX_PREFIX: &str = "_inbox.";

// Maps are read on every publish and written only when a queue or inbox
// appears or goes, hence RwLock: publishers on different threads never wait
// for each other on them.
pub(super) struct Broker {
    queues: RwLock<HashMap<String, Arc<Queue>>>,
    inboxes: RwLock<HashMap<String, mpsc::Sender<Message>>>,
    next_inbox: AtomicU64,
    pub(super) capacity: usize,
    /// Messages not queued for a full group without members.
    pub(super) skipped: AtomicU64,
    /// Every queue a consumer has ever read: only these take requests, as
    /// only a server creates its queue on Kafka and Redis. Kept when an
    /// idle queue is reaped, so requests wait for the next server.
    served: RwLock<HashSet<String>>,
    /// The subscribers to each queue's broadcasts.
    subscribers: Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Message>>>>,
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    groups: Vec<(String, Arc<Group>)>,
    /// Messages published while no group existed.
    backlog: VecDeque<Kept>,
}

/// A message as a queue keeps it: one shared copy, whatever the number of
/// groups and redeliveries, with the time it was published.
#[derive(Clone)]
struct Kept {
    message: Arc<Message>,
    published: SystemTime,
}

#[derive(Default)]
struct Group {
    state: Mutex<GroupState>,
    available: Notify,
}

#[derive(Default)]
struct GroupState {
    /// Each with how many times it was delivered before (0: never).
    ready: VecDeque<(Kept, u32)>,
    /// Delivered, not yet settled: tag -> (consumer, message).
    /// By tag: the consumer holding it, the message, which delivery.
    in_flight: HashMap<u64, (u64, Kept, u32)>,
    next_tag: u64,
    next_consumer: u64,
    /// Consumers now in the group: one whose members have all gone and
    /// that holds nothing is removed (see `Member`'s drop).
    members: usize,
    /// Their names, by consumer.
    names: HashMap<u64, String>,
}

/// Locks, shrugging off poisoning: every critical section here leaves the
/// state consistent, so a panic elsewhere must not take the broker down.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

impl Broker {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            queues: RwLock::default(),
            inboxes: RwLock::default(),
            next_inbox: AtomicU64::new(1),
            capacity: capacity.max(1),
            skipped: AtomicU64::new(0),
            served: RwLock::default(),
            subscribers: Mutex::default(),
        }
    }

    /// Joins `group` of the queue at `address` (creating both if need be)
    /// as a new member.
    pub(super) fn join(broker: &Arc<Self>, address: &str, group: &str, name: &str) -> Member {
        write(&broker.served).insert(address.to_owned());
        let queue = broker.queue(address);
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
            let consumer = g.next_consumer;
            g.names.insert(consumer, name.to_owned());
            consumer
        };
        Member {
            group,
            consumer,
            queue,
            address: address.to_owned(),
            broker: Arc::downgrade(broker),
        }
    }

    /// The members of `group` on the queue at `address` with how many
    /// deliveries each holds; `None` if no server ever served the queue.
    pub(super) fn members(&self, address: &str, group: &str) -> Option<Vec<(String, u64)>> {
        if !read(&self.served).contains(address) {
            return None;
        }
        // A queue whose last member left and that held nothing is reaped:
        // served before, nobody serving now.
        let Some(queue) = read(&self.queues).get(address).cloned() else {
            return Some(Vec::new());
        };
        let state = lock(&queue.state);
        let Some((_, group)) = state.groups.iter().find(|(name, _)| name == group) else {
            return Some(Vec::new());
        };
        let g = lock(&group.state);
        let mut members: Vec<(String, u64)> = g
            .names
            .iter()
            .map(|(consumer, name)| {
                let held = g.in_flight.values().filter(|(c, _, _)| c == consumer);
                (name.clone(), held.count() as u64)
            })
            .collect();
        members.sort();
        Some(members)
    }

    /// How many queues the broker holds now.
    #[cfg(test)]
    pub(super) fn queue_count(&self) -> usize {
        read(&self.queues).len()
    }

    /// Whether the inbox at `address` is open.
    #[cfg(test)]
    pub(super) fn has_inbox(&self, address: &str) -> bool {
        read(&self.inboxes).contains_key(address)
    }

    /// A new inbox: its address and what is sent to it.
    pub(super) fn open_inbox(broker: &Arc<Self>) -> (String, InboxMessages) {
        let n = broker.next_inbox.fetch_add(1, Ordering::Relaxed);
        let address = format!("{INBOX_PREFIX}{n}");
        let (tx, rx) = mpsc::channel(broker.capacity);
        write(&broker.inboxes).insert(address.clone(), tx);
        let messages = InboxMessages {
            rx,
            broker: Arc::downgrade(broker),
            address: address.clone(),
        };
        (address, messages)
    }

    /// A new subscriber to the broadcasts of the queue at `address`.
    pub(super) fn subscribe(&self, address: &str) -> mpsc::UnboundedReceiver<Message> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subscribers = lock(&self.subscribers);
        subscribers.entry(address.to_owned()).or_default().push(tx);
        rx
    }

    /// `message` to every subscriber of the queue at `address`; those gone
    /// are forgotten.
    pub(super) fn broadcast(&self, address: &str, message: &Message) {
        let mut subscribers = lock(&self.subscribers);
        if let Some(all) = subscribers.get_mut(address) {
            all.retain(|tx| tx.send(message.clone()).is_ok());
            if all.is_empty() {
                subscribers.remove(address);
            }
        }
    }

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
        TransportError::Overloaded(format!(
            "{address} holds {} messages, the memory broker's capacity",
            self.capacity
        ))
    }

    /// Publishes `message` to the queue or inbox at `address`.
    pub(super) fn publish(&self, address: &str, message: Message) -> Result<(), TransportError> {
        if address.starts_with(INBOX_PREFIX) {
            self.publish_to_inbox(address, message)
        } else {
            self.publish_to_queue(address, message)
        }
    }

    fn publish_to_queue(&self, address: &str, message: Message) -> Result<(), TransportError> {
        if !read(&self.served).contains(address) {
            return Err(TransportError::NotServed(address.to_owned()));
        }
        let message = Kept {
            message: Arc::new(message),
            published: SystemTime::now(),
        };
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

/// One consumer of a group. Dropping it hands back what it held.
pub(super) struct Member {
    group: Arc<Group>,
    consumer: u64,
    queue: Arc<Queue>,
    address: String,
    broker: Weak<Broker>,
}

impl Member {
    pub(super) async fn next(&self) -> Delivery {
        loop {
            {
                let mut g = lock(&self.group.state);
                if let Some((message, before)) = g.ready.pop_front() {
                    let tag = g.next_tag;
                    g.next_tag += 1;
                    let attempt = before.saturating_add(1);
                    g.in_flight
                        .insert(tag, (self.consumer, message.clone(), attempt));
                    if !g.ready.is_empty() {
                        // Pass the wake-up on: one notify may stand for many messages.
                        self.group.available.notify_one();
                    }
                    drop(g);
                    let acker = MemoryAck {
                        group: self.group.clone(),
                        tag,
                        broker: self.broker.clone(),
                    };
                    return Delivery::shared(message.message, acker)
                        .with_attempt(attempt)
                        .with_published(message.published);
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
        g.names.remove(&self.consumer);
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
    /// Where replies go; gone with the last transport of the broker.
    broker: Weak<Broker>,
}

impl MemoryAck {
    /// Publishes a reply, then acknowledges (see [`kit::reply_then_ack`]).
    async fn reply(self: Box<Self>, to: Arc<str>, message: Message) -> Result<(), SettleError> {
        let broker = self.broker.clone();
        kit::reply_then_ack(self, async move {
            match broker.upgrade() {
                Some(broker) => broker.publish(&to, message),
                None => Err(TransportError::Closed),
            }
        })
        .await
    }
}

#[async_trait]
impl Acknowledge for MemoryAck {
    async fn settle(self: Box<Self>, how: Settle) -> Result<(), SettleError> {
        match how {
            Settle::Ack => {
                // Absent when the consumer went away first and the message
                // was handed to another member: at-least-once allows that
                // duplicate.
                lock(&self.group.state).in_flight.remove(&self.tag);
                Ok(())
            }
            Settle::Release => {
                let mut g = lock(&self.group.state);
                if let Some((_, message, attempt)) = g.in_flight.remove(&self.tag) {
                    g.ready.push_front((message, attempt));
                    self.group.available.notify_one();
                }
                Ok(())
            }
            Settle::Reply { to, message } => self.reply(to, message).await,
            // The memory broker counts deliveries but sets no bound on
            // them, so nothing it hands out is exhausted, and it keeps no
            // dead letters: one told to dead-letter answers and forgets.
            Settle::DeadLetter {
                reply: Some((to, message)),
            } => self.reply(to, message).await,
            Settle::DeadLetter { reply: None } => self.settle(Settle::Ack).await,
        }
    }
}

/// An inbox's receiving end; closing it unregisters the address.
pub(super) struct InboxMessages {
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
