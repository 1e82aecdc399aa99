//! A pipeline server's progress through its one partition: the offsets in
//! flight and skipped, the commits below them, the partition's assignment
//! and revocation, the handoff of requests to the server and their
//! settlement.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use busrpc_core::transport::{
    kit, Acknowledge, Delivery, Readiness, ReadinessSignal, Settle, SettleError, Transport,
    TransportError,
};
use busrpc_core::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{PipelineTransport, PARTITION};
use crate::connection::lock;
use crate::consumer::{Handoff, ReadOffsets};

/// How long a revocation waits for the requests in hand to be answered
/// before it commits and lets the next owner read. Longer holds the
/// rebalance up for every member; shorter lets the next owner run again
/// what is still running here.
pub(super) const REVOCATION_WAITS_FOR_REQUESTS: Duration = Duration::from_secs(10);

/// How long reading or writing the committed offset may take.
pub(super) const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// The offsets of the partition under the current assignment.
#[derive(Default)]
pub(super) struct Offsets {
    /// Counts assignments; `None` while the partition is not assigned here.
    pub(super) epoch: Option<u64>,
    pub(super) assignments: u64,
    /// A revocation is waiting: nothing is handed out again.
    pub(super) revoking: bool,
    /// What has been read and taken, what a fetch skipped.
    pub(super) read: ReadOffsets,
    /// The last offset committed (or handed to the commit call).
    pub(super) committed: i64,
    /// Deliveries of this assignment not settled or dropped yet.
    pub(super) live: usize,
}

impl Offsets {
    /// Committing offset N says everything below it is done, so the commit
    /// is the lowest offset still in flight (or skipped), or one past the
    /// highest taken.
    pub(super) fn committable(&self) -> i64 {
        self.read.committable().unwrap_or(self.committed)
    }
}

/// A server's progress through its partition, shared by the consumer
/// thread, its callbacks and the deliveries.
pub(super) struct Progress {
    pub(super) topic: String,
    pub(super) state: Mutex<Offsets>,
    pub(super) settled: Condvar,
    pub(super) handoff: Arc<Handoff<Result<Delivery, TransportError>>>,
    /// The group whose commits a server reads and writes, and a consumer of
    /// it that never joins: commits from a non-member are what the Python
    /// receivers make.
    pub(super) committer: BaseConsumer,
    /// Ready once the group has taken the member in, holding the partition
    /// or standing by; not while a rebalance moves it.
    pub(super) readiness: ReadinessSignal,
    /// Told of every assignment: the first one ends the join of [`start`].
    pub(super) joined: tokio::sync::Notify,
    /// What replies are sent through: they travel in the dialect too.
    pub(super) replies: PipelineTransport,
    pub(super) this: std::sync::Weak<Progress>,
}

