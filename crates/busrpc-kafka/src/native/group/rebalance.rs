//! The group's rebalances, run on the consumer thread: partitions tracked
//! from their assignment, recovered from their committed notes, committed
//! and released at their revocation.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busrpc_core::transport::TransportError;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::Notify;

use super::health::Health;
use super::{Ledger, REVOCATION_WAITS_FOR_REPLIES};
use crate::connection::{lock, refusal};
use crate::native::watermark::poison::Note;
use crate::native::watermark::Partition;
use crate::native::Counters;

/// How long reading a partition's committed offset and note, or its end,
/// may take when it is assigned.
pub(super) const RECOVERY_WAIT: Duration = Duration::from_secs(10);

/// Keeps the watermarks in step with the group's assignment. Its callbacks
/// run on the consumer thread, where blocking is allowed.
pub(crate) struct GroupContext {
    pub(super) ledger: Arc<Ledger>,
    pub(super) counters: Arc<Counters>,
    /// Told of every assignment: the first one ends [`join`].
    pub(super) joined: Arc<Notify>,
    /// Which partitions the consumer thread has paused, and which it may.
    pub(super) pauses: Mutex<Pauses>,
    /// Set when the committer should commit without waiting for a request
    /// to finish: after a failed commit, or an assignment that gave back
    /// partitions whose last commit was refused.
    pub(super) recommit: AtomicBool,
    /// Held by whoever commits: the committer thread, or a revocation. A
    /// commit computed before a revocation never lands after the
    /// revocation's own (higher) one.
    pub(super) committing: Mutex<()>,
    /// What the last revocation finished but could not commit: committed
    /// if the next assignment gives the partitions back.
    pub(super) unsaved: Mutex<Vec<(Partition, i64)>>,
    /// A refusal librdkafka reported only to the error callback (a login
    /// refused when it connects again: credentials rotated on the broker,
    /// say), which it then retries for ever: the consumer thread hands it
    /// to the reader, so that the server stops after a few in a row.
    pub(super) refused: Mutex<Option<TransportError>>,
    /// Whether `refused` holds one: read on every turn of the consumer
    /// thread, where the lock would cost more.
    pub(super) was_refused: AtomicBool,
    /// Set once this consumer has warned that its broker keeps no notes.
    pub(super) warned_no_notes: AtomicBool,
    pub(crate) health: Arc<Health>,
}

impl ClientContext for GroupContext {
    /// librdkafka's errors about its connections (all brokers down, a
    /// broker unreachable, authentication failed): the member is not ready
    /// until the broker answers again. librdkafka retries by itself.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "the Kafka consumer's connection failed");
        self.health.broker(Some(reason.to_owned()));
        // Only a refused login or authorization: a missing topic reported
        // here is made again by the server (`crate::watch_topic`).
        let refused = error
            .rdkafka_error_code()
            .and_then(|code| refusal(code, &reason));
        if let Some(refused @ TransportError::PermissionDenied(_)) = refused {
            *lock(&self.refused) = Some(refused);
            self.was_refused.store(true, Ordering::Release);
        }
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
pub(super) struct Recovered {
    pub(super) partition: Partition,
    pub(super) committed: i64,
    pub(super) note: Option<(Note, i64)>,
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
    pub(super) reading: HashSet<Partition>,
    /// Partitions paused now.
    pub(super) paused: HashSet<Partition>,
}

pub(super) fn partition_list<'a>(
    partitions: impl IntoIterator<Item = &'a Partition>,
) -> TopicPartitionList {
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
    pub(super) fn recover(
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
    pub(super) fn lose_everything(&self, consumer: &BaseConsumer<Self>) {
        self.counters
            .lost_assignments
            .fetch_add(1, Ordering::Relaxed);
        lock(&self.unsaved).clear();
        self.ledger.lock().revoke_all();
        self.unpause(consumer, None);
    }

    /// Resumes the paused partitions among `revoked` (all if `None`) and
    /// forgets them: see [`Pauses`].
    pub(super) fn unpause(
        &self,
        consumer: &BaseConsumer<Self>,
        revoked: Option<&TopicPartitionList>,
    ) {
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

    pub(super) fn revoke(&self, consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) {
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

/// Adds `offset` with `note` as its metadata to `list`.
pub(super) fn add_commit(
    list: &mut TopicPartitionList,
    partition: &Partition,
    offset: i64,
    note: &Note,
) {
    let mut element = list.add_partition(&partition.0, partition.1);
    if element.set_offset(Offset::Offset(offset)).is_ok() {
        element.set_metadata(note.encode());
    }
}
