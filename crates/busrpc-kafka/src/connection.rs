//! busrpc's connection to a Kafka cluster, shared by both dialects: the
//! producer, the admin client, the check that a broker answers, and what a
//! librdkafka error means for busrpc. Everything else builds on it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use busrpc_core::transport::TransportError;
use busrpc_core::Message;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::mock::MockBrokers;

/// A transport's connection to its cluster (or to an in-process mock
/// cluster, for `kafka-mock://`), shared by its clones and by everything
/// they consume.
pub(crate) struct Connection {
    pub(crate) config: KafkaConfig,
    pub(crate) bootstrap: String,
    pub(crate) producer: FutureProducer<Reports>,
    /// What the producer's librdkafka reported (a failed login).
    reports: Reports,
    pub(crate) admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist, so each is created at most once per transport.
    pub(crate) known_topics: Mutex<HashSet<String>>,
    instance: String,
    next_name: AtomicU64,
    /// Where inbox addresses start, so a publish can tell replies from requests.
    pub(crate) inbox_prefix: String,
    /// Held while a request topic's existence is asked for.
    pub(crate) checking: tokio::sync::Mutex<()>,
    /// The in-process mock cluster, for `kafka-mock://`. Last: fields drop
    /// in order, and a cluster gone before the producer and the admin
    /// client left them logging `AllBrokersDown` at ERROR as they closed.
    pub(crate) mock: Option<Arc<MockBrokers>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Room left under `message.max.bytes` for a reply record's headers (a
/// `content-type` at most) and framing.
const RECORD_OVERHEAD_BYTES: usize = 1024;

/// What a librdkafka error means for busrpc (see [`refusal`]): anything
/// it does not know as final is worth another try later.
pub(crate) fn transport_error(e: KafkaError) -> TransportError {
    match e.rdkafka_error_code().and_then(|code| refusal(code, &e)) {
        Some(final_error) => final_error,
        None => TransportError::Unavailable(Box::new(e)),
    }
}

/// The error of kind a caller acts on for a code that trying again will
/// not change (too large, not allowed, missing), with `what` said; `None`
/// for a code that may pass (a broker away, a leader moving, a timeout).
/// A server stops after a few final errors in a row and says why (the
/// README's "a server that cannot read its queue stops"), so a
/// group-authorization or SASL failure must be here, not retried forever.
pub(crate) fn refusal(
    code: RDKafkaErrorCode,
    what: &dyn std::fmt::Display,
) -> Option<TransportError> {
    use RDKafkaErrorCode as Code;
    Some(match code {
        Code::MessageSizeTooLarge | Code::InvalidMessageSize | Code::MessageBatchTooLarge => {
            TransportError::TooLarge(what.to_string())
        }
        Code::TopicAuthorizationFailed
        | Code::GroupAuthorizationFailed
        | Code::ClusterAuthorizationFailed
        | Code::TransactionalIdAuthorizationFailed
        | Code::SaslAuthenticationFailed
        | Code::Authentication
        | Code::UnsupportedSASLMechanism
        | Code::IllegalSASLState => TransportError::PermissionDenied(what.to_string()),
        Code::UnknownTopicOrPartition | Code::UnknownTopic | Code::UnknownPartition => {
            TransportError::NotFound(format!("{what} (the topic does not exist)"))
        }
        Code::InvalidTopic | Code::PolicyViolation | Code::InvalidConfig | Code::Fatal => {
            TransportError::Rejected(what.to_string())
        }
        _ => return None,
    })
}

/// A setting librdkafka refuses came from the URL: says so with it.
pub(crate) fn of_url(url: &str, e: TransportError) -> TransportError {
    match e {
        TransportError::InvalidConfig(reason) => TransportError::InvalidUrl {
            url: url.to_owned(),
            reason,
        },
        e => e,
    }
}

/// Whether librdkafka says a topic does not exist.
pub(crate) fn topic_is_gone(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
    )
}

