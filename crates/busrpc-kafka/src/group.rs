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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use busrpc_core::transport::{
    Acknowledge, Delivery, Demand, Exhausted, Readiness, ReadinessSignal, Settle, SettleError,
    TransportError,
};
use busrpc_core::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::poison::Note;
use crate::watermark::{Commit, Partition, Tracker, Trial, TRIAL_BATCH};
use crate::{lock, to_message, topic_is_gone, transport_error, Counters, Inner};

/// Requests the consumer thread may hand over ahead of the server taking
/// them, whatever the server's demand.
const HANDOVER_CAPACITY: usize = 256;

/// Requests read ahead of the server's demand before the partitions are
/// paused. librdkafka drops what it fetched for a partition when it is
/// paused, and fetches it again from its position when resumed: reading
/// ahead (and resuming with half of it still waiting) hides that round trip
/// from a saturated server even on a slow broker, and costs nothing in
/// fairness, as nobody else may read this member's partitions anyway.
const READ_AHEAD: usize = 256;

/// How long the thread's poll waits for a record while the partitions are
/// fetched: the committer's end is seen within it.
const POLL_WAIT: Duration = Duration::from_millis(50);

/// How long it waits while the partitions are paused, or requests wait to be
/// handed over: a freed handler slot is seen within it.
const PAUSED_POLL_WAIT: Duration = Duration::from_millis(5);

/// How long after resuming its partitions the consumer thread resumes them
/// once more. librdkafka's `resume()` is a no-op for a partition whose pause
/// its broker thread has not applied yet, so a pause followed at once by a
/// resume would leave the partition paused for good; resuming a partition
/// that is not paused costs nothing.
const RESUME_AGAIN_AFTER: Duration = Duration::from_millis(100);

/// How long a seek back to skipped offsets may take (see
/// `ConsumerThread::read_again`).
const SEEK_WAIT: Duration = Duration::from_secs(5);

/// How long reading a partition's committed offset and note, or its end,
/// may take when it is assigned.
const RECOVERY_WAIT: Duration = Duration::from_secs(10);

/// How long after a failed dead-lettering it is tried again.
const DEAD_LETTER_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long after a failed commit the committer commits again.
const COMMIT_RETRY_AFTER: Duration = Duration::from_millis(200);

/// How often an idle committer looks for a commit to make again.
const IDLE_COMMITTER_WAKES: Duration = Duration::from_secs(1);

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

/// How often a consumer whose broker failed asks it for metadata, to learn
/// that it answers again.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the server's readiness says for a group member: ready once the
/// group has given it its share (from its first assignment to the next
/// revocation) while its broker answers.
pub(crate) struct Health {
    signal: ReadinessSignal,
    state: Mutex<HealthState>,
    /// Whether `state.broker` is set: read for every record taken, where
    /// the lock would cost more.
    failing: AtomicBool,
}

struct HealthState {
    /// Why the member holds no assignment now, if it holds none.
    unassigned: Option<&'static str>,
    /// The broker's last failure, until it answers again.
    broker: Option<String>,
}

impl Health {
    fn new() -> Self {
        const JOINING: &str = "joining the consumer group";
        Self {
            signal: ReadinessSignal::new(Readiness::NotReady(JOINING.into())),
            state: Mutex::new(HealthState {
                unassigned: Some(JOINING),
                broker: None,
            }),
            failing: AtomicBool::new(false),
        }
    }

    pub(crate) fn signal(&self) -> ReadinessSignal {
        self.signal.clone()
    }

    fn assigned(&self, why_not: Option<&'static str>) {
        let mut state = lock(&self.state);
        state.unassigned = why_not;
        self.publish(&state);
    }

    fn broker(&self, failure: Option<String>) {
        if failure.is_none() && !self.broker_failing() {
            return;
        }
        let mut state = lock(&self.state);
        self.failing.store(failure.is_some(), Ordering::Relaxed);
        state.broker = failure;
        self.publish(&state);
    }

    fn broker_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    fn publish(&self, state: &HealthState) {
        match (state.unassigned, &state.broker) {
            (_, Some(failure)) => self
                .signal
                .not_ready(format!("the Kafka broker is failing: {failure}")),
            (Some(why), None) => self.signal.not_ready(why),
            (None, None) => self.signal.ready(),
        }
    }
}

/// Keeps the watermarks in step with the group's assignment. Its callbacks
/// run on the consumer thread, where blocking is allowed.
pub(crate) struct GroupContext {
    ledger: Arc<Ledger>,
    counters: Arc<Counters>,
    /// Told of every assignment: the first one ends [`join`].
    joined: Arc<Notify>,
    /// Which partitions the consumer thread has paused, and which it may.
    pauses: Mutex<Pauses>,
    /// Set when the committer should commit without waiting for a request
    /// to finish: after a failed commit, or an assignment that gave back
    /// partitions whose last commit was refused.
    recommit: AtomicBool,
    /// Held by whoever commits: the committer thread, or a revocation. A
    /// commit computed before a revocation never lands after the
    /// revocation's own (higher) one.
    committing: Mutex<()>,
    /// What the last revocation finished but could not commit: committed
    /// if the next assignment gives the partitions back.
    unsaved: Mutex<Vec<(Partition, i64)>>,
    /// Set once this consumer has warned that its broker keeps no notes.
    warned_no_notes: AtomicBool,
    pub(crate) health: Arc<Health>,
}

