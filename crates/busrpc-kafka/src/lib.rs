#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod group;
mod inboxes;
mod mock;
mod pipeline;
mod poison;
#[cfg(feature = "raw")]
#[cfg_attr(docsrs, doc(cfg(feature = "raw")))]
pub mod raw;
mod watermark;

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use busrpc_core::transport::{Deliveries, Demand, Inbox, Transport, TransportError};
use busrpc_core::{header, Headers, Message};
use futures_util::stream;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use rdkafka::{Message as _, Offset, TopicPartitionList};

pub use config::{Brokers, Dialect, InboxMode, KafkaConfig, SaslMechanism, LIBRDKAFKA_DEFAULTS};
use group::GroupReader;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub use mock::MockBrokers;
#[cfg(not(feature = "mock"))]
use mock::MockBrokers;
pub use pipeline::{PipelineTransport, RESULTS_TOPIC};

/// Connects to a `kafka://` or `kafka-mock://` URL with the transport of
/// its dialect: [`KafkaTransport`], or [`PipelineTransport`] for
/// `dialect=pipeline`.
pub async fn connect(url: &str) -> Result<Arc<dyn Transport>, TransportError> {
    let config = KafkaConfig::from_url(url)?;
    let transport: Arc<dyn Transport> = match config.dialect {
        Dialect::Busrpc => Arc::new(
            KafkaTransport::connect_with(config)
                .await
                .map_err(|e| of_url(url, e))?,
        ),
        Dialect::Pipeline { .. } => Arc::new(
            PipelineTransport::connect_with(config)
                .await
                .map_err(|e| of_url(url, e))?,
        ),
    };
    Ok(transport)
}

/// The Kafka transport.
///
/// - Requests of service `S` go to the topic `{prefix}.S`, consumed by the
///   consumer group `{prefix}.S`: the servers of `S` share its partitions.
/// - Each client reads its own inbox topic
///   `{prefix}.inbox.{created_ms}.{retention_ms}.{owner}`
///   (one partition) by `assign()`, not as a group member, so no rebalance
///   can ever hold up or lose a reply. It keeps the topic alive with a
///   keep-alive record every quarter of `inbox_retention_ms`; servers delete
///   inbox topics that stood still longer than that (their client is gone).
///   With `inbox=shared` ([`InboxMode::Shared`]) a client reads one
///   partition of `{prefix}.inbox.shared` instead, skipping the replies to
///   the other clients on it.
/// - A request delivered more than `max_deliveries` times, deliveries to a
///   process that died counted, goes to `{prefix}.S.dead` and its caller is
///   answered -32001 (see PROTOCOL.md, "Poison requests").
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
    producer: FutureProducer<Reports>,
    /// What the producer's librdkafka reported (a failed login).
    reports: Reports,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist, so each is created at most once per transport.
    known_topics: Mutex<HashSet<String>>,
    instance: String,
    next_name: AtomicU64,
    /// Where inbox addresses start, so a publish can tell replies from requests.
    inbox_prefix: String,
    counters: Arc<Counters>,
    /// Held while a request topic's existence is asked for.
    checking: tokio::sync::Mutex<()>,
    /// Set once this transport's sweeper of abandoned inboxes has started.
    sweeping: AtomicBool,
    /// The in-process mock cluster, for `kafka-mock://`. Last: fields drop
    /// in order, and a cluster gone before the producer and the admin
    /// client left them logging `AllBrokersDown` at ERROR as they closed.
    mock: Option<Arc<MockBrokers>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Room left under `message.max.bytes` for a reply record's headers (a
/// `content-type` at most) and framing.
const RECORD_OVERHEAD_BYTES: usize = 1024;

/// How many topic names a transport remembers as existing before it
/// forgets them all (see [`Inner::remember_topic`]).
const MAX_KNOWN_TOPICS: usize = 4096;

/// How often a server asks whether its request topic still exists: a broker
/// that lost it (a restart without its data) would otherwise leave the
/// server's consumer subscribed to nothing, silently, for good.
const TOPIC_CHECK_EVERY: Duration = Duration::from_secs(3);

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

