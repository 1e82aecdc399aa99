//! A server's membership of its service's consumer group.
//!
//! The consumer lives on a thread of its own, which polls it continuously:
//! librdkafka runs rebalance and commit callbacks only from a poll, and they
//! may block (a revocation waits for replies on their way, then commits
//! synchronously). On the async runtime that would stall a worker, and on a
//! current-thread runtime the whole process, the replies it waits for
//! included. The thread hands requests over through a bounded channel, and
//! when the server has no room for more it pauses the assigned partitions
//! instead of not polling: the member keeps serving rebalances, heartbeats
//! and commits however long its handlers take.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc as std_mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use busrpc_core::transport::{Delivery, Demand, Exhausted, TransportError};
use busrpc_core::Message;
use rdkafka::consumer::BaseConsumer;
use tokio::sync::{mpsc, oneshot, Notify};

use super::watermark::{Partition, Tracker};
use super::Counters;
use crate::connection::{lock, transport_error, Connection};
use crate::consumer::thread::{spawn, Died};
use crate::consumer::{not_joined, Handoff};

mod ack;
mod committer;
mod consumer_thread;
mod health;
mod rebalance;

use ack::KafkaAck;
use committer::Committer;
use consumer_thread::ConsumerThread;
pub(crate) use health::Health;
use rebalance::GroupContext;

/// How long after a failed dead-lettering it is tried again.
const DEAD_LETTER_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long a revocation waits for the replies being sent for requests of
/// its partitions. Longer holds the rebalance up for every member; shorter
/// risks a request answered by both the old and the new owner.
const REVOCATION_WAITS_FOR_REPLIES: Duration = Duration::from_secs(5);

/// A group consumer's watermarks, shared by its thread, its reader, its
/// deliveries and its callbacks.
#[derive(Default)]
pub(crate) struct Ledger {
    tracker: Mutex<Tracker>,
    /// Signalled whenever a reply in progress has been sent or given up.
    answered: Condvar,
}

impl Ledger {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Tracker> {
        lock(&self.tracker)
    }

    /// The tracker, once no reply is being sent for requests of
    /// `partitions`, or `within` has passed.
    fn without_replies_in(
        &self,
        partitions: &[Partition],
        within: Duration,
    ) -> MutexGuard<'_, Tracker> {
        let give_up = Instant::now() + within;
        let mut tracker = self.lock();
        while partitions.iter().any(|p| tracker.answering(p)) {
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(?within, "replies still being sent at a revocation; their requests may be answered twice");
                break;
            }
            tracker = self
                .answered
                .wait_timeout(tracker, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        tracker
    }
}

/// A request taken from a partition (or released, to be delivered again).
pub(crate) struct Taken {
    partition: Partition,
    offset: i64,
    epoch: u64,
    message: Arc<Message>,
    /// Set for a request to dead-letter rather than deliver: how often it
    /// has been delivered, the refused delivery counted.
    dead: Option<u32>,
    /// Which delivery of the request this is ([`Delivery::attempt`]): 1
    /// when read the first time, the count of the partition's note when it
    /// may have been delivered to a member that is gone, one more for each
    /// release by this server.
    attempt: u32,
    /// The record's timestamp ([`Delivery::published`]).
    published: Option<std::time::SystemTime>,
}

/// Everything a consumer thread needs, made on the caller's side.
pub(crate) struct Membership {
    pub(crate) consumer: BaseConsumer<GroupContext>,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) joined: Arc<Notify>,
    /// Set when the request topic has been made again (see
    /// `crate::watch_topic`): the consumer thread asks for its metadata,
    /// which makes the group see it and assign its partitions.
    pub(crate) stale_metadata: Arc<AtomicBool>,
    pub(crate) health: Arc<Health>,
}

