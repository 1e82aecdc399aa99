//! A server's reading of `S_method_requests` in the pipeline dialect.
//!
//! The topic has one partition, and the original's receivers read it by
//! `assign()`, as no group's member: two of them both answer every request.
//! busrpc servers of a service join a consumer group of their own
//! (`busrpc.pipeline.S_method_requests`), in which one member holds the
//! partition and the others stand by, so a rolling deploy or a crash moves
//! the partition instead of doubling the work. Where they start and what
//! they commit is the Python receivers' group's (`pipeline_group`), through
//! a second consumer that never joins: a busrpc server resumes where a
//! Python receiver stopped, and the other way round.
//!
//! The consumer lives on a thread of its own, as the busrpc dialect's does
//! (see `group.rs`): librdkafka runs rebalances from a poll, and a
//! revocation waits for the requests in hand before it commits, which on
//! the async runtime would stall the very handlers it waits for.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use busrpc_core::codec::Codec;
use busrpc_core::transport::{
    kit, Acknowledge, Deliveries, Delivery, Readiness, ReadinessSignal, Settle, SettleError,
    Transport, TransportError,
};
use busrpc_core::{header, Headers, Message};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};

use super::{PipelineTransport, PARTITION, RESULTS_TOPIC};
use crate::{bytes_of, lock, transport_error};

/// How long the thread's polls wait.
const POLL_WAIT: Duration = Duration::from_millis(20);

/// How long a revocation waits for the requests in hand to be answered
/// before it commits and lets the next owner read. Longer holds the
/// rebalance up for every member; shorter lets the next owner run again
/// what is still running here.
const REVOCATION_WAITS_FOR_REQUESTS: Duration = Duration::from_secs(10);

/// How long a seek back to skipped records may take.
const SEEK_WAIT: Duration = Duration::from_secs(5);

/// Offsets missing between two records read are remembered, and kept from
/// being committed past, only up to this many at a time: a larger hole is
/// what it almost surely is on Kafka, offsets that hold no request
/// (transaction markers, compaction, retention), as in `watermark.rs`.
const MAX_GAP: i64 = 10_000;

/// How long reading or writing the committed offset may take.
const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// Starts the consumer thread of a server of `topic` (`consumer` a member
/// of its busrpc group, not yet subscribed), and returns once the group has
/// taken the member in (holding the partition or standing by), or after
/// `join_wait`, joining on in the background.
pub(super) async fn start(
    topic: &str,
    consumer: BaseConsumer<Handover>,
    progress: Arc<Progress>,
    join_wait: Duration,
) -> Result<Deliveries, TransportError> {
    consumer.subscribe(&[topic]).map_err(transport_error)?;
    let consumer = Arc::new(consumer);
    let handoff = progress.handoff.clone();
    let thread = {
        let (topic, progress) = (topic.to_owned(), progress.clone());
        std::thread::Builder::new()
            .name("busrpc-pipeline".into())
            .spawn(move || read(&topic, &consumer, &progress))
            .map_err(|e| TransportError::Unavailable(Box::new(e)))?
    };
    let reader = Reader(handoff.clone());
    let stream = futures_util::stream::poll_fn(move |cx| reader.0.pop(cx.waker()));
    {
        // Created before readiness is read: an assignment after it wakes it.
        let joined = progress.joined.notified();
        if !join_wait.is_zero()
            && !progress.readiness.get().is_ready()
            && tokio::time::timeout(join_wait, joined).await.is_err()
        {
            tracing::warn!(
                topic,
                ?join_wait,
                "the group has not taken this server in yet; it goes on joining while serving"
            );
        }
    }
    let readiness = progress.readiness.clone();
    Ok(Deliveries::new(stream)
        .with_readiness(readiness)
        .on_close(async move {
            // The requests in hand first: their commits are the last ones.
            let waited = tokio::task::spawn_blocking(move || {
                progress.wait_settled(None);
                handoff.close();
                thread.join()
            })
            .await;
            if !matches!(waited, Ok(Ok(()))) {
                tracing::warn!("the pipeline consumer thread ended without its last commit");
            }
        }))
}