/// What librdkafka reports to the transport's producer: a failed login is
/// kept, so that `connect` can say so rather than that no broker answers
/// (librdkafka tells it only here; its metadata request just times out).
#[derive(Clone, Default)]
pub(crate) struct Reports {
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

/// The librdkafka settings every client of the transport starts from.
pub(crate) fn base_config(config: &KafkaConfig, bootstrap: &str) -> ClientConfig {
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

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("bootstrap", &self.bootstrap)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The producer and the admin client of `config`, once a broker has
    /// answered.
    pub(crate) async fn open(config: KafkaConfig) -> Result<Arc<Self>, TransportError> {
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
        let connection = Arc::new(Self {
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
            checking: tokio::sync::Mutex::new(()),
        });
        connection.clone().check_reachable().await?;
        Ok(connection)
    }

    /// Fails fast, and plainly, when no broker answers.
    async fn check_reachable(self: Arc<Self>) -> Result<(), TransportError> {
        tokio::task::spawn_blocking(move || {
            // In short tries, so that a refused login ends the wait at once.
            let give_up = std::time::Instant::now() + Duration::from_secs(10);
            let answer = loop {
                let answer = self
                    .producer
                    .client()
                    .fetch_metadata(None, Duration::from_millis(500));
                let done = answer.is_ok() || self.reports.login_failure().is_some();
                if done || std::time::Instant::now() >= give_up {
                    break answer;
                }
            };
            answer
                .map(drop)
                .map_err(|e| match self.reports.login_failure() {
                    // Final: the same secret will be refused again.
                    Some(why) => TransportError::PermissionDenied(format!(
                        "the Kafka broker at {} refused the login: {why}",
                        self.bootstrap
                    )),
                    None => TransportError::Unavailable(
                        format!("no Kafka broker answers at {}: {e}", self.bootstrap).into(),
                    ),
                })
        })
        .await
        .map_err(|e| TransportError::Other(Box::new(e)))?
    }

    /// A name no other consumer or inbox of this process has.
    pub(crate) fn name(&self) -> String {
        let n = self.next_name.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.instance)
    }

    /// librdkafka's `message.max.bytes` (1,000,000 unless the URL sets it),
    /// less room for the record's key and headers: librdkafka refuses a
    /// record whose payload, key and headers together exceed it.
    pub(crate) fn max_payload_bytes(&self) -> usize {
        let limit = self
            .config
            .librdkafka_value("message.max.bytes")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1_000_000);
        limit.saturating_sub(RECORD_OVERHEAD_BYTES)
    }

    /// A consumer of `topic`'s `partition` from `from`, for replies. Its
    /// group id `group` is its own and never joins: the partition is
    /// assigned directly, so no rebalance can touch replies.
    pub(crate) fn assigned_reader(
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

    /// Produces `message` to partition `partition` of `topic` (or the one
    /// librdkafka picks), with `extra` beside its headers, awaiting its
    /// delivery report: many run at once.
    pub(crate) async fn produce(
        &self,
        topic: &str,
        partition: Option<i32>,
        message: &Message,
        extra: Option<(&str, &str)>,
    ) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len() + 1);
        for (key, value) in message.headers.iter() {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        if let Some((key, value)) = extra {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let mut record = FutureRecord::<(), [u8]>::to(topic)
            .payload(&message.payload[..])
            .headers(headers);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        self.producer
            .send(record, Timeout::Never)
            .await
            .map(drop)
            .map_err(|(e, _)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use busrpc_core::ErrorKind;

    #[test]
    fn errors_say_whether_to_retry() {
        let gone = transport_error(KafkaError::MessageProduction(
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
        assert!(
            matches!(gone, TransportError::NotFound(ref r) if r.contains("does not exist")),
            "{gone}"
        );
        let big = transport_error(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge,
        ));
        assert_eq!(big.kind(), ErrorKind::TooLarge, "{big}");
        // Final, so that a server that keeps getting them stops and says
        // why instead of retrying for ever.
        for code in [
            RDKafkaErrorCode::GroupAuthorizationFailed,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::SaslAuthenticationFailed,
            RDKafkaErrorCode::Authentication,
        ] {
            let refused = transport_error(KafkaError::MessageConsumption(code));
            assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");
            assert!(!refused.is_transient());
        }
        let down = transport_error(KafkaError::MessageProduction(
            RDKafkaErrorCode::BrokerTransportFailure,
        ));
        assert!(matches!(down, TransportError::Unavailable(_)));
        assert!(topic_is_gone(&KafkaError::MessageProduction(
            RDKafkaErrorCode::UnknownTopic
        )));
    }
}