impl ClientContext for GroupContext {
    /// librdkafka's errors about its connections (all brokers down, a
    /// broker unreachable, authentication failed): the member is not ready
    /// until the broker answers again. librdkafka retries by itself.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "the Kafka consumer's connection failed");
        self.health.broker(Some(reason.to_owned()));
    }
}

impl ConsumerContext for GroupContext {
    /// Only now are the partitions ours: librdkafka serves this callback
    /// from the same poll that then returns their messages, so none of them
    /// is read before its partition is tracked.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(assigned) = rebalance else {
            return;
        };
        // Requests finished under the previous assignment whose commit the
        // broker refused are known done if their partition comes back now:
        // nobody else can have owned it in between.
        let unsaved = std::mem::take(&mut *lock(&self.unsaved));
        let recovered = self.recover(consumer, assigned);
        let mut tracker = self.ledger.lock();
        for element in assigned.elements() {
            let partition: Partition = (element.topic().into(), element.partition());
            tracker.assigned(partition.clone());
            if let Some(found) = recovered.iter().find(|r| r.partition == partition) {
                // Everything below the committed offset is done: a first
                // record read above it means the fetch skipped some (Tansu
                // 0.6.0 can), and the consumer goes back for them.
                tracker.done_below(&partition, found.committed);
                if let Some((note, end)) = &found.note {
                    tracker.recovered(&partition, found.committed, note.clone(), *end);
                }
            }
            if let Some((_, offset)) = unsaved.iter().find(|(p, _)| *p == partition) {
                tracker.done_below(&partition, *offset);
                self.recommit.store(true, Ordering::Relaxed);
            }
        }
        drop(tracker);
        tracing::debug!(partitions = assigned.count(), "partitions assigned");
        self.health.assigned(None);
        self.joined.notify_one();
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(_) => {}
            // librdkafka unassigns everything after an error: the partitions
            // are another member's, or nobody's, and a commit for them would
            // be refused or, worse, land over their new owner's.
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "the group rebalance failed; this member gives up its partitions");
                self.health
                    .assigned(Some("the group's rebalance failed; joining again"));
                self.lose_everything(consumer);
            }
            Rebalance::Revoke(revoked) if consumer.assignment_lost() => {
                tracing::warn!(
                    partitions = revoked.count(),
                    "the partitions were lost (the session expired); nothing is committed for them"
                );
                self.health
                    .assigned(Some("the partitions were lost; joining again"));
                self.lose_everything(consumer);
            }
            Rebalance::Revoke(revoked) => {
                self.health.assigned(Some("the group is rebalancing"));
                self.revoke(consumer, revoked);
                self.unpause(consumer, Some(revoked));
            }
        }
    }
}

/// A partition's committed offset as read at its assignment (the start of
/// its log if it has none: reading starts there), with its note
/// and the partition's end then, if it has a note.
struct Recovered {
    partition: Partition,
    committed: i64,
    note: Option<(Note, i64)>,
}

/// The consumer thread's pauses.
///
/// librdkafka keeps a partition the application paused paused across a
/// revocation and a later assignment, and a partition resumed before its
/// fetch position is known starts again from `auto.offset.reset`, the
/// beginning (librdkafka 2.12, `rd_kafka_toppar_pause_resume`). So only
/// partitions with a record read under their current assignment are paused
/// (their position is then the next record), and every pause is undone
/// before its partition is revoked.
#[derive(Default)]
pub(crate) struct Pauses {
    /// Partitions a record has been read from under their current assignment.
    reading: HashSet<Partition>,
    /// Partitions paused now.
    paused: HashSet<Partition>,
}

fn partition_list<'a>(partitions: impl IntoIterator<Item = &'a Partition>) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition(topic, *partition);
    }
    list
}

