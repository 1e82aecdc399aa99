//! The busrpc dialect: busrpc's own topics and headers on Kafka
//! ([`KafkaTransport`]). Servers are members of their service's consumer
//! group ([`group`]) committing below a watermark with notes that count
//! deliveries ([`watermark`]); clients read replies from an inbox topic of
//! their own, or a partition of a shared one ([`inbox`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use busrpc_core::transport::{Deliveries, Demand, Inbox, Member, Transport, TransportError};
use busrpc_core::Message;
use futures_util::stream;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;

use crate::config::{Dialect, InboxMode, KafkaConfig};
use crate::connection::{base_config, of_url, transport_error, Connection};
use crate::members::Describes;
#[cfg(feature = "mock")]
use crate::mock::MockBrokers;
use crate::record::to_message;

pub(crate) mod group;
pub(crate) mod inbox;
pub(crate) mod watermark;

use group::GroupReader;

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
    connection: Arc<Connection>,
    counters: Arc<Counters>,
    /// Set once this transport's sweeper of abandoned inboxes has started.
    sweeping: Arc<AtomicBool>,
    /// Whether the broker describes groups.
    describes: Arc<Describes>,
}

impl std::fmt::Debug for KafkaTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTransport")
            .field("bootstrap", &self.connection.bootstrap)
            .field("config", &self.connection.config)
            .finish_non_exhaustive()
    }
}

