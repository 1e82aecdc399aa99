//! The pipeline dialect: the wire format of the Python library busrpc grew
//! out of (JSON-RPC 2.0 over Kafka with MessagePack), so that busrpc servers
//! answer its callers and busrpc clients call its receivers, unchanged.
//!
//! The wire, as the original writes it (docs/PROTOCOL.md, "The pipeline
//! dialect"):
//!
//! - a request for service `S` is a record on `S_method_requests`,
//!   partition 0, with no key and no headers; its value a MessagePack map
//!   `jsonrpc`, `method`, `params` (never absent), `id` (a string of decimal
//!   digits; absent in a notification);
//! - every reply, for every service and caller, is a record on the one topic
//!   `method_results`, partition 0, keyed by the UTF-8 bytes of the
//!   request's id; its value a map `jsonrpc`, `id`, then `result` or `error`
//!   (`code`, `message`).
//!
//! The engine above speaks busrpc's own messages; this module translates at
//! the edge. Requests read are handed up as MessagePack with the headers the
//! wire lacks (`reply-to: method_results`); replies published to
//! `method_results` are re-encoded one record per response, keyed by id. A
//! client's numeric call ids go out as `{nonce}{id}`, its inbox's 20-digit
//! random nonce followed by the id, so its replies can be told from every
//! other caller's on the shared topic by their key alone.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use busrpc_core::transport::{Deliveries, Demand, Inbox, Transport, TransportError};
use busrpc_core::{header, Message};
use rdkafka::producer::FutureRecord;
use rdkafka::producer::Producer as _;
use rdkafka::util::Timeout;
use rdkafka::{Message as _, Offset};
use serde_json::Value;

mod progress;
mod receiver;
mod wire;

use wire::{
    decode_reply, encode_request, encode_response, new_nonce, own_id, payload_json, REQUEST_KEY,
};

use crate::config::{Dialect, KafkaConfig};
use crate::connection::{base_config, lock, of_url, transport_error, Connection};

/// The topic every reply goes to.
pub const RESULTS_TOPIC: &str = "method_results";

/// The end of a service's request topic's name, after the service's.
const REQUESTS_SUFFIX: &str = "_method_requests";

/// The digits of a client's nonce. The original's ids (its clock in 100 ns
/// units) have 17 digits now and will for centuries, so an id of a busrpc
/// client (at least 21 digits) never equals one of a Python caller.
const NONCE_DIGITS: usize = 20;

/// The only partition either side of the original reads.
const PARTITION: i32 = 0;

/// The Kafka transport in the pipeline dialect ([`Dialect::Pipeline`],
/// `kafka://host:port?dialect=pipeline`).
///
/// - A server of `S` reads partition 0 of `S_method_requests` from the
///   offset committed by `pipeline_group` (default `default`, the Python
///   receivers' own), and commits what it has answered there: a busrpc
///   server resumes where a Python receiver stopped, and a Python receiver
///   where busrpc stopped. Records with a key are skipped, as the original
///   skips them. The busrpc servers of `S` form the consumer group
///   `busrpc.pipeline.S_method_requests`, in which one holds the partition
///   and the others stand by, taking it over when it stops or dies. Python
///   receivers form no group: never run one beside a busrpc server of its
///   service, for both would answer every request.
/// - Replies go to `method_results`, partition 0, keyed by the request's id;
///   a batch's responses as one record each. The error objects keep `code`
///   and `message` only, as the original's.
/// - A client reads `method_results` partition 0 from its end at the time
///   its inbox opens, and keeps only the records keyed by its own ids. Every
///   client reads every reply of every service: the cost of the shared
///   topic. It never commits, so the Python callers' offsets on it are
///   untouched. Its calls time out by their deadline like any busrpc call,
///   though no deadline travels (the wire has no headers; nor do trace
///   context or signatures).
/// - Both topics are created with one partition when missing.
///
/// Cheap to clone; clones share the producer.
#[derive(Clone, Debug)]
pub struct PipelineTransport {
    connection: Arc<Connection>,
    group: String,
    /// Ids of calls published without an inbox of this transport.
    nonce: Arc<str>,
}