impl GroupContext {
    /// Reads the committed offset and note of each assigned partition, and
    /// for those whose note reserves records beyond the offset, the
    /// partition's end: the records between may have been running when
    /// their last owner died (see [`crate::poison`]). Blocking here is
    /// allowed, and no record of the partitions is read before it returns.
    fn recover(
        &self,
        consumer: &BaseConsumer<Self>,
        assigned: &TopicPartitionList,
    ) -> Vec<Recovered> {
        let committed = match consumer.committed_offsets(assigned.clone(), RECOVERY_WAIT) {
            Ok(committed) => committed,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the committed offsets: a fetch that skips the first records is not caught, and deliveries to a member that died are not counted this time");
                return Vec::new();
            }
        };
        let mut recovered = Vec::new();
        for element in committed.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let Offset::Offset(offset) = element.offset() else {
                // Never committed: reading starts at the log's start
                // (`auto.offset.reset=earliest`), done below it likewise,
                // so that a first fetch that skips the first records (a
                // new service's first calls, racing on Tansu) is caught.
                match consumer.fetch_watermarks(topic, partition, RECOVERY_WAIT) {
                    Ok((low, _)) => recovered.push(Recovered {
                        partition: (topic.into(), partition),
                        committed: low,
                        note: None,
                    }),
                    Err(e) => {
                        tracing::debug!(topic, partition, error = %e, "reading the start of a partition never committed");
                    }
                }
                continue;
            };
            let note = match Note::parse(element.metadata()) {
                None => {
                    if !self.warned_no_notes.swap(true, Ordering::Relaxed) {
                        tracing::warn!(topic, "a committed offset came without busrpc's note: if the broker drops commit metadata (Tansu 0.6.0 does), requests that crash their server are not counted against max_deliveries");
                    }
                    None
                }
                Some(note) if note.reserved <= offset => Some((note, offset)),
                Some(note) => {
                    let end = match consumer.fetch_watermarks(topic, partition, RECOVERY_WAIT) {
                        Ok((_, high)) => high,
                        // Unknown: every reserved record is a suspect.
                        Err(e) => {
                            tracing::debug!(error = %e, "reading the end of a partition");
                            note.reserved
                        }
                    };
                    tracing::debug!(topic, partition, committed = offset, reserved = note.reserved, end, "records that may have run on a member gone are counted before they run again");
                    Some((note, end))
                }
            };
            recovered.push(Recovered {
                partition: (topic.into(), partition),
                committed: offset,
                note,
            });
        }
        recovered
    }

    /// Drops every partition with nothing committed or answered for it, and
    /// counts the loss.
    fn lose_everything(&self, consumer: &BaseConsumer<Self>) {
        self.counters
            .lost_assignments
            .fetch_add(1, Ordering::Relaxed);
        lock(&self.unsaved).clear();
        self.ledger.lock().revoke_all();
        self.unpause(consumer, None);
    }

    /// Resumes the paused partitions among `revoked` (all if `None`) and
    /// forgets them: see [`Pauses`].
    fn unpause(&self, consumer: &BaseConsumer<Self>, revoked: Option<&TopicPartitionList>) {
        let mut pauses = lock(&self.pauses);
        let gone: Vec<Partition> = match revoked {
            None => pauses.reading.drain().collect(),
            Some(list) => list
                .elements()
                .iter()
                .map(|e| (e.topic().into(), e.partition()))
                .filter(|p| pauses.reading.remove(p))
                .collect(),
        };
        let resume: Vec<Partition> = gone
            .into_iter()
            .filter(|p| pauses.paused.remove(p))
            .collect();
        drop(pauses);
        if resume.is_empty() {
            return;
        }
        if let Err(e) = consumer.resume(&partition_list(&resume)) {
            tracing::debug!(error = %e, "resuming partitions before they go");
        }
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
        tracing::debug!(partitions = revoked.count(), "partitions revoked");
        let partitions: Vec<Partition> = revoked
            .elements()
            .iter()
            .map(|e| (e.topic().into(), e.partition()))
            .collect();
        // A reply on its way when the partition goes would be sent while the
        // commit below stays under its request, which the next owner would
        // then answer again: let it land first. The runtime sending it runs
        // on, as this is the consumer's own thread. (The handlers still
        // running send nothing once the partition is gone; the next owner
        // answers.)
        let committing = lock(&self.committing);
        let mut tracker = self
            .ledger
            .without_replies_in(&partitions, REVOCATION_WAITS_FOR_REPLIES);
        // Commit what is done before the partitions go to another member,
        // then forget them: later acknowledgements for them do not count.
        let mut commits = TopicPartitionList::new();
        for partition in &partitions {
            if let Some((offset, note)) = tracker.revoked(partition) {
                add_commit(&mut commits, partition, offset, &note);
            }
        }
        drop(tracker);
        if commits.count() > 0 {
            if let Err(e) = consumer.commit(&commits, CommitMode::Sync) {
                self.counters
                    .commit_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "committing before a rebalance failed; finished requests may run again unless their partitions come back");
                let mut unsaved = lock(&self.unsaved);
                for element in commits.elements() {
                    if let Offset::Offset(offset) = element.offset() {
                        unsaved.push(((element.topic().into(), element.partition()), offset));
                    }
                }
            }
        }
        drop(committing);
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
    inner: Arc<Inner>,
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
    let (handover, taken) = mpsc::channel(HANDOVER_CAPACITY);
    let (done, finished) = std_mpsc::channel();
    let (closed, on_closed) = oneshot::channel();
    let spawn_error = |e: std::io::Error| TransportError::Other(Box::new(e));
    let committer = Committer {
        consumer: consumer.clone(),
        ledger: ledger.clone(),
        counters: inner.counters.clone(),
        finished,
    };
    let committer = std::thread::Builder::new()
        .name("busrpc-kafka-commit".into())
        .spawn(move || committer.run())
        .map_err(spawn_error)?;
    let thread = ConsumerThread {
        consumer,
        committer,
        ledger: ledger.clone(),
        counters: inner.counters.clone(),
        demand,
        handover,
        wake_committer: Some(done.clone()),
        held: VecDeque::new(),
        suspects: HashMap::new(),
        max_deliveries: inner.config.max_deliveries,
        trials_retry_at: None,
        paused: false,
        resume_again_at: None,
        topic: topic.to_owned(),
        stale_metadata,
        health: health.clone(),
        next_health_check: Instant::now(),
    };
    let transport = inner.clone();
    let died = Arc::new(Mutex::new(None));
    let said = died.clone();
    // Holds the handover open until a panic's message is written: the
    // reader, told the channel closed, reads why.
    let handover = thread.handover.clone();
    std::thread::Builder::new()
        .name("busrpc-kafka-consumer".into())
        .spawn(move || {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| thread.run()));
            if let Err(panic) = &ran {
                let what = panic_text(panic.as_ref());
                tracing::error!(panic = %what, "the Kafka consumer thread panicked; this member reads no more requests");
                *said.lock().unwrap_or_else(|e| e.into_inner()) = Some(what);
            }
            drop(handover);
            // The brokers (an in-process mock cluster above all) outlive the
            // consumer's close, which the thread has just done.
            drop(transport);
            if ran.is_ok() {
                let _ = closed.send(());
            }
        })
        .map_err(spawn_error)?;
    let (again, retries) = mpsc::unbounded_channel();
    let reader = GroupReader {
        inner,
        ledger,
        joined,
        taken,
        done,
        again,
        retries,
        watching: None,
        died,
        health,
    };
    Ok((reader, on_closed))
}