impl KafkaTransport {
    pub(crate) fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }

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
    /// and for [`Dialect::Pipeline`], which
    /// [`PipelineTransport`](crate::PipelineTransport) speaks (or
    /// [`connect`](crate::connect), which picks the transport by the
    /// dialect).
    pub async fn connect_with(config: KafkaConfig) -> Result<Self, TransportError> {
        if config.dialect != Dialect::Busrpc {
            return Err(TransportError::InvalidConfig(
                "dialect=pipeline is spoken by busrpc_kafka::PipelineTransport (or busrpc_kafka::connect)"
                    .into(),
            ));
        }
        Ok(Self {
            connection: Connection::open(config).await?,
            counters: Arc::default(),
            sweeping: Arc::default(),
            describes: Arc::default(),
        })
    }

    /// The options in force.
    pub fn config(&self) -> &KafkaConfig {
        &self.connection.config
    }

    /// The mock cluster, for `kafka-mock://` transports (fault injection).
    #[cfg(feature = "mock")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
    pub fn mock_cluster(&self) -> Option<&Arc<MockBrokers>> {
        self.connection.mock.as_ref()
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
        member: &str,
        demand: Demand,
    ) -> Result<(GroupReader, tokio::sync::oneshot::Receiver<()>), TransportError> {
        let connection = &self.connection;
        connection
            .ensure_topic(address, connection.config.partitions, None, false)
            .await?;
        let mut config = base_config(&connection.config, &connection.bootstrap);
        config
            .set("group.id", format!("{}.{group}", connection.config.prefix))
            .set("client.id", member)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        let membership = group::Membership::new(&config, self.counters.clone())?;
        membership
            .consumer
            .subscribe(&[address])
            .map_err(transport_error)?;
        let stale = membership.stale_metadata.clone();
        let (mut reader, closed) = group::start(
            membership,
            connection.clone(),
            self.counters.clone(),
            demand,
            address,
        )?;
        let (watching, unwatched) = tokio::sync::oneshot::channel();
        reader.watching = Some(watching);
        tokio::spawn(watch_topic(
            Arc::downgrade(connection),
            address.to_owned(),
            stale,
            unwatched,
        ));
        reader.join(connection.config.join_wait, address).await?;
        tracing::debug!(address, group, "joined the group");
        Ok((reader, closed))
    }

    /// What the consumers of this transport (and its clones) have met so far.
    pub fn stats(&self) -> KafkaStats {
        let c = &self.counters;
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
pub(crate) struct Counters {
    pub(crate) commit_failures: AtomicU64,
    pub(crate) lost_assignments: AtomicU64,
    pub(crate) pauses: AtomicU64,
    pub(crate) refetches: AtomicU64,
    pub(crate) inboxes_removed: AtomicU64,
    pub(crate) trials: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
}

/// How often a server asks whether its request topic still exists: a broker
/// that lost it (a restart without its data) would otherwise leave the
/// server's consumer subscribed to nothing, silently, for good.
const TOPIC_CHECK_EVERY: Duration = Duration::from_secs(3);

/// Asks every [`TOPIC_CHECK_EVERY`] whether a server's request `topic`
/// still exists, until `stop` resolves (its reader is dropped). A broker
/// that lost it (restarted without its data) leaves the consumer subscribed
/// to nothing and every caller told nobody serves: the topic is made again,
/// with a warning each time it is found missing and each time it cannot be
/// made, and the consumer is told to look again (`stale`), which brings the
/// group its partitions.
async fn watch_topic(
    connection: Weak<Connection>,
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
        let Some(connection) = connection.upgrade() else {
            return;
        };
        match connection.topic_exists(&topic).await {
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
        connection.forget_topic(&topic);
        match connection
            .ensure_topic(&topic, connection.config.partitions, None, false)
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

/// Produces `message` to `address`: a topic, or a shared inbox (its
/// topic's partition, with the client named in a header).
pub(crate) async fn produce(
    connection: &Connection,
    address: &str,
    message: &Message,
) -> Result<(), KafkaError> {
    match inbox::parse_shared(address) {
        None => connection.produce(address, None, message, None).await,
        Some((topic, partition, client)) => {
            let client = Some((inbox::CLIENT_HEADER, client));
            connection
                .produce(topic, Some(partition), message, client)
                .await
        }
    }
}

/// Fails with [`TransportError::NotServed`] unless the topic a reply
/// goes to exists: librdkafka would hold a record for a missing topic
/// until `message.timeout.ms` (30 s), keeping the request unsettled,
/// its handler slot taken and its partition's commits pinned, and a
/// caller naming no topic could stall a server so at will. Inbox topics
/// exist before their first call; each is asked about once.
pub(crate) async fn check_reply_to(
    connection: &Arc<Connection>,
    address: &str,
) -> Result<(), TransportError> {
    let topic = inbox::parse_shared(address).map_or(address, |(topic, _, _)| topic);
    connection.check_served(topic).await
}

#[async_trait]
impl Transport for KafkaTransport {
    async fn publish(&self, address: &str, message: Message) -> Result<(), TransportError> {
        let connection = &self.connection;
        if !address.starts_with(&connection.inbox_prefix) {
            connection.check_served(address).await?;
        }
        produce(connection, address, &message)
            .await
            .map_err(transport_error)
    }

    /// librdkafka's `message.max.bytes` (1,000,000 unless the URL sets it),
    /// less room for the record's key and headers.
    fn max_payload_bytes(&self) -> Option<usize> {
        Some(self.connection.max_payload_bytes())
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
        let member = self.connection.config.member_name();
        let (reader, closed) = self.join_group(address, group, &member, demand).await?;
        // Servers sweep the inbox topics of clients gone without closing
        // them (the mock cluster cannot delete topics).
        let connection = &self.connection;
        if connection.mock.is_none() && !self.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(inbox::sweep(
                Arc::downgrade(connection),
                self.counters.clone(),
            ));
        }
        let readiness = reader.health.signal();
        let deliveries = Deliveries::new(stream::unfold(reader, |mut reader| async move {
            let next = reader.next().await;
            Some((next, reader))
        }))
        .with_readiness(readiness)
        .with_member(member);
        // A clean close returns once the last commit is made and the member
        // has left the group: a process may exit right after.
        Ok(deliveries.on_close(async move {
            if closed.await.is_err() {
                tracing::warn!("the consumer thread ended without its last commit");
            }
        }))
    }

    async fn inbox(&self) -> Result<Inbox, TransportError> {
        match self.connection.config.inbox {
            InboxMode::Topic => inbox::topic(self.connection.clone()).await,
            InboxMode::Shared { partitions } => {
                inbox::shared(self.connection.clone(), partitions).await
            }
        }
    }

    /// A record of the topic `{address}.broadcast` (one partition, kept
    /// ten minutes), which every server reads from its end, assigned (no
    /// group). Its servers create it; before any has, there is nobody to
    /// tell. Only with `cancel_notices=true`, as servers hear them only
    /// then: a client without it sends nothing (and makes no topic on a
    /// broker that creates topics on first use).
    async fn broadcast(&self, address: &str, message: Message) -> Result<(), TransportError> {
        if !self.connection.config.cancel_notices {
            return Ok(());
        }
        self.connection
            .produce(&broadcast_topic(address), Some(0), &message, None)
            .await
            .map_err(transport_error)
    }

    /// Only with `cancel_notices=true` (see
    /// [`KafkaConfig::cancel_notices`]): `None` otherwise.
    async fn subscribe(&self, address: &str) -> Result<Option<Inbox>, TransportError> {
        let connection = &self.connection;
        if !connection.config.cancel_notices {
            return Ok(None);
        }
        let topic = broadcast_topic(address);
        connection
            .ensure_topic(&topic, 1, Some(BROADCAST_RETENTION_MS), false)
            .await?;
        let consumer = connection.assigned_reader(&topic, &topic, 0, rdkafka::Offset::End)?;
        let messages = stream::unfold(consumer, |consumer| async move {
            let next = consumer
                .recv()
                .await
                .map(|record| to_message(&record))
                .map_err(transport_error);
            Some((next, consumer))
        });
        Ok(Some(Inbox::new(topic, messages)))
    }

    /// The members of the service's consumer group: a server that stopped
    /// cleanly has left it at once, one that died stays until its session
    /// times out (`session.timeout.ms`). `None` on a broker that cannot
    /// describe groups (the mock cluster).
    async fn members(
        &self,
        _address: &str,
        group: &str,
    ) -> Result<Option<Vec<Member>>, TransportError> {
        let group_id = format!("{}.{group}", self.connection.config.prefix);
        self.connection
            .group_members(&group_id, &self.describes)
            .await
    }

    fn admin(&self) -> Option<&dyn busrpc_core::transport::Admin> {
        Some(self)
    }

    fn service_address(&self, service: &str) -> String {
        format!("{}.{service}", self.connection.config.prefix)
    }
}

/// How long a broadcast topic keeps its records: a notice is worth
/// nothing once its call's deadline has passed.
const BROADCAST_RETENTION_MS: u64 = 600_000;

/// The topic of the broadcasts to the queue at `address`.
fn broadcast_topic(address: &str) -> String {
    format!("{address}.broadcast")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A consumer thread that panics stops its server, which says why
    /// (before, it said only "transport closed").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_thread_that_panics_stops_its_server_saying_so() {
        let transport = Arc::new(
            KafkaTransport::connect("kafka-mock://panics")
                .await
                .unwrap(),
        );
        crate::consumer::thread::a_panic_stops_its_server(transport).await;
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
            .join_group("busrpc.join", "join", "a", Demand::unbounded())
            .await
            .unwrap();
        assert_eq!(owned(&first), 2);
        let (second, _) = transport
            .join_group("busrpc.join", "join", "a", Demand::unbounded())
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
