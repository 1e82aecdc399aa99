#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod mock;
pub mod raw;
mod watermark;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use busrpc_core::transport::{
    Acknowledge, Deliveries, Delivery, Demand, Inbox, Transport, TransportError,
};
use busrpc_core::{header, Headers, Message};
use futures_util::stream;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};
use tokio::sync::{mpsc, Notify};

pub use config::{Brokers, KafkaConfig, LIBRDKAFKA_DEFAULTS};
pub use mock::MockBrokers;
use watermark::{Partition, Tracker};

/// The Kafka transport.
///
/// - Requests of service `S` go to the topic `{prefix}.S`, consumed by the
///   consumer group `{prefix}.S`: the servers of `S` share its partitions.
/// - Each client reads its own inbox topic `{prefix}.inbox.{id}` (one
///   partition) by `assign()`, not as a group member, so no rebalance can
///   ever hold up or lose a reply.
/// - Headers are Kafka record headers; the payload is the record value.
///
/// Cheap to clone; clones share the producer.
#[derive(Clone)]
pub struct KafkaTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KafkaTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTransport")
            .field("bootstrap", &self.inner.bootstrap)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: KafkaConfig,
    bootstrap: String,
    mock: Option<Arc<MockBrokers>>,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist, so each is created at most once per transport.
    known_topics: Mutex<HashSet<String>>,
    instance: String,
    next_name: AtomicU64,
    /// Where inbox addresses start, so a publish can tell replies from requests.
    inbox_prefix: String,
    /// Held while a request topic's existence is asked for.
    checking: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Errors a caller can retry (the broker is away or busy) against those it cannot.
/// Room left under `message.max.bytes` for a reply record's headers (a
/// `content-type` at most) and framing.
const RECORD_OVERHEAD_BYTES: usize = 1024;

fn transport_error(e: KafkaError) -> TransportError {
    use RDKafkaErrorCode as Code;
    match e.rdkafka_error_code() {
        Some(
            Code::MessageSizeTooLarge | Code::InvalidMessageSize | Code::TopicAuthorizationFailed,
        ) => TransportError::Rejected(e.to_string()),
        Some(Code::UnknownTopicOrPartition | Code::UnknownTopic | Code::UnknownPartition) => {
            TransportError::Rejected(format!("{e} (the topic does not exist)"))
        }
        _ => TransportError::Unavailable(Box::new(e)),
    }
}

fn topic_is_gone(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
    )
}

impl KafkaTransport {
    /// Connects to `kafka://host:port[,host:port...][?options]`, or starts (or
    /// joins) an in-process mock cluster for `kafka-mock://[NAME]`. See
    /// [`KafkaConfig`] for the options.
    pub async fn connect(url: &str) -> Result<Self, TransportError> {
        let config = KafkaConfig::from_url(url)?;
        let (bootstrap, mock) = config.brokers.resolve()?;
        let base = base_config(&config, &bootstrap);
        // librdkafka checks every option as the client is made: a typo or a
        // bad value in the URL is the URL's fault, not the broker's.
        let invalid = |e: KafkaError| TransportError::InvalidUrl {
            url: url.to_owned(),
            reason: format!("librdkafka refused the options: {e}"),
        };
        let producer: FutureProducer = base.create().map_err(invalid)?;
        let admin: AdminClient<DefaultClientContext> = base.create().map_err(invalid)?;
        let transport = Self {
            inner: Arc::new(Inner {
                inbox_prefix: format!("{}.inbox.", config.prefix),
                config,
                bootstrap,
                mock,
                producer,
                admin,
                known_topics: Mutex::default(),
                instance: busrpc_core::transport::unique_id(),
                next_name: AtomicU64::new(1),
                checking: tokio::sync::Mutex::new(()),
            }),
        };
        transport.check_reachable().await?;
        Ok(transport)
    }