/// The consumer thread: serves rebalances and commits, and reads requests
/// while the server has room for one.
fn read(topic: &str, consumer: &Arc<BaseConsumer<Handover>>, progress: &Progress) {
    let mut queue = None;
    let mut split_for = None;
    while !progress.handoff.is_closed() {
        // Rebalances and commit results; records of the partition too, until
        // it is split off. Without the partition there is nothing else to
        // wait for.
        let wait = if queue.is_some() {
            Duration::ZERO
        } else {
            POLL_WAIT
        };
        if let Some(record) = consumer.poll(wait) {
            take(record, consumer, topic, progress);
        }
        // An assignment ends the split of the one before: split again.
        let epoch = progress.assigned();
        if epoch != split_for {
            queue = epoch.and_then(|_| consumer.split_partition_queue(topic, PARTITION));
            split_for = epoch;
        }
        if let Some(queue) = &queue {
            if progress.handoff.wait_for_room(POLL_WAIT) {
                if let Some(record) = queue.poll(POLL_WAIT) {
                    take(record, consumer, topic, progress);
                }
            }
        }
        progress.commit_moved(CommitMode::Async);
        progress.committer.poll(Duration::ZERO);
    }
    progress.commit_moved(CommitMode::Sync);
    // Leaving the group (in the drop) revokes the partition, so a standby
    // takes it at once rather than after the session timeout.
    drop(queue);
}

/// Hands a record over, or counts it done at once: a record with a key is
/// skipped, as the original receiver skips it. A record that shows a fetch
/// skipped some sends the consumer back to read them.
fn take(
    record: Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>,
    consumer: &BaseConsumer<Handover>,
    topic: &str,
    progress: &Progress,
) {
    let record = match record {
        Ok(record) => record,
        Err(KafkaError::PartitionEOF(_)) => return,
        Err(e) => {
            progress.handoff.push(Err(transport_error(e)), false);
            return;
        }
    };
    if record.partition() != PARTITION {
        return;
    }
    let offset = record.offset();
    let Some((epoch, seek)) = progress.taken(offset) else {
        return;
    };
    if record.key().is_some() {
        progress.done(offset, epoch);
    } else {
        let message = Arc::new(Message {
            payload: bytes_of(record.payload().unwrap_or_default()),
            headers: Headers::new()
                .with(header::CONTENT_TYPE, Codec::MessagePack.content_type())
                .with(header::REPLY_TO, RESULTS_TOPIC),
        });
        let delivery = RequestAck::deliver(offset, epoch, message, progress.me());
        progress.handoff.push(Ok(delivery), false);
    }
    if let Some(gap) = seek {
        tracing::debug!(
            topic,
            gap,
            "a fetch skipped records; reading again from the first"
        );
        if let Err(e) = consumer.seek(topic, PARTITION, Offset::Offset(gap), SEEK_WAIT) {
            tracing::warn!(topic, gap, error = %e, "seeking back to skipped records failed; they stay uncommitted for the next server");
        }
    }
}

/// Where the consumer thread leaves requests for the server: one at a
/// time, so that what it holds it works on, and a revocation can take back
/// what the server has not started.
#[derive(Default)]
pub(super) struct Handoff(Mutex<HandoffState>, Condvar);

#[derive(Default)]
struct HandoffState {
    items: VecDeque<Result<Delivery, TransportError>>,
    waker: Option<Waker>,
    closed: bool,
}