/// A setting librdkafka refuses came from the URL: says so with it.
fn of_url(url: &str, e: TransportError) -> TransportError {
    match e {
        TransportError::InvalidConfig(reason) => TransportError::InvalidUrl {
            url: url.to_owned(),
            reason,
        },
        e => e,
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
        Self::connect_with(config).await.map_err(|e| of_url(url, e))
    }

    /// Connects with `config`, built with [`KafkaConfig::new`] and its
    /// setters (or parsed from a URL); fails with
    /// [`TransportError::InvalidConfig`] for settings librdkafka refuses,
    /// and for [`Dialect::Pipeline`], which [`PipelineTransport`] speaks
    /// (or [`connect`], which picks the transport by the dialect).
    pub async fn connect_with(config: KafkaConfig) -> Result<Self, TransportError> {
        if config.dialect != Dialect::Busrpc {
            return Err(TransportError::InvalidConfig(
                "dialect=pipeline is spoken by busrpc_kafka::PipelineTransport (or busrpc_kafka::connect)"
                    .into(),
            ));
        }
        Self::connect_dialect(config).await
    }

    /// The connection of either dialect: the producer, the admin client and
    /// the check that a broker answers.
    pub(crate) async fn connect_dialect(config: KafkaConfig) -> Result<Self, TransportError> {
        config.check().map_err(TransportError::InvalidConfig)?;
        let (bootstrap, mock) = config.brokers.resolve()?;
        let base = base_config(&config, &bootstrap);
        // librdkafka checks every option as the client is made: a typo or a
        // bad value is the configuration's fault, not the broker's.
        let invalid = |e: KafkaError| {
            TransportError::InvalidConfig(format!("librdkafka refused the options: {e}"))
        };
        let reports = Reports::default();
        let producer: FutureProducer<Reports> =
            base.create_with_context(reports.clone()).map_err(invalid)?;
        let admin: AdminClient<DefaultClientContext> = base.create().map_err(invalid)?;
        let transport = Self {
            inner: Arc::new(Inner {
                inbox_prefix: format!("{}.inbox.", config.prefix),
                config,
                bootstrap,
                mock,
                producer,
                reports,
                admin,
                known_topics: Mutex::default(),
                instance: busrpc_core::transport::unique_id(),
                next_name: AtomicU64::new(1),
                counters: Arc::default(),
                checking: tokio::sync::Mutex::new(()),
                sweeping: AtomicBool::new(false),
            }),
        };
        transport.check_reachable().await?;
        Ok(transport)
    }

    /// Fails fast, and plainly, when no broker answers.
    async fn check_reachable(&self) -> Result<(), TransportError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // In short tries, so that a refused login ends the wait at once.
            let give_up = std::time::Instant::now() + Duration::from_secs(10);
            let answer = loop {
                let answer = inner
                    .producer
                    .client()
                    .fetch_metadata(None, Duration::from_millis(500));
                let done = answer.is_ok() || inner.reports.login_failure().is_some();
                if done || std::time::Instant::now() >= give_up {
                    break answer;
                }
            };
            answer
                .map(drop)
                .map_err(|e| match inner.reports.login_failure() {
                    // Final: the same secret will be refused again.
                    Some(why) => TransportError::Rejected(format!(
                        "the Kafka broker at {} refused the login: {why}",
                        inner.bootstrap
                    )),
                    None => TransportError::Unavailable(
                        format!("no Kafka broker answers at {}: {e}", inner.bootstrap).into(),
                    ),
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
    #[cfg(feature = "mock")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
    pub fn mock_cluster(&self) -> Option<&Arc<MockBrokers>> {
        self.inner.mock.as_ref()
    }

    /// Joins `group` as a consumer of the topic `address` on a consumer
    /// thread of its own, returning once the group has given this member its
    /// share (see [`GroupReader::join`]), with a receiver told once the
    /// thread has made its last commit and left the group: that happens once
    /// the reader and every delivery of it are gone.
    async fn join_group(
        &self,
        address: &str,
        group: &str,
        demand: Demand,
    ) -> Result<(GroupReader, tokio::sync::oneshot::Receiver<()>), TransportError> {
        let inner = self.inner.clone();
        inner
            .ensure_topic(address, inner.config.partitions, None, false)
            .await?;
        let mut config = base_config(&inner.config, &inner.bootstrap);
        config
            .set("group.id", format!("{}.{group}", inner.config.prefix))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        let membership = group::Membership::new(&config, inner.counters.clone())?;
        membership
            .consumer
            .subscribe(&[address])
            .map_err(transport_error)?;
        let stale = membership.stale_metadata.clone();
        let (mut reader, closed) = group::start(membership, inner.clone(), demand, address)?;
        let (watching, unwatched) = tokio::sync::oneshot::channel();
        reader.watching = Some(watching);
        tokio::spawn(watch_topic(
            Arc::downgrade(&inner),
            address.to_owned(),
            stale,
            unwatched,
        ));
        reader.join(inner.config.join_wait).await;
        tracing::debug!(address, group, "joined the group");
        Ok((reader, closed))
    }

    /// What the consumers of this transport (and its clones) have met so far.
    pub fn stats(&self) -> KafkaStats {
        let c = &self.inner.counters;
        KafkaStats {
            commit_failures: c.commit_failures.load(Ordering::Relaxed),
            lost_assignments: c.lost_assignments.load(Ordering::Relaxed),
            pauses: c.pauses.load(Ordering::Relaxed),
            refetches: c.refetches.load(Ordering::Relaxed),
            inboxes_removed: c.inboxes_removed.load(Ordering::Relaxed),
            suspects_tried: c.trials.load(Ordering::Relaxed),
            dead_letters: c.dead_letters.load(Ordering::Relaxed),
        }
    }
}

/// Counts of what a [`KafkaTransport`]'s group consumers met, for metrics
/// and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaStats {
    /// Commits of finished requests' offsets that failed. Each is made again
    /// 200 ms later, so a failure costs only the reruns of a crash in the
    /// meantime.
    pub commit_failures: u64,
    /// Assignments lost without a revocation (a failed rebalance, an expired
    /// session): the member dropped those partitions, sending no reply and
    /// making no commit for their requests.
    pub lost_assignments: u64,
    /// Times a consumer paused its partitions because its server had no
    /// room for more requests (it keeps polling, so it stays in its group).
    pub pauses: u64,
    /// Times a fetch skipped offsets below a record it returned, and the
    /// consumer read its partition again from the first of them (a broker
    /// fault: Tansu 0.6.0 does it under concurrent produces).
    pub refetches: u64,
    /// Inbox topics of clients gone without closing them that this
    /// transport's servers deleted (see PROTOCOL.md, "Inboxes").
    pub inboxes_removed: u64,
    /// Requests that may have been running on a member that died or left,
    /// run again only after a commit counting their delivery (see
    /// PROTOCOL.md, "Poison requests").
    pub suspects_tried: u64,
    /// Requests delivered more than `max_deliveries` times, moved to their
    /// service's dead-letter topic and answered with -32001.
    pub dead_letters: u64,
}

#[derive(Default)]
struct Counters {
    commit_failures: AtomicU64,
    lost_assignments: AtomicU64,
    pauses: AtomicU64,
    refetches: AtomicU64,
    inboxes_removed: AtomicU64,
    trials: AtomicU64,
    dead_letters: AtomicU64,
}

/// Asks every [`TOPIC_CHECK_EVERY`] whether a server's request `topic`
/// still exists, until `stop` resolves (its reader is dropped). A broker
/// that lost it (restarted without its data) leaves the consumer subscribed
/// to nothing and every caller told nobody serves: the topic is made again,
/// with a warning each time it is found missing and each time it cannot be
/// made, and the consumer is told to look again (`stale`), which brings the
/// group its partitions.
async fn watch_topic(
    inner: Weak<Inner>,
    topic: String,
    stale: Arc<AtomicBool>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut missing_since = None;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(TOPIC_CHECK_EVERY) => {}
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match inner.topic_exists(&topic).await {
            Ok(true) => continue,
            Ok(false) => {}
            // The broker away: nothing to say about the topic.
            Err(e) => {
                tracing::debug!(%topic, error = %e, "checking the request topic");
                continue;
            }
        }
        let since = *missing_since.get_or_insert_with(Instant::now);
        tracing::warn!(%topic, "the request topic is gone (the broker lost it: restarted without its data?); creating it again");
        inner.forget_topic(&topic);
        match inner
            .ensure_topic(&topic, inner.config.partitions, None, false)
            .await
        {
            Ok(()) => {
                stale.store(true, Ordering::Relaxed);
                missing_since = None;
                tracing::info!(%topic, missing_for = ?since.elapsed(), "the request topic is made again; serving it");
            }
            Err(e) => {
                tracing::warn!(%topic, error = %e, missing_for = ?since.elapsed(), "the request topic is gone and cannot be made; nothing is served until it is");
            }
        }
    }
}