impl Membership {
    /// A consumer with its context, not yet subscribed.
    pub(crate) fn new(
        config: &rdkafka::ClientConfig,
        counters: Arc<Counters>,
    ) -> Result<Self, TransportError> {
        let ledger = Arc::new(Ledger::default());
        let joined = Arc::new(Notify::new());
        let health = Arc::new(Health::new());
        let consumer = config
            .create_with_context(GroupContext {
                ledger: ledger.clone(),
                counters,
                joined: joined.clone(),
                pauses: Mutex::default(),
                recommit: AtomicBool::new(false),
                committing: Mutex::new(()),
                unsaved: Mutex::default(),
                refused: Mutex::default(),
                was_refused: AtomicBool::new(false),
                warned_no_notes: AtomicBool::new(false),
                health: health.clone(),
            })
            .map_err(transport_error)?;
        Ok(Self {
            consumer,
            ledger,
            joined,
            stale_metadata: Arc::default(),
            health,
        })
    }
}

/// Starts the consumer thread of `membership`, returning the reader of its
/// requests and a receiver told once the thread has made its last commit
/// and closed the consumer (left the group). The thread ends once the
/// reader and every delivery of it are gone.
pub(crate) fn start(
    membership: Membership,
    connection: Arc<Connection>,
    counters: Arc<Counters>,
    demand: Demand,
    topic: &str,
) -> Result<(GroupReader, oneshot::Receiver<()>), TransportError> {
    let Membership {
        consumer,
        ledger,
        joined,
        stale_metadata,
        health,
    } = membership;
    let consumer = Arc::new(consumer);
    let handover = Arc::new(Handoff::default());
    let (done, finished) = std_mpsc::channel();
    let (closed, on_closed) = oneshot::channel();
    let spawn_error = |e: std::io::Error| TransportError::Other(Box::new(e));
    let committer = Committer {
        consumer: consumer.clone(),
        ledger: ledger.clone(),
        counters: counters.clone(),
        finished,
    };
    let committer = std::thread::Builder::new()
        .name("busrpc-kafka-commit".into())
        .spawn(move || committer.run())
        .map_err(spawn_error)?;
    let consumer_thread = ConsumerThread {
        consumer,
        committer,
        ledger: ledger.clone(),
        counters: counters.clone(),
        demand,
        handover: handover.clone(),
        wake_committer: Some(done.clone()),
        held: VecDeque::new(),
        suspects: HashMap::new(),
        max_deliveries: connection.config.max_deliveries,
        trials_retry_at: None,
        paused: false,
        resume_again_at: None,
        topic: topic.to_owned(),
        stale_metadata,
        health: health.clone(),
        next_health_check: Instant::now(),
    };
    let transport = connection.clone();
    let closing = handover.clone();
    let (_thread, died) = spawn(
        "busrpc-kafka-consumer",
        move || consumer_thread.run(),
        move |panicked| {
            // Closed once a panic's message is written: the reader, told
            // the handoff closed, reads why.
            closing.close();
            // The brokers (an in-process mock cluster above all) outlive the
            // consumer's close, which the thread has just done.
            drop(transport);
            if panicked.is_none() {
                let _ = closed.send(());
            }
        },
    )?;
    let (again, retries) = mpsc::unbounded_channel();
    let reader = GroupReader {
        connection,
        counters,
        ledger,
        joined,
        taken: Closing(handover),
        done,
        again,
        retries,
        watching: None,
        died,
        health,
    };
    Ok((reader, on_closed))
}

/// A handoff its reader closes when it goes: the consumer thread then
/// ends.
struct Closing<T>(Arc<Handoff<T>>);

impl<T> Drop for Closing<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The async end of a consumer thread: the requests it hands over, and those
/// released to be delivered again.
pub(crate) struct GroupReader {
    connection: Arc<Connection>,
    counters: Arc<Counters>,
    pub(crate) ledger: Arc<Ledger>,
    joined: Arc<Notify>,
    /// What the consumer thread hands over; closed when the reader goes.
    taken: Closing<Result<Taken, TransportError>>,
    done: std_mpsc::Sender<()>,
    again: mpsc::UnboundedSender<Taken>,
    retries: mpsc::UnboundedReceiver<Taken>,
    /// Dropped with the reader: stops the watch of its request topic
    /// (`crate::watch_topic`).
    pub(crate) watching: Option<oneshot::Sender<()>>,
    /// What the consumer thread's panic said, once it has panicked.
    died: Died,
    pub(crate) health: Arc<Health>,
}