impl Progress {
    pub(super) fn new(
        topic: &str,
        committer: BaseConsumer,
        replies: PipelineTransport,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| Progress {
            topic: topic.to_owned(),
            state: Mutex::default(),
            settled: Condvar::new(),
            handoff: Arc::default(),
            committer,
            readiness: ReadinessSignal::new(Readiness::NotReady(
                "joining the consumer group".into(),
            )),
            joined: tokio::sync::Notify::new(),
            replies,
            this: this.clone(),
        })
    }

    pub(super) fn me(&self) -> Arc<Progress> {
        self.this.upgrade().expect("progress is alive while used")
    }

    pub(super) fn state(&self) -> MutexGuard<'_, Offsets> {
        lock(&self.state)
    }

    pub(super) fn assigned(&self) -> Option<u64> {
        self.state().epoch
    }

    /// Records `offset` taken under the current assignment, whose epoch it
    /// returns with the offset to read again from, if any (see
    /// [`ReadOffsets::take`]); `None` when it is not to be taken: the
    /// partition is not assigned here (a record fetched before a
    /// revocation), or the record was taken before (read again after a seek
    /// back).
    pub(super) fn taken(&self, offset: i64) -> Option<(u64, Option<i64>)> {
        let mut state = self.state();
        let epoch = state.epoch.filter(|_| !state.revoking)?;
        let seek = state.read.take(offset)?;
        Some((epoch, seek))
    }

    pub(super) fn done(&self, offset: i64, epoch: u64) {
        let mut state = self.state();
        if state.epoch == Some(epoch) {
            state.read.done(offset);
        }
    }

    /// Commits the committable offset if it moved.
    pub(super) fn commit_moved(&self, mode: CommitMode) {
        let offset = {
            let mut state = self.state();
            let offset = state.committable();
            if state.epoch.is_none() || offset <= state.committed {
                return;
            }
            state.committed = offset;
            offset
        };
        if let Err(e) = self.commit(offset, mode) {
            tracing::warn!(topic = %self.topic, offset, error = %e, "committing failed; the next commit carries it");
            let mut state = self.state();
            state.committed = state.committed.min(offset - 1);
        }
    }

    pub(super) fn commit(&self, offset: i64, mode: CommitMode) -> Result<(), KafkaError> {
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(&self.topic, PARTITION, Offset::Offset(offset))?;
        self.committer.commit(&offsets, mode)
    }

    /// Where the Python receivers' group stands on the partition: its
    /// committed offset, or the beginning when it has none (as the
    /// original's `auto_offset_reset='earliest'`).
    pub(super) fn resume_from(&self) -> Offset {
        let mut wanted = TopicPartitionList::new();
        if wanted
            .add_partition_offset(&self.topic, PARTITION, Offset::Invalid)
            .is_err()
        {
            return Offset::Beginning;
        }
        match self.committer.committed_offsets(wanted, COMMIT_WAIT) {
            Ok(committed) => match committed
                .find_partition(&self.topic, PARTITION)
                .map(|p| p.offset())
            {
                Some(Offset::Offset(offset)) if offset >= 0 => Offset::Offset(offset),
                _ => Offset::Beginning,
            },
            Err(e) => {
                tracing::warn!(topic = %self.topic, error = %e, "reading the committed offset failed; reading from the beginning");
                Offset::Beginning
            }
        }
    }

    pub(super) fn assign(&self, from: Offset) {
        let mut state = self.state();
        state.assignments += 1;
        let start = match from {
            Offset::Offset(offset) => offset,
            _ => 0,
        };
        *state = Offsets {
            epoch: Some(state.assignments),
            assignments: state.assignments,
            committed: start,
            ..Offsets::default()
        };
        state.read.start_at(start);
    }

    /// Takes back what the server has not started, waits (a while) for what
    /// it has, and commits: the next owner starts after everything answered.
    pub(super) fn revoke(&self) {
        self.state().revoking = true;
        self.handoff.clear();
        if !self.wait_settled(Some(REVOCATION_WAITS_FOR_REQUESTS)) {
            tracing::warn!(topic = %self.topic, wait = ?REVOCATION_WAITS_FOR_REQUESTS, "requests still running at a revocation; the next owner may run them again");
        }
        self.commit_moved(CommitMode::Sync);
        let mut state = self.state();
        state.epoch = None;
        state.revoking = false;
        // What still runs is the next owner's to answer; a close waiting
        // for it waits no longer.
        state.live = 0;
        self.settled.notify_all();
    }

    /// Waits until no delivery of this assignment is unsettled, for at
    /// most `within`; whether none is.
    pub(super) fn wait_settled(&self, within: Option<Duration>) -> bool {
        let give_up = within.map(|within| Instant::now() + within);
        let mut state = self.state();
        while state.live > 0 {
            let left = match give_up {
                None => Duration::from_secs(3600),
                Some(at) => at.saturating_duration_since(Instant::now()),
            };
            if left.is_zero() {
                return false;
            }
            state = self
                .settled
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// The member's context: it assigns the partition at the Python receivers'
/// committed offset, and revokes it only once the requests in hand are done.
pub(super) struct Handover(pub(super) Arc<Progress>);

impl ClientContext for Handover {}

impl ConsumerContext for Handover {
    /// Eager assignments only (the consumer is configured so): the
    /// partition changes hands whole, after its old owner has committed.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        assignment: &mut TopicPartitionList,
    ) {
        let progress = &self.0;
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut mine = TopicPartitionList::new();
                let ours = assignment
                    .find_partition(&progress.topic, PARTITION)
                    .is_some();
                if ours {
                    let from = progress.resume_from();
                    tracing::info!(topic = %progress.topic, ?from, "serving the partition");
                    progress.assign(from);
                    let _ = mine.add_partition_offset(&progress.topic, PARTITION, from);
                }
                let assigned = consumer.assign(&mine);
                progress.readiness.ready();
                progress.joined.notify_waiters();
                assigned
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                progress
                    .readiness
                    .not_ready("the consumer group is rebalancing");
                if progress.assigned().is_some() {
                    progress.revoke();
                    tracing::info!(topic = %progress.topic, "the partition goes to another server");
                }
                consumer.unassign()
            }
            other => {
                tracing::warn!(error = %RDKafkaErrorCode::from(other), "rebalancing failed");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::warn!(topic = %progress.topic, error = %e, "taking the assignment failed");
        }
    }
}