    /// Fails fast, and plainly, when no broker answers.
    async fn check_reachable(&self) -> Result<(), TransportError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner
                .producer
                .client()
                .fetch_metadata(None, Duration::from_secs(10))
                .map(drop)
                .map_err(|e| {
                    TransportError::Unavailable(
                        format!("no Kafka broker answers at {}: {e}", inner.bootstrap).into(),
                    )
                })
        })
        .await
        .map_err(|e| TransportError::Other(Box::new(e)))?
    }

    /// The options in force.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    /// The mock cluster, for `kafka-mock://` transports (fault injection).
    pub fn mock_cluster(&self) -> Option<&Arc<MockBrokers>> {
        self.inner.mock.as_ref()
    }

    /// Joins `group` as a consumer of the topic `address`, returning once
    /// the group has given this member its share (see [`GroupReader::join`]),
    /// with the task committing its finished requests: it ends, after a last
    /// synchronous commit and with the consumer leaving its group, once the
    /// reader and every delivery of it are gone.
    async fn join_group(
        &self,
        address: &str,
        group: &str,
    ) -> Result<(GroupReader, tokio::task::JoinHandle<()>), TransportError> {
        let inner = self.inner.clone();
        inner
            .ensure_topic(address, inner.config.partitions, None)
            .await?;
        let ledger = Arc::new(Ledger::default());
        let mut config = base_config(&inner.config, &inner.bootstrap);
        config
            .set("group.id", format!("{}.{group}", inner.config.prefix))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        let joined = Arc::new(Notify::new());
        let consumer: StreamConsumer<GroupContext> = config
            .create_with_context(GroupContext {
                ledger: ledger.clone(),
                joined: joined.clone(),
                unsaved: Mutex::default(),
            })
            .map_err(transport_error)?;
        consumer.subscribe(&[address]).map_err(transport_error)?;
        let shared = Arc::new(GroupConsumer {
            consumer,
            ledger,
            _transport: inner.clone(),
        });
        let (done, finished) = mpsc::unbounded_channel();
        let committed = tokio::spawn(commit_finished(shared.clone(), finished));
        let (again, retries) = mpsc::unbounded_channel();
        let mut reader = GroupReader {
            inner: inner.clone(),
            shared,
            done,
            again,
            retries,
            early: None,
        };
        reader.join(&joined, inner.config.join_wait).await;
        tracing::debug!(address, group, "joined the group");
        Ok((reader, committed))
    }
}

fn base_config(config: &KafkaConfig, bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    // The producer and the consumers share one list; each ignores the
    // other's properties, quietly below warning level.
    c.set("log_level", "3");
    for (key, value) in &config.librdkafka {
        c.set(key, value);
    }
    c
}