impl GroupReader {
    /// Waits until the group has given this member its share of the
    /// partitions (`within` zero: not at all). Members that join one after
    /// another then cause one rebalance each, not a storm of overlapping
    /// ones that leaves the partitions without an owner for a session
    /// timeout at a time; and a server whose start returned is serving.
    /// Past `within` it fails (see [`not_joined`]): a server that says it
    /// started while it cannot join would serve nothing.
    pub(crate) async fn join(&self, within: Duration, address: &str) -> Result<(), TransportError> {
        if within.is_zero() {
            return Ok(());
        }
        tokio::time::timeout(within, self.joined.notified())
            .await
            .map_err(|_| not_joined(address, within))
    }

    /// The delivery of `taken`; marked exhausted when it was delivered
    /// more than `max_deliveries` times, for its server to dead-letter.
    fn delivery(&self, taken: Taken) -> Delivery {
        let message = taken.message.clone();
        let attempt = taken.attempt;
        let published = taken.published;
        let exhausted = taken.dead.map(|deliveries| {
            let dead = dead_letter_topic(&taken.partition.0);
            let max = self.connection.config.max_deliveries;
            Exhausted::new(deliveries.into(), max.into(), dead)
        });
        let acker = KafkaAck {
            connection: self.connection.clone(),
            counters: self.counters.clone(),
            ledger: self.ledger.clone(),
            taken,
            done: self.done.clone(),
            again: self.again.clone(),
            dead_letter_failed: false,
        };
        let mut delivery = Delivery::shared(message, acker).with_attempt(attempt);
        if let Some(at) = published {
            delivery = delivery.with_published(at);
        }
        match exhausted {
            Some(exhausted) => delivery.exhausted(exhausted),
            None => delivery,
        }
    }

    pub(crate) async fn next(&mut self) -> Result<Delivery, TransportError> {
        loop {
            let taken = tokio::select! {
                biased;
                Some(retry) = self.retries.recv() => retry,
                taken = std::future::poll_fn(|cx| self.taken.0.take(cx.waker())) => match taken {
                    Some(taken) => taken?,
                    // A consumer thread that panicked says why: the server
                    // stops with it (every later read fails the same way).
                    None => return Err(self.died.error()),
                },
            };
            // Taken or released before a rebalance took its partition away:
            // its new owner reads it again. (Recorded as delivered under
            // the lock a revocation takes, so the revocation's note covers
            // it.)
            let t = &taken;
            if !self.ledger.lock().deliver(&t.partition, t.epoch, t.offset) {
                continue;
            }
            return Ok(self.delivery(taken));
        }
    }
}