/// Settles one request: done when acknowledged; handed out again when
/// released (or read again by the next owner, if the partition has moved).
pub(super) struct RequestAck {
    pub(super) offset: i64,
    pub(super) epoch: u64,
    pub(super) message: Arc<Message>,
    /// The record's timestamp, kept for a release's delivery.
    pub(super) published: Option<std::time::SystemTime>,
    pub(super) progress: Arc<Progress>,
}

impl RequestAck {
    pub(super) fn deliver(
        offset: i64,
        epoch: u64,
        message: Arc<Message>,
        published: Option<std::time::SystemTime>,
        progress: Arc<Progress>,
    ) -> Delivery {
        progress.state().live += 1;
        let ack = RequestAck {
            offset,
            epoch,
            message: message.clone(),
            published,
            progress,
        };
        let delivery = Delivery::shared(message, ack);
        match published {
            Some(at) => delivery.with_published(at),
            None => delivery,
        }
    }
}

impl RequestAck {
    pub(super) fn done(&self) {
        self.progress.done(self.offset, self.epoch);
    }

    /// Still in flight, so never committed past.
    pub(super) fn release(&self) {
        let current = {
            let state = self.progress.state();
            state.epoch == Some(self.epoch) && !state.revoking
        };
        if current {
            let again = RequestAck::deliver(
                self.offset,
                self.epoch,
                self.message.clone(),
                self.published,
                self.progress.clone(),
            );
            self.progress.handoff.push(Ok(again), true);
        }
    }

    /// Publishes `reply` through the dialect, then marks the request done
    /// (see [`kit::reply_then_ack`]). A reply with a null id (a request too
    /// large to read) is given its request's key, so that its original
    /// caller, who matches replies by key, hears of it.
    pub(super) async fn reply(
        self: Box<Self>,
        to: Arc<str>,
        mut reply: Message,
    ) -> Result<(), SettleError> {
        if super::wire::may_have_null_id(&reply.payload) {
            if let Some(key) = super::wire::request_key(&self.message.payload) {
                reply.headers.insert(super::wire::REQUEST_KEY, key);
            }
        }
        let replies = self.progress.replies.clone();
        kit::reply_then_ack(self, async move { replies.publish(&to, reply).await }).await
    }
}

/// The original library has no dead letters: a request the dialect's
/// servers are told to dead-letter (they never are: the dialect counts no
/// deliveries) is answered, if its caller is owed an answer, and done.
#[async_trait]
impl Acknowledge for RequestAck {
    async fn settle(self: Box<Self>, how: Settle) -> Result<(), SettleError> {
        match how {
            Settle::Ack | Settle::DeadLetter { reply: None } => {
                self.done();
                Ok(())
            }
            Settle::Reply { to, message }
            | Settle::DeadLetter {
                reply: Some((to, message)),
            } => self.reply(to, message).await,
            Settle::Release => {
                self.release();
                Ok(())
            }
        }
    }
}

impl Drop for RequestAck {
    fn drop(&mut self) {
        let mut state = self.progress.state();
        if state.epoch == Some(self.epoch) && state.live > 0 {
            state.live -= 1;
            if state.live == 0 {
                self.progress.settled.notify_all();
            }
        }
    }
}