impl PipelineTransport {
    /// Connects to `kafka://host:port[,host:port...]?dialect=pipeline[&options]`
    /// (or `kafka-mock://...?dialect=pipeline`). See [`KafkaConfig`].
    pub async fn connect(url: &str) -> Result<Self, TransportError> {
        let config = KafkaConfig::from_url(url)?;
        Self::connect_with(config).await.map_err(|e| of_url(url, e))
    }

    /// Connects with `config`, whose dialect must be [`Dialect::Pipeline`].
    pub async fn connect_with(config: KafkaConfig) -> Result<Self, TransportError> {
        let Dialect::Pipeline { group } = config.dialect.clone() else {
            return Err(TransportError::InvalidConfig(
                "the pipeline transport needs dialect=pipeline".into(),
            ));
        };
        let connection = Connection::open(config).await?;
        Ok(Self {
            connection,
            group,
            nonce: new_nonce().into(),
        })
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &KafkaConfig {
        &self.connection.config
    }

    /// The mock cluster, for `kafka-mock://` transports.
    #[cfg(feature = "mock")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
    pub fn mock_cluster(&self) -> Option<&Arc<crate::mock::MockBrokers>> {
        self.connection.mock.as_ref()
    }

    async fn publish_reply(&self, message: &Message) -> Result<(), TransportError> {
        let value = payload_json(message, "reply")?;
        // The key of a request answered with a null id (its id unread: it
        // was too large to read), which only a single response can use.
        let (responses, fallback) = match value {
            Value::Array(responses) => (responses, None),
            response => (vec![response], message.headers.get(REQUEST_KEY)),
        };
        for response in &responses {
            match encode_response(response, fallback) {
                Some((key, value)) => self.produce(RESULTS_TOPIC, Some(&key), &value).await?,
                // A parse error of a request whose id could not be read: no
                // original caller could match it.
                None => tracing::warn!(
                    reply = %response,
                    "a reply without an id has no key to go by on method_results; dropped"
                ),
            }
        }
        Ok(())
    }

    async fn publish_request(&self, topic: &str, message: &Message) -> Result<(), TransportError> {
        let request = payload_json(message, "request")?;
        let nonce = message
            .headers
            .get(header::REPLY_TO)
            .and_then(|to| to.strip_prefix(RESULTS_TOPIC)?.strip_prefix('/'))
            .unwrap_or(&self.nonce);
        let value = encode_request(&request, nonce).map_err(TransportError::Rejected)?;
        self.connection.check_served(topic).await?;
        self.produce(topic, None, &value).await
    }

    /// Produces to partition 0 of `topic`, with no headers.
    async fn produce(
        &self,
        topic: &str,
        key: Option<&str>,
        value: &[u8],
    ) -> Result<(), TransportError> {
        let mut record: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(topic).partition(PARTITION).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.connection
            .producer
            .send(record, Timeout::Never)
            .await
            .map(|_| ())
            .map_err(|(e, _)| transport_error(e))
    }

    /// Creates `topic` with one partition unless it exists, and warns when
    /// it has more: the original reads partition 0 only, and so does this.
    /// Once per topic and transport: a client's every inbox asks.
    async fn ensure_topic(&self, topic: &str) -> Result<(), TransportError> {
        let inner = &self.connection;
        if lock(&inner.known_topics).contains(topic) {
            return Ok(());
        }
        // Its own lookup first: the mock cluster answers a metadata request
        // for a topic it lacks with an error, not an empty topic.
        inner.ensure_topic(topic, 1, None, false).await?;
        let partitions = inner.partition_count(topic).await?;
        if partitions > 1 {
            tracing::warn!(
                topic,
                partitions,
                "the pipeline dialect reads partition 0 only: records on the others are never read"
            );
        }
        Ok(())
    }
}

#[async_trait]
impl Transport for PipelineTransport {
    async fn publish(&self, address: &str, message: Message) -> Result<(), TransportError> {
        if address == RESULTS_TOPIC || address.starts_with("method_results/") {
            self.publish_reply(&message).await
        } else if address.ends_with(REQUESTS_SUFFIX) {
            self.publish_request(address, &message).await
        } else {
            Err(TransportError::NotServed(format!(
                "{address} (the pipeline dialect has only S_method_requests and method_results)"
            )))
        }
    }

