//! A Kafka ping-pong with no busrpc in it: the baseline that the benches and
//! `busrpc bench` compare busrpc calls against, with the same librdkafka
//! settings ([`LIBRDKAFKA_DEFAULTS`](crate::LIBRDKAFKA_DEFAULTS) plus the URL's).
//!
//! Produce a request -> a responder consumes it (as a group member) ->
//! produces the reply to the caller's topic -> the caller consumes it (by
//! `assign()`) and hands it to its waiting call by a correlation header.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busrpc_core::TransportError;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{base_config, transport_error, KafkaConfig, MockBrokers};

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

/// A running raw ping-pong on one Kafka cluster.
pub struct PingPong {
    producer: FutureProducer,
    requests: String,
    replies: String,
    waiting: Waiting,
    next: AtomicU64,
    tasks: Vec<JoinHandle<()>>,
    _mock: Option<Arc<MockBrokers>>,
}

fn header<'a>(message: &'a impl Message, name: &str) -> Option<&'a [u8]> {
    message.headers()?.iter().find(|h| h.key == name)?.value
}

impl PingPong {
    /// Starts a responder and a reply reader on the cluster at `url`
    /// (`kafka://…` or `kafka-mock://…`), on topics named after `tag`.
    pub async fn start(url: &str, tag: &str) -> Result<Self, TransportError> {
        let config = KafkaConfig::from_url(url)?;
        let (bootstrap, mock) = config.brokers.resolve()?;
        // busrpc's librdkafka defaults and the URL's options, as busrpc gets them.
        let base = || -> ClientConfig { base_config(&config, &bootstrap) };
        let requests = format!("raw-requests-{tag}");
        let replies = format!("raw-replies-{tag}");
        match &mock {
            Some(mock) => {
                mock.create_topic(&requests, config.partitions)?;
                mock.create_topic(&replies, 1)?;
            }
            None => {
                let admin: AdminClient<DefaultClientContext> =
                    base().create().map_err(transport_error)?;
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
        let responder: StreamConsumer = base()
            .set("group.id", format!("raw-{tag}"))
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(transport_error)?;
        responder.subscribe(&[&requests]).map_err(transport_error)?;
        let reply_producer = producer.clone();
        // The tasks keep a mock cluster alive until their consumers have closed.
        let (mock_for_responder, mock_for_reader) = (mock.clone(), mock.clone());
        let respond = tokio::spawn(async move {
            // Consumer, then cluster: a tuple drops in that order.
            let held = (responder, mock_for_responder);
            loop {
                let Ok(request) = held.0.recv().await else {
                    continue;
                };
                let (Some(to), Some(n)) = (header(&request, "reply-to"), header(&request, "n"))
                else {
                    continue;
                };
                let (to, n) = (String::from_utf8_lossy(to).into_owned(), n.to_vec());
                let payload = request.payload().unwrap_or_default().to_vec();
                let producer = reply_producer.clone();
                // Replies go out concurrently, as busrpc's server does.
                tokio::spawn(async move {
                    let headers = OwnedHeaders::new().insert(Header {
                        key: "n",
                        value: Some(&n),
                    });
                    let record = FutureRecord::<(), [u8]>::to(&to)
                        .payload(&payload)
                        .headers(headers);
                    let _ = producer.send(record, Timeout::Never).await;
                });
            }
        });
        let inbox: StreamConsumer = base()
            .set("group.id", format!("raw-inbox-{tag}"))
            .create()
            .map_err(transport_error)?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&replies, 0, Offset::Beginning)
            .map_err(transport_error)?;
        inbox.assign(&assignment).map_err(transport_error)?;
        let waiting: Waiting = Arc::default();
        let table = waiting.clone();
        let read = tokio::spawn(async move {
            let held = (inbox, mock_for_reader);
            loop {
                let Ok(reply) = held.0.recv().await else {
                    continue;
                };
                let n = header(&reply, "n")
                    .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok());
                let waiter =
                    n.and_then(|n| table.lock().unwrap_or_else(|e| e.into_inner()).remove(&n));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(reply.payload().unwrap_or_default().to_vec());
                }
            }
        });
        Ok(PingPong {
            producer,
            requests,
            replies,
            waiting,
            next: AtomicU64::new(1),
            tasks: vec![respond, read],
            _mock: mock,
        })
    }

    /// One round trip of `payload`; fails if no reply comes within 60 s or
    /// the reply differs.
    pub async fn ping(&self, payload: &[u8]) -> Result<(), TransportError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed).to_string();
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(n.parse().unwrap_or_default(), tx);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "n",
                value: Some(n.as_bytes()),
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
            .map_err(|(e, _)| transport_error(e))?;
        match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(reply)) if reply == payload => Ok(()),
            Ok(Ok(_)) => Err(TransportError::Rejected(
                "the raw reply differs from the request".into(),
            )),
            _ => Err(TransportError::Unavailable(
                "no raw reply within 60 s".into(),
            )),
        }
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}