/// What librdkafka reports to the transport's producer: a failed login is
/// kept, so that `connect` can say so rather than that no broker answers
/// (librdkafka tells it only here; its metadata request just times out).
#[derive(Clone, Default)]
struct Reports {
    login_failed: Arc<Mutex<Option<String>>>,
}

impl Reports {
    fn login_failure(&self) -> Option<String> {
        lock(&self.login_failed).clone()
    }
}

impl rdkafka::ClientContext for Reports {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication) {
            *lock(&self.login_failed) = Some(reason.to_owned());
        }
        // As librdkafka's default context does, and at the same level: the
        // transport retries by itself, but an operator wants to know.
        tracing::error!(target: "librdkafka", error = %error, reason, "librdkafka reported an error");
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
    /// auto-create topics, and Tansu does not). Unless its name is `new`
    /// (an inbox's), it is looked up first: a server starting on a topic
    /// that exists needs no CreateTopics, so a broker that will not create
    /// topics for this client (no permission: topics provisioned by their
    /// operators; no CreateTopics at all: librdkafka's mock cluster, reached
    /// over TCP) serves all the same.
    async fn ensure_topic(
        self: &Arc<Self>,
        topic: &str,
        partitions: i32,
        retention_ms: Option<u64>,
        new: bool,
    ) -> Result<(), TransportError> {
        if lock(&self.known_topics).contains(topic) {
            return Ok(());
        }
        if let Some(mock) = &self.mock {
            // The mock cluster has no CreateTopics; an existing topic is an error we expect.
            if let Err(e) = mock.create_topic(topic, partitions) {
                tracing::debug!(topic, error = %e, "mock topic creation");
            }
        } else if new || !self.topic_exists(topic).await? {
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
            let refused = match self.admin.create_topics(&[new], &options).await {
                Err(e) => Some(e.to_string()),
                Ok(results) => results.into_iter().find_map(|result| match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => None,
                    Err((_, code)) => Some(code.to_string()),
                }),
            };
            if let Some(reason) = refused {
                return Err(TransportError::Rejected(format!(
                    "creating topic {topic}: {reason}"
                )));
            }
        }
        self.remember_topic(topic);
        Ok(())
    }

    /// A consumer of `topic`'s `partition` from `from`, for replies. Its
    /// group id `group` is its own and never joins: the partition is
    /// assigned directly, so no rebalance can touch replies.
    fn reply_reader(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        from: Offset,
    ) -> Result<StreamConsumer, TransportError> {
        let mut config = base_config(&self.config, &self.bootstrap);
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let consumer: StreamConsumer = config.create().map_err(transport_error)?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, from)
            .map_err(transport_error)?;
        consumer.assign(&assignment).map_err(transport_error)?;
        Ok(consumer)
    }

    /// The partition of the shared reply topic `client` reads (one of those
    /// the broker reports, by a hash of its name), and that partition's end.
    fn shared_partition(&self, topic: &str, client: &str) -> Result<(i32, i64), TransportError> {
        use std::hash::BuildHasher;
        let wait = Duration::from_secs(10);
        let client_of = self.producer.client();
        // A topic just created may be reported without partitions for a moment.
        let give_up = std::time::Instant::now() + wait;
        let count = loop {
            let metadata = client_of
                .fetch_metadata(Some(topic), wait)
                .map_err(transport_error)?;
            let count = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or(0, |t| t.partitions().len());
            if count > 0 {
                break count;
            }
            if std::time::Instant::now() >= give_up {
                return Err(TransportError::Unavailable(
                    format!("the shared reply topic {topic} has no partitions").into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let hash = std::collections::hash_map::RandomState::new().hash_one(client);
        let partition = i32::try_from(hash % count as u64).unwrap_or(0);
        let (_, end) = client_of
            .fetch_watermarks(topic, partition, wait)
            .map_err(transport_error)?;
        Ok((partition, end))
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
        if !self.topic_exists(topic).await? {
            return Err(TransportError::NotServed(topic.to_owned()));
        }
        self.remember_topic(topic);
        Ok(())
    }

    /// Forgets that `topic` exists, so that its next use asks again.
    fn forget_topic(&self, topic: &str) {
        lock(&self.known_topics).remove(topic);
    }

    /// Fails with [`TransportError::NotServed`] unless the topic a reply
    /// goes to exists: librdkafka would hold a record for a missing topic
    /// until `message.timeout.ms` (30 s), keeping the request unsettled,
    /// its handler slot taken and its partition's commits pinned, and a
    /// caller naming no topic could stall a server so at will. Inbox topics
    /// exist before their first call; each is asked about once.
    pub(crate) async fn check_reply_to(
        self: &Arc<Self>,
        address: &str,
    ) -> Result<(), TransportError> {
        let topic = inboxes::parse_shared(address).map_or(address, |(topic, _, _)| topic);
        self.check_served(topic).await
    }

    /// Adds `topic` to the topics known to exist. Every caller's inbox
    /// passes through here, so the set is emptied when it grows large: a
    /// long-lived server meets clients without end, and forgetting costs
    /// one metadata request per topic at its next use.
    fn remember_topic(&self, topic: &str) {
        let mut known = lock(&self.known_topics);
        if known.len() >= MAX_KNOWN_TOPICS {
            known.clear();
        }
        known.insert(topic.to_owned());
    }

    /// What the broker reports of `topic`, read by `read` from its metadata.
    async fn topic_metadata<T: Send + 'static>(
        self: &Arc<Self>,
        topic: &str,
        read: impl FnOnce(Option<&rdkafka::metadata::MetadataTopic>) -> T + Send + 'static,
    ) -> Result<T, TransportError> {
        let inner = self.clone();
        let name = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let metadata = inner
                .producer
                .client()
                .fetch_metadata(Some(&name), Duration::from_secs(10))
                .map_err(transport_error)?;
            Ok(read(metadata.topics().iter().find(|t| t.name() == name)))
        })
        .await
        .map_err(|e| TransportError::Other(Box::new(e)))?
    }

    /// How many partitions the broker reports for `topic`.
    async fn partition_count(self: &Arc<Self>, topic: &str) -> Result<usize, TransportError> {
        self.topic_metadata(topic, |t| t.map_or(0, |t| t.partitions().len()))
            .await
    }

    /// Whether the broker knows `topic`.
    async fn topic_exists(self: &Arc<Self>, topic: &str) -> Result<bool, TransportError> {
        // Only "unknown topic" (or a name no topic can have) means no
        // server has made it: a topic just created may be reported without
        // a leader for a moment.
        self.topic_metadata(topic, |t| {
            !t.is_some_and(|t| {
                matches!(
                    t.error().map(RDKafkaErrorCode::from),
                    Some(
                        RDKafkaErrorCode::UnknownTopicOrPartition
                            | RDKafkaErrorCode::UnknownTopic
                            | RDKafkaErrorCode::InvalidTopic
                    )
                )
            })
        })
        .await
    }

    /// Produces `message` to `address`: a topic, or a shared inbox (its
    /// topic's partition, with the client named in a header).
    async fn produce(&self, address: &str, message: &Message) -> Result<(), KafkaError> {
        let shared = inboxes::parse_shared(address);
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len() + 1);
        for (key, value) in message.headers.iter() {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let (topic, partition) = match shared {
            None => (address, None),
            Some((topic, partition, client)) => {
                headers = headers.insert(Header {
                    key: inboxes::CLIENT_HEADER,
                    value: Some(client.as_bytes()),
                });
                (topic, Some(partition))
            }
        };
        let mut record = FutureRecord::<(), [u8]>::to(topic)
            .payload(&message.payload[..])
            .headers(headers);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        // Awaiting the delivery report holds up only this call: many run at once.
        self.producer
            .send(record, Timeout::Never)
            .await
            .map(drop)
            .map_err(|(e, _)| e)
    }
}