/// What a panic said, if it said it with a string.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// A test's way to make the consumer thread of one topic panic.
#[cfg(test)]
pub(crate) static PANIC_ON: Mutex<Option<String>> = Mutex::new(None);

struct ConsumerThread {
    /// Shared with the committer only, which ends first: the consumer is
    /// closed here, where blocking is allowed.
    consumer: Arc<BaseConsumer<GroupContext>>,
    /// Ends once the reader and every delivery are gone.
    committer: std::thread::JoinHandle<()>,
    ledger: Arc<Ledger>,
    counters: Arc<Counters>,
    demand: Demand,
    handover: mpsc::Sender<Result<Taken, TransportError>>,
    /// Wakes the committer to reserve records (see [`crate::poison`]);
    /// dropped once the reader is gone, so that the committer's end, once
    /// every delivery is settled too, is not held up.
    wake_committer: Option<std_mpsc::Sender<()>>,
    /// Taken, waiting for room in the handover channel (or, at the front,
    /// for the broker to hold a reservation for it).
    held: VecDeque<Taken>,
    /// Suspects taken, waiting for their trial (one trial at a time per
    /// consumer: see [`Tracker::begin_trial`]).
    suspects: HashMap<Partition, VecDeque<Taken>>,
    max_deliveries: u32,
    /// When to try suspects again after a trial's commit failed.
    trials_retry_at: Option<Instant>,
    paused: bool,
    /// When to resume the partitions once more (see [`RESUME_AGAIN_AFTER`]).
    resume_again_at: Option<Instant>,
    /// The request topic, and whether it was made again since the consumer
    /// last looked (see [`Membership::stale_metadata`]).
    topic: String,
    stale_metadata: Arc<AtomicBool>,
    health: Arc<Health>,
    next_health_check: Instant,
}

impl ConsumerThread {
    fn run(mut self) {
        while !self.committer.is_finished() {
            if self.handover.is_closed() {
                self.wake_committer = None;
            }
            self.try_suspects();
            self.hand_over_held();
            self.pause_or_resume();
            self.resume_again();
            self.look_again();
            self.check_health();
            #[cfg(test)]
            if PANIC_ON.lock().unwrap().as_deref() == Some(self.topic.as_str()) {
                panic!("a panic a test asked for");
            }
            let wait = if self.paused || !self.held.is_empty() || !self.suspects.is_empty() {
                PAUSED_POLL_WAIT
            } else {
                POLL_WAIT
            };
            let taken = match self.consumer.poll(wait) {
                None => continue,
                Some(Err(e)) => {
                    self.health.broker(Some(e.to_string()));
                    Err(transport_error(e))
                }
                Some(Ok(record)) => {
                    self.health.broker(None);
                    let partition: Partition = (record.topic().into(), record.partition());
                    let offset = record.offset();
                    // Tracked here, on the thread that runs the rebalances:
                    // a record is taken only while its partition is ours.
                    let Some(taken) = self.ledger.lock().taken(&partition, offset) else {
                        tracing::debug!(topic = %partition.0, partition = partition.1, offset, "skipping a request of a partition no longer ours, or taken already");
                        continue;
                    };
                    tracing::trace!(topic = %partition.0, partition = partition.1, offset, "taken");
                    let message = Arc::new(to_message(&record));
                    drop(record);
                    if let Some(from) = taken.read_again_from {
                        self.read_again(&partition, from, offset);
                    }
                    self.read_from(&partition);
                    let record = Taken {
                        message,
                        partition,
                        offset,
                        epoch: taken.epoch,
                        dead: None,
                    };
                    if taken.suspect {
                        let queue = self.suspects.entry(record.partition.clone()).or_default();
                        queue.push_back(record);
                        continue;
                    }
                    Ok(record)
                }
            };
            match taken {
                Ok(taken) => {
                    self.held.push_back(taken);
                    self.hand_over_held();
                }
                Err(e) => {
                    // An error with requests waiting is reported after them.
                    if self.held.is_empty() {
                        let _ = self.handover.try_send(Err(e));
                    } else {
                        tracing::debug!(error = %e, "reading the group's partitions");
                    }
                }
            }
        }
        // Everything handed over is settled and the committer has made its
        // last commit. Requests taken but never handed over stay
        // uncommitted, for the partition's next owner.
        if self.committer.join().is_err() {
            tracing::warn!("the committer thread panicked");
        }
        // The last handle: dropping it closes the consumer, which leaves the
        // group (running the revocation, which finds nothing more to commit)
        // before returning.
        drop(self.consumer);
    }

