//! A Kafka ping-pong with no busrpc in it: the baseline that the benches and
//! `busrpc bench` compare busrpc calls against (the `raw` feature), with the
//! same librdkafka settings ([`LIBRDKAFKA_DEFAULTS`](crate::LIBRDKAFKA_DEFAULTS)
//! plus the URL's).
//!
//! It does the broker work a correct request/reply needs, as busrpc does:
//! produce a request -> a responder consumes it as a member of a consumer
//! group, with automatic commits off -> produces the reply to the caller's
//! topic and, once the broker has it, commits the request's offset (a
//! committer thread commits synchronously, what finished during one commit
//! going into the next, as busrpc's does) -> the caller consumes its reply
//! topic (by `assign()`) and hands each reply to its waiting ping by
//! correlation tag.
//!
//! The responder commits the highest offset that finished in each
//! partition, where busrpc commits only below the first unfinished one: as
//! much broker work, less bookkeeping, so the ratio leans against busrpc.

use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use busrpc_bench::ping::{Baseline, Correlator, PingError, CORRELATION};
use busrpc_core::TransportError;
use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::task::JoinHandle;

use crate::config::KafkaConfig;
use crate::connection::{base_config, transport_error};
use crate::mock::MockBrokers;
use crate::record;

/// A running raw ping-pong on one Kafka cluster.
pub struct PingPong {
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    lister: Arc<BaseConsumer>,
    prefix: String,
    requests: String,
    replies: String,
    correlator: Arc<Correlator>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
    // Kept alive for the clients above; a mock cluster cannot delete topics.
    mock: Option<Arc<MockBrokers>>,
}

fn header<'a>(message: &'a impl Message, name: &str) -> Option<&'a [u8]> {
    record::record_headers(message)
        .find(|h| h.key == name)?
        .value
}

/// Commits, synchronously and in a thread of its own, the offsets after the
/// requests that finished, per partition; what finishes during one commit
/// goes into the next, and a failed commit (during a rebalance, say) is made
/// again 200 ms later, as busrpc's committer does. Ends when every sender is
/// gone, after a last try.
fn commit_finished(consumer: &StreamConsumer, topic: &str, finished: &mpsc::Receiver<(i32, i64)>) {
    let mut pending: HashMap<i32, i64> = HashMap::new();
    // Replies finish out of order: an offset at or below one committed
    // already is not committed again, which would move the group back.
    let mut committed: HashMap<i32, i64> = HashMap::new();
    let mut open = true;
    while open || !pending.is_empty() {
        let first = if !open {
            None
        } else if pending.is_empty() {
            match finished.recv() {
                Ok(done) => Some(done),
                Err(_) => break,
            }
        } else {
            match finished.recv_timeout(Duration::from_millis(200)) {
                Ok(done) => Some(done),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    open = false;
                    None
                }
            }
        };
        for (partition, offset) in first.into_iter().chain(finished.try_iter()) {
            if committed.get(&partition).is_some_and(|done| *done > offset) {
                continue;
            }
            let next = pending.entry(partition).or_insert(offset + 1);
            *next = (*next).max(offset + 1);
        }
        if pending.is_empty() {
            continue;
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in &pending {
            let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
        }
        match consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => committed.extend(pending.drain()),
            Err(e) if open => {
                tracing::debug!(error = %e, "a raw commit failed; made again shortly")
            }
            Err(e) => {
                tracing::debug!(error = %e, "the last raw commit failed");
                return;
            }
        }
    }
}