impl Handoff {
    fn lock(&self) -> MutexGuard<'_, HandoffState> {
        lock(&self.0)
    }

    /// Waits (at most `within`) until the server has taken what it was
    /// handed; whether it has.
    fn wait_for_room(&self, within: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .1
            .wait_timeout_while(state, within, |state| {
                !state.items.is_empty() && !state.closed
            })
            .unwrap_or_else(|e| e.into_inner());
        state.items.is_empty() && !state.closed
    }

    /// The next item for the server, or, with none, whether there will be.
    fn pop(&self, waker: &Waker) -> Poll<Option<Result<Delivery, TransportError>>> {
        let mut state = self.lock();
        match state.items.pop_front() {
            Some(item) => {
                self.1.notify_all();
                Poll::Ready(Some(item))
            }
            None if state.closed => Poll::Ready(None),
            None => {
                state.waker = Some(waker.clone());
                Poll::Pending
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn push(&self, item: Result<Delivery, TransportError>, front: bool) {
        let waker = {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            if front {
                state.items.push_front(item);
            } else {
                state.items.push_back(item);
            }
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The requests not handed to the server, dropped unsettled.
    fn clear(&self) {
        let items = std::mem::take(&mut self.lock().items);
        self.1.notify_all();
        drop(items);
    }

    fn close(&self) {
        let (items, waker) = {
            let mut state = self.lock();
            state.closed = true;
            self.1.notify_all();
            (std::mem::take(&mut state.items), state.waker.take())
        };
        drop(items);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The server's end of the handoff: dropping it stops the thread.
struct Reader(Arc<Handoff>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The offsets of the partition under the current assignment.
#[derive(Default)]
struct Offsets {
    /// Counts assignments; `None` while the partition is not assigned here.
    epoch: Option<u64>,
    assignments: u64,
    /// A revocation is waiting: nothing is handed out again.
    revoking: bool,
    in_flight: BTreeSet<i64>,
    /// Offsets skipped between records read (Tansu 0.6.0's fetches can skip
    /// records): not committed past until read, or until reading again
    /// from the first of them shows they hold none.
    gaps: BTreeSet<i64>,
    /// The gap the consumer was sent back to read: the next record read
    /// tells whether the offsets below it hold records.
    sought: Option<i64>,
    /// One past the highest offset taken.
    next: i64,
    /// The last offset committed (or handed to the commit call).
    committed: i64,
    /// Deliveries of this assignment not settled or dropped yet.
    live: usize,
}

impl Offsets {
    /// Committing offset N says everything below it is done, so the commit
    /// is the lowest offset still in flight, or one past the highest taken.
    fn committable(&self) -> i64 {
        let lowest = |set: &BTreeSet<i64>| set.first().copied().unwrap_or(self.next);
        lowest(&self.in_flight).min(lowest(&self.gaps))
    }

    /// Records `offset` read: whether to take it (it was not taken before
    /// under this assignment), and where to read again from if it shows
    /// that a fetch skipped records.
    fn read(&mut self, offset: i64) -> (bool, Option<i64>) {
        if self.sought.take().is_some() {
            // The first record after going back: the gaps below it hold
            // no record.
            self.gaps = self.gaps.split_off(&offset);
        }
        if self.gaps.remove(&offset) {
            self.in_flight.insert(offset);
            return (true, None);
        }
        if offset < self.next {
            return (false, None);
        }
        let mut seek = None;
        if offset > self.next && offset - self.next <= MAX_GAP {
            self.gaps.extend(self.next..offset);
            seek = self.gaps.first().copied();
            self.sought = seek;
        }
        self.in_flight.insert(offset);
        self.next = offset + 1;
        (true, seek)
    }
}

/// A server's progress through its partition, shared by the consumer
/// thread, its callbacks and the deliveries.
pub(super) struct Progress {
    topic: String,
    state: Mutex<Offsets>,
    settled: Condvar,
    handoff: Arc<Handoff>,
    /// The group whose commits a server reads and writes, and a consumer of
    /// it that never joins: commits from a non-member are what the Python
    /// receivers make.
    committer: BaseConsumer,
    /// Ready once the group has taken the member in, holding the partition
    /// or standing by; not while a rebalance moves it.
    readiness: ReadinessSignal,
    /// Told of every assignment: the first one ends the join of [`start`].
    joined: tokio::sync::Notify,
    /// What replies are sent through: they travel in the dialect too.
    replies: PipelineTransport,
    this: std::sync::Weak<Progress>,
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

    fn me(&self) -> Arc<Progress> {
        self.this.upgrade().expect("progress is alive while used")
    }

    fn state(&self) -> MutexGuard<'_, Offsets> {
        lock(&self.state)
    }

    fn assigned(&self) -> Option<u64> {
        self.state().epoch
    }

    /// Records `offset` taken under the current assignment, whose epoch it
    /// returns with the offset to read again from, if any (see
    /// [`Offsets::read`]); `None` when it is not to be taken: the partition
    /// is not assigned here (a record fetched before a revocation), or the
    /// record was taken before (read again after a seek back).
    fn taken(&self, offset: i64) -> Option<(u64, Option<i64>)> {
        let mut state = self.state();
        let epoch = state.epoch.filter(|_| !state.revoking)?;
        let (take, seek) = state.read(offset);
        take.then_some((epoch, seek))
    }

    fn done(&self, offset: i64, epoch: u64) {
        let mut state = self.state();
        if state.epoch == Some(epoch) {
            state.in_flight.remove(&offset);
        }
    }

    /// Commits the committable offset if it moved.
    fn commit_moved(&self, mode: CommitMode) {
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

    fn commit(&self, offset: i64, mode: CommitMode) -> Result<(), KafkaError> {
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(&self.topic, PARTITION, Offset::Offset(offset))?;
        self.committer.commit(&offsets, mode)
    }

    /// Where the Python receivers' group stands on the partition: its
    /// committed offset, or the beginning when it has none (as the
    /// original's `auto_offset_reset='earliest'`).
    fn resume_from(&self) -> Offset {
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

    fn assign(&self, from: Offset) {
        let mut state = self.state();
        state.assignments += 1;
        let start = match from {
            Offset::Offset(offset) => offset,
            _ => 0,
        };
        *state = Offsets {
            epoch: Some(state.assignments),
            assignments: state.assignments,
            next: start,
            committed: start,
            ..Offsets::default()
        };
    }

    /// Takes back what the server has not started, waits (a while) for what
    /// it has, and commits: the next owner starts after everything answered.
    fn revoke(&self) {
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
    fn wait_settled(&self, within: Option<Duration>) -> bool {
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
struct RequestAck {
    offset: i64,
    epoch: u64,
    message: Arc<Message>,
    progress: Arc<Progress>,
}

impl RequestAck {
    fn deliver(
        offset: i64,
        epoch: u64,
        message: Arc<Message>,
        progress: Arc<Progress>,
    ) -> Delivery {
        progress.state().live += 1;
        let ack = RequestAck {
            offset,
            epoch,
            message: message.clone(),
            progress,
        };
        Delivery::shared(message, ack)
    }
}

impl RequestAck {
    fn done(&self) {
        self.progress.done(self.offset, self.epoch);
    }

    /// Still in flight, so never committed past.
    fn release(&self) {
        let current = {
            let state = self.progress.state();
            state.epoch == Some(self.epoch) && !state.revoking
        };
        if current {
            let again = RequestAck::deliver(
                self.offset,
                self.epoch,
                self.message.clone(),
                self.progress.clone(),
            );
            self.progress.handoff.push(Ok(again), true);
        }
    }

    /// Publishes `reply` through the dialect, then marks the request done
    /// (see [`kit::reply_then_ack`]). A reply with a null id (a request too
    /// large to read) is given its request's key, so that its original
    /// caller, who matches replies by key, hears of it.
    async fn reply(self: Box<Self>, to: Arc<str>, mut reply: Message) -> Result<(), SettleError> {
        if super::may_have_null_id(&reply.payload) {
            if let Some(key) = super::request_key(&self.message.payload) {
                reply.headers.insert(super::REQUEST_KEY, key);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_never_pass_a_request_in_flight() {
        let mut offsets = Offsets::default();
        for offset in 0..3 {
            assert_eq!(offsets.read(offset), (true, None));
        }
        offsets.in_flight.remove(&1);
        assert_eq!(offsets.committable(), 0, "0 is still in flight");
        offsets.in_flight.remove(&0);
        assert_eq!(offsets.committable(), 2);
        offsets.in_flight.remove(&2);
        assert_eq!(offsets.committable(), 3);
    }

    /// Seen on Tansu 0.6.0: assigned at 66, its fetch began at 75, and the
    /// calls of 66 to 74 were never answered.
    #[test]
    fn records_a_fetch_skipped_are_read_again_and_never_committed_past() {
        let mut offsets = Offsets {
            next: 66,
            committed: 66,
            ..Offsets::default()
        };
        assert_eq!(offsets.read(75), (true, Some(66)), "go back for 66..75");
        offsets.in_flight.remove(&75);
        assert_eq!(offsets.committable(), 66);
        for offset in 66..75 {
            assert_eq!(offsets.read(offset), (true, None), "{offset} taken");
        }
        assert_eq!(offsets.read(75), (false, None), "75 was taken before");
        assert_eq!(offsets.committable(), 66, "66..75 are in flight");
        for offset in 66..75 {
            offsets.in_flight.remove(&offset);
        }
        assert_eq!(offsets.committable(), 76);
    }

    #[test]
    fn offsets_that_hold_no_record_are_committed_past_once_read_again() {
        let mut offsets = Offsets::default();
        assert_eq!(offsets.read(0), (true, None));
        assert_eq!(offsets.read(5), (true, Some(1)));
        // Read again from 1: the first record is 5 again, so 1..5 hold none.
        assert_eq!(offsets.read(5), (false, None));
        offsets.in_flight.clear();
        assert_eq!(offsets.committable(), 6);
        // A hole larger than MAX_GAP is taken for what it is at once.
        assert_eq!(offsets.read(6 + MAX_GAP + 1), (true, None));
    }
}