fn is_keepalive(record: &BorrowedMessage<'_>) -> bool {
    record_headers(record).any(|h| h.key == inboxes::KEEPALIVE_HEADER)
}

/// A record's headers, skipping any whose name is not UTF-8: rdkafka (0.39)
/// unwraps that check and panics, and a record from a client that writes
/// other bytes there must not take the consumer thread down with it (each
/// server of the service would read it, and die, in turn). A build with
/// `panic = "abort"` cannot be saved so; a warning names the record.
pub(crate) fn record_headers<'a, M: rdkafka::Message>(
    record: &'a M,
) -> impl Iterator<Item = Header<'a, &'a [u8]>> + 'a {
    let headers = record.headers();
    let count = headers.map_or(0, |h| h.count());
    (0..count).filter_map(move |index| {
        let headers = headers?;
        match std::panic::catch_unwind(AssertUnwindSafe(|| headers.try_get(index))) {
            Ok(header) => header,
            Err(_) => {
                tracing::warn!(
                    topic = record.topic(),
                    partition = record.partition(),
                    offset = record.offset(),
                    index,
                    "a record header's name is not UTF-8; the header is skipped"
                );
                None
            }
        }
    })
}

fn to_message(record: &BorrowedMessage<'_>) -> Message {
    let mut headers = Headers::new();
    for h in record_headers(record) {
        let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
        headers.insert(header::name(h.key), Arc::<str>::from(value));
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

    /// The consumer thread reads up to 256 requests ahead of `demand`; when
    /// that many wait, it pauses its partitions (and goes on polling, so its
    /// group never waits on it) until half of them have been taken.
    async fn consume(
        &self,
        address: &str,
        group: &str,
        demand: Demand,
    ) -> Result<Deliveries, TransportError> {
        let (reader, closed) = self.join_group(address, group, demand).await?;
        // Servers sweep the inbox topics of clients gone without closing
        // them (the mock cluster cannot delete topics).
        let inner = &self.inner;
        if inner.mock.is_none() && !inner.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(inboxes::sweep(Arc::downgrade(inner)));
        }
        let readiness = reader.health.signal();
        let deliveries = Deliveries::new(stream::unfold(reader, |mut reader| async move {
            let next = reader.next().await;
            Some((next, reader))
        }))
        .with_readiness(readiness);
        // A clean close returns once the last commit is made and the member
        // has left the group: a process may exit right after.
        Ok(deliveries.on_close(async move {
            if closed.await.is_err() {
                tracing::warn!("the consumer thread ended without its last commit");
            }
        }))
    }

    async fn inbox(&self) -> Result<Inbox, TransportError> {
        match self.inner.config.inbox {
            InboxMode::Topic => self.topic_inbox().await,
            InboxMode::Shared { partitions } => self.shared_inbox(partitions).await,
        }
    }

    fn service_address(&self, service: &str) -> String {
        format!("{}.{service}", self.inner.config.prefix)
    }
}

