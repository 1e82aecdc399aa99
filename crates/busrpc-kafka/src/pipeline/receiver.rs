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

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use busrpc_core::codec::Codec;
use busrpc_core::transport::{Deliveries, Delivery, TransportError};
use busrpc_core::{header, Headers, Message};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message as _, Offset};

use super::progress::{Handover, Progress, RequestAck};
use super::{PARTITION, RESULTS_TOPIC};
use crate::connection::transport_error;
use crate::consumer::thread;
use crate::consumer::Handoff;
use crate::record::{bytes_of, published_at};

/// How long the thread's polls wait.
const POLL_WAIT: Duration = Duration::from_millis(20);

/// How long a seek back to skipped records may take.
const SEEK_WAIT: Duration = Duration::from_secs(5);

/// Starts the consumer thread of a server of `topic` (`consumer` a member
/// of its busrpc group, not yet subscribed), and returns once the group has
/// taken the member in (holding the partition or standing by); fails if
/// that has not happened within `join_wait` (zero: returns at once, joining
/// in the background).
pub(super) async fn start(
    topic: &str,
    consumer: BaseConsumer<Handover>,
    progress: Arc<Progress>,
    join_wait: Duration,
) -> Result<Deliveries, TransportError> {
    consumer.subscribe(&[topic]).map_err(transport_error)?;
    let consumer = Arc::new(consumer);
    let handoff = progress.handoff.clone();
    let (thread, died) = {
        let (topic, progress) = (topic.to_owned(), progress.clone());
        let closing = handoff.clone();
        thread::spawn(
            "busrpc-pipeline",
            move || read(&topic, &consumer, &progress),
            // A thread that panicked closes its handoff: its reader then
            // says why, and its server stops with it.
            move |panicked| {
                if panicked.is_some() {
                    closing.close();
                }
            },
        )?
    };
    let reader = Reader(handoff.clone());
    let ended = died.clone();
    let stream = futures_util::stream::poll_fn(move |cx| match reader.0.take(cx.waker()) {
        Poll::Ready(None) if died.panicked() => Poll::Ready(Some(Err(died.error()))),
        taken => taken,
    });
    {
        // Created before readiness is read: an assignment after it wakes it.
        let joined = progress.joined.notified();
        if !join_wait.is_zero()
            && !progress.readiness.get().is_ready()
            && tokio::time::timeout(join_wait, joined).await.is_err()
        {
            // The thread ends once its handoff is closed.
            handoff.close();
            return Err(crate::consumer::not_joined(topic, join_wait));
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
            if !matches!(waited, Ok(Ok(()))) || ended.panicked() {
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
        #[cfg(test)]
        thread::panic_if_asked(topic);
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
            if progress.handoff.wait_for_room(1, POLL_WAIT) {
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
        let published = published_at(&record);
        let delivery = RequestAck::deliver(offset, epoch, message, published, progress.me());
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

/// The server's end of the handoff: dropping it stops the thread.
struct Reader(Arc<Handoff<Result<Delivery, TransportError>>>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.close();
    }
}