    /// While the broker is failing, asks it for the request topic's
    /// metadata now and then: an answer means it is back (a consumer with
    /// nothing to read hears nothing else from it).
    fn check_health(&mut self) {
        let now = Instant::now();
        if now < self.next_health_check || !self.health.broker_failing() {
            return;
        }
        self.next_health_check = now + HEALTH_CHECK_EVERY;
        let answer = self
            .consumer
            .fetch_metadata(Some(&self.topic), HEALTH_CHECK_EVERY / 2);
        if answer.is_ok() {
            self.health.broker(None);
        }
    }

    /// Subscribes again once the request topic was made again. A group
    /// that rebalanced while the topic was missing gave this member no
    /// partitions, and sees the topic's new partitions only when its
    /// subscription's metadata is refreshed (every
    /// `topic.metadata.refresh.interval.ms`, five minutes by default; asking
    /// for the topic's metadata does not do it): a new subscription makes
    /// the member join again, and the group hand out the partitions.
    fn look_again(&self) {
        if !self.stale_metadata.swap(false, Ordering::Relaxed) {
            return;
        }
        self.consumer.unsubscribe();
        if let Err(e) = self.consumer.subscribe(&[&self.topic]) {
            tracing::error!(topic = %self.topic, error = %e, "subscribing again to the request topic made again failed; nothing is served");
        }
    }

    fn hand_over_held(&mut self) {
        while let Some(front) = self.held.front() {
            let reserved = front.dead.is_some()
                || self
                    .ledger
                    .lock()
                    .reserved(&front.partition, front.epoch, front.offset);
            if !reserved {
                tracing::trace!(topic = %front.partition.0, partition = front.partition.1, offset = front.offset, "waiting for the broker to hold a reservation");
                if let Some(wake) = &self.wake_committer {
                    let _ = wake.send(());
                }
                return;
            }
            let Some(taken) = self.held.pop_front() else {
                return;
            };
            match self.handover.try_send(Ok(taken)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(Ok(taken))) => {
                    self.held.push_front(taken);
                    return;
                }
                // The reader is gone: what it never got stays in flight, so
                // nothing is committed past it.
                Err(_) => {
                    self.held.clear();
                    return;
                }
            }
        }
    }

    /// Pauses the partitions once the server's demand and [`READ_AHEAD`]
    /// more requests wait, and resumes them once half as many do. A paused
    /// partition is still polled, so the member goes on taking part in its
    /// group however long its handlers take.
    fn pause_or_resume(&mut self) {
        let suspects: usize = self.suspects.values().map(VecDeque::len).sum();
        let waiting = self.held.len() + suspects + (HANDOVER_CAPACITY - self.handover.capacity());
        let pause = if self.handover.is_closed() {
            true
        } else {
            let high = self.demand.now().min(HANDOVER_CAPACITY) + READ_AHEAD;
            if self.paused {
                waiting > high / 2
            } else {
                waiting >= high
            }
        };
        if pause == self.paused {
            return;
        }
        self.paused = pause;
        tracing::debug!(pause, waiting, "pausing or resuming the partitions");
        let list = {
            let mut pauses = lock(&self.consumer.context().pauses);
            if pause {
                pauses.paused = pauses.reading.clone();
                partition_list(&pauses.paused)
            } else {
                let list = partition_list(&pauses.paused);
                pauses.paused.clear();
                list
            }
        };
        if pause {
            self.counters.pauses.fetch_add(1, Ordering::Relaxed);
            self.resume_again_at = None;
        } else {
            self.resume_again_at = Some(Instant::now() + RESUME_AGAIN_AFTER);
        }
        if list.count() == 0 {
            return;
        }
        let outcome = if pause {
            self.consumer.pause(&list)
        } else {
            self.consumer.resume(&list)
        };
        if let Err(e) = outcome {
            tracing::debug!(error = %e, pause, "pausing or resuming the partitions failed");
        }
    }

    /// Tries the first waiting suspects of a partition once no other
    /// suspect is on trial: their deliveries are counted in a synchronous
    /// commit before they are handed over, or the first is handed over to be
    /// dead-lettered (see [`crate::poison`] and [`Tracker::begin_trial`]).
    fn try_suspects(&mut self) {
        // Once the reader is gone nothing more is delivered: a trial begun
        // now would count a delivery that never happens.
        if self.suspects.is_empty()
            || self.handover.is_closed()
            || self.trials_retry_at.is_some_and(|at| Instant::now() < at)
        {
            return;
        }
        self.trials_retry_at = None;
        let context = self.consumer.context();
        self.suspects.retain(|partition, queue| {
            while let Some(front) = queue.front() {
                let epoch = front.epoch;
                let waiting: Vec<i64> = queue
                    .iter()
                    .take_while(|t| t.epoch == epoch)
                    .take(TRIAL_BATCH)
                    .map(|t| t.offset)
                    .collect();
                // Taken before the tracker, as every committer does.
                let _committing = lock(&context.committing);
                let trial = self.ledger.lock().begin_trial(
                    partition,
                    epoch,
                    &waiting,
                    self.max_deliveries,
                );
                match trial {
                    Trial::Wait => break,
                    Trial::Gone => {
                        queue.pop_front();
                    }
                    Trial::DeadLetter(deliveries) => {
                        if let Some(mut taken) = queue.pop_front() {
                            taken.dead = Some(deliveries);
                            self.held.push_back(taken);
                        }
                        break;
                    }
                    Trial::Run(commit, tried) => {
                        match commit_now(&self.consumer, std::slice::from_ref(&commit)) {
                            Ok(()) => {
                                self.ledger.lock().landed(&commit);
                                self.counters
                                    .trials
                                    .fetch_add(tried as u64, Ordering::Relaxed);
                                tracing::debug!(topic = %partition.0, partition = partition.1, first = waiting[0], tried, note = ?commit.note, "trying suspects");
                                self.held.extend(queue.drain(..tried));
                            }
                            Err(error) => {
                                self.ledger.lock().trial_failed(&commit, &waiting[..tried]);
                                self.counters
                                    .commit_failures
                                    .fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(%error, "counting a suspect's delivery failed; it is tried again shortly");
                                self.trials_retry_at = Some(Instant::now() + COMMIT_RETRY_AFTER);
                            }
                        }
                        break;
                    }
                }
            }
            !queue.is_empty()
        });
    }

    /// Sends the consumer back to `from` in `partition`: records from there
    /// up to `offset` were skipped by the fetch that returned `offset`.
    /// Tansu 0.6.0 does that under concurrent produces (a record shows
    /// before the one below it is stored); left alone, the skipped requests
    /// would never run, and the watermark, once past them, would commit
    /// them unanswered. Records read again that were taken already are
    /// refused by the tracker; offsets that turn out to hold no record
    /// (transaction markers, compaction, on Kafka) are given up as soon as a
    /// record above them is read.
    fn read_again(&self, partition: &Partition, from: i64, offset: i64) {
        self.counters.refetches.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(topic = %partition.0, partition = partition.1, from, offset, "offsets skipped by a fetch; reading again from the first");
        if let Err(e) =
            self.consumer
                .seek(&partition.0, partition.1, Offset::Offset(from), SEEK_WAIT)
        {
            tracing::warn!(topic = %partition.0, partition = partition.1, from, error = %e, "could not read a partition again from a skipped offset");
        }
    }

    /// Notes a record read from `partition`; while the thread holds off, a
    /// partition read from for the first time since its assignment is
    /// paused now (see [`Pauses`]).
    fn read_from(&self, partition: &Partition) {
        let context = self.consumer.context();
        let mut pauses = lock(&context.pauses);
        if pauses.reading.contains(partition) {
            return;
        }
        pauses.reading.insert(partition.clone());
        if !self.paused {
            return;
        }
        pauses.paused.insert(partition.clone());
        drop(pauses);
        if let Err(e) = self.consumer.pause(&partition_list([partition])) {
            tracing::debug!(error = %e, "pausing a partition");
        }
    }

    /// Resumes the partitions once more, [`RESUME_AGAIN_AFTER`] a resume:
    /// one issued before librdkafka applied the pause before it was lost.
    fn resume_again(&mut self) {
        if self.paused || self.resume_again_at.is_none_or(|at| Instant::now() < at) {
            return;
        }
        self.resume_again_at = None;
        let list = partition_list(&lock(&self.consumer.context().pauses).reading);
        if list.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.resume(&list) {
            tracing::debug!(error = %e, "resuming the partitions again");
        }
    }
}