impl KafkaTransport {
    /// An inbox topic of the client's own (`inbox=topic`).
    async fn topic_inbox(&self) -> Result<Inbox, TransportError> {
        let inner = self.inner.clone();
        let topic = inboxes::name(
            &inner.inbox_prefix,
            inner.config.inbox_retention_ms,
            &inner.name(),
        );
        inner
            .ensure_topic(&topic, 1, Some(inner.config.inbox_retention_ms), true)
            .await?;
        // From the beginning of a fresh topic: a reply produced before the
        // first fetch is read all the same.
        let consumer = inner.reply_reader(&topic, &topic, 0, Offset::Beginning)?;
        // The consumer first, then the transport: a tuple drops in that
        // order, so the brokers (a mock cluster) outlive the consumer's close.
        // Its keep-alive records tell the servers' sweepers it is alive; the
        // writer stops once the inbox is gone (its sender dropped).
        let (alive, gone) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(inboxes::keep_alive(
            Arc::downgrade(&inner),
            topic.clone(),
            inboxes::interval(inner.config.inbox_retention_ms),
            gone,
        ));
        let messages = stream::unfold((consumer, inner.clone(), alive), |state| async move {
            let next = loop {
                match state.0.recv().await {
                    Ok(record) if is_keepalive(&record) => continue,
                    Ok(record) => break Ok(to_message(&record)),
                    Err(e) => break Err(transport_error(e)),
                }
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

    /// A partition of the shared reply topic (`inbox=shared`), read from its
    /// end at connection, keeping only the records for this client.
    async fn shared_inbox(&self, partitions: i32) -> Result<Inbox, TransportError> {
        let inner = self.inner.clone();
        let topic = inboxes::shared_topic(&inner.inbox_prefix);
        inner
            .ensure_topic(
                &topic,
                partitions,
                Some(inner.config.inbox_retention_ms),
                false,
            )
            .await?;
        let client = inner.name();
        let (partition, end) = {
            let (inner, topic, client) = (inner.clone(), topic.clone(), client.clone());
            tokio::task::spawn_blocking(move || inner.shared_partition(&topic, &client))
                .await
                .map_err(|e| TransportError::Other(Box::new(e)))??
        };
        // From the end as it was before any request: earlier replies are
        // other clients', and a reply to this one cannot be missed.
        let group = format!("{topic}.{client}");
        let consumer = inner.reply_reader(&group, &topic, partition, Offset::Offset(end))?;
        let address = inboxes::shared_address(&topic, partition, &client);
        tracing::debug!(%address, end, "reading a shared inbox");
        let messages = stream::unfold((consumer, inner, client), |state| async move {
            let next = loop {
                match state.0.recv().await {
                    Ok(record) if !is_for(&record, &state.2) => continue,
                    Ok(record) => break Ok(to_message(&record)),
                    Err(e) => break Err(transport_error(e)),
                }
            };
            Some((next, state))
        });
        Ok(Inbox::new(address, messages))
    }
}

/// Whether a record of the shared reply topic is for `client`.
fn is_for(record: &BorrowedMessage<'_>, client: &str) -> bool {
    record_headers(record)
        .any(|h| h.key == inboxes::CLIENT_HEADER && h.value == Some(client.as_bytes()))
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

    /// A consumer thread that panics stops its server, which says why
    /// (before, it said only "transport closed").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_thread_that_panics_stops_its_server_saying_so() {
        let transport = Arc::new(
            KafkaTransport::connect("kafka-mock://panics")
                .await
                .unwrap(),
        );
        let server = busrpc_core::Server::new(transport.clone(), "svc", busrpc_core::Router::new())
            .start()
            .await
            .unwrap();
        *group::PANIC_ON.lock().unwrap() = Some(transport.service_address("svc"));
        let stopped = tokio::time::timeout(Duration::from_secs(30), server.stopped())
            .await
            .expect("stopped within 30 s");
        let err = stopped.expect_err("stopped by a failure");
        assert!(
            err.to_string()
                .contains("consumer thread panicked: a panic a test asked for"),
            "{err}"
        );
        server.shutdown().await;
    }

    /// Joining returns once the group has given the member its share: the
    /// first member all partitions, the second its part of them after the
    /// rebalance it caused. The first is not read meanwhile: its own thread
    /// polls it, so it takes part in the rebalance all the same, and ends
    /// up with the other part.
    #[tokio::test(flavor = "current_thread")]
    async fn joining_returns_with_the_partitions_assigned() {
        let transport = KafkaTransport::connect("kafka-mock://joining?partitions=2")
            .await
            .unwrap();
        let owned = |reader: &GroupReader| reader.ledger.lock().owned();
        let (first, _) = transport
            .join_group("busrpc.join", "join", Demand::unbounded())
            .await
            .unwrap();
        assert_eq!(owned(&first), 2);
        let (second, _) = transport
            .join_group("busrpc.join", "join", Demand::unbounded())
            .await
            .unwrap();
        assert_eq!(owned(&second), 1);
        // The first member's new assignment lands on its own thread, after
        // it has read the committed offsets: maybe a moment after the
        // second's.
        let give_up = std::time::Instant::now() + Duration::from_secs(30);
        while owned(&first) != 1 {
            assert!(std::time::Instant::now() < give_up, "the first gave one up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