impl PingPong {
    /// Starts a responder and a reply reader on the cluster a busrpc URL
    /// names (`kafka://…` or `kafka-mock://…`), on topics under its prefix.
    pub async fn start(url: &str) -> Result<Self, TransportError> {
        let config = KafkaConfig::from_url(url)?;
        let (bootstrap, mock) = config.brokers.resolve()?;
        // busrpc's librdkafka defaults and the URL's options, as busrpc gets them.
        let base = || -> ClientConfig { base_config(&config, &bootstrap) };
        let prefix = config.prefix.clone();
        let requests = format!("{prefix}.raw-requests");
        let replies = format!("{prefix}.raw-replies");
        let admin: AdminClient<DefaultClientContext> = base().create().map_err(transport_error)?;
        match &mock {
            Some(mock) => {
                mock.create_topic(&requests, config.partitions)?;
                mock.create_topic(&replies, 1)?;
            }
            None => {
                let topics = [
                    NewTopic::new(
                        &requests,
                        config.partitions,
                        TopicReplication::Fixed(config.replication),
                    ),
                    NewTopic::new(&replies, 1, TopicReplication::Fixed(config.replication)),
                ];
                admin
                    .create_topics(
                        &topics,
                        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
                    )
                    .await
                    .map_err(transport_error)?;
            }
        }
        let producer: FutureProducer = base().create().map_err(transport_error)?;
        let responder: Arc<StreamConsumer> = Arc::new(
            base()
                .set("group.id", format!("{prefix}.raw"))
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .create()
                .map_err(transport_error)?,
        );
        responder.subscribe(&[&requests]).map_err(transport_error)?;
        let (finished, committing) = mpsc::channel();
        let committer = (responder.clone(), requests.clone(), mock.clone());
        let committer = std::thread::Builder::new()
            .name("raw-committer".into())
            .spawn(move || {
                // Consumer, then cluster: a tuple drops in that order.
                let (consumer, topic, mock) = committer;
                commit_finished(&consumer, &topic, &committing);
                drop(consumer);
                drop(mock);
            })
            .map_err(|e| TransportError::Unavailable(Box::new(e)))?;
        let reply_producer = producer.clone();
        // The tasks keep a mock cluster alive until their consumers have closed.
        let (mock_for_responder, mock_for_reader) = (mock.clone(), mock.clone());
        let respond = tokio::spawn(async move {
            let held = (responder, mock_for_responder);
            loop {
                let Ok(request) = held.0.recv().await else {
                    continue;
                };
                let (Some(to), Some(tag)) =
                    (header(&request, "reply-to"), header(&request, CORRELATION))
                else {
                    continue;
                };
                let (to, tag) = (String::from_utf8_lossy(to).into_owned(), tag.to_vec());
                let payload = request.payload().unwrap_or_default().to_vec();
                let (partition, offset) = (request.partition(), request.offset());
                let (producer, finished) = (reply_producer.clone(), finished.clone());
                // Replies go out concurrently, as busrpc's server's do.
                tokio::spawn(async move {
                    let headers = OwnedHeaders::new().insert(Header {
                        key: CORRELATION,
                        value: Some(&tag),
                    });
                    let record = FutureRecord::<(), [u8]>::to(&to)
                        .payload(&payload)
                        .headers(headers);
                    if producer.send(record, Timeout::Never).await.is_ok() {
                        let _ = finished.send((partition, offset));
                    }
                });
            }
        });
        let inbox: StreamConsumer = base()
            .set("group.id", format!("{prefix}.raw-inbox"))
            .create()
            .map_err(transport_error)?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&replies, 0, Offset::Beginning)
            .map_err(transport_error)?;
        inbox.assign(&assignment).map_err(transport_error)?;
        let correlator = Arc::new(Correlator::default());
        let table = correlator.clone();
        let read = tokio::spawn(async move {
            let held = (inbox, mock_for_reader);
            loop {
                let Ok(reply) = held.0.recv().await else {
                    continue;
                };
                if let Some(tag) = header(&reply, CORRELATION) {
                    let payload = Bytes::copy_from_slice(reply.payload().unwrap_or_default());
                    table.deliver_tagged(tag, payload);
                }
            }
        });
        let lister: Arc<BaseConsumer> = Arc::new(base().create().map_err(transport_error)?);
        Ok(PingPong {
            producer,
            admin,
            lister,
            prefix,
            requests,
            replies,
            correlator,
            tasks: Mutex::new(vec![respond, read]),
            committer: Mutex::new(Some(committer)),
            mock,
        })
    }
}

#[async_trait::async_trait]
impl Baseline for PingPong {
    async fn ping(&self, payload: &[u8]) -> Result<(), PingError> {
        self.correlator
            .ping(payload, |tag| async move {
                let tag = tag.to_string();
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: CORRELATION,
                        value: Some(tag.as_bytes()),
                    })
                    .insert(Header {
                        key: "reply-to",
                        value: Some(self.replies.as_bytes()),
                    });
                let record = FutureRecord::<(), [u8]>::to(&self.requests)
                    .payload(payload)
                    .headers(headers);
                self.producer
                    .send(record, Timeout::Never)
                    .await
                    .map(drop)
                    .map_err(|(e, _)| transport_error(e))
            })
            .await
    }

    /// Stops the responder and reader and deletes every topic named
    /// `{prefix}.…` (a mock cluster, which cannot delete topics, goes with
    /// the process).
    async fn clean_up(&self) -> Result<(), TransportError> {
        // Every consumer closes before its topic goes: librdkafka crashes
        // the process (SIGSEGV) when a topic is deleted under a consumer
        // still assigned to it. The committer thread holds the responder
        // until the last reply task has reported.
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        let committer = self
            .committer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(committer) = committer {
            let _ = tokio::task::spawn_blocking(move || committer.join()).await;
        }
        if self.mock.is_some() {
            return Ok(());
        }
        // A blocking metadata request, off the runtime's workers.
        let (lister, ours) = (self.lister.clone(), format!("{}.", self.prefix));
        let names = tokio::task::spawn_blocking(move || {
            let metadata = lister
                .fetch_metadata(None, Duration::from_secs(10))
                .map_err(transport_error)?;
            Ok::<_, TransportError>(
                metadata
                    .topics()
                    .iter()
                    .map(rdkafka::metadata::MetadataTopic::name)
                    .filter(|name| name.starts_with(&ours))
                    .map(str::to_owned)
                    .collect::<Vec<String>>(),
            )
        })
        .await
        .map_err(|e| TransportError::Other(Box::new(e)))??;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        if names.is_empty() {
            return Ok(());
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let outcomes = self
            .admin
            .delete_topics(&names, &options)
            .await
            .map_err(transport_error)?;
        match outcomes.into_iter().find_map(Result::err) {
            Some((topic, code)) => {
                let what = format!("deleting topic {topic}: {code}");
                Err(crate::connection::refusal(code, &what)
                    .unwrap_or(TransportError::Rejected(what)))
            }
            None => Ok(()),
        }
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|e| e.into_inner());
        tasks.iter().for_each(JoinHandle::abort);
    }
}
