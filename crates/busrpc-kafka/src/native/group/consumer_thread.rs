//! The consumer thread: polls the group continuously, hands requests over
//! as the server can take them, pauses the partitions when it cannot, and
//! tries suspects (see [`poison`](crate::native::watermark::poison)).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use busrpc_core::transport::{Demand, TransportError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message as _, Offset};

use super::committer::{commit_now, COMMIT_RETRY_AFTER};
use super::health::{Health, HEALTH_CHECK_EVERY};
use super::rebalance::{partition_list, GroupContext};
use super::{Ledger, Taken};
use crate::connection::{lock, transport_error};
use crate::consumer::Handoff;
use crate::native::watermark::{Partition, Trial, TRIAL_BATCH};
use crate::native::Counters;
use crate::record::{published_at, to_message};

/// Requests the consumer thread may hand over ahead of the server taking
/// them, whatever the server's demand.
pub(super) const HANDOVER_CAPACITY: usize = 256;

/// Requests read ahead of the server's demand before the partitions are
/// paused. librdkafka drops what it fetched for a partition when it is
/// paused, and fetches it again from its position when resumed: reading
/// ahead (and resuming with half of it still waiting) hides that round trip
/// from a saturated server even on a slow broker, and costs nothing in
/// fairness, as nobody else may read this member's partitions anyway.
pub(super) const READ_AHEAD: usize = 256;

/// How long the thread's poll waits for a record while the partitions are
/// fetched: the committer's end is seen within it.
pub(super) const POLL_WAIT: Duration = Duration::from_millis(50);

/// How long it waits while the partitions are paused, or requests wait to be
/// handed over: a freed handler slot is seen within it.
pub(super) const PAUSED_POLL_WAIT: Duration = Duration::from_millis(5);

/// How long after resuming its partitions the consumer thread resumes them
/// once more. librdkafka's `resume()` is a no-op for a partition whose pause
/// its broker thread has not applied yet, so a pause followed at once by a
/// resume would leave the partition paused for good; resuming a partition
/// that is not paused costs nothing.
pub(super) const RESUME_AGAIN_AFTER: Duration = Duration::from_millis(100);

/// How long a seek back to skipped offsets may take (see
/// `ConsumerThread::read_again`).
pub(super) const SEEK_WAIT: Duration = Duration::from_secs(5);

pub(super) struct ConsumerThread {
    /// Shared with the committer only, which ends first: the consumer is
    /// closed here, where blocking is allowed.
    pub(super) consumer: Arc<BaseConsumer<GroupContext>>,
    /// Ends once the reader and every delivery are gone.
    pub(super) committer: std::thread::JoinHandle<()>,
    pub(super) ledger: Arc<Ledger>,
    pub(super) counters: Arc<Counters>,
    pub(super) demand: Demand,
    pub(super) handover: Arc<Handoff<Result<Taken, TransportError>>>,
    /// Wakes the committer to reserve records (see [`crate::poison`]);
    /// dropped once the reader is gone, so that the committer's end, once
    /// every delivery is settled too, is not held up.
    pub(super) wake_committer: Option<std_mpsc::Sender<()>>,
    /// Taken, waiting for room in the handover channel (or, at the front,
    /// for the broker to hold a reservation for it).
    pub(super) held: VecDeque<Taken>,
    /// Suspects taken, waiting for their trial (one trial at a time per
    /// consumer: see [`Tracker::begin_trial`]).
    pub(super) suspects: HashMap<Partition, VecDeque<Taken>>,
    pub(super) max_deliveries: u32,
    /// When to try suspects again after a trial's commit failed.
    pub(super) trials_retry_at: Option<Instant>,
    pub(super) paused: bool,
    /// When to resume the partitions once more (see [`RESUME_AGAIN_AFTER`]).
    pub(super) resume_again_at: Option<Instant>,
    /// The request topic, and whether it was made again since the consumer
    /// last looked (see [`Membership::stale_metadata`]).
    pub(super) topic: String,
    pub(super) stale_metadata: Arc<AtomicBool>,
    pub(super) health: Arc<Health>,
    pub(super) next_health_check: Instant,
}