/// Commits the watermarks as requests finish, synchronously, on a thread
/// of its own: a failed commit is seen (librdkafka reports asynchronous
/// commits only to a callback busrpc cannot set) and made again, and the
/// consumer thread's polling never waits for one. Requests that finish
/// during a commit go into the next.
struct Committer {
    consumer: Arc<BaseConsumer<GroupContext>>,
    ledger: Arc<Ledger>,
    counters: Arc<Counters>,
    /// A message on it says a request finished; disconnected once the reader
    /// and every delivery are gone.
    finished: std_mpsc::Receiver<()>,
}

impl Committer {
    fn run(self) {
        let context = self.consumer.context();
        // After a failed commit, the next try waits COMMIT_RETRY_AFTER
        // however many requests finish meanwhile: during a rebalance the
        // broker refuses every commit, and trying again as each request
        // finished made hundreds of refused commits a second.
        let mut retry_at: Option<Instant> = None;
        loop {
            let wait = match retry_at {
                Some(at) => at.saturating_duration_since(Instant::now()),
                None if context.recommit.load(Ordering::Relaxed) => COMMIT_RETRY_AFTER,
                None => IDLE_COMMITTER_WAKES,
            };
            match self.finished.recv_timeout(wait) {
                Ok(()) => {
                    while self.finished.try_recv().is_ok() {}
                    if retry_at.is_some_and(|at| Instant::now() < at) {
                        continue;
                    }
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    if retry_at.is_none() && !context.recommit.load(Ordering::Relaxed) {
                        continue;
                    }
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
            retry_at = self.commit().then(|| Instant::now() + COMMIT_RETRY_AFTER);
        }
        // The last commit, of everything settled.
        let _ = self.commit();
        if context.recommit.load(Ordering::Relaxed) {
            tracing::warn!("the last commit failed; finished requests may run again");
        }
    }

    /// Commits what finished; whether that failed (and is to be made again).
    fn commit(&self) -> bool {
        let context = self.consumer.context();
        let _committing = lock(&context.committing);
        context.recommit.store(false, Ordering::Relaxed);
        let commits = self.ledger.lock().advance();
        if commits.is_empty() {
            return false;
        }
        let failed = commit_now(&self.consumer, &commits);
        let mut tracker = self.ledger.lock();
        let Err(error) = failed else {
            for commit in &commits {
                tracker.landed(commit);
            }
            return false;
        };
        for commit in &commits {
            tracker.commit_failed(&commit.partition);
        }
        drop(tracker);
        self.counters
            .commit_failures
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%error, "a commit failed; it is made again shortly");
        context.recommit.store(true, Ordering::Relaxed);
        true
    }
}

/// Commits `commits` synchronously; the error, if the commit or any
/// partition's part of it failed.
fn commit_now(consumer: &BaseConsumer<GroupContext>, commits: &[Commit]) -> Result<(), String> {
    let mut list = TopicPartitionList::new();
    for commit in commits {
        add_commit(&mut list, &commit.partition, commit.offset, &commit.note);
    }
    match consumer.commit(&list, CommitMode::Sync) {
        Err(e) => Err(e.to_string()),
        // A commit can fail for some partitions only.
        Ok(()) => match list.elements().iter().find_map(|e| e.error().err()) {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        },
    }
}

/// Adds `offset` with `note` as its metadata to `list`.
fn add_commit(list: &mut TopicPartitionList, partition: &Partition, offset: i64, note: &Note) {
    let mut element = list.add_partition(&partition.0, partition.1);
    if element.set_offset(Offset::Offset(offset)).is_ok() {
        element.set_metadata(note.encode());
    }
}

/// The async end of a consumer thread: the requests it hands over, and those
/// released to be delivered again.
pub(crate) struct GroupReader {
    inner: Arc<Inner>,
    pub(crate) ledger: Arc<Ledger>,
    joined: Arc<Notify>,
    taken: mpsc::Receiver<Result<Taken, TransportError>>,
    done: std_mpsc::Sender<()>,
    again: mpsc::UnboundedSender<Taken>,
    retries: mpsc::UnboundedReceiver<Taken>,
    /// Dropped with the reader: stops the watch of its request topic
    /// (`crate::watch_topic`).
    pub(crate) watching: Option<oneshot::Sender<()>>,
    /// What the consumer thread's panic said, once it has panicked.
    died: Arc<Mutex<Option<String>>>,
    pub(crate) health: Arc<Health>,
}

impl GroupReader {
    /// Waits until the group has given this member its share of the
    /// partitions, or `within` has passed. Members that join one after
    /// another then cause one rebalance each, not a storm of overlapping
    /// ones that leaves the partitions without an owner for a session
    /// timeout at a time.
    pub(crate) async fn join(&self, within: Duration) {
        if within.is_zero() {
            return;
        }
        if tokio::time::timeout(within, self.joined.notified())
            .await
            .is_err()
        {
            tracing::warn!(?within, "the group has not assigned this member its partitions yet; it goes on joining while serving");
        }
    }

