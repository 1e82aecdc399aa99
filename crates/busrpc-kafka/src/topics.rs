//! The topics busrpc reads and writes: made when missing, looked up once
//! and remembered, and told apart from the ones no server ever made.

use std::sync::Arc;
use std::time::Duration;

use busrpc_core::transport::TransportError;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer as _;

use crate::connection::{lock, refusal, transport_error, Connection};

/// How many topic names a transport remembers as existing before it
/// forgets them all (see [`Connection::remember_topic`]).
const MAX_KNOWN_TOPICS: usize = 4096;

impl Connection {
    /// Creates `topic` if it does not exist yet (brokers need not
    /// auto-create topics, and Tansu does not). Unless its name is `new`
    /// (an inbox's), it is looked up first: a server starting on a topic
    /// that exists needs no CreateTopics, so a broker that will not create
    /// topics for this client (no permission: topics provisioned by their
    /// operators; no CreateTopics at all: librdkafka's mock cluster, reached
    /// over TCP) serves all the same.
    pub(crate) async fn ensure_topic(
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
                Err(e) => Some((e.rdkafka_error_code(), e.to_string())),
                Ok(results) => results.into_iter().find_map(|result| match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => None,
                    Err((_, code)) => Some((Some(code), code.to_string())),
                }),
            };
            if let Some((code, reason)) = refused {
                let what = format!("creating topic {topic}: {reason}");
                return Err(code
                    .and_then(|code| refusal(code, &what))
                    .unwrap_or(TransportError::Rejected(what)));
            }
        }
        self.remember_topic(topic);
        Ok(())
    }

    /// Fails with [`TransportError::NotServed`] unless the request topic
    /// exists: only a server creates it (see [`Connection::ensure_topic`]), so a
    /// missing one means no server of the service has ever started here. A
    /// topic found is remembered: the check costs one metadata request per
    /// service and transport.
    pub(crate) async fn check_served(self: &Arc<Self>, topic: &str) -> Result<(), TransportError> {
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
    pub(crate) fn forget_topic(&self, topic: &str) {
        lock(&self.known_topics).remove(topic);
    }

    /// Adds `topic` to the topics known to exist. Every caller's inbox
    /// passes through here, so the set is emptied when it grows large: a
    /// long-lived server meets clients without end, and forgetting costs
    /// one metadata request per topic at its next use.
    pub(crate) fn remember_topic(&self, topic: &str) {
        let mut known = lock(&self.known_topics);
        if known.len() >= MAX_KNOWN_TOPICS {
            known.clear();
        }
        known.insert(topic.to_owned());
    }

    /// What the broker reports of `topic`, read by `read` from its metadata.
    pub(crate) async fn topic_metadata<T: Send + 'static>(
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
    pub(crate) async fn partition_count(
        self: &Arc<Self>,
        topic: &str,
    ) -> Result<usize, TransportError> {
        self.topic_metadata(topic, |t| t.map_or(0, |t| t.partitions().len()))
            .await
    }

    /// Whether the broker knows `topic`.
    pub(crate) async fn topic_exists(
        self: &Arc<Self>,
        topic: &str,
    ) -> Result<bool, TransportError> {
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
}