impl Inner {
    fn name(&self) -> String {
        let n = self.next_name.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.instance)
    }

    /// Creates `topic` if it does not exist yet (brokers need not
    /// auto-create topics, and Tansu does not).
    async fn ensure_topic(
        &self,
        topic: &str,
        partitions: i32,
        retention_ms: Option<u64>,
    ) -> Result<(), TransportError> {
        if lock(&self.known_topics).contains(topic) {
            return Ok(());
        }
        if let Some(mock) = &self.mock {
            // The mock cluster has no CreateTopics; an existing topic is an error we expect.
            if let Err(e) = mock.create_topic(topic, partitions) {
                tracing::debug!(topic, error = %e, "mock topic creation");
            }
        } else {
            let mut new = NewTopic::new(
                topic,
                partitions,
                TopicReplication::Fixed(self.config.replication),
            );
            let retention = retention_ms.map(|ms| ms.to_string());
            if let Some(ms) = &retention {
                new = new.set("retention.ms", ms);
            }
            let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
            let results = self
                .admin
                .create_topics(&[new], &options)
                .await
                .map_err(transport_error)?;
            for result in results {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) => {
                        return Err(TransportError::Rejected(format!(
                            "creating topic {topic}: {code}"
                        )));
                    }
                }
            }
        }
        lock(&self.known_topics).insert(topic.to_owned());
        Ok(())
    }

    /// Fails with [`TransportError::NotServed`] unless the request topic
    /// exists: only a server creates it (see [`Inner::ensure_topic`]), so a
    /// missing one means no server of the service has ever started here. A
    /// topic found is remembered: the check costs one metadata request per
    /// service and transport.
    async fn check_served(self: &Arc<Self>, topic: &str) -> Result<(), TransportError> {
        if lock(&self.known_topics).contains(topic) {
            return Ok(());
        }
        // One check at a time: the first burst of calls to a service asks
        // once, not once per call.
        let _checking = self.checking.lock().await;
        if lock(&self.known_topics).contains(topic) {
            return Ok(());
        }
        let inner = self.clone();
        let name = topic.to_owned();
        let exists = tokio::task::spawn_blocking(move || {
            let metadata = inner
                .producer
                .client()
                .fetch_metadata(Some(&name), Duration::from_secs(10))
                .map_err(transport_error)?;
            // Only "unknown topic" means no server has made it: a topic
            // just created may be reported without a leader for a moment.
            let missing = metadata.topics().iter().any(|t| {
                t.name() == name
                    && matches!(
                        t.error().map(RDKafkaErrorCode::from),
                        Some(
                            RDKafkaErrorCode::UnknownTopicOrPartition
                                | RDKafkaErrorCode::UnknownTopic
                        )
                    )
            });
            Ok::<_, TransportError>(!missing)
        })
        .await
        .map_err(|e| TransportError::Other(Box::new(e)))??;
        if !exists {
            return Err(TransportError::NotServed(topic.to_owned()));
        }
        lock(&self.known_topics).insert(topic.to_owned());
        Ok(())
    }

    async fn produce(&self, topic: &str, message: &Message) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
        for (key, value) in message.headers.iter() {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let record = FutureRecord::<(), [u8]>::to(topic)
            .payload(&message.payload[..])
            .headers(headers);
        // Awaiting the delivery report holds up only this call: many run at once.
        self.producer
            .send(record, Timeout::Never)
            .await
            .map(drop)
            .map_err(|(e, _)| e)
    }
}

fn to_message(record: &BorrowedMessage<'_>) -> Message {
    let mut headers = Headers::new();
    if let Some(kafka) = record.headers() {
        for h in kafka.iter() {
            let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
            headers.insert(header::name(h.key), Arc::<str>::from(value));
        }
    }
    Message {
        payload: record.payload().map(bytes_of).unwrap_or_default(),
        headers,
    }
}

fn bytes_of(payload: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(payload)
}

#[async_trait]
impl Transport for KafkaTransport {
    async fn publish(&self, address: &str, message: Message) -> Result<(), TransportError> {
        let inner = &self.inner;
        if !address.starts_with(&inner.inbox_prefix) {
            inner.check_served(address).await?;
        }
        inner
            .produce(address, &message)
            .await
            .map_err(transport_error)
    }