    /// The delivery of `taken`; marked exhausted when it was delivered
    /// more than `max_deliveries` times, for its server to dead-letter.
    fn delivery(&self, taken: Taken) -> Delivery {
        let message = taken.message.clone();
        let exhausted = taken.dead.map(|deliveries| {
            let dead = dead_letter_topic(&taken.partition.0);
            let max = self.inner.config.max_deliveries;
            Exhausted::new(deliveries.into(), max.into(), dead)
        });
        let acker = KafkaAck {
            inner: self.inner.clone(),
            ledger: self.ledger.clone(),
            taken,
            done: self.done.clone(),
            again: self.again.clone(),
            dead_letter_failed: false,
        };
        let delivery = Delivery::shared(message, acker);
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
                taken = self.taken.recv() => match taken {
                    Some(taken) => taken?,
                    // A consumer thread that panicked says why: the server
                    // stops with it (every later read fails the same way).
                    None => {
                        let died = self.died.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        return Err(died.map_or(TransportError::Closed, |what| {
                            TransportError::Other(
                                format!("the Kafka consumer thread panicked: {what}").into(),
                            )
                        }));
                    }
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

struct KafkaAck {
    inner: Arc<Inner>,
    ledger: Arc<Ledger>,
    taken: Taken,
    done: std_mpsc::Sender<()>,
    again: mpsc::UnboundedSender<Taken>,
    /// Set once dead-lettering it failed: it is delivered again only after
    /// a pause, not at once into another failure.
    dead_letter_failed: bool,
}

impl KafkaAck {
    /// Tells the consumer thread a request is done, for it to commit.
    fn finished(&self) -> Result<(), SettleError> {
        self.done
            .send(())
            .map_err(|_| SettleError::settled(TransportError::Closed))
    }

    /// Marks the request done; its offset is committed once every request
    /// below it in its partition is done too.
    ///
    /// Recorded in the tracker here and now, not when the consumer thread
    /// gets to it: a revocation commits what the tracker holds done, and a
    /// request answered but not yet recorded would be read and answered
    /// again by the partition's next owner.
    fn ack(&self) -> Result<(), SettleError> {
        let t = &self.taken;
        self.ledger.lock().done(&t.partition, t.offset, t.epoch);
        self.finished()
    }

    /// Delivers the request again, from this consumer (Kafka cannot hand one
    /// record to another member; its offset stays uncommitted meanwhile).
    fn release(self) -> Result<(), SettleError> {
        let KafkaAck {
            taken,
            again,
            dead_letter_failed,
            ..
        } = self;
        if !dead_letter_failed {
            return again
                .send(taken)
                .map_err(|_| SettleError::settled(TransportError::Closed));
        }
        tokio::spawn(async move {
            tokio::time::sleep(DEAD_LETTER_RETRY_AFTER).await;
            let _ = again.send(taken);
        });
        Ok(())
    }

    /// Produces the reply (awaiting its delivery report), then acknowledges.
    /// A reply to an inbox topic that no longer exists has no reader left:
    /// the request is acknowledged, not retried forever.
    ///
    /// If a rebalance gave the request's partition to another member while
    /// the handler ran, the reply is not sent: the partition was committed
    /// below this unfinished request, so its new owner reads it again and
    /// answers it. Sending this reply too would answer the call twice. Once
    /// the reply is on its way, a revocation waits for it (see
    /// [`GroupContext::pre_rebalance`]).
    async fn reply(self: Box<Self>, address: &str, reply: Message) -> Result<(), SettleError> {
        let t = &self.taken;
        if !self.ledger.lock().answer(&t.partition, t.epoch) {
            tracing::debug!(
                topic = %t.partition.0,
                partition = t.partition.1,
                offset = t.offset,
                "the partition went to another member during the call; it answers instead"
            );
            return Ok(());
        }
        let mut answering = Answering {
            ack: &self,
            sent: false,
        };
        let produced = match self.inner.check_reply_to(address).await {
            Err(e) => Err(e),
            Ok(()) => self.produce_reply(address, &reply).await,
        };
        answering.sent = produced.is_ok();
        drop(answering);
        match produced {
            Ok(()) => self.finished(),
            Err(e) => Err(SettleError::unsettled(e, self)),
        }
    }

    /// Writes the request to the dead-letter topic `{topic}.dead` (value
    /// and headers kept, with `dead-deliveries`, `dead-partition` and
    /// `dead-offset`), sends `reply` (its caller's answer), and marks it
    /// done: produced both, then done, so at worst it is dead-lettered
    /// twice, never lost.
    async fn dead_letter(
        mut self: Box<Self>,
        reply: Option<(Arc<str>, Message)>,
    ) -> Result<(), SettleError> {
        let inner = &self.inner;
        let t = &self.taken;
        let dead = dead_letter_topic(&t.partition.0);
        let written = async {
            inner.ensure_topic(&dead, 1, None, false).await?;
            let mut message = Message::clone(&t.message);
            let headers = &mut message.headers;
            let deliveries = t.dead.unwrap_or_default();
            headers.insert("dead-deliveries", deliveries.to_string());
            headers.insert("dead-partition", t.partition.1.to_string());
            headers.insert("dead-offset", t.offset.to_string());
            inner
                .produce(&dead, &message)
                .await
                .map_err(transport_error)?;
            if let Some((reply_to, reply)) = reply {
                match inner.produce(&reply_to, &reply).await {
                    Err(e) if topic_is_gone(&e) => {}
                    produced => produced.map_err(transport_error)?,
                }
            }
            Ok::<_, TransportError>(())
        };
        match written.await {
            Ok(()) => {
                tracing::debug!(topic = %t.partition.0, partition = t.partition.1, offset = t.offset, %dead, "dead-lettered");
                inner.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
                self.ack()
            }
            Err(e) => {
                self.dead_letter_failed = true;
                Err(SettleError::unsettled(e, self))
            }
        }
    }

    /// Produces a reply; an inbox deleted since it was checked (its client
    /// gone) takes nothing, and that is no failure.
    async fn produce_reply(&self, address: &str, reply: &Message) -> Result<(), TransportError> {
        match self.inner.produce(address, reply).await {
            Err(e) if topic_is_gone(&e) => {
                tracing::warn!(
                    reply_to = address,
                    "the caller's inbox is gone; the reply is dropped"
                );
                Ok(())
            }
            produced => produced.map_err(transport_error),
        }
    }
}

#[async_trait]
impl Acknowledge for KafkaAck {
    async fn settle(self: Box<Self>, how: Settle) -> Result<(), SettleError> {
        match how {
            Settle::Ack => self.ack(),
            Settle::Reply { to, message } => self.reply(&to, message).await,
            Settle::Release => (*self).release(),
            Settle::DeadLetter { reply } => self.dead_letter(reply).await,
        }
    }
}

/// A reply on its way for a [`KafkaAck`]'s request. Dropped (the reply sent,
/// failed, or its task cancelled), it records the outcome and wakes a
/// revocation waiting for it.
struct Answering<'a> {
    ack: &'a KafkaAck,
    sent: bool,
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        let t = &self.ack.taken;
        self.ack
            .ledger
            .lock()
            .answered(&t.partition, t.offset, t.epoch, self.sent);
        self.ack.ledger.answered.notify_all();
    }
}

#[cfg(test)]
mod tests {
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