    /// Joins the busrpc group of the service's servers, in which one
    /// holds the partition and the others stand by (see `receiver.rs`);
    /// reads one request ahead of the server.
    async fn consume(
        &self,
        address: &str,
        _group: &str,
        _demand: Demand,
    ) -> Result<Deliveries, TransportError> {
        self.ensure_topic(address).await?;
        self.ensure_topic(RESULTS_TOPIC).await?;
        let inner = &self.connection;
        let mut committer = base_config(&inner.config, &inner.bootstrap);
        committer
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let committer = committer.create().map_err(transport_error)?;
        let progress = progress::Progress::new(address, committer, self.clone());
        let name = inner.config.member_name();
        let mut member = base_config(&inner.config, &inner.bootstrap);
        member
            .set("group.id", format!("busrpc.pipeline.{address}"))
            .set("client.id", &name)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // The rebalance callback assigns and revokes the partition whole.
            .set("partition.assignment.strategy", "range");
        let consumer = member
            .create_with_context(progress::Handover(progress.clone()))
            .map_err(transport_error)?;
        let deliveries =
            receiver::start(address, consumer, progress, inner.config.join_wait).await?;
        Ok(deliveries.with_member(name))
    }

    async fn inbox(&self) -> Result<Inbox, TransportError> {
        self.ensure_topic(RESULTS_TOPIC).await?;
        let inner = self.connection.clone();
        // From the end: nothing before it can answer an id not sent yet.
        let end = tokio::task::spawn_blocking(move || {
            inner
                .producer
                .client()
                .fetch_watermarks(RESULTS_TOPIC, PARTITION, Duration::from_secs(10))
                .map(|(_, high)| high)
        })
        .await
        .map_err(|e| TransportError::Unavailable(Box::new(e)))?
        .map_err(transport_error)?;
        let nonce = new_nonce();
        // A group id of its own that never commits: the Python callers'
        // offsets in `default` stay theirs.
        let group = format!("busrpc.pipeline.{nonce}");
        let consumer = self.connection.assigned_reader(
            &group,
            RESULTS_TOPIC,
            PARTITION,
            Offset::Offset(end),
        )?;
        let address = format!("{RESULTS_TOPIC}/{nonce}");
        let messages =
            futures_util::stream::unfold((consumer, nonce), |(consumer, nonce)| async move {
                loop {
                    let reply = match consumer.recv().await {
                        Err(e) => Err(transport_error(e)),
                        Ok(record) => {
                            let Some(id) = record.key().and_then(|key| own_id(key, &nonce)) else {
                                continue;
                            };
                            Ok(Message::new(decode_reply(
                                record.payload().unwrap_or_default(),
                                id,
                            )))
                        }
                    };
                    return Some((reply, (consumer, nonce)));
                }
            });
        Ok(Inbox::new(address, messages))
    }

    fn service_address(&self, service: &str) -> String {
        format!("{service}{REQUESTS_SUFFIX}")
    }

    fn max_payload_bytes(&self) -> Option<usize> {
        Some(self.connection.max_payload_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consumer thread that panics stops its server, which says why
    /// (before, its deliveries just stopped coming and the server waited
    /// for ever).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_thread_that_panics_stops_its_server_saying_so() {
        let url = "kafka-mock://pipeline-panics?dialect=pipeline&join_wait_ms=0";
        let transport = Arc::new(PipelineTransport::connect(url).await.unwrap());
        crate::consumer::thread::a_panic_stops_its_server(transport).await;
    }
}