    /// librdkafka's `message.max.bytes` (1,000,000 unless the URL sets it),
    /// less room for the record's key and headers: librdkafka refuses a
    /// record whose payload, key and headers together exceed it.
    fn max_payload_bytes(&self) -> Option<usize> {
        let limit = self
            .inner
            .config
            .librdkafka_value("message.max.bytes")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1_000_000);
        Some(limit.saturating_sub(RECORD_OVERHEAD_BYTES))
    }

    /// librdkafka fetches ahead on its own (bounded by its queue settings),
    /// so `demand` is not consulted here yet.
    async fn consume(
        &self,
        address: &str,
        group: &str,
        _demand: Demand,
    ) -> Result<Deliveries, TransportError> {
        let (reader, committed) = self.join_group(address, group).await?;
        let deliveries = Deliveries::new(stream::unfold(reader, |mut reader| async move {
            let next = reader.next().await;
            Some((next, reader))
        }));
        // A clean close returns once the last commit is made and the member
        // has left the group: a process may exit right after.
        Ok(deliveries.on_close(async move {
            if let Err(e) = committed.await {
                tracing::warn!(error = %e, "the last commit did not finish");
            }
        }))
    }

    async fn inbox(&self) -> Result<Inbox, TransportError> {
        let inner = self.inner.clone();
        let topic = format!("{}{}", inner.inbox_prefix, inner.name());
        inner
            .ensure_topic(&topic, 1, Some(inner.config.inbox_retention_ms))
            .await?;
        let mut config = base_config(&inner.config, &inner.bootstrap);
        // A group id of its own that never joins: the partition is assigned
        // directly, so no rebalance can touch replies.
        config
            .set("group.id", &topic)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let consumer: StreamConsumer = config.create().map_err(transport_error)?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&topic, 0, Offset::Beginning)
            .map_err(transport_error)?;
        // From the beginning of a fresh topic: a reply produced before the
        // first fetch is read all the same.
        consumer.assign(&assignment).map_err(transport_error)?;
        // The consumer first, then the transport: a tuple drops in that
        // order, so the brokers (a mock cluster) outlive the consumer's close.
        let messages = stream::unfold((consumer, inner.clone()), |state| async move {
            let next = match state.0.recv().await {
                Ok(record) => Ok(to_message(&record)),
                Err(e) => Err(transport_error(e)),
            };
            Some((next, state))
        });
        let name = topic.clone();
        Ok(Inbox::new(topic, messages).on_close(async move {
            if inner.mock.is_some() {
                return; // the mock cluster cannot delete topics
            }
            let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
            if let Err(e) = inner.admin.delete_topics(&[&name], &options).await {
                tracing::warn!(inbox = %name, error = %e, "deleting the inbox topic failed");
            }
        }))
    }

    fn service_address(&self, service: &str) -> String {
        format!("{}.{service}", self.inner.config.prefix)
    }
}

/// A group consumer's watermarks, shared by its reader, its deliveries and
/// its rebalance callbacks.
#[derive(Default)]
struct Ledger {
    tracker: Mutex<Tracker>,
    /// Signalled whenever a reply in progress has been sent or given up.
    answered: Condvar,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, Tracker> {
        lock(&self.tracker)
    }