/// The dead-letter topic of the request topic `topic`.
fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dead")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance};

    use super::*;

    /// A failed rebalance is a revocation of everything: the partitions are
    /// dropped uncommitted, a reply for one of their requests is not sent,
    /// and the loss is counted.
    #[test]
    fn a_failed_rebalance_gives_up_every_partition() {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        let mock = crate::MockBrokers::start(1).unwrap();
        let counters = Arc::new(Counters::default());
        let mut config = rdkafka::ClientConfig::new();
        config
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("group.id", "failed-rebalance");
        let membership = Membership::new(&config, counters.clone()).unwrap();
        let partition: Partition = (Arc::from("t"), 0);
        let epoch = {
            let mut tracker = membership.ledger.lock();
            tracker.assigned(partition.clone());
            tracker.taken(&partition, 3).unwrap().epoch
        };
        let failed = Rebalance::Error(KafkaError::Rebalance(RDKafkaErrorCode::Fail));
        let consumer = &membership.consumer;
        consumer.context().pre_rebalance(consumer, &failed);
        let mut tracker = membership.ledger.lock();
        assert!(tracker.partitions().is_empty());
        assert!(!tracker.answer(&partition, epoch), "no reply is sent");
        assert_eq!(tracker.advance(), vec![], "nothing is committed");
        assert_eq!(counters.lost_assignments.load(Ordering::Relaxed), 1);
    }

    /// A login the broker refuses once the member is running (credentials
    /// rotated on the broker, say), which librdkafka reports only to its
    /// error callback and then retries for ever, reaches the reader as a
    /// refusal: the server stops after a few in a row
    /// (`FATAL_ERRORS_TO_STOP`), saying why. The mock cluster cannot
    /// authenticate, so the callback is called as librdkafka calls it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_login_refused_later_reaches_the_reader_as_a_refusal() {
        use busrpc_core::ErrorKind;
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        use rdkafka::ClientContext;
        let transport = crate::KafkaTransport::connect("kafka-mock://login-later")
            .await
            .unwrap();
        let connection = transport.connection.clone();
        let topic = "busrpc.login-later";
        connection
            .ensure_topic(topic, 2, None, false)
            .await
            .unwrap();
        let mut config = crate::connection::base_config(&connection.config, &connection.bootstrap);
        config.set("group.id", "login-later");
        let membership = Membership::new(&config, transport.counters.clone()).unwrap();
        membership.consumer.subscribe(&[topic]).unwrap();
        let context = membership.consumer.context().clone();
        let (mut reader, _closed) = start(
            membership,
            connection,
            transport.counters.clone(),
            Demand::unbounded(),
            topic,
        )
        .unwrap();
        reader.join(Duration::from_secs(30), topic).await.unwrap();

        // What librdkafka 2.12 reports when a SCRAM login is refused.
        let reason = "sasl_plaintext://127.0.0.1:9092/1: SASL authentication error: \
            Authentication failed during authentication due to invalid credentials \
            with SASL mechanism SCRAM-SHA-256";
        context.error(KafkaError::Global(RDKafkaErrorCode::Authentication), reason);
        let read = tokio::time::timeout(Duration::from_secs(10), reader.next()).await;
        let err = match read.expect("told within 10 s") {
            Ok(_) => panic!("a request, not the refusal"),
            Err(err) => err,
        };
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        assert!(err.to_string().contains("invalid credentials"), "{err}");

        // A broker that is only away is retried, not handed over.
        context.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        let read = tokio::time::timeout(Duration::from_millis(500), reader.next()).await;
        assert!(read.is_err(), "nothing to hand over");
    }

    /// A revocation waits for a reply on its way, so that what it commits
    /// covers the request; it waits for nothing when no reply is.
    #[test]
    fn a_revocation_waits_for_replies_on_their_way() {
        let partition: Partition = (Arc::from("t"), 0);
        let ledger = Arc::new(Ledger::default());
        let epoch = {
            let mut tracker = ledger.lock();
            tracker.assigned(partition.clone());
            let epoch = tracker.taken(&partition, 7).unwrap().epoch;
            assert!(tracker.answer(&partition, epoch));
            epoch
        };
        let revocation = std::thread::spawn({
            let (ledger, partition) = (ledger.clone(), partition.clone());
            move || {
                let partitions = [partition.clone()];
                let mut tracker = ledger.without_replies_in(&partitions, Duration::from_secs(60));
                tracker.revoked(&partition)
            }
        });
        // However late the reply lands, the revocation commits past it.
        std::thread::sleep(Duration::from_millis(200));
        ledger.lock().answered(&partition, 7, epoch, true);
        ledger.answered.notify_all();
        assert_eq!(
            revocation.join().unwrap().map(|(offset, _)| offset),
            Some(8)
        );

        ledger.lock().assigned(partition.clone());
        let idle =
            ledger.without_replies_in(std::slice::from_ref(&partition), Duration::from_secs(60));
        assert!(!idle.answering(&partition));
    }
}