impl ConsumerThread {
    pub(super) fn run(mut self) {
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
            self.hand_over_refusal();
            #[cfg(test)]
            crate::consumer::thread::panic_if_asked(&self.topic);
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
                    let published = published_at(&record);
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
                        attempt: 1,
                        published,
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
                        let _ = self.handover.offer(Err(e), HANDOVER_CAPACITY);
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

    /// Hands the reader a refusal librdkafka reported only to the error
    /// callback (see `GroupContext::refused`), after the requests waiting.
    pub(super) fn hand_over_refusal(&mut self) {
        let context = self.consumer.context();
        // A plain load on the way of every record; the swap only then.
        if !context.was_refused.load(Ordering::Relaxed)
            || !context.was_refused.swap(false, Ordering::Acquire)
        {
            return;
        }
        let Some(refused) = lock(&context.refused).take() else {
            return;
        };
        if self.held.is_empty() {
            let _ = self.handover.offer(Err(refused), HANDOVER_CAPACITY);
        } else {
            tracing::debug!(error = %refused, "reading the group's partitions");
        }
    }

    /// While the broker is failing, asks it for the request topic's
    /// metadata now and then: an answer means it is back (a consumer with
    /// nothing to read hears nothing else from it).
    pub(super) fn check_health(&mut self) {
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
    pub(super) fn look_again(&self) {
        if !self.stale_metadata.swap(false, Ordering::Relaxed) {
            return;
        }
        self.consumer.unsubscribe();
        if let Err(e) = self.consumer.subscribe(&[&self.topic]) {
            tracing::error!(topic = %self.topic, error = %e, "subscribing again to the request topic made again failed; nothing is served");
        }
    }

    pub(super) fn hand_over_held(&mut self) {
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
            match self.handover.offer(Ok(taken), HANDOVER_CAPACITY) {
                Ok(()) => {}
                // The reader is gone: what it never got stays in flight, so
                // nothing is committed past it.
                Err(_) if self.handover.is_closed() => {
                    self.held.clear();
                    return;
                }
                Err(Ok(taken)) => {
                    self.held.push_front(taken);
                    return;
                }
                Err(Err(_)) => return,
            }
        }
    }

    /// Pauses the partitions once the server's demand and [`READ_AHEAD`]
    /// more requests wait, and resumes them once half as many do. A paused
    /// partition is still polled, so the member goes on taking part in its
    /// group however long its handlers take.
    pub(super) fn pause_or_resume(&mut self) {
        let suspects: usize = self.suspects.values().map(VecDeque::len).sum();
        let waiting = self.held.len() + suspects + self.handover.len();
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
    pub(super) fn try_suspects(&mut self) {
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
                            taken.attempt = deliveries;
                            self.held.push_back(taken);
                        }
                        break;
                    }
                    Trial::Run {
                        commit,
                        tried,
                        attempt,
                    } => {
                        match commit_now(&self.consumer, std::slice::from_ref(&commit)) {
                            Ok(()) => {
                                self.ledger.lock().landed(&commit);
                                self.counters
                                    .trials
                                    .fetch_add(tried as u64, Ordering::Relaxed);
                                tracing::debug!(topic = %partition.0, partition = partition.1, first = waiting[0], tried, note = ?commit.note, "trying suspects");
                                self.held
                                    .extend(queue.drain(..tried).map(|mut taken| {
                                        taken.attempt = attempt;
                                        taken
                                    }));
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
    pub(super) fn read_again(&self, partition: &Partition, from: i64, offset: i64) {
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
    pub(super) fn read_from(&self, partition: &Partition) {
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
    pub(super) fn resume_again(&mut self) {
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