    /// The tracker, once no reply is being sent for requests of
    /// `partitions`, or `within` has passed.
    fn without_replies_in(
        &self,
        partitions: &[Partition],
        within: Duration,
    ) -> MutexGuard<'_, Tracker> {
        let give_up = std::time::Instant::now() + within;
        let mut tracker = self.lock();
        while partitions.iter().any(|p| tracker.answering(p)) {
            let left = give_up.saturating_duration_since(std::time::Instant::now());
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

/// How long a revocation waits for the replies being sent for requests of
/// its partitions. Longer holds the rebalance up for every member; shorter
/// risks a request answered by both the old and the new owner.
const REVOCATION_WAITS_FOR_REPLIES: Duration = Duration::from_secs(5);

/// Keeps the watermarks in step with the group's assignment.
struct GroupContext {
    ledger: Arc<Ledger>,
    /// Told of every assignment: the first one ends [`GroupReader::join`].
    joined: Arc<Notify>,
    /// What the last revocation finished but could not commit: known done
    /// if the next assignment gives the partitions back.
    unsaved: Mutex<Vec<(Partition, i64)>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    /// Only now are the partitions ours: librdkafka serves this callback
    /// from the same poll that then returns their messages, so none of them
    /// is read before its partition is tracked.
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(assigned) = rebalance else {
            return;
        };
        // Requests finished under the previous assignment whose commit the
        // broker refused are known done if their partition comes back now:
        // nobody else can have owned it in between.
        let unsaved = std::mem::take(&mut *lock(&self.unsaved));
        let mut tracker = self.ledger.lock();
        for element in assigned.elements() {
            let partition: Partition = (element.topic().into(), element.partition());
            tracker.assigned(partition.clone());
            if let Some((_, offset)) = unsaved.iter().find(|(p, _)| *p == partition) {
                tracker.done_below(&partition, *offset);
            }
        }
        tracing::debug!(partitions = assigned.count(), "partitions assigned");
        self.joined.notify_one();
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        tracing::debug!(partitions = revoked.count(), "partitions revoked");
        let partitions: Vec<Partition> = revoked
            .elements()
            .iter()
            .map(|e| (e.topic().into(), e.partition()))
            .collect();
        // A reply on its way when the partition goes would be sent while the
        // commit below stays under its request, which the next owner would
        // then answer again: let it land first. (The handlers still running
        // send nothing once the partition is gone; the next owner answers.)
        let mut tracker = self
            .ledger
            .without_replies_in(&partitions, REVOCATION_WAITS_FOR_REPLIES);
        // Commit what is done before the partitions go to another member,
        // then forget them: later acknowledgements for them do not count.
        let mut commits = TopicPartitionList::new();
        for partition in &partitions {
            if let Some(offset) = tracker.revoked(partition) {
                let _ =
                    commits.add_partition_offset(&partition.0, partition.1, Offset::Offset(offset));
            }
        }
        drop(tracker);
        if commits.count() > 0 {
            if let Err(e) = consumer.commit(&commits, CommitMode::Sync) {
                tracing::warn!(error = %e, "committing before a rebalance failed; finished requests may run again unless their partitions come back");
                // Not after a lost assignment (an expired session): another
                // member may have owned the partitions in between.
                if !consumer.assignment_lost() {
                    let mut unsaved = lock(&self.unsaved);
                    for element in commits.elements() {
                        if let Offset::Offset(offset) = element.offset() {
                            unsaved.push(((element.topic().into(), element.partition()), offset));
                        }
                    }
                }
            }
        }
    }
}

struct GroupConsumer {
    consumer: StreamConsumer<GroupContext>,
    ledger: Arc<Ledger>,
    /// Keeps the brokers (an in-process mock cluster above all) alive until
    /// the consumer has left its group: closing waits for that.
    _transport: Arc<Inner>,
}

/// A released request, to be delivered again by this consumer.
struct Retry {
    partition: Partition,
    offset: i64,
    epoch: u64,
    message: Arc<Message>,
}

struct GroupReader {
    inner: Arc<Inner>,
    shared: Arc<GroupConsumer>,
    done: mpsc::UnboundedSender<()>,
    again: mpsc::UnboundedSender<Retry>,
    retries: mpsc::UnboundedReceiver<Retry>,
    /// A request read while joining, handed out first.
    early: Option<Delivery>,
}

impl GroupReader {
    /// Polls the consumer (a rebalance callback runs only while it is
    /// polled) until the group has given it its share of the partitions, or
    /// `within` has passed. Members that join one after another then cause
    /// one rebalance each, not a storm of overlapping ones that leaves the
    /// partitions without an owner for a session timeout at a time.
    async fn join(&mut self, joined: &Notify, within: Duration) {
        if within.is_zero() {
            return;
        }
        let give_up = tokio::time::sleep(within);
        tokio::pin!(give_up);
        let assigned = joined.notified();
        tokio::pin!(assigned);
        loop {
            let read = tokio::select! {
                biased;
                () = &mut assigned => return,
                () = &mut give_up => {
                    tracing::warn!(?within, "the group has not assigned this member its partitions yet; it goes on joining while serving");
                    return;
                }
                read = self.next() => read,
            };
            match read {
                // Records come only from assigned partitions: joined.
                Ok(delivery) => {
                    self.early = Some(delivery);
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reading while joining the group");
                    tokio::select! {
                        () = &mut give_up => return,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }

    fn delivery(&self, retry: Retry) -> Delivery {
        let acker = KafkaAck {
            inner: self.inner.clone(),
            ledger: self.shared.ledger.clone(),
            partition: retry.partition,
            offset: retry.offset,
            epoch: retry.epoch,
            message: retry.message.clone(),
            done: self.done.clone(),
            again: self.again.clone(),
        };
        Delivery::shared(retry.message, acker)
    }

    async fn next(&mut self) -> Result<Delivery, TransportError> {
        if let Some(delivery) = self.early.take() {
            return Ok(delivery);
        }
        loop {
            tokio::select! {
                biased;
                Some(retry) = self.retries.recv() => {
                    // Released before a rebalance took its partition away:
                    // the new owner has it.
                    if self.shared.ledger.lock().owns(&retry.partition, retry.epoch) {
                        return Ok(self.delivery(retry));
                    }
                }
                record = self.shared.consumer.recv() => {
                    let record = record.map_err(transport_error)?;
                    let partition: Partition = (record.topic().into(), record.partition());
                    let offset = record.offset();
                    let Some(epoch) = self.shared.ledger.lock().taken(&partition, offset) else {
                        tracing::debug!(topic = %partition.0, partition = partition.1, offset, "skipping a request of a partition no longer ours");
                        continue;
                    };
                    let message = Arc::new(to_message(&record));
                    drop(record);
                    return Ok(self.delivery(Retry { partition, offset, epoch, message }));
                }
            }
        }
    }
}

/// Commits watermarks as requests finish, coalescing whatever finished
/// while the previous commit was being sent: each message on `finished`
/// says "the tracker moved". Ends, with a last synchronous commit, when the
/// consumer and all its deliveries are gone.
async fn commit_finished(shared: Arc<GroupConsumer>, mut finished: mpsc::UnboundedReceiver<()>) {
    let mut batch = Vec::new();
    while finished.recv_many(&mut batch, 1024).await > 0 {
        batch.clear();
        let progress = shared.ledger.lock().advance();
        if let Some(offsets) = offsets_of(&progress) {
            if let Err(e) = shared.consumer.commit(&offsets, CommitMode::Async) {
                tracing::warn!(error = %e, "committing offsets failed; they are committed with the next ones");
            }
        }
    }
    // Closing a consumer blocks until it has left the group.
    let _ = tokio::task::spawn_blocking(move || {
        let progress = shared.ledger.lock().advance();
        if let Some(offsets) = offsets_of(&progress) {
            if let Err(e) = shared.consumer.commit(&offsets, CommitMode::Sync) {
                tracing::warn!(error = %e, "the last commit failed; finished requests may run again");
            }
        }
        drop(shared);
    })
    .await;
}

fn offsets_of(progress: &[(Partition, i64)]) -> Option<TopicPartitionList> {
    if progress.is_empty() {
        return None;
    }
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), offset) in progress {
        let _ = offsets.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    Some(offsets)
}

struct KafkaAck {
    inner: Arc<Inner>,
    ledger: Arc<Ledger>,
    partition: Partition,
    offset: i64,
    epoch: u64,
    message: Arc<Message>,
    done: mpsc::UnboundedSender<()>,
    again: mpsc::UnboundedSender<Retry>,
}

#[async_trait]
impl Acknowledge for KafkaAck {
    /// Marks the request done; its offset is committed once every request
    /// below it in its partition is done too.
    ///
    /// Recorded in the tracker here and now, not when the commit task gets
    /// to it: a revocation commits what the tracker holds done, and a request
    /// answered but not yet recorded would be read and answered again by the
    /// partition's next owner.
    async fn ack(self: Box<Self>) -> Result<(), TransportError> {
        self.ledger
            .lock()
            .done(&self.partition, self.offset, self.epoch);
        self.done.send(()).map_err(|_| TransportError::Closed)
    }

    /// Delivers the request again, from this consumer (Kafka cannot hand one
    /// record to another member; its offset stays uncommitted meanwhile).
    async fn release(self: Box<Self>) -> Result<(), TransportError> {
        let retry = Retry {
            partition: self.partition,
            offset: self.offset,
            epoch: self.epoch,
            message: self.message,
        };
        self.again.send(retry).map_err(|_| TransportError::Closed)
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
    async fn reply_and_ack(
        self: Box<Self>,
        _transport: &dyn Transport,
        address: &str,
        reply: Message,
    ) -> Result<(), TransportError> {
        if !self.ledger.lock().answer(&self.partition, self.epoch) {
            tracing::debug!(
                topic = %self.partition.0,
                partition = self.partition.1,
                offset = self.offset,
                "the partition went to another member during the call; it answers instead"
            );
            return Ok(());
        }
        let mut answering = Answering {
            ack: &self,
            sent: false,
        };
        let produced = match self.inner.produce(address, &reply).await {
            Err(e) if topic_is_gone(&e) => {
                tracing::warn!(
                    reply_to = address,
                    "the caller's inbox is gone; the reply is dropped"
                );
                Ok(())
            }
            produced => produced.map_err(transport_error),
        };
        // A reply the broker refuses (too large, not allowed) is final: the
        // request is done, or its redelivery would run it again at once,
        // forever, and pin the partition's commits meanwhile.
        let refused = matches!(produced, Err(TransportError::Rejected(_)));
        answering.sent = produced.is_ok() || refused;
        drop(answering);
        match produced {
            Ok(()) => self.done.send(()).map_err(|_| TransportError::Closed),
            Err(e) if refused => {
                let _ = self.done.send(());
                Err(e)
            }
            Err(e) => {
                let _ = self.release().await;
                Err(e)
            }
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
        let ack = self.ack;
        ack.ledger
            .lock()
            .answered(&ack.partition, ack.offset, ack.epoch, self.sent);
        ack.ledger.answered.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_whether_to_retry() {
        let gone = transport_error(KafkaError::MessageProduction(
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
        assert!(
            matches!(gone, TransportError::Rejected(ref r) if r.contains("does not exist")),
            "{gone}"
        );
        let big = transport_error(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge,
        ));
        assert!(matches!(big, TransportError::Rejected(_)));
        let down = transport_error(KafkaError::MessageProduction(
            RDKafkaErrorCode::BrokerTransportFailure,
        ));
        assert!(matches!(down, TransportError::Unavailable(_)));
        assert!(topic_is_gone(&KafkaError::MessageProduction(
            RDKafkaErrorCode::UnknownTopic
        )));
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
            let epoch = tracker.taken(&partition, 7).unwrap();
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
        assert_eq!(revocation.join().unwrap(), Some(8));

        ledger.lock().assigned(partition.clone());
        let idle =
            ledger.without_replies_in(std::slice::from_ref(&partition), Duration::from_secs(60));
        assert!(!idle.answering(&partition));
    }

    /// Joining returns once the group has given the member its share: the
    /// first member all partitions, the second (the first still polled, as
    /// a serving member is) its part of them after the rebalance it caused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn joining_returns_with_the_partitions_assigned() {
        let transport = KafkaTransport::connect("kafka-mock://joining?partitions=2")
            .await
            .unwrap();
        let owned = |reader: &GroupReader| reader.shared.ledger.lock().owned();
        let (mut first, _) = transport.join_group("busrpc.join", "join").await.unwrap();
        assert_eq!(owned(&first), 2);
        let keep_polling = tokio::spawn(async move {
            loop {
                let _ = first.next().await;
            }
        });
        let (second, _) = transport.join_group("busrpc.join", "join").await.unwrap();
        assert_eq!(owned(&second), 1);
        keep_polling.abort();
    }
}
